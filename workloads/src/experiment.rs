//! The classic experiment (Beazley 2010): CPU spinners + a UDP echo server under one lock,
//! measured by a client in another process.
use std::{
    fs::File,
    io::BufWriter,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    echo::{self, ClientReport, MAX_DATAGRAM},
    gil::{make_gil, Gil, GilConfig, ThreadCtx},
    spinner,
    truth::TruthSink,
};

/// Most spinner threads accepted (a typo guard; 2 cores need a handful).
pub const MAX_SPINNERS: usize = 256;

/// Errors the lab reports as one line.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("client failed: {0}")]
    Client(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How the client runs.
#[derive(Clone, Debug)]
pub enum ClientMode {
    /// A separate process: this executable with `client …` (what a tracer of the lab sees).
    Process(PathBuf),
    /// A plain thread of this process, outside the lock (for in-process tests).
    Thread,
}

#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    pub gil: GilConfig,
    pub spinners: usize,
    pub messages: u64,
    pub size: usize,
    pub port: u16,
    pub client_timeout: Duration,
    pub truth: Option<PathBuf>,
    pub client: ClientMode,
}

#[derive(Clone, Debug, Serialize)]
pub struct RttUs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What the experiment measured (`--json` prints this).
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentResult {
    pub policy: &'static str,
    pub spinners: usize,
    pub messages: u64,
    pub size: usize,
    pub seconds: f64,
    pub bytes_per_sec: f64,
    pub rtt_us: RttUs,
    pub spinner_iters_per_sec: f64,
    pub echoed: u64,
    pub lost: u64,
    pub server_port: u16,
}

pub fn validate(cfg: &ExperimentConfig) -> Result<(), LabError> {
    if cfg.spinners > MAX_SPINNERS {
        return Err(LabError::InvalidArgument(format!(
            "--spinners {} is too many (at most {MAX_SPINNERS})",
            cfg.spinners
        )));
    }
    if cfg.size == 0 || cfg.size > MAX_DATAGRAM {
        return Err(LabError::InvalidArgument(format!(
            "--size {} must be between 1 and {MAX_DATAGRAM} bytes (a UDP datagram)",
            cfg.size
        )));
    }
    if cfg.messages == 0 {
        return Err(LabError::InvalidArgument(
            "--messages must be at least 1".into(),
        ));
    }
    Ok(())
}

fn run_client(
    mode: &ClientMode,
    server: SocketAddr,
    cfg: &ExperimentConfig,
) -> Result<ClientReport, LabError> {
    match mode {
        ClientMode::Thread => echo::client(server, cfg.messages, cfg.size, cfg.client_timeout)
            .map_err(|e| LabError::Client(e.to_string())),
        ClientMode::Process(exe) => {
            let out = Command::new(exe)
                .arg("client")
                .arg("--server")
                .arg(server.to_string())
                .arg("--messages")
                .arg(cfg.messages.to_string())
                .arg("--size")
                .arg(cfg.size.to_string())
                .arg("--timeout-ms")
                .arg(cfg.client_timeout.as_millis().to_string())
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| LabError::Client(format!("cannot start {}: {e}", exe.display())))?;
            if !out.status.success() {
                return Err(LabError::Client(format!(
                    "client exited with {}",
                    out.status
                )));
            }
            serde_json::from_slice(&out.stdout)
                .map_err(|e| LabError::Client(format!("unreadable client report: {e}")))
        }
    }
}

pub fn run(cfg: &ExperimentConfig) -> Result<ExperimentResult, LabError> {
    validate(cfg)?;
    let addr = format!("127.0.0.1:{}", cfg.port);
    let socket = UdpSocket::bind(&addr).map_err(|source| LabError::Bind {
        addr: addr.clone(),
        source,
    })?;
    let server = socket.local_addr().map_err(|source| LabError::Io {
        what: "local_addr".into(),
        source,
    })?;
    let mut gil_config = cfg.gil;
    gil_config.max_threads = cfg.spinners + 2;
    let gil: Arc<dyn Gil> = Arc::from(make_gil(&gil_config));
    let sink = cfg.truth.as_ref().map(|_| TruthSink::default());
    let main_ctx = ThreadCtx::new(0, "main", "main", sink.as_ref());
    let stop = Arc::new(AtomicBool::new(false));
    let iterations = Arc::new(AtomicU64::new(0));

    let spawn_err = |source| LabError::Io {
        what: "spawning a lab thread".into(),
        source,
    };
    let mut spinners = Vec::new();
    for i in 0..cfg.spinners {
        let (gil, stop, iterations, sink) =
            (gil.clone(), stop.clone(), iterations.clone(), sink.clone());
        let name = format!("spinner-{}", i + 1);
        spinners.push(
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let mut me = ThreadCtx::new(2 + i, "spinner", &name, sink.as_ref());
                    spinner::run(gil.as_ref(), &mut me, &stop, &iterations);
                })
                .map_err(spawn_err)?,
        );
    }
    let echo_thread = {
        let (gil, sink) = (gil.clone(), sink.clone());
        let socket = socket.try_clone().map_err(|source| LabError::Io {
            what: "cloning the socket".into(),
            source,
        })?;
        let idle = cfg.client_timeout.max(Duration::from_secs(1)) * 10;
        std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || {
                let mut me = ThreadCtx::new(1, "echo", "echo", sink.as_ref());
                echo::serve(gil.as_ref(), &mut me, &socket, idle)
            })
            .map_err(spawn_err)?
    };
    // Let the echo thread reach recvfrom and the spinners get going.
    std::thread::sleep(Duration::from_millis(20));

    let iters_before = iterations.load(Relaxed);
    let started = Instant::now();
    let report = run_client(&cfg.client, server, cfg);
    let window = started.elapsed().as_secs_f64();
    let iters_during = iterations.load(Relaxed) - iters_before;

    // Stop the server (an empty datagram) and the spinners, whatever the client did.
    if let Ok(stopper) = UdpSocket::bind("127.0.0.1:0") {
        let _ = stopper.send_to(&[], server);
    }
    stop.store(true, Relaxed);
    let echoed = echo_thread
        .join()
        .map_err(|_| LabError::Client("echo thread panicked".into()))?;
    for s in spinners {
        let _ = s.join();
    }
    drop(main_ctx);
    if let (Some(path), Some(sink)) = (&cfg.truth, &sink) {
        let events = sink.take_sorted();
        let file = File::create(path).map_err(|source| LabError::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        TruthSink::write_jsonl(&events, &mut BufWriter::new(file)).map_err(|source| {
            LabError::Io {
                what: format!("writing {}", path.display()),
                source,
            }
        })?;
    }
    let report = report?;
    let echoed = echoed.map_err(|source| LabError::Io {
        what: "echo server".into(),
        source,
    })?;
    let seconds = if report.seconds > 0.0 {
        report.seconds
    } else {
        window
    };
    Ok(ExperimentResult {
        policy: cfg.gil.policy.name(),
        spinners: cfg.spinners,
        messages: cfg.messages,
        size: cfg.size,
        seconds,
        bytes_per_sec: report.bytes_received as f64 / seconds,
        rtt_us: RttUs {
            p50: report.rtt_percentile_us(50.0),
            p90: report.rtt_percentile_us(90.0),
            p99: report.rtt_percentile_us(99.0),
        },
        spinner_iters_per_sec: iters_during as f64 / window,
        echoed,
        lost: report.lost,
        server_port: server.port(),
    })
}
