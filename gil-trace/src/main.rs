//! The `gil-trace` command line: a thin layer over the library.
use std::{ffi::OsString, io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use gil_trace::{
    analysis::summarize,
    capture::{self, RecordOptions, Target},
    render,
    trace::TraceReader,
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
    /// The command to run and trace.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The trace file.
    trace: PathBuf,
    /// JSON instead of text (schema: docs/report-json.md).
    #[arg(long)]
    json: bool,
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
    }
}

fn record(args: RecordArgs) -> Result<ExitCode> {
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
    let outcome = capture::record(RecordOptions {
        output: args.output,
        target,
        duration,
        buffer_size: args.buffer_size,
        live_status: !args.quiet,
    })?;
    eprintln!(
        "gil-trace: wrote {} ({} events, {} lost; stopped: {})",
        outcome.path.display(),
        outcome.events,
        outcome.lost,
        outcome.stop_reason
    );
    // Pass the command's exit status through, like `time`.
    Ok(match outcome.exit {
        Some(exit) => match (exit.code, exit.signal) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (_, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
            _ => ExitCode::SUCCESS,
        },
        None => ExitCode::SUCCESS,
    })
}

fn report(args: ReportArgs) -> Result<ExitCode> {
    let reader = TraceReader::open(&args.trace)?;
    let meta = reader.meta().clone();
    let trailer = reader.trailer().clone();
    let summary = summarize(&meta, &trailer, reader.events())?;
    let bytes = if args.json {
        render::json::to_json(&summary)
    } else {
        render::text::summary(&summary).into_bytes()
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&bytes)
        .and_then(|_| stdout.flush())
        .context("writing the report")?;
    Ok(ExitCode::SUCCESS)
}
