//! GIL lab tests: policy behaviour, truth log consistency, the convoy effect itself, bad input.
//! None needs root.
use std::{
    collections::HashMap,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use gil_lab::{
    experiment::{self, ClientMode, ExperimentConfig},
    gil::{make_gil, Gil, GilConfig, Policy, ThreadCtx},
    truth::{parse_jsonl, ReleaseReason, TruthEvent},
};

fn config(policy: Policy, interval_ms: u64) -> GilConfig {
    GilConfig {
        policy,
        interval: Duration::from_millis(interval_ms),
        check_interval: 100,
        max_threads: 16,
    }
}

#[test]
fn every_policy_keeps_mutual_exclusion_under_stress() {
    for policy in Policy::ALL {
        let gil: Arc<dyn Gil> = Arc::from(make_gil(&config(policy, 1)));
        let holders = Arc::new(AtomicUsize::new(0));
        let violations = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (gil, holders, violations, done) = (
                    gil.clone(),
                    holders.clone(),
                    violations.clone(),
                    done.clone(),
                );
                thread::spawn(move || {
                    let mut me = ThreadCtx::new(i, "test", "t", None);
                    for round in 0..300 {
                        gil.take(&mut me);
                        for _ in 0..50 {
                            if holders.fetch_add(1, SeqCst) != 0 {
                                violations.fetch_add(1, SeqCst);
                            }
                            holders.fetch_sub(1, SeqCst);
                            gil.checkpoint(&mut me);
                        }
                        let reason = if round % 3 == 0 {
                            ReleaseReason::Io
                        } else {
                            ReleaseReason::Interval
                        };
                        gil.release(&mut me, reason);
                    }
                    done.fetch_add(1, SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            violations.load(SeqCst),
            0,
            "{policy:?}: two holders at once"
        );
        assert_eq!(done.load(SeqCst), 4, "{policy:?}");
    }
}

/// A holds the lock and computes (checking between units) until `stop`; returns how long B
/// waited to take it.
fn waiter_delay(
    policy: Policy,
    interval_ms: u64,
    holder_low_priority: bool,
    waiter_low_priority: bool,
) -> Duration {
    let gil: Arc<dyn Gil> = Arc::from(make_gil(&config(policy, interval_ms)));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(2));
    let holder = {
        let (gil, stop, started) = (gil.clone(), stop.clone(), started.clone());
        thread::spawn(move || {
            let mut me = ThreadCtx::new(0, "spinner", "a", None);
            me.low_priority = holder_low_priority;
            gil.take(&mut me);
            started.wait();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut x = 0u64;
            while !stop.load(SeqCst) && Instant::now() < deadline {
                for i in 0..200 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                gil.checkpoint(&mut me);
            }
            gil.release(&mut me, ReleaseReason::Exit);
            x
        })
    };
    started.wait();
    thread::sleep(Duration::from_millis(2));
    let mut me = ThreadCtx::new(1, "echo", "b", None);
    me.low_priority = waiter_low_priority;
    let t0 = Instant::now();
    gil.take(&mut me);
    let waited = t0.elapsed();
    stop.store(true, SeqCst);
    gil.release(&mut me, ReleaseReason::Exit);
    holder.join().unwrap();
    waited
}

#[test]
fn new_gil_forces_a_switch_after_about_one_interval() {
    let waited = waiter_delay(Policy::New, 20, false, false);
    assert!(
        waited >= Duration::from_millis(15),
        "switched too early: {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(80),
        "no forced switch: {waited:?}"
    );
}

#[test]
fn priority_gil_lets_an_io_thread_in_without_an_interval_wait() {
    // Holder was forced off before (CPU bound, low); the waiter comes back from I/O (high).
    let waited = waiter_delay(Policy::Priority, 50, true, false);
    assert!(
        waited < Duration::from_millis(25),
        "high-priority waiter waited {waited:?}"
    );
    // Equal priorities keep the interval rule.
    let waited = waiter_delay(Policy::Priority, 20, false, false);
    assert!(
        waited >= Duration::from_millis(15),
        "equal priorities should wait an interval: {waited:?}"
    );
}

#[test]
fn old_gil_holder_keeps_winning_its_own_releases() {
    // The holder releases every 100 units and re-takes at once; the waiter may take a while,
    // but must get in eventually (a futex wake is a handoff opportunity, not a guarantee).
    let waited = waiter_delay(Policy::Old, 5, false, false);
    assert!(waited < Duration::from_secs(5), "waiter never got in");
}

fn lab_config(
    policy: Policy,
    spinners: usize,
    messages: u64,
    truth: Option<std::path::PathBuf>,
) -> ExperimentConfig {
    ExperimentConfig {
        gil: config(policy, 5),
        spinners,
        messages,
        size: 1024,
        port: 0,
        client_timeout: Duration::from_secs(2),
        truth,
        client: ClientMode::Thread,
    }
}

#[test]
fn truth_log_round_trips_and_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    for policy in Policy::ALL {
        let path = dir.path().join(format!("{}.jsonl", policy.name()));
        let result = experiment::run(&lab_config(policy, 2, 25, Some(path.clone()))).unwrap();
        assert_eq!(result.echoed, 25, "{policy:?}");
        let events = parse_jsonl(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Round trip: re-serialize and parse again.
        let text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert_eq!(parse_jsonl(&text).unwrap(), events);

        let mut roles = HashMap::new();
        for e in &events {
            if let TruthEvent::Thread { tid, role, .. } = e {
                roles.insert(*tid, role.clone());
            }
        }
        assert_eq!(roles.values().filter(|r| *r == "spinner").count(), 2);
        assert_eq!(roles.values().filter(|r| *r == "echo").count(), 1);
        assert_eq!(roles.values().filter(|r| *r == "main").count(), 1);

        // Per thread: acquire and release alternate, starting with acquire.
        let mut holding: HashMap<u32, bool> = HashMap::new();
        // Globally: never two holders.
        let mut holder: Option<u32> = None;
        let (mut recvs, mut sends) = (0, 0);
        for e in &events {
            match e {
                TruthEvent::Acquire { tid, .. } => {
                    assert!(
                        !holding.get(tid).copied().unwrap_or(false),
                        "{policy:?}: {tid} acquired twice"
                    );
                    holding.insert(*tid, true);
                    assert_eq!(
                        holder, None,
                        "{policy:?}: {tid} acquired while {holder:?} held the lock"
                    );
                    holder = Some(*tid);
                }
                TruthEvent::Release { tid, .. } => {
                    assert!(
                        holding.get(tid).copied().unwrap_or(false),
                        "{policy:?}: {tid} released without holding"
                    );
                    holding.insert(*tid, false);
                    assert_eq!(holder, Some(*tid));
                    holder = None;
                }
                TruthEvent::Recv { bytes, .. } if *bytes > 0 => recvs += 1,
                TruthEvent::Send { .. } => sends += 1,
                _ => {}
            }
        }
        assert_eq!((recvs, sends), (25, 25), "{policy:?}");
        assert!(
            holding.values().all(|h| !h),
            "{policy:?}: a thread ended holding the lock"
        );
        assert!(
            events.windows(2).all(|w| w[0].ts_ns() <= w[1].ts_ns()),
            "log is time-sorted"
        );
    }
}

fn workload() -> Command {
    Command::new(env!("CARGO_BIN_EXE_workload"))
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let out = workload().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn bad_input_gets_a_one_line_error() {
    assert_one_line_error(&["--gil", "turbo"], "unknown GIL policy");
    assert_one_line_error(&["--spinners", "100000"], "too many");
    assert_one_line_error(&["--size", "65508"], "65507");
    assert_one_line_error(&["--size", "0"], "between 1");
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    assert_one_line_error(
        &["--port", &port, "--spinners", "0", "--messages", "1"],
        "cannot bind",
    );
}
