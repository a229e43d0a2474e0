//! The command line: definitions ([`args`]), value parsers ([`parse`]), one module per
//! subcommand, and [`main`], which maps errors to exit codes. The `gil-trace` binary is this.
pub mod args;
mod dump;
mod export;
mod monitor;
mod out;
pub mod parse;
mod record;
mod report;
mod top;
mod windows;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command};

use crate::capture::CaptureError;

/// Exit status of `record` when gil-trace itself failed (as `env` and `timeout` do).
pub const EXIT_OWN_ERROR: u8 = 125;
/// `record`'s command exists but could not be run.
pub const EXIT_CANNOT_RUN: u8 = 126;
/// `record`'s command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;

/// Runs the command line; prints `Error: {:#}` on failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let records = matches!(cli.command, Command::Record(_));
    match run(cli) {
        Ok(code) => code,
        // A reader that went away (`| head`): output ends quietly, as grep's does.
        Err(e) if out::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            if records {
                ExitCode::from(record_exit_code(&e))
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Record(args) => record::record(args, quiet),
        Command::Report(args) => report::report(&args, quiet),
        Command::Dump(args) => dump::dump(&args),
        Command::Export(args) => export::export(&args, quiet),
        Command::Monitor(args) => monitor::monitor(&args, quiet),
        Command::Top(args) => top::top(&args, quiet),
    }
}

/// `record`'s own failures are told apart from the command's exit status.
fn record_exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<CaptureError>() {
        Some(CaptureError::CommandNotFound { .. }) => EXIT_NOT_FOUND,
        Some(CaptureError::Spawn { .. }) => EXIT_CANNOT_RUN,
        _ => EXIT_OWN_ERROR,
    }
}

/// `-v` turns logging on (gil-trace's and the eBPF loader's); `RUST_LOG` too.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if std::env::var_os("RUST_LOG").is_some() {
        builder.parse_env("RUST_LOG");
    }
    let _ = builder.format_timestamp_micros().try_init();
}
