//! Chart data: what the SVG charts draw of an analysed trace and its window pass, with every
//! per-event series bounded (timelines come binned, marks are thinned), so a chart's size does
//! not grow with the trace. Pure: the window pass that feeds it is `analysis::window`.
use std::collections::BTreeMap;

use crate::{
    analysis::{
        contention::{HandoffEvent, IoOp, LockRef, StallCause},
        histogram::Histogram,
        state_grid::StateGrid,
        window::{WindowSpec, WindowView},
        Analysis, Report,
    },
    model::timeline::StateTotals,
};

/// Timeline columns are limited so lanes × columns ≤ this (bounds the SVG size).
pub const MAX_CELLS: usize = 15_000;
pub const MAX_LANES: usize = 24;
pub const MAX_MARKS: usize = 1_500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    pub tid: u32,
    pub label: String,
}

/// Everything the charts of one trace show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartData {
    pub title: String,
    pub lanes: Vec<Lane>,
    /// Threads not drawn (over [`MAX_LANES`]).
    pub hidden_lanes: usize,
    pub detail: StateGrid,
    pub overview: StateGrid,
    /// (start, end, lane) the primary lock was held, inferred from acquisitions.
    pub holders: Vec<(u64, u64, usize)>,
    /// (time, from lane, to lane) handoffs.
    pub handoffs: Vec<(u64, usize, usize)>,
    /// (time, lane) datagram arrivals.
    pub arrivals: Vec<(u64, usize)>,
    /// (start, end, lane) convoy episodes.
    pub convoys: Vec<(u64, u64, usize)>,
    /// Per stall cause that occurred: sorted ns values (downsampled).
    pub stall_components: Vec<(StallCause, Vec<u64>)>,
    /// Per lock: sorted total-wait ns of its contended acquisitions (downsampled).
    pub handoff_waits: Vec<(String, Vec<u64>)>,
    pub state_shares: Vec<(String, StateTotals)>,
    pub trace_start_ns: u64,
}

/// Up to `max` points of a distribution's CDF (evenly spaced percentiles), ascending.
fn cdf_points(h: &Histogram, max: usize) -> Vec<u64> {
    let n = (h.count() as usize).min(max);
    if n == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            h.percentile(if n == 1 {
                100.0
            } else {
                i as f64 * 100.0 / (n - 1) as f64
            })
        })
        .collect()
}

/// How much of the worst convoy the default window shows (enough to see single handoffs).
pub const DEFAULT_WINDOW_NS: u64 = 100_000_000;

/// Chooses the detail window: the start of the worst convoy (up to 100 ms of it, with 10 ms
/// before), else the whole trace.
pub fn default_window(report: &Report, start: u64, end: u64) -> (u64, u64) {
    match report.convoys.first() {
        Some(c) => {
            let from = c.start_ns.saturating_sub(10_000_000).max(start);
            let to = (c.end_ns + 10_000_000)
                .min(from + DEFAULT_WINDOW_NS)
                .min(end);
            (from, to.max(from + 1))
        }
        None => (start, end),
    }
}

/// Lane order: processes in order, I/O threads first, then lock users, then the rest.
pub fn lanes_for(report: &Report) -> (Vec<Lane>, usize) {
    let lock_users: Vec<u32> = report
        .locks
        .first()
        .map(|l| l.threads.clone())
        .unwrap_or_default();
    let mut threads: Vec<_> = report.summary.threads.iter().collect();
    threads.sort_by_key(|t| {
        let group = if t.datagrams_received > 0 {
            0
        } else if lock_users.contains(&t.tid) {
            1
        } else {
            2
        };
        (t.tgid, group, t.tid)
    });
    let hidden = threads.len().saturating_sub(MAX_LANES);
    let lanes = threads
        .into_iter()
        .take(MAX_LANES)
        .map(|t| Lane {
            tid: t.tid,
            label: crate::model::threads::thread_label(&t.name, t.tid),
        })
        .collect();
    (lanes, hidden)
}

/// What a chart of a report draws, decided before its window pass: the lanes (threads), the
/// time window and how finely it is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartLayout {
    pub lanes: Vec<Lane>,
    /// Threads not drawn (over [`MAX_LANES`]).
    pub hidden_lanes: usize,
    /// The timeline's window: `window` (clipped to the trace) or [`default_window`].
    pub window: (u64, u64),
    pub columns: usize,
}

impl ChartLayout {
    pub fn new(report: &Report, window: Option<(u64, u64)>) -> ChartLayout {
        let (start, end) = (report.summary.meta.start_ns, report.summary.meta.end_ns);
        let window = window.map_or_else(
            || default_window(report, start, end),
            |(a, b)| (a, b.min(end)),
        );
        let (lanes, hidden_lanes) = lanes_for(report);
        let columns = (MAX_CELLS / lanes.len().max(1)).clamp(100, 1000);
        ChartLayout {
            lanes,
            hidden_lanes,
            window,
            columns,
        }
    }

