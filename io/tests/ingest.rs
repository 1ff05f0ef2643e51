//! Pack ingest against C git as the oracle: packs made by `git
//! pack-objects` from the corpus, fed in odd chunk sizes, must give the
//! index `git index-pack` writes for the same final pack; hostile packs
//! must fail with the right error and leave the pack directory untouched.

use guts_io::fsck::FsckProblem;
use guts_io::object::{hash_object, ObjectKind};
use guts_io::pack::entry::encode_type_size;
use guts_io::pack::ingest::{
    CheckOptions, Ingest, IngestError, IngestLimits, IngestedPack, NoObjects, ObjectSource,
};
use guts_io::ObjectId;
use sha1::Digest;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

mod common;
use common::{corpus_bundle, git_bytes, git_run};

const STRICT: CheckOptions = CheckOptions {
    strict: true,
    check_links: true,
};

fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    git_stdin(dir, args, None)
}

fn git_stdin(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    git_bytes(dir, args, input)
}

/// The guts corpus as a bare mirror, cloned once per test process.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir").keep();
        git(
            &tmp,
            &[
                "clone",
                "-q",
                "--mirror",
                corpus_bundle("guts").to_str().expect("utf-8 path"),
                "guts.git",
            ],
        );
        tmp.join("guts.git")
    })
}

/// Objects of a git repository, read with `git cat-file`.
struct GitRepo {
    dir: PathBuf,
    kinds: HashMap<ObjectId, ObjectKind>,
}

impl GitRepo {
    fn open(dir: &Path) -> GitRepo {
        let listing = git(
            dir,
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname) %(objecttype)",
            ],
        );
        let kinds = String::from_utf8(listing)
            .unwrap()
            .lines()
            .map(|l| {
                let (oid, kind) = l.split_once(' ').unwrap();
                (
                    oid.parse().unwrap(),
                    ObjectKind::from_name(kind.as_bytes()).unwrap(),
                )
            })
            .collect();
        GitRepo {
            dir: dir.to_path_buf(),
            kinds,
        }
    }
}

impl ObjectSource for GitRepo {
    fn contains(&self, oid: &ObjectId) -> bool {
        self.kinds.contains_key(oid)
    }
    fn read_object(&self, oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)> {
        let kind = *self.kinds.get(oid)?;
        Some((
            kind,
            git(&self.dir, &["cat-file", kind.name(), &oid.to_hex()]),
        ))
    }
    fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        self.kinds.get(oid).copied()
    }
}

fn ingest(
    dir: &Path,
    pack: &[u8],
    chunk: usize,
    repo: &dyn ObjectSource,
    checks: &CheckOptions,
    limits: IngestLimits,
) -> Result<IngestedPack, IngestError> {
    let mut ingest = Ingest::new(dir, limits)?;
    for c in pack.chunks(chunk.max(1)) {
        ingest.write(c)?;
    }
    ingest.finish(repo, checks)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `git index-pack` on a copy of `pack`; returns its .idx bytes.
fn git_index_pack(pack: &Path) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("p.pack");
    std::fs::copy(pack, &copy).unwrap();
    git(tmp.path(), &["index-pack", "-o", "p.idx", "p.pack"]);
    std::fs::read(tmp.path().join("p.idx")).unwrap()
}

/// Commit `ingested` into a fresh bare repository and have git check it.
fn commit_and_fsck(ingested: IngestedPack) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "--bare", "r.git"]);
    let pack_dir = repo.path().join("r.git/objects/pack");
    // move the temporary files into the repository's pack directory
    let (pack, idx) = ingested.commit().unwrap().expect("non-empty pack");
    let pack_name = pack.file_name().unwrap().to_owned();
    let idx_name = idx.file_name().unwrap().to_owned();
    std::fs::copy(&pack, pack_dir.join(&pack_name)).unwrap();
    std::fs::copy(&idx, pack_dir.join(&idx_name)).unwrap();
    let verify = git(
        repo.path(),
        &[
            "verify-pack",
            "-v",
            pack_dir.join(&pack_name).to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&verify).contains(": ok"));
    git(
        &repo.path().join("r.git"),
        &["fsck", "--strict", "--no-dangling"],
    );
    repo
}

