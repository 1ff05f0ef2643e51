//! Benchmarks of the ref store: durable ref-log appends, one record and one
//! `fdatasync` per update ([`RefStore::apply`]) against one record and one
//! `fdatasync` for a whole batch ([`RefStore::stage`] + [`RefStore::commit`],
//! the group commit of a finalized block), and opening a store: replaying
//! a full log, loading a snapshot of 100,000 refs.
//!
//! The stores live in a directory under the target directory (next to the
//! bench binary), on a real file system, never tmpfs; the file system type
//! is printed at the start.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use guts_io::refs::{RefStore, RefUpdate, COMPACT_EVERY_RECORDS};
use guts_io::ObjectId;
use std::path::{Path, PathBuf};

/// A directory beside the bench binary (`target/release/deps`).
fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().expect("exe dir").to_path_buf()
}

/// The file system type of `dir`, by `statfs` magic.
fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a plain C
    // struct the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs (not a real disk: fsync numbers are meaningless)".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("f_type {other:#x}"),
    }
}

/// A distinct non-null id for `(generation, index)`.
fn oid(generation: u64, index: u64) -> ObjectId {
    let mut raw = [0u8; 20];
    raw[..8].copy_from_slice(&generation.to_be_bytes());
    raw[8..16].copy_from_slice(&index.to_be_bytes());
    raw[19] = 1;
    ObjectId::from_sha1(raw)
}

/// `n` branches and their current values, moved to a new generation on
/// each call of [`Branches::next_batch`].
struct Branches {
    names: Vec<String>,
    current: Vec<ObjectId>,
    generation: u64,
}

impl Branches {
    fn new(n: usize) -> Self {
        Branches {
            names: (0..n).map(|i| format!("refs/heads/b{i:06}")).collect(),
            current: vec![ObjectId::NULL_SHA1; n],
            generation: 0,
        }
    }

    fn next_batch(&mut self) -> Vec<RefUpdate> {
        self.generation += 1;
        let g = self.generation;
        self.names
            .iter()
            .zip(self.current.iter_mut())
            .enumerate()
            .map(|(i, (name, cur))| {
                let new = oid(g, i as u64);
                let update = RefUpdate {
                    name: name.clone(),
                    old: *cur,
                    new,
                };
                *cur = new;
                update
            })
            .collect()
    }
}

fn append_benches(cr: &mut Criterion) {
    let root = bench_dir();
    eprintln!(
        "io/ref_log_append: stores under {} ({})",
        root.display(),
        fs_type(&root)
    );
    let mut g = cr.benchmark_group("io/ref_log_append");
    g.sample_size(10);
    for n in [1usize, 100, 1_000] {
        g.throughput(Throughput::Elements(n as u64));

        // One `apply` (record + fdatasync) per update. Every 1,024 records
        // the store compacts (snapshot + fsync + rename): part of the cost.
        let dir = tempfile::tempdir_in(&root).expect("tempdir");
        let mut store = RefStore::open(dir.path()).expect("open");
        let mut branches = Branches::new(n);
        g.bench_function(BenchmarkId::new("apply_each", n), |b| {
            b.iter(|| {
                for update in branches.next_batch() {
                    store.apply(std::slice::from_ref(&update)).expect("apply");
                }
            })
        });
        drop(store);

        // Group commit: every update staged, then one record and one
        // fdatasync for all of them.
        let dir = tempfile::tempdir_in(&root).expect("tempdir");
        let mut store = RefStore::open(dir.path()).expect("open");
        let mut branches = Branches::new(n);
        let mut height = 0;
        g.bench_function(BenchmarkId::new("group_commit", n), |b| {
            b.iter(|| {
                for update in branches.next_batch() {
                    store.stage(std::slice::from_ref(&update)).expect("stage");
                }
                height += 1;
                store.commit(Some(height)).expect("commit");
            })
        });
    }
    g.finish();
}

fn open_benches(cr: &mut Criterion) {
    let root = bench_dir();
    let mut g = cr.benchmark_group("io/ref_store_open");
    g.sample_size(10);

    // The longest log the store keeps: one record short of compaction,
    // each record a block's worth of 10 updates over 1,000 branches.
    let records = COMPACT_EVERY_RECORDS - 1;
    let log_dir = tempfile::tempdir_in(&root).expect("tempdir");
    {
        let mut store = RefStore::open(log_dir.path()).expect("open");
        let mut branches = Branches::new(1_000);
        let mut batch = Vec::new();
        for r in 0..records {
            if r % 100 == 0 {
                batch = branches.next_batch();
            }
            let start = (r as usize % 100) * 10;
            store.stage(&batch[start..start + 10]).expect("stage");
            store.commit(Some(r + 1)).expect("commit");
        }
    }
    g.throughput(Throughput::Elements(records));
    g.bench_function(
        BenchmarkId::new("replay_log", format!("{records}_records")),
        |b| b.iter(|| RefStore::open(log_dir.path()).expect("open").sequence()),
    );

    // A snapshot of 100,000 refs and an empty log.
    const REFS: usize = 100_000;
    let snap_dir = tempfile::tempdir_in(&root).expect("tempdir");
    {
        let mut store = RefStore::open(snap_dir.path()).expect("open");
        let mut branches = Branches::new(REFS);
        store.stage(&branches.next_batch()).expect("stage");
        store.commit(None).expect("commit");
        store.compact().expect("compact");
    }
    g.throughput(Throughput::Elements(REFS as u64));
    g.bench_function(BenchmarkId::new("snapshot", format!("{REFS}_refs")), |b| {
        b.iter(|| RefStore::open(snap_dir.path()).expect("open").refs().len())
    });
    g.finish();
}

criterion_group!(refs, append_benches, open_benches);
criterion_main!(refs);
