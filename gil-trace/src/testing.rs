//! Builders of decoded events for the trackers' unit tests, in one place so every test speaks
//! the same dialect: process 1, CPU 0, futex calls of the plain `futex(2)` syscall.
use gil_trace_common::SyscallClass;

use crate::trace::{Event, EventData, FutexCall, IoClass};

/// FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG: a timed condvar wait (glibc's `pthread_cond_timedwait`).
pub const WAIT_TIMED: u32 = 137;
/// FUTEX_WAIT | FUTEX_PRIVATE_FLAG: a mutex wait.
pub const WAIT: u32 = 128;
/// FUTEX_WAKE | FUTEX_PRIVATE_FLAG.
pub const WAKE: u32 = 129;

pub fn ev(ts: u64, tid: u32, data: EventData) -> Event {
    Event {
        ts_ns: ts,
        tid,
        tgid: 1,
        cpu: 0,
        data,
    }
}

/// A futex call by `tid` on `uaddr`; [`WAIT_TIMED`] carries a timeout.
pub fn futex(ts: u64, tid: u32, uaddr: u64, op: u32) -> Event {
    ev(
        ts,
        tid,
        EventData::FutexEnter(FutexCall {
            class: SyscallClass::Futex,
            uaddr,
            op,
            val: 0,
            uaddr2: 0,
            val3: 0,
            has_timeout: op == WAIT_TIMED,
        }),
    )
}

pub fn futex_exit(ts: u64, tid: u32, ret: i64) -> Event {
    ev(
        ts,
        tid,
        EventData::FutexExit {
            class: SyscallClass::Futex,
            ret,
            stack: None,
        },
    )
}

/// `prev` switched out (in `prev_state`) for `next`; tid 0 is the untraced idle task.
pub fn switch(ts: u64, prev: u32, next: u32, prev_state: u64) -> Event {
    ev(
        ts,
        prev,
        EventData::Switch {
            next_tid: next,
            prev_state,
            next_prio: 120,
            prev_traced: prev != 0,
            next_traced: next != 0,
            stack: None,
        },
    )
}

pub fn waking(ts: u64, waker: u32, wakee: u32) -> Event {
    ev(
        ts,
        waker,
        EventData::Waking {
            wakee,
            target_cpu: 0,
        },
    )
}

/// A recv/send/poll syscall entry (syscall numbers as on x86_64).
pub fn io_enter(ts: u64, tid: u32, class: IoClass, len: u64) -> Event {
    let nr = match class {
        IoClass::Recv => 45,
        IoClass::Send => 44,
        IoClass::Poll => 7,
    };
    ev(
        ts,
        tid,
        EventData::IoEnter {
            class,
            nr,
            fd: 3,
            len,
        },
    )
}

pub fn io_exit(ts: u64, tid: u32, class: IoClass, ret: i64) -> Event {
    let nr = match class {
        IoClass::Recv => 45,
        IoClass::Send => 44,
        IoClass::Poll => 7,
    };
    ev(ts, tid, EventData::IoExit { class, nr, ret })
}

/// `tid` dequeued one datagram of `len` bytes from socket 7 that arrived at `arrival`.
pub fn net_recv(ts: u64, tid: u32, arrival: Option<u64>, len: u32) -> Event {
    ev(
        ts,
        tid,
        EventData::NetRecv {
            arrival_ns: arrival,
            arrival_lost: false,
            sock: 7,
            len,
            queued: 0,
        },
    )
}
