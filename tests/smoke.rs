//! Smoke test: push a real repository, clone it back with protocol v0 and
//! v2, and check the clones with `git fsck --strict`.

mod common;
use common::*;

#[test]
fn push_then_clone_v0_v2() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = corpus_mirror(tmp.path(), "guts");
    let url = node.create_repo("alice", "guts");
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    for v in ["0", "1", "2"] {
        let dst = tmp.path().join(format!("clone-v{v}.git"));
        git_ok(
            tmp.path(),
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                "--bare",
                &url,
                dst.to_str().unwrap(),
            ],
        );
        fsck(&dst);
        assert_eq!(
            refs_of(&dst),
            refs_of(&src),
            "refs differ after clone with protocol v{v}"
        );
    }
}

#[test]
fn empty_repository_clone() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("bob", "empty");
    for v in ["0", "2"] {
        let dst = tmp.path().join(format!("e{v}"));
        git_ok(
            tmp.path(),
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                &url,
                dst.to_str().unwrap(),
            ],
        );
        assert!(refs_of(&dst).is_empty());
    }
}

#[test]
fn empty_tree_commit_round_trip() {
    // A first commit with no files points at the empty tree, which git
    // treats as always present: push and clone must both work.
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("carol", "blank");
    let wt = tmp.path().join("wt");
    std::fs::create_dir_all(&wt).unwrap();
    git_ok(&wt, &["init", "-q", "-b", "main"]);
    git_ok(&wt, &["commit", "-q", "--allow-empty", "-m", "nothing yet"]);
    git_ok(&wt, &["push", "-q", &url, "main"]);
    let dst = tmp.path().join("clone.git");
    git_ok(
        tmp.path(),
        &["clone", "-q", "--bare", &url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert_eq!(refs_of(&dst), refs_of(&wt));
}

#[test]
fn two_shards_serve_repositories_owned_by_either() {
    // With two shards, connections land on either shard (SO_REUSEPORT) and
    // repositories are owned by one of them: requests cross shards.
    let node = Node::start_with(&["--shards", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let src = corpus_mirror(tmp.path(), "guts");
    for i in 0..6 {
        let url = node.create_repo(&format!("owner{i}"), "repo");
        git_ok(&src, &["push", "--quiet", "--mirror", &url]);
        let dst = tmp.path().join(format!("clone{i}.git"));
        git_ok(
            tmp.path(),
            &["clone", "--quiet", "--bare", &url, dst.to_str().unwrap()],
        );
        fsck(&dst);
        assert_eq!(refs_of(&dst), refs_of(&src));
    }
}

#[test]
fn repositories_closed_for_space_reopen_intact() {
    // A shard keeps a bounded number of repositories open; one closed to
    // make room must reopen from disk with its refs and objects intact.
    // (300 creations from one address: the creation rate limit is lifted.)
    let node = Node::start_with(&["--repo-creates-per-minute", "0"]);
    let tmp = tempfile::tempdir().unwrap();
    let wt = new_worktree(tmp.path(), "wt");
    let first = node.create_repo("many", "r0");
    git_ok(&wt, &["push", "-q", &first, "main"]);
    for i in 1..=300 {
        node.create_repo("many", &format!("r{i}"));
    }
    let dst = tmp.path().join("clone.git");
    git_ok(
        tmp.path(),
        &["clone", "-q", "--bare", &first, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert_eq!(refs_of(&dst), refs_of(&wt));
    std::fs::write(wt.join("more"), "more\n").unwrap();
    git_ok(&wt, &["add", "more"]);
    git_ok(&wt, &["commit", "-q", "-m", "more"]);
    git_ok(&wt, &["push", "-q", &first, "main"]);
    let remote = git_ok(tmp.path(), &["ls-remote", &first, "refs/heads/main"]);
    assert!(remote.starts_with(&git_ok(&wt, &["rev-parse", "main"]).trim().to_string()));
}

#[test]
fn head_follows_the_first_pushed_branch() {
    // A repository whose first push is `master` (git's historical default)
    // must clone with a checked-out work tree, for v0 and v2 alike.
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let wt = tmp.path().join("wt");
    std::fs::create_dir_all(&wt).unwrap();
    git_ok(&wt, &["init", "-q", "-b", "master"]);
    std::fs::write(wt.join("hello.txt"), "hello\n").unwrap();
    git_ok(&wt, &["add", "hello.txt"]);
    git_ok(&wt, &["commit", "-q", "-m", "first"]);
    let url = node.create_repo("dora", "legacy");
    git_ok(&wt, &["push", "-q", &url, "master"]);
    for v in ["0", "2"] {
        let dst = tmp.path().join(format!("clone-v{v}"));
        git_ok(
            tmp.path(),
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "-q",
                &url,
                dst.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read_to_string(dst.join("hello.txt")).unwrap(),
            "hello\n",
            "v{v}"
        );
        assert_eq!(
            git_ok(&dst, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
            "master"
        );
        fsck(&dst);
    }
    // Once HEAD's branch exists, later branches do not move it.
    git_ok(&wt, &["push", "-q", &url, "master:refs/heads/main"]);
    let out = git_ok(tmp.path(), &["ls-remote", "--symref", &url, "HEAD"]);
    assert!(out.contains("ref: refs/heads/master\tHEAD"), "{out}");
}
