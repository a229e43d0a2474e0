//! The full report: one streaming pass over the trace, with the locks identified first from
//! the trailer's futex table (or, for older traces and time windows, from a first pass).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

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
        futex_index::FutexIndex, BatchObserver, BatchedEvents, Event, EventData, KindMask,
        SharedObserver, TraceError, TraceMeta, TraceTrailer,
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
    /// Events delivered later than the reader's sort window allowed (in the part of the file
    /// read: a `--window` report stops at the window's end).
    pub late_events: u64,
    /// The identified locks with their word index (for later passes, e.g. charts).
    #[serde(skip)]
    pub lock_set: LockSet,
    /// The longest a datagram waited in its socket (for the charts' pass: how far past its
    /// window a datagram that arrived in it can still be dequeued).
    #[serde(skip)]
    pub max_dequeue_lag_ns: u64,
}

/// What one streaming pass of the timeline and contention trackers leaves.
struct Pass {
    late: u64,
    /// Where the trackers stopped, if they stopped early (see `stream`).
    stopped_at: Option<u64>,
    totals: FxHashMap<u32, StateTotals>,
    contention: ContentionResult,
}

/// The report's summary and lost spans: built from the events alone, so it runs on the
/// decoding thread when there is one ([`BatchedEvents::offload`]), in line otherwise.
struct SummaryPass {
    opts: ReportOptions,
    summary: SummaryBuilder,
    lost_spans: Vec<LostSpan>,
}

impl SummaryPass {
    /// One event of the window.
    #[inline(always)]
    fn observe(&mut self, ev: &Event) {
        if let EventData::Lost { count, since_ns } = ev.data {
            self.lost_spans.push(LostSpan {
                start_ns: since_ns,
                end_ns: ev.ts_ns,
                events: count,
            });
        }
        self.summary.observe(ev);
    }
}

impl BatchObserver for SummaryPass {
    fn observe_batch(&mut self, batch: &[Event]) {
        let opts = self.opts;
        for ev in batch.iter().filter(|ev| opts.in_window(ev.ts_ns)) {
            self.observe(ev);
        }
    }
}

/// Where the charts' pass may stop (see [`detail_pass`]).
#[derive(Clone, Copy, Debug)]
struct StopAfter {
    /// The trackers stop past this once no open lock take can still end before it.
    window_end: u64,
    /// Past this, no datagram that arrived by `window_end` can still be dequeued.
    dequeued_by: u64,
}

/// The streaming pass shared by the report and the charts' detail pass: every event in the
/// window goes to `summary` (the report's only), the timeline and the contention tracker;
/// closed state spans go to the contention tracker (holder attribution) and `on_span`. Live
/// threads' last spans close at `end_ns`.
///
/// With `stop_after` (the charts' pass only), the trackers stop once past its window end and
/// the contention tracker has settled it (see [`detail_pass`]); from there on only the events
/// that decide which datagrams are recorded still go to it, so the later dequeues of
/// datagrams that arrived in the window are found without the cost of the rest, and the pass
/// ends once none can be left.
fn stream<S: BatchedEvents>(
    mut events: S,
    locks: &LockSet,
    opts: &ReportOptions,
    end_ns: u64,
    stop_after: Option<StopAfter>,
    summary: Option<&Arc<Mutex<SummaryPass>>>,
    mut on_span: impl FnMut(&StateSpan),
) -> Result<Pass, TraceError> {
    // In line, the summary is held for the whole pass (no lock per batch).
    let mut summary_in_line = summary
        .filter(|&summary| !events.offload(&(Arc::clone(summary) as SharedObserver)))
        .map(|summary| summary.lock().unwrap_or_else(PoisonError::into_inner));
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
    // Where the trackers stopped (the charts' pass), if they did.
    let mut stopped_at = None;
    while events.next_batch(&mut batch)? {
        let past = batch.last().is_some_and(|ev| opts.past_window(ev.ts_ns));
        let in_window = batch.iter().filter(|ev| opts.in_window(ev.ts_ns));
        if stopped_at.is_some() {
            for ev in in_window {
                contention.observe_tail(ev);
            }
            if past {
                break;
            }
            // Nothing later can add a datagram of the window: checked once a batch.
            if let (Some(stop), Some(last)) = (stop_after, batch.last()) {
                if last.ts_ns > stop.dequeued_by && contention.ops_settled_through(stop.window_end)
                {
                    break;
                }
            }
            continue;
        }
        let mut last_ns = None;
        for ev in in_window {
            // The trackers' own `match`es on the kind fold into this one (they are inlined
            // in each arm, where the kind is known): one indirect jump per event, not one per tracker.
            let ev = *ev;
            macro_rules! observe {
                () => {{
                    if let Some(summary) = summary_in_line.as_mut() {
                        summary.observe(&ev);
                    }
                    timeline.observe(&ev, &mut |span| {
                        contention.observe_span(&span);
                        on_span(&span);
                    });
                    contention.observe(&ev);
                }};
            }
            match ev.data {
                EventData::Switch { .. } => observe!(),
                EventData::Waking { .. } => observe!(),
                EventData::FutexEnter(_) => observe!(),
                EventData::FutexExit { .. } => observe!(),
                EventData::IoEnter { .. } => observe!(),
                EventData::IoExit { .. } => observe!(),
                EventData::NetRecv { .. } => observe!(),
                EventData::Fork { .. }
                | EventData::Exit { .. }
                | EventData::Comm { .. }
                | EventData::Lost { .. }
                | EventData::Unknown { .. } => observe!(),
            }
            last_ns = Some(ev.ts_ns);
        }
        if past {
            break;
        }
        // Checked once a batch: the check walks every thread.
        if let (Some(stop), Some(last)) = (stop_after, last_ns) {
            if last > stop.window_end && contention.settled_through(stop.window_end) {
                stopped_at = Some(last);
                events.narrow_kinds(ContentionTracker::TAIL_KINDS);
            }
        }
    }
    Ok(Pass {
        late: events.late_events(),
        stopped_at,
        totals: timeline.finish(stopped_at.unwrap_or(end_ns), &mut |span| on_span(&span)),
        contention: contention.finish(),
    })
}

