//! Object enumeration and pack writing against C git as the oracle, on the
//! corpus repositories: object sets vs `git rev-list --objects`, shallow
//! clones vs `git clone --depth`, filters vs `rev-list --filter`, and every
//! written pack through `git index-pack`, `git verify-pack` and
//! `git fsck --strict`.

use guts_io::pack::write::{pack_stream, PackWriteOptions};
use guts_io::store::ObjectStore;
use guts_io::walk::{enumerate, is_ancestor, Deepen, Filter, WalkRequest};
use guts_io::ObjectId;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;
use common::{corpus_bundle, git as git_command, git_bytes};

fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(git_bytes(dir, args, None)).unwrap()
}

fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    String::from_utf8(git_bytes(dir, args, Some(input))).unwrap()
}

fn oids(text: &str) -> BTreeSet<ObjectId> {
    text.lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|h| h.len() == 40)
        .map(|h| h.parse().unwrap())
        .collect()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    mirror: PathBuf,
    store: ObjectStore,
}

/// Mirror-clone a corpus bundle and copy its pack into a store directory.
fn fixture(name: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mirror = root.join("mirror.git");
    git(
        &root,
        &[
            "clone",
            "-q",
            "--mirror",
            corpus_bundle(name).to_str().unwrap(),
            mirror.to_str().unwrap(),
        ],
    );
    let store_dir = root.join("store");
    copy_packs(&mirror.join("objects/pack"), &store_dir.join("pack"));
    let store = ObjectStore::open(&store_dir).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        mirror,
        store,
    }
}

fn copy_packs(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".pack") || name.ends_with(".idx") {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

fn ref_tips(repo: &Path) -> Vec<ObjectId> {
    let mut v: Vec<ObjectId> = oids(&git(repo, &["for-each-ref", "--format=%(objectname)"]))
        .into_iter()
        .collect();
    v.dedup();
    v
}

fn write_pack(
    store: &ObjectStore,
    objects: &[ObjectId],
    opts: PackWriteOptions,
    path: &Path,
) -> bool {
    let stream = pack_stream(store, objects, opts).unwrap();
    let verbatim = stream.is_verbatim();
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in stream {
        let chunk = chunk.unwrap();
        assert!(
            chunk.len() <= opts.chunk_bytes * 2 + 64,
            "chunk of {} bytes",
            chunk.len()
        );
        f.write_all(&chunk).unwrap();
    }
    verbatim
}

/// index-pack the pack into `repo`, verify it, point refs at `tips` and
/// run `git fsck --strict`; return the objects index-pack found.
fn check_pack(repo: &Path, pack: &Path, tips: &[ObjectId]) -> BTreeSet<ObjectId> {
    let data = std::fs::read(pack).unwrap();
    let out = git_stdin(repo, &["index-pack", "--stdin", "--strict"], &data);
    let name = out.trim().trim_start_matches("pack\t").to_string();
    let idx = repo.join(format!(".git/objects/pack/pack-{name}.idx"));
    let listed = git(repo, &["verify-pack", "-v", idx.to_str().unwrap()]);
    let mut refs = String::new();
    for (i, t) in tips.iter().enumerate() {
        refs.push_str(&format!("create refs/test/t{i} {t}\n"));
    }
    git_stdin(repo, &["update-ref", "--stdin"], refs.as_bytes());
    git(repo, &["fsck", "--strict", "--no-dangling"]);
    oids(&listed)
}

/// Annotated tags and their peeled targets (what upload-pack offers to
/// `include-tag`).
fn tag_candidates(repo: &Path) -> Vec<(ObjectId, ObjectId)> {
    let tags = git(
        repo,
        &[
            "for-each-ref",
            "refs/tags",
            "--format=%(objectname) %(objecttype) %(*objectname)",
        ],
    );
    let mut candidates = Vec::new();
    for line in tags.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[1] == "tag" {
            candidates.push((parts[0].parse().unwrap(), parts[2].parse().unwrap()));
        }
    }
    candidates
}

fn empty_repo(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    dir
}

/// Compare object sets, reporting only the differences.
#[track_caller]
fn same(ours: &BTreeSet<ObjectId>, expected: &BTreeSet<ObjectId>, what: &str) {
    let extra: Vec<_> = ours.difference(expected).take(5).collect();
    let missing: Vec<_> = expected.difference(ours).take(5).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: {} ours vs {} expected; extra {} {extra:?}; missing {} {missing:?}",
        ours.len(),
        expected.len(),
        ours.difference(expected).count(),
        expected.difference(ours).count()
    );
}

fn set(v: &[ObjectId]) -> BTreeSet<ObjectId> {
    v.iter().copied().collect()
}

