//! `guts-node diagnostics --output PATH`: one tar.gz for a support
//! request. It holds the resolved configuration, status and health (from
//! the running node's API, or a note that it did not answer), a metrics
//! snapshot, recent logs where they can be found, a listing of the data
//! directory (names and sizes, never contents) and host facts. Secrets are
//! redacted from everything written: API tokens, private keys, and any
//! configuration value whose name says it is a secret. `MANIFEST.txt` in
//! the archive says what was collected and what was not.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Longest a connection to the node may take to open.
const HTTP_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Longest a read from the node may block.
const HTTP_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest answer kept from one endpoint.
const HTTP_BODY_MAX_BYTES: u64 = 16 << 20;
/// Bytes kept from the end of a log file.
const LOG_TAIL_MAX_BYTES: u64 = 4 << 20;
/// Lines asked of the journal.
const JOURNAL_LINES_MAX: usize = 5_000;
/// Entries listed per directory of the data directory.
const LISTING_ENTRIES_MAX: usize = 2_000;

/// What `diagnostics` needs from the configuration.
pub struct Target<'a> {
    pub data_dir: &'a Path,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The resolved configuration, as `config` prints it.
    pub config_text: String,
    /// The configuration file, if one was given.
    pub config_file: Option<&'a Path>,
    /// A log file to take the tail of.
    pub log_file: Option<&'a Path>,
}

/// An archive being assembled: file name and redacted contents.
struct Collected {
    files: Vec<(String, Vec<u8>)>,
    manifest: Vec<String>,
}

impl Collected {
    fn add(&mut self, name: &str, what: &str, data: Vec<u8>) {
        let data = redact(&String::from_utf8_lossy(&data)).into_bytes();
        self.manifest
            .push(format!("{name}: {what} ({} bytes)", data.len()));
        self.files.push((name.to_string(), data));
    }

    fn missing(&mut self, name: &str, why: &str) {
        self.manifest.push(format!("{name}: NOT COLLECTED: {why}"));
    }
}

