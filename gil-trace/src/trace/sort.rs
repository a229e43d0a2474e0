//! Timestamp ordering with a bounded window.
//!
//! Events from different CPUs reach the ring buffer in reservation order, which can trail
//! their timestamps by a little. A min-heap holding [`SORT_WINDOW_NS`] of events restores
//! order with memory bounded by the event rate, not the trace length. An event later than the
//! window allows is delivered with its timestamp raised to the last one delivered (so
//! consumers always see a monotonic stream) and counted in [`SortedEvents::late_events`].
use std::{cmp::Reverse, collections::BinaryHeap};

use super::{Event, TraceError};

/// How far back in time an event may arrive and still be put in its place.
pub const SORT_WINDOW_NS: u64 = 50_000_000;
/// Upper bound on events held, whatever their timestamps say (bounds memory on hostile input).
pub const SORT_MAX_HELD: usize = 1 << 20;

#[derive(Debug)]
struct Held {
    ts: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(other.ts, other.seq))
    }
}

pub struct SortedEvents<I> {
    inner: I,
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    max_ts: u64,
    last_out: u64,
    late: u64,
    done: bool,
    error: Option<TraceError>,
}

impl<I: Iterator<Item = Result<Event, TraceError>>> SortedEvents<I> {
    pub fn new(inner: I) -> Self {
        SortedEvents {
            inner,
            heap: BinaryHeap::new(),
            seq: 0,
            max_ts: 0,
            last_out: 0,
            late: 0,
            done: false,
            error: None,
        }
    }

    /// Events that arrived later than the window allows (delivered with a raised timestamp).
    pub fn late_events(&self) -> u64 {
        self.late
    }

    pub fn inner(&self) -> &I {
        &self.inner
    }

    fn pop(&mut self) -> Option<Event> {
        let Reverse(held) = self.heap.pop()?;
        let mut ev = held.event;
        if ev.ts_ns < self.last_out {
            self.late += 1;
            ev.ts_ns = self.last_out;
        }
        self.last_out = ev.ts_ns;
        Some(ev)
    }
}

impl<I: Iterator<Item = Result<Event, TraceError>>> Iterator for SortedEvents<I> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(Reverse(top)) = self.heap.peek() {
                if top.ts.saturating_add(SORT_WINDOW_NS) < self.max_ts
                    || self.heap.len() >= SORT_MAX_HELD
                {
                    return self.pop().map(Ok);
                }
            }
            match self.inner.next() {
                Some(Ok(ev)) => {
                    self.max_ts = self.max_ts.max(ev.ts_ns);
                    self.seq += 1;
                    self.heap.push(Reverse(Held {
                        ts: ev.ts_ns,
                        seq: self.seq,
                        event: ev,
                    }));
                }
                Some(Err(e)) => {
                    // Deliver what is held first, then the error.
                    self.done = true;
                    self.error = Some(e);
                }
                None => self.done = true,
            }
        }
        if let Some(ev) = self.pop() {
            return Some(Ok(ev));
        }
        self.error.take().map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::EventData;

    fn ev(ts: u64) -> Result<Event, TraceError> {
        Ok(Event {
            ts_ns: ts,
            tid: 1,
            tgid: 1,
            cpu: 0,
            data: EventData::Fork { child: 2 },
        })
    }

    #[test]
    fn small_inversions_are_sorted() {
        let input = vec![ev(100), ev(90), ev(300), ev(250), ev(1_000)];
        let mut sorted = SortedEvents::new(input.into_iter());
        let ts: Vec<u64> = sorted.by_ref().map(|e| e.unwrap().ts_ns).collect();
        assert_eq!(ts, vec![90, 100, 250, 300, 1_000]);
        assert_eq!(sorted.late_events(), 0);
    }

    #[test]
    fn an_event_later_than_the_window_is_raised_and_counted() {
        let far = SORT_WINDOW_NS * 3;
        let input = vec![
            ev(far),
            ev(far + SORT_WINDOW_NS * 2),
            ev(10),
            ev(far + SORT_WINDOW_NS * 4),
        ];
        let mut sorted = SortedEvents::new(input.into_iter());
        let ts: Vec<u64> = sorted.by_ref().map(|e| e.unwrap().ts_ns).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        assert_eq!(sorted.late_events(), 1);
        assert_eq!(ts.len(), 4);
    }
}
