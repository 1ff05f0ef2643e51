//! Health of the node as the health endpoints report it.
//!
//! The node's monitor (a thread of the binary) measures the data
//! directory and the consensus core about once a second and publishes a
//! [`NodeChecks`] here; the shards answer `/health` and `/health/ready`
//! from the last one (and their own list of damaged repositories), without
//! touching the disk on the request path.

use std::sync::{LazyLock, RwLock};

/// A node further behind the finalized chain than this is not ready.
pub const READY_LAG_MAX_BLOCKS: u64 = 8;
/// Below this share of its file system free, the data disk is "low"
/// (the health check degrades; the suggested alert fires).
pub const DISK_FREE_WARN_PERCENT: u64 = 10;
/// Below this share free, or [`DISK_FREE_READY_MIN_BYTES`], the node is
/// not ready (pushes would soon fail for lack of space).
pub const DISK_FREE_READY_MIN_PERCENT: u64 = 2;
/// Below this many free bytes the node is not ready, whatever the share.
pub const DISK_FREE_READY_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// A network node whose consensus view has not moved for this long is
/// "stalled" (views move every leader timeout even without pushes).
pub const CONSENSUS_STALL_MS: u64 = 60_000;

/// What this node is in its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// No genesis file: a single validator ordering its own pushes.
    #[default]
    Standalone,
    /// A validator of the genesis.
    Validator,
    /// Not in the validator set: follows finalized blocks, serves reads.
    Full,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Validator => "validator",
            Role::Full => "full",
        }
    }
}

/// One measurement of the node, published by its monitor.
#[derive(Debug, Clone, Default)]
pub struct NodeChecks {
    /// Whether a check has run yet (until then everything answers "starting").
    pub measured: bool,
    pub role: Role,
    /// The data directory accepted a write at the last check.
    pub storage_writable: bool,
    /// Why it did not (the error, without paths).
    pub storage_error: Option<String>,
    pub available_bytes: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub repositories: u64,
    pub height: u64,
    pub view: u64,
    pub lag_blocks: u64,
    /// Milliseconds since the consensus view (network) last moved.
    pub view_still_ms: u64,
    pub peers_connected: u64,
    /// Peers a validator needs connected for the network to make progress
    /// (quorum minus itself); 0 on a standalone node.
    pub peers_needed: u64,
}

static CHECKS: LazyLock<RwLock<NodeChecks>> = LazyLock::new(|| RwLock::new(NodeChecks::default()));

/// Publish the monitor's latest measurement.
pub fn publish(checks: NodeChecks) {
    *CHECKS.write().unwrap_or_else(|p| p.into_inner()) = checks;
}

