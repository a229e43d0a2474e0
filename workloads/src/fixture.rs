//! `workload pingpong`: a small, fully known program for the tracer's own tests.
//!
//! Threads contend on one raw futex word (a Drepper-style mutex, so every contended lock and
//! unlock is a FUTEX_WAIT/FUTEX_WAKE on that word), and two threads exchange UDP datagrams on
//! 127.0.0.1. Prints what a tracer must find, as JSON: the word's address, every thread's
//! tid and name, and the datagram count.
use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicU32, Ordering::SeqCst},
        Arc, Barrier,
    },
    time::Duration,
};

use serde::Serialize;

use crate::clock::gettid;

/// 0 unlocked, 1 locked, 2 locked with waiters.
pub struct FutexMutex {
    word: AtomicU32,
}

fn futex(word: &AtomicU32, op: i32, val: u32) -> i64 {
    // SAFETY: the word outlives the call; op is FUTEX_WAIT/FUTEX_WAKE (private), no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            0usize,
            0usize,
            0u32,
        )
    }
}

impl FutexMutex {
    pub const fn new() -> FutexMutex {
        FutexMutex {
            word: AtomicU32::new(0),
        }
    }

    pub fn addr(&self) -> u64 {
        self.word.as_ptr() as u64
    }

    pub fn lock(&self) {
        if self.word.compare_exchange(0, 1, SeqCst, SeqCst).is_ok() {
            return;
        }
        while self.word.swap(2, SeqCst) != 0 {
            futex(&self.word, libc::FUTEX_WAIT, 2);
        }
    }

    pub fn unlock(&self) {
        if self.word.swap(0, SeqCst) == 2 {
            futex(&self.word, libc::FUTEX_WAKE, 1);
        }
    }
}

impl Default for FutexMutex {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Serialize)]
pub struct ThreadId {
    pub tid: u32,
    pub name: String,
}

#[derive(Serialize)]
pub struct PingPongReport {
    pub pid: u32,
    pub futex_addr: u64,
    pub lock_rounds: u64,
    pub datagrams: u64,
    pub threads: Vec<ThreadId>,
}

pub fn run(lockers: usize, rounds: u64, datagrams: u64) -> std::io::Result<PingPongReport> {
    let mutex = Arc::new(FutexMutex::new());
    let shared = Arc::new(std::sync::Mutex::new(Vec::new()));
    let register = |name: &str, shared: &std::sync::Mutex<Vec<ThreadId>>| {
        shared.lock().unwrap().push(ThreadId {
            tid: gettid(),
            name: name.to_string(),
        });
    };
    // The main thread's kernel name is the program's.
    let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
    register(comm.trim_end(), &shared);
    let start = Arc::new(Barrier::new(lockers));
    let mut handles = Vec::new();
    for i in 0..lockers {
        let (mutex, shared, start) = (mutex.clone(), shared.clone(), start.clone());
        let name = format!("locker-{}", i + 1);
        handles.push(
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    register(&name, &shared);
                    start.wait();
                    let mut x = 0u64;
                    for _ in 0..rounds {
                        mutex.lock();
                        // Hold it a while (sleeping, so the others surely pile up on the word).
                        std::thread::sleep(Duration::from_micros(50));
                        for j in 0..2_000u64 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(j),
                            );
                        }
                        mutex.unlock();
                    }
                    std::hint::black_box(x);
                })?,
        );
    }
    let server = UdpSocket::bind("127.0.0.1:0")?;
    server.set_read_timeout(Some(Duration::from_secs(5)))?;
    let server_addr = server.local_addr()?;
    let server_thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("udp-server".into())
            .spawn(move || -> std::io::Result<()> {
                register("udp-server", &shared);
                let mut buf = [0u8; 2048];
                for _ in 0..datagrams {
                    let (n, peer) = server.recv_from(&mut buf)?;
                    server.send_to(&buf[..n], peer)?;
                }
                Ok(())
            })?
    };
    let client_thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("udp-client".into())
            .spawn(move || -> std::io::Result<()> {
                register("udp-client", &shared);
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                socket.set_read_timeout(Some(Duration::from_secs(5)))?;
                socket.connect(server_addr)?;
                let mut buf = [0u8; 2048];
                for i in 0..datagrams {
                    socket.send(&[i as u8; 512])?;
                    socket.recv(&mut buf)?;
                }
                Ok(())
            })?
    };
    for h in handles {
        h.join().expect("locker thread");
    }
    let io = |r: std::thread::Result<std::io::Result<()>>| {
        r.unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
    };
    io(server_thread.join())?;
    io(client_thread.join())?;
    let threads = std::mem::take(&mut *shared.lock().unwrap());
    Ok(PingPongReport {
        pid: std::process::id(),
        futex_addr: mutex.addr(),
        lock_rounds: rounds * lockers as u64,
        datagrams,
        threads,
    })
}

