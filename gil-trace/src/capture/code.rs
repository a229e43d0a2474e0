//! What the recorder keeps, while the traced processes run, to name their code and data later
//! ([`CodeMap`]): the user stacks events refer to (read from the kernel's stack map as they
//! appear) and each process's memory mappings with the files behind them and their build
//! IDs (read from `/proc` when an address shows up that the mappings read so far do not
//! cover: a new library, a new heap arena).
use std::path::Path;

use gil_trace_common::{stack_ref, EventKind, RawEvent};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::trace::code::{build_id, CodeMap, Mapping, Module, ProcessMaps, UserStack};

/// Collects a [`CodeMap`] from the event stream.
#[derive(Default)]
pub struct CodeCollector {
    code: CodeMap,
    /// Module index by (device, inode, path): one entry per file however often it is mapped.
    modules: FxHashMap<(String, u64, String), u32>,
    /// Stack ids already read from the kernel.
    stacks_read: FxHashSet<u32>,
    /// (tgid, stack id) pairs whose addresses were checked against the process's mappings.
    stacks_checked: FxHashSet<(u32, u32)>,
    /// (tgid, page) of futex words already checked.
    words_checked: FxHashSet<(u32, u64)>,
    /// Processes with addresses their mappings do not cover yet: read again after the drain.
    stale: FxHashSet<u32>,
    /// Stacks seen since the last [`Self::after_drain`], to read from the kernel then.
    new_stacks: Vec<(u32, u32)>,
}

impl CodeCollector {
    /// Notes what `event` refers to: its user stack, or the futex word it uses.
    #[inline]
    pub fn observe(&mut self, event: &RawEvent) {
        let stack = match event.kind {
            k if k == EventKind::SchedSwitch as u32 => {
                stack_ref::id(event.args[3] >> stack_ref::SCHED_SWITCH_SHIFT)
            }
            k if k == EventKind::FutexExit as u32 => {
                stack_ref::id(event.args[stack_ref::FUTEX_EXIT_ARG])
            }
            k if k == EventKind::FutexEnter as u32 => {
                let word = (event.tgid, event.args[0] >> 12);
                if self.words_checked.insert(word) && !self.covers(event.tgid, event.args[0]) {
                    self.stale.insert(event.tgid);
                }
                None
            }
            _ => None,
        };
        if let Some(id) = stack {
            if self.stacks_checked.insert((event.tgid, id)) {
                self.new_stacks.push((event.tgid, id));
            }
        }
    }

    fn covers(&self, tgid: u32, addr: u64) -> bool {
        self.code
            .process(tgid)
            .is_some_and(|p| p.find(addr).is_some())
    }

    /// After a drain: reads the new stacks from the kernel (`read_stack`), and the mappings
    /// of every process with an address they did not cover.
    pub fn after_drain(&mut self, read_stack: impl Fn(u32) -> Option<Vec<u64>>) {
        for (tgid, id) in std::mem::take(&mut self.new_stacks) {
            if self.stacks_read.insert(id) {
                if let Some(ips) = read_stack(id) {
                    self.code.stacks.push(UserStack { id, ips });
                }
            }
            let uncovered = self
                .code
                .stack(id)
                .is_some_and(|ips| ips.iter().any(|&ip| !self.covers(tgid, ip)));
            if uncovered {
                self.stale.insert(tgid);
            }
        }
        for tgid in std::mem::take(&mut self.stale) {
            self.read_maps(tgid);
        }
    }

