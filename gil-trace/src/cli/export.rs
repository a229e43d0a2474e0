//! `gil-trace export`: a trace for other viewers, written as the analysis streams.
use std::{
    cell::RefCell,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context, Result};
use gil_trace_common::EventKind;

use super::{
    args::{input_trace, ExportArgs, ExportFormat},
    out,
};
use crate::{
    analysis::{
        contention::{HandoffEvent, IoOp, RowSink},
        ReportOptions,
    },
    model::stack::StackKey,
    pipeline,
    render::{chrome::ChromeJson, perfetto::PerfettoTrace},
    trace::{stream::KindMask, Decoding, EventData, TraceReader},
};

/// Rows to a writer that the span sink also writes to.
struct Shared<'a, T: RowSink>(&'a RefCell<T>);

impl<T: RowSink> RowSink for Shared<'_, T> {
    fn handoff(&mut self, event: HandoffEvent) {
        self.0.borrow_mut().handoff(event);
    }

    fn datagram(&mut self, op: IoOp) {
        self.0.borrow_mut().datagram(op);
    }
}

pub(crate) fn export(args: &ExportArgs, quiet: bool) -> Result<ExitCode> {
    let trace = input_trace(args.trace.as_deref())?;
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout {
        out::check_output(&args.output, &[&trace])?;
    }
    let reader = TraceReader::open(&trace)?;
    let start = reader.meta().start_monotonic_ns;
    let opts = ReportOptions {
        window: args.window.map(|w| w.absolute(start)),
        tid: args.tid,
        lock: args.lock,
        convoy_threshold_ns: args.convoy_threshold,
        // Every row goes to the writer as it is found (none is kept).
        detail: matches!(
            args.format,
            ExportFormat::ChromeJson | ExportFormat::Perfetto
        ),
        detail_window: None,
    };
    let open_sink = || -> Result<BufWriter<Box<dyn Write>>> {
        let sink: Box<dyn Write> = if to_stdout {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(
                std::fs::File::create(&args.output)
                    .with_context(|| format!("creating {}", args.output.display()))?,
            )
        };
        Ok(BufWriter::with_capacity(1 << 20, sink))
    };
    let (mut sink, what) = match args.format {
        ExportFormat::ChromeJson => {
            let mut sink = open_sink()?;
            let what = chrome_json(&trace, reader, opts, args.tid, &mut sink)?;
            (sink, what)
        }
        ExportFormat::Perfetto => {
            let mut sink = open_sink()?;
            let what = perfetto(&trace, reader, opts, args.tid, &mut sink)?;
            (sink, what)
        }
        ExportFormat::Folded => {
            let mut analysed =
                pipeline::analyse(&trace, reader, opts, Decoding::for_machine(), false)?;
            let folded = pipeline::folded(&analysed.analysis, &mut analysed.symbols);
            if folded.is_empty() {
                anyhow::bail!(
                    "{}: no stacks to fold (recorded with --no-stacks, or by a gil-trace without them)",
                    trace.display()
                );
            }
            let mut sink = open_sink()?;
            sink.write_all(folded.as_bytes())
                .with_context(|| format!("writing {}", shown(&args.output)))?;
            (sink, format!("{} stacks", folded.lines().count()))
        }
    };
    sink.flush()
        .with_context(|| format!("writing {}", shown(&args.output)))?;
    if !quiet {
        eprintln!("gil-trace: wrote {} ({what})", shown(&args.output));
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams the Chrome Trace Event document into `sink`; says how many state slices it wrote.
fn chrome_json(
    trace: &Path,
    reader: TraceReader,
    opts: ReportOptions,
    tid: Option<u32>,
    sink: &mut dyn Write,
) -> Result<String> {
    let writer = RefCell::new(ChromeJson::new(
        sink,
        reader.meta().start_monotonic_ns,
        &reader.trailer().threads.clone(),
        tid,
    ));
    let (analysis, _) = pipeline::analyse_into(
        trace,
        reader,
        opts,
        Decoding::for_machine(),
        &mut Shared(&writer),
        |span| writer.borrow_mut().span(span),
    )?;
    let mut report = analysis.report;
    if let Some(tid) = tid {
        report.retain_threads(|t| t.tid == tid);
    }
    let (_, slices) = writer
        .into_inner()
        .finish(&report)
        .context("writing the export")?;
    Ok(format!("{slices} state slices"))
}

/// Streams the Perfetto trace into `sink`: the analysis' tracks, then the scheduler's events
/// in a second pass over the file (within the window); says what it wrote.
fn perfetto(
    trace: &Path,
    reader: TraceReader,
    opts: ReportOptions,
    tid: Option<u32>,
    sink: &mut dyn Write,
) -> Result<String> {
    let window = opts.window;
    let writer = RefCell::new(PerfettoTrace::new(sink, &reader.trailer().threads, tid));
    let (analysis, mut symbols) = pipeline::analyse_into(
        trace,
        reader,
        opts,
        Decoding::for_machine(),
        &mut Shared(&writer),
        |_| {},
    )?;
    let mut writer = writer.into_inner();
    writer.analysed(&analysis.report);
    // The futex exits only for the stacks of holders waking their waiters.
    let kinds = KindMask::of(&[
        EventKind::SchedSwitch,
        EventKind::SchedWaking,
        EventKind::FutexExit,
    ]);
    for event in TraceReader::open(trace)?.events_of(kinds) {
        let event = event?;
        if window.is_none_or(|(from, to)| (from..=to).contains(&event.ts_ns)) {
            writer.sched(&event);
            let stack = match event.data {
                EventData::Switch { stack, .. } | EventData::FutexExit { stack, .. } => stack,
                _ => None,
            };
            if let Some(id) = stack {
                let key = StackKey {
                    tgid: event.tgid,
                    id,
                };
                if let Some(named) = symbols.stack(key) {
                    writer.stack_sample(&event, key, named);
                }
            }
        }
    }
    let (_, counts) = writer.finish().context("writing the export")?;
    Ok(format!(
        "{} sched_switch, {} sched_waking, {} holder slices, {} handoff flows, {} arrivals, {} convoys, {} stack samples",
        counts.sched_switch,
        counts.sched_waking,
        counts.holder_slices,
        counts.flows,
        counts.arrivals,
        counts.convoys,
        counts.stack_samples
    ))
}

fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdout".into()
    } else {
        path.display().to_string()
    }
}
