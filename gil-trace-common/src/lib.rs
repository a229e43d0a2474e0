//! The ABI between the eBPF programs (`gil-trace-ebpf`) and userspace (`gil-trace`).
//!
//! Everything here is integer-only `#[repr(C)]` so both sides agree on the layout; kinds are
//! stable `u32` values (never transmute a raw value into [`EventKind`]: use `TryFrom`).
//! Changing a layout or a kind value is an ABI change: bump [`ABI_VERSION`].
#![no_std]

/// Bumped whenever [`RawEvent`], [`EventKind`] or [`ProbeConfig`] change meaning.
/// 2: [`EventKind::NetRecv`] flags a lost arrival time ([`NET_RECV_ARRIVAL_LOST`]).
/// 3: user stack ids in [`EventKind::SchedSwitch`] (a blocking switch) and
/// [`EventKind::FutexExit`] (a wake that woke someone), see [`stack_ref`].
/// 4: [`EventKind::PySample`] (written by the recorder).
/// 5: [`ProbeConfig::stack_walker`]: stack ids may index the walked stacks' table.
/// 6: [`ProbeConfig::batch`]: a ring record may hold up to [`STAGED_EVENTS`] events.
/// 7: [`CallInFlight`] without the stack of a wait taken at its entry (lock-wait stacks are
///    walked in `sched_switch` again).
pub const ABI_VERSION: u32 = 7;

/// Length of a kernel task name (`TASK_COMM_LEN`).
pub const TASK_COMM_LEN: usize = 16;

/// Number of slots in the per-CPU drop counter array: one per [`EventKind`] value plus
/// [`DROP_SLOT_FILTER_FULL`] and [`DROP_SLOT_STACKS`].
pub const DROP_SLOTS: u32 = 18;

/// Drop slot counting user stacks that could not be stored (the stack map was full, or its
/// bucket held another stack): the event is kept, without its stack.
pub const DROP_SLOT_STACKS: u32 = 17;

/// Entries of the in-kernel table of user stacks (either walker's; each up to
/// [`MAX_STACK_DEPTH`] frames, 1 KiB). Bounded: a stack that does not fit is counted in
/// [`DROP_SLOT_STACKS`]. A power of two (the walked stacks' table masks a hash with it).
pub const STACK_MAP_ENTRIES: u32 = 16_384;

/// Frames kept of a user stack, innermost first (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// Slots a walked stack may take in its table, from its hash's own slot on (linear probing;
/// a stack finding them all taken by others is counted in [`DROP_SLOT_STACKS`]).
pub const STACK_PROBES: u32 = 4;

/// Who walks the user stacks (`ProbeConfig::stack_walker`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackWalker {
    /// The kernel's `bpf_get_stackid` into a stack-trace map. Its frame-pointer walk reads
    /// frames until a read faults, so every walk ends in a page-fault exception (at the
    /// outermost frame's null frame pointer): ~1 µs on a VM.
    Kernel = 0,
    /// The programs follow the frame pointers themselves (`bpf_probe_read_user`, one frame
    /// record per read) and stop where a frame pointer cannot be one (null, misaligned, or not
    /// above the frame before it), so a walk normally ends without a fault. Needs kernel BTF
    /// (the current task's saved user registers, `bpf_task_pt_regs`). Stacks are kept in a
    /// hash-addressed table of [`WalkedStack`]s.
    FramePointers = 1,
}

/// One user stack walked by the programs: a slot of the walked stacks' table, whose index is
/// the stack's id. `hash` is [`stack_hash::of`] the frames, written last (0: an empty slot, or
/// one still being filled by the CPU that claimed it in `WALKED_STACK_CLAIMS`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkedStack {
    pub hash: u64,
    pub len: u64,
    pub ips: [u64; MAX_STACK_DEPTH],
}

const _: () = assert!(core::mem::size_of::<WalkedStack>() == 16 + 8 * MAX_STACK_DEPTH);

