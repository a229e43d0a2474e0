//! The contention tracker: one dispatch per event over trackers that share per-thread state —
//! lock takes and handoffs ([`takes`]), the life of each received datagram and its stall by
//! cause ([`datagrams`], attributed from each thread's [`history`]) and the lock waits around
//! I/O that make convoy episodes ([`convoys`]).
//!
//! An *uncontended* acquisition makes no syscall: after a recv with no lock wait before the
//! next I/O, the thread took the lock when recv returned.
pub mod convoys;
pub mod datagrams;
pub mod history;
pub mod python;
pub mod stacks;
pub mod takes;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gil_trace_common::EventKind;
use serde::Serialize;

pub use convoys::{
    ConvoyEpisode, IoLockWaits, Sampled, CONVOY_MIN_OPS, DEFAULT_CONVOY_THRESHOLD_NS,
};
pub use datagrams::{IoOp, IoStallSummary, PerCause, StallCause};
pub use stacks::{OffCpu, StackKey, StackTime};
pub use takes::{
    HandoffEvent, HandoffKind, LockHandoffs, PREEMPTED_AFTER_WAIT_NS, TAKE_GAP_CPU_NS,
};

use self::{
    convoys::{AfterIo, Convoys, OpenConvoy, RecentWaits},
    datagrams::{DatagramStats, OpsState, RecvWake, ThreadIo},
    history::{ClosedTake, ThreadHistory, HISTORY_NS},
    python::PySamples,
    stacks::{OffCpuTally, TOP_STACKS},
    takes::{Acquisitions, Take, Wakeup},
};
use crate::{
    analysis::histogram::Histogram,
    model::{
        locks::{LockSet, EAGAIN, ETIMEDOUT},
        thread_map::ThreadMap,
        timeline::{switched_out_runnable, StateSpan, ThreadState},
    },
    trace::{Event, EventData, IoClass, KindMask},
};

/// The FORCE_SWITCHING handshake follows the acquirer's last wait within this (re-locking the
/// lock's mutex and flipping its state take a few µs).
const HANDSHAKE_AFTER_WAIT_NS: u64 = 50_000;
/// ... and within this much of the acquirer's CPU time: a thread that ran longer held the
/// lock, and its wake of a waiting thread is a release to it (a fair lock hands the lock
/// straight back to the thread that handed it over, which queued again meanwhile).
const HANDSHAKE_CPU_NS: u64 = 10_000;
/// The releaser starts waiting for its successor right after its release (a few µs of
/// unlocking and re-locking); the successor's wait can return before that (CPython 3.11 echo:
/// 35 of 930 handshakes, all within 5.3 µs). A wait begun later than this after the
/// successor's wait returned is a thread queueing to take the lock back.
const HANDSHAKE_RELEASER_LATE_NS: u64 = 10_000;
/// Per lock take, how many holder run spans are kept for attribution.
const MAX_HOLDER_SPANS: usize = 512;

/// A lock as rows of the report refer to it: by id (for joins), shown by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockRef {
    /// The lock's rank in the report's `locks`.
    pub id: usize,
    /// Its lowest word in hex, as JSON refers to it.
    pub key: Arc<str>,
    /// How reports show it.
    pub name: Arc<str>,
}

impl LockRef {
    pub fn of(locks: &LockSet, id: usize) -> LockRef {
        let lock = &locks.locks[id];
        LockRef {
            id,
            key: lock.key().into(),
            name: lock.name().into(),
        }
    }
}

impl std::fmt::Display for LockRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for LockRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.key)
    }
}

/// Where a pass puts the per-item rows it keeps (acquisitions, datagrams) as it finds them:
/// kept in memory ([`Rows`]) for `--detail` and the charts' window, or streamed out by an
/// exporter. Called only for rows the options keep ([`ContentionOptions`]).
pub trait RowSink {
    fn handoff(&mut self, event: HandoffEvent);
    fn datagram(&mut self, op: IoOp);
}

/// Rows kept in memory.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub handoff_events: Vec<HandoffEvent>,
    pub io_ops: Vec<IoOp>,
}

impl RowSink for Rows {
    fn handoff(&mut self, event: HandoffEvent) {
        self.handoff_events.push(event);
    }

    fn datagram(&mut self, op: IoOp) {
        self.io_ops.push(op);
    }
}

impl Rows {
    /// Keeps the rows of one thread (`--tid`): its datagrams, the acquisitions by it.
    pub fn retain_thread(&mut self, tid: u32) {
        self.io_ops.retain(|o| o.tid == tid);
        self.handoff_events.retain(|h| h.to_tid == tid);
    }
}

