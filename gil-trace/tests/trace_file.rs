//! The trace file: round trip, and every kind of damage gives a one-line error naming the
//! file and offset — never a panic. No root needed.
mod common;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use common::*;
use gil_trace::trace::{
    format::{FORMAT_VERSION, MAGIC},
    AnalysisBatches, BatchObserver, BatchedEvents, Decoding, Event, EventData, KindMask,
    SharedObserver, TraceError, TraceMeta, TraceReader, TraceTrailer, TraceWriter,
};
use gil_trace_common::{EventKind, RawEvent};

fn meta() -> TraceMeta {
    TraceMeta {
        format_version: FORMAT_VERSION,
        command: vec!["prog".into(), "--flag".into()],
        root_pid: 100,
        start_monotonic_ns: 1_000,
        clock: "CLOCK_MONOTONIC".into(),
        ..Default::default()
    }
}

/// A deterministic xorshift64 sequence (tests must be reproducible).
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Deterministic pseudo-random numbers below `n` (any `n`; 0 gives 0).
fn below(seed: u64) -> impl FnMut(usize) -> usize {
    let mut next = xorshift(seed);
    move |n| (next() % n.max(1) as u64) as usize
}

/// Deterministic pseudo-random events with slightly out-of-order timestamps, as per-CPU
/// reservations produce.
fn synthetic_events(n: usize) -> Vec<RawEvent> {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let r = next();
            let kind = EventKind::ALL[(r % EventKind::ALL.len() as u64) as usize];
            let jitter = r % 3_000;
            RawEvent {
                ts_ns: 1_000_000 + i as u64 * 1_000 + jitter,
                kind: kind as u32,
                tid: 100 + (r >> 20) as u32 % 8,
                tgid: 100,
                cpu: (r >> 30) as u32 % 2,
                args: [r >> 3, if i % 2 == 0 { 0 } else { r >> 40 }, 0, r & 0xff],
            }
        })
        .collect()
}

fn write_trace(path: &Path, events: &[RawEvent]) {
    let mut w = TraceWriter::create(path, &meta()).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    w.finish(TraceTrailer {
        end_monotonic_ns: 99_000_000,
        stop_reason: "exit".into(),
        ..Default::default()
    })
    .unwrap();
}

/// A trace of `synthetic_events(100_000)` in a fresh directory (several blocks, many batches):
/// the directory (kept alive by the caller) and the file's path.
fn synthetic_trace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(100_000));
    (dir, path)
}

fn read_all(path: &Path) -> Result<Vec<Event>, TraceError> {
    TraceReader::open(path)?.events().collect()
}

#[test]
fn a_kind_filtered_read_keeps_exactly_those_events_with_their_timestamps() {
    // The skipped records still carry timestamp deltas: dropping them must not shift the
    // kept ones.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let events = synthetic_events(50_000);
    write_trace(&path, &events);
    let kinds = [EventKind::FutexEnter, EventKind::ProcessExit];
    let filtered: Vec<Event> = TraceReader::open(&path)
        .unwrap()
        .raw_events_of(KindMask::of(&kinds))
        .map(Result::unwrap)
        .collect();
    // The writer stores events in timestamp order (stable for equal stamps).
    let mut expected: Vec<Event> = events
        .iter()
        .filter(|e| kinds.iter().any(|&k| k as u32 == e.kind))
        .copied()
        .map(Event::from)
        .collect();
    expected.sort_by_key(|e| e.ts_ns);
    assert!(expected.len() > 5_000, "{}", expected.len());
    assert_eq!(filtered, expected);
}

/// Every event of a batched stream, and how it ended: the late count, or the error's text.
/// The events whose data passes `keep`.
fn only(events: &[Event], keep: impl Fn(&EventData) -> bool) -> Vec<Event> {
    events.iter().filter(|e| keep(&e.data)).copied().collect()
}

fn drain(mut batches: impl BatchedEvents) -> (Vec<Event>, Result<u64, String>) {
    let (mut all, mut batch) = (Vec::new(), Vec::new());
    loop {
        match batches.next_batch(&mut batch) {
            Ok(true) => all.extend_from_slice(&batch),
            Ok(false) => return (all, Ok(batches.late_events())),
            Err(e) => return (all, Err(e.to_string())),
        }
    }
}