/// The 64-bit hash that identifies a walked stack in its table (the programs compute it frame
/// by frame as they walk; userspace checks each stack it reads against it). Two different
/// stacks of one recording share a hash with a probability of ~n²/2⁶⁵ (n distinct stacks).
pub mod stack_hash {
    /// The hash before any frame.
    pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    /// Reserved: a hash never takes this value, nor 0 (an empty slot).
    pub const CLAIMED: u64 = 1;

    /// The hash after one more frame: murmur3's 64-bit finalizer over the running hash and
    /// the frame (a few ALU instructions, cheap beside the read of the frame).
    #[inline(always)]
    pub const fn step(hash: u64, ip: u64) -> u64 {
        let mut x = hash ^ ip;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    /// The final hash of `len` frames, never 0 or [`CLAIMED`].
    #[inline(always)]
    pub const fn finish(hash: u64, len: u64) -> u64 {
        let hash = step(hash, len);
        if hash <= CLAIMED {
            hash + 2
        } else {
            hash
        }
    }

    /// The hash of a whole stack (userspace's check of a slot it reads).
    pub fn of(ips: &[u64]) -> u64 {
        finish(
            ips.iter().fold(SEED, |hash, &ip| step(hash, ip)),
            ips.len() as u64,
        )
    }
}

/// Which events carry a user stack (`ProbeConfig::user_stacks`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStacks {
    None = 0,
    /// Blocking switches inside a futex call (lock waits), and futex calls that woke someone
    /// (hand-overs).
    Locks = 1,
    /// Every blocking switch (also I/O waits and sleeps), and futex calls that woke someone.
    All = 2,
}

/// Where an event carries a user stack: the stack map id + 1 (0: none), in the high 32 bits
/// of `args[3]` of a [`EventKind::SchedSwitch`] in which the previous task blocked, and in
/// `args[2]` of a [`EventKind::FutexExit`] of a call that woke someone.
pub mod stack_ref {
    /// `args[3] >> SCHED_SWITCH_SHIFT` of a switch.
    pub const SCHED_SWITCH_SHIFT: u32 = 32;
    /// `args[FUTEX_EXIT_ARG]` of a futex exit.
    pub const FUTEX_EXIT_ARG: usize = 2;

    /// The stack map id in a stack reference (`None` for 0).
    #[inline(always)]
    pub const fn id(reference: u64) -> Option<u32> {
        match reference & 0xffff_ffff {
            0 => None,
            r => Some(r as u32 - 1),
        }
    }

    /// A stack map id as an event's reference.
    #[inline(always)]
    pub const fn of(id: u32) -> u64 {
        id as u64 + 1
    }
}

/// Drop slot counting threads that could not be added to the traced set because the
/// `TRACED_TIDS` map was full (their events are then missing, not just one event).
pub const DROP_SLOT_FILTER_FULL: u32 = 0;

/// Maximum number of threads traced at once (size of the in-kernel bookkeeping map).
pub const MAX_TRACED_THREADS: u32 = 32768;

/// Length of the in-kernel fast filter, an array indexed by tid; userspace sizes it to the
/// kernel's `pid_max` at load time (this is only the object file's placeholder).
pub const TRACED_FLAGS_DEFAULT_LEN: u32 = 32768;

/// Maximum number of UDP sockets whose queued-datagram arrival times are remembered (LRU).
pub const MAX_TRACKED_SOCKETS: u32 = 4096;

/// Arrival times remembered per socket (a power of two): as many small datagrams as a default
/// receive buffer (`net.core.rmem_default`, 208 KiB) holds. Datagrams queued beyond it are
/// counted, not timed: they are dequeued with [`NET_RECV_ARRIVAL_LOST`] set, and every other
/// datagram keeps its own time.
pub const ARRIVAL_QUEUE_LEN: usize = 256;

/// Set in `args[3]` of [`EventKind::NetRecv`] when the datagram's arrival time was not kept.
pub const NET_RECV_ARRIVAL_LOST: u64 = 1 << 32;

/// IPPROTO_UDP, as in the sock tracepoints' `protocol` field.
pub const IPPROTO_UDP: u16 = 17;

