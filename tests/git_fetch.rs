//! Fetch-side features with the real git client against a started node:
//! protocol v0/v1/v2 clone and incremental fetch, multi-round negotiation
//! (with gzip-encoded request bodies), ls-remote, peeled tags, include-tag,
//! shallow clones compared with what C git itself serves over file://,
//! partial clone with lazy fetch, and empty repositories.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Push corpus `name` (mirror) into a new repository on `node`; returns
/// (the local mirror, the repository URL).
fn seeded(node: &Node, tmp: &Path, owner: &str, name: &str) -> (PathBuf, String) {
    let src = corpus_mirror(tmp, name);
    let url = node.create_repo(owner, name);
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    assert_eq!(
        server_refs(tmp, &url),
        refs_of(&src),
        "server refs after the seeding push"
    );
    (src, url)
}

/// Create `n` commits on `branch` starting at `from`, with git fast-import.
fn fast_commits(repo: &Path, branch: &str, from: &str, n: usize, tag: &str, date: u64) {
    let mut stream = String::new();
    for i in 0..n {
        let content = format!("{tag} commit {i}\n");
        stream.push_str(&format!(
            "commit {branch}\ncommitter Fast <fast@example.com> {} +0000\n",
            date + i as u64
        ));
        let msg = format!("{tag} {i}");
        stream.push_str(&format!("data {}\n{msg}\n", msg.len()));
        if i == 0 {
            stream.push_str(&format!("from {from}\n"));
        }
        stream.push_str(&format!(
            "M 644 inline {tag}.txt\ndata {}\n{content}\n",
            content.len()
        ));
    }
    let mut child = git(repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("fast-import");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "fast-import failed");
}

fn loose_count(repo: &Path) -> usize {
    let out = git_ok(repo, &["count-objects", "-v"]);
    out.lines()
        .find_map(|l| l.strip_prefix("count: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("count-objects")
}

/// Run `git args` with curl tracing; returns the trace text.
fn traced(dir: &Path, trace: &Path, args: &[&str]) -> String {
    let _ = std::fs::remove_file(trace);
    git_env_ok(
        dir,
        &[
            ("GIT_TRACE_CURL", trace.to_str().unwrap()),
            ("GIT_TRACE_CURL_NO_DATA", "1"),
        ],
        args,
    );
    std::fs::read_to_string(trace).unwrap_or_default()
}

#[test]
fn clone_and_incremental_fetch_v0_v1_v2() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_src, url) = seeded(&node, t, "alice", "guts");

    // A work tree that lands new commits on the server between fetches.
    let pusher = t.join("pusher");
    git_ok(t, &["clone", "--quiet", &url, pusher.to_str().unwrap()]);

    let mut clones = Vec::new();
    for v in ["0", "1", "2"] {
        let mirror = t.join(format!("mirror-v{v}.git"));
        git_ok(
            t,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                "--mirror",
                &url,
                mirror.to_str().unwrap(),
            ],
        );
        fsck(&mirror);
        assert_eq!(refs_of(&mirror), server_refs(t, &url), "mirror clone v{v}");
        let wt = t.join(format!("wt-v{v}"));
        git_ok(
            t,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                &url,
                wt.to_str().unwrap(),
            ],
        );
        fsck(&wt);
        assert_eq!(rev_parse(&wt, "HEAD"), rev_parse(&pusher, "HEAD"));
        clones.push((v, mirror, wt));
    }

    for round in 0..3 {
        commit_file(
            &pusher,
            &format!("round{round}.txt"),
            &format!("round {round}\n"),
            &format!("round {round}"),
        );
        git_ok(
            &pusher,
            &["checkout", "-q", "-B", &format!("topic-{round}")],
        );
        commit_file(
            &pusher,
            "topic.txt",
            &format!("topic {round}\n"),
            &format!("topic {round}"),
        );
        git_ok(
            &pusher,
            &[
                "tag",
                "-a",
                "-m",
                &format!("tag {round}"),
                &format!("v-round-{round}"),
            ],
        );
        git_ok(&pusher, &["checkout", "-q", "main"]);
        git_ok(
            &pusher,
            &[
                "push",
                "--quiet",
                "origin",
                "main",
                &format!("topic-{round}"),
                "--tags",
            ],
        );
        let want = server_refs(t, &url);
        for (v, mirror, wt) in &clones {
            let pv = format!("protocol.version={v}");
            git_ok(mirror, &["-c", &pv, "fetch", "--quiet", "origin"]);
            fsck(mirror);
            assert_eq!(&refs_of(mirror), &want, "mirror fetch v{v} round {round}");
            git_ok(
                wt,
                &["-c", &pv, "pull", "--quiet", "--ff-only", "origin", "main"],
            );
            git_ok(wt, &["-c", &pv, "fetch", "--quiet", "origin"]);
            fsck(wt);
            assert_eq!(
                rev_parse(wt, "HEAD"),
                rev_parse(&pusher, "main"),
                "work tree v{v} round {round}"
            );
            assert_eq!(
                rev_parse(wt, &format!("refs/remotes/origin/topic-{round}")),
                rev_parse(&pusher, &format!("topic-{round}"))
            );
            assert_eq!(
                git_ok(wt, &["cat-file", "-t", &format!("v-round-{round}")]).trim(),
                "tag"
            );
        }
    }
}

