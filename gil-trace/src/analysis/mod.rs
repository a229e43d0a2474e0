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

use crate::trace::TraceError;

/// Why an analysis could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// Reading the trace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The lock asked for (`--lock ADDR`) is not a futex word the traced threads used (in the
    /// window): analysing another lock instead would answer a different question.
    #[error("no futex word at {addr:#x} was used{in_window}; {found}")]
    NoSuchLock {
        addr: u64,
        in_window: &'static str,
        /// The locks that were found, for the user to pick from.
        found: String,
    },
}
pub use report::{analyze, analyze_into, analyze_named, Analysis, Report, ReportOptions};
pub use summary::{summarize, Summary, SummaryMeta};
