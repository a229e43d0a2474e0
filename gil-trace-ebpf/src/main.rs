//! gil-trace's eBPF programs.
//!
//! Every program follows the same shape: `fn <category>_<tracepoint>(ctx) -> u32` calls
//! `try_…(ctx) -> Result<u32, i64>` and ignores its error (a failed kernel read loses one event;
//! a full ring buffer is counted in `DROPS`).
//!
//! Filtering happens here, in the kernel: only threads flagged in `TRACED_FLAGS` (and listed in
//! `TRACED_TIDS`) produce events. Userspace seeds both with the command it starts (or the
//! process it attaches to); the fork/exit handlers keep them current as threads and child
//! processes come and go.
//!
//! Tracepoint field offsets are not hard-coded: userspace reads them from tracefs `format`
//! files and writes them into `PROBE_CONFIG` before loading. The syscall programs are raw
//! tracepoints and read the saved registers, whose layout is fixed per architecture.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_loop, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{
        tracing::StackIdContext, BtfTracePointContext, RawTracePointContext, TracePointContext,
    },
    EbpfContext,
};
use gil_trace_common::{
    comm_to_args, stack_hash, stack_ref, ArrivalQueue, CallInFlight, CallPair, CommSource,
    EventKind, ProbeConfig, RawEvent, StackWalker, StagedEvents, SyscallClass, UserStacks,
    WalkedStack, ARRIVAL_QUEUE_LEN, DROP_SLOTS, DROP_SLOT_FILTER_FULL, DROP_SLOT_STACKS,
    IPPROTO_UDP, MAX_STACK_DEPTH, MAX_TRACED_THREADS, MAX_TRACKED_SOCKETS, NET_RECV_ARRIVAL_LOST,
    RECORD_PREFIX_LEN, SCHED_SWITCH_LOAD_LEN, SCHED_WAKING_LOAD_LEN, SK_DATA_READY_LOAD_LEN,
    SOCK_RECV_LENGTH_LOAD_LEN, STACK_MAP_ENTRIES, STACK_PROBES, STAGED_EVENTS, SYSCALL_TABLE_LEN,
    TRACED_FLAGS_DEFAULT_LEN,
};

/// Tracepoint field offsets and tuning, written by userspace at load time.
#[no_mangle]
static PROBE_CONFIG: ProbeConfig = ProbeConfig {
    sched_switch_prev_pid: 0,
    sched_switch_prev_state: 0,
    sched_switch_prev_state_size: 0,
    sched_switch_next_pid: 0,
    sched_switch_next_prio: 0,
    sched_waking_pid: 0,
    sched_waking_target_cpu: 0,
    fork_child_pid: 0,
    exit_group_dead: 0,
    rename_pid: 0,
    rename_newcomm: 0,
    sk_data_ready_skaddr: 0,
    sk_data_ready_protocol: 0,
    recv_length_sk: 0,
    recv_length_protocol: 0,
    recv_length_ret: 0,
    recv_length_flags: 0,
    dispatch_only: 0,
    user_stacks: 0,
    split_calls: 0,
    stack_walker: 0,
    batch: 0,
};

/// Event stream to userspace; its size is set at load time (`--buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4096 * 1024, 0);

/// Threads being traced (tid → tgid): the set userspace lists and prunes.
#[map]
static TRACED_TIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACED_THREADS, 0);

/// The same set as flags indexed by tid (sized to pid_max at load): the hot programs test it
/// with an array lookup the verifier inlines, instead of hashing the tid on every event.
#[map]
static TRACED_FLAGS: Array<u32> = Array::with_max_entries(TRACED_FLAGS_DEFAULT_LEN, 0);

/// Syscall number → `SyscallClass` (0: not classified), filled by userspace for its
/// architecture; an array, so the lookup is inlined too.
#[map]
static SYSCALL_CLASS: Array<u8> = Array::with_max_entries(SYSCALL_TABLE_LEN, 0);

/// UDP socket → arrival times of its queued datagrams. Every UDP socket on the host passes
/// here (its owner is unknown until it reads); LRU so idle sockets age out by themselves.
#[map]
static SOCKET_ARRIVALS: LruHashMap<u64, ArrivalQueue> =
    LruHashMap::with_max_entries(MAX_TRACKED_SOCKETS, 0);

/// Per CPU, because a task leaves its CPU only through a switch, where `sched_switch` writes a
/// waiting entry out alone.
#[map]
static CALL_IN_FLIGHT: PerCpuArray<CallInFlight> = PerCpuArray::with_max_entries(1, 0);

/// User stacks walked by the kernel (`StackWalker::Kernel`), deduplicated by it; events carry
/// their ids (`stack_ref`). Sized to 1 at load when the programs walk the stacks themselves.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);

/// User stacks walked by the programs (`StackWalker::FramePointers`): a table addressed by
/// each stack's hash, whose slot index is the stack's id. Sized to 1 at load otherwise.
#[map]
static WALKED_STACKS: Array<WalkedStack> = Array::with_max_entries(STACK_MAP_ENTRIES, 0);

/// Slot index → the hash of the stack that claimed it. An insert that fails when the key
/// exists is the claim (BPF has no compare-and-swap on an array value for this target); only
/// a stack not yet in the table comes here.
#[map]
static WALKED_STACK_CLAIMS: HashMap<u32, u64> = HashMap::with_max_entries(STACK_MAP_ENTRIES, 0);

/// Each CPU's stack being walked (1 KiB: too large for the 512-byte BPF stack).
#[map]
static STACK_SCRATCH: PerCpuArray<WalkedStack> = PerCpuArray::with_max_entries(1, 0);

/// Words of user stack read at once by the walk: several frame records come with one read.
const STACK_WINDOW_WORDS: usize = 128;

/// Each CPU's window of the user stack being walked.
#[map]
static STACK_WINDOW: PerCpuArray<[u64; STACK_WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's events waiting to be written to `EVENTS` together (see `StagedEvents`).
#[map]
static STAGED: PerCpuArray<StagedEvents> = PerCpuArray::with_max_entries(1, 0);

/// Events lost, per CPU and per slot (`EventKind` value, `DROP_SLOT_FILTER_FULL` or
/// `DROP_SLOT_STACKS`).
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

#[inline(always)]
fn config(field: &u32) -> usize {
    // Volatile: the value is patched into .rodata after compilation.
    // SAFETY: a reference to a field of a static: valid and aligned.
    unsafe { core::ptr::read_volatile(field) as usize }
}

/// Set only to measure the kernel's dispatch cost. A constant of the frozen read-only data, so
/// the verifier knows it at load time and can drop the branch not taken (A/B on the echo lab
/// with and without the check: no measurable difference).
#[inline(always)]
fn dispatch_only() -> bool {
    config(&PROBE_CONFIG.dispatch_only) != 0
}

/// CLOCK_MONOTONIC now, ns.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments (unsafe only by its binding's signature).
    unsafe { bpf_ktime_get_ns() }
}

