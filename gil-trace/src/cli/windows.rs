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
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use gil_trace_common::UserStacks;
use nix::sys::signal::Signal;
use std::io::IsTerminal;

use super::args::WatchArgs;
use crate::{
    analysis::{Analysis, ReportOptions},
    capture::{
        self, as_user::as_user, child::Identity, probes::ProbeOptions, RecordOptions, StopReason,
        Target,
    },
    pipeline,
    render::metrics::WindowRows,
    trace::{format::ExitInfo, Decoding, TraceConcat, TraceReader},
};

/// A process named `--comm` is looked for this often.
const COMM_POLL: Duration = Duration::from_millis(250);
/// `record`'s default ring buffer.
const BUFFER_SIZE: u32 = 16 << 20;

/// What to watch (`-p`/`--comm`, the Python sampling), in windows of `interval`.
pub struct WatchOptions<'a> {
    pub args: &'a WatchArgs,
    pub interval: Duration,
    /// Keep every window in this one trace (`top -o`).
    pub keep: Option<&'a Path>,
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

/// How a watch ended.
#[derive(Debug, Default)]
pub struct WatchEnd {
    /// The started command's exit (`-- COMMAND`), once reaped.
    pub exit: Option<ExitInfo>,
    /// The signal that stopped the watch, if one did.
    pub signal: Option<Signal>,
}

/// Records and analyses windows of the target, handing each to `each`, until Ctrl-C (or the
/// process exits, with `-p` or `-- COMMAND`). With [`WatchOptions::keep`], every window is
/// also appended to that trace, which is put in place however the watch ends.
pub fn watch(
    opts: &WatchOptions,
    quiet: bool,
    each: impl FnMut(Window) -> Result<()>,
) -> Result<WatchEnd> {
    let identity = Identity::from_sudo()?;
    // Created before anything is loaded: an unwritable place fails at once.
    let mut kept = match opts.keep {
        Some(path) => Some(TraceConcat::new(capture::recorder::create_output(
            path,
            identity.as_ref(),
        )?)),
        None => None,
    };
    let watched = watch_windows(opts, quiet, identity.as_ref(), kept.as_mut(), each);
    let Some((kept, path)) = kept.zip(opts.keep) else {
        return watched;
    };
    // What was recorded is kept even when the watch failed.
    let exit = watched.as_ref().ok().and_then(|end| end.exit.clone());
    let windows = kept.windows();
    let finished = kept
        .finish(exit)
        .map_err(anyhow::Error::from)
        .and_then(|temp| match temp {
            Some(temp) => Ok(Some(as_user(identity.as_ref(), || temp.persist(true))??)),
            None => Ok(None),
        });
    match (watched, finished) {
        (Ok(end), Ok(written)) => {
            if !quiet {
                match written {
                    Some(written) => {
                        eprintln!("gil-trace: wrote {} ({windows} windows)", written.display());
                    }
                    None => eprintln!(
                        "gil-trace: no window was recorded: {} not written",
                        path.display()
                    ),
                }
            }
            Ok(end)
        }
        (Ok(_), Err(e)) => Err(e.context(format!("keeping the watch in {}", path.display()))),
        (Err(e), Ok(written)) => {
            if let Some(written) = written {
                eprintln!(
                    "gil-trace: what was recorded is in {} ({windows} whole windows)",
                    written.display()
                );
            }
            Err(e)
        }
        (Err(e), Err(keep)) => {
            eprintln!(
                "gil-trace: {}: the watch could not be kept either: {keep:#}",
                path.display()
            );
            Err(e)
        }
    }
}

