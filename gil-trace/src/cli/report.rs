//! `gil-trace report`, `dump` and `export`: read a trace, write bytes.
use std::{io::Write, path::Path, process::ExitCode};

use anyhow::{bail, Context, Result};
use gil_trace::{
    analysis::{analyze, ReportOptions},
    pipeline::{self, Analysed},
    render::{self, svg::charts_svg_stacked},
    trace::{Decoding, TraceReader},
};

use super::{
    args::{DumpArgs, ExportArgs, ExportFormat, ReportArgs},
    parse,
};

/// Analyses one trace with the report's options.
fn build_report(trace: &Path, args: &ReportArgs) -> Result<Analysed> {
    let window = args
        .window
        .as_deref()
        .map(parse::window)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let reader = TraceReader::open(trace)?;
    let start = reader.meta().start_monotonic_ns;
    let opts = ReportOptions {
        window: window.map(|(a, b)| (start + a.unwrap_or(0), b.map_or(u64::MAX, |b| start + b))),
        tid: args.tid,
        lock: args.lock,
        convoy_threshold_ns: args.convoy_threshold,
        detail: args.detail,
        detail_window: None,
    };
    Ok(pipeline::analyse(
        trace,
        reader,
        opts,
        args.decoding(),
        args.svg.is_some(),
    )?)
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing the report")
}

pub(crate) fn report(args: &ReportArgs) -> Result<ExitCode> {
    if args.compare != (args.traces.len() == 2) {
        bail!("give one trace, or two with --compare");
    }
    let mut reports = Vec::new();
    for trace in &args.traces {
        reports.push(build_report(trace, args)?);
    }
    if let Some(svg) = &args.svg {
        let out = svg
            .clone()
            .unwrap_or_else(|| args.traces[0].with_extension("svg"));
        let mut charts = Vec::new();
        let decoding = args.decoding();
        for (trace, analysed) in args.traces.iter().zip(&reports) {
            let title = format!("gil-trace: {}", trace.display());
            let open = pipeline::streams(trace, None, decoding);
            charts.push(pipeline::charts(analysed, title, open)?);
        }
        std::fs::write(&out, charts_svg_stacked(&charts)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("gil-trace: wrote {}", out.display());
    }
    let mut reports: Vec<_> = reports.into_iter().map(|a| a.analysis.report).collect();
    for report in &mut reports {
        if !args.detail {
            report.io_ops = None;
            report.handoff_events = None;
        }
    }
    if args.compare {
        let cmp = gil_trace::analysis::compare::compare(&reports[0], &reports[1]);
        let bytes = if args.json {
            render::json::to_json(&cmp)
        } else {
            render::text::comparison(&cmp, &args.traces[0], &args.traces[1]).into_bytes()
        };
        write_out(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = &reports[0];
    let bytes = if args.json {
        render::json::to_json(report)
    } else {
        render::text::report(report).into_bytes()
    };
    write_out(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn dump(args: &DumpArgs) -> Result<ExitCode> {
    use gil_trace::trace::EventData;
    let window = args
        .window
        .as_deref()
        .map(parse::window)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let reader = TraceReader::open(&args.trace)?;
    let start = reader.meta().start_monotonic_ns;
    let (a, b) = window.map_or((0, u64::MAX), |(a, b)| {
        (a.unwrap_or(0), b.unwrap_or(u64::MAX))
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for ev in reader.events() {
        let ev = ev?;
        let rel = ev.ts_ns.saturating_sub(start);
        if rel < a || rel > b {
            continue;
        }
        if let Some(tid) = args.tid {
            let involved = ev.tid == tid
                || matches!(ev.data, EventData::Switch { next_tid, .. } if next_tid == tid)
                || matches!(ev.data, EventData::Waking { wakee, .. } if wakee == tid)
                || matches!(ev.data, EventData::Fork { child } if child == tid);
            if !involved {
                continue;
            }
        }
        writeln!(
            out,
            "{:>16.6} ms cpu{} {:>7}/{:<7} {:?}",
            rel as f64 / 1e6,
            ev.cpu,
            ev.tgid,
            ev.tid,
            ev.data
        )
        .context("writing")?;
    }
    out.flush().context("writing")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn export(args: &ExportArgs) -> Result<ExitCode> {
    let ExportFormat::Perfetto = args.format;
    let reader = TraceReader::open(&args.trace)?;
    let (meta, trailer) = (reader.meta().clone(), reader.trailer().clone());
    let opts = ReportOptions {
        convoy_threshold_ns: 1_000_000,
        detail: true,
        ..Default::default()
    };
    let open = pipeline::streams(&args.trace, Some(reader), Decoding::for_machine());
    // One pass: the report's timeline hands its spans out as they close.
    let mut spans = Vec::new();
    let analysis = analyze(&meta, &trailer, open, opts, |s| spans.push(*s))?;
    spans.sort_by_key(|s| (s.tid, s.start_ns));
    let bytes = gil_trace::render::perfetto::to_chrome_json(&analysis.report, &spans);
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "gil-trace: wrote {} ({} state slices)",
        args.output.display(),
        spans.len()
    );
    Ok(ExitCode::SUCCESS)
}
