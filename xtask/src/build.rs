//! Building the eBPF object and the userspace binaries.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// Where the eBPF object ends up; `gil-trace/build.rs` embeds it from here.
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/bpf/bpfel-unknown-none/release/gil-trace-ebpf")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `cargo <subcommand>` over the eBPF crate, as its build needs it: always release (the
/// verifier rejects debug-profile objects), for the BPF target with `core` built from source.
fn cargo_ebpf(subcommand: &str, target_dir: &str) -> Command {
    let root = workspace_root();
    let arch = std::env::consts::ARCH;
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("gil-trace-ebpf"))
        .args([
            subcommand,
            "--release",
            "--bins",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(root.join(target_dir))
        // Only this inner cargo needs nightly features; the stable toolchain allows them here.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Builds the eBPF programs.
pub fn build_ebpf() -> Result<()> {
    run(&mut cargo_ebpf("build", "target/bpf"))
        .context("building the eBPF programs (did `cargo xtask setup` run?)")
}

fn cargo_userspace(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .args(args)
        .env("GIL_TRACE_EBPF_OBJECT", ebpf_object());
    cmd
}

pub fn build_all(release: bool) -> Result<()> {
    build_ebpf()?;
    let mut args = vec!["build", "--workspace", "--bins"];
    if release {
        args.push("--release");
    }
    run(&mut cargo_userspace(&args))
}

pub fn test_all(extra: &[String]) -> Result<()> {
    let mut cmd = cargo_userspace(&["test", "--workspace", "--release"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    run(&mut cmd)
}

/// Path of a release binary of this workspace.
pub fn release_bin(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace and the eBPF crate
/// (which is outside it).
pub fn lint() -> Result<()> {
    run(cargo_userspace(&["fmt", "--all", "--", "--check"]).env_remove("GIL_TRACE_EBPF_OBJECT"))?;
    let mut fmt_ebpf = Command::new("cargo");
    fmt_ebpf
        .current_dir(workspace_root().join("gil-trace-ebpf"))
        .args(["fmt", "--", "--check"]);
    run(&mut fmt_ebpf)?;
    run(&mut cargo_userspace(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Its own target directory: clippy's metadata would otherwise rebuild the embedded object.
    run(cargo_ebpf("clippy", "target/bpf-clippy").args(["--", "-D", "warnings"]))
        .context("clippy on the eBPF programs (did `cargo xtask setup` run?)")
}
