//! The operator's log: one line per request (method, path, status, bytes,
//! duration, client address) and one per push with its ref results, for
//! pushes that land, pushes refused per ref, and pushes refused whole (too
//! many push options, which git also shows with its reason).

mod common;
use common::*;

/// The node's log without terminal colour codes.
fn plain_log(node: &Node) -> String {
    let text = node.log_text();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[test]
fn every_request_and_every_push_leaves_one_line() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "repo");
    let wt = new_worktree(tmp.path(), "wt");
    git_ok(&wt, &["push", &url, "main"]);
    let first = rev_parse(&wt, "HEAD");
    // A push refused per ref: a stale non-fast-forward delete of a ref that is not there.
    let out = git_out(&wt, &["push", &url, ":refs/heads/missing"]);
    assert!(!out.status.success());
    let clone = tmp.path().join("clone");
    git_ok(tmp.path(), &["clone", "-q", &url, clone.to_str().unwrap()]);
    let (status, _) = http(node.api, "GET", "/nowhere", &[], b"").unwrap();
    assert_eq!(status, 404);

    let log = plain_log(&node);
    let requests = lines_with(&log, &["guts::request"]);
    for (method, path, status) in [
        ("POST", "/api/repos", "201"),
        (
            "GET",
            "/git/alice/repo.git/info/refs?service=git-receive-pack",
            "401",
        ),
        (
            "GET",
            "/git/alice/repo.git/info/refs?service=git-receive-pack",
            "200",
        ),
        ("POST", "/git/alice/repo.git/git-receive-pack", "200"),
        (
            "GET",
            "/git/alice/repo.git/info/refs?service=git-upload-pack",
            "200",
        ),
        ("POST", "/git/alice/repo.git/git-upload-pack", "200"),
        ("GET", "/nowhere", "404"),
    ] {
        let found = requests.iter().any(|l| {
            l.contains(&format!("method={method} "))
                && l.contains(&format!("path={path} "))
                && l.contains(&format!("status={status} "))
                && l.contains("bytes=")
                && l.contains("duration_ms=")
                && l.contains("client=127.0.0.1:")
        });
        assert!(
            found,
            "no request line for {method} {path} {status}:\n{}",
            requests.join("\n")
        );
    }
    // The clone's pack was streamed: its line counts the bytes sent.
    let pack_line = requests
        .iter()
        .find(|l| l.contains("path=/git/alice/repo.git/git-upload-pack "))
        .unwrap();
    let bytes: u64 = pack_line
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|b| b.parse().ok())
        .unwrap();
    assert!(bytes > 100, "{pack_line}");
    assert!(pack_line.contains("complete=true"), "{pack_line}");
    // Authenticated requests say who.
    assert!(requests.iter().any(|l| l.contains("user=admin")));
    assert!(!log.contains(&node.admin_token), "a token in the log");

    let pushes = lines_with(&log, &["guts::push", "repo=alice/repo"]);
    assert_eq!(pushes.len(), 2, "{}", pushes.join("\n"));
    assert!(
        pushes[0].contains("refs/heads/main ok") && pushes[0].contains("refs_ok=1"),
        "{}",
        pushes[0]
    );
    assert!(
        pushes[1].contains("refs/heads/missing ng (") && pushes[1].contains("refs_rejected=1"),
        "{}",
        pushes[1]
    );
    assert!(pushes.iter().all(|l| l.contains("user=admin")));
    assert_eq!(rev_parse(&clone, "HEAD"), first);
}

#[test]
fn too_many_push_options_are_refused_with_a_reason_git_prints() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "repo");
    let wt = new_worktree(tmp.path(), "wt");
    git_ok(&wt, &["push", &url, "main"]);
    let before = rev_parse(&wt, "HEAD");
    commit_file(&wt, "next", "next\n", "next");
    for version in ["0", "2"] {
        let mut args = vec![
            "-c".to_string(),
            format!("protocol.version={version}"),
            "push".to_string(),
        ];
        for i in 0..1001 {
            args.push(format!("--push-option=o{i}"));
        }
        args.push(url.clone());
        args.push("main".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = git_out(&wt, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "v{version}: accepted");
        assert!(
            err.contains("more than 1000 push options"),
            "v{version}: git does not show why: {err}"
        );
        assert!(err.contains("[remote rejected]"), "v{version}: {err}");
    }
    let remote = server_refs(tmp.path(), &url);
    assert_eq!(remote, vec![("refs/heads/main".to_string(), before)]);
    // Within the limit, push options pass.
    git_ok(&wt, &["push", "--push-option=ci.skip", &url, "main"]);
    let log = plain_log(&node);
    assert!(
        lines_with(
            &log,
            &["guts::push", "unpack=push has more than 1000 push options"]
        )
        .len()
            >= 2,
        "{log}"
    );
}

#[test]
fn a_client_cut_off_by_a_limit_leaves_a_trace() {
    use std::io::{Read, Write};
    let node = Node::start_with(&[
        "--body-rate-window-ms",
        "1000",
        "--body-min-bytes-per-sec",
        "1000",
    ]);
    node.create_repo("alice", "repo");
    let mut s = std::net::TcpStream::connect(node.api).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(
        b"POST /git/alice/repo.git/git-upload-pack HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n\r\n0032want ",
    )
    .unwrap();
    // The node closes the connection for the slow body; nothing is answered.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        plain_log(&node).contains("request body below the minimum rate")
    }));
    let log = plain_log(&node);
    let cut = lines_with(
        &log,
        &["closing connection", "request body below the minimum rate"],
    );
    assert_eq!(cut.len(), 1, "{log}");
    assert!(cut[0].contains("127.0.0.1:"), "{}", cut[0]);
    let unanswered = lines_with(
        &log,
        &[
            "guts::request",
            "path=/git/alice/repo.git/git-upload-pack ",
            "status=0 ",
        ],
    );
    assert_eq!(unanswered.len(), 1, "{log}");
    assert!(unanswered[0].contains("complete=false"));
}
