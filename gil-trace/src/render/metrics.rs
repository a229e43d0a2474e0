//! OpenMetrics for `gil-trace monitor` (prometheus-client): counters and histograms that
//! accumulate over the monitor's windows, each window's analysis added as it completes.
//!
//! Labels are bounded over the whole run, so memory and scrapes stay flat for hours: the
//! first [`MAX_THREADS`] thread names (a Python thread's `threading` name, without its tid, so
//! a restarted service keeps its series), taken from each window's threads with the most lock
//! wait, keep their own label and every other thread counts as `other`; the first
//! [`MAX_LOCKS`] lock names likewise.
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::analysis::{
    contention::{HandoffEvent, IoOp, RowSink},
    Report,
};

/// Thread names with a label of their own, over the run; others are `other`.
pub const MAX_THREADS: usize = 20;
/// Lock names with a label of their own, over the run; others are `other`.
pub const MAX_LOCKS: usize = 5;

type Labels = Vec<(String, String)>;
type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

fn latency_histogram() -> Histogram {
    // 1 µs .. ~4 s, ×4 per bucket.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 4.0, 12,
    ))
}

/// Every metric the monitor serves.
pub struct Metrics {
    registry: Registry,
    windows: Counter,
    recorded_seconds: Seconds,
    events: Family<Labels, Counter>,
    events_lost: Family<Labels, Counter>,
    thread_state_seconds: Family<Labels, Seconds>,
    lock_wait_seconds: Family<Labels, Seconds>,
    lock_waits: Family<Labels, Counter>,
    handoff_latency: Family<Labels, Histogram, fn() -> Histogram>,
    datagram_stall: Family<Labels, Histogram, fn() -> Histogram>,
    convoys: Family<Labels, Counter>,
    convoy_lost_seconds: Family<Labels, Seconds>,
    /// The window being added: the process label and its threads' labels.
    window: Window,
    /// The thread and lock names that have a label of their own.
    thread_names: FxHashSet<String>,
    lock_names: FxHashSet<String>,
}

/// `name` if it has (or, while there is room, gets) a label of its own in `known`, else
/// `other`.
fn bounded(known: &mut FxHashSet<String>, name: &str, room: usize) -> String {
    if known.contains(name) || known.len() < room {
        known.insert(name.to_string());
        name.to_string()
    } else {
        "other".into()
    }
}

#[derive(Default)]
struct Window {
    process: String,
    /// tid → label, for the window's threads, as its analysis named them.
    threads: FxHashMap<u32, String>,
}

