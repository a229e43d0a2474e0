//! Root-only: names and stacks from real recordings. The lab (built with frame pointers) must
//! come out in its own terms — the lock by the code that uses it, the convoy's waiter and
//! holders by their functions, every named frame one of the lab's, std's or libc's; CPython's
//! GIL by name in both of this machine's builds; a stripped static program as module+offset.
mod common;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

fn report_json(trace: &Path, extra: &[&str]) -> Value {
    let out = gil_trace()
        .args(["report", "--json"])
        .args(extra)
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lab with the new GIL and 2 spinners; up to four runs, as placement can hide the convoy
/// (the suite's CPython tests load both CPUs beside it, and the OS then often runs the woken
/// echo thread first).
fn lab_with_convoy(dir: &Path, extra: &[&str]) -> Value {
    const ATTEMPTS: usize = 4;
    let trace = dir.join("lab.trace");
    for attempt in 0..ATTEMPTS {
        let out = record_workload(
            &trace,
            extra,
            &["--gil", "new", "--spinners", "2", "--messages", "40"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let report = report_json(&trace, &[]);
        if report["convoys"].as_array().is_some_and(|c| !c.is_empty()) {
            return report;
        }
        eprintln!("no convoy on attempt {attempt} (placement?); retrying");
    }
    panic!("the lab showed no convoy in {ATTEMPTS} runs");
}

#[test]
fn the_lab_convoy_names_the_code_that_waited_and_held() {
    if skip_without_privilege("the_lab_convoy_names_the_code_that_waited_and_held") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = lab_with_convoy(dir.path(), &[]);
    let lock = &report["locks"][0];
    let name = lock["name"].as_str().unwrap();
    assert!(
        name.starts_with("lock used by ") && name.contains("NewGil"),
        "the lab's GIL (on the heap) is named by the code that takes it: {name}"
    );
    assert_eq!(lock["kind"], "futex");
    // A program that is not Python is recorded as before: no sampler, no samples.
    assert!(report.get("python").is_none(), "{}", report["python"]);
    assert_eq!(report["event_counts"]["py_sample"], 0);
    let verdict = report["verdicts"][0]["text"].as_str().unwrap();
    assert!(
        verdict.contains("in gil_lab::echo::serve (echo.rs:"),
        "the waiter's code: {verdict}"
    );
    assert!(
        verdict.contains("in gil_lab::spinner::run (spinner.rs:"),
        "the holders' code: {verdict}"
    );
    // Every frame of every stack is the lab's, std's or the C library's, named; the lab's
    // lock waits are whole (frame pointers all the way to the thread's start).
    let stacks = report["stacks"].as_object().expect("a stacks table");
    assert!(!stacks.is_empty());
    for (key, stack) in stacks {
        for frame in stack["frames"].as_array().unwrap() {
            let module = frame["module"].as_str().unwrap_or("");
            let function = frame["function"].as_str().unwrap_or("");
            assert!(
                matches!(module, "workload" | "libc.so.6"),
                "{key}: a frame outside the lab and libc: {frame}"
            );
            assert!(!function.is_empty(), "{key}: an unnamed frame: {frame}");
            if module == "workload" {
                let ours = ["gil_lab::", "std::", "core::", "alloc::", "<"];
                assert!(
                    ours.iter().any(|p| function.starts_with(p)),
                    "{key}: not the lab's or std's code: {function}"
                );
            }
        }
    }
    let convoy = &report["convoys"][0];
    let wait = &stacks[convoy["wait_stack"].as_str().unwrap()];
    assert_eq!(wait["truncated"], false, "{wait}");
    let frames: Vec<&str> = wait["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    assert!(frames.iter().any(|f| f.contains("NewGil")), "{frames:?}");
    assert!(frames.contains(&"gil_lab::echo::serve"), "{frames:?}");
    assert_eq!(frames.last(), Some(&"start_thread"), "{frames:?}");
}

#[test]
fn stacks_fold_draw_and_list_and_no_stacks_records_none() {
    if skip_without_privilege("stacks_fold_draw_and_list_and_no_stacks_records_none") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("lab.trace");
    let out = record_workload(
        &trace,
        &["--stacks", "all"],
        &["--gil", "new", "--spinners", "1", "--messages", "20"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let folded = gil_trace()
        .args(["export", "--format", "folded", "-q", "-o", "-"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(folded.status.success(), "{}", stderr(&folded));
    let text = stdout(&folded);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let (stack, ns) = line.rsplit_once(' ').unwrap();
        assert!(ns.parse::<u64>().unwrap() > 0, "{line}");
        assert!(stack.matches(';').count() >= 2, "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("gil_lab::echo::serve") && l.contains("[wait for lock used by")),
        "lock waits by the echo thread's code:\n{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("[I/O wait]")),
        "--stacks all: the recv waits too:\n{text}"
    );
    let svg = dir.path().join("fg.svg");
    let out = gil_trace()
        .args(["report", "-q", "--stacks", "--flamegraph"])
        .arg(&svg)
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stacks waiting for lock used by"),
        "{}",
        stdout(&out)
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("<svg") && drawn.contains("gil_lab::echo::serve"));

    let none = dir.path().join("none.trace");
    let out = record_workload(
        &none,
        &["--no-stacks"],
        &["--gil", "new", "--spinners", "1", "--messages", "5"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = report_json(&none, &[]);
    assert!(
        report.get("stacks").is_none(),
        "--no-stacks recorded stacks"
    );
    let out = gil_trace()
        .args(["export", "--format", "folded", "-o", "-"])
        .arg(&none)
        .output()
        .unwrap();
    assert_one_line_error(&out, "no stacks to fold");
}

#[test]
fn the_cpython_gil_is_named_in_a_shared_and_a_static_stripped_build() {
    if skip_without_privilege("the_cpython_gil_is_named_in_a_shared_and_a_static_stripped_build") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/py_echo.py");
    let dir = tempfile::tempdir().unwrap();
    for python in python_executables() {
        let trace = dir.path().join("py.trace");
        let out = record_cmd(&trace, &[])
            .arg(&python)
            .args([script, "1", "30"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{python}: {}", stderr(&out));
        let report = report_json(&trace, &[]);
        let top = &report["locks"][0];
        assert_eq!(top["name"], "GIL", "{python}: {top}");
        assert_eq!(top["kind"], "cpython-gil", "{python}");
        assert!(
            top["version"].as_str().unwrap().starts_with("3.11."),
            "{python}: {top}"
        );
        assert_eq!(top["symbol"]["symbol"], "_PyRuntime", "{python}: {top}");
        // Verdicts and rows say GIL too; JSON rows keep the address as the key.
        if let Some(v) = report["verdicts"].as_array().and_then(|v| v.first()) {
            assert!(
                v["text"].as_str().unwrap().contains("waiting for GIL"),
                "{v}"
            );
        }
        assert_eq!(
            report["handoffs"][0]["lock"],
            top["addr"].as_u64().map(|a| format!("{a:#x}")).unwrap()
        );
        // CPython has no frame pointers: its stacks stop where the chain breaks, and say so
        // (a stack is whole only when it reaches a thread's first function).
        for (key, stack) in report["stacks"].as_object().into_iter().flatten() {
            let frames = stack["frames"].as_array().unwrap();
            assert!(!frames.is_empty(), "{key}");
            let last = frames.last().unwrap()["function"].as_str().unwrap_or("");
            // Python stacks (sampled, keys "pid:pyN") end in the interpreter's `<module>`.
            if stack["truncated"] == false && !key.contains(":py") {
                assert!(
                    [
                        "start_thread",
                        "_start",
                        "__libc_start_call_main",
                        "main",
                        "clone3"
                    ]
                    .contains(&last),
                    "{python}: {key} is whole but ends in {last}"
                );
            }
        }
    }
}

#[test]
fn a_stripped_static_program_gets_offsets_and_no_error() {
    if skip_without_privilege("a_stripped_static_program_gets_offsets_and_no_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("contend.c");
    std::fs::write(
        &source,
        r#"#include <pthread.h>
#include <stdio.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static volatile long counter;
static void *work(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&m);
        for (int k = 0; k < 2000; k++) counter++;
        pthread_mutex_unlock(&m);
    }
    return 0;
}
int main(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], 0, work, 0);
    for (int i = 0; i < 3; i++) pthread_join(t[i], 0);
    printf("%ld\n", counter);
    return 0;
}
"#,
    )
    .unwrap();
    let program = dir.path().join("contend");
    let cc = Command::new("gcc")
        .args(["-O1", "-static", "-s", "-pthread", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .expect("gcc is required for this test");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let trace = dir.path().join("c.trace");
    let out = record_cmd(&trace, &[]).arg(&program).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = report_json(&trace, &["--stacks"]);
    let lock = &report["locks"][0];
    assert!(
        lock["name"].as_str().unwrap().starts_with("lock 0x"),
        "{lock}"
    );
    assert!(
        lock.get("symbol").is_none(),
        "a stripped file has no symbol: {lock}"
    );
    let stacks = report["stacks"].as_object().unwrap();
    assert!(!stacks.is_empty());
    for stack in stacks.values() {
        for frame in stack["frames"].as_array().unwrap() {
            assert_eq!(frame["module"], "contend", "{frame}");
            assert!(frame["function"].is_null(), "a name from nowhere: {frame}");
        }
    }
    let text = gil_trace()
        .args(["report", "--stacks"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(text.status.success());
    assert!(stdout(&text).contains("contend+0x"), "{}", stdout(&text));
}

/// The distinct stacks of a recording, each as its frames' functions (or module+offset),
/// and the report's warnings.
fn stack_set(report: &Value) -> std::collections::BTreeSet<Vec<String>> {
    report["stacks"]
        .as_object()
        .expect("a stacks table")
        .values()
        .map(|stack| {
            stack["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| match f["function"].as_str() {
                    Some(function) => function.to_string(),
                    None => format!("{}+{}", f["module"], f["offset"]),
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_programs_own_stack_walk_finds_the_kernels_stacks() {
    // Where the kernel has BTF the programs follow the frame pointers themselves (a walk
    // that ends without a faulting read); GIL_TRACE_KERNEL_STACKS=1 has the kernel's
    // bpf_get_stackid walk instead. The storm's threads wait at one fixed place (the
    // condvar) and now and then elsewhere (a contended mutex: by chance, so not in every
    // run): both walkers must find whole stacks, store every one, and give the condvar wait
    // the same frames.
    if skip_without_privilege("the_programs_own_stack_walk_finds_the_kernels_stacks") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    for kernel_walker in [false, true] {
        let trace = dir.path().join(format!("{kernel_walker}.trace"));
        let mut cmd = record_cmd(&trace, &[]);
        if kernel_walker {
            cmd.env("GIL_TRACE_KERNEL_STACKS", "1");
        }
        let out = cmd
            .arg(workspace_bin("workload"))
            .args(["storm", "--pairs", "2", "--seconds", "0.5"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let report = report_json(&trace, &[]);
        let warnings = report["warnings"].to_string();
        assert!(
            !warnings.contains("stacks could not be stored"),
            "{warnings}"
        );
        let stacks = stack_set(&report);
        assert!(stacks.len() >= 2, "{stacks:?}");
        for frames in &stacks {
            assert_eq!(
                frames.first().map(String::as_str),
                Some("syscall"),
                "{frames:?}"
            );
            assert_eq!(
                frames.last().map(String::as_str),
                Some("start_thread"),
                "{frames:?}"
            );
            assert!(
                frames
                    .iter()
                    .any(|f| f == "gil_lab::fixture::storm::{{closure}}"
                        || f.starts_with("std::thread::")),
                "{frames:?}"
            );
        }
        let condvar_wait: Vec<Vec<String>> = stacks
            .into_iter()
            .filter(|frames| {
                frames.get(1).map(String::as_str)
                    == Some("std::sync::poison::condvar::Condvar::wait_timeout")
            })
            .collect();
        assert_eq!(condvar_wait.len(), 1, "{condvar_wait:?}");
        found.push(condvar_wait);
    }
    assert_eq!(found[0], found[1], "the two walkers found different stacks");
}