/// `guts-node diagnostics`.
pub fn run(target: &Target<'_>, output: &Path) -> anyhow::Result<()> {
    if output.exists() {
        bail!(
            "{} exists; diagnostics never overwrite a file (choose a new name)",
            output.display()
        );
    }
    if output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/') {
        bail!("--output must name a file, not a directory");
    }
    let mut c = Collected {
        files: Vec::new(),
        manifest: Vec::new(),
    };

    c.add(
        "config/resolved.txt",
        "the configuration the node would run with (flags, GUTS_* environment, file, defaults)",
        target.config_text.clone().into_bytes(),
    );
    match target.config_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => c.add(
                "config/file.toml",
                &format!("{} (secret values redacted)", path.display()),
                redact_config(&String::from_utf8_lossy(&bytes)).into_bytes(),
            ),
            Err(e) => c.missing("config/file.toml", &format!("{}: {e}", path.display())),
        },
        None => c.missing("config/file.toml", "no --config file given"),
    }
    let env: String = std::env::vars()
        .filter(|(k, _)| k.starts_with("GUTS_"))
        .map(|(k, v)| {
            if is_secret_name(&k) {
                format!("{k}=<redacted>\n")
            } else {
                format!("{k}={v}\n")
            }
        })
        .collect();
    c.add(
        "config/environment.txt",
        "GUTS_* environment variables (secrets redacted)",
        env.into_bytes(),
    );

    // Status from the running node.
    let mut reachable = false;
    for (name, path) in [
        ("status/health.json", "/health"),
        ("status/health-ready.json", "/health/ready"),
        ("status/health-live.json", "/health/live"),
        ("status/consensus-status.json", "/api/consensus/status"),
        (
            "status/consensus-validators.json",
            "/api/consensus/validators",
        ),
    ] {
        match http_get(target.api_addr, path) {
            Ok((status, body)) => {
                reachable = true;
                c.add(
                    name,
                    &format!("GET http://{}{path}: HTTP {status}", target.api_addr),
                    body,
                );
            }
            Err(e) => c.missing(
                name,
                &format!(
                    "GET http://{}{path}: {e} (node not running, not at this address, or serving TLS only)",
                    target.api_addr
                ),
            ),
        }
    }
    match http_get(target.metrics_addr, "/metrics") {
        Ok((status, body)) => c.add(
            "metrics.txt",
            &format!("GET http://{}/metrics: HTTP {status}", target.metrics_addr),
            body,
        ),
        Err(e) => c.missing(
            "metrics.txt",
            &format!("GET http://{}/metrics: {e}", target.metrics_addr),
        ),
    }

    // Logs.
    match target.log_file {
        Some(path) => match tail(path, LOG_TAIL_MAX_BYTES) {
            Ok(bytes) => c.add(
                "logs/node.log",
                &format!(
                    "last {} bytes at most of {}",
                    LOG_TAIL_MAX_BYTES,
                    path.display()
                ),
                bytes,
            ),
            Err(e) => c.missing("logs/node.log", &format!("{}: {e}", path.display())),
        },
        None => c.missing(
            "logs/node.log",
            "no --log-file given (the node logs to stderr; under systemd see the journal below)",
        ),
    }
    let lines = JOURNAL_LINES_MAX.to_string();
    match command(
        "journalctl",
        &[
            "-u",
            "guts-node",
            "-n",
            &lines,
            "--no-pager",
            "-o",
            "short-iso",
        ],
    ) {
        Ok(out) if !out.trim().is_empty() && !out.contains("-- No entries --") => c.add(
            "logs/journal.txt",
            "journalctl -u guts-node (last lines)",
            out.into_bytes(),
        ),
        Ok(_) => c.missing(
            "logs/journal.txt",
            "the journal has no entries for unit guts-node",
        ),
        Err(e) => c.missing("logs/journal.txt", &format!("journalctl: {e}")),
    }

    // Data directory and host.
    c.add(
        "data-dir.txt",
        "listing of the data directory (names and sizes only)",
        listing(target.data_dir).into_bytes(),
    );
    let mut host = String::new();
    host.push_str(&format!(
        "guts-node {}\nprocess id {}\ncollected at unix time {}\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    host.push_str(&format!(
        "cpus available: {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    ));
    host.push_str(&limits_text());
    c.add(
        "host/summary.txt",
        "version, cpu count, resource limits",
        host.into_bytes(),
    );
    for (name, path) in [
        ("host/kernel.txt", "/proc/version"),
        ("host/meminfo.txt", "/proc/meminfo"),
        ("host/loadavg.txt", "/proc/loadavg"),
        ("host/cpuinfo.txt", "/proc/cpuinfo"),
        (
            "host/io_uring_disabled.txt",
            "/proc/sys/kernel/io_uring_disabled",
        ),
        ("host/somaxconn.txt", "/proc/sys/net/core/somaxconn"),
        ("host/file-max.txt", "/proc/sys/fs/file-max"),
        (
            "host/thp.txt",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ),
    ] {
        match std::fs::read(path) {
            Ok(bytes) => c.add(name, path, bytes),
            Err(e) => c.missing(name, &format!("{path}: {e}")),
        }
    }
    let dir = target.data_dir.to_string_lossy().into_owned();
    for (name, program, args) in [
        ("host/df.txt", "df", vec!["-P", "-h", dir.as_str()]),
        ("host/df-inodes.txt", "df", vec!["-P", "-i", dir.as_str()]),
        ("host/uname.txt", "uname", vec!["-a"]),
        ("host/mounts.txt", "cat", vec!["/proc/mounts"]),
    ] {
        match command(program, &args) {
            Ok(out) => c.add(
                name,
                &format!("{program} {}", args.join(" ")),
                out.into_bytes(),
            ),
            Err(e) => c.missing(name, &format!("{program}: {e}")),
        }
    }

    let mut manifest = format!(
        "guts-node diagnostics\nnode API {}: {}\n\n",
        target.api_addr,
        if reachable {
            "answered"
        } else {
            "DID NOT ANSWER (status and health below were not collected)"
        }
    );
    for line in &c.manifest {
        manifest.push_str(line);
        manifest.push('\n');
    }
    write_archive(output, &manifest, &c.files)?;
    println!(
        "diagnostics: {} ({} files; node {}; see MANIFEST.txt inside)",
        output.display(),
        c.files.len() + 1,
        if reachable {
            "answered"
        } else {
            "did not answer"
        }
    );
    Ok(())
}

/// Write the tar.gz through a temporary file, `fsync`, then link it into place.
fn write_archive(output: &Path, manifest: &str, files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let mut tmp_name = output.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = output.with_file_name(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> anyhow::Result<()> {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let stem = "diagnostics";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut add = |name: &str, data: &[u8]| -> anyhow::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_mtime(now);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            tar.append_data(&mut header, format!("{stem}/{name}"), data)?;
            Ok(())
        };
        add("MANIFEST.txt", manifest.as_bytes())?;
        for (name, data) in files {
            add(name, data)?;
        }
        let gz = tar.into_inner()?;
        let file = gz.finish()?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = std::fs::hard_link(&tmp, output);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| format!("creating {}", output.display()))
}

/// One `GET` over HTTP/1.1 with `Connection: close`; returns status and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(HTTP_CONNECT_TIMEOUT_MS))?;
    s.set_read_timeout(Some(Duration::from_millis(HTTP_READ_TIMEOUT_MS)))?;
    s.set_write_timeout(Some(Duration::from_millis(HTTP_READ_TIMEOUT_MS)))?;
    // One write: a request head split over segments is a needless risk.
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: guts-node-diagnostics\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.take(HTTP_BODY_MAX_BYTES).read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut body = raw[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

/// Decode a chunked body (as far as it is well formed).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let Some(chunk) = raw.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(chunk);
        raw = raw.get(start + size + 2..).unwrap_or(&[]);
    }
    out
}

