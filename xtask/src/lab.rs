//! `cargo xtask lab-table`: the GIL lab's bytes/s for every policy × spinner count, written to
//! docs/lab-table.md with the machine and date (all runs in one invocation).
use std::{fmt::Write as _, fs, process::Command};

use anyhow::{bail, Context, Result};

use crate::{build::release_bin, workspace_root};

const POLICIES: [&str; 4] = ["old", "new", "priority", "fair"];
const SPINNERS: [u32; 4] = [0, 1, 2, 4];

pub fn machine() -> String {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "{} CPUs ({cpu}), kernel {}",
        out("nproc", &[]),
        out("uname", &["-r"])
    )
}

pub fn run(messages: u32) -> Result<()> {
    let workload = release_bin("workload");
    let mut rows = Vec::new();
    for policy in POLICIES {
        let mut row = Vec::new();
        for spinners in SPINNERS {
            let out = Command::new(&workload)
                .args([
                    "--gil",
                    policy,
                    "--spinners",
                    &spinners.to_string(),
                    "--messages",
                    &messages.to_string(),
                ])
                .args(["--timeout-ms", "250", "--json"])
                .output()
                .with_context(|| format!("running {}", workload.display()))?;
            if !out.status.success() {
                bail!(
                    "workload --gil {policy} --spinners {spinners} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let bps = v["bytes_per_sec"].as_f64().unwrap_or(0.0);
            let p50 = v["rtt_us"]["p50"].as_f64().unwrap_or(0.0);
            let iters = v["spinner_iters_per_sec"].as_f64().unwrap_or(0.0);
            let lost = v["lost"].as_u64().unwrap_or(0);
            eprintln!("[lab] {policy:<8} spinners {spinners}: {:>10.3} MB/s, p50 {p50:>9.1} µs, {iters:>8.0} iters/s, {lost} lost", bps / 1e6);
            row.push((bps, p50, lost));
        }
        rows.push((policy, row));
    }
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let mut md = String::new();
    writeln!(
        md,
        "# GIL lab: echo throughput by policy and CPU-bound threads\n"
    )?;
    writeln!(
        md,
        "Produced by `cargo xtask lab-table` on {date}, {}.",
        machine()
    )?;
    writeln!(md, "Each cell: `workload --gil P --spinners N --messages {messages} --timeout-ms 250` (8192-byte datagrams), echo MB/s (median RTT).")?;
    writeln!(md, "All runs in one invocation, one after another.\n")?;
    write!(md, "| policy |")?;
    for s in SPINNERS {
        write!(md, " {s} spinners |")?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---:|".repeat(SPINNERS.len()))?;
    for (policy, row) in &rows {
        write!(md, "| {policy} |")?;
        for (bps, p50, lost) in row {
            let lost = if *lost > 0 {
                format!(", {lost} lost")
            } else {
                String::new()
            };
            write!(md, " {:.2} ({:.0} µs{lost}) |", bps / 1e6, p50)?;
        }
        writeln!(md)?;
    }
    let new = &rows[1].1;
    writeln!(md, "\nConvoy: new GIL with 2 spinners keeps {:.2}% of its 0-spinner throughput; priority is {:.0}x and fair {:.0}x the new GIL at 2 spinners.",
        100.0 * new[2].0 / new[0].0, rows[2].1[2].0 / new[2].0, rows[3].1[2].0 / new[2].0)?;
    let path = workspace_root().join("docs/lab-table.md");
    fs::write(&path, md)?;
    eprintln!("[lab] wrote {}", path.display());
    Ok(())
}
