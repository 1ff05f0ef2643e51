//! Node metrics on one `prometheus` registry, rendered in the Prometheus
//! text format by the metrics endpoint. Names are static and documented in
//! `docs/metrics.md`; per-shard series carry a `shard` label.
//!
//! Hot paths only touch atomics: the counters and gauges are resolved to
//! their series once (at first use, or per thread for the request
//! histogram) and then incremented without a lookup. Values that are
//! measured rather than counted (storage, process, consensus progress) are
//! set by the node's monitor or at scrape time.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;

/// Request routes, the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    InfoRefs = 0,
    UploadPack = 1,
    ReceivePack = 2,
    Api = 3,
    Health = 4,
    Other = 5,
}

impl RequestClass {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            RequestClass::InfoRefs => "info_refs",
            RequestClass::UploadPack => "upload_pack",
            RequestClass::ReceivePack => "receive_pack",
            RequestClass::Api => "api",
            RequestClass::Health => "health",
            RequestClass::Other => "other",
        }
    }
}

/// Upper bounds of the request duration histogram, in seconds.
pub const DURATION_BUCKETS_S: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0,
];

/// Upper bounds of the finalization histogram, in seconds (1 ms .. 30 s).
pub const FINALIZATION_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the ref updates per block histogram (1 .. 100,000).
pub const BATCH_UPDATES_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0,
];

