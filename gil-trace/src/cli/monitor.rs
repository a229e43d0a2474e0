//! `gil-trace monitor`: watches a process window after window (`windows.rs`), adds each
//! analysed window to OpenMetrics counters and histograms, and serves them over HTTP for
//! Prometheus (`gil_trace_recorded_seconds` says how much time the windows covered).
use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::args::MonitorArgs;
use crate::{capture, render::metrics::Metrics};

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
    let mut windows = 0u64;
    let end = super::windows::watch(
        &super::windows::WatchOptions {
            args: &args.watch,
            interval: args.interval,
            keep: None,
        },
        quiet,
        |window| {
            windows += 1;
            metrics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add_window(&window.process, &window.analysis.report, window.rows);
            Ok(())
        },
    )?;
    log::info!("{windows} windows analysed");
    Ok(super::record::command_status(
        end.exit,
        end.signal,
        !args.watch.command.is_empty(),
    ))
}

/// A request's bytes read at most (request line and headers).
const MAX_REQUEST: u64 = 16 * 1024;
/// Each socket read and write may take this long, and a whole request [`REQUEST_DEADLINE`]:
/// one slow client holds the server (one connection at a time) for no longer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Answers `GET /metrics` with the OpenMetrics text, anything else with 404.
fn serve(listener: &TcpListener, metrics: &Mutex<Metrics>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, metrics) {
                    log::debug!("a metrics request failed: {e}");
                }
            }
            // E.g. out of file descriptors: not a busy loop.
            Err(e) => {
                log::warn!("accepting a metrics connection: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(stream: TcpStream, metrics: &Mutex<Metrics>) -> Result<()> {
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(std::io::Read::take(stream.try_clone()?, MAX_REQUEST));
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        if std::time::Instant::now() > deadline {
            bail!("request too slow");
        }
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
