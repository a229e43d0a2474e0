//! The contention tracker on synthetic events, through the whole report.
use super::*;
use crate::{
    analysis::{analyze, Report, ReportOptions},
    testing::{
        self, futex_exit as exit, io_enter, io_exit, net_recv, switch, waking, WAIT_TIMED, WAKE,
    },
    trace::{TraceMeta, TraceTrailer},
};

const L: u64 = 0x1000; // the lock's condvar word (timed waits: the gate)
const A: u32 = 11; // holder / spinner
const B: u32 = 12; // waiter / echo
const C: u32 = 20; // client (sends datagrams)
const MS: u64 = 1_000_000;

fn wait(ts: u64, tid: u32) -> Event {
    testing::futex(ts, tid, L, WAIT_TIMED)
}

fn wake(ts: u64, tid: u32) -> Event {
    testing::futex(ts, tid, L, WAKE)
}

fn run(events: &[Event], detail: bool) -> Report {
    let meta = TraceMeta::default();
    let trailer = TraceTrailer::default();
    let opts = ReportOptions {
        convoy_threshold_ns: MS,
        detail,
        ..Default::default()
    };
    let open = |_| {
        Ok(crate::trace::sort::SortedEvents::new(
            events.iter().copied().map(Ok),
        ))
    };
    analyze(&meta, &trailer, open, opts, |_| {}).unwrap().report
}

#[test]
fn handoff_after_a_timeout_and_a_failed_wakeup() {
    let events = vec![
        wait(0, B),
        switch(10, B, 0, 1),
        waking(5 * MS, 0, B), // the timer
        switch(5 * MS + 10, 0, B, 0),
        exit(5 * MS + 20, B, ETIMEDOUT),
        wait(5 * MS + 30, B),
        switch(5 * MS + 40, B, 0, 1),
        wake(6 * MS, A),
        waking(6 * MS + 1_000, A, B),
        exit(6 * MS + 2_000, A, 1),
        switch(6 * MS + 20_000, 0, B, 0),
        exit(6 * MS + 21_000, B, 0),
        wait(6 * MS + 22_000, B), // A took it back: a failed wakeup
        switch(6 * MS + 23_000, B, 0, 1),
        wake(8 * MS, A),
        waking(8 * MS + 1_000, A, B),
        exit(8 * MS + 2_000, A, 1),
        switch(8 * MS + 10_000, 0, B, 0),
        exit(8 * MS + 12_000, B, 0),
        wake(9 * MS, B), // B releases: it held the lock
        exit(9 * MS + 1_000, B, 0),
    ];
    let r = run(&events, true);
    assert_eq!(r.locks.len(), 1);
    let h = &r.handoffs[0];
    assert_eq!(
        (h.acquisitions, h.handoffs, h.failed_wakeups, h.timeouts),
        (1, 1, 1, 1)
    );
    assert_eq!(h.matrix[&A][&B], 1);
    let e = &r.handoff_events.as_ref().unwrap()[0];
    assert_eq!(
        (e.kind, e.from_tid, e.to_tid),
        (HandoffKind::Wake, Some(A), B)
    );
    assert_eq!(e.release_ns, Some(8 * MS));
    assert_eq!(e.wake_ns, Some(8 * MS + 1_000));
    assert_eq!(e.run_ns, Some(8 * MS + 10_000));
    assert_eq!(e.acquire_ns, 8 * MS + 12_000);
    assert_eq!(e.wait_start_ns, 0);
    assert_eq!(h.release_to_wake.max_ns, 1_000);
}

/// One echo round trip at `t`: the datagram arrives, the echo thread wakes, returns from
/// recv, waits `lock_wait` for the lock (released by A), then replies.
fn echo_round(t: u64, lock_wait: u64, out: &mut Vec<Event>) {
    out.push(io_enter(t, B, IoClass::Recv, 65507));
    out.push(switch(t + 1_000, B, A, 1));
    out.push(waking(t + 10_000, C, B));
    out.push(switch(t + 12_000, A, B, 0));
    out.push(net_recv(t + 14_000, B, Some(t + 9_000), 512));
    out.push(io_exit(t + 15_000, B, IoClass::Recv, 512));
    let mut at = t + 16_000;
    if lock_wait > 0 {
        out.push(wait(at, B));
        out.push(switch(at + 500, B, A, 1)); // A runs (holds the lock) meanwhile
        out.push(wake(at + lock_wait - 3_000, A));
        out.push(waking(at + lock_wait - 2_000, A, B));
        out.push(exit(at + lock_wait - 1_000, A, 1));
        out.push(switch(at + lock_wait - 500, A, B, 0));
        out.push(exit(at + lock_wait, B, 0));
        at += lock_wait;
    }
    out.push(io_enter(at + 5_000, B, IoClass::Send, 512));
    out.push(io_exit(at + 8_000, B, IoClass::Send, 512));
}

fn lock_users(out: &mut Vec<Event>) {
    // Make L a lock shared by A and B even when the rounds do not contend.
    out.push(wait(1, A));
    out.push(exit(2, A, 0));
    out.push(wait(3, B));
    out.push(exit(4, B, 0));
}

#[test]
fn io_stalls_decompose_and_consecutive_long_lock_waits_form_a_convoy() {
    let mut events = Vec::new();
    lock_users(&mut events);
    for i in 0..3 {
        echo_round(MS + i * 10 * MS, 5 * MS, &mut events);
    }
    echo_round(40 * MS, 0, &mut events);
    let r = run(&events, true);
    let ops = r.io_ops.as_ref().unwrap();
    assert_eq!(ops.len(), 4);
    let op = &ops[0];
    assert_eq!(op.arrival_ns, Some(MS + 9_000));
    assert_eq!(op.woken_ns, Some(MS + 10_000));
    assert_eq!(op.run_ns, Some(MS + 12_000));
    assert_eq!(op.recv_exit_ns, MS + 15_000);
    assert_eq!(op.lock_wait_ns, 5 * MS + 1_000);
    assert_eq!(op.reply_ns, Some(op.lock_acquired_ns + 5_000));
    let parts = op.components();
    assert_eq!(
        [
            parts[StallCause::Wakeup],
            parts[StallCause::Runnable],
            parts[StallCause::LockWait],
            parts[StallCause::Work]
        ],
        [1_000, 2_000, 5 * MS + 1_000, 5_000]
    );
    assert_eq!(
        ops[3].lock_wait_ns, 0,
        "no wait: took the lock as recv returned"
    );
    assert_eq!(r.io_stalls.datagrams, 4);

    assert_eq!(r.convoys.len(), 1, "{:?}", r.convoys);
    let c = &r.convoys[0];
    assert_eq!((c.tid, c.ops), (B, 3));
    assert_eq!(c.lock_wait_ns, 3 * (5 * MS + 1_000));
    assert_eq!(
        c.holders.first().map(|h| h.0),
        Some(A),
        "A ran while B waited"
    );
    assert!(c.lost_share > 0.2 && c.lost_share <= 1.0);
    assert!(
        r.verdicts[0].text.contains("lost"),
        "{}",
        r.verdicts[0].text
    );
}

#[test]
fn no_competitor_means_no_convoy() {
    let mut events = Vec::new();
    for i in 0..20 {
        echo_round(MS + i * MS, 0, &mut events);
    }
    let r = run(&events, false);
    assert_eq!(r.io_stalls.datagrams, 20);
    assert!(r.convoys.is_empty());
    assert_eq!(r.io_stalls.causes[StallCause::LockWait].max_ns, 0);
}
