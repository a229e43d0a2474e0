//! The trace file: format, writer and reader. Everything after capture reads this.
//!
//! See `docs/trace-format.md` for the byte layout.
pub mod ahead;
pub mod error;
pub mod event;
pub mod format;
pub mod futex_index;
pub mod reader;
pub mod sort;
pub mod writer;

pub use ahead::{AnalysisBatches, BatchObserver, DecodedAhead, Decoding, SharedObserver};
pub use error::TraceError;
pub use event::{Event, EventData, FutexCall, IoClass};
pub use format::{CaptureCost, LostCounts, ThreadInfo, TraceMeta, TraceTrailer};
pub use reader::{BatchedEvents, EventBatches, Events, KindMask, RawEvents, TraceReader};
pub use writer::TraceWriter;
