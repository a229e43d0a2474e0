//! Streams events to disk in checksummed blocks; the file appears under its final name only
//! once complete (written to a temporary name, synced, renamed: see `output.rs`).
use std::{
    collections::{BTreeMap, VecDeque},
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use gil_trace_common::{CommSource, EventKind, RawEvent, DROP_SLOTS};

use super::{
    event::{Event, EventData},
    format::{
        put_record_v2, ThreadInfo, TraceMeta, TraceTrailer, BLOCK_HEADER_LEN, BLOCK_TARGET_LEN,
        FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, MAGIC, MAX_META_LEN, MAX_RECORD_LEN_V2, TAG_CODE,
        TAG_EVENTS, TAG_TRAILER,
    },
    futex_index::FutexIndex,
    output::TempTrace,
    TraceError,
};

/// Thread names and processes learned from the event stream (for the trailer's table).
#[derive(Debug)]
pub struct ThreadTable {
    threads: BTreeMap<u32, ThreadInfo>,
    /// `tid << 32 | tgid` of threads already in the table, direct-mapped by tid: the recorder
    /// calls `observe_raw` for every event, and almost all of them are from known threads.
    seen: Box<[u64; SEEN_SLOTS]>,
}

const SEEN_SLOTS: usize = 1024;

impl Default for ThreadTable {
    fn default() -> Self {
        ThreadTable {
            threads: BTreeMap::new(),
            seen: Box::new([0; SEEN_SLOTS]),
        }
    }
}

impl ThreadTable {
    /// As [`Self::observe`], on the raw record: only names and forks need decoding; every
    /// other kind just says "this thread (of that process) exists".
    pub fn observe_raw(&mut self, raw: &RawEvent) {
        match EventKind::try_from(raw.kind) {
            Ok(EventKind::Comm | EventKind::ProcessFork) => self.observe(&Event::from(*raw)),
            Ok(EventKind::SchedSwitch) => {
                let (prev_traced, next_traced) = (raw.args[3] & 1 != 0, raw.args[3] & 2 != 0);
                if next_traced {
                    self.see(raw.args[0] as u32, 0);
                }
                if prev_traced {
                    self.see(raw.tid, raw.tgid);
                }
            }
            Ok(EventKind::SchedWaking) => self.see(raw.args[0] as u32, 0),
            Ok(_) => self.see(raw.tid, raw.tgid),
            Err(_) => {}
        }
    }

    /// The thread exists; `tgid` (when not 0) is its process.
    #[inline]
    fn see(&mut self, tid: u32, tgid: u32) {
        if tid == 0 {
            return;
        }
        let slot = &mut self.seen[tid as usize % SEEN_SLOTS];
        if (*slot >> 32) as u32 == tid && (tgid == 0 || *slot as u32 == tgid) {
            return;
        }
        let entry = self.threads.entry(tid).or_insert_with(|| ThreadInfo {
            tid,
            ..Default::default()
        });
        if tgid != 0 {
            entry.tgid = tgid;
        }
        *slot = u64::from(tid) << 32 | u64::from(entry.tgid);
    }

    /// Learns from one event. Only traced threads enter the table: a switch names untraced
    /// tasks too (its flags say which side is traced) and a waker may be any task.
    pub fn observe(&mut self, ev: &Event) {
        let subject_traced = match ev.data {
            EventData::Comm { name, source } => {
                let entry = self.entry(ev.tid);
                entry.name = Event::comm_name(&name);
                if source != CommSource::Rename && ev.tgid != 0 {
                    entry.tgid = ev.tgid;
                }
                return;
            }
            EventData::Fork { child } => {
                let parent_name = self
                    .threads
                    .get(&ev.tid)
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                let child = self.entry(child);
                if child.name.is_empty() {
                    child.name = parent_name;
                }
                true
            }
            EventData::Switch {
                next_tid,
                prev_traced,
                next_traced,
                ..
            } => {
                if next_traced {
                    self.entry(next_tid);
                }
                prev_traced
            }
            EventData::Waking { wakee, .. } => {
                self.entry(wakee);
                false
            }
            EventData::Unknown { .. } => false,
            _ => true,
        };
        if subject_traced && ev.tid != 0 {
            let tgid = ev.tgid;
            let entry = self.entry(ev.tid);
            if tgid != 0 {
                entry.tgid = tgid;
            }
        }
    }

    fn entry(&mut self, tid: u32) -> &mut ThreadInfo {
        self.threads.entry(tid).or_insert_with(|| ThreadInfo {
            tid,
            ..Default::default()
        })
    }

    pub fn into_vec(self) -> Vec<ThreadInfo> {
        self.threads.into_values().collect()
    }
}

/// Writes one trace file. Dropping it without [`TraceWriter::finish`] removes the temporary file.
pub struct TraceWriter {
    out: Option<BufWriter<File>>,
    temp: Option<TempTrace>,
    final_path: PathBuf,
    block: Vec<u8>,
    block_events: u32,
    block_base_ts: u64,
    prev_ts: u64,
    counts: [u64; DROP_SLOTS as usize],
    unknown_kinds: u64,
    events: u64,
    offset: u64,
    threads: ThreadTable,
    futex: FutexIndex,
    /// Events not yet encoded, in timestamp order, held for [`ORDER_HOLDBACK_NS`].
    pending: VecDeque<RawEvent>,
    /// Latest timestamp pushed.
    max_ts: u64,
    /// Written between the events and the trailer.
    code: Option<super::code::CodeMap>,
}

/// The writer holds events this long (in trace time) before encoding them, sorted: the ring
/// buffer delivers events in reservation order, which trails timestamp order by a few µs (an
/// interrupt's program between another's clock read and its write), and a syscall's entry
/// comes with its exit (`CallPair`), as late as the call's time on its CPU. Files are then in
/// timestamp order, and readers need no sort window. A straggler later than this is written
/// out of order; readers clamp it (and count it).
pub const ORDER_HOLDBACK_NS: u64 = 10_000_000;

/// Where an event stamped `ts` goes in `held` (sorted by time): after every event stamped
/// `ts` or earlier. Gallops from the back, then bisects: an early event is usually a few
/// positions from the end, and a bisection of the whole holdback (tens of thousands of
/// events) was the recorder's hottest loop.
fn insertion_point_from_back(held: &VecDeque<RawEvent>, ts: u64) -> usize {
    let len = held.len();
    // Invariant: every event at `hi..` is stamped later than `ts`.
    let mut hi = len;
    let mut step = 1;
    loop {
        let probe = hi.saturating_sub(step);
        if probe == 0 || held[probe].ts_ns <= ts {
            // Bisect `probe..hi`: the answer is after the last event stamped `ts` or earlier.
            let (mut lo, mut hi) = (probe, hi);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if held[mid].ts_ns <= ts {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return lo;
        }
        hi = probe;
        step *= 2;
    }
}

impl TraceWriter {
    /// Creates the trace under a temporary name beside `final_path` (see [`TempTrace`]) and
    /// writes the header; [`Self::finish`] renames it into place.
    pub fn create(final_path: &Path, meta: &TraceMeta) -> Result<TraceWriter, TraceError> {
        Self::to_temp(TempTrace::create(final_path)?, meta)
    }

    /// Writes into `temp`, created by the caller (e.g. as another user).
    pub fn to_temp(temp: TempTrace, meta: &TraceMeta) -> Result<TraceWriter, TraceError> {
        let final_path = temp.final_path().to_path_buf();
        let file = temp.file().try_clone().map_err(|source| TraceError::Io {
            path: final_path.clone(),
            what: "cannot open the output file",
            source,
        })?;
        let mut writer = TraceWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp: Some(temp),
            final_path,
            block: Vec::with_capacity(BLOCK_TARGET_LEN + 1024),
            block_events: 0,
            block_base_ts: 0,
            prev_ts: 0,
            counts: [0; DROP_SLOTS as usize],
            unknown_kinds: 0,
            events: 0,
            offset: 0,
            threads: ThreadTable::default(),
            futex: FutexIndex::default(),
            pending: VecDeque::with_capacity(4096),
            max_ts: 0,
            code: None,
        };
        // What this writer produces, whatever the given meta (e.g. of an older file) says.
        let meta = TraceMeta {
            events_ordered: true,
            format_version: FORMAT_VERSION,
            ..meta.clone()
        };
        let meta_json = serde_json::to_vec(&meta).expect("meta serializes");
        let mut header = Vec::with_capacity(meta_json.len() + 20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&meta_json).to_le_bytes());
        header.extend_from_slice(&meta_json);
        writer.write_all(&header)?;
        Ok(writer)
    }

    /// The final path the trace will have.
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        let out = self.out.as_mut().expect("writer is open");
        out.write_all(bytes).map_err(|source| TraceError::Io {
            path: self.final_path.clone(),
            what: "writing the trace failed",
            source,
        })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// The earliest time an event pushed now is still put in its place (earlier ones are
    /// written out of order).
    pub fn holdback_floor(&self) -> u64 {
        self.max_ts.saturating_sub(ORDER_HOLDBACK_NS)
    }

    /// Appends one event (tables and counts now; encoded once the holdback has passed).
    pub fn push(&mut self, raw: &RawEvent) -> Result<(), TraceError> {
        self.events += 1;
        match EventKind::try_from(raw.kind) {
            Ok(kind) => self.counts[kind as usize] += 1,
            Err(_) => self.unknown_kinds += 1,
        }
        self.max_ts = self.max_ts.max(raw.ts_ns);
        // Almost always in order: appended. An early one (a syscall's entry comes with its
        // exit) is inserted after the held events with the same or an earlier stamp
        // (stable); it is only a few positions from the end, so the search starts there.
        match self.pending.back() {
            Some(back) if back.ts_ns > raw.ts_ns => {
                let at = insertion_point_from_back(&self.pending, raw.ts_ns);
                self.pending.insert(at, *raw);
            }
            _ => self.pending.push_back(*raw),
        }
        let limit = self.max_ts.saturating_sub(ORDER_HOLDBACK_NS);
        while self.pending.front().is_some_and(|e| e.ts_ns < limit) {
            let raw = self.pending.pop_front().expect("front exists");
            self.encode(&raw)?;
        }
        Ok(())
    }

    fn encode(&mut self, raw: &RawEvent) -> Result<(), TraceError> {
        // Both tables need each thread's events in order, which arrival order does not keep:
        // CPUs write their events in batches, so a call's exit on one CPU can arrive before
        // its entry, still gathered on another. Encoding sees them sorted.
        self.threads.observe_raw(raw);
        self.futex.observe_raw(raw);
        if self.block_events == 0 {
            self.block_base_ts = raw.ts_ns;
            self.prev_ts = raw.ts_ns;
        }
        // Encoded into a stack buffer, then appended once: a `Vec::push` per byte (with its
        // capacity check) made this the recorder's hottest loop.
        let mut record = [0u8; MAX_RECORD_LEN_V2 + 8];
        let len = put_record_v2(
            &mut record,
            raw,
            raw.ts_ns.wrapping_sub(self.prev_ts) as i64,
        );
        self.block.extend_from_slice(&record[..len]);
        self.prev_ts = raw.ts_ns;
        self.block_events += 1;
        if self.block.len() >= BLOCK_TARGET_LEN {
            self.flush_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self, tag: u8, payload_parts: &[&[u8]]) -> Result<(), TraceError> {
        let len: usize = payload_parts.iter().map(|p| p.len()).sum();
        let mut hasher = crc32fast::Hasher::new();
        for part in payload_parts {
            hasher.update(part);
        }
        let mut header = [0u8; BLOCK_HEADER_LEN as usize];
        header[0] = tag;
        header[1..5].copy_from_slice(&(len as u32).to_le_bytes());
        header[5..9].copy_from_slice(&hasher.finalize().to_le_bytes());
        self.write_all(&header)?;
        for part in payload_parts {
            self.write_all(part)?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), TraceError> {
        if self.block_events == 0 {
            return Ok(());
        }
        let mut prefix = [0u8; 12];
        prefix[..4].copy_from_slice(&self.block_events.to_le_bytes());
        prefix[4..].copy_from_slice(&self.block_base_ts.to_le_bytes());
        let block = std::mem::take(&mut self.block);
        let result = self.write_block(TAG_EVENTS, &[&prefix, &block]);
        self.block = block;
        self.block.clear();
        self.block_events = 0;
        result
    }

    /// Per-kind counts of what was written (kind name → n), for the trailer and live status.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut map: BTreeMap<String, u64> = EventKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), self.counts[*k as usize]))
            .collect();
        if self.unknown_kinds > 0 {
            map.insert("unknown".into(), self.unknown_kinds);
        }
        map
    }

    /// The code block the trace will carry (mappings, modules, user stacks).
    pub fn set_code_map(&mut self, code: super::code::CodeMap) {
        self.code = Some(code);
    }

    /// Writes the trailer and footer, syncs, and renames the file into place.
    /// `trailer.counts`, `.events` and `.threads` are filled in here.
    pub fn finish(self, trailer: TraceTrailer) -> Result<PathBuf, TraceError> {
        self.finish_unpersisted(trailer)?.persist(false)
    }

    /// [`Self::finish`] but for the rename, left to the caller (who may have to make it as
    /// another user, and keep the previous file).
    pub fn finish_unpersisted(
        mut self,
        mut trailer: TraceTrailer,
    ) -> Result<TempTrace, TraceError> {
        while let Some(raw) = self.pending.pop_front() {
            self.encode(&raw)?;
        }
        self.flush_block()?;
        trailer.counts = self.counts();
        trailer.events = self.events;
        let mut threads = std::mem::take(&mut self.threads).into_vec();
        // Userspace-known threads (e.g. from /proc) may be richer: keep the stream's view but
        // fill blanks from what the caller passed.
        for known in &trailer.threads {
            if let Some(t) = threads.iter_mut().find(|t| t.tid == known.tid) {
                if t.name.is_empty() {
                    t.name.clone_from(&known.name);
                }
                if t.tgid == 0 {
                    t.tgid = known.tgid;
                }
            } else {
                threads.push(known.clone());
            }
        }
        threads.sort_by_key(|t| t.tid);
        trailer.threads = threads;
        trailer.futex_index = self.futex.to_stored();
        if let Some(code) = self.code.take().filter(|c| !c.is_empty()) {
            trailer.code_block_offset = Some(self.offset);
            let json = serde_json::to_vec(&code).expect("code map serializes");
            self.write_block(TAG_CODE, &[&json])?;
        }
        let mut json = serde_json::to_vec(&trailer).expect("trailer serializes");
        if json.len() > MAX_META_LEN as usize && trailer.futex_index.is_some() {
            // Readers can rebuild the index; they cannot read an oversized trailer.
            trailer.futex_index = None;
            json = serde_json::to_vec(&trailer).expect("trailer serializes");
        }
        let trailer_offset = self.offset;
        self.write_block(TAG_TRAILER, &[&json])?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..8].copy_from_slice(&trailer_offset.to_le_bytes());
        footer[8..].copy_from_slice(FOOTER_MAGIC);
        self.write_all(&footer)?;
        let io_err = |what, source| TraceError::Io {
            path: self.final_path.clone(),
            what,
            source,
        };
        let out = self.out.as_mut().expect("writer is open");
        out.flush()
            .map_err(|e| io_err("writing the trace failed", e))?;
        out.get_ref()
            .sync_all()
            .map_err(|e| io_err("syncing the trace failed", e))?;
        self.out = None;
        Ok(self
            .temp
            .take()
            .expect("the temporary file lives until finished"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_event_goes_after_every_held_event_stamped_the_same_or_earlier() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in [0usize, 1, 2, 3, 7, 64, 1000] {
            // Stamps with runs of equal values, so stability is tested too.
            let held: VecDeque<RawEvent> = (0..len as u64)
                .map(|i| RawEvent {
                    ts_ns: 100 + (i / 3) * 10,
                    ..Default::default()
                })
                .collect();
            for _ in 0..200 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let ts = state % (120 + len as u64 * 4);
                let expected = held.partition_point(|e| e.ts_ns <= ts);
                assert_eq!(
                    insertion_point_from_back(&held, ts),
                    expected,
                    "{len} held, {ts}"
                );
            }
        }
    }

    #[test]
    fn the_raw_fast_path_builds_the_same_thread_table_as_full_decoding() {
        // Many threads (more than the cache's slots, so slots collide), a tgid change (exec
        // by a non-leader thread), names, forks, switches naming untraced tasks.
        let mut events = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..50_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let tid = 100 + (state % 3000) as u32;
            let tgid = if i > 25_000 && tid.is_multiple_of(7) {
                tid
            } else {
                100
            };
            let kinds = [
                EventKind::SchedSwitch,
                EventKind::SchedWaking,
                EventKind::FutexEnter,
                EventKind::Comm,
                EventKind::ProcessFork,
                EventKind::ProcessExit,
            ];
            let kind = kinds[(state >> 20) as usize % kinds.len()];
            events.push(RawEvent {
                ts_ns: i,
                kind: kind as u32,
                tid,
                tgid: if state & 0x100 == 0 { tgid } else { 0 },
                cpu: 0,
                args: [
                    100 + (state >> 30) % 3500,
                    state >> 8 & 0xffff,
                    (state >> 40) % 3,
                    state >> 50 & 3,
                ],
            });
        }
        let (mut fast, mut full) = (ThreadTable::default(), ThreadTable::default());
        for raw in &events {
            fast.observe_raw(raw);
            full.observe(&Event::from(*raw));
        }
        assert_eq!(fast.into_vec(), full.into_vec());
    }
}
