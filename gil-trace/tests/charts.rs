//! SVG charts: parsed as XML and checked for content. No root needed.
mod common;

use common::*;
use gil_trace::render::charts::ChartData;

fn svg_for(
    dir: &std::path::Path,
    name: &str,
    lock_wait_ns: u64,
    extra: u32,
) -> (String, serde_json::Value) {
    let trace = dir.join(format!("{name}.trace"));
    synthetic_echo_trace(&trace, 12, lock_wait_ns, extra);
    let svg = dir.join(format!("{name}.svg"));
    let out = gil_trace()
        .arg("report")
        .arg("--json")
        .arg(svg_flag(&svg))
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report.get("io_ops").is_none(),
        "--svg alone must not add --detail arrays to the JSON"
    );
    (std::fs::read_to_string(svg).unwrap(), report)
}

fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect()
}

/// Convoy shading: translucent red rectangles.
fn shaded(doc: &roxmltree::Document) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| {
            n.attribute("fill") == Some("#C62828") && n.attribute("opacity") == Some("0.12")
        })
        .count()
}

#[test]
fn timeline_has_a_lane_per_thread_a_legend_and_convoy_shading() {
    let dir = tempfile::tempdir().unwrap();
    let (svg, report) = svg_for(dir.path(), "convoy", 5_000_000, 0);
    assert!(!report["convoys"].as_array().unwrap().is_empty());
    let doc = roxmltree::Document::parse(&svg).expect("valid SVG/XML");
    let t = texts(&doc);
    for lane in ["echo (101)", "spinner (102)", "lock holder"] {
        assert!(t.iter().any(|s| s == lane), "no lane {lane:?} in {t:?}");
    }
    for legend in [
        "running",
        "runnable",
        "lock_wait",
        "io_wait",
        "sleep",
        "convoy episode",
        "datagram arrival",
    ] {
        assert!(t.iter().any(|s| s == legend), "no legend entry {legend:?}");
    }
    assert!(
        t.iter().any(|s| s.contains("I/O stall")),
        "stall chart missing"
    );
    assert!(
        t.iter()
            .any(|s| s.contains("Lock wait per contended acquisition")),
        "handoff chart missing"
    );
    assert!(
        t.iter().any(|s| s.contains("Time per state")),
        "state shares missing"
    );
    assert!(shaded(&doc) > 0, "convoy episodes not shaded");
    // Datagram ticks and lock_wait segments are drawn.
    assert!(svg.contains("#C62828"), "no lock_wait colour");
}

#[test]
fn no_convoy_no_shading() {
    let dir = tempfile::tempdir().unwrap();
    let (svg, report) = svg_for(dir.path(), "calm", 0, 0);
    assert!(report["convoys"].as_array().unwrap().is_empty());
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(shaded(&doc), 0);
}

#[test]
fn svg_size_is_bounded_however_many_threads_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("big.trace");
    synthetic_echo_trace(&trace, 3_000, 2_000_000, 60);
    let svg = dir.path().join("big.svg");
    let out = gil_trace()
        .arg("report")
        .arg(svg_flag(&svg))
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(&svg).unwrap().len();
    assert!(size <= 2 * 1024 * 1024, "SVG is {size} bytes");
    let text = std::fs::read_to_string(&svg).unwrap();
    roxmltree::Document::parse(&text).expect("valid XML");
    assert!(text.contains("more threads not drawn"));
}

