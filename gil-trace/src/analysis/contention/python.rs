//! Python samples (the recorder's reads of CPython's thread states) joined with the kernel's
//! story: the Python stacks of a convoy's waiter and of the GIL's holders while it waited, the
//! time each Python stack spent in each state, and how often the holder the samples name is
//! the one the kernel analysis inferred.
use std::collections::VecDeque;

use serde::Serialize;

use rustc_hash::FxHashMap;

use super::stacks::{OffCpuTally, StackKey, StackTally};
use crate::model::timeline::ThreadState;

/// One sample, kept a while for the convoys that will want it.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ts_ns: u64,
    tid: u32,
    stack: Option<StackKey>,
    owns_gil: bool,
}

/// Samples kept at most (the oldest go first), whatever the time window says.
const MAX_KEPT: usize = 65_536;

/// How the samples' GIL holder compares with the kernel's: the holder band (the thread that
/// last acquired the GIL after waiting for it, as the report's charts and exports draw it)
/// at the sample's time (`python.agreement` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HolderAgreement {
    /// Samples that named a GIL holder while the band had one too.
    pub compared: u64,
    /// Of those, the same thread.
    pub agree: u64,
    /// Samples that named a holder before the band's first acquisition (by the end of their
    /// read).
    pub kernel_unknown: u64,
}

/// A GIL's contended acquisitions (its holder band) and the samples still to compare with
/// it: an acquisition is known only when its take closes, which can be well after it.
#[derive(Default)]
struct HolderBand {
    /// (acquire time, thread), by time; only those a pending sample may need.
    acquisitions: VecDeque<(u64, u32)>,
    /// Samples naming a holder: (time, thread, read span), by time.
    pending: VecDeque<(u64, u32, u64)>,
}

/// A sample is compared once the band is this far past it: takes close within this of their
/// acquisition (a holder runs its interval, then touches the lock).
const BAND_SETTLES_NS: u64 = 2_000_000_000;

impl HolderBand {
    fn acquired(&mut self, at: u64, tid: u32) {
        let i = self.acquisitions.partition_point(|&(t, _)| t <= at);
        self.acquisitions.insert(i, (at, tid));
        if self.pending.is_empty() {
            // Samples to come are later than every acquisition known: the last one is enough.
            let older = self.acquisitions.len() - 1;
            self.acquisitions.drain(..older);
        }
    }

    /// Compares the samples up to `until` with the band.
    fn settle(&mut self, until: u64, agreement: &mut HolderAgreement) {
        while let Some(&(ts, tid, read_ns)) = self.pending.front().filter(|&&(ts, ..)| ts <= until)
        {
            self.pending.pop_front();
            // The holders from the read's start to its end: the sample saw one of them.
            let first = self.acquisitions.partition_point(|&(t, _)| t <= ts);
            let last = self
                .acquisitions
                .partition_point(|&(t, _)| t <= ts.saturating_add(read_ns));
            match first.checked_sub(1).map_or(first, |i| i)..last {
                holders if holders.is_empty() => agreement.kernel_unknown += 1,
                holders => {
                    agreement.compared += 1;
                    agreement.agree +=
                        u64::from(self.acquisitions.range(holders).any(|&(_, h)| h == tid));
                }
            }
            // Only the last acquisition before the next sample is needed from now on.
            let next = self.pending.front().map_or(ts, |&(t, ..)| t);
            let keep_from = self.acquisitions.partition_point(|&(t, _)| t <= next);
            for _ in 0..keep_from.saturating_sub(1) {
                self.acquisitions.pop_front();
            }
        }
    }
}

/// One sample as the tracker sees it, with the kernel's view of the same moment.
#[derive(Clone, Copy, Debug)]
pub(super) struct Observed {
    pub ts_ns: u64,
    pub tid: u32,
    /// None when the thread had no Python frame.
    pub stack: Option<StackKey>,
    pub owns_gil: bool,
    pub period_ns: u64,
    /// How long the read took (see `EventData::PySample`).
    pub read_ns: u64,
    /// The thread's state in the kernel's timeline, and the lock it waits for in a lock wait.
    pub state: Option<(ThreadState, Option<usize>)>,
    /// The identified lock that is its process's GIL.
    pub gil: Option<usize>,
}

