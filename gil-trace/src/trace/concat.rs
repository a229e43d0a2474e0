//! Whole traces appended into one, in time order: `top -o FILE` keeps every window it records
//! (each a complete trace of its own) as one trace that `report`, `export` and `dump` read like
//! any other.
//!
//! Each window's programs were loaded afresh, so its user stack ids (the kernel's stack map
//! buckets) and its Python stack ids (indexes into its own table) mean nothing in another
//! window: every reference is renumbered into one deduplicated table. Modules, mappings and
//! the Python tables are merged the same way. Between two windows nothing was recorded: a
//! `Lost` marker with a count of 0 says so, so the analysis neither charges that time to a
//! thread's last known state nor trusts a convoy across it.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use gil_trace_common::{py_sample, stack_ref, EventKind, RawEvent};

use super::{
    code::{CodeMap, Module, PyFrame, PythonCode, UserStack},
    format::{CaptureCost, ExitInfo, LostCounts, TraceTrailer},
    output::TempTrace,
    TraceError, TraceReader, TraceWriter,
};

/// The trace being assembled from windows.
pub struct TraceConcat {
    final_path: PathBuf,
    temp: Option<TempTrace>,
    writer: Option<TraceWriter>,
    code: CodeMap,
    modules: HashMap<Module, u32>,
    stacks: HashMap<Vec<u64>, u32>,
    py_frames: HashMap<PyFrame, u32>,
    py_stacks: HashMap<Vec<u32>, u32>,
    trailer: TraceTrailer,
    /// The end of the last window appended.
    last_end_ns: Option<u64>,
    windows: u64,
}

impl TraceConcat {
    /// Writes into `temp` (created by the caller, e.g. as the invoking user); the header is
    /// the first window's.
    pub fn new(temp: TempTrace) -> TraceConcat {
        TraceConcat {
            final_path: temp.final_path().to_path_buf(),
            temp: Some(temp),
            writer: None,
            code: CodeMap::default(),
            modules: HashMap::new(),
            stacks: HashMap::new(),
            py_frames: HashMap::new(),
            py_stacks: HashMap::new(),
            trailer: TraceTrailer::default(),
            last_end_ns: None,
            windows: 0,
        }
    }

    /// Windows appended so far (whole: one that failed half way is not counted).
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Appends the trace at `path`, which starts after the last one appended ended.
    pub fn append(&mut self, path: &Path) -> Result<(), TraceError> {
        let mut reader = TraceReader::open(path)?;
        let code = reader.code_map()?.unwrap_or_default();
        let meta = reader.meta().clone();
        let writer = match (self.writer.as_mut(), self.temp.take()) {
            (Some(writer), _) => writer,
            (None, Some(temp)) => self.writer.insert(TraceWriter::to_temp(temp, &meta)?),
            // Its header could not be written: the file is gone.
            (None, None) => {
                return Err(TraceError::Io {
                    path: self.final_path.clone(),
                    what: "the kept trace could not be started",
                    source: std::io::Error::other("its header was not written"),
                })
            }
        };
        if let Some(end) = self.last_end_ns {
            if meta.start_monotonic_ns > end {
                writer.push(&not_recorded(end, meta.start_monotonic_ns))?;
            }
        }
        let stack_ids = remap_stacks(&mut self.stacks, &mut self.code.stacks, &code.stacks);
        let py_ids = match &code.python {
            Some(python) => merge_python(
                self.code.python.get_or_insert_with(PythonCode::default),
                &mut self.py_frames,
                &mut self.py_stacks,
                python,
            ),
            None => HashMap::new(),
        };
        // Before the events: should they fail half way, the part written still resolves.
        merge_maps(&mut self.code, &mut self.modules, &code);
        let mut block = Vec::new();
        while reader.next_block(&mut block)? {
            for raw in &mut block {
                renumber(raw, &stack_ids, &py_ids);
                writer.push(raw)?;
            }
        }
        let window = reader.trailer();
        merge_trailer(&mut self.trailer, window);
        self.last_end_ns = Some(window.end_monotonic_ns.max(meta.start_monotonic_ns));
        self.windows += 1;
        Ok(())
    }