#[test]
fn full_pack_any_chunking_matches_git() {
    let src = corpus();
    let pack = git_stdin(src, &["pack-objects", "--all", "--stdout", "-q"], Some(b""));
    for chunk in [1usize, 7, 4096, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let limits = IngestLimits {
            threads: if chunk == 7 { 1 } else { 2 },
            ..IngestLimits::default()
        };
        let ingested = ingest(dir.path(), &pack, chunk, &NoObjects, &STRICT, limits).unwrap();
        assert_eq!(ingested.stats().thin_bases_appended, 0);
        assert!(ingested.stats().deltas > 0, "pack should contain deltas");
        let ours = std::fs::read(ingested.temp_idx_path()).unwrap();
        assert_eq!(std::fs::read(ingested.temp_pack_path()).unwrap(), pack);
        assert_eq!(
            ours,
            git_index_pack(ingested.temp_pack_path()),
            "chunk {chunk}"
        );
        assert_eq!(&pack[pack.len() - 20..], &ingested.checksum());
        if chunk == 4096 {
            // every object reads back as git has it
            let oids: Vec<_> = ingested.objects().take(40).collect();
            for (oid, kind) in oids {
                let (k, data) = ingested.read_object(&oid).unwrap().unwrap();
                assert_eq!(k, kind);
                assert_eq!(hash_object(k, &data), oid);
            }
            let _repo = commit_and_fsck(ingested);
        }
    }
}

#[test]
fn pack_without_deltas_matches_git() {
    let src = corpus();
    let pack = git_stdin(
        src,
        &[
            "pack-objects",
            "--all",
            "--stdout",
            "-q",
            "--window=0",
            "--no-reuse-delta",
        ],
        Some(b""),
    );
    let dir = tempfile::tempdir().unwrap();
    let ingested = ingest(
        dir.path(),
        &pack,
        4096,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    )
    .unwrap();
    assert_eq!(ingested.stats().deltas, 0);
    let ours = std::fs::read(ingested.temp_idx_path()).unwrap();
    assert_eq!(ours, git_index_pack(ingested.temp_pack_path()));
    let _repo = commit_and_fsck(ingested);
    // committed: only the final names are left
    let names = dir_entries(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("pack-")));
}

#[test]
fn thin_pack_is_completed_like_fix_thin() {
    let src = corpus();
    let head = String::from_utf8(git(
        src,
        &[
            "for-each-ref",
            "--count=1",
            "--sort=-committerdate",
            "--format=%(objectname)",
        ],
    ))
    .unwrap();
    let old = String::from_utf8(git(src, &["rev-parse", &format!("{}~3", head.trim())])).unwrap();
    let revs = format!("{}\n^{}\n", head.trim(), old.trim());
    let pack = git_stdin(
        src,
        &["pack-objects", "--revs", "--thin", "--stdout", "-q"],
        Some(revs.as_bytes()),
    );
    let repo = GitRepo::open(src);
    let dir = tempfile::tempdir().unwrap();
    // a thin pack without the repository fails, naming a base
    match ingest(
        dir.path(),
        &pack,
        4096,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    ) {
        Err(IngestError::MissingBase { base, .. }) => assert!(repo.contains(&base)),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("thin pack accepted without bases"),
    }
    assert!(dir_entries(dir.path()).is_empty());
    let ingested = ingest(
        dir.path(),
        &pack,
        7,
        &repo,
        &STRICT,
        IngestLimits::default(),
    )
    .unwrap();
    assert!(
        ingested.stats().thin_bases_appended > 0,
        "pack was not thin"
    );
    let ours = std::fs::read(ingested.temp_idx_path()).unwrap();
    assert_eq!(ours, git_index_pack(ingested.temp_pack_path()));
    // same objects as git's own --fix-thin inside a repository with the bases
    let other = tempfile::tempdir().unwrap();
    git(other.path(), &["init", "-q", "--bare", "r.git"]);
    let other_git = other.path().join("r.git");
    std::fs::write(
        other_git.join("objects/info/alternates"),
        format!("{}\n", src.join("objects").display()),
    )
    .unwrap();
    let fixed = git_stdin(
        &other_git,
        &["index-pack", "--fix-thin", "--stdin", "--strict"],
        Some(&pack),
    );
    let name = String::from_utf8(fixed).unwrap();
    let name = name.trim().trim_start_matches("pack\t");
    let git_idx = other_git.join(format!("objects/pack/pack-{name}.idx"));
    let listing = git_stdin(
        src,
        &["show-index"],
        Some(&std::fs::read(&git_idx).unwrap()),
    );
    let mut theirs: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    theirs.sort();
    let mut mine: Vec<String> = ingested.objects().map(|(oid, _)| oid.to_hex()).collect();
    mine.sort();
    assert_eq!(mine, theirs);
    commit_and_fsck_with_alternates(ingested, src);
}

