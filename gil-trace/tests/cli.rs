//! The command line as a user meets it (no privileges needed): where outputs go and what they
//! refuse to overwrite, closed pipes, usage errors, defaults, filters, help and the JSON
//! schema's documentation. Recording's own conventions (exit statuses, `.old`) are in
//! `record_root.rs`.
mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use common::{assert_one_line_error, gil_trace, stderr, stdout, svg_flag, synthetic_echo_trace};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The lab fixture: process 6073 (workload, spinner-1, echo) and its client, process 6076.
fn lab() -> PathBuf {
    fixture("lab-new-1.trace")
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    gil_trace().current_dir(dir).args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn copy_of_lab(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(lab(), &path).unwrap();
    path
}

// Defect 1 of issue 20: `--svg n.trace p.trace` wrote the chart over n.trace.
#[test]
fn report_svg_never_takes_a_trace_after_it_as_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let n = copy_of_lab(dir.path(), "n.trace");
    let p = copy_of_lab(dir.path(), "p.trace");
    let original = std::fs::read(lab()).unwrap();

    // The bare flag takes no value: both words are traces, and two need --compare.
    let out = run_in(dir.path(), &["report", "--svg", "n.trace", "p.trace"]);
    assert_one_line_error(&out, "--compare");
    // `--svg=FILE` over a recording, or over the command's own input: refused before any work.
    let out = gil_trace()
        .arg("report")
        .arg(svg_flag(&n))
        .arg(&p)
        .output()
        .unwrap();
    assert_one_line_error(&out, "it is a gil-trace recording");
    let out = gil_trace()
        .arg("report")
        .arg(svg_flag(&p))
        .arg(&p)
        .output()
        .unwrap();
    assert_one_line_error(&out, "which this command reads");
    for trace in [&n, &p] {
        assert_eq!(
            std::fs::read(trace).unwrap(),
            original,
            "{} changed",
            trace.display()
        );
    }

    // The bare flag after the trace: the charts go beside it.
    let out = run_in(dir.path(), &["report", "-q", "p.trace", "--svg"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(dir.path().join("p.svg")).unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert_eq!(std::fs::read(&p).unwrap(), original);
}

#[test]
fn export_refuses_to_write_over_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let other = copy_of_lab(dir.path(), "other.trace");
    let out = gil_trace()
        .args(["export", "-o"])
        .arg(&other)
        .arg(lab())
        .output()
        .unwrap();
    assert_one_line_error(&out, "it is a gil-trace recording");
    assert_eq!(
        std::fs::read(&other).unwrap(),
        std::fs::read(lab()).unwrap()
    );
}

/// A trace whose dump and detailed JSON are far larger than a pipe's buffer.
fn big_trace(dir: &Path) -> PathBuf {
    let path = dir.join("big.trace");
    synthetic_echo_trace(&path, 5_000, 2_000_000, 2);
    path
}

/// Runs `args`, reads one line of its output and closes the pipe.
fn read_one_line_then_close(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = gil_trace()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    child.wait_with_output().unwrap()
}

// Defect 3 of issue 20: `dump | head -1` printed "Error: writing: Broken pipe" and exited 1.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let trace = big_trace(dir.path());
    for args in [
        vec!["dump"],
        vec!["dump", "--json"],
        vec!["report", "--json", "--detail"],
        vec!["export", "-o", "-"],
    ] {
        let mut full: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        full.push(trace.as_os_str());
        let out = read_one_line_then_close(&full);
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("Error"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// Peak resident memory of a finished run, from the kernel's accounting of that child.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also returns its resource usage"
)]
fn peak_rss_kib(cmd: &mut std::process::Command) -> i64 {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our unreaped child; status and usage are valid for writes.
    let pid = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
    usage.ru_maxrss
}

// Defect 5 of issue 20: export built the whole JSON in memory (4× report's peak), ignored the
// report's filters, and `-o -` made a file named `-`.
#[test]
fn export_streams_honours_the_report_filters_and_writes_stdout_for_dash() {
    let dir = tempfile::tempdir().unwrap();
    let trace = big_trace(dir.path());

    let report = peak_rss_kib(gil_trace().arg("report").arg(&trace));
    let export = peak_rss_kib(
        gil_trace()
            .args(["export", "-o"])
            .arg(dir.path().join("e.json"))
            .arg(&trace),
    );
    let written = std::fs::metadata(dir.path().join("e.json")).unwrap().len();
    assert!(
        written > 8 << 20,
        "the export is {written} bytes: too small to tell"
    );
    assert!(
        export < report + 8 * 1024,
        "export peaked at {export} KiB, report at {report} KiB, for {written} bytes of JSON"
    );

    let events = |extra: &[&str]| -> Vec<Value> {
        let out = gil_trace()
            .current_dir(dir.path())
            .args(["export", "-q", "-o", "-"])
            .args(extra)
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).is_empty(), "-q: {}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["traceEvents"].as_array().unwrap().clone()
    };
    let all = events(&[]);
    assert!(
        !dir.path().join("-").exists(),
        "`-o -` created a file named -"
    );
    let slices = |evs: &[Value], cat: &str| evs.iter().filter(|e| e["cat"] == cat).count();

    // --window: only events inside it (µs since the trace start in the Chrome format).
    let windowed = events(&["--window", "1s..2s"]);
    assert!(
        windowed.len() < all.len() / 5,
        "{} of {}",
        windowed.len(),
        all.len()
    );
    let stamps: Vec<f64> = windowed.iter().filter_map(|e| e["ts"].as_f64()).collect();
    assert!(!stamps.is_empty());
    let (lo, hi) = stamps
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    assert!(
        lo >= 1e6 - 5e3 && hi <= 2e6 + 5e3,
        "window 1s..2s exported {lo}..{hi} µs"
    );

    // --tid: only that thread's lanes (and the lock holder and convoy tracks).
    let one = events(&["--tid", "101"]);
    // (Metadata names every lane; a handoff to 101 starts its arrow on the releaser.)
    let stray = one.iter().find(|e| {
        e["ph"] != "M"
            && e["cat"] != "handoff"
            && e["tid"]
                .as_u64()
                .is_some_and(|t| t != 101 && t < gil_trace::render::chrome::CONVOY_TRACK_TID)
    });
    assert!(stray.is_none(), "--tid 101 exported {stray:?}");
    assert!(one.len() < all.len());

    // --convoy-threshold: every datagram waits 2 ms, so 1 ms makes one long convoy and 5 ms none.
    let convoyed = slices(&events(&["--convoy-threshold", "1ms"]), "convoy");
    let none = slices(&events(&["--convoy-threshold", "5ms"]), "convoy");
    assert!(convoyed >= 1 && none == 0, "{convoyed} {none}");

    // --lock: a word no thread used is an error, not another lock's answer.
    for sub in ["export", "report"] {
        let out = gil_trace()
            .current_dir(dir.path())
            .args(
                [sub, "--lock", "0x9999", "-o", "-"][..if sub == "export" { 5 } else { 3 }].iter(),
            )
            .arg(&trace)
            .output()
            .unwrap();
        assert_one_line_error(
            &out,
            "no futex word at 0x9999 was used; the locks found are at 0x1000",
        );
    }
}

