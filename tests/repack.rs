//! Background repacking against the real node and the real git client:
//! a busy repository ends up in a few packs while pushes and clones go on,
//! and a kill -9 at any moment of a repack leaves a valid repository.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `(packs, retired pack files)` in a repository's pack directory.
fn pack_files(node: &Node, owner: &str, name: &str) -> (usize, usize) {
    let dir = node
        .data_dir
        .join("repos")
        .join(owner)
        .join(format!("{name}.git/objects/pack"));
    let mut packs = 0;
    let mut retired = 0;
    for e in std::fs::read_dir(dir).expect("pack dir").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("pack-") && n.ends_with(".pack") {
            packs += 1;
        } else if n.starts_with("old_pack-") {
            retired += 1;
        }
    }
    (packs, retired)
}

/// Clone `url` into a fresh directory, fsck it strictly, return its refs.
fn clone_checked(dir: &Path, url: &str, tag: &str) -> Vec<(String, String)> {
    let target = dir.join(format!("clone-{tag}"));
    let _ = std::fs::remove_dir_all(&target);
    git_ok(
        dir,
        &[
            "clone",
            "--quiet",
            "--mirror",
            url,
            target.to_str().unwrap(),
        ],
    );
    fsck(&target);
    refs_of(&target)
}

/// A work tree whose `main` is pushed to `url`, then `n` more commits each
/// pushed on its own (one pack per push). Returns the work tree.
fn push_many(dir: &Path, url: &str, wt: Option<PathBuf>, n: usize, blob_bytes: usize) -> PathBuf {
    let wt = wt.unwrap_or_else(|| {
        let wt = new_worktree(dir, "wt");
        git_ok(&wt, &["push", "--quiet", url, "main"]);
        wt
    });
    let start = git_ok(&wt, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse::<usize>()
        .unwrap();
    for i in start..start + n {
        // Incompressible content, so packs have some weight on disk.
        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let body: String = (0..blob_bytes / 16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect();
        commit_file(&wt, &format!("f{}.txt", i % 7), &body, &format!("c{i}"));
        git_ok(&wt, &["push", "--quiet", url, "main"]);
    }
    wt
}

#[test]
fn busy_repository_is_repacked_while_pushes_and_clones_go_on() {
    let mut node = Node::start_with(&["--repack-quiet-ms", "100"]);
    let url = node.create_repo("busy", "repo");
    let tmp = tempfile::tempdir().unwrap();
    let wt = push_many(tmp.path(), &url, None, 1, 64);

    // Clones run the whole time; each must pass fsck.
    let stop = Arc::new(AtomicBool::new(false));
    let clones = Arc::new(AtomicUsize::new(0));
    let cloner = {
        let (stop, clones, url) = (stop.clone(), clones.clone(), url.clone());
        let dir = tmp.path().join("cloner");
        std::fs::create_dir_all(&dir).unwrap();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                clone_checked(&dir, &url, &format!("c{}", i % 2));
                clones.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    push_many(tmp.path(), &url, Some(wt.clone()), 40, 256);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (packs, retired) = pack_files(&node, "busy", "repo");
            packs <= 4 && retired == 0
        }),
        "not repacked: {:?}\n{}",
        pack_files(&node, "busy", "repo"),
        node.log_text()
    );
    stop.store(true, Ordering::Relaxed);
    cloner.join().expect("cloner");
    assert!(clones.load(Ordering::Relaxed) > 0);
    assert!(node.log_text().contains("repacked"));

    let head = rev_parse(&wt, "HEAD");
    let refs = clone_checked(tmp.path(), &url, "after");
    assert_eq!(refs, vec![("refs/heads/main".to_string(), head.clone())]);
    // Every commit is there, in a clone and in a fetch into the old work tree.
    let all = tmp.path().join("clone-after");
    assert_eq!(
        git_ok(&all, &["rev-list", "--count", "main"]).trim(),
        "42",
        "history"
    );
    git_ok(&wt, &["fetch", "--quiet", &url, "main"]);

    // Pushes and a shallow clone after the repack; then a restart reads the
    // repacked directory as it is on disk.
    let wt = push_many(tmp.path(), &url, Some(wt), 3, 64);
    node.restart();
    let head = rev_parse(&wt, "HEAD");
    let refs = clone_checked(tmp.path(), &url, "restarted");
    assert_eq!(refs, vec![("refs/heads/main".to_string(), head)]);
    let shallow = tmp.path().join("shallow");
    git_ok(
        tmp.path(),
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    fsck(&shallow);
}

/// A small deterministic generator for kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_at_any_moment_of_a_repack_leaves_a_valid_repository() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    // Packs pile up while repacking is off; then the node starts with it on
    // and is killed at a random moment, and starts again with it off.
    let mut node = Node::start_with(&["--repack-quiet-ms", "0"]);
    let url = node.create_repo("crash", "repo");
    let tmp = tempfile::tempdir().unwrap();
    let mut wt = None;
    let mut repacked = 0;
    for round in 0..6 {
        wt = Some(push_many(tmp.path(), &url, wt, 10, 256 << 10));
        let head = rev_parse(wt.as_ref().unwrap(), "HEAD");
        let (before, _) = pack_files(&node, "crash", "repo");
        node.kill9();
        node.extra_args = vec!["--repack-quiet-ms".into(), "10".into()];
        node.spawn();
        // Open the repository (repacking looks at open ones), then kill.
        let _ = server_refs(tmp.path(), &url);
        let wait = rng.next() % 250;
        std::thread::sleep(Duration::from_millis(wait));
        node.kill9();
        let (mid, retired) = pack_files(&node, "crash", "repo");
        println!("round {round}: killed after {wait} ms: {before} packs before, {mid} after, {retired} retired files");
        if mid < before {
            repacked += 1;
        }
        node.extra_args = vec!["--repack-quiet-ms".into(), "0".into()];
        node.spawn();
        let refs = clone_checked(tmp.path(), &url, &format!("r{round}"));
        assert_eq!(
            refs,
            vec![("refs/heads/main".to_string(), head)],
            "round {round}"
        );
        let (_, retired) = pack_files(&node, "crash", "repo");
        assert_eq!(retired, 0, "retired files are removed at start");
    }
    println!("{repacked} of 6 rounds got past the switch before the kill");
    // Finally let it finish: a few packs, everything there.
    node.kill9();
    node.extra_args = vec!["--repack-quiet-ms".into(), "10".into()];
    node.spawn();
    let _ = server_refs(tmp.path(), &url);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (packs, retired) = pack_files(&node, "crash", "repo");
            packs <= 4 && retired == 0
        }),
        "{:?}",
        pack_files(&node, "crash", "repo")
    );
    let head = rev_parse(wt.as_ref().unwrap(), "HEAD");
    let refs = clone_checked(tmp.path(), &url, "final");
    assert_eq!(refs, vec![("refs/heads/main".to_string(), head)]);
}

