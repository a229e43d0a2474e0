//! User stacks as the analysis and the reports refer to them: a key per process and stack,
//! and the named frames `crate::symbols` makes of it.
use serde::{Serialize, Serializer};

/// A user stack of one process: the kernel's stack id is per address space only when paired
/// with the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub tgid: u32,
    pub id: u32,
}

/// Marks a [`StackKey`]'s id as a Python stack (the code block's Python table), not a native
/// one (the kernel's stack map).
const PYTHON: u32 = 1 << 31;

impl StackKey {
    /// Python stack `id` of process `tgid` (sampled from the interpreter).
    pub fn python(tgid: u32, id: u32) -> StackKey {
        StackKey {
            tgid,
            id: id | PYTHON,
        }
    }

    /// A Python stack's id in the code block's Python table, if this is one.
    pub fn python_id(self) -> Option<u32> {
        (self.id & PYTHON != 0).then_some(self.id & !PYTHON)
    }
}

impl std::fmt::Display for StackKey {
    /// `TGID:ID`, `TGID:pyID` for a Python stack.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.python_id() {
            Some(id) => write!(f, "{}:py{id}", self.tgid),
            None => write!(f, "{}:{}", self.tgid, self.id),
        }
    }
}

/// As `"TGID:ID"`, the key of the report's `stacks` table.
impl Serialize for StackKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One frame of a stack, named as far as the files allow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The file's name (no directory); `None` for anonymous memory (JIT code).
    pub module: Option<String>,
    /// The function (demangled), when the file has symbols for it.
    pub function: Option<String>,
    /// Source file and line, from DWARF.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Offset in the module's file (for `module+offset` when there is no name).
    pub offset: u64,
}

impl Frame {
    /// A frame of the program's own code: not the C library, the dynamic loader or Rust's
    /// standard library (where every lock's wait ends up, and every thread starts).
    pub fn is_program_code(&self) -> bool {
        let Some(function) = self.function.as_deref() else {
            return false;
        };
        let module = self.module.as_deref().unwrap_or("");
        let system = [
            "libc.so",
            "libc-",
            "libpthread",
            "ld-linux",
            "linux-vdso",
            "libstdc++",
            "libgcc",
        ];
        let runtime = [
            "std::", "core::", "alloc::", "<std::", "<core::", "<alloc::", "__rust",
        ];
        !system.iter().any(|s| module.starts_with(s))
            && !runtime.iter().any(|r| function.starts_with(r))
    }

    /// `function (file:line)`, `function`, `module+0xoffset` or `0xaddress`.
    pub fn label(&self) -> String {
        match (&self.function, &self.module) {
            (Some(f), _) => match (&self.file, self.line) {
                (Some(file), Some(line)) => format!("{f} ({file}:{line})"),
                _ => f.clone(),
            },
            (None, Some(m)) => format!("{m}+{:#x}", self.offset),
            (None, None) => format!("{:#x}", self.offset),
        }
    }
}

/// A named user stack, innermost frame first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The unwinding stopped before the thread's first function (code without frame pointers,
    /// an unreadable or changed file, or the kernel's depth limit): callers are missing.
    pub truncated: bool,
}
