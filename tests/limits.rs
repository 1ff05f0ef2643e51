//! Every request limit is a flag (and a TOML key) that takes effect: header
//! bytes, body bytes (fetch, push, API), pkt-lines per request, idle and
//! header timeouts, request time and connections per shard. Limits are set
//! small here and each is crossed by a raw client; the refusals are clean
//! and the node keeps serving.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const UPLOAD_REQ: &str = "application/x-git-upload-pack-request";

fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{:04x}", payload.len() + 4).into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Send `bytes` (write errors ignored) and return (status, body) of the
/// answer, or None if the server closed without one.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no answer and no close within 10 s")
            }
            Err(_) => break,
        }
    }
    let _ = writer.join();
    parse_response(&raw).ok()
}

fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

fn chunked(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    for piece in body.chunks(500) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A v0 fetch of `want` with `haves` made-up haves.
fn fetch_body(want: &str, haves: usize) -> Vec<u8> {
    let mut b = pkt(format!("want {want} ofs-delta\n").as_bytes());
    b.extend_from_slice(b"0000");
    for i in 0..haves {
        b.extend_from_slice(&pkt(format!("have {:040x}\n", i + 1).as_bytes()));
    }
    b.extend_from_slice(&pkt(b"done\n"));
    b
}

/// Wait (bounded) until the server closes `s`; true if it did.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn seeded(node: &Node, tmp: &Path, name: &str) -> (std::path::PathBuf, String, String) {
    let url = node.create_repo("alice", name);
    let wt = new_worktree(tmp, &format!("wt-{name}"));
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    let head = git_ok(&wt, &["rev-parse", "HEAD"]).trim().to_string();
    (wt, url, head)
}

