//! Node metrics: process-wide atomic counters and gauges, rendered in the
//! Prometheus text format by the metrics endpoint. Names are static and
//! documented in `docs/metrics.md`; per-shard series carry a `shard` label.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Most shards with their own per-shard series.
pub const SHARDS_MAX: usize = 256;

/// Request classes counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    InfoRefs = 0,
    UploadPack = 1,
    ReceivePack = 2,
    Api = 3,
    Health = 4,
    Other = 5,
}

const CLASS_NAMES: [&str; 6] = [
    "info_refs",
    "upload_pack",
    "receive_pack",
    "api",
    "health",
    "other",
];
/// Upper bounds of the request duration histogram, in seconds.
const DURATION_BUCKETS_S: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static REQUESTS: [AtomicU64; 6] = [ZERO; 6];
static RESPONSES_4XX: AtomicU64 = ZERO;
static RESPONSES_5XX: AtomicU64 = ZERO;
static DURATION_BUCKETS: [AtomicU64; 10] = [ZERO; 10];
static DURATION_COUNT: AtomicU64 = ZERO;
static DURATION_SUM_US: AtomicU64 = ZERO;
static CONNECTIONS: [AtomicU64; SHARDS_MAX] = [ZERO; SHARDS_MAX];
static PUSH_REF_UPDATES_OK: AtomicU64 = ZERO;
static PUSH_REF_UPDATES_REJECTED: AtomicU64 = ZERO;
static PACK_BYTES_RECEIVED: AtomicU64 = ZERO;
static PACK_BYTES_SENT: AtomicU64 = ZERO;
static PACK_OBJECTS_SENT: AtomicU64 = ZERO;
static BLOCK_HEIGHT: AtomicU64 = ZERO;
static BLOCK_TRANSACTIONS: AtomicU64 = ZERO;
static AUTH_FAILURES: AtomicU64 = ZERO;
static AUTH_RATE_LIMITED: AtomicU64 = ZERO;
static CONNECTIONS_REFUSED: AtomicU64 = ZERO;
static MEMORY_REFUSED: AtomicU64 = ZERO;
static MEMORY_RESERVED: AtomicU64 = ZERO;
static MEMORY_BUDGET: AtomicU64 = ZERO;

/// Count one request and its duration and status.
pub fn record_request(class: RequestClass, status: u16, seconds: f64) {
    REQUESTS[class as usize].fetch_add(1, Relaxed);
    if (400..500).contains(&status) {
        RESPONSES_4XX.fetch_add(1, Relaxed);
    } else if status >= 500 {
        RESPONSES_5XX.fetch_add(1, Relaxed);
    }
    for (i, bound) in DURATION_BUCKETS_S.iter().enumerate() {
        if seconds <= *bound {
            DURATION_BUCKETS[i].fetch_add(1, Relaxed);
        }
    }
    DURATION_COUNT.fetch_add(1, Relaxed);
    DURATION_SUM_US.fetch_add((seconds * 1e6) as u64, Relaxed);
}

/// Set the number of open connections of `shard`.
pub fn set_connections(shard: usize, open: usize) {
    if let Some(g) = CONNECTIONS.get(shard) {
        g.store(open as u64, Relaxed);
    }
}

/// Count a connection refused (per-client limit, or the shard's cap with
/// nothing idle to close).
pub fn record_connection_refused() {
    CONNECTIONS_REFUSED.fetch_add(1, Relaxed);
}

/// Count a request refused because the memory budget was spent.
pub fn record_memory_refused() {
    MEMORY_REFUSED.fetch_add(1, Relaxed);
}

/// The node's memory budget and what is reserved of it now.
pub fn set_memory(reserved: u64, budget: u64) {
    MEMORY_RESERVED.store(reserved, Relaxed);
    MEMORY_BUDGET.store(budget, Relaxed);
}

/// Count ref updates applied or rejected.
pub fn record_ref_updates(ok: u64, rejected: u64) {
    PUSH_REF_UPDATES_OK.fetch_add(ok, Relaxed);
    PUSH_REF_UPDATES_REJECTED.fetch_add(rejected, Relaxed);
}