/// Every metric of the node.
struct Metrics {
    registry: Registry,
    up: IntGauge,
    uptime_seconds: IntGauge,
    requests: IntCounterVec,
    responses: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    shard_requests: IntCounterVec,
    connections_open: IntGaugeVec,
    connections_refused: IntCounter,
    memory_budget: IntGauge,
    memory_reserved: IntGauge,
    memory_refused: IntCounter,
    ref_updates: IntCounterVec,
    pack_bytes: IntCounterVec,
    pack_sent_objects: IntCounter,
    bundles_written: IntCounter,
    bundle_bytes: IntCounterVec,
    bundles_served: IntCounter,
    pack_cache_requests: IntCounterVec,
    pack_cache_bytes: IntGauge,
    pack_cache_entries: IntGauge,
    objects_ingested: IntCounter,
    block_height: IntGauge,
    consensus_view: IntGauge,
    consensus_transactions: IntCounter,
    finalization: Histogram,
    batch_updates: Histogram,
    peers: IntGauge,
    p2p_sent: IntCounter,
    p2p_received: IntCounter,
    replication_lag: IntGauge,
    auth_failures: IntCounter,
    auth_rate_limited: IntCounter,
    storage_available: IntGauge,
    storage_capacity: IntGauge,
    storage_used: IntGauge,
    storage_writable: IntGauge,
    repositories: IntGauge,
    repositories_damaged: IntGauge,
    build_info: IntGaugeVec,
    process_rss: IntGauge,
    process_virtual: IntGauge,
    process_open_fds: IntGauge,
    process_max_fds: IntGauge,
    process_threads: IntGauge,
    process_start_time: IntGauge,
    process_cpu: prometheus::Counter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "guts_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route and status code.",
        )
        .buckets(DURATION_BUCKETS_S.to_vec()),
        &["route", "status"],
    )
    .expect("static metric definition");
    r.register(Box::new(duration.clone()))
        .expect("metric registered once");
    let process_cpu = prometheus::Counter::new(
        "process_cpu_seconds_total",
        "User and system CPU time of the process, in seconds.",
    )
    .expect("static metric definition");
    r.register(Box::new(process_cpu.clone()))
        .expect("metric registered once");
    let p2p_bytes = counter_vec(
        &r,
        "guts_p2p_bytes_total",
        "Message bytes sent to and received from authenticated peers (every p2p channel).",
        &["direction"],
    );
    let m = Metrics {
        up: gauge(&r, "guts_up", "Whether the node is running."),
        uptime_seconds: gauge(&r, "guts_uptime_seconds", "Seconds since the node started."),
        requests: counter_vec(&r, "guts_http_requests_total", "HTTP requests by class.", &["class"]),
        responses: counter_vec(&r, "guts_http_responses_total", "HTTP error responses by status class.", &["status"]),
        duration,
        in_flight: gauge_vec(&r, "guts_http_requests_in_flight", "Requests being answered now (their response head not yet sent), per shard.", &["shard"]),
        shard_requests: counter_vec(&r, "guts_shard_requests_total", "HTTP requests answered, per shard.", &["shard"]),
        connections_open: gauge_vec(&r, "guts_http_connections_open", "Open client connections per shard.", &["shard"]),
        connections_refused: counter(&r, "guts_http_connections_refused_total", "Connections refused (per-client limit, or the connection cap with none idle)."),
        memory_budget: gauge(&r, "guts_memory_budget_bytes", "The node's memory budget for requests."),
        memory_reserved: gauge(&r, "guts_memory_reserved_bytes", "Bytes of the memory budget reserved by requests now."),
        memory_refused: counter(&r, "guts_memory_refused_total", "Requests refused because the memory budget was spent."),
        ref_updates: counter_vec(&r, "guts_git_ref_updates_total", "Ref updates from pushes by outcome.", &["result"]),
        pack_bytes: counter_vec(&r, "guts_git_pack_bytes_total", "Pack bytes received from pushes and sent to clients.", &["direction"]),
        pack_sent_objects: counter(&r, "guts_git_pack_sent_objects_total", "Objects sent to clients."),
        bundles_written: counter(&r, "guts_git_bundles_written_total", "Bundles of busy repositories written for bundle URIs."),
        bundle_bytes: counter_vec(&r, "guts_git_bundle_bytes_total", "Bytes of bundle files written and sent to clients.", &["direction"]),
        bundles_served: counter(&r, "guts_git_bundles_served_total", "Bundle file downloads begun (GET of a bundle URI)."),
        pack_cache_requests: counter_vec(&r, "guts_git_pack_cache_total", "Shared pack responses by event: `miss` (a clone computes its response for others to join), `join` (a clone joined one being computed), `hit` (a clone was answered from a complete one), `bypass` (not shared: table full of unfinished responses), `overflow` (a response outgrew its bound and stopped being shared), `fallback` (a reader computed the rest of a stopped response itself), `evicted` (a complete response dropped for room).", &["event"]),
        pack_cache_bytes: gauge(&r, "guts_git_pack_cache_bytes", "Bytes of pack responses held by the shared response table."),
        pack_cache_entries: gauge(&r, "guts_git_pack_cache_entries", "Pack responses in the shared response table (being computed or complete)."),
        objects_ingested: counter(&r, "guts_git_objects_ingested_total", "Objects of pushed packs that passed every check."),
        block_height: gauge(&r, "guts_consensus_block_height", "Height of the last block applied here (kept across restarts)."),
        consensus_view: gauge(&r, "guts_consensus_view", "Current consensus view (0 on a standalone node)."),
        consensus_transactions: counter(&r, "guts_consensus_transactions_total", "Transactions in blocks applied since the node started."),
        finalization: histogram(&r, "guts_consensus_finalization_seconds", "Time from a transaction's submission to the ordering service to its outcome, finalized and applied durably here (what a pusher waits for).", &FINALIZATION_BUCKETS_S),
        batch_updates: histogram(&r, "guts_consensus_batch_updates", "Ref updates per finalized block applied here (blocks without ref updates are not observed).", &BATCH_UPDATES_BUCKETS),
        peers: gauge(&r, "guts_p2p_peers_connected", "Authenticated peer connections (0 on a standalone node)."),
        p2p_sent: p2p_bytes.with_label_values(&["sent"]),
        p2p_received: p2p_bytes.with_label_values(&["received"]),
        replication_lag: gauge(&r, "guts_replication_lag_blocks", "Finalized blocks not yet applied here."),
        auth_failures: counter(&r, "guts_auth_failures_total", "Failed authentication attempts (malformed, wrong or revoked credentials)."),
        auth_rate_limited: counter(&r, "guts_auth_rate_limited_total", "Requests refused with 429 after too many failed attempts from their address."),
        storage_available: gauge(&r, "guts_storage_available_bytes", "Free bytes on the data directory's file system (for the node's user)."),
        storage_capacity: gauge(&r, "guts_storage_capacity_bytes", "Size of the data directory's file system."),
        storage_used: gauge(&r, "guts_storage_used_bytes", "Bytes of the files in the data directory."),
        storage_writable: gauge(&r, "guts_storage_writable", "1 if the node could write to its data directory at the last check, else 0."),
        repositories: gauge(&r, "guts_repositories", "Repositories in the data directory."),
        repositories_damaged: gauge(&r, "guts_repositories_damaged", "Repositories whose ref log failed its check at start (served with an error until repaired)."),
        build_info: gauge_vec(&r, "guts_build_info", "Always 1; the version of the running binary as a label.", &["version"]),
        process_rss: gauge(&r, "process_resident_memory_bytes", "Resident memory of the process."),
        process_virtual: gauge(&r, "process_virtual_memory_bytes", "Virtual memory of the process."),
        process_open_fds: gauge(&r, "process_open_fds", "Open file descriptors of the process."),
        process_max_fds: gauge(&r, "process_max_fds", "The process's open-file limit."),
        process_threads: gauge(&r, "process_threads", "Threads of the process."),
        process_start_time: gauge(&r, "process_start_time_seconds", "Start time of the process, seconds since the Unix epoch."),
        process_cpu,
        registry: r,
    };
    m.up.set(1);
    for result in ["ok", "rejected"] {
        m.ref_updates.with_label_values(&[result]);
    }
    for direction in ["received", "sent"] {
        m.pack_bytes.with_label_values(&[direction]);
    }
    for direction in ["written", "sent"] {
        m.bundle_bytes.with_label_values(&[direction]);
    }
    for event in PACK_CACHE_EVENTS {
        m.pack_cache_requests.with_label_values(&[event]);
    }
    for status in ["4xx", "5xx"] {
        m.responses.with_label_values(&[status]);
    }
    for class in [
        RequestClass::InfoRefs,
        RequestClass::UploadPack,
        RequestClass::ReceivePack,
        RequestClass::Api,
        RequestClass::Health,
        RequestClass::Other,
    ] {
        m.requests.with_label_values(&[class.name()]);
    }
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    m
});

