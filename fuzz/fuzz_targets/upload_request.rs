//! Fuzz the v0/v1 upload-pack request parser and the negotiation built on
//! its output.
#![no_main]

use guts_net::negotiate::negotiate_v0_request;
use guts_net::upload::UploadRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = UploadRequest::parse_with_limit(data, 10_000) {
        let outcome = negotiate_v0_request(
            &request,
            |oid| oid.first_byte() % 2 == 0,
            |common| common.len() > 1,
        );
        assert!(outcome.common.len() <= request.haves.len());
    }
});
