//! The consensus core of a network node: Simplex BFT among the validators
//! of the genesis file, packs fetched from peers, finalized blocks applied
//! on the shards in height order.
//!
//! - [`engine`]: commonware's Simplex, marshal and p2p, behind a small API
//!   (the only module that sees commonware types besides keys);
//! - [`ledger`]: what consensus asks of the node (propose, verify, apply),
//!   and the shard-facing [`Orderer`];
//! - [`state`]: the replicated state (repositories and refs) the ledger
//!   checks blocks against;
//! - [`packs`]: pack transfer between nodes, checked like a push;
//! - [`tx`]: the transaction wire format;
//! - [`genesis`], [`keys`]: the validator set and this node's key.
//!
//! A node without a genesis file does not come here: it orders its own
//! transactions with the local sequencer (`crate::sequencer`).

pub mod engine;
pub mod genesis;
pub mod keys;
pub mod ledger;
pub mod packs;
pub mod state;
pub mod tx;

use anyhow::Context;
use bytes::Bytes;
use guts_shards::consensus::{BatchSender, Orderer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use engine::{AppSender, NodeKey, Role, SecretKey};
use genesis::Genesis;
use ledger::{Ledger, LedgerConfig, LedgerHandle};

/// What a network node is started from.
pub struct NetworkSetup {
    pub genesis: Genesis,
    pub key: SecretKey,
    pub data_dir: PathBuf,
    pub p2p_addr: SocketAddr,
    pub shards: Vec<BatchSender>,
}

/// A running consensus core.
pub struct Network {
    pub role: Role,
    pub key: NodeKey,
    pub orderer: Arc<dyn Orderer>,
    pub ledger: Arc<Ledger>,
    pub status: engine::Status,
    /// Peers this node needs connected to make progress (a validator: the
    /// quorum but itself; a follower: one to follow).
    pub peers_needed: u64,
    _engine: engine::EngineThread,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An application channel whose sender is known only once the engine runs.
#[derive(Default)]
struct LateWire(OnceLock<AppSender>);

impl ledger::TxWire for LateWire {
    fn broadcast(&self, tx: Bytes) {
        if let Some(s) = self.0.get() {
            if let Err(e) = s.send_to_all(tx) {
                tracing::warn!(error = %e, "transaction gossip not sent");
            }
        }
    }
}

impl packs::PackWire for LateWire {
    fn send(&self, to: [u8; 32], msg: Bytes) {
        let (Some(s), Ok(peer)) = (self.0.get(), NodeKey::from_bytes(&to)) else {
            return;
        };
        if let Err(e) = s.send_to(&peer, msg) {
            tracing::debug!(error = %e, "pack message not sent");
        }
    }
}

/// The ledger as the engine sees it.
#[derive(Clone)]
struct EngineLedger {
    ledger: Arc<Ledger>,
    propose_wait: Duration,
}

impl engine::Ledger for EngineLedger {
    fn propose(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
    ) -> impl std::future::Future<Output = Vec<Bytes>> + Send {
        let (l, wait) = (self.ledger.clone(), self.propose_wait);
        async move { l.propose(height, ancestry, wait).await }
    }

    fn verify(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
        txs: Vec<Bytes>,
    ) -> impl std::future::Future<Output = bool> + Send {
        let l = self.ledger.clone();
        async move { l.verify(height, ancestry, txs).await }
    }

    fn finalized(
        &self,
        height: u64,
        txs: Vec<Bytes>,
    ) -> impl std::future::Future<Output = ()> + Send {
        let l = self.ledger.clone();
        async move { l.finalized(height, txs).await }
    }
}

fn tokio_sleep() -> packs::Sleep {
    Arc::new(|d| Box::pin(tokio::time::sleep(d)))
}

fn peer(v: &genesis::Validator) -> anyhow::Result<engine::Peer> {
    Ok(engine::Peer {
        key: NodeKey::from_bytes(&v.pubkey)
            .map_err(|_| anyhow::anyhow!("validator {}: public key is not on the curve", v.name))?,
        addr: v.addr,
    })
}

/// Start the consensus core on its own thread (pinned to `cpu` if given).
/// Must run before the shards open repositories: the state is loaded from
/// their ref stores.
pub fn start(setup: NetworkSetup, cpu: Option<usize>) -> anyhow::Result<Network> {
    let g = &setup.genesis;
    let consensus_dir = setup.data_dir.join("consensus");
    std::fs::create_dir_all(&consensus_dir)
        .with_context(|| format!("creating {}", consensus_dir.display()))?;
    let applied = ledger::load_applied(&consensus_dir);
    let state = state::ChainState::load(&setup.data_dir, applied)?;
    let me_pub: [u8; 32] = setup
        .key
        .public()
        .to_bytes()
        .try_into()
        .map_err(|_| anyhow::anyhow!("public key length"))?;
    let me = g.index_of(&me_pub).map(|i| i as u32);
    tracing::info!(
        chain = %g.chain_id,
        validators = g.validators.len(),
        quorum = g.quorum(),
        followers = g.followers.len(),
        "genesis loaded"
    );
    let read_only = match me {
        Some(_) => None,
        None => {
            let to = g
                .validators
                .iter()
                .find_map(|v| v.api_url.clone())
                .map(|u| format!("push to a validator, e.g. {u}"))
                .unwrap_or_else(|| {
                    format!(
                        "push to a validator (p2p address of {}: {})",
                        g.validators[0].name, g.validators[0].addr
                    )
                });
            Some(format!(
                "this node is a read replica and accepts no writes; {to}"
            ))
        }
    };
    let wire = Arc::new(LateWire::default());
    let packs_wire = Arc::new(LateWire::default());
    let sleep = tokio_sleep();
    let ledger = Ledger::new(LedgerConfig {
        me,
        validators: g.validators.iter().map(|v| v.pubkey).collect(),
        params: g.consensus.clone(),
        data_dir: setup.data_dir.clone(),
        consensus_dir: consensus_dir.clone(),
        shards: setup.shards,
        state,
        packs: packs::Packs::new(setup.data_dir.clone(), packs_wire.clone(), sleep.clone()),
        wire: wire.clone(),
        read_only,
        sleep,
        record: match guts_shards::blocks::BlockLog::open(&consensus_dir, false) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "the block record is not kept this run");
                None
            }
        },
    });

    let validators = g
        .validators
        .iter()
        .map(peer)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let followers = g
        .followers
        .iter()
        .map(peer)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = engine::Config::new(
        setup.key,
        validators,
        setup.p2p_addr,
        g.chain_id.as_bytes().to_vec(),
        consensus_dir.join("engine"),
    );
    config.followers = followers;
    config.leader_timeout = Duration::from_millis(g.consensus.leader_timeout_ms);
    config.certification_timeout = Duration::from_millis(
        g.consensus
            .notarization_timeout_ms
            .max(g.consensus.leader_timeout_ms + 1),
    );
    config.nullify_retry = Duration::from_millis(g.consensus.nullify_retry_ms);
    config.max_block_txs = tx::BLOCK_TXS_MAX;
    config.max_tx_bytes = tx::TX_MAX_BYTES;
    let propose_wait = config.leader_timeout.mul_f32(0.7);
    let engine_ledger = EngineLedger {
        ledger: ledger.clone(),
        propose_wait,
    };
    // The engine's thread is started from a thread pinned to the consensus
    // core: threads inherit the affinity of the thread that creates them.
    let (node, thread) = std::thread::Builder::new()
        .name("consensus-start".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                crate::pin_current_thread(cpu);
            }
            engine::spawn(config, engine_ledger)
        })
        .context("starting the consensus thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the consensus thread failed to start"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = wire.0.set(node.mempool.sender.clone());
    let _ = packs_wire.0.set(node.packs.sender.clone());

    // Inbound application messages, each on its own small thread.
    let mut mempool_rx = node.mempool.receiver;
    let l = ledger.clone();
    std::thread::Builder::new()
        .name("mempool-in".into())
        .spawn(move || {
            futures_lite::future::block_on(async move {
                while let Some((_, bytes)) = mempool_rx.recv().await {
                    l.on_gossip(&bytes);
                }
            })
        })
        .context("starting the mempool thread")?;
    let mut packs_rx = node.packs.receiver;
    let l = ledger.clone();
    std::thread::Builder::new()
        .name("packs-in".into())
        .spawn(move || {
            futures_lite::future::block_on(async move {
                while let Some((from, bytes)) = packs_rx.recv().await {
                    let Ok(from): Result<[u8; 32], _> = from.to_bytes().try_into() else {
                        continue;
                    };
                    l.packs.on_message(from, &bytes);
                }
            })
        })
        .context("starting the pack transfer thread")?;

    let member = |name: &str, pubkey: &[u8; 32], addr: SocketAddr, api_url: Option<String>| {
        guts_shards::consensus_api::Member {
            name: name.to_string(),
            public_key: hex(pubkey),
            p2p_addr: addr.to_string(),
            api_url,
        }
    };
    guts_shards::consensus_api::set_node_info(guts_shards::consensus_api::NodeInfo {
        role: match node.role {
            Role::Validator => guts_shards::health::Role::Validator,
            Role::Follower => guts_shards::health::Role::Full,
        },
        public_key: Some(node.key.to_hex()),
        chain_id: Some(g.chain_id.clone()),
        validators: g
            .validators
            .iter()
            .map(|v| member(&v.name, &v.pubkey, v.addr, v.api_url.clone()))
            .collect(),
        followers: g
            .followers
            .iter()
            .map(|v| member(&v.name, &v.pubkey, v.addr, None))
            .collect(),
        quorum: g.quorum(),
        consensus_dir: consensus_dir.clone(),
    });

    Ok(Network {
        peers_needed: match node.role {
            Role::Validator => g.quorum().saturating_sub(1) as u64,
            Role::Follower => 1,
        },
        role: node.role,
        key: node.key,
        orderer: Arc::new(LedgerHandle(ledger.clone())),
        ledger,
        status: node.status,
        _engine: thread,
    })
}
