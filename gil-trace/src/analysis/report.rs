//! The full report: one streaming pass over the trace, with the locks identified first from
//! the trailer's futex table (or, for older traces and time windows, from a first pass).
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use serde::Serialize;

use super::{
    contention::{
        ConvoyEpisode, HandoffEvent, IoLockWaits, IoOp, IoStallSummary, LockHandoffs, OffCpu,
        PerCause, PythonSummary, RowSink, Rows, Sampled,
    },
    histogram::Histogram,
    pass::{self, SummaryPass},
    summary::Summary,
};
use crate::{
    analysis::AnalysisError,
    model::{
        locks::{Lock, LockFinder, LockSet},
        stack::{Stack, StackKey},
        threads::thread_label,
        timeline::StateSpan,
    },
    trace::{
        futex_index::FutexIndex, BatchedEvents, KindMask, TraceError, TraceMeta, TraceTrailer,
    },
};

#[derive(Clone, Copy, Debug, Default)]
pub struct ReportOptions {
    /// Only events in [start, end] (CLOCK_MONOTONIC ns).
    pub window: Option<(u64, u64)>,
    /// Only this thread's rows (threads, I/O, convoys, handoffs to it).
    pub tid: Option<u32>,
    /// Use the lock containing this futex address as the primary lock.
    pub lock: Option<u64>,
    pub convoy_threshold_ns: u64,
    pub detail: bool,
    /// With `detail`: keep per-item rows only in this span, so memory stays bounded.
    pub detail_window: Option<(u64, u64)>,
}

impl ReportOptions {
    /// Is `ts` inside `--window` (or is there none)?
    pub fn in_window(&self, ts: u64) -> bool {
        self.window.is_none_or(|(a, b)| ts >= a && ts <= b)
    }

    /// Is `ts` after the end of `--window`? Streams come in time order, so from the first such
    /// event on nothing more is in the window and a pass can stop reading.
    pub fn past_window(&self, ts: u64) -> bool {
        self.window.is_some_and(|(_, b)| ts > b)
    }
}

/// A time span in which the kernel dropped events; `events` 0: nothing was recorded in it
/// (between two windows of `top -o`).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LostSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    pub events: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub tid: u32,
    pub text: String,
}

/// The version of the report's JSON (docs/report-json.md): bumped when a key changes meaning
/// or goes away (new keys may be added without).
pub const SCHEMA_VERSION: u32 = 2;

/// A time range, CLOCK_MONOTONIC ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TimeRange {
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// The `--window` the report covers, clipped to the trace (None: all of it).
    pub window: Option<TimeRange>,
    #[serde(flatten)]
    pub summary: Summary,
    pub locks: Vec<Lock>,
    pub handoffs: Vec<LockHandoffs>,
    pub io_stalls: IoStallSummary,
    pub convoys: Vec<ConvoyEpisode>,
    /// Per thread that did I/O: its waits for the primary lock after I/O.
    pub io_lock_waits: Vec<IoLockWaits>,
    pub lost_spans: Vec<LostSpan>,
    pub verdicts: Vec<Verdict>,
    pub convoy_threshold_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_ops: Option<Vec<IoOp>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_events: Option<Vec<HandoffEvent>>,
    /// CPython programs: the Python samples and how their GIL holder agrees with the
    /// kernel's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonSummary>,
    /// The stacks the rows above refer to (`"TGID:ID"`), named (see `crate::symbols`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stacks: BTreeMap<StackKey, Stack>,
    /// Events delivered later than the reader's sort window allowed (in the part of the file
    /// read: a `--window` report stops at the window's end).
    pub late_events: u64,
}

impl Report {
    /// Gives lock `id` a new name in every row that refers to it.
    pub fn rename_lock(&mut self, id: usize, name: &str) {
        let name: std::sync::Arc<str> = name.into();
        let rows = self
            .handoffs
            .iter_mut()
            .map(|h| &mut h.lock)
            .chain(self.convoys.iter_mut().filter_map(|c| c.lock.as_mut()))
            .chain(
                self.io_ops
                    .iter_mut()
                    .flatten()
                    .filter_map(|o| o.lock.as_mut()),
            )
            .chain(
                self.handoff_events
                    .iter_mut()
                    .flatten()
                    .map(|h| &mut h.lock),
            );
        for lock in rows.filter(|l| l.id == id) {
            lock.name = std::sync::Arc::clone(&name);
        }
        if let Some(lock) = self.locks.get_mut(id) {
            lock.name = name.to_string();
        }
    }