/// Another user of the lock on a CPU while a thread waited for it.
#[derive(Clone, Copy, Debug)]
pub struct HolderSpan {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A futex call in progress.
#[derive(Clone, Copy, Debug)]
struct InFutex {
    uaddr: u64,
    /// The lock whose word it is on, if any.
    lock: Option<usize>,
    is_wait: bool,
    is_wake: bool,
    enter_ns: u64,
}

/// What the tracker knows of one thread.
#[derive(Default)]
struct ThreadCtx {
    tgid: u32,
    futex: Option<InFutex>,
    running_since: Option<u64>,
    blocked: bool,
    pending_wake: Option<Wakeup>,
    take: Option<Take>,
    io: ThreadIo,
    /// Its last I/O operation, until the lock is held again after it (or the next I/O).
    after_io: Option<AfterIo>,
    /// Its re-acquisitions after I/O that waited, for its next convoy episode.
    recent_waits: RecentWaits,
    convoy: Option<OpenConvoy>,
    /// Where its last datagram's stall ended (its reply): the next one's own part of its
    /// stall starts there, what came before was spent on the ones ahead of it.
    last_stall_end_ns: u64,
    history: ThreadHistory,
    /// The stack of its last blocking switch, when it blocked, and the lock it waited for
    /// then: its off-CPU time goes to that stack.
    blocked_in: Option<(StackKey, u64, Option<usize>)>,
    /// Its last futex call that woke a waiter of a lock: the lock and its stack (the code a
    /// holder ran when it handed the lock over).
    last_release: Option<(usize, StackKey)>,
}

impl ThreadCtx {
    /// Ran too long without touching the lock, outside a futex call: the take is over.
    fn take_is_over(&self) -> bool {
        self.futex.is_none() && self.take.as_ref().is_some_and(Take::ran_past_gap)
    }
}

/// Options of the analysis.
#[derive(Clone, Copy, Debug)]
pub struct ContentionOptions {
    pub convoy_threshold_ns: u64,
    /// Keep per-item arrays (io_ops, handoff_events) — memory grows with events...
    pub detail: bool,
    /// ...unless limited to this time span (charts' detail window): then it is bounded.
    pub detail_window: Option<(u64, u64)>,
}

impl ContentionOptions {
    fn keep(&self, ts: u64) -> bool {
        self.detail && self.detail_window.is_none_or(|(a, b)| ts >= a && ts <= b)
    }
}

/// The pass-2 tracker.
pub struct ContentionTracker<'a> {
    rows: &'a mut dyn RowSink,
    locks: &'a LockSet,
    /// The primary lock, as rows refer to it.
    primary: Option<LockRef>,
    opts: ContentionOptions,
    threads: ThreadMap<ThreadCtx>,
    /// Threads in a take of the primary lock: they collect its users' running spans.
    waiting_on_primary: Vec<u32>,
    acquisitions: Acquisitions,
    datagrams: DatagramStats,
    convoys: Convoys,
    /// The longest a datagram waited in its socket, arrival to dequeue (see
    /// [`ContentionResult::max_dequeue_lag_ns`]).
    max_dequeue_lag_ns: u64,
    /// Sockets that still held datagrams at their last dequeue → the arrival of the datagram
    /// dequeued then (those left arrived after it: the queue is FIFO).
    backlog: rustc_hash::FxHashMap<u64, u64>,
    /// The earliest of those: receivers keep their history back to it.
    backlog_from: u64,
    off_cpu: OffCpuTally,
    py: PySamples,
    /// Each CPython process's GIL, among the identified locks (named before the pass): the
    /// most contended, should its words have been grouped into more than one lock.
    gil_of: rustc_hash::FxHashMap<u32, usize>,
}

// The per-event handlers below are called from one arm each of `observe`'s match and are
// inlined into it: as calls they cost ~4 % more instructions per report (cachegrind).
impl<'a> ContentionTracker<'a> {
    /// A tracker over the identified `locks`; the rows the options keep go to `rows`.
    pub fn new(locks: &'a LockSet, opts: ContentionOptions, rows: &'a mut dyn RowSink) -> Self {
        ContentionTracker {
            rows,
            locks,
            primary: locks.primary().map(|l| LockRef::of(locks, l.id)),
            opts,
            threads: ThreadMap::default(),
            waiting_on_primary: Vec::new(),
            acquisitions: Acquisitions::new(locks),
            datagrams: DatagramStats::default(),
            convoys: Convoys::new(opts.convoy_threshold_ns),
            max_dequeue_lag_ns: 0,
            backlog: rustc_hash::FxHashMap::default(),
            backlog_from: u64::MAX,
            off_cpu: OffCpuTally::default(),
            py: PySamples::default(),
            gil_of: {
                let mut gil_of = rustc_hash::FxHashMap::default();
                // Ranked most contended first: the first of a process is its GIL.
                for l in &locks.locks {
                    if matches!(l.kind, crate::model::locks::LockKind::CPythonGil { .. }) {
                        gil_of.entry(l.tgid).or_insert(l.id);
                    }
                }
                gil_of
            },
        }
    }

