//! The `gil-trace` command line: a thin layer over the library.
use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gil_trace::{
    analysis::{analyze, ReportOptions},
    capture::{self, probes::ProbeOptions, RecordOptions, Target},
    render,
    render::{
        charts::{self, ChartData, OverviewRows},
        svg::charts_svg_stacked,
    },
    trace::{AnalysisBatches, Decoding, KindMask, TraceError, TraceReader},
};

#[derive(Parser)]
#[command(
    name = "gil-trace",
    version,
    about = "See lock convoys (the GIL convoy effect) from kernel truth"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace a command (or a running process) into a trace file. Needs root (sudo).
    Record(RecordArgs),
    /// Print what a trace file holds.
    Report(ReportArgs),
    /// Print the raw events, one per line, in time order (like `perf script`).
    Dump(DumpArgs),
    /// Convert a trace for other viewers.
    Export(ExportArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// Chrome Trace Event JSON: opens in ui.perfetto.dev and chrome://tracing.
    Perfetto,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "perfetto")]
    format: ExportFormat,
    /// The trace file.
    trace: PathBuf,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct DumpArgs {
    /// The trace file.
    trace: PathBuf,
    /// Only events about this thread (as subject, wakee or switch partner).
    #[arg(long)]
    tid: Option<u32>,
    /// Only this time window, relative to the trace start (as for `report`).
    #[arg(long, value_name = "A..B")]
    window: Option<String>,
}

#[derive(clap::Args)]
struct RecordArgs {
    /// Output trace file.
    #[arg(short, long, default_value = "gil-trace.trace")]
    output: PathBuf,
    /// Stop after this many seconds (the command gets SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Ring-buffer size (bytes; K/M/G suffixes; rounded up to a power of two).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    buffer_size: u32,
    /// Attach to a running process (all its threads) instead of starting a command.
    #[arg(short = 'p', long = "pid", conflicts_with = "command")]
    pid: Option<u32>,
    /// No live status line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Have the kernel time the eBPF programs and print the capture cost per event
    /// (also kept in the trace's trailer). Timing adds two clock reads per program run.
    #[arg(long)]
    cost: bool,
    /// The command to run and trace.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The trace file (two with --compare).
    #[arg(required = true, num_args = 1..=2, value_name = "TRACE")]
    traces: Vec<PathBuf>,
    /// Compare two traces: key numbers side by side with ratios (B/A); with --svg, both
    /// chart sets in one file.
    #[arg(long)]
    compare: bool,
    /// JSON instead of text (schema: docs/report-json.md).
    #[arg(long)]
    json: bool,
    /// With --json: per-datagram (io_ops) and per-acquisition (handoff_events) arrays.
    #[arg(long)]
    detail: bool,
    /// Only this time window, relative to the trace start: A..B with units ns/us/ms/s
    /// (default s), either side may be empty (e.g. 1.5..3, 200ms.., ..2s).
    #[arg(long, value_name = "A..B")]
    window: Option<String>,
    /// Only this thread's rows.
    #[arg(long)]
    tid: Option<u32>,
    /// Treat the lock containing this futex address (hex 0x… or decimal) as the primary lock.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    lock: Option<u64>,
    /// Also draw the charts as one SVG file (default: the trace's name with .svg).
    #[arg(long, value_name = "OUT", num_args = 0..=1)]
    svg: Option<Option<PathBuf>>,
    /// Lock wait after I/O above which a datagram counts as convoyed (units as --window).
    #[arg(long, default_value = "1ms", value_parser = parse_duration_ns)]
    convoy_threshold: u64,
    /// Threads: 1 decodes the trace on the analysis's own thread (least CPU in all), 2 on a
    /// second thread ahead of it (least time; more gain nothing, the analysis is one thread).
    /// Default: 2 when a second CPU is available.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

impl ReportArgs {
    fn decoding(&self) -> Decoding {
        self.threads
            .map_or_else(Decoding::for_machine, |n| Decoding::for_threads(n.into()))
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("not an address: {s:?} (e.g. 0x7f12a4c0)"))
}

/// "1.5", "200ms", "10us", "500ns", "2s" -> ns.
fn parse_duration_ns(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("ns") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e9)
    } else {
        (s, 1e9)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 1.5, 200ms, 10us)"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok((x * mult) as u64)
}

fn parse_window(s: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("--window wants A..B, got {s:?}"))?;
    let side = |v: &str| {
        if v.trim().is_empty() {
            Ok(None)
        } else {
            parse_duration_ns(v).map(Some)
        }
    };
    let (a, b) = (side(a)?, side(b)?);
    if let (Some(a), Some(b)) = (a, b) {
        if a > b {
            return Err(format!("--window {s}: start is after end"));
        }
    }
    Ok((a, b))
}

