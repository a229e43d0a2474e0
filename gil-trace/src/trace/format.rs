//! Byte layout of a trace file (documented in `docs/trace-format.md`).
//!
//! ```text
//! header : "GILTRACE" | version u32 | meta_len u32 | meta_crc32 u32 | meta (JSON)
//! block* : tag u8 | payload_len u32 | payload_crc32 u32 | payload
//!          tag 'E': count u32 | base_ts u64 | `count` records
//!          tag 'Z': trailer (JSON), always the last block
//! footer : trailer_offset u64 | "GILTEND\0"
//! record : kind varint | ts zigzag-varint delta | tid, tgid, cpu varints |
//!          arg mask u8 | the non-zero args as varints
//! ```
//! All integers little endian. Records are in timestamp order when the header's
//! `events_ordered` says so (the writer holds events briefly to order them); older traces are
//! in arrival order (per-CPU reservations interleave
//! slightly); the reader sorts them with a bounded window.
use std::collections::BTreeMap;

use gil_trace_common::RawEvent;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"GILTRACE";
pub const FOOTER_MAGIC: &[u8; 8] = b"GILTEND\0";
/// Written by this version. 4: version 3, Python samples (`py_sample` events, and the code
/// block's `python` section); 3: version 2 and a code block (mappings, modules, user stacks)
/// between the events and the trailer; 2: records with a length nibble per field (fast to
/// decode); 1: records of LEB128 varints (still read).
pub const FORMAT_VERSION: u32 = 4;
/// The oldest version this reader still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
pub const HEADER_FIXED_LEN: u64 = 8 + 4 + 4 + 4;
pub const BLOCK_HEADER_LEN: u64 = 1 + 4 + 4;
pub const FOOTER_LEN: u64 = 16;
pub const TAG_EVENTS: u8 = b'E';
pub const TAG_TRAILER: u8 = b'Z';
/// The code block (version 3): [`super::code::CodeMap`] as JSON.
pub const TAG_CODE: u8 = b'C';
/// Largest code block a reader accepts.
pub const MAX_CODE_LEN: u32 = 256 * 1024 * 1024;
/// Writers close a block at this size; readers reject larger blocks (no allocation sized by
/// an untrusted length beyond this).
pub const BLOCK_TARGET_LEN: usize = 256 * 1024;
pub const MAX_BLOCK_LEN: u32 = 4 * 1024 * 1024;
pub const MAX_META_LEN: u32 = 1024 * 1024;
/// Smallest possible encoded record (version 2: kind and control word, all fields zero;
/// version 1 is one byte longer).
pub const MIN_RECORD_LEN: usize = 5;
pub const CLOCK_NAME: &str = "CLOCK_MONOTONIC";

/// What the header says about the recording.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub format_version: u32,
    /// Kernel↔user event ABI version of the recorder (`gil_trace_common::ABI_VERSION`).
    pub abi_version: u32,
    /// Clock of every timestamp: always CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub clock: String,
    pub gil_trace_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub cpu_count: u32,
    /// The traced command line (empty when attached with `-p`).
    pub command: Vec<String>,
    /// The root process: the spawned command, or the `-p` target.
    pub root_pid: u32,
    /// True when attached to a running process.
    pub attached: bool,
    pub start_monotonic_ns: u64,
    pub start_unix_ns: u64,
    pub buffer_size_bytes: u64,
    /// Tracepoints attached.
    pub tracepoints: Vec<String>,
    /// Optional tracepoints this kernel lacks (the data they give is absent).
    pub missing_tracepoints: Vec<String>,
    /// Events are in timestamp order (writers since this field; a straggler later than the
    /// writer's holdback may still be out of order). Older traces: false, readers sort.
    #[serde(default)]
    pub events_ordered: bool,
}

/// Events lost in the kernel (ring buffer full) or threads not followed (filter map full).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostCounts {
    pub total: u64,
    /// Kind name → events lost.
    pub by_kind: BTreeMap<String, u64>,
    /// Per CPU: kind name → events lost (only non-zero entries).
    pub by_cpu: Vec<BTreeMap<String, u64>>,
    /// New threads that could not be added to the in-kernel filter (map full).
    pub threads_not_followed: u64,
    /// User stacks the kernel could not store (stack map full, or its bucket taken): those
    /// events are kept without their stack.
    #[serde(default)]
    pub stacks_not_recorded: u64,
}

