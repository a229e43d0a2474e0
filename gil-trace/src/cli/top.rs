//! `gil-trace top`: the last window's analysis, redrawn as each window ends.
use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
};

use anyhow::{Context, Result};

use super::{
    args::TopArgs,
    windows::{watch, WatchOptions},
};
use crate::{capture, render::top::window_text};

/// Home and clear screen (ANSI), before each window on a terminal.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(crate) fn top(args: &TopArgs, quiet: bool) -> Result<ExitCode> {
    capture::privileges::check()?;
    let terminal = std::io::stdout().is_terminal();
    if !quiet && terminal {
        eprintln!(
            "gil-trace: recording the first window ({:?})…",
            args.interval
        );
    }
    let mut index = 0;
    watch(
        &WatchOptions {
            args: &args.watch,
            interval: args.interval,
        },
        quiet,
        |window| {
            index += 1;
            let text = window_text(&window.analysis.report, &window.process, window.pid, index);
            let mut out = std::io::stdout().lock();
            if terminal {
                write!(out, "{CLEAR}{text}")
            } else {
                writeln!(out, "{text}")
            }
            .and_then(|()| out.flush())
            .context("writing to stdout")
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
