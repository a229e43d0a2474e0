//! Watching a process window after window, for `monitor` and `top`: each window is recorded
//! as `record -p` would (into a private directory, as the invoking user under sudo) and
//! analysed as `report` would once it ends, then deleted.
//!
//! Windows rather than one endless pass: the analysis finds locks from a trace's futex
//! traffic before its pass, so each window is a complete trace, and memory stays flat however
//! long the watch runs. Between two windows the programs are reloaded and the window is
//! analysed (a fraction of a second not recorded; each window says what it covered).
use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use gil_trace_common::UserStacks;

use super::args::WatchArgs;
use crate::{
    analysis::{Analysis, ReportOptions},
    capture::{
        self, as_user::as_user, child::Identity, probes::ProbeOptions, RecordOptions, StopReason,
        Target,
    },
    pipeline,
    render::metrics::WindowRows,
    trace::{Decoding, TraceReader},
};

/// A process named `--comm` is looked for this often.
const COMM_POLL: Duration = Duration::from_millis(250);
/// `record`'s default ring buffer.
const BUFFER_SIZE: u32 = 16 << 20;

/// What to watch (`-p`/`--comm`, the Python sampling), in windows of `interval`.
pub struct WatchOptions<'a> {
    pub args: &'a WatchArgs,
    pub interval: Duration,
}

/// One analysed window.
pub struct Window {
    /// The process's name (its main thread's).
    pub process: String,
    pub pid: u32,
    pub analysis: Analysis,
    /// The rows of its pass (each contended acquisition and datagram).
    pub rows: WindowRows,
}

/// Records and analyses windows of the target, handing each to `each`, until Ctrl-C (or the
/// process exits, with `-p`).
pub fn watch(
    opts: &WatchOptions,
    quiet: bool,
    mut each: impl FnMut(Window) -> Result<()>,
) -> Result<()> {
    // Ctrl-C/SIGTERM/SIGHUP while no window records (waiting for a process, analysing): the
    // recorder's handlers take a signal inside a window, and stay installed after it.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing a signal handler")?;
    }
    let identity = Identity::from_sudo()?;
    let dir = as_user(identity.as_ref(), || {
        tempfile::Builder::new()
            .prefix("gil-trace-watch-")
            .tempdir()
    })?
    .context("creating a directory for the windows")?;
    let window_trace = dir.path().join("window.trace");
    let mut pid = opts.args.pid;
    while !stop.load(Ordering::Relaxed) {
        let target = match (pid, &opts.args.comm) {
            (Some(pid), _) => pid,
            (None, Some(comm)) => match wait_for_comm(comm, &stop) {
                Some(pid) => pid,
                None => break,
            },
            (None, None) => unreachable!("clap requires -p or --comm"),
        };
        let outcome = capture::record(&RecordOptions {
            output: window_trace.clone(),
            target: Target::Pid(target),
            duration: Some(opts.interval),
            live_status: false,
            probes: ProbeOptions {
                buffer_size: BUFFER_SIZE,
                measure_cost: false,
                dispatch_only: false,
                user_stacks: UserStacks::Locks,
                split_calls: false,
            },
            python_rate_hz: (!opts.args.no_py).then_some(opts.args.py_rate),
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // It exited between two windows.
            Err(capture::CaptureError::ProcessNotFound { .. }) if opts.args.comm.is_some() => {
                pid = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let window = analyse(&outcome.path, target);
        as_user(identity.as_ref(), || {
            let _ = std::fs::remove_file(&outcome.path);
            let _ = std::fs::remove_file(outcome.path.with_extension("trace.old"));
        })?;
        // A window that cannot be analysed is skipped, not the end of a watch meant for hours.
        match window {
            Ok(window) => each(window)?,
            Err(e) => eprintln!("gil-trace: a window of pid {target} was skipped: {e:#}"),
        }
        match outcome.stop_reason {
            StopReason::Signal(_) => break,
            // Gone: with --comm, wait for the next one.
            StopReason::Exit if opts.args.comm.is_some() => pid = None,
            StopReason::Exit => {
                if !quiet {
                    eprintln!("gil-trace: pid {target} exited");
                }
                break;
            }
            StopReason::Duration => pid = Some(target),
        }
    }
    as_user(identity.as_ref(), move || dir.close())?.context("removing the window directory")?;
    Ok(())
}

fn analyse(trace: &Path, pid: u32) -> Result<Window> {
    let reader = TraceReader::open(trace)?;
    let process = reader
        .trailer()
        .threads
        .iter()
        .find(|t| t.tid == reader.meta().root_pid)
        .map_or_else(|| format!("pid {pid}"), |t| t.name.clone());
    let mut rows = WindowRows::default();
    let (analysis, _) = pipeline::analyse_into(
        trace,
        reader,
        ReportOptions {
            convoy_threshold_ns: crate::analysis::contention::DEFAULT_CONVOY_THRESHOLD_NS,
            ..ReportOptions::default()
        },
        Decoding::for_machine(),
        &mut rows,
        |_| {},
    )?;
    Ok(Window {
        process,
        pid,
        analysis,
        rows,
    })
}

/// The newest live process whose kernel name is `comm`, once there is one; None on a
/// signal to stop.
fn wait_for_comm(comm: &str, stop: &AtomicBool) -> Option<u32> {
    while !stop.load(Ordering::Relaxed) {
        let newest = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // "PID (COMM) STATE … STARTTIME (field 22) …"; COMM may hold spaces and
                // parentheses, so fields count from the last ')'.
                let (head, rest) = stat.rsplit_once(')')?;
                let name = head.split_once('(')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let zombie = fields.first() == Some(&"Z");
                let start: u64 = fields.get(19)?.parse().ok()?;
                (name == comm && !zombie).then_some((start, pid))
            })
            .max();
        if let Some((_, pid)) = newest {
            return Some(pid);
        }
        std::thread::sleep(COMM_POLL);
    }
    None
}