#[test]
fn full_enumeration_and_packs_match_git() {
    for name in ["guts", "ripgrep"] {
        let fx = fixture(name);
        let tips = ref_tips(&fx.mirror);
        let req = WalkRequest {
            wants: tips.clone(),
            ..Default::default()
        };
        let res = enumerate(&fx.store, &req).unwrap();
        let expected = oids(&git(&fx.mirror, &["rev-list", "--objects", "--all"]));
        assert_eq!(
            res.objects.len(),
            expected.len(),
            "{name}: duplicates or size mismatch"
        );
        same(&set(&res.objects), &expected, name);
        assert!(res.shallow.is_empty() && res.unshallow.is_empty());

        // Verbatim: the stored pack itself.
        let pack = fx.root.join("full.pack");
        assert!(write_pack(
            &fx.store,
            &res.objects,
            PackWriteOptions::default(),
            &pack
        ));
        let repo = empty_repo(&fx.root, "full");
        assert_eq!(check_pack(&repo, &pack, &tips), expected);

        // Re-encoded as REF_DELTA (verbatim is impossible without ofs-delta),
        // in small chunks.
        let opts = PackWriteOptions {
            ofs_delta: false,
            chunk_bytes: 4096,
        };
        assert!(!write_pack(&fx.store, &res.objects, opts, &pack));
        let repo = empty_repo(&fx.root, "ref");
        assert_eq!(check_pack(&repo, &pack, &tips), expected);
    }
}

