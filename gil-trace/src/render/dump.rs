//! `gil-trace dump`: one event per line, its fields decoded — as text (like `perf script`) or
//! as one JSON object per line.
use std::fmt::Write;

use rustc_hash::FxHashMap;
use serde_json::{json, Map, Value};

use crate::trace::{
    event::{
        FUTEX_CMP_REQUEUE, FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_REQUEUE,
        FUTEX_TRYLOCK_PI, FUTEX_UNLOCK_PI, FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI,
        FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_WAKE_OP,
    },
    Event, EventData, FutexCall, ThreadInfo,
};

/// Thread names, to show beside tids.
pub struct Names(FxHashMap<u32, String>);

impl Names {
    pub fn new(threads: &[ThreadInfo]) -> Names {
        Names(
            threads
                .iter()
                .filter(|t| !t.name.is_empty())
                .map(|t| (t.tid, t.name.clone()))
                .collect(),
        )
    }

    fn of(&self, tid: u32) -> &str {
        self.0.get(&tid).map_or("", String::as_str)
    }
}

/// A futex op as the headers spell it: `FUTEX_WAIT_BITSET|PRIVATE|CLOCK_REALTIME`.
pub fn futex_op(call: &FutexCall) -> String {
    let cmd = match call.command() {
        FUTEX_WAIT => "FUTEX_WAIT",
        FUTEX_WAKE => "FUTEX_WAKE",
        FUTEX_REQUEUE => "FUTEX_REQUEUE",
        FUTEX_CMP_REQUEUE => "FUTEX_CMP_REQUEUE",
        FUTEX_WAKE_OP => "FUTEX_WAKE_OP",
        FUTEX_LOCK_PI => "FUTEX_LOCK_PI",
        FUTEX_UNLOCK_PI => "FUTEX_UNLOCK_PI",
        FUTEX_TRYLOCK_PI => "FUTEX_TRYLOCK_PI",
        FUTEX_WAIT_BITSET => "FUTEX_WAIT_BITSET",
        FUTEX_WAKE_BITSET => "FUTEX_WAKE_BITSET",
        FUTEX_WAIT_REQUEUE_PI => "FUTEX_WAIT_REQUEUE_PI",
        FUTEX_CMP_REQUEUE_PI => "FUTEX_CMP_REQUEUE_PI",
        FUTEX_LOCK_PI2 => "FUTEX_LOCK_PI2",
        other => return format!("{other}"),
    };
    let mut op = cmd.to_string();
    if call.op & 128 != 0 {
        op.push_str("|PRIVATE");
    }
    if call.op & 256 != 0 {
        op.push_str("|CLOCK_REALTIME");
    }
    op
}

/// An errno-style return value, named when it is one gil-trace meets often.
fn ret(r: i64) -> String {
    let name = match r {
        -110 => " (ETIMEDOUT)",
        -11 => " (EAGAIN)",
        -4 => " (EINTR)",
        -22 => " (EINVAL)",
        _ => "",
    };
    format!("{r}{name}")
}

/// `prev_state` as `ps` shows a state: R (preempted, still runnable), S, D, ...
fn task_state(prev_state: u64) -> &'static str {
    match prev_state & 0xff {
        0 => "R",
        1 => "S",
        2 => "D",
        4 | 8 => "T",
        16 => "X",
        32 => "Z",
        _ => "?",
    }
}

/// The event's kind name and its fields, in order.
fn fields(ev: &Event, names: &Names) -> (&'static str, Vec<(&'static str, Value)>) {
    match ev.data {
        EventData::Switch {
            next_tid,
            prev_state,
            next_prio,
            prev_traced,
            next_traced,
            stack,
        } => (
            "sched_switch",
            vec![
                ("prev_state", json!(task_state(prev_state))),
                ("next_tid", json!(next_tid)),
                ("next_comm", json!(names.of(next_tid))),
                ("next_prio", json!(next_prio)),
                ("prev_traced", json!(prev_traced)),
                ("next_traced", json!(next_traced)),
                ("stack", json!(stack)),
            ],
        ),
        EventData::Waking { wakee, target_cpu } => (
            "sched_waking",
            vec![
                ("wakee", json!(wakee)),
                ("wakee_comm", json!(names.of(wakee))),
                ("target_cpu", json!(target_cpu)),
            ],
        ),
        EventData::Fork { child } => ("process_fork", vec![("child", json!(child))]),
        EventData::Exit { group_dead } => ("process_exit", vec![("group_dead", json!(group_dead))]),
        EventData::Comm { name, source } => (
            "comm",
            vec![
                ("name", json!(Event::comm_name(&name))),
                ("source", json!(format!("{source:?}").to_lowercase())),
            ],
        ),
        EventData::FutexEnter(call) => {
            let mut f = vec![
                ("uaddr", json!(format!("{:#x}", call.uaddr))),
                ("op", json!(futex_op(&call))),
                // The analysis' own reading of the op, so consumers need not parse its name.
                ("wait", json!(call.is_wait())),
                ("val", json!(call.val)),
                ("timeout", json!(call.has_timeout)),
            ];
            if call.uaddr2 != 0 {
                f.push(("uaddr2", json!(format!("{:#x}", call.uaddr2))));
            }
            f.push(("val3", json!(format!("{:#x}", call.val3))));
            if call.class != gil_trace_common::SyscallClass::Futex {
                f.push(("syscall", json!(format!("{:?}", call.class).to_lowercase())));
            }
            ("futex_enter", f)
        }
        EventData::FutexExit { ret: r, stack, .. } => (
            "futex_exit",
            vec![("ret", json!(ret(r))), ("stack", json!(stack))],
        ),
        EventData::IoEnter { class, nr, fd, len } => (
            match class {
                crate::trace::IoClass::Recv => "recv_enter",
                crate::trace::IoClass::Send => "send_enter",
                crate::trace::IoClass::Poll => "poll_enter",
            },
            vec![("nr", json!(nr)), ("fd", json!(fd)), ("len", json!(len))],
        ),
        EventData::IoExit { class, nr, ret: r } => (
            match class {
                crate::trace::IoClass::Recv => "recv_exit",
                crate::trace::IoClass::Send => "send_exit",
                crate::trace::IoClass::Poll => "poll_exit",
            },
            vec![("nr", json!(nr)), ("ret", json!(ret(r)))],
        ),
        EventData::NetRecv {
            arrival_ns,
            arrival_lost,
            sock,
            len,
            queued,
        } => (
            "net_recv",
            vec![
                ("bytes", json!(len)),
                ("sock", json!(format!("{sock:#x}"))),
                (
                    "waited_ns",
                    json!(arrival_ns.map(|a| ev.ts_ns.saturating_sub(a))),
                ),
                ("arrival_lost", json!(arrival_lost)),
                ("queued", json!(queued)),
            ],
        ),
        EventData::Lost { count, since_ns } => (
            "lost",
            vec![("count", json!(count)), ("since_ns", json!(since_ns))],
        ),
        EventData::PySample {
            stack,
            owns_gil,
            active,
            period_ns,
            read_ns,
        } => (
            "py_sample",
            vec![
                ("stack", json!(stack)),
                ("owns_gil", json!(owns_gil)),
                ("active", json!(active)),
                ("period_ns", json!(period_ns)),
                ("read_ns", json!(read_ns)),
            ],
        ),
        EventData::Unknown { kind } => ("unknown", vec![("kind", json!(kind))]),
    }
}

