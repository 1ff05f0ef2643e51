//! Fuzz the pack index reader: parsing (with and without checksum
//! verification) and lookups must never panic or read out of bounds.
#![no_main]

use bytes::Bytes;
use guts_io::pack::idx::PackIndex;
use guts_io::ObjectId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for verify in [true, false] {
        if let Ok(idx) = PackIndex::parse(Bytes::copy_from_slice(data), verify) {
            let n = idx.len().min(4096);
            for i in 0..n {
                let oid = idx.oid_at(i);
                let _ = idx.find(&oid);
                let _ = idx.offset_at(i);
                let _ = idx.crc_at(i);
            }
            let _ = idx.lookup(&ObjectId::NULL_SHA1);
            let _ = idx.pack_checksum();
        }
    }
});
