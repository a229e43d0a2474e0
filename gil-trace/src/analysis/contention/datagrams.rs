//! The life of each received datagram: arrival on its socket → receiver woken → recv returns
//! → lock re-acquired → reply sent; and the stall it suffered, by what its receiver was doing
//! (attributed from the receiver's history, `history.rs`).
use std::ops::{Index, IndexMut};

use serde::{ser::SerializeMap, Serialize};

use super::LockRef;
use crate::analysis::histogram::{Distribution, Histogram};

/// What a datagram's receiver was doing while the datagram waited for it, from its arrival to
/// the receiver's reply: every nanosecond of the stall has one cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StallCause {
    /// In a lock take: from its first wait on the lock to its acquisition (blocked, woken but
    /// waiting for a CPU, or re-checking) — whether after this datagram's recv or after the
    /// previous reply's send.
    LockWait,
    /// Ready to run, waiting for a CPU (outside a lock take).
    Runnable,
    /// On a CPU, running its own code (outside a lock take).
    Running,
    /// Blocked in recv/poll while the datagram was already queued: waiting to be woken.
    Wakeup,
    /// Blocked in other I/O (after the datagram was taken, or in a send).
    IoWait,
    /// Blocked otherwise (sleep, a futex that is no identified lock, page faults, ...).
    Sleep,
    /// Before the oldest history kept for the receiver (the datagram waited longer than
    /// that in its socket).
    Unknown,
}

impl StallCause {
    pub const ALL: [StallCause; 7] = [
        StallCause::LockWait,
        StallCause::Runnable,
        StallCause::Running,
        StallCause::Wakeup,
        StallCause::IoWait,
        StallCause::Sleep,
        StallCause::Unknown,
    ];

    /// Stable name, used in reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            StallCause::LockWait => "lock_wait",
            StallCause::Runnable => "runnable",
            StallCause::Running => "running",
            StallCause::Wakeup => "wakeup",
            StallCause::IoWait => "io_wait",
            StallCause::Sleep => "sleep",
            StallCause::Unknown => "unknown",
        }
    }
}

/// One value per [`StallCause`], indexed by it; serialized as a map from the causes' names,
/// in [`StallCause::ALL`] order, so labels and values cannot drift apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerCause<T>([T; StallCause::ALL.len()]);

impl<T> PerCause<T> {
    pub fn from_fn(mut f: impl FnMut(StallCause) -> T) -> Self {
        PerCause(StallCause::ALL.map(&mut f))
    }

    /// (cause, value) in [`StallCause::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (StallCause, &T)> {
        StallCause::ALL.into_iter().zip(&self.0)
    }

    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> PerCause<U> {
        PerCause::from_fn(|cause| f(&self[cause]))
    }
}

impl<T> Index<StallCause> for PerCause<T> {
    type Output = T;
    fn index(&self, cause: StallCause) -> &T {
        &self.0[cause as usize]
    }
}

impl<T> IndexMut<StallCause> for PerCause<T> {
    fn index_mut(&mut self, cause: StallCause) -> &mut T {
        &mut self.0[cause as usize]
    }
}

impl<T: Serialize> Serialize for PerCause<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (cause, value) in self.iter() {
            map.serialize_entry(cause.name(), value)?;
        }
        map.end()
    }
}

/// One datagram received by a traced thread (`io_ops` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoOp {
    pub tid: u32,
    pub bytes: u32,
    /// Queued on the socket (sock:sk_data_ready).
    pub arrival_ns: Option<u64>,
    /// The arrival time was not kept: more datagrams were queued on the socket than the
    /// recorder remembers arrivals for.
    pub arrival_lost: bool,
    pub recv_enter_ns: u64,
    /// The receiver woken while blocked in recv (None: it did not block).
    pub woken_ns: Option<u64>,
    /// Back on a CPU after that wakeup.
    pub run_ns: Option<u64>,
    /// Taken off the socket by the receiver (sock:sock_recv_length).
    pub dequeue_ns: u64,
    pub recv_exit_ns: u64,
    /// Back in user space after recv: its exit, or later if switched out on the way.
    pub recv_resumed_ns: Option<u64>,
    /// The receiver held the primary lock again after recv (its exit, if it did not wait).
    pub lock_acquired_ns: u64,
    /// The reply's send syscall entry and exit (None: no send before the next recv).
    pub reply_ns: Option<u64>,
    pub reply_done_ns: Option<u64>,
    /// When the thread was back in user space after the reply: the send's exit, or later if
    /// it was switched out on the way (the woken peer often preempts it).
    pub reply_resumed_ns: Option<u64>,
    /// Arrival (or recv entry) to reply (or the lock held again after recv).
    pub stall_ns: u64,
    /// All of the receiver's lock wait in the stall (= `causes.lock_wait`).
    pub lock_wait_ns: u64,
    /// The stall by what the receiver was doing; the causes sum to `stall_ns`.
    pub causes: PerCause<u64>,
    /// Lock users that ran while the receiver waited for the lock in the stall, most time
    /// first: (tid, ns).
    pub holders: Vec<(u32, u64)>,
    /// The lock it waited for longest in the stall.
    pub lock: Option<LockRef>,
}

