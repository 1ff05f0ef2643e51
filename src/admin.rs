//! `guts-node token ...`: admin commands that talk to a running node's API
//! with the admin token (`GUTS_TOKEN`, or `DATA/admin.token`).

use anyhow::{bail, Context};
use base64::Engine as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{NodeConfig, TokenCommand};

/// How long the API has to answer an admin command.
const ADMIN_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest answer read from the API.
const ADMIN_RESPONSE_MAX_BYTES: u64 = 64 << 20;

/// Run `guts-node token ...`.
pub fn token(cfg: &NodeConfig, action: &TokenCommand) -> anyhow::Result<()> {
    let api = Api::new(cfg)?;
    match action {
        TokenCommand::Create {
            user,
            repo,
            write,
            admin,
        } => {
            let body =
                serde_json::json!({"user": user, "repo": repo, "write": write, "admin": admin});
            let v = api.call("POST", "/api/tokens", Some(&body))?;
            let token = v["token"].as_str().context("no token in the answer")?;
            println!("{token}");
            eprintln!(
                "token {} for user {} created; it is shown only this once. Use it as the HTTP Basic password with the user name {}.",
                v["id"], v["user"].as_str().unwrap_or(user), v["user"].as_str().unwrap_or(user)
            );
        }
        TokenCommand::List => {
            let v = api.call("GET", "/api/tokens", None)?;
            println!(
                "{:>6}  {:<20}  {:<30}  {:<5}  {:<5}  {:<7}",
                "ID", "USER", "REPO", "WRITE", "ADMIN", "STATE"
            );
            for t in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                println!(
                    "{:>6}  {:<20}  {:<30}  {:<5}  {:<5}  {:<7}",
                    t["id"],
                    t["user"].as_str().unwrap_or("?"),
                    t["repo"].as_str().unwrap_or("*"),
                    t["write"].as_bool().unwrap_or(false),
                    t["admin"].as_bool().unwrap_or(false),
                    if t["revoked"].as_bool().unwrap_or(false) {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        TokenCommand::Revoke { id } => {
            api.call("DELETE", &format!("/api/tokens/{id}"), None)?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// Exit status of `status` when the node answers but is not ready.
pub const STATUS_NOT_READY_EXIT: i32 = 3;

/// Run `guts-node status [--json]`: ask the node at `--api-addr`. Returns
/// whether it is ready.
pub fn status(cfg: &NodeConfig, as_json: bool) -> anyhow::Result<bool> {
    let api = Api::anonymous(cfg)?;
    let consensus = api.call("GET", "/api/consensus/status", None)?;
    let (_, health) = api.request("GET", "/health/ready", None)?;
    let checks = &health["checks"];
    let disk = &checks["disk_space"];
    let damaged = checks["repositories"]["damaged"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let ready = health["ready"].as_bool().unwrap_or(false);
    let report = serde_json::json!({
        "api_addr": api.addr.to_string(),
        "version": health["version"],
        "role": consensus["role"],
        "engine": consensus["engine"],
        "chain_id": consensus["chain_id"],
        "public_key": consensus["public_key"],
        "height": consensus["height"],
        "finalized_height": consensus["finalized_height"],
        "lag_blocks": consensus["lag_blocks"],
        "view": consensus["view"],
        "validators": consensus["validators"],
        "quorum": consensus["quorum"],
        "peers": {"connected": consensus["peers_connected"], "needed": checks["peers"]["needed"]},
        "repositories": {"count": checks["repositories"]["repositories"], "damaged": damaged},
        "disk": {
            "used_bytes": disk["used_bytes"],
            "available_bytes": disk["available_bytes"],
            "capacity_bytes": disk["capacity_bytes"],
            "free_percent": disk["free_percent"],
        },
        "health": {"status": health["status"], "ready": ready, "checks": checks},
    });
    if as_json {
        println!("{report:#}");
        return Ok(ready);
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!(
        "node:          {}",
        report["api_addr"].as_str().unwrap_or("?")
    );
    println!("version:       {}", text(&report["version"]));
    println!(
        "role:          {} ({})",
        text(&report["role"]),
        text(&report["engine"])
    );
    println!("public key:    {}", text(&report["public_key"]));
    if !report["chain_id"].is_null() {
        println!("chain:         {}", text(&report["chain_id"]));
    }
    println!(
        "height:        {} (finalized {}, {} blocks to apply)",
        text(&report["height"]),
        text(&report["finalized_height"]),
        text(&report["lag_blocks"])
    );
    println!(
        "validators:    {} (quorum {}), view {}",
        text(&report["validators"]),
        text(&report["quorum"]),
        text(&report["view"])
    );
    println!(
        "peers:         {} connected ({} needed)",
        text(&report["peers"]["connected"]),
        text(&report["peers"]["needed"])
    );
    println!(
        "repositories:  {} ({damaged} damaged)",
        text(&report["repositories"]["count"])
    );
    println!(
        "disk:          {} used by the data directory; {} free of {} ({}%)",
        bytes(&disk["used_bytes"]),
        bytes(&disk["available_bytes"]),
        bytes(&disk["capacity_bytes"]),
        text(&disk["free_percent"])
    );
    println!(
        "health:        {} ({})",
        text(&health["status"]),
        if ready { "ready" } else { "not ready" }
    );
    if let Some(map) = checks.as_object() {
        for (name, c) in map {
            if c["status"] != "ok" {
                println!("  {name}: {}: {}", text(&c["status"]), text(&c["detail"]));
            }
        }
    }
    Ok(ready)
}

/// A byte count for people.
fn bytes(v: &serde_json::Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// The node's API as an admin client sees it.
struct Api {
    addr: SocketAddr,
    authorization: String,
    /// With TLS on the API: the client side, which accepts exactly the
    /// node's certificate (`--tls-cert`), whatever name it carries.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Api {
    fn new(cfg: &NodeConfig) -> anyhow::Result<Api> {
        let token = match std::env::var("GUTS_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let path = cfg.data_dir.join(guts_shards::auth::ADMIN_TOKEN_FILE_NAME);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "reading the admin token from {} (set GUTS_TOKEN or --data-dir)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let credentials = format!("{}:{token}", guts_shards::auth::ADMIN_USER);
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        Api::with_authorization(cfg, authorization)
    }

    /// The API without credentials (for what anyone may read).
    fn anonymous(cfg: &NodeConfig) -> anyhow::Result<Api> {
        Api::with_authorization(cfg, String::new())
    }

    fn with_authorization(cfg: &NodeConfig, authorization: String) -> anyhow::Result<Api> {
        // A node listening on every address is reached on loopback.
        let mut addr = cfg.api_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let tls = match &cfg.tls {
            Some(paths) => Some(pinned_client_config(&paths.cert)?),
            None => None,
        };
        Ok(Api {
            addr,
            authorization,
            tls,
        })
    }

    /// One request; the JSON answer, or an error carrying the node's message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, value) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            let msg = value["error"]
                .as_str()
                .map(str::to_string)
                .or_else(|| value.as_str().map(str::to_string))
                .unwrap_or_else(|| value.to_string());
            bail!("{method} {path}: HTTP {status}: {msg}");
        }
        Ok(value)
    }

    /// One request; its status and JSON answer, whatever the status.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let timeout = Duration::from_millis(ADMIN_REQUEST_TIMEOUT_MS);
        let tcp = TcpStream::connect_timeout(&self.addr, timeout).with_context(|| {
            format!("connecting to the node's API at {} (--api-addr)", self.addr)
        })?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut s: Box<dyn ReadWrite> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .context("TLS to the node's API")?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let authorization = if self.authorization.is_empty() {
            String::new()
        } else {
            format!("Authorization: {}\r\n", self.authorization)
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        match s.take(ADMIN_RESPONSE_MAX_BYTES).read_to_end(&mut raw) {
            Ok(_) => {}
            // A TLS peer that closes without close_notify, after the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e).context("reading the node's answer"),
        }
        let (status, body) = parse_response(&raw)?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).trim().to_string())
        });
        Ok((status, value))
    }
}

/// Status and body of a complete HTTP/1.1 response with a Content-Length
/// or a body to the end of the connection.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the node's answer has no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the node's answer has no status")?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// A stream to the API, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A TLS client that trusts exactly the leaf certificate in `cert` (the
/// node's own `--tls-cert`): the admin commands run beside the node, so the
/// certificate is at hand, and pinning it works for self-signed and
/// CA-issued certificates alike, whatever host name they carry.
fn pinned_client_config(cert: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let leaf = guts_shards::tls::load_certificates(cert)?
        .into_iter()
        .next()
        .context("no certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        leaf,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct PinnedCertificate {
    leaf: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node presented a certificate other than the one in --tls-cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
