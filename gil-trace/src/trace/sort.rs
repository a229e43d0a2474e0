//! Timestamp ordering with a bounded window, for traces written before the writer ordered
//! its events (meta `events_ordered` false) and for tests.
//!
//! Events from different CPUs reach the ring buffer in reservation order, which can trail
//! their timestamps by a little. A sorted buffer holding [`SORT_WINDOW_NS`] of events restores
//! order with memory bounded by the event rate, not the trace length. The input is almost
//! sorted, so the buffer is a deque: an in-order event is appended in O(1), an early one is
//! inserted by binary search from the back. An event later than the window allows is
//! delivered with its timestamp raised to the last one delivered (so consumers always see a
//! monotonic stream) and counted in [`SortedEvents::late_events`].
use std::collections::VecDeque;

use super::{
    stream::{BatchedEvents, BATCH_EVENTS},
    Event, TraceError,
};

/// How far back in time an event may arrive and still be put in its place.
pub const SORT_WINDOW_NS: u64 = 50_000_000;
/// Upper bound on events held, whatever their timestamps say (bounds memory on hostile input).
pub const SORT_MAX_HELD: usize = 1 << 20;

pub struct SortedEvents<I> {
    inner: I,
    held: VecDeque<Event>,
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
            held: VecDeque::with_capacity(4096),
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

    fn insert(&mut self, ev: Event) {
        match self.held.back() {
            Some(back) if back.ts_ns > ev.ts_ns => {
                // Stable: after every held event with the same timestamp.
                let at = self.held.partition_point(|e| e.ts_ns <= ev.ts_ns);
                self.held.insert(at, ev);
            }
            _ => self.held.push_back(ev),
        }
    }

    fn pop(&mut self) -> Option<Event> {
        let mut ev = self.held.pop_front()?;
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

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(front) = self.held.front() {
                if front.ts_ns.saturating_add(SORT_WINDOW_NS) < self.max_ts
                    || self.held.len() >= SORT_MAX_HELD
                {
                    return self.pop().map(Ok);
                }
            }
            match self.inner.next() {
                Some(Ok(ev)) => {
                    self.max_ts = self.max_ts.max(ev.ts_ns);
                    self.insert(ev);
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

impl<I: Iterator<Item = Result<Event, TraceError>>> BatchedEvents for SortedEvents<I> {
    /// Up to [`BATCH_EVENTS`] next events. The first error ends the stream (the analysis
    /// stops at it anyway).
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError> {
        batch.clear();
        while batch.len() < BATCH_EVENTS {
            match self.next() {
                Some(ev) => batch.push(ev?),
                None => break,
            }
        }
        Ok(!batch.is_empty())
    }

    fn late_events(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::EventData;

    #[allow(clippy::unnecessary_wraps, reason = "the sort window's input items")]
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