/// Count pack bytes received by pushes.
pub fn record_pack_received(bytes: u64) {
    PACK_BYTES_RECEIVED.fetch_add(bytes, Relaxed);
}

/// Count pack bytes and objects sent to clients.
pub fn record_pack_sent(bytes: u64, objects: u64) {
    PACK_BYTES_SENT.fetch_add(bytes, Relaxed);
    PACK_OBJECTS_SENT.fetch_add(objects, Relaxed);
}

/// Count a failed authentication attempt (bad, wrong or revoked credentials).
pub fn record_auth_failure() {
    AUTH_FAILURES.fetch_add(1, Relaxed);
}

/// Count a request refused because its client failed authentication too often.
pub fn record_auth_rate_limited() {
    AUTH_RATE_LIMITED.fetch_add(1, Relaxed);
}

/// Record a finalized block.
static CONSENSUS_VIEW: AtomicU64 = AtomicU64::new(0);
static P2P_PEERS: AtomicU64 = AtomicU64::new(0);
static REPLICATION_LAG: AtomicU64 = AtomicU64::new(0);

/// Progress of the consensus core of a network node: its current view,
/// connected peers, and how many finalized blocks it has yet to apply.
pub fn record_network(view: u64, peers: u64, lag_blocks: u64) {
    CONSENSUS_VIEW.store(view, Relaxed);
    P2P_PEERS.store(peers, Relaxed);
    REPLICATION_LAG.store(lag_blocks, Relaxed);
}

/// Height of the last block applied here.
pub fn block_height() -> u64 {
    BLOCK_HEIGHT.load(Relaxed)
}

/// Finalized blocks this node has not applied yet (0 on a standalone node).
pub fn replication_lag() -> u64 {
    REPLICATION_LAG.load(Relaxed)
}

pub fn record_block(height: u64, transactions: u64) {
    BLOCK_HEIGHT.store(height, Relaxed);
    BLOCK_TRANSACTIONS.fetch_add(transactions, Relaxed);
}