/// The per-item rows a chart draws (`--detail` rows limited to `opts.detail_window`).
pub struct DetailRows {
    pub handoff_events: Vec<HandoffEvent>,
    pub io_ops: Vec<IoOp>,
    /// Where the pass stopped its trackers, when it could stop after the window.
    pub stopped_at: Option<u64>,
}

/// The end of a report's time range: the trace's end, or the window's if that is earlier.
pub fn range_end(trace_end_ns: u64, opts: &ReportOptions) -> u64 {
    opts.window
        .map_or(trace_end_ns, |(_, b)| b.min(trace_end_ns))
}

/// The charts' pass: thread state spans to `on_span`, and the per-item rows of
/// `opts.detail_window`, for the locks of an existing report. Only the timeline and the
/// contention tracker run (the report's summary is not rebuilt); `end_ns` is the report's
/// [`range_end`].
///
/// With `max_dequeue_lag` (the report's [`Report::max_dequeue_lag_ns`] over the same events),
/// the pass ends soon after the detail window instead of at the end of the trace, with the
/// same rows and the same spans *inside the window* (the charts clip to it; spans still open
/// are closed where the pass stopped, past the window). It stops its trackers at the first
/// batch past the window whose open lock takes can no longer end inside it (takes are closed
/// by later events, and the acquisition they record is their last wait's exit); then only recv
/// enters and exits, dequeues and thread exits still go to the contention tracker: a datagram
/// that arrived in the window may be dequeued much later from a socket backlog, and those
/// events alone decide which datagrams are recorded. The stream is narrowed to those kinds, so
/// the file is stepped over rather than decoded, and only until no datagram that arrived in
/// the window can still be dequeued (past the window's end + `max_dequeue_lag`: none waited
/// longer) and every one dequeued has been recorded.
pub fn detail_pass<S, F>(
    mut open: F,
    locks: &LockSet,
    opts: ReportOptions,
    end_ns: u64,
    max_dequeue_lag: Option<u64>,
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
    let stop_after = opts
        .detail_window
        .zip(max_dequeue_lag)
        .map(|((_, end), lag)| StopAfter {
            window_end: end,
            dequeued_by: end.saturating_add(lag),
        });
    let pass = stream(
        open(KindMask::ALL)?,
        locks,
        &opts,
        end_ns,
        stop_after,
        None,
        on_span,
    )?;
    let mut rows = pass.contention;
    if let Some(tid) = opts.tid {
        rows.retain_thread(tid);
    }
    Ok(DetailRows {
        handoff_events: rows.handoff_events,
        io_ops: rows.io_ops,
        stopped_at: pass.stopped_at,
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
                if batch.last().is_some_and(|ev| opts.past_window(ev.ts_ns)) {
                    break;
                }
            }
            finder
        }
    };
    let locks = finder.finish(opts.lock);

    let summary_pass = Arc::new(Mutex::new(SummaryPass {
        opts,
        summary: SummaryBuilder::default(),
        lost_spans: Vec::new(),
    }));
    let pass = stream(
        open(KindMask::ALL)?,
        &locks,
        &opts,
        range_end(trailer.end_monotonic_ns, &opts),
        None,
        Some(&summary_pass),
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
        max_dequeue_lag_ns: result.max_dequeue_lag_ns,
    })
}
