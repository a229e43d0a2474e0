//! The command line's definitions (clap). Also read by `cargo xtask gen-docs`, which writes
//! the man pages and shell completions from them.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand};

use super::parse::{self, RelativeWindow};
use crate::trace::Decoding;

/// The trace file `record` writes and the other subcommands read when given none.
pub const DEFAULT_TRACE: &str = "gil-trace.trace";

/// The trace a reading subcommand was given, or [`DEFAULT_TRACE`], which must then exist (the
/// error says how to make one rather than only that it is missing).
pub fn input_trace(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let default = PathBuf::from(DEFAULT_TRACE);
    if !default.exists() {
        anyhow::bail!(
            "no trace given and no {DEFAULT_TRACE} here: record one with \
             `sudo gil-trace record -- COMMAND`, or name the trace file"
        );
    }
    Ok(default)
}

#[derive(Parser)]
#[command(
    name = "gil-trace",
    version,
    about = "See lock convoys (the GIL convoy effect) from kernel truth",
    long_about = "See lock convoys (the GIL convoy effect) from kernel truth: record a program's \
scheduler, futex and socket events with eBPF, then report who waited for which lock, who held \
it, and what each received datagram's delay was made of.",
    after_help = "Examples:
  sudo gil-trace record -- python3 server.py     # writes gil-trace.trace
  gil-trace report                               # reads gil-trace.trace
  gil-trace report --svg=charts.svg --window 1s..3s
  gil-trace dump --tid 4242 | less"
)]
pub struct Cli {
    /// Log what gil-trace does on stderr (-v, -vv for more; the eBPF loader's too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print nothing but results and errors (no status lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Trace a command (or a running process) into a trace file. Needs root (sudo).
    Record(RecordArgs),
    /// Print what a trace file holds.
    Report(ReportArgs),
    /// Print the raw events, one per line, in time order (like `perf script`).
    Dump(DumpArgs),
    /// Convert a trace for other viewers.
    Export(ExportArgs),
    /// Watch a process and serve OpenMetrics for Prometheus, window after window. Needs root.
    Monitor(MonitorArgs),
    /// Watch a process live: threads, locks, stalls and convoys, refreshed every window.
    /// Needs root.
    Top(TopArgs),
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  sudo gil-trace top -p 1234
  sudo gil-trace top -- python3 server.py
  sudo gil-trace top --comm my_server --interval 2s | tee top.log   # plain text when piped
  sudo gil-trace top -o watched.trace -p 1234       # and keep it all: gil-trace report watched.trace

Each window (--interval) is recorded and analysed as `report` would, then shown; on a terminal
the screen is redrawn, otherwise each window is printed after the last. `q` (on a terminal)
or Ctrl-C stops. With `-- COMMAND`, the command runs as the invoking user, its start is
recorded from its first instruction, and gil-trace exits with its status when it ends.")]
pub struct TopArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Length of a window: the view is redrawn when one ends.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse::duration)]
    pub interval: Duration,
    /// Also keep what was watched, every window in one trace file (the moments between two
    /// windows are marked as not recorded; a previous file is kept as <FILE>.old).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  sudo gil-trace monitor -p 1234                          # http://127.0.0.1:9464/metrics
  sudo gil-trace monitor -- python3 server.py
  sudo gil-trace monitor --comm my_server --listen 0.0.0.0:9464 --interval 10s

It records the process in windows of --interval, analyses each as it ends (into counters and
histograms that only grow) and serves them on --listen until Ctrl-C. With --comm it waits for
a process of that name, follows it until it exits, then waits for the next. With `-- COMMAND`
it starts the command (as the invoking user) and serves until it exits, then exits with its
status.")]
pub struct MonitorArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Address to serve /metrics on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Length of a recording window; metrics move on when one ends.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    pub interval: Duration,
}

