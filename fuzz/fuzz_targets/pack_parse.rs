//! Fuzz the streaming pack parser alone, in memory (no files): arbitrary
//! bytes as a pack, split into two chunks at a position taken from the
//! input. Every outcome must be Ok or a typed error, and a parsed pack must
//! hold as many entries as its header declared.
#![no_main]

use guts_io::pack::ingest::{IngestLimits, PackParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = (data[0] as usize * data.len()) / 256;
    let body = &data[1..];
    let split = split.min(body.len());
    let limits = IngestLimits {
        object_max_bytes: 1 << 20,
        pack_max_bytes: 1 << 24,
        objects_max: 10_000,
        ..IngestLimits::default()
    };
    let mut parser = PackParser::new(&limits);
    let mut objects = 0u32;
    if parser.feed(&body[..split], |_| objects += 1).is_err()
        || parser.feed(&body[split..], |_| objects += 1).is_err()
    {
        return;
    }
    if let Ok(parsed) = parser.finish() {
        let declared = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
        assert_eq!(parsed.object_count(), declared);
        assert!(objects <= declared);
    }
});