    fn primary_users_contains(&self, tid: u32) -> bool {
        self.locks
            .primary()
            .is_some_and(|l| l.threads.binary_search(&tid).is_ok())
    }

    /// Feeds a closed timeline span: it goes to its thread's history, and a running span of a
    /// primary lock user is attributed as "holding" to every thread waiting for that lock.
    pub fn observe_span(&mut self, span: &StateSpan) {
        // History for HISTORY_NS, and back to any datagram that may still wait in a backlog.
        let keep_from = span
            .end_ns
            .saturating_sub(HISTORY_NS)
            .min(self.backlog_from);
        self.py.prune(keep_from);
        let t = self.threads.get_or_default(span.tid);
        t.history.push_span(span.start_ns, span.end_ns, span.state);
        t.history.prune(keep_from);
        if let Some((stack, _, lock)) = t.blocked_in.take_if(|&mut (_, at, _)| at == span.start_ns)
        {
            if matches!(
                span.state,
                ThreadState::LockWait | ThreadState::IoWait | ThreadState::Sleep
            ) {
                let lock = lock.filter(|_| span.state == ThreadState::LockWait);
                let ns = span.end_ns - span.start_ns;
                self.off_cpu.add(span.tid, stack, span.state, lock, ns);
            }
        }
        if span.state != ThreadState::Running
            || self.waiting_on_primary.is_empty()
            || !self.primary_users_contains(span.tid)
        {
            return;
        }
        for &tid in &self.waiting_on_primary {
            if tid == span.tid {
                continue;
            }
            if let Some(take) = self.threads.get_mut(tid).and_then(|t| t.take.as_mut()) {
                if take.holders.len() < MAX_HOLDER_SPANS && span.end_ns > take.start_ns {
                    take.holders.push(HolderSpan {
                        tid: span.tid,
                        start_ns: span.start_ns,
                        end_ns: span.end_ns,
                    });
                }
            }
        }
    }

    /// Can no open take still record an acquisition at or before `ts`? The charts' pass stops
    /// its trackers once this holds past its window.
    pub fn settled_through(&self, ts: u64) -> bool {
        self.threads
            .iter()
            .all(|(_, t)| t.take.as_ref().is_none_or(|k| !k.may_acquire_by(ts)))
    }

    /// Has every datagram already dequeued whose recorded time (its arrival, else its recv's
    /// return) is at or before `ts` been recorded? Called past `ts`, so a recv still to return
    /// returns after it. (Datagrams not yet dequeued are bounded by the caller, with
    /// [`ContentionResult::max_dequeue_lag_ns`].)
    pub fn ops_settled_through(&self, ts: u64) -> bool {
        self.threads.iter().all(|(_, t)| {
            t.io.ops.iter().all(|op| match op.arrival_ns {
                Some(arrival) => arrival > ts,
                None => op.recv_exit_ns == 0 || op.recv_exit_ns > ts,
            })
        })
    }

    /// The kinds [`Self::observe_tail`] takes: one list, for its filter and for narrowing the
    /// stream.
    pub const TAIL_KINDS: KindMask = KindMask::of(&[
        EventKind::NetRecv,
        EventKind::RecvEnter,
        EventKind::RecvExit,
        EventKind::ProcessExit,
        // A span not recorded (`top -o`) ends every recv in flight.
        EventKind::Lost,
    ]);

    /// After the charts' pass stopped its trackers: only the events that decide which
    /// datagrams are recorded (a recv's enter and exit, the dequeue, the thread's exit; see
    /// `OpsState`: nothing else moves a thread into or out of a recv). Their other figures
    /// are not used then.
    pub fn observe_tail(&mut self, ev: &Event) {
        if ev
            .kind()
            .is_some_and(|kind| Self::TAIL_KINDS.contains(kind as u64))
        {
            self.observe(ev);
        }
    }

