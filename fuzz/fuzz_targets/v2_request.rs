//! Fuzz the protocol v2 request parser (`ls-refs`, `fetch`) and the
//! acknowledgments and ls-refs output built from it.
#![no_main]

use guts_io::ObjectId;
use guts_net::advertise::{write_ls_refs, LsRefsEntry};
use guts_net::negotiate::acknowledge_v2;
use guts_net::upload::V2Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match V2Request::parse_with_limit(data, 10_000) {
        Ok(V2Request::LsRefs(request)) => {
            let entries = [
                LsRefsEntry {
                    name: "HEAD",
                    oid: None,
                    symref_target: Some("refs/heads/main"),
                    peeled: None,
                },
                LsRefsEntry {
                    name: "refs/tags/v1",
                    oid: Some(ObjectId::NULL_SHA1),
                    symref_target: None,
                    peeled: Some(ObjectId::NULL_SHA1),
                },
            ];
            let mut out = Vec::new();
            write_ls_refs(&mut out, &request, &entries).expect("short names fit");
        }
        Ok(V2Request::Fetch(request)) => {
            let _ = acknowledge_v2(
                &request.haves,
                request.done,
                request.wait_for_done,
                |oid| oid.first_byte() % 2 == 0,
                |common| !common.is_empty(),
            );
        }
        Err(_) => {}
    }
});