#[test]
fn decoding_ahead_gives_the_same_events_and_errors_as_decoding_in_line() {
    let (dir, path) = synthetic_trace(); // many batches: the channel fills up
    let open = || TraceReader::open(&path).unwrap();
    let in_line = drain(open().batches_of(KindMask::ALL));
    let ahead = drain(open().batches_ahead_of(KindMask::ALL).unwrap());
    assert_eq!(in_line.0.len(), 100_000);
    assert_eq!(ahead, in_line);
    let kinds = KindMask::of(&[EventKind::SchedSwitch]);
    let ahead_some = drain(open().batches_ahead_of(kinds).unwrap());
    assert_eq!(ahead_some, drain(open().batches_of(kinds)));
    assert!(ahead_some.0.len() > 1_000 && ahead_some.0.len() < 100_000);
    // Other kinds are stepped over, not decoded: the wanted ones come out as from a full read.
    assert_eq!(
        ahead_some.0,
        only(&in_line.0, |e| matches!(e, EventData::Switch { .. }))
    );

    // A damaged block halfway: the same events before it, then the same error.
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    let bad = damaged(dir.path(), "flip.trace", &bytes);
    let open_bad = || TraceReader::open(&bad).unwrap();
    let in_line = drain(open_bad().batches_of(KindMask::ALL));
    let ahead = drain(open_bad().batches_ahead_of(KindMask::ALL).unwrap());
    assert!(
        in_line.1.as_ref().is_err_and(|e| e.contains("checksum")),
        "{:?}",
        in_line.1
    );
    assert!(!in_line.0.is_empty());
    assert_eq!(ahead, in_line);

    // Left after one batch: the worker stops (dropping the stream waits for it; no hang).
    let mut early = open().batches_ahead_of(KindMask::ALL).unwrap();
    let mut batch = Vec::new();
    assert!(early.next_batch(&mut batch).unwrap());
    assert!(!batch.is_empty());
    drop(early);
}

/// Records every batch it is shown, and on which thread.
#[derive(Default)]
struct Recording {
    events: Vec<Event>,
    threads: std::collections::BTreeSet<String>,
}

impl BatchObserver for Recording {
    fn observe_batch(&mut self, batch: &[Event]) {
        self.events.extend_from_slice(batch);
        let thread = std::thread::current();
        self.threads
            .insert(thread.name().unwrap_or("?").to_string());
    }
}

#[test]
fn an_offloaded_observer_sees_every_batch_once_on_the_decoding_thread() {
    // The report's summary runs on the decoding thread this way: it must see exactly the
    // stream's events, in order, and the stream must still hand every batch over.
    let (_dir, path) = synthetic_trace();
    let open = || TraceReader::open(&path).unwrap();
    let expected = drain(open().batches_of(KindMask::ALL));

    let recording = Arc::new(Mutex::new(Recording::default()));
    let shared: SharedObserver = recording.clone();
    let mut ahead = open().batches_ahead_of(KindMask::ALL).unwrap();
    assert!(ahead.offload(&shared));
    drop(shared);
    let got = drain(ahead);
    assert_eq!(got, expected);
    let recording = Arc::into_inner(recording).expect("the worker is gone with its stream");
    let recording = recording.into_inner().unwrap();
    assert_eq!(recording.events, expected.0);
    assert_eq!(
        recording.threads.into_iter().collect::<Vec<_>>(),
        ["gil-trace-decode"]
    );

    // Not offered in line, nor once batches have been taken: the caller runs it.
    let shared: SharedObserver = Arc::new(Mutex::new(Recording::default()));
    let mut in_line = open()
        .analysis_batches(KindMask::ALL, Decoding::InLine)
        .unwrap();
    assert!(!in_line.offload(&shared));
    let mut started = open().batches_ahead_of(KindMask::ALL).unwrap();
    let mut batch = Vec::new();
    assert!(started.next_batch(&mut batch).unwrap());
    assert!(!started.offload(&shared));
}

