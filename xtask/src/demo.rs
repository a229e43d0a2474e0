//! `cargo xtask demo`: record the bundled GIL lab and report on it.
use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::build::release_bin;

pub fn run(out: &Path) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let gil_trace = release_bin("gil-trace");
    let workload = release_bin("workload");
    for (name, policy, spinners) in [("new-2", "new", "2"), ("priority-2", "priority", "2")] {
        let trace = out.join(format!("{name}.trace"));
        eprintln!(
            "[demo] recording `workload --gil {policy} --spinners {spinners}` -> {}",
            trace.display()
        );
        let status = Command::new(&gil_trace)
            .arg("record")
            .arg("-o")
            .arg(&trace)
            .arg("--")
            .arg(&workload)
            .args(["--gil", policy, "--spinners", spinners, "--messages", "300"])
            .status()?;
        if !status.success() {
            bail!("gil-trace record failed for {name} ({status})");
        }
        let svg = out.join(format!("{name}.svg"));
        let status = Command::new(&gil_trace)
            .arg("report")
            .arg(format!("--svg={}", svg.display()))
            .arg(&trace)
            .status()?;
        if !status.success() {
            bail!("gil-trace report failed for {name} ({status})");
        }
    }
    eprintln!(
        "[demo] charts: {0}/new-2.svg (the convoy) and {0}/priority-2.svg (the fix)",
        out.display()
    );
    Ok(())
}
