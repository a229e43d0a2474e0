//! Human-readable report. Each table shows one unit per column, chosen from its largest value.
use std::fmt::Write;

use crate::{
    analysis::{contention::StallCause, histogram::Distribution, units::duration, Report, Summary},
    model::{locks::LockKind, ThreadStats},
};

/// How much of the report to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// Every thread in the thread table, not only the most relevant ones.
    pub all_threads: bool,
    /// Per lock, the stacks its waiters waited in and its holders handed it over in.
    pub stacks: bool,
}

/// Stacks listed per lock and side with `--stacks`, and frames shown of each.
const STACKS_SHOWN: usize = 5;
const FRAMES_SHOWN: usize = 12;

/// Threads the thread table shows without `--all-threads`.
pub const THREADS_SHOWN: usize = 20;

pub fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

/// A column's unit: ms, µs or ns, whichever shows its largest value with 1–4 integer digits.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Unit {
    div: f64,
    name: &'static str,
    decimals: usize,
}

impl Unit {
    fn for_max(max_ns: u64) -> Unit {
        match max_ns {
            0..=9_999 => Unit {
                div: 1.0,
                name: "ns",
                decimals: 0,
            },
            10_000..=9_999_999 => Unit {
                div: 1e3,
                name: "µs",
                decimals: 1,
            },
            _ => Unit {
                div: 1e6,
                name: "ms",
                // µs resolution, so the column's small values keep their digits.
                decimals: 3,
            },
        }
    }

    fn show(self, ns: u64) -> String {
        format!("{:.*}", self.decimals, ns as f64 / self.div)
    }
}

/// Header, counts and losses.
pub fn summary(report: &Report) -> String {
    let s = &report.summary;
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
    if let Some(w) = report.window {
        let _ = writeln!(
            out,
            "  window    : {} .. {} after the start ({} of the {} trace; every figure below is for it)",
            ms(w.start_ns.saturating_sub(m.start_ns)),
            ms(w.end_ns.saturating_sub(m.start_ns)),
            duration(w.end_ns.saturating_sub(w.start_ns)),
            duration(m.duration_ns)
        );
    }
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
    out
}

/// What makes a thread worth showing first: time waiting for locks, then serving I/O, then
/// running at all.
fn relevance(t: &ThreadStats) -> (u64, u64, u64) {
    let st = t.states.unwrap_or_default();
    (st.lock_wait, t.datagrams_received + t.sends, t.on_cpu_ns)
}

/// The thread table: grouped by process, the most relevant first; with `all` every thread,
/// else the [`THREADS_SHOWN`] most relevant and how many more there are.
fn threads(s: &Summary, all: bool) -> String {
    let mut out = String::new();
    let mut ranked: Vec<&ThreadStats> = s.threads.iter().collect();
    ranked.sort_by_key(|t| std::cmp::Reverse(relevance(t)));
    let shown: Vec<&ThreadStats> = if all {
        ranked.clone()
    } else {
        ranked.iter().take(THREADS_SHOWN).copied().collect()
    };
    // Processes in the order of their most relevant shown thread.
    let mut processes: Vec<u32> = Vec::new();
    for t in &shown {
        if !processes.contains(&t.tgid) {
            processes.push(t.tgid);
        }
    }
    let on_cpu = Unit::for_max(shown.iter().map(|t| t.on_cpu_ns).max().unwrap_or(0));
    let _ = writeln!(
        out,
        "\nthreads ({} in all; grouped by process, most time waiting for locks first)",
        s.threads.len()
    );
    let _ = writeln!(
        out,
        "  {:>8} {:<16} {:>12} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "tid",
        "name",
        format!("on-cpu {}", on_cpu.name),
        "switches",
        "futex",
        "dgrams",
        "run",
        "runq",
        "lock",
        "io"
    );
    for pid in processes {
        let name = s
            .threads
            .iter()
            .find(|t| t.tid == pid)
            // The process by the kernel's name (`python3`, not `MainThread`).
            .map_or("", |t| t.kernel_name.as_deref().unwrap_or(&t.name));
        let _ = writeln!(out, "{}", format!("  process {pid} {name}").trim_end());
        for t in shown.iter().filter(|t| t.tgid == pid) {
            let st = t.states.unwrap_or_default();
            let life = st.total();
            let _ = writeln!(
                out,
                "  {:>8} {:<16} {:>12} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7}",
                t.tid,
                t.name,
                on_cpu.show(t.on_cpu_ns),
                t.switches,
                t.futex_calls,
                t.datagrams_received,
                pct(st.running, life),
                pct(st.runnable, life),
                pct(st.lock_wait, life),
                pct(st.io_wait, life),
            );
        }
    }
    if shown.len() < s.threads.len() {
        let _ = writeln!(
            out,
            "  … {} more (--all-threads)",
            s.threads.len() - shown.len()
        );
    }
    out
}

