//! The UDP echo server (a lab thread under the lock) and its client (a separate process).
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    clock::monotonic_ns,
    gil::{Gil, ThreadCtx},
    stats::percentile,
    truth::{ReleaseReason, TruthEvent},
};

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65507;

/// A little "interpreted" work per message: checksum the payload in chunks, with an
/// eval-breaker check between chunks like bytecodes.
fn interpret(gil: &dyn Gil, me: &mut ThreadCtx, payload: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in payload.chunks(512) {
        sum = chunk
            .iter()
            .fold(sum, |s, &b| s.rotate_left(5) ^ u32::from(b));
        gil.checkpoint(me);
    }
    sum
}

/// Serves until an empty datagram arrives or the socket stays silent for `idle_timeout`.
/// Per datagram, as CPython's socket module: release → recvfrom → take → work → release →
/// sendto → take. Returns the number of datagrams echoed.
pub fn serve(
    gil: &dyn Gil,
    me: &mut ThreadCtx,
    socket: &UdpSocket,
    idle_timeout: Duration,
) -> std::io::Result<u64> {
    socket.set_read_timeout(Some(idle_timeout))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut echoed = 0u64;
    gil.take(me);
    loop {
        gil.release(me, ReleaseReason::Io);
        let received = socket.recv_from(&mut buf);
        if let Ok((n, _)) = received {
            let now = monotonic_ns();
            me.log(|tid| TruthEvent::Recv {
                ts_ns: now,
                tid,
                bytes: n as u64,
            });
        }
        gil.take(me);
        let (n, peer) = match received {
            Ok((0, _)) => break,
            Ok(v) => v,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => {
                gil.release(me, ReleaseReason::Exit);
                return Err(e);
            }
        };
        let _ = interpret(gil, me, &buf[..n]);
        gil.release(me, ReleaseReason::Io);
        let sent = socket.send_to(&buf[..n], peer);
        if let Ok(bytes) = sent {
            let now = monotonic_ns();
            me.log(|tid| TruthEvent::Send {
                ts_ns: now,
                tid,
                bytes: bytes as u64,
            });
        }
        gil.take(me);
        if sent.is_ok() {
            echoed += 1;
        }
    }
    gil.release(me, ReleaseReason::Exit);
    Ok(echoed)
}

/// What the client measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub bytes_received: u64,
    pub seconds: f64,
    /// Sorted round-trip times of answered datagrams (ns).
    pub rtt_ns: Vec<u64>,
}

impl ClientReport {
    pub fn rtt_percentile_us(&self, p: f64) -> f64 {
        percentile(&self.rtt_ns, p) as f64 / 1e3
    }
}

/// Sends `messages` datagrams of `size` bytes one at a time, waiting up to `timeout` for each
/// echo (a lost datagram costs one timeout, never a hang).
pub fn client(
    server: SocketAddr,
    messages: u64,
    size: usize,
    timeout: Duration,
) -> std::io::Result<ClientReport> {
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(timeout))?;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut report = ClientReport {
        rtt_ns: Vec::with_capacity(messages as usize),
        ..Default::default()
    };
    let start = Instant::now();
    for _ in 0..messages {
        let sent_at = Instant::now();
        socket.send(&payload)?;
        report.sent += 1;
        // Wait for this datagram's echo (same size); anything else is stale.
        loop {
            match socket.recv(&mut buf) {
                Ok(n) if n == size => {
                    report.received += 1;
                    report.bytes_received += n as u64;
                    report.rtt_ns.push(sent_at.elapsed().as_nanos() as u64);
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    report.lost += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.rtt_ns.sort_unstable();
    Ok(report)
}