/// The Python samples in a span of a thread's time, by stack: the thread's own (its code
/// while it waited) and the GIL holders' (by thread).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampledAround {
    pub own: StackTally,
    pub holders: StackTally,
}

/// The samples of a pass.
#[derive(Default)]
pub(super) struct PySamples {
    recent: VecDeque<Sample>,
    pub samples: u64,
    pub agreement: HolderAgreement,
    /// Sampled time (one sampling period per sample) by thread, Python stack and state.
    pub time: OffCpuTally,
    /// Per lock: its waiters' Python stacks (samples in a wait for it), and its holders'
    /// (samples that hold it: the GIL's, by the interpreter's own flag).
    pub waiting: FxHashMap<usize, StackTally>,
    pub holding: FxHashMap<usize, StackTally>,
    bands: FxHashMap<usize, HolderBand>,
}

impl PySamples {
    pub fn observe(&mut self, s: &Observed) {
        self.samples += 1;
        self.recent.push_back(Sample {
            ts_ns: s.ts_ns,
            tid: s.tid,
            stack: s.stack,
            owns_gil: s.owns_gil,
        });
        if self.recent.len() > MAX_KEPT {
            self.recent.pop_front();
        }
        if let (Some((state, lock)), Some(stack)) = (s.state, s.stack) {
            self.time.add(s.tid, stack, state, lock, s.period_ns);
            if let (ThreadState::LockWait, Some(lock)) = (state, lock) {
                self.waiting
                    .entry(lock)
                    .or_default()
                    .add(Some(s.tid), stack, s.period_ns);
            }
        }
        if let (true, Some(gil)) = (s.owns_gil, s.gil) {
            if let Some(stack) = s.stack {
                self.holding
                    .entry(gil)
                    .or_default()
                    .add(Some(s.tid), stack, s.period_ns);
            }
            let band = self.bands.entry(gil).or_default();
            band.pending.push_back((s.ts_ns, s.tid, s.read_ns));
            band.settle(s.ts_ns.saturating_sub(BAND_SETTLES_NS), &mut self.agreement);
        }
    }

    /// A contended acquisition of GIL `lock` (recorded when its take closed).
    pub fn acquired(&mut self, lock: usize, at: u64, tid: u32) {
        let band = self.bands.entry(lock).or_default();
        // Settled here too, so the band stays short when no more samples come (the process
        // exec'd, or its reads fail).
        band.settle(at.saturating_sub(BAND_SETTLES_NS), &mut self.agreement);
        band.acquired(at, tid);
    }

    /// Compares the samples left with the holder bands (at the end of the pass).
    pub fn settle(&mut self) {
        for band in self.bands.values_mut() {
            band.settle(u64::MAX, &mut self.agreement);
        }
    }

    /// Forgets samples older than `keep_from`.
    pub fn prune(&mut self, keep_from: u64) {
        while self.recent.front().is_some_and(|s| s.ts_ns < keep_from) {
            self.recent.pop_front();
        }
    }

