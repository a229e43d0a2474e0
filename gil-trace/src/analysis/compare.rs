//! Two reports side by side (`report --compare A B`): key numbers and ratios B/A.
use serde::Serialize;

use super::{contention::StallCause, Report};

/// The numbers compared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyNumbers {
    pub duration_ms: f64,
    pub datagrams: u64,
    pub datagrams_per_sec: f64,
    pub stall_p50_us: f64,
    pub stall_p99_us: f64,
    /// The receiver's lock wait within each datagram's stall.
    pub stall_lock_wait_p50_us: f64,
    pub stall_lock_wait_p99_us: f64,
    pub convoy_episodes: u64,
    pub convoy_lock_wait_ms: f64,
    pub contended_acquisitions: u64,
    pub failed_wakeups: u64,
    pub wait_timeouts: u64,
    pub lock_wait_total_ms: f64,
    pub lost_events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: KeyNumbers,
    pub b: KeyNumbers,
    /// b / a per number (null when a is 0).
    pub ratio_b_over_a: Vec<(String, Option<f64>)>,
}

pub fn key_numbers(r: &Report) -> KeyNumbers {
    let io = &r.io_stalls;
    let h = r.handoffs.first();
    let secs = r.summary.meta.duration_ns as f64 / 1e9;
    KeyNumbers {
        duration_ms: r.summary.meta.duration_ns as f64 / 1e6,
        datagrams: io.datagrams,
        datagrams_per_sec: if secs > 0.0 {
            io.datagrams as f64 / secs
        } else {
            0.0
        },
        stall_p50_us: io.stall.p50_ns as f64 / 1e3,
        stall_p99_us: io.stall.p99_ns as f64 / 1e3,
        stall_lock_wait_p50_us: io.causes[StallCause::LockWait].p50_ns as f64 / 1e3,
        stall_lock_wait_p99_us: io.causes[StallCause::LockWait].p99_ns as f64 / 1e3,
        convoy_episodes: r.convoys.len() as u64,
        convoy_lock_wait_ms: r.convoys.iter().map(|c| c.lock_wait_ns).sum::<u64>() as f64 / 1e6,
        contended_acquisitions: h.map_or(0, |h| h.acquisitions),
        failed_wakeups: h.map_or(0, |h| h.failed_wakeups),
        wait_timeouts: h.map_or(0, |h| h.timeouts),
        lock_wait_total_ms: r.locks.first().map_or(0.0, |l| l.wait_ns as f64 / 1e6),
        lost_events: r.summary.lost,
    }
}

impl KeyNumbers {
    /// (name, value) in display order.
    pub fn fields(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("duration (ms)", self.duration_ms),
            ("datagrams", self.datagrams as f64),
            ("datagrams/s", self.datagrams_per_sec),
            ("stall p50 (µs)", self.stall_p50_us),
            ("stall p99 (µs)", self.stall_p99_us),
            ("stall's lock wait p50 (µs)", self.stall_lock_wait_p50_us),
            ("stall's lock wait p99 (µs)", self.stall_lock_wait_p99_us),
            ("convoy episodes", self.convoy_episodes as f64),
            ("convoy lock wait (ms)", self.convoy_lock_wait_ms),
            ("contended acquisitions", self.contended_acquisitions as f64),
            ("failed wakeups", self.failed_wakeups as f64),
            ("wait timeouts", self.wait_timeouts as f64),
            ("lock wait, all threads (ms)", self.lock_wait_total_ms),
            ("lost events", self.lost_events as f64),
        ]
    }
}

pub fn compare(a: &Report, b: &Report) -> Comparison {
    let (ka, kb) = (key_numbers(a), key_numbers(b));
    let ratio_b_over_a = ka
        .fields()
        .into_iter()
        .zip(kb.fields())
        .map(|((name, x), (_, y))| (name.to_string(), (x != 0.0).then(|| y / x)))
        .collect();
    Comparison {
        a: ka,
        b: kb,
        ratio_b_over_a,
    }
}