/// Reads a `T` at `offset` of the tracepoint's record.
#[inline(always)]
fn record_field<T>(ctx: &TracePointContext, offset: usize) -> Result<T, i64> {
    // SAFETY: a bpf_probe_read of the record: a bad offset fails with an error, never reads
    // out of bounds (userspace checked every offset against the tracepoint's format).
    unsafe { ctx.read_at(offset) }.map_err(i64::from)
}

#[inline(always)]
fn probe_config() -> &'static ProbeConfig {
    &PROBE_CONFIG
}

/// Inlined: an array lookup the verifier turns into a few instructions (a subprogram call
/// costs more on kernels with return-thunk mitigations).
#[inline(always)]
fn is_traced(tid: u32) -> bool {
    TRACED_FLAGS.get(tid).is_some_and(|flag| *flag != 0)
}

/// Whether syscalls are written as two records (see `ProbeConfig::split_calls`): a constant of
/// the frozen read-only data, so the verifier drops the path not taken.
#[inline(always)]
fn split_calls() -> bool {
    config(&PROBE_CONFIG.split_calls) != 0
}

/// Which events carry user stacks: a constant of the frozen read-only data, so the verifier
/// drops the code of the modes not chosen.
#[inline(always)]
fn user_stacks_mode() -> u32 {
    config(&PROBE_CONFIG.user_stacks) as u32
}

/// This CPU's in-flight call slot.
#[inline(always)]
fn call_in_flight() -> Option<&'static mut CallInFlight> {
    // SAFETY: this CPU's slot; programs on one CPU do not run concurrently (tracepoint
    // programs run with migration and preemption off and do not nest on a CPU).
    CALL_IN_FLIGHT
        .get_ptr_mut(0)
        .map(|slot| unsafe { &mut *slot })
}

/// Writes a waiting entry out alone (unless written already) and empties the slot.
#[inline(always)]
fn flush_entry(slot: &mut CallInFlight) {
    if slot.entry_written == 0 {
        write(&slot.pair.enter);
    }
    slot.pair.enter.tid = 0;
}

/// Adds or removes a thread in both the bookkeeping map and the fast flags.
#[inline(always)]
fn set_traced(tid: u32, traced: bool) -> bool {
    // Listed first when adding, unflagged first when removing: a flagged thread is always
    // listed, so userspace can find (and prune) every thread that produces events.
    if traced && TRACED_TIDS.insert(tid, 0, 0).is_err() {
        return false;
    }
    if let Some(flag) = TRACED_FLAGS.get_ptr_mut(tid) {
        // SAFETY: a map value slot; a u32 store is atomic.
        unsafe { *flag = traced as u32 };
    }
    traced || TRACED_TIDS.remove(tid).is_ok()
}

const PREFIX_WORDS: usize = RECORD_PREFIX_LEN / 8;

/// The start of a tracepoint record (up to `RECORD_PREFIX_LEN` bytes), from which the programs
/// pick their fields: one load per word instead of a `bpf_probe_read` per field (helper calls
/// dominated the run time).
/// Its words are written with volatile stores: runs of zero words (the header's, past `LEN`)
/// would otherwise be zeroed by a call of a byte-by-byte `memset` subprogram.
struct Record(core::mem::MaybeUninit<[u64; PREFIX_WORDS]>);

impl Record {
    /// Loads the first `LEN` bytes straight from the context at constant offsets, no helper
    /// call. `LEN` is the program's `*_LOAD_LEN`: the kernel refuses to attach a program that
    /// loads past its tracepoint's record, and userspace checks the record is that long. Word
    /// 0, the common header, may not be loaded and stays 0: no field read lies there. A
    /// length ending mid-word loads its last 4 bytes as a u32.
    /// Filled in place (`let mut r = Record::new(); r.load::<LEN>(ctx)`): a record returned
    /// by value is copied, and the copy's zero words are again a `memset` call.
    #[inline(always)]
    fn load<const LEN: usize>(&mut self, ctx: &TracePointContext) {
        let base = ctx.as_ptr() as *const u8;
        let to = self.0.as_mut_ptr().cast::<u64>();
        for i in 0..PREFIX_WORDS {
            let word = if i == 0 {
                0
            } else {
                Self::word::<LEN>(base, i)
            };
            // SAFETY: word i of the array; every word is written before any is read.
            unsafe { core::ptr::write_volatile(to.add(i), word) };
        }
    }

    /// A record to `load`.
    #[inline(always)]
    fn new() -> Record {
        Record(core::mem::MaybeUninit::uninit())
    }

    /// Word `i` of a record loaded `LEN` bytes long (`i` and `LEN` constants: every branch
    /// folds, and each load has the constant offset the verifier requires of context loads).
    #[inline(always)]
    fn word<const LEN: usize>(base: *const u8, i: usize) -> u64 {
        // SAFETY: inside the first LEN bytes of the record, which the verifier checks against
        // the context's bounds.
        unsafe {
            if (i + 1) * 8 <= LEN {
                core::ptr::read_volatile(base.add(i * 8) as *const u64)
            } else if i * 8 + 4 <= LEN {
                u64::from(core::ptr::read_volatile(base.add(i * 8) as *const u32))
            } else {
                0
            }
        }
    }

    /// The naturally aligned `bytes`-wide field at `offset` (userspace checked it fits).
    #[inline(always)]
    fn field(&self, offset: &u32, bytes: u32) -> Result<u64, i64> {
        let offset = config(offset);
        // SAFETY: `load` wrote every word.
        let words = unsafe { self.0.assume_init_ref() };
        let word = *words.get(offset / 8).ok_or(-1i64)?;
        let shifted = word >> ((offset % 8) * 8);
        Ok(match bytes {
            8 => shifted,
            _ => shifted & ((1u64 << (bytes * 8)) - 1),
        })
    }

    #[inline(always)]
    fn u16(&self, offset: &u32) -> Result<u16, i64> {
        Ok(self.field(offset, 2)? as u16)
    }

    #[inline(always)]
    fn i32(&self, offset: &u32) -> Result<i32, i64> {
        Ok(self.field(offset, 4)? as u32 as i32)
    }

    #[inline(always)]
    fn u64(&self, offset: &u32) -> Result<u64, i64> {
        self.field(offset, 8)
    }
}

