//! What each thread was doing, kept for a while: its state spans (from the timeline) and its
//! closed lock takes. A datagram's receiver is known only when it dequeues the datagram, long
//! after the datagram arrived, so its stall is attributed afterwards, from this history.
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::{
    datagrams::{PerCause, StallCause},
    python::SampledAround,
    stacks::{StackKey, StackTally},
    HolderSpan,
};
use crate::model::timeline::ThreadState;

/// Spans a thread that receives datagrams keeps at most (the oldest go first): a datagram
/// that waited in its socket through more of its receiver's activity than this has the part
/// before it `unknown`. 1 MiB per receiving thread.
pub const MAX_RECEIVER_SPANS: usize = 65_536;
/// Spans any other thread keeps (for the first datagram it will receive).
pub const MAX_OTHER_SPANS: usize = 4_096;
/// Closed takes a thread keeps at most.
pub const MAX_HISTORY_TAKES: usize = 4_096;
/// History older than this (behind the thread's latest span) is dropped, unless a socket's
/// backlog may still hold a datagram that arrived earlier (see `ContentionTracker`).
pub const HISTORY_NS: u64 = 2_000_000_000;

/// A contended acquisition: the thread waited for `lock` from `start_ns` and held it from
/// `acquire_ns`; `holders` are the other lock users that ran meanwhile.
#[derive(Clone, Debug)]
pub(super) struct ClosedTake {
    pub lock: usize,
    pub start_ns: u64,
    pub acquire_ns: u64,
    pub holders: Vec<HolderSpan>,
    /// The stack it blocked in, and the thread that handed it the lock with that thread's
    /// stack then.
    pub wait_stack: Option<StackKey>,
    pub holder_stack: Option<(u32, StackKey)>,
}

/// Where a stretch of a thread's time went, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub causes: PerCause<u64>,
    /// Who ran while it waited for a lock, most time first: (tid, ns).
    pub holders: Vec<(u32, u64)>,
    /// The lock it waited for longest, if any.
    pub lock: Option<usize>,
    /// Its lock wait by the stack it waited in, and by its holders' stacks.
    pub wait_stacks: StackTally,
    pub holder_stacks: StackTally,
    /// The Python samples in the span (filled for a convoy's datagrams only).
    pub python: SampledAround,
}

/// One thread's recent history.
#[derive(Default)]
pub(super) struct ThreadHistory {
    /// Start of the oldest kept span.
    first_ns: Option<u64>,
    /// Each span's end and state; spans are contiguous, so each starts where the one before
    /// ends.
    spans: VecDeque<(u64, ThreadState)>,
    takes: VecDeque<ClosedTake>,
    /// It has received datagrams: it keeps more.
    receiver: bool,
}

impl ThreadHistory {
    /// A closed span of this thread.
    #[inline]
    pub fn push_span(&mut self, start_ns: u64, end_ns: u64, state: ThreadState) {
        if self.spans.is_empty() {
            self.first_ns = Some(start_ns);
        }
        self.spans.push_back((end_ns, state));
        let max = if self.receiver {
            MAX_RECEIVER_SPANS
        } else {
            MAX_OTHER_SPANS
        };
        if self.spans.len() > max {
            self.pop_span();
        }
    }

    /// The thread received a datagram: from now on it keeps the longer history.
    pub fn set_receiver(&mut self) {
        self.receiver = true;
    }

    fn pop_span(&mut self) {
        if let Some((end, _)) = self.spans.pop_front() {
            self.first_ns = Some(end);
        }
    }

    pub fn push_take(&mut self, take: ClosedTake) {
        self.takes.push_back(take);
        if self.takes.len() > MAX_HISTORY_TAKES {
            self.takes.pop_front();
        }
    }

    /// Forgets what ended before `keep_from`.
    pub fn prune(&mut self, keep_from: u64) {
        while self.spans.front().is_some_and(|&(end, _)| end < keep_from) {
            self.pop_span();
        }
        while self.takes.front().is_some_and(|t| t.acquire_ns < keep_from) {
            self.takes.pop_front();
        }
    }

