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
    // `q` quits, read from the terminal; not with a command, whose input the terminal is.
    let _keys = (terminal && args.watch.command.is_empty())
        .then(QuitKey::listen)
        .flatten();
    if !quiet && terminal {
        eprintln!(
            "gil-trace: recording the first window ({:?})…",
            args.interval
        );
    }
    let mut index = 0;
    let end = watch(
        &WatchOptions {
            args: &args.watch,
            interval: args.interval,
            keep: args.output.as_deref(),
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
    Ok(super::record::command_status(
        end.exit,
        end.signal,
        !args.watch.command.is_empty(),
    ))
}

/// Reads keys from the terminal (no line buffering, no echo; Ctrl-C still signals) and
/// quits on `q`: with SIGTERM to this process, which ends the window being recorded as
/// Ctrl-C would. Restores the terminal when dropped.
struct QuitKey {
    saved: nix::sys::termios::Termios,
    /// Ends the Ctrl-Z handling with the key mode (a SIGCONT after it must not set the keys
    /// up again).
    suspension: Option<signal_hook::iterator::Handle>,
}

impl QuitKey {
    /// None when stdin is not a terminal (or cannot be set up): Ctrl-C still works.
    fn listen() -> Option<QuitKey> {
        use nix::sys::termios::{self, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        // Only in the terminal's foreground (a background job touching it would be stopped).
        let foreground =
            nix::unistd::tcgetpgrp(&stdin).is_ok_and(|pg| pg == nix::unistd::getpgrp());
        if !stdin.is_terminal() || !foreground {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut keys = saved.clone();
        keys.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        // Each read waits for one key.
        keys.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
        keys.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &keys).ok()?;
        let suspension = Self::keep_over_suspension(saved.clone(), keys);
        let reader = std::thread::Builder::new()
            .name("gil-trace-keys".into())
            .spawn(|| {
                use std::io::Read;
                let mut byte = [0u8; 1];
                while let Ok(1) = std::io::stdin().lock().read(&mut byte) {
                    if byte[0].eq_ignore_ascii_case(&b'q') {
                        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
                        return;
                    }
                }
            });
        let key = QuitKey { saved, suspension };
        reader.ok().map(|_| key)
    }
}

impl QuitKey {
    /// Ctrl-Z: the shell gets its terminal back as it was (echo, lines), and `fg` sets the
    /// keys up again. Our handler replaces the default stop, so it stops the process itself.
    fn keep_over_suspension(
        saved: nix::sys::termios::Termios,
        keys: nix::sys::termios::Termios,
    ) -> Option<signal_hook::iterator::Handle> {
        use nix::sys::termios::{tcsetattr, SetArg};
        use signal_hook::consts::{SIGCONT, SIGTSTP};
        let mut signals = signal_hook::iterator::Signals::new([SIGTSTP, SIGCONT]).ok()?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("gil-trace-suspend".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let stdin = std::io::stdin();
                    if signal == SIGTSTP {
                        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
                        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
                    } else if nix::unistd::tcgetpgrp(&stdin)
                        .is_ok_and(|pg| pg == nix::unistd::getpgrp())
                    {
                        // Back in the foreground (not `bg`: a background job touching the
                        // terminal would be stopped again).
                        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &keys);
                    }
                }
            })
            .ok()?;
        Some(handle)
    }
}

impl Drop for QuitKey {
    fn drop(&mut self) {
        if let Some(suspension) = self.suspension.take() {
            suspension.close();
        }
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
