//! Metrics, health, status and the consensus API of a started node: every
//! metric in docs/metrics.md moves when the thing it counts happens (a
//! push, a clone, an auth failure, a full disk...), the exposition passes
//! the text format's rules (and promtool's, when it is installed), and the
//! health endpoints follow the data directory.

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Longest a measured value (monitor thread, data directory walk) may take
/// to show a change.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(30);

/// One scrape: series (name with its labels, as rendered) to value.
fn scrape(node: &Node) -> HashMap<String, f64> {
    let (status, body) = http_anonymous(node.metrics, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of one series (0 if absent).
fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The sum of every series of a family (name, with any labels).
fn family_sum(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// The metric names of docs/metrics.md's table.
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
        })
        .filter(|n| n.starts_with("guts_") || n.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

fn guts_node(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_guts-node"))
        .args(args)
        .env("GUTS_LOG", "warn")
        .output()
        .expect("run guts-node")
}

fn status_json(node: &Node) -> (Option<i32>, serde_json::Value) {
    let out = guts_node(&["--api-addr", &node.api.to_string(), "status", "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn get_json(node: &Node, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_anonymous(node.api, "GET", path, &[], b"").unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// A receive-pack request whose body never completes: in flight until closed.
fn request_in_flight(node: &Node) -> TcpStream {
    let mut s = TcpStream::connect(node.api).unwrap();
    let head = format!(
        "POST /git/alice/metrics.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: 1000\r\n\r\n0064{}",
        node.admin_auth(),
        // A command line begun and never finished: the node waits for it
        // (a whole flush would be an empty push, answered at once).
        "0".repeat(20)
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Metrics covered by another test, and which.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    (
        "guts_git_bundles_written_total",
        "tests/bundle_uri.rs (a busy repository gets a bundle)",
    ),
    (
        "guts_git_bundle_bytes_total",
        "tests/bundle_uri.rs (a bundle written and downloaded)",
    ),
    (
        "guts_git_bundles_served_total",
        "tests/bundle_uri.rs (a clone downloads the bundle)",
    ),
    (
        "guts_memory_reserved_bytes",
        "tests/hostile_load.rs (budget spent)",
    ),
    (
        "guts_memory_refused_total",
        "tests/hostile_load.rs (budget spent)",
    ),
    (
        "guts_auth_rate_limited_total",
        "tests/auth.rs (failures past the limit)",
    ),
    ("guts_consensus_view", "tests/network.rs (full node test)"),
    (
        "guts_p2p_peers_connected",
        "tests/network.rs (full node test)",
    ),
    ("guts_p2p_bytes_total", "tests/network.rs (full node test)"),
    (
        "guts_replication_lag_blocks",
        "tests/network.rs (present on a network node; 0 once caught up)",
    ),
    (
        "guts_storage_writable",
        "health_follows_the_data_directory (below)",
    ),
    (
        "guts_repositories_damaged",
        "a_damaged_repository_is_counted_and_named (below)",
    ),
];

#[test]
fn every_documented_metric_moves_when_exercised() {
    let node = Node::start_with(&["--connections-per-client-max", "6"]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let m0 = scrape(&node);
    let mut moved: BTreeSet<&str> = BTreeSet::new();

    // Facts of the process and its disk, present from the start.
    for name in [
        "guts_up",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
        "guts_storage_available_bytes",
        "guts_storage_capacity_bytes",
    ] {
        assert!(value(&m0, name) > 0.0, "{name} is {}", value(&m0, name));
        moved.insert(name);
    }
    let version = format!(
        "guts_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m0, &version), 1.0);
    moved.insert("guts_build_info");

    // A repository created through the API, a push, a rejected push, a clone.
    let url = node.create_repo("alice", "metrics");
    let wt = new_worktree(s, "wt");
    for i in 0..3 {
        commit_file(&wt, &format!("f{i}"), &format!("{i}\n"), &format!("c{i}"));
    }
    let created = scrape(&node);
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let pushed = scrape(&node);
    // The push was one transaction, finalized in a block of one ref update
    // (a standalone node's sequencer finalizes every block).
    for name in [
        "guts_consensus_finalization_seconds",
        "guts_consensus_batch_updates",
    ] {
        let count = format!("{name}_count");
        let sum = format!("{name}_sum");
        assert!(
            value(&pushed, &count) > value(&created, &count),
            "{count}: {} -> {}",
            value(&created, &count),
            value(&pushed, &count)
        );
        assert!(value(&pushed, &sum) > 0.0, "{sum} is 0");
        assert_eq!(
            value(&pushed, &format!("{name}_bucket{{le=\"+Inf\"}}")),
            value(&pushed, &count)
        );
        moved.insert(name);
    }
    assert!(
        value(&pushed, "guts_consensus_batch_updates_sum")
            >= value(&created, "guts_consensus_batch_updates_sum") + 1.0
    );
    // No peers: nothing crosses the p2p network, but the series exist.
    for direction in ["sent", "received"] {
        let series = format!("guts_p2p_bytes_total{{direction=\"{direction}\"}}");
        assert_eq!(pushed.get(&series), Some(&0.0), "{series}");
    }
    // refs/heads/main exists: refs/heads/main/x is a D/F conflict the node refuses.
    let out = git_out(&wt, &["push", &url, "HEAD:refs/heads/main/x"]);
    assert!(!out.status.success(), "D/F conflicting push accepted");
    let clone = s.join("clone");
    git_ok(s, &["clone", "-q", &url, clone.to_str().unwrap()]);
    fsck(&clone);
    // Wrong credentials.
    let (status, _) = http_anonymous(
        node.api,
        "GET",
        "/api/repos",
        &[("Authorization", &basic_auth("admin", "guts_wrong"))],
        b"",
    )
    .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http_anonymous(node.api, "GET", "/health", &[], b"").unwrap();
    assert_eq!(status, 200);
    let (status, _) = http_anonymous(node.api, "GET", "/nowhere", &[], b"").unwrap();
    assert_eq!(status, 404);

    let m1 = scrape(&node);
    let grew = |moved: &mut BTreeSet<&str>, name: &'static str, series: &str| {
        assert!(
            value(&m1, series) > value(&m0, series),
            "{series}: {} -> {}",
            value(&m0, series),
            value(&m1, series)
        );
        moved.insert(name);
    };
    for class in [
        "info_refs",
        "upload_pack",
        "receive_pack",
        "api",
        "health",
        "other",
    ] {
        grew(
            &mut moved,
            "guts_http_requests_total",
            &format!("guts_http_requests_total{{class=\"{class}\"}}"),
        );
    }
    grew(
        &mut moved,
        "guts_http_responses_total",
        "guts_http_responses_total{status=\"4xx\"}",
    );
    grew(
        &mut moved,
        "guts_http_request_duration_seconds",
        "guts_http_request_duration_seconds_count{route=\"receive_pack\",status=\"200\"}",
    );
    grew(
        &mut moved,
        "guts_http_request_duration_seconds",
        "guts_http_request_duration_seconds_bucket{route=\"api\",status=\"401\",le=\"+Inf\"}",
    );
    grew(
        &mut moved,
        "guts_shard_requests_total",
        "guts_shard_requests_total{shard=\"0\"}",
    );
    grew(
        &mut moved,
        "guts_git_ref_updates_total",
        "guts_git_ref_updates_total{result=\"ok\"}",
    );
    grew(
        &mut moved,
        "guts_git_ref_updates_total",
        "guts_git_ref_updates_total{result=\"rejected\"}",
    );
    grew(
        &mut moved,
        "guts_git_pack_bytes_total",
        "guts_git_pack_bytes_total{direction=\"received\"}",
    );
    grew(
        &mut moved,
        "guts_git_pack_bytes_total",
        "guts_git_pack_bytes_total{direction=\"sent\"}",
    );
    grew(
        &mut moved,
        "guts_git_pack_sent_objects_total",
        "guts_git_pack_sent_objects_total",
    );
    // The clone's response was computed for identical clones to share,
    // and is kept (the joins and hits: tests/pack_cache.rs).
    grew(
        &mut moved,
        "guts_git_pack_cache_total",
        "guts_git_pack_cache_total{event=\"miss\"}",
    );
    grew(
        &mut moved,
        "guts_git_pack_cache_bytes",
        "guts_git_pack_cache_bytes",
    );
    grew(
        &mut moved,
        "guts_git_pack_cache_entries",
        "guts_git_pack_cache_entries",
    );
    grew(
        &mut moved,
        "guts_git_objects_ingested_total",
        "guts_git_objects_ingested_total",
    );
    // 3 commits, 3 trees, 3 blobs.
    assert!(value(&m1, "guts_git_objects_ingested_total") >= 9.0);
    grew(
        &mut moved,
        "guts_consensus_block_height",
        "guts_consensus_block_height",
    );
    grew(
        &mut moved,
        "guts_consensus_transactions_total",
        "guts_consensus_transactions_total",
    );
    grew(
        &mut moved,
        "guts_auth_failures_total",
        "guts_auth_failures_total",
    );
    grew(
        &mut moved,
        "guts_memory_budget_bytes",
        "guts_memory_budget_bytes",
    );
    // CPU time is counted in clock ticks (10 ms): the work above may fit in
    // one, so it must have been counted, not necessarily grown since m0.
    assert!(value(&m1, "process_cpu_seconds_total") > 0.0);
    moved.insert("process_cpu_seconds_total");

    // Measured by the monitor: the data directory grew, a repository appeared.
    let used0 = value(&m0, "guts_storage_used_bytes");
    assert!(
        wait_until(MEASURE_TIMEOUT, || {
            let m = scrape(&node);
            value(&m, "guts_storage_used_bytes") > used0
                && value(&m, "guts_repositories") >= 1.0
                && value(&m, "guts_uptime_seconds") >= 1.0
        }),
        "storage use, repositories or uptime never moved"
    );
    moved.extend([
        "guts_storage_used_bytes",
        "guts_repositories",
        "guts_uptime_seconds",
    ]);

    // Requests in flight, open connections and descriptors, refusals.
    let before = scrape(&node);
    let held = request_in_flight(&node);
    assert!(
        wait_until(MEASURE_TIMEOUT, || {
            let m = scrape(&node);
            value(&m, "guts_http_requests_in_flight{shard=\"0\"}") >= 1.0
                && value(&m, "guts_http_connections_open{shard=\"0\"}") >= 1.0
        }),
        "the request in flight was never counted: {:?}",
        scrape(&node)
    );
    moved.extend(["guts_http_requests_in_flight", "guts_http_connections_open"]);
    let mut idle = Vec::new();
    let mut refused = false;
    for _ in 0..16 {
        let mut c = TcpStream::connect(node.api).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 429") => {
                refused = true;
                break;
            }
            _ => idle.push(c),
        }
    }
    assert!(refused, "the per-client connection limit never refused");
    let m2 = scrape(&node);
    assert!(
        value(&m2, "guts_http_connections_refused_total")
            > value(&before, "guts_http_connections_refused_total")
    );
    moved.insert("guts_http_connections_refused_total");
    assert!(
        value(&m2, "process_open_fds") >= value(&before, "process_open_fds") + 4.0,
        "open fds {} -> {}",
        value(&before, "process_open_fds"),
        value(&m2, "process_open_fds")
    );
    moved.insert("process_open_fds");
    drop(held);
    drop(idle);
    assert!(
        wait_until(MEASURE_TIMEOUT, || {
            let m = scrape(&node);
            value(&m, "guts_http_requests_in_flight{shard=\"0\"}") == 0.0
        }),
        "in-flight count did not come back to 0"
    );

    // Every documented metric was seen moving here or in the named test.
    let elsewhere: BTreeSet<&str> = COVERED_ELSEWHERE.iter().map(|(n, _)| *n).collect();
    for name in documented_metrics() {
        assert!(
            moved.contains(name.as_str()) || elsewhere.contains(name.as_str()),
            "{name} is documented but no test moves it"
        );
        assert!(
            family_sum(&m2, &name) > 0.0
                || m2.keys().any(|k| k.starts_with(&name))
                || name == "guts_memory_reserved_bytes",
            "{name} is documented but not exported"
        );
    }
}

/// Check the text exposition format by its rules: every sample belongs to
/// a family declared once with HELP and TYPE, names are valid, counters end
/// in `_total`, histogram buckets grow with `le` and end in `+Inf` equal to
/// `_count`.
fn check_exposition(text: &str) -> Result<(), String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !helps.insert(name.to_string()) {
                return Err(format!("HELP twice for {name}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("bad type {kind} for {name}"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("TYPE twice for {name}"));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line}"))?,
            ),
            None => (series, ""),
        };
        if !valid_name(name) {
            return Err(format!("bad name {name}"));
        }
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("bad label {pair}"))?;
            if !(valid_name(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2) {
                return Err(format!("bad label {pair} in {line}"));
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .ok_or_else(|| format!("{name} has no TYPE before its samples"))?;
        if !helps.contains(family) {
            return Err(format!("{family} has no HELP"));
        }
        if kind == "counter" && value < 0.0 {
            return Err(format!("negative counter: {line}"));
        }
        if kind == "histogram" {
            let others: Vec<&str> = labels
                .split(',')
                .filter(|p| !p.is_empty() && !p.starts_with("le="))
                .collect();
            let key = format!("{family}{{{}}}", others.join(","));
            if name.ends_with("_bucket") {
                let le = labels
                    .split(',')
                    .find_map(|p| p.strip_prefix("le=\""))
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| format!("bucket without le: {line}"))?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le: {line}"))?
                };
                buckets.entry(key).or_default().push((le, value));
            } else if name.ends_with("_count") {
                counts.insert(key, value);
            }
        }
    }
    for (key, b) in &buckets {
        for w in b.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                return Err(format!("{key}: buckets out of order or shrinking: {b:?}"));
            }
        }
        match b.last() {
            Some((le, v)) if le.is_infinite() && Some(v) == counts.get(key) => {}
            _ => return Err(format!("{key}: no +Inf bucket equal to _count")),
        }
    }
    Ok(())
}