    /// In `[from, to)`: `tid`'s own samples by stack (its Python code while it waited), and
    /// the GIL holders' by thread and stack.
    pub fn between(&self, tid: u32, from: u64, to: u64) -> SampledAround {
        let SampledAround {
            mut own,
            mut holders,
        } = SampledAround::default();
        let first = self.recent.partition_point(|s| s.ts_ns < from);
        for s in self.recent.range(first..).take_while(|s| s.ts_ns < to) {
            let Some(stack) = s.stack else { continue };
            if s.tid == tid {
                own.add(None, stack, 1);
            } else if s.owns_gil {
                holders.add(Some(s.tid), stack, 1);
            }
        }
        SampledAround { own, holders }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> StackKey {
        StackKey::python(1, id)
    }

    fn sample(ts_ns: u64, tid: u32, stack: u32, owns_gil: bool) -> Observed {
        Observed {
            ts_ns,
            tid,
            stack: Some(key(stack)),
            owns_gil,
            period_ns: 5,
            read_ns: 0,
            state: Some((ThreadState::Running, None)),
            gil: Some(0),
        }
    }

    #[test]
    fn samples_split_into_the_waiter_own_and_the_holders_and_agreement_counts() {
        let mut p = PySamples::default();
        p.observe(&sample(10, 7, 1, false));
        p.observe(&sample(11, 8, 2, true));
        p.observe(&sample(12, 8, 2, true));
        p.observe(&sample(14, 9, 3, true));
        p.observe(&sample(30, 7, 1, false));
        // The band, known later: 8 from 12 on (the sample at 11 is before any), 9 from 15.
        p.acquired(0, 15, 9);
        p.acquired(0, 12, 8);
        p.settle();
        let SampledAround { own, holders } = p.between(7, 10, 20);
        assert_eq!(own.top(5)[0].count, 1);
        let h = holders.top(5);
        assert_eq!((h[0].tid, h[0].count), (Some(8), 2));
        assert_eq!((h[1].tid, h[1].count), (Some(9), 1));
        assert_eq!(
            p.agreement,
            HolderAgreement {
                compared: 2,
                agree: 1,
                kernel_unknown: 1
            }
        );
        // Holding time per lock, by the interpreter's flag: 3 samples of 5 ns.
        let held = p.holding[&0].top(5);
        assert_eq!((held[0].tid, held[0].ns, held[0].count), (Some(8), 10, 2));
        p.prune(20);
        assert_eq!(p.between(7, 0, 100).own.top(5)[0].count, 1);
    }

    #[test]
    fn a_sample_agrees_with_any_holder_while_it_was_read() {
        // 8 holds from 100, 9 takes over at 130: a sample read from 120 to 160 that names 9
        // saw the handoff (py_echo under validate: 67 of 81 disagreements were such reads);
        // one read from 120 to 125 did not, and one naming 7 names no holder of its span.
        let mut p = PySamples::default();
        for (tid, read_ns) in [(9, 40), (9, 5), (7, 40)] {
            let mut s = sample(120, tid, 1, true);
            s.read_ns = read_ns;
            p.observe(&s);
        }
        p.acquired(0, 100, 8);
        p.acquired(0, 130, 9);
        p.settle();
        assert_eq!(
            p.agreement,
            HolderAgreement {
                compared: 3,
                agree: 1,
                kernel_unknown: 0
            }
        );
        // Before the band's first acquisition, unless the read reached it.
        let mut p = PySamples::default();
        let mut s = sample(90, 8, 1, true);
        p.observe(&s);
        s.read_ns = 20;
        p.observe(&s);
        p.acquired(0, 100, 8);
        p.settle();
        assert_eq!(
            (
                p.agreement.kernel_unknown,
                p.agreement.compared,
                p.agreement.agree
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn samples_in_a_lock_wait_count_as_its_waiters_stacks() {
        let mut p = PySamples::default();
        let mut s = sample(10, 7, 1, false);
        s.state = Some((ThreadState::LockWait, Some(3)));
        p.observe(&s);
        s.state = Some((ThreadState::Runnable, None));
        p.observe(&s);
        let waiting = p.waiting[&3].top(5);
        assert_eq!((waiting.len(), waiting[0].count), (1, 1));
    }

    #[test]
    fn a_sample_without_python_frames_counts_for_agreement_but_names_no_code() {
        let mut p = PySamples::default();
        let mut s = sample(10, 8, 1, true);
        s.stack = None;
        p.observe(&s);
        p.acquired(0, 5, 8);
        p.settle();
        assert_eq!(
            (p.samples, p.agreement.compared, p.agreement.agree),
            (1, 1, 1)
        );
        assert!(p.holding.is_empty());
        assert!(p.between(8, 0, 100).own.top(5).is_empty());
    }
}
