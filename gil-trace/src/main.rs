//! The `gil-trace` command line: a thin layer over the library. `main` runs [`cli::run`]
//! and prints `Error: {:#}` on failure.
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
