//! Embeds the eBPF object when one has been built (`cargo xtask build`).
//!
//! Without it, everything that does not load eBPF (reading traces, reports, unit tests) still
//! builds and works; `gil-trace record` then says how to build the object.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gil_trace_embedded_ebpf)");
    println!("cargo::rerun-if-env-changed=GIL_TRACE_EBPF_OBJECT");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("GIL_TRACE_EBPF_OBJECT").map_or_else(
        || manifest_dir.join("../target/bpf/bpfel-unknown-none/release/gil-trace-ebpf"),
        PathBuf::from,
    );
    println!("cargo::rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("gil-trace-ebpf.o");
    if object.is_file() {
        fs::copy(&object, &out).expect("copying the eBPF object into OUT_DIR");
        println!("cargo::rustc-cfg=gil_trace_embedded_ebpf");
    }
}
