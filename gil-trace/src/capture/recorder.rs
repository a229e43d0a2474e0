//! `gil-trace record`: the event loop that drains the ring buffer into the trace file until
//! the command exits, the duration ends, or a signal says stop.
use std::{
    ffi::OsString,
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use gil_trace_common::{
    comm_to_args, CommSource, EventKind, RawEvent, ABI_VERSION, STAGED_EVENTS, TASK_COMM_LEN,
};
use nix::{
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use super::{
    as_user::as_user,
    child::{spawn_paused, Identity},
    code::CodeCollector,
    privileges,
    probes::{ProbeOptions, Probes},
    python::PySampler,
    CaptureError,
};
use crate::trace::{
    format::{CaptureCost, ExitInfo, CLOCK_NAME, FORMAT_VERSION},
    TempTrace, TraceError, TraceMeta, TraceTrailer, TraceWriter,
};

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command (argv) and trace it and its descendants.
    Command(Vec<OsString>),
    /// Attach to a running process (all its threads, and what it forks from now on).
    Pid(u32),
}

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub output: PathBuf,
    pub target: Target,
    pub duration: Option<Duration>,
    /// Print a one-line live status on stderr (only when it is a terminal).
    pub live_status: bool,
    pub probes: ProbeOptions,
    /// Sample the Python stacks of CPython processes at this rate (None: not at all).
    pub python_rate_hz: Option<u32>,
    /// When `duration` ends, stop recording but leave a started command running (it is not
    /// signalled nor reaped: `monitor`/`top -- CMD` record it window after window with
    /// `Target::Pid`). `record` signals it (false).
    pub command_outlives_duration: bool,
    /// With `Target::Pid`, also trace the descendants the process already has (those it
    /// forks while traced always are): how `monitor`/`top -- CMD` follow the whole tree of
    /// the command they started, window after window.
    pub with_descendants: bool,
}

/// Why recording stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The command (and every descendant it left) or the attached process exited.
    Exit,
    /// `--duration` ran out.
    Duration,
    /// A signal to the recorder (forwarded to the command).
    Signal(Signal),
}

impl std::fmt::Display for StopReason {
    /// As the trailer stores it: `exit`, `duration`, `signal SIGINT`, ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Exit => f.write_str("exit"),
            StopReason::Duration => f.write_str("duration"),
            StopReason::Signal(sig) => write!(f, "signal {}", sig.as_str()),
        }
    }
}

/// How a recording ended.
#[derive(Clone, Debug)]
pub struct RecordOutcome {
    pub path: PathBuf,
    /// The traced process: the started command's, or the attached one.
    pub root_pid: u32,
    pub events: u64,
    pub lost: u64,
    pub stop_reason: StopReason,
    /// The spawned command's exit (None with `-p`, or if it was still running).
    pub exit: Option<ExitInfo>,
    pub cost: Option<CaptureCost>,
}

/// Grace period for the command to exit after a forwarded signal or `--duration`.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// The reader drains on this period; the programs never wake it (a wakeup costs the traced
/// thread more than the event). The ring must hold one period of events: the default 16 MiB
/// holds ~300 k events, i.e. 30 M events/s.
const DRAIN_PERIOD: Duration = Duration::from_millis(10);

pub fn monotonic_ns() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// User + system CPU of this process so far (children excluded).
fn own_cpu_ns() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let ns = |t: nix::sys::time::TimeVal| {
            t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000
        };
        ns(u.user_time()) + ns(u.system_time())
    })
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn comm_event(tid: u32, tgid: u32, name: &str, ts_ns: u64) -> RawEvent {
    let mut bytes = [0u8; TASK_COMM_LEN];
    let n = name.len().min(TASK_COMM_LEN - 1);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    let [lo, hi] = comm_to_args(&bytes);
    RawEvent {
        ts_ns,
        kind: EventKind::Comm as u32,
        tid,
        tgid,
        cpu: 0,
        args: [lo, hi, CommSource::Initial as u64, 0],
    }
}