    /// Writes the code block and the trailer (`exit`: how the watched command ended, when it
    /// was reaped after the last window); the caller puts the file in place. None when no
    /// window was started (there is nothing to keep).
    pub fn finish(self, exit: Option<ExitInfo>) -> Result<Option<TempTrace>, TraceError> {
        let Some(mut writer) = self.writer else {
            return Ok(None);
        };
        let mut trailer = self.trailer;
        if exit.is_some() {
            trailer.exit = exit;
        }
        writer.set_code_map(self.code);
        writer.finish_unpersisted(trailer).map(Some)
    }
}

/// The marker for `[since_ns, until_ns]`, when nothing was recorded.
fn not_recorded(since_ns: u64, until_ns: u64) -> RawEvent {
    RawEvent {
        ts_ns: until_ns,
        kind: EventKind::Lost as u32,
        tid: 0,
        tgid: 0,
        cpu: 0,
        args: [0, since_ns, 0, 0],
    }
}

/// `item`'s index in `table`, appended if new (`ids` indexes the table by value).
fn intern<T: Clone + Eq + std::hash::Hash>(
    ids: &mut HashMap<T, u32>,
    table: &mut Vec<T>,
    item: &T,
) -> u32 {
    *ids.entry(item.clone()).or_insert_with(|| {
        table.push(item.clone());
        table.len() as u32 - 1
    })
}

/// Adds `window`'s stacks to the merged table; returns window id → merged id.
fn remap_stacks(
    by_ips: &mut HashMap<Vec<u64>, u32>,
    merged: &mut Vec<UserStack>,
    window: &[UserStack],
) -> HashMap<u32, u32> {
    window
        .iter()
        .map(|stack| {
            let id = *by_ips.entry(stack.ips.clone()).or_insert_with(|| {
                let id = merged.len() as u32;
                merged.push(UserStack {
                    id,
                    ips: stack.ips.clone(),
                });
                id
            });
            (stack.id, id)
        })
        .collect()
}

/// Adds `window`'s Python frames, stacks, threads and processes; returns window stack id →
/// merged stack id.
fn merge_python(
    merged: &mut PythonCode,
    frames: &mut HashMap<PyFrame, u32>,
    stacks: &mut HashMap<Vec<u32>, u32>,
    window: &PythonCode,
) -> HashMap<u32, u32> {
    merged.rate_hz = window.rate_hz;
    let frame_ids: Vec<u32> = window
        .frames
        .iter()
        .map(|frame| intern(frames, &mut merged.frames, frame))
        .collect();
    let stack_ids = window
        .stacks
        .iter()
        .enumerate()
        .map(|(i, stack)| {
            // A frame index out of the window's table becomes one out of the merged table:
            // it stays unresolved.
            let renumbered: Vec<u32> = stack
                .iter()
                .map(|&f| frame_ids.get(f as usize).copied().unwrap_or(u32::MAX))
                .collect();
            (i as u32, intern(stacks, &mut merged.stacks, &renumbered))
        })
        .collect();
    for thread in &window.threads {
        match merged
            .threads
            .iter_mut()
            .find(|t| t.tgid == thread.tgid && t.tid == thread.tid)
        {
            Some(t) => t.name.clone_from(&thread.name),
            None => merged.threads.push(thread.clone()),
        }
    }
    for process in &window.processes {
        match merged.processes.iter_mut().find(|p| p.tgid == process.tgid) {
            Some(p) => {
                p.samples += process.samples;
                p.failed += process.failed;
                p.version.clone_from(&process.version);
            }
            None => merged.processes.push(process.clone()),
        }
    }
    for error in &window.errors {
        if !merged.errors.contains(error) {
            merged.errors.push(error.clone());
        }
    }
    merged.late_samples += window.late_samples;
    stack_ids
}

