//! A deterministic stand-in for the fuzzers in `fuzz/`: run every parser
//! over many byte-level mutations of the real-traffic fixtures and check
//! that each input ends in a value or a typed error, never a panic.

use guts_net::negotiate::{acknowledge_v2, negotiate_v0_request};
use guts_net::pktline::PktReader;
use guts_net::receive::{parse_push_request, PushLimits};
use guts_net::upload::{UploadRequest, V2Request};

/// xorshift64*: fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = b"0123456789abcdefg \n\0"[rng.below(20)];
            }
            2 => data.truncate(rng.below(data.len() + 1)),
            3 if !data.is_empty() => {
                let i = rng.below(data.len());
                let len = rng.below(data.len() - i + 1);
                let chunk = data[i..i + len].to_vec();
                let at = rng.below(data.len());
                data.splice(at..at, chunk);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            _ => {}
        }
    }
    data
}

fn run_all(data: &[u8]) {
    let mut reader = PktReader::with_limit(data, 10_000);
    while let Ok(Some(_)) = reader.next_pkt() {}
    if let Ok(request) = UploadRequest::parse(data) {
        let _ = negotiate_v0_request(&request, |o| o.first_byte() % 2 == 0, |c| c.len() > 1);
    }
    if let Ok(V2Request::Fetch(f)) = V2Request::parse(data) {
        let _ = acknowledge_v2(&f.haves, f.done, f.wait_for_done, |_| true, |_| true);
    }
    let _ = parse_push_request(data, PushLimits::default());
}

#[test]
fn mutated_fixtures_never_panic() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "req" || x == "resp")
        })
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() > 10);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        run_all(seed);
        for _ in 0..500 {
            run_all(&mutate(&mut rng, seed));
        }
    }
}
