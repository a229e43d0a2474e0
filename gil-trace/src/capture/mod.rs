//! Capture: load the eBPF programs, follow the traced process tree, stream events to a trace
//! file. Needs root (or CAP_BPF + CAP_PERFMON); nothing else in the crate does.
pub mod as_user;
pub mod child;
pub mod code;
pub mod error;
pub mod privileges;
pub mod probes;
pub mod python;
pub mod recorder;
pub mod tracefs;

pub use error::CaptureError;
pub use recorder::{
    reap_command, record, RecordOptions, RecordOutcome, StopReason, Target, STOP_GRACE,
};
