//! `cargo xtask bench`: performance figures, written to BENCHMARKS.md.
//!
//! Analysis speed: a recorded GIL-lab trace (real structure: a convoy with two spinners)
//! is replicated end to end, shifted in time, into a trace of ≥ 10 M events; `gil-trace
//! report` (text and --json) runs on it; events/s and peak RSS are measured for the child.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use gil_trace::trace::{TraceReader, TraceTrailer, TraceWriter};
use gil_trace_common::RawEvent;

use crate::{build::release_bin, workspace_root};

/// Wall seconds and peak RSS (KiB) of one command: wait4 gives that child's own rusage.
fn measure(cmd: &mut Command) -> Result<(f64, u64)> {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (wait status {status})");
    }
    Ok((secs, usage.ru_maxrss as u64))
}

/// Writes `target` events by repeating `base`'s events shifted by its span each round.
pub fn replicate(base: &Path, out: &Path, target: u64) -> Result<u64> {
    let reader = TraceReader::open(base)?;
    let meta = reader.meta().clone();
    let mut events: Vec<RawEvent> = Vec::new();
    let mut block = Vec::new();
    let mut reader = reader;
    while reader.next_block(&mut block)? {
        events.extend_from_slice(&block);
    }
    if events.is_empty() {
        bail!("{} has no events", base.display());
    }
    let first = events.iter().map(|e| e.ts_ns).min().unwrap();
    let last = events.iter().map(|e| e.ts_ns).max().unwrap();
    let span = last - first + 1_000_000;
    let mut w = TraceWriter::create(out, &meta)?;
    let mut n = 0u64;
    let mut round = 0u64;
    while n < target {
        for e in &events {
            let mut e = *e;
            e.ts_ns += round * span;
            w.push(&e)?;
            n += 1;
        }
        round += 1;
    }
    let end = last + (round - 1) * span;
    w.finish(TraceTrailer {
        end_monotonic_ns: end,
        stop_reason: "exit".into(),
        ..Default::default()
    })?;
    Ok(n)
}

pub fn run() -> Result<()> {
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let base = dir.join("base.trace");
    let status = Command::new(release_bin("gil-trace"))
        .args(["record", "--quiet", "-o"])
        .arg(&base)
        .arg("--")
        .arg(release_bin("workload"))
        .args(["--gil", "new", "--spinners", "2", "--messages", "300"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("recording the base trace failed (bench needs root)");
    }
    let big: PathBuf = dir.join("big.trace");
    let events = replicate(&base, &big, 10_000_000)?;
    let size = fs::metadata(&big)?.len();
    eprintln!(
        "[bench] {} events, {:.1} MB ({:.1} B/event)",
        events,
        size as f64 / 1e6,
        size as f64 / events as f64
    );
    let mut rows = Vec::new();
    for (name, args) in [
        ("report (text)", vec!["report"]),
        ("report --json", vec!["report", "--json"]),
    ] {
        let mut cmd = Command::new(release_bin("gil-trace"));
        cmd.args(&args).arg(&big);
        let (secs, rss) = measure(&mut cmd)?;
        eprintln!(
            "[bench] {name}: {secs:.2} s, {:.1} M events/s, peak RSS {} MiB",
            events as f64 / secs / 1e6,
            rss / 1024
        );
        rows.push((name, secs, rss));
    }
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Produced by `cargo xtask bench` on {} ({} CPUs, kernel {}).\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout).trim()
    )?;
    writeln!(md, "## Analysis speed\n")?;
    writeln!(md, "A recorded lab trace (`workload --gil new --spinners 2`: a real convoy) replicated to {events} events ({:.1} B/event on disk). Single-threaded; two streaming passes over the file (locks first, then everything else). Target (issue 4): ≥ 10 M events/s with flat memory.\n", size as f64 / events as f64)?;
    writeln!(md, "| command | seconds | events/s | peak RSS |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (name, secs, rss) in rows {
        writeln!(
            md,
            "| `gil-trace {name}` | {secs:.2} | {:.1} M | {} MiB |",
            events as f64 / secs / 1e6,
            rss / 1024
        )?;
    }
    fs::write(workspace_root().join("BENCHMARKS.md"), md)?;
    eprintln!("[bench] wrote BENCHMARKS.md");
    Ok(())
}
