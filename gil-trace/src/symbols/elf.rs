//! The little of ELF that blazesym does not offer: where a file offset is loaded (for data
//! past the file's bytes, `.bss`, which only a virtual address can name), and whether code
//! bytes end in a call instruction (to check a return address).
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::Path,
};

/// A 64-bit little-endian ELF file's `PT_LOAD` segments: (file offset, virtual address,
/// size in memory).
pub struct LoadSegments(Vec<(u64, u64, u64)>);

const PT_LOAD: u32 = 1;

impl LoadSegments {
    pub fn read(path: &Path) -> Option<LoadSegments> {
        let mut file = File::open(path).ok()?;
        let mut header = [0u8; 64];
        file.read_exact(&mut header).ok()?;
        // ELF, 64-bit, little endian.
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return None;
        }
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let phoff = u64_at(&header, 0x20);
        let entsize = usize::from(u16_at(&header, 0x36));
        let count = usize::from(u16_at(&header, 0x38));
        if entsize < 56 || count > 4096 {
            return None;
        }
        let mut table = vec![0u8; entsize * count];
        file.seek(SeekFrom::Start(phoff)).ok()?;
        file.read_exact(&mut table).ok()?;
        let segments = table
            .chunks_exact(entsize)
            .filter(|ph| u32_at(ph, 0) == PT_LOAD)
            .map(|ph| (u64_at(ph, 8), u64_at(ph, 16), u64_at(ph, 40)))
            .collect();
        Some(LoadSegments(segments))
    }

    /// The virtual address of file offset `offset` (offsets past a segment's file bytes, in
    /// its zero-filled memory, included).
    pub fn vaddr(&self, offset: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(off, _, memsz)| offset >= off && offset < off + memsz)
            .map(|&(off, vaddr, _)| offset - off + vaddr)
    }
}

/// Do the bytes before `offset` of the file end in an x86-64 near call (`call rel32`, or
/// `call r/m64` in any of its addressing forms)? Other architectures: assumed so.
pub fn follows_call(path: &Path, offset: u64) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return true;
    }
    let Some(start) = offset.checked_sub(7) else {
        return false;
    };
    let mut b = [0u8; 7];
    let Ok(file) = File::open(path) else {
        return false;
    };
    if file.read_exact_at(&mut b, start).is_err() {
        return false;
    }
    ends_in_call(b)
}

/// `code` (the 7 bytes before a return address) ends in a call instruction.
fn ends_in_call(code: [u8; 7]) -> bool {
    // call rel32: E8 + 4 bytes.
    if code[2] == 0xe8 {
        return true;
    }
    // call r/m64: FF /2, ModRM (+ SIB) (+ displacement), 2 to 7 bytes.
    (2..=7).any(|len| {
        let at = 7 - len;
        if code[at] != 0xff {
            return false;
        }
        let modrm = code[at + 1];
        let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if reg != 2 {
            return false;
        }
        let sib = md != 3 && rm == 4;
        let sib_base_5 = sib && at + 2 < 7 && code[at + 2] & 7 == 5;
        let disp = match md {
            0 if rm == 5 || sib_base_5 => 4,
            1 => 1,
            2 => 4,
            _ => 0,
        };
        2 + usize::from(sib) + disp == len
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn before(bytes: &[u8]) -> [u8; 7] {
        let mut b = [0x90u8; 7];
        b[7 - bytes.len()..].copy_from_slice(bytes);
        b
    }

    #[test]
    fn call_forms_are_recognized_and_other_code_is_not() {
        assert!(ends_in_call(before(&[0xe8, 1, 2, 3, 4]))); // call rel32
        assert!(ends_in_call(before(&[0xff, 0xd0]))); // call rax
        assert!(ends_in_call(before(&[0x41, 0xff, 0xd3]))); // call r11
        assert!(ends_in_call(before(&[0xff, 0x15, 1, 2, 3, 4]))); // call [rip+d32]
        assert!(ends_in_call(before(&[0xff, 0x50, 0x08]))); // call [rax+8]
        assert!(ends_in_call(before(&[0xff, 0x54, 0x24, 0x08]))); // call [rsp+8]
        assert!(ends_in_call(before(&[0xff, 0x94, 0x24, 1, 2, 3, 4]))); // call [rsp+d32]
        assert!(!ends_in_call(before(&[0x48, 0x89, 0xc7]))); // mov rdi, rax
        assert!(!ends_in_call(before(&[0xff, 0xe0]))); // jmp rax
        assert!(!ends_in_call([0; 7]));
    }

    #[test]
    fn this_executable_maps_its_own_code_offsets_to_addresses() {
        let exe = std::env::current_exe().unwrap();
        let segments = LoadSegments::read(&exe).unwrap();
        assert!(!segments.0.is_empty());
        let (off, vaddr, _) = segments.0[0];
        assert_eq!(segments.vaddr(off), Some(vaddr));
        assert_eq!(segments.vaddr(u64::MAX - 1), None);
    }
}