/// Checks a Chrome Trace Event document against the format's rules (what ui.perfetto.dev's
/// JSON importer requires): known phases, numeric non-negative times, metadata with names,
/// non-overlapping complete slices per thread and category, flows paired by id.
fn validate_chrome_trace(doc: &serde_json::Value) -> Result<usize, String> {
    let events = doc["traceEvents"]
        .as_array()
        .ok_or("no traceEvents array")?;
    let mut slices: std::collections::HashMap<(u64, u64, String), Vec<(f64, f64)>> =
        Default::default();
    let mut flows: std::collections::HashMap<u64, (u32, u32, f64, f64)> = Default::default();
    for (i, e) in events.iter().enumerate() {
        let ph = e["ph"].as_str().ok_or(format!("event {i}: no ph"))?;
        let int = |k: &str| {
            e[k].as_u64()
                .ok_or(format!("event {i} ({ph}): {k} is not an integer"))
        };
        let (pid, tid) = (int("pid")?, int("tid")?);
        if ph == "M" {
            let name = e["name"].as_str().unwrap_or_default();
            if !matches!(name, "process_name" | "thread_name")
                || e["args"]["name"].as_str().is_none()
            {
                return Err(format!("event {i}: bad metadata {e}"));
            }
            continue;
        }
        e["name"].as_str().ok_or(format!("event {i}: no name"))?;
        let ts = e["ts"]
            .as_f64()
            .filter(|t| *t >= 0.0)
            .ok_or(format!("event {i}: bad ts"))?;
        match ph {
            "X" => {
                let dur = e["dur"]
                    .as_f64()
                    .filter(|d| *d >= 0.0)
                    .ok_or(format!("event {i}: bad dur"))?;
                let cat = e["cat"].as_str().unwrap_or_default().to_string();
                slices
                    .entry((pid, tid, cat))
                    .or_default()
                    .push((ts, ts + dur));
            }
            "i" => {
                if !matches!(e["s"].as_str(), Some("g" | "p" | "t")) {
                    return Err(format!("event {i}: instant without scope"));
                }
            }
            "s" | "f" => {
                let id = int("id")?;
                let f = flows.entry(id).or_insert((0, 0, 0.0, 0.0));
                if ph == "s" {
                    f.0 += 1;
                    f.2 = ts;
                } else {
                    if e["bp"].as_str() != Some("e") {
                        return Err(format!("event {i}: flow end without bp=e"));
                    }
                    f.1 += 1;
                    f.3 = ts;
                }
            }
            other => return Err(format!("event {i}: unexpected phase {other}")),
        }
    }
    for (key, mut v) in slices {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = v.windows(2).find(|w| w[0].1 > w[1].0 + 1e-6) {
            return Err(format!("overlapping slices on {key:?}: {w:?}"));
        }
    }
    for (id, (s, f, ts, tf)) in &flows {
        if *s != 1 || *f != 1 || tf < ts {
            return Err(format!("flow {id}: {s} starts, {f} ends, {ts}..{tf}"));
        }
    }
    Ok(events.len())
}

#[test]
fn chrome_json_export_follows_the_trace_event_format() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("convoy.trace");
    synthetic_echo_trace(&trace, 12, 5_000_000, 2);
    let json = dir.path().join("out.json");
    let out = gil_trace()
        .args(["export", "--format", "chrome-json"])
        .arg(&trace)
        .arg("-o")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n = validate_chrome_trace(&doc).unwrap();
    assert!(n > 50);
    let events = doc["traceEvents"].as_array().unwrap();
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| events.iter().any(pred);
    assert!(
        has(&|e| e["ph"] == "X" && e["name"] == "lock_wait"),
        "no lock_wait slice"
    );
    assert!(
        has(&|e| e["ph"] == "s" && e["cat"] == "handoff"),
        "no handoff flow"
    );
    assert!(
        has(&|e| e["ph"] == "i" && e["name"] == "datagram arrival"),
        "no arrival instant"
    );
    assert!(has(&|e| e["cat"] == "convoy"), "no convoy slice");
    assert!(
        has(&|e| e["cat"] == "lock" && e["name"].as_str().unwrap().starts_with("held by")),
        "no holder track"
    );
    assert!(
        has(&|e| e["ph"] == "M" && e["args"]["name"] == "echo"),
        "no thread name"
    );

    // The example kept in the repo is valid too.
    let example: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/examples/perfetto-example.json")).unwrap();
    validate_chrome_trace(&example).unwrap();
}

