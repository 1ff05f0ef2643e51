//! Command line and configuration: flags > `GUTS_*` environment > TOML
//! file > embedded defaults.

use anyhow::Context;
use clap::{Parser, Subcommand};
use guts_shards::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./guts-data";
/// Default git/API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8080";
/// Default metrics address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";
/// Default p2p address.
pub const DEFAULT_P2P_ADDR: &str = "127.0.0.1:9000";
/// Default time requests in flight get to finish after SIGTERM/SIGINT
/// (below systemd's default stop timeout of 90 s and the unit's 30 s).
pub const DEFAULT_SHUTDOWN_DRAIN_MS: u64 = 20_000;

/// guts-node: a git host node (smart HTTP, consensus-ordered ref updates).
#[derive(Debug, Clone, Parser)]
#[command(name = "guts-node", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "GUTS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (repositories, ref logs, consensus state).
    #[arg(long, env = "GUTS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Address of the git smart-HTTP and REST API server.
    #[arg(long, env = "GUTS_API_ADDR", global = true)]
    pub api_addr: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "GUTS_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
    /// Address for peer-to-peer connections.
    #[arg(long, env = "GUTS_P2P_ADDR", global = true)]
    pub p2p_addr: Option<SocketAddr>,
    /// Number of shard executors (default: all cores but the consensus core, at least 1).
    #[arg(long, env = "GUTS_SHARDS", global = true)]
    pub shards: Option<usize>,
    /// Hex-encoded ed25519 private key of this validator (visible to other
    /// local users on the command line: prefer --private-key-file).
    #[arg(long, env = "GUTS_PRIVATE_KEY", global = true, hide_env_values = true)]
    pub private_key: Option<String>,
    /// File holding this node's ed25519 private key (written by `keygen`, mode 0600).
    #[arg(long, env = "GUTS_PRIVATE_KEY_FILE", global = true)]
    pub private_key_file: Option<PathBuf>,
    /// Take part in consensus.
    #[arg(long, env = "GUTS_CONSENSUS_ENABLED", global = true)]
    pub consensus_enabled: bool,
    /// Use Simplex BFT for consensus.
    #[arg(long, env = "GUTS_CONSENSUS_USE_SIMPLEX_BFT", global = true)]
    pub consensus_use_simplex_bft: bool,
    /// Genesis file naming the validator set.
    #[arg(long, env = "GUTS_GENESIS_FILE", global = true)]
    pub genesis_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "GUTS_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM certificate chain for TLS on the API address (with --tls-key).
    #[arg(long, env = "GUTS_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "GUTS_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Milliseconds requests in flight get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "GUTS_SHUTDOWN_DRAIN_MS", global = true)]
    pub shutdown_drain_ms: Option<u64>,
    /// Bytes of io_uring registered memory per shard.
    #[arg(long, env = "GUTS_IO_MEMORY_BYTES", global = true)]
    pub io_memory_bytes: Option<usize>,
    /// Largest request head in bytes.
    #[arg(long, env = "GUTS_HEADER_MAX_BYTES", global = true)]
    pub header_max_bytes: Option<usize>,
    /// Largest push body in bytes.
    #[arg(long, env = "GUTS_PUSH_BODY_MAX_BYTES", global = true)]
    pub push_body_max_bytes: Option<u64>,
    /// Largest fetch negotiation body in bytes.
    #[arg(long, env = "GUTS_UPLOAD_BODY_MAX_BYTES", global = true)]
    pub upload_body_max_bytes: Option<u64>,
    /// Largest REST API (JSON) request body in bytes.
    #[arg(long, env = "GUTS_API_BODY_MAX_BYTES", global = true)]
    pub api_body_max_bytes: Option<u64>,
    /// Most pkt-lines in one fetch negotiation request.
    #[arg(long, env = "GUTS_REQUEST_PKTS_MAX", global = true)]
    pub request_pkts_max: Option<usize>,
    /// Milliseconds a client has to send a request head.
    #[arg(long, env = "GUTS_HEADER_TIMEOUT_MS", global = true)]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds an idle keep-alive connection is kept.
    #[arg(long, env = "GUTS_IDLE_TIMEOUT_MS", global = true)]
    pub idle_timeout_ms: Option<u64>,
    /// Window in milliseconds over which the minimum body rate is enforced.
    #[arg(long, env = "GUTS_BODY_RATE_WINDOW_MS", global = true)]
    pub body_rate_window_ms: Option<u64>,
    /// Minimum request body rate in bytes per second.
    #[arg(long, env = "GUTS_BODY_MIN_BYTES_PER_SEC", global = true)]
    pub body_min_bytes_per_sec: Option<u64>,
    /// Longest a request may take, in milliseconds.
    #[arg(long, env = "GUTS_REQUEST_TIMEOUT_MS", global = true)]
    pub request_timeout_ms: Option<u64>,
    /// Open connections per shard.
    #[arg(long, env = "GUTS_CONNECTIONS_MAX", global = true)]
    pub connections_max: Option<usize>,
    /// Longest a push waits for finalization before the client is told the
    /// network has no quorum, in milliseconds.
    #[arg(long, env = "GUTS_FINALIZE_WAIT_MS", global = true)]
    pub finalize_wait_ms: Option<u64>,
    /// Background repacking: a repository whose refs have not changed for
    /// this many milliseconds gets its small packs merged (0: never repack).
    #[arg(long, env = "GUTS_REPACK_QUIET_MS", global = true)]
    pub repack_quiet_ms: Option<u64>,
    /// Failed authentication attempts per client address and window before 429.
    #[arg(long, env = "GUTS_AUTH_FAILURES_MAX", global = true)]
    pub auth_failures_max: Option<u32>,
    /// Window in milliseconds over which failed authentication attempts are counted.
    #[arg(long, env = "GUTS_AUTH_FAILURE_WINDOW_MS", global = true)]
    pub auth_failure_window_ms: Option<u64>,
    /// Open connections one client address (IPv6: one /64) may hold per shard.
    #[arg(long, env = "GUTS_CONNECTIONS_PER_CLIENT_MAX", global = true)]
    pub connections_per_client_max: Option<usize>,
    /// Pack files kept open at once, node-wide (least recently used closed beyond it).
    #[arg(long, env = "GUTS_PACK_FILES_OPEN_MAX", global = true)]
    pub pack_files_open_max: Option<usize>,
    /// Repositories one client address may create per minute (0: no limit).
    #[arg(long, env = "GUTS_REPO_CREATES_PER_MINUTE", global = true)]
    pub repo_creates_per_minute: Option<u64>,
    /// Bytes a pushed pack may always inflate to (objects, deltas, delta results).
    #[arg(long, env = "GUTS_PUSH_INFLATED_FLOOR_BYTES", global = true)]
    pub push_inflated_floor_bytes: Option<u64>,
    /// Bytes a pushed pack may inflate to per byte of pack, past the floor.
    #[arg(long, env = "GUTS_PUSH_INFLATED_RATIO_MAX", global = true)]
    pub push_inflated_ratio_max: Option<u64>,
    /// Longest a request's work off the executor may take, in milliseconds.
    #[arg(long, env = "GUTS_REQUEST_WORK_MAX_MS", global = true)]
    pub request_work_max_ms: Option<u64>,
    /// Most times a gzip request body may inflate (0: no limit).
    #[arg(long, env = "GUTS_GZIP_INFLATION_RATIO_MAX", global = true)]
    pub gzip_inflation_ratio_max: Option<u64>,
    /// Bytes all requests may hold in memory at once (default: half the machine's memory).
    #[arg(long, env = "GUTS_MEMORY_BUDGET_BYTES", global = true)]
    pub memory_budget_bytes: Option<u64>,
}

