//! Push-side features with the real git client against a started node:
//! create/delete/fast-forward/forced updates, report-status v1 and v2,
//! atomic pushes, quiet, push options, racing pushers, a large blob,
//! thousands of refs, chunked request bodies, push-time checks answered
//! with `ng`/`unpack` errors, and clones that run while pushes land.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};

const ZERO: &str = "0000000000000000000000000000000000000000";

/// Clone the server's repository and check it.
fn check_clone(t: &Path, url: &str, label: &str) -> std::path::PathBuf {
    let dst = t.join(format!("check-{label}"));
    let _ = std::fs::remove_dir_all(&dst);
    git_ok(
        t,
        &["clone", "--quiet", "--mirror", url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert_eq!(
        refs_of(&dst),
        server_refs(t, url),
        "{label}: clone refs vs ls-remote"
    );
    dst
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn create_delete_fast_forward_and_forced_updates() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "push");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    let c1 = rev_parse(&wt, "main");

    // New branches and tags, lightweight and annotated.
    git_ok(&wt, &["branch", "b1"]);
    git_ok(&wt, &["branch", "b2"]);
    git_ok(&wt, &["tag", "light"]);
    git_ok(&wt, &["tag", "-a", "-m", "annotated", "ann"]);
    git_ok(
        &wt,
        &["push", "--quiet", "origin", "b1", "b2", "light", "ann"],
    );
    let ann = rev_parse(&wt, "refs/tags/ann");
    assert_eq!(
        server_refs(t, &url),
        vec![
            ("refs/heads/b1".to_string(), c1.clone()),
            ("refs/heads/b2".to_string(), c1.clone()),
            ("refs/heads/main".to_string(), c1.clone()),
            ("refs/tags/ann".to_string(), ann.clone()),
            ("refs/tags/light".to_string(), c1.clone()),
        ]
    );
    let peeled: Vec<String> = ls_remote(t, "0", &url, &[])
        .into_iter()
        .filter(|l| l.contains("refs/tags/ann"))
        .collect();
    let mut want = vec![
        format!("{ann}\trefs/tags/ann"),
        format!("{c1}\trefs/tags/ann^{{}}"),
    ];
    want.sort();
    assert_eq!(peeled, want);

    // Deletion: `:branch` and `--delete`.
    git_ok(&wt, &["push", "--quiet", "origin", ":b1"]);
    git_ok(
        &wt,
        &["push", "--quiet", "origin", "--delete", "b2", "light"],
    );
    git_ok(&wt, &["push", "--quiet", "origin", ":refs/tags/ann"]);
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c1.clone())]
    );
    // Deleting what does not exist fails cleanly.
    let out = git_out(&wt, &["push", "origin", "--delete", "nope"]);
    assert!(!out.status.success());

    // Fast-forward.
    let c2 = commit_file(&wt, "a.txt", "a\n", "second");
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c2.clone())]
    );

    // Non-fast-forward: refused by the client unless forced.
    git_ok(&wt, &["reset", "-q", "--hard", "HEAD~1"]);
    let c3 = commit_file(&wt, "b.txt", "b\n", "diverged");
    let out = git_out(&wt, &["push", "origin", "main"]);
    assert!(!out.status.success(), "non-fast-forward push succeeded");
    let err = stderr_of(&out);
    assert!(
        err.contains("[rejected]")
            && (err.contains("non-fast-forward") || err.contains("fetch first")),
        "{err}"
    );
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c2.clone())]
    );
    let out = git_out(&wt, &["push", "--porcelain", "--force", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("+\trefs/heads/main:refs/heads/main\t")
            && stdout.contains("(forced update)"),
        "{stdout}"
    );
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c3.clone())]
    );

    // --force-with-lease with the right and the wrong expectation.
    let c4 = commit_file(&wt, "c.txt", "c\n", "fourth");
    git_ok(&wt, &["reset", "-q", "--hard", "HEAD~2"]);
    let c5 = commit_file(&wt, "d.txt", "d\n", "rewritten");
    let out = git_out(
        &wt,
        &[
            "push",
            &format!("--force-with-lease=main:{c2}"),
            "origin",
            "main",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("stale info"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c3.clone())]
    );
    git_ok(
        &wt,
        &[
            "push",
            "--quiet",
            &format!("--force-with-lease=main:{c3}"),
            "origin",
            "main",
        ],
    );
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c5.clone())]
    );
    let _ = c4;
    check_clone(t, &url, "final");
}