    #[inline(always)]
    pub fn observe(&mut self, ev: &Event) {
        let ts = ev.ts_ns;
        let subject_runs = !matches!(
            ev.data,
            EventData::Switch { .. }
                | EventData::Waking { .. }
                | EventData::Comm { .. }
                | EventData::Lost { .. }
                | EventData::Unknown { .. }
        );
        // The thread runs user code again: after a recv, or after its reply.
        if subject_runs
            && self
                .threads
                .get_mut(ev.tid)
                .is_some_and(|t| t.io.resumed(None))
        {
            self.finish_ops(ev.tid);
        }
        match ev.data {
            EventData::Switch {
                next_tid,
                prev_state,
                prev_traced,
                next_traced,
                stack,
                ..
            } => {
                if prev_traced {
                    let stack = stack.map(|id| StackKey { tgid: ev.tgid, id });
                    self.switched_out(ev.tid, prev_state, ts, stack);
                }
                if next_traced {
                    self.switched_in(next_tid, ts);
                }
            }
            EventData::Waking { wakee, .. } => self.woken(ev.tid, wakee, ts),
            EventData::FutexEnter(call) => {
                self.account_cpu(ev.tid, ts);
                let t = self.threads.get_or_default(ev.tid);
                if ev.tgid != 0 {
                    t.tgid = ev.tgid;
                }
                let word = self.locks.word((t.tgid, call.uaddr));
                if let Some(take) = &mut t.take {
                    // It is doing something after its wait: a preemption from here on does
                    // not delay its acquisition (see `switched_out`).
                    take.exit_untouched = false;
                }
                t.futex = Some(InFutex {
                    uaddr: call.uaddr,
                    lock: word.lock,
                    is_wait: call.is_wait(),
                    is_wake: call.is_wake(),
                    enter_ns: ts,
                });
                match word.lock {
                    Some(lock) if call.is_wait() => {
                        self.lock_wait_begins(ev.tid, lock, call.uaddr, ts);
                    }
                    Some(_) => {
                        // A wake of a gate word is a release (below), never a handshake.
                        if call.is_wake() && !word.gate {
                            self.note_handshake(ev.tid, call.uaddr, ts);
                        }
                        let t = self.threads.get_or_default(ev.tid);
                        let gate_wake = call.is_wake() && word.gate;
                        let mut released = false;
                        if let Some(take) = &mut t.take {
                            take.cpu_since_last_op = 0;
                            // Waking the gate hands the lock on: this thread held it.
                            released = gate_wake && take.waits > 0;
                        }
                        if released {
                            self.close_take(ev.tid);
                        }
                    }
                    None => {}
                }
            }
            EventData::FutexExit { ret, stack, .. } => {
                self.account_cpu(ev.tid, ts);
                if let Some(id) = stack {
                    let t = self.threads.get_or_default(ev.tid);
                    if let Some(InFutex {
                        lock: Some(lock),
                        is_wake: true,
                        ..
                    }) = t.futex
                    {
                        t.last_release = Some((lock, StackKey { tgid: ev.tgid, id }));
                    }
                }
                self.futex_returned(ev.tid, ret, ts);
            }
            EventData::IoEnter { class, .. } => {
                self.account_cpu(ev.tid, ts);
                self.close_take(ev.tid);
                self.io_enter(ev.tid, class, ts);
            }
            EventData::IoExit { class, .. } => {
                self.account_cpu(ev.tid, ts);
                let t = self.threads.get_or_default(ev.tid);
                match class {
                    IoClass::Send => t.io.exit_send(ts),
                    IoClass::Recv | IoClass::Poll => t.io.exit_recv(class == IoClass::Recv, ts),
                }
                // The lock is to be taken again after it (as interpreters do).
                t.after_io = Some(AfterIo { class, exit_ns: ts });
            }
            EventData::NetRecv {
                arrival_ns,
                arrival_lost,
                len,
                sock,
                queued,
            } => {
                self.socket_backlog(sock, queued, arrival_ns.unwrap_or(ts));
                self.dequeued(ev.tid, ts, arrival_ns, arrival_lost, len);
            }
            EventData::Exit { .. } => {
                self.close_take(ev.tid);
                self.finish_ops(ev.tid);
                self.close_convoy(ev.tid);
                self.threads.remove(ev.tid);
            }
            // Nothing was recorded for a while (between two windows of `top -o`): what each
            // thread was in the middle of is closed as at the end of a trace, and the threads
            // start afresh after it, as in a trace of their own. A wait or a stall is never
            // measured across time nobody saw.
            EventData::Lost { count: 0, .. } => {
                let tids: Vec<u32> = self.threads.tids().collect();
                for tid in tids {
                    self.close_take(tid);
                    self.finish_ops(tid);
                    self.close_convoy(tid);
                    self.threads.remove(tid);
                }
                self.backlog.clear();
                self.backlog_from = u64::MAX;
                self.acquisitions.forget_holders();
            }
            _ => {}
        }
    }

