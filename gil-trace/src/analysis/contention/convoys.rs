//! Convoy episodes: runs of consecutive I/O operations of one thread that each waited long
//! for the lock afterwards.
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{datagrams::IoOp, LockRef};

/// Default `--convoy-threshold`: lock wait after I/O above which an operation is convoyed.
pub const DEFAULT_CONVOY_THRESHOLD_NS: u64 = 1_000_000;
/// Consecutive convoyed operations needed for an episode.
pub const CONVOY_MIN_OPS: usize = 2;

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
    pub lock: Option<LockRef>,
    /// Overlaps a span where the kernel dropped events: numbers may be off.
    pub incomplete: bool,
}

/// An episode still growing on one thread.
pub(super) struct OpenConvoy {
    start_ns: u64,
    end_ns: u64,
    ops: u64,
    lock_wait_ns: u64,
    holders: FxHashMap<u32, u64>,
}

/// Finds the episodes, one operation at a time per thread.
pub(super) struct Convoys {
    threshold_ns: u64,
    pub episodes: Vec<ConvoyEpisode>,
}

impl Convoys {
    pub fn new(threshold_ns: u64) -> Self {
        Convoys {
            threshold_ns,
            episodes: Vec::new(),
        }
    }

    /// The thread's next recorded operation: extends its open episode, or closes it.
    pub fn observe(&mut self, open: &mut Option<OpenConvoy>, op: &IoOp, lock: Option<LockRef>) {
        if op.lock_wait_ns <= self.threshold_ns {
            self.close(op.tid, open, lock);
            return;
        }
        let c = open.get_or_insert_with(|| OpenConvoy {
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
    }

    /// Ends `tid`'s open episode, kept if long enough.
    pub fn close(&mut self, tid: u32, open: &mut Option<OpenConvoy>, lock: Option<LockRef>) {
        let Some(c) = open.take() else {
            return;
        };
        if (c.ops as usize) < CONVOY_MIN_OPS {
            return;
        }
        let mut holders: Vec<(u32, u64)> = c.holders.into_iter().collect();
        holders.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let window = c.end_ns.saturating_sub(c.start_ns).max(1);
        self.episodes.push(ConvoyEpisode {
            tid,
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            ops: c.ops,
            lock_wait_ns: c.lock_wait_ns,
            lost_share: (c.lock_wait_ns as f64 / window as f64).min(1.0),
            holders,
            lock,
            incomplete: false,
        });
    }

    /// Every episode, worst (most lock wait) first.
    pub fn finish(mut self) -> Vec<ConvoyEpisode> {
        self.episodes.sort_by(|a, b| {
            b.lock_wait_ns
                .cmp(&a.lock_wait_ns)
                .then(a.start_ns.cmp(&b.start_ns))
        });
        self.episodes
    }
}