#[test]
fn narrowing_the_kinds_mid_stream_keeps_every_event_of_those_kinds() {
    // The charts' pass narrows its stream to a few kinds once past its window: from then on
    // every event of those kinds must still come, with the same times, decoded in line or
    // ahead; events of other kinds may stop.
    let (_dir, path) = synthetic_trace();
    let open = || TraceReader::open(&path).unwrap();
    let all = drain(open().batches_of(KindMask::ALL)).0;
    let kinds = KindMask::of(&[EventKind::SchedWaking]);
    let narrowed = |mut batches: AnalysisBatches| {
        let (mut out, mut batch) = (Vec::new(), Vec::new());
        assert!(batches.next_batch(&mut batch).unwrap());
        out.extend_from_slice(&batch);
        batches.narrow_kinds(kinds);
        while batches.next_batch(&mut batch).unwrap() {
            out.extend_from_slice(&batch);
        }
        out
    };
    for decoding in [Decoding::InLine, Decoding::Ahead] {
        let got = narrowed(open().analysis_batches(KindMask::ALL, decoding).unwrap());
        assert!(
            got.len() < all.len() / 2,
            "{decoding:?}: others were left out"
        );
        let wakings = |events: &[Event]| only(events, |e| matches!(e, EventData::Waking { .. }));
        assert_eq!(wakings(&got), wakings(&all), "{decoding:?}");
    }
}

#[test]
fn round_trip_preserves_every_event_and_sorts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let events = synthetic_events(100_000); // several blocks
    write_trace(&path, &events);

    let reader = TraceReader::open(&path).unwrap();
    let ordered_meta = TraceMeta {
        events_ordered: true,
        ..meta()
    };
    assert_eq!(reader.meta(), &ordered_meta);
    assert_eq!(reader.trailer().events, events.len() as u64);
    assert_eq!(reader.trailer().stop_reason, "exit");
    let total: u64 = reader.trailer().counts.values().sum();
    assert_eq!(total, events.len() as u64);

    let in_file_order: Vec<Event> = TraceReader::open(&path)
        .unwrap()
        .raw_events()
        .map(Result::unwrap)
        .collect();
    // The writer put them in timestamp order (stable), within its holdback.
    let mut expected: Vec<Event> = events.iter().copied().map(Event::from).collect();
    expected.sort_by_key(|e| e.ts_ns);
    assert_eq!(in_file_order, expected);

    let sorted = read_all(&path).unwrap();
    assert_eq!(sorted.len(), events.len());
    assert!(sorted.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    let mut by_ts = expected.clone();
    by_ts.sort_by_key(|e| e.ts_ns);
    let key = |e: &Event| (e.ts_ns, e.tid, format!("{:?}", e.data));
    let mut a: Vec<_> = sorted.iter().map(key).collect();
    let mut b: Vec<_> = by_ts.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "sorting must not change any event");
    // Compact: well under the 56-byte in-kernel record.
    let bytes = std::fs::metadata(&path).unwrap().len() as f64 / events.len() as f64;
    assert!(bytes < 40.0, "{bytes:.1} bytes per event");
}

/// A version-1 trace: a lab recording (`workload --gil new --spinners 2`), also the input of
/// `cargo xtask bench`'s analysis benchmark.
fn version_1_trace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-new-2.v1.trace")
}