    /// A sample of a Python thread's stack, the thread in `state` (the kernel timeline's).
    pub fn observe_py_sample(&mut self, ev: &Event, state: Option<ThreadState>) {
        let EventData::PySample {
            stack,
            owns_gil,
            period_ns,
            read_ns,
            ..
        } = ev.data
        else {
            return;
        };
        let t = self.threads.get(ev.tid);
        let lock = t
            .and_then(|t| t.futex)
            .and_then(|f| f.lock.filter(|_| f.is_wait));
        let gil = self.gil_of.get(&ev.tgid).copied();
        self.py.observe(&python::Observed {
            ts_ns: ev.ts_ns,
            tid: ev.tid,
            stack: stack.map(|id| StackKey::python(ev.tgid, id)),
            owns_gil,
            period_ns,
            read_ns,
            state: state.map(|s| (s, lock.filter(|_| s == ThreadState::LockWait))),
            gil,
        });
    }

    #[inline(always)]
    fn switched_out(&mut self, tid: u32, prev_state: u64, ts: u64, stack: Option<StackKey>) {
        let t = self.threads.get_or_default(tid);
        if let Some(stack) = stack {
            let lock = t.futex.and_then(|f| f.lock.filter(|_| f.is_wait));
            t.blocked_in = Some((stack, ts, lock));
            if let Some(take) = t.take.as_mut().filter(|k| Some(k.lock) == lock) {
                // The code that waited: its first blocking wait in the take.
                take.wait_stack.get_or_insert(stack);
            }
        }
        if let Some(since) = t.running_since.take() {
            if let Some(take) = &mut t.take {
                take.cpu_since_last_op += ts.saturating_sub(since);
                take.cpu_since_wait_exit += ts.saturating_sub(since);
            }
        }
        t.blocked = t.futex.is_some() || t.io.in_recv.is_some();
        if let Some(take) = &mut t.take {
            // Preempted within a few µs of its wait returning, before doing anything: it
            // cannot have taken the lock yet.
            if take.exit_untouched
                && t.futex.is_none()
                && switched_out_runnable(prev_state)
                && ts.saturating_sub(take.last_wait_exit) <= PREEMPTED_AFTER_WAIT_NS
            {
                take.preempted = true;
            }
        }
        if t.take_is_over() {
            self.close_take(tid);
        }
    }

    #[inline(always)]
    fn switched_in(&mut self, tid: u32, ts: u64) {
        // Back in user space after its reply, once on a CPU again.
        if self.threads.get_or_default(tid).io.resumed(Some(ts)) {
            self.finish_ops(tid);
        }
        let t = self.threads.get_or_default(tid);
        t.running_since = Some(ts);
        if let Some(take) = &mut t.take {
            if take.preempted {
                // Preempted right after its wait returned: it takes the lock now.
                take.preempted = false;
                take.last_wait_exit = ts;
                take.cpu_since_wait_exit = 0;
            }
        }
        if let Some(w) = &mut t.pending_wake {
            w.run_ns.get_or_insert(ts);
        }
        if let Some(w) = &mut t.io.recv_wake {
            w.run_ns.get_or_insert(ts);
        }
    }

    #[inline(always)]
    fn woken(&mut self, waker: u32, wakee: u32, ts: u64) {
        let (release_ns, via_lock) = match self.threads.get(waker).and_then(|w| w.futex) {
            Some(InFutex {
                lock: Some(_),
                is_wake: true,
                enter_ns,
                ..
            }) => (Some(enter_ns), true),
            _ => (None, false),
        };
        let t = self.threads.get_or_default(wakee);
        t.pending_wake = Some(Wakeup {
            waker,
            release_ns,
            wake_ns: ts,
            run_ns: None,
            via_lock,
        });
        if t.io.in_recv.is_some() && t.blocked && t.io.recv_wake.is_none() {
            t.io.recv_wake = Some(RecvWake {
                woken_ns: ts,
                run_ns: None,
            });
        }
        t.blocked = false;
    }

    /// A datagram that arrived at `arrival_ns` was dequeued from `sock`, `queued` left.
    fn socket_backlog(&mut self, sock: u64, queued: u32, arrival_ns: u64) {
        let changed = if queued > 0 {
            self.backlog.insert(sock, arrival_ns) != Some(arrival_ns)
        } else {
            self.backlog.remove(&sock).is_some()
        };
        if changed {
            self.backlog_from = self.backlog.values().copied().min().unwrap_or(u64::MAX);
        }
    }

