//! The Python sampler: for every traced process that is a CPython interpreter, a thread reads
//! each Python thread's stack, native thread id, `threading` name and whether it holds the
//! GIL (py-spy, non-blocking: the process is never stopped), at a fixed rate, stamped with
//! CLOCK_MONOTONIC like the kernel's events. Samples go to the event loop as `py_sample`
//! events; their frames and stacks, deduplicated, into the trace's code block. A process that
//! is not Python costs one look at its executable's name; one that cannot be read is a
//! warning, never a failed recording.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use gil_trace_common::{py_sample, CommSource, EventKind, RawEvent};
use rustc_hash::{FxHashMap, FxHashSet};

use super::recorder::monotonic_ns;
use crate::trace::code::{PyFrame, PyProcess, PyThread, PythonCode};

/// How long a process that looks like CPython gets to become readable (its interpreter
/// initialized) before it is given up on.
const READABLE_WITHIN: Duration = Duration::from_secs(5);
/// How often an unreadable candidate is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// How often the names of threads that had none (sampled before `threading` registered them,
/// or when a lookup was torn) are looked up again: py-spy waits a second, longer than many
/// threads live.
const NAMES_RETRY_EVERY: Duration = Duration::from_millis(100);

/// The sampler, started on the first traced process that looks like CPython: a recording of
/// anything else has no sampler thread and no Python samples.
pub struct PySampler {
    rate_hz: u32,
    out: mpsc::Sender<RawEvent>,
    samples: mpsc::Receiver<RawEvent>,
    /// Processes seen in the events.
    tgids: FxHashSet<u32>,
    /// Each process's executable when last looked at: looked at again after an exec.
    seen: FxHashMap<u32, PathBuf>,
    running: Option<Running>,
    /// Received, not yet written (in time order: one sampler thread stamps them).
    pending: VecDeque<RawEvent>,
    late: u64,
}

struct Running {
    stop: Arc<AtomicBool>,
    pids: mpsc::Sender<u32>,
    thread: JoinHandle<PythonCode>,
}

impl PySampler {
    /// A sampler at `rate_hz` per process.
    pub fn new(rate_hz: u32) -> PySampler {
        let (out, samples) = mpsc::channel();
        PySampler {
            rate_hz,
            out,
            samples,
            tgids: FxHashSet::default(),
            seen: FxHashMap::default(),
            running: None,
            pending: VecDeque::new(),
            late: 0,
        }
    }

    /// Notes a kernel event: a process not seen before, or one that just exec'd, is looked at.
    #[inline]
    pub fn observe(&mut self, event: &RawEvent) {
        let exec = event.kind == EventKind::Comm as u32 && event.args[2] == CommSource::Exec as u64;
        if (exec || !self.tgids.contains(&event.tgid)) && event.tgid_is_traced() {
            self.tgids.insert(event.tgid);
            self.consider(event.tgid);
        }
    }

    /// Takes in the samples made since the last call (`py_sample` events stamped with
    /// CLOCK_MONOTONIC when they were taken), to be written with [`Self::write_until`].
    pub fn receive(&mut self) {
        self.pending.extend(self.samples.try_iter());
    }

    /// Writes the samples received that were taken by `until`, in time order, so they go
    /// between the kernel's events of the same time; those stamped before the writer's
    /// holdback `floor` are counted and left out (see [`PythonCode::late_samples`]).
    pub fn write_until<E>(
        &mut self,
        until: u64,
        floor: u64,
        mut push: impl FnMut(&RawEvent) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(sample) = self.pending.front().filter(|s| s.ts_ns <= until) {
            if sample.ts_ns < floor {
                self.late += 1;
            } else {
                push(sample)?;
            }
            self.pending.pop_front();
        }
        Ok(())
    }

