//! Pass 2 trackers: lock acquisitions and handoffs, per-datagram I/O stalls, convoy episodes.
//!
//! What the kernel shows and what is inferred (see docs/analysis.md):
//! - A *contended* acquisition is visible: the thread waits in futex on the lock's words,
//!   maybe several times (woken, finds the lock taken, waits again: a failed wakeup), then
//!   stops waiting and runs. It acquired when its last wait returned. A "take" ends when the
//!   thread wakes a gate word of the lock (it is releasing: it held it), does I/O, exits, or
//!   runs [`TAKE_GAP_CPU_NS`] of CPU without touching the lock.
//! - The handoff is the sched_waking that ended that last wait: its waker, if it was inside a
//!   futex wake on the lock, released the lock to this thread.
//! - An *uncontended* acquisition makes no syscall: after a recv with no lock wait before the
//!   next I/O, the thread took the lock when recv returned.
use std::collections::BTreeMap;

use gil_trace_common::EventKind;
use rustc_hash::FxHashMap;

use serde::Serialize;

use super::histogram::{Distribution, Histogram};
use crate::{
    model::{
        locks::{LockSet, EAGAIN, ETIMEDOUT},
        thread_map::ThreadMap,
        timeline::{StateSpan, ThreadState},
    },
    trace::{Event, EventData, IoClass, KindMask},
};

/// CPU time a thread may run after a lock wait and still be in the same take (re-locking
/// an internal mutex, re-checking the flag, logging). More than this and it holds the lock.
/// Releases are normally seen earlier, as a wake of a gate word; this is the fallback for
/// a holder that releases with nobody waiting (no syscall).
pub const TAKE_GAP_CPU_NS: u64 = 1_000_000;
/// A thread switched out this soon after its lock wait returned is taken to acquire the lock
/// only when it runs again.
pub const PREEMPTED_AFTER_WAIT_NS: u64 = 5_000;
/// Default `--convoy-threshold`: lock wait after I/O above which an operation is convoyed.
pub const DEFAULT_CONVOY_THRESHOLD_NS: u64 = 1_000_000;
/// Consecutive convoyed operations needed for an episode.
pub const CONVOY_MIN_OPS: usize = 2;
/// Per open lock-wait window, how many holder run spans are kept for attribution.
const MAX_HOLDER_SPANS: usize = 512;

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
    pub lock: String,
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
    pub lock: String,
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
    /// The wait's full distribution (for charts).
    #[serde(skip)]
    pub wait_histogram: Histogram,
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
}

/// One datagram received by a traced thread (`io_ops` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoOp {
    pub tid: u32,
    pub bytes: u32,
    /// Queued on the socket (sock:sk_data_ready).
    pub arrival_ns: Option<u64>,
    pub recv_enter_ns: u64,
    /// The receiver woken while blocked in recv (None: it did not block).
    pub woken_ns: Option<u64>,
    /// Back on a CPU after that wakeup.
    pub run_ns: Option<u64>,
    pub recv_exit_ns: u64,
    /// Back in user space after recv: its exit, or later if switched out on the way.
    pub recv_resumed_ns: Option<u64>,
    pub lock_acquired_ns: u64,
    pub lock_wait_ns: u64,
    /// The reply's send syscall entry and exit (None: no send before the next recv).
    pub reply_ns: Option<u64>,
    pub reply_done_ns: Option<u64>,
    /// When the thread was back in user space after the reply: the send's exit, or later if
    /// it was switched out on the way (the woken peer often preempts it).
    pub reply_resumed_ns: Option<u64>,
    /// Threads that ran (held the lock, for a GIL) while this one waited, with ns.
    #[serde(skip)]
    pub holders: Vec<(u32, u64)>,
}

impl IoOp {
    /// Components of the stall: (queue, wakeup, runnable, lock wait, work), ns.
    pub fn components(&self) -> [u64; 5] {
        let arrival = self.arrival_ns.unwrap_or(self.recv_enter_ns);
        let queue = self.recv_enter_ns.saturating_sub(arrival);
        let (wakeup, runnable) = match (self.woken_ns, self.run_ns) {
            (Some(w), Some(r)) => (
                w.saturating_sub(arrival.max(self.recv_enter_ns)),
                r.saturating_sub(w),
            ),
            _ => (0, 0),
        };
        let work = self
            .reply_ns
            .map(|r| r.saturating_sub(self.lock_acquired_ns))
            .unwrap_or(0);
        [queue, wakeup, runnable, self.lock_wait_ns, work]
    }

    /// Arrival (or recv entry) to reply (or lock acquired).
    pub fn stall_ns(&self) -> u64 {
        let start = self.arrival_ns.unwrap_or(self.recv_enter_ns);
        self.reply_ns
            .unwrap_or(self.lock_acquired_ns)
            .saturating_sub(start)
    }
}

