//! Lock identification from futex traffic alone (no symbols).
//!
//! Pass 1 over the trace: statistics per futex word (per process: private futexes are
//! per address space), and how often one thread touches two words in quick succession.
//! Words are then grouped into locks when they sit close together in memory and are used by
//! the same threads (a glibc condvar's signal words next to its mutex, as CPython's GIL lays
//! them out), or when threads keep using them together (a condvar and the mutex it releases,
//! wherever they live). Locks are ranked by contention.
use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
};

use rustc_hash::FxHashMap;

use serde::Serialize;

pub use crate::trace::futex_index::{FutexIndex, WordKey, WordStats, EAGAIN, ETIMEDOUT};
use crate::trace::Event;

/// Two words within this many bytes may be one lock (CPython's GIL: cond, mutex,
/// switch_cond, switch_mutex span ~180 bytes; adjacent words are 4–80 bytes apart).
pub const ADJACENT_BYTES: u64 = 128;
pub use crate::trace::futex_index::TOGETHER_NS;

/// An identified lock: one or more futex words.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// Rank (0 = most contended).
    pub id: usize,
    pub tgid: u32,
    /// Lowest word address, the lock's name in reports ("lock 0x…").
    pub addr: u64,
    pub words: Vec<WordStats>,
    /// The words a releaser wakes to hand the lock over: condvar-like words (timed waits) and
    /// the most waited-on word — not the internal mutex a condvar wait unlocks on its way to
    /// sleep. A wake on a gate word ends the waker's own take: it held the lock.
    pub gate_words: Vec<u64>,
    /// Why these words were grouped (one line each).
    pub grouped_because: Vec<String>,
    pub waits: u64,
    pub wait_ns: u64,
    pub timeouts: u64,
    pub wakes: u64,
    /// Distinct threads that waited on it.
    pub waiting_threads: usize,
    /// Distinct threads that used it at all.
    pub threads: Vec<u32>,
    /// Its name in the program's terms: `GIL`, `symbol+offset (module)`, or `lock used by
    /// <function>` (see `crate::symbols`); `lock 0x…` until named.
    pub name: String,
    /// What it is: `futex` (a lock found from futex traffic), or `cpython-gil` (with its
    /// `version`).
    #[serde(flatten)]
    pub kind: LockKind,
    /// The static object holding its lowest word, when it is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<SymbolRef>,
}

/// What a lock was recognized as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LockKind {
    #[default]
    Futex,
    /// A CPython interpreter's GIL, of this version.
    #[serde(rename = "cpython-gil")]
    CPythonGil { version: String },
}

/// A static object, by symbol and module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SymbolRef {
    pub module: String,
    pub symbol: String,
    pub offset: u64,
}

impl std::fmt::Display for SymbolRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x} ({})", self.symbol, self.offset, self.module)
    }
}

impl Lock {
    /// How reports show it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How JSON rows refer to it: its lowest word, as `locks[].addr` in hex.
    pub fn key(&self) -> String {
        format!("0x{:x}", self.addr)
    }
}

/// Pass 1: collects futex statistics (or takes them from the trace's trailer, where the
/// writer kept the same table while recording).
#[derive(Default)]
pub struct LockFinder {
    index: FutexIndex,
}

/// All identified locks, most contended first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockSet {
    pub locks: Vec<Lock>,
    #[serde(skip)]
    roles: FxHashMap<WordKey, WordRole>,
    /// The last word looked up: the timeline and the contention tracker ask about the same
    /// word one after the other, and a lock's word comes back event after event.
    #[serde(skip)]
    last: Cell<Option<(WordKey, WordRole)>>,
}

/// What a futex word is to the identified locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WordRole {
    /// The lock it belongs to, if any.
    pub lock: Option<usize>,
    /// A word a releaser wakes (see [`Lock::gate_words`]).
    pub gate: bool,
}

impl LockSet {
    /// What this word is (nothing, for a word of no lock).
    #[inline]
    pub fn word(&self, key: WordKey) -> WordRole {
        match self.last.get() {
            Some((last, role)) if last == key => role,
            _ => {
                let role = self.roles.get(&key).copied().unwrap_or_default();
                self.last.set(Some((key, role)));
                role
            }
        }
    }

    /// The lock a word belongs to, if any.
    pub fn lock_of(&self, key: WordKey) -> Option<usize> {
        self.word(key).lock
    }

    /// The most contended lock (the GIL, for a Python program).
    pub fn primary(&self) -> Option<&Lock> {
        self.locks.first()
    }
}

