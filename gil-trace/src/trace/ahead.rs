//! Decoding on a second core while the analysis runs on the first.
//!
//! Reading, checking and decoding event blocks is about 40 % of a report and does not depend
//! on the trackers, so a worker thread does it and hands full batches over a bounded channel;
//! the analysis gets them in the same order, with the same errors, as from
//! [`EventBatches`] itself. Emptied batches go back to the worker, so no batch is allocated
//! per step and memory stays bounded by the channel's depth.
//!
//! It trades CPU for time: measured on the 10 M-event bench trace, a report takes ~35 % less
//! wall-clock time and ~25 % more CPU in all (the decoded events cross between cores), so it
//! is the default only where a second CPU exists ([`Decoding::for_machine`]).
//!
//! The analysis is still the slower of the two threads, so work that needs nothing but the
//! events (the report's summary) can go to the worker too: a [`BatchObserver`] offered with
//! [`BatchedEvents::offload`] before the first batch sees every batch there, just decoded,
//! before it is handed over.

use std::{
    mem, panic,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender, SyncSender},
        Arc, PoisonError,
    },
    thread::{self, JoinHandle},
};

use super::{
    batches::EventBatches,
    reader::TraceReader,
    stream::{BatchedEvents, KindMask, SharedObserver},
    Event, TraceError,
};

/// Where an analysis decodes its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoding {
    /// On the analysis's own thread: the least CPU in all.
    InLine,
    /// On a worker thread, ahead of the analysis: the least wall-clock time.
    Ahead,
}

impl Decoding {
    /// For `threads` threads in all: ahead with two or more.
    pub fn for_threads(threads: usize) -> Decoding {
        if threads >= 2 {
            Decoding::Ahead
        } else {
            Decoding::InLine
        }
    }

    /// Ahead when this machine (or the CPUs this process may use) has a second CPU.
    pub fn for_machine() -> Decoding {
        Decoding::for_threads(thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }
}

/// An analysis's events, decoded as a [`Decoding`] chose.
pub enum AnalysisBatches {
    InLine(EventBatches),
    Ahead(DecodedAhead),
}

impl BatchedEvents for AnalysisBatches {
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError> {
        match self {
            AnalysisBatches::InLine(batches) => batches.next_batch(batch),
            AnalysisBatches::Ahead(batches) => batches.next_batch(batch),
        }
    }

    fn late_events(&self) -> u64 {
        match self {
            AnalysisBatches::InLine(batches) => batches.late_events(),
            AnalysisBatches::Ahead(batches) => batches.late_events(),
        }
    }

    fn narrow_kinds(&mut self, kinds: KindMask) {
        match self {
            AnalysisBatches::InLine(batches) => batches.narrow_kinds(kinds),
            AnalysisBatches::Ahead(batches) => batches.narrow_kinds(kinds),
        }
    }

    fn offload(&mut self, observer: &SharedObserver) -> bool {
        match self {
            AnalysisBatches::InLine(batches) => batches.offload(observer),
            AnalysisBatches::Ahead(batches) => batches.offload(observer),
        }
    }
}

/// Full batches the worker may have decoded ahead of the analysis.
const BATCHES_AHEAD: usize = 4;

/// What the worker sends: a batch, or how the stream ended.
enum Decoded {
    Batch(Vec<Event>),
    End { late: u64 },
    Failed(TraceError),
}

/// [`BatchedEvents`] decoded by a worker thread (see the module's documentation).
pub struct DecodedAhead {
    /// Lets the worker start, with the observer it runs if one was offered: sent before the
    /// first batch is asked for.
    start: Option<SyncSender<Option<SharedObserver>>>,
    full: Option<Receiver<Decoded>>,
    empty: Sender<Vec<Event>>,
    worker: Option<JoinHandle<()>>,
    /// The kinds the analysis still wants ([`BatchedEvents::narrow_kinds`]), read by the
    /// worker before each batch.
    kinds: Arc<AtomicU64>,
    late: u64,
    done: bool,
}

impl DecodedAhead {
    /// Starts the worker on `batches`; the error is that of `thread::Builder::spawn`.
    pub fn spawn(mut batches: EventBatches) -> std::io::Result<DecodedAhead> {
        let (start_tx, start_rx) = mpsc::sync_channel::<Option<SharedObserver>>(1);
        let (full_tx, full_rx) = mpsc::sync_channel(BATCHES_AHEAD);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<Event>>();
        let kinds = Arc::new(AtomicU64::new(KindMask::ALL.bits()));
        let wanted = Arc::clone(&kinds);
        let worker = thread::Builder::new()
            .name("gil-trace-decode".into())
            .spawn(move || {
                // Gone before the first batch: nothing to do.
                if let Ok(observer) = start_rx.recv() {
                    decode_into(
                        &mut batches,
                        observer.as_ref(),
                        &wanted,
                        &full_tx,
                        &empty_rx,
                    );
                }
            })?;
        Ok(DecodedAhead {
            start: Some(start_tx),
            full: Some(full_rx),
            empty: empty_tx,
            worker: Some(worker),
            kinds,
            late: 0,
            done: false,
        })
    }