#[test]
fn multi_round_negotiation_with_gzip_v0_v2() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (_src, url) = seeded(&node, t, "alice", "ripgrep");
    let pusher = t.join("pusher");
    git_ok(
        t,
        &[
            "clone",
            "--quiet",
            "--branch",
            "master",
            &url,
            pusher.to_str().unwrap(),
        ],
    );

    for v in ["0", "2"] {
        let pv = format!("protocol.version={v}");
        let wt = t.join(format!("client-v{v}"));
        git_ok(
            t,
            &[
                "-c",
                &pv,
                "clone",
                "--quiet",
                "--branch",
                "master",
                &url,
                wt.to_str().unwrap(),
            ],
        );
        // Many local commits the server lacks, on top of shared history
        // some way back from the tip. They are newer than anything shared,
        // so the client offers them first and needs several rounds to
        // reach common ground.
        let base = rev_parse(&wt, "HEAD~20");
        fast_commits(
            &wt,
            "refs/heads/side",
            &base,
            300,
            &format!("side-v{v}"),
            1_900_000_000,
        );
        fast_commits(
            &wt,
            "refs/heads/side2",
            &rev_parse(&wt, "HEAD~200"),
            40,
            &format!("side2-v{v}"),
            1_900_001_000,
        );

        // The server moves on.
        for i in 0..5 {
            commit_file(
                &pusher,
                &format!("new-v{v}.txt"),
                &format!("{v} {i}\n"),
                &format!("new v{v} {i}"),
            );
        }
        git_ok(&pusher, &["push", "--quiet", "origin", "master"]);

        let before = loose_count(&wt);
        let trace = t.join(format!("trace-v{v}"));
        let text = traced(
            &wt,
            &trace,
            &[
                "-c",
                &pv,
                "-c",
                "fetch.unpackLimit=1000000",
                "fetch",
                "--quiet",
                "origin",
            ],
        );
        fsck(&wt);
        assert_eq!(
            rev_parse(&wt, "refs/remotes/origin/master"),
            rev_parse(&pusher, "master"),
            "v{v}"
        );
        // The negotiation found the common history: only the new commits
        // (commit + tree + blob each, plus a few trees) came over.
        let got = loose_count(&wt) - before;
        assert!(
            got <= 5 * 4,
            "v{v}: fetched {got} objects for 5 new commits (negotiation failed?)"
        );
        let posts = text
            .matches("POST /git/alice/ripgrep.git/git-upload-pack")
            .count();
        assert!(
            posts >= 3,
            "v{v}: expected several negotiation rounds, saw {posts} POSTs"
        );
        assert!(
            text.to_ascii_lowercase().contains("content-encoding: gzip"),
            "v{v}: no gzip-encoded request body was sent"
        );
    }
}

