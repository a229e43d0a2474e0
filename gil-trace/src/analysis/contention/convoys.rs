//! Convoy episodes. An interpreter releases its lock around every blocking call, so each I/O
//! operation — recv, send, poll — is followed by a re-acquisition; in a convoy the I/O thread
//! loses those to CPU-bound holders, and every datagram it serves waits for the lock: after
//! its recv, and (arriving early) after the previous reply's send. An episode is a run of
//! consecutive datagrams of one thread whose stall held a re-acquisition longer than the
//! threshold (one take, not the sum of many short ones: behind a queue, a datagram's stall
//! spans the re-acquisitions made for the datagrams before it, however quickly each is won);
//! it reports all the thread's lock wait in that time and every re-acquisition after I/O in it.
use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{
    datagrams::{IoOp, StallCause},
    history::{sorted_holders, Attribution},
    stacks::{StackKey, StackTally},
    LockRef,
};
use crate::trace::IoClass;

/// Default `--convoy-threshold`: a datagram whose stall holds one lock take (a re-acquisition,
/// from its first wait to the lock held) longer than this is convoyed.
pub const DEFAULT_CONVOY_THRESHOLD_NS: u64 = 1_000_000;
/// Consecutive convoyed datagrams needed for an episode.
pub const CONVOY_MIN_OPS: usize = 2;

/// A run of convoyed datagrams (`convoys` in JSON).
#[derive(Clone, Debug, Serialize)]
pub struct ConvoyEpisode {
    pub tid: u32,
    /// The first datagram's arrival (or recv, when its arrival is unknown), or the thread's
    /// previous reply if later (what came before was spent on the datagrams ahead of it).
    pub start_ns: u64,
    /// The last datagram's reply (or the lock held again after its recv).
    pub end_ns: u64,
    /// Datagrams in the episode.
    pub ops: u64,
    /// The thread's lock wait in the episode.
    pub lock_wait_ns: u64,
    /// Share of the episode the thread spent waiting for the lock.
    pub lost_share: f64,
    /// Re-acquisitions of the lock after I/O in the episode that had to wait, by the I/O
    /// they followed.
    pub waits_after_recv: u64,
    pub waits_after_send: u64,
    pub waits_after_poll: u64,
    /// Threads that ran while it waited, most time first: (tid, ns).
    pub holders: Vec<(u32, u64)>,
    /// The stack it waited in for most of its lock wait (when stacks were recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_stack: Option<StackKey>,
    /// Per holder (most wait first), the stack it handed the lock over in most: (tid, stack).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holder_stacks: Vec<(u32, StackKey)>,
    /// Its most sampled Python stack in the episode, and how many samples say so (Python
    /// programs, sampled: what ran around those moments, not at each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub py_wait_stack: Option<Sampled>,
    /// Per thread that held the GIL in the episode (most samples first), its most sampled
    /// Python stack.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub py_holder_stacks: Vec<Sampled>,
    pub lock: Option<LockRef>,
    /// Overlaps a span where the kernel dropped events: numbers may be off.
    pub incomplete: bool,
}

/// A Python stack, and the samples behind it (of how many of that thread in the span).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sampled {
    pub tid: u32,
    pub stack: StackKey,
    pub samples: u64,
    pub of: u64,
}

/// One thread's lock waits around its I/O, over the whole trace (`io_lock_waits` in JSON).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoLockWaits {
    pub tid: u32,
    /// I/O syscalls that returned.
    pub io_ops: u64,
    /// Of those, followed by a wait for the primary lock before the thread's next I/O.
    pub waited: u64,
    /// Of those, waits longer than the convoy threshold.
    pub over_threshold: u64,
    /// Time from those operations' exits to the lock held again, summed.
    pub lock_wait_ns: u64,
}

/// An I/O operation that returned, its re-acquisition not seen yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct AfterIo {
    pub class: IoClass,
    pub exit_ns: u64,
}

