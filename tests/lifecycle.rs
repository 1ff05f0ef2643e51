//! The node's life as an operator sees it, with real processes: SIGTERM and
//! SIGINT drain (a push in flight finishes, or is cut cleanly when the
//! drain time is over), a second signal stops at once, systemd readiness
//! over `$NOTIFY_SOCKET`, a second node on the same address refuses to
//! start, a too-low memlock limit is handled, and damaged ref logs are
//! reported at start while the other repositories keep serving.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a stopping node may take before a test calls it hung.
const EXIT_WAIT_MS: u64 = 60_000;

fn signal(node: &Node, sig: i32) {
    let pid = node.child.as_ref().expect("running").id() as i32;
    // SAFETY: kill(2) on the pid of a child we started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {sig}");
}

/// Wait for the node process to end; panics if it does not.
fn wait_exit(node: &mut Node) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_millis(EXIT_WAIT_MS);
    let child = node.child.as_mut().expect("running");
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            node.child = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node did not exit\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether new connections to the API are refused (the listeners closed).
fn refuses_connections(node: &Node) -> bool {
    TcpStream::connect_timeout(&node.api, Duration::from_millis(500)).is_err()
}

/// A commit on a new branch with a large incompressible blob, and the
/// receive-pack request body that pushes it (`report-status`, no side-band).
fn big_push(node: &Node, dir: &Path, branch: &str) -> (String, Vec<u8>) {
    let wt = new_worktree(dir, "wt");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..2_000_000)
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
    let new = rev_parse(&wt, "HEAD");
    let pack = pack_objects(&wt, &format!("{new}\n"), true);
    let zero = "0".repeat(40);
    let mut body = pkt(format!("{zero} {new} refs/heads/{branch}\0report-status\n").as_bytes());
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&pack);
    let _ = node;
    (new, body)
}

/// Open a push request and send all but the last `held_back` bytes.
fn start_push(node: &Node, owner: &str, name: &str, body: &[u8], held_back: usize) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&node.api, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(EXIT_WAIT_MS)))
        .unwrap();
    let head = format!(
        "POST /git/{owner}/{name}.git/git-receive-pack HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: {}\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\n\r\n",
        node.admin_auth(),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() - held_back]).unwrap();
    s
}