    /// Keeps only the threads `keep` says, and every row about them (`--pid`, `--comm`).
    pub fn retain_threads(&mut self, keep: impl Fn(&crate::model::ThreadStats) -> bool) {
        self.summary.threads.retain(|t| keep(t));
        let tids: std::collections::BTreeSet<u32> =
            self.summary.threads.iter().map(|t| t.tid).collect();
        let kept = |tid: &u32| tids.contains(tid);
        let convoys = std::mem::take(&mut self.convoys);
        let verdicts = std::mem::take(&mut self.verdicts);
        (self.convoys, self.verdicts) = convoys
            .into_iter()
            .zip(verdicts)
            .filter(|(c, _)| kept(&c.tid))
            .unzip();
        self.io_lock_waits.retain(|w| kept(&w.tid));
        self.io_stalls.by_thread.retain(|t| kept(&t.tid));
        if let Some(ops) = &mut self.io_ops {
            ops.retain(|o| kept(&o.tid));
        }
        if let Some(events) = &mut self.handoff_events {
            events.retain(|h| kept(&h.to_tid));
        }
    }
}

/// A report and what the analysis leaves beside it: what later passes over the same trace
/// (the charts' window pass) and the charts' distributions need. None of it is in the JSON.
pub struct Analysis {
    pub report: Report,
    /// The identified locks with their word index.
    pub locks: LockSet,
    /// The longest a datagram waited in its socket: how far past a window a datagram that
    /// arrived in it can still be dequeued.
    pub max_dequeue_lag_ns: u64,
    /// Per lock (in lock order), the full distribution of its contended acquisitions' waits.
    pub lock_wait_histograms: Vec<Histogram>,
    /// Per stall cause, its full distribution over the datagrams.
    pub stall_histograms: PerCause<Histogram>,
    /// Off-CPU time by thread, stack and state (for folded stacks and flamegraphs).
    pub off_cpu: Vec<OffCpu>,
    /// Sampled time by thread, Python stack and state.
    pub py_time: Vec<OffCpu>,
}

impl Analysis {
    /// Puts the per-item rows an analysis kept in memory into the report (`--detail`), those
    /// of the thread asked for (`--tid`).
    pub fn keep_rows(&mut self, mut rows: Rows, opts: &ReportOptions) {
        if let Some(tid) = opts.tid {
            rows.retain_thread(tid);
        }
        if opts.detail {
            self.report.io_ops = Some(rows.io_ops);
            self.report.handoff_events = Some(rows.handoff_events);
        }
    }
}

/// The end of a report's time range: the trace's end, or the window's if that is earlier.
pub fn range_end(trace_end_ns: u64, opts: &ReportOptions) -> u64 {
    opts.window
        .map_or(trace_end_ns, |(_, b)| b.min(trace_end_ns))
}

/// One line per convoy episode: who lost how much waiting for which lock, held by whom; with
/// `code`, the code each waited and held in (a stack's label, when known).
pub fn verdicts(
    convoys: &[ConvoyEpisode],
    threads: &[crate::model::ThreadStats],
    code: &dyn Fn(StackKey) -> Option<String>,
) -> Vec<Verdict> {
    let names: HashMap<u32, &str> = threads.iter().map(|t| (t.tid, t.name.as_str())).collect();
    let label = |tid: u32| thread_label(names.get(&tid).copied().unwrap_or(""), tid);
    // A Python stack with enough samples behind it wins (the program's own terms); else
    // the native stack.
    let in_code = |python: Option<&Sampled>, native: Option<StackKey>| {
        let sampled = python
            .filter(|s| s.samples >= MIN_SAMPLES_TO_NAME)
            .and_then(|s| Some((code(s.stack)?, s)));
        match sampled {
            Some((c, s)) if s.samples == s.of => format!(" in ~{c} [{} samples]", s.samples),
            Some((c, s)) => format!(" in ~{c} [{} of {} samples]", s.samples, s.of),
            None => native
                .and_then(code)
                .map_or_else(String::new, |c| format!(" in {c}")),
        }
    };
    convoys
        .iter()
        .map(|c| {
            let holders: Vec<String> = c
                .holders
                .iter()
                .take(4)
                .map(|&(h, _)| {
                    let native = c
                        .holder_stacks
                        .iter()
                        .find(|&&(tid, _)| tid == h)
                        .map(|&(_, s)| s);
                    let python = c.py_holder_stacks.iter().find(|s| s.tid == h);
                    format!("{}{}", label(h), in_code(python, native))
                })
                .collect();
            Verdict {
                tid: c.tid,
                text: format!(
                    "{} lost {:.0}% of {:.1} ms waiting for {}{} {}{}{}",
                    label(c.tid),
                    c.lost_share * 100.0,
                    (c.end_ns - c.start_ns) as f64 / 1e6,
                    c.lock.as_ref().map_or("?", |l| &l.name),
                    in_code(c.py_wait_stack.as_ref(), c.wait_stack),
                    waits_after_io(c),
                    if holders.is_empty() {
                        String::new()
                    } else {
                        format!(", held by {}", holders.join(", "))
                    },
                    if c.incomplete {
                        " (incomplete: events were lost)"
                    } else {
                        ""
                    }
                ),
            }
        })
        .collect()
}

