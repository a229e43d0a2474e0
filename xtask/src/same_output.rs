//! `cargo xtask same-output --base BIN`: do two builds of gil-trace print the same? Runs both
//! on the committed fixtures and on a freshly recorded lab trace (root), and compares every
//! output byte for byte: the text report, `--json --detail`, a `--window`, the SVG charts and
//! the Perfetto export. For changes meant to leave the output alone (refactors, speed-ups).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{build::release_bin, workspace_root};

/// The outputs compared: (name, arguments; `OUT` is replaced by an output file's path).
const OUTPUTS: &[(&str, &[&str])] = &[
    ("txt", &["report"]),
    ("detail.json", &["report", "--json", "--detail"]),
    (
        "window.json",
        &["report", "--json", "--detail", "--window", "0.1..0.3"],
    ),
    ("svg", &["report", "--svg=OUT"]),
    (
        "perfetto.json",
        &["export", "--format", "chrome-json", "-o", "OUT"],
    ),
];

/// One output of `bin` on `trace`.
fn output(bin: &Path, args: &[&str], trace: &Path, out: &Path) -> Result<Vec<u8>> {
    let _ = fs::remove_file(out);
    let mut cmd = Command::new(bin);
    // A relative trace path, so the charts' titles are the same for both.
    cmd.current_dir(trace.parent().unwrap_or(Path::new(".")));
    let out_text = out.to_str().context("output path is UTF-8")?;
    for a in args {
        cmd.arg(a.replace("OUT", out_text));
    }
    let result = cmd
        .arg(trace.file_name().context("trace has a file name")?)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !result.status.success() {
        bail!(
            "{} {args:?} {} failed: {}",
            bin.display(),
            trace.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(if args.iter().any(|a| a.contains("OUT")) {
        fs::read(out)?
    } else {
        result.stdout
    })
}

/// Records the lab (new GIL, 2 spinners) under `bin` into `dir`.
fn record_lab(bin: &Path, dir: &Path) -> Result<PathBuf> {
    let trace = dir.join("lab-new-2.trace");
    let status = Command::new(bin)
        .args(["record", "--quiet", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(release_bin("workload"))
        .args(["--gil", "new", "--spinners", "2", "--messages", "200"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("recording the lab failed ({status}); it needs root");
    }
    Ok(trace)
}

pub fn run(base: &Path, new: Option<&Path>, traces: &[PathBuf]) -> Result<()> {
    let new = new.map_or_else(|| release_bin("gil-trace"), Path::to_path_buf);
    let dir = workspace_root().join("target/same-output");
    fs::create_dir_all(&dir)?;
    let mut traces = traces.to_vec();
    if traces.is_empty() {
        let fixtures = workspace_root().join("gil-trace/tests/fixtures");
        for entry in fs::read_dir(&fixtures)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "trace") {
                traces.push(path);
            }
        }
        traces.sort();
        traces.push(record_lab(&new, &dir)?);
    }
    let mut differ = Vec::new();
    for trace in &traces {
        for (name, args) in OUTPUTS {
            let a = output(base, args, trace, &dir.join("base.out"))?;
            let b = output(&new, args, trace, &dir.join("new.out"))?;
            let label = format!("{} {name}", trace.display());
            if a == b {
                eprintln!("[same-output] same: {label} ({} bytes)", a.len());
            } else {
                eprintln!("[same-output] DIFFERENT: {label}");
                differ.push(label);
            }
        }
    }
    if !differ.is_empty() {
        bail!("{} outputs differ: {}", differ.len(), differ.join(", "));
    }
    Ok(())
}
