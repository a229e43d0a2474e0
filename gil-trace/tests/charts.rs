//! SVG charts: parsed as XML and checked for content. No root needed.
mod common;

use common::*;

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
        .arg("--svg")
        .arg(&svg)
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
        .arg("--svg")
        .arg(&svg)
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