#[test]
fn a_version_1_trace_reads_and_reports_exactly_as_its_version_2_copy() {
    // Version 2 changed the record encoding; recordings made before must still read.
    let old = version_1_trace();
    let reader = TraceReader::open(&old).unwrap();
    assert_eq!(reader.meta().format_version, 1);
    let (meta, trailer) = (reader.meta().clone(), reader.trailer().clone());
    let events: Vec<RawEvent> = {
        let mut reader = reader;
        let (mut all, mut block) = (Vec::new(), Vec::new());
        while reader.next_block(&mut block).unwrap() {
            all.extend_from_slice(&block);
        }
        all
    };
    assert!(events.len() > 20_000, "{}", events.len());

    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("v2.trace");
    let mut w = TraceWriter::create(&new, &meta).unwrap();
    for e in &events {
        w.push(e).unwrap();
    }
    w.finish(trailer).unwrap();
    let copy = TraceReader::open(&new).unwrap();
    assert_eq!(copy.meta().format_version, FORMAT_VERSION);
    let read_back: Vec<Event> = copy.events().map(Result::unwrap).collect();
    let original: Vec<Event> = TraceReader::open(&old)
        .unwrap()
        .events()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read_back, original);

    let mut a = report_json(&old, &["--detail"]);
    let mut b = report_json(&new, &["--detail"]);
    for v in [&mut a, &mut b] {
        v["meta"]["format_version"] = serde_json::Value::Null;
    }
    // A kind newer than the version-1 recorder: counted (0) in the copy only.
    let counts = b["event_counts"].as_object_mut().unwrap();
    assert_eq!(counts.remove("py_sample"), Some(serde_json::json!(0)));
    assert!(a["convoys"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(a, b);
}

#[test]
fn an_unfinished_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    {
        let mut w = TraceWriter::create(&path, &meta()).unwrap();
        for e in synthetic_events(1000) {
            w.push(&e).unwrap();
        }
        // dropped without finish (e.g. a fatal error)
    }
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );
}

fn damaged(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_truncation_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(20_000));
    let bytes = std::fs::read(&path).unwrap();
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((64..bytes.len()).step_by(997));
    cuts.extend(bytes.len() - 20..bytes.len());
    for cut in cuts {
        let p = damaged(dir.path(), "cut.trace", &bytes[..cut]);
        match read_all(&p) {
            Err(
                TraceError::Truncated { .. }
                | TraceError::Corrupt { .. }
                | TraceError::BadMagic { .. },
            ) => {}
            other => panic!(
                "cut at {cut}: expected an error, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }
}

#[test]
fn flipped_bytes_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(5_000));
    let bytes = std::fs::read(&path).unwrap();
    for pos in (0..bytes.len()).step_by(131) {
        let mut b = bytes.clone();
        b[pos] ^= 0x5a;
        let p = damaged(dir.path(), "flip.trace", &b);
        assert!(read_all(&p).is_err(), "flip at {pos} went unnoticed");
    }
}

#[test]
fn wrong_magic_future_version_and_huge_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(100));
    let good = std::fs::read(&path).unwrap();

    let p = damaged(dir.path(), "empty.trace", &[]);
    assert!(matches!(
        read_all(&p),
        Err(TraceError::Truncated { offset: 0, .. })
    ));

    let mut b = good.clone();
    b[..8].copy_from_slice(b"NOTATRCE");
    assert!(matches!(
        read_all(&damaged(dir.path(), "magic.trace", &b)),
        Err(TraceError::BadMagic { .. })
    ));

    let mut b = good.clone();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    match read_all(&damaged(dir.path(), "future.trace", &b)) {
        Err(e @ TraceError::UnsupportedVersion { .. }) => {
            assert!(e.to_string().contains("upgrade"));
        }
        other => panic!("{:?}", other.map(|v| v.len())),
    }

    // Header metadata length of 4 GiB: rejected without allocating it.
    let mut b = good.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read_all(&damaged(dir.path(), "huge-meta.trace", &b)),
        Err(TraceError::Corrupt { offset: 12, .. })
    ));

    // First event block claims 4 GiB.
    let meta_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let block = 20 + meta_len;
    let mut b = good.clone();
    b[block + 1..block + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read_all(&damaged(dir.path(), "huge-block.trace", &b)),
        Err(TraceError::Corrupt { .. })
    ));

    // A file that is just the magic.
    assert!(read_all(&damaged(dir.path(), "magic-only.trace", MAGIC)).is_err());
}