/// Per-socket FIFO of datagram arrival times: pushed at `sock:sk_data_ready`, popped when a
/// traced thread's `sock:sock_recv_length` says it took one datagram. Arrivals that find it
/// full are only counted (`overflow`), and so are all later ones until those are dequeued, so
/// the times kept stay in step with the socket's queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrivalQueue {
    pub head: u32,
    pub tail: u32,
    /// Datagrams queued behind the kept times, whose arrival times were not kept.
    pub overflow: u32,
    pub reserved: u32,
    pub ts: [u64; ARRIVAL_QUEUE_LEN],
}

impl ArrivalQueue {
    /// An empty queue.
    pub const EMPTY: ArrivalQueue = ArrivalQueue {
        head: 0,
        tail: 0,
        overflow: 0,
        reserved: 0,
        ts: [0; ARRIVAL_QUEUE_LEN],
    };
}

const _: () = assert!(ARRIVAL_QUEUE_LEN.is_power_of_two());

/// Size of the syscall classifier array (indexed by syscall number; every architecture's
/// numbers that gil-trace classifies are below this).
pub const SYSCALL_TABLE_LEN: u32 = 1024;

/// What a [`RawEvent`] describes. Values are stable: they are written into trace files.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `sched:sched_switch`. `tid`/`tgid` = previous task (current), `args[0]` = next tid,
    /// `args[1]` = prev_state, `args[2]` = next task's prio, `args[3]` = bit 0: previous task
    /// is traced, bit 1: next task is traced (the event is emitted when either is); when the
    /// traced previous task blocked, its user stack ([`stack_ref`]) in bits 32..64.
    SchedSwitch = 1,
    /// `sched:sched_waking`, in the waker's context. `tid`/`tgid` = waker (maybe untraced),
    /// `args[0]` = wakee tid (always traced), `args[1]` = target cpu.
    SchedWaking = 2,
    /// `sched:sched_process_fork`. `tid`/`tgid` = parent, `args[0]` = child tid.
    ProcessFork = 3,
    /// `sched:sched_process_exit`. `tid`/`tgid` = exiting task, `args[0]` = group_dead.
    ProcessExit = 4,
    /// A thread's name: `args[0..2]` hold the 16 comm bytes (little endian),
    /// `args[2]` = [`CommSource`].
    Comm = 5,
    /// Futex-family syscall entry. `args[0]` = uaddr, `args[1]` = op | val << 32,
    /// `args[2]` = uaddr2 (or the futex_waitv array), `args[3]` = val3 | has_timeout << 32 |
    /// syscall class << 40.
    FutexEnter = 6,
    /// Futex-family syscall exit. `args[0]` = return value (i64), `args[1]` = syscall class;
    /// when the call woke someone (a wake or requeue returning > 0), `args[2]` = the caller's
    /// user stack ([`stack_ref`]).
    FutexExit = 7,
    /// recv*/read-like syscall entry. `args[0]` = syscall nr, `args[1]` = fd, `args[2]` = len.
    RecvEnter = 8,
    /// recv* exit. `args[0]` = return value (i64), `args[1]` = syscall nr.
    RecvExit = 9,
    /// send* entry. Same layout as [`EventKind::RecvEnter`].
    SendEnter = 10,
    /// send* exit. Same layout as [`EventKind::RecvExit`].
    SendExit = 11,
    /// poll/select/epoll wait entry. `args[0]` = syscall nr, `args[1]` = first argument.
    PollEnter = 12,
    /// poll/select/epoll wait exit. `args[0]` = return value, `args[1]` = syscall nr.
    PollExit = 13,
    /// `sock:sock_recv_length` in a traced thread on a UDP socket: one datagram was received.
    /// `args[0]` = its arrival time at the socket (`sock:sk_data_ready`; 0 = not known),
    /// `args[1]` = socket address, `args[2]` = bytes received, `args[3]` = datagrams still
    /// queued on the socket (as far as arrivals were seen) in the low 32 bits, and
    /// [`NET_RECV_ARRIVAL_LOST`] when the arrival time was not kept.
    NetRecv = 14,
    /// Written by userspace, not the kernel: the kernel dropped `args[0]` events somewhere in
    /// [`args[1]`, `ts_ns`] (drop counters are polled every drain). `tid` = 0.
    Lost = 15,
    /// Written by userspace: a sample of a CPython thread's Python stack (read from the
    /// interpreter's memory, around `ts_ns`). `args[0]` = the stack's id in the trace's code
    /// block, `args[1]` = bit 0: it held the GIL, bit 1: it was active (not idle in a wait),
    /// `args[2]` = the sampling period in ns (the time a sample stands for).
    PySample = 16,
}