#[inline(always)]
fn count_drop(slot: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

/// An event stamped now on this CPU.
#[inline(always)]
fn event(kind: EventKind, tid: u32, tgid: u32, args: [u64; 4]) -> RawEvent {
    let mut event = core::mem::MaybeUninit::<RawEvent>::uninit();
    fill_event(&mut event, kind, tid, tgid, args);
    // SAFETY: filled.
    unsafe { event.assume_init() }
}

/// Writes an event stamped now into `event`, in place: see `event`.
#[inline(always)]
fn fill_event(
    event: &mut core::mem::MaybeUninit<RawEvent>,
    kind: EventKind,
    tid: u32,
    tgid: u32,
    args: [u64; 4],
) {
    let e = event.as_mut_ptr();
    // SAFETY: every field written once, with volatile stores: zero arguments written as one
    // run would be zeroed by a call of a byte-by-byte `memset` subprogram.
    unsafe {
        core::ptr::write_volatile(&raw mut (*e).ts_ns, now_ns());
        core::ptr::write_volatile(&raw mut (*e).kind, kind as u32);
        core::ptr::write_volatile(&raw mut (*e).tid, tid);
        core::ptr::write_volatile(&raw mut (*e).tgid, tgid);
        // A helper without arguments (unsafe only by its binding's signature).
        core::ptr::write_volatile(&raw mut (*e).cpu, bpf_get_smp_processor_id());
        for (i, arg) in args.iter().enumerate() {
            core::ptr::write_volatile(&raw mut (*e).args[i], *arg);
        }
    }
}

/// Writes one record (one event or a `CallPair`): gathered with this CPU's other events when
/// batching (see `StagedEvents`), else at once.
#[inline(always)]
fn write<T>(record: &T) {
    if !batching() || !stage(record) {
        output(record);
    }
}

/// Whether events are gathered per CPU: a constant of the frozen read-only data, so the
/// verifier drops the path not taken.
#[inline(always)]
fn batching() -> bool {
    config(&PROBE_CONFIG.batch) != 0
}

/// This CPU's staging slot.
#[inline(always)]
fn staged() -> Option<&'static mut StagedEvents> {
    // SAFETY: this CPU's slot. Programs on one CPU run one at a time except where an
    // interrupt's program interrupts one that runs with interrupts on (a syscall's): `busy`
    // makes that one write at once and leave the slot alone.
    STAGED.get_ptr_mut(0).map(|slot| unsafe { &mut *slot })
}

/// Adds a record's events to this CPU's staging slot, writing the slot out first when they do
/// not fit; false when the slot is busy (this program interrupted another using it).
#[inline(always)]
fn stage<T>(record: &T) -> bool {
    const EVENT: usize = core::mem::size_of::<RawEvent>();
    let Some(slot) = staged() else {
        return false;
    };
    // SAFETY: volatile accesses of this CPU's slot, so an interrupting program sees `busy`
    // set before the slot changes and cleared after.
    unsafe {
        if core::ptr::read_volatile(&raw const slot.busy) != 0 {
            return false;
        }
        core::ptr::write_volatile(&raw mut slot.busy, 1);
    }
    // Every access to the slot is volatile, so none moves outside `busy` (volatile orders only
    // volatile accesses; BPF has no compiler fence).
    let n = core::mem::size_of::<T>() / EVENT;
    if staged_count(slot) + n > STAGED_EVENTS {
        flush_staged(slot);
    }
    let at = staged_count(slot);
    // SAFETY: T is RawEvent or CallPair: n whole RawEvents.
    let events = unsafe { core::slice::from_raw_parts(record as *const T as *const RawEvent, n) };
    for (i, event) in events.iter().enumerate() {
        // Masked (a no-op: at + n fits) so the verifier sees the index bounded.
        if let Some(to) = slot.events.get_mut((at + i) & (STAGED_EVENTS - 1)) {
            copy_event(to, event);
        }
    }
    set_staged_count(slot, at + n);
    if at + n >= STAGED_EVENTS {
        flush_staged(slot);
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut slot.busy, 0) };
    true
}

/// `*to = *from` as seven word copies: a plain assignment to a slot at a variable index
/// compiles to a call of a byte-by-byte `memmove` (~450 instructions per event).
#[inline(always)]
fn copy_event(to: &mut RawEvent, from: &RawEvent) {
    const WORDS: usize = core::mem::size_of::<RawEvent>() / 8;
    let to = (to as *mut RawEvent).cast::<u64>();
    let from = (from as *const RawEvent).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: RawEvent is WORDS 8-aligned u64 words (size and alignment asserted in
        // gil-trace-common); volatile so the compiler keeps them word copies.
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
    }
}

/// The slot's event count (volatile, like every access of the slot: see `stage`).
#[inline(always)]
fn staged_count(slot: &StagedEvents) -> usize {
    // SAFETY: a field of a map value.
    unsafe { core::ptr::read_volatile(&raw const slot.count) as usize }
}

#[inline(always)]
fn set_staged_count(slot: &mut StagedEvents, count: usize) {
    // SAFETY: a field of a map value.
    unsafe { core::ptr::write_volatile(&raw mut slot.count, count as u32) };
}

/// Writes a staging slot's events to the ring buffer as one record (counted as dropped when
/// it is full) and empties the slot. The caller holds the slot (`busy`) or runs with
/// interrupts off.
#[inline(always)]
fn flush_staged(slot: &mut StagedEvents) {
    let count = staged_count(slot);
    set_staged_count(slot, 0);
    if count == 0 || count > STAGED_EVENTS {
        return;
    }
    if EVENTS
        .output::<[RawEvent]>(&slot.events[..count], BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        // Indexed up to a constant: a loop the verifier can bound.
        for i in 0..STAGED_EVENTS {
            if i >= count {
                break;
            }
            count_drop(slot.events[i].kind);
        }
    }
}

/// Writes this CPU's staged events out unless a program it interrupted holds them (then that
/// program, or the next trigger, does).
#[inline(always)]
fn flush_staged_if_free() {
    let Some(slot) = staged() else {
        return;
    };
    // SAFETY: as in `stage`.
    unsafe {
        if staged_count(slot) == 0 || core::ptr::read_volatile(&raw const slot.busy) != 0 {
            return;
        }
        core::ptr::write_volatile(&raw mut slot.busy, 1);
        flush_staged(slot);
        core::ptr::write_volatile(&raw mut slot.busy, 0);
    }
}

