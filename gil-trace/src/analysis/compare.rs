//! Two reports side by side (`report --compare A B`): key numbers and ratios B/A. Times are ns
//! integers, as everywhere in the JSON.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{contention::StallCause, Report};

/// The numbers compared.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyNumbers {
    pub duration_ns: u64,
    pub datagrams: u64,
    pub datagrams_per_sec: f64,
    pub stall_p50_ns: u64,
    pub stall_p99_ns: u64,
    /// The receiver's lock wait within each datagram's stall.
    pub stall_lock_wait_p50_ns: u64,
    pub stall_lock_wait_p99_ns: u64,
    pub convoy_episodes: u64,
    pub convoy_lock_wait_ns: u64,
    pub contended_acquisitions: u64,
    pub failed_wakeups: u64,
    pub wait_timeouts: u64,
    /// The primary lock's wait time over all threads.
    pub lock_wait_total_ns: u64,
    pub lost_events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: KeyNumbers,
    pub b: KeyNumbers,
    /// b / a per number, by the numbers' names (null when a is 0).
    pub ratio_b_over_a: BTreeMap<&'static str, Option<f64>>,
}

pub fn key_numbers(r: &Report) -> KeyNumbers {
    let io = &r.io_stalls;
    let h = r.handoffs.first();
    let duration_ns = r
        .window
        .map_or(r.summary.meta.duration_ns, |w| w.end_ns - w.start_ns);
    let secs = duration_ns as f64 / 1e9;
    KeyNumbers {
        duration_ns,
        datagrams: io.datagrams,
        datagrams_per_sec: if secs > 0.0 {
            io.datagrams as f64 / secs
        } else {
            0.0
        },
        stall_p50_ns: io.stall.p50_ns,
        stall_p99_ns: io.stall.p99_ns,
        stall_lock_wait_p50_ns: io.causes[StallCause::LockWait].p50_ns,
        stall_lock_wait_p99_ns: io.causes[StallCause::LockWait].p99_ns,
        convoy_episodes: r.convoys.len() as u64,
        convoy_lock_wait_ns: r.convoys.iter().map(|c| c.lock_wait_ns).sum(),
        contended_acquisitions: h.map_or(0, |h| h.acquisitions),
        failed_wakeups: h.map_or(0, |h| h.failed_wakeups),
        wait_timeouts: h.map_or(0, |h| h.timeouts),
        lock_wait_total_ns: r.locks.first().map_or(0, |l| l.wait_ns),
        lost_events: r.summary.lost,
    }
}

/// How a number reads: a duration or a plain quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    Time,
    Count,
    Rate,
}

impl KeyNumbers {
    /// (JSON name, label, kind, value) in display order.
    pub fn fields(&self) -> Vec<(&'static str, &'static str, Quantity, f64)> {
        use Quantity::{Count, Rate, Time};
        vec![
            ("duration_ns", "duration", Time, self.duration_ns as f64),
            ("datagrams", "datagrams", Count, self.datagrams as f64),
            (
                "datagrams_per_sec",
                "datagrams/s",
                Rate,
                self.datagrams_per_sec,
            ),
            ("stall_p50_ns", "stall p50", Time, self.stall_p50_ns as f64),
            ("stall_p99_ns", "stall p99", Time, self.stall_p99_ns as f64),
            (
                "stall_lock_wait_p50_ns",
                "stall's lock wait p50",
                Time,
                self.stall_lock_wait_p50_ns as f64,
            ),
            (
                "stall_lock_wait_p99_ns",
                "stall's lock wait p99",
                Time,
                self.stall_lock_wait_p99_ns as f64,
            ),
            (
                "convoy_episodes",
                "convoy episodes",
                Count,
                self.convoy_episodes as f64,
            ),
            (
                "convoy_lock_wait_ns",
                "convoy lock wait",
                Time,
                self.convoy_lock_wait_ns as f64,
            ),
            (
                "contended_acquisitions",
                "contended acquisitions",
                Count,
                self.contended_acquisitions as f64,
            ),
            (
                "failed_wakeups",
                "failed wakeups",
                Count,
                self.failed_wakeups as f64,
            ),
            (
                "wait_timeouts",
                "wait timeouts",
                Count,
                self.wait_timeouts as f64,
            ),
            (
                "lock_wait_total_ns",
                "lock wait, all threads",
                Time,
                self.lock_wait_total_ns as f64,
            ),
            ("lost_events", "lost events", Count, self.lost_events as f64),
        ]
    }
}

pub fn compare(a: &Report, b: &Report) -> Comparison {
    let (ka, kb) = (key_numbers(a), key_numbers(b));
    let ratio_b_over_a = ka
        .fields()
        .into_iter()
        .zip(kb.fields())
        .map(|((name, _, _, x), (_, _, _, y))| (name, (x != 0.0).then(|| y / x)))
        .collect();
    Comparison {
        a: ka,
        b: kb,
        ratio_b_over_a,
    }
}