/// `args[1]` bits of [`EventKind::PySample`].
/// A Python sample's arguments: `args[0]` its stack, `args[1]` flags, `args[2]` the sampling
/// period (ns), `args[3]` how long the read took (ns; 0 in traces before it was kept): the
/// event's time is the read's start, and what it saw was read at some moment of that span.
pub mod py_sample {
    /// `args[0]` of a sample of a thread with no Python frame (e.g. not yet running Python).
    pub const NO_FRAMES: u64 = u32::MAX as u64;
    pub const OWNS_GIL: u64 = 1;
    pub const ACTIVE: u64 = 2;
}

impl EventKind {
    /// Every kind, in value order.
    pub const ALL: [EventKind; 16] = [
        EventKind::SchedSwitch,
        EventKind::SchedWaking,
        EventKind::ProcessFork,
        EventKind::ProcessExit,
        EventKind::Comm,
        EventKind::FutexEnter,
        EventKind::FutexExit,
        EventKind::RecvEnter,
        EventKind::RecvExit,
        EventKind::SendEnter,
        EventKind::SendExit,
        EventKind::PollEnter,
        EventKind::PollExit,
        EventKind::NetRecv,
        EventKind::Lost,
        EventKind::PySample,
    ];

    /// Stable snake_case name, used in reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::SchedSwitch => "sched_switch",
            EventKind::SchedWaking => "sched_waking",
            EventKind::ProcessFork => "process_fork",
            EventKind::ProcessExit => "process_exit",
            EventKind::Comm => "comm",
            EventKind::FutexEnter => "futex_enter",
            EventKind::FutexExit => "futex_exit",
            EventKind::RecvEnter => "recv_enter",
            EventKind::RecvExit => "recv_exit",
            EventKind::SendEnter => "send_enter",
            EventKind::SendExit => "send_exit",
            EventKind::PollEnter => "poll_enter",
            EventKind::PollExit => "poll_exit",
            EventKind::NetRecv => "net_recv",
            EventKind::Lost => "lost",
            EventKind::PySample => "py_sample",
        }
    }
}

/// The raw value is not a known [`EventKind`] (e.g. written by a newer gil-trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownKind(pub u32);

impl TryFrom<u32> for EventKind {
    type Error = UnknownKind;
    fn try_from(v: u32) -> Result<Self, UnknownKind> {
        match v {
            1 => Ok(EventKind::SchedSwitch),
            2 => Ok(EventKind::SchedWaking),
            3 => Ok(EventKind::ProcessFork),
            4 => Ok(EventKind::ProcessExit),
            5 => Ok(EventKind::Comm),
            6 => Ok(EventKind::FutexEnter),
            7 => Ok(EventKind::FutexExit),
            8 => Ok(EventKind::RecvEnter),
            9 => Ok(EventKind::RecvExit),
            10 => Ok(EventKind::SendEnter),
            11 => Ok(EventKind::SendExit),
            12 => Ok(EventKind::PollEnter),
            13 => Ok(EventKind::PollExit),
            14 => Ok(EventKind::NetRecv),
            15 => Ok(EventKind::Lost),
            16 => Ok(EventKind::PySample),
            other => Err(UnknownKind(other)),
        }
    }
}

