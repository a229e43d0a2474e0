//! Time by user stack: which code waited for each lock, which code its holders were running
//! when they handed it over, and where threads spent their time off a CPU. The stacks are the
//! recorder's (a blocking switch carries the stack the thread blocked in; a futex call that
//! woke someone, its caller's); names come later, from `crate::symbols`.
use rustc_hash::FxHashMap;
use serde::Serialize;

pub use crate::model::stack::StackKey;
use crate::model::timeline::ThreadState;

/// Stacks listed per lock (most time first).
pub const TOP_STACKS: usize = 10;

/// Lock-wait time that ended at (or was spent in) one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StackTime {
    pub stack: StackKey,
    /// The thread whose stack it is, for a holder's (releasing) stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// Lock wait (of the waiters, for a holder's stack), ns.
    pub ns: u64,
    /// Acquisitions it counts.
    pub count: u64,
}

/// Time and counts by (thread, stack), kept to the top ones on output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackTally(FxHashMap<(Option<u32>, StackKey), (u64, u64)>);

impl StackTally {
    pub fn add(&mut self, tid: Option<u32>, stack: StackKey, ns: u64) {
        let e = self.0.entry((tid, stack)).or_default();
        e.0 += ns;
        e.1 += 1;
    }

    pub fn merge(&mut self, other: &StackTally) {
        for (&key, &(ns, count)) in &other.0 {
            let e = self.0.entry(key).or_default();
            e.0 += ns;
            e.1 += count;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `n` with the most time (ties: the lower key), most first.
    pub fn top(&self, n: usize) -> Vec<StackTime> {
        let mut all: Vec<StackTime> = self
            .0
            .iter()
            .map(|(&(tid, stack), &(ns, count))| StackTime {
                stack,
                tid,
                ns,
                count,
            })
            .collect();
        all.sort_by(|a, b| {
            b.ns.cmp(&a.ns)
                .then(a.tid.cmp(&b.tid))
                .then(a.stack.cmp(&b.stack))
        });
        all.truncate(n);
        all
    }
}

/// Off-CPU time of one thread in one stack and state (for folded stacks and flamegraphs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpu {
    pub tid: u32,
    pub stack: StackKey,
    pub state: ThreadState,
    /// The lock it waited for, when `state` is lock wait.
    pub lock: Option<usize>,
    pub ns: u64,
}

/// Off-CPU time by (thread, stack, state, lock).
#[derive(Default)]
pub struct OffCpuTally(FxHashMap<(u32, StackKey, ThreadState, Option<usize>), u64>);

impl OffCpuTally {
    pub fn add(
        &mut self,
        tid: u32,
        stack: StackKey,
        state: ThreadState,
        lock: Option<usize>,
        ns: u64,
    ) {
        *self.0.entry((tid, stack, state, lock)).or_default() += ns;
    }

    /// Everything, in a stable order.
    pub fn finish(self) -> Vec<OffCpu> {
        let mut out: Vec<OffCpu> = self
            .0
            .into_iter()
            .map(|((tid, stack, state, lock), ns)| OffCpu {
                tid,
                stack,
                state,
                lock,
                ns,
            })
            .collect();
        out.sort_by_key(|o| (o.tid, o.stack, o.state as u8, o.lock));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_stacks_are_the_ones_with_most_time_in_a_stable_order() {
        let (a, b, c) = (
            StackKey { tgid: 1, id: 1 },
            StackKey { tgid: 1, id: 2 },
            StackKey { tgid: 1, id: 3 },
        );
        let mut tally = StackTally::default();
        tally.add(None, a, 10);
        tally.add(None, b, 30);
        tally.add(None, c, 30);
        tally.add(None, a, 5);
        let top = tally.top(2);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].stack, top[0].ns), (b, 30));
        assert_eq!((top[1].stack, top[1].ns), (c, 30));
        let mut u = StackTally::default();
        u.merge(&tally);
        u.add(None, a, 100);
        assert_eq!(
            u.top(1)[0],
            StackTime {
                stack: a,
                tid: None,
                ns: 115,
                count: 3
            }
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"1:1\"");
    }
}