/// Adds every thread of `pid` to the filter, re-listing until no new thread appears (a thread
/// created while we list is caught either by the listing or by the fork tracepoint).
fn seed_process(
    probes: &mut Probes,
    writer: &mut TraceWriter,
    pid: u32,
) -> Result<(), CaptureError> {
    let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
    let mut seen = std::collections::BTreeSet::new();
    let mut live = 0;
    loop {
        let entries =
            std::fs::read_dir(&task_dir).map_err(|_| CaptureError::ProcessNotFound { pid })?;
        let mut new = 0;
        for entry in entries.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if !seen.insert(tid) {
                continue;
            }
            // A thread that exited but is not yet reaped (a zombie) never exits again: traced,
            // it would keep the recording waiting for it.
            if is_dead(&entry.path()) {
                continue;
            }
            new += 1;
            live += 1;
            probes.trace_thread(tid, pid)?;
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            writer.push(&comm_event(tid, pid, name.trim_end(), monotonic_ns()))?;
        }
        if new == 0 {
            // Every thread dead: the process has exited (its parent has yet to reap it).
            return if live == 0 {
                Err(CaptureError::ProcessNotFound { pid })
            } else {
                Ok(())
            };
        }
    }
}

/// Whether the task at `/proc/…/task/TID` has exited (a zombie, or being reaped).
fn is_dead(task: &std::path::Path) -> bool {
    std::fs::read_to_string(task.join("stat")).is_ok_and(|stat| {
        // "TID (COMM) STATE …": COMM may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X" | "x"))
    })
}

/// The children of every thread of `pid` (`/proc/PID/task/TID/children`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn read_host() -> (String, String) {
    let uts = nix::sys::utsname::uname().ok();
    let release = uts
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = uts
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    (release, host)
}