#[test]
fn compare_shows_both_traces_with_ratios_and_stacks_the_charts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.trace"), dir.path().join("b.trace"));
    synthetic_echo_trace(&a, 12, 5_000_000, 0);
    synthetic_echo_trace(&b, 12, 0, 0);
    let svg = dir.path().join("cmp.svg");
    let out = gil_trace()
        .args(["report", "--compare", "--json"])
        .arg(svg_flag(&svg))
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["a"]["convoy_episodes"].as_u64().unwrap() > 0);
    assert_eq!(v["b"]["convoy_episodes"], 0);
    // Times are ns integers, like the rest of the JSON.
    assert!(v["a"]["stall_p50_ns"].as_u64().unwrap() > 5_000_000);
    let stall = &v["ratio_b_over_a"]["stall_p50_ns"];
    assert!(stall.as_f64().unwrap() < 0.1, "B stalls far less: {stall}");
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let titles = texts(&doc)
        .into_iter()
        .filter(|t| t.starts_with("gil-trace:"))
        .count();
    assert_eq!(titles, 2, "one chart set per trace");

    let out = gil_trace()
        .args(["report", "--compare"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(stdout(&out).contains("B/A"));
    let out = gil_trace()
        .args(["report", "--compare"])
        .arg(&a)
        .output()
        .unwrap();
    assert_one_line_error(&out, "two with --compare");
}

/// The report's pass and the charts' pass of `trace`, the charts collected twice: with the
/// report pass's overview (so the charts' pass may stop after its window) and without; and
/// where the first stopped its trackers.
fn charts_both_ways(trace: &std::path::Path) -> (ChartData, ChartData, Option<u64>) {
    use gil_trace::{
        analysis::{contention::DEFAULT_CONVOY_THRESHOLD_NS, ReportOptions},
        pipeline,
        trace::{Decoding, TraceReader},
    };
    let opts = ReportOptions {
        convoy_threshold_ns: DEFAULT_CONVOY_THRESHOLD_NS,
        ..Default::default()
    };
    let open = |kinds| TraceReader::open(trace)?.analysis_batches(kinds, Decoding::InLine);
    let reader = TraceReader::open(trace).unwrap();
    let analysed = pipeline::analyse(trace, reader, opts, Decoding::InLine, true).unwrap();
    let overview = analysed.overview.as_ref().unwrap();
    assert!(overview.complete());
    let analysis = &analysed.analysis;
    let charts = |overview| {
        let (layout, view) = pipeline::window_view(analysis, &opts, overview, open).unwrap();
        let stopped = view.stopped_at;
        (ChartData::new(analysis, "t".into(), layout, view), stopped)
    };
    let (early, stopped) = charts(Some(overview));
    let (full, full_stopped) = charts(None);
    assert_eq!(full_stopped, None, "{}", trace.display());
    (early, full, stopped)
}

#[test]
fn charts_are_the_same_when_their_pass_stops_after_the_window() {
    // The charts' pass stops its trackers soon after the detail window when the report's pass
    // kept the overview; the grids, marks and SVG must be those of a pass over everything —
    // including a datagram that arrived inside the window but was dequeued at the very end.
    use gil_trace::render::svg::charts_svg_stacked;
    let dir = tempfile::tempdir().unwrap();
    let synthetic = dir.path().join("late.trace");
    // 600 rounds of 5 ms lock waits (~4.2 s, ~3 batches of events); the worst convoy starts
    // at 1 ms, so the window is the first 100 ms.
    let late_arrival = 20_000_000;
    synthetic_echo_trace_with(&synthetic, 600, 5_000_000, 2, Some(late_arrival));
    let lab =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-new-2.v1.trace");
    for trace in [&synthetic, &lab] {
        let (early, full, _) = charts_both_ways(trace);
        let name = trace.display();
        assert_eq!(early.lanes, full.lanes, "{name}");
        assert_eq!(early.overview, full.overview, "{name}: overview");
        assert_eq!(early.detail, full.detail, "{name}: window timeline");
        assert_eq!(early.holders, full.holders, "{name}: lock holders");
        assert_eq!(early.handoffs, full.handoffs, "{name}: handoffs");
        assert_eq!(early.arrivals, full.arrivals, "{name}: arrivals");
        assert_eq!(early.convoys, full.convoys, "{name}: convoys");
        assert!(
            !full.arrivals.is_empty() && !full.handoffs.is_empty(),
            "{name}"
        );
        assert_eq!(
            charts_svg_stacked(std::slice::from_ref(&early)).unwrap(),
            charts_svg_stacked(std::slice::from_ref(&full)).unwrap(),
            "{name}: SVG"
        );
    }
    let (early, full, stopped) = charts_both_ways(&synthetic);
    let stopped = stopped.expect("the synthetic pass stops early");
    // At the end of the first batch past the window (4 096 events, ~1.5 s here), well
    // before the trace's end at ~4.2 s.
    assert!(
        stopped < 2_500_000_000,
        "stopped at {stopped} ns, soon after the 100 ms window"
    );
    let late_lane = full.lanes.iter().position(|l| l.tid == 104).unwrap();
    assert!(
        early.arrivals.contains(&(late_arrival, late_lane)),
        "the late dequeue's arrival is drawn: {:?}",
        early.arrivals
    );
}

#[test]
fn the_charts_pass_reads_on_only_while_a_datagram_of_the_window_can_still_come() {
    // After the window the charts' pass follows the datagrams, and ends once none that
    // arrived in the window can still be dequeued (no dequeue in the report lagged its arrival
    // by more) and every dequeued one is recorded. Pinned with damage to the last event
    // block: a pass that ends early never reads it; one that must go on fails on it.
    use gil_trace::{
        analysis::{
            contention::DEFAULT_CONVOY_THRESHOLD_NS, state_grid::OverviewRows, ReportOptions,
        },
        pipeline,
        render::svg::charts_svg_stacked,
        trace::{Decoding, TraceReader},
    };
    let dir = tempfile::tempdir().unwrap();
    for late_arrival in [None, Some(20_000_000)] {
        let good = dir.path().join("good.trace");
        // ~42 s of rounds, several event blocks; the window is in the first 100 ms.
        synthetic_echo_trace_with(&good, 6000, 5_000_000, 2, late_arrival);
        let mut bytes = std::fs::read(&good).unwrap();
        let footer = bytes.len() - 16;
        let trailer_at = u64::from_le_bytes(bytes[footer..footer + 8].try_into().unwrap());
        bytes[trailer_at as usize - 50] ^= 0x5a;
        let bad = dir.path().join("bad.trace");
        std::fs::write(&bad, &bytes).unwrap();

        let reader = TraceReader::open(&good).unwrap();
        let opts = ReportOptions {
            convoy_threshold_ns: DEFAULT_CONVOY_THRESHOLD_NS,
            ..Default::default()
        };
        let from = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |kinds| TraceReader::open(&path)?.analysis_batches(kinds, Decoding::InLine)
        };
        let analysed = pipeline::analyse(&good, reader, opts, Decoding::InLine, true).unwrap();
        let overview = analysed.overview.as_ref().unwrap();
        let analysis = &analysed.analysis;
        let charts = |path: &std::path::Path, overview: Option<&OverviewRows>| {
            pipeline::window_view(analysis, &opts, overview, from(path))
                .map(|(layout, view)| ChartData::new(analysis, "t".into(), layout, view))
        };
        let full_on_bad = charts(&bad, None).map(|_| ());
        assert!(
            full_on_bad
                .as_ref()
                .is_err_and(|e| e.to_string().contains("checksum")),
            "the damage is in an event block: {full_on_bad:?}"
        );
        let early_on_good = charts(&good, Some(overview)).unwrap();
        let early_on_bad = charts(&bad, Some(overview));
        match late_arrival {
            None => {
                let svg = |c| charts_svg_stacked(std::slice::from_ref(&c)).unwrap();
                assert_eq!(svg(early_on_bad.unwrap()), svg(early_on_good));
            }
            // A datagram of the window is dequeued at the very end: the pass must get there.
            Some(_) => assert!(early_on_bad.is_err(), "read on to the late dequeue"),
        }
    }
}