/// Samples a Python stack needs behind it before a verdict names it: one sample says what
/// ran around one moment, never what caused a wait.
pub const MIN_SAMPLES_TO_NAME: u64 = 3;

/// "over 29 datagrams (58 waits for it after I/O: 29 after recv, 29 after send)".
fn waits_after_io(c: &ConvoyEpisode) -> String {
    let after: Vec<String> = [
        (c.waits_after_recv, "recv"),
        (c.waits_after_send, "send"),
        (c.waits_after_poll, "poll"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} after {what}"))
    .collect();
    let waits = c.waits_after_recv + c.waits_after_send + c.waits_after_poll;
    if waits == 0 {
        return format!("over {} datagrams", c.ops);
    }
    format!(
        "over {} datagrams ({waits} waits for it after I/O: {})",
        c.ops,
        after.join(", ")
    )
}

/// The kinds lock identification reads: pass 1 skips decoding the rest.
pub const LOCK_PASS_KINDS: KindMask = KindMask::of(&FutexIndex::KINDS);

/// Builds the report. `open(kinds)` yields a fresh time-ordered event stream (called once, or
/// twice when locks need their own pass); it may leave out kinds not in `kinds`. With
/// `opts.detail`, the per-item rows are in the report (`io_ops`, `handoff_events`).
pub fn analyze<S, F>(
    meta: &TraceMeta,
    trailer: &TraceTrailer,
    open: F,
    opts: ReportOptions,
    on_span: impl FnMut(&StateSpan),
) -> Result<Analysis, AnalysisError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let mut rows = Rows::default();
    let mut analysis = analyze_into(meta, trailer, open, opts, &mut rows, on_span)?;
    analysis.keep_rows(rows, &opts);
    Ok(analysis)
}

/// [`analyze`], its per-item rows (with `opts.detail`) streamed to `rows` as they are found
/// instead of kept in the report: memory stays flat however many there are.
pub fn analyze_into<S, F>(
    meta: &TraceMeta,
    trailer: &TraceTrailer,
    open: F,
    opts: ReportOptions,
    rows: &mut dyn RowSink,
    on_span: impl FnMut(&StateSpan),
) -> Result<Analysis, AnalysisError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    analyze_named(meta, trailer, open, opts, &mut |_| {}, rows, on_span)
}