#[test]
fn the_exposition_follows_the_text_format_and_promtool_accepts_it() {
    let node = Node::start();
    let scratch = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "fmt");
    let wt = new_worktree(scratch.path(), "wt");
    commit_file(&wt, "a", "a\n", "a");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let (status, body) = http_anonymous(node.metrics, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // The checker itself refuses what it should.
    assert!(check_exposition("x_total 1\n").is_err());
    assert!(check_exposition("# HELP c c\n# TYPE c counter\nc 1\n").is_err());
    assert!(check_exposition(
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
    )
    .is_err());

    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts.yml");
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED promtool checks: promtool is not installed (apt-get install prometheus); the format rules above were checked"
        );
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_block_height_survives_a_restart_and_blocks_are_answered() {
    let mut node = Node::start();
    let scratch = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "blocks");
    let wt = new_worktree(scratch.path(), "wt");
    let c1 = commit_file(&wt, "a", "a\n", "a");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    let height = value(&scrape(&node), "guts_consensus_block_height");
    assert!(height >= 2.0, "creation and push are two blocks: {height}");

    // The push's block names the ref update.
    let (status, block) = get_json(&node, &format!("/api/consensus/blocks/{height}"));
    assert_eq!(status, 200, "{block}");
    assert_eq!(block["height"], height as u64);
    let tx = &block["transactions"][0];
    assert_eq!(tx["type"], "ref_update", "{block}");
    assert_eq!(tx["repo"], "alice/blocks");
    assert_eq!(tx["refs"][0]["ref"], "refs/heads/main");
    assert_eq!(tx["refs"][0]["new"], c1.as_str());
    let (status, block) = get_json(&node, &format!("/api/consensus/blocks/{}", height - 1.0));
    assert_eq!(status, 200);
    assert_eq!(block["transactions"][0]["type"], "create_repository");
    let (status, genesis) = get_json(&node, "/api/consensus/blocks/0");
    assert_eq!(
        (status, genesis["transaction_count"].as_u64()),
        (200, Some(0))
    );
    let (status, v) = get_json(&node, "/api/consensus/blocks/999999");
    assert_eq!(status, 404, "{v}");
    let (status, v) = get_json(&node, "/api/consensus/blocks/abc");
    assert_eq!(status, 400, "{v}");
    let (status, _) = http_anonymous(node.api, "POST", "/api/consensus/status", &[], b"").unwrap();
    assert_eq!(status, 405);

    let (status, st) = get_json(&node, "/api/consensus/status");
    assert_eq!(status, 200);
    assert_eq!(st["role"], "standalone");
    assert_eq!(st["height"], height as u64);
    let (status, vals) = get_json(&node, "/api/consensus/validators");
    assert_eq!(status, 200);
    assert_eq!(
        vals["validators"].as_array().map(Vec::len),
        Some(1),
        "{vals}"
    );
    assert_eq!(vals["validators"][0]["self"], true);

    // After a crash the height is where it was, and goes on from there.
    node.restart();
    let m = scrape(&node);
    assert_eq!(value(&m, "guts_consensus_block_height"), height);
    let c2 = commit_file(&wt, "b", "b\n", "b");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    assert_eq!(
        value(&scrape(&node), "guts_consensus_block_height"),
        height + 1.0
    );
    let (_, block) = get_json(&node, &format!("/api/consensus/blocks/{}", height + 1.0));
    assert_eq!(block["transactions"][0]["refs"][0]["new"], c2.as_str());
    // Blocks from before the restart are still answered.
    let (status, _) = get_json(&node, &format!("/api/consensus/blocks/{height}"));
    assert_eq!(status, 200);
}

