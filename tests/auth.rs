//! Write auth with tokens, against a started node and the real git client:
//! the admin token on first start, 401 with the Basic challenge (git asks
//! for credentials, or a credential helper answers), 401 for wrong and
//! revoked tokens, 403 for a token without the right (with a message git
//! shows), `guts-node token create/list/revoke`, private repositories (404
//! to those who may not see them), rate limiting of failed attempts (429
//! with Retry-After and a metric), and hostile Authorization headers.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `guts-node token ...` against `node`.
fn token_cli(node: &Node, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guts-node"));
    c.arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--api-addr")
        .arg(node.api.to_string())
        .arg("token")
        .args(args)
        .env_remove("GUTS_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run guts-node token")
}

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let out = token_cli(node, args, &[]);
    assert!(
        out.status.success(),
        "token {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new token from the CLI.
fn new_token(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let token = cli_ok(node, &all).trim().to_string();
    assert!(token.starts_with("guts_"), "{token}");
    token
}

fn url_as(node: &Node, user: &str, token: &str, repo: &str) -> String {
    format!("http://{user}:{token}@{}/git/{repo}.git", node.api)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Raw request head and body; returns status, lower-cased head, body.
fn raw(node: &Node, head: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&node.api, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(head)));
    let head_text = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let (status, body) = parse_response(&out).unwrap();
    (status, head_text, body)
}

fn get_with(node: &Node, path: &str, authorization: &[u8]) -> (u16, String, Vec<u8>) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n").into_bytes();
    if !authorization.is_empty() {
        req.extend_from_slice(b"Authorization: ");
        req.extend_from_slice(authorization);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    raw(node, &req)
}

fn metric(node: &Node, name: &str) -> u64 {
    let (status, body) = http(node.metrics, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn push_commit(wt: &Path, url: &str, file: &str) -> Output {
    commit_file(wt, file, file, file);
    git_out(wt, &["push", url, "main"])
}

#[test]
fn admin_token_is_made_on_first_start_and_never_logged() {
    use std::os::unix::fs::PermissionsExt;
    let mut node = Node::start();
    let path = node.data_dir.join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token mode");
    let token = node.admin_token.clone();
    assert!(
        token.starts_with("guts_") && token.len() >= 5 + 32,
        "{token}"
    );
    let log = node.log_text();
    assert!(!log.contains(&token), "the log shows the admin token");
    assert_eq!(log.matches("created the admin token").count(), 1, "{log}");
    assert!(log.contains(&path.display().to_string()), "{log}");
    // A restart keeps it and does not announce a new one.
    node.restart();
    assert_eq!(node.admin_token, token);
    assert_eq!(
        node.log_text().matches("created the admin token").count(),
        1
    );
}

#[test]
fn pushes_need_a_token_reads_do_not() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "repo");
    let anon = node.url_anonymous("alice", "repo");
    let wt = new_worktree(tmp.path(), "wt");

    // No credentials: 401 with the challenge, git asks (and cannot, here).
    let (status, head, body) = get_with(
        &node,
        "/git/alice/repo.git/info/refs?service=git-receive-pack",
        b"",
    );
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.contains("www-authenticate: basic realm=\"guts\""),
        "{head}"
    );
    let out = git_out(&wt, &["push", &anon, "main"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not read Username"),
        "git did not ask for credentials: {}",
        stderr(&out)
    );
    // The same push through a stock credential helper works.
    let store = tmp.path().join("credentials");
    std::fs::write(
        &store,
        format!("http://admin:{}@{}\n", node.admin_token, node.api),
    )
    .unwrap();
    let helper = format!("credential.helper=store --file={}", store.display());
    git_ok(&wt, &["-c", &helper, "push", &anon, "main"]);
    // Reads of a public repository need nothing.
    let clone = tmp.path().join("clone");
    git_ok(tmp.path(), &["clone", "-q", &anon, clone.to_str().unwrap()]);
    fsck(&clone);
    assert_eq!(rev_parse(&clone, "HEAD"), rev_parse(&wt, "HEAD"));
    let (status, _) = http_anonymous(node.api, "GET", "/api/repos/alice/repo", &[], b"").unwrap();
    assert_eq!(status, 200);

    // Wrong token: 401, git reports the authentication failure.
    let wrong = url_as(&node, "admin", "guts_0000", "alice/repo");
    let out = push_commit(&wt, &wrong, "b");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );
    // Nothing moved.
    git_ok(&wt, &["push", &url, "main"]);

    // Creating repositories and the admin API need credentials too.
    let body = br#"{"owner": "alice", "name": "other"}"#;
    let (status, _) = http_anonymous(node.api, "POST", "/api/repos", &[], body).unwrap();
    assert_eq!(status, 401);
    for (method, path) in [
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("DELETE", "/api/tokens/1"),
    ] {
        let (status, _) = http_anonymous(node.api, method, path, &[], b"{}").unwrap();
        assert_eq!(status, 401, "{method} {path}");
    }
    assert!(!node.data_dir.join("repos/alice/other.git").exists());
}