/// Like `commit_and_fsck`, for a pack that needs objects from `base_repo`.
fn commit_and_fsck_with_alternates(ingested: IngestedPack, base_repo: &Path) {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "--bare", "r.git"]);
    let git_dir = repo.path().join("r.git");
    std::fs::write(
        git_dir.join("objects/info/alternates"),
        format!("{}\n", base_repo.join("objects").display()),
    )
    .unwrap();
    let (pack, idx) = ingested.commit().unwrap().unwrap();
    let pack_dir = git_dir.join("objects/pack");
    std::fs::copy(&pack, pack_dir.join(pack.file_name().unwrap())).unwrap();
    std::fs::copy(&idx, pack_dir.join(idx.file_name().unwrap())).unwrap();
    git(
        repo.path(),
        &[
            "verify-pack",
            pack_dir.join(pack.file_name().unwrap()).to_str().unwrap(),
        ],
    );
    git(&git_dir, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn empty_pack_is_accepted_and_dropped() {
    let pack = PackBuilder::new().finish();
    let dir = tempfile::tempdir().unwrap();
    let ingested = ingest(
        dir.path(),
        &pack,
        3,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    )
    .unwrap();
    assert_eq!(ingested.object_count(), 0);
    assert_eq!(ingested.commit().unwrap(), None);
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn large_random_blob_streams_through_bounded_buffers() {
    const SIZE: usize = 50 << 20;
    let mut data = Vec::with_capacity(SIZE);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mut b = PackBuilder::new();
    b.whole_level(ObjectKind::Blob, &data, flate2::Compression::fast());
    let pack = b.finish();
    let oid = hash_object(ObjectKind::Blob, &data);
    drop(data);
    let dir = tempfile::tempdir().unwrap();
    let ingested = ingest(
        dir.path(),
        &pack,
        65536,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    )
    .unwrap();
    assert_eq!(
        ingested.objects().collect::<Vec<_>>(),
        [(oid, ObjectKind::Blob)]
    );
    assert!(
        ingested.stats().largest_object_buffer_bytes < 1 << 20,
        "largest buffer {}",
        ingested.stats().largest_object_buffer_bytes
    );
    assert_eq!(
        std::fs::read(ingested.temp_idx_path()).unwrap(),
        git_index_pack(ingested.temp_pack_path())
    );
}

// ---- hand-made packs -------------------------------------------------

/// Builds packs entry by entry, including broken ones.
struct PackBuilder {
    body: Vec<u8>,
    count: u32,
}

fn zlib(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

fn type_size(code: u8, size: u64) -> Vec<u8> {
    let mut h = [0u8; 16];
    let n = encode_type_size(code, size, &mut h);
    h[..n].to_vec()
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A delta that inserts `insert` after copying `copy` (offset, len) of the base.
fn delta(base_len: usize, copy: Option<(u32, u32)>, insert: &[u8], result_len: usize) -> Vec<u8> {
    let mut d = Vec::new();
    varint(base_len as u64, &mut d);
    varint(result_len as u64, &mut d);
    if let Some((off, len)) = copy {
        d.push(0x80 | 0x0f | 0x70);
        d.extend_from_slice(&off.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes()[..3]);
    }
    for part in insert.chunks(127) {
        d.push(part.len() as u8);
        d.extend_from_slice(part);
    }
    d
}

fn ofs_encoding(distance: u64) -> Vec<u8> {
    let mut out = [0u8; 16];
    let n = guts_io::pack::entry::encode_ofs_distance(distance, &mut out);
    out[..n].to_vec()
}

impl PackBuilder {
    fn new() -> Self {
        PackBuilder {
            body: Vec::new(),
            count: 0,
        }
    }
    fn offset(&self) -> u64 {
        12 + self.body.len() as u64
    }
    fn whole(&mut self, kind: ObjectKind, data: &[u8]) -> u64 {
        self.whole_level(kind, data, flate2::Compression::default())
    }
    fn whole_level(&mut self, kind: ObjectKind, data: &[u8], level: flate2::Compression) -> u64 {
        let at = self.offset();
        self.body
            .extend(type_size(kind.pack_code(), data.len() as u64));
        self.body.extend(zlib(data, level));
        self.count += 1;
        at
    }
    fn ofs_delta(&mut self, base_offset: u64, delta: &[u8]) -> u64 {
        let at = self.offset();
        self.body.extend(type_size(6, delta.len() as u64));
        self.body.extend(ofs_encoding(at - base_offset));
        self.body
            .extend(zlib(delta, flate2::Compression::default()));
        self.count += 1;
        at
    }
    fn ref_delta(&mut self, base: ObjectId, delta: &[u8]) -> u64 {
        let at = self.offset();
        self.body.extend(type_size(7, delta.len() as u64));
        self.body.extend_from_slice(base.as_bytes());
        self.body
            .extend(zlib(delta, flate2::Compression::default()));
        self.count += 1;
        at
    }
    fn raw(&mut self, bytes: &[u8], counts: bool) {
        self.body.extend_from_slice(bytes);
        if counts {
            self.count += 1;
        }
    }
    fn finish(&self) -> Vec<u8> {
        self.finish_with_count(self.count)
    }
    fn finish_with_count(&self, count: u32) -> Vec<u8> {
        let mut pack = b"PACK\0\0\0\x02".to_vec();
        pack.extend_from_slice(&count.to_be_bytes());
        pack.extend_from_slice(&self.body);
        let sum: [u8; 20] = sha1::Sha1::digest(&pack).into();
        pack.extend_from_slice(&sum);
        pack
    }
}

fn with_trailer(mut pack: Vec<u8>) -> Vec<u8> {
    pack.truncate(pack.len() - 20);
    let sum: [u8; 20] = sha1::Sha1::digest(&pack).into();
    pack.extend_from_slice(&sum);
    pack
}

/// Ingest a pack that must fail; checks the directory is left empty.
fn reject(pack: &[u8], limits: IngestLimits) -> IngestError {
    reject_with(pack, limits, &NoObjects)
}

fn reject_with(pack: &[u8], limits: IngestLimits, repo: &dyn ObjectSource) -> IngestError {
    let mut last = None;
    for chunk in [1usize, 5, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let err = match ingest(dir.path(), pack, chunk, repo, &STRICT, limits) {
            Ok(_) => panic!("pack accepted (chunk {chunk})"),
            Err(e) => e,
        };
        assert!(
            dir_entries(dir.path()).is_empty(),
            "temporary files left behind"
        );
        if let Some(prev) = &last {
            assert_eq!(
                format!("{prev}"),
                format!("{err}"),
                "error depends on chunking"
            );
        }
        last = Some(err);
    }
    last.unwrap()
}

fn sample() -> (PackBuilder, Vec<u64>) {
    let mut b = PackBuilder::new();
    let base: Vec<u8> = (0..2000u32).flat_map(|i| i.to_le_bytes()).collect();
    let o1 = b.whole(ObjectKind::Blob, &base);
    let o2 = b.whole(ObjectKind::Blob, b"hello world\n");
    let o3 = b.ofs_delta(o1, &delta(base.len(), Some((0, 4000)), b"tail", 4004));
    (b, vec![o1, o2, o3])
}

#[test]
fn sample_pack_is_fine() {
    let (b, _) = sample();
    let pack = b.finish();
    let dir = tempfile::tempdir().unwrap();
    let ingested = ingest(
        dir.path(),
        &pack,
        1,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    )
    .unwrap();
    assert_eq!(ingested.object_count(), 3);
    assert_eq!(
        std::fs::read(ingested.temp_idx_path()).unwrap(),
        git_index_pack(ingested.temp_pack_path())
    );
}

#[test]
fn bad_signature_and_version() {
    let (b, _) = sample();
    let mut pack = b.finish();
    pack[0] = b'K';
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::NotAPack { .. }
    ));
    let mut pack = b.finish();
    pack[7] = 4;
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::UnsupportedVersion { version: 4 }
    ));
}