    /// What the window pass must bin for this layout.
    pub fn window_spec(&self) -> WindowSpec {
        WindowSpec {
            start_ns: self.window.0,
            end_ns: self.window.1,
            threads: self.lanes.iter().map(|l| l.tid).collect(),
            columns: self.columns,
        }
    }
}

impl ChartData {
    /// The charts of an analysed trace laid out as `layout`, with its window pass's `view`.
    /// Needs no per-item rows beyond the window's: the distributions come from the analysis's
    /// histograms, so memory stays flat.
    pub fn new(
        analysis: &Analysis,
        title: String,
        layout: ChartLayout,
        view: WindowView,
    ) -> ChartData {
        let report = &analysis.report;
        let ChartLayout {
            lanes,
            hidden_lanes,
            window: (ws, we),
            ..
        } = layout;
        let lane_of: BTreeMap<u32, usize> =
            lanes.iter().enumerate().map(|(i, l)| (l.tid, i)).collect();
        let stall_components = analysis
            .stall_histograms
            .iter()
            .filter(|(_, h)| h.sum() > 0)
            .map(|(cause, h)| (cause, cdf_points(h, 400)))
            .collect();
        let handoff_waits = report
            .locks
            .iter()
            .take(3)
            .filter_map(|l| {
                analysis
                    .lock_wait_histograms
                    .get(l.id)
                    .map(|h| (l.name().to_string(), cdf_points(h, 400)))
            })
            .filter(|(_, points)| !points.is_empty())
            .collect();
        let convoys = report
            .convoys
            .iter()
            .filter_map(|c| lane_of.get(&c.tid).map(|&l| (c.start_ns, c.end_ns, l)))
            .filter(|c| c.1 > ws && c.0 < we)
            .collect();
        let state_shares = lanes
            .iter()
            .filter_map(|l| {
                report
                    .summary
                    .threads
                    .iter()
                    .find(|t| t.tid == l.tid)
                    .map(|t| (l.label.clone(), t.states.unwrap_or_default()))
            })
            .collect();
        let primary = report
            .locks
            .first()
            .map(|l| LockRef::of(&analysis.locks, l.id));
        let mut data = ChartData {
            title,
            detail: view.detail,
            overview: view.overview,
            lanes,
            hidden_lanes,
            holders: Vec::new(),
            handoffs: Vec::new(),
            arrivals: Vec::new(),
            convoys,
            stall_components,
            handoff_waits,
            state_shares,
            trace_start_ns: report.summary.meta.start_ns,
        };
        data.add_marks(
            &view.handoff_events,
            &view.io_ops,
            primary.as_ref(),
            &lane_of,
        );
        data
    }

    /// The window's marks: lock holders, handoffs and datagram arrivals.
    fn add_marks(
        &mut self,
        handoff_events: &[HandoffEvent],
        io_ops: &[IoOp],
        primary: Option<&LockRef>,
        lane_of: &BTreeMap<u32, usize>,
    ) {
        let (ws, we) = (self.detail.start_ns, self.detail.end_ns);
        let in_win = |t: u64| t >= ws && t <= we;
        let mut holders = Vec::new();
        let mut handoffs = Vec::new();
        if let Some(primary) = primary {
            let mut acq: Vec<_> = handoff_events
                .iter()
                .filter(|h| h.lock.id == primary.id)
                .collect();
            acq.sort_by_key(|h| h.acquire_ns);
            for (i, h) in acq.iter().enumerate() {
                // Held until the next acquisition (releases themselves are not always visible).
                let until = acq.get(i + 1).map_or(h.acquire_ns, |n| n.acquire_ns);
                if let Some(&lane) = lane_of.get(&h.to_tid) {
                    if until > ws && h.acquire_ns < we {
                        holders.push((h.acquire_ns.max(ws), until.min(we), lane));
                    }
                    if let Some(from) = h.from_tid.and_then(|f| lane_of.get(&f)) {
                        if in_win(h.acquire_ns) {
                            handoffs.push((h.acquire_ns, *from, lane));
                        }
                    }
                }
            }
        }
        let step = |n: usize| (n / MAX_MARKS).max(1);
        self.handoffs = handoffs
            .iter()
            .step_by(step(handoffs.len()))
            .copied()
            .collect();
        self.holders = if holders.len() > MAX_CELLS {
            holders.into_iter().step_by(2).collect()
        } else {
            holders
        };
        let mut arrivals = Vec::new();
        for op in io_ops {
            if let (Some(a), Some(&lane)) = (op.arrival_ns, lane_of.get(&op.tid)) {
                if in_win(a) {
                    arrivals.push((a, lane));
                }
            }
        }
        // In time order (datagrams are recorded when their reply is done, not when they
        // arrived), so the marks kept when there are too many are evenly spread.
        arrivals.sort_unstable();
        self.arrivals = arrivals
            .iter()
            .step_by(step(arrivals.len()))
            .copied()
            .collect();
    }

    pub fn lane_of(&self, tid: u32) -> Option<usize> {
        self.lanes.iter().position(|l| l.tid == tid)
    }
}
