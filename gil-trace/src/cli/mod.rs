//! The command line: definitions ([`args`]), value parsers ([`parse`]) and one module per
//! group of subcommands. Each returns the process's exit code or an error for `main` to print.
mod args;
mod parse;
mod record;
mod report;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command};

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Record(args) => record::record(args),
        Command::Report(args) => report::report(&args),
        Command::Dump(args) => report::dump(&args),
        Command::Export(args) => report::export(&args),
    }
}