#[test]
fn ls_remote_v0_v2_peeled_and_prefix() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, url) = seeded(&node, t, "alice", "ripgrep");
    // What C git advertises for the same refs (minus HEAD, whose target differs).
    let expected: Vec<String> = ls_remote(t, "2", src.to_str().unwrap(), &[])
        .into_iter()
        .filter(|l| !l.ends_with("\tHEAD"))
        .collect();
    assert!(
        expected.iter().any(|l| l.ends_with("^{}")),
        "corpus has annotated tags"
    );
    for v in ["0", "1", "2"] {
        let got: Vec<String> = ls_remote(t, v, &url, &[])
            .into_iter()
            .filter(|l| !l.ends_with("\tHEAD"))
            .collect();
        assert_eq!(got, expected, "ls-remote v{v}");
        let main = ls_remote(t, v, &url, &["refs/heads/master"]);
        assert_eq!(
            main,
            vec![format!(
                "{}\trefs/heads/master",
                rev_parse(&src, "refs/heads/master")
            )],
            "v{v}"
        );
        let tags = ls_remote(t, v, &url, &["--tags"]);
        let want_tags: Vec<String> = expected
            .iter()
            .filter(|l| l.contains("\trefs/tags/"))
            .cloned()
            .collect();
        assert_eq!(tags, want_tags, "ls-remote --tags v{v}");
        // Peeled lines for a pattern, as C git shows them.
        for pat in ["refs/tags/14.0.0", "14.0.0", "refs/tags/14.*"] {
            let peeled = ls_remote(t, v, &url, &[pat]);
            assert_eq!(
                peeled,
                ls_remote(t, v, src.to_str().unwrap(), &[pat]),
                "v{v} pattern {pat}"
            );
            assert!(!peeled.is_empty());
        }
    }
    // HEAD: the node's default branch once it exists, with its symref.
    let wt = new_worktree(t, "headwt");
    let url2 = node.create_repo("alice", "withmain");
    git_ok(&wt, &["push", "--quiet", &url2, "main"]);
    for v in ["0", "2"] {
        let lines = ls_remote(t, v, &url2, &["--symref", "HEAD"]);
        let head = rev_parse(&wt, "HEAD");
        assert!(
            lines.contains(&"ref: refs/heads/main\tHEAD".to_string()),
            "v{v}: {lines:?}"
        );
        assert!(lines.contains(&format!("{head}\tHEAD")), "v{v}: {lines:?}");
    }
}