    /// Its longest single lock take in `[from, to)` (the part in it; 0 if none).
    pub fn longest_take(&self, from: u64, to: u64) -> u64 {
        self.takes
            .iter()
            .filter(|t| t.start_ns < to && t.acquire_ns > from)
            .map(|t| t.acquire_ns.min(to).saturating_sub(t.start_ns.max(from)))
            .max()
            .unwrap_or(0)
    }

    /// Where the thread's time in `[from, to)` went. `dequeued_ns` is when it took the
    /// datagram: before it, time blocked in I/O was waiting to be woken (`wakeup`), after it
    /// other I/O. Time after the last closed span is running (the window ends at a syscall of
    /// the thread, which runs it); time before the oldest kept span is `unknown`; time in a
    /// lock take, from its first wait to its acquisition, is `lock_wait` whatever the state.
    pub fn attribute(&self, from: u64, to: u64, dequeued_ns: u64) -> Attribution {
        let mut out = Attribution::default();
        if to <= from {
            return out;
        }
        let takes: Vec<&ClosedTake> = self
            .takes
            .iter()
            .filter(|t| t.start_ns < to && t.acquire_ns > from)
            .collect();
        let in_takes = |a: u64, b: u64| -> u64 {
            takes
                .iter()
                .map(|t| b.min(t.acquire_ns).saturating_sub(a.max(t.start_ns)))
                .sum()
        };
        let add = |causes: &mut PerCause<u64>, a: u64, b: u64, state: ThreadState| {
            let (a, b) = (a.max(from), b.min(to));
            if b <= a {
                return;
            }
            let locked = in_takes(a, b);
            causes[StallCause::LockWait] += locked;
            let free = (b - a) - locked;
            match state {
                ThreadState::Running => causes[StallCause::Running] += free,
                ThreadState::Runnable => causes[StallCause::Runnable] += free,
                ThreadState::LockWait => causes[StallCause::LockWait] += free,
                ThreadState::Sleep => causes[StallCause::Sleep] += free,
                ThreadState::IoWait => {
                    // Blocked in I/O with the datagram already queued: waiting to be woken.
                    let before = dequeued_ns.clamp(a, b) - a;
                    let before = before.saturating_sub(in_takes(a, a + before));
                    causes[StallCause::Wakeup] += before;
                    causes[StallCause::IoWait] += free - before;
                }
            }
        };
        // Before the oldest kept span the state is unknown, but a take still says the thread
        // waited for a lock (a thread's first datagram can arrive during a wait longer than
        // the spans it keeps before it becomes a receiver).
        let mut at = self.first_ns.unwrap_or(to);
        let unknown_end = at.clamp(from, to);
        let locked = in_takes(from, unknown_end);
        out.causes[StallCause::LockWait] += locked;
        out.causes[StallCause::Unknown] += (unknown_end - from) - locked;
        for &(end, state) in &self.spans {
            if end > from && at < to {
                add(&mut out.causes, at, end, state);
            }
            at = end;
            if at >= to {
                break;
            }
        }
        if at < to {
            add(&mut out.causes, at.max(from), to, ThreadState::Running);
        }
        // Who held the lock meanwhile, and which lock it was.
        let mut holders: FxHashMap<u32, u64> = FxHashMap::default();
        let mut by_lock: FxHashMap<usize, u64> = FxHashMap::default();
        for t in &takes {
            let (a, b) = (t.start_ns.max(from), t.acquire_ns.min(to));
            let waited = b.saturating_sub(a);
            *by_lock.entry(t.lock).or_default() += waited;
            if let Some(stack) = t.wait_stack {
                out.wait_stacks.add(None, stack, waited);
            }
            if let Some((tid, stack)) = t.holder_stack {
                out.holder_stacks.add(Some(tid), stack, waited);
            }
            for h in &t.holders {
                let overlap = h.end_ns.min(b).saturating_sub(h.start_ns.max(a));
                if overlap > 0 {
                    *holders.entry(h.tid).or_default() += overlap;
                }
            }
        }
        out.lock = by_lock
            .into_iter()
            .max_by_key(|&(lock, ns)| (ns, std::cmp::Reverse(lock)))
            .map(|(lock, _)| lock);
        out.holders = sorted_holders(holders);
        out
    }
}

