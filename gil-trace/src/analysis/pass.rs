//! The streaming pass shared by the report and the charts' window pass: every event in the
//! window goes to the timeline and the contention tracker (and, for the report, the summary),
//! in one dispatch per event.
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;

use super::{
    contention::{ContentionOptions, ContentionResult, ContentionTracker, RowSink},
    report::{LostSpan, ReportOptions},
    summary::SummaryBuilder,
};
use crate::{
    model::{
        locks::LockSet,
        timeline::{StateSpan, StateTotals, TimelineTracker},
    },
    trace::{BatchObserver, BatchedEvents, Event, EventData, SharedObserver, TraceError},
};

/// What one streaming pass of the timeline and contention trackers leaves.
pub(super) struct Pass {
    pub late: u64,
    /// Where the trackers stopped, if they stopped early (see [`StopAfter`]).
    pub stopped_at: Option<u64>,
    pub totals: FxHashMap<u32, StateTotals>,
    pub contention: ContentionResult,
}

/// The report's summary and lost spans: built from the events alone, so it runs on the
/// decoding thread when there is one ([`BatchedEvents::offload`]), in line otherwise.
pub(super) struct SummaryPass {
    pub opts: ReportOptions,
    pub summary: SummaryBuilder,
    pub lost_spans: Vec<LostSpan>,
}

impl SummaryPass {
    pub fn new(opts: ReportOptions) -> Self {
        SummaryPass {
            opts,
            summary: SummaryBuilder::default(),
            lost_spans: Vec::new(),
        }
    }

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

/// Where the charts' window pass may stop (see [`super::window::window_pass`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct StopAfter {
    /// The trackers stop past this once no open lock take can still end before it.
    pub window_end: u64,
    /// Past this, no datagram that arrived by `window_end` can still be dequeued.
    pub dequeued_by: u64,
}

/// One streaming pass: every event in the window goes to `summary` (the report's only), the
/// timeline and the contention tracker; closed state spans go to the contention tracker
/// (holder attribution) and `on_span`, the rows the options keep to `rows`. Live threads'
/// last spans close at `end_ns`.
///
/// With `stop_after` (the charts' pass only), the trackers stop once past its window end and
/// the contention tracker has settled it; from there on only the events that decide which
/// datagrams are recorded still go to it, so the later dequeues of datagrams that arrived in
/// the window are found without the cost of the rest, and the pass ends once none can be left.
#[allow(
    clippy::too_many_arguments,
    reason = "the pass's distinct inputs and sinks; its two callers name each one"
)]
pub(super) fn run<S: BatchedEvents>(
    mut events: S,
    locks: &LockSet,
    opts: &ReportOptions,
    end_ns: u64,
    stop_after: Option<StopAfter>,
    summary: Option<&Arc<Mutex<SummaryPass>>>,
    rows: &mut dyn RowSink,
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
        rows,
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
            // in each arm, where the kind is known): one indirect jump per event, not one per
            // tracker.
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
                EventData::PySample { .. } => {
                    if let Some(summary) = summary_in_line.as_mut() {
                        summary.observe(&ev);
                    }
                    contention.observe_py_sample(&ev, timeline.state_of(ev.tid));
                }
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
