//! A table of futex traffic per word: what lock identification needs, and nothing else.
//!
//! The writer keeps it while recording (like the thread table and the per-kind counts) and
//! stores it in the trailer, so a report can identify locks without a first pass over the
//! events; a reader of an older trace (or of a time window) builds the same table in a pass.
use std::collections::BTreeSet;

use gil_trace_common::{EventKind, RawEvent};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{
    event::{futex_exit_ret, FutexCall},
    Event, EventData,
};

/// A futex word: (process, address).
pub type WordKey = (u32, u64);

pub const ETIMEDOUT: i64 = -110;
pub const EAGAIN: i64 = -11;

/// Ops of one thread on two words closer than this in time count as "used together".
pub const TOGETHER_NS: u64 = 50_000;

/// Above this size (JSON) the table is left out of the trailer; readers then build it in a
/// pass of their own. Typical programs have tens of words (CPython: a handful).
pub const MAX_STORED_INDEX_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WordStats {
    pub tgid: u32,
    pub addr: u64,
    pub waits: u64,
    /// Waits with a timeout (condvar-style "gate" words).
    pub timed_waits: u64,
    pub wait_ns: u64,
    pub timeouts: u64,
    pub wakes: u64,
    /// Threads woken by wakes on this word (sum of the wake calls' return values).
    pub woken: u64,
    /// Left out of reports (which list thread counts); kept in the stored table.
    #[serde(skip_serializing, default)]
    pub waiters: BTreeSet<u32>,
    #[serde(skip_serializing, default)]
    pub users: BTreeSet<u32>,
}

#[derive(Default)]
struct PerThread {
    /// The thread's process, once an event said (some sources give 0).
    tgid: u32,
    /// The futex call in progress: word, is_wait, enter time.
    current: Option<(WordKey, bool, u64)>,
    /// Last finished futex op: word and exit time.
    last: Option<(WordKey, u64)>,
    /// The last two words this thread is already in the `users` (and, when `true`, the
    /// `waiters`) of: a thread uses the same word or two over and over, and the recorder
    /// keeps this table for every event, so the set inserts are skipped for them.
    noted: [Option<(WordKey, bool)>; 2],
}

impl PerThread {
    fn is_noted(&self, key: WordKey, wait: bool) -> bool {
        self.noted
            .iter()
            .flatten()
            .any(|&(k, waiter)| k == key && (waiter || !wait))
    }

    fn note(&mut self, key: WordKey, wait: bool) {
        match self
            .noted
            .iter()
            .position(|n| n.is_some_and(|(k, _)| k == key))
        {
            Some(i) => self.noted[i] = Some((key, wait)),
            None => self.noted = [Some((key, wait)), self.noted[0]],
        }
    }
}

/// The table being built (events in per-thread order; global order is not needed).
#[derive(Default)]
pub struct FutexIndex {
    words: FxHashMap<WordKey, WordStats>,
    together: FxHashMap<(WordKey, WordKey), u64>,
    threads: FxHashMap<u32, PerThread>,
}

