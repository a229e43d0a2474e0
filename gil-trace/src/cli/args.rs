//! The command line's definitions (clap).
use std::{ffi::OsString, path::PathBuf};

use clap::{Parser, Subcommand};
use gil_trace::trace::Decoding;

use super::parse;

#[derive(Parser)]
#[command(
    name = "gil-trace",
    version,
    about = "See lock convoys (the GIL convoy effect) from kernel truth"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ExportFormat {
    /// Chrome Trace Event JSON: opens in ui.perfetto.dev and chrome://tracing.
    Perfetto,
}

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "perfetto")]
    pub(crate) format: ExportFormat,
    /// The trace file.
    pub(crate) trace: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub(crate) output: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct DumpArgs {
    /// The trace file.
    pub(crate) trace: PathBuf,
    /// Only events about this thread (as subject, wakee or switch partner).
    #[arg(long)]
    pub(crate) tid: Option<u32>,
    /// Only this time window, relative to the trace start (as for `report`).
    #[arg(long, value_name = "A..B")]
    pub(crate) window: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct RecordArgs {
    /// Output trace file.
    #[arg(short, long, default_value = "gil-trace.trace")]
    pub(crate) output: PathBuf,
    /// Stop after this many seconds (the command gets SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// Ring-buffer size (bytes; K/M/G suffixes; rounded up to a power of two).
    #[arg(long, default_value = "16M", value_parser = parse::size)]
    pub(crate) buffer_size: u32,
    /// Attach to a running process (all its threads) instead of starting a command.
    #[arg(short = 'p', long = "pid", conflicts_with = "command")]
    pub(crate) pid: Option<u32>,
    /// No live status line on stderr.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Have the kernel time the eBPF programs and print the capture cost per event
    /// (also kept in the trace's trailer). Timing adds two clock reads per program run.
    #[arg(long)]
    pub(crate) cost: bool,
    /// The command to run and trace.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// The trace file (two with --compare).
    #[arg(required = true, num_args = 1..=2, value_name = "TRACE")]
    pub(crate) traces: Vec<PathBuf>,
    /// Compare two traces: key numbers side by side with ratios (B/A); with --svg, both
    /// chart sets in one file.
    #[arg(long)]
    pub(crate) compare: bool,
    /// JSON instead of text (schema: docs/report-json.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// With --json: per-datagram (io_ops) and per-acquisition (handoff_events) arrays.
    #[arg(long)]
    pub(crate) detail: bool,
    /// Only this time window, relative to the trace start: A..B with units ns/us/ms/s
    /// (default s), either side may be empty (e.g. 1.5..3, 200ms.., ..2s).
    #[arg(long, value_name = "A..B")]
    pub(crate) window: Option<String>,
    /// Only this thread's rows.
    #[arg(long)]
    pub(crate) tid: Option<u32>,
    /// Treat the lock containing this futex address (hex 0x… or decimal) as the primary lock.
    #[arg(long, value_name = "ADDR", value_parser = parse::addr)]
    pub(crate) lock: Option<u64>,
    /// Also draw the charts as one SVG file (default: the trace's name with .svg).
    #[arg(long, value_name = "OUT", num_args = 0..=1)]
    #[allow(
        clippy::option_option,
        reason = "absent, given without a path, or with one"
    )]
    pub(crate) svg: Option<Option<PathBuf>>,
    /// Lock wait after I/O above which a datagram counts as convoyed (units as --window).
    #[arg(long, default_value = "1ms", value_parser = parse::duration_ns)]
    pub(crate) convoy_threshold: u64,
    /// Threads: 1 decodes the trace on the analysis's own thread (least CPU in all), 2 on a
    /// second thread ahead of it (least time; more gain nothing, the analysis is one thread).
    /// Default: 2 when a second CPU is available.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
}

impl ReportArgs {
    pub(crate) fn decoding(&self) -> Decoding {
        self.threads
            .map_or_else(Decoding::for_machine, |n| Decoding::for_threads(n.into()))
    }
}