// Defect 6 of issue 20: p90 of two different components both showed one bucket's bound.
#[test]
fn percentiles_are_values_not_bucket_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // 400 datagrams (past the exact range), each waiting 3.000 ms for the lock.
    synthetic_echo_trace(&trace, 400, 3_000_000, 0);
    let r = json(
        &gil_trace()
            .args(["report", "--json"])
            .arg(&trace)
            .output()
            .unwrap(),
    );
    let within = |d: &Value, what: &str, expect: f64| {
        for p in ["p50_ns", "p90_ns", "p99_ns"] {
            let v = d[p].as_f64().unwrap();
            assert!(
                (v - expect).abs() <= expect * 0.01,
                "{what} {p} = {v}, expected {expect} within 1 %"
            );
        }
    };
    within(&r["handoffs"][0]["wait"], "lock wait", 3_000_000.0);
    within(
        &r["io_stalls"]["causes"]["lock_wait"],
        "stall lock wait",
        3_000_000.0,
    );
    let stall = r["io_stalls"]["stall"]["max_ns"].as_f64().unwrap();
    assert!(stall > 3_004_000.0, "{stall}");
    within(&r["io_stalls"]["stall"], "stall", stall);
    assert_ne!(
        r["io_stalls"]["stall"]["p90_ns"], r["io_stalls"]["causes"]["lock_wait"]["p90_ns"],
        "two different components with one p90"
    );
}

