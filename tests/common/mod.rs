//! Shared helpers for end-to-end tests: start the real `guts-node` binary
//! on free loopback ports with its own data directory, talk to it over
//! HTTP, and drive the real `git` client with an isolated configuration.
#![allow(dead_code, unused_imports)]

pub use guts_testkit::{corpus_bundle, wait_until};

/// The git client of the end-to-end tests: the test kit's isolated git,
/// configured as a current client (`main` as the initial branch, protocol
/// v2, no detached-HEAD advice).
pub fn git(dir: &Path) -> Command {
    let mut c = guts_testkit::git(dir);
    c.args([
        "-c",
        "init.defaultBranch=main",
        "-c",
        "protocol.version=2",
        "-c",
        "advice.detachedHead=false",
    ]);
    c
}

/// Run the client; panic with its output unless it succeeds; returns stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&guts_testkit::run_ok(git(dir).args(args), None)).into_owned()
}

/// Run the client and return its output whatever happens.
pub fn git_out(dir: &Path, args: &[&str]) -> std::process::Output {
    guts_testkit::run(git(dir).args(args), None)
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The admin token of every node this test process started, by API address.
static ADMIN_TOKENS: Mutex<Vec<(SocketAddr, String)>> = Mutex::new(Vec::new());

/// The admin token of the node listening on `addr`, if this process started it.
pub fn admin_token(addr: SocketAddr) -> Option<String> {
    let tokens = ADMIN_TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    tokens
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| t.clone())
}

/// Standard base64 (for Basic credentials in hand-made requests).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Basic ...` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// The `Authorization` header value of the admin of the node at `addr`
/// (empty if this process did not start it).
pub fn admin_auth(addr: SocketAddr) -> String {
    admin_token(addr)
        .map(|t| basic_auth("admin", &t))
        .unwrap_or_default()
}

/// Longest a node may take to answer /health/live after start.
pub const NODE_START_TIMEOUT_MS: u64 = 20_000;

/// A free loopback port for a node to listen on.
///
/// Taken below the kernel's ephemeral range when there is room, so that no
/// outgoing connection (a git client's, a node's) can take it between now
/// and the node binding it, nor while a node is down for a restart. Each
/// port is handed out once per test process (its tests run in parallel
/// threads), from an offset of the process id (test binaries run one after
/// another, but a stale one may linger); a port something else holds is
/// skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low < 12_000 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
    }
    // Room above the last port for a devnet's range (10 per node).
    let (low, high) = (ephemeral_low - 11_000, ephemeral_low - 1_000);
    let span = high - low;
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free loopback port left for tests");
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Copy directory `from` to `to` (which must not exist), keeping modes.
pub fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("cp");
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running node.
pub struct Node {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub p2p: SocketAddr,
    pub extra_args: Vec<String>,
    /// Extra environment variables for the process.
    pub extra_env: Vec<(String, String)>,
    pub log: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
    /// The node's admin token (read from `DATA/admin.token` once it started).
    pub admin_token: String,
}

impl Node {
    /// Start a node with a fresh data directory.
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    /// Start a node with extra flags.
    pub fn start_with(extra: &[&str]) -> Node {
        Node::start_with_env(extra, &[])
    }

