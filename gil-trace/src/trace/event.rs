//! Typed view of a [`RawEvent`]: what the analysis consumes.
use gil_trace_common::{
    comm_from_args, py_sample, stack_ref, CommSource, EventKind, RawEvent, SyscallClass,
    NET_RECV_ARRIVAL_LOST,
};

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The task the event is about (see [`EventData`]).
    pub tid: u32,
    /// Its process id, 0 when unknown.
    pub tgid: u32,
    pub cpu: u32,
    pub data: EventData,
}

/// Which I/O syscall family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoClass {
    Recv,
    Send,
    Poll,
}

/// A futex-family syscall entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutexCall {
    pub class: SyscallClass,
    pub uaddr: u64,
    /// futex(2) op including flags (FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME); for the 6.7+
    /// calls, their flags argument.
    pub op: u32,
    pub val: u32,
    pub uaddr2: u64,
    pub val3: u32,
    pub has_timeout: bool,
}

use gil_trace_common::{futex_call_waits, FUTEX_CMD_MASK};
pub use gil_trace_common::{
    FUTEX_CMP_REQUEUE, FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_REQUEUE,
    FUTEX_TRYLOCK_PI, FUTEX_UNLOCK_PI, FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI,
    FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_WAKE_OP,
};

impl FutexCall {
    /// Decodes a [`EventKind::FutexEnter`] record's arguments.
    #[inline]
    pub fn from_args(a: [u64; 4]) -> FutexCall {
        FutexCall {
            class: syscall_class(a[3] >> 40),
            uaddr: a[0],
            op: a[1] as u32,
            val: (a[1] >> 32) as u32,
            uaddr2: a[2],
            val3: a[3] as u32,
            has_timeout: (a[3] >> 32) & 1 != 0,
        }
    }

    /// The futex(2) command without flags (FUTEX_WAIT, FUTEX_WAKE, ...).
    pub fn command(&self) -> u32 {
        self.op & FUTEX_CMD_MASK
    }

    /// Does this call block waiting on `uaddr`?
    pub fn is_wait(&self) -> bool {
        futex_call_waits(self.class, self.op)
    }

    /// Does this call wake waiters of `uaddr`?
    pub fn is_wake(&self) -> bool {
        match self.class {
            SyscallClass::Futex => matches!(
                self.command(),
                FUTEX_WAKE
                    | FUTEX_WAKE_BITSET
                    | FUTEX_WAKE_OP
                    | FUTEX_REQUEUE
                    | FUTEX_CMP_REQUEUE
                    | FUTEX_UNLOCK_PI
                    | FUTEX_CMP_REQUEUE_PI
            ),
            SyscallClass::FutexWake | SyscallClass::FutexRequeue => true,
            _ => false,
        }
    }
}

/// Kind-specific payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventData {
    /// `tid` switched out for `next_tid`; either or both are traced (the flags say which).
    Switch {
        next_tid: u32,
        prev_state: u64,
        next_prio: i32,
        prev_traced: bool,
        next_traced: bool,
        /// The blocking task's user stack (the recorder's stack id), when recorded.
        stack: Option<u32>,
    },
    /// `tid` (the waker, possibly untraced: its `tgid` is the waker's) woke `wakee` (traced).
    Waking {
        wakee: u32,
        target_cpu: u32,
    },
    /// `tid` created `child` (thread or process).
    Fork {
        child: u32,
    },
    /// `tid` exited; `group_dead` when it was the last thread of its process.
    Exit {
        group_dead: bool,
    },
    /// `tid` is (now) named `name`.
    Comm {
        name: [u8; 16],
        source: CommSource,
    },
    FutexEnter(FutexCall),
    FutexExit {
        class: SyscallClass,
        ret: i64,
        /// The caller's user stack when the call woke someone, when recorded.
        stack: Option<u32>,
    },
    IoEnter {
        class: IoClass,
        nr: u32,
        fd: u64,
        len: u64,
    },
    IoExit {
        class: IoClass,
        nr: u32,
        ret: i64,
    },
    /// `tid` received one UDP datagram of `len` bytes from socket `sock`; `arrival_ns` is when
    /// the datagram was queued on the socket, if that was seen; `arrival_lost` when it was not
    /// kept (too many datagrams queued at once); `queued` = datagrams left.
    NetRecv {
        arrival_ns: Option<u64>,
        arrival_lost: bool,
        sock: u64,
        len: u32,
        queued: u32,
    },
    /// The kernel lost `count` events between `since_ns` and this event's time.
    Lost {
        count: u64,
        since_ns: u64,
    },
    /// A sample of `tid`'s Python stack (`stack` in the code block's Python table; none when
    /// the thread had no Python frame).
    PySample {
        stack: Option<u32>,
        owns_gil: bool,
        active: bool,
        /// The sampling period: the time each sample stands for.
        period_ns: u64,
        /// How long the read of the process took, from the event's time (0: not known). The
        /// GIL flag was read somewhere in that span.
        read_ns: u64,
    },
    /// A kind this version does not know (from a newer recorder): kept, not interpreted.
    Unknown {
        kind: u32,
    },
}