#[test]
fn without_a_file_the_default_trace_is_read_and_its_absence_explained() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["report"][..], &["dump"], &["export", "-o", "x.json"]] {
        let out = run_in(dir.path(), args);
        assert_one_line_error(&out, "no trace given and no gil-trace.trace here");
        assert!(
            stderr(&out).contains("sudo gil-trace record"),
            "{}",
            stderr(&out)
        );
    }
    copy_of_lab(dir.path(), "gil-trace.trace");
    let out = run_in(dir.path(), &["report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("spinner-1"));
    let out = run_in(dir.path(), &["dump"]);
    assert!(out.status.success() && stdout(&out).lines().count() > 100);
    let out = run_in(dir.path(), &["export", "-q", "-o", "x.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("x.json").exists());
}

#[test]
fn bad_values_are_usage_errors_with_exit_status_2() {
    let lab = lab();
    let lab = lab.to_str().unwrap();
    for args in [
        &["record", "--duration", "10x", "--", "true"][..],
        &["record", "--duration", "0s", "--", "true"],
        &["record", "--buffer-size", "lots", "--", "true"],
        &["report", "--window", "1s..soon", lab],
        &["report", "--convoy-threshold", "1 fortnight", lab],
        &["report", "--threads", "0", lab],
        &["report", "--lock", "0xzz", lab],
        &["dump", "--window", "x", lab],
        &["export", "--format", "svg", "-o", "-", lab],
    ] {
        let out = gil_trace().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: invalid value"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // One duration syntax everywhere.
    for args in [
        &[
            "report",
            "--convoy-threshold",
            "500us",
            "--window",
            "10ms..2s",
            lab,
        ][..],
        &[
            "report",
            "--convoy-threshold",
            "0.002",
            "--window",
            "..1.5",
            lab,
        ],
        &["dump", "--window", "20ms..", lab],
    ] {
        let out = gil_trace().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_window_is_stated_in_the_header_and_every_figure_is_for_it() {
    let out = gil_trace()
        .args(["report", "--window", "20ms..60ms"])
        .arg(lab())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains(
            "window    : 20.000 ms .. 60.000 ms after the start (40.0 ms of the 91.4 ms trace"
        ),
        "{text}"
    );
    let whole = stdout(&gil_trace().arg("report").arg(lab()).output().unwrap());
    assert!(!whole.contains("window    :"));
    let w = json(
        &gil_trace()
            .args(["report", "--json", "--window", "20ms..60ms"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    let start = w["meta"]["start_ns"].as_u64().unwrap();
    assert_eq!(
        w["window"]["start_ns"].as_u64().unwrap() - start,
        20_000_000
    );
    assert_eq!(w["window"]["end_ns"].as_u64().unwrap() - start, 60_000_000);
}

/// The rows of the text table whose header line starts with `header`.
fn table<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with("    ") && !l.trim_start().starts_with("from"))
        .collect()
}

#[test]
fn each_table_column_has_one_unit_in_its_header() {
    let text = stdout(&gil_trace().arg("report").arg(lab()).output().unwrap());
    // The handoff table's values are µs, the stall causes' ms: the unit heads the column, and
    // each cell is a bare number.
    for (header, unit) in [("(µs)", "µs"), ("(ms)", "ms")] {
        let rows = table(&text, header);
        assert!(rows.len() >= 4, "{header}: {rows:?}\n{text}");
        for row in rows {
            let cells: Vec<&str> = row.split_whitespace().collect();
            for cell in &cells[cells.len() - 5..] {
                assert!(
                    cell.parse::<f64>().is_ok(),
                    "{header} row {row:?}: {cell:?} is not a bare number ({unit})"
                );
            }
        }
    }
    assert!(text.contains("p50 ms    p99 ms"), "{text}");
}

#[test]
fn dump_names_threads_decodes_fields_and_says_when_a_tid_matches_nothing() {
    let text = stdout(&gil_trace().arg("dump").arg(lab()).output().unwrap());
    assert!(text.contains("wakee_comm=workload"), "{}", &text[..500]);
    assert!(!text.contains("[119, 111"), "a thread name as bytes");
    assert!(text.contains("FUTEX_WAIT"), "futex ops decoded");

    let lines = stdout(
        &gil_trace()
            .args(["dump", "--json", "--tid", "6075"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > 50);
    for e in &events {
        assert!(e["kind"].is_string() && e["ts_ns"].is_u64(), "{e}");
        assert!(e.to_string().contains("6075"), "--tid 6075 let through {e}");
    }
    assert!(events.iter().any(|e| e["comm"] == "echo"));

    let out = gil_trace()
        .args(["dump", "--tid", "1"])
        .arg(lab())
        .output()
        .unwrap();
    assert_one_line_error(&out, "no event involves thread 1");
}

/// The tids of the text report's thread table.
fn thread_rows(text: &str) -> Vec<u32> {
    text.lines()
        .skip_while(|l| !l.starts_with("threads"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn threads_are_grouped_by_process_ranked_and_cut_to_the_relevant_ones() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("many.trace");
    synthetic_echo_trace(&trace, 20, 2_000_000, 40);
    let text = stdout(&gil_trace().arg("report").arg(&trace).output().unwrap());
    let shown = thread_rows(&text);
    assert_eq!(shown.len(), 20, "{text}");
    assert_eq!(
        shown[0], 101,
        "the thread that waited for the lock comes first:\n{text}"
    );
    // echo, spinner and the 40 others (the client only wakes echo: it has no row).
    let total = 2 + 40;
    assert!(
        text.contains(&format!("… {} more (--all-threads)", total - 20)),
        "{text}"
    );
    let all = stdout(
        &gil_trace()
            .args(["report", "--all-threads"])
            .arg(&trace)
            .output()
            .unwrap(),
    );
    assert_eq!(thread_rows(&all).len(), total);

    // Two processes in the lab fixture: grouped, and filtered by --pid or --comm.
    let text = stdout(&gil_trace().arg("report").arg(lab()).output().unwrap());
    assert!(text.contains("  process 6073 workload") && text.contains("  process 6076 workload"));
    let client = stdout(
        &gil_trace()
            .args(["report", "--pid", "6076"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    assert_eq!(thread_rows(&client), [6076]);
    let j = json(
        &gil_trace()
            .args(["report", "--json", "--comm", "spinner-1"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    let tids: Vec<u64> = j["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(tids, [6074]);
    assert!(
        j["convoys"].as_array().unwrap().is_empty(),
        "echo's convoy kept under --comm spinner-1"
    );
}

#[test]
fn help_has_examples_named_placeholders_and_record_exit_statuses() {
    for sub in ["record", "report", "dump", "export"] {
        let help = stdout(&gil_trace().args([sub, "--help"]).output().unwrap());
        assert!(help.contains("Examples:"), "{sub}: {help}");
    }
    let report = stdout(&gil_trace().args(["report", "--help"]).output().unwrap());
    assert!(report.contains("--convoy-threshold <DURATION>"), "{report}");
    assert!(report.contains("--window <A..B>"), "{report}");
    let record = stdout(&gil_trace().args(["record", "--help"]).output().unwrap());
    for status in ["125", "126", "127"] {
        assert!(record.contains(status), "{record}");
    }
}

#[test]
fn quiet_silences_status_lines_and_verbose_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = gil_trace()
        .args(["export", "-o"])
        .arg(dir.path().join("a.json"))
        .arg(lab())
        .output()
        .unwrap();
    assert!(stderr(&out).contains("wrote"), "{}", stderr(&out));
    let out = gil_trace()
        .args(["-q", "export", "-o"])
        .arg(dir.path().join("b.json"))
        .arg(lab())
        .output()
        .unwrap();
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
    let out = gil_trace()
        .args(["report", "-v"])
        .arg(lab())
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("INFO") && stderr(&out).contains("format version"),
        "{}",
        stderr(&out)
    );
    let out = gil_trace().arg("report").arg(lab()).output().unwrap();
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

// `cargo install --path gil-trace` once built a recorder without its programs, silently.
#[test]
fn the_binary_embeds_its_ebpf_programs() {
    assert!(
        gil_trace::capture::probes::ebpf_object().is_some_and(|o| o.starts_with(b"\x7fELF")),
        "built without the eBPF object (GIL_TRACE_NO_EBPF set?)"
    );
}

/// The ```jsonc blocks of docs/report-json.md as JSON: comments dropped, `D` (a distribution)
/// spelled out.
fn documented_schemas() -> Vec<Value> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report-json.md"),
    )
    .unwrap();
    let dist = r#"{"count": 0, "mean_ns": 0, "p50_ns": 0, "p90_ns": 0, "p99_ns": 0, "max_ns": 0}"#;
    let mut blocks = Vec::new();
    for block in doc.split("```jsonc").skip(1) {
        let jsonc = block.split("```").next().unwrap();
        let mut json = String::new();
        let mut chars = jsonc.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    json.push(c);
                    json.extend(chars.next());
                }
                '"' => {
                    in_string = !in_string;
                    json.push(c);
                }
                '/' if !in_string && chars.peek() == Some(&'/') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            json.push(c);
                            break;
                        }
                    }
                }
                'D' if !in_string => json.push_str(dist),
                _ => json.push(c),
            }
        }
        blocks.push(serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{json}")));
    }
    blocks
}

/// Maps keyed by data (kinds, tids, CPUs): their keys are not the schema's.
const DATA_KEYED: &[&str] = &[
    "event_counts",
    "lost_detail.by_kind",
    "lost_detail.by_cpu[]",
    "handoffs[].matrix",
];
/// Maps keyed by data whose values have a schema: each value is checked against the doc's
/// first.
const DATA_KEYED_VALUES: &[&str] = &["stacks"];

/// What a comparison of the doc with real outputs found.
#[derive(Default)]
struct KeyCheck {
    /// Documented keys (paths), and those some output had.
    documented: std::collections::BTreeSet<String>,
    present: std::collections::BTreeSet<String>,
    /// Keys the outputs have that the doc lacks, and type mismatches.
    errors: Vec<String>,
}

impl KeyCheck {
    fn compare(&mut self, doc: &Value, real: &Value, path: &str) {
        if DATA_KEYED.contains(&path) {
            return;
        }
        if DATA_KEYED_VALUES.contains(&path) {
            if let (Some(d), Value::Object(r)) =
                (doc.as_object().and_then(|d| d.values().next()), real)
            {
                for value in r.values() {
                    self.compare(d, value, &format!("{path}{{}}"));
                }
            }
            return;
        }
        match (doc, real) {
            (Value::Object(d), Value::Object(r)) => {
                for (key, value) in d.iter().filter(|(k, _)| *k != "...") {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.documented.insert(at.clone());
                    if let Some(real_value) = r.get(key) {
                        self.present.insert(at.clone());
                        self.compare(value, real_value, &at);
                    }
                }
                if !d.contains_key("...") {
                    for key in r.keys().filter(|k| !d.contains_key(*k)) {
                        self.errors
                            .push(format!("{path}.{key}: in the output, not documented"));
                    }
                }
            }
            // A tuple (`[tid, ns]`) element by element; a list by its first element.
            (Value::Array(d), Value::Array(r)) if d.len() > 1 && d.len() == r.len() => {
                for (i, (d, r)) in d.iter().zip(r).enumerate() {
                    self.compare(d, r, &format!("{path}[{i}]"));
                }
            }
            (Value::Array(d), Value::Array(r)) => {
                if let Some(d) = d.first() {
                    for item in r {
                        self.compare(d, item, &format!("{path}[]"));
                    }
                }
            }
            // Optional values are null when not seen; the doc shows a sample.
            (_, Value::Null)
            | (Value::Null, _)
            | (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
            | (Value::Bool(_), Value::Bool(_)) => {}
            (d, r) => self
                .errors
                .push(format!("{path}: documented as {d}, output has {r}")),
        }
    }

    /// The errors, and every documented key no output had.
    fn finish(mut self) -> Vec<String> {
        for path in self.documented.difference(&self.present) {
            self.errors
                .push(format!("{path}: documented, in none of the outputs"));
        }
        self.errors.sort();
        self.errors.dedup();
        self.errors
    }
}

#[test]
fn the_json_schema_doc_matches_real_output() {
    let schemas = documented_schemas();
    assert_eq!(schemas.len(), 2, "report and compare blocks");
    // An old trace (no code block), the lab with stacks (a heap lock, convoys with stacks)
    // and CPython (the GIL, with its symbol and version): a documented key must show up in
    // one of them, and every key they show must be documented.
    let mut report_keys = KeyCheck::default();
    for (trace, extra) in [
        (lab(), &["--detail", "--window", "0..10s"][..]),
        (fixture("lab-stacks.trace"), &["--detail"]),
        (fixture("py-gil.trace"), &[]),
    ] {
        let report = json(
            &gil_trace()
                .args(["report", "--json"])
                .args(extra)
                .arg(&trace)
                .output()
                .unwrap(),
        );
        assert_eq!(
            report["schema_version"],
            gil_trace::analysis::report::SCHEMA_VERSION
        );
        report_keys.compare(&schemas[0], &report, "");
    }
    let compare = json(
        &gil_trace()
            .args(["report", "--json", "--compare"])
            .arg(lab())
            .arg(fixture("pingpong-tiny.trace"))
            .output()
            .unwrap(),
    );
    let mut compare_keys = KeyCheck::default();
    compare_keys.compare(&schemas[1], &compare, "");
    let errors: Vec<String> = report_keys
        .finish()
        .into_iter()
        .chain(compare_keys.finish())
        .collect();
    assert!(
        errors.is_empty(),
        "docs/report-json.md disagrees with the output:\n{}",
        errors.join("\n")
    );
    // --compare is in integer ns, like the report.
    for side in ["a", "b"] {
        for (key, value) in compare[side].as_object().unwrap() {
            if key.ends_with("_ns") {
                assert!(value.is_u64(), "{side}.{key} = {value}");
            }
        }
    }
}

#[test]
fn traces_from_before_names_read_with_a_note_saying_why() {
    let report = json(
        &gil_trace()
            .args(["report", "--json"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    assert_eq!(report["locks"][0]["name"], "lock 0x55faa0028370");
    assert_eq!(report["locks"][0]["kind"], "futex");
    assert!(report.get("stacks").is_none());
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("no code block"), "{warnings}");
    let text = stdout(
        &gil_trace()
            .args(["report", "--stacks"])
            .arg(lab())
            .output()
            .unwrap(),
    );
    assert!(text.contains("stacks: none recorded"), "{text}");
}

/// The CPython fixture (Debian's static python3.11 running py_echo.py with one spinner,
/// sampled at 500 Hz): threads by their `threading` names, the convoy told in Python code,
/// sampled stacks in the text report and in the folded export.
#[test]
fn a_python_recording_speaks_in_python_threads_and_functions() {
    let trace = fixture("py-gil.trace");
    let report = json(
        &gil_trace()
            .args(["report", "--json"])
            .arg(&trace)
            .output()
            .unwrap(),
    );
    let echo = report["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Thread-2 (echo)")
        .expect("the echo thread by its threading name");
    assert_eq!(echo["kernel_name"], "python3.11");
    assert!(report["python"]["samples"].as_u64().unwrap() > 100);
    let agreement = &report["python"]["agreement"];
    assert!(
        agreement["agree"].as_u64().unwrap() * 100 >= agreement["compared"].as_u64().unwrap() * 90,
        "{agreement}"
    );
    let verdict = report["verdicts"][0]["text"].as_str().unwrap();
    for needle in [
        "Thread-2 (echo) [1137] lost",
        "waiting for GIL in ~main.<locals>.echo (py_echo.py:",
        "held by Thread-1 (spin) [1136] in ~main.<locals>.spin (py_echo.py:",
        " samples]",
    ] {
        assert!(verdict.contains(needle), "{needle:?} not in {verdict}");
    }
    // No stack without frames is listed.
    for (key, stack) in report["stacks"].as_object().unwrap() {
        assert!(!stack["frames"].as_array().unwrap().is_empty(), "{key}");
    }
    let text = stdout(
        &gil_trace()
            .args(["report", "--stacks"])
            .arg(&trace)
            .output()
            .unwrap(),
    );
    let waiting = text
        .split("Python stacks waiting for GIL, sampled")
        .nth(1)
        .expect("a section of the waiters' Python stacks");
    assert!(waiting.contains("by Thread-2 (echo) [1137]\n      main.<locals>.echo (py_echo.py:"));
    let folded = stdout(
        &gil_trace()
            .args(["export", "--format", "folded", "-o", "-"])
            .arg(&trace)
            .output()
            .unwrap(),
    );
    assert!(
        folded.lines().any(|l| l.starts_with(
            "Thread-2 (echo) [1137];Thread._bootstrap;Thread._bootstrap_inner;Thread.run;main.<locals>.echo;[wait for GIL] "
        )),
        "{folded}"
    );
}
