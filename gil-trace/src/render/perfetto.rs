//! Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing).
//!
//! - thread-state slices (`X`, cat `state`) on each thread;
//! - the primary lock's holder as a track of its own (`lock 0x… holder`), slices named after
//!   the holder;
//! - convoy episodes as slices on a `convoys` track;
//! - handoffs as flow events (`s` on the releaser at its wake, `f` on the acquirer when it
//!   acquires), wakeups included;
//! - datagram arrivals as thread-scoped instant events (`i`).
//!
//! Timestamps are µs since the trace start (fractional, so ns precision is kept).
use serde_json::{json, Value};

use crate::{analysis::Report, model::timeline::StateSpan};

/// Pseudo thread ids for the extra tracks (outside the kernel's pid range).
pub const HOLDER_TRACK_TID: u64 = 0x7fff_0000;
pub const CONVOY_TRACK_TID: u64 = 0x7ffe_0000;

pub fn to_chrome_json(report: &Report, spans: &[StateSpan]) -> Vec<u8> {
    let start = report.summary.meta.start_ns;
    let us = |t: u64| (t.saturating_sub(start)) as f64 / 1e3;
    let dur = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
    let pid_of = |tid: u32| {
        report
            .summary
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| t.tgid)
            .filter(|&p| p != 0)
            .unwrap_or(tid)
    };
    let name_of = |tid: u32| {
        report
            .summary
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| t.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or(tid.to_string())
    };
    let mut events: Vec<Value> = Vec::new();
    let mut pids: Vec<u32> = report
        .summary
        .threads
        .iter()
        .map(|t| pid_of(t.tid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        events.push(json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": format!("{} ({pid})", name_of(*pid))}}));
    }
    for t in &report.summary.threads {
        events.push(json!({"ph": "M", "name": "thread_name", "pid": pid_of(t.tid), "tid": t.tid, "args": {"name": name_of(t.tid)}}));
    }
    for s in spans {
        events.push(json!({
            "ph": "X", "cat": "state", "name": s.state.name(), "pid": pid_of(s.tid), "tid": s.tid,
            "ts": us(s.start_ns), "dur": dur(s.start_ns, s.end_ns)
        }));
    }
    let lock_pid = report
        .locks
        .first()
        .map_or(report.summary.meta.root_pid, |l| l.tgid);
    if let (Some(lock), Some(handoffs)) = (report.locks.first(), &report.handoff_events) {
        let track = format!("lock {} holder", lock.name());
        events.push(json!({"ph": "M", "name": "thread_name", "pid": lock_pid, "tid": HOLDER_TRACK_TID, "args": {"name": track}}));
        let mut acq: Vec<_> = handoffs.iter().filter(|h| h.lock.id == lock.id).collect();
        acq.sort_by_key(|h| h.acquire_ns);
        for (i, h) in acq.iter().enumerate() {
            if let Some(next) = acq.get(i + 1) {
                events.push(json!({
                    "ph": "X", "cat": "lock", "name": format!("held by {}", name_of(h.to_tid)),
                    "pid": lock_pid, "tid": HOLDER_TRACK_TID, "ts": us(h.acquire_ns), "dur": dur(h.acquire_ns, next.acquire_ns),
                    "args": {"holder_tid": h.to_tid}
                }));
            }
        }
        for (id, h) in acq.iter().enumerate() {
            let Some(from) = h.from_tid else { continue };
            let from_ts = h.release_ns.or(h.wake_ns).unwrap_or(h.wait_start_ns);
            let args = json!({"kind": h.kind, "wake_ns": h.wake_ns, "run_ns": h.run_ns, "acquire_ns": h.acquire_ns});
            events.push(json!({"ph": "s", "cat": "handoff", "name": "handoff", "id": id, "pid": pid_of(from), "tid": from, "ts": us(from_ts), "args": args}));
            events.push(json!({"ph": "f", "bp": "e", "cat": "handoff", "name": "handoff", "id": id, "pid": pid_of(h.to_tid), "tid": h.to_tid, "ts": us(h.acquire_ns)}));
        }
    }
    if !report.convoys.is_empty() {
        events.push(json!({"ph": "M", "name": "thread_name", "pid": lock_pid, "tid": CONVOY_TRACK_TID, "args": {"name": "convoys"}}));
    }
    for (c, v) in report.convoys.iter().zip(&report.verdicts) {
        events.push(json!({
            "ph": "X", "cat": "convoy", "name": format!("convoy: {}", name_of(c.tid)), "pid": lock_pid, "tid": CONVOY_TRACK_TID,
            "ts": us(c.start_ns), "dur": dur(c.start_ns, c.end_ns),
            "args": {"verdict": v.text, "ops": c.ops, "lock_wait_ns": c.lock_wait_ns, "incomplete": c.incomplete}
        }));
    }
    if let Some(ops) = &report.io_ops {
        for op in ops {
            if let Some(a) = op.arrival_ns {
                events.push(json!({
                    "ph": "i", "s": "t", "cat": "net", "name": "datagram arrival", "pid": pid_of(op.tid), "tid": op.tid, "ts": us(a),
                    "args": {"bytes": op.bytes, "lock_wait_ns": op.lock_wait_ns}
                }));
            }
        }
    }
    let doc = json!({"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"generator": "gil-trace", "command": report.summary.meta.command}});
    let mut out = serde_json::to_vec(&doc).expect("JSON");
    out.push(b'\n');
    out
}
