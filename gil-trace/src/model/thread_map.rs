//! A map keyed by thread id, for the trackers that look a thread up on every event.
//!
//! Linux thread ids are small integers (below `pid_max`, at most 2^22), so a two-level
//! direct index — a page number per 1024 ids, then a slot per id — finds a thread with three
//! dependent loads and no hashing or probing. Values are stored densely, so memory grows with
//! the threads seen (plus 4 KiB per 1024-id page touched), never with the events.
use std::cell::Cell;

use rustc_hash::FxHashMap;

/// Ids per index page.
const PAGE: usize = 1024;
/// Ids at or above this (only in damaged or hand-made traces) go through a hash map.
const DIRECT_LIMIT: u32 = 1 << 22;
/// "No entry" in the index (entries hold position + 1).
const NONE: u32 = 0;

pub struct ThreadMap<V> {
    /// Page number + 1 for each block of [`PAGE`] ids.
    pages_of: Vec<u32>,
    /// Value position + 1 for each id of a page.
    pages: Vec<[u32; PAGE]>,
    /// Ids at or above [`DIRECT_LIMIT`]: value position + 1.
    far: FxHashMap<u32, u32>,
    values: Vec<(u32, V)>,
    /// The last id found and its position + 1: an event's trackers ask for the same thread
    /// several times in a row.
    last: Cell<(u32, u32)>,
}

impl<V> Default for ThreadMap<V> {
    fn default() -> Self {
        ThreadMap {
            pages_of: Vec::new(),
            pages: Vec::new(),
            far: FxHashMap::default(),
            values: Vec::new(),
            last: Cell::new((0, NONE)),
        }
    }
}

impl<V> ThreadMap<V> {
    /// Position + 1 of `tid`'s value, or [`NONE`].
    #[inline(always)]
    fn position(&self, tid: u32) -> u32 {
        let (last_tid, last_at) = self.last.get();
        if last_tid == tid && last_at != NONE {
            return last_at;
        }
        let at = self.lookup(tid);
        self.last.set((tid, at));
        at
    }

    #[inline(always)]
    fn lookup(&self, tid: u32) -> u32 {
        if tid >= DIRECT_LIMIT {
            return self.far.get(&tid).copied().unwrap_or(NONE);
        }
        match self.pages_of.get(tid as usize / PAGE) {
            Some(&page) if page != NONE => self.pages[page as usize - 1][tid as usize % PAGE],
            _ => NONE,
        }
    }

    /// The index entry for `tid`, creating its page if needed.
    fn position_mut(&mut self, tid: u32) -> &mut u32 {
        if tid >= DIRECT_LIMIT {
            return self.far.entry(tid).or_insert(NONE);
        }
        let page_no = tid as usize / PAGE;
        if page_no >= self.pages_of.len() {
            self.pages_of.resize(page_no + 1, NONE);
        }
        if self.pages_of[page_no] == NONE {
            self.pages.push([NONE; PAGE]);
            self.pages_of[page_no] = self.pages.len() as u32;
        }
        let page = self.pages_of[page_no] as usize - 1;
        &mut self.pages[page][tid as usize % PAGE]
    }

    #[inline(always)]
    pub fn get(&self, tid: u32) -> Option<&V> {
        match self.position(tid) {
            NONE => None,
            at => Some(&self.values[at as usize - 1].1),
        }
    }

    #[inline(always)]
    pub fn get_mut(&mut self, tid: u32) -> Option<&mut V> {
        match self.position(tid) {
            NONE => None,
            at => Some(&mut self.values[at as usize - 1].1),
        }
    }

    /// `tid`'s value, inserting `make()` first if there is none.
    #[inline(always)]
    pub fn get_or_insert_with(&mut self, tid: u32, make: impl FnOnce() -> V) -> &mut V {
        let at = match self.position(tid) {
            NONE => self.insert(tid, make),
            at => at,
        };
        &mut self.values[at as usize - 1].1
    }

    /// Out of line, value built here: keeps the callers' hot paths small.
    #[cold]
    #[inline(never)]
    fn insert(&mut self, tid: u32, make: impl FnOnce() -> V) -> u32 {
        self.last.set((0, NONE));
        self.values.push((tid, make()));
        let at = self.values.len() as u32;
        *self.position_mut(tid) = at;
        at
    }

    pub fn remove(&mut self, tid: u32) -> Option<V> {
        let at = match self.position(tid) {
            NONE => return None,
            at => at as usize - 1,
        };
        *self.position_mut(tid) = NONE;
        self.last.set((0, NONE));
        let (_, value) = self.values.swap_remove(at);
        if let Some(&(moved, _)) = self.values.get(at) {
            *self.position_mut(moved) = at as u32 + 1;
        }
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Entries in insertion order (until a removal moves the last one into the gap).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &V)> {
        self.values.iter().map(|(tid, v)| (*tid, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut V)> {
        self.values.iter_mut().map(|(tid, v)| (*tid, v))
    }

    pub fn tids(&self) -> impl Iterator<Item = u32> + '_ {
        self.values.iter().map(|(tid, _)| *tid)
    }

    pub fn into_entries(self) -> impl Iterator<Item = (u32, V)> {
        self.values.into_iter()
    }
}

impl<V: Default> ThreadMap<V> {
    #[inline(always)]
    pub fn get_or_default(&mut self, tid: u32) -> &mut V {
        self.get_or_insert_with(tid, V::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_hash_map_for_any_ids_including_removals() {
        let mut map: ThreadMap<u64> = ThreadMap::default();
        let mut reference: std::collections::HashMap<u32, u64> = Default::default();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..50_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Mostly real-looking tids, some near page edges, some far beyond pid_max.
            let tid = match state % 10 {
                0 => u32::MAX - (state >> 40) as u32 % 3,
                1 => DIRECT_LIMIT - 1 + (state >> 40) as u32 % 3,
                2 => (PAGE as u32) * ((state >> 20) as u32 % 8),
                _ => 1 + (state >> 32) as u32 % 40_000,
            };
            match (state >> 8) % 4 {
                0 => assert_eq!(map.remove(tid), reference.remove(&tid), "step {step}"),
                1 => assert_eq!(map.get(tid), reference.get(&tid), "step {step}"),
                _ => {
                    *map.get_or_default(tid) += step;
                    *reference.entry(tid).or_default() += step;
                }
            }
            assert_eq!(map.len(), reference.len());
        }
        let mut all: Vec<(u32, u64)> = map.iter().map(|(t, v)| (t, *v)).collect();
        let mut expected: Vec<(u32, u64)> = reference.into_iter().collect();
        all.sort_unstable();
        expected.sort_unstable();
        assert_eq!(all, expected);
    }
}