    /// Start a node with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut node = Node {
            child: None,
            data_dir,
            api: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            p2p: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: tmp.path().join("node.log"),
            admin_token: String::new(),
            _tmp: Some(tmp),
        };
        node.spawn();
        node
    }

    /// Start (or restart) the process on the same data dir and ports.
    pub fn spawn(&mut self) {
        let ready_lines = self.log_text().matches("ready: git over HTTP").count();
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
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("GUTS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn guts-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_millis(NODE_START_TIMEOUT_MS);
        // A node with TLS does not answer plain HTTP: its log says when it serves.
        let tls = self.extra_args.iter().any(|a| a == "--tls-cert");
        loop {
            let ready = if tls {
                self.log_text().matches("ready: git over HTTP").count() > ready_lines
            } else {
                matches!(
                    http_anonymous(self.api, "GET", "/health/live", &[], b""),
                    Ok((200, _))
                )
            };
            if ready {
                self.admin_token = std::fs::read_to_string(self.data_dir.join("admin.token"))
                    .expect("DATA/admin.token after start")
                    .trim()
                    .to_string();
                let mut tokens = ADMIN_TOKENS.lock().unwrap_or_else(|e| e.into_inner());
                tokens.retain(|(a, _)| *a != self.api);
                tokens.push((self.api, self.admin_token.clone()));
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "guts-node exited during start: {status}\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "guts-node did not start\n{}",
                self.log_text()
            );
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

    /// Base URL of repository `owner/name`, with the admin token as its
    /// credentials (git sends them only when the node asks: pushes, and
    /// reads of private repositories).
    pub fn url(&self, owner: &str, name: &str) -> String {
        format!(
            "http://admin:{}@{}/git/{owner}/{name}.git",
            self.admin_token, self.api
        )
    }

    /// Base URL of repository `owner/name` without credentials.
    pub fn url_anonymous(&self, owner: &str, name: &str) -> String {
        format!("http://{}/git/{owner}/{name}.git", self.api)
    }

    /// The `Authorization` header value of this node's admin.
    pub fn admin_auth(&self) -> String {
        basic_auth("admin", &self.admin_token)
    }

    /// Create a repository through the API (as the admin); panics unless 201.
    pub fn create_repo(&self, owner: &str, name: &str) -> String {
        let body = format!("{{\"owner\":\"{owner}\",\"name\":\"{name}\"}}");
        let (status, text) = http(
            self.api,
            "POST",
            "/api/repos",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .expect("create repo");
        assert_eq!(
            status,
            201,
            "create repo: {}",
            String::from_utf8_lossy(&text)
        );
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

/// One HTTP/1.1 request with `Connection: close`, as the admin of the
/// node at `addr` when this process started it (unless `headers` carry an
/// `Authorization` of their own); returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let auth = admin_auth(addr);
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !auth.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        all.push(("Authorization", &auth));
    }
    http_anonymous(addr, method, path, &all, body)
}

/// One HTTP/1.1 request with `Connection: close` and only the given
/// headers (no credentials unless they carry some).
pub fn http_anonymous(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
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
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .map_err(|_| bad())?;
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

/// `git fsck --strict` must pass.
pub fn fsck(repo: &Path) {
    git_ok(repo, &["fsck", "--strict", "--no-progress"]);
}

/// Mirror-clone a corpus bundle (`guts`, `ripgrep`, `tokio`) into `dir/NAME.git`.
pub fn corpus_mirror(dir: &Path, name: &str) -> PathBuf {
    let bundle = corpus_bundle(name);
    let target = dir.join(format!("{name}.git"));
    git_ok(
        dir,
        &[
            "clone",
            "--quiet",
            "--mirror",
            bundle.to_str().expect("utf8"),
            target.to_str().expect("utf8"),
        ],
    );
    target
}

/// `ref -> oid` of all refs of a repository (heads and tags).
pub fn refs_of(repo: &Path) -> Vec<(String, String)> {
    let out = git_ok(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads",
            "refs/tags",
        ],
    );
    let mut v: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
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

/// Run git with extra environment variables; panic unless it succeeds.
pub fn git_env_ok(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut c = git(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git rev-parse REV` in `dir`.
pub fn rev_parse(dir: &Path, rev: &str) -> String {
    git_ok(dir, &["rev-parse", "--verify", "--quiet", rev])
        .trim()
        .to_string()
}

/// Write `file` with `content` in work tree `wt`, commit it; returns the new commit id.
pub fn commit_file(wt: &Path, file: &str, content: &str, msg: &str) -> String {
    let path = wt.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write");
    git_ok(wt, &["add", "--", file]);
    git_ok(wt, &["commit", "-q", "-m", msg]);
    rev_parse(wt, "HEAD")
}

/// `git ls-remote` lines (`oid\tref`) with protocol `version`, sorted.
pub fn ls_remote(dir: &Path, version: &str, url: &str, patterns: &[&str]) -> Vec<String> {
    let v = format!("protocol.version={version}");
    let mut args = vec!["-c", v.as_str(), "ls-remote"];
    args.extend(patterns.iter().filter(|p| p.starts_with('-')));
    args.push(url);
    args.extend(patterns.iter().filter(|p| !p.starts_with('-')));
    let mut lines: Vec<String> = git_ok(dir, &args).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The heads and tags a server advertises (`ref -> oid`, no peeled lines), via ls-remote v2.
pub fn server_refs(dir: &Path, url: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ls_remote(dir, "2", url, &[])
        .iter()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, r)| {
            (r.starts_with("refs/heads/") || r.starts_with("refs/tags/")) && !r.ends_with("^{}")
        })
        .map(|(o, r)| (r.to_string(), o.to_string()))
        .collect();
    v.sort();
    v
}

/// Sorted lines of a repository's `shallow` file (empty if none).
pub fn shallow_of(repo: &Path) -> Vec<String> {
    let gitdir = git_ok(repo, &["rev-parse", "--absolute-git-dir"])
        .trim()
        .to_string();
    let mut v: Vec<String> = std::fs::read_to_string(Path::new(&gitdir).join("shallow"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Sorted `git rev-list --all`.
pub fn rev_list_all(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = git_ok(repo, &["rev-list", "--all"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// One pkt-line holding `data`.
pub fn pkt(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:04x}", data.len() + 4).into_bytes();
    v.extend_from_slice(data);
    v
}

/// Split a pkt-line stream into its data packets (flushes become empty
/// entries); side-band channel 1 payloads are unwrapped and re-split when
/// `sideband` is true, channel 2/3 payloads are returned prefixed with
/// their channel byte.
pub fn decode_pkts(mut raw: &[u8], sideband: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut band1 = Vec::new();
    while raw.len() >= 4 {
        let Ok(len) = usize::from_str_radix(std::str::from_utf8(&raw[..4]).unwrap_or("zzzz"), 16)
        else {
            break;
        };
        if len < 4 {
            if !sideband {
                out.push(Vec::new());
            }
            raw = &raw[4..];
            continue;
        }
        if raw.len() < len {
            break;
        }
        let data = &raw[4..len];
        if sideband && !data.is_empty() {
            if data[0] == 1 {
                band1.extend_from_slice(&data[1..]);
            } else if data[0] == 2 {
                // progress messages are not part of the report
            } else {
                out.push(data.to_vec());
            }
        } else {
            out.push(data.to_vec());
        }
        raw = &raw[len..];
    }
    if sideband {
        out.extend(decode_pkts(&band1, false));
    }
    out
}

/// A pack of the objects `git pack-objects` reads from `input` in `repo`
/// (`--revs` lists such as `NEW\n^OLD\n`, or plain object ids without revs).
pub fn pack_objects(repo: &Path, input: &str, revs: bool) -> Vec<u8> {
    let mut args = vec!["pack-objects", "--stdout", "-q"];
    if revs {
        args.push("--revs");
    }
    git_with_input(repo, &args, input.as_bytes())
}

/// Run git in `dir` with `input` on its standard input; its standard
/// output once it succeeded.
pub fn git_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    guts_testkit::run_ok(git(dir).args(args), Some(input))
}

/// POST a hand-made receive-pack request: `commands` are `OLD NEW REF`
/// lines (the first gets `caps`), then a flush, then `pack` (if any).
/// Returns the HTTP status and the decoded response pkt-lines as strings.
pub fn raw_receive_pack(
    node: &Node,
    owner: &str,
    name: &str,
    commands: &[String],
    caps: &str,
    pack: &[u8],
) -> (u16, Vec<String>) {
    let mut body = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let line = if i == 0 {
            format!("{c}\0{caps}\n")
        } else {
            format!("{c}\n")
        };
        body.extend_from_slice(&pkt(line.as_bytes()));
    }
    body.extend_from_slice(b"0000");
    body.extend_from_slice(pack);
    let (status, resp) = http(
        node.api,
        "POST",
        &format!("/git/{owner}/{name}.git/git-receive-pack"),
        &[("Content-Type", "application/x-git-receive-pack-request")],
        &body,
    )
    .expect("receive-pack request");
    let sideband = caps.contains("side-band");
    let lines = decode_pkts(&resp, sideband)
        .into_iter()
        .map(|p| {
            String::from_utf8_lossy(&p)
                .trim_end_matches('\n')
                .to_string()
        })
        .collect();
    (status, lines)
}

/// An empty pack (version 2, no objects).
pub fn empty_pack(dir: &Path) -> Vec<u8> {
    let p = pack_objects(dir, "", false);
    assert_eq!(&p[..12], b"PACK\0\0\0\x02\0\0\0\0", "empty pack");
    p
}

/// POST a protocol v2 `fetch` with the given argument lines (each without
/// its newline) and return the pack bytes of the `packfile` section.
pub fn raw_v2_fetch(node: &Node, owner: &str, name: &str, args: &[String]) -> Vec<u8> {
    let mut body = pkt(b"command=fetch\n");
    body.extend_from_slice(b"0001");
    for a in args {
        body.extend_from_slice(&pkt(format!("{a}\n").as_bytes()));
    }
    body.extend_from_slice(b"0000");
    let (status, resp) = http(
        node.api,
        "POST",
        &format!("/git/{owner}/{name}.git/git-upload-pack"),
        &[
            ("Content-Type", "application/x-git-upload-pack-request"),
            ("Git-Protocol", "version=2"),
        ],
        &body,
    )
    .expect("v2 fetch");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let pkts = decode_pkts(&resp, false);
    let start = pkts
        .iter()
        .position(|p| p == b"packfile\n")
        .expect("packfile section");
    let mut pack = Vec::new();
    for p in &pkts[start + 1..] {
        if p.first() == Some(&1) {
            pack.extend_from_slice(&p[1..]);
        }
    }
    pack
}

/// Object ids in a pack (indexed by `git index-pack` in `scratch`, a repository).
pub fn pack_oids(scratch: &Path, pack: &[u8]) -> Vec<String> {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let file = scratch.join(format!("raw-{n}.pack"));
    std::fs::write(&file, pack).expect("write pack");
    git_ok(scratch, &["index-pack", file.to_str().unwrap()]);
    let out = git_ok(scratch, &["verify-pack", "-v", file.to_str().unwrap()]);
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 40 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}