/// Make `DATA/repos` refuse writes: permission bits for an ordinary user,
/// and (since root ignores them) a directory where the node's write probe
/// puts its file.
fn break_storage(data_dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let repos = data_dir.join("repos");
    let probe = repos.join(".write-probe");
    assert!(
        wait_until(MEASURE_TIMEOUT, || std::fs::create_dir(&probe).is_ok()),
        "could not put a directory in the probe's place"
    );
    std::fs::set_permissions(&repos, std::fs::Permissions::from_mode(0o555)).unwrap();
    probe
}

fn repair_storage(data_dir: &Path, probe: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let repos = data_dir.join("repos");
    std::fs::set_permissions(&repos, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(probe).unwrap();
}

#[test]
fn health_follows_the_data_directory() {
    let node = Node::start();
    let (status, h) = get_json(&node, "/health");
    assert_eq!(status, 200, "{h}");
    // The disk check reads the host's disk: a machine with under 10 % free
    // is rightly reported as degraded (still ready above 2 %).
    let free = h["checks"]["disk_space"]["free_percent"].as_u64().unwrap();
    assert!(free >= 2, "this machine's disk is too full to test on: {h}");
    let (disk, overall) = if free >= 10 {
        ("ok", "ok")
    } else {
        ("warn", "degraded")
    };
    assert_eq!(h["status"], overall, "{h}");
    assert_eq!(h["checks"]["disk_space"]["status"], disk, "{h}");
    for check in ["storage_writable", "consensus", "peers", "repositories"] {
        assert_eq!(h["checks"][check]["status"], "ok", "{check}: {h}");
    }
    assert!(h["checks"]["disk_space"]["available_bytes"].as_u64() > Some(0));
    let (status, _) = get_json(&node, "/health/ready");
    assert_eq!(status, 200);
    assert_eq!(value(&scrape(&node), "guts_storage_writable"), 1.0);
    let fivexx = value(&scrape(&node), "guts_http_responses_total{status=\"5xx\"}");

    let probe = break_storage(&node.data_dir);
    assert!(
        wait_until(MEASURE_TIMEOUT, || {
            matches!(
                http_anonymous(node.api, "GET", "/health/ready", &[], b""),
                Ok((503, _))
            )
        }),
        "/health/ready stayed ready with an unwritable data directory"
    );
    let (status, h) = get_json(&node, "/health");
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["ready"], false);
    assert_eq!(h["checks"]["storage_writable"]["status"], "fail", "{h}");
    let (status, _) = http_anonymous(node.api, "GET", "/health/live", &[], b"").unwrap();
    assert_eq!(status, 200, "alive all the same");
    let m = scrape(&node);
    assert_eq!(value(&m, "guts_storage_writable"), 0.0);
    assert!(value(&m, "guts_http_responses_total{status=\"5xx\"}") > fivexx);
    let (code, st) = status_json(&node);
    assert_eq!(code, Some(3), "status exits 3 when not ready: {st}");
    assert_eq!(st["health"]["ready"], false);

    repair_storage(&node.data_dir, &probe);
    assert!(
        wait_until(MEASURE_TIMEOUT, || {
            matches!(
                http_anonymous(node.api, "GET", "/health/ready", &[], b""),
                Ok((200, _))
            )
        }),
        "/health/ready did not recover"
    );
    assert_eq!(value(&scrape(&node), "guts_storage_writable"), 1.0);
}

