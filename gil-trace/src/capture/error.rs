use std::path::PathBuf;

use crate::trace::TraceError;

/// Why recording could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The process lacks the privileges to load eBPF programs.
    #[error("gil-trace record needs root or the capabilities {missing} (run it with sudo, or grant them: sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep {exe})")]
    NotPrivileged { missing: String, exe: String },
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not available ({detail}); mount it as root: mount -t tracefs tracefs /sys/kernel/tracing")]
    TracefsUnavailable { detail: String },
    /// A tracepoint gil-trace cannot work without is absent from this kernel.
    #[error("this kernel has no tracepoint {name} (needed by gil-trace record)")]
    TracepointMissing { name: String },
    /// A tracepoint lacks a field the programs read.
    #[error("tracepoint {tracepoint} has no field {field} on this kernel")]
    FieldMissing { tracepoint: String, field: String },
    /// A field the programs read from their record prefix is misplaced on this kernel.
    #[error("tracepoint {tracepoint} field {field} ({size} bytes at offset {offset}) is not where gil-trace can read it (aligned, after the 8-byte common header and within the first {limit} bytes)")]
    FieldLayout {
        tracepoint: String,
        field: String,
        offset: u32,
        size: u32,
        limit: usize,
    },
    /// A tracepoint's record is shorter than the prefix its program loads.
    #[error("tracepoint {tracepoint} records are {len} bytes on this kernel; gil-trace reads the first {needed}")]
    RecordTooShort {
        tracepoint: String,
        len: u32,
        needed: usize,
    },
    /// This binary was built without the eBPF object.
    #[error(
        "this gil-trace was built without its eBPF programs; build it with `cargo xtask build`"
    )]
    NoEbpfObject,
    /// The kernel refused the programs or maps.
    #[error("loading the eBPF programs failed")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded into or attached to its tracepoint. `detail` is the first
    /// line of the kernel's answer; the verifier log (if any) is printed only on request.
    #[error("attaching {tracepoint} failed: {detail}")]
    Attach { tracepoint: String, detail: String },
    /// A map operation failed.
    #[error("eBPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The command to trace does not exist or is not executable.
    #[error("command not found or not executable: {command}")]
    CommandNotFound { command: String },
    /// The command could not be started.
    #[error("cannot start {command}: {reason}")]
    Spawn { command: String, reason: String },
    /// `-p PID` names no running process.
    #[error("no process with pid {pid}")]
    ProcessNotFound { pid: u32 },
    /// The invoking user (SUDO_UID) could not be resolved.
    #[error("cannot run the command as the invoking user: {0}")]
    Identity(String),
    /// Writing the trace failed (disk full, output removed, ...).
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// Another I/O failure.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The output path's directory does not exist or is not writable.
    #[error("cannot write the trace to {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
}