#[test]
fn truncated_everywhere() {
    let (b, offsets) = sample();
    let pack = b.finish();
    let cases = [
        (5usize, "Header"),
        (offsets[1] as usize + 1, "EntryData"),
        (offsets[2] as usize + 1, "EntryHeader"),
        (offsets[2] as usize + 6, "EntryData"),
        (pack.len() - 3, "Trailer"),
    ];
    for (len, section) in cases {
        match reject(&pack[..len], IngestLimits::default()) {
            IngestError::Truncated { section: s, .. } => {
                assert_eq!(format!("{s:?}"), section, "len {len}")
            }
            e => panic!("len {len}: {e}"),
        }
    }
}

#[test]
fn wrong_trailer_and_trailing_data() {
    let (b, _) = sample();
    let mut pack = b.finish();
    let n = pack.len();
    pack[n - 1] ^= 1;
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::ChecksumMismatch { .. }
    ));
    let mut pack = b.finish();
    pack.push(0);
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::TrailingData
    ));
}

#[test]
fn corrupt_zlib_and_size_mismatch() {
    let (b, offsets) = sample();
    let mut pack = b.finish();
    // flip a byte in the middle of the first entry's deflate stream
    let mid = (offsets[0] + offsets[1]) as usize / 2;
    pack[mid] ^= 0x55;
    let pack = with_trailer(pack);
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::CorruptZlib { .. } | IngestError::SizeMismatch { .. }
    ));
    for declared in [11u64, 13] {
        let mut b = PackBuilder::new();
        b.raw(&type_size(3, declared), false);
        b.raw(
            &zlib(b"hello world\n", flate2::Compression::default()),
            true,
        );
        match reject(&b.finish(), IngestLimits::default()) {
            IngestError::SizeMismatch {
                declared: d,
                actual,
                ..
            } => {
                assert_eq!(d, declared);
                assert!(actual >= 12 || actual == 12);
            }
            e => panic!("{e}"),
        }
    }
}