/// What `monitor` and `top` watch, and how.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "comm", "command"])))]
pub struct WatchArgs {
    /// The process to watch.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
    /// Watch the process with this name (the kernel's, as in `ps -o comm`; the newest one).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Python sampling rate for CPython processes (see `record --py-rate`).
    #[arg(long, value_name = "HZ", default_value_t = DEFAULT_PY_RATE_HZ,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub py_rate: u32,
    /// Do not sample Python stacks.
    #[arg(long, conflicts_with = "py_rate")]
    pub no_py: bool,
    /// A command to start (as the invoking user under sudo) and watch until it exits, after
    /// `--`; gil-trace then exits with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `record --py-rate`'s default: see docs/performance.md for what sampling costs.
pub const DEFAULT_PY_RATE_HZ: u32 = 100;

/// `record --stacks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StackChoice {
    None,
    Locks,
    All,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  sudo gil-trace record -- python3 server.py
  sudo gil-trace record -o echo.trace --duration 10s -- ./bench.sh
  sudo gil-trace record -p 1234                  # until Ctrl-C

Exit status: the command's own (128+N if it was killed by signal N, or if recording stopped on
signal N while it ran); 125 if gil-trace itself failed; 126 if the command could not be run;
127 if it was not found.")]
pub struct RecordArgs {
    /// Trace file to write (a previous one is kept as <FILE>.old).
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_TRACE)]
    pub output: PathBuf,
    /// Stop after this long (the command gets SIGTERM): e.g. 10s, 500ms, 2.5 (seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub duration: Option<Duration>,
    /// Kernel ring-buffer size (bytes; K/M/G suffixes; rounded up to a power of two).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse::size)]
    pub buffer_size: u32,
    /// Attach to a running process (all its threads) instead of starting a command.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        conflicts_with = "command"
    )]
    pub pid: Option<u32>,
    /// Have the kernel time the eBPF programs and print the capture cost per event
    /// (also kept in the trace's trailer). Timing adds two clock reads per program run.
    #[arg(long)]
    pub cost: bool,
    /// Which user stacks to record: `locks` (where threads blocked waiting in futex calls,
    /// and where holders woke their waiters: what names the code behind each lock wait),
    /// `all` (also every other block: I/O waits, sleeps, for off-CPU flamegraphs; costs
    /// more), `none`.
    #[arg(long, value_enum, value_name = "WHICH", default_value = "locks")]
    pub stacks: StackChoice,
    /// Same as `--stacks none`: reports then name locks by symbol only, and verdicts name no
    /// code.
    #[arg(long, conflicts_with = "stacks")]
    pub no_stacks: bool,
    /// For CPython processes, sample each Python thread's stack, `threading` name and GIL
    /// ownership this many times a second (read from outside, never stopping the program),
    /// so reports name Python threads and functions. Fewer when the reads would take more than
    /// 10 % of a CPU (they grow with the threads: ~0.1 ms each).
    #[arg(long, value_name = "HZ", default_value_t = DEFAULT_PY_RATE_HZ,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub py_rate: u32,
    /// Do not sample Python stacks: reports name native code and kernel thread names only.
    #[arg(long, conflicts_with = "py_rate")]
    pub no_py: bool,
    /// The command to run and trace, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(clap::Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "each bool is a command-line flag, as clap declares them"
)]
#[command(after_help = "Examples:
  gil-trace report                               # gil-trace.trace
  gil-trace report --json --detail echo.trace    # schema: docs/report-json.md
  gil-trace report --window 1s..3s --tid 4242 echo.trace
  gil-trace report --svg echo.trace              # charts in echo.svg
  gil-trace report --svg=out.svg --compare new.trace prio.trace
  gil-trace report --stacks --flamegraph off-cpu.svg echo.trace")]
