//! The interpreter lock and its policies.
//!
//! Every policy is built from std `Mutex`/`Condvar`, which on Linux are futex words: a tracer
//! sees the same kind of futex traffic a pthread-based interpreter produces.
//!
//! The interpreter protocol, as in CPython: a thread [`Gil::take`]s the lock, runs work units
//! and calls [`Gil::checkpoint`] between them (the eval-breaker check between bytecodes),
//! [`Gil::release`]s it around blocking I/O (`Py_BEGIN_ALLOW_THREADS`) and takes it back
//! after (`Py_END_ALLOW_THREADS`).
pub mod fair;
pub mod new;
pub mod old;
pub mod priority;

use std::{str::FromStr, time::Duration};

use crate::{
    clock::{gettid, monotonic_ns},
    truth::{ReleaseReason, TruthEvent, TruthSink},
};

/// A lab thread's identity and its truth buffer.
pub struct ThreadCtx {
    /// Dense index (0..max_threads), used by policies for per-thread state.
    pub index: usize,
    pub tid: u32,
    truth: Option<(Vec<TruthEvent>, TruthSink)>,
    /// Old GIL: work units since the last release.
    pub ticks: u32,
    /// Priority GIL: forced off the lock last time (CPU bound).
    pub low_priority: bool,
    /// Fair GIL: when this thread's current slice runs out (CLOCK_MONOTONIC ns).
    pub slice_end_ns: u64,
}

impl ThreadCtx {
    /// Creates the context for the calling thread, logging its role and name when truth is on.
    pub fn new(index: usize, role: &str, name: &str, sink: Option<&TruthSink>) -> ThreadCtx {
        let tid = gettid();
        let truth = sink.map(|s| {
            // Filled once and emptied, so every page of the buffer is touched now: a first
            // write to a fresh page faults (µs), and inside a take that would count as waiting.
            let mut buf = vec![TruthEvent::DropRequest { ts_ns: 0, tid: 0 }; 64 * 1024];
            buf.clear();
            buf.push(TruthEvent::Thread {
                ts_ns: monotonic_ns(),
                tid,
                role: role.into(),
                name: name.into(),
            });
            (buf, s.clone())
        });
        ThreadCtx {
            index,
            tid,
            truth,
            ticks: 0,
            low_priority: false,
            slice_end_ns: 0,
        }
    }

    #[inline]
    pub fn log(&mut self, make: impl FnOnce(u32) -> TruthEvent) {
        if let Some((buf, _)) = &mut self.truth {
            buf.push(make(self.tid));
        }
    }

    /// Logs an acquisition that happened at `acquired_ns` (taken when the lock's state
    /// flipped, inside the policy's critical section, not after its bookkeeping).
    pub fn log_acquire(&mut self, started_ns: u64, acquired_ns: u64, contended: bool) {
        self.log(|tid| TruthEvent::Acquire {
            ts_ns: acquired_ns,
            tid,
            wait_ns: acquired_ns.saturating_sub(started_ns),
            contended,
        });
    }

    pub fn log_release(&mut self, reason: ReleaseReason) {
        let now = monotonic_ns();
        self.log(|tid| TruthEvent::Release {
            ts_ns: now,
            tid,
            reason,
        });
    }

    pub fn log_drop_request(&mut self) {
        let now = monotonic_ns();
        self.log(|tid| TruthEvent::DropRequest { ts_ns: now, tid });
    }
}

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        if let Some((buf, sink)) = self.truth.take() {
            sink.absorb(buf);
        }
    }
}

/// An interpreter lock.
pub trait Gil: Send + Sync {
    /// Blocks until `me` holds the lock.
    fn take(&self, me: &mut ThreadCtx);
    /// Gives the lock up. With [`ReleaseReason::Forced`] a policy may wait until another thread
    /// has taken it (CPython's FORCE_SWITCHING).
    fn release(&self, me: &mut ThreadCtx, reason: ReleaseReason);
    /// The eval-breaker check between work units: may release and re-take the lock.
    fn checkpoint(&self, me: &mut ThreadCtx);
}

