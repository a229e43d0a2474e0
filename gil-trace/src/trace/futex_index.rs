//! A table of futex traffic per word: what lock identification needs, and nothing else.
//!
//! The writer keeps it while recording (like the thread table and the per-kind counts) and
//! stores it in the trailer, so a report can identify locks without a first pass over the
//! events; a reader of an older trace (or of a time window) builds the same table in a pass.
use std::collections::BTreeSet;

use gil_trace_common::{EventKind, RawEvent};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Event, EventData};

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
    /// The futex call in progress: word, is_wait, enter time.
    current: Option<(WordKey, bool, u64)>,
    /// Last finished futex op: word and exit time.
    last: Option<(WordKey, u64)>,
}

/// The table being built (events in per-thread order; global order is not needed).
#[derive(Default)]
pub struct FutexIndex {
    words: FxHashMap<WordKey, WordStats>,
    together: FxHashMap<(WordKey, WordKey), u64>,
    threads: FxHashMap<u32, PerThread>,
    tgid_of: FxHashMap<u32, u32>,
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

    /// As [`FutexIndex::observe`], skipping other kinds before decoding them.
    #[inline]
    pub fn observe_raw(&mut self, raw: &RawEvent) {
        if Self::KINDS.iter().any(|&k| k as u32 == raw.kind) {
            self.observe(&Event::from(*raw));
        }
    }

    pub fn observe(&mut self, ev: &Event) {
        if ev.tgid != 0 {
            if let EventData::FutexEnter(_) | EventData::FutexExit { .. } = ev.data {
                self.tgid_of.insert(ev.tid, ev.tgid);
            }
        }
        match ev.data {
            EventData::FutexEnter(call) => {
                let tgid = self.tgid_of.get(&ev.tid).copied().unwrap_or(ev.tgid);
                let key = (tgid, call.uaddr);
                let wait = call.is_wait();
                let stats = self.words.entry(key).or_insert_with(|| WordStats {
                    tgid,
                    addr: call.uaddr,
                    ..Default::default()
                });
                stats.users.insert(ev.tid);
                if wait {
                    stats.waits += 1;
                    stats.timed_waits += u64::from(call.has_timeout);
                    stats.waiters.insert(ev.tid);
                }
                if call.is_wake() {
                    stats.wakes += 1;
                }
                let t = self.threads.entry(ev.tid).or_default();
                if let Some((prev, exit)) = t.last {
                    if prev != key && ev.ts_ns.saturating_sub(exit) <= TOGETHER_NS {
                        let pair = if prev < key { (prev, key) } else { (key, prev) };
                        *self.together.entry(pair).or_default() += 1;
                    }
                }
                t.current = Some((key, wait, ev.ts_ns));
            }
            EventData::FutexExit { ret, .. } => {
                let t = self.threads.entry(ev.tid).or_default();
                if let Some((key, wait, enter)) = t.current.take() {
                    if let Some(stats) = self.words.get_mut(&key) {
                        if wait {
                            stats.wait_ns += ev.ts_ns.saturating_sub(enter);
                            if ret == ETIMEDOUT {
                                stats.timeouts += 1;
                            }
                        } else if ret > 0 {
                            stats.woken += ret as u64;
                        }
                    }
                    t.last = Some((key, ev.ts_ns));
                }
            }
            EventData::Exit { .. } => {
                self.threads.remove(&ev.tid);
            }
            _ => {}
        }
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