    /// `tid`, in a take that waited, wakes `uaddr`: if the thread that handed it the lock
    /// waits there, this is the handshake a forced releaser waits for (CPython's
    /// FORCE_SWITCHING `switch_cond`), made just after taking the lock — a closer mark of the
    /// acquisition than its wait's return, before which it still had to re-lock and re-check.
    #[inline(always)]
    fn note_handshake(&mut self, tid: u32, uaddr: u64, ts: u64) {
        let Some(t) = self.threads.get(tid) else {
            return;
        };
        // Soon after its wait, and not on the word it waited on (waking that would be a
        // release to the next waiter, as a lock without a handshake does).
        let Some(take) = t.take.as_ref().filter(|k| {
            k.waits > 0
                && k.handshake_ns.is_none()
                && k.waited_on != uaddr
                && ts.saturating_sub(k.last_wait_exit) <= HANDSHAKE_AFTER_WAIT_NS
                && k.cpu_since_wait_exit <= HANDSHAKE_CPU_NS
        }) else {
            return;
        };
        // The releaser waits for its successor from its release on, so it was waiting there
        // by about when the successor's wait returned; a thread that queued there later (after
        // I/O, say) is waiting to take the lock back, and this wake hands it over.
        let latest = take.last_wait_exit + HANDSHAKE_RELEASER_LATE_NS;
        let waits_on = |r: &ThreadCtx| {
            r.futex
                .is_some_and(|f| f.is_wait && f.uaddr == uaddr && f.enter_ns <= latest)
        };
        // The thread that woke it, if known; else any thread waiting there.
        let waits_here = match take.last_wake.map(|w| w.waker) {
            Some(releaser) => self.threads.get(releaser).is_some_and(waits_on),
            None => self
                .threads
                .iter()
                .any(|(other, r)| other != tid && r.tgid == t.tgid && waits_on(r)),
        };
        if waits_here {
            if let Some(take) = self.threads.get_mut(tid).and_then(|t| t.take.as_mut()) {
                take.handshake_ns = Some(ts);
            }
        }
    }

    /// `tid` starts waiting on a word of `lock`.
    #[inline(always)]
    fn lock_wait_begins(&mut self, tid: u32, lock: usize, uaddr: u64, ts: u64) {
        // A wait on another lock ends the current take.
        if self
            .threads
            .get(tid)
            .and_then(|t| t.take.as_ref())
            .is_some_and(|k| k.lock != lock)
        {
            self.close_take(tid);
        }
        let t = self.threads.get_or_default(tid);
        if t.take.is_none() && self.primary.as_ref().is_some_and(|p| p.id == lock) {
            self.waiting_on_primary.push(tid);
        }
        let take = t.take.get_or_insert_with(|| Take {
            lock,
            start_ns: ts,
            ..Default::default()
        });
        take.cpu_since_last_op = 0;
        take.waited_on = uaddr;
        // A new wait: whatever it signalled before did not complete an acquisition.
        take.handshake_ns = None;
        t.pending_wake = None;
    }

    #[inline(always)]
    fn futex_returned(&mut self, tid: u32, ret: i64, ts: u64) {
        let t = self.threads.get_or_default(tid);
        let Some(InFutex {
            lock: Some(_),
            is_wait: true,
            ..
        }) = t.futex.take()
        else {
            return;
        };
        let wake = t.pending_wake.take();
        let Some(take) = &mut t.take else { return };
        take.waits += 1;
        take.last_wait_exit = ts;
        take.exit_untouched = true;
        take.preempted = false;
        take.cpu_since_last_op = 0;
        take.cpu_since_wait_exit = 0;
        let end = if ret == ETIMEDOUT {
            take.timeouts += 1;
            HandoffKind::Timeout
        } else if wake.is_some_and(|w| w.via_lock) && (ret >= 0 || ret == EAGAIN) {
            take.woken_waits += 1;
            HandoffKind::Wake
        } else {
            HandoffKind::Other
        };
        take.last_wait_end = Some(end);
        take.last_wake = if end == HandoffKind::Wake { wake } else { None };
    }

    fn account_cpu(&mut self, tid: u32, ts: u64) {
        let t = self.threads.get_or_default(tid);
        let since = t.running_since.get_or_insert(ts);
        let ran = ts.saturating_sub(*since);
        *since = ts;
        if let Some(take) = &mut t.take {
            take.cpu_since_last_op += ran;
            take.cpu_since_wait_exit += ran;
        }
        if t.take_is_over() {
            self.close_take(tid);
        }
    }

