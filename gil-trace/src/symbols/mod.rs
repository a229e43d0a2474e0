//! Names for addresses, at report time: the functions (with file and line) of a trace's user
//! stacks and the symbols of its lock words, from the files the traced processes mapped
//! (blazesym: ELF symbol tables, DWARF). The trace's code block ([`CodeMap`]) says which file
//! and offset each address was; a file changed since the recording (another build ID) is not
//! trusted: its addresses stay `module+offset`.
//!
//! Stacks were unwound by the kernel through frame pointers. In code built without them the
//! chain goes wrong after the first frames, so every return address is checked before it is
//! named: it must fall in executable code of a trusted file, right after a call instruction.
//! The first that fails ends the stack, which is then marked truncated.
pub mod cpython;
mod elf;
pub mod names;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use blazesym::symbolize::{source, Input, Symbolized, Symbolizer};
use rustc_hash::FxHashMap;

pub use crate::model::stack::{Frame, Stack};
use crate::{
    model::{locks::SymbolRef, stack::StackKey},
    trace::code::{build_id, CodeMap, PythonCode},
};

/// A module as this machine has it now.
struct ModuleFile {
    /// Where to read it; `None` when missing or changed since the recording.
    path: Option<PathBuf>,
    name: String,
    elf: Option<elf::LoadSegments>,
}

/// Symbolizes a trace's stacks and addresses (one per report: it caches parsed files).
pub struct Symbols {
    code: CodeMap,
    symbolizer: Symbolizer,
    modules: Vec<ModuleFile>,
    stacks: FxHashMap<StackKey, Option<Stack>>,
    warnings: Vec<String>,
}

impl Symbols {
    /// Checks each module of `code` against the file at its path now.
    pub fn new(code: CodeMap) -> Symbols {
        let mut warnings = Vec::new();
        let modules = code
            .modules
            .iter()
            .map(|m| {
                let path = PathBuf::from(&m.path);
                let name = path
                    .file_name()
                    .map_or_else(|| m.path.clone(), |n| n.to_string_lossy().into_owned());
                let usable = if !path.is_file() {
                    warnings.push(format!(
                        "{} is not on this machine: its addresses are shown as offsets",
                        m.path
                    ));
                    false
                } else if m.build_id.is_some() && build_id(&path) != m.build_id {
                    warnings.push(format!(
                        "{} changed since the recording (another build ID): its addresses are shown as offsets",
                        m.path
                    ));
                    false
                } else {
                    true
                };
                let elf = usable.then(|| elf::LoadSegments::read(&path)).flatten();
                ModuleFile {
                    path: usable.then_some(path),
                    name,
                    elf,
                }
            })
            .collect();
        Symbols {
            code,
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .enable_auto_reload(false)
                .build(),
            modules,
            stacks: FxHashMap::default(),
            warnings,
        }
    }

    /// Python stack `id` of the code block: its frames as the interpreter named them, innermost
    /// first (a sampled stack is whole: the interpreter's frames reach the thread's first).
    fn python_stack(&self, id: u32) -> Option<Stack> {
        let python = self.code.python.as_ref()?;
        let frames = python.stacks.get(id as usize)?;
        Some(Stack {
            frames: frames
                .iter()
                .filter_map(|&f| python.frames.get(f as usize))
                .map(|f| Frame {
                    module: None,
                    function: Some(f.name.clone()),
                    file: Some(f.file.clone()),
                    line: u32::try_from(f.line).ok().filter(|&l| l > 0),
                    offset: 0,
                })
                .collect(),
            truncated: false,
        })
    }

    /// Symbols of a trace without a code block: nothing resolves.
    pub fn none() -> Symbols {
        Symbols::new(CodeMap::default())
    }

    /// Did the recording keep what names need (a code block)?
    pub fn available(&self) -> bool {
        !self.code.is_empty()
    }

    /// Files missing or changed since the recording.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The named stack `key`, if the trace has it.
    pub fn stack(&mut self, key: StackKey) -> Option<&Stack> {
        if !self.stacks.contains_key(&key) {
            let stack = self.resolve_stack(key);
            self.stacks.insert(key, stack);
        }
        self.stacks[&key].as_ref()
    }

    /// What the recorder sampled of the CPython processes, if any.
    pub fn python(&self) -> Option<&PythonCode> {
        self.code.python.as_ref()
    }

