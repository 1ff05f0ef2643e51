//! Fuzz the incremental push header parser: the one-shot parse and a parse
//! fed in two pieces must agree.
#![no_main]

use guts_net::receive::{parse_push_request, PushLimits, PushParser, PushStep};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = PushLimits {
        commands_max: 1_000,
        ..PushLimits::default()
    };
    let whole = parse_push_request(data, limits);
    // Same input, fed as two chunks the way a socket delivers it.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut parser = PushParser::new(limits);
    let mut buffered = data[..split].to_vec();
    let mut start = 0; // offset in `data` of buffered[0]
    let mut fed = split;
    let chunked = loop {
        match parser.advance(&buffered) {
            Ok(PushStep::NeedMore { consumed }) => {
                buffered.drain(..consumed);
                start += consumed;
                if fed == data.len() {
                    break Ok(None);
                }
                buffered.extend_from_slice(&data[fed..]);
                fed = data.len();
            }
            Ok(PushStep::Done { consumed, request }) => {
                break Ok(Some((request, start + consumed)))
            }
            Err(e) => break Err(e),
        }
    };
    match (whole, chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one-shot {a:?} vs chunked {b:?}"),
    }
});