#[test]
fn report_status_v1_and_v2() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "report");
    let wt = new_worktree(t, "wt");
    let c1 = rev_parse(&wt, "HEAD");

    // The real client uses report-status-v2 when advertised.
    let trace = t.join("pkt");
    let out = git(&wt)
        .env("GIT_TRACE_PACKET", &trace)
        .args(["push", "--porcelain", &url, "main", "main:refs/heads/other"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("*\trefs/heads/main:refs/heads/main\t[new branch]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*\trefs/heads/main:refs/heads/other\t[new branch]"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("Done"), "{stdout}");
    let pkts = std::fs::read_to_string(&trace).unwrap();
    assert!(
        pkts.contains("report-status-v2"),
        "client did not ask for report-status-v2"
    );
    assert!(pkts.contains("unpack ok"), "no unpack ok in the reply");

    // By hand: v1 and v2 replies, with and without side-band.
    let c2 = commit_file(&wt, "x", "x\n", "two");
    let pack = pack_objects(&wt, &format!("{c2}\n^{c1}\n"), true);
    for (i, caps) in [
        "report-status",
        "report-status-v2",
        "report-status side-band-64k",
        "report-status-v2 side-band-64k",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("refs/heads/hand-{i}");
        let cmds = vec![
            format!("{ZERO} {c2} {name}"),
            format!("{c1} {c2} refs/heads/nonexistent-{i}"),
        ];
        let (status, lines) = raw_receive_pack(&node, "alice", "report", &cmds, caps, &pack);
        assert_eq!(status, 200);
        assert_eq!(lines[0], "unpack ok", "{caps}: {lines:?}");
        assert_eq!(lines[1], format!("ok {name}"), "{caps}: {lines:?}");
        assert!(
            lines[2].starts_with(&format!("ng refs/heads/nonexistent-{i} ")),
            "{caps}: {lines:?}"
        );
        assert_eq!(lines.len(), 4, "{caps}: {lines:?}");
        assert_eq!(lines[3], "", "{caps}: the report ends with a flush");
    }
    let refs = server_refs(t, &url);
    assert_eq!(
        refs.iter()
            .filter(|(r, o)| r.starts_with("refs/heads/hand-") && *o == c2)
            .count(),
        4
    );
    assert!(!refs.iter().any(|(r, _)| r.contains("nonexistent")));
    check_clone(t, &url, "final");
}

#[test]
fn atomic_push_all_or_nothing() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "atomic");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    git_ok(
        &wt,
        &["push", "--quiet", "origin", "main", "main:refs/heads/a"],
    );
    let before = server_refs(t, &url);
    let c1 = rev_parse(&wt, "main");
    let c2 = commit_file(&wt, "f", "f\n", "two");

    // Client-side failure (stale lease) with --atomic: nothing is sent.
    let out = git_out(
        &wt,
        &[
            "push",
            "--atomic",
            &format!("--force-with-lease=main:{c2}"),
            "origin",
            "main",
            "main:refs/heads/new1",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(server_refs(t, &url), before);

    // Server-side failure (D/F conflict on one ref) with --atomic.
    let out = git_out(
        &wt,
        &[
            "push",
            "--atomic",
            "origin",
            "main",
            "main:refs/heads/new2",
            "main:refs/heads/a/b",
        ],
    );
    assert!(
        !out.status.success(),
        "atomic push with a D/F conflict succeeded"
    );
    let err = stderr_of(&out);
    assert!(
        err.contains("refs/heads/a/b") || err.contains("a/b"),
        "{err}"
    );
    assert_eq!(
        server_refs(t, &url),
        before,
        "atomic push updated something: {err}"
    );

    // By hand: one command with a stale old value.
    let pack = pack_objects(&wt, &format!("{c2}\n^{c1}\n"), true);
    let cmds = vec![
        format!("{c1} {c2} refs/heads/main"),
        format!("{ZERO} {c2} refs/heads/new3"),
        format!("{c2} {c2} refs/heads/a"),
    ];
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "atomic",
        &cmds,
        "report-status atomic",
        &pack,
    );
    assert_eq!(lines[0], "unpack ok", "{lines:?}");
    for r in ["refs/heads/main", "refs/heads/new3", "refs/heads/a"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("ng {r} "))),
            "{r} not refused: {lines:?}"
        );
    }
    assert_eq!(server_refs(t, &url), before);

    // And the same without the bad command goes through as a whole.
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "atomic",
        &cmds[..2],
        "report-status atomic",
        &pack,
    );
    assert_eq!(
        lines[..3],
        [
            "unpack ok".to_string(),
            "ok refs/heads/main".into(),
            "ok refs/heads/new3".into()
        ],
        "{lines:?}"
    );
    git_ok(&wt, &["fetch", "--quiet", "origin"]);
    let out = git_out(
        &wt,
        &[
            "push",
            "--atomic",
            "origin",
            "main:refs/heads/new4",
            "main:refs/heads/new5",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let refs = server_refs(t, &url);
    for r in ["main", "new3", "new4", "new5"] {
        assert!(
            refs.contains(&(format!("refs/heads/{r}"), c2.clone())),
            "{r}: {refs:?}"
        );
    }
    check_clone(t, &url, "final");
}

#[test]
fn quiet_push_options_and_chunked_bodies() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "opts");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);

    let out = git_out(&wt, &["push", "--quiet", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out), "", "--quiet push printed something");
    assert!(out.stdout.is_empty());

    let c2 = commit_file(&wt, "f", "f\n", "two");
    let trace = t.join("pkt");
    let out = git(&wt)
        .env("GIT_TRACE_PACKET", &trace)
        .args([
            "push",
            "--push-option=foo",
            "--push-option=bar=baz",
            "origin",
            "main",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "push options: {}", stderr_of(&out));
    let pkts = std::fs::read_to_string(&trace).unwrap();
    assert!(
        pkts.contains("push-options") && pkts.contains("foo"),
        "push options not sent"
    );
    assert_eq!(
        server_refs(t, &url),
        vec![("refs/heads/main".to_string(), c2.clone())]
    );

    // A push whose pack exceeds http.postBuffer is sent with chunked
    // transfer encoding.
    let src = corpus_mirror(t, "guts");
    let url2 = node.create_repo("alice", "chunked");
    let curl = t.join("curl");
    git_env_ok(
        &src,
        &[
            ("GIT_TRACE_CURL", curl.to_str().unwrap()),
            ("GIT_TRACE_CURL_NO_DATA", "1"),
        ],
        &[
            "-c",
            "http.postBuffer=1024",
            "push",
            "--quiet",
            "--mirror",
            &url2,
        ],
    );
    let text = std::fs::read_to_string(&curl).unwrap().to_ascii_lowercase();
    assert!(
        text.contains("transfer-encoding: chunked"),
        "push was not chunked"
    );
    assert_eq!(server_refs(t, &url2), refs_of(&src));
    check_clone(t, &url2, "chunked");
}