#[test]
fn a_damaged_repository_is_counted_and_named() {
    let mut node = Node::start();
    let scratch = tempfile::tempdir().unwrap();
    let url = node.create_repo("alice", "bad");
    let wt = new_worktree(scratch.path(), "wt");
    commit_file(&wt, "a", "a\n", "a");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    commit_file(&wt, "b", "b\n", "b");
    git_ok(&wt, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    assert_eq!(value(&scrape(&node), "guts_repositories_damaged"), 0.0);
    node.kill9();
    // Damage the first record: valid records follow, so it is corruption.
    let log = node.data_dir.join("repos/alice/bad.git/refs.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[14] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    node.spawn();
    assert_eq!(value(&scrape(&node), "guts_repositories_damaged"), 1.0);
    let (status, h) = get_json(&node, "/health");
    assert_eq!(status, 200, "the others are served: {h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["checks"]["repositories"]["status"], "warn");
    assert_eq!(
        h["checks"]["repositories"]["damaged"][0]["repo"],
        "alice/bad"
    );
    let (status, _) = get_json(&node, "/health/ready");
    assert_eq!(
        status, 200,
        "damage elsewhere does not make the node unready"
    );
}

#[test]
fn status_and_version_commands() {
    let out = guts_node(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("guts-node {}", env!("CARGO_PKG_VERSION"))
    );

    let node = Node::start();
    node.create_repo("alice", "one");
    let (code, st) = status_json(&node);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["role"], "standalone");
    assert!(st["height"].as_u64() >= Some(1), "{st}");
    assert!(st["disk"]["available_bytes"].as_u64() > Some(0), "{st}");
    assert!(st["disk"]["capacity_bytes"].as_u64() > Some(0), "{st}");
    assert_eq!(st["health"]["ready"], true);
    assert_eq!(st["peers"]["connected"], 0);
    assert!(
        wait_until(MEASURE_TIMEOUT, || status_json(&node).1["repositories"]
            ["count"]
            == 1),
        "status never counted the repository"
    );

    let out = guts_node(&["--api-addr", &node.api.to_string(), "status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "version:",
        "role:",
        "public key:",
        "height:",
        "peers:",
        "repositories:",
        "disk:",
        "health:",
    ] {
        assert!(text.contains(field), "{field} missing:\n{text}");
    }
    assert!(text.contains("standalone"), "{text}");

    // Nobody there: a clear error and a non-zero exit.
    let closed = format!("127.0.0.1:{}", free_port());
    let out = guts_node(&["--api-addr", &closed, "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to the node's API"), "{err}");
    // Bad arguments.
    let out = guts_node(&["status", "--bogus"]);
    assert!(!out.status.success());
    let out = guts_node(&["--api-addr", "not-an-address", "status"]);
    assert!(!out.status.success());
}

/// A scrape whose request head arrives in pieces is answered like any other.
#[test]
fn a_request_head_in_pieces_is_answered() {
    let node = Node::start();
    let mut s = TcpStream::connect(node.metrics).unwrap();
    for part in ["GET ", "/metrics", " HTTP/1.1\r\nHost: x\r\n", "\r\n"] {
        s.write_all(part.as_bytes()).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("guts_up 1"), "{answer}");
}