/// A task name's [`TASK_COMM_LEN`] bytes as the two argument words of a
/// [`EventKind::Comm`] event (little endian), and back: one packing for the programs, the
/// recorder and the decoder.
#[inline(always)]
pub fn comm_to_args(comm: &[u8; TASK_COMM_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&comm[..8]);
    hi.copy_from_slice(&comm[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// The inverse of [`comm_to_args`].
#[inline(always)]
pub fn comm_from_args(args: [u64; 2]) -> [u8; TASK_COMM_LEN] {
    let mut comm = [0u8; TASK_COMM_LEN];
    comm[..8].copy_from_slice(&args[0].to_le_bytes());
    comm[8..].copy_from_slice(&args[1].to_le_bytes());
    comm
}

/// Where a [`EventKind::Comm`] name came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommSource {
    /// Read from /proc by userspace when tracing started.
    Initial = 0,
    /// `sched:sched_process_exec` (the new program's name).
    Exec = 1,
    /// `task:task_rename` (prctl(PR_SET_NAME), pthread_setname_np).
    Rename = 2,
    /// The parent's name, inherited at fork.
    Fork = 3,
}

/// How the syscall classifier map (`SYSCALL_CLASS`) labels a syscall number.
/// Userspace fills the map with its architecture's numbers, so the eBPF side stays arch-neutral.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallClass {
    /// futex(2).
    Futex = 1,
    /// futex_waitv(2) (Linux 5.16+).
    FutexWaitv = 2,
    /// futex_wake(2) (Linux 6.7+).
    FutexWake = 3,
    /// futex_wait(2) (Linux 6.7+).
    FutexWait = 4,
    /// futex_requeue(2) (Linux 6.7+).
    FutexRequeue = 5,
    /// recvfrom/recvmsg/recvmmsg.
    Recv = 6,
    /// sendto/sendmsg/sendmmsg.
    Send = 7,
    /// poll/ppoll/select/pselect6/epoll_wait/epoll_pwait/epoll_pwait2.
    Poll = 8,
}

/// futex(2) commands: its op without the flags ([`FUTEX_CMD_MASK`]).
pub const FUTEX_WAIT: u32 = 0;
pub const FUTEX_WAKE: u32 = 1;
pub const FUTEX_REQUEUE: u32 = 3;
pub const FUTEX_CMP_REQUEUE: u32 = 4;
pub const FUTEX_WAKE_OP: u32 = 5;
pub const FUTEX_LOCK_PI: u32 = 6;
pub const FUTEX_UNLOCK_PI: u32 = 7;
pub const FUTEX_TRYLOCK_PI: u32 = 8;
pub const FUTEX_WAIT_BITSET: u32 = 9;
pub const FUTEX_WAKE_BITSET: u32 = 10;
pub const FUTEX_WAIT_REQUEUE_PI: u32 = 11;
pub const FUTEX_CMP_REQUEUE_PI: u32 = 12;
pub const FUTEX_LOCK_PI2: u32 = 13;
/// futex(2)'s op without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256).
pub const FUTEX_CMD_MASK: u32 = !(128 | 256);

/// Whether a futex-family call of `class` with `op` (futex(2)'s op, flags included) blocks
/// waiting on its word (the analysis' `FutexCall::is_wait`; kept with the futex constants, the
/// kernel's ABI).
#[inline(always)]
pub const fn futex_call_waits(class: SyscallClass, op: u32) -> bool {
    match class {
        SyscallClass::Futex => matches!(
            op & FUTEX_CMD_MASK,
            FUTEX_WAIT | FUTEX_WAIT_BITSET | FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_WAIT_REQUEUE_PI
        ),
        SyscallClass::FutexWait | SyscallClass::FutexWaitv => true,
        _ => false,
    }
}

impl TryFrom<u8> for SyscallClass {
    type Error = u8;
    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(SyscallClass::Futex),
            2 => Ok(SyscallClass::FutexWaitv),
            3 => Ok(SyscallClass::FutexWake),
            4 => Ok(SyscallClass::FutexWait),
            5 => Ok(SyscallClass::FutexRequeue),
            6 => Ok(SyscallClass::Recv),
            7 => Ok(SyscallClass::Send),
            8 => Ok(SyscallClass::Poll),
            other => Err(other),
        }
    }
}