/// Which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Old,
    New,
    Priority,
    Fair,
}

impl Policy {
    pub const ALL: [Policy; 4] = [Policy::Old, Policy::New, Policy::Priority, Policy::Fair];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Old => "old",
            Policy::New => "new",
            Policy::Priority => "priority",
            Policy::Fair => "fair",
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown GIL policy {s:?} (expected one of: old, new, priority, fair)")
            })
    }
}

/// Policy parameters.
#[derive(Clone, Copy, Debug)]
pub struct GilConfig {
    pub policy: Policy,
    /// New/priority GIL switch interval (CPython's `sys.setswitchinterval`, default 5 ms);
    /// fair GIL time slice is twice this.
    pub interval: Duration,
    /// Old GIL: work units between releases (CPython 2's `sys.setcheckinterval`, 100).
    pub check_interval: u32,
    /// Upper bound on lab threads (fair GIL keeps one condvar per thread).
    pub max_threads: usize,
}

impl Default for GilConfig {
    fn default() -> Self {
        GilConfig {
            policy: Policy::New,
            interval: Duration::from_millis(5),
            check_interval: 100,
            max_threads: 64,
        }
    }
}

pub fn make_gil(config: &GilConfig) -> Box<dyn Gil> {
    match config.policy {
        Policy::Old => Box::new(old::OldGil::new(config.check_interval)),
        Policy::New => Box::new(new::NewGil::new(config.interval)),
        Policy::Priority => Box::new(priority::PriorityGil::new(config.interval)),
        Policy::Fair => Box::new(fair::FairGil::new(config.interval * 2, config.max_threads)),
    }
}

/// Locks a std mutex, ignoring poisoning (a panicking lab thread already failed the run).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CPython's FORCE_SWITCHING state (`last_holder`, `switch_number`, `switch_mutex`,
/// `switch_cond`), shared by the new and priority GILs: a thread forced off the lock waits until
/// another thread has taken it, so it cannot simply take it straight back.
pub(crate) struct ForceSwitch {
    mutex: std::sync::Mutex<()>,
    cond: std::sync::Condvar,
    /// Index + 1 of the last holder (0: none).
    last_holder: std::sync::atomic::AtomicUsize,
    switch_number: std::sync::atomic::AtomicU64,
}

impl ForceSwitch {
    pub(crate) fn new() -> Self {
        ForceSwitch {
            mutex: std::sync::Mutex::new(()),
            cond: std::sync::Condvar::new(),
            last_holder: Default::default(),
            switch_number: Default::default(),
        }
    }

    /// Counts holder changes; a waiter compares it across its timed wait.
    pub(crate) fn switch_number(&self) -> u64 {
        self.switch_number
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The taker's side, called with the lock's state held: `mark_taken` flips the state under
    /// `switch_mutex`; records the holder and wakes a forced releaser. Returns when the lock was
    /// taken (CLOCK_MONOTONIC ns).
    pub(crate) fn taken(&self, me: &ThreadCtx, mark_taken: impl FnOnce()) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let _switch = lock(&self.mutex);
        mark_taken();
        let acquired = monotonic_ns();
        if self.last_holder.load(Relaxed) != me.index + 1 {
            self.last_holder.store(me.index + 1, Relaxed);
            self.switch_number.fetch_add(1, Relaxed);
        }
        self.cond.notify_one();
        acquired
    }

    /// The releaser's side, before it gives the lock up.
    pub(crate) fn releasing(&self, me: &ThreadCtx) {
        self.last_holder
            .store(me.index + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// After a forced release: waits until someone else took the lock, with no timeout, as
    /// CPython's FORCE_SWITCHING does (a waiter asked for the lock and is still taking it).
    /// Untimed, the switch word is not a condvar where takers wait, which is how the analysis
    /// tells this handshake from a handoff.
    pub(crate) fn wait_until_taken(&self, me: &ThreadCtx) {
        let mut switch = lock(&self.mutex);
        while self.last_holder.load(std::sync::atomic::Ordering::Relaxed) == me.index + 1 {
            switch = self
                .cond
                .wait(switch)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}
