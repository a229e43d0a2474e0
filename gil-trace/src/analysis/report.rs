//! The full report: one streaming pass over the trace, with the locks identified first from
//! the trailer's futex table (or, for older traces and time windows, from a first pass).
use std::collections::HashMap;

use rustc_hash::FxHashMap;

use serde::Serialize;

use super::{
    contention::{
        ContentionOptions, ContentionResult, ContentionTracker, ConvoyEpisode, HandoffEvent, IoOp,
        IoStallSummary, LockHandoffs,
    },
    summary::{Summary, SummaryBuilder},
};
use crate::{
    model::{
        locks::{Lock, LockFinder, LockSet},
        timeline::{StateSpan, StateTotals, TimelineTracker},
    },
    trace::{
        futex_index::FutexIndex, BatchedEvents, Event, EventData, KindMask, TraceError, TraceMeta,
        TraceTrailer,
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
}

/// A time span in which the kernel dropped events.
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

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub summary: Summary,
    pub locks: Vec<Lock>,
    pub handoffs: Vec<LockHandoffs>,
    pub io_stalls: IoStallSummary,
    pub convoys: Vec<ConvoyEpisode>,
    pub lost_spans: Vec<LostSpan>,
    pub verdicts: Vec<Verdict>,
    pub convoy_threshold_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_ops: Option<Vec<IoOp>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_events: Option<Vec<HandoffEvent>>,
    /// Events delivered later than the reader's sort window allowed.
    pub late_events: u64,
    /// The identified locks with their word index (for later passes, e.g. charts).
    #[serde(skip)]
    pub lock_set: LockSet,
}

/// What one streaming pass of the timeline and contention trackers leaves.
struct Pass {
    late: u64,
    totals: FxHashMap<u32, StateTotals>,
    contention: ContentionResult,
}

/// The streaming pass shared by the report and the charts' detail pass: every event in the
/// window goes to `each` (the report's summary), the timeline and the contention tracker;
/// closed state spans go to the contention tracker (holder attribution) and `on_span`.
fn stream<S: BatchedEvents>(
    mut events: S,
    locks: &LockSet,
    opts: &ReportOptions,
    mut each: impl FnMut(&Event),
    mut on_span: impl FnMut(&StateSpan),
) -> Result<Pass, TraceError> {
    let mut timeline = TimelineTracker::new(locks);
    let mut contention = ContentionTracker::new(
        locks,
        ContentionOptions {
            convoy_threshold_ns: opts.convoy_threshold_ns,
            detail: opts.detail,
            detail_window: opts.detail_window,
        },
    );
    let mut batch = Vec::new();
    while events.next_batch(&mut batch)? {
        for ev in batch.iter().filter(|ev| opts.in_window(ev.ts_ns)) {
            each(ev);
            timeline.observe(ev, &mut |span| {
                contention.observe_span(&span);
                on_span(&span);
            });
            contention.observe(ev);
        }
    }
    Ok(Pass {
        late: events.late_events(),
        totals: timeline.finish(&mut |span| on_span(&span)),
        contention: contention.finish(),
    })
}

/// The per-item rows a chart draws (`--detail` rows limited to `opts.detail_window`).
pub struct DetailRows {
    pub handoff_events: Vec<HandoffEvent>,
    pub io_ops: Vec<IoOp>,
}

/// The charts' pass: every thread state span to `on_span`, and the per-item rows of
/// `opts.detail_window`, for the locks of an existing report. Only the timeline and the
/// contention tracker run (the report's summary is not rebuilt).
pub fn detail_pass<S, F>(
    mut open: F,
    locks: &LockSet,
    opts: ReportOptions,
    on_span: impl FnMut(&StateSpan),
) -> Result<DetailRows, TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let opts = ReportOptions {
        detail: true,
        ..opts
    };
    let mut rows = stream(open(KindMask::ALL)?, locks, &opts, |_| {}, on_span)?.contention;
    if let Some(tid) = opts.tid {
        rows.retain_thread(tid);
    }
    Ok(DetailRows {
        handoff_events: rows.handoff_events,
        io_ops: rows.io_ops,
    })
}

/// The kinds lock identification reads: pass 1 skips decoding the rest.
pub const LOCK_PASS_KINDS: KindMask = KindMask::of(&FutexIndex::KINDS);

/// Builds the report. `open(kinds)` yields a fresh time-ordered event stream (called once, or
/// twice when locks need their own pass);
/// it may leave out kinds not in `kinds`.
pub fn analyze<S, F>(
    meta: &TraceMeta,
    trailer: &TraceTrailer,
    mut open: F,
    opts: ReportOptions,
    on_span: impl FnMut(&StateSpan),
) -> Result<Report, TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    // Pass 1, lock identification, reads the futex table the writer kept in the trailer;
    // older traces and time windows need a pass of their own over the futex events.
    let mut batch = Vec::new();
    let finder = match (&trailer.futex_index, opts.window) {
        (Some(stored), None) => LockFinder::from_index(FutexIndex::from_stored(stored.clone())),
        _ => {
            let mut finder = LockFinder::default();
            let mut events = open(LOCK_PASS_KINDS)?;
            while events.next_batch(&mut batch)? {
                for ev in batch.iter().filter(|ev| opts.in_window(ev.ts_ns)) {
                    finder.observe(ev);
                }
            }
            finder
        }
    };
    let locks = finder.finish(opts.lock);

    let mut summary = SummaryBuilder::default();
    let mut lost_spans = Vec::new();
    let pass = stream(
        open(KindMask::ALL)?,
        &locks,
        &opts,
        |ev| {
            if let EventData::Lost { count, since_ns } = ev.data {
                lost_spans.push(LostSpan {
                    start_ns: since_ns,
                    end_ns: ev.ts_ns,
                    events: count,
                });
            }
            summary.observe(ev);
        },
        on_span,
    )?;
    let (late, totals, mut result) = (pass.late, pass.totals, pass.contention);
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

    let names: HashMap<u32, String> = summary
        .threads
        .iter()
        .map(|t| (t.tid, t.name.clone()))
        .collect();
    let label = |tid: u32| match names.get(&tid) {
        Some(n) if !n.is_empty() => format!("{n} ({tid})"),
        _ => format!("tid {tid}"),
    };
    let verdicts = result
        .convoys
        .iter()
        .map(|c| {
            let holders: Vec<String> = c.holders.iter().take(4).map(|(h, _)| label(*h)).collect();
            Verdict {
                tid: c.tid,
                text: format!(
                    "{} lost {:.0}% of {:.1} ms waiting for lock {} over {} datagrams{}{}",
                    label(c.tid),
                    c.lost_share * 100.0,
                    (c.end_ns - c.start_ns) as f64 / 1e6,
                    c.lock.as_deref().unwrap_or("?"),
                    c.ops,
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
        .collect::<Vec<_>>();

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
    if !lost_spans.is_empty() {
        summary.warnings.push(format!(
            "events were lost in {} span(s); convoy episodes overlapping them are marked incomplete",
            lost_spans.len()
        ));
    }
    Ok(Report {
        summary,
        locks: locks.locks.clone(),
        handoffs: result.handoffs,
        io_stalls: result.io_stalls,
        convoys: result.convoys,
        lost_spans,
        verdicts,
        convoy_threshold_ns: opts.convoy_threshold_ns,
        io_ops: opts.detail.then_some(result.io_ops),
        handoff_events: opts.detail.then_some(result.handoff_events),
        late_events: late,
        lock_set: locks,
    })
}
