//! Benchmarks of guts-io on the tokio corpus (49k objects): object lookup
//! and reads, the full object walk of a clone, and pack writing (verbatim
//! reuse of the stored pack and the entry-by-entry re-encoding path).
//!
//! Setup mirror-clones `../shared/corpus/tokio.bundle` into a temporary
//! directory and copies its pack into a store directory.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use guts_io::pack::write::{pack_stream, PackWriteOptions};
use guts_io::store::ObjectStore;
use guts_io::walk::{enumerate, WalkRequest};
use guts_io::ObjectId;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CORPUS_BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/tokio.bundle");

struct Corpus {
    _tmp: tempfile::TempDir,
    mirror: PathBuf,
    pack_file: PathBuf,
    store: ObjectStore,
    tips: Vec<ObjectId>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    guts_testkit::git_ok(dir, args)
}

fn corpus() -> Corpus {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mirror: PathBuf = tmp.path().join("tokio.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            CORPUS_BUNDLE,
            mirror.to_str().expect("path"),
        ],
    );
    let pack_dir = tmp.path().join("store/pack");
    std::fs::create_dir_all(&pack_dir).expect("mkdir");
    let mut pack_file = PathBuf::new();
    for e in std::fs::read_dir(mirror.join("objects/pack")).expect("read_dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        if name.ends_with(".pack") {
            pack_file = p.clone();
        }
        if name.ends_with(".pack") || name.ends_with(".idx") {
            std::fs::copy(&p, pack_dir.join(name)).expect("copy");
        }
    }
    let store = ObjectStore::open(&tmp.path().join("store")).expect("open store");
    let mut tips: Vec<ObjectId> = git(&mirror, &["for-each-ref", "--format=%(objectname)"])
        .lines()
        .map(|l| l.parse().expect("oid"))
        .collect();
    tips.sort();
    tips.dedup();
    Corpus {
        _tmp: tmp,
        mirror,
        pack_file,
        store,
        tips,
    }
}

fn full_request(c: &Corpus) -> WalkRequest {
    WalkRequest {
        wants: c.tips.clone(),
        ..Default::default()
    }
}

fn drain(store: &ObjectStore, objects: &[ObjectId], opts: PackWriteOptions) -> u64 {
    let mut n = 0;
    for chunk in pack_stream(store, objects, opts).expect("plan") {
        n += chunk.expect("chunk").len() as u64;
    }
    n
}

fn benches(cr: &mut Criterion) {
    let c = corpus();
    let all = enumerate(&c.store, &full_request(&c))
        .expect("walk")
        .objects;

    let mut g = cr.benchmark_group("io/walk_full");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("tokio", |b| {
        b.iter(|| {
            enumerate(&c.store, &full_request(&c))
                .expect("walk")
                .objects
                .len()
        })
    });
    g.finish();

    let mut g = cr.benchmark_group("io/pack_write_full");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let verbatim_bytes = drain(&c.store, &all, PackWriteOptions::default());
    g.throughput(Throughput::Bytes(verbatim_bytes));
    g.bench_function(BenchmarkId::new("verbatim", "tokio"), |b| {
        b.iter(|| drain(&c.store, &all, PackWriteOptions::default()))
    });
    g.bench_function(BenchmarkId::new("walk+verbatim", "tokio"), |b| {
        b.iter(|| {
            let objects = enumerate(&c.store, &full_request(&c))
                .expect("walk")
                .objects;
            drain(&c.store, &objects, PackWriteOptions::default())
        })
    });
    // Without ofs-delta the stored pack cannot be sent as is: every entry is
    // re-headed (OFS_DELTA becomes REF_DELTA).
    let ref_opts = PackWriteOptions {
        ofs_delta: false,
        ..Default::default()
    };
    g.bench_function(BenchmarkId::new("reencoded_ref_delta", "tokio"), |b| {
        b.iter(|| drain(&c.store, &all, ref_opts))
    });
    // Dropping one object forces the entry-by-entry path with ofs-delta.
    let mut most = all.clone();
    most.pop();
    g.bench_function(BenchmarkId::new("reencoded_ofs_delta", "tokio"), |b| {
        b.iter(|| drain(&c.store, &most, PackWriteOptions::default()))
    });
    g.finish();

    let mut g = cr.benchmark_group("io/object_lookup");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function(BenchmarkId::new("contains", "tokio"), |b| {
        b.iter(|| all.iter().filter(|o| c.store.contains(o)).count())
    });
    g.bench_function(BenchmarkId::new("read_header", "tokio"), |b| {
        b.iter(|| {
            all.iter()
                .map(|o| c.store.read_header(o).expect("read").map_or(0, |h| h.1))
                .sum::<u64>()
        })
    });
    g.bench_function(BenchmarkId::new("read", "tokio"), |b| {
        b.iter(|| {
            all.iter()
                .map(|o| c.store.read(o).expect("read").map_or(0, |h| h.1.len()))
                .sum::<usize>()
        })
    });
    g.finish();
}