/// The stored form (trailer key `futex_index`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredFutexIndex {
    pub words: Vec<StoredWord>,
    /// `[[tgid_a, addr_a], [tgid_b, addr_b], times]`: one thread used b right after a.
    pub together: Vec<(WordKey, WordKey, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredWord {
    #[serde(flatten)]
    pub stats: WordStats,
    pub waiters: Vec<u32>,
    pub users: Vec<u32>,
}

impl FutexIndex {
    /// The kinds [`FutexIndex::observe`] reads.
    pub const KINDS: [EventKind; 3] = [
        EventKind::FutexEnter,
        EventKind::FutexExit,
        EventKind::ProcessExit,
    ];

    /// As [`FutexIndex::observe`], on the raw record: the recorder calls it for every event,
    /// so it decodes only the fields it reads.
    #[inline]
    pub fn observe_raw(&mut self, raw: &RawEvent) {
        match EventKind::try_from(raw.kind) {
            Ok(EventKind::FutexEnter) => {
                self.enter(
                    raw.tid,
                    raw.tgid,
                    raw.ts_ns,
                    &FutexCall::from_args(raw.args),
                );
            }
            Ok(EventKind::FutexExit) => {
                self.exit(raw.tid, raw.tgid, raw.ts_ns, futex_exit_ret(raw.args));
            }
            Ok(EventKind::ProcessExit) => self.thread_exit(raw.tid),
            _ => {}
        }
    }

    pub fn observe(&mut self, ev: &Event) {
        match ev.data {
            EventData::FutexEnter(call) => self.enter(ev.tid, ev.tgid, ev.ts_ns, &call),
            EventData::FutexExit { ret, .. } => self.exit(ev.tid, ev.tgid, ev.ts_ns, ret),
            EventData::Exit { .. } => self.thread_exit(ev.tid),
            _ => {}
        }
    }

    /// The thread's state, its process learned from `tgid` when given.
    fn thread(&mut self, tid: u32, tgid: u32) -> &mut PerThread {
        let t = self.threads.entry(tid).or_default();
        if tgid != 0 {
            t.tgid = tgid;
        }
        t
    }

    fn enter(&mut self, tid: u32, tgid: u32, ts_ns: u64, call: &FutexCall) {
        let t = self.threads.entry(tid).or_default();
        if tgid != 0 {
            t.tgid = tgid;
        }
        let key = (t.tgid, call.uaddr);
        let wait = call.is_wait();
        if let Some((prev, exit)) = t.last {
            if prev != key && ts_ns.saturating_sub(exit) <= TOGETHER_NS {
                let pair = if prev < key { (prev, key) } else { (key, prev) };
                *self.together.entry(pair).or_default() += 1;
            }
        }
        t.current = Some((key, wait, ts_ns));
        let noted = t.is_noted(key, wait);
        if !noted {
            t.note(key, wait);
        }
        let stats = self.words.entry(key).or_insert_with(|| WordStats {
            tgid: key.0,
            addr: call.uaddr,
            ..Default::default()
        });
        if !noted {
            stats.users.insert(tid);
            if wait {
                stats.waiters.insert(tid);
            }
        }
        if wait {
            stats.waits += 1;
            stats.timed_waits += u64::from(call.has_timeout);
        }
        if call.is_wake() {
            stats.wakes += 1;
        }
    }

    fn exit(&mut self, tid: u32, tgid: u32, ts_ns: u64, ret: i64) {
        let t = self.thread(tid, tgid);
        if let Some((key, wait, enter)) = t.current.take() {
            t.last = Some((key, ts_ns));
            if let Some(stats) = self.words.get_mut(&key) {
                if wait {
                    stats.wait_ns += ts_ns.saturating_sub(enter);
                    if ret == ETIMEDOUT {
                        stats.timeouts += 1;
                    }
                } else if ret > 0 {
                    stats.woken += ret as u64;
                }
            }
        }
    }

    /// A thread ended: its calls are over, and its id may be reused by another process.
    fn thread_exit(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }

    pub fn words(&self) -> impl Iterator<Item = &WordStats> {
        self.words.values()
    }

    /// Pairs of words one thread used in quick succession, and how often.
    pub fn together(&self) -> impl Iterator<Item = (&(WordKey, WordKey), u64)> {
        self.together.iter().map(|(k, &n)| (k, n))
    }

    /// The stored form, in a stable order; `None` when it would exceed
    /// [`MAX_STORED_INDEX_BYTES`].
    pub fn to_stored(&self) -> Option<StoredFutexIndex> {
        let mut words: Vec<StoredWord> = self
            .words
            .values()
            .map(|w| StoredWord {
                // The sets travel as the lists below (they are not serialized inside stats).
                stats: WordStats {
                    waiters: BTreeSet::new(),
                    users: BTreeSet::new(),
                    ..w.clone()
                },
                waiters: w.waiters.iter().copied().collect(),
                users: w.users.iter().copied().collect(),
            })
            .collect();
        words.sort_by_key(|w| (w.stats.tgid, w.stats.addr));
        let mut together: Vec<_> = self
            .together
            .iter()
            .map(|(&(a, b), &n)| (a, b, n))
            .collect();
        together.sort_unstable();
        let stored = StoredFutexIndex { words, together };
        let size = serde_json::to_vec(&stored).map_or(usize::MAX, |v| v.len());
        (size <= MAX_STORED_INDEX_BYTES).then_some(stored)
    }

    /// A finished table read back from a trailer.
    pub fn from_stored(stored: StoredFutexIndex) -> FutexIndex {
        let words = stored
            .words
            .into_iter()
            .map(|w| {
                let mut stats = w.stats;
                stats.waiters = w.waiters.into_iter().collect();
                stats.users = w.users.into_iter().collect();
                ((stats.tgid, stats.addr), stats)
            })
            .collect();
        let together = stored
            .together
            .into_iter()
            .map(|(a, b, n)| ((a, b), n))
            .collect();
        FutexIndex {
            words,
            together,
            ..Default::default()
        }
    }
}

/// Futex events for unit tests (here and in `model::locks`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{futex, futex_exit as exit};

    /// Threads switching among a few words (more than the per-thread cache of two), waits
    /// and wakes, exits and reused tids, as raw records.
    fn random_futex_traffic() -> Vec<RawEvent> {
        let mut events = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..40_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let tid = 10 + (state % 40) as u32;
            let tgid = if i > 20_000 && tid.is_multiple_of(5) {
                7
            } else {
                3
            };
            let (kind, args) = match (state >> 20) % 9 {
                0..=3 => {
                    let op = [128u64, 129, 137, 0][(state >> 30) as usize % 4];
                    let word = 0x1000 + 8 * ((state >> 34) % 5);
                    (
                        EventKind::FutexEnter,
                        [word, op, 0, (state >> 40 & 1) << 32],
                    )
                }
                4..=7 => {
                    let ret = [0u64, 1, ETIMEDOUT as u64][(state >> 30) as usize % 3];
                    (EventKind::FutexExit, [ret, 0, 0, 0])
                }
                _ => (EventKind::ProcessExit, [0, 0, 0, 0]),
            };
            events.push(RawEvent {
                ts_ns: i * 1_000,
                kind: kind as u32,
                tid,
                tgid,
                cpu: 0,
                args,
            });
        }
        events
    }

    #[test]
    fn the_raw_fast_path_builds_the_same_table_as_full_decoding() {
        let events = random_futex_traffic();
        let (mut fast, mut full) = (FutexIndex::default(), FutexIndex::default());
        for raw in &events {
            fast.observe_raw(raw);
            full.observe(&Event::from(*raw));
        }
        assert_eq!(fast.to_stored(), full.to_stored());
    }

    #[test]
    fn every_thread_that_used_or_waited_on_a_word_is_listed_despite_the_per_thread_cache() {
        let events = random_futex_traffic();
        let mut index = FutexIndex::default();
        let mut users = std::collections::BTreeMap::<WordKey, BTreeSet<u32>>::new();
        let mut waiters = std::collections::BTreeMap::<WordKey, BTreeSet<u32>>::new();
        for raw in &events {
            index.observe_raw(raw);
            if raw.kind == EventKind::FutexEnter as u32 {
                let call = FutexCall::from_args(raw.args);
                let key = (raw.tgid, call.uaddr);
                users.entry(key).or_default().insert(raw.tid);
                if call.is_wait() {
                    waiters.entry(key).or_default().insert(raw.tid);
                }
            }
        }
        let stored = index.to_stored().expect("small table is stored");
        assert_eq!(stored.words.len(), users.len());
        for word in &stored.words {
            let key = (word.stats.tgid, word.stats.addr);
            let expected_users: Vec<u32> = users[&key].iter().copied().collect();
            let expected_waiters: Vec<u32> = waiters
                .get(&key)
                .map(|w| w.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(word.users, expected_users, "users of {key:x?}");
            assert_eq!(word.waiters, expected_waiters, "waiters of {key:x?}");
        }
    }

    #[test]
    fn the_stored_table_reads_back_equal() {
        const WAIT: u32 = 128; // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
        const WAKE: u32 = 129;
        let mut index = FutexIndex::default();
        for (i, tid) in [10u32, 11, 12].into_iter().cycle().take(30).enumerate() {
            let ts = i as u64 * 1_000;
            index.observe(&futex(ts, tid, 0x1000, WAIT));
            index.observe(&exit(ts + 400, tid, if i % 4 == 0 { ETIMEDOUT } else { 0 }));
            index.observe(&futex(ts + 500, tid, 0x1008, WAKE));
            index.observe(&exit(ts + 600, tid, 1));
        }
        let stored = index.to_stored().expect("small table is stored");
        let json = serde_json::to_string(&stored).unwrap();
        let back: StoredFutexIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
        let again = FutexIndex::from_stored(back);
        let mut a: Vec<_> = index.words().cloned().collect();
        let mut b: Vec<_> = again.words().cloned().collect();
        a.sort_by_key(|w| w.addr);
        b.sort_by_key(|w| w.addr);
        assert_eq!(a, b);
        assert_eq!(a[0].users.len(), 3);
        assert_eq!(a[0].timeouts, 8);
        let mut ta: Vec<_> = index.together().map(|(k, n)| (*k, n)).collect();
        let mut tb: Vec<_> = again.together().map(|(k, n)| (*k, n)).collect();
        ta.sort_unstable();
        tb.sort_unstable();
        assert_eq!(ta, tb);
        assert!(!ta.is_empty());
    }
}
