//! A trace file's events as streams: in file order, or in timestamp order (decoded straight
//! into the batch for files the writer ordered, through the sort window otherwise).
use super::{
    reader::TraceReader,
    sort::SortedEvents,
    stream::{BatchedEvents, KindMask, OneByOne, BATCH_EVENTS},
    Event, TraceError,
};

/// A trace file's events in timestamp order, one by one.
pub type Events = OneByOne<EventBatches>;
/// A trace file's events in file order, one by one.
pub type RawEvents = OneByOne<FileOrder>;

/// A trace file's events as [`BatchedEvents`] (see [`TraceReader::batches_of`]).
pub enum EventBatches {
    /// A file the writer ordered: decoded straight into the batch; an event earlier than its
    /// predecessor (only from a damaged or hand-made file) is raised and counted as late.
    Ordered {
        reader: Box<TraceReader>,
        kinds: KindMask,
        last_out: u64,
        late: u64,
    },
    /// Anything else goes through the sort window.
    Sorted(Box<SortedEvents<RawEvents>>),
}

/// A trace file's events in file order, block by block (no reordering: for files written
/// before the writer ordered events, this is ring-buffer order).
pub struct FileOrder {
    reader: TraceReader,
    kinds: KindMask,
}

impl BatchedEvents for FileOrder {
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError> {
        self.reader.next_events(batch, self.kinds, BATCH_EVENTS)
    }

    fn late_events(&self) -> u64 {
        0
    }
}

impl BatchedEvents for EventBatches {
    fn next_batch(&mut self, batch: &mut Vec<Event>) -> Result<bool, TraceError> {
        match self {
            EventBatches::Ordered {
                reader,
                kinds,
                last_out,
                late,
            } => reader.next_ordered_batch(batch, *kinds, last_out, late),
            EventBatches::Sorted(sorted) => sorted.next_batch(batch),
        }
    }

    fn late_events(&self) -> u64 {
        match self {
            EventBatches::Ordered { late, .. } => *late,
            EventBatches::Sorted(sorted) => sorted.late_events(),
        }
    }

    /// Ordered files only: the sort window must see every event. (The ordering check then
    /// sees fewer events, but a file the writer ordered has no late event to miss.)
    fn narrow_kinds(&mut self, narrower: KindMask) {
        if let EventBatches::Ordered { kinds, .. } = self {
            *kinds = narrower;
        }
    }
}

impl TraceReader {
    /// All events in file order (not sorted), decoded block by block.
    pub fn raw_events(self) -> RawEvents {
        self.raw_events_of(KindMask::ALL)
    }

    /// The events of these kinds only, in file order: a pass that needs few kinds skips
    /// building the others.
    pub fn raw_events_of(self, kinds: KindMask) -> RawEvents {
        OneByOne::new(FileOrder {
            reader: self,
            kinds,
        })
    }

    /// All events in timestamp order, one by one (see [`Self::batches_of`]).
    pub fn events(self) -> Events {
        self.events_of(KindMask::ALL)
    }

    /// The events of these kinds only, in timestamp order, one by one.
    pub fn events_of(self, kinds: KindMask) -> Events {
        OneByOne::new(self.batches_of(kinds))
    }

    /// The events of these kinds in timestamp order, a batch at a time: what the analysis
    /// reads. An ordered file is decoded straight into the batch; an older one goes through
    /// the sort window.
    pub fn batches_of(self, kinds: KindMask) -> EventBatches {
        if self.meta().events_ordered {
            EventBatches::Ordered {
                reader: Box::new(self),
                kinds,
                last_out: 0,
                late: 0,
            }
        } else {
            EventBatches::Sorted(Box::new(SortedEvents::new(self.raw_events_of(kinds))))
        }
    }
}