fn watch_windows(
    opts: &WatchOptions,
    quiet: bool,
    identity: Option<&Identity>,
    mut kept: Option<&mut TraceConcat>,
    mut each: impl FnMut(Window) -> Result<()>,
) -> Result<WatchEnd> {
    // Ctrl-C/SIGTERM/SIGHUP while no window records (waiting for a process, analysing): the
    // recorder's handlers take a signal inside a window, and stay installed after it.
    // The signal that said stop (0: none yet).
    let stop = Arc::new(AtomicUsize::new(0));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(signal, Arc::clone(&stop), signal as usize)
            .context("installing a signal handler")?;
    }
    let dir = as_user(identity, || {
        tempfile::Builder::new()
            .prefix("gil-trace-watch-")
            .tempdir()
    })?
    .context("creating a directory for the windows")?;
    let window_trace = dir.path().join("window.trace");
    let mut pid = opts.args.pid;
    // The command this watch started (`-- COMMAND`), once running, until reaped.
    let mut started: Option<u32> = None;
    let mut end = WatchEnd::default();
    // The recorder forwards a signal to a command it started itself (the first window).
    let mut forwarded = false;
    while stop.load(Ordering::Relaxed) == 0 {
        let target = match (pid, &opts.args.comm) {
            (Some(pid), _) => Target::Pid(pid),
            (None, Some(comm)) => match wait_for_comm(comm, &stop) {
                Some(pid) => Target::Pid(pid),
                None => break,
            },
            // The first window starts the command (paused until it is traced, as `record`
            // does); the next ones follow its pid.
            (None, None) if !opts.args.command.is_empty() => {
                Target::Command(opts.args.command.clone())
            }
            (None, None) => unreachable!("clap requires -p, --comm or a command"),
        };
        let starts_command = matches!(target, Target::Command(_));
        let outcome = capture::record(&RecordOptions {
            output: window_trace.clone(),
            target,
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
            command_outlives_duration: true,
            // The started command's whole tree (a wrapper script's children too).
            with_descendants: started.is_some(),
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // It exited between two windows.
            Err(capture::CaptureError::ProcessNotFound { .. }) if opts.args.comm.is_some() => {
                pid = None;
                continue;
            }
            // The command exited between two windows: its status, and the end.
            Err(capture::CaptureError::ProcessNotFound { .. }) if started.is_some() => {
                if !quiet {
                    eprintln!("gil-trace: pid {} exited", started.unwrap_or_default());
                }
                stop_started(started.take(), None, capture::STOP_GRACE, &mut end);
                break;
            }
            Err(e) => {
                return Err(failing(started, &mut end, e));
            }
        };
        let target = outcome.root_pid;
        if starts_command {
            started = Some(target);
            // Reaped by the recorder if it ended within this first window.
            end.exit.clone_from(&outcome.exit);
            if end.exit.is_some() {
                started = None;
            }
        }
        if let Some(kept) = kept.as_deref_mut() {
            if let Err(e) = kept.append(&outcome.path) {
                return Err(failing(
                    started,
                    &mut end,
                    anyhow::Error::from(e).context("appending a window to the kept trace"),
                ));
            }
        }
        let window = analyse(&outcome.path, target);
        let removed = as_user(identity, || {
            let _ = std::fs::remove_file(&outcome.path);
            let _ = std::fs::remove_file(outcome.path.with_extension("trace.old"));
        });
        if let Err(e) = removed {
            return Err(failing(started, &mut end, e));
        }
        // A window that cannot be analysed is skipped, not the end of a watch meant for hours.
        match window {
            Ok(window) => {
                if let Err(e) = each(window) {
                    return Err(failing(started, &mut end, e));
                }
            }
            Err(e) => eprintln!("gil-trace: a window of pid {target} was skipped: {e:#}"),
        }
        match outcome.stop_reason {
            StopReason::Signal(sig) => {
                end.signal = Some(sig);
                forwarded = starts_command;
                break;
            }
            // Gone: with --comm, wait for the next one.
            StopReason::Exit if opts.args.comm.is_some() => pid = None,
            StopReason::Exit => {
                if !quiet {
                    eprintln!("gil-trace: pid {target} exited");
                }
                // Our own child: reaped, for its status.
                stop_started(started.take(), None, capture::STOP_GRACE, &mut end);
                break;
            }
            // The command itself ended within the first window (what it left running is not
            // followed: its pid may be another process's by now).
            StopReason::Duration if starts_command && end.exit.is_some() => break,
            StopReason::Duration => pid = Some(target),
        }
    }
    if end.signal.is_none() {
        // Stopped between two windows.
        end.signal = Signal::try_from(stop.load(Ordering::Relaxed) as i32).ok();
    }
    let forward = end.signal.filter(|_| !forwarded);
    // The recorder gave it its grace period when it passed the signal on.
    let grace = if forwarded {
        Duration::ZERO
    } else {
        capture::STOP_GRACE
    };
    stop_started(started, forward, grace, &mut end);
    as_user(identity, move || dir.close())?.context("removing the window directory")?;
    Ok(end)
}

/// The watch fails: the command it started gets SIGTERM (with `record`'s grace period).
fn failing(started: Option<u32>, end: &mut WatchEnd, e: impl Into<anyhow::Error>) -> anyhow::Error {
    stop_started(started, Some(Signal::SIGTERM), capture::STOP_GRACE, end);
    e.into()
}

/// Ends the watch of a command it started: the command exited (reaped now), or the watch
/// stops (the command gets `forward`, as `record` forwards a signal, and `grace`);
/// either way its exit goes into `end`, if it ended.
fn stop_started(
    started: Option<u32>,
    forward: Option<Signal>,
    grace: Duration,
    end: &mut WatchEnd,
) {
    if let Some(pid) = started {
        // A Ctrl-C on the terminal already reached the command (same process group).
        let signal =
            forward.filter(|&sig| sig != Signal::SIGINT || !std::io::stdin().is_terminal());
        end.exit = capture::reap_command(pid, signal, grace);
    }
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
fn wait_for_comm(comm: &str, stop: &AtomicUsize) -> Option<u32> {
    while stop.load(Ordering::Relaxed) == 0 {
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