#[test]
fn include_tag_follows_annotated_tags() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let wt = new_worktree(t, "origin");
    let url = node.create_repo("alice", "tags");
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    for v in ["0", "2"] {
        let pv = format!("protocol.version={v}");
        let client = t.join(format!("client-v{v}"));
        git_ok(
            t,
            &[
                "-c",
                &pv,
                "clone",
                "--quiet",
                &url,
                client.to_str().unwrap(),
            ],
        );
        commit_file(
            &wt,
            "f.txt",
            &format!("tagged {v}\n"),
            &format!("tagged {v}"),
        );
        git_ok(&wt, &["branch", "-f", &format!("rel-{v}")]);
        let tag = format!("release-v{v}");
        git_ok(&wt, &["tag", "-a", "-m", &format!("release {v}"), &tag]);
        git_ok(&wt, &["push", "--quiet", &url, &format!("rel-{v}"), &tag]);
        let tag_oid = rev_parse(&wt, &format!("refs/tags/{tag}"));
        let pkt = t.join(format!("pkt-v{v}"));
        let _ = std::fs::remove_file(&pkt);
        git_env_ok(
            &client,
            &[("GIT_TRACE_PACKET", pkt.to_str().unwrap())],
            &[
                "-c",
                &pv,
                "fetch",
                "--quiet",
                "origin",
                &format!("rel-{v}:refs/remotes/origin/rel-{v}"),
            ],
        );
        fsck(&client);
        assert_eq!(
            rev_parse(&client, &format!("refs/tags/{tag}")),
            tag_oid,
            "v{v}: tag followed"
        );
        assert_eq!(git_ok(&client, &["cat-file", "-t", &tag_oid]).trim(), "tag");
        let trace = std::fs::read_to_string(&pkt).unwrap_or_default();
        assert!(
            trace.contains("include-tag"),
            "v{v}: client did not ask for include-tag"
        );
    }
    // The server side of include-tag, by hand: the tag comes with the
    // pack only when asked for, and only if its target is sent.
    let commit = rev_parse(&wt, "rel-2");
    let tag = rev_parse(&wt, "refs/tags/release-v2");
    let have = rev_parse(&wt, "rel-0");
    let base = vec![
        format!("want {commit}"),
        format!("have {have}"),
        "ofs-delta".into(),
        "no-progress".into(),
        "done".into(),
    ];
    let with = [base.clone(), vec!["include-tag".into()]].concat();
    let got = pack_oids(&wt, &raw_v2_fetch(&node, "alice", "tags", &with));
    assert!(
        got.contains(&tag),
        "include-tag: tag not in the pack: {got:?}"
    );
    assert!(got.contains(&commit));
    let got = pack_oids(&wt, &raw_v2_fetch(&node, "alice", "tags", &base));
    assert!(!got.contains(&tag), "tag sent without include-tag");
    assert!(got.contains(&commit));
    // A tag whose target the client already has is not included.
    let v0_tag = rev_parse(&wt, "refs/tags/release-v0");
    let got = pack_oids(&wt, &raw_v2_fetch(&node, "alice", "tags", &with));
    assert!(
        !got.contains(&v0_tag),
        "include-tag sent a tag on an old commit"
    );
}

/// Clone from the node (v0 and v2) and from C git over file:// with the
/// same options, run the same follow-up fetches, and compare the shallow
/// boundaries and the reachable commits.
fn compare_shallow(
    t: &Path,
    url: &str,
    src: &Path,
    case: &str,
    clone_opts: &[&str],
    then: &[&[&str]],
) {
    let file_url = format!("file://{}", src.display());
    let mut results = Vec::new();
    for (label, from, v) in [
        ("c-git", file_url.as_str(), "2"),
        ("node-v0", url, "0"),
        ("node-v2", url, "2"),
    ] {
        let dst = t.join(format!("{case}-{label}"));
        let pv = format!("protocol.version={v}");
        let mut args = vec!["-c", pv.as_str(), "clone", "--quiet", "--branch", "master"];
        args.extend_from_slice(clone_opts);
        args.push(from);
        args.push(dst.to_str().unwrap());
        git_ok(t, &args);
        for step in then {
            let mut a = vec!["-c", pv.as_str()];
            a.extend_from_slice(step);
            git_ok(&dst, &a);
        }
        fsck(&dst);
        results.push((label, shallow_of(&dst), rev_list_all(&dst), refs_of(&dst)));
    }
    let (_, shallow, revs, refs) = &results[0];
    assert!(!revs.is_empty(), "{case}: C git clone is empty");
    for (label, s, r, f) in &results[1..] {
        assert_eq!(
            s, shallow,
            "{case}: shallow file of {label} differs from C git's"
        );
        assert_eq!(
            r.len(),
            revs.len(),
            "{case}: {label} has {} commits, C git {}",
            r.len(),
            revs.len()
        );
        assert_eq!(
            r, revs,
            "{case}: rev-list --all of {label} differs from C git's"
        );
        assert_eq!(f, refs, "{case}: refs of {label} differ from C git's");
    }
}

