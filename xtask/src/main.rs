//! `cargo xtask …`: everything that is more than one cargo command.
//!
//! - `setup`: bring a fresh machine to a working eBPF toolchain (idempotent).
//! - `build`: build the eBPF object, then the userspace binaries that embed it.
//! - `test`:  setup + build + the whole test suite (root-only tests included when root).
//! - `demo`:  setup + build + record the bundled GIL lab + report.
//! - `gen-docs`: man pages and shell completions from the CLI's clap definitions.
mod bench;
mod bench_python;
mod build;
mod demo;
mod gen_docs;
mod lab;
mod png;
mod same_output;
mod setup;
mod validate;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "gil-trace development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks: rust-src, bpf-linker (against rustc's libLLVM), tracefs.
    Setup,
    /// Build the eBPF object and the userspace binaries embedding it.
    Build {
        /// Build userspace in release mode (the eBPF object is always release).
        #[arg(long)]
        release: bool,
    },
    /// Setup + build + run every test (root-only eBPF tests need root).
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the GIL lab for every policy x 0/1/2/4 spinners; write docs/lab-table.md.
    LabTable {
        /// Datagrams per run.
        #[arg(long, default_value_t = 200)]
        messages: u32,
    },
    /// Record the lab for every policy with its truth log and check the analysis against it
    /// (root); writes docs/validation.md.
    Validate,
    /// Performance figures side by side with perf (recording overhead, capture capacity,
    /// trace size, analysis speed); root; writes BENCHMARKS.md.
    Bench {
        /// Alternating rounds per overhead configuration (the median is reported).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Only the analysis-speed figures, printed (BENCHMARKS.md is left as it is).
        #[arg(long)]
        analysis_only: bool,
        /// Only the Python-sampling figures, printed (BENCHMARKS.md is left as it is).
        #[arg(long)]
        python_only: bool,
    },
    /// Compare every output (text, JSON, window, SVG, Perfetto) of another gil-trace build
    /// with this one's, on the committed fixtures and a freshly recorded lab trace (root).
    SameOutput {
        /// The other build's gil-trace binary.
        #[arg(long)]
        base: PathBuf,
        /// The build compared (default: this workspace's release binary, built first).
        #[arg(long)]
        new: Option<PathBuf>,
        /// Traces to compare on instead of the fixtures and a fresh recording.
        traces: Vec<PathBuf>,
    },
    /// Render chart SVGs to PNG in headless Chromium, to look at them (default: the demo's).
    ChartsPng {
        /// SVG files.
        svgs: Vec<PathBuf>,
    },
    /// Check formatting and clippy (-D warnings) for the whole workspace.
    Lint,
    /// Write man pages (OUT/man/man1) and bash/zsh/fish completions (OUT/completions),
    /// generated from gil-trace's own clap definitions.
    GenDocs {
        /// Where they go (e.g. /usr/local/share, then `man gil-trace-report` works).
        #[arg(long, default_value = "target/gen-docs")]
        out: PathBuf,
    },
    /// Setup + build + record the bundled GIL lab under gil-trace + report.
    Demo {
        /// Where traces and reports go.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build { release } => {
            setup::ensure_path();
            build::build_all(release)
        }
        Command::Test { args } => {
            setup::run()?;
            build::build_all(true)?;
            build::test_all(&args)
        }
        Command::LabTable { messages } => {
            setup::ensure_path();
            build::build_all(true)?;
            lab::run(messages)
        }
        Command::Lint => build::lint(),
        Command::SameOutput { base, new, traces } => {
            if new.is_none() {
                setup::ensure_path();
                build::build_all(true)?;
            }
            same_output::run(&base, new.as_deref(), &traces)
        }
        Command::ChartsPng { svgs } => png::run(&svgs),
        Command::Bench {
            rounds,
            analysis_only,
            python_only,
        } => {
            setup::run()?;
            build::build_all(true)?;
            if analysis_only {
                bench::run_analysis_only()
            } else if python_only {
                bench::run_python_only(rounds.max(1))
            } else {
                bench::run(rounds.max(1))
            }
        }
        Command::Validate => {
            setup::run()?;
            build::build_all(true)?;
            validate::run()
        }
        Command::GenDocs { out } => {
            for file in gen_docs::run(&out)? {
                println!("{}", file.display());
            }
            Ok(())
        }
        Command::Demo { out } => {
            setup::run()?;
            build::build_all(true)?;
            demo::run(&out)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}
