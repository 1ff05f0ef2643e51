//! Benchmarks of guts-net's parsers and negotiation on requests built from
//! the tokio corpus (4,933 commits, 470 refs): pkt-line framing, v0 and v2
//! upload-pack requests with every ref tip wanted and every commit as a
//! have, `ls-refs` prefixes, a 10,000-command push header, and the ACK/NAK
//! rounds of v0 and v2 negotiation against the real object store.
//!
//! Setup mirror-clones `../shared/corpus/tokio.bundle` into a temporary
//! directory and opens its pack as an object store.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use guts_io::store::ObjectStore;
use guts_io::ObjectId;
use guts_net::negotiate::{acknowledge_v2, negotiate_v0};
use guts_net::pktline::{write_data, write_delim, write_flush};
use guts_net::{
    AckMode, PktReader, PushParser, PushStep, RefPrefixes, RequestEnd, UploadRequest,
    UploadRequestParser, V2Request, V2RequestParser, REQUEST_PKTS_MAX,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a streaming parser is fed at a time (a typical HTTP body read).
const CHUNK: usize = 64 * 1024;

struct Corpus {
    _tmp: tempfile::TempDir,
    store: ObjectStore,
    /// Distinct ref tips, sorted.
    tips: Vec<ObjectId>,
    /// `(name, oid)` of every ref.
    refs: Vec<(String, ObjectId)>,
    /// Every commit, newest first (`git rev-list --all`).
    commits: Vec<ObjectId>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    guts_testkit::git_ok(dir, args)
}

fn corpus() -> Corpus {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mirror: PathBuf = tmp.path().join("tokio.git");
    let bundle = guts_testkit::corpus_bundle("tokio");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            bundle.to_str().expect("path"),
            mirror.to_str().expect("path"),
        ],
    );
    let pack_dir = tmp.path().join("store/pack");
    std::fs::create_dir_all(&pack_dir).expect("mkdir");
    for e in std::fs::read_dir(mirror.join("objects/pack")).expect("read_dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        if name.ends_with(".pack") || name.ends_with(".idx") {
            std::fs::copy(&p, pack_dir.join(name)).expect("copy");
        }
    }
    let store = ObjectStore::open(&tmp.path().join("store")).expect("open store");
    let refs: Vec<(String, ObjectId)> = git(
        &mirror,
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    )
    .lines()
    .map(|l| {
        let (oid, name) = l.split_once(' ').expect("ref line");
        (name.to_owned(), oid.parse().expect("oid"))
    })
    .collect();
    let mut tips: Vec<ObjectId> = refs.iter().map(|r| r.1).collect();
    tips.sort();
    tips.dedup();
    let commits: Vec<ObjectId> = git(&mirror, &["rev-list", "--all"])
        .lines()
        .map(|l| l.parse().expect("oid"))
        .collect();
    Corpus {
        _tmp: tmp,
        store,
        tips,
        refs,
        commits,
    }
}

fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let mut payload = Vec::new();
    for p in parts {
        payload.extend_from_slice(p);
    }
    write_data(out, &payload).expect("pkt");
}

/// A v0/v1 stateless upload-pack request as git 2.x sends it: every tip
/// wanted (capabilities on the first want), then `haves`, then `done` or a
/// flush.
fn v0_request(wants: &[ObjectId], haves: &[ObjectId], done: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        if i == 0 {
            line(
                &mut out,
                &[
                    b"want ",
                    &w.hex_bytes(),
                    b" multi_ack_detailed no-done side-band-64k thin-pack ofs-delta deepen-since deepen-not agent=git/2.43.0\n",
                ],
            );
        } else {
            line(&mut out, &[b"want ", &w.hex_bytes(), b"\n"]);
        }
    }
    write_flush(&mut out);
    for h in haves {
        line(&mut out, &[b"have ", &h.hex_bytes(), b"\n"]);
    }
    if done {
        line(&mut out, &[b"done\n"]);
    } else {
        write_flush(&mut out);
    }
    out
}

/// A protocol v2 `fetch` request as git 2.x sends it.
fn v2_fetch_request(wants: &[ObjectId], haves: &[ObjectId], done: bool) -> Vec<u8> {
    let mut out = Vec::new();
    line(&mut out, &[b"command=fetch\n"]);
    line(&mut out, &[b"agent=git/2.43.0\n"]);
    line(&mut out, &[b"object-format=sha1\n"]);
    write_delim(&mut out);
    line(&mut out, &[b"thin-pack\n"]);
    line(&mut out, &[b"ofs-delta\n"]);
    for w in wants {
        line(&mut out, &[b"want ", &w.hex_bytes(), b"\n"]);
    }
    for h in haves {
        line(&mut out, &[b"have ", &h.hex_bytes(), b"\n"]);
    }
    if done {
        line(&mut out, &[b"done\n"]);
    }
    write_flush(&mut out);
    out
}

