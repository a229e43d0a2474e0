//! Human-readable report.
use std::fmt::Write;

use crate::analysis::{
    contention::StallCause, histogram::Distribution, units::duration, Report, Summary,
};

pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

/// Header, counts, losses and threads.
pub fn summary(s: &Summary) -> String {
    let mut out = String::new();
    let m = &s.meta;
    let _ = writeln!(out, "gil-trace report");
    let _ = writeln!(
        out,
        "  command   : {}",
        if m.command.is_empty() {
            "?".into()
        } else {
            m.command.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "  pid       : {}{}",
        m.root_pid,
        if m.attached { " (attached)" } else { "" }
    );
    let _ = writeln!(
        out,
        "  duration  : {} (stopped: {})",
        ms(m.duration_ns),
        m.stop_reason
    );
    if let Some(exit) = &m.exit {
        match (exit.code, exit.signal) {
            (Some(code), _) => _ = writeln!(out, "  exit      : status {code}"),
            (_, Some(sig)) => _ = writeln!(out, "  exit      : killed by signal {sig}"),
            _ => {}
        }
    }
    let _ = writeln!(
        out,
        "  host      : {} (kernel {}, {} CPUs)",
        m.hostname, m.kernel_release, m.cpu_count
    );
    let _ = writeln!(out, "  clock     : {} ns, start {}", m.clock, m.start_ns);
    let c = &s.counts;
    let _ = writeln!(out, "\nevents");
    for (name, n) in [
        ("sched_switch", c.sched_switch),
        ("sched_wakeup", c.sched_wakeup),
        ("futex", c.futex),
        ("udp_recv", c.udp_recv),
        ("udp_send", c.udp_send),
        ("fork", c.fork),
        ("exit", c.exit),
    ] {
        let _ = writeln!(out, "  {name:<14} {n:>12}");
    }
    let total: u64 = s.event_counts.values().sum();
    let _ = writeln!(out, "  {:<14} {:>12}", "(all records)", total);
    let _ = writeln!(out, "  {:<14} {:>12}", "lost", s.lost);
    if s.lost > 0 {
        for (kind, n) in &s.lost_detail.by_kind {
            let _ = writeln!(out, "    {kind:<12} {n:>12}");
        }
        for (cpu, kinds) in s.lost_detail.by_cpu.iter().enumerate() {
            let n: u64 = kinds.values().sum();
            if n > 0 {
                let _ = writeln!(out, "    cpu {cpu:<8} {n:>12}");
            }
        }
    }
    let _ = writeln!(out, "\nthreads");
    let _ = writeln!(
        out,
        "  {:>8} {:>8} {:<16} {:>12} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "tid", "pid", "name", "on-cpu", "switches", "futex", "dgrams", "run", "runq", "lock", "io"
    );
    for t in &s.threads {
        let st = t.states.unwrap_or_default();
        let life = st.total();
        let _ = writeln!(
            out,
            "  {:>8} {:>8} {:<16} {:>12} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}",
            t.tid,
            t.tgid,
            t.name,
            ms(t.on_cpu_ns),
            t.switches,
            t.futex_calls,
            t.datagrams_received,
            pct(st.running, life),
            pct(st.runnable, life),
            pct(st.lock_wait, life),
            pct(st.io_wait, life),
        );
    }
    out
}

fn dist_row(out: &mut String, name: &str, d: &Distribution) {
    let _ = writeln!(
        out,
        "    {name:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
        d.count,
        us(d.p50_ns),
        us(d.p90_ns),
        us(d.p99_ns),
        us(d.max_ns)
    );
}

fn dist_header(out: &mut String) {
    let _ = writeln!(
        out,
        "    {:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "", "n", "p50", "p90", "p99", "max"
    );
}

/// The full report as text.
pub fn report(r: &Report) -> String {
    let mut out = summary(&r.summary);
    let name = |tid: u32| {
        r.summary
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| format!("{}({tid})", t.name))
            .unwrap_or(format!("{tid}"))
    };

    let _ = writeln!(
        out,
        "\nlocks (identified from futex traffic, most contended first)"
    );
    if r.locks.is_empty() {
        let _ = writeln!(
            out,
            "  none: no futex word was waited on by one thread and used by another"
        );
    }
    for lock in r.locks.iter().take(5) {
        let words: Vec<String> = lock
            .words
            .iter()
            .map(|w| format!("0x{:x}", w.addr))
            .collect();
        let _ = writeln!(
            out,
            "  #{} lock {} (pid {}): {} waits by {} threads ({} waiting), {} timeouts, {} wakes; words {}",
            lock.id,
            lock.name(),
            lock.tgid,
            lock.waits,
            lock.waiting_threads,
            ms(lock.wait_ns),
            lock.timeouts,
            lock.wakes,
            words.join(" ")
        );
        for why in &lock.grouped_because {
            let _ = writeln!(out, "      grouped: {why}");
        }
    }

    for h in r.handoffs.iter().filter(|h| h.acquisitions > 0).take(3) {
        let _ = writeln!(
            out,
            "\nhandoffs on lock {}: {} contended acquisitions, {} handoffs, {} failed wakeups, {} wait timeouts",
            h.lock, h.acquisitions, h.handoffs, h.failed_wakeups, h.timeouts
        );
        dist_header(&mut out);
        dist_row(&mut out, "release→wake", &h.release_to_wake);
        dist_row(&mut out, "wake→on cpu", &h.wake_to_run);
        dist_row(&mut out, "on cpu→acquire", &h.run_to_acquire);
        dist_row(&mut out, "total wait", &h.wait);
        let mut pairs: Vec<(u32, u32, u64)> = h
            .matrix
            .iter()
            .flat_map(|(f, tos)| tos.iter().map(move |(t, n)| (*f, *t, *n)))
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.2));
        if !pairs.is_empty() {
            let _ = writeln!(out, "    from → to (most frequent)");
            for (f, t, n) in pairs.iter().take(8) {
                let _ = writeln!(out, "      {:<24} → {:<24} {n:>8}", name(*f), name(*t));
            }
        }
    }

    let io = &r.io_stalls;
    let _ = writeln!(
        out,
        "\nI/O stalls: {} datagrams received ({} with arrival time{}), arrival → reply by what the receiver was doing",
        io.datagrams,
        io.with_arrival,
        if io.arrival_lost > 0 {
            format!(", {} whose arrival was not kept", io.arrival_lost)
        } else {
            String::new()
        }
    );
    if io.datagrams > 0 {
        let causes: Vec<StallCause> = StallCause::ALL
            .into_iter()
            .filter(|&c| io.share[c] > 0.0 || c != StallCause::Unknown)
            .collect();
        let _ = write!(
            out,
            "  {:<24} {:>9} {:>9} {:>9}",
            "by receiver", "datagrams", "p50", "p99"
        );
        for c in &causes {
            let _ = write!(out, " {:>9}", c.name());
        }
        out.push('\n');
        let mut receivers: Vec<_> = io.by_thread.iter().collect();
        receivers.sort_by_key(|t| std::cmp::Reverse(t.stall.mean_ns.saturating_mul(t.datagrams)));
        for t in receivers.iter().take(8) {
            let _ = write!(
                out,
                "  {:<24} {:>9} {:>9} {:>9}",
                name(t.tid),
                t.datagrams,
                us(t.stall.p50_ns),
                us(t.stall.p99_ns)
            );
            for &c in &causes {
                let _ = write!(out, " {:>8.0}%", t.share[c] * 100.0);
            }
            out.push('\n');
        }
        if receivers.len() > 8 {
            let _ = writeln!(
                out,
                "  … {} more receivers (see --json)",
                receivers.len() - 8
            );
        }
        let _ = writeln!(out, "  all datagrams, per cause:");
        dist_header(&mut out);
        dist_row(&mut out, "stall", &io.stall);
        for (cause, d) in io.causes.iter() {
            if cause == StallCause::Unknown && d.max_ns == 0 {
                continue;
            }
            let share = io.share[cause];
            dist_row(
                &mut out,
                &format!("{} {:.0}%", cause.name(), share * 100.0),
                d,
            );
        }
    }

    let waits: Vec<_> = r.io_lock_waits.iter().filter(|w| w.waited > 0).collect();
    if !waits.is_empty() {
        let _ = writeln!(
            out,
            "\nlock waits around I/O (re-acquiring the primary lock after each recv/send/poll)"
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9} {:>12} {:>8}",
            "thread", "I/O calls", "waited", "> thresh", "lock wait", "of life"
        );
        for w in waits {
            let life = r
                .summary
                .threads
                .iter()
                .find(|t| t.tid == w.tid)
                .and_then(|t| t.states)
                .map_or(0, |s| s.total());
            let _ = writeln!(
                out,
                "  {:<24} {:>9} {:>9} {:>9} {:>12} {:>8}",
                name(w.tid),
                w.io_ops,
                w.waited,
                w.over_threshold,
                ms(w.lock_wait_ns),
                pct(w.lock_wait_ns, life)
            );
        }
    }

    let _ = writeln!(
        out,
        "\nconvoy episodes (≥ 2 datagrams in a row, each with a lock wait > {} from its arrival to its reply): {}",
        duration(r.convoy_threshold_ns),
        r.convoys.len()
    );
    for (c, v) in r.convoys.iter().zip(&r.verdicts).take(10) {
        let _ = writeln!(
            out,
            "  {:>12} .. {:<12} {}",
            ms(c.start_ns.saturating_sub(r.summary.meta.start_ns)),
            ms(c.end_ns.saturating_sub(r.summary.meta.start_ns)),
            v.text
        );
    }
    if r.convoys.len() > 10 {
        let _ = writeln!(out, "  … {} more (see --json)", r.convoys.len() - 10);
    }

    if !r.summary.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in &r.summary.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

/// `report --compare A B` as text.
pub fn comparison(
    c: &crate::analysis::compare::Comparison,
    a: &std::path::Path,
    b: &std::path::Path,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gil-trace comparison\n  A: {}\n  B: {}\n",
        a.display(),
        b.display()
    );
    let _ = writeln!(out, "  {:<30} {:>14} {:>14} {:>10}", "", "A", "B", "B/A");
    for (((name, x), (_, y)), (_, r)) in
        c.a.fields()
            .into_iter()
            .zip(c.b.fields())
            .zip(&c.ratio_b_over_a)
    {
        let ratio = r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
        let _ = writeln!(out, "  {name:<30} {x:>14.1} {y:>14.1} {ratio:>10}");
    }
    out
}