    /// A process seen in the events, or that just exec'd: sampled if it is CPython.
    pub fn consider(&mut self, tgid: u32) {
        let Ok(exe) = std::fs::read_link(format!("/proc/{tgid}/exe")) else {
            return;
        };
        if self.seen.get(&tgid) == Some(&exe) {
            return;
        }
        let cpython = looks_like_cpython(tgid, &exe);
        self.seen.insert(tgid, exe);
        if !cpython {
            return;
        }
        if self.running.is_none() {
            let stop = Arc::new(AtomicBool::new(false));
            let (pids, candidates) = mpsc::channel();
            let sampler = Sampler::new(self.rate_hz, self.out.clone());
            let spawned = std::thread::Builder::new()
                .name("gil-trace-py".into())
                .spawn({
                    let stop = Arc::clone(&stop);
                    move || sampler.run(&stop, &candidates)
                });
            match spawned {
                Ok(thread) => self.running = Some(Running { stop, pids, thread }),
                Err(e) => {
                    log::warn!("cannot start the Python sampler: {e}");
                    return;
                }
            }
        }
        if let Some(running) = &self.running {
            let _ = running.pids.send(tgid);
        }
    }

    /// Stops sampling; what it saw, if it sampled any Python (or tried to).
    pub fn finish(mut self) -> Option<PythonCode> {
        let running = self.running.take()?;
        running.stop.store(true, Ordering::Relaxed);
        let mut code = running.thread.join().ok()?;
        code.late_samples = self.late;
        (!code.processes.is_empty() || !code.errors.is_empty()).then_some(code)
    }
}

impl Drop for PySampler {
    /// A recording that failed (no [`PySampler::finish`]): the sampler thread stops too.
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::Relaxed);
            let _ = running.thread.join();
        }
    }
}

/// A process that looked like CPython and is being tried.
struct Candidate {
    pid: u32,
    since: Instant,
    last_try: Option<Instant>,
}

struct Spied {
    spy: py_spy::PythonSpy,
    stats: PyProcess,
    names_retried: Instant,
    /// When its last sample's read began (ns, CLOCK_MONOTONIC).
    last_sample_ns: Option<u64>,
    /// When its first did, and the time its reads took in all.
    first_sample_ns: Option<u64>,
    read_ns: u64,
}

/// The share of one CPU the sampler's reads may take. py-spy copies every frame's function
/// and file names at each read (~0.1 ms a thread; 17 ms for 200 threads): past this share the
/// sampler slows down rather than take a CPU from the traced service, and each sample stands
/// for the time since the one before.
const MAX_SAMPLER_CPU_SHARE: f64 = 0.1;
/// The longest the sampler waits between rounds, however slow one was (a read stalled).
const MAX_SAMPLER_WAIT: Duration = Duration::from_secs(1);
/// The sampler sleeps in slices of at most this, so a stop is not kept waiting.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

struct Sampler {
    period: Duration,
    /// The time between rounds now: the period, or longer when the reads would take more
    /// than their share of a CPU.
    interval: Duration,
    /// Whether that ever happened (the rate was then lower than asked).
    slowed: bool,
    out: mpsc::Sender<RawEvent>,
    config: py_spy::Config,
    code: PythonCode,
    frames: FxHashMap<PyFrame, u32>,
    stacks: FxHashMap<Vec<u32>, u32>,
    /// (process, thread) → its entry in the code block's thread names.
    names: FxHashMap<(u32, u32), usize>,
}

impl Sampler {
    fn new(rate_hz: u32, out: mpsc::Sender<RawEvent>) -> Sampler {
        let rate_hz = rate_hz.max(1);
        Sampler {
            period: Duration::from_secs(1) / rate_hz,
            interval: Duration::from_secs(1) / rate_hz,
            slowed: false,
            out,
            config: py_spy::Config {
                // Never stop the traced program to read it: a sample may be torn (then it
                // fails, and is counted), but the program runs as it would.
                blocking: py_spy::config::LockingStrategy::NonBlocking,
                ..py_spy::Config::default()
            },
            code: PythonCode {
                rate_hz,
                ..PythonCode::default()
            },
            frames: FxHashMap::default(),
            stacks: FxHashMap::default(),
            names: FxHashMap::default(),
        }
    }

