//! Chart data: what the SVG charts draw, collected from a report and its detail pass, with
//! every per-event series bounded (sub-pixel segments merged into per-column shares), so a
//! chart's size does not grow with the trace.
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::{
    analysis::{
        contention::COMPONENTS,
        histogram::Histogram,
        report::{detail_pass, range_end, DetailRows, ReportOptions},
        Report,
    },
    model::{
        locks::Lock,
        timeline::{StateSpan, StateTotals, ThreadState},
    },
    trace::{BatchedEvents, KindMask, TraceError},
};

/// Timeline columns are limited so lanes × columns ≤ this (bounds the SVG size).
pub const MAX_CELLS: usize = 15_000;
pub const MAX_LANES: usize = 24;
pub const MAX_MARKS: usize = 1_500;

/// Time spent in each state per (lane, column), for one time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateGrid {
    pub start_ns: u64,
    pub end_ns: u64,
    pub columns: usize,
    /// lane → per column → ns per state (indexed like ThreadState::ALL).
    pub cells: Vec<Vec<[u64; 5]>>,
}

fn state_index(s: ThreadState) -> usize {
    ThreadState::ALL.iter().position(|x| *x == s).unwrap_or(4)
}

impl StateGrid {
    pub fn new(start_ns: u64, end_ns: u64, lanes: usize, columns: usize) -> Self {
        let end_ns = end_ns.max(start_ns + 1);
        StateGrid {
            start_ns,
            end_ns,
            columns,
            cells: vec![vec![[0; 5]; columns]; lanes],
        }
    }

    /// Spreads a span over the columns it covers.
    pub fn add(&mut self, lane: usize, span: &StateSpan) {
        let (s, e) = (
            span.start_ns.max(self.start_ns),
            span.end_ns.min(self.end_ns),
        );
        if e <= s || lane >= self.cells.len() {
            return;
        }
        let width = (self.end_ns - self.start_ns) as f64 / self.columns as f64;
        let col = |t: u64| (((t - self.start_ns) as f64 / width) as usize).min(self.columns - 1);
        let (c0, c1) = (col(s), col(e.saturating_sub(1).max(s)));
        let i = state_index(span.state);
        for c in c0..=c1 {
            let cs = self.start_ns + (c as f64 * width) as u64;
            let ce = self.start_ns + ((c + 1) as f64 * width) as u64;
            let overlap = e.min(ce).saturating_sub(s.max(cs));
            self.cells[lane][c][i] += overlap;
        }
    }

    /// Runs of columns with the same dominant state: (first column, last column, state).
    pub fn runs(&self, lane: usize) -> Vec<(usize, usize, ThreadState)> {
        let mut out: Vec<(usize, usize, ThreadState)> = Vec::new();
        for (c, cell) in self.cells[lane].iter().enumerate() {
            if cell.iter().all(|&v| v == 0) {
                continue;
            }
            let (i, _) = cell.iter().enumerate().max_by_key(|(_, v)| **v).unwrap();
            let state = ThreadState::ALL[i];
            match out.last_mut() {
                Some(last) if last.1 + 1 == c && last.2 == state => last.1 = c,
                _ => out.push((c, c, state)),
            }
        }
        out
    }
}

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
    /// Per stall component: sorted ns values (downsampled).
    pub stall_components: Vec<(String, Vec<u64>)>,
    /// Per lock: sorted total-wait ns of its contended acquisitions (downsampled).
    pub handoff_waits: Vec<(String, Vec<u64>)>,
    pub state_shares: Vec<(String, StateTotals)>,
    pub trace_start_ns: u64,
    /// The overview came from the report's pass ([`OverviewRows`]): spans only fill `detail`.
    overview_filled: bool,
    /// Where the charts' pass stopped reading events into its trackers (after the window),
    /// if it did not read to the end. Not drawn.
    pub pass_stopped_ns: Option<u64>,
}

/// Columns of the overview strip (the whole trace).
pub const OVERVIEW_COLUMNS: usize = 300;
/// Most threads whose overview rows the report's pass keeps (12 KiB each). Past that the
/// charts' pass fills the overview itself, reading the whole trace again.
pub const MAX_OVERVIEW_THREADS: usize = 1024;

/// Every thread's overview row, filled from the report's own pass (its spans), so that the
/// charts' pass need not read past its window. Lanes are chosen only after the report, so
/// rows are kept per thread, in first-seen order.
#[derive(Clone, Debug)]
pub struct OverviewRows {
    grid: StateGrid,
    row_of: FxHashMap<u32, usize>,
    overflowed: bool,
}

