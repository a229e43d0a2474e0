//! Helpers shared by gil-trace's integration tests.
#![allow(dead_code)]
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The `gil-trace` binary under test.
pub fn gil_trace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gil-trace"))
}

/// Another binary of this workspace (e.g. the lab's `workload`), built next to the tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A small tmpfs mounted at a fresh directory for one test (root only), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
    }
}

/// `--svg=PATH`: the path is only ever taken joined to the flag.
pub fn svg_flag(path: &Path) -> std::ffi::OsString {
    let mut flag = std::ffi::OsString::from("--svg=");
    flag.push(path);
    flag
}

/// Polls `done` every 10 ms until it holds or `deadline` passes; whether it held.
pub fn poll_until(deadline: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + deadline;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// True when this process may load eBPF programs (the recorder's own check).
pub fn can_load_ebpf() -> bool {
    gil_trace::capture::privileges::can_load_ebpf()
}

/// Skips the calling test (returns true) when not privileged, saying so.
pub fn skip_without_privilege(test: &str) -> bool {
    if can_load_ebpf() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root or CAP_BPF+CAP_PERFMON to load eBPF programs (run `sudo cargo xtask test`)");
    true
}

/// `gil-trace record --quiet EXTRA… -o TRACE --`: the caller appends the command (and any
/// environment or stdio) and runs it.
pub fn record_cmd(trace: &Path, extra: &[&str]) -> Command {
    let mut cmd = gil_trace();
    cmd.args(["record", "--quiet"])
        .args(extra)
        .arg("-o")
        .arg(trace)
        .arg("--");
    cmd
}

/// `gil-trace record --quiet EXTRA… -o TRACE -- workload ARGS…`, run to the end.
pub fn record_workload(trace: &Path, extra: &[&str], workload_args: &[&str]) -> Output {
    record_cmd(trace, extra)
        .arg(workspace_bin("workload"))
        .args(workload_args)
        .output()
        .unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failed run printed exactly one line on stderr containing `needle`.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not a one-line error:\n{err}");
    assert!(err.contains(needle), "error lacks {needle:?}: {err}");
}

use gil_trace::trace::{format::FORMAT_VERSION, TraceMeta, TraceTrailer, TraceWriter};
use gil_trace_common::{EventKind, RawEvent};

const LOCK: u64 = 0x1000;

fn raw(ts: u64, kind: EventKind, tid: u32, args: [u64; 4]) -> RawEvent {
    RawEvent {
        ts_ns: ts,
        kind: kind as u32,
        tid,
        tgid: 100,
        cpu: 0,
        args,
    }
}

/// A synthetic echo server trace: thread 101 ("echo") receives `rounds` datagrams; after each
/// recv it waits `lock_wait_ns` for a lock held by 102 ("spinner") (0: no wait); plus
/// `extra_threads` threads that just run, so lanes can be counted.
pub fn synthetic_echo_trace(path: &Path, rounds: u64, lock_wait_ns: u64, extra_threads: u32) {
    synthetic_echo_trace_with(path, rounds, lock_wait_ns, extra_threads, None);
}

/// [`synthetic_echo_trace`], and with `late_arrival`, thread 104 ("late") dequeues one more
/// datagram at the very end of the trace that arrived at that time (left in a socket's
/// backlog all along).
pub fn synthetic_echo_trace_with(
    path: &Path,
    rounds: u64,
    lock_wait_ns: u64,
    extra_threads: u32,
    late_arrival: Option<u64>,
) {
    let meta = TraceMeta {
        format_version: FORMAT_VERSION,
        command: vec!["synthetic".into()],
        root_pid: 100,
        start_monotonic_ns: 0,
        clock: "CLOCK_MONOTONIC".into(),
        ..Default::default()
    };
    let mut w = TraceWriter::create(path, &meta).unwrap();
    let (echo, spinner, client) = (101u32, 102u32, 103u32);
    let mut ev = vec![];
    let comm = |tid: u32, name: &str| {
        let mut b = [0u8; 16];
        b[..name.len()].copy_from_slice(name.as_bytes());
        let [lo, hi] = gil_trace_common::comm_to_args(&b);
        raw(1, EventKind::Comm, tid, [lo, hi, 0, 0])
    };
    ev.push(comm(echo, "echo"));
    ev.push(comm(spinner, "spinner"));
    ev.push(comm(client, "client"));
    let futex = |ts, tid, op: u64| {
        raw(
            ts,
            EventKind::FutexEnter,
            tid,
            [
                LOCK,
                op,
                0,
                0xffff_ffff | (u64::from(op == 137) << 32) | (1 << 40),
            ],
        )
    };
    let fexit = |ts, tid, ret: i64| raw(ts, EventKind::FutexExit, tid, [ret as u64, 1, 0, 0]);
    let switch = |ts, prev: u32, next: u32, state: u64| {
        raw(
            ts,
            EventKind::SchedSwitch,
            prev,
            [
                u64::from(next),
                state,
                120,
                u64::from(prev != 0) | (u64::from(next != 0) << 1),
            ],
        )
    };
    // Both threads use the lock word.
    ev.extend([
        futex(10, spinner, 137),
        fexit(20, spinner, 0),
        futex(30, echo, 137),
        fexit(40, echo, 0),
    ]);
    let ms = 1_000_000u64;
    for i in 0..rounds {
        let t = ms + i * (lock_wait_ns + 2 * ms);
        ev.push(raw(t, EventKind::RecvEnter, echo, [45, 3, 65507, 0]));
        ev.push(switch(t + 1_000, echo, spinner, 1));
        ev.push(raw(
            t + 10_000,
            EventKind::SchedWaking,
            client,
            [u64::from(echo), 0, 0, 0],
        ));
        ev.push(switch(t + 12_000, spinner, echo, 0));
        ev.push(raw(
            t + 14_000,
            EventKind::NetRecv,
            echo,
            [t + 9_000, 7, 512, 0],
        ));
        ev.push(raw(t + 15_000, EventKind::RecvExit, echo, [512, 45, 0, 0]));
        let mut at = t + 16_000;
        if lock_wait_ns > 0 {
            ev.push(futex(at, echo, 137));
            ev.push(switch(at + 500, echo, spinner, 1));
            ev.push(futex(at + lock_wait_ns - 3_000, spinner, 129));
            ev.push(raw(
                at + lock_wait_ns - 2_000,
                EventKind::SchedWaking,
                spinner,
                [u64::from(echo), 0, 0, 0],
            ));
            ev.push(fexit(at + lock_wait_ns - 1_000, spinner, 1));
            ev.push(switch(at + lock_wait_ns - 500, spinner, echo, 0));
            ev.push(fexit(at + lock_wait_ns, echo, 0));
            at += lock_wait_ns;
        }
        ev.push(raw(at + 5_000, EventKind::SendEnter, echo, [44, 3, 512, 0]));
        ev.push(raw(at + 8_000, EventKind::SendExit, echo, [512, 44, 0, 0]));
        for k in 0..extra_threads {
            let tid = 200 + k;
            ev.push(switch(at + 9_000 + u64::from(k), 0, tid, 0));
            ev.push(switch(
                at + 9_500 + u64::from(k) * 7,
                tid,
                0,
                (i + u64::from(k)) % 2,
            ));
        }
    }
    if let Some(arrival) = late_arrival {
        let late = 104u32;
        let t = ev.iter().map(|e| e.ts_ns).max().unwrap_or(0) + 1_000;
        ev.push(raw(t, EventKind::RecvEnter, late, [45, 4, 65507, 0]));
        ev.push(raw(
            t + 1_000,
            EventKind::NetRecv,
            late,
            [arrival, 8, 64, 0],
        ));
        ev.push(raw(t + 2_000, EventKind::RecvExit, late, [64, 45, 0, 0]));
    }
    ev.sort_by_key(|e| e.ts_ns);
    let end = ev.last().map_or(0, |e| e.ts_ns);
    for e in &ev {
        w.push(e).unwrap();
    }
    w.finish(TraceTrailer {
        end_monotonic_ns: end,
        stop_reason: "exit".into(),
        ..Default::default()
    })
    .unwrap();
}

/// This machine's two CPython builds: the one `python3` runs (pyenv: a shared libpython with
/// symbols and DWARF) and Debian's `/usr/bin/python3.11` (static, stripped). Both required.
pub fn python_executables() -> Vec<String> {
    // The real interpreter: pyenv shims are shell scripts that would be traced too.
    let pyenv = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is required for this test");
    let mut all = vec![String::from_utf8_lossy(&pyenv.stdout).trim().to_string()];
    assert!(
        Path::new("/usr/bin/python3.11").exists(),
        "Debian's /usr/bin/python3.11 is required for this test"
    );
    all.push("/usr/bin/python3.11".into());
    all
}

/// Waits (up to `deadline`) until a descendant of `pid` runs a program named `comm` (its
/// kernel name, so after its exec); whether one did.
pub fn wait_for_descendant(pid: u32, comm: &str, deadline: std::time::Duration) -> bool {
    fn children(pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    }
    poll_until(deadline, || {
        let mut pending = children(pid);
        while let Some(child) = pending.pop() {
            let name = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if name.trim_end() == comm {
                return true;
            }
            pending.extend(children(child));
        }
        false
    })
}