/// Adds `window`'s modules and mappings (a later read of a process's maps wins where they
/// overlap, as within one recording).
fn merge_maps(merged: &mut CodeMap, by_module: &mut HashMap<Module, u32>, window: &CodeMap) {
    let module_ids: Vec<u32> = window
        .modules
        .iter()
        .map(|module| intern(by_module, &mut merged.modules, module))
        .collect();
    for process in &window.processes {
        let mappings: Vec<_> = process
            .mappings
            .iter()
            .map(|m| super::code::Mapping {
                module: m.module.and_then(|i| module_ids.get(i as usize).copied()),
                ..*m
            })
            .collect();
        match merged.processes.iter_mut().find(|p| p.tgid == process.tgid) {
            Some(p) => p.merge(&mappings),
            None => merged.processes.push(super::code::ProcessMaps {
                tgid: process.tgid,
                mappings,
            }),
        }
    }
}

/// The event's stack references in merged ids (a reference the window's table lacks, e.g.
/// a stack the kernel could not store, stays unresolved).
fn renumber(raw: &mut RawEvent, stacks: &HashMap<u32, u32>, py_stacks: &HashMap<u32, u32>) {
    let merged = |id: Option<u32>| {
        id.map_or(0, |id| {
            stacks
                .get(&id)
                .map_or(stack_ref::of(u32::MAX - 1), |&m| stack_ref::of(m))
        })
    };
    match EventKind::try_from(raw.kind) {
        Ok(EventKind::SchedSwitch) => {
            let shift = stack_ref::SCHED_SWITCH_SHIFT;
            let reference = merged(stack_ref::id(raw.args[3] >> shift));
            raw.args[3] = (raw.args[3] & 0xffff_ffff) | reference << shift;
        }
        Ok(EventKind::FutexExit) => {
            let arg = &mut raw.args[stack_ref::FUTEX_EXIT_ARG];
            *arg = (*arg & !0xffff_ffff) | merged(stack_ref::id(*arg));
        }
        // A stack id out of the window's table becomes one out of the merged table (still
        // unresolved, not "no frames").
        Ok(EventKind::PySample) if raw.args[0] != py_sample::NO_FRAMES => {
            raw.args[0] = py_stacks
                .get(&(raw.args[0] as u32))
                .map_or(py_sample::NO_FRAMES - 1, |&id| u64::from(id));
        }
        _ => {}
    }
}

/// Adds a window's totals: losses, threads (a later name wins), capture cost; the end and
/// why it stopped are the last window's.
fn merge_trailer(merged: &mut TraceTrailer, window: &TraceTrailer) {
    merged.end_monotonic_ns = window.end_monotonic_ns;
    merged.stop_reason.clone_from(&window.stop_reason);
    if window.exit.is_some() {
        merged.exit.clone_from(&window.exit);
    }
    add_lost(&mut merged.lost, &window.lost);
    for thread in &window.threads {
        match merged.threads.iter_mut().find(|t| t.tid == thread.tid) {
            Some(t) => {
                if !thread.name.is_empty() {
                    t.name.clone_from(&thread.name);
                }
                if thread.tgid != 0 {
                    t.tgid = thread.tgid;
                }
            }
            None => merged.threads.push(thread.clone()),
        }
    }
    // The recorder's CPU is its process's so far (every window of one watch): the last
    // window's is the whole.
    if let Some(cost) = &window.capture_cost {
        let merged = merged.capture_cost.get_or_insert_with(CaptureCost::default);
        merged.recorder_cpu_ns = merged.recorder_cpu_ns.max(cost.recorder_cpu_ns);
        merged.recording_cpu_ns = merged.recording_cpu_ns.max(cost.recording_cpu_ns);
    }
}