impl SyscallClass {
    /// True for the futex family.
    pub const fn is_futex(self) -> bool {
        (self as u8) <= SyscallClass::FutexRequeue as u8
    }
}

/// One event as the eBPF programs write it into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// An [`EventKind`] value.
    pub kind: u32,
    /// Thread id of the task the event is about (see each kind).
    pub tid: u32,
    /// Thread-group (process) id of that task, 0 when unknown.
    pub tgid: u32,
    /// CPU the event was observed on.
    pub cpu: u32,
    /// Kind-specific arguments (see [`EventKind`]).
    pub args: [u64; 4],
}

impl RawEvent {
    /// Whether `tgid` is known to be a traced process. Not for a switch from an untraced
    /// task to a traced one, a wake by an untraced task, nor a rename (whose `tgid` is the
    /// renamer's): those carry another process's ids.
    #[inline]
    pub fn tgid_is_traced(&self) -> bool {
        match self.kind {
            k if k == EventKind::SchedSwitch as u32 => self.args[3] & 1 != 0,
            k if k == EventKind::SchedWaking as u32 => false,
            k if k == EventKind::Comm as u32 => self.args[2] != CommSource::Rename as u64,
            _ => self.tgid != 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<RawEvent>() == 56);

/// A syscall a traced thread made without leaving its CPU: its entry and exit, written as one
/// ring record at the exit (half the ring writes of two records). The entry waits in a per-CPU
/// slot meanwhile; when the thread switches out inside the call (it blocked or was
/// preempted), the entry is written with that switch (the same struct: `exit` then holds the
/// `SchedSwitch`) and the exit later on its own, so a blocked call still shows when it began,
/// even when the trace ends before it returns. Userspace reads every ring record as a whole
/// number of `RawEvent`s, whatever their kinds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CallPair {
    /// The entry event (`tid` 0: the slot is empty).
    pub enter: RawEvent,
    /// The exit event, filled just before the pair is written.
    pub exit: RawEvent,
}

const _: () = assert!(core::mem::size_of::<CallPair>() == 2 * core::mem::size_of::<RawEvent>());

/// The syscall a traced thread is inside, on one CPU (the programs' `CALL_IN_FLIGHT` slot).
/// Userspace reads the slots once recording has stopped, for the entries of calls that had not
/// returned (nor left their CPU) by then: a trace ending mid-call still shows the call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CallInFlight {
    /// `pair.enter.tid` 0: no call. The entry waits here to be written with its exit as one
    /// record.
    pub pair: CallPair,
    /// Non-zero when the entry was already written (`split_calls`): the slot then only notes
    /// which call the thread is in.
    pub entry_written: u64,
}

const _: () = assert!(core::mem::size_of::<CallInFlight>() == 120);
const _: () = assert!(core::mem::align_of::<RawEvent>() == 8);

/// The hot tracepoint programs (sched_switch, sched_waking, the sock events) load the start of
/// their tracepoint record straight from their context (no helper call) and pick fields out of
/// it: this many bytes at most. A tracepoint program may not load the first 8 bytes (the
/// common header) nor past its record, so each loads exactly its own `*_LOAD_LEN`; userspace
/// checks that every field they use lies after the header and inside that length, aligned to
/// its size, and that the record is at least that long on this kernel.
pub const RECORD_PREFIX_LEN: usize = 64;
/// Bytes `sched_switch` loads (its record since Linux 4.x: comms, pids, prios, prev_state).
pub const SCHED_SWITCH_LOAD_LEN: usize = 64;
/// Bytes `sched_waking` loads (comm, pid, prio, target_cpu).
pub const SCHED_WAKING_LOAD_LEN: usize = 36;
/// Bytes `sk_data_ready` loads (skaddr, family, protocol, ip).
pub const SK_DATA_READY_LOAD_LEN: usize = 32;
/// Bytes `sock_recv_length` loads (sk, family, protocol, ret, flags).
pub const SOCK_RECV_LENGTH_LOAD_LEN: usize = 28;
/// The common header every tracepoint record starts with.
pub const RECORD_HEADER_LEN: usize = 8;