    /// Reads `/proc/TGID/maps` (a process that is gone keeps what was read before).
    pub fn read_maps(&mut self, tgid: u32) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/maps")) else {
            return;
        };
        let mut fresh = Vec::new();
        for line in text.lines() {
            let Some(entry) = MapsLine::parse(line) else {
                continue;
            };
            let module = entry
                .path
                .filter(|p| p.starts_with('/'))
                .map(|path| self.module(tgid, &entry, path));
            let mapping = Mapping {
                start: entry.start,
                end: entry.end,
                offset: entry.offset,
                module,
                exec: entry.exec,
            };
            // Zero-filled data (.bss) continues the file's last mapping anonymously: it
            // belongs to that module, at the offsets the file's data would have.
            let continues = fresh.last().and_then(|prev: &Mapping| {
                (module.is_none() && entry.path.is_none() && prev.end == entry.start)
                    .then_some(prev)
                    .filter(|prev| prev.module.is_some() && !prev.exec)
                    .map(|prev| (prev.module, prev.offset + (prev.end - prev.start)))
            });
            fresh.push(match continues {
                Some((module, offset)) => Mapping {
                    offset,
                    module,
                    ..mapping
                },
                None => mapping,
            });
        }
        match self.code.processes.iter_mut().find(|p| p.tgid == tgid) {
            Some(p) => p.merge(&fresh),
            None => self.code.processes.push(ProcessMaps {
                tgid,
                mappings: fresh,
            }),
        }
    }

    fn module(&mut self, tgid: u32, entry: &MapsLine<'_>, path: &str) -> u32 {
        let key = (entry.dev.to_string(), entry.inode, path.to_string());
        if let Some(&index) = self.modules.get(&key) {
            return index;
        }
        let index = self.code.modules.len() as u32;
        // Through the process's own view of the file: right in another mount namespace, and
        // still the mapped file when the path was replaced or deleted since.
        let mapped = format!("/proc/{tgid}/map_files/{:x}-{:x}", entry.start, entry.end);
        self.code.modules.push(Module {
            path: path.trim_end_matches(" (deleted)").to_string(),
            build_id: build_id(Path::new(&mapped)),
        });
        self.modules.insert(key, index);
        index
    }

    pub fn finish(self) -> CodeMap {
        self.code
    }
}

/// One line of `/proc/PID/maps`: `start-end perms offset dev inode [path]`.
struct MapsLine<'a> {
    start: u64,
    end: u64,
    exec: bool,
    offset: u64,
    dev: &'a str,
    inode: u64,
    path: Option<&'a str>,
}

impl<'a> MapsLine<'a> {
    fn parse(line: &'a str) -> Option<MapsLine<'a>> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let dev = fields.next()?;
        let inode = fields.next()?;
        let path = fields.next().map(str::trim).filter(|p| !p.is_empty());
        Some(MapsLine {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            exec: perms.contains('x'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            dev,
            inode: inode.parse().ok()?,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_and_without_a_path() {
        let l = MapsLine::parse(
            "7f83bad00000-7f83bad4f000 rw-p 00241000 fd:01 1234                       /usr/lib/libpython3.11.so.1.0",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.offset),
            (0x7f83_bad0_0000, 0x7f83_bad4_f000, 0x0024_1000)
        );
        assert!(!l.exec);
        assert_eq!(l.path, Some("/usr/lib/libpython3.11.so.1.0"));
        let anon = MapsLine::parse("7f83bad4f000-7f83bad60000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, None);
        let heap = MapsLine::parse("55d0c000-55d2d000 rw-p 00000000 00:00 0      [heap]").unwrap();
        assert_eq!(heap.path, Some("[heap]"));
    }

    #[test]
    fn this_process_maps_cover_its_code_and_its_statics() {
        static WORD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tgid = std::process::id();
        let mut c = CodeCollector::default();
        c.read_maps(tgid);
        let code_addr = Self_::here as *const () as u64;
        let data_addr = std::ptr::addr_of!(WORD) as u64;
        let p = c.code.process(tgid).unwrap();
        let code = p.module_offset(code_addr).expect("our code is in a module");
        let data = p
            .module_offset(data_addr)
            .expect("a static is in a module (or its .bss)");
        assert_eq!(
            code.module, data.module,
            "code and statics of one executable"
        );
        assert!(c.code.modules[code.module as usize].build_id.is_some());
        assert!(p.find(code_addr).unwrap().exec);
    }

    struct Self_;
    impl Self_ {
        #[inline(never)]
        fn here() {}
    }
}
