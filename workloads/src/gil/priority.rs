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
        atomic::{AtomicBool, Ordering::Relaxed},
        Condvar, Mutex,
    },
    time::Duration,
};

use super::{lock, ForceSwitch, Gil, ThreadCtx};
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
    switch: ForceSwitch,
    drop_request: AtomicBool,
    interval: Duration,
}

impl PriorityGil {
    pub fn new(interval: Duration) -> PriorityGil {
        PriorityGil {
            state: Mutex::new(State::default()),
            high_cond: Condvar::new(),
            low_cond: Condvar::new(),
            switch: ForceSwitch::new(),
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
            let saved_switch = self.switch.switch_number();
            let cond = if high {
                &self.high_cond
            } else {
                &self.low_cond
            };
            let (guard, result) = cond
                .wait_timeout(st, self.interval)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st = guard;
            if result.timed_out() && st.locked && self.switch.switch_number() == saved_switch {
                self.request_drop(me);
            }
        }
        if high && contended {
            st.high_waiters -= 1;
        }
        // FORCE_SWITCHING: tell a forced releaser that someone took it.
        let acquired = self.switch.taken(me, || {
            st.locked = true;
            st.holder_low = me.low_priority;
        });
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
        self.switch.releasing(me);
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
            self.switch.wait_until_taken(me);
        }
    }

    fn checkpoint(&self, me: &mut ThreadCtx) {
        if self.drop_request.load(Relaxed) {
            self.release(me, ReleaseReason::Forced);
            self.take(me);
        }
    }
}