impl OverviewRows {
    /// For a trace from `start_ns` to `end_ns` (its summary's range, as the charts use).
    pub fn new(start_ns: u64, end_ns: u64) -> Self {
        OverviewRows {
            grid: StateGrid::new(start_ns, end_ns.max(start_ns + 1), 0, OVERVIEW_COLUMNS),
            row_of: FxHashMap::default(),
            overflowed: false,
        }
    }

    pub fn add(&mut self, span: &StateSpan) {
        if self.overflowed {
            return;
        }
        let row = match self.row_of.get(&span.tid) {
            Some(&row) => row,
            None if self.row_of.len() < MAX_OVERVIEW_THREADS => {
                let row = self.grid.cells.len();
                self.grid.cells.push(vec![[0; 5]; OVERVIEW_COLUMNS]);
                self.row_of.insert(span.tid, row);
                row
            }
            None => {
                // Too many threads to keep: give the memory back, the charts' pass does it.
                self.overflowed = true;
                self.grid.cells = Vec::new();
                self.row_of = FxHashMap::default();
                return;
            }
        };
        self.grid.add(row, span);
    }

    /// Were all threads' rows kept?
    pub fn complete(&self) -> bool {
        !self.overflowed
    }
}

/// The chart data of one analysed trace: the report's figures, plus one more pass for the
/// timeline of the chart's window and its per-item marks (so memory stays flat however long
/// the trace). `open(kinds)` yields a fresh time-ordered event stream. With the report pass's
/// complete `overview`, that pass stops soon after the window (see [`detail_pass`]);
/// without, it reads the whole trace and fills the overview too. Either way the charts are
/// the same.
pub fn collect<S, F>(
    report: &Report,
    opts: &ReportOptions,
    title: String,
    overview: Option<&OverviewRows>,
    open: F,
) -> Result<ChartData, TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let (start, end) = (report.summary.meta.start_ns, report.summary.meta.end_ns);
    let window = opts
        .window
        .map(|(a, b)| (a, b.min(end)))
        .unwrap_or_else(|| default_window(report, start, end));
    let mut data = ChartData::new(report, title, window);
    let early_stop = match overview {
        Some(rows) => data.set_overview(rows),
        None => false,
    };
    // How far past the window its datagrams can still be dequeued, when the pass may stop.
    let max_dequeue_lag = early_stop.then_some(report.max_dequeue_lag_ns);
    // Acquisitions a window-length either side, so holder bands reach the window's edges.
    let len = window.1.saturating_sub(window.0);
    let detail_opts = ReportOptions {
        detail_window: Some((window.0.saturating_sub(len), window.1.saturating_add(len))),
        ..*opts
    };
    let rows = detail_pass(
        open,
        &report.lock_set,
        detail_opts,
        range_end(end, opts),
        max_dequeue_lag,
        |span| data.add_span(span),
    )?;
    data.add_detail(&rows, report.locks.first());
    data.pass_stopped_ns = rows.stopped_at;
    Ok(data)
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
            label: if t.name.is_empty() {
                t.tid.to_string()
            } else {
                format!("{} ({})", t.name, t.tid)
            },
        })
        .collect();
    (lanes, hidden)
}