#[test]
fn report_on_a_truncated_trace_is_a_one_line_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(10_000));
    let bytes = std::fs::read(&path).unwrap();
    let cut = damaged(dir.path(), "cut.trace", &bytes[..bytes.len() / 2]);
    let out = gil_trace().arg("report").arg(&cut).output().unwrap();
    assert_one_line_error(&out, "cut.trace");
    assert!(stderr(&out).contains("offset"), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    let out = gil_trace()
        .arg("report")
        .arg(dir.path().join("absent.trace"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "absent.trace");

    // The intact file reports fine, as text and JSON.
    let out = gil_trace().arg("report").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("prog --flag"));
    let out = gil_trace()
        .arg("report")
        .arg("--json")
        .arg(&path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["meta"]["command"][0], "prog");
    assert_eq!(v["lost"], 0);
}

#[test]
fn reports_and_charts_are_the_same_with_one_thread_or_two() {
    // `--threads 1` decodes in line, 2 on a worker thread: only the time may differ.
    let trace = version_1_trace();
    let one = report_json(&trace, &["--detail", "--threads", "1"]);
    let two = report_json(&trace, &["--detail", "--threads", "2"]);
    assert!(!one["convoys"].as_array().unwrap().is_empty());
    assert_eq!(one, two);
    let dir = tempfile::tempdir().unwrap();
    let svg = |threads: &str| {
        let out = dir.path().join(format!("{threads}.svg"));
        let run = gil_trace()
            .args(["report", "--threads", threads])
            .arg(svg_flag(&out))
            .arg(&trace)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        std::fs::read(out).unwrap()
    };
    let (one, two) = (svg("1"), svg("2"));
    assert!(one.len() > 10_000);
    assert!(one == two, "the SVGs differ");
}

fn report_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = gil_trace()
        .arg("report")
        .arg("--json")
        .args(extra)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn raw(ts: u64, kind: u32, tid: u32, args: [u64; 4]) -> RawEvent {
    RawEvent {
        ts_ns: ts,
        kind,
        tid,
        tgid: 100,
        cpu: 0,
        args,
    }
}

