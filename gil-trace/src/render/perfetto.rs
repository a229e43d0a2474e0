//! Perfetto's native protobuf trace (`.pftrace`), written packet by packet as the analysis
//! streams, so memory stays flat however long the trace:
//!
//! - the scheduler's events as ftrace `sched_switch`/`sched_waking` in per-CPU bundles, so
//!   Perfetto derives thread states, who woke whom and its critical path itself;
//! - the primary lock's holder as a named track, a slice per holding, from one acquisition
//!   to the next;
//! - handoffs as flows (from the releaser's thread track at its wake to the acquirer's when it
//!   acquires);
//! - datagram arrivals as instants on the receiver's thread track;
//! - at the end, process and thread names (a Python thread's `threading` name) and the convoy
//!   episodes as slices on a `convoys` track, with their verdicts;
//! - the recorded user stacks (where a thread blocked waiting for a lock, where a holder woke
//!   its waiter) as `PerfSample`s with interned, named callstacks: Perfetto shows them on the
//!   thread's "Callstacks" track, a flamegraph for one or for a selected range.
//!
//! Timestamps are the trace's own CLOCK_MONOTONIC nanoseconds, on Perfetto's default clock
//! (every packet uses the same one, so they line up).
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
};

use perfetto_protos::{
    debug_annotation::DebugAnnotation,
    ftrace_event::FtraceEvent,
    ftrace_event_bundle::FtraceEventBundle,
    interned_data::InternedData,
    process_tree::{process_tree, ProcessTree},
    profile_common::{Callstack, Frame as PerfettoFrame, InternedString, Mapping},
    profile_packet::{profiling::CpuMode, PerfSample},
    sched::{SchedSwitchFtraceEvent, SchedWakingFtraceEvent},
    thread_descriptor::ThreadDescriptor,
    trace_packet::{trace_packet::SequenceFlags, TracePacket},
    track_descriptor::TrackDescriptor,
    track_event::{track_event::Type as EventType, TrackEvent},
};
use protobuf::Message;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    analysis::{
        contention::{HandoffEvent, IoOp, RowSink},
        Report,
    },
    model::stack::{Stack, StackKey},
    render::thread_table::ThreadTable,
    trace::{Event, EventData, ThreadInfo},
};

/// The packet sequence of everything but the ftrace bundles (which need none).
const SEQUENCE: u32 = 1;
/// Track uuids: a thread's is its tid with this bit; the two extra tracks are fixed.
const THREAD_TRACK: u64 = 1 << 40;
const HOLDER_TRACK: u64 = 1 << 41;
const CONVOY_TRACK: u64 = (1 << 41) + 1;
/// Events per ftrace bundle before it is written.
const BUNDLE_EVENTS: usize = 1024;
/// Acquisitions of the primary lock held back to be drawn in order (they are reported when
/// their take closes, a little after they happen): the holder track's memory bound.
const HOLDER_REORDER: usize = 4096;
/// A switched-out task's priority, which the recorder does not keep (the default nice 0).
const DEFAULT_PRIO: i32 = 120;

/// What an export holds, by kind (for the CLI's summary line and the tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfettoCounts {
    pub sched_switch: u64,
    pub sched_waking: u64,
    pub holder_slices: u64,
    pub flows: u64,
    pub arrivals: u64,
    pub convoys: u64,
    pub stack_samples: u64,
}

/// The names the stack samples' packets have interned on the sequence so far.
#[derive(Default)]
struct InternedStacks {
    /// A frame's label → its iid (also its function name's, and its `rel_pc`: Perfetto keys
    /// frames by address and name, so each label gets an address of its own).
    frames: FxHashMap<String, u64>,
    /// A stack → its callstack's iid.
    callstacks: FxHashMap<StackKey, u64>,
}

/// The one mapping every frame belongs to (Perfetto wants one; the names are what matter).
const MAPPING_IID: u64 = 1;

/// A Perfetto trace being written to `out`.
pub struct PerfettoTrace<W: Write> {
    out: W,
    /// Thread → process and kernel name (ftrace's `comm`), from the trace's thread table.
    threads: ThreadTable,
    /// Only this thread's rows (`--tid`); the scheduler's events are all kept.
    only_tid: Option<u32>,
    /// Thread tracks described so far.
    described: FxHashSet<u32>,
    /// Per CPU, the ftrace events not yet written.
    bundles: BTreeMap<u32, Vec<FtraceEvent>>,
    /// Acquisitions of the primary lock not yet drawn: (acquire time, acquirer).
    holders: BTreeSet<(u64, u32)>,
    /// The holding drawn last is open: it ends at the next acquisition.
    holder_open: bool,
    first_packet: bool,
    interned: InternedStacks,
    counts: PerfettoCounts,
    /// The first write error; later writes are skipped and [`Self::finish`] returns it.
    error: Option<std::io::Error>,
}

