//! Lock takes and handoffs: a thread's contended acquisition, from its first wait on the
//! lock's words to the moment it holds the lock, and who handed the lock over.
//!
//! What the kernel shows and what is inferred (see docs/analysis.md):
//! - A *contended* acquisition is visible: the thread waits in futex on the lock's words,
//!   maybe several times (woken, finds the lock taken, waits again: a failed wakeup), then
//!   stops waiting and runs. It acquired when its last wait returned. A "take" ends when the
//!   thread wakes a gate word of the lock (it is releasing: it held it), does I/O, exits, or
//!   runs [`TAKE_GAP_CPU_NS`] of CPU without touching the lock.
//! - The handoff is the sched_waking that ended that last wait: its waker, if it was inside a
//!   futex wake on the lock, released the lock to this thread.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    stacks::{StackKey, StackTally, StackTime, TOP_STACKS},
    ContentionOptions, HolderSpan, LockRef, RowSink,
};
use crate::{
    analysis::histogram::{Distribution, Histogram},
    model::locks::LockSet,
};

/// CPU time a thread may run after a lock wait and still be in the same take (re-locking
/// an internal mutex, re-checking the flag, logging). More than this and it holds the lock.
/// Releases are normally seen earlier, as a wake of a gate word; this is the fallback for
/// a holder that releases with nobody waiting (no syscall).
pub const TAKE_GAP_CPU_NS: u64 = 1_000_000;
/// A thread switched out this soon after its lock wait returned is taken to acquire the lock
/// only when it runs again.
pub const PREEMPTED_AFTER_WAIT_NS: u64 = 5_000;

/// How an acquisition's last wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffKind {
    /// Woken by a thread inside a futex wake on the lock: a handoff from it.
    Wake,
    /// The wait timed out (the "drop request" path), then the lock was free.
    Timeout,
    /// Woken otherwise (signal, spurious, a wake not on the lock).
    Other,
}

/// One contended acquisition (`handoff_events` in JSON).
#[derive(Clone, Debug, Serialize)]
pub struct HandoffEvent {
    pub lock: LockRef,
    pub kind: HandoffKind,
    /// The releaser (waker) for `wake`; otherwise the thread last seen holding, if known.
    pub from_tid: Option<u32>,
    pub to_tid: u32,
    /// The releaser's futex-wake syscall entry.
    pub release_ns: Option<u64>,
    /// The sched_waking of the acquirer.
    pub wake_ns: Option<u64>,
    /// The acquirer back on a CPU.
    pub run_ns: Option<u64>,
    pub acquire_ns: u64,
    /// When this take began (first wait).
    pub wait_start_ns: u64,
    pub failed_wakeups: u32,
    pub timeouts: u32,
}

/// Per-lock handoff summary (`handoffs` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockHandoffs {
    pub lock: LockRef,
    pub acquisitions: u64,
    pub handoffs: u64,
    pub failed_wakeups: u64,
    pub timeouts: u64,
    pub release_to_wake: Distribution,
    pub wake_to_run: Distribution,
    pub run_to_acquire: Distribution,
    pub wait: Distribution,
    /// from tid → to tid → count.
    pub matrix: BTreeMap<u32, BTreeMap<u32, u64>>,
    /// The stacks its waiters blocked in, by their lock wait (most first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wait_stacks: Vec<StackTime>,
    /// The stacks its holders handed it over in, by the waits that ended there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holder_stacks: Vec<StackTime>,
    /// CPython programs: the Python stacks its waiters were sampled in while they waited
    /// (`ns` is sampled time: samples × the sampling period; `count` the samples).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub py_wait_stacks: Vec<StackTime>,
    /// The GIL: the Python stacks of the threads sampled holding it (the interpreter's flag).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub py_holder_stacks: Vec<StackTime>,
}