impl IoOp {
    /// Where the stall starts: the arrival, or the recv's entry when the arrival is unknown.
    pub fn stall_start_ns(&self) -> u64 {
        self.arrival_ns.unwrap_or(self.recv_enter_ns)
    }

    /// Where the stall ends: the reply's send, or the lock held again after recv.
    pub fn stall_end_ns(&self) -> u64 {
        self.reply_ns.unwrap_or(self.lock_acquired_ns)
    }

    /// When the datagram counts as received, for windows: its arrival, else its recv's return.
    pub fn seen_ns(&self) -> u64 {
        self.arrival_ns.unwrap_or(self.recv_exit_ns)
    }
}

/// Summary over all datagrams (`io_stalls` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoStallSummary {
    pub datagrams: u64,
    pub with_arrival: u64,
    /// Datagrams whose arrival time was lost (too many queued on their socket at once).
    pub arrival_lost: u64,
    pub stall: Distribution,
    /// Each cause's distribution over the datagrams.
    pub causes: PerCause<Distribution>,
    /// Share of all stall time in each cause.
    pub share: PerCause<f64>,
    /// The same per receiving thread (by tid): an I/O thread's stalls and its peer's differ.
    pub by_thread: Vec<ThreadStalls>,
}

/// One receiving thread's stalls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThreadStalls {
    pub tid: u32,
    pub datagrams: u64,
    pub stall: Distribution,
    /// Share of its stall time in each cause.
    pub share: PerCause<f64>,
}

/// Per receiving thread: its stalls' distribution and each cause's total.
#[derive(Default)]
struct ThreadAcc {
    stall: Histogram,
    causes: PerCause<u64>,
}

/// Running totals over the recorded datagrams.
#[derive(Default)]
pub(super) struct DatagramStats {
    datagrams: u64,
    with_arrival: u64,
    arrival_lost: u64,
    stall: Histogram,
    causes: PerCause<Histogram>,
    by_thread: rustc_hash::FxHashMap<u32, ThreadAcc>,
}

/// Each cause's share of the causes' total (0 when there is none).
fn shares(totals: &PerCause<u64>) -> PerCause<f64> {
    let total: u64 = totals.iter().map(|(_, &v)| v).sum();
    totals.map(|&v| {
        if total == 0 {
            0.0
        } else {
            v as f64 / total as f64
        }
    })
}

impl DatagramStats {
    pub fn record(&mut self, op: &IoOp) {
        self.datagrams += 1;
        self.with_arrival += u64::from(op.arrival_ns.is_some());
        self.arrival_lost += u64::from(op.arrival_lost);
        self.stall.record(op.stall_ns);
        let thread = self.by_thread.entry(op.tid).or_default();
        thread.stall.record(op.stall_ns);
        for (cause, &ns) in op.causes.iter() {
            self.causes[cause].record(ns);
            thread.causes[cause] += ns;
        }
    }

    /// The summary, and each cause's full distribution (for charts).
    pub fn finish(&self) -> (IoStallSummary, PerCause<Histogram>) {
        let share = shares(&self.causes.map(Histogram::sum));
        let mut by_thread: Vec<ThreadStalls> = self
            .by_thread
            .iter()
            .map(|(&tid, acc)| ThreadStalls {
                tid,
                datagrams: acc.stall.count(),
                stall: acc.stall.summary(),
                share: shares(&acc.causes),
            })
            .collect();
        by_thread.sort_by_key(|t| t.tid);
        let summary = IoStallSummary {
            datagrams: self.datagrams,
            with_arrival: self.with_arrival,
            arrival_lost: self.arrival_lost,
            stall: self.stall.summary(),
            causes: self.causes.map(Histogram::summary),
            share,
            by_thread,
        };
        (summary, self.causes.clone())
    }
}

/// Where a thread's latest datagrams stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum OpsState {
    #[default]
    None,
    InRecv,
    AwaitLock,
    AwaitReply,
    InReply,
    /// The reply syscall returned; waiting to see the thread resume user code.
    AwaitResume,
}

/// The receiver was woken while blocked in recv.
#[derive(Clone, Copy, Debug)]
pub(super) struct RecvWake {
    pub woken_ns: u64,
    /// Back on a CPU after it.
    pub run_ns: Option<u64>,
}

