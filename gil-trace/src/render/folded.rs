//! Folded stacks (`thread;outer;…;inner;[what] ns`, one line per distinct stack) of the time
//! threads spent off a CPU, by where they blocked: lock waits (named by lock), I/O waits,
//! sleeps. A sampled Python thread's time is by its Python stacks instead (sampled: each sample
//! counts one sampling period, so widths are estimates). The format flamegraph tools read (inferno, Brendan Gregg's flamegraph.pl,
//! speedscope); `flamegraph` draws it with inferno.
use std::{collections::BTreeMap, fmt::Write};

use rustc_hash::FxHashSet;

use crate::{
    analysis::{contention::OffCpu, Analysis},
    model::{
        stack::{Stack, StackKey},
        timeline::ThreadState,
    },
};

/// The folded lines of `analysis`'s off-CPU time; `stack` names a stack (None: not in the
/// trace, shown as its key).
pub fn folded(analysis: &Analysis, stack: &mut dyn FnMut(StackKey) -> Option<Stack>) -> String {
    let report = &analysis.report;
    let thread = |tid: u32| {
        report
            .summary
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .map_or_else(
                || format!("tid {tid}"),
                |t| crate::model::threads::thread_label(&t.name, tid),
            )
    };
    // Threads with Python samples: their off-CPU time by Python stack, not native.
    let python: FxHashSet<u32> = analysis.py_time.iter().map(|o| o.tid).collect();
    let off_cpu = |o: &&OffCpu| {
        matches!(
            o.state,
            ThreadState::LockWait | ThreadState::IoWait | ThreadState::Sleep
        )
    };
    let native = analysis.off_cpu.iter().filter(|o| !python.contains(&o.tid));
    // Stacks that differ only in lines or addresses fold into one line.
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for &OffCpu {
        tid,
        stack: key,
        state,
        lock,
        ns,
    } in native.chain(analysis.py_time.iter().filter(off_cpu))
    {
        let frames: Vec<String> = match stack(key) {
            Some(s) => {
                let mut f: Vec<String> = s.frames.iter().rev().map(frame_name).collect();
                if s.truncated {
                    f.insert(0, "[truncated]".into());
                }
                f
            }
            None => vec![format!("[stack {key}]")],
        };
        let what = match (state, lock) {
            (ThreadState::LockWait, Some(id)) => format!(
                "[wait for {}]",
                analysis.locks.locks.get(id).map_or("a lock", |l| l.name())
            ),
            (ThreadState::LockWait, None) => "[lock wait]".into(),
            (ThreadState::IoWait, _) => "[I/O wait]".into(),
            _ => "[sleep]".into(),
        };
        let mut line = sanitize(&thread(tid));
        for f in &frames {
            line.push(';');
            line.push_str(&sanitize(f));
        }
        line.push(';');
        line.push_str(&sanitize(&what));
        *lines.entry(line).or_default() += ns;
    }
    let mut out = String::new();
    for (line, ns) in lines {
        let _ = writeln!(out, "{line} {ns}");
    }
    out
}

/// A frame as a flamegraph box: the function (file and line would split one function into
/// many boxes), else `module+offset`.
fn frame_name(f: &crate::model::stack::Frame) -> String {
    match (&f.function, &f.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => format!("{module}+{:#x}", f.offset),
        (None, None) => format!("{:#x}", f.offset),
    }
}

/// The folded format's separators (`;`, and the space before the count) cannot appear in a
/// frame; Rust and C++ names hold neither, other text might.
fn sanitize(s: &str) -> String {
    s.replace(';', ":").replace(['\n', '\r'], " ")
}

/// An SVG flamegraph of folded lines (inferno; deterministic colors, so the same trace draws
/// the same file).
pub fn flamegraph(folded: &str, title: &str) -> std::io::Result<Vec<u8>> {
    let mut opts = inferno::flamegraph::Options::default();
    title.clone_into(&mut opts.title);
    opts.subtitle = Some("time off a CPU by where threads blocked (lock waits, I/O, sleep)".into());
    "ns".clone_into(&mut opts.count_name);
    opts.deterministic = true;
    opts.colors =
        inferno::flamegraph::Palette::Basic(inferno::flamegraph::color::BasicPalette::Blue);
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, folded.lines(), &mut out)?;
    Ok(out)
}