/// `workload futex-storm`: `threads` threads make non-blocking futex calls (FUTEX_WAKE on a
/// word nobody waits on) at `rate` calls/s in all, paced against the clock — two traced
/// events per call and no scheduling, so the bench can offer the recorder a rate it chooses
/// (the pairs storm is limited by how fast the scheduler hands a token over). Returns the
/// calls made.
pub fn futex_storm(threads: usize, rate: f64, duration: Duration) -> u64 {
    use std::time::Instant;
    /// Calls between looks at the clock.
    const BURST: u64 = 32;
    let start = Instant::now();
    let per_thread_ns = 1e9 * threads as f64 / rate;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("futex-storm-{i}"))
                .spawn(move || {
                    let word = AtomicU32::new(0);
                    let mut calls = 0u64;
                    loop {
                        let elapsed = start.elapsed();
                        if elapsed >= duration {
                            return calls;
                        }
                        // Ahead of the pace: sleep it off (spinning would take the CPU the
                        // recorder needs on a small machine).
                        let due = (elapsed.as_nanos() as f64 / per_thread_ns) as u64;
                        if calls > due + BURST {
                            let ahead = (calls - due) as f64 * per_thread_ns;
                            std::thread::sleep(Duration::from_nanos(ahead as u64));
                            continue;
                        }
                        for _ in 0..BURST {
                            futex(&word, libc::FUTEX_WAKE, 1);
                        }
                        calls += BURST;
                    }
                })
                .expect("spawning a futex-storm thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

/// `workload storm`: pairs of threads hand a token back and forth through a futex as fast as
/// they can — a futex/wakeup storm for capture-capacity tests and benchmarks. Returns the
/// number of handoffs.
pub fn storm(pairs: usize, duration: Duration) -> u64 {
    use std::sync::{atomic::AtomicBool, Condvar, Mutex};
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU32::new(0));
    let mut handles = Vec::new();
    for p in 0..pairs {
        let token = Arc::new((Mutex::new(0u8), Condvar::new()));
        for side in 0..2u8 {
            let (token, stop, total) = (token.clone(), stop.clone(), total.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("storm-{p}-{side}"))
                    .spawn(move || {
                        let (lock, cond) = &*token;
                        let mut n = 0u32;
                        let mut turn = lock.lock().unwrap();
                        while !stop.load(SeqCst) {
                            if *turn == side {
                                *turn = 1 - side;
                                n += 1;
                                cond.notify_one();
                            }
                            turn = cond
                                .wait_timeout(turn, Duration::from_millis(10))
                                .unwrap()
                                .0;
                        }
                        cond.notify_all();
                        total.fetch_add(n, SeqCst);
                    })
                    .expect("spawning a storm thread"),
            );
        }
    }
    std::thread::sleep(duration);
    stop.store(true, SeqCst);
    for h in handles {
        let _ = h.join();
    }
    u64::from(total.load(SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_futex_storm_keeps_to_its_pace() {
        // 20 000 calls/s for 0.2 s: never more than the pace allows (a thread may start a
        // burst while one burst ahead: two bursts of 32 of slack each); a slow spell of the
        // VM may make fewer, but not few.
        let calls = futex_storm(2, 20_000.0, Duration::from_millis(200));
        assert!(calls <= 4_000 + 2 * 2 * 32, "{calls} calls");
        assert!(calls >= 1_000, "{calls} calls");
    }
}

/// What `workload burst` did: the receiver, and when each datagram was sent.
#[derive(Clone, Debug, Serialize)]
pub struct BurstReport {
    pub receiver_tid: u32,
    pub sent: u64,
    pub received: u64,
    /// CLOCK_MONOTONIC ns just before each `send`, in order.
    pub send_ns: Vec<u64>,
}

/// A burst to a slow receiver: one thread sends `datagrams` datagrams of `size` bytes as fast
/// as it can while the receiver waits; then the receiver takes them one by one, working
/// `work` on each. Every datagram is queued on the socket at once, so a tracer must keep
/// `datagrams` arrival times per socket (or say which it lost).
pub fn burst(datagrams: u64, size: usize, work: Duration) -> std::io::Result<BurstReport> {
    let receiver = UdpSocket::bind(("127.0.0.1", 0))?;
    // Room for the whole burst (the kernel caps this at net.core.rmem_max).
    let rcvbuf: libc::c_int = 4 << 20;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&receiver),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const rcvbuf).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
    let addr = receiver.local_addr()?;
    let sent_all = Arc::new(Barrier::new(2));
    let sender = {
        let sent_all = Arc::clone(&sent_all);
        std::thread::Builder::new()
            .name("burst-sender".into())
            .spawn(move || -> std::io::Result<Vec<u64>> {
                let socket = UdpSocket::bind(("127.0.0.1", 0))?;
                let payload = vec![7u8; size];
                let mut send_ns = Vec::with_capacity(datagrams as usize);
                for _ in 0..datagrams {
                    send_ns.push(crate::clock::monotonic_ns());
                    socket.send_to(&payload, addr)?;
                }
                sent_all.wait();
                Ok(send_ns)
            })?
    };
    let receiver_tid = gettid();
    sent_all.wait();
    let mut buf = vec![0u8; 65536];
    let mut received = 0;
    while received < datagrams {
        match receiver.recv_from(&mut buf) {
            Ok(_) => received += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        }
        let until = std::time::Instant::now() + work;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let send_ns = sender
        .join()
        .map_err(|_| std::io::Error::other("the sender panicked"))??;
    Ok(BurstReport {
        receiver_tid,
        sent: send_ns.len() as u64,
        received,
        send_ns,
    })
}
