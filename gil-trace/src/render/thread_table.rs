//! The trace's thread table as the exporters use it: each thread's process and name.
use rustc_hash::FxHashMap;

use crate::{analysis::Report, trace::ThreadInfo};

/// Thread → (process, name), from a trace's thread table.
pub struct ThreadTable(FxHashMap<u32, (u32, String)>);

impl ThreadTable {
    pub fn new(threads: &[ThreadInfo]) -> ThreadTable {
        ThreadTable(
            threads
                .iter()
                .map(|t| (t.tid, (t.tgid, t.name.clone())))
                .collect(),
        )
    }

    /// Its process (the thread itself when no event revealed one).
    pub fn pid_of(&self, tid: u32) -> u32 {
        self.0
            .get(&tid)
            .map(|t| t.0)
            .filter(|&p| p != 0)
            .unwrap_or(tid)
    }

    /// The processes of the report's threads, each once, in order.
    pub fn pids(&self, report: &Report) -> Vec<u32> {
        let mut pids: Vec<u32> = report
            .summary
            .threads
            .iter()
            .map(|t| self.pid_of(t.tid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Its name, if it has one.
    pub fn name(&self, tid: u32) -> Option<&str> {
        self.0
            .get(&tid)
            .map(|t| t.1.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Threads named as the report names them (a Python thread's `threading` name).
    pub fn rename_as(&mut self, report: &Report) {
        for t in &report.summary.threads {
            if let Some(entry) = self.0.get_mut(&t.tid).filter(|_| !t.name.is_empty()) {
                entry.1.clone_from(&t.name);
            }
        }
    }
}