/// Writes one record to the ring buffer now; counts its events as dropped when it is full.
/// One helper call (`bpf_ringbuf_output`) instead of reserve + query + submit: on kernels with
/// return-thunk mitigations every helper call is expensive. No wakeup: the reader drains on a
/// 10 ms timer.
#[inline(always)]
fn output<T>(record: &T) {
    if EVENTS.output::<T>(record, BPF_RB_NO_WAKEUP as u64).is_err() {
        // SAFETY: T is RawEvent or CallPair, both starting with a RawEvent.
        let first = unsafe { &*(record as *const T as *const RawEvent) };
        count_drop(first.kind);
        if core::mem::size_of::<T>() == core::mem::size_of::<CallPair>() {
            // SAFETY: T is CallPair (checked by its size).
            count_drop(
                unsafe { &*(record as *const T as *const CallPair) }
                    .exit
                    .kind,
            );
        }
    }
}

/// Writes one event stamped now.
#[inline(always)]
fn emit(kind: EventKind, tid: u32, tgid: u32, args: [u64; 4]) {
    // Built in place: returned by value, its zero arguments would be copied by a `memset`.
    let mut event = core::mem::MaybeUninit::<RawEvent>::uninit();
    fill_event(&mut event, kind, tid, tgid, args);
    // SAFETY: filled.
    let event = unsafe { event.assume_init_ref() };
    if tid == 0 {
        // An interrupt on an idle CPU (a timer or packet waking a traced thread): this CPU may
        // stay idle, with no tick and no switch to write a gathered event out, for seconds.
        output(event);
    } else {
        write(event);
    }
}

/// The current task's user stack as an event's reference (`stack_ref`; 0 when off or not
/// stored). Frame-pointer unwinding: code built without frame pointers gives short or wrong
/// chains, which userspace checks before it names a frame. `user_regs`: the task's saved
/// user registers where the program has them as a trusted pointer (else asked for).
#[inline(always)]
fn user_stack<C: StackIdContext>(ctx: &C, user_regs: Option<*const u64>) -> u64 {
    if user_stacks_mode() == UserStacks::None as u32 {
        return 0;
    }
    if config(&PROBE_CONFIG.stack_walker) == StackWalker::FramePointers as usize {
        return walked_user_stack(user_regs).map_or(0, stack_ref::of);
    }
    match ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
        Ok(id) => stack_ref::of(id as u32),
        // -EFAULT: no user stack to read (a kernel thread, an unmapped frame pointer): not a
        // loss. -EEXIST (the bucket holds another stack) and -ENOMEM are.
        Err(-14) => 0,
        Err(_) => {
            count_drop(DROP_SLOT_STACKS);
            0
        }
    }
}

/// Walks the current task's user stack by its frame pointers and stores it in
/// `WALKED_STACKS` (unless there already): its id, or `None` when there is no user stack or no
/// slot for it (counted).
#[inline(always)]
fn walked_user_stack(user_regs: Option<*const u64>) -> Option<u32> {
    let walked = walk_user_stack(user_regs)?;
    let hash = walked.hash;
    let mut index = hash as u32 & (STACK_MAP_ENTRIES - 1);
    for _ in 0..STACK_PROBES {
        let slot = WALKED_STACKS.get_ptr_mut(index)?;
        // SAFETY: a map value's first word, 8-aligned: one load (written once, after the
        // frames, by the CPU that claimed the slot).
        let seen = unsafe { core::ptr::read_volatile(&raw const (*slot).hash) };
        if seen == hash {
            return Some(index);
        }
        if seen == 0
            && WALKED_STACK_CLAIMS
                .insert(index, hash, BPF_NOEXIST.into())
                .is_ok()
        {
            // SAFETY: this slot is ours: no other claim of it succeeds.
            let slot = unsafe { &mut *slot };
            // Volatile stores, so the compiler keeps them in this order: the frames before
            // the hash, so a slot whose hash matches is complete (userspace reads a slot only
            // after an event naming it, and checks the hash again).
            // SAFETY: stores within this map value.
            unsafe {
                core::ptr::write_volatile(&raw mut slot.len, walked.len);
                for i in 0..MAX_STACK_DEPTH {
                    if i as u64 >= walked.len {
                        break;
                    }
                    core::ptr::write_volatile(&raw mut slot.ips[i], walked.ips[i]);
                }
                core::ptr::write_volatile(&raw mut slot.hash, hash);
            }
            return Some(index);
        }
        // Another stack's, or being filled by another CPU (maybe with this very stack: it then
        // has two ids, which name the same code): probe on.
        index = (index + 1) & (STACK_MAP_ENTRIES - 1);
    }
    count_drop(DROP_SLOT_STACKS);
    None
}

/// The current task's user stack, walked into this CPU's scratch slot with its hash: the
/// interrupted user instruction, then the return address of each frame record found through
/// the frame pointers. A frame pointer must be non-null, 8-aligned and above the stack pointer
/// and the frame before it (callers' frames lie higher): the walk stops there, without the
/// read that would fault (the kernel's walker reads on until one does, ~1 µs here).
#[inline(always)]
fn walk_user_stack(user_regs: Option<*const u64>) -> Option<&'static WalkedStack> {
    // SAFETY: helpers on the current task; bpf_task_pt_regs returns its saved user registers
    // (a trusted pointer the verifier checks each load against).
    let regs = user_regs
        .unwrap_or_else(|| unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64);
    // SAFETY: loads within struct pt_regs, checked by the verifier against its BTF.
    let (ip, fp, sp) = unsafe {
        (
            core::ptr::read_volatile(regs.add(regs::IP)),
            core::ptr::read_volatile(regs.add(regs::FP)),
            core::ptr::read_volatile(regs.add(regs::SP)),
        )
    };
    if ip == 0 {
        // A kernel thread: no user stack.
        return None;
    }
    // SAFETY: this CPU's slot; programs on one CPU do not nest (see call_in_flight).
    let walked = unsafe { &mut *STACK_SCRATCH.get_ptr_mut(0)? };
    walked.ips[0] = ip;
    // The count and hash so far live in the map value, where the verifier does not track
    // their values: so it checks the callback below as a whole, in a few passes, instead of
    // once per turn with the count as a constant (a bounded loop's 126 turns added 0.27 s of
    // kernel time to loading the programs; a count on the stack, over 2 s).
    walked.len = 1;
    walked.hash = stack_hash::step(stack_hash::SEED, ip);
    let mut walk = Walk {
        fp,
        lowest: sp,
        window_at: 0,
    };
    // SAFETY: the callback is this file's walk_frame; its context is `walk`, on this stack.
    unsafe {
        bpf_loop(
            (MAX_STACK_DEPTH - 1) as u32,
            walk_frame as *mut core::ffi::c_void,
            (&raw mut walk).cast(),
            0,
        )
    };
    walked.hash = stack_hash::finish(walked.hash, walked.len);
    Some(walked)
}

/// Where a user stack walk is, between two frames.
#[repr(C)]
struct Walk {
    /// The next frame record's address.
    fp: u64,
    /// The lowest address it may have (above the stack pointer and the frame before).
    lowest: u64,
    /// The user address of the window of stack read last (0: none).
    window_at: u64,
}