impl Event {
    /// Name bytes of a `Comm` event up to the first NUL, lossily as text.
    pub fn comm_name(name: &[u8; 16]) -> String {
        let end = name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&name[..end]).into_owned()
    }

    /// The event's kind, if known.
    pub fn kind(&self) -> Option<EventKind> {
        Some(match self.data {
            EventData::Switch { .. } => EventKind::SchedSwitch,
            EventData::Waking { .. } => EventKind::SchedWaking,
            EventData::Fork { .. } => EventKind::ProcessFork,
            EventData::Exit { .. } => EventKind::ProcessExit,
            EventData::Comm { .. } => EventKind::Comm,
            EventData::FutexEnter(_) => EventKind::FutexEnter,
            EventData::FutexExit { .. } => EventKind::FutexExit,
            EventData::IoEnter {
                class: IoClass::Recv,
                ..
            } => EventKind::RecvEnter,
            EventData::IoEnter {
                class: IoClass::Send,
                ..
            } => EventKind::SendEnter,
            EventData::IoEnter {
                class: IoClass::Poll,
                ..
            } => EventKind::PollEnter,
            EventData::IoExit {
                class: IoClass::Recv,
                ..
            } => EventKind::RecvExit,
            EventData::IoExit {
                class: IoClass::Send,
                ..
            } => EventKind::SendExit,
            EventData::IoExit {
                class: IoClass::Poll,
                ..
            } => EventKind::PollExit,
            EventData::NetRecv { .. } => EventKind::NetRecv,
            EventData::Lost { .. } => EventKind::Lost,
            EventData::PySample { .. } => EventKind::PySample,
            EventData::Unknown { .. } => return None,
        })
    }
}

/// A [`EventKind::FutexExit`] record's return value.
#[inline]
pub fn futex_exit_ret(a: [u64; 4]) -> i64 {
    a[0] as i64
}

fn syscall_class(raw: u64) -> SyscallClass {
    // An unknown class from a newer recorder is still a futex call; keep it usable.
    SyscallClass::try_from(raw as u8).unwrap_or(SyscallClass::Futex)
}

impl From<RawEvent> for Event {
    #[inline]
    fn from(raw: RawEvent) -> Event {
        let a = raw.args;
        let data = match EventKind::try_from(raw.kind) {
            Err(unknown) => EventData::Unknown { kind: unknown.0 },
            Ok(kind) => match kind {
                EventKind::SchedSwitch => EventData::Switch {
                    next_tid: a[0] as u32,
                    prev_state: a[1],
                    next_prio: a[2] as i32,
                    prev_traced: a[3] & 1 != 0,
                    next_traced: a[3] & 2 != 0,
                    stack: stack_ref::id(a[3] >> stack_ref::SCHED_SWITCH_SHIFT),
                },
                EventKind::SchedWaking => EventData::Waking {
                    wakee: a[0] as u32,
                    target_cpu: a[1] as u32,
                },
                EventKind::ProcessFork => EventData::Fork { child: a[0] as u32 },
                EventKind::ProcessExit => EventData::Exit {
                    group_dead: a[0] != 0,
                },
                EventKind::Comm => {
                    let name = comm_from_args([a[0], a[1]]);
                    let source = match a[2] {
                        1 => CommSource::Exec,
                        2 => CommSource::Rename,
                        3 => CommSource::Fork,
                        _ => CommSource::Initial,
                    };
                    EventData::Comm { name, source }
                }
                EventKind::FutexEnter => EventData::FutexEnter(FutexCall::from_args(a)),
                EventKind::FutexExit => EventData::FutexExit {
                    class: syscall_class(a[1]),
                    ret: futex_exit_ret(a),
                    stack: stack_ref::id(a[stack_ref::FUTEX_EXIT_ARG]),
                },
                EventKind::RecvEnter | EventKind::SendEnter | EventKind::PollEnter => {
                    EventData::IoEnter {
                        class: io_class(kind),
                        nr: a[0] as u32,
                        fd: a[1],
                        len: a[2],
                    }
                }
                EventKind::RecvExit | EventKind::SendExit | EventKind::PollExit => {
                    EventData::IoExit {
                        class: io_class(kind),
                        nr: a[1] as u32,
                        ret: a[0] as i64,
                    }
                }
                EventKind::Lost => EventData::Lost {
                    count: a[0],
                    since_ns: a[1],
                },
                EventKind::PySample => EventData::PySample {
                    stack: (a[0] != py_sample::NO_FRAMES).then_some(a[0] as u32),
                    owns_gil: a[1] & py_sample::OWNS_GIL != 0,
                    active: a[1] & py_sample::ACTIVE != 0,
                    period_ns: a[2],
                    read_ns: a[3],
                },
                EventKind::NetRecv => EventData::NetRecv {
                    arrival_ns: (a[0] != 0).then_some(a[0]),
                    arrival_lost: a[3] & NET_RECV_ARRIVAL_LOST != 0,
                    sock: a[1],
                    len: a[2] as u32,
                    queued: a[3] as u32,
                },
            },
        };
        Event {
            ts_ns: raw.ts_ns,
            tid: raw.tid,
            tgid: raw.tgid,
            cpu: raw.cpu,
            data,
        }
    }
}

