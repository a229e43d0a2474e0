//! Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing), written as the
//! analysis streams, so memory stays flat however long the trace:
//!
//! - thread-state slices (`X`, cat `state`) on each thread, as the timeline closes them;
//! - the primary lock's holder as a track of its own (`lock … holder`), a slice per holding,
//!   from one acquisition to the next;
//! - handoffs as flow events (`s` on the releaser at its wake, `f` on the acquirer when it
//!   acquires), wakeups included;
//! - datagram arrivals as thread-scoped instant events (`i`);
//! - at the end, process and thread names and the convoy episodes (slices on a `convoys`
//!   track, with their verdicts).
//!
//! Timestamps are µs since the trace start (fractional, so ns precision is kept).
use std::{collections::BTreeMap, io::Write};

use serde_json::{json, Value};

use crate::{
    analysis::{
        contention::{HandoffEvent, IoOp, RowSink},
        Report,
    },
    model::timeline::StateSpan,
    render::thread_table::ThreadTable,
    trace::ThreadInfo,
};

/// Pseudo thread ids for the extra tracks (outside the kernel's pid range).
pub const HOLDER_TRACK_TID: u64 = 0x7fff_0000;
pub const CONVOY_TRACK_TID: u64 = 0x7ffe_0000;
/// Acquisitions of the primary lock held back to be drawn in order (they are reported when
/// their take closes, a little after they happen): the holder track's memory bound.
const HOLDER_REORDER: usize = 4096;

/// A Chrome Trace Event document being written to `out`.
pub struct ChromeJson<W: Write> {
    out: W,
    start_ns: u64,
    /// Thread → process and name, from the trace's thread table.
    threads: ThreadTable,
    /// Only this thread's slices and rows (`--tid`).
    only_tid: Option<u32>,
    /// Acquisitions of the primary lock not yet drawn: acquire time → (acquirer, its pid).
    holders: BTreeMap<(u64, u32), u32>,
    /// The last holding drawn ends at the next acquisition.
    last_holder: Option<(u64, u32, u32)>,
    flows: u64,
    slices: u64,
    first: bool,
    /// The first write error; later writes are skipped and [`Self::finish`] returns it.
    error: Option<std::io::Error>,
}

impl<W: Write> ChromeJson<W> {
    /// Starts the document; `threads` is the trace's thread table (names and processes).
    pub fn new(
        out: W,
        start_ns: u64,
        threads: &[ThreadInfo],
        only_tid: Option<u32>,
    ) -> ChromeJson<W> {
        let mut w = ChromeJson {
            out,
            start_ns,
            threads: ThreadTable::new(threads),
            only_tid,
            holders: BTreeMap::new(),
            last_holder: None,
            flows: 0,
            slices: 0,
            first: true,
            error: None,
        };
        w.raw(b"{\"traceEvents\":[\n");
        w
    }