#[test]
fn shallow_clones_match_c_git() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, url) = seeded(&node, t, "alice", "ripgrep");
    git_ok(&src, &["config", "uploadpack.allowFilter", "true"]);
    // A date some way back in master's history, and a tag on it.
    let dates: Vec<String> = git_ok(&src, &["log", "--format=%cI", "master"])
        .lines()
        .map(str::to_string)
        .collect();
    let since = format!("--shallow-since={}", dates[dates.len() / 20]);
    compare_shallow(t, &url, &src, "depth1", &["--depth", "1"], &[]);
    compare_shallow(t, &url, &src, "depth3", &["--depth", "3"], &[]);
    compare_shallow(
        t,
        &url,
        &src,
        "deepen2",
        &["--depth", "1"],
        &[&["fetch", "--quiet", "--deepen", "2"]],
    );
    compare_shallow(t, &url, &src, "since", &[&since], &[]);
    compare_shallow(t, &url, &src, "exclude", &["--shallow-exclude=14.0.0"], &[]);
    compare_shallow(
        t,
        &url,
        &src,
        "exclude-branch",
        &["--shallow-exclude=ag/changelog"],
        &[],
    );
    compare_shallow(
        t,
        &url,
        &src,
        "unshallow",
        &["--depth", "2"],
        &[&["fetch", "--quiet", "--unshallow"]],
    );
    compare_shallow(
        t,
        &url,
        &src,
        "depth-no-single",
        &["--depth", "2", "--no-single-branch"],
        &[],
    );
    compare_shallow(
        t,
        &url,
        &src,
        "since-and-exclude",
        &[&since, "--shallow-exclude=14.0.0"],
        &[],
    );
    compare_shallow(
        t,
        &url,
        &src,
        "depth-and-filter",
        &["--depth", "5", "--filter=blob:none", "--no-checkout"],
        &[],
    );
    compare_shallow(
        t,
        &url,
        &src,
        "deepen-since-later",
        &["--depth", "1"],
        &[&["fetch", "--quiet", &since]],
    );
}