fn parse_size(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 4096, 256K, 16M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    if !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!("buffer size must be between 4K and 1G, got {s}"));
    }
    Ok(bytes.next_power_of_two() as u32)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Record(args) => record(args),
        Command::Report(args) => report(args),
        Command::Dump(args) => dump(args),
        Command::Export(args) => export(args),
    }
}

fn record(args: RecordArgs) -> Result<ExitCode> {
    let attached = args.pid.is_some();
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, false) => Target::Command(args.command),
        (None, true) => bail!("nothing to trace: give a command after `--`, or -p PID"),
    };
    let duration = match args.duration {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            bail!("--duration must be a positive number of seconds")
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    // A benchmark aid (not a CLI option: the trace it writes is empty on purpose).
    let dispatch_only = std::env::var_os("GIL_TRACE_DISPATCH_ONLY").is_some();
    if dispatch_only {
        eprintln!("gil-trace: GIL_TRACE_DISPATCH_ONLY is set: the programs return at once, nothing is recorded");
    }
    let outcome = capture::record(RecordOptions {
        output: args.output,
        target,
        duration,
        probes: ProbeOptions {
            buffer_size: args.buffer_size,
            measure_cost: args.cost,
            dispatch_only,
        },
        live_status: !args.quiet,
    })?;
    eprintln!(
        "gil-trace: wrote {} ({} events, {} lost; stopped: {})",
        outcome.path.display(),
        outcome.events,
        outcome.lost,
        outcome.stop_reason
    );
    if let Some(cost) = outcome.cost.as_ref().filter(|_| args.cost) {
        let per_event = |ns: u64| ns as f64 / outcome.events.max(1) as f64;
        let (bpf_ns, runs) = (cost.bpf_run_ns.unwrap_or(0), cost.bpf_runs.unwrap_or(0));
        eprintln!(
            "gil-trace: capture cost: eBPF {:.1} ms in {runs} runs ({:.0} ns/run, {:.0} ns/event), recorder {:.1} ms CPU ({:.0} ns/event)",
            bpf_ns as f64 / 1e6,
            bpf_ns as f64 / runs.max(1) as f64,
            per_event(bpf_ns),
            cost.recorder_cpu_ns as f64 / 1e6,
            per_event(cost.recorder_cpu_ns),
        );
        for p in &cost.bpf_programs {
            eprintln!(
                "gil-trace:   {:<28} {:>10} runs {:>6.0} ns/run",
                p.program,
                p.runs,
                p.run_ns as f64 / p.runs.max(1) as f64
            );
        }
    }
    // Pass the command's exit status through, like `time`. Stopped by a signal while the
    // command still ran (a second Ctrl-C): 128 + that signal, as a shell would report it.
    let by_signal = match outcome.stop_reason.as_str() {
        "signal SIGINT" => Some(2),
        "signal SIGTERM" => Some(15),
        "signal SIGHUP" => Some(1),
        _ => None,
    };
    Ok(match (outcome.exit, by_signal) {
        (Some(exit), _) => match (exit.code, exit.signal) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (_, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
            _ => ExitCode::SUCCESS,
        },
        (None, Some(sig)) if !attached => ExitCode::from(128 + sig as u8),
        _ => ExitCode::SUCCESS,
    })
}

/// One analysed trace: the report, its options, and with --svg the overview rows its pass
/// filled for the charts.
struct Analysed {
    report: gil_trace::analysis::Report,
    opts: ReportOptions,
    overview: Option<OverviewRows>,
}

/// Analyses one trace with the report's options.
fn build_report(trace: &Path, args: &ReportArgs) -> Result<Analysed> {
    let window = args
        .window
        .as_deref()
        .map(parse_window)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let reader = TraceReader::open(trace)?;
    let meta = reader.meta().clone();
    let trailer = reader.trailer().clone();
    let start = meta.start_monotonic_ns;
    let opts = ReportOptions {
        window: window.map(|(a, b)| (start + a.unwrap_or(0), b.map_or(u64::MAX, |b| start + b))),
        tid: args.tid,
        lock: args.lock,
        convoy_threshold_ns: args.convoy_threshold,
        detail: args.detail,
        detail_window: None,
    };
    let open = streams(trace, Some(reader), args.decoding());
    let mut overview = args
        .svg
        .is_some()
        .then(|| OverviewRows::new(start, trailer.end_monotonic_ns));
    let report = analyze(&meta, &trailer, open, opts, |span| {
        if let Some(rows) = &mut overview {
            rows.add(span);
        }
    })?;
    Ok(Analysed {
        report,
        opts,
        overview,
    })
}

