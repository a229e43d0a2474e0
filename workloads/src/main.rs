//! `workload`: the GIL lab's command line.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gil_lab::{
    echo,
    experiment::{self, ClientMode, ExperimentConfig},
    gil::{GilConfig, Policy},
};

#[derive(Parser)]
#[command(
    name = "workload",
    version,
    about = "GIL lab: reproduce the convoy effect (Python issue 7946) on a real futex-based lock"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Lock policy: old, new, priority, fair.
    #[arg(long = "gil", default_value = "new", value_parser = |s: &str| s.parse::<Policy>())]
    policy: Policy,
    /// CPU-bound spinner threads.
    #[arg(long, default_value_t = 2)]
    spinners: usize,
    /// Datagrams the client sends (one at a time).
    #[arg(long, default_value_t = 1280)]
    messages: u64,
    /// Datagram size in bytes (1..=65507).
    #[arg(long, default_value_t = 8192)]
    size: usize,
    /// UDP port of the echo server on 127.0.0.1 (0: ephemeral).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// New/priority GIL switch interval in ms (fair GIL slice = 2 x this).
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Old GIL: work units between releases.
    #[arg(long, default_value_t = 100)]
    check_interval: u32,
    /// Client's wait for each echo, in ms.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Write the ground-truth log (JSON lines) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Sub {
    /// The echo client (started by the experiment as a separate process).
    Client {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value_t = 1280)]
        messages: u64,
        #[arg(long, default_value_t = 8192)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// A futex/wakeup storm: thread pairs hand a token back and forth as fast as they can.
    Storm {
        #[arg(long, default_value_t = 1)]
        pairs: usize,
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Non-blocking futex calls (FUTEX_WAKE, no waiter) at a paced rate: two traced events
    /// per call, for capture-capacity benchmarks.
    FutexStorm {
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Calls per second, all threads together.
        #[arg(long, default_value_t = 100_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Compare a truth log with `gil-trace report --json --detail` of the same run.
    Validate {
        /// The lab's --truth log.
        #[arg(long)]
        truth: PathBuf,
        /// The report JSON (`gil-trace report --json --detail`).
        #[arg(long)]
        report: PathBuf,
        /// The trace's events (`gil-trace dump --json`): takes the kernel never saw a futex
        /// wait in are then counted apart.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// A burst to a slow receiver (gil-trace's tests): N datagrams queued at once, then taken
    /// one by one; prints the receiver's tid and each send's time as JSON.
    Burst {
        #[arg(long, default_value_t = 200)]
        datagrams: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Work per datagram, µs.
        #[arg(long, default_value_t = 200)]
        work_us: u64,
    },
    /// A small known program for gil-trace's tests: threads contending on one futex word and
    /// a UDP ping-pong; prints the futex address, threads and counts as JSON.
    Pingpong {
        #[arg(long, default_value_t = 4)]
        lockers: usize,
        #[arg(long, default_value_t = 200)]
        rounds: u64,
        #[arg(long, default_value_t = 100)]
        datagrams: u64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, not clap's usage block.
            let msg = e.to_string();
            eprintln!("{}", msg.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Sub::Client {
        server,
        messages,
        size,
        timeout_ms,
    }) = cli.command
    {
        let report = echo::client(server, messages, size, Duration::from_millis(timeout_ms))
            .context("echo client")?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Some(Sub::Validate {
        truth,
        report,
        dump,
    }) = &cli.command
    {
        let truth_text = std::fs::read_to_string(truth)
            .with_context(|| format!("reading {}", truth.display()))?;
        let truth = gil_lab::truth::parse_jsonl(&truth_text)
            .with_context(|| format!("parsing {}", truth.display()))?;
        let report_json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(report).with_context(|| format!("reading {}", report.display()))?,
        )
        .with_context(|| format!("parsing {}", report.display()))?;
        let waits = match dump {
            Some(path) => Some(
                gil_lab::validate::kernel_waits(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ))
                .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let v = gil_lab::validate::compare(&report_json, &truth, waits.as_ref())
            .map_err(anyhow::Error::msg)?;
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    if let Some(Sub::Storm { pairs, seconds }) = cli.command {
        if !(seconds.is_finite() && seconds > 0.0) || pairs == 0 || pairs > 64 {
            anyhow::bail!("storm needs 1..=64 pairs and a positive duration");
        }
        let n = gil_lab::fixture::storm(pairs, Duration::from_secs_f64(seconds));
        println!(
            "{}",
            serde_json::json!({"handoffs": n, "per_sec": n as f64 / seconds})
        );
        return Ok(());
    }
    if let Some(Sub::FutexStorm {
        threads,
        rate,
        seconds,
    }) = cli.command
    {
        if !(seconds.is_finite() && seconds > 0.0 && rate.is_finite() && rate > 0.0)
            || threads == 0
            || threads > 64
        {
            anyhow::bail!("futex-storm needs 1..=64 threads, a positive rate and duration");
        }
        let calls = gil_lab::fixture::futex_storm(threads, rate, Duration::from_secs_f64(seconds));
        println!(
            "{}",
            serde_json::json!({"calls": calls, "per_sec": calls as f64 / seconds})
        );
        return Ok(());
    }
    if let Some(Sub::Burst {
        datagrams,
        size,
        work_us,
    }) = cli.command
    {
        if !(1..=65507).contains(&size) || datagrams == 0 {
            anyhow::bail!("burst needs at least one datagram of 1..=65507 bytes");
        }
        let report = gil_lab::fixture::burst(datagrams, size, Duration::from_micros(work_us))
            .context("burst")?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Some(Sub::Pingpong {
        lockers,
        rounds,
        datagrams,
    }) = cli.command
    {
        let report =
            gil_lab::fixture::run(lockers.max(1), rounds, datagrams).context("pingpong")?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let a = cli.run;
    if !(a.interval.is_finite() && a.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of milliseconds");
    }
    let cfg = ExperimentConfig {
        gil: GilConfig {
            policy: a.policy,
            interval: Duration::from_secs_f64(a.interval / 1e3),
            check_interval: a.check_interval,
            max_threads: 0,
        },
        spinners: a.spinners,
        messages: a.messages,
        size: a.size,
        port: a.port,
        client_timeout: Duration::from_millis(a.timeout_ms),
        truth: a.truth,
        client: ClientMode::Process(std::env::current_exe().context("locating this executable")?),
    };
    let r = experiment::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "policy {:<8} spinners {:<3} {} x {} B in {:.3} s: {:.3} MB/s echo, RTT p50/p90/p99 {:.1}/{:.1}/{:.1} µs, spinner {:.0} iters/s{}",
            r.policy,
            r.spinners,
            r.echoed,
            r.size,
            r.seconds,
            r.bytes_per_sec / 1e6,
            r.rtt_us.p50,
            r.rtt_us.p90,
            r.rtt_us.p99,
            r.spinner_iters_per_sec,
            if r.lost > 0 { format!(", {} lost", r.lost) } else { String::new() }
        );
    }
    Ok(())
}