impl<W: Write> PerfettoTrace<W> {
    /// Starts the trace; `threads` is the trace's thread table.
    pub fn new(out: W, threads: &[ThreadInfo], only_tid: Option<u32>) -> PerfettoTrace<W> {
        PerfettoTrace {
            out,
            threads: ThreadTable::new(threads),
            only_tid,
            described: FxHashSet::default(),
            bundles: BTreeMap::new(),
            holders: BTreeSet::new(),
            holder_open: false,
            first_packet: true,
            interned: InternedStacks::default(),
            counts: PerfettoCounts::default(),
            error: None,
        }
    }

    /// Writes one packet as a `Trace.packet` field (tag 1, length-delimited), so the file is
    /// a `Trace` message however many packets it holds.
    fn packet(&mut self, mut packet: TracePacket) {
        if self.error.is_some() {
            return;
        }
        if !packet.has_ftrace_events() {
            packet.set_trusted_packet_sequence_id(SEQUENCE);
            if std::mem::take(&mut self.first_packet) {
                packet.set_sequence_flags(
                    SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32
                        | SequenceFlags::SEQ_NEEDS_INCREMENTAL_STATE as u32,
                );
            }
        }
        let body = packet
            .write_to_bytes()
            .expect("a packet built here always encodes");
        let mut head = vec![0x0a];
        let mut len = body.len() as u64;
        while len >= 0x80 {
            head.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        head.push(len as u8);
        if let Err(e) = self
            .out
            .write_all(&head)
            .and_then(|()| self.out.write_all(&body))
        {
            self.error = Some(e);
        }
    }

    fn pid_of(&self, tid: u32) -> u32 {
        self.threads.pid_of(tid)
    }

    fn comm_of(&self, tid: u32) -> String {
        self.threads.name(tid).unwrap_or_default().to_string()
    }

    fn wanted(&self, tid: u32) -> bool {
        self.only_tid.is_none_or(|t| t == tid)
    }

    /// The track of thread `tid`, described on first use.
    fn thread_track(&mut self, tid: u32) -> u64 {
        if self.described.insert(tid) {
            let mut thread = ThreadDescriptor::new();
            thread.set_pid(self.pid_of(tid) as i32);
            thread.set_tid(tid as i32);
            let mut track = TrackDescriptor::new();
            track.set_uuid(THREAD_TRACK | u64::from(tid));
            track.thread = Some(thread).into();
            let mut packet = TracePacket::new();
            packet.set_track_descriptor(track);
            self.packet(packet);
        }
        THREAD_TRACK | u64::from(tid)
    }

    fn named_track(&mut self, uuid: u64, name: &str) {
        let mut track = TrackDescriptor::new();
        track.set_uuid(uuid);
        track.set_name(name.to_string());
        let mut packet = TracePacket::new();
        packet.set_track_descriptor(track);
        self.packet(packet);
    }

    fn track_event(&mut self, ts: u64, track: u64, event: TrackEvent) {
        let mut event = event;
        event.set_track_uuid(track);
        let mut packet = TracePacket::new();
        packet.set_timestamp(ts);
        packet.set_track_event(event);
        self.packet(packet);
    }

    /// A scheduler event of the trace (others are ignored), in time order per CPU.
    pub fn sched(&mut self, e: &Event) {
        let mut event = FtraceEvent::new();
        event.set_timestamp(e.ts_ns);
        event.set_pid(e.tid);
        match e.data {
            EventData::Switch {
                next_tid,
                prev_state,
                next_prio,
                ..
            } => {
                let mut s = SchedSwitchFtraceEvent::new();
                s.set_prev_comm(self.comm_of(e.tid));
                s.set_prev_pid(e.tid as i32);
                s.set_prev_prio(DEFAULT_PRIO);
                s.set_prev_state(prev_state as i64);
                s.set_next_comm(self.comm_of(next_tid));
                s.set_next_pid(next_tid as i32);
                s.set_next_prio(next_prio);
                event.set_sched_switch(s);
                self.counts.sched_switch += 1;
            }
            EventData::Waking { wakee, target_cpu } => {
                let mut w = SchedWakingFtraceEvent::new();
                w.set_comm(self.comm_of(wakee));
                w.set_pid(wakee as i32);
                w.set_prio(DEFAULT_PRIO);
                w.set_success(1);
                w.set_target_cpu(target_cpu as i32);
                event.set_sched_waking(w);
                self.counts.sched_waking += 1;
            }
            _ => return,
        }
        let pending = self.bundles.entry(e.cpu).or_default();
        pending.push(event);
        if pending.len() >= BUNDLE_EVENTS {
            self.flush_cpu(e.cpu);
        }
    }

    /// The user stack `stack` (named, innermost frame first) that event `e` recorded (a
    /// blocking switch, or a futex call that woke a waiter) as a sample on `e`'s thread.
    pub fn stack_sample(&mut self, e: &Event, key: StackKey, stack: &Stack) {
        if !self.wanted(e.tid) || stack.frames.is_empty() {
            return;
        }
        let mut new = InternedData::new();
        if self.interned.frames.is_empty() && self.interned.callstacks.is_empty() {
            let mut mapping = Mapping::new();
            mapping.set_iid(MAPPING_IID);
            new.mappings.push(mapping);
        }
        let callstack = self.intern_callstack(key, stack, &mut new);
        let mut sample = PerfSample::new();
        sample.set_cpu(e.cpu);
        sample.set_pid(self.pid_of(e.tid));
        sample.set_tid(e.tid);
        sample.set_cpu_mode(CpuMode::MODE_USER);
        sample.set_callstack_iid(callstack);
        let mut packet = TracePacket::new();
        packet.set_timestamp(e.ts_ns);
        packet.set_sequence_flags(SequenceFlags::SEQ_NEEDS_INCREMENTAL_STATE as u32);
        if !new.callstacks.is_empty() || !new.mappings.is_empty() {
            packet.interned_data = Some(new).into();
        }
        packet.set_perf_sample(sample);
        self.packet(packet);
        self.counts.stack_samples += 1;
    }

    /// The iid of `key`'s callstack, interning it (and frames not seen yet) into `new`.
    fn intern_callstack(&mut self, key: StackKey, stack: &Stack, new: &mut InternedData) -> u64 {
        if let Some(&iid) = self.interned.callstacks.get(&key) {
            return iid;
        }
        let mut frame_ids = Vec::with_capacity(stack.frames.len());
        // Perfetto's callstacks list the outermost frame first.
        for frame in stack.frames.iter().rev() {
            let label = frame.label();
            let next = self.interned.frames.len() as u64 + 1;
            let iid = *self
                .interned
                .frames
                .entry(label.clone())
                .or_insert_with(|| {
                    let mut name = InternedString::new();
                    name.set_iid(next);
                    name.set_str(label.into_bytes());
                    new.function_names.push(name);
                    let mut f = PerfettoFrame::new();
                    f.set_iid(next);
                    f.set_function_name_id(next);
                    f.set_mapping_id(MAPPING_IID);
                    f.set_rel_pc(next);
                    new.frames.push(f);
                    next
                });
            frame_ids.push(iid);
        }
        let iid = self.interned.callstacks.len() as u64 + 1;
        let mut c = Callstack::new();
        c.set_iid(iid);
        c.frame_ids = frame_ids;
        new.callstacks.push(c);
        self.interned.callstacks.insert(key, iid);
        iid
    }

    fn flush_cpu(&mut self, cpu: u32) {
        let Some(events) = self.bundles.get_mut(&cpu).map(std::mem::take) else {
            return;
        };
        if events.is_empty() {
            return;
        }
        let mut bundle = FtraceEventBundle::new();
        bundle.set_cpu(cpu);
        bundle.event = events;
        let mut packet = TracePacket::new();
        packet.set_ftrace_events(bundle);
        self.packet(packet);
    }

    /// Draws held-back acquisitions up to the newest `keep` (all with 0).
    fn flush_holders(&mut self, keep: usize) {
        while self.holders.len() > keep {
            let Some((at, tid)) = self.holders.pop_first() else {
                break;
            };
            if std::mem::take(&mut self.holder_open) {
                self.track_event(
                    at,
                    HOLDER_TRACK,
                    track_event_of(EventType::TYPE_SLICE_END, None),
                );
            }
            let name = format!("held by {}", self.comm_of(tid));
            let mut begin = track_event_of(EventType::TYPE_SLICE_BEGIN, Some(name));
            annotate(&mut begin, &[("holder_tid", tid.into())]);
            self.track_event(at, HOLDER_TRACK, begin);
            self.holder_open = true;
            self.counts.holder_slices += 1;
        }
    }

    /// Ends the analysis' part with what is known only at its end (names, convoys); the
    /// scheduler's events ([`Self::sched`]) may follow.
    pub fn analysed(&mut self, report: &Report) {
        // Thread names by the report's (a Python thread's `threading` name).
        self.threads.rename_as(report);
        let lock_name = report.locks.first().map(|l| format!("{} holder", l.name()));
        if let Some(name) = &lock_name {
            self.named_track(HOLDER_TRACK, name);
        }
        // Held-back slices are named by the report's thread names too.
        self.flush_holders(0);
        if std::mem::take(&mut self.holder_open) {
            let end = track_event_of(EventType::TYPE_SLICE_END, None);
            self.track_event(report.summary.meta.end_ns, HOLDER_TRACK, end);
        }
        let mut tree = ProcessTree::new();
        for pid in self.threads.pids(report) {
            let mut p = process_tree::Process::new();
            p.set_pid(pid as i32);
            p.cmdline = if pid == report.summary.meta.root_pid {
                report.summary.meta.command.clone()
            } else {
                let kernel = report
                    .summary
                    .threads
                    .iter()
                    .find(|t| t.tid == pid)
                    .and_then(|t| t.kernel_name.clone())
                    .unwrap_or_else(|| self.comm_of(pid));
                vec![kernel]
            };
            tree.processes.push(p);
        }
        for t in &report.summary.threads {
            let mut thread = process_tree::Thread::new();
            thread.set_tid(t.tid as i32);
            thread.set_tgid(self.pid_of(t.tid) as i32);
            thread.set_name(self.comm_of(t.tid));
            tree.threads.push(thread);
        }
        let mut packet = TracePacket::new();
        packet.set_timestamp(report.summary.meta.start_ns);
        packet.set_process_tree(tree);
        self.packet(packet);
        if !report.convoys.is_empty() {
            self.named_track(CONVOY_TRACK, "convoys");
        }
        for (c, v) in report.convoys.iter().zip(&report.verdicts) {
            let name = format!("convoy: {}", self.comm_of(c.tid));
            let mut begin = track_event_of(EventType::TYPE_SLICE_BEGIN, Some(name));
            begin
                .debug_annotations
                .push(string_annotation("verdict", &v.text));
            annotate(
                &mut begin,
                &[("datagrams", c.ops), ("lock_wait_ns", c.lock_wait_ns)],
            );
            self.track_event(c.start_ns, CONVOY_TRACK, begin);
            let end = track_event_of(EventType::TYPE_SLICE_END, None);
            self.track_event(c.end_ns, CONVOY_TRACK, end);
            self.counts.convoys += 1;
        }
    }

    /// Writes what is pending and returns the output and the counts, or the first write
    /// error.
    pub fn finish(mut self) -> std::io::Result<(W, PerfettoCounts)> {
        let cpus: Vec<u32> = self.bundles.keys().copied().collect();
        for cpu in cpus {
            self.flush_cpu(cpu);
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok((self.out, self.counts))
    }
}

/// A track event of `kind` named `name` (a slice's end has no name).
fn track_event_of(kind: EventType, name: Option<String>) -> TrackEvent {
    let mut event = TrackEvent::new();
    event.set_type(kind);
    if let Some(name) = name {
        event.set_name(name);
    }
    event
}

/// Adds integer debug annotations (arguments, in Perfetto's UI) to `event`.
fn annotate(event: &mut TrackEvent, values: &[(&str, u64)]) {
    for &(name, value) in values {
        event.debug_annotations.push(uint_annotation(name, value));
    }
}

fn uint_annotation(name: &str, value: u64) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name(name.to_string());
    a.set_uint_value(value);
    a
}

fn string_annotation(name: &str, value: &str) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name(name.to_string());
    a.set_string_value(value.to_string());
    a
}

