//! Event streams: what every analysis reads, independent of where the events come from (a
//! trace file, decoded in line or ahead; the sort window; a live recording).
//!
//! The analysis takes events a batch at a time ([`BatchedEvents`]), so it loops over slices
//! with no per-event `Result` or iterator layers between the decoder and the trackers;
//! [`OneByOne`] hands the same batches out one event at a time for tools and tests.
use std::sync::{Arc, Mutex};

use super::{Event, TraceError};

/// Events per batch: ~200 KiB, so a batch is still in a core's L2 cache when it is analysed,
/// and the hand-overs between the decoding thread and the analysis ([`DecodedAhead`]) are
/// few (4 096 measured ~1.3x faster than 1 024 there).
pub const BATCH_EVENTS: usize = 4096;

/// An event stream read a batch at a time. What the analysis reads — in timestamp order, as
/// [`TraceReader::batches_of`] gives it — so it loops over slices with no per-event `Result`
/// or iterator layers between the decoder and the trackers.
pub trait BatchedEvents {
    /// Replaces `batch` with the next events; `Ok(false)` when the stream is over.
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError>;
    /// Events that came later than ordering allowed (their times were raised).
    fn late_events(&self) -> u64;
    /// From now on only events of `kinds` are needed: a stream may stop decoding the others
    /// (events of other kinds may still come, e.g. from batches already decoded).
    fn narrow_kinds(&mut self, _kinds: KindMask) {}
    /// Offers to run `observer` on every batch, on the thread that decodes them, before
    /// handing each over; `false` when the stream decodes on the caller's thread (the caller
    /// then runs it). Only before the first batch.
    fn offload(&mut self, _observer: &SharedObserver) -> bool {
        false
    }
}

/// Work on each batch that needs nothing but the events themselves (the report's summary),
/// so it may run on the thread that decodes them (see [`BatchedEvents::offload`]).
pub trait BatchObserver: Send {
    fn observe_batch(&mut self, batch: &[Event]);
}

/// A [`BatchObserver`] the decoding thread and the analysis can both reach: the worker locks
/// it once per batch; the analysis takes its result after the stream is dropped (which joins
/// the worker).
pub type SharedObserver = Arc<Mutex<dyn BatchObserver>>;

/// Any [`BatchedEvents`] one event at a time (for tools, tests and the sort window; analyses
/// take the batches). After an error it ends.
pub struct OneByOne<B> {
    batches: B,
    batch: Vec<Event>,
    next: usize,
    done: bool,
}

impl<B: BatchedEvents> OneByOne<B> {
    pub fn new(batches: B) -> Self {
        OneByOne {
            batches,
            batch: Vec::new(),
            next: 0,
            done: false,
        }
    }

    /// Events that came later than ordering allowed (their times were raised).
    pub fn late_events(&self) -> u64 {
        self.batches.late_events()
    }
}

impl<B: BatchedEvents> Iterator for OneByOne<B> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next >= self.batch.len() {
            if self.done {
                return None;
            }
            self.next = 0;
            match self.batches.next_batch(&mut self.batch) {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.next += 1;
        Some(Ok(self.batch[self.next - 1]))
    }
}

/// A set of event kinds (by `EventKind` value); kinds beyond the mask's width, e.g. unknown
/// ones from a newer format, are in [`KindMask::ALL`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindMask(u64);

impl KindMask {
    pub const ALL: KindMask = KindMask(u64::MAX);

    pub const fn of(kinds: &[gil_trace_common::EventKind]) -> KindMask {
        let mut mask = 0u64;
        let mut i = 0;
        while i < kinds.len() {
            mask |= 1 << (kinds[i] as u32);
            i += 1;
        }
        KindMask(mask)
    }

    #[inline(always)]
    pub fn contains(self, kind: u64) -> bool {
        self.0 == u64::MAX || (kind < 64 && self.0 & (1 << kind) != 0)
    }

    /// The mask as one word (to share it between threads).
    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn from_bits(bits: u64) -> KindMask {
        KindMask(bits)
    }
}
