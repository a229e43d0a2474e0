//! `gil-trace monitor`: records a process in windows, analyses each window as it ends into
//! OpenMetrics counters and histograms, and serves them over HTTP for Prometheus.
//!
//! Windows rather than one endless pass: the analysis finds locks from a trace's futex
//! traffic before its pass, so each window is a complete trace (recorded as `record -p` would,
//! into a private directory, deleted once analysed) and memory stays flat however long the
//! monitor runs. Between two windows the programs are reloaded (~0.1 s not recorded; the
//! `gil_trace_recorded_seconds` counter says how much was).
use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use gil_trace_common::UserStacks;

use super::args::MonitorArgs;
use crate::{
    analysis::ReportOptions,
    capture::{
        self, as_user::as_user, child::Identity, probes::ProbeOptions, RecordOptions, StopReason,
        Target,
    },
    pipeline,
    render::metrics::{Metrics, WindowRows},
    trace::{Decoding, TraceReader},
};

/// A process named `--comm` is looked for this often.
const COMM_POLL: Duration = Duration::from_millis(250);
/// `record`'s default ring buffer.
const BUFFER_SIZE: u32 = 16 << 20;
/// The convoy threshold of `report`'s default.
const CONVOY_THRESHOLD_NS: u64 = 1_000_000;

pub(crate) fn monitor(args: &MonitorArgs, quiet: bool) -> Result<ExitCode> {
    capture::privileges::check()?;
    let listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let served = Arc::clone(&metrics);
    std::thread::Builder::new()
        .name("gil-trace-http".into())
        .spawn(move || serve(&listener, &served))
        .context("starting the HTTP thread")?;
    if !quiet {
        eprintln!(
            "gil-trace: serving http://{}/metrics (windows of {:?}; Ctrl-C stops)",
            args.listen, args.interval
        );
    }
    // Window traces go to a private directory of the invoking user's (as `record` writes
    // them as that user under sudo).
    let identity = Identity::from_sudo()?;
    let dir = as_user(identity.as_ref(), || {
        tempfile::Builder::new()
            .prefix("gil-trace-monitor-")
            .tempdir()
    })?
    .context("creating a directory for the windows")?;
    let window_trace = dir.path().join("window.trace");
    let mut pid = args.pid;
    loop {
        let target = match (pid, &args.comm) {
            (Some(pid), _) => pid,
            (None, Some(comm)) => match wait_for_comm(comm) {
                Some(pid) => pid,
                None => break,
            },
            (None, None) => unreachable!("clap requires -p or --comm"),
        };
        let outcome = capture::record(&RecordOptions {
            output: window_trace.clone(),
            target: Target::Pid(target),
            duration: Some(args.interval),
            live_status: false,
            probes: ProbeOptions {
                buffer_size: BUFFER_SIZE,
                measure_cost: false,
                dispatch_only: false,
                user_stacks: UserStacks::Locks,
            },
            python_rate_hz: (!args.no_py).then_some(args.py_rate),
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // It exited between two windows.
            Err(capture::CaptureError::ProcessNotFound { .. }) if args.comm.is_some() => {
                pid = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        add_window(&outcome.path, &metrics)?;
        as_user(identity.as_ref(), || {
            let _ = std::fs::remove_file(&outcome.path);
            let _ = std::fs::remove_file(outcome.path.with_extension("trace.old"));
        })?;
        match outcome.stop_reason {
            StopReason::Signal(_) => break,
            // Gone: with --comm, wait for the next one.
            StopReason::Exit if args.comm.is_some() => pid = None,
            StopReason::Exit => {
                if !quiet {
                    eprintln!("gil-trace: pid {target} exited");
                }
                break;
            }
            StopReason::Duration => pid = Some(target),
        }
    }
    as_user(identity.as_ref(), move || dir.close())?.context("removing the window directory")?;
    Ok(ExitCode::SUCCESS)
}

/// Analyses one window's trace into the metrics.
fn add_window(trace: &Path, metrics: &Mutex<Metrics>) -> Result<()> {
    let reader = TraceReader::open(trace)?;
    let process = reader
        .trailer()
        .threads
        .iter()
        .find(|t| t.tid == reader.meta().root_pid)
        .map_or_else(
            || format!("pid {}", reader.meta().root_pid),
            |t| t.name.clone(),
        );
    let mut rows = WindowRows::default();
    let (analysis, _) = pipeline::analyse_into(
        trace,
        reader,
        ReportOptions {
            convoy_threshold_ns: CONVOY_THRESHOLD_NS,
            ..ReportOptions::default()
        },
        Decoding::for_machine(),
        &mut rows,
        |_| {},
    )?;
    metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .add_window(&process, &analysis.report, rows);
    Ok(())
}

/// The newest process whose kernel name is `comm`, once there is one; None on Ctrl-C.
fn wait_for_comm(comm: &str) -> Option<u32> {
    loop {
        let newest = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .max();
        if newest.is_some() {
            return newest;
        }
        std::thread::sleep(COMM_POLL);
    }
}

/// Answers `GET /metrics` with the OpenMetrics text, anything else with 404.
fn serve(listener: &TcpListener, metrics: &Mutex<Metrics>) {
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream, metrics) {
            log::debug!("a metrics request failed: {e}");
        }
    }
}

fn answer(stream: TcpStream, metrics: &Mutex<Metrics>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if !request.starts_with("GET ") {
        bail!("not a GET: {request:?}");
    }
    let (status, kind, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        let body = metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .encode();
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}
