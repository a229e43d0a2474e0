//! `cargo xtask bench`: performance figures, side by side with `perf`, written to BENCHMARKS.md.
//!
//! Every comparison is a ratio measured within this one invocation (these machines are noisy):
//! 1. Recording overhead: the GIL lab untraced, under `gil-trace record`, under it with every
//!    program returning at once (the tracepoints' own cost) and under `perf record` with the
//!    comparable tracepoints, in rotating order, median of the per-round ratios.
//! 2. Capture capacity: a futex/wakeup storm at increasing thread-pair counts and a paced
//!    futex-call storm at rising rates, recorded with the default ring buffer and `--cost`:
//!    events/s reached, drops, CPU ns per event.
//! 3. Trace size: bytes per event of the overhead runs' files, gil-trace vs perf.data.
//! 4. Analysis speed: a recorded lab trace (a real convoy) replicated to ≥ 10 M events;
//!    `gil-trace report` (text, --json, --svg, --threads 1) vs `perf sched timehist` on a
//!    perf.data of a storm: events/s, CPU time and peak RSS of each child.
//! 5. Python sampling: the pure-Python echo fixture untraced, kernel-only and with the Python
//!    sampler at several rates (`bench_python.rs`).
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};
use gil_trace::trace::{TraceReader, TraceTrailer, TraceWriter};
use gil_trace_common::{EventKind, RawEvent};

use crate::{bench_python, build::release_bin, workspace_root};

/// What one command cost, from wait4 (that child's own rusage).
#[derive(Clone, Copy)]
struct Cost {
    /// Wall-clock seconds.
    secs: f64,
    /// User + system CPU seconds over all its threads.
    cpu_secs: f64,
    rss_kib: u64,
}

/// Runs one command to completion and measures it (see [`Cost`]).
fn measure(cmd: &mut Command) -> Result<Cost> {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let mut status = 0;
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Cost {
        secs,
        cpu_secs: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        rss_kib: usage.ru_maxrss as u64,
    })
}

/// `e` moved `by` nanoseconds later, with the times it carries in its arguments: a
/// datagram's arrival (kept as is, each copy's dequeues would find their datagrams arriving
/// up to the whole trace earlier) and a loss's start.
fn shifted(e: &RawEvent, by: u64) -> RawEvent {
    let mut e = *e;
    e.ts_ns += by;
    match EventKind::try_from(e.kind) {
        Ok(EventKind::NetRecv) if e.args[0] != 0 => e.args[0] += by,
        Ok(EventKind::Lost) => e.args[1] += by,
        _ => {}
    }
    e
}

/// Writes `target` events by repeating `base`'s events shifted by its span each round.
pub fn replicate(base: &Path, out: &Path, target: u64) -> Result<u64> {
    let reader = TraceReader::open(base)?;
    let meta = reader.meta().clone();
    let mut events: Vec<RawEvent> = Vec::new();
    let mut block = Vec::new();
    let mut reader = reader;
    while reader.next_block(&mut block)? {
        events.extend_from_slice(&block);
    }
    if events.is_empty() {
        bail!("{} has no events", base.display());
    }
    let first = events.iter().map(|e| e.ts_ns).min().unwrap();
    let last = events.iter().map(|e| e.ts_ns).max().unwrap();
    let span = last - first + 1_000_000;
    let mut w = TraceWriter::create(out, &meta)?;
    let mut n = 0u64;
    let mut round = 0u64;
    while n < target {
        for e in &events {
            w.push(&shifted(e, round * span))?;
            n += 1;
        }
        round += 1;
    }
    let end = last + (round - 1) * span;
    w.finish(TraceTrailer {
        end_monotonic_ns: end,
        stop_reason: "exit".into(),
        ..Default::default()
    })?;
    Ok(n)
}

/// What the overhead benchmark traces.
#[derive(Clone, Copy)]
enum Subject {
    /// The GIL lab: (policy, spinners, datagrams). The datagram counts keep each run near a
    /// second (the convoyed one moves ~50 datagrams/s).
    Lab(&'static str, u32, u32),
    /// The pure-Python echo fixture on pyenv's CPython (what users trace): (CPU-bound
    /// threads, datagrams), recorded with the defaults (the Python sampler at 100 Hz too).
    CPython(u32, u32),
}

impl Subject {
    /// Spinners whose throughput the run reports (the Python fixture reports none).
    fn spinners(self) -> u32 {
        match self {
            Subject::Lab(_, spinners, _) => spinners,
            Subject::CPython(..) => 0,
        }
    }

