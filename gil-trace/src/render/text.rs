//! Human-readable report.
use std::fmt::Write;

use crate::analysis::Summary;

pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

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
        "  {:>8} {:>8} {:<16} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "tid", "pid", "name", "on-cpu", "switches", "preempt", "futex", "dgrams", "sends"
    );
    for t in &s.threads {
        let _ = writeln!(
            out,
            "  {:>8} {:>8} {:<16} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            t.tid,
            t.tgid,
            t.name,
            ms(t.on_cpu_ns),
            t.switches,
            t.preemptions,
            t.futex_calls,
            t.datagrams_received,
            t.sends
        );
    }
    if !s.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in &s.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}