/// Bytes of user stack read at once.
const WINDOW_BYTES: u64 = (STACK_WINDOW_WORDS * 8) as u64;

/// The bpf_loop callback of the walk: one more frame (0), or the end of the stack (1).
#[inline(never)]
extern "C" fn walk_frame(_index: u64, walk: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes the `Walk` walk_user_stack gave it.
    let walk = unsafe { &mut *walk.cast::<Walk>() };
    match next_frame(walk) {
        Some(()) => 0,
        None => 1,
    }
}

/// Reads the frame record at `walk.fp` (from the window when it holds it) and adds its return
/// address to this CPU's `STACK_SCRATCH` (its length and hash too). A frame pointer must be non-null, 8-aligned and not below
/// `walk.lowest`: else the stack ends here.
#[inline(always)]
fn next_frame(walk: &mut Walk) -> Option<()> {
    let fp = walk.fp;
    if fp == 0 || !fp.is_multiple_of(8) || fp < walk.lowest {
        return None;
    }
    // SAFETY: this CPU's slots (see walk_user_stack).
    let walked = unsafe { &mut *STACK_SCRATCH.get_ptr_mut(0)? };
    let len = walked.len as usize;
    // SAFETY: as above.
    let window = unsafe { &mut *STACK_WINDOW.get_ptr_mut(0)? };
    let offset = fp.wrapping_sub(walk.window_at);
    let (next, ret) = if offset <= WINDOW_BYTES - 16 {
        // In the window read before: no helper call.
        let word = (offset / 8) as usize;
        (*window.get(word)?, *window.get(word + 1)?)
    } else if read_user(window.as_mut_ptr().cast(), WINDOW_BYTES as u32, fp) {
        walk.window_at = fp;
        (window[0], window[1])
    } else {
        // The window runs past the stack's mapping (its top): this frame alone.
        walk.window_at = 0;
        // Uninitialized: the helper fills it (zeroes it when it fails), and `[0; 2]` would be a
        // `memset` call.
        let mut record = core::mem::MaybeUninit::<[u64; 2]>::uninit();
        if !read_user(record.as_mut_ptr().cast(), 16, fp) {
            return None;
        }
        // SAFETY: read.
        let record = unsafe { record.assume_init() };
        (record[0], record[1])
    };
    *walked.ips.get_mut(len)? = ret;
    walked.hash = stack_hash::step(walked.hash, ret);
    walked.len = len as u64 + 1;
    walk.lowest = fp + 16;
    walk.fp = next;
    Some(())
}

/// Copies `len` bytes of the current task's memory at `from`; false if any is unreadable.
#[inline(always)]
fn read_user(to: *mut core::ffi::c_void, len: u32, from: u64) -> bool {
    // SAFETY: bpf_probe_read_user fails with an error on a bad address, never faults the
    // program; the verifier checks `to` has `len` bytes.
    unsafe { bpf_probe_read_user(to, len, from as *const core::ffi::c_void) == 0 }
}

#[inline(always)]
fn current() -> (u32, u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid as u32, (pid_tgid >> 32) as u32)
}

#[inline(always)]
fn comm_args(comm: &[u8; 16], source: CommSource) -> [u64; 4] {
    let [lo, hi] = comm_to_args(comm);
    [lo, hi, source as u64, 0]
}

// ---------------------------------------------------------------------------------------------
// sched

#[tracepoint]
pub fn sched_sched_switch(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sched_sched_switch(&ctx);
    0
}

fn try_sched_sched_switch(ctx: &TracePointContext) -> Result<u32, i64> {
    let c = probe_config();
    // The hottest program (every context switch on the machine): no helper call to read.
    let mut record = Record::new();
    record.load::<SCHED_SWITCH_LOAD_LEN>(ctx);
    let prev = record.i32(&c.sched_switch_prev_pid)? as u32;
    let next = record.i32(&c.sched_switch_next_pid)? as u32;
    record_switch(ctx, &record, prev, next)?;
    // A CPU going idle writes out what it gathered (it may have no tick while idle). Interrupts
    // are off here, so no program holds the slot.
    if batching() && next == 0 {
        flush_staged_if_free();
    }
    Ok(0)
}

#[inline(always)]
fn record_switch(
    ctx: &TracePointContext,
    record: &Record,
    prev: u32,
    next: u32,
) -> Result<(), i64> {
    let c = probe_config();
    let prev_traced = is_traced(prev);
    let next_traced = is_traced(next);
    if !prev_traced && !next_traced {
        return Ok(());
    }
    // A traced task leaving inside a syscall: its entry is written now, with the switch (one
    // ring record for both, below), unless it was written at entry.
    let mut in_futex = false;
    let mut entry_waiting = None;
    if prev_traced {
        if let Some(slot) = call_in_flight() {
            if slot.pair.enter.tid == prev {
                in_futex = slot.pair.enter.kind == EventKind::FutexEnter as u32;
                if slot.entry_written == 0 {
                    entry_waiting = Some(slot);
                } else {
                    slot.pair.enter.tid = 0;
                }
            }
        }
    }
    // prev_state is a long on some kernels and an unsigned int on others: userspace gives
    // its width in the config.
    let prev_state = record.field(
        &c.sched_switch_prev_state,
        config(&c.sched_switch_prev_state_size) as u32,
    )? as i64;
    let next_prio = record.i32(&c.sched_switch_next_prio)?;
    let (_, tgid) = current();
    // A traced task that blocks (any state bit; preempted is TASK_RUNNING, 0, maybe with the
    // kernel's preempted marker above the state bits): the code it blocked in.
    let wanted = match user_stacks_mode() {
        m if m == UserStacks::All as u32 => prev_traced,
        m if m == UserStacks::Locks as u32 => in_futex,
        _ => false,
    };
    // Walked here, once the thread is queued on what it waits for, not at the call's entry:
    // a walk at entry delays the waiter's queueing, which changed who won the lab's new GIL
    // (the convoy echo's lock waits doubled; docs/performance.md).
    let stack = if wanted && prev_state & 0xff != 0 {
        user_stack(ctx, None)
    } else {
        0
    };
    let switch = event(
        EventKind::SchedSwitch,
        prev,
        tgid,
        [
            next as u64,
            prev_state as u64,
            next_prio as u64,
            prev_traced as u64 | (next_traced as u64) << 1 | stack << stack_ref::SCHED_SWITCH_SHIFT,
        ],
    );
    match entry_waiting {
        // The call's entry and this switch as one record (one ring write instead of two: a
        // thread blocking in a futex wait or a recv does this every time).
        Some(slot) => {
            slot.pair.exit = switch;
            write(&slot.pair);
            slot.pair.enter.tid = 0;
        }
        None => write(&switch),
    }
    Ok(())
}