    fn raw(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn event(&mut self, value: &Value) {
        if !std::mem::take(&mut self.first) {
            self.raw(b",\n");
        }
        let bytes = serde_json::to_vec(value).expect("JSON values serialize");
        self.raw(&bytes);
    }

    fn us(&self, t: u64) -> f64 {
        t.saturating_sub(self.start_ns) as f64 / 1e3
    }

    fn pid_of(&self, tid: u32) -> u32 {
        self.threads.pid_of(tid)
    }

    fn name_of(&self, tid: u32) -> String {
        self.threads
            .name(tid)
            .map_or_else(|| tid.to_string(), str::to_string)
    }

    fn wanted(&self, tid: u32) -> bool {
        self.only_tid.is_none_or(|t| t == tid)
    }

    /// A closed thread-state span.
    pub fn span(&mut self, s: &StateSpan) {
        if !self.wanted(s.tid) {
            return;
        }
        self.slices += 1;
        let ev = json!({
            "ph": "X", "cat": "state", "name": s.state.name(), "pid": self.pid_of(s.tid), "tid": s.tid,
            "ts": self.us(s.start_ns), "dur": s.end_ns.saturating_sub(s.start_ns) as f64 / 1e3
        });
        self.event(&ev);
    }

    /// Draws held-back acquisitions up to the newest `keep` (all with 0).
    fn flush_holders(&mut self, keep: usize) {
        while self.holders.len() > keep {
            let Some(((at, tid), pid)) = self.holders.pop_first() else {
                break;
            };
            if let Some((since, holder, holder_pid)) = self.last_holder {
                let ev = json!({
                    "ph": "X", "cat": "lock", "name": format!("held by {}", self.name_of(holder)),
                    "pid": holder_pid, "tid": HOLDER_TRACK_TID, "ts": self.us(since),
                    "dur": at.saturating_sub(since) as f64 / 1e3, "args": {"holder_tid": holder}
                });
                self.event(&ev);
            }
            self.last_holder = Some((at, tid, pid));
        }
    }

    /// Ends the document with what is known only at the end (names, convoys) and returns the
    /// output, or the first write error.
    pub fn finish(mut self, report: &Report) -> std::io::Result<(W, u64)> {
        self.flush_holders(0);
        let lock_pid = report
            .locks
            .first()
            .map_or(report.summary.meta.root_pid, |l| l.tgid);
        if let Some(lock) = report.locks.first() {
            let ev = json!({"ph": "M", "name": "thread_name", "pid": lock_pid, "tid": HOLDER_TRACK_TID, "args": {"name": format!("{} holder", lock.name())}});
            self.event(&ev);
        }
        for pid in self.threads.pids(report) {
            let ev = json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": format!("{} ({pid})", self.name_of(pid))}});
            self.event(&ev);
        }
        // Threads by the report's names (a Python thread's `threading` name); processes kept
        // the kernel's, above.
        self.threads.rename_as(report);
        for t in &report.summary.threads {
            let ev = json!({"ph": "M", "name": "thread_name", "pid": self.pid_of(t.tid), "tid": t.tid, "args": {"name": self.name_of(t.tid)}});
            self.event(&ev);
        }
        if !report.convoys.is_empty() {
            let ev = json!({"ph": "M", "name": "thread_name", "pid": lock_pid, "tid": CONVOY_TRACK_TID, "args": {"name": "convoys"}});
            self.event(&ev);
        }
        for (c, v) in report.convoys.iter().zip(&report.verdicts) {
            let ev = json!({
                "ph": "X", "cat": "convoy", "name": format!("convoy: {}", self.name_of(c.tid)), "pid": lock_pid, "tid": CONVOY_TRACK_TID,
                "ts": self.us(c.start_ns), "dur": c.end_ns.saturating_sub(c.start_ns) as f64 / 1e3,
                "args": {"verdict": v.text, "datagrams": c.ops, "lock_wait_ns": c.lock_wait_ns, "incomplete": c.incomplete}
            });
            self.event(&ev);
        }
        let tail = json!({"generator": "gil-trace", "command": report.summary.meta.command});
        self.raw(b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":");
        let tail = serde_json::to_vec(&tail).expect("JSON values serialize");
        self.raw(&tail);
        self.raw(b"}\n");
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok((self.out, self.slices))
    }
}

impl<W: Write> RowSink for ChromeJson<W> {
    fn handoff(&mut self, h: HandoffEvent) {
        if !self.wanted(h.to_tid) {
            return;
        }
        if h.lock.id == 0 {
            let pid = self.pid_of(h.to_tid);
            self.holders.insert((h.acquire_ns, h.to_tid), pid);
            self.flush_holders(HOLDER_REORDER);
        }
        let Some(from) = h.from_tid else { return };
        self.flows += 1;
        let id = self.flows;
        let from_ts = h.release_ns.or(h.wake_ns).unwrap_or(h.wait_start_ns);
        let start = json!({"ph": "s", "cat": "handoff", "name": "handoff", "id": id, "pid": self.pid_of(from), "tid": from, "ts": self.us(from_ts),
            "args": {"kind": h.kind, "wake_ns": h.wake_ns, "run_ns": h.run_ns, "acquire_ns": h.acquire_ns}});
        self.event(&start);
        let end = json!({"ph": "f", "bp": "e", "cat": "handoff", "name": "handoff", "id": id, "pid": self.pid_of(h.to_tid), "tid": h.to_tid, "ts": self.us(h.acquire_ns)});
        self.event(&end);
    }

    fn datagram(&mut self, op: IoOp) {
        if !self.wanted(op.tid) {
            return;
        }
        if let Some(a) = op.arrival_ns {
            let ev = json!({
                "ph": "i", "s": "t", "cat": "net", "name": "datagram arrival", "pid": self.pid_of(op.tid), "tid": op.tid, "ts": self.us(a),
                "args": {"bytes": op.bytes, "stall_ns": op.stall_ns, "lock_wait_ns": op.lock_wait_ns}
            });
            self.event(&ev);
        }
    }
}