/// One traced thread.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub tid: u32,
    /// Process id; 0 when no event revealed it.
    pub tgid: u32,
    pub name: String,
}

/// How the traced command ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// What the trailer says: written last, so it holds totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceTrailer {
    pub end_monotonic_ns: u64,
    pub events: u64,
    /// Kind name → events written.
    pub counts: BTreeMap<String, u64>,
    pub lost: LostCounts,
    pub threads: Vec<ThreadInfo>,
    /// Why recording stopped: "exit", "duration", "signal SIGINT", ...
    pub stop_reason: String,
    pub exit: Option<ExitInfo>,
    /// What capturing cost (absent in traces from older recorders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_cost: Option<CaptureCost>,
    /// Futex traffic per word, kept by the writer so lock identification needs no pass over
    /// the events (absent in older traces, or when too large to store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futex_index: Option<super::futex_index::StoredFutexIndex>,
    /// File offset of the code block (version 3; absent when there is none): the events end
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_block_offset: Option<u64>,
}

/// CPU spent capturing: the recorder process, and (with `record --cost`) the eBPF programs
/// as timed by the kernel, over every run including those filtered out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCost {
    /// User + system CPU of the recorder itself (not the traced command), all of it: loading
    /// the programs, recording, and writing the file's tables at the end.
    pub recorder_cpu_ns: u64,
    /// The part of [`Self::recorder_cpu_ns`] spent while recording, from the programs'
    /// attach to the last drain: what competed with the traced program for the CPUs, and
    /// what grows with the events (loading takes ~0.1 s of CPU whatever the trace's length).
    /// `None` in traces from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_cpu_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_run_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_runs: Option<u64>,
    /// The same, per program (only programs that ran).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bpf_programs: Vec<ProgramCost>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramCost {
    pub program: String,
    pub run_ns: u64,
    pub runs: u64,
}

// --- version 2 records ---------------------------------------------------------------------
//
// `kind u8 | control u32 LE | fields`: the control word holds one nibble per field — its
// length in bytes, 0..=8 — for the fields, in order, `zigzag(Δts) | tid | tgid | cpu | args[0..4]`;
// each field is that many little-endian bytes (0 bytes: the value is 0). Unlike a varint
// stream, where each field's length is known only after reading it, every field's position
// follows from the control word, so the fields decode independently.

/// Fields per version-2 record.
const V2_FIELDS: usize = 8;
/// Longest version-2 record: kind, control word, eight 8-byte fields.
pub const MAX_RECORD_LEN_V2: usize = 1 + 4 + V2_FIELDS * 8;

/// Encodes a version-2 record into `out` (which has 8 spare bytes for the last field's
/// whole-word store); returns its length.
#[inline(always)]
pub fn put_record_v2(out: &mut [u8; MAX_RECORD_LEN_V2 + 8], raw: &RawEvent, delta: i64) -> usize {
    out[0] = raw.kind.min(u32::from(u8::MAX)) as u8;
    let fields = [
        zigzag(delta),
        u64::from(raw.tid),
        u64::from(raw.tgid),
        u64::from(raw.cpu),
        raw.args[0],
        raw.args[1],
        raw.args[2],
        raw.args[3],
    ];
    let mut control = 0u32;
    let mut len = 5;
    for (i, v) in fields.into_iter().enumerate() {
        let bytes = (64 - v.leading_zeros()).div_ceil(8) as usize;
        out[len..len + 8].copy_from_slice(&v.to_le_bytes());
        control |= (bytes as u32) << (4 * i);
        len += bytes;
    }
    out[1..5].copy_from_slice(&control.to_le_bytes());
    len
}

/// Per field (one byte each, field 0 lowest), what added to its length sets the byte's top
/// bit exactly when the length is over its maximum (8 bytes; 4 for the tid, tgid and cpu,
/// which are u32s).
const V2_TOO_LONG: u64 = u64::from_le_bytes([
    0x80 - 9,
    0x80 - 5,
    0x80 - 5,
    0x80 - 5,
    0x80 - 9,
    0x80 - 9,
    0x80 - 9,
    0x80 - 9,
]);
const TOP_BITS: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;
/// Bytes a record's fields are decoded from: every field is one 8-byte load at its offset,
/// and offsets are taken modulo 64 (they are at most 44 once the lengths are checked), so
/// every load is inside this window without a check of its own.
const V2_WINDOW: usize = 64 + 8;