/// The last `max_bytes` of a file.
fn tail(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Run a program; its stdout, or why it could not run.
fn command(program: &str, args: &[&str]) -> Result<String, String> {
    match std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// This process's resource limits (the node raises the open-file limit to
/// its hard maximum at start).
fn limits_text() -> String {
    let mut out = String::new();
    for (name, resource) in [
        ("open files (RLIMIT_NOFILE)", libc::RLIMIT_NOFILE),
        ("locked memory bytes (RLIMIT_MEMLOCK)", libc::RLIMIT_MEMLOCK),
        ("processes (RLIMIT_NPROC)", libc::RLIMIT_NPROC),
        ("core file bytes (RLIMIT_CORE)", libc::RLIMIT_CORE),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills a struct we own.
        let rc = unsafe { libc::getrlimit(resource, &mut lim) };
        let show = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        if rc == 0 {
            out.push_str(&format!(
                "ulimit {name}: soft {} hard {}\n",
                show(lim.rlim_cur),
                show(lim.rlim_max)
            ));
        }
    }
    out
}

/// Names and sizes under the data directory: the top level, the
/// repositories (with their pack counts and bytes) and the consensus
/// directory. File contents are never read.
fn listing(data_dir: &Path) -> String {
    let mut out = format!("data directory {}\n", data_dir.display());
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        out.push_str("  (cannot be read)\n");
        return out;
    };
    let mut top: Vec<_> = entries.flatten().collect();
    top.sort_by_key(|e| e.file_name());
    for e in top.iter().take(LISTING_ENTRIES_MAX) {
        let meta = e.metadata().ok();
        out.push_str(&format!(
            "  {}{} {} bytes\n",
            e.file_name().to_string_lossy(),
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                "/"
            } else {
                ""
            },
            meta.map(|m| m.len()).unwrap_or(0)
        ));
    }
    let repos = guts_shards::repo::list_repos(data_dir);
    out.push_str(&format!("repositories: {}\n", repos.len()));
    for (owner, name) in repos.iter().take(LISTING_ENTRIES_MAX) {
        let dir = guts_shards::repo::repo_dir(data_dir, owner, name);
        let (mut packs, mut bytes) = (0u64, 0u64);
        if let Ok(files) = std::fs::read_dir(dir.join("objects").join("pack")) {
            for f in files.flatten() {
                if let Ok(m) = f.metadata() {
                    bytes += m.len();
                }
                if f.file_name().to_string_lossy().ends_with(".pack") {
                    packs += 1;
                }
            }
        }
        let log = std::fs::metadata(dir.join(guts_io::refs::LOG_FILE_NAME))
            .map(|m| m.len())
            .unwrap_or(0);
        out.push_str(&format!(
            "  {owner}/{name}: {packs} packs, {bytes} bytes in objects/pack, ref log {log} bytes\n"
        ));
    }
    if let Ok(entries) = std::fs::read_dir(data_dir.join("consensus")) {
        out.push_str("consensus/:\n");
        let mut names: Vec<_> = entries.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names.iter().take(LISTING_ENTRIES_MAX) {
            out.push_str(&format!(
                "  {} {} bytes\n",
                e.file_name().to_string_lossy(),
                e.metadata().map(|m| m.len()).unwrap_or(0)
            ));
        }
    }
    out
}