/// Field offsets of the tracepoints, read by userspace from tracefs `format` files at load
/// time and written into the programs' read-only global `PROBE_CONFIG`, so another kernel
/// layout keeps working.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeConfig {
    pub sched_switch_prev_pid: u32,
    pub sched_switch_prev_state: u32,
    /// Width of prev_state in bytes (a long on most kernels, an int on some).
    pub sched_switch_prev_state_size: u32,
    pub sched_switch_next_pid: u32,
    pub sched_switch_next_prio: u32,
    pub sched_waking_pid: u32,
    pub sched_waking_target_cpu: u32,
    pub fork_child_pid: u32,
    pub exit_group_dead: u32,
    pub rename_pid: u32,
    pub rename_newcomm: u32,
    pub sk_data_ready_skaddr: u32,
    pub sk_data_ready_protocol: u32,
    pub recv_length_sk: u32,
    pub recv_length_protocol: u32,
    pub recv_length_ret: u32,
    pub recv_length_flags: u32,
    /// Non-zero: every program returns at once, recording nothing. For measuring what the
    /// kernel's tracepoint dispatch alone costs a traced program (`GIL_TRACE_DISPATCH_ONLY`).
    pub dispatch_only: u32,
    /// Which events carry the user stack ([`UserStacks`]).
    pub user_stacks: u32,
    /// Non-zero: each syscall's entry and exit are written as they happen, one record each,
    /// instead of as one `CallPair` (`GIL_TRACE_SPLIT_CALLS`: the A/B of tests and benchmarks).
    pub split_calls: u32,
    /// Who walks the user stacks ([`StackWalker`]).
    pub stack_walker: u32,
    /// Non-zero: events are gathered per CPU ([`StagedEvents`]) and written to the ring
    /// buffer several at a time. Zero (`GIL_TRACE_NO_BATCH`, or no `hrtimer_expire_entry`
    /// tracepoint to bound their wait): each record is written at once.
    pub batch: u32,
}

const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 88);

/// Events a CPU gathers before it writes them to the ring buffer as one record.
pub const STAGED_EVENTS: usize = 16;

/// One CPU's events not yet in the ring buffer (the programs' `STAGED` slot). A ring-buffer
/// write costs ~100 ns here whatever its size (a lock with interrupts off, the reservation,
/// the commit), so a CPU writes its events several at a time. They wait at most until the CPU
/// goes idle (its `sched_switch` to the idle task) or its next timer interrupt (the tick, 4 ms
/// at HZ=250; `hrtimer_expire_entry`), well within the recorder's 10 ms holdback; userspace
/// reads what is left once the programs are detached.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StagedEvents {
    /// Events gathered, `events[..count]`.
    pub count: u32,
    /// Non-zero while a program on this CPU adds to or writes out the events: a program
    /// interrupting it (an interrupt's wakeup) writes its own record at once instead.
    pub busy: u32,
    pub events: [RawEvent; STAGED_EVENTS],
}