#[test]
fn odd_but_valid_traces_give_sensible_reports() {
    let dir = tempfile::tempdir().unwrap();

    // No events at all.
    let empty = dir.path().join("empty.trace");
    write_trace(&empty, &[]);
    let v = report_json(&empty, &[]);
    assert_eq!(v["locks"].as_array().unwrap().len(), 0);
    assert_eq!(v["convoys"].as_array().unwrap().len(), 0);
    assert_eq!(v["io_stalls"]["datagrams"], 0);
    let out = gil_trace().arg("report").arg(&empty).output().unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("none: no futex word"),
        "{}",
        stdout(&out)
    );

    // Scheduler events only, a thread appearing mid-trace, an event far out of order, and
    // kinds from a newer recorder.
    let odd = dir.path().join("odd.trace");
    let sw = |ts, prev, next| {
        raw(
            ts,
            EventKind::SchedSwitch as u32,
            prev,
            [u64::from(next), 1, 120, 3],
        )
    };
    let mut events = vec![sw(1_000_000, 101, 102), sw(2_000_000, 102, 101)];
    events.push(sw(500_000_000, 101, 103)); // 103 appears mid-trace
    events.push(sw(600_000_000, 103, 101));
    events.push(raw(700_000_000, 99, 101, [1, 2, 3, 4])); // unknown kind
                                                          // Enough events for the writer to encode what it holds before the straggler comes.
    for i in 0..10_000u64 {
        events.push(sw(
            700_000_000 + i * 10_000,
            101 + (i % 2) as u32,
            102 - (i % 2) as u32,
        ));
    }
    events.push(sw(3_000_000, 101, 102)); // ~800 ms late: beyond the writer's holdback
    events.push(sw(900_000_000, 102, 101));
    write_trace(&odd, &events);
    // Read back in order: the straggler raised to its predecessor's time, and counted.
    let mut read = TraceReader::open(&odd).unwrap().events();
    let ts: Vec<u64> = read.by_ref().map(|e| e.unwrap().ts_ns).collect();
    assert_eq!(ts.len(), events.len());
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(read.late_events(), 1);
    let v = report_json(&odd, &[]);
    assert_eq!(v["locks"].as_array().unwrap().len(), 0);
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("unknown"), "{warnings}");
    assert!(warnings.contains("too far out of time order"), "{warnings}");
    let tids: Vec<u64> = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    assert!(tids.contains(&103), "{tids:?}");

    // Filters: a window that excludes everything, and one thread only.
    let v = report_json(&odd, &["--window", "10s..20s"]);
    assert_eq!(v["threads"].as_array().unwrap().len(), 0);
    let v = report_json(&odd, &["--tid", "103"]);
    assert_eq!(v["threads"].as_array().unwrap().len(), 1);

    // Bad filter values are usage errors (clap's: the error line, then a hint; exit 2).
    let out = gil_trace()
        .args(["report", "--window", "5..1"])
        .arg(&odd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: invalid value '5..1'"));
    assert!(stderr(&out).contains("start is after end"));
    let out = gil_trace()
        .args(["report", "--lock", "0xZZ"])
        .arg(&odd)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Offsets and lengths of the event-block payloads of a trace file (after the header).
fn event_payloads(file: &[u8]) -> Vec<(usize, usize)> {
    let meta_len = u32::from_le_bytes(file[12..16].try_into().unwrap()) as usize;
    let mut at = 20 + meta_len;
    let mut payloads = Vec::new();
    while file[at] == b'E' {
        let len = u32::from_le_bytes(file[at + 1..at + 5].try_into().unwrap()) as usize;
        payloads.push((at + 9, len));
        at += 9 + len;
    }
    payloads
}

#[test]
fn mutated_event_records_with_valid_checksums_never_panic() {
    // The checksum catches random damage before decoding; here each mutation gets a valid
    // checksum, so the record decoder itself meets the damage (as it would from a buggy
    // writer).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(3_000));
    let good = std::fs::read(&path).unwrap();
    let payloads = event_payloads(&good);
    assert!(!payloads.is_empty());
    let mut rnd = below(0x9e37_79b9_7f4a_7c15);
    let target = dir.path().join("m.trace");
    let (mut refused, mut read) = (0, 0);
    for round in 0..2_000 {
        let mut b = good.clone();
        let (start, len) = payloads[rnd(payloads.len())];
        for _ in 0..=rnd(3) {
            // Past the block's count and base time: inside the records.
            let at = start + 12 + rnd(len - 12);
            b[at] = match rnd(3) {
                0 => b[at] ^ (1 << rnd(8)),
                1 => [0u8, 0xff, 0x0f, 0x80, 0x09][rnd(5)],
                _ => rnd(256) as u8,
            };
        }
        let crc = crc32fast::hash(&b[start..start + len]);
        b[start - 4..start].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&target, &b).unwrap();
        match std::panic::catch_unwind(|| read_all(&target).map(|v| v.len())) {
            Ok(Ok(_)) => read += 1,
            Ok(Err(e)) => {
                assert!(
                    e.to_string().contains("malformed") || e.to_string().contains("stray"),
                    "round {round}: {e}"
                );
                refused += 1;
            }
            Err(panic) => panic!("round {round}: the reader panicked: {panic:?}"),
        }
    }
    // Both outcomes occur: a changed value inside a field reads as another valid event.
    assert!(
        refused > 200 && read > 100,
        "refused {refused}, read {read}"
    );
}

/// Random mutations of a valid trace (flips, overwrites with extreme values, inserted and
/// deleted bytes, cuts): reading must end in Ok or a TraceError, never a panic, and never
/// take long. Deterministic (fixed seed), so a failure reproduces.
#[test]
fn mutated_traces_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    write_trace(&path, &synthetic_events(3_000));
    let good = std::fs::read(&path).unwrap();
    let mut rnd = below(0x2545_f491_4f6c_dd1d);
    let target = dir.path().join("m.trace");
    let mut errors = 0;
    for round in 0..1_500 {
        let mut b = good.clone();
        for _ in 0..=rnd(4) {
            let at = rnd(b.len());
            match rnd(5) {
                0 => b[at] ^= 1 << rnd(8),
                1 => {
                    let v = [0u8, 0xff, 0x7f, 0x80][rnd(4)];
                    for x in b.iter_mut().skip(at).take(1 + rnd(8)) {
                        *x = v;
                    }
                }
                2 => b.insert(at, rnd(256) as u8),
                3 => {
                    b.remove(at);
                }
                _ => b.truncate(at),
            }
        }
        std::fs::write(&target, &b).unwrap();
        let result = std::panic::catch_unwind(|| read_all(&target).map(|v| v.len()));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(panic) => panic!("round {round}: the reader panicked: {panic:?}"),
        }
    }
    assert!(
        errors > 1_000,
        "mutations should mostly be detected: {errors}"
    );
}

