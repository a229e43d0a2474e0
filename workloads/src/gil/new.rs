//! The new GIL (CPython 3.2–3.12, Python/ceval_gil.h), Antoine Pitrou's design.
//!
//! State `locked`, `last_holder`, `switch_number` and `drop_request`, with two mutex/condvar
//! pairs. A waiter waits on `cond` for one switch interval; if it timed out and no switch
//! happened meanwhile, it sets `drop_request`. The holder sees the request at its next
//! checkpoint, drops the lock (signalling one waiter, not necessarily the requester) and,
//! being forced, waits on `switch_cond` until another thread has taken it (FORCE_SWITCHING),
//! then queues to take it back. An I/O thread that comes back from a syscall must usually wait
//! a whole interval before it can force a CPU-bound holder off: the convoy effect.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Condvar, Mutex,
    },
    time::Duration,
};

use super::{lock, ForceSwitch, Gil, ThreadCtx};
use crate::{clock::monotonic_ns, truth::ReleaseReason};

pub struct NewGil {
    /// `gil->mutex` guarding `locked`.
    locked: Mutex<bool>,
    cond: Condvar,
    switch: ForceSwitch,
    drop_request: AtomicBool,
    interval: Duration,
}

impl NewGil {
    pub fn new(interval: Duration) -> NewGil {
        NewGil {
            locked: Mutex::new(false),
            cond: Condvar::new(),
            switch: ForceSwitch::new(),
            drop_request: AtomicBool::new(false),
            interval,
        }
    }
}

impl Gil for NewGil {
    fn take(&self, me: &mut ThreadCtx) {
        let started = monotonic_ns();
        let mut locked = lock(&self.locked);
        let contended = *locked;
        while *locked {
            let saved_switch = self.switch.switch_number();
            let (guard, result) = self
                .cond
                .wait_timeout(locked, self.interval)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locked = guard;
            // Timed out, still held, and nobody switched in the meantime: ask for it.
            if result.timed_out() && *locked && self.switch.switch_number() == saved_switch {
                self.drop_request.store(true, Relaxed);
                me.log_drop_request();
            }
        }
        // FORCE_SWITCHING: tell a forced releaser that someone took it.
        let acquired = self.switch.taken(me, || *locked = true);
        self.drop_request.store(false, Relaxed);
        drop(locked);
        me.log_acquire(started, acquired, contended);
    }

    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason) {
        me.log_release(reason);
        self.switch.releasing(me);
        {
            let mut locked = lock(&self.locked);
            *locked = false;
            self.cond.notify_one();
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
