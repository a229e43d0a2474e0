//! Per-thread state timeline: every nanosecond of a thread's life (its first event to its exit,
//! or to the end of the trace while it lives on) is in exactly one state, rebuilt from
//! scheduler and syscall events.
use rustc_hash::FxHashMap;

use serde::Serialize;

use super::{locks::LockSet, thread_map::ThreadMap};
use crate::trace::{Event, EventData};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ThreadState {
    /// On a CPU.
    Running,
    /// Woken or preempted, waiting for a CPU.
    Runnable,
    /// Blocked in a futex wait on a word of an identified lock.
    LockWait,
    /// Blocked in recv*/poll/epoll/select or send*.
    IoWait,
    /// Any other block.
    Sleep,
}

impl ThreadState {
    pub const ALL: [ThreadState; 5] = [
        ThreadState::Running,
        ThreadState::Runnable,
        ThreadState::LockWait,
        ThreadState::IoWait,
        ThreadState::Sleep,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadState::Running => "running",
            ThreadState::Runnable => "runnable",
            ThreadState::LockWait => "lock_wait",
            ThreadState::IoWait => "io_wait",
            ThreadState::Sleep => "sleep",
        }
    }
}

/// One contiguous stretch of a thread in one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateSpan {
    pub tid: u32,
    pub state: ThreadState,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Time in each state, indexed like [`ThreadState::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateTotals {
    pub running: u64,
    pub runnable: u64,
    pub lock_wait: u64,
    pub io_wait: u64,
    pub sleep: u64,
}

impl StateTotals {
    fn add(&mut self, state: ThreadState, ns: u64) {
        match state {
            ThreadState::Running => self.running += ns,
            ThreadState::Runnable => self.runnable += ns,
            ThreadState::LockWait => self.lock_wait += ns,
            ThreadState::IoWait => self.io_wait += ns,
            ThreadState::Sleep => self.sleep += ns,
        }
    }

    pub fn total(&self) -> u64 {
        self.running + self.runnable + self.lock_wait + self.io_wait + self.sleep
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum InSyscall {
    None,
    LockWait,
    IoWait,
    Other,
}

struct Tracked {
    state: ThreadState,
    since: u64,
    last_ns: u64,
    syscall: InSyscall,
    exited: bool,
    totals: StateTotals,
}

impl Tracked {
    /// Counts the span the thread is in up to `end` and hands it to `sink` (nothing when it
    /// began at or after `end`).
    fn close_span(&mut self, tid: u32, end: u64, sink: &mut impl FnMut(StateSpan)) {
        if end > self.since {
            self.totals.add(self.state, end - self.since);
            sink(StateSpan {
                tid,
                state: self.state,
                start_ns: self.since,
                end_ns: end,
            });
        }
    }
}

/// Builds the timeline; spans are handed to a sink as they close (charts collect them,
/// reports only need the totals).
pub struct TimelineTracker<'a> {
    locks: &'a LockSet,
    threads: ThreadMap<Tracked>,
    tgid_of: ThreadMap<u32>,
}

/// Was the task preempted (still runnable) when switched out? prev_state is TASK_RUNNING (0),
/// possibly with the kernel's "preempted" marker bit (TASK_REPORT_MAX) above the state bits.
pub fn switched_out_runnable(prev_state: u64) -> bool {
    prev_state.trailing_zeros() >= 8
}

impl<'a> TimelineTracker<'a> {
    pub fn new(locks: &'a LockSet) -> Self {
        TimelineTracker {
            locks,
            threads: ThreadMap::default(),
            tgid_of: ThreadMap::default(),
        }
    }

    /// The thread's record; a thread seen for the first time starts in `state` at `ts`.
    fn slot(&mut self, tid: u32, ts: u64, state: ThreadState) -> &mut Tracked {
        self.threads.get_or_insert_with(tid, || Tracked {
            state,
            since: ts,
            last_ns: ts,
            syscall: InSyscall::None,
            exited: false,
            totals: StateTotals::default(),
        })
    }

    /// Moves a thread to `state` at `ts`, closing the span it was in. (An associated function
    /// on the record, so one lookup serves several steps of an event.)
    fn transition(
        t: &mut Tracked,
        tid: u32,
        ts: u64,
        state: ThreadState,
        sink: &mut impl FnMut(StateSpan),
    ) {
        if t.exited {
            return;
        }
        t.last_ns = t.last_ns.max(ts);
        if t.state != state {
            if ts > t.since {
                t.totals.add(t.state, ts - t.since);
                sink(StateSpan {
                    tid,
                    state: t.state,
                    start_ns: t.since,
                    end_ns: ts,
                });
            }
            t.state = state;
            t.since = ts;
        }
    }

    fn set(&mut self, tid: u32, ts: u64, state: ThreadState, sink: &mut impl FnMut(StateSpan)) {
        let t = self.slot(tid, ts, state);
        Self::transition(t, tid, ts, state, sink);
    }

    /// The thread is the running subject of this event (it is on a CPU now) and its syscall
    /// state becomes `syscall`.
    fn running_in(
        &mut self,
        tid: u32,
        ts: u64,
        syscall: InSyscall,
        sink: &mut impl FnMut(StateSpan),
    ) {
        let t = self.slot(tid, ts, ThreadState::Running);
        Self::transition(t, tid, ts, ThreadState::Running, sink);
        t.syscall = syscall;
    }

    /// The thread is the running subject of this event: it is on a CPU now.
    fn touch_running(&mut self, tid: u32, ts: u64, sink: &mut impl FnMut(StateSpan)) {
        self.set(tid, ts, ThreadState::Running, sink);
    }

    #[inline(always)]
    pub fn observe(&mut self, ev: &Event, sink: &mut impl FnMut(StateSpan)) {
        let ts = ev.ts_ns;
        match ev.data {
            EventData::Switch {
                next_tid,
                prev_state,
                prev_traced,
                next_traced,
                ..
            } => {
                if prev_traced {
                    // The thread ran until now (created running if new), then switches out.
                    let t = self.slot(ev.tid, ts, ThreadState::Running);
                    let state = if switched_out_runnable(prev_state) {
                        ThreadState::Runnable
                    } else {
                        match t.syscall {
                            InSyscall::LockWait => ThreadState::LockWait,
                            InSyscall::IoWait => ThreadState::IoWait,
                            _ => ThreadState::Sleep,
                        }
                    };
                    Self::transition(t, ev.tid, ts, ThreadState::Running, sink);
                    Self::transition(t, ev.tid, ts, state, sink);
                }
                if next_traced {
                    self.set(next_tid, ts, ThreadState::Running, sink);
                }
            }
            EventData::Waking { wakee, .. } => {
                let blocked = self.threads.get(wakee).map(|t| {
                    matches!(
                        t.state,
                        ThreadState::LockWait | ThreadState::IoWait | ThreadState::Sleep
                    )
                });
                match blocked {
                    Some(true) | None => self.set(wakee, ts, ThreadState::Runnable, sink),
                    Some(false) => {}
                }
            }
            EventData::FutexEnter(call) => {
                let tgid = if ev.tgid != 0 {
                    *self.tgid_of.get_or_default(ev.tid) = ev.tgid;
                    ev.tgid
                } else {
                    self.tgid_of.get(ev.tid).copied().unwrap_or(0)
                };
                let s = if call.is_wait() && self.locks.lock_of((tgid, call.uaddr)).is_some() {
                    InSyscall::LockWait
                } else {
                    InSyscall::Other
                };
                self.running_in(ev.tid, ts, s, sink);
            }
            EventData::IoEnter { .. } => {
                self.running_in(ev.tid, ts, InSyscall::IoWait, sink);
            }
            EventData::FutexExit { .. } | EventData::IoExit { .. } => {
                self.running_in(ev.tid, ts, InSyscall::None, sink);
            }
            EventData::Exit { .. } => {
                self.touch_running(ev.tid, ts, sink);
                if let Some(t) = self.threads.get_mut(ev.tid) {
                    t.exited = true;
                }
            }
            EventData::Fork { .. } | EventData::NetRecv { .. } => {
                self.touch_running(ev.tid, ts, sink);
            }
            // Nothing was recorded since `since_ns` (between two windows of `top -o`): that
            // time is in no state; each thread resumes in the state it was last seen in.
            EventData::Lost { count: 0, since_ns } => self.not_recorded(since_ns, ts, sink),
            // A Python sample is read from outside the thread: it says nothing of its state.
            EventData::Comm { .. }
            | EventData::Lost { .. }
            | EventData::PySample { .. }
            | EventData::Unknown { .. } => {}
        }
    }

    /// Closes every live thread's span at `since_ns` and reopens it at `until_ns`.
    fn not_recorded(&mut self, since_ns: u64, until_ns: u64, sink: &mut impl FnMut(StateSpan)) {
        for (tid, t) in self.threads.iter_mut() {
            if t.exited {
                continue;
            }
            t.close_span(tid, since_ns, sink);
            t.since = t.since.max(until_ns);
            t.last_ns = t.last_ns.max(until_ns);
        }
    }

    /// The state `tid` is in now (as far as the events so far tell), if it was seen.
    pub fn state_of(&self, tid: u32) -> Option<ThreadState> {
        self.threads.get(tid).map(|t| t.state)
    }

    /// Closes every thread's last span: an exited thread's at its exit, a live one's at
    /// `end_ns` (the end of the trace, the window, or where the charts' pass stopped).
    /// Returns per-thread totals.
    pub fn finish(
        mut self,
        end_ns: u64,
        sink: &mut impl FnMut(StateSpan),
    ) -> FxHashMap<u32, StateTotals> {
        let mut out = FxHashMap::default();
        for (tid, t) in self.threads.iter_mut() {
            // A thread that did not exit stayed in its last state until the end: the kernel
            // would have said had it changed (a blocked thread has no events while blocked).
            let end = if t.exited {
                t.last_ns
            } else {
                t.last_ns.max(end_ns)
            };
            t.close_span(tid, end, sink);
            out.insert(tid, t.totals);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{ev, futex, futex_exit, io_enter, io_exit, switch, waking, WAIT},
        trace::IoClass,
    };

    #[test]
    fn every_nanosecond_is_in_exactly_one_state() {
        let mut locks = crate::model::locks::LockFinder::default();
        let wait = |ts, tid| futex(ts, tid, 0x10, WAIT);
        // make 0x10 a lock: two threads wait on it
        for tid in [5, 6] {
            locks.observe(&wait(0, tid));
            locks.observe(&futex_exit(1, tid, 0));
        }
        let locks = locks.finish(None);
        let mut t = TimelineTracker::new(&locks);
        let mut spans = Vec::new();
        let mut sink = |s: StateSpan| spans.push(s);
        t.observe(&switch(100, 0, 5, 0), &mut sink); // 5 runs
        t.observe(&wait(150, 5), &mut sink);
        t.observe(&switch(200, 5, 0, 1), &mut sink); // blocks on the lock
        t.observe(&waking(500, 6, 5), &mut sink);
        t.observe(&switch(700, 0, 5, 0), &mut sink); // runs after 200 ns runnable
        t.observe(&futex_exit(710, 5, 0), &mut sink);
        t.observe(&io_enter(720, 5, IoClass::Recv, 10), &mut sink);
        t.observe(&switch(800, 5, 0, 1), &mut sink); // blocks in recv
        t.observe(&waking(1_000, 9, 5), &mut sink);
        t.observe(&switch(1_100, 0, 5, 0), &mut sink);
        t.observe(&io_exit(1_110, 5, IoClass::Recv, 10), &mut sink);
        t.observe(&switch(1_300, 5, 0, 0x100), &mut sink); // preempted
        t.observe(&switch(1_400, 0, 5, 0), &mut sink);
        t.observe(&switch(1_500, 5, 0, 1), &mut sink); // sleeps (no syscall known)
        t.observe(
            &ev(1_600, 5, EventData::Exit { group_dead: false }),
            &mut sink,
        );
        // Thread 7 blocks on the lock and is never seen again: it waits to the end.
        t.observe(&switch(1_700, 0, 7, 0), &mut sink);
        t.observe(&wait(1_750, 7), &mut sink);
        t.observe(&switch(1_800, 7, 0, 1), &mut sink);
        let totals = t.finish(3_000, &mut sink);
        let tot = totals[&5];
        assert_eq!(tot.total(), 1_600 - 100, "covers first event to exit");
        assert_eq!(totals[&7].running, 100);
        assert_eq!(
            totals[&7].lock_wait,
            3_000 - 1_800,
            "a live thread to the end"
        );
        assert_eq!(tot.lock_wait, 300);
        assert_eq!(tot.io_wait, 200);
        assert_eq!(tot.runnable, 200 + 100 + 100);
        assert_eq!(tot.sleep, 100);
        let mut by_thread: Vec<&StateSpan> = spans.iter().filter(|s| s.tid == 5).collect();
        by_thread.sort_by_key(|s| s.start_ns);
        assert!(
            by_thread.windows(2).all(|w| w[0].end_ns == w[1].start_ns),
            "contiguous: {by_thread:?}"
        );
    }
}