/// The series of one shard, resolved once.
struct ShardSeries {
    in_flight: IntGauge,
    requests: IntCounter,
    connections_open: IntGauge,
}

thread_local! {
    /// Request histogram series used by this thread, by route and status.
    static DURATIONS: RefCell<HashMap<(RequestClass, u16), Histogram>> = RefCell::new(HashMap::new());
    /// Series of the shard this thread runs, resolved at first use.
    static SHARD: RefCell<Option<(usize, ShardSeries)>> = const { RefCell::new(None) };
}

fn with_shard<R>(shard: usize, f: impl FnOnce(&ShardSeries) -> R) -> R {
    SHARD.with(|s| {
        let mut s = s.borrow_mut();
        if s.as_ref().map(|(id, _)| *id) != Some(shard) {
            let label = shard.to_string();
            let m = &*METRICS;
            *s = Some((
                shard,
                ShardSeries {
                    in_flight: m.in_flight.with_label_values(&[&label]),
                    requests: m.shard_requests.with_label_values(&[&label]),
                    connections_open: m.connections_open.with_label_values(&[&label]),
                },
            ));
        }
        let (_, series) = s.as_ref().expect("set above");
        f(series)
    })
}

/// Create the per-shard series of `shards` shards (so they exist at 0
/// before the first request).
pub fn init_shards(shards: usize) {
    let m = &*METRICS;
    for shard in 0..shards {
        let label = shard.to_string();
        m.in_flight.with_label_values(&[&label]);
        m.shard_requests.with_label_values(&[&label]);
        m.connections_open.with_label_values(&[&label]);
    }
}

/// A request started on `shard`: counted in flight until the guard drops.
pub fn request_started(shard: usize) -> InFlight {
    with_shard(shard, |s| s.in_flight.inc());
    InFlight { shard }
}

/// A request in flight (see [`request_started`]).
pub struct InFlight {
    shard: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        with_shard(self.shard, |s| s.in_flight.dec());
    }
}

/// Count one request answered on `shard`, with its duration and status.
pub fn record_request(shard: usize, class: RequestClass, status: u16, seconds: f64) {
    let m = &*METRICS;
    m.requests.with_label_values(&[class.name()]).inc();
    if (400..500).contains(&status) {
        m.responses.with_label_values(&["4xx"]).inc();
    } else if status >= 500 {
        m.responses.with_label_values(&["5xx"]).inc();
    }
    with_shard(shard, |s| s.requests.inc());
    DURATIONS.with(|d| {
        d.borrow_mut()
            .entry((class, status))
            .or_insert_with(|| {
                m.duration
                    .with_label_values(&[class.name(), &status.to_string()])
            })
            .observe(seconds)
    });
}

/// Set the number of open connections of `shard`.
pub fn set_connections(shard: usize, open: usize) {
    with_shard(shard, |s| s.connections_open.set(open as i64));
}

/// Count a connection refused (per-client limit, or the shard's cap with
/// nothing idle to close).
pub fn record_connection_refused() {
    METRICS.connections_refused.inc();
}