/// Every timer interrupt (the tick among them): a busy CPU writes out the events it gathered,
/// so none waits longer than a tick (see `StagedEvents`).
#[tracepoint]
pub fn timer_hrtimer_expire_entry(_ctx: TracePointContext) -> u32 {
    if dispatch_only() || !batching() {
        return 0;
    }
    flush_staged_if_free();
    0
}

/// `sched_waking` rather than `sched_wakeup`: it always runs in the waker's context, so the
/// current task *is* the waker (`sched_wakeup` may run on the target CPU from an IPI).
#[tracepoint]
pub fn sched_sched_waking(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sched_sched_waking(&ctx);
    0
}

fn try_sched_sched_waking(ctx: &TracePointContext) -> Result<u32, i64> {
    let c = probe_config();
    // Every wakeup on the machine comes here: no helper call before the filter.
    let mut record = Record::new();
    record.load::<SCHED_WAKING_LOAD_LEN>(ctx);
    let wakee = record.i32(&c.sched_waking_pid)? as u32;
    if !is_traced(wakee) {
        return Ok(0);
    }
    let target_cpu = record.i32(&c.sched_waking_target_cpu)?;
    let (tid, tgid) = current();
    emit(
        EventKind::SchedWaking,
        tid,
        tgid,
        [wakee as u64, target_cpu as u64, 0, 0],
    );
    Ok(0)
}

/// A traced task's new thread or child process is traced too.
#[tracepoint]
pub fn sched_sched_process_fork(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sched_sched_process_fork(&ctx);
    0
}

fn try_sched_sched_process_fork(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    let child: i32 = record_field(ctx, config(&probe_config().fork_child_pid))?;
    let child = child as u32;
    // The child's tgid is not in the tracepoint; events from the child carry it.
    if !set_traced(child, true) {
        count_drop(DROP_SLOT_FILTER_FULL);
    }
    emit(EventKind::ProcessFork, tid, tgid, [child as u64, 0, 0, 0]);
    Ok(0)
}

#[tracepoint]
pub fn sched_sched_process_exit(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sched_sched_process_exit(&ctx);
    0
}

fn try_sched_sched_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    // Offset 0 means this kernel's tracepoint has no group_dead field.
    let offset = config(&probe_config().exit_group_dead);
    let group_dead: u8 = if offset == 0 {
        0
    } else {
        record_field(ctx, offset)?
    };
    emit(
        EventKind::ProcessExit,
        tid,
        tgid,
        [group_dead as u64, 0, 0, 0],
    );
    // The exiting task still runs (and switches out) after this; its final sched_switch is
    // caught through the next task or lost — harmless, it is the end of its timeline.
    set_traced(tid, false);
    Ok(0)
}

#[tracepoint]
pub fn sched_sched_process_exec(_ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let (tid, tgid) = current();
    if is_traced(tid) {
        if let Ok(comm) = bpf_get_current_comm() {
            emit(
                EventKind::Comm,
                tid,
                tgid,
                comm_args(&comm, CommSource::Exec),
            );
        }
    }
    0
}

#[tracepoint]
pub fn task_task_rename(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_task_task_rename(&ctx);
    0
}

fn try_task_task_rename(ctx: &TracePointContext) -> Result<u32, i64> {
    let c = probe_config();
    let renamed: i32 = record_field(ctx, config(&c.rename_pid))?;
    let renamed = renamed as u32;
    if !is_traced(renamed) {
        return Ok(0);
    }
    let comm: [u8; 16] = record_field(ctx, config(&c.rename_newcomm))?;
    let (_, tgid) = current();
    emit(
        EventKind::Comm,
        renamed,
        tgid,
        comm_args(&comm, CommSource::Rename),
    );
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// syscalls: BPF raw tracepoints on sys_enter/sys_exit. They run for every syscall on the host,
// but a raw tracepoint hands the program the tracepoint's arguments directly (no trace record
// is built), so an untraced syscall costs one inlined array lookup; the per-syscall
// `syscalls:*` tracepoints would need ~40 perf attachments, each detached with an RCU wait.
// Classified through SYSCALL_CLASS by number; arguments are read from the saved user
// registers (`struct pt_regs`, whose layout is per architecture).

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("gil-trace's syscall programs know the pt_regs layout of x86_64 and aarch64 only");

#[cfg(bpf_target_arch = "x86_64")]
mod regs {
    /// Words of `struct pt_regs` read: up to orig_ax.
    pub const WORDS: usize = 16;
    /// di, si, dx, r10, r8, r9: the syscall arguments, in order.
    pub const ARGS: [usize; 6] = [14, 13, 12, 7, 9, 8];
    /// orig_ax: the syscall number.
    pub const NR: usize = 15;
    /// bp, ip, sp: the frame pointer, instruction pointer and stack pointer.
    pub const FP: usize = 4;
    pub const IP: usize = 16;
    pub const SP: usize = 19;
}

#[cfg(bpf_target_arch = "aarch64")]
mod regs {
    /// Words of `struct pt_regs` read: x0..x8.
    pub const WORDS: usize = 9;
    /// x0..x5 (x0 still holds the first argument at sys_enter).
    pub const ARGS: [usize; 6] = [0, 1, 2, 3, 4, 5];
    /// x8: the syscall number.
    pub const NR: usize = 8;
    /// x29 (the frame pointer), pc, sp.
    pub const FP: usize = 29;
    pub const IP: usize = 32;
    pub const SP: usize = 31;
}

#[inline(always)]
fn syscall_class(nr: i64) -> Option<SyscallClass> {
    if nr < 0 || nr >= SYSCALL_TABLE_LEN as i64 {
        return None;
    }
    let raw = *SYSCALL_CLASS.get(nr as u32)?;
    SyscallClass::try_from(raw).ok()
}

// The syscall programs come twice: as BTF-typed raw tracepoints (`tp_btf`), where the saved
// registers are a typed kernel pointer the program may load from directly, and as plain raw
// tracepoints, which must copy them with `bpf_probe_read_kernel` (a helper call per event:
// costly with return-thunk mitigations). Userspace loads the first where the kernel has BTF.

#[btf_tracepoint(function = "sys_enter")]
pub fn btf_syscalls_sys_enter(ctx: BtfTracePointContext) -> i32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_btf_syscalls_sys_enter(&ctx);
    0
}