/// Per-thread I/O state: the syscall it is in and the datagrams of its current or last recv.
#[derive(Default)]
pub(super) struct ThreadIo {
    /// In a recv/poll syscall since.
    pub in_recv: Option<u64>,
    pub in_send: bool,
    /// Datagrams of the current or last recv waiting for the lock / a reply.
    pub ops: Vec<IoOp>,
    pub state: OpsState,
    pub recv_wake: Option<RecvWake>,
    /// recv returned datagrams; watching for the thread to resume user code.
    pub recv_resume_pending: bool,
}

impl ThreadIo {
    /// The thread runs user code again (an event it is the running subject of, or a switch
    /// to it at `ts`): stamps the recv's and the reply's resumption. True when the reply is
    /// complete, so the datagrams can be recorded.
    #[inline(always)]
    pub fn resumed(&mut self, at: Option<u64>) -> bool {
        if self.recv_resume_pending {
            self.recv_resume_pending = false;
            for op in &mut self.ops {
                op.recv_resumed_ns
                    .get_or_insert(at.unwrap_or(op.recv_exit_ns));
            }
        }
        if self.state != OpsState::AwaitResume {
            return false;
        }
        for op in &mut self.ops {
            // Ran on without being switched out: back in user space right at the exit.
            op.reply_resumed_ns = at.or(op.reply_done_ns);
        }
        true
    }

    /// A datagram dequeued by a recv (`tid` at `ts`).
    pub fn dequeued(
        &mut self,
        tid: u32,
        ts: u64,
        arrival_ns: Option<u64>,
        arrival_lost: bool,
        len: u32,
    ) {
        let recv_enter = self.in_recv.unwrap_or(ts);
        let (woken, run) = match self.recv_wake {
            Some(w) if arrival_ns.is_none_or(|a| a <= w.woken_ns) => (Some(w.woken_ns), w.run_ns),
            _ => (None, None),
        };
        self.ops.push(IoOp {
            tid,
            bytes: len,
            arrival_ns,
            arrival_lost,
            dequeue_ns: ts,
            recv_enter_ns: recv_enter,
            woken_ns: woken,
            run_ns: run,
            ..Default::default()
        });
    }

    /// The thread acquired the primary lock at `acquire_ns`: datagrams waiting for it got it.
    pub fn lock_acquired(&mut self, acquire_ns: u64) {
        if self.state != OpsState::AwaitLock {
            return;
        }
        for op in &mut self.ops {
            if op.lock_acquired_ns == 0 && acquire_ns >= op.recv_exit_ns {
                op.lock_acquired_ns = acquire_ns;
            }
        }
        if self.ops.iter().all(|o| o.lock_acquired_ns != 0) {
            self.state = OpsState::AwaitReply;
        }
    }

    /// Entering an I/O syscall: a datagram still waiting for the lock took it uncontended
    /// when recv returned (no lock wait since), and a send is the reply.
    pub fn enter_send_or_lock_free(&mut self, is_send: bool, ts: u64) {
        if self.state == OpsState::AwaitLock {
            for op in &mut self.ops {
                if op.lock_acquired_ns == 0 {
                    op.lock_acquired_ns = op.recv_exit_ns;
                }
            }
            self.state = OpsState::AwaitReply;
        }
        if is_send {
            self.in_send = true;
            if self.state == OpsState::AwaitReply {
                for op in &mut self.ops {
                    op.reply_ns = Some(ts);
                }
                self.state = OpsState::InReply;
            }
        }
    }

    /// A recv (or poll) syscall begins at `ts` (after the previous datagrams were recorded).
    pub fn enter_recv(&mut self, is_recv: bool, ts: u64) {
        if is_recv {
            self.state = OpsState::InRecv;
        }
        self.in_recv = Some(ts);
        self.recv_wake = None;
    }

    pub fn exit_send(&mut self, ts: u64) {
        self.in_send = false;
        if self.state == OpsState::InReply {
            for op in &mut self.ops {
                op.reply_done_ns = Some(ts);
            }
            self.state = OpsState::AwaitResume;
        }
    }

    pub fn exit_recv(&mut self, is_recv: bool, ts: u64) {
        self.in_recv = None;
        if is_recv && self.state == OpsState::InRecv {
            if self.ops.is_empty() {
                self.state = OpsState::None;
            } else {
                for op in &mut self.ops {
                    op.recv_exit_ns = ts;
                }
                self.recv_resume_pending = true;
                self.state = OpsState::AwaitLock;
            }
        }
    }

    /// The datagrams of the last recv are complete: hands them over (those whose recv returned
    /// in the trace), their stall still to be attributed.
    pub fn take_complete(&mut self) -> Vec<IoOp> {
        self.state = OpsState::None;
        let mut ops = std::mem::take(&mut self.ops);
        ops.retain(|op| op.recv_exit_ns != 0);
        for op in &mut ops {
            if op.lock_acquired_ns == 0 {
                op.lock_acquired_ns = op.recv_exit_ns;
            }
            op.stall_ns = op.stall_end_ns().saturating_sub(op.stall_start_ns());
        }
        ops
    }
}