#[test]
fn shallow_fetch_after_new_pushes_matches_c_git() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, url) = seeded(&node, t, "alice", "guts");
    // C git serves the same history from a bare copy over file://.
    let bare = t.join("bare.git");
    git_ok(
        t,
        &[
            "clone",
            "--quiet",
            "--mirror",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let file_url = format!("file://{}", bare.display());
    let pusher = t.join("pusher");
    git_ok(t, &["clone", "--quiet", &url, pusher.to_str().unwrap()]);
    let clients: Vec<(String, String, PathBuf)> = [
        ("c-git", file_url.as_str(), "2"),
        ("node-v0", url.as_str(), "0"),
        ("node-v2", url.as_str(), "2"),
    ]
    .iter()
    .map(|(label, from, v)| {
        let dst = t.join(format!("shallow-{label}"));
        git_ok(
            t,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                "--depth",
                "1",
                from,
                dst.to_str().unwrap(),
            ],
        );
        (label.to_string(), v.to_string(), dst)
    })
    .collect();
    assert_eq!(shallow_of(&clients[0].2), vec![rev_parse(&src, "main")]);
    let steps: [&[&str]; 4] = [
        &["fetch", "--quiet", "origin"],
        &["fetch", "--quiet", "origin"],
        &["fetch", "--quiet", "--depth", "1", "origin"],
        &["fetch", "--quiet", "--deepen", "3", "origin"],
    ];
    for (i, step) in steps.iter().enumerate() {
        for j in 0..2 {
            commit_file(
                &pusher,
                "more.txt",
                &format!("{i} {j}\n"),
                &format!("more {i} {j}"),
            );
        }
        git_ok(&pusher, &["push", "--quiet", "origin", "main"]);
        git_ok(
            &pusher,
            &["push", "--quiet", bare.to_str().unwrap(), "main"],
        );
        let mut results = Vec::new();
        for (label, v, dst) in &clients {
            let mut args = vec!["-c".to_string(), format!("protocol.version={v}")];
            args.extend(step.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git_ok(dst, &args);
            fsck(dst);
            assert_eq!(
                rev_parse(dst, "origin/main"),
                rev_parse(&pusher, "main"),
                "{label} step {i}"
            );
            results.push((label, shallow_of(dst), rev_list_all(dst)));
        }
        for (label, shallow, revs) in &results[1..] {
            assert_eq!(
                shallow, &results[0].1,
                "step {i} {step:?}: shallow file of {label} differs from C git's"
            );
            assert_eq!(
                revs, &results[0].2,
                "step {i} {step:?}: commits of {label} differ from C git's"
            );
        }
    }
}

/// Objects listed as missing (promised) in a partial clone, sorted.
fn missing_objects(repo: &Path) -> Vec<String> {
    let out = git_ok(repo, &["rev-list", "--objects", "--all", "--missing=print"]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix('?'))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn partial_clone_blob_none_and_tree_0_with_lazy_fetch() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, url) = seeded(&node, t, "alice", "ripgrep");
    git_ok(&src, &["config", "uploadpack.allowFilter", "true"]);
    git_ok(&src, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    let file_url = format!("file://{}", src.display());
    for filter in [
        "blob:none",
        "tree:0",
        "tree:1",
        "tree:2",
        "blob:limit=1k",
        "blob:limit=0",
    ] {
        let reference = t.join(format!("ref-{}", filter.replace(':', "-")));
        git_ok(
            t,
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                "--branch",
                "master",
                &format!("--filter={filter}"),
                &file_url,
                reference.to_str().unwrap(),
            ],
        );
        let expected_missing = missing_objects(&reference);
        assert!(!expected_missing.is_empty());
        for v in ["0", "2"] {
            let pv = format!("protocol.version={v}");
            let dst = t.join(format!("partial-{}-v{v}", filter.replace(':', "-")));
            git_ok(
                t,
                &[
                    "-c",
                    &pv,
                    "clone",
                    "--quiet",
                    "--no-checkout",
                    "--branch",
                    "master",
                    &format!("--filter={filter}"),
                    &url,
                    dst.to_str().unwrap(),
                ],
            );
            assert_eq!(
                git_ok(&dst, &["config", "remote.origin.promisor"]).trim(),
                "true"
            );
            let missing = missing_objects(&dst);
            assert_eq!(
                missing.len(),
                expected_missing.len(),
                "{filter} v{v}: missing object count vs C git"
            );
            assert_eq!(
                missing, expected_missing,
                "{filter} v{v}: missing objects differ from C git's"
            );
            fsck(&dst);
            if !matches!(filter, "blob:none" | "tree:0") {
                continue;
            }
            // Checkout and log -p fetch what they need on demand.
            git_ok(&dst, &["-c", &pv, "checkout", "-q", "master"]);
            assert!(dst.join("README.md").exists());
            let readme = std::fs::read(dst.join("README.md")).unwrap();
            let want = git_ok(&src, &["show", "master:README.md"]);
            assert_eq!(String::from_utf8_lossy(&readme), want);
            let log = git_ok(&dst, &["-c", &pv, "log", "-p", "-3", "--format=%H"]);
            assert!(
                log.contains("diff --git"),
                "{filter} v{v}: log -p shows no diffs"
            );
            let fewer = missing_objects(&dst).len();
            assert!(
                fewer < missing.len(),
                "{filter} v{v}: lazy fetch fetched nothing"
            );
            fsck(&dst);
            assert_eq!(
                git_ok(&dst, &["status", "--porcelain"]).trim(),
                "",
                "{filter} v{v}"
            );
        }
    }
}