/// An episode still growing on one thread.
pub(super) struct OpenConvoy {
    start_ns: u64,
    end_ns: u64,
    ops: u64,
    lock_wait_ns: u64,
    waits_after: [u64; 3],
    holders: FxHashMap<u32, u64>,
    wait_stacks: StackTally,
    holder_stacks: StackTally,
    py_own: StackTally,
    py_holders: StackTally,
}

/// A thread's re-acquisitions after I/O that waited, not yet counted into an episode.
#[derive(Default)]
pub(super) struct RecentWaits(VecDeque<(u64, IoClass)>);

/// Finds the episodes, and each thread's lock waits around I/O.
pub(super) struct Convoys {
    threshold_ns: u64,
    episodes: Vec<ConvoyEpisode>,
    per_thread: FxHashMap<u32, IoLockWaits>,
}

impl Convoys {
    pub fn new(threshold_ns: u64) -> Self {
        Convoys {
            threshold_ns,
            episodes: Vec::new(),
            per_thread: FxHashMap::default(),
        }
    }

    /// `tid`'s I/O operation `io` was followed by the lock held again at `acquire_ns` (None:
    /// without a wait before its next I/O).
    pub fn reacquired(
        &mut self,
        tid: u32,
        recent: &mut RecentWaits,
        io: AfterIo,
        acquire_ns: Option<u64>,
    ) {
        let totals = self.per_thread.entry(tid).or_insert_with(|| IoLockWaits {
            tid,
            ..Default::default()
        });
        totals.io_ops += 1;
        let Some(acquire_ns) = acquire_ns.filter(|&a| a > io.exit_ns) else {
            return;
        };
        let wait = acquire_ns - io.exit_ns;
        totals.waited += 1;
        totals.lock_wait_ns += wait;
        totals.over_threshold += u64::from(wait > self.threshold_ns);
        recent.0.push_back((acquire_ns, io.class));
        // Bounded: a thread that never completes a datagram keeps only the latest.
        if recent.0.len() > 4096 {
            recent.0.pop_front();
        }
    }

    /// `tid`'s next datagram, with where the thread's time went from the open episode's end
    /// (see [`Self::open_until`]; else the datagram's arrival) to the datagram's reply
    /// (`new_part`, from where it starts, when a re-acquisition of its own was over the
    /// threshold): extends the episode, or (None) closes it. The episode is contiguous: the
    /// thread's time between two datagrams, e.g. its wait for the lock after a reply's send,
    /// is in it.
    pub fn datagram(
        &mut self,
        tid: u32,
        open: &mut Option<OpenConvoy>,
        recent: &mut RecentWaits,
        op: &IoOp,
        new_part: Option<(u64, &Attribution)>,
        lock: Option<&LockRef>,
    ) {
        let end = op.stall_end_ns();
        let Some((from, new_part)) = new_part else {
            self.close(tid, open, lock);
            while recent.0.front().is_some_and(|&(at, _)| at <= end) {
                recent.0.pop_front();
            }
            return;
        };
        let c = open.get_or_insert_with(|| OpenConvoy {
            start_ns: from,
            end_ns: from,
            ops: 0,
            lock_wait_ns: 0,
            waits_after: [0; 3],
            holders: FxHashMap::default(),
            wait_stacks: StackTally::default(),
            holder_stacks: StackTally::default(),
            py_own: StackTally::default(),
            py_holders: StackTally::default(),
        });
        c.wait_stacks.merge(&new_part.wait_stacks);
        c.holder_stacks.merge(&new_part.holder_stacks);
        c.py_own.merge(&new_part.python.own);
        c.py_holders.merge(&new_part.python.holders);
        c.ops += 1;
        c.lock_wait_ns += new_part.causes[StallCause::LockWait];
        for &(h, ns) in &new_part.holders {
            *c.holders.entry(h).or_default() += ns;
        }
        while let Some(&(at, class)) = recent.0.front() {
            if at > end {
                break;
            }
            if at > c.start_ns {
                c.waits_after[class as usize] += 1;
            }
            recent.0.pop_front();
        }
        c.end_ns = c.end_ns.max(end);
    }