#[test]
fn object_count_mismatch() {
    let (b, _) = sample();
    let pack = b.finish_with_count(4);
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::ObjectCountTooLarge {
            declared: 4,
            found: 3
        }
    ));
    let pack = b.finish_with_count(2);
    assert!(matches!(
        reject(&pack, IngestLimits::default()),
        IngestError::ObjectCountTooSmall { declared: 2 }
    ));
}

#[test]
fn bad_deltas() {
    // missing base
    let mut b = PackBuilder::new();
    b.whole(ObjectKind::Blob, b"x");
    let missing = hash_object(ObjectKind::Blob, b"not here");
    b.ref_delta(missing, &delta(8, Some((0, 8)), b"", 8));
    match reject(&b.finish(), IngestLimits::default()) {
        IngestError::MissingBase { base, .. } => assert_eq!(base, missing),
        e => panic!("{e}"),
    }
    // copy out of bounds
    let (mut b, offsets) = sample();
    b.ofs_delta(offsets[1], &delta(12, Some((4, 100)), b"", 100));
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::BadDelta {
            source: guts_io::delta::DeltaError::CopyOutOfBounds { .. },
            ..
        }
    ));
    // writes past its size
    let (mut b, offsets) = sample();
    b.ofs_delta(offsets[1], &delta(12, Some((0, 12)), b"more", 12));
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::BadDelta {
            source: guts_io::delta::DeltaError::WriteOutOfBounds { .. },
            ..
        }
    ));
    // OFS_DELTA before the pack start
    let (mut b, _) = sample();
    let at = b.offset();
    b.raw(&type_size(6, 3), false);
    b.raw(&ofs_encoding(at + 5), false);
    b.raw(
        &zlib(&delta(12, None, b"a", 1), flate2::Compression::default()),
        true,
    );
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::OfsBaseOutOfRange { .. }
    ));
    // OFS_DELTA into the middle of an entry
    let (mut b, offsets) = sample();
    b.ofs_delta(offsets[1] + 1, &delta(12, None, b"a", 1));
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::OfsBaseNotEntry { .. }
    ));
    // chain deeper than the limit
    let mut b = PackBuilder::new();
    let mut prev = b.whole(ObjectKind::Blob, b"0123456789");
    for _ in 0..3 {
        prev = b.ofs_delta(prev, &delta(10, Some((0, 10)), b"", 10));
    }
    let limits = IngestLimits {
        delta_chain_max: 2,
        ..IngestLimits::default()
    };
    assert!(matches!(
        reject(&b.finish(), limits),
        IngestError::DeltaChainTooDeep {
            depth: 3,
            limit: 2,
            ..
        }
    ));
    // a cycle of REF_DELTAs: each names the other's (unknowable) id
    let mut b = PackBuilder::new();
    let a = hash_object(ObjectKind::Blob, b"aaaa");
    let c = hash_object(ObjectKind::Blob, b"cccc");
    b.ref_delta(c, &delta(4, None, b"aaaa", 4));
    b.ref_delta(a, &delta(4, None, b"cccc", 4));
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::MissingBase { .. }
    ));
}

