//! The report pipeline over a trace file, as the CLI runs it: open the file for each pass,
//! analyse it, and collect its charts. The layers composed in one place, so the CLI only
//! parses arguments and writes bytes, and tests run exactly what users run.
use std::path::Path;

use crate::{
    analysis::{
        analyze,
        state_grid::OverviewRows,
        window::{window_pass, WindowView},
        Analysis, AnalysisError, ReportOptions,
    },
    render::charts::{ChartData, ChartLayout},
    trace::{AnalysisBatches, BatchedEvents, Decoding, KindMask, TraceError, TraceReader},
};

/// The event streams of one trace's passes: the already open `reader` first, then the file
/// opened afresh for each further pass.
pub fn streams(
    trace: &Path,
    reader: Option<TraceReader>,
    decoding: Decoding,
) -> impl FnMut(KindMask) -> Result<AnalysisBatches, TraceError> + '_ {
    let mut first = reader;
    move |kinds| {
        first
            .take()
            .map_or_else(|| TraceReader::open(trace), Ok)?
            .analysis_batches(kinds, decoding)
    }
}

/// One analysed trace: its analysis, the options it was made with, and (when charts will be
/// drawn) the overview rows its pass filled.
pub struct Analysed {
    pub analysis: Analysis,
    pub opts: ReportOptions,
    pub overview: Option<OverviewRows>,
}

/// Analyses the trace read by `reader` (opened from `trace`); with `for_charts`, the report's
/// pass also keeps every thread's overview row, so the charts' pass can stop after its window.
pub fn analyse(
    trace: &Path,
    reader: TraceReader,
    opts: ReportOptions,
    decoding: Decoding,
    for_charts: bool,
) -> Result<Analysed, AnalysisError> {
    let meta = reader.meta().clone();
    let trailer = reader.trailer().clone();
    let mut overview =
        for_charts.then(|| OverviewRows::new(meta.start_monotonic_ns, trailer.end_monotonic_ns));
    let analysis = analyze(
        &meta,
        &trailer,
        streams(trace, Some(reader), decoding),
        opts,
        |span| {
            if let Some(rows) = &mut overview {
                rows.add(span);
            }
        },
    )?;
    Ok(Analysed {
        analysis,
        opts,
        overview,
    })
}

/// The layout of an analysed trace's charts and its window pass's view, over streams from
/// `open`. With the report pass's complete `overview` rows, the pass may stop soon after the
/// window (see [`window_pass`]).
pub fn window_view<S, F>(
    analysis: &Analysis,
    opts: &ReportOptions,
    overview: Option<&OverviewRows>,
    open: F,
) -> Result<(ChartLayout, WindowView), TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let layout = ChartLayout::new(&analysis.report, opts.window);
    let view = window_pass(analysis, opts, &layout.window_spec(), overview, open)?;
    Ok((layout, view))
}

/// The chart data of an analysed trace (one more pass, over streams from `open`).
pub fn charts<S, F>(analysed: &Analysed, title: String, open: F) -> Result<ChartData, TraceError>
where
    S: BatchedEvents,
    F: FnMut(KindMask) -> Result<S, TraceError>,
{
    let (analysis, opts) = (&analysed.analysis, &analysed.opts);
    let (layout, view) = window_view(analysis, opts, analysed.overview.as_ref(), open)?;
    Ok(ChartData::new(analysis, title, layout, view))
}