/// Render every metric; `shards` bounds the per-shard series and
/// `storage_available_bytes` is measured by the caller.
pub fn render(shards: usize, storage_available_bytes: Option<u64>, uptime_seconds: u64) -> String {
    use std::fmt::Write;
    let mut o = String::with_capacity(4096);
    let _ = writeln!(
        o,
        "# HELP guts_up Whether the node is running.\n# TYPE guts_up gauge\nguts_up 1"
    );
    let _ = writeln!(o, "# HELP guts_uptime_seconds Seconds since the node started.\n# TYPE guts_uptime_seconds gauge\nguts_uptime_seconds {uptime_seconds}");
    let _ = writeln!(o, "# HELP guts_http_requests_total HTTP requests by class.\n# TYPE guts_http_requests_total counter");
    for (i, name) in CLASS_NAMES.iter().enumerate() {
        let _ = writeln!(
            o,
            "guts_http_requests_total{{class=\"{name}\"}} {}",
            REQUESTS[i].load(Relaxed)
        );
    }
    let _ = writeln!(o, "# HELP guts_http_responses_total HTTP error responses by status class.\n# TYPE guts_http_responses_total counter");
    let _ = writeln!(
        o,
        "guts_http_responses_total{{status=\"4xx\"}} {}",
        RESPONSES_4XX.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "guts_http_responses_total{{status=\"5xx\"}} {}",
        RESPONSES_5XX.load(Relaxed)
    );
    let _ = writeln!(o, "# HELP guts_http_request_duration_seconds Time to produce a response head.\n# TYPE guts_http_request_duration_seconds histogram");
    for (i, bound) in DURATION_BUCKETS_S.iter().enumerate() {
        let _ = writeln!(
            o,
            "guts_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            DURATION_BUCKETS[i].load(Relaxed)
        );
    }
    let count = DURATION_COUNT.load(Relaxed);
    let _ = writeln!(
        o,
        "guts_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        o,
        "guts_http_request_duration_seconds_sum {}",
        DURATION_SUM_US.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(o, "guts_http_request_duration_seconds_count {count}");
    let _ = writeln!(o, "# HELP guts_http_connections_open Open client connections per shard.\n# TYPE guts_http_connections_open gauge");
    for (shard, open) in CONNECTIONS.iter().enumerate().take(shards.min(SHARDS_MAX)) {
        let _ = writeln!(
            o,
            "guts_http_connections_open{{shard=\"{shard}\"}} {}",
            open.load(Relaxed)
        );
    }
    let _ = writeln!(o, "# HELP guts_http_connections_refused_total Connections refused (per-client limit, or the connection cap with none idle).\n# TYPE guts_http_connections_refused_total counter\nguts_http_connections_refused_total {}", CONNECTIONS_REFUSED.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_memory_budget_bytes The node's memory budget for requests.\n# TYPE guts_memory_budget_bytes gauge\nguts_memory_budget_bytes {}", MEMORY_BUDGET.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_memory_reserved_bytes Bytes of the memory budget reserved by requests now.\n# TYPE guts_memory_reserved_bytes gauge\nguts_memory_reserved_bytes {}", MEMORY_RESERVED.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_memory_refused_total Requests refused because the memory budget was spent.\n# TYPE guts_memory_refused_total counter\nguts_memory_refused_total {}", MEMORY_REFUSED.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_git_ref_updates_total Ref updates from pushes by outcome.\n# TYPE guts_git_ref_updates_total counter");
    let _ = writeln!(
        o,
        "guts_git_ref_updates_total{{result=\"ok\"}} {}",
        PUSH_REF_UPDATES_OK.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "guts_git_ref_updates_total{{result=\"rejected\"}} {}",
        PUSH_REF_UPDATES_REJECTED.load(Relaxed)
    );
    let _ = writeln!(o, "# HELP guts_git_pack_received_bytes_total Pack bytes received by pushes.\n# TYPE guts_git_pack_received_bytes_total counter\nguts_git_pack_received_bytes_total {}", PACK_BYTES_RECEIVED.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_git_pack_sent_bytes_total Pack bytes sent to clients.\n# TYPE guts_git_pack_sent_bytes_total counter\nguts_git_pack_sent_bytes_total {}", PACK_BYTES_SENT.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_git_pack_sent_objects_total Objects sent to clients.\n# TYPE guts_git_pack_sent_objects_total counter\nguts_git_pack_sent_objects_total {}", PACK_OBJECTS_SENT.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_consensus_block_height Height of the last finalized block.\n# TYPE guts_consensus_block_height gauge\nguts_consensus_block_height {}", BLOCK_HEIGHT.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_consensus_view Current consensus view (0 on a standalone node).\n# TYPE guts_consensus_view gauge\nguts_consensus_view {}", CONSENSUS_VIEW.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_p2p_peers_connected Authenticated peer connections.\n# TYPE guts_p2p_peers_connected gauge\nguts_p2p_peers_connected {}", P2P_PEERS.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_replication_lag_blocks Finalized blocks not yet applied here.\n# TYPE guts_replication_lag_blocks gauge\nguts_replication_lag_blocks {}", REPLICATION_LAG.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_consensus_transactions_total Transactions finalized.\n# TYPE guts_consensus_transactions_total counter\nguts_consensus_transactions_total {}", BLOCK_TRANSACTIONS.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_auth_failures_total Failed authentication attempts (malformed, wrong or revoked credentials).\n# TYPE guts_auth_failures_total counter\nguts_auth_failures_total {}", AUTH_FAILURES.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_auth_rate_limited_total Requests refused with 429 after too many failed attempts from their address.\n# TYPE guts_auth_rate_limited_total counter\nguts_auth_rate_limited_total {}", AUTH_RATE_LIMITED.load(Relaxed));
    let _ = writeln!(o, "# HELP guts_p2p_peers_connected Connected peers (a single-validator node has none).\n# TYPE guts_p2p_peers_connected gauge\nguts_p2p_peers_connected 0");
    if let Some(avail) = storage_available_bytes {
        let _ = writeln!(o, "# HELP guts_storage_available_bytes Free bytes on the data directory's file system.\n# TYPE guts_storage_available_bytes gauge\nguts_storage_available_bytes {avail}");
    }
    o
}