#[test]
fn incremental_fetch_is_complete() {
    let fx = fixture("ripgrep");
    let tips = ref_tips(&fx.mirror);
    let head = git(&fx.mirror, &["rev-parse", "HEAD"]).trim().to_string();
    let haves: Vec<ObjectId> = [
        format!("{head}~40"),
        format!("{head}~120^2"),
        format!("{head}~300"),
    ]
    .iter()
    .filter_map(|r| {
        let out = git_command(&fx.mirror)
            .args(["rev-parse", "--verify", "-q", r])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().ok()
    })
    .collect();
    assert!(!haves.is_empty());
    let req = WalkRequest {
        wants: tips.clone(),
        haves: haves.clone(),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    let mut args = vec![
        "rev-list".to_string(),
        "--objects".into(),
        "--all".into(),
        "--not".into(),
    ];
    args.extend(haves.iter().map(|h| h.to_string()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let expected = oids(&git(&fx.mirror, &args));
    let ours = set(&res.objects);
    assert!(
        ours.is_superset(&expected),
        "missing {:?}",
        expected.difference(&ours).take(5).collect::<Vec<_>>()
    );
    assert_eq!(ours, expected);

    // The client: a repository holding exactly what the haves reach.
    let client = empty_repo(&fx.root, "client");
    let have_list: String = haves.iter().map(|h| format!("{h}\n")).collect();
    let base_pack = fx.root.join("base.pack");
    let out = git_command(&fx.mirror)
        .args(["pack-objects", "--revs", "--stdout"])
        .stdin(
            std::fs::File::open({
                std::fs::write(fx.root.join("haves.txt"), &have_list).unwrap();
                fx.root.join("haves.txt")
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&base_pack, &out.stdout).unwrap();
    git_stdin(&client, &["index-pack", "--stdin"], &out.stdout);

    // Re-encode path: a subset, so stored deltas against unsent bases are
    // resolved; both delta encodings.
    for ofs_delta in [true, false] {
        let repo = empty_repo(&fx.root, &format!("client-{ofs_delta}"));
        git_stdin(&repo, &["index-pack", "--stdin"], &out.stdout);
        let pack = fx.root.join("inc.pack");
        let opts = PackWriteOptions {
            ofs_delta,
            chunk_bytes: 64 << 10,
        };
        assert!(!write_pack(&fx.store, &res.objects, opts, &pack));
        let got = check_pack(&repo, &pack, &tips);
        assert_eq!(got, ours);
    }
}

fn shallow_file(repo: &Path) -> BTreeSet<ObjectId> {
    let path = repo.join("shallow");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    oids(&text)
}

#[test]
fn shallow_depths_match_git_clone() {
    let fx = fixture("ripgrep");
    let tips = ref_tips(&fx.mirror);
    let url = format!("file://{}", fx.mirror.display());
    for depth in [1u32, 3] {
        let clone = fx.root.join(format!("depth{depth}.git"));
        git(
            &fx.root,
            &[
                "clone",
                "-q",
                "--mirror",
                "--no-single-branch",
                "--depth",
                &depth.to_string(),
                &url,
                clone.to_str().unwrap(),
            ],
        );
        let req = WalkRequest {
            wants: tips.clone(),
            deepen: Some(Deepen::Depth(depth)),
            ..Default::default()
        };
        let res = enumerate(&fx.store, &req).unwrap();
        same(
            &set(&res.shallow),
            &shallow_file(&clone),
            &format!("shallow depth {depth}"),
        );
        let expected = oids(&git(&clone, &["rev-list", "--objects", "--all"]));
        same(
            &set(&res.objects),
            &expected,
            &format!("objects depth {depth}"),
        );

        // The pack itself is acceptable to a shallow repository.
        let repo = empty_repo(&fx.root, &format!("shallow{depth}"));
        let shallow_text: String = res.shallow.iter().map(|s| format!("{s}\n")).collect();
        std::fs::write(repo.join(".git/shallow"), shallow_text).unwrap();
        let pack = fx.root.join("shallow.pack");
        write_pack(&fx.store, &res.objects, PackWriteOptions::default(), &pack);
        check_pack(&repo, &pack, &tips);
    }

    // Deepen an existing depth-1 clone to depth 3, as `git fetch --depth 3`.
    let clone = fx.root.join("deepen.git");
    git(
        &fx.root,
        &[
            "clone",
            "-q",
            "--mirror",
            "--no-single-branch",
            "--depth",
            "1",
            &url,
            clone.to_str().unwrap(),
        ],
    );
    let before_shallow: Vec<ObjectId> = shallow_file(&clone).into_iter().collect();
    let before_objects = oids(&git(&clone, &["rev-list", "--objects", "--all"]));
    let client_tips = ref_tips(&clone);
    git(&clone, &["fetch", "-q", "--depth", "3", "origin"]);
    let req = WalkRequest {
        wants: tips.clone(),
        haves: client_tips,
        client_shallows: before_shallow.clone(),
        deepen: Some(Deepen::Depth(3)),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    let mut after: BTreeSet<ObjectId> = set(&before_shallow);
    for u in &res.unshallow {
        assert!(after.remove(u));
    }
    after.extend(res.shallow.iter().copied());
    assert_eq!(after, shallow_file(&clone));
    let mut union = before_objects.clone();
    union.extend(res.objects.iter().copied());
    assert_eq!(
        union,
        oids(&git(&clone, &["rev-list", "--objects", "--all"]))
    );

    // --unshallow sends everything missing.
    let req = WalkRequest {
        wants: tips.clone(),
        haves: ref_tips(&clone),
        client_shallows: shallow_file(&clone).into_iter().collect(),
        deepen: Some(Deepen::Depth(guts_io::walk::INFINITE_DEPTH)),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    assert!(res.shallow.is_empty());
    assert_eq!(set(&res.unshallow), shallow_file(&clone));
    let mut union = oids(&git(&clone, &["rev-list", "--objects", "--all"]));
    union.extend(res.objects.iter().copied());
    assert_eq!(
        union,
        oids(&git(&fx.mirror, &["rev-list", "--objects", "--all"]))
    );
}

#[test]
fn deepen_since_and_not_match_git_clone() {
    let fx = fixture("ripgrep");
    let url = format!("file://{}", fx.mirror.display());
    let head = git(&fx.mirror, &["rev-parse", "HEAD"]).trim().to_string();
    let since: i64 = git(
        &fx.mirror,
        &["log", "-1", "--format=%ct", &format!("{head}~25")],
    )
    .trim()
    .parse()
    .unwrap();
    let clone = fx.root.join("since.git");
    git(
        &fx.root,
        &[
            "clone",
            "-q",
            "--bare",
            "--single-branch",
            &format!("--shallow-since={since}"),
            &url,
            clone.to_str().unwrap(),
        ],
    );
    let wants = vec![head.parse::<ObjectId>().unwrap()];
    let req = WalkRequest {
        wants: wants.clone(),
        deepen: Some(Deepen::Since(since)),
        // clone follows tags into the history it gets
        include_tag_candidates: tag_candidates(&fx.mirror),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    same(&set(&res.shallow), &shallow_file(&clone), "shallow");
    same(
        &set(&res.objects),
        &oids(&git(&clone, &["rev-list", "--objects", "--all"])),
        "objects",
    );

    let not = git(&fx.mirror, &["rev-parse", &format!("{head}~30")])
        .trim()
        .to_string();
    let clone = fx.root.join("not.git");
    // deepen-not takes a ref name on the wire; the walk gets it resolved.
    git(&fx.mirror, &["update-ref", "refs/exclude/here", &not]);
    git(
        &fx.root,
        &[
            "clone",
            "-q",
            "--bare",
            "--single-branch",
            "--shallow-exclude=refs/exclude/here",
            &url,
            clone.to_str().unwrap(),
        ],
    );
    let req = WalkRequest {
        wants,
        deepen: Some(Deepen::Not(vec![not.parse().unwrap()])),
        include_tag_candidates: tag_candidates(&fx.mirror),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    same(&set(&res.shallow), &shallow_file(&clone), "shallow");
    same(
        &set(&res.objects),
        &oids(&git(&clone, &["rev-list", "--objects", "--all"])),
        "objects",
    );
}

#[test]
fn filters_match_rev_list() {
    let fx = fixture("guts");
    let tips = ref_tips(&fx.mirror);
    for (filter, spec) in [
        (Filter::BlobNone, "blob:none"),
        (Filter::BlobLimit(1000), "blob:limit=1000"),
        (Filter::TreeDepth(0), "tree:0"),
        (Filter::TreeDepth(2), "tree:2"),
    ] {
        let req = WalkRequest {
            wants: tips.clone(),
            filter: Some(filter),
            ..Default::default()
        };
        let res = enumerate(&fx.store, &req).unwrap();
        let expected = oids(&git(
            &fx.mirror,
            &[
                "rev-list",
                "--objects",
                "--all",
                &format!("--filter={spec}"),
            ],
        ));
        same(&set(&res.objects), &expected, spec);
    }
    // A directly wanted blob is sent despite blob:none.
    let listing = git(&fx.mirror, &["ls-tree", "-r", &tips[0].to_string()]);
    let blob: ObjectId = listing
        .lines()
        .next()
        .unwrap()
        .split(['\t', ' '])
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let req = WalkRequest {
        wants: vec![blob],
        filter: Some(Filter::BlobNone),
        ..Default::default()
    };
    assert_eq!(enumerate(&fx.store, &req).unwrap().objects, vec![blob]);
}

#[test]
fn include_tag_and_ancestry() {
    let fx = fixture("ripgrep");
    let head: ObjectId = git(&fx.mirror, &["rev-parse", "HEAD"])
        .trim()
        .parse()
        .unwrap();
    let candidates = tag_candidates(&fx.mirror);
    assert!(!candidates.is_empty());
    let req = WalkRequest {
        wants: vec![head],
        include_tag_candidates: candidates.clone(),
        ..Default::default()
    };
    let res = enumerate(&fx.store, &req).unwrap();
    let objects = set(&res.objects);
    let reachable = oids(&git(&fx.mirror, &["rev-list", "HEAD"]));
    for (tag, target) in &candidates {
        assert_eq!(
            objects.contains(tag),
            reachable.contains(target),
            "tag {tag}"
        );
    }
    let old: ObjectId = git(&fx.mirror, &["rev-parse", "HEAD~50"])
        .trim()
        .parse()
        .unwrap();
    assert!(is_ancestor(&fx.store, &old, &head).unwrap());
    assert!(!is_ancestor(&fx.store, &head, &old).unwrap());
    assert!(is_ancestor(&fx.store, &head, &head).unwrap());
}

#[test]
fn several_packs_stream_verbatim() {
    let fx = fixture("ripgrep");
    let tips = ref_tips(&fx.mirror);
    // Split history into two packs: an old part and the rest.
    let two = fx.root.join("two");
    let pack_dir = two.join("pack");
    std::fs::create_dir_all(&pack_dir).unwrap();
    let head = git(&fx.mirror, &["rev-parse", "HEAD"]).trim().to_string();
    let old = git(&fx.mirror, &["rev-parse", &format!("{head}~10")])
        .trim()
        .to_string();
    git_stdin(
        &fx.mirror,
        &[
            "pack-objects",
            "--revs",
            pack_dir.join("pack").to_str().unwrap(),
        ],
        format!("{old}\n").as_bytes(),
    );
    let rest: String =
        tips.iter().map(|t| format!("{t}\n")).collect::<String>() + &format!("^{old}\n");
    git_stdin(
        &fx.mirror,
        &[
            "pack-objects",
            "--revs",
            pack_dir.join("pack").to_str().unwrap(),
        ],
        rest.as_bytes(),
    );
    let store = ObjectStore::open(&two).unwrap();
    assert_eq!(store.packs().len(), 2);
    let res = enumerate(
        &store,
        &WalkRequest {
            wants: tips.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    let expected = oids(&git(&fx.mirror, &["rev-list", "--objects", "--all"]));
    assert_eq!(set(&res.objects), expected);
    if store.object_count() == expected.len() as u64 {
        let pack = fx.root.join("two.pack");
        assert!(write_pack(
            &store,
            &res.objects,
            PackWriteOptions::default(),
            &pack
        ));
        let repo = empty_repo(&fx.root, "two-repo");
        assert_eq!(check_pack(&repo, &pack, &tips), expected);
    }
    // A subset spanning both packs re-encodes.
    let subset: Vec<ObjectId> = res.objects.iter().step_by(3).copied().collect();
    let pack = fx.root.join("subset.pack");
    assert!(!write_pack(
        &store,
        &subset,
        PackWriteOptions::default(),
        &pack
    ));
    let repo = empty_repo(&fx.root, "subset-repo");
    let data = std::fs::read(&pack).unwrap();
    let out = git_stdin(&repo, &["index-pack", "--stdin"], &data);
    let idx = repo.join(format!(
        ".git/objects/pack/pack-{}.idx",
        out.trim().trim_start_matches("pack\t")
    ));
    assert_eq!(
        oids(&git(&repo, &["verify-pack", "-v", idx.to_str().unwrap()])),
        set(&subset)
    );
}

/// Release-mode timing of a full tokio clone (walk + pack), against
/// `git pack-objects --all --stdout` on the same repository. Run with
/// `cargo test --release -p guts-io --test pack_write -- --ignored --nocapture`.
#[test]
#[ignore]
fn tokio_full_clone_timing() {
    let fx = fixture("tokio");
    let tips = ref_tips(&fx.mirror);
    let cpu = thread_cpu_seconds;
    let rounds: usize = std::env::var("GUTS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for round in 0..rounds {
        let t0 = std::time::Instant::now();
        let c0 = cpu();
        let res = enumerate(
            &fx.store,
            &WalkRequest {
                wants: tips.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let walked = t0.elapsed();
        let mut bytes = 0;
        let stream = pack_stream(&fx.store, &res.objects, PackWriteOptions::default()).unwrap();
        let verbatim = stream.is_verbatim();
        for chunk in stream {
            bytes += chunk.unwrap().len();
        }
        let total = t0.elapsed();
        let c1 = cpu();
        eprintln!(
            "round {round}: {} objects, walk {:?}, walk+pack {:?} (cpu {:.3}s), {bytes} bytes, verbatim {verbatim}",
            res.objects.len(),
            walked,
            total,
            c1 - c0
        );
    }
    for ofs_delta in [true, false] {
        let res = enumerate(
            &fx.store,
            &WalkRequest {
                wants: tips.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut objects = res.objects.clone();
        if ofs_delta {
            objects.pop();
        }
        let t0 = std::time::Instant::now();
        let mut bytes = 0;
        for chunk in pack_stream(
            &fx.store,
            &objects,
            PackWriteOptions {
                ofs_delta,
                chunk_bytes: 64 << 10,
            },
        )
        .unwrap()
        {
            bytes += chunk.unwrap().len();
        }
        eprintln!(
            "re-encoded (ofs_delta {ofs_delta}): {:?}, {bytes} bytes",
            t0.elapsed()
        );
    }
    let t0 = std::time::Instant::now();
    let out = git_command(&fx.mirror)
        .args(["pack-objects", "--all", "--stdout"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "git pack-objects --all --stdout: {:?} wall, {} bytes",
        t0.elapsed(),
        out.stdout.len()
    );
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[test]
#[ignore]
fn tokio_read_costs() {
    let fx = fixture("tokio");
    let pack = &fx.store.packs()[0];
    let entries: Vec<(u64, u32)> = pack.entries_by_offset().to_vec();
    let t0 = std::time::Instant::now();
    let mut total = 0;
    for &(off, _) in &entries {
        let raw = pack.raw_entry(off).unwrap();
        total += raw.len();
    }
    eprintln!(
        "pread all {} entries: {:?} ({total} bytes)",
        entries.len(),
        t0.elapsed()
    );
    let t0 = std::time::Instant::now();
    let mut n = 0;
    for &(_, i) in &entries {
        let oid = pack.index().oid_at(i);
        let (k, _) = fx.store.read_header(&oid).unwrap().unwrap();
        if k != guts_io::ObjectKind::Blob {
            n += 1;
        }
    }
    eprintln!("read_header all: {:?} ({n} non-blobs)", t0.elapsed());
    let t0 = std::time::Instant::now();
    let mut bytes = 0;
    for &(_, i) in &entries {
        let oid = pack.index().oid_at(i);
        let (k, d) = fx.store.read(&oid).unwrap().unwrap();
        if k == guts_io::ObjectKind::Tree {
            bytes += d.len();
        }
    }
    eprintln!(
        "read all in pack order: {:?} ({bytes} tree bytes)",
        t0.elapsed()
    );
}