/// `io/ingest`: stream the tokio pack through ingest (index-pack
/// --strict: inflate, resolve deltas, SHA-1DC every object, fsck checks,
/// write the .idx) next to C git's `index-pack --threads=2 --strict` on the
/// same bytes in the same run.
fn ingest_benches(cr: &mut Criterion) {
    use guts_io::pack::ingest::{CheckOptions, Ingest, IngestLimits, NoObjects};
    let c = corpus();
    let pack = std::fs::read(&c.pack_file).expect("read pack");
    let out = tempfile::tempdir().expect("tempdir");
    let mut g = cr.benchmark_group("io/ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(pack.len() as u64));
    let checks = CheckOptions {
        strict: true,
        check_links: true,
    };
    g.bench_function(BenchmarkId::new("guts", "tokio"), |b| {
        b.iter(|| {
            let mut ingest = Ingest::new(out.path(), IngestLimits::default()).expect("ingest");
            for chunk in pack.chunks(64 * 1024) {
                ingest.write(chunk).expect("write");
            }
            let done = ingest.finish(&NoObjects, &checks).expect("finish");
            done.object_count()
        })
    });
    let git_dir = out.path().join("git-index-pack.git");
    git(
        out.path(),
        &["init", "-q", "--bare", git_dir.to_str().expect("path")],
    );
    g.bench_function(BenchmarkId::new("git_index_pack_threads2", "tokio"), |b| {
        b.iter(|| {
            let mut child = guts_testkit::git(&git_dir)
                .args(["index-pack", "--threads=2", "--strict", "--stdin"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("git index-pack");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&pack)
                .expect("feed");
            assert!(child.wait().expect("wait").success());
            // Remove the result so every iteration indexes from scratch.
            for e in std::fs::read_dir(git_dir.join("objects/pack")).expect("read_dir") {
                let _ = std::fs::remove_file(e.expect("entry").path());
            }
        })
    });
    g.finish();
    drop(c.mirror);
}

/// `io/ref_update_fsync`: one durable ref update (log append + fdatasync).
fn ref_benches(cr: &mut Criterion) {
    use guts_io::refs::{RefStore, RefUpdate};
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let mut store = RefStore::open(dir.path()).expect("open");
    let mut g = cr.benchmark_group("io/ref_update_fsync");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    let mut n: u64 = 0;
    let mut current = ObjectId::NULL_SHA1;
    g.bench_function("single_ref", |b| {
        b.iter(|| {
            n += 1;
            let mut raw = [0u8; 20];
            raw[..8].copy_from_slice(&n.to_be_bytes());
            raw[19] = 1;
            let new = ObjectId::from_sha1(raw);
            store
                .apply(&[RefUpdate {
                    name: "refs/heads/main".into(),
                    old: current,
                    new,
                }])
                .expect("apply");
            current = new;
        })
    });
    g.finish();
}

criterion_group!(io, benches, ingest_benches, ref_benches);
criterion_main!(io);