/// The latest measurement.
pub fn latest() -> NodeChecks {
    CHECKS.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Serving, but an operator should look.
    Warn,
    /// Not fit to take traffic.
    Fail,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// The report of `/health` and `/health/ready`.
#[derive(Debug, Clone)]
pub struct Report {
    /// Worst level of every check.
    pub level: Level,
    /// Whether the node should take traffic (`/health/ready`): no check
    /// fails and it is not catching up.
    pub ready: bool,
    pub json: serde_json::Value,
}

fn check(level: Level, detail: String, extra: serde_json::Value) -> (Level, serde_json::Value) {
    let mut v = serde_json::json!({"status": level.name(), "detail": detail});
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    (level, v)
}

/// Evaluate `checks` (and this shard's damaged repositories).
pub fn evaluate(c: &NodeChecks, shard: usize, damaged: &[crate::repo::DamagedRepo]) -> Report {
    use serde_json::json;
    let mut items: Vec<(&str, (Level, serde_json::Value))> = Vec::new();
    if !c.measured {
        items.push((
            "storage_writable",
            check(Level::Warn, "not checked yet".into(), json!({})),
        ));
    } else if c.storage_writable {
        items.push((
            "storage_writable",
            check(
                Level::Ok,
                "the data directory accepts writes".into(),
                json!({}),
            ),
        ));
    } else {
        items.push((
            "storage_writable",
            check(
                Level::Fail,
                format!(
                    "the data directory refuses writes: {}",
                    c.storage_error.as_deref().unwrap_or("unknown error")
                ),
                json!({}),
            ),
        ));
    }
    if c.measured {
        let percent_free = (c.available_bytes as u128 * 100)
            .checked_div(c.capacity_bytes as u128)
            .unwrap_or(100) as u64;
        let extra = json!({"available_bytes": c.available_bytes, "capacity_bytes": c.capacity_bytes,
            "used_bytes": c.used_bytes, "free_percent": percent_free});
        let too_low = c.available_bytes < DISK_FREE_READY_MIN_BYTES
            || percent_free < DISK_FREE_READY_MIN_PERCENT;
        let item = if too_low {
            check(Level::Fail, format!("{percent_free}% free: nearly full (not ready below {DISK_FREE_READY_MIN_PERCENT}% or {DISK_FREE_READY_MIN_BYTES} bytes)"), extra)
        } else if percent_free < DISK_FREE_WARN_PERCENT {
            check(
                Level::Warn,
                format!("{percent_free}% free: low (warning below {DISK_FREE_WARN_PERCENT}%)"),
                extra,
            )
        } else {
            check(Level::Ok, format!("{percent_free}% free"), extra)
        };
        items.push(("disk_space", item));
    }
    let consensus_extra = json!({"role": c.role.name(), "height": c.height, "view": c.view, "lag_blocks": c.lag_blocks});
    let consensus = if c.role == Role::Standalone {
        check(
            Level::Ok,
            "standalone: blocks are ordered by the local sequencer".into(),
            consensus_extra,
        )
    } else if c.lag_blocks > READY_LAG_MAX_BLOCKS {
        check(Level::Warn, format!("catching up: {} finalized blocks not applied yet (ready at {READY_LAG_MAX_BLOCKS} or fewer)", c.lag_blocks), consensus_extra)
    } else if c.view_still_ms >= CONSENSUS_STALL_MS {
        check(
            Level::Warn,
            format!(
                "stalled: the view has not moved for {} s",
                c.view_still_ms / 1000
            ),
            consensus_extra,
        )
    } else {
        check(Level::Ok, "progressing".into(), consensus_extra)
    };
    items.push(("consensus", consensus));
    let peers_extra = json!({"connected": c.peers_connected, "needed": c.peers_needed});
    let peers = if c.role == Role::Standalone {
        check(Level::Ok, "standalone: no peers needed".into(), peers_extra)
    } else if c.peers_connected < c.peers_needed {
        check(
            Level::Warn,
            format!(
                "{} peers connected, {} needed for a quorum",
                c.peers_connected, c.peers_needed
            ),
            peers_extra,
        )
    } else {
        check(
            Level::Ok,
            format!("{} peers connected", c.peers_connected),
            peers_extra,
        )
    };
    items.push(("peers", peers));
    let damaged_json: Vec<serde_json::Value> = damaged
        .iter()
        .map(|d| json!({"repo": d.repo, "error": d.reason}))
        .collect();
    let repos = if damaged.is_empty() {
        check(
            Level::Ok,
            "no repository failed its check at start".into(),
            json!({"repositories": c.repositories}),
        )
    } else {
        check(
            Level::Warn,
            format!(
                "{} repositories damaged (served with an error until repaired; the others are served)",
                damaged.len()
            ),
            json!({"repositories": c.repositories, "damaged": damaged_json}),
        )
    };
    items.push(("repositories", repos));

    let level = items
        .iter()
        .map(|(_, (l, _))| *l)
        .max()
        .unwrap_or(Level::Ok);
    // A node catching up is healthy, but should not take traffic yet.
    let catching_up = c.role != Role::Standalone && c.lag_blocks > READY_LAG_MAX_BLOCKS;
    let ready = level != Level::Fail && !catching_up;
    let status = match level {
        Level::Ok => "ok",
        Level::Warn => "degraded",
        Level::Fail => "unavailable",
    };
    let checks: serde_json::Map<String, serde_json::Value> = items
        .into_iter()
        .map(|(k, (_, v))| (k.to_string(), v))
        .collect();
    let mut json = json!({
        "status": status,
        "ready": ready,
        "version": env!("CARGO_PKG_VERSION"),
        "role": c.role.name(),
        "shard": shard,
        "height": c.height.max(crate::metrics::block_height()),
        "lag_blocks": c.lag_blocks,
        "checks": checks,
    });
    if !damaged_json.is_empty() {
        json["damaged_repositories"] = serde_json::Value::Array(damaged_json);
    }
    Report { level, ready, json }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> NodeChecks {
        NodeChecks {
            measured: true,
            storage_writable: true,
            available_bytes: 50 << 30,
            capacity_bytes: 100 << 30,
            ..NodeChecks::default()
        }
    }

    #[test]
    fn a_healthy_standalone_node_is_ok_and_ready() {
        let r = evaluate(&healthy(), 0, &[]);
        assert_eq!(r.level, Level::Ok);
        assert!(r.ready);
        assert_eq!(r.json["checks"]["disk_space"]["free_percent"], 50);
    }

    #[test]
    fn unwritable_storage_or_a_full_disk_is_not_ready() {
        let mut c = healthy();
        c.storage_writable = false;
        c.storage_error = Some("Permission denied".into());
        assert!(!evaluate(&c, 0, &[]).ready);
        let mut c = healthy();
        c.available_bytes = 1 << 30; // 1% of 100 GiB
        let r = evaluate(&c, 0, &[]);
        assert!(!r.ready, "{}", r.json);
        let mut c = healthy();
        c.available_bytes = 5 << 30; // 5%: low, still ready
        let r = evaluate(&c, 0, &[]);
        assert!(r.ready);
        assert_eq!(r.json["status"], "degraded");
    }

    #[test]
    fn a_lagging_network_node_is_not_ready_and_a_stalled_one_is_degraded() {
        let mut c = healthy();
        c.role = Role::Validator;
        c.peers_needed = 2;
        c.peers_connected = 3;
        c.lag_blocks = READY_LAG_MAX_BLOCKS + 1;
        assert!(!evaluate(&c, 0, &[]).ready);
        c.lag_blocks = 0;
        c.view_still_ms = CONSENSUS_STALL_MS;
        let r = evaluate(&c, 0, &[]);
        assert!(r.ready);
        assert_eq!(r.json["checks"]["consensus"]["status"], "warn");
        c.view_still_ms = 0;
        c.peers_connected = 1;
        assert_eq!(
            evaluate(&c, 0, &[]).json["checks"]["peers"]["status"],
            "warn"
        );
    }
}
