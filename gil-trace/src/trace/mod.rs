//! The trace file: format, writer and reader. Everything after capture reads this.
//!
//! See `docs/trace-format.md` for the byte layout.
pub mod ahead;
pub mod batches;
pub mod code;
pub mod concat;
pub mod error;
pub mod event;
pub mod format;
pub mod futex_index;
pub mod output;
pub mod reader;
pub mod sort;
pub mod stream;
pub mod writer;

pub use ahead::{AnalysisBatches, DecodedAhead, Decoding};
pub use batches::{EventBatches, Events, FileOrder, RawEvents};
pub use code::CodeMap;
pub use concat::TraceConcat;
pub use error::TraceError;
pub use event::{Event, EventData, FutexCall, IoClass};
pub use format::{CaptureCost, LostCounts, ThreadInfo, TraceMeta, TraceTrailer};
pub use output::TempTrace;
pub use reader::TraceReader;
pub use stream::{BatchObserver, BatchedEvents, KindMask, OneByOne, SharedObserver};
pub use writer::TraceWriter;