#[test]
fn racing_pushers_exactly_one_wins() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "race");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    const PUSHERS: usize = 4;
    let clients: Vec<_> = (0..PUSHERS)
        .map(|i| {
            let c = t.join(format!("client{i}"));
            git_ok(t, &["clone", "--quiet", &url, c.to_str().unwrap()]);
            c
        })
        .collect();
    for round in 0..4 {
        let commits: Vec<String> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                git_ok(c, &["fetch", "--quiet", "origin"]);
                git_ok(c, &["reset", "-q", "--hard", "origin/main"]);
                commit_file(
                    c,
                    &format!("client{i}"),
                    &format!("round {round} client {i}\n"),
                    &format!("r{round} c{i}"),
                )
            })
            .collect();
        let barrier = Arc::new(Barrier::new(PUSHERS));
        let handles: Vec<_> = clients
            .iter()
            .cloned()
            .map(|c| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut cmd = git(&c);
                    cmd.args(["push", "--porcelain", "origin", "main"]);
                    barrier.wait();
                    cmd.output().unwrap()
                })
            })
            .collect();
        let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<usize> = (0..PUSHERS).filter(|i| outs[*i].status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        for (i, out) in outs.iter().enumerate() {
            if winners.contains(&i) {
                continue;
            }
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr_of(out));
            assert!(
                all.contains("rejected"),
                "round {round} client {i}: not a clean rejection:\n{all}"
            );
            assert!(!all.contains("fatal"), "round {round} client {i}: {all}");
        }
        assert_eq!(
            server_refs(t, &url),
            vec![("refs/heads/main".to_string(), commits[winners[0]].clone())],
            "round {round}"
        );
    }
    check_clone(t, &url, "final");
}

