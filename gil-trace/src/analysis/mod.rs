//! Analysis: pure computations over the time-ordered event stream (no I/O of its own).
pub mod summary;

pub use summary::{summarize, Counts, Summary, SummaryMeta};
