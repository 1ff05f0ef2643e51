//! Fuzz the object checks a push runs under `--strict`: commit, tree and tag
//! parsing, link extraction, and the `.gitmodules` / `.gitattributes` blob
//! checks (config parser, URL normalisation). pack_ingest cannot reach the
//! latter with mutated content (zlib + the pack checksum), so this target
//! feeds them directly. The first byte picks what the rest is.
#![no_main]

use guts_io::fsck::{self, FsckOptions};
use guts_io::{ObjectId, ObjectKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let oid = ObjectId::NULL_SHA1;
    match which % 4 {
        0 => {
            let _ = fsck::check_gitmodules(&oid, rest);
        }
        1 => {
            let _ = fsck::check_gitattributes(&oid, rest);
        }
        _ => {
            let kind = match which % 8 {
                2 => ObjectKind::Commit,
                3 | 6 => ObjectKind::Tree,
                _ => ObjectKind::Tag,
            };
            let mut found = Vec::new();
            let opts = FsckOptions::default();
            let _ = fsck::check_object_collecting(&oid, kind, rest, &opts, &mut found);
            let mut links = Vec::new();
            let _ = fsck::object_links(kind, rest, &mut links);
        }
    }
});