    /// A take is over: record the acquisition (if it waited), keep it in the thread's history
    /// and hand it to the I/O trackers.
    fn close_take(&mut self, tid: u32) {
        let Some(mut take) = self.threads.get_mut(tid).and_then(|t| t.take.take()) else {
            return;
        };
        let primary = self.primary.as_ref().is_some_and(|p| p.id == take.lock);
        if primary {
            self.waiting_on_primary.retain(|&t| t != tid);
        }
        // The code the lock's previous holder ran when it handed the lock over: its last
        // waking call on this lock.
        let holder_stack = |from: u32| {
            self.threads
                .get(from)
                .and_then(|f| f.last_release)
                .filter(|&(lock, _)| lock == take.lock)
                .map(|(_, stack)| stack)
        };
        let Some((acquire_ns, holder)) =
            self.acquisitions
                .close(tid, &take, holder_stack, self.locks, &self.opts, self.rows)
        else {
            return;
        };
        if primary {
            self.add_running_holders(tid, &mut take, acquire_ns);
        }
        if self.gil_of.values().any(|&gil| gil == take.lock) {
            self.py.acquired(take.lock, acquire_ns, tid);
        }
        let t = self.threads.get_or_default(tid);
        if primary {
            // The I/O side: a datagram waiting for the lock got it now, and the I/O before it
            // was followed by this wait.
            t.io.lock_acquired(acquire_ns);
            if let Some(io) = t.after_io.take_if(|io| io.exit_ns <= acquire_ns) {
                self.convoys
                    .reacquired(tid, &mut t.recent_waits, io, Some(acquire_ns));
            }
        }
        t.history.push_take(ClosedTake {
            lock: take.lock,
            start_ns: take.start_ns,
            acquire_ns,
            holders: take.holders,
            wait_stack: take.wait_stack,
            holder_stack: holder,
        });
    }

    /// The primary lock's other users still on a CPU when `tid`'s take ends at `until`: their
    /// running spans are open, so they reached no take yet.
    fn add_running_holders(&self, tid: u32, take: &mut Take, until: u64) {
        let Some(primary) = self.locks.primary() else {
            return;
        };
        for &user in &primary.threads {
            if user == tid || take.holders.len() >= MAX_HOLDER_SPANS {
                continue;
            }
            if let Some(since) = self.threads.get(user).and_then(|u| u.running_since) {
                let start_ns = since.max(take.start_ns);
                if start_ns < until {
                    take.holders.push(HolderSpan {
                        tid: user,
                        start_ns,
                        end_ns: until,
                    });
                }
            }
        }
    }

    fn io_enter(&mut self, tid: u32, class: IoClass, ts: u64) {
        // Released the lock for I/O (as interpreters do around blocking calls).
        self.acquisitions.released_for_io(tid);
        let t = self.threads.get_or_default(tid);
        if let Some(io) = t.after_io.take() {
            // No wait for the lock since the last I/O: taken at once, or not at all.
            self.convoys.reacquired(tid, &mut t.recent_waits, io, None);
        }
        let io = &mut self.threads.get_or_default(tid).io;
        io.enter_send_or_lock_free(class == IoClass::Send, ts);
        if class == IoClass::Send {
            return;
        }
        if class == IoClass::Recv {
            self.finish_ops(tid);
        }
        let io = &mut self.threads.get_or_default(tid).io;
        io.enter_recv(class == IoClass::Recv, ts);
    }

    #[inline(always)]
    fn dequeued(
        &mut self,
        tid: u32,
        ts: u64,
        arrival_ns: Option<u64>,
        arrival_lost: bool,
        len: u32,
    ) {
        if self.threads.get_or_default(tid).io.state != OpsState::InRecv {
            // A datagram outside a recv syscall we saw start: keep it, recv enter unknown.
            self.finish_ops(tid);
            let io = &mut self.threads.get_or_default(tid).io;
            io.state = OpsState::InRecv;
            io.in_recv.get_or_insert(ts);
        }
        if let Some(arrival) = arrival_ns {
            self.max_dequeue_lag_ns = self.max_dequeue_lag_ns.max(ts.saturating_sub(arrival));
        }
        let t = self.threads.get_or_default(tid);
        t.history.set_receiver();
        t.io.dequeued(tid, ts, arrival_ns, arrival_lost, len);
    }