/// Summary over all datagrams (`io_stalls` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoStallSummary {
    pub datagrams: u64,
    pub with_arrival: u64,
    pub stall: Distribution,
    pub queue: Distribution,
    pub wakeup: Distribution,
    pub runnable: Distribution,
    pub lock_wait: Distribution,
    pub work: Distribution,
    /// Share of the total stall time in each component.
    pub share: BTreeMap<String, f64>,
    /// The components' full distributions, in `COMPONENTS` order (for charts).
    #[serde(skip)]
    pub component_histograms: Vec<Histogram>,
}

#[derive(Default)]
struct IoAcc {
    datagrams: u64,
    with_arrival: u64,
    stall: Histogram,
    parts: [Histogram; 5],
}

pub const COMPONENTS: [&str; 5] = ["queue", "wakeup", "runnable", "lock_wait", "work"];

/// A run of convoyed I/O operations (`convoys` in JSON).
#[derive(Clone, Debug, Serialize)]
pub struct ConvoyEpisode {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub ops: u64,
    pub lock_wait_ns: u64,
    /// Share of the window spent waiting for the lock.
    pub lost_share: f64,
    /// Threads that ran while it waited, most time first: (tid, ns).
    pub holders: Vec<(u32, u64)>,
    pub lock: Option<String>,
    /// Overlaps a span where the kernel dropped events: numbers may be off.
    pub incomplete: bool,
}

struct OpenConvoy {
    start_ns: u64,
    end_ns: u64,
    ops: u64,
    lock_wait_ns: u64,
    holders: FxHashMap<u32, u64>,
}

#[derive(Default)]
struct Take {
    lock: usize,
    start_ns: u64,
    waits: u32,
    woken_waits: u32,
    timeouts: u32,
    last_wait_exit: u64,
    last_wait_end: Option<HandoffKind>,
    last_wake: Option<Wakeup>,
    cpu_since_last_op: u64,
    /// The thread has done nothing since its last wait returned (so a preemption right
    /// there delays the acquisition to when it runs again).
    exit_untouched: bool,
    preempted: bool,
}

#[derive(Clone, Copy, Debug)]
struct Wakeup {
    waker: u32,
    release_ns: Option<u64>,
    wake_ns: u64,
    run_ns: Option<u64>,
    via_lock: bool,
}

#[derive(Default)]
struct ThreadCtx {
    tgid: u32,
    /// futex call in progress: (lock index if on a lock word, is_wait, is_wake, enter ts).
    futex: Option<(Option<usize>, bool, bool, u64)>,
    /// In a recv/poll syscall since.
    in_recv: Option<u64>,
    in_send: bool,
    running_since: Option<u64>,
    blocked: bool,
    pending_wake: Option<Wakeup>,
    take: Option<Take>,
    /// Datagrams of the current or last recv waiting for the lock / a reply.
    ops: Vec<IoOp>,
    ops_state: OpsState,
    recv_wake: Option<(u64, Option<u64>)>,
    convoy: Option<OpenConvoy>,
    /// recv returned datagrams; watching for the thread to resume user code.
    recv_resume_pending: bool,
    /// Run spans of other lock users while this thread waits for the lock after I/O.
    holder_spans: Vec<(u32, u64, u64)>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum OpsState {
    #[default]
    None,
    InRecv,
    AwaitLock,
    AwaitReply,
    InReply,
    /// The reply syscall returned; waiting to see the thread resume user code.
    AwaitResume,
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
    locks: &'a LockSet,
    opts: ContentionOptions,
    threads: ThreadMap<ThreadCtx>,
    per_lock: Vec<LockAcc>,
    /// Last known holder per lock (for timeout acquisitions' "from").
    holder: Vec<Option<u32>>,
    io: IoAcc,
    pub io_ops: Vec<IoOp>,
    pub handoff_events: Vec<HandoffEvent>,
    pub convoys: Vec<ConvoyEpisode>,
    /// The longest a datagram waited in its socket, arrival to dequeue (see
    /// [`ContentionResult::max_dequeue_lag_ns`]).
    max_dequeue_lag_ns: u64,
}

impl<'a> ContentionTracker<'a> {
    pub fn new(locks: &'a LockSet, opts: ContentionOptions) -> Self {
        ContentionTracker {
            locks,
            opts,
            threads: ThreadMap::default(),
            per_lock: (0..locks.locks.len()).map(|_| LockAcc::default()).collect(),
            holder: vec![None; locks.locks.len()],
            io: IoAcc::default(),
            io_ops: Vec::new(),
            handoff_events: Vec::new(),
            convoys: Vec::new(),
            max_dequeue_lag_ns: 0,
        }
    }

    fn primary_users_contains(&self, tid: u32) -> bool {
        self.locks
            .primary()
            .is_some_and(|l| l.threads.binary_search(&tid).is_ok())
    }

