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

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"GILTRACE";
pub const FOOTER_MAGIC: &[u8; 8] = b"GILTEND\0";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_FIXED_LEN: u64 = 8 + 4 + 4 + 4;
pub const BLOCK_HEADER_LEN: u64 = 1 + 4 + 4;
pub const FOOTER_LEN: u64 = 16;
pub const TAG_EVENTS: u8 = b'E';
pub const TAG_TRAILER: u8 = b'Z';
/// Writers close a block at this size; readers reject larger blocks (no allocation sized by
/// an untrusted length beyond this).
pub const BLOCK_TARGET_LEN: usize = 256 * 1024;
pub const MAX_BLOCK_LEN: u32 = 4 * 1024 * 1024;
pub const MAX_META_LEN: u32 = 1024 * 1024;
/// Smallest possible encoded record: kind, ts, tid, tgid, cpu, mask.
pub const MIN_RECORD_LEN: usize = 6;
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
}

/// CPU spent capturing: the recorder process, and (with `record --cost`) the eBPF programs
/// as timed by the kernel, over every run including those filtered out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureCost {
    /// User + system CPU of the recorder itself (not the traced command).
    pub recorder_cpu_ns: u64,
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

// --- varints ------------------------------------------------------------------------------

/// Longest encoded record: five u32/u64 varints (≤ 5+10+5+5+5 bytes), the mask, four u64s.
pub const MAX_RECORD_LEN: usize = 30 + 1 + 4 * 10;

/// Appends `v` as a LEB128 varint to a record buffer (sized for the longest record).
#[inline(always)]
pub fn put_varint_into(out: &mut [u8; MAX_RECORD_LEN], len: &mut usize, mut v: u64) {
    while v >= 0x80 {
        out[*len] = (v as u8) | 0x80;
        *len += 1;
        v >>= 7;
    }
    out[*len] = v as u8;
    *len += 1;
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
        return Some(first as u64);
    }
    // Longer ones: one little-endian load of 8 bytes, the length from the first byte without
    // the continuation bit, the 7-bit groups gathered with three shifts — no per-byte loop or
    // branch (varint lengths vary event to event and defeat the branch predictor).
    if let Some(bytes) = buf.get(*pos..*pos + 8) {
        let word = u64::from_le_bytes(bytes.try_into().unwrap());
        let stops = !word & 0x8080_8080_8080_8080;
        if stops != 0 {
            let len = stops.trailing_zeros() as usize / 8 + 1;
            let x = if len == 8 {
                word
            } else {
                word & ((1u64 << (len * 8)) - 1)
            };
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

    fn put_varint(out: &mut Vec<u8>, v: u64) {
        let (mut buf, mut len) = ([0u8; MAX_RECORD_LEN], 0);
        put_varint_into(&mut buf, &mut len, v);
        out.extend_from_slice(&buf[..len]);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -123456] {
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
}