    /// The datagrams of the last recv are complete: attribute their stalls and record them.
    fn finish_ops(&mut self, tid: u32) {
        let Some(t) = self.threads.get_mut(tid) else {
            return;
        };
        for mut op in t.io.take_complete() {
            let stall = t
                .history
                .attribute(op.stall_start_ns(), op.stall_end_ns(), op.dequeue_ns);
            op.lock_wait_ns = stall.causes[StallCause::LockWait];
            op.causes = stall.causes;
            op.holders = stall.holders;
            op.lock = stall.lock.map(|id| LockRef::of(self.locks, id));
            self.datagrams.record(&op);
            // Convoy episodes: consecutive datagrams of one thread each held up by a long
            // re-acquisition of a lock. Not by the sum of its waits: behind a queue, a
            // datagram's stall spans many short re-acquisitions made for the datagrams before
            // it, which a lock that hands over at once (a priority GIL) also makes.
            // The datagram's own part of its stall: behind a queue, its stall from arrival
            // spans the serving of the datagrams ahead of it, and one long take there would
            // count against each of them.
            let own_from = op.stall_start_ns().max(t.last_stall_end_ns);
            t.last_stall_end_ns = t.last_stall_end_ns.max(op.stall_end_ns());
            let convoyed =
                t.history.longest_take(own_from, op.stall_end_ns()) > self.opts.convoy_threshold_ns;
            // An episode starts with its first datagram's own part: from an earlier arrival it
            // would overlap the thread's previous episode, and count its lock wait twice.
            let new_part = convoyed.then(|| {
                let from = Convoys::open_until(t.convoy.as_ref()).unwrap_or(own_from);
                let from = from.min(op.stall_end_ns());
                let mut part = t.history.attribute(from, op.stall_end_ns(), op.dequeue_ns);
                part.python = self.py.between(tid, from, op.stall_end_ns());
                (from, part)
            });
            self.convoys.datagram(
                tid,
                &mut t.convoy,
                &mut t.recent_waits,
                &op,
                new_part.as_ref().map(|(from, part)| (*from, part)),
                self.primary.as_ref(),
            );
            if self.opts.keep(op.seen_ns()) {
                self.rows.datagram(op);
            }
        }
    }

    fn close_convoy(&mut self, tid: u32) {
        if let Some(t) = self.threads.get_mut(tid) {
            self.convoys
                .close(tid, &mut t.convoy, self.primary.as_ref());
        }
    }

    /// Ends the pass: flushes open takes, datagrams and episodes.
    pub fn finish(mut self) -> ContentionResult {
        let tids: Vec<u32> = self.threads.tids().collect();
        for tid in tids {
            self.close_take(tid);
            self.finish_ops(tid);
            self.close_convoy(tid);
        }
        self.py.settle();
        let (mut handoffs, lock_wait_histograms) = self.acquisitions.finish(self.locks);
        for h in &mut handoffs {
            if let Some(t) = self.py.waiting.get(&h.lock.id) {
                h.py_wait_stacks = t.top(TOP_STACKS);
            }
            if let Some(t) = self.py.holding.get(&h.lock.id) {
                h.py_holder_stacks = t.top(TOP_STACKS);
            }
        }
        let (io_stalls, stall_histograms) = self.datagrams.finish();
        let (convoys, io_lock_waits) = self.convoys.finish();
        ContentionResult {
            handoffs,
            io_stalls,
            convoys,
            io_lock_waits,
            max_dequeue_lag_ns: self.max_dequeue_lag_ns,
            lock_wait_histograms,
            stall_histograms,
            off_cpu: self.off_cpu.finish(),
            python: (self.py.samples > 0).then_some(PythonSummary {
                samples: self.py.samples,
                agreement: self.py.agreement,
            }),
            py_time: self.py.time.finish(),
        }
    }
}

pub struct ContentionResult {
    pub handoffs: Vec<LockHandoffs>,
    pub io_stalls: IoStallSummary,
    pub convoys: Vec<ConvoyEpisode>,
    /// Per thread that did I/O, its lock waits after I/O.
    pub io_lock_waits: Vec<IoLockWaits>,
    /// The longest any datagram of the pass waited in its socket, from arrival to dequeue:
    /// a later pass over the same events knows that a datagram that arrived by `t` is
    /// dequeued by `t` + this, if ever.
    pub max_dequeue_lag_ns: u64,
    /// Per lock (in lock order), the full distribution of contended acquisitions' waits.
    pub lock_wait_histograms: Vec<Histogram>,
    /// Per stall cause, its full distribution over the datagrams.
    pub stall_histograms: PerCause<Histogram>,
    /// Off-CPU time by thread, stack and state.
    pub off_cpu: Vec<OffCpu>,
    /// Python samples: how many, and how their GIL holder agrees with the kernel's.
    pub python: Option<PythonSummary>,
    /// Sampled time by thread, Python stack and state.
    pub py_time: Vec<OffCpu>,
}

/// What the Python samples of a pass add up to (`python` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PythonSummary {
    pub samples: u64,
    pub agreement: python::HolderAgreement,
}

impl ContentionResult {
    /// Keeps the rows of one thread (`--tid`): its convoys, its lock waits around I/O.
    pub fn retain_thread(&mut self, tid: u32) {
        self.convoys.retain(|c| c.tid == tid);
        self.io_lock_waits.retain(|w| w.tid == tid);
    }
}
