//! Time binned by state: per thread (a row) and column of a time range, the nanoseconds spent
//! in each state. What the charts draw of a timeline, in memory that does not grow with the
//! trace: sub-column spans are merged into per-column shares.
use rustc_hash::FxHashMap;

use crate::model::timeline::{StateSpan, ThreadState};

/// Time spent in each state per (row, column), for one time range.
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

    /// Copies the rows of `threads` (in that order) into `grid`; false (and nothing copied)
    /// if the rows are incomplete or for another time range.
    pub fn fill(&self, grid: &mut StateGrid, threads: &[u32]) -> bool {
        let theirs = &self.grid;
        if !self.complete()
            || (grid.start_ns, grid.end_ns, grid.columns)
                != (theirs.start_ns, theirs.end_ns, theirs.columns)
        {
            return false;
        }
        for (lane, tid) in threads.iter().enumerate() {
            if let Some(&row) = self.row_of.get(tid) {
                grid.cells[lane].clone_from(&theirs.cells[row]);
            }
        }
        true
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