    fn resolve_stack(&self, key: StackKey) -> Option<Stack> {
        if let Some(id) = key.python_id() {
            return self.python_stack(id);
        }
        let ips = self.code.stack(key.id)?;
        let process = self.code.process(key.tgid);
        let mut frames = Vec::new();
        for (i, &ip) in ips.iter().enumerate() {
            // Return addresses point after their call: name the call itself.
            let at = if i == 0 { ip } else { ip.saturating_sub(1) };
            let mapping = process.and_then(|p| p.find(ip));
            let module_offset = process.and_then(|p| p.module_offset(at));
            if i > 0 {
                let trusted = match (mapping, module_offset) {
                    (Some(m), Some(mo)) => {
                        m.exec
                            && self
                                .after_call(mo.module, mo.offset + 1)
                                // A file missing or changed here cannot be checked; its
                                // frames are only shown as offsets.
                                .unwrap_or(true)
                    }
                    // Anonymous executable memory (JIT code): cannot be checked.
                    (Some(m), None) => m.exec,
                    _ => false,
                };
                if !trusted {
                    break;
                }
            }
            match module_offset {
                Some(mo) => frames.extend(self.frames(mo.module, mo.offset)),
                None => frames.push(Frame {
                    offset: at,
                    ..Frame::default()
                }),
            }
        }
        // Whole only if it reaches a thread's first function (the kernel stops quietly where
        // a frame pointer chain ends, e.g. in code built without them).
        let truncated = !frames.last().is_some_and(is_thread_root);
        Some(Stack { frames, truncated })
    }

    /// Is the code at `offset` of `module` right after a call instruction? `None` when the
    /// file cannot tell (missing or changed).
    fn after_call(&self, module: u32, offset: u64) -> Option<bool> {
        let path = self.modules.get(module as usize)?.path.as_ref()?;
        Some(elf::follows_call(path, offset))
    }

    /// The frames of the code at `offset` of `module`: the functions inlined there (innermost
    /// first), then the function that holds them.
    fn frames(&self, module: u32, offset: u64) -> Vec<Frame> {
        let m = &self.modules[module as usize];
        let bare = Frame {
            module: Some(m.name.clone()),
            offset,
            ..Frame::default()
        };
        let (Some(path), Some(vaddr)) = (
            m.path.as_ref(),
            m.elf.as_ref().and_then(|e| e.vaddr(offset)),
        ) else {
            return vec![bare];
        };
        let src = source::Source::Elf(source::Elf::new(path));
        let Ok(Symbolized::Sym(sym)) = self
            .symbolizer
            .symbolize_single(&src, Input::VirtOffset(vaddr))
        else {
            return vec![bare];
        };
        let named = |function: &str, code: Option<&blazesym::symbolize::CodeInfo<'_>>| Frame {
            function: Some(function.to_string()),
            file: code.map(|c| c.file.to_string_lossy().into_owned()),
            line: code.and_then(|c| c.line),
            ..bare.clone()
        };
        // Each inlined function's location is inside it; the holding function's is the call
        // of the outermost inlined one.
        let mut frames: Vec<Frame> = sym
            .inlined
            .iter()
            .rev()
            .map(|f| named(&f.name, f.code_info.as_ref()))
            .collect();
        frames.push(named(&sym.name, sym.code_info.as_deref()));
        frames
    }

    /// The static object holding `addr` of process `tgid` (a lock word in a global).
    pub fn data(&self, tgid: u32, addr: u64) -> Option<SymbolRef> {
        let mo = self.code.process(tgid)?.module_offset(addr)?;
        let m = self.modules.get(mo.module as usize)?;
        let vaddr = m.elf.as_ref()?.vaddr(mo.offset)?;
        let src = source::Source::Elf(source::Elf::new(m.path.as_ref()?));
        match self
            .symbolizer
            .symbolize_single(&src, Input::VirtOffset(vaddr))
        {
            Ok(Symbolized::Sym(sym)) => Some(SymbolRef {
                module: m.name.clone(),
                symbol: sym.name.to_string(),
                offset: sym.offset as u64,
            }),
            _ => None,
        }
    }

    /// The module file holding `addr` of `tgid` and the offset in it, if trusted.
    pub fn module_file(&self, tgid: u32, addr: u64) -> Option<(&Path, u64)> {
        let mo = self.code.process(tgid)?.module_offset(addr)?;
        let path = self.modules.get(mo.module as usize)?.path.as_deref()?;
        Some((path, mo.offset))
    }

    /// The named stacks asked for so far, by key (for the report's `stacks` table).
    pub fn resolved(&self) -> BTreeMap<StackKey, Stack> {
        self.stacks
            .iter()
            .filter_map(|(&k, s)| Some((k, s.clone()?)))
            .collect()
    }
}

/// A thread's first function: a stack that reaches it is whole.
fn is_thread_root(frame: &Frame) -> bool {
    frame.function.as_deref().is_some_and(|f| {
        matches!(
            f,
            "_start"
                | "start_thread"
                | "clone"
                | "clone3"
                | "__clone"
                | "__clone3"
                | "__libc_start_main"
                | "__libc_start_call_main"
                | "main"
        ) || f.ends_with("thread_start")
    })
}