/// Deterministic incompressible bytes (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        v.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn large_blob_push_and_clone() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "big");
    let wt = new_worktree(t, "wt");
    std::fs::write(wt.join("big.bin"), noise(50 << 20, 0x9E37_79B9_7F4A_7C15)).unwrap();
    git_ok(&wt, &["add", "big.bin"]);
    git_ok(&wt, &["commit", "-q", "-m", "big"]);
    let blob = rev_parse(&wt, "HEAD:big.bin");
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    for v in ["0", "2"] {
        let dst = t.join(format!("clone-v{v}"));
        git_ok(
            t,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "clone",
                "--quiet",
                &url,
                dst.to_str().unwrap(),
            ],
        );
        fsck(&dst);
        assert_eq!(rev_parse(&dst, "HEAD:big.bin"), blob);
        assert_eq!(
            std::fs::metadata(dst.join("big.bin")).unwrap().len(),
            50 << 20
        );
        let _ = std::fs::remove_dir_all(&dst);
    }
}

#[test]
fn five_thousand_refs_in_one_push() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "many");
    let wt = new_worktree(t, "wt");
    let c1 = rev_parse(&wt, "HEAD");
    let c2 = commit_file(&wt, "f", "f\n", "two");
    let mut input = String::new();
    for i in 0..4000 {
        input.push_str(&format!(
            "create refs/heads/many/b{i:05} {}\n",
            if i % 2 == 0 { &c1 } else { &c2 }
        ));
    }
    for i in 0..1000 {
        input.push_str(&format!("create refs/tags/t{i:05} {c1}\n"));
    }
    let mut child = git(&wt)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let started = std::time::Instant::now();
    git_ok(
        &wt,
        &[
            "push",
            "--quiet",
            &url,
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ],
    );
    eprintln!("push of 5001 refs took {:?}", started.elapsed());
    let local = refs_of(&wt);
    assert_eq!(local.len(), 5001);
    assert_eq!(server_refs(t, &url), local);
    for v in ["0", "1", "2"] {
        let lines = ls_remote(t, v, &url, &[]);
        let got: Vec<(String, String)> = {
            let mut g: Vec<_> = lines
                .iter()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(_, r)| *r != "HEAD")
                .map(|(o, r)| (r.to_string(), o.to_string()))
                .collect();
            g.sort();
            g
        };
        assert_eq!(got, local, "ls-remote v{v}");
        eprintln!("ls-remote v{v} done at {:?}", started.elapsed());
    }
    let dst = check_clone(t, &url, "clone");
    assert_eq!(refs_of(&dst).len(), 5001);
}

