//! Model: state rebuilt from the time-ordered event stream, one tracker per concern.
//! Trackers see each event once (streaming); memory grows with threads, not events.
pub mod locks;
pub mod stack;
pub mod thread_map;
pub mod threads;
pub mod timeline;

pub use threads::{ThreadStats, ThreadTracker};
