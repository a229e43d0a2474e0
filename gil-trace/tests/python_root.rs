//! Root-only: real CPython 3.11 under gil-trace, with no configuration. The GIL must come out
//! as the top lock; with a CPU-bound thread the echo thread's stalls are mostly GIL waits and
//! convoy episodes cover its serving time; without one there is no convoy. With the Python
//! sampler, on both of this machine's CPython builds, the convoy is told in Python: thread
//! names, the functions that waited and held, and the sampled holder agrees with the kernel's.
mod common;

use std::{process::Command, sync::Mutex};

use common::*;

#[derive(serde::Deserialize)]
struct Fixture {
    echo_tid: u32,
    spinner_tids: Vec<u32>,
}

/// One recording at a time: two of them (4 CPU-bound threads on 2 CPUs) would measure each
/// other rather than the convoy.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn python() -> Option<String> {
    // Resolve the real interpreter (pyenv shims are shell scripts that would be traced too).
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The kernel's view alone (`--no-py`): the Python sampler's own CPU is not part of what
/// this checks.
fn record_python(spinners: u32, messages: u32) -> (Fixture, serde_json::Value) {
    record_with(
        &python().expect("python3 is required for this test"),
        &["--no-py"],
        spinners,
        messages,
    )
}

fn record_with(
    py: &str,
    extra: &[&str],
    spinners: u32,
    messages: u32,
) -> (Fixture, serde_json::Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/py_echo.py");
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("py.trace");
    let out = record_cmd(&trace, extra)
        .arg(py)
        .arg(script)
        .args([spinners.to_string(), messages.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "record failed: {}", stderr(&out));
    let fixture: Fixture = serde_json::from_str(stdout(&out).trim()).expect("fixture output");
    let out = gil_trace()
        .args(["report", "--json", "--detail"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    if std::env::var_os("GIL_TRACE_KEEP_TEST_TRACES").is_some() {
        eprintln!("kept {}", dir.keep().join("py.trace").display());
    }
    (fixture, serde_json::from_slice(&out.stdout).unwrap())
}

/// ≥ 80 % on an idle machine; with two foreign CPU hogs a spinner is often off a CPU with the
/// GIL free, and some datagrams wait under the 1 ms threshold (76-79 % measured, and below
/// 70 % in about one run in ten).
const MIN_CONVOY_COVERAGE: f64 = 0.7;

/// The share of the echo thread's serving time (first arrival to last reply) that its convoy
/// episodes cover (0 without datagrams or episodes).
fn convoy_coverage(fx: &Fixture, report: &serde_json::Value) -> f64 {
    let ops: Vec<&serde_json::Value> = report["io_ops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["tid"] == fx.echo_tid && o["bytes"].as_u64() > Some(0))
        .collect();
    let first = ops.iter().filter_map(|o| o["arrival_ns"].as_u64()).min();
    let last = ops.iter().filter_map(|o| o["reply_ns"].as_u64()).max();
    let (Some(first), Some(last)) = (first, last) else {
        return 0.0;
    };
    let covered: u64 = report["convoys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["end_ns"].as_u64().unwrap() - c["start_ns"].as_u64().unwrap())
        .sum();
    covered as f64 / last.saturating_sub(first).max(1) as f64
}

#[test]
fn cpython_gil_is_the_top_lock_and_convoys_need_a_cpu_thread() {
    if skip_without_privilege("cpython_gil_is_the_top_lock_and_convoys_need_a_cpu_thread") {
        return;
    }
    // Two CPU-bound threads, and one retry: a moment of foreign CPU load changes thread
    // placement and can hide the convoy for a whole short run, or part of it (see
    // docs/analysis.md).
    let mut run = record_python(2, 150);
    if convoy_coverage(&run.0, &run.1) < MIN_CONVOY_COVERAGE {
        eprintln!("little or no convoy on the first run (placement?); retrying once");
        run = record_python(2, 150);
    }
    let (fx, report) = run;
    assert_eq!(report["lost"], 0);
    let top = &report["locks"][0];
    let users: Vec<u64> = top["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(
        users.contains(&u64::from(fx.echo_tid)),
        "echo thread not on the top lock: {top}"
    );
    for s in &fx.spinner_tids {
        assert!(
            users.contains(&u64::from(*s)),
            "spinner {s} not on the top lock: {top}"
        );
    }
    assert!(
        top["words"].as_array().unwrap().len() >= 2,
        "GIL is a condvar + mutex: {top}"
    );
    let convoys = report["convoys"].as_array().unwrap();
    assert!(
        !convoys.is_empty(),
        "no convoy with a CPU-bound thread: {}",
        report["io_stalls"]
    );
    assert!(
        convoys.iter().all(|c| c["tid"] == fx.echo_tid),
        "convoy on a thread other than the echo thread"
    );
    let holders: Vec<u64> = convoys[0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_u64().unwrap())
        .collect();
    assert!(
        holders.contains(&u64::from(fx.spinner_tids[0])),
        "the spinner should hold the lock: {holders:?}"
    );
    // The echo thread's stalls are mostly GIL waits...
    let echo_stalls = report["io_stalls"]["by_thread"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == fx.echo_tid)
        .expect("the echo thread received datagrams");
    let share = |cause: &str| echo_stalls["share"][cause].as_f64().unwrap();
    for cause in [
        "runnable", "running", "wakeup", "io_wait", "sleep", "unknown",
    ] {
        assert!(
            share("lock_wait") > share(cause),
            "lock wait is not the dominant stall cause: {}",
            echo_stalls["share"]
        );
    }
    // ...and every datagram waits for the GIL: the episodes cover most of the time the echo
    // thread served.
    let coverage = convoy_coverage(&fx, &report);
    assert!(
        coverage >= MIN_CONVOY_COVERAGE,
        "convoy episodes cover {:.0}% of the serving time",
        coverage * 100.0
    );

    let (_, report) = record_python(0, 150);
    assert_eq!(
        report["convoys"].as_array().unwrap().len(),
        0,
        "convoys without a competitor: {}",
        report["convoys"]
    );
    assert!(report["io_stalls"]["datagrams"].as_u64().unwrap() >= 150);
}

#[test]
fn python_threads_and_functions_tell_the_convoy_on_both_cpython_builds() {
    if skip_without_privilege("python_threads_and_functions_tell_the_convoy_on_both_cpython_builds")
    {
        return;
    }
    for py in python_executables() {
        // 500 Hz: on a busy machine the convoy breaks into episodes of tens of ms, in which
        // 100 Hz gives each holder too few samples (< 3) to be named, by design.
        let rate = ["--py-rate", "500"];
        let mut run = record_with(&py, &rate, 2, 300);
        if run.1["convoys"].as_array().is_none_or(Vec::is_empty) {
            eprintln!("{py}: no convoy on the first run (placement?); retrying once");
            run = record_with(&py, &rate, 2, 300);
        }
        let (fx, report) = run;
        let thread = |tid: u32| {
            report["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tid"] == tid)
                .unwrap_or_else(|| panic!("{py}: thread {tid} not in the report"))
                .clone()
        };
        // threading's names (Python 3.10+: "Thread-N (target)"), the kernel's kept beside.
        let echo = thread(fx.echo_tid);
        assert!(
            echo["name"].as_str().unwrap().ends_with(" (echo)"),
            "{py}: {echo}"
        );
        assert!(
            echo["kernel_name"]
                .as_str()
                .is_some_and(|k| k.starts_with("python")),
            "{py}: {echo}"
        );
        for &s in &fx.spinner_tids {
            let spinner = thread(s);
            assert!(
                spinner["name"].as_str().unwrap().ends_with(" (spin)"),
                "{py}: {spinner}"
            );
        }
        // The echo thread's convoy with the most samples behind it (at 100 Hz a short
        // episode holds a sample or two: too few to name code, by design).
        let convoys = report["convoys"].as_array().unwrap();
        let (index, convoy) = convoys
            .iter()
            .enumerate()
            .filter(|(_, c)| c["tid"] == fx.echo_tid)
            .max_by_key(|(_, c)| c["py_wait_stack"]["of"].as_u64().unwrap_or(0))
            .unwrap_or_else(|| panic!("{py}: no convoy of the echo thread"));
        let innermost = |key: &serde_json::Value| {
            let key = key.as_str().expect("a stack key");
            assert!(key.contains(":py"), "{py}: not a Python stack: {key}");
            report["stacks"][key]["frames"][0].clone()
        };
        let wait = &convoy["py_wait_stack"];
        assert!(wait["samples"].as_u64().unwrap() >= 3, "{py}: {wait}");
        let frame = innermost(&wait["stack"]);
        assert!(
            frame["function"].as_str().unwrap().ends_with("echo") && frame["file"] == "py_echo.py",
            "{py}: the waiter's Python code: {frame}"
        );
        let holder = &convoy["py_holder_stacks"][0];
        assert!(
            fx.spinner_tids.iter().any(|&s| holder["tid"] == s),
            "{py}: the GIL held by a spinner: {holder}"
        );
        let frame = innermost(&holder["stack"]);
        let function = frame["function"].as_str().unwrap();
        assert!(
            function.ends_with("spin") || function == "Event.is_set",
            "{py}: the holder's Python code: {frame}"
        );
        let verdict = report["verdicts"][index]["text"].as_str().unwrap();
        for needle in [
            " (echo) [",
            "echo (py_echo.py:",
            " (spin) [",
            "spin (py_echo.py:",
            "samples]",
        ] {
            assert!(
                verdict.contains(needle),
                "{py}: {needle:?} not in {verdict}"
            );
        }
        // The interpreter's GIL holder against the kernel's holder band at any moment of each
        // sample's read: measured 99.5-99.8 % (89-97 % at the read's start alone).
        let agreement = &report["python"]["agreement"];
        let compared = agreement["compared"].as_u64().unwrap();
        let agree = agreement["agree"].as_u64().unwrap();
        assert!(
            compared >= 20,
            "{py}: too few samples compared: {agreement}"
        );
        assert!(
            agree as f64 >= 0.9 * compared as f64,
            "{py}: the sampled holder and the kernel's agree on {agree} of {compared}"
        );
    }
}

/// A service with many threads: py-spy's reads grow with them (~0.1 ms a thread), so the
/// sampler slows down to keep within its share of a CPU, and each sample then stands for the
/// time since the one before — the sampled time of a thread is its life, not samples × period.
#[test]
fn the_sampler_keeps_its_cpu_share_and_its_samples_cover_the_time_with_many_threads() {
    let py = python().expect("python3 is required for this test");
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("many.trace");
    let script = "import threading, time\n\
                  ts = [threading.Thread(target=time.sleep, args=(2,)) for _ in range(150)]\n\
                  [t.start() for t in ts]\n\
                  [t.join() for t in ts]\n";
    let out = record_cmd(&trace, &[])
        .arg(&py)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "record failed: {}", stderr(&out));
    let out = gil_trace()
        .args(["dump", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "dump failed: {}", stderr(&out));
    let samples: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "py_sample")
        .collect();
    let field = |e: &serde_json::Value, f: &str| e[f].as_u64().unwrap();
    // One read per round: the rounds by their time.
    let mut rounds: Vec<(u64, u64)> = samples
        .iter()
        .map(|e| (field(e, "ts_ns"), field(e, "read_ns")))
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    assert!(rounds.len() >= 5, "{} sample rounds", rounds.len());
    let (first, last) = (rounds[0].0, rounds.last().unwrap().0);
    let reading: u64 = rounds.iter().map(|r| r.1).sum();
    let share = reading as f64 / (last - first) as f64;
    // 0.10 allowed; a round's read is ~12 ms here, and the last one ends past `last`.
    assert!(share < 0.15, "the sampler read {share:.2} of the time");
    // The main thread lives through it all: its samples stand for its sampled span.
    let main = field(&samples[0], "pid");
    let own: Vec<&serde_json::Value> = samples.iter().filter(|e| field(e, "tid") == main).collect();
    let sampled: u64 = own.iter().map(|e| field(e, "period_ns")).sum();
    let span = field(own.last().unwrap(), "ts_ns") - field(own[0], "ts_ns");
    let ratio = sampled as f64 / span as f64;
    assert!(
        (0.9..1.1).contains(&ratio),
        "the main thread's samples stand for {sampled} ns of a {span} ns span"
    );
    // And the report says the rate was lower than asked, and why.
    let out = gil_trace()
        .args(["report", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("Hz, not the 100 Hz asked"), "{warnings}");
}
