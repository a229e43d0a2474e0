//! What a trace keeps to name code and data after the traced processes are gone: each
//! process's memory mappings (as seen while it ran), the files behind them with their build
//! IDs, and the user stacks the events refer to. Written by the recorder as the trace's code
//! block (tag `C`, JSON); symbolized at report time (`crate::symbols`).
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The GNU build ID of the ELF file at `path`, in hex, as [`Module::build_id`] keeps it
/// (`None` for a file without one, not an ELF file, or unreadable).
pub fn build_id(path: &Path) -> Option<String> {
    let id = blazesym::helper::read_elf_build_id(path).ok()??;
    Some(id.iter().fold(String::new(), |mut hex, b| {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// The code block's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMap {
    /// Files mapped by the traced processes, referred to by index.
    pub modules: Vec<Module>,
    /// Per process, its mappings.
    pub processes: Vec<ProcessMaps>,
    /// User stacks by the kernel's stack id: instruction pointers, innermost first (the
    /// first is where the thread was; the others are return addresses).
    pub stacks: Vec<UserStack>,
    /// Python stacks sampled from CPython processes (`py_sample` events refer to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonCode>,
}

/// What the Python sampler saw: its frames and stacks (deduplicated), the Python threads'
/// names, and the interpreters it read or could not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonCode {
    /// Samples per second per process.
    pub rate_hz: u32,
    pub frames: Vec<PyFrame>,
    /// Frame indexes, innermost first; a `py_sample`'s stack is an index into this.
    pub stacks: Vec<Vec<u32>>,
    /// The `threading` name of each sampled thread (last seen).
    pub threads: Vec<PyThread>,
    /// The interpreters sampled.
    pub processes: Vec<PyProcess>,
    /// Why a process that looked like CPython could not be read, or was sampled slower than
    /// asked (one line each; report warnings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Thread samples left out because they reached the writer after its holdback (the
    /// sampler was kept off a CPU between its clock read and its send): their time could not
    /// be put in order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_samples: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PyFrame {
    /// The function (its qualified name where the interpreter has one).
    pub name: String,
    pub file: String,
    pub line: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyThread {
    pub tgid: u32,
    pub tid: u32,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyProcess {
    pub tgid: u32,
    /// `3.11.7`.
    pub version: String,
    /// Samples taken, and reads that failed (the process was mid-update: non-blocking reads).
    pub samples: u64,
    pub failed: u64,
}

/// A mapped file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Module {
    /// Its path in the traced process's view (`/proc/PID/maps`).
    pub path: String,
    /// The ELF GNU build ID, hex; absent when the file has none (or is not ELF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

/// One process's address space, as far as the recorder read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMaps {
    pub tgid: u32,
    /// Sorted by `start`, not overlapping.
    pub mappings: Vec<Mapping>,
}

/// `[start, end)` of a process's memory, from `offset` of a module (or anonymous memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start` (for anonymous memory that continues a module's last mapping,
    /// its zero-filled data: the offset it would have in the file).
    pub offset: u64,
    /// Index into [`CodeMap::modules`]; `None` for anonymous memory (heap, stacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<u32>,
    /// Executable.
    #[serde(default)]
    pub exec: bool,
}

/// A user stack the kernel stored under `id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStack {
    pub id: u32,
    pub ips: Vec<u64>,
}

/// An address of a process as a module and file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleOffset {
    pub module: u32,
    pub offset: u64,
}

impl ProcessMaps {
    /// The mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..i].last().filter(|m| addr < m.end)
    }

    /// `addr` as module + file offset, if a module's mapping holds it.
    pub fn module_offset(&self, addr: u64) -> Option<ModuleOffset> {
        let m = self.find(addr)?;
        Some(ModuleOffset {
            module: m.module?,
            offset: addr - m.start + m.offset,
        })
    }

    /// Adds `fresh` mappings (a newer read of the process's maps): where they overlap older
    /// ones, the newer win.
    pub fn merge(&mut self, fresh: &[Mapping]) {
        self.mappings
            .retain(|old| !fresh.iter().any(|m| m.start < old.end && old.start < m.end));
        self.mappings.extend_from_slice(fresh);
        self.mappings.sort_by_key(|m| m.start);
    }
}

impl CodeMap {
    pub fn process(&self, tgid: u32) -> Option<&ProcessMaps> {
        self.processes.iter().find(|p| p.tgid == tgid)
    }

    pub fn stack(&self, id: u32) -> Option<&[u64]> {
        self.stacks
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.ips.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
            && self.processes.is_empty()
            && self.stacks.is_empty()
            && self.python.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, end: u64, offset: u64, module: Option<u32>) -> Mapping {
        Mapping {
            start,
            end,
            offset,
            module,
            exec: false,
        }
    }

    #[test]
    fn an_address_resolves_to_its_module_and_file_offset() {
        let p = ProcessMaps {
            tgid: 1,
            mappings: vec![
                mapping(0x1000, 0x3000, 0, Some(0)),
                mapping(0x3000, 0x4000, 0x2000, Some(0)),
                mapping(0x8000, 0x9000, 0, None),
            ],
        };
        assert_eq!(
            p.module_offset(0x3010),
            Some(ModuleOffset {
                module: 0,
                offset: 0x2010
            })
        );
        assert_eq!(p.module_offset(0x8010), None, "anonymous");
        assert_eq!(p.find(0x4000), None, "end is exclusive");
        assert_eq!(p.find(0xfff), None);
    }

    #[test]
    fn newer_mappings_replace_the_ones_they_overlap() {
        let mut p = ProcessMaps {
            tgid: 1,
            mappings: vec![
                mapping(0x1000, 0x2000, 0, Some(0)),
                mapping(0x5000, 0x6000, 0, None),
            ],
        };
        p.merge(&[
            mapping(0x5000, 0x7000, 0, Some(1)),
            mapping(0x3000, 0x4000, 0, Some(2)),
        ]);
        let starts: Vec<(u64, Option<u32>)> =
            p.mappings.iter().map(|m| (m.start, m.module)).collect();
        assert_eq!(
            starts,
            [(0x1000, Some(0)), (0x3000, Some(2)), (0x5000, Some(1))]
        );
    }
}
