//! Per-thread totals: on-CPU time, context switches, futex calls, datagrams.
use super::thread_map::ThreadMap;
use serde::Serialize;

use crate::trace::{Event, EventData, IoClass, ThreadInfo};

/// `name (tid)`, or `name [tid]` when the name ends in a parenthesis (a Python thread's
/// `Thread-1 (echo)`); `tid N` without a name.
pub fn thread_label(name: &str, tid: u32) -> String {
    match name {
        "" => format!("tid {tid}"),
        n if n.ends_with(')') => format!("{n} [{tid}]"),
        n => format!("{n} ({tid})"),
    }
}

/// What one traced thread did over the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThreadStats {
    pub tid: u32,
    pub tgid: u32,
    /// The thread's name: its Python `threading` name in a sampled CPython program, else the
    /// kernel's (comm).
    pub name: String,
    /// The kernel's name, when `name` is another (the Python one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_name: Option<String>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Time on a CPU, from sched_switch pairs (time before the first switch-in is not counted
    /// unless the thread was seen starting).
    pub on_cpu_ns: u64,
    /// Times the thread was switched out.
    pub switches: u64,
    /// Of those, while still runnable (preempted).
    pub preemptions: u64,
    /// Times it was woken.
    pub wakeups: u64,
    pub futex_calls: u64,
    pub futex_waits: u64,
    pub futex_wakes: u64,
    /// Datagrams (packets) copied to this thread by recv*.
    pub datagrams_received: u64,
    pub bytes_received: u64,
    /// send* calls that succeeded, and their bytes.
    pub sends: u64,
    pub bytes_sent: u64,
    /// Time per state (filled by the full report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub states: Option<crate::model::timeline::StateTotals>,
}

/// Semantic event counts (`counts` in JSON; keys are stable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sched_switch: u64,
    pub sched_wakeup: u64,
    /// futex-family syscalls (entries).
    pub futex: u64,
    /// Datagrams (packets) received by traced threads.
    pub udp_recv: u64,
    /// send* syscalls that succeeded.
    pub udp_send: u64,
    pub fork: u64,
    pub exit: u64,
}

#[derive(Default)]
struct Tracked {
    stats: ThreadStats,
    running_since: Option<u64>,
}

/// Builds [`ThreadStats`] from the event stream.
#[derive(Default)]
pub struct ThreadTracker {
    threads: ThreadMap<Tracked>,
    last_ns: u64,
    counts: Counts,
    unknown_kinds: u64,
}

impl ThreadTracker {
    #[inline(always)]
    fn thread(&mut self, tid: u32, ts: u64) -> &mut Tracked {
        let t = self.threads.get_or_default(tid);
        if t.stats.first_ns == 0 {
            t.stats.tid = tid;
            t.stats.first_ns = ts;
        }
        t.stats.last_ns = ts;
        t
    }

    /// Counts of the whole stream so far (the summary's `counts`).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Events of kinds this version does not know.
    pub fn unknown_kinds(&self) -> u64 {
        self.unknown_kinds
    }