/// A v2 `ls-refs` request with `prefixes`.
fn ls_refs_request(prefixes: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    line(&mut out, &[b"command=ls-refs\n"]);
    line(&mut out, &[b"agent=git/2.43.0\n"]);
    line(&mut out, &[b"object-format=sha1\n"]);
    write_delim(&mut out);
    line(&mut out, &[b"peel\n"]);
    line(&mut out, &[b"symrefs\n"]);
    line(&mut out, &[b"unborn\n"]);
    for p in prefixes {
        line(&mut out, &[b"ref-prefix ", p.as_bytes(), b"\n"]);
    }
    write_flush(&mut out);
    out
}

/// A push header of `n` commands (each a branch moved from one corpus
/// commit to another), capabilities on the first, then a flush.
fn push_request(commits: &[ObjectId], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let old = commits[(2 * i + 1) % commits.len()];
        let new = commits[(2 * i) % commits.len()];
        let name = format!("refs/heads/topic/{i:05}");
        if i == 0 {
            let mut payload = Vec::new();
            payload.extend_from_slice(&old.hex_bytes());
            payload.push(b' ');
            payload.extend_from_slice(&new.hex_bytes());
            payload.push(b' ');
            payload.extend_from_slice(name.as_bytes());
            payload.push(0);
            payload.extend_from_slice(
                b"report-status-v2 side-band-64k atomic quiet object-format=sha1 agent=git/2.43.0",
            );
            write_data(&mut out, &payload).expect("pkt");
        } else {
            line(
                &mut out,
                &[
                    &old.hex_bytes(),
                    b" ",
                    &new.hex_bytes(),
                    b" ",
                    name.as_bytes(),
                ],
            );
        }
    }
    write_flush(&mut out);
    out
}

/// Every pkt of `body`, counted.
fn read_all(body: &[u8]) -> usize {
    let mut r = PktReader::new(body);
    let mut n = 0;
    while let Some(pkt) = r.next_pkt().expect("pkt") {
        std::hint::black_box(pkt);
        n += 1;
    }
    n
}

