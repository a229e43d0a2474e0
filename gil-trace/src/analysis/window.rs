//! The charts' window pass: one more pass over an analysed trace for what a chart shows of
//! one time window — the threads' states binned into columns, and the window's per-item rows
//! (acquisitions, datagrams) — in memory that does not grow with the trace.
use super::{
    contention::{HandoffEvent, IoOp, Rows},
    pass::{self, StopAfter},
    report::{range_end, Analysis, ReportOptions},
    state_grid::{OverviewRows, StateGrid, OVERVIEW_COLUMNS},
};
use crate::trace::{BatchedEvents, KindMask, TraceError};

/// What to bin: a time window, the threads drawn (one row each, in this order) and how many
/// columns the window is cut into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub start_ns: u64,
    pub end_ns: u64,
    pub threads: Vec<u32>,
    pub columns: usize,
}

/// What the window pass found.
#[derive(Clone, Debug)]
pub struct WindowView {
    /// The window's timeline, a row per thread of the spec.
    pub detail: StateGrid,
    /// The whole trace, a row per thread of the spec ([`OVERVIEW_COLUMNS`] columns).
    pub overview: StateGrid,
    /// Acquisitions and datagrams a window-length either side of the window (so a lock held
    /// across the window's edge is drawn to the edge).
    pub handoff_events: Vec<HandoffEvent>,
    pub io_ops: Vec<IoOp>,
    /// Where the pass stopped its trackers, when it could stop soon after the window.
    pub stopped_at: Option<u64>,
}

/// Runs the window pass over the trace `analysis` was made from (`open(kinds)` yields a fresh
/// time-ordered stream), with the report's options.
///
/// With the report pass's complete `overview` rows, the overview needs no reading of its own,
/// and the pass ends soon after the window instead of at the end of the trace, with the same
/// rows and the same spans *inside the window* (spans still open are closed where the pass
/// stopped, past the window). It stops its trackers at the first batch past the window whose
/// open lock takes can no longer end inside it (takes are closed by later events, and the
/// acquisition they record is their last wait's exit); then only recv enters and exits,
/// dequeues and thread exits still go to the contention tracker: a datagram that arrived in
/// the window may be dequeued much later from a socket backlog, and those events alone decide
/// which datagrams are recorded. The stream is narrowed to those kinds, so the file is
/// stepped over rather than decoded, and only until no datagram that arrived in the window
/// can still be dequeued (past the window's end + [`Analysis::max_dequeue_lag_ns`]: none
/// waited longer) and every one dequeued has been recorded.
pub fn window_pass<S, F>(
    analysis: &Analysis,
    opts: &ReportOptions,
    spec: &WindowSpec,
    overview: Option<&OverviewRows>,
    mut open: F,
) -> Result<WindowView, TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let meta = &analysis.report.summary.meta;
    let (start, end) = (meta.start_ns, meta.end_ns);
    let lanes = spec.threads.len();
    let mut detail = StateGrid::new(spec.start_ns, spec.end_ns, lanes, spec.columns);
    let mut overview_grid = StateGrid::new(start, end.max(start + 1), lanes, OVERVIEW_COLUMNS);
    let overview_filled = overview.is_some_and(|rows| rows.fill(&mut overview_grid, &spec.threads));
    // Acquisitions a window-length either side, so holder bands reach the window's edges.
    let len = spec.end_ns.saturating_sub(spec.start_ns);
    let opts = ReportOptions {
        detail: true,
        detail_window: Some((
            spec.start_ns.saturating_sub(len),
            spec.end_ns.saturating_add(len),
        )),
        ..*opts
    };
    // The pass may stop early only when it need not fill the overview.
    let stop_after = overview_filled.then(|| StopAfter {
        window_end: spec.end_ns.saturating_add(len),
        dequeued_by: spec
            .end_ns
            .saturating_add(len)
            .saturating_add(analysis.max_dequeue_lag_ns),
    });
    let lane_of = |tid: u32| spec.threads.iter().position(|&t| t == tid);
    let mut rows = Rows::default();
    let pass = pass::run(
        open(KindMask::ALL)?,
        &analysis.locks,
        &opts,
        range_end(end, &opts),
        stop_after,
        None,
        &mut rows,
        |span| {
            if let Some(lane) = lane_of(span.tid) {
                detail.add(lane, span);
                if !overview_filled {
                    overview_grid.add(lane, span);
                }
            }
        },
    )?;
    if let Some(tid) = opts.tid {
        rows.retain_thread(tid);
    }
    Ok(WindowView {
        detail,
        overview: overview_grid,
        handoff_events: rows.handoff_events,
        io_ops: rows.io_ops,
        stopped_at: pass.stopped_at,
    })
}