    /// The worker stopped without saying why: it panicked; the panic goes on here.
    fn worker_died(&mut self) -> ! {
        match self.worker.take().map(JoinHandle::join) {
            Some(Err(panic)) => panic::resume_unwind(panic),
            _ => unreachable!("the decoding worker ended without a last message"),
        }
    }
}

/// The worker's loop: it ends after the last message, or when the analysis has gone.
fn decode_into(
    batches: &mut EventBatches,
    observer: Option<&SharedObserver>,
    kinds: &AtomicU64,
    full: &SyncSender<Decoded>,
    empty: &Receiver<Vec<Event>>,
) {
    let mut narrowed = KindMask::ALL.bits();
    loop {
        let wanted = kinds.load(Ordering::Relaxed);
        if wanted != narrowed {
            narrowed = wanted;
            batches.narrow_kinds(KindMask::from_bits(wanted));
        }
        // A returned batch if one is waiting: batches in flight stay ≤ BATCHES_AHEAD + 2.
        let mut batch = empty.try_recv().unwrap_or_default();
        let message = match batches.next_batch(&mut batch) {
            Ok(true) => {
                if let Some(observer) = observer {
                    // A panic there poisons nothing that matters: it ends this thread, and
                    // the analysis re-raises it.
                    let mut observer = observer.lock().unwrap_or_else(PoisonError::into_inner);
                    observer.observe_batch(&batch);
                }
                Decoded::Batch(batch)
            }
            Ok(false) => Decoded::End {
                late: batches.late_events(),
            },
            Err(e) => Decoded::Failed(e),
        };
        let last = !matches!(message, Decoded::Batch(_));
        if full.send(message).is_err() || last {
            return;
        }
    }
}

impl BatchedEvents for DecodedAhead {
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError> {
        if self.done {
            return Ok(false);
        }
        if let Some(start) = self.start.take() {
            // The worker waits for this; it is gone only if it panicked (found below).
            let _ = start.send(None);
        }
        let used = mem::take(batch);
        if used.capacity() > 0 {
            // The worker is gone only after its last message, when nothing needs recycling.
            let _ = self.empty.send(used);
        }
        let received = self.full.as_ref().map(Receiver::recv);
        match received {
            Some(Ok(Decoded::Batch(events))) => {
                *batch = events;
                Ok(true)
            }
            Some(Ok(Decoded::End { late })) => {
                self.late = late;
                self.done = true;
                Ok(false)
            }
            Some(Ok(Decoded::Failed(e))) => {
                self.done = true;
                Err(e)
            }
            Some(Err(_)) | None => self.worker_died(),
        }
    }

    fn late_events(&self) -> u64 {
        self.late
    }

    /// Takes effect from the worker's next batch (up to BATCHES_AHEAD + 1 decoded before it
    /// still hold every kind).
    fn narrow_kinds(&mut self, kinds: KindMask) {
        self.kinds.store(kinds.bits(), Ordering::Relaxed);
    }

    fn offload(&mut self, observer: &SharedObserver) -> bool {
        match self.start.take() {
            Some(start) => start.send(Some(Arc::clone(observer))).is_ok(),
            None => false,
        }
    }
}

impl Drop for DecodedAhead {
    /// Stops the worker (its next send fails once the channel is gone) and waits for it, so
    /// no thread outlives the stream it was decoding.
    fn drop(&mut self) {
        self.start = None;
        self.full = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl TraceReader {
    /// [`Self::batches_of`] decoded by a worker thread, ahead of the analysis that takes
    /// them (see [`DecodedAhead`]).
    pub fn batches_ahead_of(self, kinds: KindMask) -> Result<DecodedAhead, TraceError> {
        let path = self.path().to_path_buf();
        DecodedAhead::spawn(self.batches_of(kinds)).map_err(|source| TraceError::Io {
            path,
            what: "cannot start the decoding thread",
            source,
        })
    }

    /// The analyses' reader: [`Self::batches_of`], decoded as `decoding` says.
    pub fn analysis_batches(
        self,
        kinds: KindMask,
        decoding: Decoding,
    ) -> Result<AnalysisBatches, TraceError> {
        Ok(match decoding {
            Decoding::InLine => AnalysisBatches::InLine(self.batches_of(kinds)),
            Decoding::Ahead => AnalysisBatches::Ahead(self.batches_ahead_of(kinds)?),
        })
    }
}