impl<W: Write> RowSink for PerfettoTrace<W> {
    fn handoff(&mut self, h: HandoffEvent) {
        // Every acquisition, whoever's: a holding ends at the next one (with --tid too).
        if h.lock.id == 0 {
            self.holders.insert((h.acquire_ns, h.to_tid));
            self.flush_holders(HOLDER_REORDER);
        }
        if !self.wanted(h.to_tid) {
            return;
        }
        let Some(from) = h.from_tid else { return };
        self.counts.flows += 1;
        let id = self.counts.flows;
        let from_ts = h.release_ns.or(h.wake_ns).unwrap_or(h.wait_start_ns);
        let track = self.thread_track(from);
        let name = format!("hands {} over", h.lock.name);
        let mut start = track_event_of(EventType::TYPE_INSTANT, Some(name));
        start.flow_ids.push(id);
        self.track_event(from_ts, track, start);
        let track = self.thread_track(h.to_tid);
        let name = format!("acquires {}", h.lock.name);
        let mut end = track_event_of(EventType::TYPE_INSTANT, Some(name));
        end.terminating_flow_ids.push(id);
        annotate(
            &mut end,
            &[("wait_ns", h.acquire_ns.saturating_sub(h.wait_start_ns))],
        );
        self.track_event(h.acquire_ns, track, end);
    }

    fn datagram(&mut self, op: IoOp) {
        if !self.wanted(op.tid) {
            return;
        }
        let Some(arrival) = op.arrival_ns else { return };
        let track = self.thread_track(op.tid);
        let mut event = track_event_of(EventType::TYPE_INSTANT, Some("datagram arrival".into()));
        annotate(
            &mut event,
            &[
                ("bytes", op.bytes.into()),
                ("stall_ns", op.stall_ns),
                ("lock_wait_ns", op.lock_wait_ns),
            ],
        );
        self.track_event(arrival, track, event);
        self.counts.arrivals += 1;
    }
}
