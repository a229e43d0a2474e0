//! `cargo xtask bench`, section 5: what sampling CPython's Python stacks costs the traced
//! program. The pure-Python echo fixture (`py_echo.py`) with 0 and 1 CPU-bound threads,
//! untraced, recorded with `--no-py`, and recorded with the sampler at several rates, in
//! rotating order; each figure is the median of the per-round ratios against the untraced run
//! of the same round (these machines are noisy).
use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::Result;

use crate::{
    bench::{gil_trace_record, median, run_json},
    build::release_bin,
    workspace_root,
};

/// Sampling rates measured (the first is the default, `DEFAULT_PY_RATE_HZ`).
pub const RATES_HZ: [u32; 3] = [100, 1000, 5000];
/// (CPU-bound threads, datagrams): with a CPU thread each datagram waits for the GIL, so far
/// fewer make a run of comparable length.
const CONFIGS: [(u32, u32); 2] = [(0, 4000), (1, 400)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Untraced,
    NoPy,
    Rate(u32),
}

pub struct PyRow {
    pub spinners: u32,
    pub untraced_bytes_per_sec: f64,
    /// Median ratio to untraced, recorded without the sampler.
    pub no_py: f64,
    /// Median ratio to untraced at each of [`RATES_HZ`], and the sampler's samples per run.
    pub rates: Vec<(u32, f64, u64)>,
}

/// One run: the echo's bytes/s and, when sampled, the samples the report counts.
fn run_once(
    mode: Mode,
    python: &str,
    spinners: u32,
    messages: u32,
    dir: &Path,
) -> Result<(f64, u64)> {
    let fixture = workspace_root().join("gil-trace/tests/fixtures/py_echo.py");
    let trace = dir.join("py-bench.trace");
    let recorder = |extra: &[&str]| {
        let mut c = gil_trace_record(&trace, extra);
        c.arg(python);
        c
    };
    let mut cmd = match mode {
        Mode::Untraced => Command::new(python),
        Mode::NoPy => recorder(&["--no-py"]),
        Mode::Rate(hz) => recorder(&["--py-rate", &hz.to_string()]),
    };
    let v = run_json(
        cmd.arg(&fixture)
            .args([spinners.to_string(), messages.to_string()]),
    )?;
    let samples = if let Mode::Rate(_) = mode {
        let report = run_json(
            Command::new(release_bin("gil-trace"))
                .args(["report", "--json"])
                .arg(&trace),
        )?;
        report["python"]["samples"].as_u64().unwrap_or(0)
    } else {
        0
    };
    Ok((v["bytes_per_sec"].as_f64().unwrap_or(f64::NAN), samples))
}

pub fn measure(rounds: usize, dir: &Path) -> Result<Vec<PyRow>> {
    // pyenv's, the one users' `python3` is here.
    let python = crate::validate::pythons()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no python3 to measure"))?;
    let mut modes = vec![Mode::Untraced, Mode::NoPy];
    modes.extend(RATES_HZ.map(Mode::Rate));
    let mut rows = Vec::new();
    for (spinners, messages) in CONFIGS {
        let mut runs: Vec<Vec<(Mode, f64, u64)>> = Vec::new();
        for round in 0..rounds {
            let mut order = modes.clone();
            order.rotate_left(round % modes.len());
            let mut this_round = Vec::new();
            for mode in order {
                let (bytes, samples) = run_once(mode, &python, spinners, messages, dir)?;
                this_round.push((mode, bytes, samples));
            }
            runs.push(this_round);
        }
        let of = |round: &[(Mode, f64, u64)], m: Mode| {
            round.iter().find(|r| r.0 == m).map(|r| (r.1, r.2))
        };
        let ratio = |m: Mode| {
            median(
                runs.iter()
                    .filter_map(|r| Some(of(r, m)?.0 / of(r, Mode::Untraced)?.0))
                    .collect(),
            )
        };
        let row = PyRow {
            spinners,
            untraced_bytes_per_sec: median(
                runs.iter()
                    .filter_map(|r| of(r, Mode::Untraced).map(|u| u.0))
                    .collect(),
            ),
            no_py: ratio(Mode::NoPy),
            rates: RATES_HZ
                .iter()
                .map(|&hz| {
                    let samples = median(
                        runs.iter()
                            .filter_map(|r| of(r, Mode::Rate(hz)).map(|s| s.1 as f64))
                            .collect(),
                    );
                    (hz, ratio(Mode::Rate(hz)), samples as u64)
                })
                .collect(),
        };
        eprintln!(
            "[bench] python ×{spinners}: untraced {:.2} MB/s, --no-py {:.3}, {}",
            row.untraced_bytes_per_sec / 1e6,
            row.no_py,
            row.rates
                .iter()
                .map(|(hz, r, n)| format!("{hz} Hz {r:.3} ({n} samples)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rows.push(row);
    }
    Ok(rows)
}

pub fn markdown(md: &mut String, rounds: usize, rows: &[PyRow]) -> Result<()> {
    writeln!(md, "\n## 5. Python sampling\n")?;
    writeln!(
        md,
        "The pure-Python UDP echo fixture (`python3 gil-trace/tests/fixtures/py_echo.py N M`, pyenv's CPython 3.11) with N CPU-bound threads: untraced, under `gil-trace record --no-py` (kernel only), and under `gil-trace record --py-rate HZ` (py-spy reading every Python thread's stack, name and GIL flag HZ times a second; {} Hz is the default), in rotating order, {rounds} rounds; each cell is the median of the per-round ratios of the echo's bytes/s to the untraced run's. The sampler's cost is the difference between a rate's column and `--no-py`'s.\n",
        RATES_HZ[0]
    )?;
    write!(md, "| fixture | untraced echo MB/s | --no-py |")?;
    for hz in RATES_HZ {
        write!(md, " {hz} Hz |")?;
    }
    writeln!(md)?;
    writeln!(md, "|---|---:|---:|{}", "---:|".repeat(RATES_HZ.len()))?;
    for r in rows {
        write!(
            md,
            "| ×{} | {:.2} | {:.3} |",
            r.spinners,
            r.untraced_bytes_per_sec / 1e6,
            r.no_py
        )?;
        for (_, ratio, samples) in &r.rates {
            write!(md, " {ratio:.3} ({samples} samples) |")?;
        }
        writeln!(md)?;
    }
    Ok(())
}
