//! `gil-trace export`: a trace for other viewers, written as the analysis streams.
use std::{
    cell::RefCell,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context, Result};

use super::{
    args::{input_trace, ExportArgs, ExportFormat},
    out,
};
use crate::{
    analysis::{
        analyze_into,
        contention::{HandoffEvent, IoOp, RowSink},
        ReportOptions,
    },
    pipeline,
    render::chrome::ChromeJson,
    trace::{Decoding, TraceReader},
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
    let ExportFormat::ChromeJson = args.format;
    let trace = input_trace(args.trace.as_deref())?;
    let to_stdout = args.output.as_os_str() == "-";
    if !to_stdout {
        out::check_output(&args.output, &[&trace])?;
    }
    let reader = TraceReader::open(&trace)?;
    let (meta, trailer) = (reader.meta().clone(), reader.trailer().clone());
    let opts = ReportOptions {
        window: args.window.map(|w| w.absolute(meta.start_monotonic_ns)),
        tid: args.tid,
        lock: args.lock,
        convoy_threshold_ns: args.convoy_threshold,
        // Every row goes to the writer as it is found (none is kept).
        detail: true,
        detail_window: None,
    };
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("creating {}", args.output.display()))?,
        )
    };
    let writer = RefCell::new(ChromeJson::new(
        BufWriter::with_capacity(1 << 20, sink),
        meta.start_monotonic_ns,
        &trailer.threads,
        args.tid,
    ));
    let open = pipeline::streams(&trace, Some(reader), Decoding::for_machine());
    let analysis = analyze_into(&meta, &trailer, open, opts, &mut Shared(&writer), |span| {
        writer.borrow_mut().span(span);
    })?;
    let mut report = analysis.report;
    if let Some(tid) = args.tid {
        report.retain_threads(|t| t.tid == tid);
    }
    let (mut file, slices) = writer
        .into_inner()
        .finish(&report)
        .with_context(|| format!("writing {}", shown(&args.output)))?;
    file.flush()
        .with_context(|| format!("writing {}", shown(&args.output)))?;
    if !quiet {
        eprintln!(
            "gil-trace: wrote {} ({slices} state slices)",
            shown(&args.output)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdout".into()
    } else {
        path.display().to_string()
    }
}