/// How log events are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event and line.
    Json,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the node (the default).
    Run,
    /// Print the resolved configuration and exit.
    Config,
    /// Ask a running node (at --api-addr) how it is: version, role, key,
    /// height, peers, repositories, disk use and health. Exit 0 when it is
    /// ready, 3 when it answers but is not ready, 1 when it cannot be asked.
    Status {
        /// One JSON object instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Print this binary's version.
    Version,
    /// Write a new ed25519 private key (mode 0600) and print its public key.
    Keygen {
        /// File to write the private key to (never overwritten).
        #[arg(long)]
        output: PathBuf,
    },
    /// A local network of validators on this machine.
    #[command(subcommand)]
    Devnet(DevnetCommand),
    /// Check a data directory (packs, indexes, ref logs, connectivity)
    /// without changing it: exit 0 when consistent, 1 naming each damaged
    /// file or ref, 2 when it cannot check. Safe while the node runs.
    Verify,
    /// Write a consistent backup of a data directory (while the node runs
    /// or not): zstd-compressed tar of every repository's refs and the
    /// packs they need, the access table and the consensus state.
    Backup {
        /// The backup file to write (never overwritten).
        #[arg(long)]
        output: PathBuf,
        /// Also copy the node's private key and admin token (left out by
        /// default: a backup is then safe to store where secrets may not go).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Restore a backup into a new, empty data directory (--data-dir).
    Restore {
        /// The backup file (written by `backup`).
        #[arg(long)]
        input: PathBuf,
    },
    /// Collect configuration (secrets redacted), status, metrics, logs and
    /// host facts into one tar.gz for a support request.
    Diagnostics {
        /// The archive to write, e.g. /tmp/diag-$(date +%Y%m%d-%H%M%S).tar.gz.
        #[arg(long)]
        output: PathBuf,
        /// A log file of the node to include (the last part of it).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
    /// Manage API tokens on a running node (with its admin token, from
    /// `DATA/admin.token` or `GUTS_TOKEN`).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Measure the data disk, check the host settings that matter, change
    /// what can be changed.
    #[command(subcommand)]
    Tune(crate::tune::TuneCommand),
}

/// `guts-node devnet ...`
#[derive(Debug, Clone, Subcommand)]
pub enum DevnetCommand {
    /// Write keys, DIR/genesis.json and DIR/node-<i>/config.toml.
    Init {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long)]
        dir: PathBuf,
        /// Node i uses API port P+10i, metrics P+10i+1, p2p P+10i+2.
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
    },
    /// Init (if DIR has no genesis yet) and run every node until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 18000)]
        base_port: u16,
    },
}

