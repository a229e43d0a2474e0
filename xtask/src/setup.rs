//! `cargo xtask setup`: a Rust port of the project's eBPF toolchain recipe.
//!
//! bpf-linker needs a libLLVM with the LLVM C API and the BPF backend, of the same major
//! version as rustc's. Debian 12 has no LLVM 22 and prebuilt bpf-linker downloads are not
//! reachable, but rustc's sysroot ships exactly such a library. We copy it into a private
//! prefix and build bpf-linker from crates.io against it (`LLVM_PREFIX`). Every step checks
//! first, so a second run does nothing.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

const BPF_LINKER_VERSION: &str = "0.13.0";

fn log(msg: impl AsRef<str>) {
    eprintln!("[setup] {}", msg.as_ref());
}

pub fn run() -> Result<()> {
    ensure_path();
    ensure_tracefs();
    ensure_rust_src()?;
    let prefix = ensure_llvm_prefix()?;
    ensure_bpf_linker(&prefix)?;
    ensure_python_packages()?;
    ensure_prometheus()?;
    Ok(())
}

/// The monitor's test scrapes it with a real Prometheus: Debian's package.
fn ensure_prometheus() -> Result<()> {
    let found = || {
        Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found() {
        return Ok(());
    }
    eprintln!("[setup] apt-get install prometheus");
    let _ = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    let status = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "prometheus",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    if !status.success() || !found() {
        bail!("could not install Debian's prometheus ({status})");
    }
    Ok(())
}

/// The tests decode Perfetto exports with Perfetto's own schema: the `perfetto` package
/// (its `perfetto_trace_pb2`) and `protobuf`, for the `python3` on PATH.
fn ensure_python_packages() -> Result<()> {
    let have = |py: &str| {
        Command::new("python3")
            .args(["-c", py])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let probe = "from perfetto.protos.perfetto.trace import perfetto_trace_pb2";
    if have(probe) {
        return Ok(());
    }
    eprintln!("[setup] python3 -m pip install perfetto protobuf");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--break-system-packages",
            "perfetto",
            "protobuf",
        ])
        .status()
        .context("python3 -m pip")?;
    if !status.success() || !have(probe) {
        bail!("could not install the Python packages perfetto and protobuf ({status})");
    }
    Ok(())
}

fn home() -> PathBuf {
    env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map_or_else(|| home().join(".cargo"), PathBuf::from)
        .join("bin")
}

/// rustc runs `bpf-linker` by name: make sure cargo's bin dir is on PATH for every child.
pub fn ensure_path() {
    let bin = cargo_bin_dir();
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|p| p == bin) {
        let mut paths: Vec<PathBuf> = env::split_paths(&path).collect();
        paths.push(bin);
        // SAFETY (edition 2024 wording): xtask is single-threaded here.
        env::set_var(
            "PATH",
            env::join_paths(paths).expect("PATH entries are valid"),
        );
    }
}

fn ensure_tracefs() {
    let events = Path::new("/sys/kernel/tracing/events/sched/sched_switch/id");
    if events.exists() {
        return;
    }
    log("mounting tracefs on /sys/kernel/tracing (aya attaches tracepoints through it)");
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !events.exists() {
        log("WARNING: tracefs is not available; recording will fail until it is mounted (as root: mount -t tracefs tracefs /sys/kernel/tracing)");
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("rustup is required (the eBPF build needs the rust-src component)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    log("adding rust-src (needed for -Z build-std=core)");
    let status = Command::new("rustup")
        .args(["component", "add", "rust-src"])
        .status()?;
    if !status.success() {
        bail!("rustup component add rust-src failed");
    }
    Ok(())
}

/// Copies rustc's own libLLVM into a private prefix; returns the prefix.
fn ensure_llvm_prefix() -> Result<PathBuf> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let version = output(Command::new("rustc").arg("-vV"))?;
    let llvm_version = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV prints no LLVM version")?
        .to_string();
    let major = llvm_version
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    if !matches!(major.as_str(), "21" | "22" | "23") {
        bail!("bpf-linker {BPF_LINKER_VERSION} has no llvm-{major} feature (rustc's LLVM is {llvm_version})");
    }
    let lib_dir = sysroot.join("lib");
    // The real library is libLLVM.so.<ver>; libLLVM-<maj>-rust-*.so is a linker script.
    let libllvm = fs::read_dir(&lib_dir)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let suffix = libllvm.trim_start_matches("libLLVM.so.");
    let prefix = env::var_os("BPF_LLVM_ROOT")
        .map_or_else(|| home().join(".local/share/bpf-llvm"), PathBuf::from)
        .join(suffix);
    let src = lib_dir.join(&libllvm);
    let dst = prefix.join("lib").join(&libllvm);
    let same = match (fs::metadata(&src), fs::metadata(&dst)) {
        (Ok(a), Ok(b)) => a.len() == b.len(),
        _ => false,
    };
    if !same {
        log(format!(
            "creating LLVM prefix {} from {} (LLVM {llvm_version})",
            prefix.display(),
            src.display()
        ));
        fs::create_dir_all(prefix.join("lib"))?;
        // Copy, not symlink: a toolchain update must not pull the library from under bpf-linker.
        let tmp = dst.with_extension("tmp");
        fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        fs::rename(&tmp, &dst)?;
    }
    let link = prefix.join("lib/libLLVM.so");
    if fs::read_link(&link).ok().as_deref() != Some(Path::new(&libllvm)) {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    // Remember the major for the feature flag.
    fs::write(prefix.join("llvm-major"), &major)?;
    Ok(prefix)
}

fn ensure_bpf_linker(prefix: &Path) -> Result<()> {
    let bin = cargo_bin_dir().join("bpf-linker");
    let libllvm = fs::read_dir(prefix.join("lib"))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .context("LLVM prefix has no libLLVM.so.*")?;
    let runpath = prefix.join("lib");
    let good = bin.exists()
        && output(Command::new(&bin).arg("--version"))
            .is_ok_and(|v| v.trim().ends_with(BPF_LINKER_VERSION))
        && output(Command::new("readelf").arg("-d").arg(&bin)).is_ok_and(|d| {
            d.contains(&format!("[{libllvm}]")) && d.contains(&format!("[{}]", runpath.display()))
        });
    if good {
        return Ok(());
    }
    let major = fs::read_to_string(prefix.join("llvm-major"))?;
    log(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (~1-2 min)",
        prefix.display()
    ));
    let status = Command::new("cargo")
        .args(["install", "--locked", "--force"])
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", major.trim()))
        .env("LLVM_PREFIX", prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .status()?;
    if !status.success() {
        bail!("cargo install bpf-linker failed");
    }
    Ok(())
}
