//! The old GIL (CPython ≤ 3.1, Python/ceval.c + thread_pthread.h).
//!
//! A plain lock with no handoff. The holder counts "ticks" (work units); every
//! `check_interval` ticks it releases and immediately tries to re-take the lock. On a
//! multicore machine it usually wins again: the waiter it woke is still being scheduled, then
//! finds the lock taken and sleeps again (Beazley's "failed wakeups").
use std::sync::{Condvar, Mutex};

use super::{lock, Gil, ThreadCtx};
use crate::{clock::monotonic_ns, truth::ReleaseReason};

pub struct OldGil {
    locked: Mutex<bool>,
    cond: Condvar,
    check_interval: u32,
}

impl OldGil {
    pub fn new(check_interval: u32) -> OldGil {
        OldGil {
            locked: Mutex::new(false),
            cond: Condvar::new(),
            check_interval: check_interval.max(1),
        }
    }
}

impl Gil for OldGil {
    fn take(&self, me: &mut ThreadCtx) {
        let started = monotonic_ns();
        let mut locked = lock(&self.locked);
        let contended = *locked;
        while *locked {
            locked = self
                .cond
                .wait(locked)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *locked = true;
        let acquired = monotonic_ns();
        drop(locked);
        me.ticks = 0;
        me.log_acquire(started, acquired, contended);
    }

    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason) {
        me.log_release(reason);
        let mut locked = lock(&self.locked);
        *locked = false;
        self.cond.notify_one();
    }

    fn checkpoint(&self, me: &mut ThreadCtx) {
        me.ticks += 1;
        if me.ticks >= self.check_interval {
            self.release(me, ReleaseReason::Interval);
            self.take(me);
        }
    }
}