/// A wakeup of a thread, as seen at its sched_waking.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wakeup {
    pub waker: u32,
    /// The waker's futex-wake entry, when the waker was inside a wake on a lock.
    pub release_ns: Option<u64>,
    pub wake_ns: u64,
    /// The wakee back on a CPU.
    pub run_ns: Option<u64>,
    /// The waker was inside a futex wake on a lock's word.
    pub via_lock: bool,
}

/// A take in progress: one thread trying to acquire one lock.
#[derive(Default)]
pub(super) struct Take {
    pub lock: usize,
    pub start_ns: u64,
    pub waits: u32,
    pub woken_waits: u32,
    pub timeouts: u32,
    pub last_wait_exit: u64,
    pub last_wait_end: Option<HandoffKind>,
    pub last_wake: Option<Wakeup>,
    pub cpu_since_last_op: u64,
    /// CPU time run since its last wait returned (a handshake comes within a few µs of it).
    pub cpu_since_wait_exit: u64,
    /// The thread has done nothing since its last wait returned (so a preemption right
    /// there delays the acquisition to when it runs again).
    pub exit_untouched: bool,
    pub preempted: bool,
    /// Other users of the primary lock that ran while this take waited on it (spans closed
    /// so far; see `ContentionTracker::observe_span`).
    pub holders: Vec<HolderSpan>,
    /// The word of its last wait.
    pub waited_on: u64,
    /// Its wake of the releaser waiting for it after its last wait (see
    /// `ContentionTracker::note_handshake`): the lock was taken by then.
    pub handshake_ns: Option<u64>,
    /// The stack it first blocked in while waiting.
    pub wait_stack: Option<StackKey>,
}

impl Take {
    /// When the thread holds the lock: at the handshake after its last wait if it made one,
    /// else when that wait returned (or the thread ran again, if preempted right then).
    pub fn acquired_ns(&self) -> u64 {
        self.handshake_ns
            .filter(|&h| h >= self.last_wait_exit)
            .unwrap_or(self.last_wait_exit)
    }

    /// Ran too long without touching the lock: the take is over (checked outside a futex
    /// call).
    pub fn ran_past_gap(&self) -> bool {
        self.cpu_since_last_op > TAKE_GAP_CPU_NS
    }

    /// Can this take still record an acquisition at or before `ts`? (Its acquisition is its
    /// last wait's exit, known once it closes; a take still in its first wait acquires later.)
    pub fn may_acquire_by(&self, ts: u64) -> bool {
        self.waits > 0 && self.last_wait_exit <= ts
    }
}

#[derive(Default)]
struct LockAcc {
    acquisitions: u64,
    handoffs: u64,
    failed_wakeups: u64,
    timeouts: u64,
    release_to_wake: Histogram,
    wake_to_run: Histogram,
    run_to_acquire: Histogram,
    wait: Histogram,
    matrix: BTreeMap<u32, BTreeMap<u32, u64>>,
    wait_stacks: StackTally,
    holder_stacks: StackTally,
}

/// Acquisitions and handoffs of every lock.
pub(super) struct Acquisitions {
    per_lock: Vec<LockAcc>,
    /// Last known holder per lock (for timeout acquisitions' "from").
    holder: Vec<Option<u32>>,
}

impl Acquisitions {
    /// After a span nothing was recorded in: who holds each lock is not known.
    pub fn forget_holders(&mut self) {
        self.holder.fill(None);
    }

    pub fn new(locks: &LockSet) -> Self {
        Acquisitions {
            per_lock: (0..locks.locks.len()).map(|_| LockAcc::default()).collect(),
            holder: vec![None; locks.locks.len()],
        }
    }