    fn label(self) -> String {
        match self {
            Subject::Lab(policy, spinners, _) => format!("{policy} ×{spinners}"),
            Subject::CPython(threads, _) => format!("CPython ×{threads}"),
        }
    }
}

const OVERHEAD_CONFIGS: [Subject; 6] = [
    Subject::Lab("new", 0, 20_000),
    Subject::Lab("new", 2, 50),
    Subject::Lab("priority", 0, 20_000),
    Subject::Lab("priority", 2, 8_000),
    Subject::CPython(0, 4_000),
    Subject::CPython(1, 400),
];
const PERF_EVENTS: &str =
    "sched:sched_switch,sched:sched_wakeup,syscalls:sys_enter_futex,syscalls:sys_exit_futex";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Untraced,
    GilTrace,
    /// `gil-trace record --no-stacks`: what the user stacks cost.
    NoStacks,
    /// `gil-trace record` with every program returning at once (`GIL_TRACE_DISPATCH_ONLY`):
    /// what the kernel's tracepoint dispatch alone costs, the floor under any tracer on them.
    DispatchOnly,
    Perf,
}

/// What one lab run measured, and the size of what recorded it.
#[derive(Clone, Copy, Default, Debug)]
struct LabRun {
    bytes_per_sec: f64,
    spinner_iters_per_sec: f64,
    file_bytes: u64,
    events: u64,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Events in a perf.data, from `perf report --stats` ("TOTAL events: N").
fn perf_event_count(data: &Path) -> Result<u64> {
    let out = Command::new("perf")
        .args(["report", "--stats", "-i"])
        .arg(data)
        .output()
        .context("running perf report --stats")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("SAMPLE events:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .ok_or_else(|| {
            anyhow!(
                "no event count in `perf report --stats` of {}",
                data.display()
            )
        })
}

/// Runs `cmd` (stderr discarded) and parses its stdout as JSON; fails if it failed.
pub(crate) fn run_json(cmd: &mut Command) -> Result<serde_json::Value> {
    let out = cmd
        .stderr(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("output of {cmd:?}"))
}

