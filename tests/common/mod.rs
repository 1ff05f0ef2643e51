//! Shared helpers for end-to-end tests: start the real `guts-node` binary
//! on free loopback ports with its own data directory, talk to it over
//! HTTP, and drive the real `git` client with an isolated configuration.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a node may take to answer /health/live after start.
pub const NODE_START_TIMEOUT_MS: u64 = 20_000;

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running node.
pub struct Node {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub p2p: SocketAddr,
    pub extra_args: Vec<String>,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Start a node with a fresh data directory.
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    /// Start a node with extra flags.
    pub fn start_with(extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut node = Node {
            child: None,
            data_dir,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            p2p: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            log: tmp.path().join("node.log"),
            _tmp: Some(tmp),
        };
        node.spawn();
        node
    }

    /// Start (or restart) the process on the same data dir and ports.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_guts-node"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-addr")
            .arg(self.api.to_string())
            .arg("--metrics-addr")
            .arg(self.metrics.to_string())
            .arg("--p2p-addr")
            .arg(self.p2p.to_string())
            .args(&self.extra_args)
            .env("GUTS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn guts-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(NODE_START_TIMEOUT_MS);
        loop {
            if let Ok((200, _)) = http(self.api, "GET", "/health/live", &[], b"") {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("guts-node exited during start: {status}\n{}", self.log_text());
                }
            }
            assert!(Instant::now() < deadline, "guts-node did not start\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the process and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 and start again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Base URL of repository `owner/name`.
    pub fn url(&self, owner: &str, name: &str) -> String {
        format!("http://{}/git/{owner}/{name}.git", self.api)
    }

    /// Create a repository through the API; panics unless 201.
    pub fn create_repo(&self, owner: &str, name: &str) -> String {
        let body = format!("{{\"owner\":\"{owner}\",\"name\":\"{name}\"}}");
        let (status, text) = http(self.api, "POST", "/api/repos", &[("Content-Type", "application/json")], body.as_bytes())
            .expect("create repo");
        assert_eq!(status, 201, "create repo: {}", String::from_utf8_lossy(&text));
        self.url(owner, name)
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Parse a raw HTTP/1.1 response (handles chunked bodies).
pub fn parse_response(raw: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad http response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut body = raw[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else { break };
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).map_err(|_| bad())?;
            rest = &rest[line_end + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        body = out;
    }
    Ok((status, body))
}

/// A `git` command with an isolated configuration (no system or user config).
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .args(["-c", "init.defaultBranch=main", "-c", "protocol.version=2", "-c", "advice.detachedHead=false"]);
    c
}

/// Run git, panic with its output unless it succeeds; returns stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run git and return its output whatever happens.
pub fn git_out(dir: &Path, args: &[&str]) -> Output {
    git(dir).args(args).output().expect("run git")
}

/// `git fsck --strict` must pass.
pub fn fsck(repo: &Path) {
    git_ok(repo, &["fsck", "--strict", "--no-progress"]);
}

/// Mirror-clone a corpus bundle (`guts`, `ripgrep`, `tokio`) into `dir/NAME.git`.
pub fn corpus_mirror(dir: &Path, name: &str) -> PathBuf {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(format!("{name}.bundle"));
    let target = dir.join(format!("{name}.git"));
    git_ok(dir, &["clone", "--quiet", "--mirror", bundle.to_str().expect("utf8"), target.to_str().expect("utf8")]);
    target
}

/// `ref -> oid` of all refs of a repository (heads and tags).
pub fn refs_of(repo: &Path) -> Vec<(String, String)> {
    let out = git_ok(repo, &["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"]);
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    v.sort();
    v
}

/// Make a fresh work tree with one commit on `main`.
pub fn new_worktree(dir: &Path, name: &str) -> PathBuf {
    let wt = dir.join(name);
    std::fs::create_dir_all(&wt).expect("mkdir");
    git_ok(&wt, &["init", "-q", "-b", "main"]);
    std::fs::write(wt.join("README"), format!("hello from {name}\n")).expect("write");
    git_ok(&wt, &["add", "README"]);
    git_ok(&wt, &["commit", "-q", "-m", "initial"]);
    wt
}