#[test]
fn the_trailer_futex_index_identifies_the_same_locks_as_a_pass_over_the_events() {
    // The writer keeps the futex table in the trailer; a report uses it instead of a first
    // pass, except with --window (which needs a pass over the window's events). Over the
    // whole trace both must give the same locks.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    synthetic_echo_trace(&path, 40, 3_000_000, 2);
    let reader = TraceReader::open(&path).unwrap();
    let index = reader.trailer().futex_index.as_ref().expect("futex_index");
    assert!(!index.words.is_empty());
    let locks = |extra: &[&str]| {
        let out = gil_trace()
            .args(["report", "--json"])
            .args(extra)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["locks"].clone()
    };
    let from_index = locks(&[]);
    let from_pass = locks(&["--window", "0.."]);
    assert!(!from_index.as_array().unwrap().is_empty());
    assert_eq!(from_index, from_pass);
}

#[test]
fn a_window_report_stops_reading_after_the_window() {
    // Streams come in time order, so a --window report stops at its end: a long trace costs
    // only up to the window, and the result is what a full read filtered to the window gives.
    let (dir, path) = synthetic_trace(); // ~100 ms of events
    let window = ["--window", "0..10ms"];
    let whole = report_json(&path, &window);
    assert!(whole["threads"].as_array().unwrap().len() > 1, "{whole}");

    // Damage a block near the end: the full report fails on it, the window never reaches it.
    let mut bytes = std::fs::read(&path).unwrap();
    let late = bytes.len() * 6 / 10; // events take the first ~80 % (the trailer the rest)
    bytes[late] ^= 0x5a;
    let bad = damaged(dir.path(), "late-damage.trace", &bytes);
    let out = gil_trace().arg("report").arg(&bad).output().unwrap();
    assert_one_line_error(&out, "checksum");
    for threads in ["1", "2"] {
        let v = report_json(&bad, &["--window", "0..10ms", "--threads", threads]);
        assert_eq!(v, whole, "--threads {threads}");
    }
}

#[test]
fn a_futex_exit_arriving_before_its_entry_still_counts_the_wait() {
    // CPUs write their events in batches: a wait that blocked on CPU 0 and returned on CPU 1
    // can reach the writer exit first, when CPU 1 writes out before CPU 0. The trailer's futex
    // table must see each thread's events in time order anyway.
    const WORD: u64 = 0x7f00_0000_1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let futex = |kind: EventKind, ts_ns: u64, cpu: u32, args: [u64; 4]| RawEvent {
        ts_ns,
        kind: kind as u32,
        tid: 101,
        tgid: 100,
        cpu,
        args,
    };
    // futex(WORD, FUTEX_WAIT_PRIVATE (128), val 1), class Futex (1) at bit 40; returns 0.
    let enter = futex(
        EventKind::FutexEnter,
        1_000_000,
        0,
        [WORD, 128 | 1 << 32, 0, 1 << 40],
    );
    let exit = futex(EventKind::FutexExit, 3_000_000, 1, [0, 1, 0, 0]);
    write_trace(&path, &[exit, enter]);
    let reader = TraceReader::open(&path).unwrap();
    let index = reader.trailer().futex_index.as_ref().expect("futex_index");
    let word = index
        .words
        .iter()
        .find(|w| w.stats.addr == WORD)
        .expect("the word is in the table");
    assert_eq!(word.stats.waits, 1);
    assert_eq!(word.stats.wait_ns, 2_000_000);
    assert_eq!(word.waiters, vec![101]);
}