#[test]
fn push_time_checks_answer_ng_or_unpack_error() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "checks");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    git_ok(
        &wt,
        &[
            "push",
            "--quiet",
            "origin",
            "main",
            "main:refs/heads/a",
            "main:refs/heads/x/y",
        ],
    );
    let c1 = rev_parse(&wt, "main");
    let before = server_refs(t, &url);
    let empty = empty_pack(&wt);

    // Invalid ref names: through git where it lets us, by hand always.
    for dst in [
        "refs/heads/foo.lock",
        "refs/heads/bad~name",
        "refs/heads/a..b",
        "refs/heads/sp ace",
        "refs/heads/@{x}",
    ] {
        let out = git_out(&wt, &["push", "origin", &format!("HEAD:{dst}")]);
        assert!(!out.status.success(), "git push to {dst} succeeded");
    }
    let bad_names = [
        "refs/heads/a..b",
        "refs/heads/foo.lock",
        "refs/heads/bad~name",
        "refs/heads/ctl\u{1}x",
        "refs/heads/sp ace",
        "refs/heads/x:y",
        "refs/heads/q?",
        "refs/heads/star*",
        "refs/heads/br[ack",
        "refs/heads/back\\slash",
        "refs/heads/caret^",
        "refs/heads/.hidden",
        "refs/heads/trailing.",
        "refs/heads/trailing/",
        "refs/heads//double",
        "refs/heads/at@{brace",
        "notrefs/heads/x",
        "HEAD",
        "refs",
        "@",
    ];
    for name in bad_names {
        let cmds = vec![format!("{ZERO} {c1} {name}")];
        let (status, lines) =
            raw_receive_pack(&node, "alice", "checks", &cmds, "report-status", &empty);
        let refused = lines.iter().any(|l| l.starts_with(&format!("ng {name} ")))
            || lines
                .iter()
                .any(|l| l.starts_with("unpack ") && l != "unpack ok")
            || (400..500).contains(&status);
        assert!(refused, "{name:?} accepted: {status} {lines:?}");
        assert!(status < 500, "{name:?}: {status}");
    }
    assert_eq!(server_refs(t, &url), before, "a bad ref name was created");

    // A tree with a `.git` entry (and its case variants): the push fails.
    let blob = rev_parse(&wt, "HEAD:README");
    for (i, entry) in [".git", ".GIT", ".Git"].iter().enumerate() {
        let mut raw = format!("100644 {entry}\0").into_bytes();
        raw.extend_from_slice(&hex_to_bytes(&blob));
        let tree_file = t.join(format!("tree{i}"));
        std::fs::write(&tree_file, &raw).unwrap();
        let tree = git_ok(
            &wt,
            &[
                "hash-object",
                "-t",
                "tree",
                "--literally",
                "-w",
                tree_file.to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        let commit = git_ok(
            &wt,
            &[
                "commit-tree",
                &tree,
                "-p",
                &c1,
                "-m",
                &format!("evil {entry}"),
            ],
        )
        .trim()
        .to_string();
        let branch = format!("refs/heads/evil{i}");
        let out = git_out(&wt, &["push", "origin", &format!("{commit}:{branch}")]);
        assert!(
            !out.status.success(),
            "push of a tree with {entry:?} succeeded"
        );
        let err = stderr_of(&out);
        assert!(
            err.contains("unpack") || err.contains("remote rejected"),
            "{entry}: {err}"
        );
        assert_eq!(server_refs(t, &url), before, "{entry}: branch created");
    }

    // Missing objects: a command naming an object not in the pack.
    let phantom = "1234567890123456789012345678901234567890";
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{ZERO} {phantom} refs/heads/phantom")],
        "report-status",
        &empty,
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ng refs/heads/phantom ")),
        "{lines:?}"
    );
    // ... and a pack with a commit whose tree is missing.
    commit_file(&wt, "new.txt", "brand new content\n", "new");
    let orphan = rev_parse(&wt, "HEAD");
    let partial = pack_objects(&wt, &format!("{orphan}\n"), false); // the commit only
    let (status, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{ZERO} {orphan} refs/heads/orphan")],
        "report-status",
        &partial,
    );
    assert!(status < 500);
    let refused = lines.iter().any(|l| l.starts_with("ng refs/heads/orphan "))
        || lines
            .iter()
            .any(|l| l.starts_with("unpack ") && l != "unpack ok");
    assert!(refused, "commit with a missing tree accepted: {lines:?}");
    // A branch must point at a commit.
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{ZERO} {blob} refs/heads/blob")],
        "report-status",
        &empty,
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ng refs/heads/blob ")),
        "{lines:?}"
    );
    assert_eq!(server_refs(t, &url), before);

    // D/F conflicts, both ways, through git.
    for dst in ["refs/heads/a/b", "refs/heads/x"] {
        let out = git_out(&wt, &["push", "origin", &format!("{c1}:{dst}")]);
        assert!(
            !out.status.success(),
            "D/F conflicting push to {dst} succeeded"
        );
        assert!(
            stderr_of(&out).contains("remote rejected"),
            "{}",
            stderr_of(&out)
        );
    }
    assert_eq!(server_refs(t, &url), before);

    // Stale old values, by hand.
    let c2 = rev_parse(&wt, "HEAD");
    let pack = pack_objects(&wt, &format!("{c2}\n^{c1}\n"), true);
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{c2} {c2} refs/heads/main")],
        "report-status",
        &pack,
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ng refs/heads/main ")),
        "{lines:?}"
    );
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{c1} {c2} refs/heads/absent")],
        "report-status",
        &empty,
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ng refs/heads/absent ")),
        "{lines:?}"
    );
    let (_, lines) = raw_receive_pack(
        &node,
        "alice",
        "checks",
        &[format!("{c2} {ZERO} refs/heads/a")],
        "report-status",
        &empty,
    );
    assert!(
        lines.iter().any(|l| l.starts_with("ng refs/heads/a ")),
        "stale delete: {lines:?}"
    );
    assert_eq!(server_refs(t, &url), before);

    // The repository is intact and still takes good pushes.
    git_ok(&wt, &["push", "--quiet", "origin", "HEAD:refs/heads/good"]);
    check_clone(t, &url, "final");
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn clones_while_pushes_land_see_consistent_states() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    let src = corpus_mirror(&t, "guts");
    let url = node.create_repo("alice", "busy");
    git_ok(&src, &["push", "--quiet", "--mirror", &url]);
    let pusher = t.join("pusher");
    git_ok(&t, &["clone", "--quiet", &url, pusher.to_str().unwrap()]);

    // Every state the server may be in: the initial one and the one after
    // each push (recorded before the push starts, so a clone racing the
    // acknowledgement still matches).
    let states: Arc<Mutex<Vec<BTreeMap<String, String>>>> =
        Arc::new(Mutex::new(vec![server_refs(&t, &url)
            .into_iter()
            .collect()]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let cloners: Vec<_> = (0..2)
        .map(|k| {
            let (t, url, states, done) = (t.clone(), url.clone(), states.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while n < 40 && (!done.load(std::sync::atomic::Ordering::SeqCst) || n < 2) {
                    let dst = t.join(format!("clone-{k}-{n}"));
                    git_ok(
                        &t,
                        &["clone", "--quiet", "--mirror", &url, dst.to_str().unwrap()],
                    );
                    fsck(&dst);
                    let got: BTreeMap<String, String> = refs_of(&dst).into_iter().collect();
                    let known = states.lock().unwrap().contains(&got);
                    assert!(
                        known,
                        "clone {k}-{n} saw a state that never existed: {got:?}"
                    );
                    std::fs::remove_dir_all(&dst).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();

    let mut current: BTreeMap<String, String> = states.lock().unwrap()[0].clone();
    for i in 0..15 {
        let c = commit_file(
            &pusher,
            "busy.txt",
            &format!("push {i}\n"),
            &format!("busy {i}"),
        );
        let branch = format!("refs/heads/busy-{i}");
        current.insert("refs/heads/main".into(), c.clone());
        current.insert(branch.clone(), c.clone());
        if i % 3 == 0 {
            git_ok(&pusher, &["tag", "-f", &format!("busy-tag-{i}")]);
            current.insert(format!("refs/tags/busy-tag-{i}"), c.clone());
        }
        states.lock().unwrap().push(current.clone());
        git_ok(
            &pusher,
            &[
                "push",
                "--quiet",
                "--atomic",
                "--tags",
                "origin",
                "main",
                &format!("HEAD:{branch}"),
            ],
        );
        assert_eq!(
            server_refs(&t, &url)
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            current,
            "after push {i}"
        );
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let total: usize = cloners
        .into_iter()
        .map(|h| h.join().expect("cloner panicked"))
        .sum();
    assert!(total >= 4, "only {total} clones ran");
}

#[test]
fn thin_packs_shallow_pushers_and_rewritten_history() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let url = node.create_repo("alice", "thin");
    let wt = new_worktree(t, "wt");
    git_ok(&wt, &["remote", "add", "origin", &url]);
    // A large text file, then small edits: the client sends thin packs
    // with deltas against objects only the server has.
    let mut text: String = (0..20_000)
        .map(|i| format!("line {i} of a fairly long text file\n"))
        .collect();
    std::fs::write(wt.join("big.txt"), &text).unwrap();
    git_ok(&wt, &["add", "big.txt"]);
    git_ok(&wt, &["commit", "-q", "-m", "big text"]);
    git_ok(&wt, &["push", "--quiet", "origin", "main"]);
    let follower = t.join("follower");
    git_ok(t, &["clone", "--quiet", &url, follower.to_str().unwrap()]);
    for round in 0..3 {
        text.insert_str(1000 * (round + 1), &format!("inserted in round {round}\n"));
        std::fs::write(wt.join("big.txt"), &text).unwrap();
        git_ok(&wt, &["commit", "-q", "-am", &format!("edit {round}")]);
        let trace = t.join(format!("pkt{round}"));
        git_env_ok(
            &wt,
            &[("GIT_TRACE_PACKET", trace.to_str().unwrap())],
            &["push", "--quiet", "origin", "main"],
        );
        assert_eq!(
            server_refs(t, &url),
            vec![("refs/heads/main".to_string(), rev_parse(&wt, "main"))]
        );
        git_ok(&follower, &["pull", "--quiet", "--ff-only"]);
        fsck(&follower);
        assert_eq!(
            std::fs::read_to_string(follower.join("big.txt")).unwrap(),
            text
        );
    }

    // A shallow clone pushes new work (its request carries `shallow` lines).
    let shallow = t.join("shallow");
    git_ok(
        t,
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    let s1 = commit_file(
        &shallow,
        "from-shallow.txt",
        "shallow work\n",
        "from a shallow clone",
    );
    git_ok(
        &shallow,
        &[
            "push",
            "--quiet",
            "origin",
            "main",
            "main:refs/heads/from-shallow",
        ],
    );
    let refs = server_refs(t, &url);
    assert!(
        refs.contains(&("refs/heads/main".to_string(), s1.clone())),
        "{refs:?}"
    );
    assert!(
        refs.contains(&("refs/heads/from-shallow".to_string(), s1.clone())),
        "{refs:?}"
    );

    // History rewritten on the server: followers fetch across the rewrite.
    git_ok(&wt, &["pull", "--quiet", "--ff-only", "origin", "main"]);
    git_ok(&wt, &["reset", "-q", "--hard", "HEAD~3"]);
    let r = commit_file(&wt, "rewritten.txt", "rewritten\n", "rewritten history");
    git_ok(&wt, &["push", "--quiet", "--force", "origin", "main"]);
    for v in ["0", "2"] {
        git_ok(
            &follower,
            &[
                "-c",
                &format!("protocol.version={v}"),
                "fetch",
                "--quiet",
                "--prune",
                "origin",
            ],
        );
        fsck(&follower);
        assert_eq!(rev_parse(&follower, "origin/main"), r);
    }
    // Deleted branches disappear with --prune.
    git_ok(
        &wt,
        &["push", "--quiet", "origin", "--delete", "from-shallow"],
    );
    git_ok(&follower, &["fetch", "--quiet", "--prune", "origin"]);
    assert!(git_out(
        &follower,
        &["rev-parse", "--verify", "--quiet", "origin/from-shallow"]
    )
    .stdout
    .is_empty());
    check_clone(t, &url, "final");
}
