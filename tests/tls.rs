//! TLS on the API listener, with the real git client against a certificate
//! made here (`GIT_SSL_CAINFO`): clone and push over HTTPS, the admin
//! commands over TLS, and a certificate reloaded on SIGHUP without dropping
//! the connections already open.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

fn tls_node(dir: &Path) -> (Node, PathBuf, PathBuf) {
    let (cert, key) = certificate(dir, "server");
    // The node reads the files it was given at every (re)load.
    let node = Node::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    (node, cert, key)
}

fn https_url(node: &Node, repo: &str) -> String {
    format!(
        "https://admin:{}@127.0.0.1:{}/git/{repo}.git",
        node.admin_token,
        node.api.port()
    )
}

/// A TLS client session to the node that trusts `ca`.
fn tls_connect(node: &Node, ca: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(ca).expect("CA certificate");
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .unwrap()
        .to_owned();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect_timeout(&node.api, Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive request on an open session; returns the status.
fn request_on(s: &mut impl ReadWriteStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response head");
        assert_eq!(n, 1, "connection closed");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

trait ReadWriteStream: Read + Write {}
impl<T: Read + Write> ReadWriteStream for T {}

fn curl_create(node: &Node, ca: &Path, owner: &str, name: &str) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args([
            "-u",
            &format!("admin:{}", node.admin_token),
            "-X",
            "POST",
            "-d",
        ])
        .arg(format!("{{\"owner\": \"{owner}\", \"name\": \"{name}\"}}"))
        .arg(format!("https://127.0.0.1:{}/api/repos", node.api.port()))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "201",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn git_clones_and_pushes_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, cert, key) = tls_node(tmp.path());
    curl_create(&node, &cert, "alice", "repo");
    let url = https_url(&node, "alice/repo");
    let ca = [("GIT_SSL_CAINFO", cert.to_str().unwrap())];
    let wt = new_worktree(tmp.path(), "wt");
    git_env_ok(&wt, &ca, &["push", "-q", &url, "main"]);
    let clone = tmp.path().join("clone");
    git_env_ok(
        tmp.path(),
        &ca,
        &["clone", "-q", &url, clone.to_str().unwrap()],
    );
    fsck(&clone);
    assert_eq!(rev_parse(&clone, "HEAD"), rev_parse(&wt, "HEAD"));
    // Without the certificate, git refuses the server: the TLS is real.
    let out = git_out(tmp.path(), &["ls-remote", &url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = http_anonymous(node.api, "GET", "/health/live", &[], b"");
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP served on the TLS port"
    );
    // The admin commands speak TLS too (trusting exactly the node's certificate).
    let out = Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--api-addr")
        .arg(node.api.to_string())
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["token", "create", "--user", "bob", "--write"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bob = format!(
        "https://bob:{token}@127.0.0.1:{}/git/alice/repo.git",
        node.api.port()
    );
    commit_file(&wt, "by-bob", "bob\n", "bob");
    git_env_ok(&wt, &ca, &["push", "-q", &bob, "main"]);
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, cert, key) = tls_node(tmp.path());
    curl_create(&node, &cert, "alice", "repo");
    let old_ca = tmp.path().join("old-ca.pem");
    std::fs::copy(&cert, &old_ca).unwrap();
    let mut open = tls_connect(&node, &old_ca);
    assert_eq!(request_on(&mut open, "/health/live"), 200);

    // A broken certificate file: the reload is refused, the old one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let pid = node.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(wait_until(Duration::from_secs(20), || node
        .log_text()
        .contains("not reloaded")));
    let mut again = tls_connect(&node, &old_ca);
    assert_eq!(request_on(&mut again, "/health/live"), 200);

    // A new certificate (new key): new connections get it.
    let (new_cert, new_key) = certificate(tmp.path(), "next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(wait_until(Duration::from_secs(20), || node
        .log_text()
        .contains("TLS certificate reloaded")));
    let url = https_url(&node, "alice/repo");
    let wt = new_worktree(tmp.path(), "wt");
    git_env_ok(
        &wt,
        &[("GIT_SSL_CAINFO", new_cert.to_str().unwrap())],
        &["push", "-q", &url, "main"],
    );
    let out = git(&wt)
        .env("GIT_SSL_CAINFO", &old_ca)
        .args(["ls-remote", &url])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the old certificate is still served to new connections"
    );
    // The connections opened before the reload still work.
    assert_eq!(request_on(&mut open, "/health/live"), 200);
    assert_eq!(request_on(&mut again, "/api/repos/alice/repo"), 200);
    assert!(node.log_text().contains("https://"));
}