/// The trace's file under a temporary name, created as the invoking user (see
/// [`TempTrace`]): a directory they cannot write to is refused here, before anything is loaded.
pub fn create_output(path: &Path, identity: Option<&Identity>) -> Result<TempTrace, CaptureError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(CaptureError::Output {
            path: path.to_path_buf(),
            reason: format!("{} is not a directory", dir.display()),
        });
    }
    match as_user(identity, || TempTrace::create(path))? {
        Ok(temp) => Ok(temp),
        Err(TraceError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(CaptureError::Output {
                path: path.to_path_buf(),
                reason: match identity {
                    Some(id) => format!("{} may not create files in {}", id.user, dir.display()),
                    None => format!("no permission to create files in {}", dir.display()),
                },
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The attached process's pid (0 for a command, whose pid is known once it is started).
fn pid_of(target: &Target) -> u32 {
    match target {
        Target::Pid(pid) => *pid,
        Target::Command(_) => 0,
    }
}

/// Records until the target ends; the trace is finalized in every case that returns Ok.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome, CaptureError> {
    privileges::check()?;
    // Under sudo, the command runs as the invoking user, and the trace is theirs.
    let identity = Identity::from_sudo()?;
    // Fail on a missing command or process, or an output that cannot be written, before
    // loading anything.
    let command = match &opts.target {
        Target::Command(argv) => {
            let program = argv.first().ok_or(CaptureError::CommandNotFound {
                command: String::new(),
            })?;
            Some((super::child::resolve(program, identity.as_ref())?, argv))
        }
        Target::Pid(pid) => {
            if *pid == 0 || !PathBuf::from(format!("/proc/{pid}/task")).is_dir() {
                return Err(CaptureError::ProcessNotFound { pid: *pid });
            }
            None
        }
    };
    if let Some(id) = &identity {
        log::info!(
            "under sudo: the command and the trace belong to {} (uid {})",
            id.user,
            id.uid
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CaptureError::Io {
            what: "starting the event loop".into(),
            source,
        })?;
    // Before the output exists and the programs load: a Ctrl-C from then on is taken (once
    // the loop runs: forwarded to the command, the trace finished), never the default death
    // that would leave a half-written temporary file.
    let signals = {
        let _context = runtime.enter();
        StopSignals::install()?
    };
    let output = create_output(&opts.output, identity.as_ref())?;

    let mut probes = Probes::load(opts.probes)?;
    let (kernel_release, hostname) = read_host();
    let meta = TraceMeta {
        format_version: FORMAT_VERSION,
        abi_version: ABI_VERSION,
        clock: CLOCK_NAME.into(),
        gil_trace_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release,
        hostname,
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        command: match &opts.target {
            Target::Command(argv) => argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            Target::Pid(pid) => std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|&c| c == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        },
        root_pid: 0,
        attached: matches!(opts.target, Target::Pid(_)),
        start_monotonic_ns: monotonic_ns(),
        start_unix_ns: unix_ns(),
        buffer_size_bytes: u64::from(opts.probes.buffer_size),
        tracepoints: probes.attached.clone(),
        missing_tracepoints: probes.missing.clone(),
        // The writer orders the events (and says so in what it writes).
        events_ordered: true,
    };
    let mut meta = meta;
    let (child, root_pid) = match command {
        Some((path, argv)) => {
            let paused = spawn_paused(&path, argv, identity.as_ref())?;
            let pid = paused.pid().as_raw() as u32;
            (Some(paused), pid)
        }
        None => (None, pid_of(&opts.target)),
    };
    meta.root_pid = root_pid;
    log::info!(
        "tracing pid {root_pid} ({}) into a temporary file beside {}",
        meta.command.join(" "),
        opts.output.display()
    );
    let mut writer = TraceWriter::to_temp(output, &meta)?;
    // The processes attached to (with -p: the one, and maybe its descendants).
    let mut attached = Vec::new();
    let mut child = if let Some(paused) = child {
        probes.trace_thread(root_pid, root_pid)?;
        let signalled_before_start = signals.taken.load(Ordering::Relaxed);
        Some(TracedChild {
            pid: paused.release()?,
            exit: None,
            signalled_before_start,
        })
    } else {
        let mut next = vec![root_pid];
        while let Some(pid) = next.pop() {
            // Seeded before its children are listed: a child forked after this is traced
            // by the fork handler, one forked before is in the list.
            match seed_process(&mut probes, &mut writer, pid) {
                Ok(()) => attached.push(pid),
                // A descendant that exited meanwhile.
                Err(CaptureError::ProcessNotFound { .. }) if pid != root_pid => continue,
                Err(e) => return Err(e),
            }
            if opts.with_descendants {
                next.extend(children_of(pid));
            }
        }
        None
    };

    let ring = probes.ring.take().expect("ring buffer present");
    let mut code = CodeCollector::default();
    let mut python = opts.python_rate_hz.map(PySampler::new);
    // The processes' first mappings (a command's are read as its addresses show up: it has
    // not even loaded its libraries yet).
    for &pid in &attached {
        if let Some(py) = &mut python {
            py.consider(pid);
        }
        code.read_maps(pid);
    }
    let cpu_at_attach = own_cpu_ns();
    let result = runtime.block_on(event_loop(
        &mut probes,
        WaitedOn { ring, signals },
        &mut writer,
        &mut code,
        python.as_mut(),
        child.as_mut(),
        opts,
    ));
    let recording_cpu_ns = own_cpu_ns().saturating_sub(cpu_at_attach);
    let (stop_reason, end_monotonic_ns) = match result {
        Ok(v) => v,
        Err(e) => {
            if let Some(c) = &child {
                c.signal(Signal::SIGTERM);
            }
            return Err(e);
        }
    };
    let exit = child.and_then(|c| c.exit);
    let lost = probes.lost();
    let lost_total = lost.total;
    let events = writer.events();
    let bpf = probes.bpf_run_time();
    let cost = CaptureCost {
        recorder_cpu_ns: own_cpu_ns(),
        recording_cpu_ns: Some(recording_cpu_ns),
        bpf_run_ns: bpf.as_ref().map(|p| p.iter().map(|c| c.run_ns).sum()),
        bpf_runs: bpf.as_ref().map(|p| p.iter().map(|c| c.runs).sum()),
        bpf_programs: bpf
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.runs > 0)
            .collect(),
    };
    let trailer = TraceTrailer {
        end_monotonic_ns,
        lost,
        stop_reason: stop_reason.to_string(),
        exit: exit.clone(),
        capture_cost: Some(cost.clone()),
        ..Default::default()
    };
    let mut code = code.finish();
    code.python = python.and_then(PySampler::finish);
    writer.set_code_map(code);
    // Renamed into place as the user too (keeping the previous trace as .old): where they
    // could not replace a file, neither does the recorder.
    let finished = writer.finish_unpersisted(trailer)?;
    let path = as_user(identity.as_ref(), || finished.persist(true))??;
    Ok(RecordOutcome {
        path,
        root_pid,
        events,
        lost: lost_total,
        stop_reason,
        exit,
        cost: Some(cost),
    })
}

/// Copies everything available in the ring buffer into the writer, noting the stacks and
/// addresses the events refer to; then reads those stacks and any mappings they need.
fn drain(
    ring: &mut RingBuf<MapData>,
    writer: &mut TraceWriter,
    code: &mut CodeCollector,
    mut python: Option<&mut PySampler>,
    probes: &Probes,
) -> Result<usize, CaptureError> {
    // The Python samples go between the kernel's events by time: were they written before the
    // drain's events, a drain delayed past the writer's holdback would make those late.
    if let Some(py) = python.as_deref_mut() {
        py.receive();
    }
    let mut n = 0;
    while let Some(item) = ring.next() {
        // One event, a syscall's entry and exit together (`CallPair`), or the events a CPU
        // gathered (`StagedEvents`): whole RawEvents, copied out so the ring space is freed.
        let mut events = [RawEvent::default(); STAGED_EVENTS];
        let mut count = 0;
        for (slot, bytes) in events
            .iter_mut()
            .zip(item.chunks_exact(std::mem::size_of::<RawEvent>()))
        {
            // SAFETY: the programs write whole RawEvents; read_unaligned copes with any
            // alignment.
            *slot = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            count += 1;
        }
        drop(item);
        for raw in &events[..count] {
            n += 1;
            push_event(raw, writer, code, python.as_deref_mut())?;
        }
    }
    code.after_drain(|id| probes.user_stack(id));
    if let Some(py) = python {
        let floor = writer.holdback_floor();
        py.write_until(u64::MAX, floor, |sample| writer.push(sample))?;
    }
    Ok(n)
}

/// One event to the trace, noting the code it refers to, after the Python samples due before
/// it.
fn push_event(
    raw: &RawEvent,
    writer: &mut TraceWriter,
    code: &mut CodeCollector,
    python: Option<&mut PySampler>,
) -> Result<(), CaptureError> {
    code.observe(raw);
    if let Some(py) = python {
        py.observe(raw);
        let floor = writer.holdback_floor();
        py.write_until(raw.ts_ns, floor, |sample| writer.push(sample))?;
    }
    writer.push(raw)?;
    Ok(())
}

/// Writes a `Lost` marker when the kernel's drop counters grew since the last check, so the
/// analysis can tell which time span is incomplete (to the drain period's resolution).
fn mark_losses(
    probes: &Probes,
    writer: &mut TraceWriter,
    seen: &mut u64,
    checked_ns: &mut u64,
) -> Result<(), CaptureError> {
    let now = monotonic_ns();
    let total = probes.lost().total;
    if total > *seen {
        writer.push(&RawEvent {
            ts_ns: now,
            kind: EventKind::Lost as u32,
            tid: 0,
            tgid: 0,
            cpu: 0,
            args: [total - *seen, *checked_ns, 0, 0],
        })?;
        *seen = total;
    }
    *checked_ns = now;
    Ok(())
}

fn exit_info(status: WaitStatus) -> Option<ExitInfo> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitInfo {
            code: Some(code),
            signal: None,
        }),
        WaitStatus::Signaled(_, sig, _) => Some(ExitInfo {
            code: None,
            signal: Some(sig as i32),
        }),
        _ => None,
    }
}