/// The low `n` bytes of a word, by `n` (16 entries so any nibble indexes it; 9..=15 are
/// refused before use).
const LOW_BYTES: [u64; 16] = {
    let mut masks = [0u64; 16];
    let mut n = 1;
    while n <= 8 {
        masks[n] = u64::MAX >> (64 - 8 * n);
        n += 1;
    }
    masks
};

/// A version-2 record's head, checked: every field's length is allowed and the record ends
/// by the end of its block.
struct RecordV2Head {
    kind: u8,
    /// Field `i`'s byte length in byte `i`.
    lens: u64,
    /// Where the fields start, and their total length.
    start: usize,
    total: usize,
}

/// The control word's eight 4-bit lengths, one per byte (no per-field loop: the checks, the
/// total and every field's offset then take a few word operations for all eight).
#[inline(always)]
fn nibbles_to_bytes(control: u32) -> u64 {
    let x = u64::from(control);
    let x = (x & 0xffff) | ((x & 0xffff_0000) << 16);
    let x = (x & 0x0000_00ff_0000_00ff) | ((x & 0x0000_ff00_0000_ff00) << 8);
    (x & 0x000f_000f_000f_000f) | ((x & 0x00f0_00f0_00f0_00f0) << 4)
}

#[inline(always)]
fn record_v2_head(buf: &[u8], pos: usize, end: usize) -> Option<RecordV2Head> {
    let head = buf.get(pos..pos + 5)?;
    let lens = nibbles_to_bytes(u32::from_le_bytes(head[1..5].try_into().unwrap()));
    // Sums of lengths below 256 cannot carry from one byte into the next.
    let total = (lens.wrapping_mul(ONES) >> 56) as usize;
    let start = pos + 5;
    if (lens + V2_TOO_LONG) & TOP_BITS != 0 || start + total > end {
        return None;
    }
    Some(RecordV2Head {
        kind: head[0],
        lens,
        start,
        total,
    })
}

/// Steps over one version-2 record at `pos` (checked like [`get_record_v2`]), returning only
/// its timestamp delta: the times are delta-coded, so a pass that wants few kinds must still
/// read every record's delta, but nothing else.
#[inline(always)]
pub fn skip_record_v2(buf: &[u8], pos: &mut usize, end: usize) -> Option<i64> {
    let head = record_v2_head(buf, *pos, end)?;
    let delta_len = (head.lens & 0xf) as usize;
    let mut bytes = [0u8; 8];
    bytes[..delta_len].copy_from_slice(buf.get(head.start..head.start + delta_len)?);
    *pos = head.start + head.total;
    Some(unzigzag(u64::from_le_bytes(bytes)))
}

/// Decodes the version-2 record at `pos`: the event with timestamp 0, and its timestamp
/// delta. `None` if it is malformed or runs past `end`. Fastest when `buf` has
/// [`V2_WINDOW`] readable bytes from the record's fields on (the reader pads its blocks).
#[inline(always)]
pub fn get_record_v2(buf: &[u8], pos: &mut usize, end: usize) -> Option<(RawEvent, i64)> {
    let head = record_v2_head(buf, *pos, end)?;
    // Byte i: the offset of field i from the fields' start (the lengths before it).
    let offsets = (head.lens << 8).wrapping_mul(ONES);
    let fields = |window: &[u8; V2_WINDOW]| -> [u64; V2_FIELDS] {
        std::array::from_fn(|i| {
            let at = (offsets >> (8 * i)) as usize % 64;
            let word = u64::from_le_bytes(window[at..at + 8].try_into().unwrap());
            word & LOW_BYTES[(head.lens >> (8 * i)) as usize & 0xf]
        })
    };
    let fields = if let Some(window) = buf.get(head.start..head.start + V2_WINDOW) {
        fields(window.try_into().unwrap())
    } else {
        // Near the end of an unpadded buffer: the record's bytes, then zeros.
        let mut window = [0u8; V2_WINDOW];
        window[..head.total].copy_from_slice(buf.get(head.start..head.start + head.total)?);
        fields(&window)
    };
    *pos = head.start + head.total;
    Some((
        RawEvent {
            ts_ns: 0,
            kind: u32::from(head.kind),
            tid: fields[1] as u32,
            tgid: fields[2] as u32,
            cpu: fields[3] as u32,
            args: [fields[4], fields[5], fields[6], fields[7]],
        },
        unzigzag(fields[0]),
    ))
}

