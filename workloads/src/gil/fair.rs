//! Fair GIL: a deadline scheduler with direct handoff, after Nir Aides' BFS-style GIL patch
//! (Python issue 7946, March 2010).
//!
//! What this lab implements (simplified from the patch, same behaviour):
//! - Each thread has a time slice (`slice`, 2 × the switch interval = 10 ms by default). Time
//!   a thread holds the lock is charged to its slice and advances a virtual clock. When the
//!   slice is used up it refills and the thread's deadline becomes `vclock + 8 × slice`.
//! - An acquirer with an earlier deadline than the holder sets `drop_request` (preemption);
//!   otherwise it queues and the holder yields when its slice runs out.
//! - Waiters sleep on their own condvars. Release charges the holder and hands the lock
//!   directly to the waiter with the earliest deadline (FIFO among equal ones): no race.
//! - I/O threads use little of their slice, keep early deadlines, and so preempt CPU-bound
//!   holders at once: the echo server keeps its throughput.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Condvar, Mutex,
    },
    time::Duration,
};

use super::{lock, Gil, ThreadCtx};
use crate::{clock::monotonic_ns, truth::ReleaseReason};

const DEADLINE_SLICES: u64 = 8;

#[derive(Clone, Copy, Default)]
struct PerThread {
    slice_left_ns: u64,
    deadline_ns: u64,
    known: bool,
}

struct Waiter {
    index: usize,
    deadline_ns: u64,
    seq: u64,
}

#[derive(Default)]
struct State {
    locked: bool,
    holder: usize,
    held_since_ns: u64,
    vclock_ns: u64,
    /// Set by release: the lock now belongs to this waiter (direct handoff).
    handoff_to: Option<usize>,
    waiters: Vec<Waiter>,
    seq: u64,
    threads: Vec<PerThread>,
}

pub struct FairGil {
    state: Mutex<State>,
    conds: Vec<Condvar>,
    waiting: AtomicUsize,
    drop_request: AtomicBool,
    slice_ns: u64,
}

impl FairGil {
    pub fn new(slice: Duration, max_threads: usize) -> FairGil {
        let state = State {
            threads: vec![PerThread::default(); max_threads],
            ..Default::default()
        };
        FairGil {
            state: Mutex::new(state),
            conds: (0..max_threads).map(|_| Condvar::new()).collect(),
            waiting: AtomicUsize::new(0),
            drop_request: AtomicBool::new(false),
            slice_ns: slice.as_nanos() as u64,
        }
    }

    fn per_thread<'a>(&self, st: &'a mut State, index: usize) -> &'a mut PerThread {
        let vclock = st.vclock_ns;
        let t = &mut st.threads[index];
        if !t.known {
            *t = PerThread {
                slice_left_ns: self.slice_ns,
                deadline_ns: vclock,
                known: true,
            };
        }
        t
    }

    /// Makes `me` the holder; returns when (ns).
    fn grant(&self, st: &mut State, me: &mut ThreadCtx) -> u64 {
        let now = monotonic_ns();
        st.locked = true;
        st.holder = me.index;
        st.held_since_ns = now;
        me.slice_end_ns = now + self.per_thread(st, me.index).slice_left_ns;
        now
    }
}

impl Gil for FairGil {
    fn take(&self, me: &mut ThreadCtx) {
        let started = monotonic_ns();
        assert!(
            me.index < self.conds.len(),
            "fair GIL sized for {} threads",
            self.conds.len()
        );
        let mut st = lock(&self.state);
        let my_deadline = self.per_thread(&mut st, me.index).deadline_ns;
        if !st.locked && st.handoff_to.is_none() && st.waiters.is_empty() {
            let acquired = self.grant(&mut st, me);
            drop(st);
            me.log_acquire(started, acquired, false);
            return;
        }
        st.seq += 1;
        let seq = st.seq;
        st.waiters.push(Waiter {
            index: me.index,
            deadline_ns: my_deadline,
            seq,
        });
        self.waiting.fetch_add(1, Relaxed);
        if st.locked {
            let holder_deadline = st.threads[st.holder].deadline_ns;
            if my_deadline < holder_deadline && !self.drop_request.swap(true, Relaxed) {
                me.log_drop_request();
            }
        }
        loop {
            if st.handoff_to == Some(me.index) {
                st.handoff_to = None;
                break;
            }
            // Lock free with nobody chosen (e.g. the holder exited): the most urgent waiter takes it.
            if !st.locked && st.handoff_to.is_none() {
                let best = st
                    .waiters
                    .iter()
                    .min_by_key(|w| (w.deadline_ns, w.seq))
                    .map(|w| w.index);
                if best == Some(me.index) {
                    st.waiters.retain(|w| w.index != me.index);
                    break;
                }
            }
            let (guard, _) = self.conds[me.index]
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st = guard;
        }
        self.waiting.fetch_sub(1, Relaxed);
        // drop_request is not cleared here: a waiter that arrived during the handoff may have
        // set it against us, the new holder. Release clears it.
        let acquired = self.grant(&mut st, me);
        drop(st);
        me.log_acquire(started, acquired, true);
    }

    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason) {
        me.log_release(reason);
        let now = monotonic_ns();
        let mut st = lock(&self.state);
        let ran = now.saturating_sub(st.held_since_ns);
        st.vclock_ns += ran;
        let vclock = st.vclock_ns;
        let slice = self.slice_ns;
        let t = self.per_thread(&mut st, me.index);
        t.slice_left_ns = t.slice_left_ns.saturating_sub(ran);
        if t.slice_left_ns == 0 {
            t.slice_left_ns = slice;
            t.deadline_ns = vclock + DEADLINE_SLICES * slice;
        }
        st.locked = false;
        // Whoever asked is among the waiters and the most urgent one gets the lock now.
        self.drop_request.store(false, Relaxed);
        let next = st
            .waiters
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| (w.deadline_ns, w.seq))
            .map(|(i, _)| i);
        if let Some(i) = next {
            let w = st.waiters.swap_remove(i);
            st.handoff_to = Some(w.index);
            // Keep the lock "locked" for the chosen one: nobody else can slip in.
            st.locked = true;
            st.holder = w.index;
            self.conds[w.index].notify_one();
        }
    }

    fn checkpoint(&self, me: &mut ThreadCtx) {
        let forced = self.drop_request.load(Relaxed);
        if forced || (self.waiting.load(Relaxed) > 0 && monotonic_ns() >= me.slice_end_ns) {
            self.release(
                me,
                if forced {
                    ReleaseReason::Forced
                } else {
                    ReleaseReason::Interval
                },
            );
            self.take(me);
        }
    }
}
