//! Where the CLI's bytes go: stdout (a closed pipe ends output quietly) and output files
//! (never over a trace or over an input of the same command).
use std::{
    fs::File,
    io::{Read, Write},
    os::unix::fs::MetadataExt,
    path::Path,
};

use anyhow::{bail, Context, Result};

use crate::trace::format::MAGIC;

/// Writes `bytes` to stdout.
pub fn stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Did the error come from writing into a pipe whose reader has gone?
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Refuses an output path that is one of `inputs`, or an existing gil-trace file: writing
/// there would destroy a recording.
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(()); // a new file
    };
    for input in inputs {
        if let Ok(input_meta) = std::fs::metadata(input) {
            if (input_meta.dev(), input_meta.ino()) == (meta.dev(), meta.ino()) {
                bail!(
                    "refusing to write {} over {}, which this command reads",
                    out.display(),
                    input.display()
                );
            }
        }
    }
    let mut head = [0u8; 8];
    let is_trace = File::open(out)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == MAGIC);
    if is_trace {
        bail!(
            "refusing to overwrite {}: it is a gil-trace recording",
            out.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to the file `out` (after [`check_output`]).
pub fn file(out: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
    check_output(out, inputs)?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}