// --- varints (version 1) ----------------------------------------------------------------------

/// Decodes one version-1 record at `pos`: the event (with ts 0) and its timestamp delta.
/// `None` if the record is malformed or runs past `end`.
#[inline(always)]
pub fn get_record_v1(buf: &[u8], pos: &mut usize, end: usize) -> Option<(RawEvent, i64)> {
    if *pos >= end {
        return None;
    }
    let kind = get_varint(buf, pos)?;
    let delta = unzigzag(get_varint_padded(buf, pos)?);
    let tid = get_varint_padded(buf, pos)?;
    let tgid = get_varint_padded(buf, pos)?;
    let cpu = get_varint(buf, pos)?;
    if (kind | tid | tgid | cpu) > u64::from(u32::MAX) {
        return None;
    }
    let mask = *buf.get(*pos)?;
    *pos += 1;
    if mask > 0x0f {
        return None;
    }
    let mut args = [0u64; 4];
    for (bit, arg) in args.iter_mut().enumerate() {
        if mask & (1 << bit) != 0 {
            *arg = get_varint_padded(buf, pos)?;
        }
    }
    if *pos > end {
        return None;
    }
    Some((
        RawEvent {
            ts_ns: 0,
            kind: kind as u32,
            tid: tid as u32,
            tgid: tgid as u32,
            cpu: cpu as u32,
            args,
        },
        delta,
    ))
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads a varint at `*pos`; `None` if the input ends or the varint is over-long.
#[inline(always)]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Most fields (kinds, small deltas, cpus, masks) are one byte.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    get_varint_padded(buf, pos)
}

/// As [`get_varint`], without the one-byte shortcut: for fields whose length varies from
/// record to record (time deltas, tids, arguments), where that branch mispredicts. Longer
/// varints are decoded with one little-endian load of 8 bytes, the length from the first
/// byte without the continuation bit, the 7-bit groups gathered with three shifts — no
/// per-byte loop or branch. Fastest when 8 bytes can be loaded at `pos` (the reader pads its
/// blocks for that).
#[inline(always)]
pub fn get_varint_padded(buf: &[u8], pos: &mut usize) -> Option<u64> {
    if let Some(bytes) = buf.get(*pos..*pos + 8) {
        let word = u64::from_le_bytes(bytes.try_into().unwrap());
        let stops = !word & 0x8080_8080_8080_8080;
        if stops != 0 {
            let len = stops.trailing_zeros() as usize / 8 + 1;
            let x = word & (u64::MAX >> (64 - 8 * len));
            let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
            let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
            let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
            *pos += len;
            return Some(x);
        }
    }
    get_varint_slow(buf, pos)
}