fn try_btf_syscalls_sys_enter(ctx: &BtfTracePointContext) -> Result<u32, i64> {
    // sys_enter(struct pt_regs *regs, long id): `regs` is trusted (PTR_TO_BTF_ID), so each
    // argument is one load, checked by the verifier against the kernel's pt_regs.
    let regs: *const u64 = ctx.arg(0);
    let nr: i64 = ctx.arg(1);
    // Classified first: most syscalls of the machine are none of ours, and the number costs
    // no helper call (asking who is current does).
    let Some(class) = syscall_class(nr) else {
        return Ok(0);
    };
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    sys_enter(tid, tgid, nr, class, |i| {
        // SAFETY: a trusted pt_regs pointer; the verifier checks the load against its type.
        Ok(unsafe { core::ptr::read_volatile(regs.add(regs::ARGS[i])) })
    })
}

#[btf_tracepoint(function = "sys_exit")]
pub fn btf_syscalls_sys_exit(ctx: BtfTracePointContext) -> i32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_btf_syscalls_sys_exit(&ctx);
    0
}

fn try_btf_syscalls_sys_exit(ctx: &BtfTracePointContext) -> Result<u32, i64> {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: a trusted pt_regs pointer; the verifier checks the load against its type.
    let nr = unsafe { core::ptr::read_volatile(regs.add(regs::NR)) } as i64;
    // Classified first, as at entry.
    let Some(class) = syscall_class(nr) else {
        return Ok(0);
    };
    // Asked, not inferred from the CPU's slot: a slot can hold a dead thread's entry (its
    // switch out was not seen), whose saved-registers address a new task may now have.
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    sys_exit(ctx, tid, tgid, nr, class, ctx.arg(1), Some(regs))
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_syscalls_sys_enter(ctx: RawTracePointContext) -> i32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_raw_syscalls_sys_enter(&ctx);
    0
}

fn try_raw_syscalls_sys_enter(ctx: &RawTracePointContext) -> Result<u32, i64> {
    // sys_enter(struct pt_regs *regs, long id)
    let nr: i64 = ctx.arg(1);
    // Classified first: other syscalls cost no helper call.
    let Some(class) = syscall_class(nr) else {
        return Ok(0);
    };
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    let regs_ptr: u64 = ctx.arg(0);
    // SAFETY: bpf_probe_read_kernel fails with an error on a bad address, never faults.
    let regs = unsafe { bpf_probe_read_kernel(regs_ptr as *const [u64; regs::WORDS])? };
    sys_enter(tid, tgid, nr, class, |i| Ok(regs[regs::ARGS[i]]))
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_syscalls_sys_exit(ctx: RawTracePointContext) -> i32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_raw_syscalls_sys_exit(&ctx);
    0
}

fn try_raw_syscalls_sys_exit(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    // sys_exit(struct pt_regs *regs, long ret)
    let regs_ptr: u64 = ctx.arg(0);
    let nr_ptr = (regs_ptr as *const u64).wrapping_add(regs::NR);
    // SAFETY: bpf_probe_read_kernel fails with an error on a bad address, never faults.
    let nr = unsafe { bpf_probe_read_kernel(nr_ptr)? } as i64;
    let Some(class) = syscall_class(nr) else {
        return Ok(0);
    };
    sys_exit(ctx, tid, tgid, nr, class, ctx.arg(1), None)
}

/// A traced thread entered syscall `nr` (of `class`); `arg(i)` gives its i-th argument. The
/// entry waits in this CPU's slot for the exit (or a switch) to write it.
#[inline(always)]
fn sys_enter(
    tid: u32,
    tgid: u32,
    nr: i64,
    class: SyscallClass,
    arg: impl Fn(usize) -> Result<u64, i64>,
) -> Result<u32, i64> {
    let Some(slot) = call_in_flight() else {
        return Ok(0);
    };
    if slot.pair.enter.tid != 0 {
        // Left by a task that stopped being traced inside its call (it exited): kept.
        flush_entry(slot);
    }
    slot.pair.enter = entry(tid, tgid, nr, class, arg)?;
    slot.entry_written = split_calls() as u64;
    if split_calls() {
        write(&slot.pair.enter);
    }
    Ok(0)
}

/// The entry event of syscall `nr` (of `class`).
#[inline(always)]
fn entry(
    tid: u32,
    tgid: u32,
    nr: i64,
    class: SyscallClass,
    arg: impl Fn(usize) -> Result<u64, i64>,
) -> Result<RawEvent, i64> {
    Ok(match class {
        SyscallClass::Recv | SyscallClass::Send | SyscallClass::Poll => {
            let kind = match class {
                SyscallClass::Recv => EventKind::RecvEnter,
                SyscallClass::Send => EventKind::SendEnter,
                _ => EventKind::PollEnter,
            };
            event(kind, tid, tgid, [nr as u64, arg(0)?, arg(2)?, 0])
        }
        _ => {
            // futex(uaddr, op, val, timeout|val2, uaddr2, val3) and the 6.7+ family;
            // for futex_wait/futex_wake the word size flags sit where op is.
            let uaddr = arg(0)?;
            let (op, val, timeout, uaddr2, val3) = match class {
                SyscallClass::Futex => (arg(1)?, arg(2)?, arg(3)?, arg(4)?, arg(5)?),
                // futex_wake(uaddr, mask, nr, flags)
                SyscallClass::FutexWake => (arg(3)?, arg(2)?, 0, 0, arg(1)?),
                // futex_wait(uaddr, val, mask, flags, timeout, clockid)
                SyscallClass::FutexWait => (arg(3)?, arg(1)?, arg(4)?, 0, arg(2)?),
                // futex_waitv(waiters, nr, flags, timeout, clockid)
                SyscallClass::FutexWaitv => (arg(2)?, arg(1)?, arg(3)?, uaddr, 0),
                // futex_requeue(waiters, flags, nr_wake, nr_requeue)
                _ => (arg(1)?, arg(2)?, 0, uaddr, arg(3)?),
            };
            let has_timeout = (timeout != 0) as u64;
            event(
                EventKind::FutexEnter,
                tid,
                tgid,
                [
                    uaddr,
                    (op & 0xffff_ffff) | (val << 32),
                    uaddr2,
                    (val3 & 0xffff_ffff) | (has_timeout << 32) | ((class as u64) << 40),
                ],
            )
        }
    })
}