/// Count a request refused because the memory budget was spent.
pub fn record_memory_refused() {
    METRICS.memory_refused.inc();
}

/// The node's memory budget and what is reserved of it now.
pub fn set_memory(reserved: u64, budget: u64) {
    METRICS.memory_reserved.set(reserved as i64);
    METRICS.memory_budget.set(budget as i64);
}

/// Count ref updates applied or rejected.
pub fn record_ref_updates(ok: u64, rejected: u64) {
    METRICS.ref_updates.with_label_values(&["ok"]).inc_by(ok);
    METRICS
        .ref_updates
        .with_label_values(&["rejected"])
        .inc_by(rejected);
}

/// Count pack bytes received by pushes.
pub fn record_pack_received(bytes: u64) {
    METRICS
        .pack_bytes
        .with_label_values(&["received"])
        .inc_by(bytes);
}

/// Count the objects of a pushed pack that passed its checks.
pub fn record_objects_ingested(objects: u64) {
    METRICS.objects_ingested.inc_by(objects);
}

/// Events of the shared pack response table (the `event` label).
pub const PACK_CACHE_EVENTS: [&str; 7] = [
    "miss", "join", "hit", "bypass", "overflow", "fallback", "evicted",
];

/// Count an event of the shared pack response table.
pub fn record_pack_cache(event: &'static str) {
    METRICS
        .pack_cache_requests
        .with_label_values(&[event])
        .inc();
}

/// Bytes and entries held by the shared pack response table.
pub fn set_pack_cache_held(bytes: u64, entries: usize) {
    METRICS.pack_cache_bytes.set(bytes as i64);
    METRICS.pack_cache_entries.set(entries as i64);
}

/// Count pack bytes and objects sent to clients.
pub fn record_pack_sent(bytes: u64, objects: u64) {
    if bytes > 0 {
        METRICS
            .pack_bytes
            .with_label_values(&["sent"])
            .inc_by(bytes);
    }
    METRICS.pack_sent_objects.inc_by(objects);
}

/// Count a bundle written, of `bytes` bytes.
pub fn record_bundle_written(bytes: u64) {
    METRICS.bundles_written.inc();
    METRICS
        .bundle_bytes
        .with_label_values(&["written"])
        .inc_by(bytes);
}

/// Count a bundle download begun.
pub fn record_bundle_served() {
    METRICS.bundles_served.inc();
}

/// Count bytes of a bundle file sent.
pub fn record_bundle_sent_bytes(bytes: u64) {
    METRICS
        .bundle_bytes
        .with_label_values(&["sent"])
        .inc_by(bytes);
}

/// Count a failed authentication attempt (bad, wrong or revoked credentials).
pub fn record_auth_failure() {
    METRICS.auth_failures.inc();
}

/// Count a request refused because its client failed authentication too often.
pub fn record_auth_rate_limited() {
    METRICS.auth_rate_limited.inc();
}

static REPLICATION_LAG: AtomicU64 = AtomicU64::new(0);
static CONSENSUS_VIEW: AtomicU64 = AtomicU64::new(0);
static P2P_PEERS: AtomicU64 = AtomicU64::new(0);
static BLOCK_HEIGHT: AtomicU64 = AtomicU64::new(0);

/// Progress of the consensus core of a network node: its current view,
/// connected peers, and how many finalized blocks it has yet to apply.
pub fn record_network(view: u64, peers: u64, lag_blocks: u64) {
    CONSENSUS_VIEW.store(view, Relaxed);
    P2P_PEERS.store(peers, Relaxed);
    REPLICATION_LAG.store(lag_blocks, Relaxed);
    METRICS.consensus_view.set(view as i64);
    METRICS.peers.set(peers as i64);
    METRICS.replication_lag.set(lag_blocks as i64);
}

/// Height of the last block applied here.
pub fn block_height() -> u64 {
    BLOCK_HEIGHT.load(Relaxed)
}

/// Finalized blocks this node has not applied yet (0 on a standalone node).
pub fn replication_lag() -> u64 {
    REPLICATION_LAG.load(Relaxed)
}

/// Current consensus view (0 on a standalone node).
pub fn consensus_view() -> u64 {
    CONSENSUS_VIEW.load(Relaxed)
}

/// Connected peers (0 on a standalone node).
pub fn peers_connected() -> u64 {
    P2P_PEERS.load(Relaxed)
}