/// `body` through the streaming v0 parser, `CHUNK` bytes at a time, the
/// unconsumed tail carried over as the HTTP layer does.
fn stream_v0(body: &[u8]) -> UploadRequest {
    let mut parser = UploadRequestParser::new(REQUEST_PKTS_MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    for chunk in body.chunks(CHUNK) {
        buf.extend_from_slice(chunk);
        let used = parser.advance(&buf).expect("advance");
        buf.drain(..used);
    }
    parser.finish(&buf).expect("finish")
}

/// Like [`stream_v0`] for the v2 parser.
fn stream_v2(body: &[u8]) -> V2Request {
    let mut parser = V2RequestParser::new(REQUEST_PKTS_MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    for chunk in body.chunks(CHUNK) {
        buf.extend_from_slice(chunk);
        let used = parser.advance(&buf).expect("advance");
        buf.drain(..used);
    }
    parser.finish(&buf).expect("finish")
}

fn stream_push(body: &[u8]) -> usize {
    let mut parser = PushParser::default();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * CHUNK);
    for chunk in body.chunks(CHUNK) {
        buf.extend_from_slice(chunk);
        match parser.advance(&buf).expect("advance") {
            PushStep::NeedMore { consumed } => {
                buf.drain(..consumed);
            }
            PushStep::Done { request, .. } => return request.commands.len(),
        }
    }
    panic!("push header incomplete");
}

fn pktline_benches(cr: &mut Criterion, c: &Corpus) {
    // A large realistic stream: a negotiation request with every commit
    // as a have, followed by the v0 ref advertisement of every ref.
    let mut body = v0_request(&c.tips, &c.commits, false);
    for (name, oid) in &c.refs {
        line(&mut body, &[&oid.hex_bytes(), b" ", name.as_bytes(), b"\n"]);
    }
    write_flush(&mut body);
    let pkts = read_all(&body);
    let mut g = cr.benchmark_group("net/pktline_parse");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(
        BenchmarkId::new("pkt_reader", format!("{pkts}_pkts")),
        |b| b.iter(|| read_all(&body)),
    );
    g.finish();
}

fn upload_request_benches(cr: &mut Criterion, c: &Corpus) {
    let label = format!("{}_wants_{}_haves", c.tips.len(), c.commits.len());

    let body = v0_request(&c.tips, &c.commits, true);
    let mut g = cr.benchmark_group("net/upload_request_v0");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(BenchmarkId::new("parse", &label), |b| {
        b.iter(|| UploadRequest::parse(&body).expect("parse").haves.len())
    });
    g.bench_function(BenchmarkId::new("streaming_64k", &label), |b| {
        b.iter(|| stream_v0(&body).haves.len())
    });
    g.finish();

    let body = v2_fetch_request(&c.tips, &c.commits, false);
    let mut g = cr.benchmark_group("net/fetch_request_v2");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(BenchmarkId::new("parse", &label), |b| {
        b.iter(|| match V2Request::parse(&body).expect("parse") {
            V2Request::Fetch(f) => f.haves.len(),
            _ => unreachable!("not a fetch request"),
        })
    });
    g.bench_function(BenchmarkId::new("streaming_64k", &label), |b| {
        b.iter(|| match stream_v2(&body) {
            V2Request::Fetch(f) => f.haves.len(),
            _ => unreachable!("not a fetch request"),
        })
    });
    g.finish();
}

fn ls_refs_benches(cr: &mut Criterion, c: &Corpus) {
    // What `git clone` sends, and what a fetch of every tag by name sends
    // (one prefix per tag, plus the branch namespace).
    let clone_prefixes: Vec<String> = ["HEAD", "refs/heads/", "refs/tags/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut many_prefixes: Vec<String> = c
        .refs
        .iter()
        .filter(|(n, _)| n.starts_with("refs/tags/"))
        .map(|(n, _)| n.clone())
        .collect();
    many_prefixes.push("refs/heads/".into());

    let mut g = cr.benchmark_group("net/ls_refs_request");
    for (label, prefixes) in [("clone_3", &clone_prefixes), ("tags", &many_prefixes)] {
        let body = ls_refs_request(prefixes);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let id = format!("{label}_{}_prefixes", prefixes.len());
        g.bench_function(BenchmarkId::new("parse", id), |b| {
            b.iter(|| match V2Request::parse(&body).expect("parse") {
                V2Request::LsRefs(r) => r.ref_prefixes.len(),
                _ => unreachable!("not an ls-refs request"),
            })
        });
    }
    g.finish();

    // The names a busy host's repository advertises: tokio's 470 refs plus
    // 30,000 pull-request refs (synthetic names in GitHub's layout).
    let mut names: Vec<String> = c.refs.iter().map(|(n, _)| n.clone()).collect();
    for i in 0..30_000 {
        names.push(format!("refs/pull/{i}/head"));
    }
    names.sort();
    let mut g = cr.benchmark_group("net/ls_refs_match");
    g.throughput(Throughput::Elements(names.len() as u64));
    for (label, prefixes) in [("clone_3", &clone_prefixes), ("tags", &many_prefixes)] {
        let id = format!("{label}_{}_prefixes_{}_refs", prefixes.len(), names.len());
        g.bench_function(BenchmarkId::new("ref_prefixes", &id), |b| {
            b.iter(|| {
                let set = RefPrefixes::new(prefixes);
                names.iter().filter(|n| set.matches(n)).count()
            })
        });
    }
    g.finish();
}

fn push_benches(cr: &mut Criterion, c: &Corpus) {
    const N: usize = 10_000;
    let body = push_request(&c.commits, N);
    let mut g = cr.benchmark_group("net/push_commands");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function(BenchmarkId::new("parse", format!("{N}_commands")), |b| {
        b.iter(
            || match PushParser::default().advance(&body).expect("parse") {
                PushStep::Done { request, .. } => request.commands.len(),
                PushStep::NeedMore { .. } => unreachable!(),
            },
        )
    });
    g.bench_function(
        BenchmarkId::new("streaming_64k", format!("{N}_commands")),
        |b| b.iter(|| stream_push(&body)),
    );
    g.finish();
}

fn negotiate_benches(cr: &mut Criterion, c: &Corpus) {
    // A client that has every corpus commit, newest first, after 32
    // commits of its own the server has never seen: the haves of a
    // stateless round. The server answers from its object store.
    let mut haves: Vec<ObjectId> = (0u64..32)
        .map(|i| {
            let mut raw = [0xabu8; 20];
            raw[..8].copy_from_slice(&i.to_be_bytes());
            ObjectId::from_sha1(raw)
        })
        .collect();
    haves.extend_from_slice(&c.commits);
    let is_known = |o: &ObjectId| c.store.contains(o);
    let label = format!("{}_haves", haves.len());

    let mut g = cr.benchmark_group("net/negotiate");
    g.throughput(Throughput::Elements(haves.len() as u64));
    for (end, name) in [
        (RequestEnd::Flush, "v0_round"),
        (RequestEnd::Done, "v0_done"),
    ] {
        g.bench_function(BenchmarkId::new(name, &label), |b| {
            b.iter(|| {
                negotiate_v0(
                    &haves,
                    end,
                    AckMode::MultiAckDetailed,
                    true,
                    is_known,
                    |_| false,
                )
                .bytes
                .len()
            })
        });
    }
    g.bench_function(BenchmarkId::new("v2_round", &label), |b| {
        b.iter(|| {
            acknowledge_v2(&haves, false, false, is_known, |_| true)
                .bytes
                .len()
        })
    });
    // The same round with a hash set for `is_known`: the protocol's own
    // cost, without the object store's lookups.
    let known: std::collections::HashSet<ObjectId> = c.commits.iter().copied().collect();
    g.bench_function(BenchmarkId::new("v2_round_hashset", &label), |b| {
        b.iter(|| {
            acknowledge_v2(&haves, false, false, |o| known.contains(o), |_| true)
                .bytes
                .len()
        })
    });
    g.finish();
}

fn benches(cr: &mut Criterion) {
    let c = corpus();
    pktline_benches(cr, &c);
    upload_request_benches(cr, &c);
    ls_refs_benches(cr, &c);
    push_benches(cr, &c);
    negotiate_benches(cr, &c);
}

criterion_group! {
    name = net;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(net);