impl ChartData {
    /// Builds everything but the state grids' contents (fed by [`ChartData::add_span`]) and
    /// the window's per-item marks (from [`ChartData::add_detail`]). Needs no per-item rows:
    /// the distributions come from the report's histograms, so memory stays flat.
    pub fn new(report: &Report, title: String, window: (u64, u64)) -> ChartData {
        let (lanes, hidden_lanes) = lanes_for(report);
        let start = report.summary.meta.start_ns;
        let end = report.summary.meta.end_ns.max(start + 1);
        let columns = (MAX_CELLS / lanes.len().max(1)).clamp(100, 1000);
        let lane_of: BTreeMap<u32, usize> =
            lanes.iter().enumerate().map(|(i, l)| (l.tid, i)).collect();
        let (ws, we) = window;
        let stall_components = COMPONENTS
            .iter()
            .zip(&report.io_stalls.component_histograms)
            .map(|(n, h)| (n.to_string(), cdf_points(h, 400)))
            .collect();
        let handoff_waits = report
            .locks
            .iter()
            .take(3)
            .filter_map(|l| {
                let name = l.name();
                report
                    .handoffs
                    .iter()
                    .find(|h| h.lock == name)
                    .map(|h| (format!("lock {name}"), cdf_points(&h.wait_histogram, 400)))
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
        ChartData {
            title,
            detail: StateGrid::new(ws, we, lanes.len(), columns),
            overview: StateGrid::new(start, end, lanes.len(), OVERVIEW_COLUMNS),
            lanes,
            hidden_lanes,
            holders: Vec::new(),
            handoffs: Vec::new(),
            arrivals: Vec::new(),
            convoys,
            stall_components,
            handoff_waits,
            state_shares,
            trace_start_ns: start,
            overview_filled: false,
            pass_stopped_ns: None,
        }
    }

    /// Takes the overview from the report pass's rows; false (and nothing taken) if they are
    /// incomplete or for another time range.
    pub fn set_overview(&mut self, rows: &OverviewRows) -> bool {
        let (ours, theirs) = (&self.overview, &rows.grid);
        if !rows.complete()
            || (ours.start_ns, ours.end_ns, ours.columns)
                != (theirs.start_ns, theirs.end_ns, theirs.columns)
        {
            return false;
        }
        for (lane, l) in self.lanes.iter().enumerate() {
            if let Some(&row) = rows.row_of.get(&l.tid) {
                self.overview.cells[lane].clone_from(&theirs.cells[row]);
            }
        }
        self.overview_filled = true;
        true
    }

    /// The window's marks: lock holders, handoffs and datagram arrivals, from a report made
    /// with per-item rows (for this window only; see `ReportOptions::detail_window`).
    pub fn add_detail(&mut self, rows: &DetailRows, primary: Option<&Lock>) {
        let (ws, we) = (self.detail.start_ns, self.detail.end_ns);
        let in_win = |t: u64| t >= ws && t <= we;
        let lane_of: BTreeMap<u32, usize> = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (l.tid, i))
            .collect();
        let mut holders = Vec::new();
        let mut handoffs = Vec::new();
        if let Some(primary) = primary {
            let name = primary.name();
            let mut acq: Vec<_> = rows
                .handoff_events
                .iter()
                .filter(|h| h.lock == name)
                .collect();
            acq.sort_by_key(|h| h.acquire_ns);
            for (i, h) in acq.iter().enumerate() {
                // Held until the next acquisition (releases themselves are not always visible).
                let until = acq.get(i + 1).map(|n| n.acquire_ns).unwrap_or(h.acquire_ns);
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
        for op in &rows.io_ops {
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

    /// Feeds one timeline span (from the detail pass).
    pub fn add_span(&mut self, span: &StateSpan) {
        if let Some(lane) = self.lane_of(span.tid) {
            self.detail.add(lane, span);
            if !self.overview_filled {
                self.overview.add(lane, span);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overview_rows_give_up_and_free_their_memory_past_the_thread_limit() {
        let span = |tid: u32| StateSpan {
            tid,
            state: ThreadState::Running,
            start_ns: 100,
            end_ns: 200,
        };
        let mut rows = OverviewRows::new(0, 1_000);
        for tid in 0..MAX_OVERVIEW_THREADS as u32 {
            rows.add(&span(tid));
        }
        assert!(rows.complete());
        assert_eq!(rows.grid.cells.len(), MAX_OVERVIEW_THREADS);
        // Column 30 of 300 covers 100..103 ns: all running.
        assert_eq!(rows.grid.cells[7][30][0], 3);
        rows.add(&span(7));
        assert!(rows.complete(), "a known thread is no new row");
        rows.add(&span(u32::MAX));
        assert!(!rows.complete());
        assert!(rows.grid.cells.is_empty() && rows.row_of.is_empty());
    }

    #[test]
    fn grid_merges_sub_column_spans_into_dominant_runs() {
        let mut g = StateGrid::new(0, 1_000, 1, 10);
        // 100 ns per column; alternating tiny spans, mostly running in columns 0-4.
        for i in 0..50u64 {
            let state = if i % 5 == 0 {
                ThreadState::LockWait
            } else {
                ThreadState::Running
            };
            g.add(
                0,
                &StateSpan {
                    tid: 1,
                    state,
                    start_ns: i * 10,
                    end_ns: i * 10 + 10,
                },
            );
        }
        g.add(
            0,
            &StateSpan {
                tid: 1,
                state: ThreadState::IoWait,
                start_ns: 500,
                end_ns: 1_000,
            },
        );
        let runs = g.runs(0);
        assert_eq!(
            runs,
            vec![(0, 4, ThreadState::Running), (5, 9, ThreadState::IoWait)]
        );
        let total: u64 = g.cells[0].iter().flatten().sum();
        assert_eq!(total, 1_000, "time is conserved");
    }
}