/// True if C git finds `oid` in the node's copy of the repository.
fn has_object(repo_dir: &Path, oid: &str) -> bool {
    git_out(repo_dir, &["cat-file", "-e", oid]).status.success()
}

/// A branch pushed and deleted, and a branch rewound with a force push:
/// once their packs are older than the prune age, their objects leave the
/// repository; everything a ref reaches stays, C git's fsck agrees, and a
/// clone is complete.
#[test]
fn unreachable_objects_are_pruned_once_old_and_reachable_ones_never() {
    let node = Node::start_with(&[
        "--repack-quiet-ms",
        "50",
        "--prune-unreachable-after-ms",
        "1",
    ]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let url = node.create_repo("alice", "prune");
    let wt = push_many(s, &url, None, 3, 4096);
    let repo_dir = node.data_dir.join("repos/alice/prune.git");

    git_ok(&wt, &["checkout", "-q", "-b", "topic"]);
    commit_file(&wt, "topic.txt", "only ever on topic\n", "topic");
    let topic_blob = git_ok(&wt, &["rev-parse", "HEAD:topic.txt"])
        .trim()
        .to_string();
    git_ok(&wt, &["push", "-q", &url, "topic"]);
    git_ok(&wt, &["checkout", "-q", "main"]);
    let rewound = git_ok(&wt, &["rev-parse", "main"]).trim().to_string();
    let kept = git_ok(&wt, &["rev-parse", "main~1"]).trim().to_string();
    assert!(has_object(&repo_dir, &topic_blob) && has_object(&repo_dir, &rewound));

    git_ok(&wt, &["push", "-q", "--force", &url, "main~1:main"]);
    git_ok(&wt, &["push", "-q", &url, ":topic"]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            !has_object(&repo_dir, &topic_blob) && !has_object(&repo_dir, &rewound)
        }),
        "unreachable objects were never pruned"
    );
    git_ok(&repo_dir, &["fsck", "--strict", "--no-dangling"]);
    let refs = clone_checked(s, &url, "after-prune");
    assert_eq!(refs, vec![("refs/heads/main".to_string(), kept.clone())]);
    // Pushing on top of the pruned history works as ever.
    git_ok(&wt, &["reset", "-q", "--hard", &kept]);
    let again = commit_file(&wt, "after.txt", "after the prune\n", "after");
    git_ok(&wt, &["push", "-q", &url, "main"]);
    let refs = clone_checked(s, &url, "after-push");
    assert_eq!(refs, vec![("refs/heads/main".to_string(), again)]);
}

/// Within the prune age nothing is dropped, reachable or not: a deleted
/// branch's objects stay through repacks (they may be a push still being
/// ordered, or wanted back).
#[test]
fn unreachable_objects_stay_within_the_prune_age() {
    // Packs pile up with repacking off (equal small packs, so the repack
    // that follows merges them all, the deleted branch's among them).
    let mut node = Node::start_with(&["--repack-quiet-ms", "0"]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let url = node.create_repo("alice", "keep");
    let wt = push_many(s, &url, None, 2, 1024);
    let repo_dir = node.data_dir.join("repos/alice/keep.git");
    git_ok(&wt, &["checkout", "-q", "-b", "topic"]);
    commit_file(&wt, "topic.txt", "topic\n", "topic");
    let topic_blob = git_ok(&wt, &["rev-parse", "HEAD:topic.txt"])
        .trim()
        .to_string();
    git_ok(&wt, &["push", "-q", &url, "topic"]);
    git_ok(&wt, &["push", "-q", &url, ":topic"]);
    let (before, _) = pack_files(&node, "alice", "keep");
    assert!(before >= 4, "{before} packs");
    node.kill9();
    node.extra_args = vec!["--repack-quiet-ms".into(), "50".into()];
    node.spawn();
    // Open the repository (maintenance looks at open ones).
    let _ = server_refs(s, &url);
    assert!(
        wait_until(Duration::from_secs(60), || pack_files(
            &node, "alice", "keep"
        )
        .0 == 1),
        "never repacked: {:?}",
        pack_files(&node, "alice", "keep")
    );
    // The merge kept the deleted branch's objects.
    assert!(has_object(&repo_dir, &topic_blob));
    git_ok(&repo_dir, &["fsck", "--strict"]);
}
