//! The CPython GIL, recognized by where its futex words are: inside `_PyRuntime`, in the
//! GIL's state (`struct _gil_runtime_state`), whose place differs by version (from CPython's
//! own headers per version; see docs/analysis.md, "Names"). The condition variable and mutex
//! a contended GIL's threads wait on are in the first 208 bytes of that state.
use super::Symbols;

/// Offset of the main interpreter's `_gil_runtime_state` from `_PyRuntime`, per 3.x minor.
/// 3.8–3.11 keep it at `_PyRuntime.ceval.gil`; 3.12+ in the main interpreter
/// (`_PyRuntime._main_interpreter._gil`), which is static since 3.11.
const GIL_STATE_OFFSET: [(u32, u64); 7] = [
    (8, 1152),
    (9, 352),
    (10, 352),
    (11, 360),
    (12, 77344),
    (13, 96032),
    (14, 98488),
];
/// `sizeof(struct _gil_runtime_state)` on x86-64 with glibc.
const GIL_STATE_LEN: u64 = 208;

/// A lock recognized as a CPython interpreter's GIL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CPythonGil {
    /// `3.11.7`, or `3.11` when only the file's name tells.
    pub version: String,
}

/// Is one of a lock's `words` (of process `tgid`) in a CPython GIL?
pub fn recognize(symbols: &Symbols, tgid: u32, words: &[u64]) -> Option<CPythonGil> {
    words.iter().find_map(|&addr| {
        let data = symbols.data(tgid, addr)?;
        if data.symbol != "_PyRuntime" {
            return None;
        }
        let (path, _) = symbols.module_file(tgid, addr)?;
        let (minor, version) = version(path)?;
        let (_, gil) = GIL_STATE_OFFSET.iter().find(|(m, _)| *m == minor)?;
        (data.offset >= *gil && data.offset < gil + GIL_STATE_LEN).then_some(CPythonGil { version })
    })
}

/// The interpreter's 3.x minor version and full version, from `Py_Version` (3.11+: the
/// `PY_VERSION_HEX` constant), else from the file's name (`libpython3.9.so`, `python3.10`).
fn version(path: &std::path::Path) -> Option<(u32, String)> {
    if let Some(hex) = py_version_hex(path) {
        let (major, minor, micro) = (hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
        if major == 3 {
            return Some((minor, format!("3.{minor}.{micro}")));
        }
    }
    let name = path.file_name()?.to_str()?;
    let rest = name.split("python3.").nth(1)?;
    let minor: u32 = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((minor, format!("3.{minor}")))
}

fn py_version_hex(path: &std::path::Path) -> Option<u32> {
    use blazesym::inspect::{source, Inspector};
    use std::os::unix::fs::FileExt;
    let inspector = Inspector::new();
    let mut elf = source::Elf::new(path);
    elf.debug_syms = false;
    let found = inspector
        .lookup(&source::Source::Elf(elf), &["Py_Version"])
        .ok()?;
    let offset = found.first()?.first()?.file_offset?;
    let mut bytes = [0u8; 4];
    std::fs::File::open(path)
        .ok()?
        .read_exact_at(&mut bytes, offset)
        .ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_comes_from_the_file_name_without_py_version() {
        assert_eq!(
            version(std::path::Path::new("/nonexistent/libpython3.9.so.1.0")),
            Some((9, "3.9".into()))
        );
        assert_eq!(version(std::path::Path::new("/nonexistent/node")), None);
    }
}