/// A traced thread returns `ret` from syscall `nr` (of `class`); `user_regs` as for
/// `user_stack`.
#[inline(always)]
fn sys_exit<C: StackIdContext>(
    ctx: &C,
    tid: u32,
    tgid: u32,
    nr: i64,
    class: SyscallClass,
    ret: i64,
    user_regs: Option<*const u64>,
) -> Result<u32, i64> {
    let (kind, detail, stack) = match class {
        SyscallClass::Recv => (EventKind::RecvExit, nr as u64, 0),
        SyscallClass::Send => (EventKind::SendExit, nr as u64, 0),
        SyscallClass::Poll => (EventKind::PollExit, nr as u64, 0),
        // A futex call that woke (or requeued) someone: the releasing side of a handoff.
        // (Waits return 0; futex_waitv returns the index of the word that woke it.)
        SyscallClass::Futex | SyscallClass::FutexWake | SyscallClass::FutexRequeue if ret > 0 => (
            EventKind::FutexExit,
            class as u64,
            user_stack(ctx, user_regs),
        ),
        _ => (EventKind::FutexExit, class as u64, 0),
    };
    let exit = event(kind, tid, tgid, [ret as u64, detail, stack, 0]);
    match call_in_flight() {
        // Entered on this CPU and never left it: one record for both.
        Some(slot) if slot.pair.enter.tid == tid && entry_of(&slot.pair.enter, &exit) => {
            if slot.entry_written == 0 {
                slot.pair.exit = exit;
                write(&slot.pair);
            } else {
                write(&exit);
            }
            slot.pair.enter.tid = 0;
        }
        // This thread's entry of another call: its switch out was not seen (the kernel skips
        // a tracepoint program while a BPF map syscall runs on that CPU). Written as it is.
        Some(slot) if slot.pair.enter.tid == tid => {
            flush_entry(slot);
            write(&exit);
        }
        _ => write(&exit),
    }
    Ok(0)
}

/// Whether `enter` is the entry of the call `exit` returns from: the matching kind, and the
/// same syscall number (I/O) or futex class.
#[inline(always)]
fn entry_of(enter: &RawEvent, exit: &RawEvent) -> bool {
    enter.kind + 1 == exit.kind
        && if exit.kind == EventKind::FutexExit as u32 {
            (enter.args[3] >> 40) & 0xff == exit.args[1]
        } else {
            enter.args[0] == exit.args[1]
        }
}

// ---------------------------------------------------------------------------------------------
// UDP receive: a datagram's arrival at its socket (`sk_data_ready`, in the delivering context)
// is joined with the traced thread that takes it (`sock_recv_length`, in the receiver's
// context) through a per-socket FIFO: UDP sockets hand out datagrams in arrival order.

const MSG_PEEK: i32 = 2;

#[tracepoint]
pub fn sock_sk_data_ready(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sock_sk_data_ready(&ctx);
    0
}

fn try_sock_sk_data_ready(ctx: &TracePointContext) -> Result<u32, i64> {
    let c = probe_config();
    let mut record = Record::new();
    record.load::<SK_DATA_READY_LOAD_LEN>(ctx);
    if record.u16(&c.sk_data_ready_protocol)? != IPPROTO_UDP {
        return Ok(0);
    }
    let sk = record.u64(&c.sk_data_ready_skaddr)?;
    let now = now_ns();
    let queue = match SOCKET_ARRIVALS.get_ptr_mut(sk) {
        Some(queue) => queue,
        None => {
            // Too large for the stack: inserted from a static, then filled in place.
            #[allow(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the queue would be built on the 512-byte BPF stack"
            )]
            let _ = SOCKET_ARRIVALS.insert(sk, &ArrivalQueue::EMPTY, 0);
            SOCKET_ARRIVALS.get_ptr_mut(sk).ok_or(-1i64)?
        }
    };
    // SAFETY: a map value pointer; concurrent deliveries to one socket on two CPUs may race
    // here, which at worst misattributes one arrival time.
    let queue = unsafe { &mut *queue };
    let queued = queue.tail.wrapping_sub(queue.head) as i32;
    if queued < 0 {
        // The receiver already took this datagram (it dequeued it between the enqueue and
        // this tracepoint) and used its own time: settle that, keep the FIFO aligned.
        queue.tail = queue.tail.wrapping_add(1);
    } else if queue.overflow > 0 || queued as usize >= ARRIVAL_QUEUE_LEN {
        // Behind datagrams whose times are not kept: counted, not timed.
        queue.overflow = queue.overflow.wrapping_add(1);
    } else {
        queue.ts[queue.tail as usize & (ARRIVAL_QUEUE_LEN - 1)] = now;
        queue.tail = queue.tail.wrapping_add(1);
    }
    Ok(0)
}

#[tracepoint]
pub fn sock_sock_recv_length(ctx: TracePointContext) -> u32 {
    if dispatch_only() {
        return 0;
    }
    let _ = try_sock_sock_recv_length(&ctx);
    0
}

fn try_sock_sock_recv_length(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tid, tgid) = current();
    if !is_traced(tid) {
        return Ok(0);
    }
    let c = probe_config();
    let mut record = Record::new();
    record.load::<SOCK_RECV_LENGTH_LOAD_LEN>(ctx);
    let protocol = record.u16(&c.recv_length_protocol)?;
    let ret = record.i32(&c.recv_length_ret)?;
    let flags = record.i32(&c.recv_length_flags)?;
    if protocol != IPPROTO_UDP || ret < 0 || flags & MSG_PEEK != 0 {
        return Ok(0);
    }
    let sk = record.u64(&c.recv_length_sk)?;
    let queue = match SOCKET_ARRIVALS.get_ptr_mut(sk) {
        Some(queue) => queue,
        None => {
            #[allow(
                clippy::needless_borrows_for_generic_args,
                reason = "by value, the queue would be built on the 512-byte BPF stack"
            )]
            let _ = SOCKET_ARRIVALS.insert(sk, &ArrivalQueue::EMPTY, 0);
            SOCKET_ARRIVALS.get_ptr_mut(sk).ok_or(-1i64)?
        }
    };
    // SAFETY: a map value pointer (see try_sock_sk_data_ready).
    let queue = unsafe { &mut *queue };
    let (arrival, lost) = if (queue.tail.wrapping_sub(queue.head) as i32) > 0 {
        let ts = queue.ts[queue.head as usize & (ARRIVAL_QUEUE_LEN - 1)];
        queue.head = queue.head.wrapping_add(1);
        (ts, 0)
    } else if queue.overflow > 0 {
        // One of the datagrams queued while the times were full.
        queue.overflow -= 1;
        (0, NET_RECV_ARRIVAL_LOST)
    } else {
        // A datagram we took before its sk_data_ready ran on the delivering CPU (a nanosecond
        // race on the enqueue path): it arrived no later than now. Owe the pending push so
        // later datagrams keep their own times.
        queue.head = queue.head.wrapping_add(1);
        (now_ns(), 0)
    };
    let left = queue
        .tail
        .wrapping_sub(queue.head)
        .wrapping_add(queue.overflow);
    emit(
        EventKind::NetRecv,
        tid,
        tgid,
        [arrival, sk, ret as u64, u64::from(left) | lost],
    );
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
