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
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Condvar, Mutex,
    },
    time::Duration,
};

use super::{lock, Gil, ThreadCtx};
use crate::{clock::monotonic_ns, truth::ReleaseReason};

pub struct NewGil {
    /// `gil->mutex` guarding `locked`.
    locked: Mutex<bool>,
    cond: Condvar,
    switch_mutex: Mutex<()>,
    switch_cond: Condvar,
    /// Index + 1 of the last holder (0: none).
    last_holder: AtomicUsize,
    switch_number: AtomicU64,
    drop_request: AtomicBool,
    interval: Duration,
}

impl NewGil {
    pub fn new(interval: Duration) -> NewGil {
        NewGil {
            locked: Mutex::new(false),
            cond: Condvar::new(),
            switch_mutex: Mutex::new(()),
            switch_cond: Condvar::new(),
            last_holder: AtomicUsize::new(0),
            switch_number: AtomicU64::new(0),
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
            let saved_switch = self.switch_number.load(Relaxed);
            let (guard, result) = self
                .cond
                .wait_timeout(locked, self.interval)
                .unwrap_or_else(|e| e.into_inner());
            locked = guard;
            // Timed out, still held, and nobody switched in the meantime: ask for it.
            if result.timed_out() && *locked && self.switch_number.load(Relaxed) == saved_switch {
                self.drop_request.store(true, Relaxed);
                me.log_drop_request();
            }
        }
        let acquired;
        {
            let _switch = lock(&self.switch_mutex);
            *locked = true;
            acquired = monotonic_ns();
            if self.last_holder.load(Relaxed) != me.index + 1 {
                self.last_holder.store(me.index + 1, Relaxed);
                self.switch_number.fetch_add(1, Relaxed);
            }
            // FORCE_SWITCHING: tell a forced releaser that someone took it.
            self.switch_cond.notify_one();
        }
        self.drop_request.store(false, Relaxed);
        drop(locked);
        me.log_acquire(started, acquired, contended);
    }

    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason) {
        me.log_release(reason);
        self.last_holder.store(me.index + 1, Relaxed);
        {
            let mut locked = lock(&self.locked);
            *locked = false;
            self.cond.notify_one();
        }
        if reason == ReleaseReason::Forced {
            let mut switch = lock(&self.switch_mutex);
            // Not switched yet: wait (bounded, in case the requester went away).
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