pub struct ReportArgs {
    /// The trace file (two with --compare) [default: gil-trace.trace].
    #[arg(num_args = 0..=2, value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Compare two traces: key numbers side by side with ratios (B/A); with --svg, both
    /// chart sets in one file.
    #[arg(long)]
    pub compare: bool,
    /// JSON instead of text (schema: docs/report-json.md).
    #[arg(long)]
    pub json: bool,
    /// With --json: per-datagram (io_ops) and per-acquisition (handoff_events) arrays.
    #[arg(long)]
    pub detail: bool,
    /// Only this time window, relative to the trace start: A..B in ns/us/ms/s (a bare
    /// number is seconds); either side may be empty (e.g. 1.5..3, 200ms.., ..2s).
    #[arg(long, value_name = "A..B", value_parser = parse::window)]
    pub window: Option<RelativeWindow>,
    /// Only this thread's rows.
    #[arg(long, value_name = "TID")]
    pub tid: Option<u32>,
    /// Only this process's threads.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only threads with this name (the kernel's, or a Python thread's `threading` name).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// List every thread (by default the most relevant ones, and how many more there are).
    #[arg(long)]
    pub all_threads: bool,
    /// Per lock, the code its waiters waited in and its holders handed it over in (user
    /// stacks, by lock-wait time).
    #[arg(long)]
    pub stacks: bool,
    /// Also draw a flamegraph of the time threads spent off a CPU (lock waits by lock, I/O
    /// waits, sleeps) by where they blocked, into OUT (SVG).
    #[arg(long, value_name = "OUT")]
    pub flamegraph: Option<PathBuf>,
    /// Treat the lock containing this futex address (hex 0x… or decimal) as the primary lock.
    #[arg(long, value_name = "ADDR", value_parser = parse::addr)]
    pub lock: Option<u64>,
    /// Also draw the charts into one SVG file: --svg for the trace's name with .svg, or
    /// --svg=OUT (never a separate word: that would be read as a trace).
    #[arg(
        long,
        value_name = "OUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        value_parser = parse::svg_output
    )]
    pub svg: Option<PathBuf>,
    /// A datagram held up by a lock re-acquisition of its own longer than this counts as
    /// convoyed (e.g. 1ms, 500us).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse::duration_ns)]
    pub convoy_threshold: u64,
    /// Threads: 1 decodes the trace on the analysis's own thread (least CPU in all), 2 on a
    /// second thread ahead of it (least time; more gain nothing, the analysis is one thread).
    /// Default: 2 when a second CPU is available.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl ReportArgs {
    pub fn decoding(&self) -> Decoding {
        self.threads
            .map_or_else(Decoding::for_machine, |n| Decoding::for_threads(n.into()))
    }
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gil-trace dump | head                          # gil-trace.trace
  gil-trace dump --tid 4242 --window 1s..1.1s echo.trace
  gil-trace dump --json echo.trace | jq 'select(.kind == \"futex_enter\")'")]
pub struct DumpArgs {
    /// The trace file [default: gil-trace.trace].
    #[arg(value_name = "TRACE")]
    pub trace: Option<PathBuf>,
    /// Only events about this thread (as subject, wakee, switch partner or child).
    #[arg(long, value_name = "TID")]
    pub tid: Option<u32>,
    /// Only this time window, relative to the trace start (as for `report`).
    #[arg(long, value_name = "A..B", value_parser = parse::window)]
    pub window: Option<RelativeWindow>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Chrome Trace Event JSON: opens in ui.perfetto.dev and chrome://tracing.
    ChromeJson,
    /// Perfetto's native protobuf trace (.pftrace): the scheduler's events as ftrace (Perfetto
    /// derives thread states and who woke whom), the lock holder, handoffs as flows,
    /// datagram arrivals, convoys.
    Perfetto,
    /// Folded stacks of the time threads spent off a CPU, by where they blocked (`thread;
    /// outer;…;inner;[wait for LOCK] ns`): for flamegraph.pl, inferno, speedscope.
    Folded,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gil-trace export -o echo.json echo.trace       # then open it in ui.perfetto.dev
  gil-trace export -o - --window 1s..2s | gzip > window.json.gz
  gil-trace export --format folded -o - echo.trace | inferno-flamegraph > off-cpu.svg")]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "chrome-json")]
    pub format: ExportFormat,
    /// The trace file [default: gil-trace.trace].
    #[arg(value_name = "TRACE")]
    pub trace: Option<PathBuf>,
    /// Output file; `-` for stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Only this time window, relative to the trace start (as for `report`).
    #[arg(long, value_name = "A..B", value_parser = parse::window)]
    pub window: Option<RelativeWindow>,
    /// Only this thread's slices and rows.
    #[arg(long, value_name = "TID")]
    pub tid: Option<u32>,
    /// Treat the lock containing this futex address as the primary lock (as for `report`).
    #[arg(long, value_name = "ADDR", value_parser = parse::addr)]
    pub lock: Option<u64>,
    /// Re-acquisition above which a datagram counts as convoyed (as for `report`).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse::duration_ns)]
    pub convoy_threshold: u64,
}