/// Whether a configuration or environment name holds a secret.
fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["key", "token", "secret", "password", "credential"]
        .iter()
        .any(|w| lower.contains(w))
        // File paths and sizes are not secrets.
        && !lower.ends_with("_file")
        && !lower.ends_with("-file")
        && !lower.ends_with("_path")
        && !lower.ends_with("bytes")
}

/// A TOML file with the values of secret-named keys replaced.
fn redact_config(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once('=') {
            Some((key, _)) if is_secret_name(key.trim()) => {
                format!("{} = \"<redacted>\"", key.trim_end())
            }
            _ => line.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// Remove what looks like a secret from free text: API tokens
/// (`guts_` and 64 hex digits), and any run of 64 or more hex digits (a
/// private key, a token hash).
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_hexdigit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let run = bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if run >= 64 {
                out.push_str("<redacted>");
                i += run;
                continue;
            }
        }
        if bytes[i..].starts_with(guts_shards::auth::TOKEN_PREFIX.as_bytes()) {
            let start = i + guts_shards::auth::TOKEN_PREFIX.len();
            let run = bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            if run >= 32 {
                out.push_str(guts_shards::auth::TOKEN_PREFIX);
                out.push_str("<redacted>");
                i = start + run;
                continue;
            }
        }
        // Copy one whole character.
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_keys_are_redacted() {
        let token = format!("guts_{}", "ab12".repeat(16));
        let key = "0f".repeat(32);
        let text = format!(
            "push by admin:{token}@host\nkey {key}\nguts_http_requests_total 3\noid {}\n",
            "1".repeat(40)
        );
        let out = redact(&text);
        assert!(!out.contains(&token));
        assert!(!out.contains(&key));
        assert!(out.contains("guts_http_requests_total 3"));
        assert!(out.contains(&"1".repeat(40)), "object ids stay: {out}");
    }

    #[test]
    fn secret_config_values_are_redacted() {
        let text =
            "api_addr = \"0.0.0.0:8080\"\nprivate_key = \"abcd\"\nprivate_key_file = \"/k\"\n";
        let out = redact_config(text);
        assert!(out.contains("private_key = \"<redacted>\""));
        assert!(out.contains("private_key_file = \"/k\""));
        assert!(out.contains("api_addr"));
        assert!(!out.contains("abcd"));
    }
}
