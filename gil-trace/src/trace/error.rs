use std::{io, path::PathBuf};

/// Everything that can go wrong reading or writing a trace file. Every variant names the file,
/// and the reader's variants the byte offset, so a one-line message is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// An I/O error (open, read, write, rename, sync).
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The finished trace could not be renamed into place (e.g. another user's file holds
    /// the name in a sticky directory): it is kept under its temporary name.
    #[error("{}: cannot put the finished trace in place ({source}); it was kept as {}", path.display(), kept.display())]
    NotPersisted {
        path: PathBuf,
        kept: PathBuf,
        source: io::Error,
    },
    /// The file does not start with the trace magic.
    #[error("{}: not a gil-trace file (bad magic at offset 0)", path.display())]
    BadMagic { path: PathBuf },
    /// Written by a newer (or unknown) format version.
    #[error("{}: trace format version {found} is not supported (this gil-trace reads version {supported}); upgrade gil-trace", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The file ends before a complete structure.
    #[error("{}: truncated at offset {offset}: {what}", path.display())]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// A structure fails its checksum or holds impossible values.
    #[error("{}: corrupt at offset {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}