/// Reaps a command an earlier recording started and left running
/// (`RecordOptions::command_outlives_duration`), once it has ended: first sending it `stop`
/// if given, then waiting up to `grace`. Its exit, or None if it still runs.
pub fn reap_command(pid: u32, stop: Option<Signal>, grace: Duration) -> Option<ExitInfo> {
    let pid = Pid::from_raw(pid as i32);
    if let Some(sig) = stop {
        let _ = kill(pid, sig);
    }
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(status) => return exit_info(status),
            Err(_) => return None,
        }
    }
}

/// The command the recorder started. Once reaped, its pid may be another process's: it is
/// never signalled again.
struct TracedChild {
    pid: Pid,
    exit: Option<ExitInfo>,
    /// A stop signal came before it ran: even from the terminal, it did not get it.
    signalled_before_start: bool,
}

impl TracedChild {
    fn signal(&self, sig: Signal) {
        if self.exit.is_none() {
            let _ = kill(self.pid, sig);
        }
    }
}

/// What the event loop waits on besides time: the kernel's events and the signals.
struct WaitedOn {
    ring: RingBuf<MapData>,
    signals: StopSignals,
}

/// The signals the event loop waits for, installed before anything can send them.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    chld: tokio::signal::unix::Signal,
    /// Set by a stop signal (INT, TERM, HUP) from the install on: one taken before the
    /// command ran never reached it, even from the terminal.
    taken: Arc<AtomicBool>,
    flags: Vec<signal_hook::SigId>,
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // A watch records window after window: one flag handler per window would pile up.
        for id in self.flags.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl StopSignals {
    /// Within the runtime's context.
    fn install() -> Result<StopSignals, CaptureError> {
        let install = |kind, what: &str| {
            signal(kind).map_err(|source| CaptureError::Io {
                what: format!("installing a {what} handler"),
                source,
            })
        };
        let taken = Arc::new(AtomicBool::new(false));
        let mut flags = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let id = signal_hook::flag::register(sig, Arc::clone(&taken)).map_err(|source| {
                CaptureError::Io {
                    what: "installing a signal handler".into(),
                    source,
                }
            })?;
            flags.push(id);
        }
        Ok(StopSignals {
            int: install(SignalKind::interrupt(), "SIGINT")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            chld: install(SignalKind::child(), "SIGCHLD")?,
            taken,
            flags,
        })
    }
}