const _: () = assert!(STAGED_EVENTS.is_power_of_two());
const _: () = assert!(
    core::mem::size_of::<StagedEvents>() == 8 + STAGED_EVENTS * core::mem::size_of::<RawEvent>()
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, integer-only repr(C) struct without padding (size asserted).
    unsafe impl aya::Pod for super::RawEvent {}
    // SAFETY: as RawEvent: two of them and a u64, without padding (size asserted).
    unsafe impl aya::Pod for super::CallInFlight {}
    // SAFETY: as above: u32 fields only (size asserted).
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: as above: two u32 then u64s, no padding.
    unsafe impl aya::Pod for super::ArrivalQueue {}
    // SAFETY: u64s only (size asserted).
    unsafe impl aya::Pod for super::WalkedStack {}
    // SAFETY: two u32 then RawEvents, no padding (size asserted).
    unsafe impl aya::Pod for super::StagedEvents {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn only_events_of_a_traced_task_vouch_for_their_tgid() {
        let event = |kind: EventKind, args: [u64; 4]| RawEvent {
            kind: kind as u32,
            tid: 7,
            tgid: 7,
            args,
            ..RawEvent::default()
        };
        // A switch from an untraced task (bit 0 clear) into a traced one carries the
        // untraced task's ids.
        assert!(!event(EventKind::SchedSwitch, [8, 0, 120, 0b10]).tgid_is_traced());
        assert!(event(EventKind::SchedSwitch, [8, 1, 120, 0b01]).tgid_is_traced());
        assert!(!event(EventKind::SchedWaking, [8, 0, 0, 0]).tgid_is_traced());
        assert!(!event(EventKind::Comm, [0, 0, CommSource::Rename as u64, 0]).tgid_is_traced());
        assert!(event(EventKind::Comm, [0, 0, CommSource::Exec as u64, 0]).tgid_is_traced());
        assert!(event(EventKind::FutexEnter, [0; 4]).tgid_is_traced());
    }

    #[test]
    fn every_kind_round_trips_through_its_raw_value() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::try_from(kind as u32), Ok(kind));
        }
        assert_eq!(EventKind::try_from(0), Err(UnknownKind(0)));
        assert_eq!(EventKind::try_from(99), Err(UnknownKind(99)));
        assert!((EventKind::PySample as u32) < DROP_SLOTS);
        assert!(DROP_SLOT_STACKS < DROP_SLOTS && DROP_SLOT_STACKS > EventKind::PySample as u32);
    }

    #[test]
    fn a_stack_reference_round_trips_and_zero_is_none() {
        assert_eq!(stack_ref::id(0), None);
        assert_eq!(stack_ref::id(stack_ref::of(0)), Some(0));
        assert_eq!(stack_ref::id(stack_ref::of(16_383)), Some(16_383));
        // Only the low 32 bits are the reference (a switch keeps flags below it).
        assert_eq!(stack_ref::id(stack_ref::of(7) | 1 << 40), Some(7));
    }

    #[test]
    fn a_walked_stack_hash_depends_on_every_frame_and_its_order() {
        // The programs hash frame by frame; userspace checks a slot with `of`.
        let ips = [0x7f00_0000_1000u64, 0x5555_0000_2000, 0x5555_0000_3000];
        let by_step = stack_hash::finish(
            ips.iter()
                .fold(stack_hash::SEED, |h, &ip| stack_hash::step(h, ip)),
            3,
        );
        assert_eq!(stack_hash::of(&ips), by_step);
        assert_ne!(
            stack_hash::of(&ips),
            stack_hash::of(&[ips[0], ips[2], ips[1]])
        );
        assert_ne!(stack_hash::of(&ips), stack_hash::of(&ips[..2]));
        assert_ne!(stack_hash::of(&[0]), stack_hash::of(&[0, 0]));
        // 0 is an empty slot and CLAIMED one being filled: no stack hashes to either.
        for len in 0..1000u64 {
            assert!(
                stack_hash::finish(len.wrapping_mul(0x1234_5678_9abc), len) > stack_hash::CLAIMED
            );
        }
    }

    #[test]
    fn a_task_name_round_trips_through_its_argument_words() {
        let mut comm = [0u8; TASK_COMM_LEN];
        comm[..15].copy_from_slice(b"echo-server-012");
        let args = comm_to_args(&comm);
        assert_eq!(args[0], u64::from_le_bytes(*b"echo-ser"));
        assert_eq!(comm_from_args(args), comm);
    }

    #[test]
    fn syscall_classes_round_trip_and_futex_family_is_contiguous() {
        for v in 1..=8u8 {
            let class = SyscallClass::try_from(v).unwrap();
            assert_eq!(class as u8, v);
            assert_eq!(class.is_futex(), v <= 5);
        }
        assert_eq!(SyscallClass::try_from(0), Err(0));
        assert_eq!(SyscallClass::try_from(9), Err(9));
    }
}
