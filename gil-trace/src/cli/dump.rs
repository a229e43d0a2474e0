//! `gil-trace dump`: the raw events, in time order.
use std::{io::Write, process::ExitCode};

use anyhow::{bail, Context, Result};

use super::args::{input_trace, DumpArgs};
use crate::{
    render::dump::{self, Names},
    trace::TraceReader,
};

pub(crate) fn dump(args: &DumpArgs) -> Result<ExitCode> {
    let trace = input_trace(args.trace.as_deref())?;
    let reader = TraceReader::open(&trace)?;
    let start = reader.meta().start_monotonic_ns;
    let names = Names::new(&reader.trailer().threads);
    let (from, to) = args.window.map_or((0, u64::MAX), |w| w.absolute(start));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut shown = 0u64;
    for ev in reader.events() {
        let ev = ev?;
        if ev.ts_ns < from {
            continue;
        }
        if ev.ts_ns > to {
            break;
        }
        if args.tid.is_some_and(|tid| !dump::involves(&ev, tid)) {
            continue;
        }
        shown += 1;
        if args.json {
            serde_json::to_writer(&mut out, &dump::json(&ev, start, &names))
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        } else {
            writeln!(out, "{}", dump::line(&ev, start, &names))
        }
        .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    if let (0, Some(tid)) = (shown, args.tid) {
        bail!(
            "no event involves thread {tid} in {}{}",
            trace.display(),
            if args.window.is_some() {
                " in that window"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
