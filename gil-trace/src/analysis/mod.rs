//! Analysis: pure computations over the time-ordered event stream (no I/O of its own: passes
//! read the streams their caller opens).
//!
//! [`report::analyze`] identifies the locks, then makes one streaming [`pass`] with the
//! summary, the timeline and the [`contention`] trackers; [`window::window_pass`] makes one
//! more for a chart's time window, binned by [`state_grid`].
pub mod compare;
pub mod contention;
pub mod histogram;
mod pass;
pub mod report;
pub mod state_grid;
pub mod summary;
pub mod units;
pub mod window;

pub use crate::model::threads::Counts;
pub use report::{analyze, Analysis, Report, ReportOptions};
pub use summary::{summarize, Summary, SummaryMeta};