#[test]
fn tokens_from_the_cli_grant_what_they_say_until_revoked() {
    let node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "repo");
    node.create_repo("alice", "elsewhere");
    let wt = new_worktree(tmp.path(), "wt");
    git_ok(&wt, &["push", &url, "main"]);

    let writer = new_token(&node, &["--user", "bob", "--repo", "alice/repo", "--write"]);
    let reader = new_token(&node, &["--user", "carol"]);
    // The admin token comes from GUTS_TOKEN as well as from the data dir.
    let out = token_cli(
        &node,
        &["create", "--user", "dave", "--admin"],
        &[("GUTS_TOKEN", &node.admin_token)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let admin2 = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let list = cli_ok(&node, &["list"]);
    for user in ["bob", "carol", "dave"] {
        assert!(list.contains(user), "{list}");
    }
    for secret in [&writer, &reader, &admin2] {
        assert!(!list.contains(secret.as_str()), "token list shows a secret");
    }
    let stored = std::fs::read_to_string(node.data_dir.join("access.json")).unwrap();
    assert!(!stored.contains(&writer), "tokens are stored in clear");

    // bob may push to alice/repo only.
    let out = push_commit(&wt, &url_as(&node, "bob", &writer, "alice/repo"), "by-bob");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = git_out(
        &wt,
        &[
            "push",
            &url_as(&node, "bob", &writer, "alice/elsewhere"),
            "main",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not push to alice/elsewhere"),
        "git does not show why: {}",
        stderr(&out)
    );
    // The user name must match the token's.
    let out = push_commit(&wt, &url_as(&node, "mallory", &writer, "alice/repo"), "x1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );
    // carol may read, not push (403, shown by git), nor create repositories.
    let out = git_out(
        &wt,
        &[
            "push",
            &url_as(&node, "carol", &reader, "alice/repo"),
            "main",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("403") || stderr(&out).contains("may not push"),
        "{}",
        stderr(&out)
    );
    let carol = basic_auth("carol", &reader);
    let (status, text) = http(
        node.api,
        "POST",
        "/api/repos",
        &[("Authorization", &carol)],
        br#"{"owner": "carol", "name": "mine"}"#,
    )
    .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&text));
    let (status, _) = http(
        node.api,
        "GET",
        "/api/tokens",
        &[("Authorization", &carol)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 403, "a reader may not list tokens");
    // dave (an admin token) may list tokens and create anywhere.
    let dave = basic_auth("dave", &admin2);
    let (status, _) = http(
        node.api,
        "GET",
        "/api/tokens",
        &[("Authorization", &dave)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = http(
        node.api,
        "POST",
        "/api/repos",
        &[("Authorization", &dave)],
        br#"{"owner": "dave", "name": "made"}"#,
    )
    .unwrap();
    assert_eq!(status, 201);

    // Revoked: 401, also after a restart.
    let listed: serde_json::Value = {
        let (_, body) = http(node.api, "GET", "/api/tokens", &[], b"").unwrap();
        serde_json::from_slice(&body).unwrap()
    };
    let bob_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "bob")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let out = cli_ok(&node, &["revoke", &bob_id.to_string()]);
    assert!(out.contains("revoked"), "{out}");
    let out = push_commit(
        &wt,
        &url_as(&node, "bob", &writer, "alice/repo"),
        "after-revoke",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );
    let mut node = node;
    node.restart();
    let out = git_out(
        &wt,
        &["push", &url_as(&node, "bob", &writer, "alice/repo"), "main"],
    );
    assert!(
        !out.status.success(),
        "a revoked token works again after a restart"
    );
    let out = git_out(
        &wt,
        &[
            "push",
            &url_as(&node, "dave", &admin2, "alice/repo"),
            "main",
        ],
    );
    assert!(
        out.status.success(),
        "a live token is lost on restart: {}",
        stderr(&out)
    );
    let list = cli_ok(&node, &["list"]);
    assert!(list.contains("revoked"), "{list}");
    // Unknown ids and bad requests are refused with a reason.
    let out = token_cli(&node, &["revoke", "999"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let out = token_cli(&node, &["create", "--user", "admin"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    let out = token_cli(&node, &["list"], &[("GUTS_TOKEN", "guts_wrong")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}

#[test]
fn private_repositories_are_not_found_by_those_who_may_not_see_them() {
    let mut node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let (status, text) = http(
        node.api,
        "POST",
        "/api/repos",
        &[],
        br#"{"owner": "alice", "name": "secret", "private": true}"#,
    )
    .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&text));
    let url = node.url("alice", "secret");
    let wt = new_worktree(tmp.path(), "wt");
    git_ok(&wt, &["push", &url, "main"]);
    let outsider = new_token(&node, &["--user", "eve", "--repo", "alice/public"]);
    let insider = new_token(&node, &["--user", "bob", "--repo", "alice/secret"]);

    // Anonymous: 401, so git can send credentials; the clone fails here.
    let anon = node.url_anonymous("alice", "secret");
    let out = git_out(tmp.path(), &["clone", &anon, "anon"]);
    assert!(
        !out.status.success(),
        "anonymous clone of a private repository"
    );
    // A token that may not see it: "not found", exactly as a missing one.
    let out = git_out(
        tmp.path(),
        &[
            "clone",
            &url_as(&node, "eve", &outsider, "alice/secret"),
            "eve",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let eve = basic_auth("eve", &outsider);
    let (hidden, hidden_body) = http(
        node.api,
        "GET",
        "/git/alice/secret.git/info/refs?service=git-upload-pack",
        &[("Authorization", &eve)],
        b"",
    )
    .unwrap();
    let (missing, missing_body) = http(
        node.api,
        "GET",
        "/git/alice/nothing.git/info/refs?service=git-upload-pack",
        &[("Authorization", &eve)],
        b"",
    )
    .unwrap();
    assert_eq!((hidden, missing), (404, 404));
    assert_eq!(
        String::from_utf8_lossy(&hidden_body).replace("secret", "X"),
        String::from_utf8_lossy(&missing_body).replace("nothing", "X")
    );
    for auth in [eve.as_str(), ""] {
        let h: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let (status, _) =
            http_anonymous(node.api, "GET", "/api/repos/alice/secret", &h, b"").unwrap();
        assert_eq!(status, 404);
        let (_, list) = http_anonymous(node.api, "GET", "/api/repos", &h, b"").unwrap();
        assert!(!String::from_utf8_lossy(&list).contains("secret"));
    }
    // A token whose scope covers it, and the admin, can clone.
    let bob_clone = tmp.path().join("bob");
    git_ok(
        tmp.path(),
        &[
            "clone",
            "-q",
            &url_as(&node, "bob", &insider, "alice/secret"),
            bob_clone.to_str().unwrap(),
        ],
    );
    fsck(&bob_clone);
    let (_, list) = http(node.api, "GET", "/api/repos", &[], b"").unwrap();
    assert!(String::from_utf8_lossy(&list).contains("secret"));

    // Made public (admin only), anyone reads it; it stays so after a restart.
    let (status, _) = http(
        node.api,
        "PATCH",
        "/api/repos/alice/secret",
        &[("Authorization", &eve)],
        br#"{"private": false}"#,
    )
    .unwrap();
    assert_eq!(status, 403);
    let (status, text) = http(
        node.api,
        "PATCH",
        "/api/repos/alice/secret",
        &[],
        br#"{"private": false}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
    node.restart();
    let clone = tmp.path().join("anon2");
    git_ok(tmp.path(), &["clone", "-q", &anon, clone.to_str().unwrap()]);
    // And private again, durably.
    let (status, _) = http(
        node.api,
        "PATCH",
        "/api/repos/alice/secret",
        &[],
        br#"{"private": true}"#,
    )
    .unwrap();
    assert_eq!(status, 200);
    node.restart();
    let (status, _, _) = get_with(
        &node,
        "/git/alice/secret.git/info/refs?service=git-upload-pack",
        b"",
    );
    assert_eq!(status, 401);
    // Bad visibility requests: 400/404, never 5xx.
    for (path, body, want) in [
        ("/api/repos/alice/secret", &b"{\"private\": 1}"[..], 400),
        ("/api/repos/alice/secret", b"[]", 400),
        ("/api/repos/alice/nothing", b"{\"private\": true}", 404),
        ("/api/repos/alice", b"{\"private\": true}", 404),
    ] {
        let (status, _) = http(node.api, "PATCH", path, &[], body).unwrap();
        assert_eq!(
            status,
            want,
            "PATCH {path} {}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn failed_attempts_are_rate_limited_per_address() {
    let node = Node::start_with(&[
        "--auth-failures-max",
        "3",
        "--auth-failure-window-ms",
        "600000",
    ]);
    node.create_repo("alice", "repo");
    let path = "/git/alice/repo.git/info/refs?service=git-receive-pack";
    let wrong = basic_auth("admin", "guts_wrong");
    for _ in 0..3 {
        let (status, _, _) = get_with(&node, path, wrong.as_bytes());
        assert_eq!(status, 401);
    }
    // Past the limit: 429 with Retry-After, even with the right token.
    let right = node.admin_auth();
    for auth in [&wrong, &right] {
        let (status, head, body) = get_with(&node, path, auth.as_bytes());
        assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
        let retry: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("retry-after:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {head}"));
        assert!(retry > 0 && retry <= 600, "{retry}");
    }
    // Reads that need no credentials still work for that address.
    let (status, _, _) = get_with(
        &node,
        "/git/alice/repo.git/info/refs?service=git-upload-pack",
        b"",
    );
    assert_eq!(status, 200);
    assert!(metric(&node, "guts_auth_failures_total") >= 3);
    assert!(metric(&node, "guts_auth_rate_limited_total") >= 2);
}

#[test]
fn hostile_authorization_headers_get_400_or_401() {
    // Every case is a failed attempt: keep them below the rate limit.
    let mut node = Node::start_with(&["--auth-failures-max", "1000"]);
    node.create_repo("alice", "repo");
    let path = "/git/alice/repo.git/info/refs?service=git-receive-pack";
    let b64 = |s: &[u8]| base64(s);
    let token = node.admin_token.clone();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("empty Basic", b"Basic".to_vec(), &[400]),
        ("Basic and spaces", b"Basic    ".to_vec(), &[400]),
        ("not base64", b"Basic !!!not-base64!!!".to_vec(), &[400]),
        (
            "no colon",
            format!("Basic {}", b64(b"admin")).into_bytes(),
            &[400],
        ),
        (
            "NUL in the token",
            format!("Basic {}", b64(format!("admin:{token}\0").as_bytes())).into_bytes(),
            &[400],
        ),
        (
            "NUL in the user",
            format!("Basic {}", b64(b"ad\0min:x")).into_bytes(),
            &[400],
        ),
        (
            "not UTF-8",
            format!("Basic {}", b64(b"admin:\xff\xfe")).into_bytes(),
            &[400],
        ),
        ("raw high bytes", b"Basic \xc3\xa9\xff".to_vec(), &[400]),
        (
            "unknown scheme",
            format!("Bearer {token}").into_bytes(),
            &[401],
        ),
        (
            "Digest",
            b"Digest username=\"admin\", realm=\"guts\"".to_vec(),
            &[401],
        ),
        ("garbage", b"%%%%".to_vec(), &[401]),
        (
            "huge",
            format!("Basic {}", "A".repeat(4000)).into_bytes(),
            &[400],
        ),
        ("huge scheme", "X".repeat(5000).into_bytes(), &[400]),
        (
            "empty password",
            format!("Basic {}", b64(b"admin:")).into_bytes(),
            &[401],
        ),
        (
            "empty user",
            format!("Basic {}", b64(format!(":{token}").as_bytes())).into_bytes(),
            &[401],
        ),
        (
            "user only colon",
            format!("Basic {}", b64(b":")).into_bytes(),
            &[401],
        ),
        (
            "very long token",
            format!(
                "Basic {}",
                b64(format!("admin:{}", "t".repeat(700)).as_bytes())
            )
            .into_bytes(),
            &[401],
        ),
    ];
    for (what, value, want) in &cases {
        let (status, head, body) = get_with(&node, path, value);
        assert!(
            want.contains(&status),
            "{what}: expected {want:?}, got {status}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!body.is_empty(), "{what}: {status} without a message");
        if status == 401 {
            assert!(
                head.contains("www-authenticate: basic realm=\"guts\""),
                "{what}: {head}"
            );
        }
    }
    // A NUL byte in the header line itself, and two Authorization headers.
    let (status, _, _) = raw(
        &node,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Basic a\0b\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 400, "NUL in the header line");
    let right = node.admin_auth();
    let (status, _, body) = raw(
        &node,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {right}\r\nAuthorization: {right}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        status,
        400,
        "two Authorization headers: {}",
        String::from_utf8_lossy(&body)
    );
    // Case-insensitive scheme with the right token works; the node lives on.
    let lower = right.replacen("Basic", "bAsIc", 1);
    let (status, _, _) = get_with(&node, path, lower.as_bytes());
    assert_eq!(status, 200);
    assert!(node.alive());
    node.kill9();
}
