//! What users see, byte for byte, on the committed fixtures: the text report, `--json`,
//! `--json --detail`, a `--window`, the SVG charts and the Perfetto export. A change to any
//! output shows up here first. After an intended change, rewrite the files with
//! `GIL_TRACE_BLESS=1 cargo test --release --test golden` and review the diff they make.
mod common;

use std::path::{Path, PathBuf};

use common::*;

/// (fixture, golden file name, arguments after `report`/`export`; `OUT` is replaced by a
/// temporary output path whose content is compared instead of stdout).
const CASES: &[(&str, &str, &[&str])] = &[
    ("pingpong-tiny.trace", "pingpong-tiny.txt", &["report"]),
    (
        "pingpong-tiny.trace",
        "pingpong-tiny.detail.json",
        &["report", "--json", "--detail"],
    ),
    (
        "pingpong-tiny.trace",
        "pingpong-tiny.svg",
        &["report", "--svg=OUT"],
    ),
    (
        "pingpong-tiny.trace",
        "pingpong-tiny.perfetto.json",
        &["export", "--format", "chrome-json", "-o", "OUT"],
    ),
    ("lab-new-1.trace", "lab-new-1.txt", &["report"]),
    (
        "lab-new-1.trace",
        "lab-new-1.detail.json",
        &["report", "--json", "--detail"],
    ),
    ("lab-new-1.trace", "lab-new-1.svg", &["report", "--svg=OUT"]),
    (
        "lab-new-1.trace",
        "lab-new-1.perfetto.json",
        &["export", "--format", "chrome-json", "-o", "OUT"],
    ),
    ("lab-new-2.v1.trace", "lab-new-2.txt", &["report"]),
    (
        "lab-new-2.v1.trace",
        "lab-new-2.json",
        &["report", "--json"],
    ),
    (
        "lab-new-2.v1.trace",
        "lab-new-2.window.detail.json",
        &["report", "--json", "--detail", "--window", "0.1..0.3"],
    ),
    (
        "lab-new-2.v1.trace",
        "lab-new-2.window.svg",
        &["report", "--window", "0.1..0.3", "--svg=OUT"],
    ),
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The output of one case: stdout, or the file written to `OUT`.
fn output(trace: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let out_file = dir.join("out");
    let _ = std::fs::remove_file(&out_file);
    let out_text = out_file.to_str().unwrap();
    let args: Vec<String> = args.iter().map(|a| a.replace("OUT", out_text)).collect();
    // Run in the fixtures' directory with a relative path: the SVG's title shows it.
    let out = gil_trace()
        .current_dir(fixture(""))
        .args(&args)
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    if args.iter().any(|a| a.contains(out_text)) {
        std::fs::read(&out_file).unwrap()
    } else {
        out.stdout
    }
}

/// Where two outputs first differ: line number and both lines.
fn first_difference(want: &[u8], got: &[u8]) -> String {
    let (want, got) = (String::from_utf8_lossy(want), String::from_utf8_lossy(got));
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            let cut = |s: &str| s.chars().take(300).collect::<String>();
            return format!("line {}:\n  want: {}\n  got:  {}", i + 1, cut(w), cut(g));
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines)",
        want.lines().count(),
        got.lines().count()
    )
}

#[test]
fn outputs_match_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let bless = std::env::var_os("GIL_TRACE_BLESS").is_some();
    let mut failures = Vec::new();
    for (trace, name, args) in CASES {
        let got = output(trace, args, dir.path());
        let path = golden(name);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        match std::fs::read(&path) {
            Ok(want) if want == got => {}
            Ok(want) => failures.push(format!(
                "{name} ({trace} {args:?}) differs: {}",
                first_difference(&want, &got)
            )),
            Err(e) => failures.push(format!("{name}: {e} (bless with GIL_TRACE_BLESS=1)")),
        }
    }
    assert!(
        failures.is_empty(),
        "outputs changed (if intended: GIL_TRACE_BLESS=1 cargo test --release --test golden, then review the diff):\n{}",
        failures.join("\n")
    );
}