#[test]
fn limits() {
    let (b, _) = sample();
    let pack = b.finish();
    assert!(matches!(
        reject(
            &pack,
            IngestLimits {
                pack_max_bytes: pack.len() as u64 - 1,
                ..IngestLimits::default()
            }
        ),
        IngestError::PackTooLarge { .. }
    ));
    assert!(matches!(
        reject(
            &pack,
            IngestLimits {
                objects_max: 2,
                ..IngestLimits::default()
            }
        ),
        IngestError::TooManyObjects { count: 3, limit: 2 }
    ));
    // absurd declared size, rejected before any allocation
    let mut b = PackBuilder::new();
    b.raw(&type_size(3, 1 << 40), false);
    b.raw(&zlib(b"x", flate2::Compression::default()), true);
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::ObjectTooLarge { size, .. } if size == 1 << 40
    ));
    // a delta whose result would exceed the object limit
    let (mut b, offsets) = sample();
    b.ofs_delta(offsets[1], &delta(12, Some((0, 12)), b"", 1 << 40));
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::ObjectTooLarge { .. }
    ));
}

#[test]
fn duplicate_objects() {
    let mut b = PackBuilder::new();
    b.whole(ObjectKind::Blob, b"same");
    b.whole(ObjectKind::Blob, b"same");
    assert!(matches!(
        reject(&b.finish(), IngestLimits::default()),
        IngestError::DuplicateObject { .. }
    ));
}

// ---- object checks, with git index-pack --strict as the oracle -------

fn tree(entries: &[(&str, &[u8], ObjectId)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, name, oid) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(oid.as_bytes());
    }
    out
}

/// True if `git index-pack --strict` accepts `pack` in an empty repository.
fn git_accepts(pack: &[u8]) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q", "--bare", "r.git"]);
    git_run(
        &tmp.path().join("r.git"),
        &["index-pack", "--strict", "--stdin"],
        Some(pack),
    )
    .status
    .success()
}

fn fsck_case(objects: &[(ObjectKind, Vec<u8>)]) -> (Vec<u8>, Result<(), IngestError>) {
    let mut b = PackBuilder::new();
    for (kind, data) in objects {
        b.whole(*kind, data);
    }
    let pack = b.finish();
    let dir = tempfile::tempdir().unwrap();
    let result = ingest(
        dir.path(),
        &pack,
        4096,
        &NoObjects,
        &STRICT,
        IngestLimits::default(),
    )
    .map(|_| ());
    (pack, result)
}

#[test]
fn object_checks_agree_with_git() {
    let blob = b"content\n".to_vec();
    let blob_id = hash_object(ObjectKind::Blob, &blob);
    let good_tree = tree(&[("100644", b"file", blob_id)]);
    let good_tree_id = hash_object(ObjectKind::Tree, &good_tree);
    let commit = |tree: ObjectId, ident: &str| {
        format!("tree {tree}\nauthor {ident}\ncommitter {ident}\n\nmsg\n").into_bytes()
    };
    type Case<'a> = (&'a str, Vec<(ObjectKind, Vec<u8>)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "good",
            vec![
                (ObjectKind::Blob, blob.clone()),
                (ObjectKind::Tree, good_tree.clone()),
                (
                    ObjectKind::Commit,
                    commit(good_tree_id, "A <a@example.com> 1700000000 +0000"),
                ),
            ],
            None,
        ),
        (
            ".git entry",
            vec![
                (ObjectKind::Blob, blob.clone()),
                (ObjectKind::Tree, tree(&[("100644", b".GIT", blob_id)])),
            ],
            Some("hasDotgit"),
        ),
        (
            "zero-padded mode",
            vec![
                (ObjectKind::Tree, good_tree.clone()),
                (ObjectKind::Tree, tree(&[("040000", b"d", good_tree_id)])),
            ],
            Some("zeroPaddedFilemode"),
        ),
        (
            "odd mode (info only)",
            vec![
                (ObjectKind::Blob, blob.clone()),
                (ObjectKind::Tree, tree(&[("100666", b"f", blob_id)])),
            ],
            None,
        ),
        (
            "bad ident",
            vec![
                (ObjectKind::Blob, blob.clone()),
                (ObjectKind::Tree, good_tree.clone()),
                (
                    ObjectKind::Commit,
                    commit(good_tree_id, "A <a@example.com 1700000000 +0000"),
                ),
            ],
            Some("badEmail"),
        ),
    ];
    for (name, objects, expected) in cases {
        let (pack, result) = fsck_case(&objects);
        assert_eq!(
            git_accepts(&pack),
            expected.is_none(),
            "git disagrees on {name}"
        );
        match (result, expected) {
            (Ok(()), None) => {}
            (Err(IngestError::Fsck(e)), Some(id)) => assert_eq!(e.problem.msg_id(), id, "{name}"),
            (r, e) => panic!("{name}: got {r:?}, expected {e:?}"),
        }
    }
}