#[test]
fn size_limits_come_from_flags() {
    let mut node = Node::start_with(&[
        "--shards",
        "1",
        "--header-max-bytes",
        "8192",
        "--upload-body-max-bytes",
        "8000",
        "--push-body-max-bytes",
        "6000",
        "--api-body-max-bytes",
        "300",
        "--request-pkts-max",
        "50",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (wt, url, head) = seeded(&node, tmp.path(), "repo");
    let a = node.api;
    let up = "/git/alice/repo.git/git-upload-pack";
    let ct = [("Content-Type", UPLOAD_REQ)];

    // Header bytes.
    let pad = |n: usize| "h".repeat(n);
    let small = pad(6000);
    let (status, _) =
        exchange(a, &req("GET", "/health/live", &[("X-Pad", &small)], b"")).expect("answer");
    assert_eq!(status, 200, "a 6000-byte header is within 8192");
    let big = pad(9000);
    if let Some((status, _)) = exchange(a, &req("GET", "/health/live", &[("X-Pad", &big)], b"")) {
        assert_eq!(status, 431, "a 9000-byte header is over 8192");
    }

    // pkt-lines per request: 30 haves pass, 60 are refused (both under 8000 bytes).
    let ok = fetch_body(&head, 30);
    assert!(ok.len() < 8000);
    let (status, body) = exchange(a, &req("POST", up, &ct, &ok)).expect("answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body.windows(4).any(|w| w == b"PACK"), "30 haves: no pack");
    let many = fetch_body(&head, 60);
    assert!(many.len() < 8000);
    let (status, body) = exchange(a, &req("POST", up, &ct, &many)).expect("answer");
    let text = String::from_utf8_lossy(&body);
    assert!(
        (400..500).contains(&status) || (status == 200 && text.contains("ERR ")),
        "60 pkt-lines over a limit of 50: {status} {text}"
    );
    assert!(
        !body.windows(4).any(|w| w == b"PACK"),
        "60 haves over the limit still got a pack"
    );

    // Fetch body bytes: declared and chunked.
    let huge = fetch_body(&head, 200);
    assert!(huge.len() > 8000);
    let (status, _) = exchange(a, &req("POST", up, &ct, &huge)).expect("answer");
    assert_eq!(status, 413, "declared fetch body over the limit");
    // Chunked: the body is parsed as it arrives, so it must reach the byte
    // limit before the pkt-line limit (one long line of unknown capabilities).
    let mut long = pkt(format!("want {head} ofs-delta x-pad={}\n", "x".repeat(9000)).as_bytes());
    long.extend_from_slice(b"0000");
    match exchange(a, &chunked("POST", up, &ct, &long)) {
        Some((status, _)) => assert_eq!(status, 413, "chunked fetch body over the limit"),
        None => panic!("chunked fetch body over the limit: closed without an answer"),
    }

    // Push body bytes: a small push passes, a 20 KB incompressible one is refused.
    std::fs::write(wt.join("small"), "small\n").unwrap();
    git_ok(&wt, &["add", "small"]);
    git_ok(&wt, &["commit", "-q", "-m", "small"]);
    git_ok(&wt, &["push", "--quiet", &url, "main"]);
    let pushed = git_ok(&wt, &["rev-parse", "HEAD"]).trim().to_string();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(wt.join("noise.bin"), &noise).unwrap();
    git_ok(&wt, &["add", "noise.bin"]);
    git_ok(&wt, &["commit", "-q", "-m", "noise"]);
    let out = git_out(&wt, &["push", &url, "main"]);
    assert!(
        !out.status.success(),
        "a push over the body limit succeeded"
    );
    let remote = git_ok(&wt, &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(
        remote.split('\t').next(),
        Some(pushed.as_str()),
        "refused push moved the branch"
    );

    // API body bytes (as the admin: an anonymous creation is refused first).
    let body = format!(
        "{{\"owner\": \"alice\", \"name\": \"pad\", \"x\": \"{}\"}}",
        "p".repeat(400)
    );
    let auth = node.admin_auth();
    let api_headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let (status, _) =
        exchange(a, &req("POST", "/api/repos", &api_headers, body.as_bytes())).expect("answer");
    assert_eq!(status, 413);
    let (status, _) = exchange(
        a,
        &chunked("POST", "/api/repos", &api_headers, body.as_bytes()),
    )
    .expect("answer");
    assert_eq!(status, 413);
    let (status, _) = http(a, "GET", "/api/repos/alice/pad", &[], b"").unwrap();
    assert_eq!(status, 404, "the refused repository exists");

    // Still serving.
    assert!(node.alive());
    let dst = tmp.path().join("clone");
    git_ok(
        tmp.path(),
        &["clone", "--quiet", &url, dst.to_str().unwrap()],
    );
    fsck(&dst);
    assert!(node.alive(), "{}", node.log_text());
}

#[test]
fn time_limits_come_from_flags() {
    let mut node = Node::start_with(&[
        "--shards",
        "1",
        "--idle-timeout-ms",
        "1500",
        "--header-timeout-ms",
        "1500",
        "--body-rate-window-ms",
        "1000",
        "--body-min-bytes-per-sec",
        "50",
        "--request-timeout-ms",
        "4000",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (_wt, url, head) = seeded(&node, tmp.path(), "repo");
    let a = node.api;
    let within = Duration::from_secs(15);

    // Idle: connected, nothing sent.
    let mut idle = TcpStream::connect(a).unwrap();
    // Keep-alive after a request.
    let mut kept = TcpStream::connect(a).unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // Head never finished.
    let mut slow_head = TcpStream::connect(a).unwrap();
    slow_head
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Never: ")
        .unwrap();
    // A body fast enough for the rate limit, too long for the request limit:
    // 10 bytes every 100 ms (100 B/s over a 50 B/s minimum) of 100,000.
    let addr = a;
    let dripper = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("POST /git/alice/repo.git/git-upload-pack HTTP/1.1\r\nHost: t\r\nContent-Type: {UPLOAD_REQ}\r\nContent-Length: 100000\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        while start.elapsed() < Duration::from_secs(30) {
            if s.write_all(b"0000000000").is_err() {
                return true;
            }
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    });
    assert!(
        closed_by_server(&mut idle, within),
        "idle connection not closed"
    );
    assert!(
        closed_by_server(&mut kept, within),
        "idle keep-alive connection not closed"
    );
    assert!(
        closed_by_server(&mut slow_head, within),
        "unfinished head not closed"
    );
    assert!(
        dripper.join().unwrap(),
        "request past the request timeout not closed"
    );

    // Meanwhile and afterwards, real clients are served.
    let out = git_ok(tmp.path(), &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(out.trim(), format!("{head}\trefs/heads/main"));
    assert!(node.alive(), "{}", node.log_text());
}

#[test]
fn connection_limit_comes_from_the_flag() {
    let mut node = Node::start_with(&["--shards", "1", "--connections-max", "40"]);
    let tmp = tempfile::tempdir().unwrap();
    let (_wt, url, head) = seeded(&node, tmp.path(), "repo");
    let a = node.api;
    // Fill the shard: each of these is accepted and held (it answers).
    let mut held = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("held connection {i}: {e}"));
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "held connection {i}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
        held.push(s);
    }
    // One more is admitted by closing the connection idle the longest (the
    // first): the shard never holds more than the limit.
    let mut extra = TcpStream::connect(a).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    extra
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = extra.read(&mut buf).expect("the new connection is served");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_by_server(&mut held[0], Duration::from_secs(10)),
        "the idlest connection was not closed to make room"
    );
    // Freed slots are reused: after the held connections go, requests succeed.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((200, _)) = http(a, "GET", "/health/live", &[], b"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never recovered its connection slots"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = git_ok(tmp.path(), &["ls-remote", &url, "refs/heads/main"]);
    assert_eq!(out.trim(), format!("{head}\trefs/heads/main"));
    assert!(node.alive(), "{}", node.log_text());
}

#[test]
fn limits_come_from_the_config_file_and_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("guts.toml");
    std::fs::write(
        &file,
        "[limits]\napi_body_max_bytes = 1234\nrequest_pkts_max = 77\nheader_max_bytes = 4321\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--header-max-bytes",
            "5555",
            "config",
        ])
        .env("GUTS_PUSH_BODY_MAX_BYTES", "999")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "api_body_max_bytes = 1234",
        "request_pkts_max = 77",
        "header_max_bytes = 5555",
        "push_body_max_bytes = 999",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // And the shipped example parses.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/guts-node.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(["--config", example.to_str().unwrap(), "config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