/// [`analyze_into`], with `name_locks` giving the identified locks their names (and kinds)
/// before the pass, so every row refers to them by name.
pub fn analyze_named<S, F>(
    meta: &TraceMeta,
    trailer: &TraceTrailer,
    mut open: F,
    opts: ReportOptions,
    name_locks: &mut dyn FnMut(&mut LockSet),
    rows: &mut dyn RowSink,
    on_span: impl FnMut(&StateSpan),
) -> Result<Analysis, AnalysisError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    // Pass 1, lock identification, reads the futex table the writer kept in the trailer;
    // older traces and time windows need a pass of their own over the futex events.
    let mut batch = Vec::new();
    let finder = if let (Some(stored), None) = (&trailer.futex_index, opts.window) {
        LockFinder::from_index(FutexIndex::from_stored(stored.clone()))
    } else {
        let mut finder = LockFinder::default();
        let mut events = open(LOCK_PASS_KINDS)?;
        while events.next_batch(&mut batch)? {
            for ev in batch.iter().filter(|ev| opts.in_window(ev.ts_ns)) {
                finder.observe(ev);
            }
            if batch.last().is_some_and(|ev| opts.past_window(ev.ts_ns)) {
                break;
            }
        }
        finder
    };
    let locks = finder.finish(opts.lock);
    if let Some(addr) = opts.lock {
        if !locks
            .locks
            .iter()
            .any(|l| l.words.iter().any(|w| w.addr == addr))
        {
            return Err(AnalysisError::NoSuchLock {
                addr,
                in_window: if opts.window.is_some() {
                    " in the window"
                } else {
                    ""
                },
                found: match locks.locks.first() {
                    None => "no lock was found".into(),
                    Some(_) => format!(
                        "the locks found are at {}",
                        locks
                            .locks
                            .iter()
                            .take(5)
                            .map(|l| format!("{:#x}", l.addr))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            });
        }
    }

    let mut locks = locks;
    name_locks(&mut locks);
    let summary_pass = Arc::new(Mutex::new(SummaryPass::new(opts)));
    let pass = pass::run(
        open(KindMask::ALL)?,
        &locks,
        &opts,
        range_end(trailer.end_monotonic_ns, &opts),
        None,
        Some(&summary_pass),
        rows,
        on_span,
    )?;
    let (late, totals, mut result) = (pass.late, pass.totals, pass.contention);
    // The stream is gone, and with it any decoding thread that held the summary.
    let SummaryPass {
        summary,
        lost_spans,
        ..
    } = Arc::into_inner(summary_pass)
        .expect("the summary is shared with the decoding thread only while the stream lives")
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let mut summary = summary.finish(meta, trailer);

    // Confidence: whatever overlaps a lost span is marked.
    let overlaps = |a: u64, b: u64| {
        lost_spans
            .iter()
            .any(|l: &LostSpan| a <= l.end_ns && l.start_ns <= b)
    };
    for c in &mut result.convoys {
        c.incomplete = overlaps(c.start_ns, c.end_ns);
    }
    if trailer.lost.total > 0 && lost_spans.is_empty() {
        // Older traces without markers: everything is suspect.
        for c in &mut result.convoys {
            c.incomplete = true;
        }
    }

    let verdicts = verdicts(&result.convoys, &summary.threads, &|_| None);
    for t in &mut summary.threads {
        t.states = Some(totals.get(&t.tid).copied().unwrap_or_default());
    }
    if let Some(tid) = opts.tid {
        summary.threads.retain(|t| t.tid == tid);
        result.retain_thread(tid);
    }
    let verdicts = verdicts
        .into_iter()
        .filter(|v| opts.tid.is_none_or(|t| t == v.tid))
        .collect();
    if late > 0 {
        summary.warnings.push(format!(
            "{late} events came too far out of time order to be put back in place (later than the sort window or the writer's holdback); their times were raised"
        ));
    }
    // A span of 0 events is one nothing was recorded in (between two windows of `top -o`).
    let (gaps, lost) = lost_spans.iter().fold((0, 0), |(gaps, lost), l| {
        if l.events == 0 {
            (gaps + 1, lost)
        } else {
            (gaps, lost + 1)
        }
    });
    if lost > 0 {
        summary.warnings.push(format!(
            "events were lost in {lost} span(s); convoy episodes overlapping them are marked incomplete"
        ));
    }
    if gaps > 0 {
        let unrecorded: u64 = lost_spans
            .iter()
            .filter(|l| l.events == 0)
            .map(|l| l.end_ns.saturating_sub(l.start_ns))
            .sum();
        summary.warnings.push(format!(
            "nothing was recorded in {gaps} span(s) between windows ({}); thread states exclude them, and no wait or stall is measured across them",
            crate::analysis::units::duration(unrecorded)
        ));
    }
    let report = Report {
        schema_version: SCHEMA_VERSION,
        window: opts.window.map(|(a, b)| TimeRange {
            start_ns: a.max(meta.start_monotonic_ns),
            end_ns: b.min(trailer.end_monotonic_ns),
        }),
        summary,
        locks: locks.locks.clone(),
        handoffs: result.handoffs,
        io_stalls: result.io_stalls,
        convoys: result.convoys,
        io_lock_waits: result.io_lock_waits,
        lost_spans,
        verdicts,
        convoy_threshold_ns: opts.convoy_threshold_ns,
        io_ops: None,
        handoff_events: None,
        python: result.python,
        stacks: BTreeMap::new(),
        late_events: late,
    };
    Ok(Analysis {
        report,
        locks,
        max_dequeue_lag_ns: result.max_dequeue_lag_ns,
        lock_wait_histograms: result.lock_wait_histograms,
        stall_histograms: result.stall_histograms,
        off_cpu: result.off_cpu,
        py_time: result.py_time,
    })
}
