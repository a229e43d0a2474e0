//! Where a trace is written: a file under a temporary name beside its final path, renamed into
//! place only when complete, so a file under the final name is always whole.
//!
//! The recorder runs as root and often writes into shared directories (`/tmp`), so the
//! temporary file is created exclusively under an unpredictable name (`O_CREAT | O_EXCL`: an
//! existing name, a symbolic link included, is never opened, let alone followed), with mode
//! 0600 (a trace holds command lines, thread names and timings); ownership and mode are never
//! changed through a path afterwards. Callers that act for another user (`capture`) create and
//! rename it with that user's filesystem identity.
use std::{
    fs::{self, File},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use tempfile::NamedTempFile;

use super::TraceError;

/// A trace being written, removed if dropped before [`TempTrace::persist`].
#[derive(Debug)]
pub struct TempTrace {
    temp: NamedTempFile,
    final_path: PathBuf,
}

impl TempTrace {
    /// Creates `.<name>.<random>.tmp` in `final_path`'s directory.
    pub fn create(final_path: &Path) -> Result<TempTrace, TraceError> {
        let dir = final_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|source| TraceError::Io {
                path: final_path.to_path_buf(),
                what: "cannot create the output file",
                source,
            })?;
        Ok(TempTrace {
            temp,
            final_path: final_path.to_path_buf(),
        })
    }

    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the file into place. With `keep_old`, a regular file already under the final
    /// name is first renamed to `<name>.old` (a link there is replaced, never followed).
    pub fn persist(self, keep_old: bool) -> Result<PathBuf, TraceError> {
        let io = |what: &'static str| {
            let path = self.final_path.clone();
            move |source| TraceError::Io { path, what, source }
        };
        if keep_old {
            let previous = fs::symlink_metadata(&self.final_path);
            if previous.is_ok_and(|m| m.file_type().is_file()) {
                let mut old = self.final_path.clone().into_os_string();
                old.push(".old");
                fs::rename(&self.final_path, old)
                    .map_err(io("cannot keep the previous trace as .old"))?;
            }
        }
        let final_path = self.final_path.clone();
        match self.temp.persist(&final_path) {
            Ok(_) => Ok(final_path),
            Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => Err(io(
                "the output file was removed while it was written",
            )(e.error)),
            // Nothing recorded is lost: the file stays, and the error says where.
            Err(e) => match e.file.keep() {
                Ok((_, kept)) => Err(TraceError::NotPersisted {
                    path: final_path,
                    kept,
                    source: e.error,
                }),
                Err(_) => Err(io("renaming the finished trace failed")(e.error)),
            },
        }
    }
}
