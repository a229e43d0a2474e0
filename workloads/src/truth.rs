//! Ground truth: what the lab really did, as JSON lines (schema in docs/truth-log.md).
//!
//! Each thread buffers its own events (no shared lock on the hot path, so logging barely
//! disturbs the timing) and hands them to the sink when it ends; the sink writes them sorted
//! by time at exit.
use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

/// Why a thread gave the lock up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// Its turn ended without a request (old GIL tick count, fair-GIL slice).
    Interval,
    /// Around a blocking system call.
    Io,
    /// Another thread asked (drop request).
    Forced,
    /// The thread is ending.
    Exit,
}

/// One truth record. Timestamps are CLOCK_MONOTONIC ns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum TruthEvent {
    /// Written once per thread.
    Thread {
        ts_ns: u64,
        tid: u32,
        role: String,
        name: String,
    },
    /// The thread now holds the lock; it asked for it `wait_ns` earlier; `contended` when it
    /// had to block.
    Acquire {
        ts_ns: u64,
        tid: u32,
        wait_ns: u64,
        contended: bool,
    },
    Release {
        ts_ns: u64,
        tid: u32,
        reason: ReleaseReason,
    },
    /// The thread (a waiter) asked the holder to drop the lock.
    DropRequest { ts_ns: u64, tid: u32 },
    /// recvfrom returned `bytes`.
    Recv { ts_ns: u64, tid: u32, bytes: u64 },
    /// sendto returned `bytes`.
    Send { ts_ns: u64, tid: u32, bytes: u64 },
}

impl TruthEvent {
    pub fn ts_ns(&self) -> u64 {
        match *self {
            TruthEvent::Thread { ts_ns, .. }
            | TruthEvent::Acquire { ts_ns, .. }
            | TruthEvent::Release { ts_ns, .. }
            | TruthEvent::DropRequest { ts_ns, .. }
            | TruthEvent::Recv { ts_ns, .. }
            | TruthEvent::Send { ts_ns, .. } => ts_ns,
        }
    }
}

/// Collects every thread's buffer.
#[derive(Clone, Default)]
pub struct TruthSink {
    events: Arc<Mutex<Vec<TruthEvent>>>,
}

impl TruthSink {
    pub fn absorb(&self, mut events: Vec<TruthEvent>) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(&mut events);
    }

    /// All events so far, sorted by time.
    pub fn take_sorted(&self) -> Vec<TruthEvent> {
        let mut events = std::mem::take(
            &mut *self
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        events.sort_by_key(TruthEvent::ts_ns);
        events
    }

    pub fn write_jsonl(events: &[TruthEvent], out: &mut impl Write) -> std::io::Result<()> {
        for ev in events {
            serde_json::to_writer(&mut *out, ev)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// Parses a truth log.
pub fn parse_jsonl(text: &str) -> Result<Vec<TruthEvent>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}