    fn run(mut self, stop: &AtomicBool, pids: &mpsc::Receiver<u32>) -> PythonCode {
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut spied: Vec<Spied> = Vec::new();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            while let Ok(pid) = pids.try_recv() {
                // After an exec the process is a new interpreter: read afresh.
                if let Some(i) = spied.iter().position(|s| s.stats.tgid == pid) {
                    let gone = spied.swap_remove(i);
                    self.retire(gone);
                }
                if !candidates.iter().any(|c| c.pid == pid) {
                    candidates.push(Candidate {
                        pid,
                        since: Instant::now(),
                        last_try: None,
                    });
                }
            }
            candidates.retain_mut(|c| self.try_spy(c, &mut spied));
            let round = Instant::now();
            let mut i = 0;
            while i < spied.len() {
                if self.sample(&mut spied[i]) {
                    i += 1;
                } else {
                    // Gone: what it gave is kept.
                    let gone = spied.swap_remove(i);
                    self.retire(gone);
                }
            }
            // At the rate asked for, unless the reads would take more than their share. (A
            // process's first read, `try_spy`, is once: not counted.)
            let share = round.elapsed().div_f64(MAX_SAMPLER_CPU_SHARE);
            self.interval = self.period.max(share.min(MAX_SAMPLER_WAIT));
            self.slowed |= self.interval > self.period;
            next = (next + self.period).max(round + self.interval);
            let now = Instant::now();
            if next > now {
                let until = next;
                while !stop.load(Ordering::Relaxed) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(SLEEP_SLICE));
                }
            } else {
                next = now;
            }
        }
        for s in spied {
            self.retire(s);
        }
        self.code
    }

    /// Keeps what a process's sampling gave, and says so when it was slower than asked (its
    /// reads would have taken more than their share of a CPU): a report warning.
    fn retire(&mut self, s: Spied) {
        if let (Some(first), Some(last)) = (s.first_sample_ns, s.last_sample_ns) {
            // Every read, failed ones too: the rate is the sampler's, not the reads' success.
            let rounds = (s.stats.samples + s.stats.failed).saturating_sub(1);
            let asked_hz = 1e9 / self.period.as_nanos() as f64;
            let hz = rounds as f64 * 1e9 / last.saturating_sub(first).max(1) as f64;
            if self.slowed && rounds >= 10 && hz < 0.9 * asked_hz {
                self.code.errors.push(format!(
                    "pid {}: Python stacks sampled at {hz:.0} Hz, not the {asked_hz:.0} Hz asked: \
                     each read took {:.1} ms, and the sampler keeps its reads (of every sampled \
                     process) within {:.0} % of a CPU (each sample stands for the time since the \
                     one before)",
                    s.stats.tgid,
                    s.read_ns as f64 / 1e6 / s.stats.samples as f64,
                    MAX_SAMPLER_CPU_SHARE * 100.0,
                ));
            }
        }
        self.code.processes.push(s.stats);
    }

    /// Tries to read candidate `c`'s interpreter; false once it is decided (spied, or given
    /// up on).
    fn try_spy(&mut self, c: &mut Candidate, spied: &mut Vec<Spied>) -> bool {
        if c.last_try.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return true;
        }
        c.last_try = Some(Instant::now());
        match py_spy::PythonSpy::new(c.pid as py_spy::Pid, &self.config) {
            Ok(spy) => {
                log::info!(
                    "sampling the Python stacks of pid {} (CPython {})",
                    c.pid,
                    spy.version
                );
                spied.push(Spied {
                    stats: PyProcess {
                        tgid: c.pid,
                        version: spy.version.to_string(),
                        samples: 0,
                        failed: 0,
                    },
                    spy,
                    names_retried: Instant::now(),
                    last_sample_ns: None,
                    first_sample_ns: None,
                    read_ns: 0,
                });
                false
            }
            Err(_) if !process_exists(c.pid) => false,
            Err(e) if c.since.elapsed() > READABLE_WITHIN => {
                self.code.errors.push(format!(
                    "pid {}: its Python state could not be read ({e}); kernel-only report",
                    c.pid
                ));
                false
            }
            Err(_) => true,
        }
    }

    /// Samples one process; false when it is gone.
    fn sample(&mut self, s: &mut Spied) -> bool {
        if s.names_retried.elapsed() >= NAMES_RETRY_EVERY {
            s.names_retried = Instant::now();
            // A thread without a name is looked up again on this sample.
            s.spy.python_thread_names.retain(|_, name| name.is_some());
        }
        let ts_ns = monotonic_ns();
        let Ok(traces) = s.spy.get_stack_traces() else {
            s.stats.failed += 1;
            return process_exists(s.stats.tgid);
        };
        // The read takes tens of µs: a GIL handoff within it can be seen by the sample though
        // the kernel dates it after the sample's start (the analysis compares over the span).
        let read_ns = monotonic_ns().saturating_sub(ts_ns);
        s.read_ns += read_ns;
        s.first_sample_ns.get_or_insert(ts_ns);
        s.stats.samples += 1;
        // What the sample stands for: the time since the process's last one (longer than the
        // period when the sampler slowed down, or a read failed; the interval for its first).
        let period_ns = s
            .last_sample_ns
            .replace(ts_ns)
            .map_or(self.interval.as_nanos() as u64, |last| {
                ts_ns.saturating_sub(last)
            });
        for trace in traces {
            let Some(tid) = trace.os_thread_id else {
                continue;
            };
            let tid = tid as u32;
            if let Some(name) = trace.thread_name {
                self.name(s.stats.tgid, tid, name);
            }
            let frames: Vec<u32> = trace
                .frames
                .into_iter()
                .map(|f| {
                    let frame = PyFrame {
                        name: f.name,
                        file: f.short_filename.unwrap_or(f.filename),
                        line: f.line,
                    };
                    let next = self.frames.len() as u32;
                    *self.frames.entry(frame.clone()).or_insert_with(|| {
                        self.code.frames.push(frame);
                        next
                    })
                })
                .collect();
            let stack = if frames.is_empty() {
                py_sample::NO_FRAMES
            } else {
                let next = self.stacks.len() as u32;
                let id = *self.stacks.entry(frames.clone()).or_insert_with(|| {
                    self.code.stacks.push(frames);
                    next
                });
                u64::from(id)
            };
            let flags = if trace.owns_gil {
                py_sample::OWNS_GIL
            } else {
                0
            } | if trace.active { py_sample::ACTIVE } else { 0 };
            let _ = self.out.send(RawEvent {
                ts_ns,
                kind: EventKind::PySample as u32,
                tid,
                tgid: s.stats.tgid,
                cpu: 0,
                args: [stack, flags, period_ns, read_ns],
            });
        }
        true
    }

    fn name(&mut self, tgid: u32, tid: u32, name: String) {
        if let Some(&i) = self.names.get(&(tgid, tid)) {
            self.code.threads[i].name = name;
        } else {
            self.names.insert((tgid, tid), self.code.threads.len());
            self.code.threads.push(PyThread { tgid, tid, name });
        }
    }
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Does `pid` run a CPython (its executable, or a library it maps, is named like one)? Others
/// are never sampled.
fn looks_like_cpython(pid: u32, exe: &Path) -> bool {
    let named = |name: &str| name.starts_with("python") || name.starts_with("libpython");
    exe.file_name().and_then(|n| n.to_str()).is_some_and(named)
        || std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|maps| maps.contains("/libpython"))
}