/// A table of distributions, one unit for all its time columns.
struct DistTable<'a> {
    rows: Vec<(String, &'a Distribution)>,
}

impl<'a> DistTable<'a> {
    fn new() -> Self {
        DistTable { rows: Vec::new() }
    }

    fn row(&mut self, name: impl Into<String>, d: &'a Distribution) {
        self.rows.push((name.into(), d));
    }

    fn write(&self, out: &mut String) {
        let unit = Unit::for_max(self.rows.iter().map(|(_, d)| d.max_ns).max().unwrap_or(0));
        let _ = writeln!(
            out,
            "    {:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
            format!("({})", unit.name),
            "n",
            "p50",
            "p90",
            "p99",
            "max"
        );
        for (name, d) in &self.rows {
            let _ = writeln!(
                out,
                "    {name:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
                d.count,
                unit.show(d.p50_ns),
                unit.show(d.p90_ns),
                unit.show(d.p99_ns),
                unit.show(d.max_ns)
            );
        }
    }
}

/// The full report as text.
pub fn report(r: &Report, opts: &TextOptions) -> String {
    let mut out = summary(r);
    out.push_str(&threads(&r.summary, opts.all_threads));
    let name = |tid: u32| {
        r.summary.threads.iter().find(|t| t.tid == tid).map_or_else(
            || format!("tid {tid}"),
            |t| crate::model::threads::thread_label(&t.name, tid),
        )
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
            "  #{} {} (pid {}): {} waits by {} threads ({} waiting), {} timeouts, {} wakes; words {}",
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
        match (&lock.kind, &lock.symbol) {
            (LockKind::CPythonGil { version }, Some(symbol)) => {
                let _ = writeln!(
                    out,
                    "      the GIL of CPython {version} (its words are in {symbol})"
                );
            }
            (_, Some(symbol)) if !lock.name().starts_with(&symbol.symbol) => {
                let _ = writeln!(out, "      in {symbol}");
            }
            _ => {}
        }
        for why in &lock.grouped_because {
            let _ = writeln!(out, "      grouped: {why}");
        }
    }

    for h in r.handoffs.iter().filter(|h| h.acquisitions > 0).take(3) {
        let _ = writeln!(
            out,
            "\nhandoffs on {}: {} contended acquisitions, {} handoffs, {} failed wakeups, {} wait timeouts",
            h.lock, h.acquisitions, h.handoffs, h.failed_wakeups, h.timeouts
        );
        let mut table = DistTable::new();
        table.row("release→wake", &h.release_to_wake);
        table.row("wake→on cpu", &h.wake_to_run);
        table.row("on cpu→acquire", &h.run_to_acquire);
        table.row("total wait", &h.wait);
        table.write(&mut out);
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
        let unit = Unit::for_max(
            io.by_thread
                .iter()
                .map(|t| t.stall.p99_ns)
                .max()
                .unwrap_or(0),
        );
        let _ = write!(
            out,
            "  {:<24} {:>9} {:>9} {:>9}",
            "by receiver",
            "datagrams",
            format!("p50 {}", unit.name),
            format!("p99 {}", unit.name)
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
                unit.show(t.stall.p50_ns),
                unit.show(t.stall.p99_ns)
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
        let mut table = DistTable::new();
        table.row("stall", &io.stall);
        for (cause, d) in io.causes.iter() {
            if cause == StallCause::Unknown && d.max_ns == 0 {
                continue;
            }
            table.row(
                format!("{} {:.0}%", cause.name(), io.share[cause] * 100.0),
                d,
            );
        }
        table.write(&mut out);
    }

    let waits: Vec<_> = r.io_lock_waits.iter().filter(|w| w.waited > 0).collect();
    if !waits.is_empty() {
        let _ = writeln!(
            out,
            "\nlock waits around I/O (re-acquiring the primary lock after each recv/send/poll)"
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>9} {:>9} {:>9} {:>14} {:>8}",
            "thread", "I/O calls", "waited", "> thresh", "lock wait ms", "of life"
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
                "  {:<24} {:>9} {:>9} {:>9} {:>14.3} {:>8}",
                name(w.tid),
                w.io_ops,
                w.waited,
                w.over_threshold,
                w.lock_wait_ns as f64 / 1e6,
                pct(w.lock_wait_ns, life)
            );
        }
    }

    let _ = writeln!(
        out,
        "\nconvoy episodes (≥ 2 datagrams in a row, each held up between its arrival and its reply by a lock re-acquisition > {}): {}",
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

    if opts.stacks {
        out.push_str(&stacks(r, &name));
    }

    if !r.summary.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in &r.summary.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

/// `report --compare A B` as text: times in one unit per row (the larger value's).
pub fn comparison(
    c: &crate::analysis::compare::Comparison,
    path_a: &std::path::Path,
    path_b: &std::path::Path,
) -> String {
    use crate::analysis::compare::Quantity;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gil-trace comparison\n  A: {}\n  B: {}\n",
        path_a.display(),
        path_b.display()
    );
    let _ = writeln!(out, "  {:<30} {:>14} {:>14} {:>10}", "", "A", "B", "B/A");
    for ((name, label, kind, x), (_, _, _, y)) in c.a.fields().into_iter().zip(c.b.fields()) {
        let ratio = c
            .ratio_b_over_a
            .get(name)
            .copied()
            .flatten()
            .map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
        let (label, x, y) = match kind {
            Quantity::Time => {
                let unit = Unit::for_max(x.max(y) as u64);
                (
                    format!("{label} ({})", unit.name),
                    unit.show(x as u64),
                    unit.show(y as u64),
                )
            }
            Quantity::Count => (label.to_string(), format!("{x:.0}"), format!("{y:.0}")),
            Quantity::Rate => (label.to_string(), format!("{x:.1}"), format!("{y:.1}")),
        };
        let _ = writeln!(out, "  {label:<30} {x:>14} {y:>14} {ratio:>10}");
    }
    out
}