    /// Where the open episode of a thread ends so far: a datagram's stall is attributed from
    /// there on (what came before is in the episode already).
    pub fn open_until(open: Option<&OpenConvoy>) -> Option<u64> {
        open.map(|c| c.end_ns)
    }

    /// Ends `tid`'s open episode, kept if long enough.
    pub fn close(&mut self, tid: u32, open: &mut Option<OpenConvoy>, lock: Option<&LockRef>) {
        let Some(c) = open.take() else {
            return;
        };
        if (c.ops as usize) < CONVOY_MIN_OPS {
            return;
        }
        self.episodes.push(ConvoyEpisode {
            tid,
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            ops: c.ops,
            lock_wait_ns: c.lock_wait_ns,
            lost_share: (c.lock_wait_ns as f64 / c.end_ns.saturating_sub(c.start_ns).max(1) as f64)
                .min(1.0),
            waits_after_recv: c.waits_after[IoClass::Recv as usize],
            waits_after_send: c.waits_after[IoClass::Send as usize],
            waits_after_poll: c.waits_after[IoClass::Poll as usize],
            holders: sorted_holders(c.holders),
            wait_stack: c.wait_stacks.top(1).first().map(|s| s.stack),
            holder_stacks: top_stack_per_thread(&c.holder_stacks),
            py_wait_stack: sampled(tid, &c.py_own).into_iter().next(),
            py_holder_stacks: sampled_per_thread(&c.py_holders),
            lock: lock.cloned(),
            incomplete: false,
        });
    }

    /// Every episode, worst (most lock wait) first; and per thread (by tid) its lock waits
    /// around I/O, for threads that did I/O.
    pub fn finish(mut self) -> (Vec<ConvoyEpisode>, Vec<IoLockWaits>) {
        self.episodes.sort_by(|a, b| {
            b.lock_wait_ns
                .cmp(&a.lock_wait_ns)
                .then(a.start_ns.cmp(&b.start_ns))
        });
        let mut per_thread: Vec<IoLockWaits> = self.per_thread.into_values().collect();
        per_thread.sort_by_key(|t| t.tid);
        (self.episodes, per_thread)
    }
}

/// Each thread's stack with the most time, threads by that time (most first).
fn top_stack_per_thread(tally: &StackTally) -> Vec<(u32, StackKey)> {
    let mut seen = rustc_hash::FxHashSet::default();
    tally
        .top(usize::MAX)
        .into_iter()
        .filter_map(|s| Some((s.tid?, s.stack)))
        .filter(|&(tid, _)| seen.insert(tid))
        .take(4)
        .collect()
}

/// `tid`'s most sampled stack in a tally of its own samples.
fn sampled(tid: u32, tally: &StackTally) -> Option<Sampled> {
    let all = tally.top(usize::MAX);
    let of = all.iter().map(|s| s.count).sum();
    all.first().map(|s| Sampled {
        tid,
        stack: s.stack,
        samples: s.count,
        of,
    })
}

/// Each thread's most sampled stack, threads by their samples (most first).
fn sampled_per_thread(tally: &StackTally) -> Vec<Sampled> {
    let all = tally.top(usize::MAX);
    let mut out: Vec<Sampled> = Vec::new();
    for s in &all {
        let Some(tid) = s.tid else { continue };
        if out.iter().any(|o| o.tid == tid) {
            continue;
        }
        let of = all
            .iter()
            .filter(|o| o.tid == Some(tid))
            .map(|o| o.count)
            .sum();
        out.push(Sampled {
            tid,
            stack: s.stack,
            samples: s.count,
            of,
        });
    }
    out.sort_by(|a, b| b.of.cmp(&a.of).then(a.tid.cmp(&b.tid)));
    out.truncate(4);
    out
}
