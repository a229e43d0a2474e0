//! Analysis: pure computations over the time-ordered event stream (no I/O of its own).
pub mod compare;
pub mod contention;
pub mod histogram;
pub mod report;
pub mod summary;

pub use crate::model::threads::Counts;
pub use report::{analyze, Report, ReportOptions};
pub use summary::{summarize, Summary, SummaryMeta};