#[test]
fn empty_repository_clone_then_push_and_fetch() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("bob", "empty");
    for v in ["0", "1", "2"] {
        assert!(
            ls_remote(t, v, &url, &[]).is_empty(),
            "v{v}: empty repo advertises refs"
        );
    }
    let mut clones = Vec::new();
    for v in ["0", "2"] {
        let dst = t.join(format!("e{v}"));
        let out = git_out(
            t,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                &url,
                dst.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "v{v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("empty repository"),
            "v{v}"
        );
        assert!(refs_of(&dst).is_empty());
        clones.push((v, dst));
    }
    let wt = new_worktree(t, "first");
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    for (v, dst) in &clones {
        git_ok(
            dst,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "fetch",
                "--quiet",
                "origin",
            ],
        );
        fsck(dst);
        assert_eq!(rev_parse(dst, "origin/main"), rev_parse(&wt, "main"));
    }
}

#[test]
fn fetch_by_object_id_v0_v2() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, url) = seeded(&node, t, "alice", "guts");
    let deep = rev_parse(&src, "main~5");
    for v in ["0", "2"] {
        let pv = format!("protocol.version={v}");
        let dst = t.join(format!("byid-v{v}"));
        git_ok(t, &["init", "-q", dst.to_str().unwrap()]);
        // A commit that no ref points at directly (allow-reachable-sha1-in-want).
        git_ok(&dst, &["-c", &pv, "fetch", "--quiet", &url, &deep]);
        fsck(&dst);
        assert_eq!(rev_parse(&dst, "FETCH_HEAD"), deep);
        assert_eq!(
            git_ok(&dst, &["rev-list", "--count", "FETCH_HEAD"]),
            git_ok(&src, &["rev-list", "--count", &deep])
        );
        // An object the server does not have is refused cleanly.
        let out = git_out(
            &dst,
            &[
                "-c",
                &pv,
                "fetch",
                "--quiet",
                &url,
                "1234567890123456789012345678901234567890",
            ],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("500") && !err.contains("SIGSEGV"),
            "v{v}: {err}"
        );
    }
}

#[test]
fn v2_fetch_sections_in_protocol_order() {
    // want-ref together with deepen: the answer's sections must come as
    // protocol v2 orders them (acknowledgments, shallow-info, wanted-refs,
    // packfile), or a client stops at the first unexpected one.
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (src, _url) = seeded(&node, t, "alice", "guts");
    let mut body = pkt(b"command=fetch\n");
    body.extend_from_slice(b"0001");
    for a in [
        "want-ref refs/heads/main",
        "deepen 1",
        "ofs-delta",
        "no-progress",
        "done",
    ] {
        body.extend_from_slice(&pkt(format!("{a}\n").as_bytes()));
    }
    body.extend_from_slice(b"0000");
    let (status, resp) = http(
        node.api,
        "POST",
        "/git/alice/guts.git/git-upload-pack",
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Git-Protocol", "version=2"),
        ],
        &body,
    )
    .unwrap();
    assert_eq!(status, 200);
    let pkts = decode_pkts(&resp, false);
    let at = |name: &[u8]| pkts.iter().position(|p| p == name);
    let (shallow, wanted, pack) = (
        at(b"shallow-info\n"),
        at(b"wanted-refs\n"),
        at(b"packfile\n"),
    );
    assert!(
        shallow.is_some() && wanted.is_some() && pack.is_some(),
        "sections: {shallow:?} {wanted:?} {pack:?}"
    );
    assert!(shallow < wanted && wanted < pack, "sections out of order: shallow-info {shallow:?}, wanted-refs {wanted:?}, packfile {pack:?}");
    let main = rev_parse(&src, "main");
    let line = |i: usize| {
        String::from_utf8_lossy(&pkts[i])
            .trim_end_matches('\n')
            .to_string()
    };
    assert_eq!(line(shallow.unwrap() + 1), format!("shallow {main}"));
    assert_eq!(line(wanted.unwrap() + 1), format!("{main} refs/heads/main"));
}