#[inline(never)]
fn get_varint_slow(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version-1 encoding (the writer now writes version 2).
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -123_456] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_byte_loop_for_every_length() {
        // Every encoded length 1..=10, at the buffer's end (slow path) and followed by other
        // bytes (fast path when 8 bytes are readable).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for bits in 0..=64u32 {
            for _ in 0..50 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = if bits == 64 {
                    state
                } else {
                    state & ((1u64 << bits) - 1)
                };
                let mut buf = Vec::new();
                put_varint(&mut buf, v);
                let len = buf.len();
                for tail in [0usize, 3, 12] {
                    let mut b = buf.clone();
                    b.extend(std::iter::repeat_n(0xffu8, tail));
                    let mut pos = 0;
                    assert_eq!(get_varint(&b, &mut pos), Some(v), "{v} tail {tail}");
                    assert_eq!(pos, len);
                    let mut pos = 0;
                    assert_eq!(get_varint_slow(&b, &mut pos), Some(v));
                }
            }
        }
    }

    #[test]
    fn overlong_or_cut_varints_are_rejected() {
        let mut pos = 0;
        assert_eq!(get_varint(&[0x80, 0x80], &mut pos), None);
        let eleven = [0xffu8; 11];
        let mut pos = 0;
        assert_eq!(get_varint(&eleven, &mut pos), None);
        // 10th byte may only carry the top bit.
        let mut too_big = vec![0xffu8; 9];
        too_big.push(0x02);
        let mut pos = 0;
        assert_eq!(get_varint(&too_big, &mut pos), None);
    }

    fn v2_bytes(raw: &RawEvent, delta: i64) -> Vec<u8> {
        let mut buf = [0u8; MAX_RECORD_LEN_V2 + 8];
        let len = put_record_v2(&mut buf, raw, delta);
        buf[..len].to_vec()
    }

    #[test]
    fn version_2_records_round_trip_at_the_edges_with_and_without_padding() {
        let cases = [
            (0u32, 0u32, 0u32, 0u32, [0u64; 4], 0i64),
            (3, 1, 1, 1, [1, 0, 0xff, 0x100], 1),
            (14, u32::MAX, u32::MAX, u32::MAX, [u64::MAX; 4], i64::MIN),
            (
                255,
                12_345,
                12_340,
                1,
                [0x7fff_1234_5678, 0, u64::MAX >> 1, 1 << 56],
                -42,
            ),
            (7, 1 << 24, 1 << 16, 0, [(-11i64) as u64, 5, 0, 0], i64::MAX),
        ];
        for (kind, tid, tgid, cpu, args, delta) in cases {
            let raw = RawEvent {
                ts_ns: 0,
                kind,
                tid,
                tgid,
                cpu,
                args,
            };
            let bytes = v2_bytes(&raw, delta);
            // Unpadded and short padding take the copying path, a full window the direct
            // one; bytes after the record (the next record's) must not leak into its fields.
            for (padding, fill) in [(0, 0), (8, 0), (V2_WINDOW, 0), (V2_WINDOW, 0xff)] {
                let mut buf = bytes.clone();
                buf.resize(bytes.len() + padding, fill);
                let mut pos = 0;
                assert_eq!(
                    get_record_v2(&buf, &mut pos, bytes.len()),
                    Some((raw, delta)),
                    "{raw:?} padding {padding}"
                );
                assert_eq!(pos, bytes.len());
                // Stepping over it reads the same delta and lands at the same place.
                let mut pos = 0;
                assert_eq!(skip_record_v2(&buf, &mut pos, bytes.len()), Some(delta));
                assert_eq!(pos, bytes.len());
            }
        }
        // Small values take few bytes: kind, control, 1-byte delta, 2-byte tids, 1-byte cpu.
        let small = RawEvent {
            ts_ns: 0,
            kind: 1,
            tid: 300,
            tgid: 300,
            cpu: 1,
            args: [0; 4],
        };
        assert_eq!(v2_bytes(&small, 5).len(), 5 + 1 + 2 + 2 + 1);
    }

    #[test]
    fn malformed_version_2_records_are_refused() {
        let raw = RawEvent {
            ts_ns: 0,
            kind: 1,
            tid: 300,
            tgid: 300,
            cpu: 1,
            args: [9, 0, 0, 0],
        };
        let good = v2_bytes(&raw, 5);
        // Decoded or stepped over, a record is refused alike.
        let decode = |bytes: &[u8], end: usize| {
            let decoded = get_record_v2(bytes, &mut 0, end);
            assert_eq!(
                skip_record_v2(bytes, &mut 0, end),
                decoded.map(|(_, delta)| delta)
            );
            decoded
        };
        assert!(decode(&good, good.len()).is_some());
        // Cut anywhere: refused, not read past the end.
        for end in 0..good.len() {
            assert_eq!(decode(&good, end), None, "end {end}");
            assert_eq!(decode(&good[..end], end), None, "cut at {end}");
        }
        // A field longer than 8 bytes, or a tid/tgid/cpu longer than 4.
        for (nibble, value) in [
            (0, 9u32),
            (1, 5),
            (2, 5),
            (3, 5),
            (4, 9),
            (5, 9),
            (6, 9),
            (7, 9),
            (7, 15),
        ] {
            let mut bad = good.clone();
            let control = u32::from_le_bytes(bad[1..5].try_into().unwrap());
            let control = control & !(0xf << (4 * nibble)) | (value << (4 * nibble));
            bad[1..5].copy_from_slice(&control.to_le_bytes());
            bad.resize(bad.len() + 128, 0);
            assert_eq!(decode(&bad, bad.len()), None, "nibble {nibble} = {value}");
        }
    }
}