fn add_lost(merged: &mut LostCounts, window: &LostCounts) {
    merged.total += window.total;
    for (kind, n) in &window.by_kind {
        *merged.by_kind.entry(kind.clone()).or_default() += n;
    }
    if merged.by_cpu.len() < window.by_cpu.len() {
        merged
            .by_cpu
            .resize_with(window.by_cpu.len(), Default::default);
    }
    for (cpu, kinds) in window.by_cpu.iter().enumerate() {
        for (kind, n) in kinds {
            *merged.by_cpu[cpu].entry(kind.clone()).or_default() += n;
        }
    }
    merged.threads_not_followed += window.threads_not_followed;
    merged.stacks_not_recorded += window.stacks_not_recorded;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{
        code::{Mapping, ProcessMaps, PyProcess, PyThread},
        format::ThreadInfo,
        Event, EventData, TraceMeta,
    };

    const TGID: u32 = 100;

    fn raw(ts_ns: u64, kind: EventKind, tid: u32, args: [u64; 4]) -> RawEvent {
        RawEvent {
            ts_ns,
            kind: kind as u32,
            tid,
            tgid: TGID,
            cpu: 0,
            args,
        }
    }

    /// A blocking switch and a waking futex exit with user stack `stack` (window id), and a
    /// Python sample of stack `py`.
    fn events_with_stacks(start: u64, stack: u32, py: u64) -> Vec<RawEvent> {
        vec![
            raw(
                start + 10,
                EventKind::SchedSwitch,
                101,
                [0, 1, 120, 1 | stack_ref::of(stack) << 32],
            ),
            raw(
                start + 20,
                EventKind::FutexExit,
                102,
                [1, 0, stack_ref::of(stack), 0],
            ),
            raw(start + 30, EventKind::PySample, 101, [py, 1, 1_000_000, 0]),
        ]
    }

    fn frame(name: &str) -> PyFrame {
        PyFrame {
            name: name.into(),
            file: "lab.py".into(),
            line: 1,
        }
    }

    /// A window trace from `start` to `start + 1000`: its stack 5 is `ips`, its Python stack
    /// 0 is the one frame `function`, in a module at `module_path`.
    fn window(dir: &Path, n: u32, start: u64, ips: Vec<u64>, function: &str) -> PathBuf {
        let path = dir.join(format!("window{n}.trace"));
        let meta = TraceMeta {
            root_pid: TGID,
            start_monotonic_ns: start,
            ..TraceMeta::default()
        };
        let mut writer = TraceWriter::create(&path, &meta).unwrap();
        for ev in events_with_stacks(start, 5, 0) {
            writer.push(&ev).unwrap();
        }
        writer.set_code_map(CodeMap {
            modules: vec![Module {
                path: format!("/lib/module{n}.so"),
                build_id: None,
            }],
            processes: vec![ProcessMaps {
                tgid: TGID,
                mappings: vec![Mapping {
                    start: 0x1000 * u64::from(n + 1),
                    end: 0x1000 * u64::from(n + 2),
                    offset: 0,
                    module: Some(0),
                    exec: true,
                }],
            }],
            stacks: vec![UserStack { id: 5, ips }],
            python: Some(PythonCode {
                rate_hz: 100,
                frames: vec![frame(function)],
                stacks: vec![vec![0]],
                threads: vec![PyThread {
                    tgid: TGID,
                    tid: 101,
                    name: format!("Thread-{n}"),
                }],
                processes: vec![PyProcess {
                    tgid: TGID,
                    version: "3.11.7".into(),
                    samples: 10,
                    failed: 1,
                }],
                ..PythonCode::default()
            }),
        });
        writer
            .finish(TraceTrailer {
                end_monotonic_ns: start + 1_000,
                stop_reason: "duration".into(),
                lost: LostCounts {
                    total: 2,
                    by_kind: [("sched_switch".to_string(), 2)].into(),
                    ..LostCounts::default()
                },
                threads: vec![ThreadInfo {
                    tid: 101,
                    tgid: TGID,
                    name: format!("worker{n}"),
                }],
                ..TraceTrailer::default()
            })
            .unwrap()
    }

    #[test]
    fn windows_with_the_same_stack_ids_keep_each_its_own_stacks_and_the_gap_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let first = window(dir.path(), 0, 1_000, vec![0x1010, 0x1020], "spin");
        let second = window(dir.path(), 1, 5_000, vec![0x2010, 0x2020], "echo");
        let kept = dir.path().join("kept.trace");
        let mut concat = TraceConcat::new(TempTrace::create(&kept).unwrap());
        concat.append(&first).unwrap();
        concat.append(&second).unwrap();
        assert_eq!(concat.windows(), 2);
        let exit = ExitInfo {
            code: Some(3),
            signal: None,
        };
        concat
            .finish(Some(exit.clone()))
            .unwrap()
            .unwrap()
            .persist(false)
            .unwrap();

        let mut reader = TraceReader::open(&kept).unwrap();
        let code = reader.code_map().unwrap().unwrap();
        let mut events = Vec::new();
        let mut block = Vec::new();
        while reader.next_block(&mut block).unwrap() {
            events.extend(block.iter().map(|r| Event::from(*r)));
        }
        assert_eq!(events.len(), 7, "3 + the gap marker + 3");
        assert_eq!(reader.meta().start_monotonic_ns, 1_000);
        let trailer = reader.trailer();
        assert_eq!(trailer.end_monotonic_ns, 6_000);
        assert_eq!(trailer.exit, Some(exit));
        assert_eq!(trailer.lost.total, 4);
        assert_eq!(trailer.lost.by_kind["sched_switch"], 4);
        assert_eq!(trailer.threads.len(), 2, "{:?}", trailer.threads);
        assert_eq!(
            trailer.threads.iter().find(|t| t.tid == 101).unwrap().name,
            "worker1",
            "the later name"
        );
        assert!(
            matches!(
                events[3].data,
                EventData::Lost {
                    count: 0,
                    since_ns: 2_000
                }
            ) && events[3].ts_ns == 5_000,
            "{:?}",
            events[3]
        );
        // Each window's stack 5 is its own stack, named by its own module.
        let stack_of = |ev: &Event| match ev.data {
            EventData::Switch { stack, .. } | EventData::FutexExit { stack, .. } => stack,
            _ => None,
        };
        for (window, events, ips) in [
            (0, &events[..3], [0x1010, 0x1020]),
            (1, &events[4..], [0x2010, 0x2020]),
        ] {
            for ev in &events[..2] {
                let id = stack_of(ev).unwrap_or_else(|| panic!("no stack: {ev:?}"));
                assert_eq!(code.stack(id), Some(&ips[..]), "window {window}: {ev:?}");
            }
            let maps = code.process(TGID).unwrap();
            let module = maps.find(ips[0]).unwrap().module.unwrap();
            assert_eq!(
                code.modules[module as usize].path,
                format!("/lib/module{window}.so")
            );
        }
        let python = code.python.as_ref().unwrap();
        let function = |ev: &Event| match ev.data {
            EventData::PySample {
                stack: Some(stack), ..
            } => python.frames[python.stacks[stack as usize][0] as usize]
                .name
                .clone(),
            _ => panic!("not a sample with a stack: {ev:?}"),
        };
        assert_eq!(function(&events[2]), "spin");
        assert_eq!(function(&events[6]), "echo");
        assert_eq!(python.processes[0].samples, 20);
        assert_eq!(python.threads.len(), 1);
        assert_eq!(python.threads[0].name, "Thread-1");
    }

    #[test]
    fn nothing_appended_leaves_nothing_to_keep() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.trace");
        let concat = TraceConcat::new(TempTrace::create(&kept).unwrap());
        assert!(concat.finish(None).unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
