//! Shard runtime configuration: addresses, shard count and every limit the
//! HTTP front end and the git services enforce. Each limit is a named
//! constant with its unit last, exported here so an operator can change it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest request head (request line + headers) accepted.
pub const HEADER_MAX_BYTES: usize = 64 * 1024;
/// Largest upload-pack request body (negotiation), after decompression.
pub const UPLOAD_BODY_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest receive-pack request body (commands + pack), after decompression.
/// 1 GiB: below the 2 GiB pack limit of the ingest (and of large hosts), so
/// that a declared body of 2 GiB or more is refused (413) before any of it
/// is read. Raise it with `--push-body-max-bytes` for bigger pushes.
pub const PUSH_BODY_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest API (JSON) request body.
pub const API_BODY_MAX_BYTES: u64 = 64 * 1024;
/// Most pkt-lines in one upload-pack request (wants, haves, arguments).
pub const REQUEST_PKTS_MAX: usize = guts_net::pktline::REQUEST_PKTS_MAX;
/// Time a client has to send a complete request head.
pub const HEADER_TIMEOUT_MS: u64 = 10_000;
/// A keep-alive connection with no request in flight is closed after this.
pub const IDLE_TIMEOUT_MS: u64 = 120_000;
/// Window over which the request body rate is measured.
pub const BODY_RATE_WINDOW_MS: u64 = 20_000;
/// Minimum average request body rate over one window, or the connection is closed.
pub const BODY_MIN_BYTES_PER_SEC: u64 = 256;
/// Longest a whole request (head, body and response) may take.
pub const REQUEST_TIMEOUT_MS: u64 = 3_600_000;
/// Open connections per shard; at the cap the idlest connection is closed
/// to admit a new one (and a new one is refused if none is idle).
pub const CONNECTIONS_MAX: usize = 16_384;
/// Failed authentication attempts per client address and window before 429.
pub const AUTH_FAILURES_MAX: u32 = crate::auth::AUTH_FAILURES_MAX;
/// Window over which failed authentication attempts are counted.
pub const AUTH_FAILURE_WINDOW_MS: u64 = crate::auth::AUTH_FAILURE_WINDOW_MS;
/// Open connections one client address (an IPv6 /64) may hold per shard.
pub const CONNECTIONS_PER_CLIENT_MAX: usize = 256;
/// Repositories one client address may create per minute (per shard; a
/// burst of as many is allowed). 0: no limit.
pub const REPO_CREATES_PER_MINUTE: u64 = 60;
/// Bytes a pushed pack may always inflate to (objects, deltas and delta
/// results, rebuilt bases included).
pub const PUSH_INFLATED_FLOOR_BYTES: u64 = guts_io::pack::ingest::INFLATED_FLOOR_BYTES_DEFAULT;
/// Bytes a pushed pack may inflate to per byte of pack, past the floor.
pub const PUSH_INFLATED_RATIO_MAX: u64 = guts_io::pack::ingest::INFLATED_RATIO_MAX_DEFAULT;
/// Pack files the node keeps open at once (all repositories); the least
/// recently used are closed beyond it and reopened on demand. Lowered at
/// start to a quarter of the open-file limit if that is smaller.
pub const PACK_FILES_OPEN_MAX: usize = 4096;
/// Longest a request's work off the executor (negotiation, object walk,
/// pack planning and generation, push checks) may take before it is
/// abandoned with an error.
pub const REQUEST_WORK_MAX_MS: u64 = 600_000;
/// Most times a gzip request body may inflate (past its first MiB).
pub const GZIP_INFLATION_RATIO_MAX: u64 = 100;
/// Bytes of I/O memory each shard registers with io_uring.
pub const IO_MEMORY_BYTES: usize = 1024 * 1024;

/// Limits enforced by the HTTP front end and the git services.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_max_bytes: usize,
    pub upload_body_max_bytes: u64,
    pub push_body_max_bytes: u64,
    pub api_body_max_bytes: u64,
    pub request_pkts_max: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub body_rate_window_ms: u64,
    pub body_min_bytes_per_sec: u64,
    pub request_timeout_ms: u64,
    pub connections_max: usize,
    pub auth_failures_max: u32,
    pub auth_failure_window_ms: u64,
    pub connections_per_client_max: usize,
    pub pack_files_open_max: usize,
    pub repo_creates_per_minute: u64,
    pub push_inflated_floor_bytes: u64,
    pub push_inflated_ratio_max: u64,
    pub request_work_max_ms: u64,
    pub gzip_inflation_ratio_max: u64,
    /// Bytes all requests on the node may hold at once (parsed requests,
    /// push buffers); past it new work gets 503 + Retry-After.
    pub memory_budget_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_max_bytes: HEADER_MAX_BYTES,
            upload_body_max_bytes: UPLOAD_BODY_MAX_BYTES,
            push_body_max_bytes: PUSH_BODY_MAX_BYTES,
            api_body_max_bytes: API_BODY_MAX_BYTES,
            request_pkts_max: REQUEST_PKTS_MAX,
            header_timeout_ms: HEADER_TIMEOUT_MS,
            idle_timeout_ms: IDLE_TIMEOUT_MS,
            body_rate_window_ms: BODY_RATE_WINDOW_MS,
            body_min_bytes_per_sec: BODY_MIN_BYTES_PER_SEC,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            connections_max: CONNECTIONS_MAX,
            auth_failures_max: AUTH_FAILURES_MAX,
            auth_failure_window_ms: AUTH_FAILURE_WINDOW_MS,
            connections_per_client_max: CONNECTIONS_PER_CLIENT_MAX,
            pack_files_open_max: PACK_FILES_OPEN_MAX,
            repo_creates_per_minute: REPO_CREATES_PER_MINUTE,
            push_inflated_floor_bytes: PUSH_INFLATED_FLOOR_BYTES,
            push_inflated_ratio_max: PUSH_INFLATED_RATIO_MAX,
            request_work_max_ms: REQUEST_WORK_MAX_MS,
            gzip_inflation_ratio_max: GZIP_INFLATION_RATIO_MAX,
            memory_budget_bytes: crate::memory::default_budget_bytes(),
        }
    }
}

/// Everything the shard runtime needs to start.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Root of the node's data (`DATA/repos/OWNER/NAME.git`).
    pub data_dir: PathBuf,
    /// Address of the git/API HTTP server (every shard listens on it).
    pub api_addr: SocketAddr,
    /// Number of shard executors.
    pub shards: usize,
    /// CPUs the shards are pinned to, one per shard (empty: not pinned).
    pub shard_cpus: Vec<usize>,
    /// Bytes of io_uring registered memory per shard.
    pub io_memory_bytes: usize,
    /// Request limits.
    pub limits: Limits,
    /// Server agent string advertised to clients.
    pub agent: String,
    /// Longest a push waits for its update to be finalized (no quorum of
    /// validators) before the client is told so.
    pub finalize_wait_ms: u64,
    /// A repository whose refs have not changed for this long gets its
    /// small packs merged in the background (0: never repack).
    pub repack_quiet_ms: u64,
    /// SHA-256 of the node's admin token (`DATA/admin.token`).
    pub admin_token_sha256: [u8; 32],
    /// TLS on the API listener, if configured (`--tls-cert`, `--tls-key`).
    pub tls: Option<std::sync::Arc<futures_rustls::rustls::ServerConfig>>,
}
