//! Root-only: these tests really load the eBPF programs and record real programs.
//! They skip (saying so) only when the process lacks the privilege to load eBPF.
mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use gil_trace::trace::{Event, EventData, IoClass, TraceReader};

fn read_events(path: &std::path::Path) -> (TraceReader, Vec<Event>) {
    let reader = TraceReader::open(path).unwrap();
    let again = TraceReader::open(path).unwrap();
    let events: Vec<Event> = again.events().map(|e| e.unwrap()).collect();
    (reader, events)
}

#[derive(serde::Deserialize)]
struct PingPong {
    pid: u32,
    futex_addr: u64,
    datagrams: u64,
    threads: Vec<ThreadId>,
}

#[derive(serde::Deserialize)]
struct ThreadId {
    tid: u32,
    name: String,
}

#[test]
fn records_futex_contention_wakeups_and_every_datagram() {
    if skip_without_privilege("records_futex_contention_wakeups_and_every_datagram") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("pingpong.trace");
    let out = gil_trace()
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--quiet")
        .arg("--")
        .arg(workspace_bin("workload"))
        .args([
            "pingpong",
            "--lockers",
            "4",
            "--rounds",
            "200",
            "--datagrams",
            "100",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "record failed: {}", stderr(&out));
    let truth: PingPong = serde_json::from_str(stdout(&out).trim()).expect("pingpong report");
    let (reader, events) = read_events(&trace);

    // Nothing lost at this rate, and the header/trailer say what ran.
    assert_eq!(
        reader.trailer().lost.total,
        0,
        "lost events: {:?}",
        reader.trailer().lost
    );
    assert_eq!(reader.meta().root_pid, truth.pid);
    assert_eq!(reader.trailer().exit.as_ref().and_then(|e| e.code), Some(0));
    assert!(
        events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "events are time-ordered"
    );

    // Every thread seen, with its name.
    let table: HashMap<u32, String> = reader
        .trailer()
        .threads
        .iter()
        .map(|t| (t.tid, t.name.clone()))
        .collect();
    for t in &truth.threads {
        assert_eq!(
            table.get(&t.tid),
            Some(&t.name),
            "thread {} ({}) missing or misnamed: {table:?}",
            t.tid,
            t.name
        );
    }
    let subjects: HashSet<u32> = events.iter().map(|e| e.tid).collect();
    for t in &truth.threads {
        assert!(
            subjects.contains(&t.tid),
            "no events from {} ({})",
            t.tid,
            t.name
        );
    }

    // Futex waits and wakes on the contended word; each wake's sched_waking names the waker
    // (the thread inside the FUTEX_WAKE) and a wakee that was waiting on that word.
    let lockers: HashSet<u32> = truth
        .threads
        .iter()
        .filter(|t| t.name.starts_with("locker"))
        .map(|t| t.tid)
        .collect();
    let mut in_wake: HashMap<u32, bool> = HashMap::new();
    let mut waiting: HashSet<u32> = HashSet::new();
    let (mut waits, mut wakes, mut futex_wakeups) = (0, 0, 0);
    for e in &events {
        match e.data {
            EventData::FutexEnter(call) if call.uaddr == truth.futex_addr => {
                assert!(
                    lockers.contains(&e.tid),
                    "futex on the word from non-locker {}",
                    e.tid
                );
                if call.is_wait() {
                    waits += 1;
                    waiting.insert(e.tid);
                }
                if call.is_wake() {
                    wakes += 1;
                    in_wake.insert(e.tid, true);
                }
            }
            EventData::FutexExit { .. } => {
                in_wake.remove(&e.tid);
                waiting.remove(&e.tid);
            }
            EventData::Waking { wakee, .. } if in_wake.contains_key(&e.tid) => {
                futex_wakeups += 1;
                assert!(
                    lockers.contains(&wakee),
                    "FUTEX_WAKE by {} woke non-locker {wakee}",
                    e.tid
                );
                assert!(
                    waiting.contains(&wakee),
                    "FUTEX_WAKE by {} woke {wakee}, which was not waiting on the word",
                    e.tid
                );
            }
            _ => {}
        }
    }
    assert!(
        waits > 10,
        "too few futex waits on the contended word: {waits}"
    );
    assert!(
        wakes > 10,
        "too few futex wakes on the contended word: {wakes}"
    );
    assert!(
        futex_wakeups > 10,
        "too few wakeups attributed to a futex waker: {futex_wakeups}"
    );

    // Every datagram: the server received `datagrams`, the client as many echoes; each with an
    // arrival time no later than the end of the recv syscall that returned it.
    let tid_of = |name: &str| truth.threads.iter().find(|t| t.name == name).unwrap().tid;
    for receiver in [tid_of("udp-server"), tid_of("udp-client")] {
        let mut pending_arrival: Option<u64> = None;
        let mut received = 0;
        for e in events.iter().filter(|e| e.tid == receiver) {
            match e.data {
                EventData::NetRecv {
                    arrival_ns, len, ..
                } => {
                    assert_eq!(len, 512);
                    let arrival = arrival_ns.expect("datagram without arrival time");
                    assert!(arrival <= e.ts_ns);
                    pending_arrival = Some(arrival);
                }
                EventData::IoExit {
                    class: IoClass::Recv,
                    ret,
                    ..
                } if ret > 0 => {
                    let arrival = pending_arrival
                        .take()
                        .expect("recv returned without a datagram event");
                    assert!(arrival <= e.ts_ns, "arrival after recv exit");
                    received += 1;
                }
                _ => {}
            }
        }
        assert_eq!(received, truth.datagrams, "thread {receiver} datagrams");
    }
}

#[test]
fn report_json_has_the_documented_counts() {
    if skip_without_privilege("report_json_has_the_documented_counts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = gil_trace()
        .args(["record", "--quiet", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(workspace_bin("workload"))
        .args(["pingpong", "--rounds", "50", "--datagrams", "20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gil_trace()
        .arg("report")
        .arg("--json")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in ["sched_switch", "sched_wakeup", "futex", "udp_recv"] {
        assert!(
            v["counts"][kind].as_u64().unwrap() > 0,
            "counts.{kind} is zero: {}",
            v["counts"]
        );
    }
    for kind in ["udp_send", "fork", "exit"] {
        assert!(
            v["counts"][kind].as_u64().is_some(),
            "counts.{kind} missing"
        );
    }
    assert_eq!(
        v["counts"]["udp_recv"].as_u64(),
        Some(40),
        "20 datagrams each way"
    );
    assert_eq!(v["lost"].as_u64(), Some(0));
    assert!(v["meta"]["duration_ns"].as_u64().unwrap() > 0);
    assert!(v["meta"]["command"].as_array().unwrap().len() >= 2);
    let threads = v["threads"].as_array().unwrap();
    assert!(
        threads.iter().any(|t| t["name"] == "udp-server"),
        "{threads:?}"
    );
    assert!(threads.iter().all(|t| t["tid"].as_u64().is_some()));
}

#[test]
fn exit_status_passes_through_and_missing_command_fails_cleanly() {
    if skip_without_privilege("exit_status_passes_through_and_missing_command_fails_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = gil_trace()
        .args(["record", "--quiet", "-o"])
        .arg(&trace)
        .args(["--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(TraceReader::open(&trace).is_ok());

    let missing = dir.path().join("missing.trace");
    let out = gil_trace()
        .args(["record", "--quiet", "-o"])
        .arg(&missing)
        .args(["--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "command not found");
    assert!(!missing.exists());

    let out = gil_trace()
        .args([
            "record",
            "--quiet",
            "-o",
            "/nonexistent-dir/t.trace",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "not a directory");
}
