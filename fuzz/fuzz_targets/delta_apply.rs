//! Fuzz git delta application: the input is split in two, base and delta.
//! The first byte picks the split point.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize * rest.len()) / 255;
    let (base, delta) = rest.split_at(cut.min(rest.len()));
    let mut out = Vec::new();
    let _ = guts_io::delta::apply_delta(base, delta, &mut out, 1 << 24);
    assert!(out.len() <= 1 << 24);
});
