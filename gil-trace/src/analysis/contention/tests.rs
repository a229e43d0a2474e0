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

/// `B` waits `lock_wait` for the lock from `at` (A runs meanwhile, then hands it over);
/// returns when B holds it.
fn reacquire(at: u64, lock_wait: u64, out: &mut Vec<Event>) -> u64 {
    if lock_wait == 0 {
        return at;
    }
    out.push(wait(at, B));
    out.push(switch(at + 500, B, A, 1)); // A runs (holds the lock) meanwhile
    out.push(wake(at + lock_wait - 3_000, A));
    out.push(waking(at + lock_wait - 2_000, A, B));
    out.push(exit(at + lock_wait - 1_000, A, 1));
    out.push(switch(at + lock_wait - 500, A, B, 0));
    out.push(exit(at + lock_wait, B, 0));
    at + lock_wait
}

/// One echo round trip at `t`, as an interpreter's I/O thread makes it in a convoy: the
/// datagram arrives, the echo thread wakes, returns from recv, waits `lock_wait` for the lock
/// (released by A), replies, and waits `lock_wait` again after the send. Returns when it holds
/// the lock after the send.
fn echo_round(t: u64, lock_wait: u64, out: &mut Vec<Event>) -> u64 {
    out.push(io_enter(t, B, IoClass::Recv, 65507));
    out.push(switch(t + 1_000, B, A, 1));
    out.push(waking(t + 10_000, C, B));
    out.push(switch(t + 12_000, A, B, 0));
    out.push(net_recv(t + 14_000, B, Some(t + 9_000), 512));
    out.push(io_exit(t + 15_000, B, IoClass::Recv, 512));
    let at = reacquire(t + 16_000, lock_wait, out);
    out.push(io_enter(at + 5_000, B, IoClass::Send, 512));
    out.push(io_exit(at + 8_000, B, IoClass::Send, 512));
    reacquire(at + 9_000, lock_wait, out)
}

fn lock_users(out: &mut Vec<Event>) {
    // Make L a lock shared by A and B even when the rounds do not contend.
    out.push(wait(1, A));
    out.push(exit(2, A, 0));
    out.push(wait(3, B));
    out.push(exit(4, B, 0));
}

#[test]
fn a_stall_is_decomposed_by_what_the_receiver_did_and_every_reacquisition_counts() {
    let mut events = Vec::new();
    lock_users(&mut events);
    let w = 5 * MS;
    for i in 0..3 {
        echo_round(MS + i * 20 * MS, w, &mut events);
    }
    echo_round(70 * MS, 0, &mut events);
    // A last recv that does not wait for the lock: it ends the episode.
    events.push(io_enter(90 * MS, B, IoClass::Recv, 65507));
    let r = run(&events, true);
    let ops = r.io_ops.as_ref().unwrap();
    assert_eq!(ops.len(), 4);
    let op = &ops[0];
    assert_eq!(op.arrival_ns, Some(MS + 9_000));
    assert_eq!(op.dequeue_ns, MS + 14_000);
    assert_eq!(op.woken_ns, Some(MS + 10_000));
    assert_eq!(op.run_ns, Some(MS + 12_000));
    assert_eq!(op.recv_exit_ns, MS + 15_000);
    assert_eq!(op.lock_acquired_ns, MS + 16_000 + w);
    assert_eq!(op.reply_ns, Some(op.lock_acquired_ns + 5_000));
    let c = &op.causes;
    assert_eq!(
        c[StallCause::Wakeup],
        1_000,
        "blocked in recv after the arrival"
    );
    assert_eq!(c[StallCause::Runnable], 2_000);
    assert_eq!(c[StallCause::LockWait], w, "the take, from its first wait");
    assert_eq!(c[StallCause::Running], 4_000 + 5_000);
    assert_eq!(op.lock_wait_ns, w);
    assert_eq!(op.stall_ns, 12_000 + w);
    assert_eq!(c.iter().map(|(_, v)| v).sum::<u64>(), op.stall_ns);
    assert_eq!(
        op.holders.first().map(|h| h.0),
        Some(A),
        "A ran while B waited"
    );
    assert_eq!(
        ops[3].lock_wait_ns, 0,
        "no wait: took the lock as recv returned"
    );
    assert_eq!(r.io_stalls.datagrams, 4);
    let share: f64 = r.io_stalls.share.iter().map(|(_, s)| s).sum();
    assert!((share - 1.0).abs() < 1e-9, "{share}");

    assert_eq!(r.convoys.len(), 1, "{:?}", r.convoys);
    let c = &r.convoys[0];
    assert_eq!((c.tid, c.ops), (B, 3), "three datagrams in a row waited");
    assert_eq!(c.start_ns, MS + 9_000, "the first datagram's arrival");
    assert_eq!(c.end_ns, ops[2].reply_ns.unwrap(), "the third one's reply");
    // Every wait in between counts: after each recv, and after the first two replies' sends
    // (the third's comes after the episode).
    assert_eq!((c.waits_after_recv, c.waits_after_send), (3, 2));
    assert_eq!(c.lock_wait_ns, 5 * w);
    assert_eq!(c.holders.first().map(|h| h.0), Some(A));
    assert!(c.lost_share > 0.2 && c.lost_share <= 1.0);
    let v = &r.verdicts[0].text;
    assert!(
        v.contains("over 3 datagrams (5 waits for it after I/O: 3 after recv, 2 after send)"),
        "{v}"
    );
    let waits = r.io_lock_waits.iter().find(|w| w.tid == B).unwrap();
    assert_eq!((waits.waited, waits.over_threshold), (6, 6));
    assert_eq!(waits.io_ops, 8, "4 recvs and 4 sends returned");
    assert_eq!(
        waits.lock_wait_ns,
        6 * (w + 1_000),
        "from each I/O exit to the lock held"
    );
}