/// One event as a line of text: time since the trace's start, CPU, pid/tid, thread name,
/// kind and fields.
pub fn line(ev: &Event, start_ns: u64, names: &Names) -> String {
    let (kind, fields) = fields(ev, names);
    let mut out = format!(
        "{:>16.6} ms cpu{:<3} {:>7}/{:<7} {:<16} {:<14}",
        ev.ts_ns.saturating_sub(start_ns) as f64 / 1e6,
        ev.cpu,
        ev.tgid,
        ev.tid,
        names.of(ev.tid),
        kind
    );
    for (name, value) in fields {
        let value = match value {
            Value::String(s) if s.is_empty() => continue,
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        let _ = write!(out, " {name}={value}");
    }
    out
}

/// One event as a JSON object: `ts_ns` (CLOCK_MONOTONIC), `t_ms` (since the trace's start),
/// `cpu`, `pid`, `tid`, `comm`, `kind` and the kind's fields.
pub fn json(ev: &Event, start_ns: u64, names: &Names) -> Value {
    let (kind, fields) = fields(ev, names);
    let mut map = Map::new();
    map.insert("ts_ns".into(), json!(ev.ts_ns));
    map.insert(
        "t_ms".into(),
        json!(ev.ts_ns.saturating_sub(start_ns) as f64 / 1e6),
    );
    map.insert("cpu".into(), json!(ev.cpu));
    map.insert("pid".into(), json!(ev.tgid));
    map.insert("tid".into(), json!(ev.tid));
    // An untraced thread (a waker, a switch's other side) has no name in the trace: null.
    let comm = Some(names.of(ev.tid)).filter(|name| !name.is_empty());
    map.insert("comm".into(), json!(comm));
    map.insert("kind".into(), json!(kind));
    for (name, value) in fields {
        map.insert(name.into(), value);
    }
    Value::Object(map)
}

/// Does `ev` involve `tid` (as its subject, wakee, switch partner or child)?
pub fn involves(ev: &Event, tid: u32) -> bool {
    ev.tid == tid
        || matches!(ev.data, EventData::Switch { next_tid, .. } if next_tid == tid)
        || matches!(ev.data, EventData::Waking { wakee, .. } if wakee == tid)
        || matches!(ev.data, EventData::Fork { child } if child == tid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ev, futex, WAIT_TIMED, WAKE};

    #[test]
    fn names_are_text_and_fields_are_decoded() {
        let names = Names::new(&[ThreadInfo {
            tid: 11,
            tgid: 1,
            name: "spinner-1".into(),
        }]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"echo");
        let renamed = ev(
            5_000_000,
            12,
            EventData::Comm {
                name: comm,
                source: gil_trace_common::CommSource::Rename,
            },
        );
        let text = line(&renamed, 1_000_000, &names);
        assert!(
            text.contains("comm") && text.contains("name=echo source=rename"),
            "{text}"
        );
        assert!(!text.contains("[101"), "bytes shown as numbers: {text}");
        let wait = futex(2_000_000, 11, 0x1000, WAIT_TIMED);
        let text = line(&wait, 1_000_000, &names);
        assert!(
            text.contains("spinner-1") && text.contains("op=FUTEX_WAIT_BITSET|PRIVATE"),
            "{text}"
        );
        assert!(text.starts_with("        1.000000 ms"), "{text}");
        let j = json(&wait, 1_000_000, &names);
        assert_eq!(j["kind"], "futex_enter");
        assert_eq!(j["uaddr"], "0x1000");
        assert_eq!(j["comm"], "spinner-1");
        assert_eq!(j["timeout"], true);
        assert_eq!(j["wait"], true);
        assert_eq!(json(&futex(0, 11, 0x1000, WAKE), 0, &names)["wait"], false);
    }
}