    /// Feeds a closed timeline span: running spans of lock users are attributed as "holding"
    /// to every thread currently waiting for the lock after I/O.
    pub fn observe_span(&mut self, span: &StateSpan) {
        if span.state != ThreadState::Running || !self.primary_users_contains(span.tid) {
            return;
        }
        for (tid, t) in self.threads.iter_mut() {
            if tid != span.tid
                && t.ops_state == OpsState::AwaitLock
                && t.holder_spans.len() < MAX_HOLDER_SPANS
            {
                t.holder_spans.push((span.tid, span.start_ns, span.end_ns));
            }
        }
    }

    /// Can no open take still record an acquisition at or before `ts`? (An acquisition is a
    /// take's last wait exit, known when the take closes; a take in its first wait will
    /// acquire after now.) The charts' pass stops its trackers once this holds past its window.
    pub fn settled_through(&self, ts: u64) -> bool {
        self.threads.iter().all(|(_, t)| {
            t.take
                .as_ref()
                .is_none_or(|k| k.waits == 0 || k.last_wait_exit > ts)
        })
    }

    /// Has every datagram already dequeued whose recorded time (its arrival, else its recv's
    /// return) is at or before `ts` been recorded? Called past `ts`, so a recv still to return
    /// returns after it. (Datagrams not yet dequeued are bounded by the caller, with
    /// [`ContentionResult::max_dequeue_lag_ns`].)
    pub fn ops_settled_through(&self, ts: u64) -> bool {
        self.threads.iter().all(|(_, t)| {
            t.ops.iter().all(|op| match op.arrival_ns {
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
    ]);

    /// After the charts' pass stopped its trackers: only the events that decide which
    /// datagrams are recorded (a recv's enter and exit, the dequeue, the thread's exit; see
    /// `ops_state`: nothing else moves a thread into or out of a recv). Their other figures
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
        if subject_runs {
            // The thread runs user code again: after a recv, or after its reply.
            let resumed_reply = self.threads.get_mut(ev.tid).is_some_and(|t| {
                if t.recv_resume_pending {
                    t.recv_resume_pending = false;
                    for op in &mut t.ops {
                        op.recv_resumed_ns.get_or_insert(op.recv_exit_ns);
                    }
                }
                if t.ops_state != OpsState::AwaitResume {
                    return false;
                }
                // It ran on without being switched out: back in user space right at the exit.
                for op in &mut t.ops {
                    op.reply_resumed_ns = op.reply_done_ns;
                }
                true
            });
            if resumed_reply {
                self.finish_ops(ev.tid, ts);
            }
        }
        match ev.data {
            EventData::Switch {
                next_tid,
                prev_state,
                prev_traced,
                next_traced,
                ..
            } => {
                if prev_traced {
                    let t = self.threads.get_or_default(ev.tid);
                    if let Some(since) = t.running_since.take() {
                        if let Some(take) = &mut t.take {
                            take.cpu_since_last_op += ts.saturating_sub(since);
                        }
                    }
                    t.blocked = t.futex.is_some() || t.in_recv.is_some();
                    if let Some(take) = &mut t.take {
                        // Preempted within a few µs of its wait returning, before doing
                        // anything: it cannot have taken the lock yet.
                        if take.exit_untouched
                            && t.futex.is_none()
                            && crate::model::timeline::switched_out_runnable(prev_state)
                            && ts.saturating_sub(take.last_wait_exit) <= PREEMPTED_AFTER_WAIT_NS
                        {
                            take.preempted = true;
                        }
                    }
                    if Self::take_is_over(t) {
                        self.close_take(ev.tid);
                    }
                }
                if next_traced {
                    let t = self.threads.get_or_default(next_tid);
                    if t.ops_state == OpsState::AwaitResume {
                        // Back in user space after its reply, once on a CPU again.
                        for op in &mut t.ops {
                            op.reply_resumed_ns = Some(ts);
                        }
                        self.finish_ops(next_tid, ts);
                    }
                    let t = self.threads.get_or_default(next_tid);
                    t.running_since = Some(ts);
                    if t.recv_resume_pending {
                        t.recv_resume_pending = false;
                        for op in &mut t.ops {
                            op.recv_resumed_ns.get_or_insert(ts);
                        }
                    }
                    if let Some(take) = &mut t.take {
                        if take.preempted {
                            // Preempted right after its wait returned: it takes the lock now.
                            take.preempted = false;
                            take.last_wait_exit = ts;
                        }
                    }
                    if let Some(w) = &mut t.pending_wake {
                        w.run_ns.get_or_insert(ts);
                    }
                    if let Some((_, run)) = &mut t.recv_wake {
                        run.get_or_insert(ts);
                    }
                }
            }
            EventData::Waking { wakee, .. } => {
                let (release_ns, via_lock) = match self.threads.get(ev.tid).and_then(|w| w.futex) {
                    Some((Some(_), _, true, enter)) => (Some(enter), true),
                    _ => (None, false),
                };
                let t = self.threads.get_or_default(wakee);
                t.pending_wake = Some(Wakeup {
                    waker: ev.tid,
                    release_ns,
                    wake_ns: ts,
                    run_ns: None,
                    via_lock,
                });
                if t.in_recv.is_some() && t.blocked && t.recv_wake.is_none() {
                    t.recv_wake = Some((ts, None));
                }
                t.blocked = false;
            }
            EventData::FutexEnter(call) => {
                self.account_cpu(ev.tid, ts);
                let t = self.threads.get_or_default(ev.tid);
                if ev.tgid != 0 {
                    t.tgid = ev.tgid;
                }
                let word = self.locks.word((t.tgid, call.uaddr));
                let lock = word.lock;
                t.futex = Some((lock, call.is_wait(), call.is_wake(), ts));
                if let (Some(lock), true) = (lock, call.is_wait()) {
                    // A wait on another lock ends the current take.
                    if t.take.as_ref().is_some_and(|k| k.lock != lock) {
                        self.close_take(ev.tid);
                    }
                    let t = self.threads.get_mut(ev.tid).unwrap();
                    let take = t.take.get_or_insert_with(|| Take {
                        lock,
                        start_ns: ts,
                        ..Default::default()
                    });
                    take.cpu_since_last_op = 0;
                    t.pending_wake = None;
                } else if lock.is_some() {
                    let gate_wake = call.is_wake() && word.gate;
                    if let Some(take) = &mut t.take {
                        take.cpu_since_last_op = 0;
                        // Waking the gate hands the lock on: this thread held it, the take is over.
                        if gate_wake && take.waits > 0 {
                            self.close_take(ev.tid);
                        }
                    }
                }
            }
            EventData::FutexExit { ret, .. } => {
                self.account_cpu(ev.tid, ts);
                let t = self.threads.get_or_default(ev.tid);
                if let Some((Some(_), true, _, _)) = t.futex.take() {
                    let wake = t.pending_wake.take();
                    if let Some(take) = &mut t.take {
                        take.waits += 1;
                        take.last_wait_exit = ts;
                        take.exit_untouched = true;
                        take.preempted = false;
                        take.cpu_since_last_op = 0;
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
                }
            }
            EventData::IoEnter { class, .. } => {
                self.account_cpu(ev.tid, ts);
                self.close_take(ev.tid);
                self.io_enter(ev.tid, class, ts);
            }
            EventData::IoExit { class, ret, .. } => {
                self.account_cpu(ev.tid, ts);
                self.io_exit(ev.tid, class, ret, ts);
            }
            EventData::NetRecv {
                arrival_ns, len, ..
            } => {
                let t = self.threads.get_or_default(ev.tid);
                if t.ops_state != OpsState::InRecv {
                    // A datagram outside a recv syscall we saw start: keep it, recv enter unknown.
                    self.finish_ops(ev.tid, ts);
                    let t = self.threads.get_mut(ev.tid).unwrap();
                    t.ops_state = OpsState::InRecv;
                    t.in_recv.get_or_insert(ts);
                }
                if let Some(arrival) = arrival_ns {
                    self.max_dequeue_lag_ns =
                        self.max_dequeue_lag_ns.max(ts.saturating_sub(arrival));
                }
                let t = self.threads.get_mut(ev.tid).unwrap();
                let recv_enter = t.in_recv.unwrap_or(ts);
                let (woken, run) = match t.recv_wake {
                    Some((w, r)) if arrival_ns.is_none_or(|a| a <= w) => (Some(w), r),
                    _ => (None, None),
                };
                t.ops.push(IoOp {
                    tid: ev.tid,
                    bytes: len,
                    arrival_ns,
                    recv_enter_ns: recv_enter,
                    woken_ns: woken,
                    run_ns: run,
                    ..Default::default()
                });
            }
            EventData::Exit { .. } => {
                self.close_take(ev.tid);
                self.finish_ops(ev.tid, ts);
                self.close_convoy(ev.tid);
                self.threads.remove(ev.tid);
            }
            _ => {}
        }
    }

    fn account_cpu(&mut self, tid: u32, ts: u64) {
        let t = self.threads.get_or_default(tid);
        let since = t.running_since.get_or_insert(ts);
        let ran = ts.saturating_sub(*since);
        *since = ts;
        if let Some(take) = &mut t.take {
            take.cpu_since_last_op += ran;
        }
        if Self::take_is_over(t) {
            self.close_take(tid);
        }
    }

    /// Ran too long without touching the lock, outside a futex call: the take is over.
    fn take_is_over(t: &ThreadCtx) -> bool {
        t.futex.is_none()
            && t.take
                .as_ref()
                .is_some_and(|k| k.cpu_since_last_op > TAKE_GAP_CPU_NS)
    }

    /// A take is over: record the acquisition (if it waited) and hand it to the I/O tracker.
    fn close_take(&mut self, tid: u32) {
        let Some(t) = self.threads.get_mut(tid) else {
            return;
        };
        let Some(take) = t.take.take() else { return };
        if take.waits == 0 {
            return;
        }
        let lock = take.lock;
        let acquire_ns = take.last_wait_exit;
        let kind = take.last_wait_end.unwrap_or(HandoffKind::Other);
        let failed = take
            .woken_waits
            .saturating_sub((kind == HandoffKind::Wake) as u32);
        let previous_holder = self.holder[lock].filter(|&h| h != tid);
        let acc = &mut self.per_lock[lock];
        acc.acquisitions += 1;
        acc.failed_wakeups += failed as u64;
        acc.timeouts += take.timeouts as u64;
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
        self.holder[lock] = Some(tid);
        if self.opts.keep(acquire_ns) {
            self.handoff_events.push(HandoffEvent {
                lock: self.locks.locks[lock].name(),
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
        // The I/O side: a datagram waiting for the lock got it now.
        let t = self.threads.get_mut(tid).unwrap();
        if t.ops_state == OpsState::AwaitLock && Some(lock) == self.locks.primary().map(|l| l.id) {
            for op in &mut t.ops {
                if op.lock_acquired_ns == 0 && acquire_ns >= op.recv_exit_ns {
                    op.lock_acquired_ns = acquire_ns;
                    op.lock_wait_ns = acquire_ns - op.recv_exit_ns;
                }
            }
            if t.ops.iter().all(|o| o.lock_acquired_ns != 0) {
                t.ops_state = OpsState::AwaitReply;
            }
        }
    }

    fn io_enter(&mut self, tid: u32, class: IoClass, ts: u64) {
        let t = self.threads.get_or_default(tid);
        // Released the lock for I/O (as interpreters do around blocking calls).
        for h in self.holder.iter_mut() {
            if *h == Some(tid) {
                *h = None;
            }
        }
        if t.ops_state == OpsState::AwaitLock {
            // No lock wait since recv returned: took it uncontended right then.
            for op in &mut t.ops {
                if op.lock_acquired_ns == 0 {
                    op.lock_acquired_ns = op.recv_exit_ns;
                }
            }
            t.ops_state = OpsState::AwaitReply;
        }
        match class {
            IoClass::Send => {
                t.in_send = true;
                if t.ops_state == OpsState::AwaitReply {
                    for op in &mut t.ops {
                        op.reply_ns = Some(ts);
                    }
                    t.ops_state = OpsState::InReply;
                }
            }
            IoClass::Recv | IoClass::Poll => {
                if class == IoClass::Recv {
                    self.finish_ops(tid, ts);
                    let t = self.threads.get_mut(tid).unwrap();
                    t.ops_state = OpsState::InRecv;
                }
                let t = self.threads.get_mut(tid).unwrap();
                t.in_recv = Some(ts);
                t.recv_wake = None;
            }
        }
    }

    fn io_exit(&mut self, tid: u32, class: IoClass, _ret: i64, ts: u64) {
        let t = self.threads.get_or_default(tid);
        match class {
            IoClass::Send => {
                t.in_send = false;
                if t.ops_state == OpsState::InReply {
                    for op in &mut t.ops {
                        op.reply_done_ns = Some(ts);
                    }
                    t.ops_state = OpsState::AwaitResume;
                }
            }
            IoClass::Recv | IoClass::Poll => {
                t.in_recv = None;
                if class == IoClass::Recv && t.ops_state == OpsState::InRecv {
                    if t.ops.is_empty() {
                        t.ops_state = OpsState::None;
                    } else {
                        for op in &mut t.ops {
                            op.recv_exit_ns = ts;
                        }
                        t.recv_resume_pending = true;
                        t.ops_state = OpsState::AwaitLock;
                        t.holder_spans.clear();
                    }
                }
            }
        }
    }

    /// The datagrams of the last recv are complete: record them.
    fn finish_ops(&mut self, tid: u32, _ts: u64) {
        let Some(t) = self.threads.get_mut(tid) else {
            return;
        };
        if t.ops.is_empty() {
            t.ops_state = OpsState::None;
            return;
        }
        let mut ops = std::mem::take(&mut t.ops);
        let spans = std::mem::take(&mut t.holder_spans);
        t.ops_state = OpsState::None;
        for op in &mut ops {
            if op.recv_exit_ns == 0 {
                continue; // recv never returned in the trace
            }
            if op.lock_acquired_ns == 0 {
                op.lock_acquired_ns = op.recv_exit_ns;
            }
            let (a, b) = (op.recv_exit_ns, op.lock_acquired_ns);
            let mut holders: FxHashMap<u32, u64> = FxHashMap::default();
            for &(h, s, e) in &spans {
                let overlap = e.min(b).saturating_sub(s.max(a));
                if overlap > 0 {
                    *holders.entry(h).or_default() += overlap;
                }
            }
            let mut holders: Vec<(u32, u64)> = holders.into_iter().collect();
            holders.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            op.holders = holders;
        }
        for op in ops.into_iter().filter(|o| o.recv_exit_ns != 0) {
            self.record_op(op);
        }
    }

    fn record_op(&mut self, op: IoOp) {
        self.io.datagrams += 1;
        self.io.with_arrival += op.arrival_ns.is_some() as u64;
        self.io.stall.record(op.stall_ns());
        for (h, v) in self.io.parts.iter_mut().zip(op.components()) {
            h.record(v);
        }
        // Convoy episodes: consecutive ops of one thread with a long lock wait.
        let convoyed = op.lock_wait_ns > self.opts.convoy_threshold_ns;
        if convoyed {
            let t = self.threads.get_or_default(op.tid);
            let c = t.convoy.get_or_insert_with(|| OpenConvoy {
                start_ns: op.arrival_ns.unwrap_or(op.recv_enter_ns),
                end_ns: 0,
                ops: 0,
                lock_wait_ns: 0,
                holders: FxHashMap::default(),
            });
            c.end_ns = op.lock_acquired_ns;
            c.ops += 1;
            c.lock_wait_ns += op.lock_wait_ns;
            for &(h, ns) in &op.holders {
                *c.holders.entry(h).or_default() += ns;
            }
        } else {
            self.close_convoy(op.tid);
        }
        if self.opts.keep(op.arrival_ns.unwrap_or(op.recv_exit_ns)) {
            self.io_ops.push(op);
        }
    }

    fn close_convoy(&mut self, tid: u32) {
        let Some(c) = self.threads.get_mut(tid).and_then(|t| t.convoy.take()) else {
            return;
        };
        if (c.ops as usize) < CONVOY_MIN_OPS {
            return;
        }
        let mut holders: Vec<(u32, u64)> = c.holders.into_iter().collect();
        holders.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let window = c.end_ns.saturating_sub(c.start_ns).max(1);
        self.convoys.push(ConvoyEpisode {
            tid,
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            ops: c.ops,
            lock_wait_ns: c.lock_wait_ns,
            lost_share: (c.lock_wait_ns as f64 / window as f64).min(1.0),
            holders,
            lock: self.locks.primary().map(|l| l.name()),
            incomplete: false,
        });
    }

    /// Ends the pass: flushes open takes, datagrams and episodes.
    pub fn finish(mut self) -> ContentionResult {
        let tids: Vec<u32> = self.threads.tids().collect();
        for tid in tids {
            self.close_take(tid);
            self.finish_ops(tid, 0);
            self.close_convoy(tid);
        }
        let handoffs = self
            .per_lock
            .iter()
            .zip(&self.locks.locks)
            .map(|(acc, lock)| LockHandoffs {
                lock: lock.name(),
                acquisitions: acc.acquisitions,
                handoffs: acc.handoffs,
                failed_wakeups: acc.failed_wakeups,
                timeouts: acc.timeouts,
                release_to_wake: acc.release_to_wake.summary(),
                wake_to_run: acc.wake_to_run.summary(),
                run_to_acquire: acc.run_to_acquire.summary(),
                wait: acc.wait.summary(),
                wait_histogram: acc.wait.clone(),
                matrix: acc.matrix.clone(),
            })
            .collect();
        let total: u64 = self.io.parts.iter().map(|h| h.sum()).sum();
        let share = COMPONENTS
            .iter()
            .zip(&self.io.parts)
            .map(|(name, h)| {
                (
                    name.to_string(),
                    if total == 0 {
                        0.0
                    } else {
                        h.sum() as f64 / total as f64
                    },
                )
            })
            .collect();
        let p = &self.io.parts;
        let io_stalls = IoStallSummary {
            datagrams: self.io.datagrams,
            with_arrival: self.io.with_arrival,
            stall: self.io.stall.summary(),
            queue: p[0].summary(),
            wakeup: p[1].summary(),
            runnable: p[2].summary(),
            lock_wait: p[3].summary(),
            work: p[4].summary(),
            share,
            component_histograms: p.to_vec(),
        };
        let mut convoys = self.convoys;
        convoys.sort_by(|a, b| {
            b.lock_wait_ns
                .cmp(&a.lock_wait_ns)
                .then(a.start_ns.cmp(&b.start_ns))
        });
        ContentionResult {
            handoffs,
            io_stalls,
            convoys,
            io_ops: self.io_ops,
            handoff_events: self.handoff_events,
            max_dequeue_lag_ns: self.max_dequeue_lag_ns,
        }
    }
}

pub struct ContentionResult {
    pub handoffs: Vec<LockHandoffs>,
    pub io_stalls: IoStallSummary,
    pub convoys: Vec<ConvoyEpisode>,
    pub io_ops: Vec<IoOp>,
    pub handoff_events: Vec<HandoffEvent>,
    /// The longest any datagram of the pass waited in its socket, from arrival to dequeue:
    /// a later pass over the same events knows that a datagram that arrived by `t` is
    /// dequeued by `t` + this, if ever.
    pub max_dequeue_lag_ns: u64,
}

impl ContentionResult {
    /// Keeps the rows of one thread (`--tid`): its convoys, its datagrams, handoffs to it.
    pub fn retain_thread(&mut self, tid: u32) {
        self.convoys.retain(|c| c.tid == tid);
        self.io_ops.retain(|o| o.tid == tid);
        self.handoff_events.retain(|h| h.to_tid == tid);
    }
}

#[cfg(test)]
mod tests {
    use gil_trace_common::SyscallClass;

    use super::*;
    use crate::{
        analysis::{analyze, Report, ReportOptions},
        trace::{FutexCall, TraceMeta, TraceTrailer},
    };

    const L: u64 = 0x1000; // the lock's condvar word (timed waits: the gate)
    const A: u32 = 11; // holder / spinner
    const B: u32 = 12; // waiter / echo
    const C: u32 = 20; // client (sends datagrams)
    const MS: u64 = 1_000_000;

    fn ev(ts: u64, tid: u32, data: EventData) -> Event {
        Event {
            ts_ns: ts,
            tid,
            tgid: 1,
            cpu: 0,
            data,
        }
    }
    fn wait(ts: u64, tid: u32) -> Event {
        let call = FutexCall {
            class: SyscallClass::Futex,
            uaddr: L,
            op: 137,
            val: 0,
            uaddr2: 0,
            val3: !0,
            has_timeout: true,
        };
        ev(ts, tid, EventData::FutexEnter(call))
    }
    fn wake(ts: u64, tid: u32) -> Event {
        let call = FutexCall {
            class: SyscallClass::Futex,
            uaddr: L,
            op: 129,
            val: 1,
            uaddr2: 0,
            val3: 0,
            has_timeout: false,
        };
        ev(ts, tid, EventData::FutexEnter(call))
    }
    fn exit(ts: u64, tid: u32, ret: i64) -> Event {
        ev(
            ts,
            tid,
            EventData::FutexExit {
                class: SyscallClass::Futex,
                ret,
            },
        )
    }
    fn switch(ts: u64, prev: u32, next: u32, state: u64) -> Event {
        ev(
            ts,
            prev,
            EventData::Switch {
                next_tid: next,
                prev_state: state,
                next_prio: 120,
                prev_traced: prev != 0,
                next_traced: next != 0,
            },
        )
    }
    fn waking(ts: u64, waker: u32, wakee: u32) -> Event {
        ev(
            ts,
            waker,
            EventData::Waking {
                wakee,
                target_cpu: 0,
            },
        )
    }

    fn run(events: Vec<Event>, detail: bool) -> Report {
        let meta = TraceMeta::default();
        let trailer = TraceTrailer::default();
        let opts = ReportOptions {
            convoy_threshold_ns: MS,
            detail,
            ..Default::default()
        };
        let open = |_| {
            Ok(crate::trace::sort::SortedEvents::new(
                events.clone().into_iter().map(Ok),
            ))
        };
        analyze(&meta, &trailer, open, opts, |_| {}).unwrap()
    }

    #[test]
    fn handoff_after_a_timeout_and_a_failed_wakeup() {
        let events = vec![
            wait(0, B),
            switch(10, B, 0, 1),
            waking(5 * MS, 0, B), // the timer
            switch(5 * MS + 10, 0, B, 0),
            exit(5 * MS + 20, B, ETIMEDOUT),
            wait(5 * MS + 30, B),
            switch(5 * MS + 40, B, 0, 1),
            wake(6 * MS, A),
            waking(6 * MS + 1_000, A, B),
            exit(6 * MS + 2_000, A, 1),
            switch(6 * MS + 20_000, 0, B, 0),
            exit(6 * MS + 21_000, B, 0),
            wait(6 * MS + 22_000, B), // A took it back: a failed wakeup
            switch(6 * MS + 23_000, B, 0, 1),
            wake(8 * MS, A),
            waking(8 * MS + 1_000, A, B),
            exit(8 * MS + 2_000, A, 1),
            switch(8 * MS + 10_000, 0, B, 0),
            exit(8 * MS + 12_000, B, 0),
            wake(9 * MS, B), // B releases: it held the lock
            exit(9 * MS + 1_000, B, 0),
        ];
        let r = run(events, true);
        assert_eq!(r.locks.len(), 1);
        let h = &r.handoffs[0];
        assert_eq!(
            (h.acquisitions, h.handoffs, h.failed_wakeups, h.timeouts),
            (1, 1, 1, 1)
        );
        assert_eq!(h.matrix[&A][&B], 1);
        let e = &r.handoff_events.as_ref().unwrap()[0];
        assert_eq!(
            (e.kind, e.from_tid, e.to_tid),
            (HandoffKind::Wake, Some(A), B)
        );
        assert_eq!(e.release_ns, Some(8 * MS));
        assert_eq!(e.wake_ns, Some(8 * MS + 1_000));
        assert_eq!(e.run_ns, Some(8 * MS + 10_000));
        assert_eq!(e.acquire_ns, 8 * MS + 12_000);
        assert_eq!(e.wait_start_ns, 0);
        assert_eq!(h.release_to_wake.max_ns, 1_000);
    }

    /// One echo round trip at `t`: the datagram arrives, the echo thread wakes, returns from
    /// recv, waits `lock_wait` for the lock (released by A), then replies.
    fn echo_round(t: u64, lock_wait: u64, out: &mut Vec<Event>) {
        out.push(ev(
            t,
            B,
            EventData::IoEnter {
                class: IoClass::Recv,
                nr: 45,
                fd: 3,
                len: 65507,
            },
        ));
        out.push(switch(t + 1_000, B, A, 1));
        out.push(waking(t + 10_000, C, B));
        out.push(switch(t + 12_000, A, B, 0));
        out.push(ev(
            t + 14_000,
            B,
            EventData::NetRecv {
                arrival_ns: Some(t + 9_000),
                sock: 7,
                len: 512,
                queued: 0,
            },
        ));
        out.push(ev(
            t + 15_000,
            B,
            EventData::IoExit {
                class: IoClass::Recv,
                nr: 45,
                ret: 512,
            },
        ));
        let mut at = t + 16_000;
        if lock_wait > 0 {
            out.push(wait(at, B));
            out.push(switch(at + 500, B, A, 1)); // A runs (holds the lock) meanwhile
            out.push(wake(at + lock_wait - 3_000, A));
            out.push(waking(at + lock_wait - 2_000, A, B));
            out.push(exit(at + lock_wait - 1_000, A, 1));
            out.push(switch(at + lock_wait - 500, A, B, 0));
            out.push(exit(at + lock_wait, B, 0));
            at += lock_wait;
        }
        out.push(ev(
            at + 5_000,
            B,
            EventData::IoEnter {
                class: IoClass::Send,
                nr: 44,
                fd: 3,
                len: 512,
            },
        ));
        out.push(ev(
            at + 8_000,
            B,
            EventData::IoExit {
                class: IoClass::Send,
                nr: 44,
                ret: 512,
            },
        ));
    }

    fn lock_users(out: &mut Vec<Event>) {
        // Make L a lock shared by A and B even when the rounds do not contend.
        out.push(wait(1, A));
        out.push(exit(2, A, 0));
        out.push(wait(3, B));
        out.push(exit(4, B, 0));
    }

    #[test]
    fn io_stalls_decompose_and_consecutive_long_lock_waits_form_a_convoy() {
        let mut events = Vec::new();
        lock_users(&mut events);
        for i in 0..3 {
            echo_round(MS + i * 10 * MS, 5 * MS, &mut events);
        }
        echo_round(40 * MS, 0, &mut events);
        let r = run(events, true);
        let ops = r.io_ops.as_ref().unwrap();
        assert_eq!(ops.len(), 4);
        let op = &ops[0];
        assert_eq!(op.arrival_ns, Some(MS + 9_000));
        assert_eq!(op.woken_ns, Some(MS + 10_000));
        assert_eq!(op.run_ns, Some(MS + 12_000));
        assert_eq!(op.recv_exit_ns, MS + 15_000);
        assert_eq!(op.lock_wait_ns, 5 * MS + 1_000);
        assert_eq!(op.reply_ns, Some(op.lock_acquired_ns + 5_000));
        assert_eq!(op.components()[1..], [1_000, 2_000, 5 * MS + 1_000, 5_000]);
        assert_eq!(
            ops[3].lock_wait_ns, 0,
            "no wait: took the lock as recv returned"
        );
        assert_eq!(r.io_stalls.datagrams, 4);

        assert_eq!(r.convoys.len(), 1, "{:?}", r.convoys);
        let c = &r.convoys[0];
        assert_eq!((c.tid, c.ops), (B, 3));
        assert_eq!(c.lock_wait_ns, 3 * (5 * MS + 1_000));
        assert_eq!(
            c.holders.first().map(|h| h.0),
            Some(A),
            "A ran while B waited"
        );
        assert!(c.lost_share > 0.2 && c.lost_share <= 1.0);
        assert!(
            r.verdicts[0].text.contains("lost"),
            "{}",
            r.verdicts[0].text
        );
    }

    #[test]
    fn no_competitor_means_no_convoy() {
        let mut events = Vec::new();
        for i in 0..20 {
            echo_round(MS + i * MS, 0, &mut events);
        }
        let r = run(events, false);
        assert_eq!(r.io_stalls.datagrams, 20);
        assert!(r.convoys.is_empty());
        assert_eq!(r.io_stalls.lock_wait.max_ns, 0);
    }
}
