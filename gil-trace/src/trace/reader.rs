//! Reads a trace file back, validating everything it reads: a damaged file gives a
//! [`TraceError`] naming the file and offset, never a panic or an allocation sized by
//! untrusted input.
use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use gil_trace_common::RawEvent;

use super::{
    code::CodeMap,
    format::{
        get_record_v1, get_record_v2, skip_record_v2, TraceMeta, TraceTrailer, BLOCK_HEADER_LEN,
        FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, HEADER_FIXED_LEN, MAGIC, MAX_BLOCK_LEN,
        MAX_CODE_LEN, MAX_META_LEN, MIN_RECORD_LEN, OLDEST_FORMAT_VERSION, TAG_CODE, TAG_EVENTS,
        TAG_TRAILER,
    },
    stream::{KindMask, BATCH_EVENTS},
    Event, TraceError,
};

/// What a trace can be read from: a file, or bytes in memory (tests, fuzzing).
pub trait TraceSource: Read + Seek + Send {}
impl<T: Read + Seek + Send> TraceSource for T {}

/// An open, validated trace: header and trailer are read at open; events stream on demand.
pub struct TraceReader {
    path: PathBuf,
    /// Read without a `BufReader`: event blocks are read straight into `buf` (see
    /// `load_block`), the few other reads are small.
    file: Box<dyn TraceSource>,
    /// The next event block's header, read with the block before it.
    next_header: Option<[u8; BLOCK_HEADER_LEN as usize]>,
    meta: TraceMeta,
    trailer: TraceTrailer,
    /// Offset of the next block to read.
    pos: u64,
    /// Offset of the trailer block: events end there.
    events_end: u64,
    /// Where the trailer block starts.
    trailer_at: u64,
    /// Scratch for header and trailer; the current event block's payload while decoding.
    buf: Vec<u8>,
    block: BlockCursor,
    /// The file's format version (records differ between 1 and 2).
    version: u32,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
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
            file: source,
            next_header: None,
            meta: TraceMeta::default(),
            trailer: TraceTrailer::default(),
            pos: 0,
            events_end: 0,
            trailer_at: 0,
            buf: Vec::new(),
            block: BlockCursor::default(),
            version: FORMAT_VERSION,
        };
        reader.read_header(file_len)?;
        reader.read_trailer(file_len)?;
        reader.seek(reader.pos)?;
        log::info!(
            "{}: format version {}, {} events, {} threads, {} bytes",
            path.display(),
            reader.version,
            reader.trailer.events,
            reader.trailer.threads.len(),
            file_len
        );
        Ok(reader)
    }

    /// The code block (mappings, modules, user stacks), if the trace has one (version 3
    /// traces recorded with them). Leaves the event stream where it was.
    pub fn code_map(&mut self) -> Result<Option<CodeMap>, TraceError> {
        let Some(at) = self.trailer.code_block_offset else {
            return Ok(None);
        };
        let resume = self
            .file
            .stream_position()
            .map_err(|source| TraceError::Io {
                path: self.path.clone(),
                what: "seek failed",
                source,
            })?;
        self.seek(at)?;
        let mut header = [0u8; BLOCK_HEADER_LEN as usize];
        let read = self.file.read_exact(&mut header);
        read.map_err(|e| self.read_error(at, "the code block header", e))?;
        let len = u32::from_le_bytes(header[1..5].try_into().unwrap());
        let crc = u32::from_le_bytes(header[5..9].try_into().unwrap());
        if header[0] != TAG_CODE
            || len > MAX_CODE_LEN
            || at + BLOCK_HEADER_LEN + u64::from(len) > self.trailer_at
        {
            return Err(self.corrupt(at, "code block header is invalid"));
        }
        let mut payload = vec![0u8; len as usize];
        let read = self.file.read_exact(&mut payload);
        read.map_err(|e| self.read_error(at + BLOCK_HEADER_LEN, "the code block", e))?;
        if crc32fast::hash(&payload) != crc {
            return Err(self.corrupt(at, "code block checksum mismatch"));
        }
        let code = serde_json::from_slice(&payload)
            .map_err(|e| self.corrupt(at, format!("code block is not valid: {e}")))?;
        self.seek(resume)?;
        Ok(Some(code))
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

    /// Reads `len` bytes at `offset` (the current position) into `buf` (header, metadata,
    /// footer, trailer: event blocks have their own placement, see `load_block`).
    fn read_exact_at(&mut self, offset: u64, len: usize, what: &str) -> Result<(), TraceError> {
        self.buf.clear();
        self.buf.resize(len, 0);
        let read = self.file.read_exact(&mut self.buf);
        read.map_err(|e| self.read_error(offset, what, e))
    }

    /// A failed `read_exact` at `offset` (the current position) of `what`.
    fn read_error(&self, offset: u64, what: &str, error: std::io::Error) -> TraceError {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            return self.truncated(offset, format!("file ends inside {what}"));
        }
        TraceError::Io {
            path: self.path.clone(),
            what: "read failed",
            source: error,
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
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
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
        if HEADER_FIXED_LEN + u64::from(meta_len) > file_len {
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
        self.pos = HEADER_FIXED_LEN + u64::from(meta_len);
        self.version = version;
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
            || trailer_at + BLOCK_HEADER_LEN + u64::from(len) != footer_at
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
        self.trailer_at = trailer_at;
        self.events_end = match self.trailer.code_block_offset {
            Some(code_at) if (self.pos..trailer_at).contains(&code_at) => code_at,
            Some(code_at) => {
                return Err(self.corrupt(
                    trailer_at,
                    format!("trailer points at a code block at {code_at}, outside the events"),
                ))
            }
            None => trailer_at,
        };
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
        if self.block.left == 0 && !self.load_block()? {
            return Ok(false);
        }
        out.reserve(self.block.left as usize);
        self.decode(usize::MAX, kinds, |raw| out.push(raw))?;
        Ok(true)
    }

    /// Decodes up to `max` next events (of `kinds`) into `out` (cleared first), loading
    /// blocks as needed; `Ok(false)` at the end. Small batches keep the decoded events in
    /// cache while the analysis reads them.
    pub fn next_events(
        &mut self,
        out: &mut Vec<Event>,
        kinds: KindMask,
        max: usize,
    ) -> Result<bool, TraceError> {
        self.next_events_with(out, kinds, max, |_| {})
    }

    /// The next [`BATCH_EVENTS`] events of an ordered file (see [`Self::next_events`]), each
    /// earlier than its predecessor (only in a damaged or hand-made file) raised to it and
    /// counted in `late`; `last_out` carries the last time from batch to batch. Here, in the
    /// decoder's module, so the decoding loop and the check compile as one (from another
    /// module the per-event closure was left out of line: +10 % instructions per report).
    pub fn next_ordered_batch(
        &mut self,
        out: &mut Vec<Event>,
        kinds: KindMask,
        last_out: &mut u64,
        late: &mut u64,
    ) -> Result<bool, TraceError> {
        self.next_events_with(out, kinds, BATCH_EVENTS, |ev| {
            if ev.ts_ns < *last_out {
                *late += 1;
                ev.ts_ns = *last_out;
            }
            *last_out = ev.ts_ns;
        })
    }

    /// [`Self::next_events`], each event passed through `fix` as it is decoded (in the same
    /// loop: a second one over the batch cost ~2 % of a report).
    #[inline(always)]
    fn next_events_with(
        &mut self,
        out: &mut Vec<Event>,
        kinds: KindMask,
        max: usize,
        mut fix: impl FnMut(&mut Event),
    ) -> Result<bool, TraceError> {
        out.clear();
        out.reserve(max.min(BATCH_EVENTS));
        while out.is_empty() {
            if self.block.left == 0 && !self.load_block()? {
                return Ok(false);
            }
            self.decode(max, kinds, |raw| {
                let mut event = Event::from(raw);
                fix(&mut event);
                out.push(event);
            })?;
        }
        Ok(true)
    }

    /// Reads and checks the next event block; `Ok(false)` at the end of the events.
    fn load_block(&mut self) -> Result<bool, TraceError> {
        if self.pos >= self.events_end {
            return Ok(false);
        }
        let at = self.pos;
        if at + BLOCK_HEADER_LEN > self.events_end {
            return Err(self.corrupt(at, "event block header overlaps the trailer"));
        }
        let header = if let Some(header) = self.next_header.take() {
            header
        } else {
            let mut header = [0u8; BLOCK_HEADER_LEN as usize];
            let read = self.file.read_exact(&mut header);
            read.map_err(|e| self.read_error(at, "an event block header", e))?;
            header
        };
        let tag = header[0];
        let len = u32::from_le_bytes(header[1..5].try_into().unwrap());
        let crc = u32::from_le_bytes(header[5..9].try_into().unwrap());
        if tag != TAG_EVENTS {
            return Err(self.corrupt(at, format!("unexpected block tag 0x{tag:02x}")));
        }
        if len > MAX_BLOCK_LEN
            || at + BLOCK_HEADER_LEN + u64::from(len) > self.events_end
            || len < 12
        {
            return Err(self.corrupt(at, format!("event block length {len} is invalid")));
        }
        // The payload and the next block's header (there always is one: the trailer's) in one
        // read, straight into `buf` at a place aligned like the file offset modulo a cache
        // line: the kernel's copy between differently aligned addresses was ~4x slower
        // (~12 % of a report, with a small `BufReader` passing blocks through), and a large
        // `BufReader` cost a second copy (~3 %). `buf` keeps its length: only growth is
        // zeroed.
        let len = len as usize;
        let payload_at = at + BLOCK_HEADER_LEN;
        let read_len = len + BLOCK_HEADER_LEN as usize;
        let needed = BLOCK_ALIGN + read_len + BLOCK_PADDING;
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
        let base = (payload_at as usize).wrapping_sub(self.buf.as_ptr() as usize) % BLOCK_ALIGN;
        let read = self.file.read_exact(&mut self.buf[base..base + read_len]);
        read.map_err(|e| self.read_error(payload_at, "an event block", e))?;
        let payload = base..base + len;
        self.next_header = Some(
            self.buf[payload.end..payload.end + BLOCK_HEADER_LEN as usize]
                .try_into()
                .unwrap(),
        );
        if crc32fast::hash(&self.buf[payload.clone()]) != crc {
            return Err(self.corrupt(at, "event block checksum mismatch"));
        }
        let count = u32::from_le_bytes(self.buf[base..base + 4].try_into().unwrap());
        let records = len - 12;
        if count as usize > records / MIN_RECORD_LEN {
            return Err(self.corrupt(
                at,
                format!("event block claims {count} events in {records} bytes"),
            ));
        }
        // Zeros after the payload let the record decoders load 8 bytes at any field they
        // can reach (see `BLOCK_PADDING`).
        self.buf[payload.end..payload.end + BLOCK_PADDING].fill(0);
        self.block = BlockCursor {
            at,
            pos: base + 12,
            end: payload.end,
            left: count,
            index: 0,
            ts: u64::from_le_bytes(self.buf[base + 4..base + 12].try_into().unwrap()),
        };
        self.pos = payload_at + len as u64;
        Ok(true)
    }

    /// Decodes up to `max` events of the current block, handing those of `kinds` to `emit`.
    #[inline(always)]
    fn decode(
        &mut self,
        max: usize,
        kinds: KindMask,
        emit: impl FnMut(RawEvent),
    ) -> Result<(), TraceError> {
        match (self.version, kinds == KindMask::ALL) {
            (1, _) => self.decode_with::<V1>(max, kinds, emit),
            (_, true) => self.decode_with::<V2>(max, kinds, emit),
            (_, false) => self.decode_with::<V2OfKinds>(max, kinds, emit),
        }
    }

    #[inline(always)]
    fn decode_with<R: RecordDecoder>(
        &mut self,
        max: usize,
        kinds: KindMask,
        mut emit: impl FnMut(RawEvent),
    ) -> Result<(), TraceError> {
        let BlockCursor {
            at,
            mut pos,
            end,
            mut left,
            mut index,
            mut ts,
        } = self.block;
        let buf = &self.buf[..];
        let mut decoded = 0usize;
        let mut result = Ok(());
        while left > 0 && decoded < max {
            if let Some((raw, delta)) = R::record(buf, &mut pos, end, kinds) {
                ts = ts.wrapping_add(delta as u64);
                if kinds.contains(u64::from(raw.kind)) {
                    emit(RawEvent { ts_ns: ts, ..raw });
                }
            } else {
                result = Err(format!("event {index} of the block is malformed"));
                break;
            }
            left -= 1;
            index += 1;
            decoded += 1;
        }
        if result.is_ok() && left == 0 && pos < end {
            result = Err(format!(
                "{} stray bytes after the block's last event",
                end - pos
            ));
        }
        self.block = BlockCursor {
            at,
            pos,
            end,
            left: if result.is_ok() { left } else { 0 },
            index,
            ts,
        };
        result.map_err(|what| self.corrupt(at, what))
    }
}

/// Where decoding stands in the current event block.
#[derive(Clone, Copy, Debug, Default)]
struct BlockCursor {
    /// File offset of the block (for errors).
    at: u64,
    /// Next record, and the end of the records, in the reader's buffer.
    pos: usize,
    end: usize,
    /// Records not yet decoded, and the index of the next one.
    left: u32,
    index: u32,
    /// Timestamp of the last decoded record.
    ts: u64,
}

/// Zero bytes kept after a block's records, so the decoders need no length check per field.
/// Version 1: a record that starts inside the records can reach at most 10 varints + 1 mask
/// byte past their end (each varint ends at the first zero byte), each varint load reading 8
/// bytes. Version 2: a record's fields are read from a fixed window of `V2_WINDOW` (72)
/// bytes after its 5-byte head.
const BLOCK_PADDING: usize = 80;
/// Event blocks are placed in the read buffer aligned like their file offset modulo this.
const BLOCK_ALIGN: usize = 64;

/// How `TraceReader::decode_with` decodes one record: a type, not a closure, so the call is
/// static and inlined into its loop (closures there were not, at ~10 % of a pass).
trait RecordDecoder {
    /// The record at `pos` (advanced past it) and its time delta; `None` if malformed.
    fn record(buf: &[u8], pos: &mut usize, end: usize, kinds: KindMask) -> Option<(RawEvent, i64)>;
}

struct V1;
struct V2;
/// Version 2 for a pass that wants few kinds: the others are stepped over, only their time
/// delta read (they come back with nothing but their kind filled in, for the filter to drop).
struct V2OfKinds;

impl RecordDecoder for V1 {
    #[inline(always)]
    fn record(buf: &[u8], pos: &mut usize, end: usize, _: KindMask) -> Option<(RawEvent, i64)> {
        get_record_v1(buf, pos, end)
    }
}

impl RecordDecoder for V2 {
    #[inline(always)]
    fn record(buf: &[u8], pos: &mut usize, end: usize, _: KindMask) -> Option<(RawEvent, i64)> {
        get_record_v2(buf, pos, end)
    }
}

impl RecordDecoder for V2OfKinds {
    #[inline(always)]
    fn record(buf: &[u8], pos: &mut usize, end: usize, kinds: KindMask) -> Option<(RawEvent, i64)> {
        match buf.get(*pos) {
            Some(&kind) if !kinds.contains(u64::from(kind)) => {
                let skipped = RawEvent {
                    kind: u32::from(kind),
                    ..RawEvent::default()
                };
                skip_record_v2(buf, pos, end).map(|delta| (skipped, delta))
            }
            _ => get_record_v2(buf, pos, end),
        }
    }
}
