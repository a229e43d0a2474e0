//! Fuzzes the trace reader: any bytes must give a trace or a TraceError, never a panic, a
//! hang or an allocation sized by the input. Run: `cargo +nightly fuzz run reader`.
#![no_main]

use std::path::Path;

use gil_trace::trace::TraceReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = TraceReader::from_bytes(Path::new("fuzz.trace"), data.to_vec()) {
        let _ = reader.trailer().events;
        for ev in reader.events() {
            if ev.is_err() {
                break;
            }
        }
    }
});
