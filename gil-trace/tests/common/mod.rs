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

/// True when this process may load eBPF programs. Tests that need it print why they skip.
pub fn can_load_ebpf() -> bool {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(0);
    caps & (1 << 21) != 0 || (caps & (1 << 39) != 0 && caps & (1 << 38) != 0)
}

/// Skips the calling test (returns true) when not privileged, saying so.
pub fn skip_without_privilege(test: &str) -> bool {
    if can_load_ebpf() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root or CAP_BPF+CAP_PERFMON to load eBPF programs (run `sudo cargo xtask test`)");
    true
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
