//! Fuzz the streaming pack parser and ingest: arbitrary bytes as a pushed
//! pack, split into two chunks at a position taken from the input. Every
//! outcome must be Ok or a typed error, and nothing may be left behind.
#![no_main]

use guts_io::pack::ingest::{CheckOptions, Ingest, IngestLimits, NoObjects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = (data[0] as usize * data.len()) / 256;
    let body = &data[1..];
    let split = split.min(body.len());
    let dir = std::env::temp_dir().join(format!("guts-fuzz-ingest-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let limits = IngestLimits {
        object_max_bytes: 1 << 20,
        pack_max_bytes: 1 << 24,
        objects_max: 10_000,
        delta_cache_bytes: 1 << 22,
        threads: 1,
        ..IngestLimits::default()
    };
    let Ok(mut ingest) = Ingest::new(&dir, limits) else {
        return;
    };
    if ingest.write(&body[..split]).is_err() || ingest.write(&body[split..]).is_err() {
        return;
    }
    let checks = CheckOptions {
        strict: true,
        check_links: true,
    };
    if let Ok(pack) = ingest.finish(&NoObjects, &checks) {
        drop(pack); // uncommitted: temporary files are removed
    }
});
