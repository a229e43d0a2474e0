//! The life of each received datagram: arrival on its socket → receiver woken → recv returns
//! → lock re-acquired → reply sent; and the stall it suffered, by cause.
use std::{
    collections::BTreeMap,
    ops::{Index, IndexMut},
};

use rustc_hash::FxHashMap;
use serde::{ser::SerializeMap, Serialize};

use super::HolderSpan;
use crate::analysis::histogram::{Distribution, Histogram};

/// What a datagram's stall is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StallCause {
    /// It arrived before the receiver called recv (the receiver was busy).
    Queue,
    /// The receiver blocked in recv, not yet woken.
    Wakeup,
    /// Woken, waiting for a CPU.
    Runnable,
    /// recv returned; the receiver waited for the lock.
    LockWait,
    /// The receiver held the lock and worked until its reply.
    Work,
}

impl StallCause {
    pub const ALL: [StallCause; 5] = [
        StallCause::Queue,
        StallCause::Wakeup,
        StallCause::Runnable,
        StallCause::LockWait,
        StallCause::Work,
    ];

    /// Stable name, used in reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            StallCause::Queue => "queue",
            StallCause::Wakeup => "wakeup",
            StallCause::Runnable => "runnable",
            StallCause::LockWait => "lock_wait",
            StallCause::Work => "work",
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
    /// The stall's time by cause, ns.
    pub fn components(&self) -> PerCause<u64> {
        let arrival = self.arrival_ns.unwrap_or(self.recv_enter_ns);
        let mut parts = PerCause::default();
        parts[StallCause::Queue] = self.recv_enter_ns.saturating_sub(arrival);
        if let (Some(w), Some(r)) = (self.woken_ns, self.run_ns) {
            parts[StallCause::Wakeup] = w.saturating_sub(arrival.max(self.recv_enter_ns));
            parts[StallCause::Runnable] = r.saturating_sub(w);
        }
        parts[StallCause::LockWait] = self.lock_wait_ns;
        parts[StallCause::Work] = self
            .reply_ns
            .map_or(0, |r| r.saturating_sub(self.lock_acquired_ns));
        parts
    }

    /// Arrival (or recv entry) to reply (or lock acquired).
    pub fn stall_ns(&self) -> u64 {
        let start = self.arrival_ns.unwrap_or(self.recv_enter_ns);
        self.reply_ns
            .unwrap_or(self.lock_acquired_ns)
            .saturating_sub(start)
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
    pub stall: Distribution,
    /// Each cause's distribution over the datagrams.
    #[serde(flatten)]
    pub causes: PerCause<Distribution>,
    /// Share of the total stall time in each cause.
    pub share: BTreeMap<String, f64>,
}

/// Running totals over the recorded datagrams.
#[derive(Default)]
pub(super) struct DatagramStats {
    datagrams: u64,
    with_arrival: u64,
    stall: Histogram,
    causes: PerCause<Histogram>,
}

impl DatagramStats {
    pub fn record(&mut self, op: &IoOp) {
        self.datagrams += 1;
        self.with_arrival += u64::from(op.arrival_ns.is_some());
        self.stall.record(op.stall_ns());
        let parts = op.components();
        for cause in StallCause::ALL {
            self.causes[cause].record(parts[cause]);
        }
    }

    /// The summary, and each cause's full distribution (for charts).
    pub fn finish(&self) -> (IoStallSummary, PerCause<Histogram>) {
        let total: u64 = self.causes.iter().map(|(_, h)| h.sum()).sum();
        let share = self
            .causes
            .iter()
            .map(|(cause, h)| {
                let share = if total == 0 {
                    0.0
                } else {
                    h.sum() as f64 / total as f64
                };
                (cause.name().to_string(), share)
            })
            .collect();
        let summary = IoStallSummary {
            datagrams: self.datagrams,
            with_arrival: self.with_arrival,
            stall: self.stall.summary(),
            causes: self.causes.map(Histogram::summary),
            share,
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
    /// Run spans of other lock users while this thread waits for the lock after I/O.
    pub holder_spans: Vec<HolderSpan>,
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
    pub fn dequeued(&mut self, tid: u32, ts: u64, arrival_ns: Option<u64>, len: u32) {
        let recv_enter = self.in_recv.unwrap_or(ts);
        let (woken, run) = match self.recv_wake {
            Some(w) if arrival_ns.is_none_or(|a| a <= w.woken_ns) => (Some(w.woken_ns), w.run_ns),
            _ => (None, None),
        };
        self.ops.push(IoOp {
            tid,
            bytes: len,
            arrival_ns,
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
                op.lock_wait_ns = acquire_ns - op.recv_exit_ns;
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
                self.holder_spans.clear();
            }
        }
    }

    /// The datagrams of the last recv are complete: hands them over (those whose recv returned
    /// in the trace), with their lock's holders during their wait.
    pub fn take_complete(&mut self) -> Vec<IoOp> {
        if self.ops.is_empty() {
            self.state = OpsState::None;
            return Vec::new();
        }
        let mut ops = std::mem::take(&mut self.ops);
        let spans = std::mem::take(&mut self.holder_spans);
        self.state = OpsState::None;
        ops.retain(|op| op.recv_exit_ns != 0);
        for op in &mut ops {
            if op.lock_acquired_ns == 0 {
                op.lock_acquired_ns = op.recv_exit_ns;
            }
            let (a, b) = (op.recv_exit_ns, op.lock_acquired_ns);
            let mut holders: FxHashMap<u32, u64> = FxHashMap::default();
            for span in &spans {
                let overlap = span.end_ns.min(b).saturating_sub(span.start_ns.max(a));
                if overlap > 0 {
                    *holders.entry(span.tid).or_default() += overlap;
                }
            }
            let mut holders: Vec<(u32, u64)> = holders.into_iter().collect();
            holders.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            op.holders = holders;
        }
        ops
    }
}