#[test]
fn missing_link_is_rejected() {
    // (not the empty tree: git treats that one as always present)
    let missing_tree = hash_object(
        ObjectKind::Tree,
        &tree(&[("100644", b"x", hash_object(ObjectKind::Blob, b"x"))]),
    );
    let commit = format!(
        "tree {missing_tree}\nauthor A <a@b.c> 1 +0000\ncommitter A <a@b.c> 1 +0000\n\nm\n"
    )
    .into_bytes();
    let commit_id = hash_object(ObjectKind::Commit, &commit);
    let (pack, result) = fsck_case(&[(ObjectKind::Commit, commit)]);
    assert!(!git_accepts(&pack));
    match result {
        Err(IngestError::MissingLink { from, missing }) => {
            assert_eq!(from, commit_id);
            assert_eq!(missing, missing_tree);
        }
        r => panic!("{r:?}"),
    }
    // a link of the wrong kind: tree entry says blob, object is a tree
    let sub = tree(&[]);
    let sub_id = hash_object(ObjectKind::Tree, &sub);
    let top = tree(&[("100644", b"f", sub_id)]);
    let (pack, result) = fsck_case(&[(ObjectKind::Tree, sub), (ObjectKind::Tree, top)]);
    assert!(!git_accepts(&pack));
    assert!(
        matches!(result, Err(IngestError::LinkKindMismatch { .. })),
        "{result:?}"
    );
    let _ = FsckProblem::HasDot;
}

/// Throughput on the tokio corpus against `git index-pack --threads=2`.
/// Run with `cargo test --release -p guts-io --test ingest -- --ignored --nocapture`.
#[test]
#[ignore]
fn tokio_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            corpus_bundle("tokio").to_str().expect("utf-8 path"),
            "tokio.git",
        ],
    );
    let pack_dir = tmp.path().join("tokio.git/objects/pack");
    let pack_path = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .unwrap();
    let pack = std::fs::read(&pack_path).unwrap();
    let out = tempfile::tempdir().unwrap();
    for threads in [1usize, 2] {
        let limits = IngestLimits {
            threads,
            ..IngestLimits::default()
        };
        let start = std::time::Instant::now();
        let mut ing = Ingest::new(out.path(), limits).unwrap();
        for c in pack.chunks(65536) {
            ing.write(c).unwrap();
        }
        let streamed = start.elapsed();
        let ingested = ing.finish(&NoObjects, &STRICT).unwrap();
        let ours = start.elapsed();
        println!(
            "  stream phase {:.3}s, resolve+checks+idx {:.3}s",
            streamed.as_secs_f64(),
            (ours - streamed).as_secs_f64()
        );
        let mb = pack.len() as f64 / (1 << 20) as f64;
        println!(
            "guts ingest threads={threads}: {:.3}s, {:.1} MiB/s, {} objects, {} deltas",
            ours.as_secs_f64(),
            mb / ours.as_secs_f64(),
            ingested.object_count(),
            ingested.stats().deltas
        );
        if threads == 2 {
            assert_eq!(
                std::fs::read(ingested.temp_idx_path()).unwrap(),
                git_index_pack(&pack_path)
            );
        }
    }
    let work = tempfile::tempdir().unwrap();
    git(work.path(), &["init", "-q", "--bare", "r.git"]);
    let start = std::time::Instant::now();
    git_stdin(
        &work.path().join("r.git"),
        &["index-pack", "--threads=2", "--strict", "--stdin"],
        Some(&pack),
    );
    let theirs = start.elapsed();
    println!(
        "git index-pack --threads=2 --strict --stdin: {:.3}s, {:.1} MiB/s",
        theirs.as_secs_f64(),
        pack.len() as f64 / (1 << 20) as f64 / theirs.as_secs_f64()
    );
}