/// Holders by time, most first (then by tid, for a stable order).
pub(super) fn sorted_holders(holders: FxHashMap<u32, u64>) -> Vec<(u32, u64)> {
    let mut holders: Vec<(u32, u64)> = holders.into_iter().collect();
    holders.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(spans: &[(u64, u64, ThreadState)], takes: &[(u64, u64)]) -> ThreadHistory {
        let mut h = ThreadHistory::default();
        for &(a, b, s) in spans {
            h.push_span(a, b, s);
        }
        for &(start_ns, acquire_ns) in takes {
            h.push_take(ClosedTake {
                lock: 0,
                start_ns,
                acquire_ns,
                holders: vec![HolderSpan {
                    tid: 9,
                    start_ns,
                    end_ns: acquire_ns,
                }],
                wait_stack: None,
                holder_stack: None,
            });
        }
        h
    }

    #[test]
    fn a_datagram_arriving_during_the_wait_after_the_previous_send_is_a_lock_wait_stall() {
        use ThreadState::*;
        // The thread waits for the lock from 100 to 600 (blocked, then runnable, then on a CPU
        // re-checking), runs to 700, blocks in recv until 800 (woken at 780), runs, waits for
        // the lock again 850..1000, runs until its reply at 1100.
        let h = history(
            &[
                (0, 100, Running),
                (100, 500, LockWait),
                (500, 550, Runnable),
                (550, 700, Running),
                (700, 780, IoWait),
                (780, 800, Runnable),
                (800, 850, Running),
                (850, 990, LockWait),
                (990, 1000, Runnable),
            ],
            &[(100, 600), (850, 1000)],
        );
        // The datagram arrived at 300, was dequeued at 805, replied to at 1100.
        let a = h.attribute(300, 1100, 805);
        let c = &a.causes;
        assert_eq!(c[StallCause::LockWait], (600 - 300) + (1000 - 850));
        assert_eq!(
            c[StallCause::Running],
            (700 - 600) + (850 - 800) + (1100 - 1000)
        );
        assert_eq!(c[StallCause::Wakeup], 80);
        assert_eq!(c[StallCause::Runnable], 20);
        assert_eq!(c[StallCause::Unknown], 0);
        let total: u64 = c.iter().map(|(_, v)| v).sum();
        assert_eq!(total, 800, "every nanosecond of the stall has one cause");
        assert_eq!(a.holders, vec![(9, 450)]);
        assert_eq!(a.lock, Some(0));
    }

    #[test]
    fn io_blocking_after_the_dequeue_is_other_io_and_before_history_is_unknown() {
        use ThreadState::*;
        let h = history(
            &[(100, 200, Running), (200, 300, IoWait), (300, 400, Sleep)],
            &[],
        );
        let a = h.attribute(50, 450, 250);
        let c = &a.causes;
        assert_eq!(c[StallCause::Unknown], 50);
        assert_eq!(c[StallCause::Running], 100 + 50);
        assert_eq!(c[StallCause::Wakeup], 50);
        assert_eq!(c[StallCause::IoWait], 50);
        assert_eq!(c[StallCause::Sleep], 100);
        assert!(a.holders.is_empty() && a.lock.is_none());
    }

    // A first datagram that arrived 490 ms into its receiver's wait for the old GIL, past the
    // spans a thread keeps before it receives: that time was `unknown`, not lock wait.
    #[test]
    fn a_take_reaching_back_before_the_kept_spans_is_still_lock_wait() {
        use ThreadState::*;
        let h = history(&[(100, 200, LockWait), (200, 210, Running)], &[(20, 200)]);
        let a = h.attribute(0, 210, 205);
        let c = &a.causes;
        assert_eq!(c[StallCause::LockWait], 180);
        assert_eq!(c[StallCause::Unknown], 20);
        assert_eq!(c[StallCause::Running], 10);
    }

    #[test]
    fn pruning_keeps_what_ends_after_the_cut_and_moves_the_known_start() {
        use ThreadState::*;
        let mut h = history(&[(0, 10, Running), (10, 20, Sleep), (20, 30, Running)], &[]);
        h.prune(15);
        let a = h.attribute(0, 30, 0);
        assert_eq!(a.causes[StallCause::Unknown], 10);
        assert_eq!(a.causes[StallCause::Sleep], 10);
        assert_eq!(a.causes[StallCause::Running], 10);
    }
}
