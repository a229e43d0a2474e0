//! Priority GIL: David Beazley's 2010 proposal ("Understanding the Python GIL", PyCon 2010;
//! Python issue 7946), on top of the new GIL.
//!
//! Every thread starts high priority (I/O bound). A thread forced off by a drop request
//! becomes low priority (CPU bound); one that releases voluntarily for I/O becomes high again.
//! A high-priority waiter facing a low-priority holder sets `drop_request` at once, with no
//! interval wait; equal priorities keep the interval rule; a release wakes a high-priority
//! waiter when there is one, and low-priority waiters stand back while high ones wait.
//! (Beazley noted a real version must also handle starvation; this one does not.)
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Condvar, Mutex,
    },
    time::Duration,
};

use super::{lock, Gil, ThreadCtx};
use crate::{clock::monotonic_ns, truth::ReleaseReason};

#[derive(Default)]
struct State {
    locked: bool,
    holder_low: bool,
    high_waiters: usize,
}

pub struct PriorityGil {
    state: Mutex<State>,
    high_cond: Condvar,
    low_cond: Condvar,
    switch_mutex: Mutex<()>,
    switch_cond: Condvar,
    last_holder: AtomicUsize,
    switch_number: AtomicU64,
    drop_request: AtomicBool,
    interval: Duration,
}

impl PriorityGil {
    pub fn new(interval: Duration) -> PriorityGil {
        PriorityGil {
            state: Mutex::new(State::default()),
            high_cond: Condvar::new(),
            low_cond: Condvar::new(),
            switch_mutex: Mutex::new(()),
            switch_cond: Condvar::new(),
            last_holder: AtomicUsize::new(0),
            switch_number: AtomicU64::new(0),
            drop_request: AtomicBool::new(false),
            interval,
        }
    }

    fn request_drop(&self, me: &mut ThreadCtx) {
        self.drop_request.store(true, Relaxed);
        me.log_drop_request();
    }
}

impl Gil for PriorityGil {
    fn take(&self, me: &mut ThreadCtx) {
        let started = monotonic_ns();
        let high = !me.low_priority;
        let mut st = lock(&self.state);
        let must_wait = |st: &State| st.locked || (!high && st.high_waiters > 0);
        let contended = must_wait(&st);
        if high && contended {
            st.high_waiters += 1;
        }
        while must_wait(&st) {
            if high && st.locked && st.holder_low && !self.drop_request.load(Relaxed) {
                // I/O-bound thread facing a CPU-bound holder: preempt now.
                self.request_drop(me);
            }
            let saved_switch = self.switch_number.load(Relaxed);
            let cond = if high {
                &self.high_cond
            } else {
                &self.low_cond
            };
            let (guard, result) = cond
                .wait_timeout(st, self.interval)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if result.timed_out() && st.locked && self.switch_number.load(Relaxed) == saved_switch {
                self.request_drop(me);
            }
        }
        if high && contended {
            st.high_waiters -= 1;
        }
        let acquired;
        {
            let _switch = lock(&self.switch_mutex);
            st.locked = true;
            acquired = monotonic_ns();
            st.holder_low = me.low_priority;
            if self.last_holder.load(Relaxed) != me.index + 1 {
                self.last_holder.store(me.index + 1, Relaxed);
                self.switch_number.fetch_add(1, Relaxed);
            }
            self.switch_cond.notify_one();
        }
        self.drop_request.store(false, Relaxed);
        drop(st);
        me.log_acquire(started, acquired, contended);
    }

    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason) {
        match reason {
            ReleaseReason::Forced => me.low_priority = true,
            ReleaseReason::Io => me.low_priority = false,
            _ => {}
        }
        me.log_release(reason);
        self.last_holder.store(me.index + 1, Relaxed);
        {
            let mut st = lock(&self.state);
            st.locked = false;
            if st.high_waiters > 0 {
                self.high_cond.notify_one();
            } else {
                self.low_cond.notify_one();
            }
        }
        if reason == ReleaseReason::Forced {
            let mut switch = lock(&self.switch_mutex);
            while self.last_holder.load(Relaxed) == me.index + 1 {
                let (guard, result) = self
                    .switch_cond
                    .wait_timeout(switch, self.interval * 4)
                    .unwrap_or_else(|e| e.into_inner());
                switch = guard;
                if result.timed_out() {
                    break;
                }
            }
        }
    }

    fn checkpoint(&self, me: &mut ThreadCtx) {
        if self.drop_request.load(Relaxed) {
            self.release(me, ReleaseReason::Forced);
            self.take(me);
        }
    }
}
