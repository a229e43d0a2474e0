//! The report pipeline over a trace file, as the CLI runs it: open the file for each pass,
//! analyse it, and collect its charts. The layers composed in one place, so the CLI only
//! parses arguments and writes bytes, and tests run exactly what users run.
use std::path::Path;

use crate::{
    analysis::{
        analyze_named,
        contention::{RowSink, Rows},
        state_grid::OverviewRows,
        window::{window_pass, WindowView},
        Analysis, AnalysisError, ReportOptions,
    },
    model::timeline::StateSpan,
    render::charts::{ChartData, ChartLayout},
    symbols::{names, Symbols},
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
    /// Names for the trace's stacks (for folded stacks and flamegraphs).
    pub symbols: Symbols,
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
    let (start, end) = (
        reader.meta().start_monotonic_ns,
        reader.trailer().end_monotonic_ns,
    );
    let mut overview = for_charts.then(|| OverviewRows::new(start, end));
    let mut rows = Rows::default();
    let (mut analysis, symbols) = analyse_into(trace, reader, opts, decoding, &mut rows, |span| {
        if let Some(rows) = &mut overview {
            rows.add(span);
        }
    })?;
    analysis.keep_rows(rows, &opts);
    Ok(Analysed {
        analysis,
        opts,
        overview,
        symbols,
    })
}

/// [`analyse`] with its rows streamed to `rows` (for exporters): the locks named before the
/// pass, the rest of the names (heap locks, stacks, verdicts) after it.
pub fn analyse_into(
    trace: &Path,
    mut reader: TraceReader,
    opts: ReportOptions,
    decoding: Decoding,
    rows: &mut dyn RowSink,
    on_span: impl FnMut(&StateSpan),
) -> Result<(Analysis, Symbols), AnalysisError> {
    let meta = reader.meta().clone();
    let trailer = reader.trailer().clone();
    let mut symbols = symbols_of(&mut reader)?;
    let mut analysis = analyze_named(
        &meta,
        &trailer,
        streams(trace, Some(reader), decoding),
        opts,
        &mut |locks| names::name_locks(locks, &symbols),
        rows,
        on_span,
    )?;
    names::finish(&mut analysis, &mut symbols);
    Ok((analysis, symbols))
}

/// The folded stacks of an analysed trace's off-CPU time (see [`crate::render::folded`]).
pub fn folded(analysis: &Analysis, symbols: &mut Symbols) -> String {
    crate::render::folded::folded(analysis, &mut |key| symbols.stack(key).cloned())
}

/// What names a trace's code and data: its code block's files, here; a trace without one
/// (recorded before names, or with `--no-stacks` on an old version) gets a warning.
pub fn symbols_of(reader: &mut TraceReader) -> Result<Symbols, TraceError> {
    Ok(match reader.code_map()? {
        Some(code) => Symbols::new(code),
        None => Symbols::none(),
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