    /// A take is over: records its acquisition if it waited (its row to `rows` if the options
    /// keep it), and returns when the thread acquired the lock, and the thread it came from
    /// with the stack it handed it over in (`holder_stack` of that thread, if known).
    pub fn close(
        &mut self,
        tid: u32,
        take: &Take,
        holder_stack: impl Fn(u32) -> Option<StackKey>,
        locks: &LockSet,
        opts: &ContentionOptions,
        rows: &mut dyn RowSink,
    ) -> Option<(u64, Option<(u32, StackKey)>)> {
        if take.waits == 0 {
            return None;
        }
        let lock = take.lock;
        let acquire_ns = take.acquired_ns();
        let kind = take.last_wait_end.unwrap_or(HandoffKind::Other);
        let failed = take
            .woken_waits
            .saturating_sub(u32::from(kind == HandoffKind::Wake));
        let previous_holder = self.holder[lock].filter(|&h| h != tid);
        let acc = &mut self.per_lock[lock];
        acc.acquisitions += 1;
        acc.failed_wakeups += u64::from(failed);
        acc.timeouts += u64::from(take.timeouts);
        acc.wait.record(acquire_ns.saturating_sub(take.start_ns));
        let wake = take.last_wake;
        let from = match (kind, wake) {
            (HandoffKind::Wake, Some(w)) => Some(w.waker),
            _ => previous_holder,
        };
        if let (HandoffKind::Wake, Some(w)) = (kind, wake) {
            acc.handoffs += 1;
            if let Some(r) = w.release_ns {
                acc.release_to_wake.record(w.wake_ns.saturating_sub(r));
            }
            let run = w.run_ns.unwrap_or(w.wake_ns).min(acquire_ns);
            acc.wake_to_run.record(run.saturating_sub(w.wake_ns));
            acc.run_to_acquire.record(acquire_ns.saturating_sub(run));
        }
        if let Some(f) = from {
            *acc.matrix.entry(f).or_default().entry(tid).or_default() += 1;
        }
        let waited = acquire_ns.saturating_sub(take.start_ns);
        if let Some(stack) = take.wait_stack {
            acc.wait_stacks.add(None, stack, waited);
        }
        let holder = from.and_then(|f| Some((f, holder_stack(f)?)));
        if let Some((f, stack)) = holder {
            acc.holder_stacks.add(Some(f), stack, waited);
        }
        self.holder[lock] = Some(tid);
        if opts.keep(acquire_ns) {
            rows.handoff(HandoffEvent {
                lock: LockRef::of(locks, lock),
                kind,
                from_tid: from,
                to_tid: tid,
                release_ns: wake.and_then(|w| w.release_ns),
                wake_ns: wake.map(|w| w.wake_ns),
                run_ns: wake.map(|w| w.run_ns.unwrap_or(w.wake_ns).min(acquire_ns)),
                acquire_ns,
                wait_start_ns: take.start_ns,
                failed_wakeups: failed,
                timeouts: take.timeouts,
            });
        }
        Some((acquire_ns, holder))
    }

    /// `tid` entered an I/O syscall: interpreters release the lock around blocking calls.
    pub fn released_for_io(&mut self, tid: u32) {
        for h in &mut self.holder {
            if *h == Some(tid) {
                *h = None;
            }
        }
    }

    /// Per-lock summaries, in lock order, and each lock's wait distribution.
    pub fn finish(&self, locks: &LockSet) -> (Vec<LockHandoffs>, Vec<Histogram>) {
        self.per_lock
            .iter()
            .enumerate()
            .map(|(id, acc)| {
                let summary = LockHandoffs {
                    lock: LockRef::of(locks, id),
                    acquisitions: acc.acquisitions,
                    handoffs: acc.handoffs,
                    failed_wakeups: acc.failed_wakeups,
                    timeouts: acc.timeouts,
                    release_to_wake: acc.release_to_wake.summary(),
                    wake_to_run: acc.wake_to_run.summary(),
                    run_to_acquire: acc.run_to_acquire.summary(),
                    wait: acc.wait.summary(),
                    matrix: acc.matrix.clone(),
                    wait_stacks: acc.wait_stacks.top(TOP_STACKS),
                    holder_stacks: acc.holder_stacks.top(TOP_STACKS),
                    py_wait_stacks: Vec::new(),
                    py_holder_stacks: Vec::new(),
                };
                (summary, acc.wait.clone())
            })
            .unzip()
    }
}
