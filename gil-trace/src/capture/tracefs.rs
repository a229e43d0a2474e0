//! tracefs: where tracepoints live, and their field layouts.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use super::CaptureError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds the tracefs mount, mounting it on /sys/kernel/tracing when it is not (as root can).
pub fn root() -> Result<PathBuf, CaptureError> {
    if let Some(found) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(found.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| CaptureError::TracefsUnavailable {
        detail: format!("mounting it failed: {e}"),
    })?;
    if target.join("events").is_dir() {
        Ok(target.to_path_buf())
    } else {
        Err(CaptureError::TracefsUnavailable {
            detail: "mounted, but it has no events directory".into(),
        })
    }
}

/// A tracepoint's fields: name → (offset, size).
#[derive(Debug, Default, Clone)]
pub struct Format {
    fields: HashMap<String, (u32, u32)>,
}

impl Format {
    pub fn offset(&self, field: &str) -> Option<u32> {
        self.fields.get(field).map(|f| f.0)
    }

    /// The offset of the first field that starts after `offset`.
    pub fn first_offset_after(&self, offset: u32) -> Option<u32> {
        self.fields
            .values()
            .map(|f| f.0)
            .filter(|&o| o > offset)
            .min()
    }

    /// Where the record's last field ends.
    pub fn record_len(&self) -> u32 {
        self.fields.values().map(|&(o, s)| o + s).max().unwrap_or(0)
    }

    /// Size in bytes (of the whole array for array fields).
    pub fn size(&self, field: &str) -> Option<u32> {
        self.fields.get(field).map(|f| f.1)
    }

    /// Parses a tracefs `format` file.
    pub fn parse(text: &str) -> Format {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            // "char prev_comm[16]" -> "prev_comm"; "pid_t pid" -> "pid"
            let name = decl.rsplit(' ').next().unwrap_or(decl);
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_string(), (offset, size));
        }
        Format { fields }
    }
}

/// Reads `events/<category>/<name>/format`; `None` when this kernel lacks the tracepoint.
pub fn format(root: &Path, category: &str, name: &str) -> Option<Format> {
    let text =
        fs::read_to_string(root.join("events").join(category).join(name).join("format")).ok()?;
    Some(Format::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sched_switch_format() {
        let text = "name: sched_switch\nID: 316\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\
\tfield:__data_loc char[] name;\toffset:20;\tsize:4;\tsigned:0;\n\
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n";
        let f = Format::parse(text);
        assert_eq!(f.offset("prev_pid"), Some(24));
        assert_eq!(f.offset("prev_comm"), Some(8));
        assert_eq!(f.offset("prev_state"), Some(32));
        assert_eq!(f.offset("next_pid"), Some(56));
        assert_eq!(f.offset("name"), Some(20));
        assert_eq!(f.offset("missing"), None);
    }
}