/// `--stacks`: per lock, the code its waiters waited in and its holders handed it over in,
/// by lock-wait time.
fn stacks(r: &Report, name: &dyn Fn(u32) -> String) -> String {
    let mut out = String::new();
    let locks = r.handoffs.iter().filter(|h| {
        !(h.wait_stacks.is_empty()
            && h.holder_stacks.is_empty()
            && h.py_wait_stacks.is_empty()
            && h.py_holder_stacks.is_empty())
    });
    let mut any = false;
    for h in locks.take(3) {
        any = true;
        // Python first (the program's own terms), sampled: time is samples × the period.
        for (side, list, sampled) in [
            ("Python stacks waiting for", &h.py_wait_stacks, true),
            ("Python stacks holding", &h.py_holder_stacks, true),
            ("stacks waiting for", &h.wait_stacks, false),
            ("stacks holding (handing over)", &h.holder_stacks, false),
        ] {
            if list.is_empty() {
                continue;
            }
            let total: u64 = list.iter().map(|s| s.ns).sum();
            let by = if sampled {
                "sampled: what ran around those moments"
            } else {
                "by lock wait"
            };
            let _ = writeln!(out, "\n{side} {}, {by}", h.lock);
            for s in list.iter().take(STACKS_SHOWN) {
                let who = s
                    .tid
                    .map_or_else(String::new, |t| format!(" by {}", name(t)));
                if sampled {
                    let _ = writeln!(
                        out,
                        "  ~{} in {} samples ({}){who}",
                        duration(s.ns),
                        s.count,
                        pct(s.ns, total.max(s.ns))
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "  {} in {} acquisitions ({}){who}",
                        duration(s.ns),
                        s.count,
                        pct(s.ns, total.max(s.ns))
                    );
                }
                match r.stacks.get(&s.stack) {
                    Some(stack) => {
                        // Down to the program's outermost frame: below it, thread start-up.
                        let shown = stack
                            .frames
                            .iter()
                            .rposition(crate::model::stack::Frame::is_program_code)
                            .map_or(stack.frames.len(), |i| i + 1)
                            .min(FRAMES_SHOWN);
                        for f in &stack.frames[..shown] {
                            let _ = writeln!(out, "      {}", f.label());
                        }
                        if stack.truncated {
                            let _ =
                                writeln!(out, "      … (truncated: the callers were not recorded)");
                        } else if stack.frames.len() > shown {
                            let _ = writeln!(
                                out,
                                "      … {} more (thread start-up)",
                                stack.frames.len() - shown
                            );
                        }
                    }
                    None => {
                        let _ = writeln!(out, "      (stack {} not in the trace)", s.stack);
                    }
                }
            }
        }
    }
    if !any {
        let _ = writeln!(
            out,
            "\nstacks: none recorded (recorded with --no-stacks, or by a gil-trace without them)"
        );
    }
    out
}