async fn event_loop(
    probes: &mut Probes,
    WaitedOn { ring, signals }: WaitedOn,
    writer: &mut TraceWriter,
    code: &mut CodeCollector,
    mut python: Option<&mut PySampler>,
    mut child: Option<&mut TracedChild>,
    opts: &RecordOptions,
) -> Result<(StopReason, u64), CaptureError> {
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| CaptureError::Io { what, source }
    };
    // SAFETY: the ring buffer's fd stays open for the AsyncFd's whole life (it owns it).
    let mut ring =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
            CaptureError::Io {
                what: "watching the ring buffer".into(),
                source: e.into(),
            }
        })?;
    let mut signals = signals;
    let mut drain_tick = tokio::time::interval(DRAIN_PERIOD);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let show_status = opts.live_status && std::io::stderr().is_terminal();
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let started = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut stop_reason: Option<StopReason> = None;
    // Forward SIGINT only when it cannot have come from the terminal (which already sent it
    // to the command, in the same foreground process group).
    let forward_sigint = !std::io::stdin().is_terminal();
    let mut last_events = 0u64;
    let mut lost_seen = 0u64;
    let mut last_alive_check = Instant::now();
    let mut lost_checked_ns = monotonic_ns();

    loop {
        let far = tokio::time::Instant::now() + Duration::from_hours(8760);
        let signal_received: Option<Signal> = tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io_err("waiting for the ring buffer"))?;
                drain(guard.get_inner_mut(), writer, code, python.as_deref_mut(), probes)?;
                guard.clear_ready();
                None
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), writer, code, python.as_deref_mut(), probes)?;
                mark_losses(probes, writer, &mut lost_seen, &mut lost_checked_ns)?;
                None
            }
            _ = status_tick.tick(), if show_status => {
                let events = writer.events();
                let lost = probes.lost().total;
                eprint!("\r\x1b[K[gil-trace] {:.1}s  {} events  {}/s  {} lost", started.elapsed().as_secs_f64(), events, events - last_events, lost);
                last_events = events;
                None
            }
            _ = signals.chld.recv(), if child.is_some() => None,
            _ = signals.int.recv() => Some(Signal::SIGINT),
            _ = signals.term.recv() => Some(Signal::SIGTERM),
            _ = signals.hup.recv() => Some(Signal::SIGHUP),
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && stop_reason.is_none() => {
                stop_reason = Some(StopReason::Duration);
                match child.as_deref() {
                    Some(c) if c.exit.is_none() && !opts.command_outlives_duration => {
                        c.signal(Signal::SIGTERM);
                        stop_deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                    }
                    _ => break,
                }
                None
            }
            () = tokio::time::sleep_until(stop_deadline.unwrap_or(far)), if stop_deadline.is_some() => break,
        };
        if let Some(sig) = signal_received {
            if stop_reason.is_some() {
                // Second signal: stop now; what was recorded is still finalized.
                break;
            }
            stop_reason = Some(StopReason::Signal(sig));
            match child.as_deref() {
                // Forwarded, and the command given a grace period to exit.
                Some(c) if c.exit.is_none() => {
                    if sig != Signal::SIGINT || forward_sigint || c.signalled_before_start {
                        c.signal(sig);
                    }
                    stop_deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                }
                // Attached with -p, or the command is gone (only descendants are left).
                _ => break,
            }
        }
        match child.as_deref_mut() {
            Some(c) if c.exit.is_none() => {
                if let Ok(status) = waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
                    if let Some(info) = exit_info(status) {
                        c.exit = Some(info);
                        // Asked to stop, or nothing left to follow: done. Otherwise the
                        // command left descendants running (a daemon, a background job):
                        // keep following them until they end too.
                        if stop_reason.is_some() || !probes.anyone_traced() {
                            stop_reason.get_or_insert(StopReason::Exit);
                            break;
                        }
                    }
                }
            }
            _ => {
                // Attached with -p, or the command exited before its descendants.
                if last_alive_check.elapsed() >= Duration::from_millis(100) {
                    last_alive_check = Instant::now();
                    if !probes.anyone_traced() {
                        stop_reason.get_or_insert(StopReason::Exit);
                        break;
                    }
                }
            }
        }
    }
    if show_status {
        eprintln!();
    }
    // Let the last events land, stop the kernel side producing, then take everything left.
    drain(ring.get_mut(), writer, code, python.as_deref_mut(), probes)?;
    probes.stop_tracing();
    drain(ring.get_mut(), writer, code, python.as_deref_mut(), probes)?;
    // The end of the recording: detaching waits for RCU grace periods (a few hundred ms),
    // which are not part of it.
    let end_ns = monotonic_ns();
    // No program runs from here on: what they wrote meanwhile, then what the CPUs gathered
    // and had not written yet, then the entries of calls entered and not yet returned.
    probes.detach();
    drain(ring.get_mut(), writer, code, None, probes)?;
    for event in probes.staged_events() {
        push_event(&event, writer, code, None)?;
    }
    for entry in probes.entries_in_flight() {
        code.observe(&entry);
        writer.push(&entry)?;
    }
    // The Python samples taken up to the end (the sampler runs on through the detach).
    if let Some(py) = python {
        py.receive();
        let floor = writer.holdback_floor();
        py.write_until(end_ns, floor, |sample| writer.push(sample))?;
    }
    mark_losses(probes, writer, &mut lost_seen, &mut lost_checked_ns)?;
    Ok((stop_reason.unwrap_or(StopReason::Exit), end_ns))
}
