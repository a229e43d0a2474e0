//! `gil-trace report`: analyse one trace (or two, compared) and print it; optionally draw
//! the charts.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Result};

use super::{
    args::{input_trace, ReportArgs},
    out,
};
use crate::{
    analysis::{compare, ReportOptions},
    pipeline::{self, Analysed},
    render::{self, svg::charts_svg_stacked, text::TextOptions},
    trace::TraceReader,
};

/// Analyses one trace with the report's options.
fn build_report(trace: &Path, args: &ReportArgs, for_charts: bool) -> Result<Analysed> {
    let reader = TraceReader::open(trace)?;
    let start = reader.meta().start_monotonic_ns;
    let opts = ReportOptions {
        window: args.window.map(|w| w.absolute(start)),
        tid: args.tid,
        lock: args.lock,
        convoy_threshold_ns: args.convoy_threshold,
        detail: args.detail,
        detail_window: None,
    };
    let mut analysed = pipeline::analyse(trace, reader, opts, args.decoding(), for_charts)?;
    if args.pid.is_some() || args.comm.is_some() {
        analysed.analysis.report.retain_threads(|t| {
            args.pid.is_none_or(|p| t.tgid == p)
                && args
                    .comm
                    .as_ref()
                    .is_none_or(|c| &t.name == c || t.kernel_name.as_ref() == Some(c))
        });
    }
    Ok(analysed)
}

pub(crate) fn report(args: &ReportArgs, quiet: bool) -> Result<ExitCode> {
    let traces: Vec<PathBuf> = if args.traces.is_empty() {
        vec![input_trace(None)?]
    } else {
        args.traces.clone()
    };
    if args.compare != (traces.len() == 2) {
        bail!("give one trace, or two with --compare");
    }
    let svg = args.svg.as_ref().map(|out| {
        if out.as_os_str().is_empty() {
            traces[0].with_extension("svg")
        } else {
            out.clone()
        }
    });
    let inputs: Vec<&Path> = traces.iter().map(PathBuf::as_path).collect();
    // Before the work, not after it.
    for output in svg.iter().chain(&args.flamegraph) {
        out::check_output(output, &inputs)?;
    }
    if args.flamegraph.is_some() && args.compare {
        bail!("--flamegraph draws one trace: leave out --compare");
    }
    let mut analysed = Vec::new();
    for trace in &traces {
        analysed.push(build_report(trace, args, svg.is_some())?);
    }
    if let Some(svg) = &svg {
        let mut charts = Vec::new();
        for (trace, a) in traces.iter().zip(&analysed) {
            let title = format!("gil-trace: {}", trace.display());
            let open = pipeline::streams(trace, None, args.decoding());
            charts.push(pipeline::charts(a, title, open)?);
        }
        out::file(svg, charts_svg_stacked(&charts)?.as_bytes(), &inputs)?;
        if !quiet {
            eprintln!("gil-trace: wrote {}", svg.display());
        }
    }
    if let Some(out) = &args.flamegraph {
        let a = &mut analysed[0];
        let folded = pipeline::folded(&a.analysis, &mut a.symbols);
        if folded.is_empty() {
            bail!(
                "{}: no stacks to draw (recorded with --no-stacks, or by a gil-trace without them)",
                traces[0].display()
            );
        }
        let title = format!("gil-trace: {}", traces[0].display());
        let svg = render::folded::flamegraph(&folded, &title)?;
        out::file(out, &svg, &inputs)?;
        if !quiet {
            eprintln!("gil-trace: wrote {}", out.display());
        }
    }
    let reports: Vec<_> = analysed.into_iter().map(|a| a.analysis.report).collect();
    let bytes = match (args.compare, args.json) {
        (true, true) => render::json::to_json(&compare::compare(&reports[0], &reports[1])),
        (true, false) => render::text::comparison(
            &compare::compare(&reports[0], &reports[1]),
            &traces[0],
            &traces[1],
        )
        .into_bytes(),
        (false, true) => render::json::to_json(&reports[0]),
        (false, false) => render::text::report(
            &reports[0],
            &TextOptions {
                all_threads: args.all_threads,
                stacks: args.stacks,
            },
        )
        .into_bytes(),
    };
    out::stdout(&bytes)?;
    Ok(ExitCode::SUCCESS)
}