/// `guts-node token ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only once).
    Create {
        /// The user the token belongs to (the HTTP Basic user name).
        #[arg(long)]
        user: String,
        /// Limit the token to one repository, OWNER/NAME.
        #[arg(long)]
        repo: Option<String>,
        /// Allow pushes (and creating repositories within its scope).
        #[arg(long)]
        write: bool,
        /// Allow everything, the admin API included.
        #[arg(long)]
        admin: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (see `token list`).
        id: u64,
    },
}

/// The TOML file's shape (every key optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub api_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub p2p_addr: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub io_memory_bytes: Option<usize>,
    pub genesis_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    pub finalize_wait_ms: Option<u64>,
    pub repack_quiet_ms: Option<u64>,
    pub shutdown_drain_ms: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub limits: Option<FileLimits>,
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[limits]` in the TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub header_max_bytes: Option<usize>,
    pub push_body_max_bytes: Option<u64>,
    pub upload_body_max_bytes: Option<u64>,
    pub api_body_max_bytes: Option<u64>,
    pub request_pkts_max: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub body_rate_window_ms: Option<u64>,
    pub body_min_bytes_per_sec: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub connections_max: Option<usize>,
    pub auth_failures_max: Option<u32>,
    pub auth_failure_window_ms: Option<u64>,
    pub connections_per_client_max: Option<usize>,
    pub pack_files_open_max: Option<usize>,
    pub repo_creates_per_minute: Option<u64>,
    pub push_inflated_floor_bytes: Option<u64>,
    pub push_inflated_ratio_max: Option<u64>,
    pub request_work_max_ms: Option<u64>,
    pub gzip_inflation_ratio_max: Option<u64>,
    pub memory_budget_bytes: Option<u64>,
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub p2p_addr: SocketAddr,
    pub shards: Option<usize>,
    pub io_memory_bytes: usize,
    pub shutdown_drain_ms: u64,
    pub tls: Option<TlsPaths>,
    pub limits: Limits,
    /// Genesis file: present on a node of a network.
    pub genesis_file: Option<PathBuf>,
    /// Where this node's key comes from.
    pub key: KeySource,
    pub finalize_wait_ms: u64,
    /// Quiet time before a repository is repacked (0: never).
    pub repack_quiet_ms: u64,
}

/// Where a node's private key comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    #[default]
    None,
    Hex(String),
    File(PathBuf),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::None => f.write_str("none"),
            KeySource::Hex(_) => f.write_str("<redacted>"),
            KeySource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl NodeConfig {
    /// Merge flags/environment (already merged by clap) over the file over defaults.
    pub fn resolve(cli: &Cli) -> anyhow::Result<NodeConfig> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let genesis_file = cli.genesis_file.clone().or(file.genesis_file.clone());
        let key = match (&cli.private_key, &cli.private_key_file) {
            (Some(_), Some(_)) => anyhow::bail!(
                "give the key once: --private-key (GUTS_PRIVATE_KEY) or --private-key-file, not both"
            ),
            (Some(hex), None) => KeySource::Hex(hex.clone()),
            (None, Some(p)) => KeySource::File(p.clone()),
            (None, None) => match &file.private_key_file {
                Some(p) => KeySource::File(p.clone()),
                None => KeySource::None,
            },
        };
        if genesis_file.is_none() {
            if cli.consensus_enabled || cli.consensus_use_simplex_bft {
                anyhow::bail!("--consensus-enabled and --consensus-use-simplex-bft need --genesis-file naming the validators; without them the node is a standalone single validator");
            }
            if !matches!(key, KeySource::None) {
                anyhow::bail!("a private key needs --genesis-file: a standalone node has no validator set to sign for");
            }
        }
        let fl = file.limits.unwrap_or_default();
        let d = Limits::default();
        let limits = Limits {
            header_max_bytes: cli
                .header_max_bytes
                .or(fl.header_max_bytes)
                .unwrap_or(d.header_max_bytes),
            upload_body_max_bytes: cli
                .upload_body_max_bytes
                .or(fl.upload_body_max_bytes)
                .unwrap_or(d.upload_body_max_bytes),
            push_body_max_bytes: cli
                .push_body_max_bytes
                .or(fl.push_body_max_bytes)
                .unwrap_or(d.push_body_max_bytes),
            api_body_max_bytes: cli
                .api_body_max_bytes
                .or(fl.api_body_max_bytes)
                .unwrap_or(d.api_body_max_bytes),
            request_pkts_max: cli
                .request_pkts_max
                .or(fl.request_pkts_max)
                .unwrap_or(d.request_pkts_max),
            header_timeout_ms: cli
                .header_timeout_ms
                .or(fl.header_timeout_ms)
                .unwrap_or(d.header_timeout_ms),
            idle_timeout_ms: cli
                .idle_timeout_ms
                .or(fl.idle_timeout_ms)
                .unwrap_or(d.idle_timeout_ms),
            body_rate_window_ms: cli
                .body_rate_window_ms
                .or(fl.body_rate_window_ms)
                .unwrap_or(d.body_rate_window_ms),
            body_min_bytes_per_sec: cli
                .body_min_bytes_per_sec
                .or(fl.body_min_bytes_per_sec)
                .unwrap_or(d.body_min_bytes_per_sec),
            request_timeout_ms: cli
                .request_timeout_ms
                .or(fl.request_timeout_ms)
                .unwrap_or(d.request_timeout_ms),
            connections_max: cli
                .connections_max
                .or(fl.connections_max)
                .unwrap_or(d.connections_max),
            auth_failures_max: cli
                .auth_failures_max
                .or(fl.auth_failures_max)
                .unwrap_or(d.auth_failures_max),
            auth_failure_window_ms: cli
                .auth_failure_window_ms
                .or(fl.auth_failure_window_ms)
                .unwrap_or(d.auth_failure_window_ms),
            connections_per_client_max: cli
                .connections_per_client_max
                .or(fl.connections_per_client_max)
                .unwrap_or(d.connections_per_client_max),
            pack_files_open_max: cli
                .pack_files_open_max
                .or(fl.pack_files_open_max)
                .unwrap_or(d.pack_files_open_max),
            repo_creates_per_minute: cli
                .repo_creates_per_minute
                .or(fl.repo_creates_per_minute)
                .unwrap_or(d.repo_creates_per_minute),
            push_inflated_floor_bytes: cli
                .push_inflated_floor_bytes
                .or(fl.push_inflated_floor_bytes)
                .unwrap_or(d.push_inflated_floor_bytes),
            push_inflated_ratio_max: cli
                .push_inflated_ratio_max
                .or(fl.push_inflated_ratio_max)
                .unwrap_or(d.push_inflated_ratio_max),
            request_work_max_ms: cli
                .request_work_max_ms
                .or(fl.request_work_max_ms)
                .unwrap_or(d.request_work_max_ms),
            gzip_inflation_ratio_max: cli
                .gzip_inflation_ratio_max
                .or(fl.gzip_inflation_ratio_max)
                .unwrap_or(d.gzip_inflation_ratio_max),
            memory_budget_bytes: cli
                .memory_budget_bytes
                .or(fl.memory_budget_bytes)
                .unwrap_or(d.memory_budget_bytes),
        };
        let parse = |s: &str| -> SocketAddr {
            s.parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let tls = match (
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
        };
        Ok(NodeConfig {
            data_dir: cli
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            api_addr: cli
                .api_addr
                .or(file.api_addr)
                .unwrap_or_else(|| parse(DEFAULT_API_ADDR)),
            metrics_addr: cli
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or_else(|| parse(DEFAULT_METRICS_ADDR)),
            p2p_addr: cli
                .p2p_addr
                .or(file.p2p_addr)
                .unwrap_or_else(|| parse(DEFAULT_P2P_ADDR)),
            shards: cli.shards.or(file.shards),
            io_memory_bytes: cli
                .io_memory_bytes
                .or(file.io_memory_bytes)
                .unwrap_or(guts_shards::config::IO_MEMORY_BYTES),
            shutdown_drain_ms: cli
                .shutdown_drain_ms
                .or(file.shutdown_drain_ms)
                .unwrap_or(DEFAULT_SHUTDOWN_DRAIN_MS),
            tls,
            limits,
            genesis_file,
            key,
            finalize_wait_ms: cli
                .finalize_wait_ms
                .or(file.finalize_wait_ms)
                .unwrap_or(guts_shards::shard::FINALIZE_WAIT_MS),
            repack_quiet_ms: cli
                .repack_quiet_ms
                .or(file.repack_quiet_ms)
                .unwrap_or(guts_shards::maintenance::REPACK_QUIET_MS),
        })
    }
}