fn io_class(kind: EventKind) -> IoClass {
    match kind {
        EventKind::RecvEnter | EventKind::RecvExit => IoClass::Recv,
        EventKind::SendEnter | EventKind::SendExit => IoClass::Send,
        _ => IoClass::Poll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: EventKind, args: [u64; 4]) -> RawEvent {
        RawEvent {
            ts_ns: 10,
            kind: kind as u32,
            tid: 7,
            tgid: 5,
            cpu: 1,
            args,
        }
    }

    #[test]
    fn futex_enter_unpacks_op_val_and_timeout_flag() {
        // FUTEX_WAIT_BITSET_PRIVATE (137), val 3, bitset all ones, has timeout, class futex.
        let ev = Event::from(raw(
            EventKind::FutexEnter,
            [
                0x7f00_0000_1000,
                0x89 | (3 << 32),
                0,
                0xffff_ffff | (1 << 32) | (1 << 40),
            ],
        ));
        let EventData::FutexEnter(call) = ev.data else {
            panic!("{ev:?}")
        };
        assert_eq!(call.uaddr, 0x7f00_0000_1000);
        assert_eq!(call.op, 137);
        assert_eq!(call.command(), FUTEX_WAIT_BITSET);
        assert_eq!(call.val, 3);
        assert_eq!(call.val3, 0xffff_ffff);
        assert!(call.has_timeout);
        assert!(call.is_wait());
        assert!(!call.is_wake());
        assert_eq!(call.class, SyscallClass::Futex);
    }

    #[test]
    fn futex_wake_private_and_wake_op_are_wakes() {
        for op in [129u64, 133, 138] {
            let ev = Event::from(raw(EventKind::FutexEnter, [1, op | (1 << 32), 0, 1 << 40]));
            let EventData::FutexEnter(call) = ev.data else {
                panic!()
            };
            assert!(call.is_wake(), "op {op}");
            assert!(!call.is_wait(), "op {op}");
        }
    }

    #[test]
    fn comm_bytes_and_negative_returns_decode() {
        let mut name = [0u8; 16];
        name[..9].copy_from_slice(b"spinner-1");
        let [lo, hi] = gil_trace_common::comm_to_args(&name);
        let ev = Event::from(raw(EventKind::Comm, [lo, hi, 2, 0]));
        let EventData::Comm { name, source } = ev.data else {
            panic!()
        };
        assert_eq!(Event::comm_name(&name), "spinner-1");
        assert_eq!(source, CommSource::Rename);

        let ev = Event::from(raw(EventKind::FutexExit, [(-110i64) as u64, 1, 0, 0]));
        assert_eq!(
            ev.data,
            EventData::FutexExit {
                class: SyscallClass::Futex,
                ret: -110,
                stack: None,
            }
        );
    }

    #[test]
    fn unknown_kind_is_kept_not_misread() {
        let mut r = raw(EventKind::Comm, [0; 4]);
        r.kind = 200;
        let ev = Event::from(r);
        assert_eq!(ev.data, EventData::Unknown { kind: 200 });
        assert_eq!(ev.kind(), None);
    }

    #[test]
    fn net_recv_without_arrival_has_none() {
        let ev = Event::from(raw(EventKind::NetRecv, [0, 0xffff_8880_0000_0000, 8192, 2]));
        assert_eq!(
            ev.data,
            EventData::NetRecv {
                arrival_ns: None,
                arrival_lost: false,
                sock: 0xffff_8880_0000_0000,
                len: 8192,
                queued: 2
            }
        );
        assert_eq!(ev.kind(), Some(EventKind::NetRecv));
    }
}
