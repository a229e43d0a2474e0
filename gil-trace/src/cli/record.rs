//! `gil-trace record`.
use std::process::ExitCode;

use anyhow::{bail, Result};

use gil_trace_common::UserStacks;
use nix::sys::signal::Signal;

use super::args::{RecordArgs, StackChoice};
use crate::{
    capture::{self, probes::ProbeOptions, RecordOptions, StopReason, Target},
    trace::format::ExitInfo,
};

pub(crate) fn record(args: RecordArgs, quiet: bool) -> Result<ExitCode> {
    let attached = args.pid.is_some();
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, false) => Target::Command(args.command),
        (None, true) => bail!("nothing to trace: give a command after `--`, or -p PID"),
    };
    // A benchmark aid (not a CLI option: the trace it writes is empty on purpose).
    let dispatch_only = std::env::var_os("GIL_TRACE_DISPATCH_ONLY").is_some();
    if dispatch_only {
        eprintln!("gil-trace: GIL_TRACE_DISPATCH_ONLY is set: the programs return at once, nothing is recorded");
    }
    let outcome = capture::record(&RecordOptions {
        output: args.output,
        target,
        duration: args.duration,
        probes: ProbeOptions {
            buffer_size: args.buffer_size,
            measure_cost: args.cost,
            dispatch_only,
            // A test and benchmark aid: the same events, written as two records per syscall.
            split_calls: std::env::var_os("GIL_TRACE_SPLIT_CALLS").is_some(),
            user_stacks: match (args.no_stacks, args.stacks) {
                (true, _) | (_, StackChoice::None) => UserStacks::None,
                (false, StackChoice::Locks) => UserStacks::Locks,
                (false, StackChoice::All) => UserStacks::All,
            },
        },
        live_status: !quiet,
        python_rate_hz: (!args.no_py).then_some(args.py_rate),
        command_outlives_duration: false,
        with_descendants: false,
    })?;
    if !quiet {
        eprintln!(
            "gil-trace: wrote {} ({} events, {} lost; stopped: {})",
            outcome.path.display(),
            outcome.events,
            outcome.lost,
            outcome.stop_reason
        );
    }
    if let Some(cost) = outcome.cost.as_ref().filter(|_| args.cost) {
        let per_event = |ns: u64| ns as f64 / outcome.events.max(1) as f64;
        let (bpf_ns, runs) = (cost.bpf_run_ns.unwrap_or(0), cost.bpf_runs.unwrap_or(0));
        // The recorder's loading and finishing cost the same whatever the trace's length, and
        // run before and after the traced program: per event, only the recording is.
        let recording = cost.recording_cpu_ns.unwrap_or(cost.recorder_cpu_ns);
        eprintln!(
            "gil-trace: capture cost: eBPF {:.1} ms in {runs} runs ({:.0} ns/run, {:.0} ns/event), recorder {:.1} ms CPU while recording ({:.0} ns/event) and {:.1} ms to load and finish",
            bpf_ns as f64 / 1e6,
            bpf_ns as f64 / runs.max(1) as f64,
            per_event(bpf_ns),
            recording as f64 / 1e6,
            per_event(recording),
            cost.recorder_cpu_ns.saturating_sub(recording) as f64 / 1e6,
        );
        for p in &cost.bpf_programs {
            eprintln!(
                "gil-trace:   {:<28} {:>10} runs {:>6.0} ns/run",
                p.program,
                p.runs,
                p.run_ns as f64 / p.runs.max(1) as f64
            );
        }
    }
    let by_signal = match outcome.stop_reason {
        StopReason::Signal(sig) => Some(sig),
        _ => None,
    };
    Ok(command_status(outcome.exit, by_signal, !attached))
}

/// The command's exit status passed through, like `time`. Stopped by a signal while a
/// command gil-trace started still ran (a second Ctrl-C): 128 + that signal, as a shell would
/// report it. 0 when watching a process gil-trace did not start.
pub(super) fn command_status(
    exit: Option<ExitInfo>,
    by_signal: Option<Signal>,
    started: bool,
) -> ExitCode {
    match (exit, by_signal) {
        (Some(exit), _) => match (exit.code, exit.signal) {
            (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
            (_, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
            _ => ExitCode::SUCCESS,
        },
        (None, Some(sig)) if started => ExitCode::from((128 + sig as i32).clamp(0, 255) as u8),
        _ => ExitCode::SUCCESS,
    }
}
