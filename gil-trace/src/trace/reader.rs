//! Reads a trace file back, validating everything it reads: a damaged file gives a
//! [`TraceError`] naming the file and offset, never a panic or an allocation sized by
//! untrusted input.
use std::{
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use gil_trace_common::RawEvent;

use super::{format::*, sort::SortedEvents, Event, TraceError};

/// What a trace can be read from: a file, or bytes in memory (tests, fuzzing).
pub trait TraceSource: Read + Seek + Send {}
impl<T: Read + Seek + Send> TraceSource for T {}

/// An open, validated trace: header and trailer are read at open; events stream on demand.
pub struct TraceReader {
    path: PathBuf,
    file: BufReader<Box<dyn TraceSource>>,
    meta: TraceMeta,
    trailer: TraceTrailer,
    /// Offset of the next block to read.
    pos: u64,
    /// Offset of the trailer block: events end there.
    events_end: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .finish()
    }
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<TraceReader, TraceError> {
        let io = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| TraceError::Io { path, what, source }
        };
        let file = File::open(path).map_err(io("cannot open trace"))?;
        let file_len = file.metadata().map_err(io("cannot stat trace"))?.len();
        Self::from_source(path, Box::new(file), file_len)
    }

    /// Reads a trace held in memory; `name` stands for the file in error messages.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>) -> Result<TraceReader, TraceError> {
        let len = bytes.len() as u64;
        Self::from_source(name, Box::new(std::io::Cursor::new(bytes)), len)
    }

    fn from_source(
        path: &Path,
        source: Box<dyn TraceSource>,
        file_len: u64,
    ) -> Result<TraceReader, TraceError> {
        let mut reader = TraceReader {
            path: path.to_path_buf(),
            // No bigger than the input: small traces (and fuzz inputs) stay cheap to open.
            file: BufReader::with_capacity(file_len.clamp(4096, 1 << 20) as usize, source),
            meta: TraceMeta::default(),
            trailer: TraceTrailer::default(),
            pos: 0,
            events_end: 0,
            buf: Vec::new(),
        };
        reader.read_header(file_len)?;
        reader.read_trailer(file_len)?;
        reader.seek(reader.pos)?;
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    pub fn trailer(&self) -> &TraceTrailer {
        &self.trailer
    }

    fn truncated(&self, offset: u64, what: impl Into<String>) -> TraceError {
        TraceError::Truncated {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    fn seek(&mut self, offset: u64) -> Result<(), TraceError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map(|_| ())
            .map_err(|source| TraceError::Io {
                path: self.path.clone(),
                what: "seek failed",
                source,
            })
    }

    fn read_exact_at(&mut self, offset: u64, len: usize, what: &str) -> Result<(), TraceError> {
        self.buf.clear();
        self.buf.resize(len, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.file.read_exact(&mut buf);
        self.buf = buf;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(self.truncated(offset, format!("file ends inside {what}")))
            }
            Err(source) => Err(TraceError::Io {
                path: self.path.clone(),
                what: "read failed",
                source,
            }),
        }
    }

    fn read_header(&mut self, file_len: u64) -> Result<(), TraceError> {
        if file_len < HEADER_FIXED_LEN {
            if file_len >= 8 {
                self.read_exact_at(0, 8, "the header")?;
                if &self.buf[..8] != MAGIC {
                    return Err(TraceError::BadMagic {
                        path: self.path.clone(),
                    });
                }
            }
            return Err(self.truncated(
                file_len,
                format!("file is {file_len} bytes, shorter than a trace header"),
            ));
        }
        self.read_exact_at(0, HEADER_FIXED_LEN as usize, "the header")?;
        if &self.buf[..8] != MAGIC {
            return Err(TraceError::BadMagic {
                path: self.path.clone(),
            });
        }
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let version = u32_at(&self.buf, 8);
        let meta_len = u32_at(&self.buf, 12);
        let meta_crc = u32_at(&self.buf, 16);
        if version != FORMAT_VERSION {
            return Err(TraceError::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if meta_len > MAX_META_LEN {
            return Err(self.corrupt(
                12,
                format!("header metadata length {meta_len} exceeds {MAX_META_LEN}"),
            ));
        }
        if HEADER_FIXED_LEN + meta_len as u64 > file_len {
            return Err(self.truncated(HEADER_FIXED_LEN, "file ends inside the header metadata"));
        }
        self.read_exact_at(HEADER_FIXED_LEN, meta_len as usize, "the header metadata")?;
        if crc32fast::hash(&self.buf) != meta_crc {
            return Err(self.corrupt(HEADER_FIXED_LEN, "header metadata checksum mismatch"));
        }
        self.meta = serde_json::from_slice(&self.buf).map_err(|e| {
            self.corrupt(
                HEADER_FIXED_LEN,
                format!("header metadata is not valid: {e}"),
            )
        })?;
        self.pos = HEADER_FIXED_LEN + meta_len as u64;
        Ok(())
    }

    fn read_trailer(&mut self, file_len: u64) -> Result<(), TraceError> {
        let no_footer = "no trailer: the recording did not finish (interrupted, disk full, or the file was cut)";
        if file_len < self.pos + BLOCK_HEADER_LEN + FOOTER_LEN {
            return Err(self.truncated(file_len, no_footer));
        }
        let footer_at = file_len - FOOTER_LEN;
        self.seek(footer_at)?;
        self.read_exact_at(footer_at, FOOTER_LEN as usize, "the footer")?;
        if &self.buf[8..16] != FOOTER_MAGIC {
            return Err(self.truncated(file_len, no_footer));
        }
        let trailer_at = u64::from_le_bytes(self.buf[..8].try_into().unwrap());
        if trailer_at < self.pos || trailer_at > footer_at - BLOCK_HEADER_LEN {
            return Err(self.corrupt(
                footer_at,
                format!("footer points at offset {trailer_at}, outside the file"),
            ));
        }
        self.seek(trailer_at)?;
        self.read_exact_at(
            trailer_at,
            BLOCK_HEADER_LEN as usize,
            "the trailer block header",
        )?;
        let tag = self.buf[0];
        let len = u32::from_le_bytes(self.buf[1..5].try_into().unwrap());
        let crc = u32::from_le_bytes(self.buf[5..9].try_into().unwrap());
        if tag != TAG_TRAILER
            || trailer_at + BLOCK_HEADER_LEN + len as u64 != footer_at
            || len > MAX_META_LEN
        {
            return Err(self.corrupt(trailer_at, "trailer block header is invalid"));
        }
        self.read_exact_at(trailer_at + BLOCK_HEADER_LEN, len as usize, "the trailer")?;
        if crc32fast::hash(&self.buf) != crc {
            return Err(self.corrupt(trailer_at, "trailer checksum mismatch"));
        }
        self.trailer = serde_json::from_slice(&self.buf)
            .map_err(|e| self.corrupt(trailer_at, format!("trailer is not valid: {e}")))?;
        self.events_end = trailer_at;
        Ok(())
    }

    /// Decodes the next event block into `out` (cleared first). `Ok(false)` at the end.
    pub fn next_block(&mut self, out: &mut Vec<RawEvent>) -> Result<bool, TraceError> {
        self.next_block_of(out, KindMask::ALL)
    }

    /// As [`Self::next_block`], keeping only the kinds in `kinds` (the others are still
    /// validated, but not stored).
    pub fn next_block_of(
        &mut self,
        out: &mut Vec<RawEvent>,
        kinds: KindMask,
    ) -> Result<bool, TraceError> {
        out.clear();
        if self.pos >= self.events_end {
            return Ok(false);
        }
        let at = self.pos;
        if at + BLOCK_HEADER_LEN > self.events_end {
            return Err(self.corrupt(at, "event block header overlaps the trailer"));
        }
        self.read_exact_at(at, BLOCK_HEADER_LEN as usize, "an event block header")?;
        let tag = self.buf[0];
        let len = u32::from_le_bytes(self.buf[1..5].try_into().unwrap());
        let crc = u32::from_le_bytes(self.buf[5..9].try_into().unwrap());
        if tag != TAG_EVENTS {
            return Err(self.corrupt(at, format!("unexpected block tag 0x{tag:02x}")));
        }
        if len > MAX_BLOCK_LEN || at + BLOCK_HEADER_LEN + len as u64 > self.events_end || len < 12 {
            return Err(self.corrupt(at, format!("event block length {len} is invalid")));
        }
        self.read_exact_at(at + BLOCK_HEADER_LEN, len as usize, "an event block")?;
        if crc32fast::hash(&self.buf) != crc {
            return Err(self.corrupt(at, "event block checksum mismatch"));
        }
        decode_block(&self.buf, out, kinds).map_err(|what| self.corrupt(at, what))?;
        self.pos = at + BLOCK_HEADER_LEN + len as u64;
        Ok(true)
    }

    /// All events in file order (not sorted), decoded block by block.
    pub fn raw_events(self) -> RawEvents {
        self.raw_events_of(KindMask::ALL)
    }

    /// The events of these kinds only, in file order: a pass that needs few kinds skips
    /// building the others.
    pub fn raw_events_of(self, kinds: KindMask) -> RawEvents {
        RawEvents {
            reader: self,
            block: Vec::new(),
            next: 0,
            failed: false,
            kinds,
        }
    }

    /// All events in timestamp order (sorted with a bounded window; see [`SortedEvents`]).
    pub fn events(self) -> SortedEvents<RawEvents> {
        self.events_of(KindMask::ALL)
    }

    /// The events of these kinds only, in timestamp order (sorted here with a bounded window
    /// unless the writer already ordered them).
    pub fn events_of(self, kinds: KindMask) -> SortedEvents<RawEvents> {
        if self.meta.events_ordered {
            SortedEvents::ordered(self.raw_events_of(kinds))
        } else {
            SortedEvents::new(self.raw_events_of(kinds))
        }
    }
}

/// A set of event kinds (by `EventKind` value); kinds beyond the mask's width, e.g. unknown
/// ones from a newer format, are in [`KindMask::ALL`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindMask(u64);

impl KindMask {
    pub const ALL: KindMask = KindMask(u64::MAX);

    pub const fn of(kinds: &[gil_trace_common::EventKind]) -> KindMask {
        let mut mask = 0u64;
        let mut i = 0;
        while i < kinds.len() {
            mask |= 1 << (kinds[i] as u32);
            i += 1;
        }
        KindMask(mask)
    }

    #[inline(always)]
    pub fn contains(self, kind: u64) -> bool {
        self.0 == u64::MAX || (kind < 64 && self.0 & (1 << kind) != 0)
    }
}

/// Decodes an event block payload (after its checksum was verified), keeping `kinds`.
fn decode_block(payload: &[u8], out: &mut Vec<RawEvent>, kinds: KindMask) -> Result<(), String> {
    let count = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
    let base_ts = u64::from_le_bytes(payload[4..12].try_into().unwrap());
    let records = &payload[12..];
    if count > records.len() / MIN_RECORD_LEN {
        return Err(format!(
            "event block claims {count} events in {} bytes",
            records.len()
        ));
    }
    out.reserve(count);
    let mut pos = 0usize;
    let mut ts = base_ts;
    let bad = |i: usize| format!("event {i} of the block is malformed");
    for i in 0..count {
        let mut next = || get_varint(records, &mut pos).ok_or_else(|| bad(i));
        let kind = next()?;
        let delta = unzigzag(next()?);
        let tid = next()?;
        let tgid = next()?;
        let cpu = next()?;
        if kind > u32::MAX as u64
            || tid > u32::MAX as u64
            || tgid > u32::MAX as u64
            || cpu > u32::MAX as u64
        {
            return Err(bad(i));
        }
        let mask = *records.get(pos).ok_or_else(|| bad(i))?;
        pos += 1;
        if mask > 0x0f {
            return Err(bad(i));
        }
        let mut args = [0u64; 4];
        for (bit, arg) in args.iter_mut().enumerate() {
            if mask & (1 << bit) != 0 {
                *arg = get_varint(records, &mut pos).ok_or_else(|| bad(i))?;
            }
        }
        ts = ts.wrapping_add(delta as u64);
        if !kinds.contains(kind) {
            continue;
        }
        out.push(RawEvent {
            ts_ns: ts,
            kind: kind as u32,
            tid: tid as u32,
            tgid: tgid as u32,
            cpu: cpu as u32,
            args,
        });
    }
    if pos != records.len() {
        return Err(format!(
            "{} stray bytes after the block's last event",
            records.len() - pos
        ));
    }
    Ok(())
}

/// Iterator over decoded events in file order. After an error it ends.
pub struct RawEvents {
    reader: TraceReader,
    block: Vec<RawEvent>,
    next: usize,
    failed: bool,
    kinds: KindMask,
}

impl RawEvents {
    pub fn reader(&self) -> &TraceReader {
        &self.reader
    }
}

impl Iterator for RawEvents {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next >= self.block.len() {
            if self.failed {
                return None;
            }
            self.next = 0;
            match self.reader.next_block_of(&mut self.block, self.kinds) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let raw = self.block[self.next];
        self.next += 1;
        Some(Ok(Event::from(raw)))
    }
}