/// Union-find root of `i`, compressing the path.
fn find(p: &mut [usize], mut i: usize) -> usize {
    while p[i] != i {
        p[i] = p[p[i]];
        i = p[i];
    }
    i
}

impl LockFinder {
    /// Starts from a finished table (e.g. a trace trailer's `futex_index`).
    pub fn from_index(index: FutexIndex) -> LockFinder {
        LockFinder { index }
    }

    pub fn observe(&mut self, ev: &Event) {
        self.index.observe(ev);
    }

    /// Groups and ranks. `force` (from `--lock ADDR`) makes the lock containing that address
    /// (or just that word) the primary one.
    pub fn finish(self, force: Option<u64>) -> LockSet {
        // Candidate words: waited on by someone and used by at least two threads (a lone
        // thread's futex, e.g. a join, is not a lock between threads).
        let candidates: Vec<&WordStats> = self
            .index
            .words()
            .filter(|w| (w.waits > 0 && w.users.len() >= 2) || Some(w.addr) == force)
            .collect();
        let index: FxHashMap<WordKey, usize> = candidates
            .iter()
            .enumerate()
            .map(|(i, w)| ((w.tgid, w.addr), i))
            .collect();
        let mut parent: Vec<usize> = (0..candidates.len()).collect();
        let mut reasons: Vec<(usize, usize, String)> = Vec::new();
        // Adjacent in memory and shared by the same threads.
        let mut by_addr: Vec<usize> = (0..candidates.len()).collect();
        by_addr.sort_by_key(|&i| (candidates[i].tgid, candidates[i].addr));
        for pair in by_addr.windows(2) {
            let (a, b) = (candidates[pair[0]], candidates[pair[1]]);
            if a.tgid != b.tgid || b.addr - a.addr > ADJACENT_BYTES {
                continue;
            }
            let shared = a.users.intersection(&b.users).count();
            let smaller = a.users.len().min(b.users.len());
            if shared * 2 >= smaller && shared >= 2 {
                reasons.push((
                    pair[0],
                    pair[1],
                    format!(
                        "0x{:x} and 0x{:x} are {} bytes apart and used by the same {} threads",
                        a.addr,
                        b.addr,
                        b.addr - a.addr,
                        shared
                    ),
                ));
            }
        }
        // Used together: one thread's op on one word right after an op on the other, often.
        let mut together: Vec<_> = self.index.together().collect();
        together.sort();
        for ((ka, kb), n) in together {
            let (Some(&ia), Some(&ib)) = (index.get(ka), index.get(kb)) else {
                continue;
            };
            let (a, b) = (candidates[ia], candidates[ib]);
            let ops = |w: &WordStats| w.waits + w.wakes;
            if n >= 10 && n * 5 >= ops(a).min(ops(b)) {
                reasons.push((
                    ia,
                    ib,
                    format!(
                        "0x{:x} and 0x{:x} are used together ({} times within {} µs by one thread)",
                        a.addr,
                        b.addr,
                        n,
                        TOGETHER_NS / 1000
                    ),
                ));
            }
        }
        for (a, b, _) in &reasons {
            let (ra, rb) = (find(&mut parent, *a), find(&mut parent, *b));
            if ra != rb {
                parent[ra] = rb;
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..candidates.len() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let mut locks: Vec<Lock> = groups
            .into_iter()
            .map(|(root, members)| {
                let mut words: Vec<WordStats> =
                    members.iter().map(|&i| candidates[i].clone()).collect();
                words.sort_by_key(|w| w.addr);
                let mut threads: BTreeSet<u32> = BTreeSet::new();
                let mut waiters: BTreeSet<u32> = BTreeSet::new();
                for w in &words {
                    threads.extend(&w.users);
                    waiters.extend(&w.waiters);
                }
                let grouped_because = reasons
                    .iter()
                    .filter(|(a, _, _)| find(&mut parent.clone(), *a) == root)
                    .map(|(_, _, r)| r.clone())
                    .collect();
                // Gate words: where waiters sit (condvars: timed waits, or the most waited-on
                // word), as opposed to the internal mutex a condvar wait unlocks.
                let most_waited = words
                    .iter()
                    .max_by_key(|w| (w.wait_ns, w.waits))
                    .map(|w| w.addr);
                let gate_words = words
                    .iter()
                    .filter(|w| w.timed_waits > 0 || Some(w.addr) == most_waited)
                    .map(|w| w.addr)
                    .collect();
                Lock {
                    id: 0,
                    gate_words,
                    tgid: words[0].tgid,
                    addr: words[0].addr,
                    waits: words.iter().map(|w| w.waits).sum(),
                    wait_ns: words.iter().map(|w| w.wait_ns).sum(),
                    timeouts: words.iter().map(|w| w.timeouts).sum(),
                    wakes: words.iter().map(|w| w.wakes).sum(),
                    waiting_threads: waiters.len(),
                    threads: threads.into_iter().collect(),
                    grouped_because,
                    name: format!("lock 0x{:x}", words[0].addr),
                    kind: LockKind::Futex,
                    symbol: None,
                    words,
                }
            })
            .collect();
        // Contention: locks several threads wait on first, then by total wait time.
        locks.sort_by(|a, b| {
            let forced = |l: &Lock| force.is_some_and(|f| l.words.iter().any(|w| w.addr == f));
            forced(b)
                .cmp(&forced(a))
                .then((b.waiting_threads >= 2).cmp(&(a.waiting_threads >= 2)))
                .then(b.wait_ns.cmp(&a.wait_ns))
                .then(b.waits.cmp(&a.waits))
        });
        let mut roles: FxHashMap<WordKey, WordRole> = FxHashMap::default();
        for (i, lock) in locks.iter_mut().enumerate() {
            lock.id = i;
            for w in &lock.words {
                roles.entry((w.tgid, w.addr)).or_default().lock = Some(i);
            }
            for &a in &lock.gate_words {
                roles.entry((lock.tgid, a)).or_default().gate = true;
            }
        }
        LockSet {
            locks,
            roles,
            last: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{futex, futex_exit as exit};

    /// A GIL-like pattern: cond word 0x1028/0x102c and mutex word 0x1030 shared by 3 threads,
    /// a thread-private join word far away, and an unrelated 2-thread lock elsewhere.
    fn gil_like() -> LockFinder {
        let mut f = LockFinder::default();
        let mut ts = 0;
        for round in 0..50u64 {
            for tid in [10, 11, 12] {
                ts += 1_000_000;
                f.observe(&futex(ts, tid, 0x1030, 128)); // mutex wait (contended)
                f.observe(&exit(ts + 2_000, tid, 0));
                f.observe(&futex(
                    ts + 3_000,
                    tid,
                    if round % 2 == 0 { 0x1028 } else { 0x102c },
                    137,
                ));
                f.observe(&exit(
                    ts + 500_000,
                    tid,
                    if round % 3 == 0 { ETIMEDOUT } else { 0 },
                ));
                f.observe(&futex(ts + 501_000, tid, 0x1030, 129)); // mutex wake
                f.observe(&exit(ts + 502_000, tid, 1));
            }
            ts += 1_000_000;
            f.observe(&futex(ts, 20, 0x9000, 128));
            f.observe(&exit(ts + 1_000, 20, 0));
            f.observe(&futex(ts + 5_000_000, 21, 0x9000, 129));
            f.observe(&exit(ts + 5_001_000, 21, 1));
        }
        f.observe(&futex(ts + 10, 10, 0x5000, 128)); // join-like: one thread only
        f.observe(&exit(ts + 99_000_000, 10, 0));
        f
    }

    #[test]
    fn groups_adjacent_words_of_the_same_threads_and_ranks_the_gil_first() {
        let set = gil_like().finish(None);
        let gil = set.primary().unwrap();
        let addrs: Vec<u64> = gil.words.iter().map(|w| w.addr).collect();
        assert_eq!(addrs, vec![0x1028, 0x102c, 0x1030]);
        assert_eq!(gil.waiting_threads, 3);
        assert!(gil.timeouts > 0);
        assert!(!gil.grouped_because.is_empty());
        assert_eq!(set.lock_of((1, 0x1030)), Some(0));
        assert_eq!(
            set.lock_of((1, 0x5000)),
            None,
            "a single thread's futex is not a lock"
        );
        assert_eq!(set.locks.len(), 2);
        assert_eq!(set.locks[1].addr, 0x9000);
        assert_eq!(
            gil.gate_words,
            vec![0x1028, 0x102c],
            "condvar words are the gate"
        );
        assert!(
            set.word((1, 0x9000)).gate,
            "a plain mutex word is its own gate"
        );
        assert!(!set.word((1, 0x1030)).gate);
    }

    #[test]
    fn lock_override_makes_that_lock_primary() {
        let set = gil_like().finish(Some(0x9000));
        assert_eq!(set.primary().unwrap().addr, 0x9000);
    }
}
