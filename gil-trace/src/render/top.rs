//! `gil-trace top`: one window's analysis as a screenful of text (threads by lock wait, locks,
//! datagram stalls, convoys), the same figures as `report`, for the last window only.
use std::fmt::Write as _;

use crate::{analysis::Report, model::threads::thread_label};

/// Threads shown, most lock wait first.
const THREADS_SHOWN: usize = 12;
/// Locks shown, most contended first.
const LOCKS_SHOWN: usize = 5;

/// The text of window number `index` of process `process` (pid `pid`).
pub fn window_text(report: &Report, process: &str, pid: u32, index: u64) -> String {
    let mut out = String::new();
    let meta = &report.summary.meta;
    let span_ns = meta.end_ns.saturating_sub(meta.start_ns);
    let events: u64 = report.summary.event_counts.values().sum();
    let ms = |ns: u64| ns as f64 / 1e6;
    let _ = writeln!(
        out,
        "gil-trace top: {process} (pid {pid}), window {index}: {:.2} s, {events} events, {} lost",
        span_ns as f64 / 1e9,
        report.summary.lost
    );
    let _ = writeln!(
        out,
        "\n{:<34} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "threads (most lock wait first)", "run", "runq", "lock", "io", "sleep"
    );
    let mut threads: Vec<_> = report
        .summary
        .threads
        .iter()
        .filter_map(|t| Some((t, t.states?)))
        .collect();
    threads.sort_by_key(|(t, s)| (std::cmp::Reverse(s.lock_wait), t.tid));
    for (t, s) in threads.iter().take(THREADS_SHOWN) {
        let total = (s.running + s.runnable + s.lock_wait + s.io_wait + s.sleep).max(1);
        let pct = |ns: u64| format!("{:.0}%", 100.0 * ns as f64 / total as f64);
        let _ = writeln!(
            out,
            "  {:<32} {:>6} {:>6} {:>6} {:>6} {:>6}",
            fit(&thread_label(&t.name, t.tid), 32),
            pct(s.running),
            pct(s.runnable),
            pct(s.lock_wait),
            pct(s.io_wait),
            pct(s.sleep)
        );
    }
    if threads.len() > THREADS_SHOWN {
        let _ = writeln!(out, "  … {} more", threads.len() - THREADS_SHOWN);
    }
    let _ = writeln!(
        out,
        "\n{:<34} {:>7} {:>10} {:>8} {:>12} {:>12}",
        "locks (most contended first)",
        "waits",
        "wait ms",
        "acquired",
        "wait p50 ms",
        "wait p99 ms"
    );
    for lock in report.locks.iter().take(LOCKS_SHOWN) {
        let handoffs = report.handoffs.iter().find(|h| h.lock.id == lock.id);
        let (acquired, p50, p99) = handoffs.map_or((0, 0, 0), |h| {
            (h.acquisitions, h.wait.p50_ns, h.wait.p99_ns)
        });
        let _ = writeln!(
            out,
            "  {:<32} {:>7} {:>10.1} {:>8} {:>12.3} {:>12.3}",
            fit(lock.name(), 32),
            lock.waits,
            ms(lock.wait_ns),
            acquired,
            ms(p50),
            ms(p99)
        );
    }
    let stalls = &report.io_stalls;
    let _ = writeln!(
        out,
        "\ndatagrams {}: stall (arrival → reply) p50 {:.3} ms, p99 {:.3} ms, {:.0}% of it waiting for locks",
        stalls.datagrams,
        ms(stalls.stall.p50_ns),
        ms(stalls.stall.p99_ns),
        100.0 * stalls.share[crate::analysis::contention::StallCause::LockWait]
    );
    let _ = writeln!(out, "convoy episodes: {}", report.convoys.len());
    // The worst one's verdict (convoys are ranked by lock wait).
    if let Some(v) = report.verdicts.first() {
        let _ = writeln!(out, "  {}", v.text);
    }
    out
}

/// `s` cut to `width` characters, the cut marked with `…`.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}