/// Client connections the node holds open (its metrics).
fn connections_open(node: &Node) -> u64 {
    let (_, body) = http(node.metrics, "GET", "/metrics", &[], b"").unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("guts_http_connections_open{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Wait until the node has accepted the test's connection.
fn wait_accepted(node: &Node) {
    assert!(
        wait_until(Duration::from_secs(20), || connections_open(node) >= 1),
        "the push connection was never accepted"
    );
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn sigterm_lets_a_push_in_flight_finish_then_exits_zero() {
    let mut node = Node::start_with(&["--shutdown-drain-ms", "60000"]);
    let tmp = tempfile::tempdir().unwrap();
    node.create_repo("alice", "repo");
    let (new, body) = big_push(&node, tmp.path(), "inflight");
    let mut push = start_push(&node, "alice", "repo", &body, 100_000);
    wait_accepted(&node);
    signal(&node, libc::SIGTERM);
    // It stops accepting, while the push in flight is still open.
    assert!(
        wait_until(Duration::from_secs(20), || refuses_connections(&node)),
        "still accepting after SIGTERM\n{}",
        node.log_text()
    );
    assert!(node.alive(), "exited with a request in flight");
    push.write_all(&body[body.len() - 100_000..]).unwrap();
    let answer = read_all(&mut push);
    let (status, resp) = parse_response(&answer).expect("an answer to the push");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let lines: Vec<String> = decode_pkts(&resp, false)
        .iter()
        .map(|p| String::from_utf8_lossy(p).trim_end().to_string())
        .collect();
    assert!(
        lines.contains(&"ok refs/heads/inflight".to_string()),
        "{lines:?}"
    );
    let status = wait_exit(&mut node);
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert!(log.contains("stopping"), "{log}");
    assert!(
        log.lines().any(|l| l.trim_end().ends_with(" stopped")),
        "{log}"
    );
    // Acknowledged means durable.
    node.spawn();
    let clone = tmp.path().join("clone");
    git_ok(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            &node.url("alice", "repo"),
            clone.to_str().unwrap(),
        ],
    );
    fsck(&clone);
    assert_eq!(rev_parse(&clone, "refs/heads/inflight"), new);
}

#[test]
fn a_push_cut_by_the_end_of_the_drain_changes_nothing() {
    let mut node = Node::start_with(&["--shutdown-drain-ms", "300"]);
    let tmp = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "repo");
    let wt0 = new_worktree(tmp.path(), "first");
    git_ok(&wt0, &["push", "-q", &url, "main"]);
    let (_, body) = big_push(&node, tmp.path(), "cut");
    let mut push = start_push(&node, "alice", "repo", &body, 100_000);
    wait_accepted(&node);
    signal(&node, libc::SIGINT);
    let status = wait_exit(&mut node);
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    // The client hears nothing that says ok.
    let answer = read_all(&mut push);
    assert!(
        !String::from_utf8_lossy(&answer).contains("ok refs/heads/cut"),
        "a cut push was acknowledged"
    );
    assert!(
        node.log_text().contains("drain time over"),
        "{}",
        node.log_text()
    );
    node.spawn();
    let refs = server_refs(tmp.path(), &url);
    assert_eq!(
        refs.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        vec!["refs/heads/main"],
        "the cut push changed the refs"
    );
    let clone = tmp.path().join("clone");
    git_ok(
        tmp.path(),
        &["clone", "-q", "--mirror", &url, clone.to_str().unwrap()],
    );
    fsck(&clone);
    // And the node takes pushes again.
    commit_file(&wt0, "again", "again\n", "again");
    git_ok(&wt0, &["push", "-q", &url, "main"]);
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut node = Node::start_with(&["--shutdown-drain-ms", "600000"]);
    let tmp = tempfile::tempdir().unwrap();
    node.create_repo("alice", "repo");
    let (_, body) = big_push(&node, tmp.path(), "stuck");
    let _push = start_push(&node, "alice", "repo", &body, 100_000);
    wait_accepted(&node);
    signal(&node, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(20), || node
        .log_text()
        .contains("stopping")));
    signal(&node, libc::SIGTERM);
    let status = wait_exit(&mut node);
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        node.log_text()
    );
    assert!(node.log_text().contains("second signal"));
}

#[test]
fn readiness_and_stopping_are_sent_to_notify_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut node = Node::start_with_env(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    signal(&node, libc::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(wait_exit(&mut node).code(), Some(0));
}

#[test]
fn a_second_node_on_the_same_address_refuses_to_start() {
    let node = Node::start();
    node.create_repo("alice", "repo");
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .arg("--data-dir")
        .arg(tmp.path().join("other"))
        .arg("--api-addr")
        .arg(node.api.to_string())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("GUTS_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run a second node");
    assert!(
        !out.status.success(),
        "a second node started on {}",
        node.api
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    // The first node answers every request itself.
    for _ in 0..10 {
        let (status, _) = http(node.api, "GET", "/api/repos/alice/repo", &[], b"").unwrap();
        assert_eq!(status, 200);
    }
}

/// Whether the kernel holds a TCP connection in TIME_WAIT on local `port`.
fn time_wait_on(port: u16) -> bool {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && fields[3] == "06"
            && fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port)
    })
}

#[test]
fn a_restart_binds_through_connections_left_in_time_wait() {
    let mut node = Node::start();
    node.kill9();
    // Another server on the port answers a connection and closes it first
    // (as one answering `Connection: close` does): its side stays in
    // TIME_WAIT for a minute after it is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match std::net::TcpListener::bind(node.api) {
            Ok(l) => break l,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{} cannot be bound after the node is gone: {e}",
                    node.api
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut client = TcpStream::connect(node.api).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(server);
    let _ = client.read(&mut [0u8; 1]);
    drop(client);
    drop(listener);
    assert!(
        time_wait_on(node.api.port()),
        "no TIME_WAIT on {}",
        node.api
    );
    node.spawn();
    let (status, _) = http(node.api, "GET", "/health/live", &[], b"").unwrap();
    assert_eq!(status, 200);
}

