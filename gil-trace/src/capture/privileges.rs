//! Checks that the process may load eBPF programs before trying (so the error says why).
use std::fs;

use super::CaptureError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set from /proc/self/status.
fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// May this process load tracepoint programs? CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn can_load_ebpf() -> bool {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Ok when loading tracepoint programs should be allowed; otherwise says what is missing.
pub fn check() -> Result<(), CaptureError> {
    if can_load_ebpf() {
        return Ok(());
    }
    let caps = effective_caps();
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    let exe =
        std::env::current_exe().map_or_else(|_| "gil-trace".into(), |p| p.display().to_string());
    Err(CaptureError::NotPrivileged {
        missing: missing.join(" and "),
        exe,
    })
}