/// The event streams of one trace's passes: the already open `reader` first, then the file
/// opened afresh for each further pass.
fn streams(
    trace: &Path,
    reader: Option<TraceReader>,
    decoding: Decoding,
) -> impl FnMut(KindMask) -> Result<AnalysisBatches, TraceError> + '_ {
    let mut first = reader;
    move |kinds| {
        first
            .take()
            .map_or_else(|| TraceReader::open(trace), Ok)?
            .analysis_batches(kinds, decoding)
    }
}

/// The chart data of one analysed trace (one more pass, which stops soon after the chart's
/// window when the report's pass kept the overview).
fn chart_data(trace: &Path, analysed: &Analysed, decoding: Decoding) -> Result<ChartData> {
    Ok(charts::collect(
        &analysed.report,
        &analysed.opts,
        format!("gil-trace: {}", trace.display()),
        analysed.overview.as_ref(),
        streams(trace, None, decoding),
    )?)
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .context("writing the report")
}

fn report(args: ReportArgs) -> Result<ExitCode> {
    if args.compare != (args.traces.len() == 2) {
        bail!("give one trace, or two with --compare");
    }
    let mut reports = Vec::new();
    for trace in &args.traces {
        reports.push(build_report(trace, &args)?);
    }
    if let Some(svg) = &args.svg {
        let out = svg
            .clone()
            .unwrap_or_else(|| args.traces[0].with_extension("svg"));
        let mut charts = Vec::new();
        let decoding = args.decoding();
        for (trace, analysed) in args.traces.iter().zip(&reports) {
            charts.push(chart_data(trace, analysed, decoding)?);
        }
        std::fs::write(&out, charts_svg_stacked(&charts)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("gil-trace: wrote {}", out.display());
    }
    for Analysed { report, .. } in &mut reports {
        if !args.detail {
            report.io_ops = None;
            report.handoff_events = None;
        }
    }
    if args.compare {
        let cmp = gil_trace::analysis::compare::compare(&reports[0].report, &reports[1].report);
        let bytes = if args.json {
            render::json::to_json(&cmp)
        } else {
            render::text::comparison(&cmp, &args.traces[0], &args.traces[1]).into_bytes()
        };
        write_out(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = &reports[0].report;
    let bytes = if args.json {
        render::json::to_json(report)
    } else {
        render::text::report(report).into_bytes()
    };
    write_out(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

fn dump(args: DumpArgs) -> Result<ExitCode> {
    use gil_trace::trace::EventData;
    let window = args
        .window
        .as_deref()
        .map(parse_window)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let reader = TraceReader::open(&args.trace)?;
    let start = reader.meta().start_monotonic_ns;
    let (a, b) = window.map_or((0, u64::MAX), |(a, b)| {
        (a.unwrap_or(0), b.unwrap_or(u64::MAX))
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for ev in reader.events() {
        let ev = ev?;
        let rel = ev.ts_ns.saturating_sub(start);
        if rel < a || rel > b {
            continue;
        }
        if let Some(tid) = args.tid {
            let involved = ev.tid == tid
                || matches!(ev.data, EventData::Switch { next_tid, .. } if next_tid == tid)
                || matches!(ev.data, EventData::Waking { wakee, .. } if wakee == tid)
                || matches!(ev.data, EventData::Fork { child } if child == tid);
            if !involved {
                continue;
            }
        }
        writeln!(
            out,
            "{:>16.6} ms cpu{} {:>7}/{:<7} {:?}",
            rel as f64 / 1e6,
            ev.cpu,
            ev.tgid,
            ev.tid,
            ev.data
        )
        .context("writing")?;
    }
    out.flush().context("writing")?;
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let ExportFormat::Perfetto = args.format;
    let reader = TraceReader::open(&args.trace)?;
    let (meta, trailer) = (reader.meta().clone(), reader.trailer().clone());
    let opts = ReportOptions {
        convoy_threshold_ns: 1_000_000,
        detail: true,
        ..Default::default()
    };
    let open = streams(&args.trace, Some(reader), Decoding::for_machine());
    // One pass: the report's timeline hands its spans out as they close.
    let mut spans = Vec::new();
    let report = analyze(&meta, &trailer, open, opts, |s| spans.push(*s))?;
    spans.sort_by_key(|s| (s.tid, s.start_ns));
    let bytes = gil_trace::render::perfetto::to_chrome_json(&report, &spans);
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "gil-trace: wrote {} ({} state slices)",
        args.output.display(),
        spans.len()
    );
    Ok(ExitCode::SUCCESS)
}