#[test]
fn a_datagram_that_arrives_while_the_receiver_waits_after_its_send_is_a_lock_wait_stall() {
    let mut events = Vec::new();
    lock_users(&mut events);
    let w = 5 * MS;
    // Datagram 1's reply, then the wait for the lock after it; datagram 2 arrives 1 ms in.
    let held = echo_round(MS, w, &mut events);
    let arrival = held - w + MS;
    // The recv finds it queued at once: no blocking, no lock wait after it.
    events.push(io_enter(held + 1_000, B, IoClass::Recv, 65507));
    events.push(net_recv(held + 2_000, B, Some(arrival), 512));
    events.push(io_exit(held + 3_000, B, IoClass::Recv, 512));
    events.push(io_enter(held + 8_000, B, IoClass::Send, 512));
    events.push(io_exit(held + 9_000, B, IoClass::Send, 512));
    events.sort_by_key(|e| e.ts_ns);
    let r = run(&events, true);
    let op = &r.io_ops.as_ref().unwrap()[1];
    assert_eq!(op.arrival_ns, Some(arrival));
    assert_eq!(
        op.causes[StallCause::LockWait],
        w - MS,
        "the rest of the take"
    );
    assert_eq!(op.causes[StallCause::Running], 8_000);
    assert_eq!(op.stall_ns, w - MS + 8_000);
    assert_eq!(op.holders.first().map(|h| h.0), Some(A));
    assert!(
        r.io_stalls.share[StallCause::LockWait] > 0.9,
        "{:?}",
        r.io_stalls.share
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

/// `top -o` keeps windows in one trace; between two, nothing was recorded.
fn not_recorded(since_ns: u64, until_ns: u64) -> Event {
    testing::ev(until_ns, 0, EventData::Lost { count: 0, since_ns })
}

#[test]
fn no_wait_stall_or_state_is_measured_across_time_not_recorded() {
    let mut events = Vec::new();
    lock_users(&mut events);
    // A contended take that ends inside its window: measured.
    reacquire(MS, 2 * MS, &mut events);
    // B is in a lock wait and in a recv when the window ends at 10 ms…
    events.push(wait(5 * MS, B));
    events.push(switch(5 * MS + 500, B, A, 1));
    // …and the next window, from 60 ms, sees the end of a wait and of a recv (other calls:
    // a lot happens in 50 ms nobody saw).
    events.push(not_recorded(10 * MS, 60 * MS));
    events.push(waking(61 * MS, A, B));
    events.push(switch(61 * MS + 1_000, A, B, 0));
    events.push(exit(61 * MS + 2_000, B, 0));
    events.push(net_recv(61 * MS + 3_000, B, Some(61 * MS - 5_000), 512));
    events.push(io_exit(61 * MS + 4_000, B, IoClass::Recv, 512));
    events.push(io_enter(62 * MS, B, IoClass::Send, 512));
    events.push(io_exit(62 * MS + 1_000, B, IoClass::Send, 512));
    events.push(switch(63 * MS, B, A, 1));
    let r = run(&events, true);
    // The takes of the first window only: none from 5 ms to after 60 ms.
    let wait = &r.handoffs[0].wait;
    assert!(wait.max_ns < 5 * MS, "{wait:?}");
    for op in r.io_ops.as_ref().unwrap() {
        assert!(op.stall_ns < 5 * MS, "{op:?}");
    }
    // B: recorded 0–10 ms and 60–63 ms; none of the 50 ms between is in a state.
    let b = r.summary.threads.iter().find(|t| t.tid == B).unwrap();
    let states = b.states.unwrap();
    assert!(states.total() <= 13 * MS, "{states:?}");
    assert!(states.lock_wait < 10 * MS, "{states:?}");
    assert!(
        r.summary
            .warnings
            .iter()
            .any(|w| w.starts_with("nothing was recorded in 1 span(s) between windows (50")),
        "{:?}",
        r.summary.warnings
    );
    assert!(r.lost_spans.iter().all(|l| l.events == 0));
    // A was on a CPU when the window ended (from 5.5 ms) and when the next began (to 61 ms):
    // about 5.5 ms of it, not the 50 between.
    let a = r.summary.threads.iter().find(|t| t.tid == A).unwrap();
    assert!(a.on_cpu_ns < 10 * MS, "{}", a.on_cpu_ns);
}

/// `waits.len()` datagrams, all arrived at 1 ms, served one by one from 2 ms: datagram i's
/// re-acquisition after its recv waits `waits[i].0`, after its reply's send `waits[i].1`.
fn serve_a_queue(waits: &[(u64, u64)]) -> Report {
    let mut events = Vec::new();
    lock_users(&mut events);
    let mut t = 2 * MS;
    for &(after_recv, after_send) in waits {
        events.push(io_enter(t, B, IoClass::Recv, 65507));
        events.push(net_recv(t + 1_000, B, Some(MS), 512));
        events.push(io_exit(t + 2_000, B, IoClass::Recv, 512));
        let at = reacquire(t + 3_000, after_recv, &mut events);
        events.push(io_enter(at + 5_000, B, IoClass::Send, 512));
        events.push(io_exit(at + 8_000, B, IoClass::Send, 512));
        t = reacquire(at + 9_000, after_send, &mut events) + 1_000;
    }
    events.push(io_enter(t, B, IoClass::Recv, 65507));
    run(&events, true)
}

#[test]
fn short_reacquisitions_behind_a_queue_are_not_a_convoy() {
    // 20 datagrams arrive at once; the echo thread serves them one by one, winning the lock
    // back within 200 µs after each recv and each send (a priority GIL). The last one's stall
    // holds every wait made for the ones before it — far over the threshold summed — but no
    // re-acquisition was long: no convoy.
    let r = serve_a_queue(&[(200_000, 200_000); 20]);
    assert_eq!(r.io_stalls.datagrams, 20);
    let last = r.io_ops.as_ref().unwrap().last().unwrap();
    assert!(last.lock_wait_ns > 5 * MS, "{last:?}");
    assert!(r.convoys.is_empty(), "{:?}", r.convoys);
    // The same queue with one re-acquisition of 3 ms per datagram is one.
    let r = serve_a_queue(&[(3 * MS, 0); 5]);
    assert_eq!(r.convoys.len(), 1, "{:?}", r.convoys);
    assert_eq!(r.convoys[0].ops, 5);
    // One long take, while serving the first of a queue of 20: it held the first up, and
    // through it all the others, but each of those won its own re-acquisitions at once.
    let mut waits = [(200_000, 200_000); 20];
    waits[0].0 = 3 * MS;
    let r = serve_a_queue(&waits);
    assert!(r.convoys.is_empty(), "{:?}", r.convoys);
}

#[test]
fn a_threads_convoy_episodes_never_overlap_behind_a_queue() {
    // 12 datagrams arrive at once; every third is served without a long re-acquisition, so
    // the others form episodes of 2. Each episode starts after the previous one's end, and
    // no lock wait is counted twice.
    let waits: Vec<(u64, u64)> = (0..12)
        .map(|i| (if i % 3 == 2 { 200_000 } else { 3 * MS }, 0))
        .collect();
    let r = serve_a_queue(&waits);
    assert_eq!(r.convoys.len(), 4, "{:?}", r.convoys);
    let mut convoys = r.convoys.clone();
    convoys.sort_by_key(|c| c.start_ns);
    for pair in convoys.windows(2) {
        assert!(pair[0].end_ns <= pair[1].start_ns, "{pair:?}");
    }
    let lost: u64 = convoys.iter().map(|c| c.lock_wait_ns).sum();
    let b = r.summary.threads.iter().find(|t| t.tid == B).unwrap();
    let waited = b.states.unwrap().lock_wait;
    assert!(lost <= waited + 12 * 5_000, "{lost} > {waited}");
}

/// FORCE_SWITCHING's word: a releaser waits there (no timeout) until its successor took the lock.
const SWITCH: u64 = L + 16;

/// A hands B the lock through B's own word `L + 8` (B's wait returns at `MS + 5 µs`, on the
/// other CPU); then `meanwhile`; then B releases through `L`. Returns B's acquisition.
fn b_acquires(meanwhile: &[Event]) -> HandoffEvent {
    const B_WORD: u64 = L + 8;
    let mut events = vec![
        testing::futex(0, B, B_WORD, WAIT_TIMED),
        switch(10, B, A, 1),
        testing::futex(MS, A, B_WORD, WAKE), // A releases to B
        waking(MS + 1_000, A, B),
        exit(MS + 2_000, A, 1),
        switch(MS + 4_000, 0, B, 0),
        exit(MS + 5_000, B, 0), // B holds the lock from here
        wake(2 * MS, B),        // B releases (if it did not by waking A)
        exit(2 * MS + 1_000, B, 0),
    ];
    events.extend_from_slice(meanwhile);
    events.sort_by_key(|e| e.ts_ns);
    let b = run(&events, true)
        .handoff_events
        .unwrap()
        .into_iter()
        .find(|e| e.to_tid == B)
        .expect("B's acquisition");
    assert_eq!((b.kind, b.from_tid), (HandoffKind::Wake, Some(A)));
    b
}

/// After handing B the lock, A waits at `MS + a_waits_ns` on `a_word`; B runs `b_cpu_ns`
/// after its wait returns, then wakes `a_word`. Returns B's traced acquisition.
fn wake_the_releaser_after(a_word: u64, a_waits_ns: u64, b_cpu_ns: u64) -> u64 {
    let a_op = if a_word == SWITCH {
        testing::WAIT
    } else {
        WAIT_TIMED
    };
    b_acquires(&[
        testing::futex(MS + a_waits_ns, A, a_word, a_op),
        testing::futex(MS + 5_000 + b_cpu_ns, B, a_word, WAKE),
        waking(MS + 6_000 + b_cpu_ns, B, A),
        exit(MS + 7_000 + b_cpu_ns, B, 1),
    ])
    .acquire_ns
}

#[test]
fn a_wake_right_after_the_wait_is_the_force_switching_handshake() {
    // A forced releaser waits on the switch word until B took the lock; re-locking and
    // flipping the state take B ~2 µs: B holds the lock from its wake of A.
    assert_eq!(wake_the_releaser_after(SWITCH, 3_000, 2_000), MS + 7_000);
    // The releaser may begin its wait a few µs after the taker's wait returned.
    assert_eq!(wake_the_releaser_after(SWITCH, 6_000, 2_000), MS + 7_000);
}

#[test]
fn a_preemption_after_the_handshake_does_not_delay_the_acquisition() {
    // B takes the lock and wakes the releaser 1 µs after its wait returned, then is preempted
    // 3 µs after it and runs again 22 µs later: it held the lock from its handshake (the new
    // GIL in validate, where each preemption used to move the acquisition to the next run).
    let b = b_acquires(&[
        testing::futex(MS + 3_000, A, SWITCH, testing::WAIT),
        testing::futex(MS + 6_000, B, SWITCH, WAKE),
        waking(MS + 6_500, B, A),
        exit(MS + 7_000, B, 1),
        switch(MS + 8_000, B, A, 0), // preempted
        switch(MS + 30_000, A, B, 0),
    ]);
    assert_eq!(b.acquire_ns, MS + 6_000);
}

#[test]
fn a_fair_lock_handing_back_is_a_release_not_a_handshake() {
    // A queued on its own condvar (a gate word, where takers wait) and B handed the lock
    // back to it, however soon: B acquired when its wait returned, not when it released
    // (validate_root's fair GIL).
    assert_eq!(wake_the_releaser_after(L, 3_000, 2_000), MS + 5_000);
    // Not a gate word, but B ran 20 µs of CPU first: it held the lock meanwhile.
    assert_eq!(wake_the_releaser_after(SWITCH, 3_000, 20_000), MS + 5_000);
}

#[test]
fn a_thread_that_queued_long_after_the_takers_wait_is_not_a_releaser_in_a_handshake() {
    let b = b_acquires(&[
        switch(MS + 11_000, B, 0, 0), // preempted (6 µs of CPU since its wait)
        testing::futex(MS + 20_000, A, SWITCH, testing::WAIT), // 15 µs after: queueing
        switch(MS + 25_000, 0, B, 0),
        testing::futex(MS + 26_000, B, SWITCH, WAKE), // 7 µs of CPU, 21 µs after its wait
        waking(MS + 27_000, B, A),
        exit(MS + 28_000, B, 1),
    ]);
    assert_eq!(b.acquire_ns, MS + 5_000);
}