/// What Perfetto's own schema reads in an export (`tests/tools/pftrace_summary.py`).
fn decoded_with_perfettos_schema(pftrace: &std::path::Path) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/pftrace_summary.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(pftrace)
        .output()
        .expect("python3 is required for this test");
    assert!(
        out.status.success(),
        "decoding with Perfetto's schema failed (the `perfetto` and `protobuf` Python packages: \
         `cargo xtask setup` installs them): {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn native_perfetto_export_decodes_with_perfettos_schema_and_agrees_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    for fixture in ["lab-stacks.trace", "py-gil.trace"] {
        let trace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let pftrace = dir.path().join(format!("{fixture}.pftrace"));
        let out = gil_trace()
            .args(["export", "--format", "perfetto", "-o"])
            .arg(&pftrace)
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
        let got = decoded_with_perfettos_schema(&pftrace);
        let out = gil_trace()
            .args(["report", "--json", "--detail"])
            .arg(&trace)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

        // The scheduler's events, every one, in time order per CPU, within the recording.
        for kind in ["sched_switch", "sched_waking"] {
            assert_eq!(
                got["ftrace"][kind], report["event_counts"][kind],
                "{fixture}: {kind}"
            );
        }
        assert_eq!(got["per_cpu_sorted"], true, "{fixture}");
        let meta = &report["meta"];
        assert!(
            got["first_sched_ns"].as_u64() >= meta["start_ns"].as_u64(),
            "{fixture}"
        );
        assert!(
            got["last_sched_ns"].as_u64() <= meta["end_ns"].as_u64(),
            "{fixture}"
        );

        // The primary lock's holder: a slice per acquisition of it, on a track named after it.
        let lock = &report["locks"][0];
        let holder_track = format!("{} holder", lock["name"].as_str().unwrap());
        assert!(
            got["tracks"]
                .as_array()
                .unwrap()
                .contains(&holder_track.clone().into()),
            "{fixture}: {}",
            got["tracks"]
        );
        let events = report["handoff_events"].as_array().unwrap();
        let of_primary: Vec<&serde_json::Value> = events
            .iter()
            .filter(|h| h["lock"] == lock["addr"].as_u64().map(|a| format!("{a:#x}")).unwrap())
            .collect();
        assert_eq!(
            got["slices"][&holder_track].as_array().unwrap().len(),
            of_primary.len(),
            "{fixture}"
        );
        // Handoffs with a known releaser as flows, each begun and ended.
        let flows = events.iter().filter(|h| !h["from_tid"].is_null()).count() as u64;
        assert_eq!(
            got["flows"],
            serde_json::json!([flows, flows, flows]),
            "{fixture}"
        );
        assert_eq!(got["instants"]["hands"].as_u64(), Some(flows), "{fixture}");
        assert_eq!(
            got["instants"]["datagram"], report["io_stalls"]["with_arrival"],
            "{fixture}"
        );
        // Convoys at the report's times; no slice left open.
        let convoy_starts: Vec<u64> = report["convoys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["start_ns"].as_u64().unwrap())
            .collect();
        let mut exported: Vec<u64> = got["slices"]["convoys"]
            .as_array()
            .map(|s| s.iter().map(|c| c[0].as_u64().unwrap()).collect())
            .unwrap_or_default();
        exported.sort_unstable();
        let mut expected = convoy_starts.clone();
        expected.sort_unstable();
        assert_eq!(exported, expected, "{fixture}");
        assert!(
            !convoy_starts.is_empty(),
            "{fixture}: a fixture with a convoy"
        );
        assert_eq!(got["unclosed"], serde_json::json!({}), "{fixture}");
        // Every user stack the kernel recorded as a sample whose callstack and frames are all
        // named.
        let out = gil_trace()
            .args(["dump", "--json"])
            .arg(&trace)
            .output()
            .unwrap();
        let with_stack = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                // The kernel's stacks (a Python sample's is py-spy's, not exported as one).
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| {
                    e["stack"].is_u64()
                        && (e["kind"] == "sched_switch" || e["kind"] == "futex_exit")
                })
            })
            .count() as u64;
        assert_eq!(got["stack_samples"].as_u64(), Some(with_stack), "{fixture}");
        assert_eq!(
            got["resolved_stack_samples"], got["stack_samples"],
            "{fixture}"
        );
        if fixture == "lab-stacks.trace" {
            assert!(with_stack > 10, "{fixture}: {with_stack} stacks");
            // The futex call every blocking wait and handing-over wake ends in.
            assert!(
                got["innermost_frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f.as_str().is_some_and(|f| f.starts_with("syscall"))),
                "{fixture}: {}",
                got["innermost_frames"]
            );
        }
        // Threads by the report's names (a Python thread's `threading` name).
        for t in report["threads"].as_array().unwrap() {
            let tid = t["tid"].to_string();
            assert_eq!(got["threads"][&tid]["name"], t["name"], "{fixture}: {tid}");
            assert_eq!(got["threads"][&tid]["tgid"], t["tgid"], "{fixture}: {tid}");
        }
    }
}