/// Run the node under `prlimit --memlock=SOFT:HARD` until it is serving
/// (returns the child) or exits (returns its output).
fn under_memlock(soft: u64, hard: u64, dir: &Path) -> Result<(std::process::Child, u16), String> {
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("memlock.log");
    let mut child = Command::new("prlimit")
        .arg(format!("--memlock={soft}:{hard}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_guts-node"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--api-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("GUTS_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux) runs the node");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http_anonymous(addr, "GET", "/health/live", &[], b"") {
            return Ok((child, port));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "neither serving nor exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_memlock_limit_too_low_is_raised_or_refused_with_the_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    // Docker's default, soft and hard: refused, in one line that says what to do.
    match under_memlock(65_536, 65_536, &tmp.path().join("a")) {
        Ok((mut child, _)) => {
            let _ = child.kill();
            panic!("started with 64 KiB of locked memory");
        }
        Err(log) => {
            let line = log
                .lines()
                .find(|l| l.contains("guts-node: error"))
                .unwrap_or_else(|| panic!("no error line: {log}"));
            for needed in [
                "64 KiB",
                "512 KiB",
                "ulimit -l",
                "LimitMEMLOCK",
                "--ulimit memlock",
            ] {
                assert!(line.contains(needed), "{needed} missing from: {line}");
            }
            assert!(!log.contains("cannot start executor"), "{log}");
        }
    }
    // A low soft limit under a higher hard one is raised, and the node serves git.
    let (mut child, port) = under_memlock(65_536, 8 << 20, &tmp.path().join("b"))
        .unwrap_or_else(|log| panic!("did not start: {log}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        http_anonymous(addr, "GET", "/health", &[], b"").unwrap().0,
        200
    );
    let _ = child.kill();
    let _ = child.wait();
    // Enough to start but not to register the I/O memory: unregistered
    // buffers, and git works.
    let dir = tmp.path().join("c");
    let (mut child, port) = under_memlock(640 << 10, 640 << 10, &dir)
        .unwrap_or_else(|log| panic!("did not start: {log}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let token = std::fs::read_to_string(dir.join("data/admin.token")).unwrap();
    let auth = basic_auth("admin", token.trim());
    let (status, _) = http(
        addr,
        "POST",
        "/api/repos",
        &[("Authorization", &auth)],
        br#"{"owner": "alice", "name": "repo"}"#,
    )
    .unwrap();
    assert_eq!(status, 201);
    let wt = new_worktree(tmp.path(), "wt");
    let url = format!(
        "http://admin:{}@127.0.0.1:{port}/git/alice/repo.git",
        token.trim()
    );
    git_ok(&wt, &["push", "-q", &url, "main"]);
    let clone = tmp.path().join("clone");
    git_ok(tmp.path(), &["clone", "-q", &url, clone.to_str().unwrap()]);
    fsck(&clone);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_damaged_ref_log_is_reported_at_start_and_the_others_serve() {
    let mut node = Node::start();
    let tmp = tempfile::tempdir().unwrap();
    let good = node.create_repo("alice", "good");
    let bad = node.create_repo("alice", "bad");
    let wt = new_worktree(tmp.path(), "wt");
    git_ok(&wt, &["push", "-q", &good, "main"]);
    git_ok(&wt, &["push", "-q", &bad, "main"]);
    commit_file(&wt, "two", "two\n", "two");
    git_ok(&wt, &["push", "-q", &bad, "main"]);
    node.kill9();
    // Damage the first record of the log; valid records follow it, so this
    // is corruption, not a torn tail.
    let log = node.data_dir.join("repos/alice/bad.git/refs.log");
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.len() > 64, "log too short to damage");
    bytes[14] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    node.spawn();

    let (status, body) = http_anonymous(node.api, "GET", "/health", &[], b"").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["damaged_repositories"][0]["repo"], "alice/bad", "{v}");
    assert!(
        node.log_text().contains("repository damaged"),
        "{}",
        node.log_text()
    );
    // The damaged one says so, in a way git shows; the good one serves.
    let out = git_out(tmp.path(), &["clone", &bad, "bad-clone"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged"), "{err}");
    let clone = tmp.path().join("good-clone");
    git_ok(tmp.path(), &["clone", "-q", &good, clone.to_str().unwrap()]);
    fsck(&clone);
}