/// The rows of one window's analysis pass (a [`RowSink`]), observed when the window is added,
/// under the names the analysis gives at its end: each contended acquisition's (lock rank,
/// wait in s), each datagram's (tid, stall in s).
#[derive(Default)]
pub struct WindowRows {
    handoffs: Vec<(usize, f64)>,
    stalls: Vec<(u32, f64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gil_trace");
        let m = Metrics {
            windows: Counter::default(),
            recorded_seconds: Seconds::default(),
            events: Family::default(),
            events_lost: Family::default(),
            thread_state_seconds: Family::default(),
            lock_wait_seconds: Family::default(),
            lock_waits: Family::default(),
            handoff_latency: Family::new_with_constructor(latency_histogram),
            datagram_stall: Family::new_with_constructor(latency_histogram),
            convoys: Family::default(),
            convoy_lost_seconds: Family::default(),
            window: Window::default(),
            thread_names: FxHashSet::default(),
            lock_names: FxHashSet::default(),
            registry: Registry::default(),
        };
        registry.register("windows", "Recording windows analysed", m.windows.clone());
        registry.register(
            "recorded_seconds",
            "Time covered by the analysed windows",
            m.recorded_seconds.clone(),
        );
        registry.register("events", "Events recorded, by process", m.events.clone());
        registry.register(
            "events_lost",
            "Events the kernel lost (ring buffer full), by process",
            m.events_lost.clone(),
        );
        registry.register(
            "thread_state_seconds",
            "Time per thread in each state (running, runnable, lock_wait, io_wait, sleep)",
            m.thread_state_seconds.clone(),
        );
        registry.register(
            "lock_wait_seconds",
            "Time threads spent blocked waiting for each lock",
            m.lock_wait_seconds.clone(),
        );
        registry.register(
            "lock_waits",
            "Blocking waits for each lock",
            m.lock_waits.clone(),
        );
        registry.register(
            "handoff_latency_seconds",
            "A contended acquisition's wait, from its first block to acquiring, by lock",
            m.handoff_latency.clone(),
        );
        registry.register(
            "datagram_stall_seconds",
            "A datagram's time from arrival to its reply, by receiving thread",
            m.datagram_stall.clone(),
        );
        registry.register(
            "convoy_episodes",
            "Convoy episodes (runs of datagrams each held up by a lock re-acquisition over the threshold), by thread",
            m.convoys.clone(),
        );
        registry.register(
            "convoy_lost_seconds",
            "Lock wait inside convoy episodes, by thread",
            m.convoy_lost_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    fn thread_labels(&self, tid: u32) -> Labels {
        vec![
            ("process".into(), self.window.process.clone()),
            (
                "thread".into(),
                self.window
                    .threads
                    .get(&tid)
                    .cloned()
                    .unwrap_or_else(|| "other".into()),
            ),
        ]
    }

    /// Adds a window of `process`: its report's totals, per-thread states and convoys, and
    /// the rows of its pass.
    pub fn add_window(&mut self, process: &str, report: &Report, rows: WindowRows) {
        self.window = Window {
            process: process.to_string(),
            threads: FxHashMap::default(),
        };
        self.windows.inc();
        let meta = &report.summary.meta;
        self.recorded_seconds
            .inc_by(meta.end_ns.saturating_sub(meta.start_ns) as f64 / 1e9);
        let process = vec![("process".into(), self.window.process.clone())];
        let events: u64 = report.summary.event_counts.values().sum();
        self.events.get_or_create(&process).inc_by(events);
        self.events_lost
            .get_or_create(&process)
            .inc_by(report.summary.lost);
        // The threads with most lock wait keep their (report) names; the rest are `other`.
        let mut threads: Vec<_> = report.summary.threads.iter().collect();
        threads.sort_by_key(|t| std::cmp::Reverse(t.states.unwrap_or_default().lock_wait));
        for t in threads.iter().take(MAX_THREADS) {
            let label = bounded(&mut self.thread_names, &t.name, MAX_THREADS);
            self.window.threads.insert(t.tid, label);
        }
        for t in &report.summary.threads {
            let Some(states) = t.states else { continue };
            let labels = self.thread_labels(t.tid);
            for (state, ns) in [
                ("running", states.running),
                ("runnable", states.runnable),
                ("lock_wait", states.lock_wait),
                ("io_wait", states.io_wait),
                ("sleep", states.sleep),
            ] {
                let mut l = labels.clone();
                l.push(("state".into(), state.into()));
                self.thread_state_seconds
                    .get_or_create(&l)
                    .inc_by(ns as f64 / 1e9);
            }
        }
        let names: Vec<String> = report
            .locks
            .iter()
            .map(|l| bounded(&mut self.lock_names, l.name(), MAX_LOCKS))
            .collect();
        let lock_labels = |rank: usize| -> Labels {
            vec![
                ("process".into(), self.window.process.clone()),
                (
                    "lock".into(),
                    names.get(rank).cloned().unwrap_or_else(|| "other".into()),
                ),
            ]
        };
        for (rank, lock) in report.locks.iter().enumerate() {
            let labels = lock_labels(rank);
            self.lock_wait_seconds
                .get_or_create(&labels)
                .inc_by(lock.wait_ns as f64 / 1e9);
            self.lock_waits.get_or_create(&labels).inc_by(lock.waits);
        }
        for (rank, seconds) in rows.handoffs {
            self.handoff_latency
                .get_or_create(&lock_labels(rank))
                .observe(seconds);
        }
        for (tid, seconds) in rows.stalls {
            let labels = self.thread_labels(tid);
            self.datagram_stall.get_or_create(&labels).observe(seconds);
        }
        for c in &report.convoys {
            let labels = self.thread_labels(c.tid);
            self.convoys.get_or_create(&labels).inc();
            self.convoy_lost_seconds
                .get_or_create(&labels)
                .inc_by(c.lock_wait_ns as f64 / 1e9);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl RowSink for WindowRows {
    fn handoff(&mut self, h: HandoffEvent) {
        let wait = h.acquire_ns.saturating_sub(h.wait_start_ns) as f64 / 1e9;
        self.handoffs.push((h.lock.id, wait));
    }

    fn datagram(&mut self, op: IoOp) {
        self.stalls.push((op.tid, op.stall_ns as f64 / 1e9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_bounded_over_the_run_and_the_rest_is_other() {
        let mut known = FxHashSet::default();
        assert_eq!(bounded(&mut known, "Thread-1 (echo)", 2), "Thread-1 (echo)");
        assert_eq!(bounded(&mut known, "Thread-2 (spin)", 2), "Thread-2 (spin)");
        // A third name, however much it waits, has no room left...
        assert_eq!(bounded(&mut known, "Thread-3 (spin)", 2), "other");
        // ...and the first ones keep theirs in later windows.
        assert_eq!(bounded(&mut known, "Thread-1 (echo)", 2), "Thread-1 (echo)");
        assert_eq!(known.len(), 2);
    }
}
