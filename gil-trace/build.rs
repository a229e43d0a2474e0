//! Embeds the eBPF object, so the `gil-trace` binary is self-contained:
//! - the object named by `GIL_TRACE_EBPF_OBJECT` (what `cargo xtask build` passes), else
//! - the one `cargo xtask build` left in the workspace's `target/bpf`, else
//! - one built here from `gil-trace-ebpf` (as `cargo install --path gil-trace` needs), with
//!   the same toolchain `cargo xtask setup` installs (rust-src, bpf-linker).
//!
//! When none can be had, everything that does not load eBPF (reports, tests on recorded
//! traces) still builds and works, the build says loudly that `record` will not, and
//! `gil-trace record` says how to build the object. `GIL_TRACE_NO_EBPF=1` skips the attempt.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gil_trace_embedded_ebpf)");
    println!("cargo::rerun-if-env-changed=GIL_TRACE_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=GIL_TRACE_NO_EBPF");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let out = out_dir.join("gil-trace-ebpf.o");
    let prebuilt = env::var_os("GIL_TRACE_EBPF_OBJECT").map_or_else(
        || manifest_dir.join("../target/bpf/bpfel-unknown-none/release/gil-trace-ebpf"),
        PathBuf::from,
    );
    println!("cargo::rerun-if-changed={}", prebuilt.display());
    let object = if prebuilt.is_file() {
        Ok(prebuilt)
    } else if env::var_os("GIL_TRACE_NO_EBPF").is_some() {
        Err("GIL_TRACE_NO_EBPF is set".to_string())
    } else {
        build_ebpf(&manifest_dir.join("../gil-trace-ebpf"), &out_dir)
    };
    match object {
        Ok(object) => {
            fs::copy(&object, &out).expect("copying the eBPF object into OUT_DIR");
            println!("cargo::rustc-cfg=gil_trace_embedded_ebpf");
        }
        Err(why) => println!(
            "cargo::warning=gil-trace is built WITHOUT its eBPF programs ({why}): `gil-trace record` will not work. Run `cargo xtask setup` (rust-src, bpf-linker), then build again or use `cargo xtask build`."
        ),
    }
}

/// Builds the eBPF crate into `out_dir`, as `cargo xtask build` does.
fn build_ebpf(crate_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    if !crate_dir.join("Cargo.toml").is_file() {
        return Err(format!("no eBPF sources at {}", crate_dir.display()));
    }
    for dir in ["src", "../gil-trace-common/src"] {
        println!("cargo::rerun-if-changed={}", crate_dir.join(dir).display());
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_dir = out_dir.join("ebpf-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate_dir)
        .args([
            "build",
            "--release",
            "--bins",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer build set for itself must not leak into the BPF build.
    for (var, _) in env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_") && var != "CARGO_HOME" || var.starts_with("RUSTC") {
            cmd.env_remove(&*var);
        }
    }
    for var in ["RUSTFLAGS", "RUSTUP_TOOLCHAIN", "RUSTDOCFLAGS"] {
        cmd.env_remove(var);
    }
    // Only this inner cargo needs nightly features; the stable toolchain allows them here.
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        [
            format!("--cfg=bpf_target_arch=\"{arch}\""),
            "-Cdebuginfo=2".into(),
            "-Clink-arg=--btf".into(),
        ]
        .join("\x1f"),
    );
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run cargo for the eBPF crate: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("the eBPF build failed");
        return Err(first_error.to_string());
    }
    Ok(target_dir.join("bpfel-unknown-none/release/gil-trace-ebpf"))
}
