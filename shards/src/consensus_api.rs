//! The consensus REST API: `GET /api/consensus/status`,
//! `/api/consensus/validators` and `/api/consensus/blocks/HEIGHT`.
//!
//! The node (the binary) describes itself once at start with
//! [`set_node_info`]; live values (height, view, peers, lag) come from the
//! metrics, and blocks from the block record ([`crate::blocks`]), read on
//! the blocking pool.

use http::{Method, Response, StatusCode};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::OnceLock;

use crate::body::ResponseBody;
use crate::health::Role;
use crate::http::{json, json_error};
use crate::shard::Shard;

/// A validator (or follower) of the genesis.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// `HOST:PORT` of its p2p listener.
    pub p2p_addr: String,
    /// Where it serves git over HTTP, if the genesis says.
    pub api_url: Option<String>,
}

/// What the node says of itself.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub role: Role,
    /// This node's public key, hex (none on a standalone node).
    pub public_key: Option<String>,
    /// The genesis's chain id (none on a standalone node).
    pub chain_id: Option<String>,
    pub validators: Vec<Member>,
    pub followers: Vec<Member>,
    /// Validators that must vote for a block to finalize.
    pub quorum: usize,
    /// Where the block record lives (`DATA/consensus`).
    pub consensus_dir: PathBuf,
}

static NODE: OnceLock<NodeInfo> = OnceLock::new();

/// Describe the node (once, at start, before the shards serve).
pub fn set_node_info(info: NodeInfo) {
    let _ = NODE.set(info);
}

/// The node's description (a standalone default if none was given).
pub fn node_info() -> NodeInfo {
    NODE.get().cloned().unwrap_or_default()
}

/// The body of `GET /api/consensus/status`.
pub fn status_json() -> serde_json::Value {
    let info = node_info();
    let height = crate::metrics::block_height();
    let lag = crate::metrics::replication_lag();
    serde_json::json!({
        "role": info.role.name(),
        "engine": if info.role == Role::Standalone { "local sequencer (single validator)" } else { "simplex" },
        "chain_id": info.chain_id,
        "public_key": info.public_key,
        "height": height,
        "finalized_height": height + lag,
        "lag_blocks": lag,
        "view": crate::metrics::consensus_view(),
        "peers_connected": crate::metrics::peers_connected(),
        "validators": info.validators.len().max(1),
        "followers": info.followers.len(),
        "quorum": info.quorum.max(1),
    })
}

fn validators_json() -> serde_json::Value {
    let info = node_info();
    let me = info.public_key.clone();
    let list: Vec<serde_json::Value> = if info.role == Role::Standalone {
        vec![serde_json::json!({
            "name": "standalone", "public_key": null, "p2p_addr": null, "api_url": null,
            "weight": 1, "self": true,
        })]
    } else {
        info.validators
            .iter()
            .map(|v| {
                serde_json::json!({
                    "name": v.name, "public_key": v.public_key, "p2p_addr": v.p2p_addr,
                    "api_url": v.api_url, "weight": 1,
                    "self": me.as_deref() == Some(v.public_key.as_str()),
                })
            })
            .collect()
    };
    let followers: Vec<serde_json::Value> = info
        .followers
        .iter()
        .map(|v| {
            serde_json::json!({"name": v.name, "public_key": v.public_key, "p2p_addr": v.p2p_addr,
                "self": me.as_deref() == Some(v.public_key.as_str())})
        })
        .collect();
    serde_json::json!({
        "chain_id": info.chain_id,
        "quorum": info.quorum.max(1),
        "peers_connected": crate::metrics::peers_connected(),
        "validators": list,
        "followers": followers,
    })
}

/// Route a request under `/api/consensus`.
pub async fn route(_shard: &Rc<Shard>, method: &Method, path: &str) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match path.trim_end_matches('/') {
        "/api/consensus/status" => json(StatusCode::OK, &status_json()),
        "/api/consensus/validators" => json(StatusCode::OK, &validators_json()),
        p => match p.strip_prefix("/api/consensus/blocks/") {
            Some(h) => block(h).await,
            None => json_error(
                StatusCode::NOT_FOUND,
                "expected /api/consensus/status, /api/consensus/validators or /api/consensus/blocks/HEIGHT",
            ),
        },
    }
}

async fn block(height: &str) -> Response<ResponseBody> {
    let Ok(height) = height.parse::<u64>() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "block height must be a number, not {:?}",
                height.chars().take(40).collect::<String>()
            ),
        );
    };
    let current = crate::metrics::block_height();
    if height == 0 {
        return json(
            StatusCode::OK,
            &serde_json::json!({"height": 0, "genesis": true, "transaction_count": 0, "transactions": []}),
        );
    }
    if height > current {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("no block at height {height} yet: this node's height is {current}"),
        );
    }
    let dir = node_info().consensus_dir;
    let found = glommio::executor()
        .spawn_blocking(move || crate::blocks::find(&dir, height))
        .await;
    match found {
        Ok(crate::blocks::Found::Block(v)) => json(StatusCode::OK, &v),
        Ok(crate::blocks::Found::Absent { oldest, .. }) => json_error(
            StatusCode::NOT_FOUND,
            match oldest {
                Some(o) => format!(
                    "block {height} is no longer in this node's record (it keeps the recent blocks, from height {o})"
                ),
                None => format!("block {height} is not in this node's record"),
            },
        ),
        Err(e) => {
            tracing::error!(error = %e, "block record unreadable");
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the block record could not be read",
            );
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(5u64));
            r
        }
    }
}