    #[inline(always)]
    pub fn observe(&mut self, ev: &Event) {
        let ts = ev.ts_ns;
        self.last_ns = self.last_ns.max(ts);
        match ev.data {
            EventData::Switch {
                next_tid,
                prev_state,
                prev_traced,
                next_traced,
                ..
            } => {
                self.counts.sched_switch += 1;
                if prev_traced {
                    let t = self.thread(ev.tid, ts);
                    if let Some(since) = t.running_since.take() {
                        t.stats.on_cpu_ns += ts.saturating_sub(since);
                    }
                    t.stats.switches += 1;
                    // TASK_RUNNING (0) when switched out = preempted.
                    if prev_state.trailing_zeros() >= 8 {
                        t.stats.preemptions += 1;
                    }
                    if ev.tgid != 0 {
                        t.stats.tgid = ev.tgid;
                    }
                }
                if next_traced {
                    self.thread(next_tid, ts).running_since = Some(ts);
                }
            }
            EventData::Waking { wakee, .. } => {
                self.counts.sched_wakeup += 1;
                self.thread(wakee, ts).stats.wakeups += 1;
            }
            EventData::FutexEnter(call) => {
                self.counts.futex += 1;
                let s = &mut self.thread(ev.tid, ts).stats;
                s.futex_calls += 1;
                s.futex_waits += u64::from(call.is_wait());
                s.futex_wakes += u64::from(call.is_wake());
            }
            EventData::NetRecv { len, .. } => {
                self.counts.udp_recv += 1;
                let s = &mut self.thread(ev.tid, ts).stats;
                s.datagrams_received += 1;
                s.bytes_received += u64::from(len);
            }
            EventData::IoExit {
                class: IoClass::Send,
                ret,
                ..
            } if ret >= 0 => {
                self.counts.udp_send += 1;
                let s = &mut self.thread(ev.tid, ts).stats;
                s.sends += 1;
                s.bytes_sent += ret as u64;
            }
            // An exiting task's last switch-out is not traced (it left the filter): close its
            // on-CPU interval at the exit.
            EventData::Exit { .. } => {
                self.counts.exit += 1;
                let t = self.thread(ev.tid, ts);
                if let Some(since) = t.running_since.take() {
                    t.stats.on_cpu_ns += ts.saturating_sub(since);
                }
            }
            EventData::Fork { .. } => {
                self.counts.fork += 1;
                self.thread(ev.tid, ts);
            }
            EventData::Unknown { .. } => self.unknown_kinds += 1,
            // Nothing was recorded since `since_ns` (between two windows of `top -o`): a
            // thread on a CPU then ran until it, and runs again from here, as far as anyone
            // knows.
            EventData::Lost { count: 0, since_ns } => {
                for (_, t) in self.threads.iter_mut() {
                    if let Some(since) = t.running_since.as_mut() {
                        t.stats.on_cpu_ns += since_ns.saturating_sub(*since);
                        *since = (*since).max(ts);
                    }
                }
            }
            EventData::Lost { .. } | EventData::Comm { .. } => {}
            _ => {
                self.thread(ev.tid, ts);
            }
        }
    }

    /// Final per-thread stats, by tid, with names (and processes) from the trace's thread table.
    pub fn finish(mut self, table: &[ThreadInfo]) -> Vec<ThreadStats> {
        let end = self.last_ns;
        for (_, t) in self.threads.iter_mut() {
            if let Some(since) = t.running_since.take() {
                t.stats.on_cpu_ns += end.saturating_sub(since);
            }
        }
        let mut out: Vec<ThreadStats> = self.threads.into_entries().map(|(_, t)| t.stats).collect();
        for info in table {
            if let Some(s) = out.iter_mut().find(|s| s.tid == info.tid) {
                s.name.clone_from(&info.name);
                if info.tgid != 0 {
                    s.tgid = info.tgid;
                }
            }
        }
        out.sort_by_key(|s| s.tid);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(
        ts: u64,
        prev: u32,
        next: u32,
        state: u64,
        prev_traced: bool,
        next_traced: bool,
    ) -> Event {
        Event {
            ts_ns: ts,
            tid: prev,
            tgid: 100,
            cpu: 0,
            data: EventData::Switch {
                next_tid: next,
                prev_state: state,
                next_prio: 120,
                prev_traced,
                next_traced,
                stack: None,
            },
        }
    }

    #[test]
    fn on_cpu_time_sums_switch_in_to_switch_out() {
        let mut t = ThreadTracker::default();
        t.observe(&switch(1_000, 0, 101, 0, false, true));
        t.observe(&switch(3_000, 101, 102, 0, true, true)); // 101 preempted after 2 µs
        t.observe(&switch(4_000, 102, 101, 1, true, true)); // 102 sleeps after 1 µs
        t.observe(&switch(9_000, 101, 0, 1, true, false)); // 101 runs 5 µs more
        assert_eq!(
            t.counts(),
            &Counts {
                sched_switch: 4,
                ..Counts::default()
            }
        );
        let stats = t.finish(&[ThreadInfo {
            tid: 101,
            tgid: 100,
            name: "echo".into(),
        }]);
        let a = stats.iter().find(|s| s.tid == 101).unwrap();
        let b = stats.iter().find(|s| s.tid == 102).unwrap();
        assert_eq!(a.on_cpu_ns, 7_000);
        assert_eq!(a.switches, 2);
        assert_eq!(a.preemptions, 1);
        assert_eq!(a.name, "echo");
        assert_eq!(b.on_cpu_ns, 1_000);
        assert_eq!(b.preemptions, 0);
        assert!(
            stats.iter().all(|s| s.tid != 0),
            "untraced idle task must not appear"
        );
    }
}