/// Record a block applied at `height` with `transactions` transactions
/// (0 when only restoring the height persisted by an earlier run).
pub fn record_block(height: u64, transactions: u64) {
    BLOCK_HEIGHT.fetch_max(height, Relaxed);
    METRICS.block_height.set(BLOCK_HEIGHT.load(Relaxed) as i64);
    METRICS.consensus_transactions.inc_by(transactions);
}

/// Record one transaction this node submitted to the ordering service
/// whose outcome came back `seconds` after submission, finalized and
/// applied durably (applied or rejected by the finalized state).
pub fn record_finalization(seconds: f64) {
    METRICS.finalization.observe(seconds);
}

/// Record a finalized block applied here that carried `ref_updates` ref
/// updates (blocks without any are not observed).
pub fn record_batch_updates(ref_updates: u64) {
    if ref_updates > 0 {
        METRICS.batch_updates.observe(ref_updates as f64);
    }
}

/// Count message bytes sent to authenticated peers (once per recipient).
pub fn record_p2p_sent(bytes: u64) {
    METRICS.p2p_sent.inc_by(bytes);
}

/// Count message bytes received from authenticated peers.
pub fn record_p2p_received(bytes: u64) {
    METRICS.p2p_received.inc_by(bytes);
}

/// What the node measured of its data directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageFacts {
    pub available_bytes: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub writable: bool,
    pub repositories: u64,
}

/// Record the last measurement of the data directory.
pub fn set_storage(s: &StorageFacts) {
    let m = &*METRICS;
    m.storage_available.set(s.available_bytes as i64);
    m.storage_capacity.set(s.capacity_bytes as i64);
    m.storage_used.set(s.used_bytes as i64);
    m.storage_writable.set(i64::from(s.writable));
    m.repositories.set(s.repositories as i64);
}

/// Record how many repositories failed their check at start.
pub fn set_repositories_damaged(n: usize) {
    METRICS.repositories_damaged.set(n as i64);
}

/// What the node measured of its own process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFacts {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub threads: u64,
    pub start_time_unix_s: u64,
    pub cpu_seconds: f64,
}

/// Record the process measurements (taken at scrape time).
pub fn set_process(p: &ProcessFacts, uptime_seconds: u64) {
    let m = &*METRICS;
    m.uptime_seconds.set(uptime_seconds as i64);
    m.process_rss.set(p.resident_bytes as i64);
    m.process_virtual.set(p.virtual_bytes as i64);
    m.process_open_fds.set(p.open_fds as i64);
    m.process_max_fds.set(p.max_fds as i64);
    m.process_threads.set(p.threads as i64);
    m.process_start_time.set(p.start_time_unix_s as i64);
    let delta = p.cpu_seconds - m.process_cpu.get();
    if delta > 0.0 {
        m.process_cpu.inc_by(delta);
    }
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render every metric in the Prometheus text format.
pub fn render() -> String {
    let families = METRICS.registry.gather();
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "metrics not rendered");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_once_with_help_and_type() {
        init_shards(2);
        record_request(1, RequestClass::Api, 200, 0.002);
        let text = render();
        let mut types = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(types.insert(name.to_string()), "{name} declared twice");
        }
        for name in [
            "guts_http_request_duration_seconds",
            "guts_http_requests_in_flight",
            "guts_git_pack_bytes_total",
            "guts_consensus_block_height",
            "guts_consensus_finalization_seconds",
            "guts_consensus_batch_updates",
            "guts_p2p_bytes_total",
            "process_cpu_seconds_total",
        ] {
            assert!(types.contains(name), "{name} missing from\n{text}");
        }
        assert!(text
            .contains("guts_http_request_duration_seconds_count{route=\"api\",status=\"200\"} 1"));
        assert!(text.contains("guts_shard_requests_total{shard=\"1\"} 1"));
        assert!(text.contains("guts_http_requests_in_flight{shard=\"0\"} 0"));
        // Both directions exist at 0 before any peer is reached.
        assert!(text.contains("guts_p2p_bytes_total{direction=\"sent\"} 0"));
        assert!(text.contains("guts_p2p_bytes_total{direction=\"received\"} 0"));
    }

    #[test]
    fn blocks_without_ref_updates_are_not_observed() {
        let count = || METRICS.batch_updates.get_sample_count();
        let before = count();
        record_batch_updates(0);
        assert_eq!(count(), before);
        record_batch_updates(3);
        assert_eq!(count(), before + 1);
    }
}
