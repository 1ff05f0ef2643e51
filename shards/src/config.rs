//! Shard runtime configuration: addresses, shard count and every limit the
//! HTTP front end and the git services enforce. Each limit is declared
//! once, below, with its unit last in its name; the node's flags,
//! environment and TOML file (`[limits]`) are filled from this declaration
//! (see [`crate::settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;

crate::declare_settings! {
    /// Limits enforced by the HTTP front end and the git services.
    #[section = "limits"]
    pub struct Limits {
        /// Largest request head (request line + headers) accepted.
        header_max_bytes: usize = 64 * 1024,
        /// Largest fetch negotiation (upload-pack) body, after gzip decoding.
        upload_body_max_bytes: u64 = 64 * 1024 * 1024,
        /// Largest push (receive-pack) body: commands + pack, after decoding.
        /// A larger `Content-Length` (plain, or gzip beyond its framing
        /// overhead) is refused with 413 before any of it is read. 1 GiB:
        /// below the 2 GiB pack limit of the ingest (and of large hosts), so
        /// that a declared body of 2 GiB or more is refused before it is read.
        push_body_max_bytes: u64 = 1024 * 1024 * 1024,
        /// Largest REST API (JSON) request body.
        api_body_max_bytes: u64 = 64 * 1024,
        /// Most pkt-lines in one fetch negotiation request (wants, haves,
        /// arguments).
        request_pkts_max: usize = guts_net::pktline::REQUEST_PKTS_MAX,
        /// Time a client has to send a complete request head.
        header_timeout_ms: u64 = 10_000,
        /// A keep-alive connection with no request in flight is closed after this.
        idle_timeout_ms: u64 = 120_000,
        /// Window over which the request body rate is measured: a body slower
        /// than `body_min_bytes_per_sec` on average over a window closes the
        /// connection.
        body_rate_window_ms: u64 = 20_000,
        /// Minimum average request body rate over one window, or the
        /// connection is closed.
        body_min_bytes_per_sec: u64 = 256,
        /// Longest a whole request (head, body and response) may take.
        request_timeout_ms: u64 = 3_600_000,
        /// Open connections per shard. At the cap the idlest connection is
        /// closed to admit a new one, and a new one gets 503 if none is idle.
        connections_max: usize = 16_384,
        /// Failed authentication attempts (malformed, wrong or revoked
        /// credentials) from one client address per window and shard; beyond
        /// it requests with credentials get 429 with `Retry-After` until the
        /// window ends.
        auth_failures_max: u32 = crate::auth::AUTH_FAILURES_MAX,
        /// Window over which failed authentication attempts are counted.
        auth_failure_window_ms: u64 = crate::auth::AUTH_FAILURE_WINDOW_MS,
        /// Open connections one client address (an IPv6 /64) may hold per
        /// shard; more get 429.
        connections_per_client_max: usize = 256,
        /// Pack files open at once, node-wide: the least recently used are
        /// closed and reopened on demand. Lowered at start to a quarter of
        /// the open-file limit if that is smaller.
        pack_files_open_max: usize = 4096,
        /// Repositories one client address may create per minute, per shard
        /// (a burst of as many is allowed; 0: no limit); more get 429 with
        /// `Retry-After`.
        repo_creates_per_minute: u64 = 60,
        /// Bytes a pushed pack may always inflate to (objects, deltas and
        /// delta results, rebuilt bases included); past it, up to
        /// `push_inflated_ratio_max` times its size.
        push_inflated_floor_bytes: u64 = guts_io::pack::ingest::INFLATED_FLOOR_BYTES_DEFAULT,
        /// Bytes a pushed pack may inflate to per byte of pack, past the
        /// floor; more is refused.
        push_inflated_ratio_max: u64 = guts_io::pack::ingest::INFLATED_RATIO_MAX_DEFAULT,
        /// Longest a request's work off the executor (negotiation, object
        /// walk, pack planning and generation, push checks) may take before
        /// it is abandoned with an error.
        request_work_max_ms: u64 = 600_000,
        /// Most times a gzip request body may inflate (past its first MiB);
        /// more gets 413. 0: no limit.
        gzip_inflation_ratio_max: u64 = 100,
        /// Bytes all requests on the node may hold at once (parsed
        /// negotiations, push commands and buffers); past it new work gets
        /// 503 with `Retry-After`.
        #[default_doc = "half the machine's memory (at least 256 MiB)"]
        memory_budget_bytes: u64 = crate::memory::default_budget_bytes(),
        /// Bytes of pack responses kept in memory, node-wide, so that
        /// identical clones arriving together or soon after are computed
        /// once: a clone identical to one being sent joins it, and recent
        /// complete responses are answered again until a ref update. One
        /// response may take at most a quarter of it; larger ones are not
        /// shared. 0: off.
        pack_cache_bytes: u64 = 512 * 1024 * 1024,
        /// Pack responses kept (being sent or complete) at most, node-wide.
        pack_cache_entries: usize = 64,
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
    /// Objects no ref reaches are dropped by background repacking from
    /// packs older than this (0: never; only while repacking is on).
    pub prune_unreachable_after_ms: u64,
    /// Bundle URIs: whether repositories get bundles, and which.
    pub bundles: crate::bundle::BundleSettings,
    /// SHA-256 of the node's admin token (`DATA/admin.token`).
    pub admin_token_sha256: [u8; 32],
    /// TLS on the API listener, if configured (`--tls-cert`, `--tls-key`).
    pub tls: Option<std::sync::Arc<futures_rustls::rustls::ServerConfig>>,
}