/// `gil-trace record --quiet EXTRA… -o OUT --` (the command comes next), with the default
/// capture whatever the bench's own environment asks.
pub(crate) fn gil_trace_record(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(release_bin("gil-trace"));
    for knob in [
        "GIL_TRACE_KERNEL_STACKS",
        "GIL_TRACE_SPLIT_CALLS",
        "GIL_TRACE_DISPATCH_ONLY",
        "GIL_TRACE_NO_BTF",
    ] {
        c.env_remove(knob);
    }
    c.args(["record", "--quiet"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg("--");
    c
}

/// `perf record -q -e EVENTS -o OUT --` (the command comes next).
fn perf_record(out: &Path, events: &str) -> Command {
    let mut c = Command::new("perf");
    c.args(["record", "-q", "-e", events, "-o"])
        .arg(out)
        .arg("--");
    c
}

/// The lab binary appended to a recorder command.
fn under(mut recorder: Command) -> Command {
    recorder.arg(release_bin("workload"));
    recorder
}

/// Records `workload ARGS…` with `recorder`, output discarded; the error says `what` failed.
fn record_quietly(recorder: Command, workload_args: &[&str], what: &str) -> Result<()> {
    let status = under(recorder)
        .args(workload_args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| what.to_string())?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn lab_run(mode: Mode, subject: Subject, python: &str, dir: &Path) -> Result<LabRun> {
    let (program, args) = match subject {
        Subject::Lab(policy, spinners, messages) => (
            release_bin("workload").into_os_string(),
            vec![
                "--gil".to_string(),
                policy.to_string(),
                "--spinners".into(),
                spinners.to_string(),
                "--messages".into(),
                messages.to_string(),
                "--timeout-ms".into(),
                "250".into(),
                "--json".into(),
            ],
        ),
        Subject::CPython(threads, messages) => (
            python.into(),
            vec![
                workspace_root()
                    .join("gil-trace/tests/fixtures/py_echo.py")
                    .display()
                    .to_string(),
                threads.to_string(),
                messages.to_string(),
            ],
        ),
    };
    let trace = dir.join("overhead.trace");
    let perf_data = dir.join("overhead.perf.data");
    let mut cmd = match mode {
        Mode::Untraced => Command::new(&program),
        Mode::GilTrace => gil_trace_record(&trace, &[]),
        Mode::NoStacks => gil_trace_record(&trace, &["--no-stacks"]),
        Mode::DispatchOnly => {
            let mut c = gil_trace_record(&trace, &[]);
            c.env("GIL_TRACE_DISPATCH_ONLY", "1");
            c
        }
        Mode::Perf => perf_record(&perf_data, PERF_EVENTS),
    };
    if mode != Mode::Untraced {
        cmd.arg(&program);
    }
    let v = run_json(cmd.args(&args))?;
    let mut run = LabRun {
        bytes_per_sec: v["bytes_per_sec"].as_f64().unwrap_or(f64::NAN),
        spinner_iters_per_sec: v["spinner_iters_per_sec"].as_f64().unwrap_or(f64::NAN),
        ..Default::default()
    };
    match mode {
        Mode::Untraced | Mode::DispatchOnly | Mode::NoStacks => {}
        Mode::GilTrace => {
            run.file_bytes = fs::metadata(&trace)?.len();
            run.events = TraceReader::open(&trace)?.trailer().events;
        }
        Mode::Perf => {
            run.file_bytes = fs::metadata(&perf_data)?.len();
            run.events = perf_event_count(&perf_data)?;
        }
    }
    Ok(run)
}

struct OverheadRow {
    subject: Subject,
    untraced: LabRun,
    /// Median of per-round traced/untraced ratios: (echo bytes/s, spinner iterations/s).
    gil_trace: (f64, f64),
    /// The same without user stacks.
    no_stacks: (f64, f64),
    /// The same with every program returning at once: the tracepoints' own cost.
    dispatch_only: (f64, f64),
    perf: Option<(f64, f64)>,
    /// Issue 21's criterion, paired within each round: gil-trace's echo ÷ the tracepoints
    /// alone's, per round (their ratios to untraced share the round's untraced run).
    vs_dispatch_only: Vec<f64>,
    /// gil-trace's echo ÷ perf's, per round.
    vs_perf: Vec<f64>,
    gil_trace_bytes_per_event: f64,
    perf_bytes_per_event: Option<f64>,
    gil_trace_events: u64,
    perf_events: Option<u64>,
}

fn overhead(rounds: usize, dir: &Path, with_perf: bool) -> Result<Vec<OverheadRow>> {
    // pyenv's, the one users' `python3` is here.
    let python = crate::validate::pythons()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no python3 for the CPython rows"))?;
    let mut rows = Vec::new();
    for subject in OVERHEAD_CONFIGS {
        let mut modes = vec![
            Mode::Untraced,
            Mode::GilTrace,
            Mode::NoStacks,
            Mode::DispatchOnly,
        ];
        if with_perf {
            modes.push(Mode::Perf);
        }
        let mut runs: Vec<Vec<(Mode, LabRun)>> = Vec::new();
        for round in 0..rounds {
            // Rotate the order every round so no mode always runs first (or last).
            let mut order = modes.clone();
            order.rotate_left(round % modes.len());
            let mut this_round = Vec::new();
            for mode in order {
                this_round.push((mode, lab_run(mode, subject, &python, dir)?));
            }
            runs.push(this_round);
        }
        let of = |round: &Vec<(Mode, LabRun)>, m: Mode| {
            round.iter().find(|(mode, _)| *mode == m).map(|(_, r)| *r)
        };
        let ratio = |m: Mode, f: fn(&LabRun) -> f64| {
            median(
                runs.iter()
                    .filter_map(|r| Some(f(&of(r, m)?) / f(&of(r, Mode::Untraced)?)))
                    .collect(),
            )
        };
        let bytes = |r: &LabRun| r.bytes_per_sec;
        let iters = |r: &LabRun| r.spinner_iters_per_sec;
        let paired = |a: Mode, b: Mode| -> Vec<f64> {
            runs.iter()
                .filter_map(|r| Some(bytes(&of(r, a)?) / bytes(&of(r, b)?)))
                .collect()
        };
        let per_event = |m: Mode| {
            median(
                runs.iter()
                    .filter_map(|r| of(r, m))
                    .map(|r| r.file_bytes as f64 / r.events.max(1) as f64)
                    .collect(),
            )
        };
        let events = |m: Mode| {
            median(
                runs.iter()
                    .filter_map(|r| of(r, m))
                    .map(|r| r.events as f64)
                    .collect(),
            ) as u64
        };
        let untraced = LabRun {
            bytes_per_sec: median(
                runs.iter()
                    .filter_map(|r| of(r, Mode::Untraced))
                    .map(|r| r.bytes_per_sec)
                    .collect(),
            ),
            spinner_iters_per_sec: median(
                runs.iter()
                    .filter_map(|r| of(r, Mode::Untraced))
                    .map(|r| r.spinner_iters_per_sec)
                    .collect(),
            ),
            ..Default::default()
        };
        let row = OverheadRow {
            subject,
            untraced,
            gil_trace: (ratio(Mode::GilTrace, bytes), ratio(Mode::GilTrace, iters)),
            no_stacks: (ratio(Mode::NoStacks, bytes), ratio(Mode::NoStacks, iters)),
            dispatch_only: (
                ratio(Mode::DispatchOnly, bytes),
                ratio(Mode::DispatchOnly, iters),
            ),
            perf: with_perf.then(|| (ratio(Mode::Perf, bytes), ratio(Mode::Perf, iters))),
            vs_dispatch_only: paired(Mode::GilTrace, Mode::DispatchOnly),
            vs_perf: paired(Mode::GilTrace, Mode::Perf),
            gil_trace_bytes_per_event: per_event(Mode::GilTrace),
            perf_bytes_per_event: with_perf.then(|| per_event(Mode::Perf)),
            gil_trace_events: events(Mode::GilTrace),
            perf_events: with_perf.then(|| events(Mode::Perf)),
        };
        eprintln!(
            "[bench] overhead {}: gil-trace {:.3}/{:.3}, without stacks {:.3}/{:.3}, tracepoints alone {:.3}/{:.3}, perf {}",
            subject.label(),
            row.gil_trace.0,
            row.gil_trace.1,
            row.no_stacks.0,
            row.no_stacks.1,
            row.dispatch_only.0,
            row.dispatch_only.1,
            row.perf
                .map_or("-".into(), |p| format!("{:.3}/{:.3}", p.0, p.1))
        );
        rows.push(row);
    }
    Ok(rows)
}

struct CapacityRow {
    /// What load ran (the workload's arguments, shortened).
    load: String,
    /// futex-storm: the calls/s asked for (two events per call).
    offered_calls: Option<f64>,
    events: u64,
    seconds: f64,
    lost: u64,
    /// Medians over the rounds: with the default user stacks, and without.
    bpf_ns_per_event: f64,
    bpf_ns_per_event_no_stacks: f64,
    /// With the stacks walked by the kernel (`GIL_TRACE_KERNEL_STACKS=1`), on the loads that
    /// take stacks (the pairs storm).
    bpf_ns_per_event_kernel_stacks: Option<f64>,
    recorder_ns_per_event: f64,
}

/// The capacity loads: the pairs storm (futex waits, wakeups, switches, as fast as the
/// scheduler hands a token over) and the paced futex-call storm at rising rates (the rate is
/// the bench's; at the top both CPUs make calls and the recorder has to fit in between).
fn capacity_loads() -> Vec<(String, Option<f64>, Vec<String>)> {
    let mut loads = Vec::new();
    for pairs in [1u32, 2, 4, 8] {
        let args = ["storm", "--pairs", &pairs.to_string(), "--seconds", "1"];
        loads.push((
            format!("storm, {pairs} pairs"),
            None,
            args.map(String::from).to_vec(),
        ));
    }
    for (threads, rate) in [
        (1u32, 250e3),
        (1, 500e3),
        (1, 1e6),
        (2, 1e6),
        (2, 1.5e6),
        (2, 1e9),
    ] {
        let args = [
            "futex-storm".to_string(),
            "--threads".into(),
            threads.to_string(),
            "--rate".into(),
            rate.to_string(),
            "--seconds".into(),
            "1".into(),
        ];
        let shown = if rate >= 1e9 {
            "as fast as it can".to_string()
        } else {
            format!("{:.2} M calls/s", rate / 1e6)
        };
        loads.push((
            format!("futex-storm, {threads} thread(s), {shown}"),
            (rate < 1e9).then_some(rate),
            args.to_vec(),
        ));
    }
    loads
}

/// Rounds of each capacity load (each variant once per round, in rotating order).
const CAPACITY_ROUNDS: usize = 3;

/// How a capacity load is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CaptureVariant {
    /// The defaults: user stacks, walked by the programs where the kernel allows.
    Stacks,
    NoStacks,
    /// User stacks walked by the kernel (`bpf_get_stackid`): the A/B of the programs' walk.
    KernelStacks,
}

/// One recording of a capacity load: (events, seconds, lost, eBPF ns/event, recorder ns/event).
fn capacity_run(
    trace: &Path,
    variant: CaptureVariant,
    args: &[&str],
    load: &str,
) -> Result<[f64; 5]> {
    let flags: &[&str] = match variant {
        CaptureVariant::NoStacks => &["--cost", "--no-stacks"],
        CaptureVariant::Stacks | CaptureVariant::KernelStacks => &["--cost"],
    };
    let mut cmd = gil_trace_record(trace, flags);
    if variant == CaptureVariant::KernelStacks {
        cmd.env("GIL_TRACE_KERNEL_STACKS", "1");
    }
    record_quietly(cmd, args, &format!("recording the {load}"))?;
    let reader = TraceReader::open(trace)?;
    let (meta, trailer) = (reader.meta(), reader.trailer());
    let seconds = trailer
        .end_monotonic_ns
        .saturating_sub(meta.start_monotonic_ns) as f64
        / 1e9;
    let cost = trailer.capture_cost.clone().unwrap_or_default();
    let n = trailer.events.max(1) as f64;
    Ok([
        trailer.events as f64,
        seconds,
        trailer.lost.total as f64,
        cost.bpf_run_ns.unwrap_or(0) as f64 / n,
        cost.recording_cpu_ns.unwrap_or(cost.recorder_cpu_ns) as f64 / n,
    ])
}

fn capacity(dir: &Path) -> Result<Vec<CapacityRow>> {
    let trace = dir.join("storm.trace");
    let mut rows = Vec::new();
    for (load, offered_calls, args) in capacity_loads() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Only the pairs storm takes stacks (the futex-call storm's wakes wake no one).
        let mut variants = vec![CaptureVariant::Stacks, CaptureVariant::NoStacks];
        if args[0] == "storm" {
            variants.push(CaptureVariant::KernelStacks);
        }
        let (mut with, mut without, mut kernel) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..CAPACITY_ROUNDS {
            for i in 0..variants.len() {
                let variant = variants[(round + i) % variants.len()];
                let run = capacity_run(&trace, variant, &args, &load)?;
                match variant {
                    CaptureVariant::Stacks => with.push(run),
                    CaptureVariant::NoStacks => without.push(run),
                    CaptureVariant::KernelStacks => kernel.push(run),
                }
            }
        }
        let med = |runs: &[[f64; 5]], i: usize| median(runs.iter().map(|r| r[i]).collect());
        let row = CapacityRow {
            load,
            offered_calls,
            events: med(&with, 0) as u64,
            seconds: med(&with, 1),
            lost: with.iter().map(|r| r[2] as u64).max().unwrap_or(0),
            bpf_ns_per_event: med(&with, 3),
            bpf_ns_per_event_no_stacks: med(&without, 3),
            bpf_ns_per_event_kernel_stacks: (!kernel.is_empty()).then(|| med(&kernel, 3)),
            recorder_ns_per_event: med(&with, 4),
        };
        eprintln!(
            "[bench] {}: {:.2} M events/s, {} lost, eBPF {:.0} (no stacks {:.0}, kernel's stacks {:?}) + recorder {:.0} ns/event",
            row.load,
            row.events as f64 / row.seconds / 1e6,
            row.lost,
            row.bpf_ns_per_event,
            row.bpf_ns_per_event_no_stacks,
            row.bpf_ns_per_event_kernel_stacks.map(f64::round),
            row.recorder_ns_per_event
        );
        rows.push(row);
    }
    Ok(rows)
}

struct AnalysisRow {
    name: String,
    events: u64,
    /// Median and best of the rounds (wall clock).
    secs: f64,
    best_secs: f64,
    /// Median CPU seconds (all threads): what "per core" divides by.
    cpu_secs: f64,
    rss_kib: u64,
}

/// Rounds of the analysis benchmark (each runs every command once, in turn).
const ANALYSIS_ROUNDS: usize = 5;

/// How long the storm that `perf sched timehist` analyses runs: ~10 M events, comparable to
/// gil-trace's 10 M (see `analysis`).
const PERF_STORM_SECONDS: &str = "13";

/// The analysis benchmark's input: a recorded lab trace kept in the repo (format version 1),
/// so every run and every later change is measured on the same convoy; the bench's 10 M-event
/// copy is written in the current format. Recorded afresh if it is missing.
const BASE_TRACE: &str = "gil-trace/tests/fixtures/lab-new-2.v1.trace";

fn analysis(dir: &Path, with_perf: bool) -> Result<(Vec<AnalysisRow>, f64)> {
    let base = workspace_root().join(BASE_TRACE);
    if TraceReader::open(&base).is_err() {
        eprintln!("[bench] recording {BASE_TRACE}");
        record_quietly(
            gil_trace_record(&base, &[]),
            &["--gil", "new", "--spinners", "2", "--messages", "300"],
            "recording the base trace (bench needs root)",
        )?;
    }
    let big: PathBuf = dir.join("big.trace");
    let events = replicate(&base, &big, 10_000_000)?;
    let size = fs::metadata(&big)?.len();
    eprintln!(
        "[bench] {} events, {:.1} MB ({:.1} B/event)",
        events,
        size as f64 / 1e6,
        size as f64 / events as f64
    );
    let svg = dir.join("big.svg");
    let svg_flag = format!("--svg={}", svg.display());
    let mut commands: Vec<(String, u64, Command)> = Vec::new();
    for (name, args) in [
        ("gil-trace report", vec!["report"]),
        (
            "gil-trace report --threads 1",
            vec!["report", "--threads", "1"],
        ),
        ("gil-trace report --json", vec!["report", "--json"]),
        ("gil-trace report --svg", vec!["report", &svg_flag]),
        (
            "gil-trace export --format perfetto",
            vec!["export", "--format", "perfetto", "-o", "/dev/null"],
        ),
    ] {
        let mut cmd = Command::new(release_bin("gil-trace"));
        cmd.args(&args).arg(&big);
        commands.push((name.into(), events, cmd));
    }
    let data = dir.join("storm.perf.data");
    if with_perf {
        // perf's own scheduler analysis on a storm recorded with the tracepoints it needs,
        // long enough for an event count comparable to gil-trace's (~0.8 M events/s under
        // perf here: ~10 M events, ~1 GiB of perf.data, deleted below).
        record_quietly(
            perf_record(&data, "sched:sched_switch,sched:sched_wakeup,sched:sched_waking,syscalls:sys_enter_futex,syscalls:sys_exit_futex"),
            &["storm", "--pairs", "2", "--seconds", PERF_STORM_SECONDS],
            "perf record of the storm",
        )?;
        let mut cmd = Command::new("perf");
        cmd.args(["sched", "timehist", "-i"])
            .arg(&data)
            .stderr(std::process::Stdio::null());
        commands.push(("perf sched timehist".into(), perf_event_count(&data)?, cmd));
    }
    // Every command once per round, in turn: a slow spell of this VM hits all of them.
    let mut runs: Vec<Vec<Cost>> = vec![Vec::new(); commands.len()];
    for round in 1..=ANALYSIS_ROUNDS {
        for ((name, events, cmd), runs) in commands.iter_mut().zip(&mut runs) {
            let cost = measure(cmd)?;
            eprintln!(
                "[bench] round {round}: {name}: {events} events, {:.2} s ({:.2} s CPU), {:.2} M events/s, peak RSS {} MiB",
                cost.secs,
                cost.cpu_secs,
                *events as f64 / cost.secs / 1e6,
                cost.rss_kib / 1024
            );
            runs.push(cost);
        }
    }
    let _ = fs::remove_file(&data);
    let rows = commands
        .into_iter()
        .zip(runs)
        .map(|((name, events, _), runs)| AnalysisRow {
            name,
            events,
            secs: median(runs.iter().map(|r| r.secs).collect()),
            best_secs: runs.iter().map(|r| r.secs).fold(f64::INFINITY, f64::min),
            cpu_secs: median(runs.iter().map(|r| r.cpu_secs).collect()),
            rss_kib: runs.iter().map(|r| r.rss_kib).max().unwrap_or(0),
        })
        .collect();
    Ok((rows, size as f64 / events as f64))
}

/// Only the Python-sampling figures, printed, BENCHMARKS.md untouched.
pub fn run_python_only(rounds: usize) -> Result<()> {
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    bench_python::measure(rounds, &dir).map(|_| ())
}

/// Only the analysis-speed figures, printed, BENCHMARKS.md untouched (for quick comparisons
/// while optimizing).
pub fn run_analysis_only() -> Result<()> {
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    analysis(&dir, false).map(|_| ())
}

pub fn run(rounds: usize) -> Result<()> {
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let perf_works = || {
        Command::new("perf")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !perf_works() {
        // A fresh Debian machine: perf comes from linux-perf (best effort; idempotent).
        eprintln!("[bench] perf not found: apt-get install linux-perf");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "linux-perf"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    let with_perf = perf_works();
    if !with_perf {
        eprintln!("[bench] perf not found: perf columns are left out (apt install linux-perf)");
    }
    let overhead = overhead(rounds, &dir, with_perf)?;
    let capacity = capacity(&dir)?;
    let (analysis, big_bytes_per_event) = analysis(&dir, with_perf)?;
    let python = bench_python::measure(rounds, &dir)?;
    let mut md = markdown(rounds, &overhead, &capacity, &analysis, big_bytes_per_event)?;
    bench_python::markdown(&mut md, rounds, &python)?;
    fs::write(workspace_root().join("BENCHMARKS.md"), md)?;
    eprintln!("[bench] wrote BENCHMARKS.md");
    Ok(())
}

fn markdown(
    rounds: usize,
    overhead: &[OverheadRow],
    capacity: &[CapacityRow],
    analysis: &[AnalysisRow],
    big_bytes_per_event: f64,
) -> Result<String> {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Produced by `cargo xtask bench` on {}, {}. Every ratio is measured within that one invocation.\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        crate::lab::machine(),
    )?;
    let ratio = |r: f64| {
        if r.is_finite() {
            format!("{r:.3}")
        } else {
            "–".into()
        }
    };
    writeln!(md, "## 1. Recording overhead\n")?;
    writeln!(md, "The GIL lab (`workload --gil P --spinners N --messages M`) and a real CPython echo server (`py_echo.py N M`: the pure-Python UDP echo fixture with N CPU-bound threads on pyenv's CPython 3.11; recorded with the defaults, so with the Python sampler at 100 Hz too) untraced, under `gil-trace record` (user stacks on, the default), under `gil-trace record --no-stacks`, under `gil-trace record` with every eBPF program returning at once (`GIL_TRACE_DISPATCH_ONLY=1`: the same tracepoints attached, nothing recorded — what the kernel's tracepoint dispatch alone costs, the floor under any tracer using them), and under `perf record -e {PERF_EVENTS}`; the five run in rotating order, {rounds} rounds; each cell is the median of the per-round ratios traced/untraced (1.000 = no slowdown). Echo throughput is the I/O thread's bytes/s; spinner throughput is pi-digit iterations/s (with the GIL, spinners gain when the echo thread is slowed: it takes the lock less often). Target: ≥ 0.98 and better than perf. Why the 0-spinner echo cannot reach it: docs/performance.md.\n")?;
    writeln!(md, "| lab | untraced echo MB/s | gil-trace echo | no stacks | tracepoints alone | perf echo | untraced spinner it/s | gil-trace spinners | no stacks | tracepoints alone | perf spinners |")?;
    writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in overhead {
        let (pb, pi) = r.perf.unwrap_or((f64::NAN, f64::NAN));
        let spin = |v: f64| {
            if r.subject.spinners() == 0 {
                "–".to_string()
            } else {
                ratio(v)
            }
        };
        writeln!(
            md,
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.subject.label(),
            r.untraced.bytes_per_sec / 1e6,
            ratio(r.gil_trace.0),
            ratio(r.no_stacks.0),
            ratio(r.dispatch_only.0),
            ratio(pb),
            if r.subject.spinners() == 0 {
                "–".to_string()
            } else {
                format!("{:.0}", r.untraced.spinner_iters_per_sec)
            },
            spin(r.gil_trace.1),
            spin(r.no_stacks.1),
            spin(r.dispatch_only.1),
            spin(pi),
        )?;
    }
    writeln!(md, "\nIssue 21's echo criterion, paired within each round (the two runs share the round's untraced run and sit close in time, so the machine's slow and fast spells cancel): gil-trace's echo throughput ÷ that of the tracepoints alone (target ≥ 0.95) and ÷ perf’s (target ≥ 1), the median over the rounds and how many rounds meet it.\n")?;
    writeln!(
        md,
        "| lab | gil-trace ÷ tracepoints alone | rounds ≥ 0.95 | gil-trace ÷ perf | rounds ≥ 1 |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    for r in overhead {
        let met = |v: &[f64], at: f64| {
            format!("{} of {}", v.iter().filter(|&&q| q >= at).count(), v.len())
        };
        let perf = if r.vs_perf.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            (ratio(median(r.vs_perf.clone())), met(&r.vs_perf, 1.0))
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.subject.label(),
            ratio(median(r.vs_dispatch_only.clone())),
            met(&r.vs_dispatch_only, 0.95),
            perf.0,
            perf.1,
        )?;
    }
    writeln!(md, "\n## 2. Capture capacity\n")?;
    writeln!(md, "Two loads, each recorded for 1 s with `gil-trace record --cost` and the default 16 MiB ring buffer, {CAPACITY_ROUNDS} times with the default user stacks (walked by the eBPF programs where the kernel has BTF and `bpf_loop`), {CAPACITY_ROUNDS} times with `--no-stacks` and, on the pairs storm (the load that takes stacks), {CAPACITY_ROUNDS} times with the stacks walked by the kernel (`GIL_TRACE_KERNEL_STACKS=1`: `bpf_get_stackid`), in rotating order; each figure is the median of its runs (lost: the most of any run with stacks). `workload storm --pairs P`: P thread pairs hand a token through a futex-based condvar as fast as they can (futex waits and wakes, wakeups, context switches; the scheduler's handoff speed limits the rate). `workload futex-storm --threads T --rate R`: T threads make non-blocking futex calls (FUTEX_WAKE, nobody waiting; two events per call) paced to R calls/s in all, at rising rates up to as fast as they can. CPU per event: the eBPF programs as timed by the kernel (BPF_ENABLE_STATS, over every run, including runs filtered out; the timing itself adds two clock reads per run) and the recorder's own user+system CPU while recording (from the programs' attach to the last drain; loading the programs takes ~0.1 s of CPU before, whatever the load). A syscall that does not leave its CPU is written as one ring record (entry and exit) but counts as its two events. Targets: ≥ 2 M events/s with 0 drops; eBPF ≤ 150 ns/event.\n")?;
    writeln!(
        md,
        "| load | events | events/s (offered) | events/s | lost | eBPF ns/event | eBPF ns/event, no stacks | eBPF ns/event, kernel's stack walk | recorder ns/event |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in capacity {
        writeln!(
            md,
            "| {} | {} | {} | {:.2} M | {} | {:.0} | {:.0} | {} | {:.0} |",
            r.load,
            r.events,
            r.offered_calls
                .map_or("–".to_string(), |c| format!("{:.2} M", 2.0 * c / 1e6)),
            r.events as f64 / r.seconds / 1e6,
            r.lost,
            r.bpf_ns_per_event,
            r.bpf_ns_per_event_no_stacks,
            r.bpf_ns_per_event_kernel_stacks
                .map_or("–".to_string(), |ns| format!("{ns:.0}")),
            r.recorder_ns_per_event
        )?;
    }
    let best = capacity
        .iter()
        .filter(|r| r.lost == 0)
        .map(|r| r.events as f64 / r.seconds)
        .fold(0.0, f64::max);
    writeln!(md, "\nHighest rate with zero drops: **{:.2} M events/s**. On 2 CPUs the traced program, not the buffer, is the limit: each event costs it the tracepoint and the program (the eBPF column), and the ring drained every 10 ms holds ~300 k events.", best / 1e6)?;
    writeln!(md, "\n## 3. Trace size\n")?;
    writeln!(md, "Bytes per event on disk for the overhead runs above (median over rounds). gil-trace records more kinds of events than perf's four tracepoints here (send/recv/poll syscalls, UDP arrivals), so bytes/event is the fair comparison. Target: ≤ 1/4 of perf's.\n")?;
    writeln!(
        md,
        "| lab | gil-trace events | gil-trace B/event | perf events | perf B/event | ratio |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for r in overhead {
        let pb = r.perf_bytes_per_event.unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {} | {} | {:.1} | {} | {:.1} | {} |",
            r.subject.label(),
            r.gil_trace_events,
            r.gil_trace_bytes_per_event,
            r.perf_events.map_or("–".into(), |e| e.to_string()),
            pb,
            ratio(r.gil_trace_bytes_per_event / pb)
        )?;
    }
    writeln!(md, "\n## 4. Analysis speed\n")?;
    writeln!(md, "gil-trace: a recorded lab trace (`{BASE_TRACE}`: `workload --gil new --spinners 2`, a real convoy) replicated end to end to ≥ 10 M events ({big_bytes_per_event:.1} B/event). perf: `perf sched timehist` on a perf.data of `workload storm --pairs 2 --seconds {PERF_STORM_SECONDS}` (sched_switch, sched_wakeup, sched_waking, futex enter/exit). gil-trace decodes on a second thread while the analysis runs (2 CPUs here; `--threads 1` decodes in line); perf is single-threaded. Events/s is by the wall clock; events per CPU-second (user + system over all threads, from wait4, like peak RSS) is the per-core rate. Target: ≥ 10 M events/s/core, ≥ 10× perf, flat memory.\n")?;
    writeln!(
        md,
        "Each command ran {ANALYSIS_ROUNDS} times, all commands in turn each round; the table gives the median (and the best) run.\n"
    )?;
    writeln!(
        md,
        "| command | events | seconds (median) | events/s (median) | events/s (best) | CPU seconds (median) | events per CPU-second | peak RSS |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in analysis {
        writeln!(
            md,
            "| `{}` | {} | {:.2} | {:.2} M | {:.2} M | {:.2} | {:.2} M | {} MiB |",
            r.name,
            r.events,
            r.secs,
            r.events as f64 / r.secs / 1e6,
            r.events as f64 / r.best_secs / 1e6,
            r.cpu_secs,
            r.events as f64 / r.cpu_secs / 1e6,
            r.rss_kib / 1024
        )?;
    }
    let row = |name: &str| analysis.iter().find(|r| r.name == name);
    if let (Some(ours), Some(in_line), Some(perf)) = (
        row("gil-trace report"),
        row("gil-trace report --threads 1"),
        row("perf sched timehist"),
    ) {
        let rate = |r: &AnalysisRow| r.events as f64 / r.secs;
        let per_cpu = |r: &AnalysisRow| r.events as f64 / r.cpu_secs;
        writeln!(
            md,
            "\n`gil-trace report` processes events {:.1}× as fast as `perf sched timehist` by the wall clock (decoding on a second thread), {:.1}× per CPU-second with `--threads 1` (medians).",
            rate(ours) / rate(perf),
            per_cpu(in_line) / per_cpu(perf)
        )?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_events_carry_their_argument_times_along() {
        let event = |kind: EventKind, args: [u64; 4]| RawEvent {
            ts_ns: 1_000,
            kind: kind as u32,
            tid: 7,
            tgid: 7,
            cpu: 0,
            args,
        };
        let recv = shifted(&event(EventKind::NetRecv, [900, 0xffff, 64, 0]), 10_000);
        assert_eq!((recv.ts_ns, recv.args), (11_000, [10_900, 0xffff, 64, 0]));
        // No arrival seen: stays "none".
        let unknown = shifted(&event(EventKind::NetRecv, [0, 0xffff, 64, 0]), 10_000);
        assert_eq!(unknown.args[0], 0);
        let lost = shifted(&event(EventKind::Lost, [3, 800, 0, 0]), 10_000);
        assert_eq!(lost.args, [3, 10_800, 0, 0]);
        // Other kinds' arguments are not times.
        let wake = shifted(&event(EventKind::SchedWaking, [42, 1, 0, 0]), 10_000);
        assert_eq!((wake.ts_ns, wake.args), (11_000, [42, 1, 0, 0]));
    }
}
