//! The consensus engine: Simplex BFT over ed25519 validators, with marshal delivering finalized
//! blocks in height order, durably and backfilled from peers.
//!
//! The rest of the node sees only this module's API: keys ([`SecretKey`], [`NodeKey`]), the
//! [`Config`], the [`Ledger`] it implements, and the [`Node`] handles (two application channels
//! and a [`Status`]). Commonware types stay inside this module.
//!
//! Wiring (one engine per node):
//! - p2p: the authenticated *lookup* network (every peer's address is configured). Validators
//!   are the primary peer set; followers are secondary peers (accepted inbound, never dialled).
//! - simplex (round-robin leaders, ed25519 votes) orders block digests;
//! - the block itself travels through the buffered broadcast engine, and marshal (standard
//!   variant, inline verification) checks parent linkage, asks the [`Ledger`] to verify,
//!   stores finalized blocks and fetches missing ones from peers (backfill);
//! - finalized blocks reach [`Ledger::finalized`] in height order, at least once; marshal
//!   counts a block as processed only once that future resolves.
//!
//! A leader whose ledger has nothing to propose skips its view (the view times out and is
//! nullified), so an idle network stores no blocks and exchanges only nullify votes and
//! certificates (a few small messages per leader timeout).
//!
//! A follower runs the same engine with a verify-only signing scheme: it votes on nothing,
//! assembles the certificates from the validators' votes (checking every signature against the
//! validator set) and receives the same finalized blocks.

// The node does not call the engine yet.
#![allow(dead_code)]

mod app;
mod block;
mod counted;
mod network;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use commonware_codec::{DecodeExt as _, Encode as _};
use commonware_cryptography::{ed25519, Signer as _};
use commonware_runtime::{Clock, Metrics, Network as RNetwork, Resolver, Spawner, Storage};
use futures::channel::mpsc;
use rand_core::CryptoRng;
use std::{
    collections::BTreeSet,
    fmt,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

pub use commonware_runtime::Handle;

/// The node's private ed25519 key (signs votes and authenticates p2p connections).
#[derive(Clone)]
pub struct SecretKey(ed25519::PrivateKey);

impl SecretKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        use commonware_math::algebra::Random as _;
        Self(ed25519::PrivateKey::random(commonware_utils::sys_rng()))
    }

    /// A key derived from `seed`. Deterministic, hence insecure: for tests and local demos.
    pub fn from_seed(seed: u64) -> Self {
        Self(ed25519::PrivateKey::from_seed(seed))
    }

    /// The 32-byte ed25519 seed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        ed25519::PrivateKey::decode(Bytes::copy_from_slice(bytes))
            .map(Self)
            .map_err(|_| KeyError)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.encode().to_vec()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&hex_decode(s)?)
    }

    pub fn to_hex(&self) -> String {
        hex_encode(&self.to_bytes())
    }

    pub fn public(&self) -> NodeKey {
        NodeKey(self.0.public_key())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

/// A node's public ed25519 key: its identity on the network and in the validator set.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeKey(ed25519::PublicKey);

impl NodeKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        ed25519::PublicKey::decode(Bytes::copy_from_slice(bytes))
            .map(Self)
            .map_err(|_| KeyError)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.encode().to_vec()
    }

    pub fn to_hex(&self) -> String {
        hex_encode(&self.to_bytes())
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.to_hex())
    }
}

impl FromStr for NodeKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&hex_decode(s)?)
    }
}

/// A key that does not decode (wrong length, bad hex or not a valid curve point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid ed25519 key (expected 32 bytes, 64 hex digits)")
    }
}

impl std::error::Error for KeyError {}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Result<Vec<u8>, KeyError> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(KeyError);
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| KeyError))
        .collect()
}

/// A peer of the network: its key and the address it listens on (validators) or connects from
/// (followers: only the IP is checked, for admission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub key: NodeKey,
    pub addr: SocketAddr,
}

/// Engine configuration. Every node of a network must agree on `validators`, `followers`,
/// `chain_id`, the block bounds and `max_app_message_bytes` (a peer that sends a larger message
/// than the receiver admits is disconnected).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's key. A key listed in `validators` votes; one listed in `followers` follows.
    pub key: SecretKey,
    /// The validator set, with the addresses validators listen on.
    pub validators: Vec<Peer>,
    /// Known followers (non-voting nodes that receive finalized blocks). Validators accept their
    /// connections and send them votes, certificates and blocks.
    pub followers: Vec<Peer>,
    /// Address this node's p2p listener binds.
    pub listen: SocketAddr,
    /// Chain id: namespace of every signature and of the p2p handshake, and seed of the genesis.
    pub chain_id: Vec<u8>,
    /// Storage directory of the engine's journals and archives (real runtime only; under the
    /// deterministic runtime the context's storage is used).
    pub storage_dir: PathBuf,
    /// How long a view waits for its leader's proposal before voting to skip it.
    pub leader_timeout: Duration,
    /// How long a view waits for notarization/certification progress before voting to skip it.
    /// Must exceed `leader_timeout`.
    pub certification_timeout: Duration,
    /// Interval at which a node stuck in a view re-broadcasts its skip (nullify) vote.
    pub nullify_retry: Duration,
    /// Maximum number of transactions in a block.
    pub max_block_txs: usize,
    /// Maximum size of one transaction in bytes.
    pub max_tx_bytes: usize,
    /// Maximum size of one message on the application channels ([`Node::mempool`],
    /// [`Node::packs`]).
    pub max_app_message_bytes: usize,
    /// Per-peer rate limit of each application channel (messages per second, both directions).
    pub app_messages_per_second: u32,
    /// Capacity of each application channel's queues (outbound and inbound). A full outbound
    /// queue fails the send ([`SendError::Full`]); a full inbound queue drops the message.
    pub app_queue: usize,
}

impl Config {
    /// A configuration with default timeouts and bounds: leader timeout 1 s, certification
    /// timeout 2 s, nullify retry 1 s, blocks of at most 1024 transactions of at most 64 KiB,
    /// application messages of at most 1 MiB + 4 KiB (a 1 MiB pack chunk and its header).
    pub fn new(
        key: SecretKey,
        validators: Vec<Peer>,
        listen: SocketAddr,
        chain_id: impl Into<Vec<u8>>,
        storage_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            key,
            validators,
            followers: Vec::new(),
            listen,
            chain_id: chain_id.into(),
            storage_dir: storage_dir.into(),
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            nullify_retry: Duration::from_secs(1),
            max_block_txs: 1024,
            max_tx_bytes: 64 * 1024,
            max_app_message_bytes: (1 << 20) + 4096,
            app_messages_per_second: 4096,
            app_queue: 1024,
        }
    }

    /// This node's role, or why the configuration cannot run.
    pub fn validate(&self) -> Result<Role, ConfigError> {
        let me = self.key.public();
        if self.validators.is_empty() {
            return Err(ConfigError("the validator set is empty".into()));
        }
        let mut seen = BTreeSet::new();
        for peer in self.validators.iter().chain(&self.followers) {
            if !seen.insert(&peer.key) {
                return Err(ConfigError(format!("key {} is listed twice", peer.key)));
            }
        }
        let role = if self.validators.iter().any(|p| p.key == me) {
            Role::Validator
        } else if self.followers.iter().any(|p| p.key == me) {
            Role::Follower
        } else {
            return Err(ConfigError(format!(
                "this node's key {me} is neither a validator nor a follower"
            )));
        };
        if self.chain_id.is_empty() {
            return Err(ConfigError("the chain id is empty".into()));
        }
        if self.leader_timeout.is_zero() || self.nullify_retry.is_zero() {
            return Err(ConfigError(
                "leader timeout and nullify retry must be positive".into(),
            ));
        }
        if self.certification_timeout <= self.leader_timeout {
            return Err(ConfigError(
                "certification timeout must exceed the leader timeout".into(),
            ));
        }
        if self.max_block_txs == 0 || self.max_tx_bytes == 0 {
            return Err(ConfigError("block bounds must be positive".into()));
        }
        if self.max_app_message_bytes == 0
            || self.app_messages_per_second == 0
            || self.app_queue == 0
        {
            return Err(ConfigError(
                "application channel limits must be positive".into(),
            ));
        }
        let max = network::max_message_size(self);
        if max.is_none() {
            return Err(ConfigError(
                "blocks or application messages too large for the p2p transport".into(),
            ));
        }
        Ok(role)
    }
}

/// Why a [`Config`] cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consensus configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Validator,
    Follower,
}

/// The application the engine orders transactions for.
///
/// Heights start at 1 (height 0 is the implicit, empty genesis). Blocks are never empty.
pub trait Ledger: Clone + Send + Sync + 'static {
    /// Transactions to propose in a block at `height` on top of `parent_height`
    /// (`height = parent_height + 1`).
    ///
    /// `ancestry`: the transactions of the parent and its ancestors (oldest first, with their
    /// heights) down to, excluding, the last height the ledger made durable through
    /// [`Ledger::finalized`] when the request started. The ledger may have processed more
    /// finalized blocks meanwhile: it must skip entries at or below its own durable height.
    /// Applying the rest to its state gives the state after the parent.
    ///
    /// May wait (bounded, well below the leader timeout) for transactions. Returning an empty
    /// list means "nothing to propose": no block is made and the view is skipped. The list must
    /// respect the block bounds: it is cut to `max_block_txs`, and a list holding a transaction
    /// larger than `max_tx_bytes` is dropped (the view is skipped).
    fn propose(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
    ) -> impl Future<Output = Vec<Bytes>> + Send;

    /// Whether a proposed block (`txs`, never empty) is valid at `height` on top of `ancestry`
    /// (as for [`Ledger::propose`]). May wait (e.g. for data to be fetched). Return `false` only
    /// if the block is permanently invalid; every honest node must reach the same verdict.
    fn verify(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
        txs: Vec<Bytes>,
    ) -> impl Future<Output = bool> + Send;

    /// A finalized block, delivered in height order, at least once (after a restart, blocks the
    /// ledger already made durable may be delivered again). Resolve once the block's effects are
    /// durable; only then does the engine count it as processed.
    fn finalized(&self, height: u64, txs: Vec<Bytes>) -> impl Future<Output = ()> + Send;
}

/// Progress counters, readable from any thread.
#[derive(Clone, Default)]
pub struct Status(Arc<StatusInner>);

#[derive(Default)]
struct StatusInner {
    connected: AtomicUsize,
    view: AtomicU64,
    finalized: AtomicU64,
    processed: AtomicU64,
}

impl Status {
    /// Peers with an established, authenticated connection.
    pub fn connected_peers(&self) -> usize {
        self.0.connected.load(Ordering::Relaxed)
    }

    /// The view this node is in: one past the highest view it holds a certificate for.
    pub fn current_view(&self) -> u64 {
        self.0.view.load(Ordering::Relaxed)
    }

    /// Highest finalized height this node knows of (its blocks may still be in flight).
    pub fn finalized_height(&self) -> u64 {
        self.0.finalized.load(Ordering::Relaxed)
    }

    /// Last height the ledger made durable through [`Ledger::finalized`].
    pub fn processed_height(&self) -> u64 {
        self.0.processed.load(Ordering::Relaxed)
    }

    fn raise(counter: &AtomicU64, value: u64) {
        counter.fetch_max(value, Ordering::Relaxed);
    }
}

/// Why an application message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Larger than `max_app_message_bytes`.
    TooLarge { len: usize, max: usize },
    /// The outbound queue is full (the network is slower than the sender).
    Full,
    /// The engine stopped.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "message of {len} bytes exceeds {max}"),
            Self::Full => f.write_str("outbound queue full"),
            Self::Closed => f.write_str("consensus engine stopped"),
        }
    }
}

impl std::error::Error for SendError {}

struct Outbound {
    to: Option<NodeKey>,
    message: Bytes,
}

/// Sending half of an application channel. Cheap to clone; usable from any thread.
///
/// Delivery is best effort: a message to a peer that is not connected is dropped, as is one
/// over the peer's rate limit.
#[derive(Clone)]
pub struct AppSender {
    tx: mpsc::UnboundedSender<Outbound>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    max: usize,
}

impl AppSender {
    /// Queues `message` for `peer`.
    pub fn send_to(&self, peer: &NodeKey, message: Bytes) -> Result<(), SendError> {
        self.push(Some(peer.clone()), message)
    }

    /// Queues `message` for every connected peer.
    pub fn send_to_all(&self, message: Bytes) -> Result<(), SendError> {
        self.push(None, message)
    }

    fn push(&self, to: Option<NodeKey>, message: Bytes) -> Result<(), SendError> {
        if message.len() > self.max {
            return Err(SendError::TooLarge {
                len: message.len(),
                max: self.max,
            });
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SendError::Full);
        }
        self.tx
            .unbounded_send(Outbound { to, message })
            .map_err(|_| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                SendError::Closed
            })
    }

    /// Largest message this channel accepts.
    pub fn max_message_bytes(&self) -> usize {
        self.max
    }
}

/// Receiving half of an application channel: `(sender, message)`, authenticated.
pub struct AppReceiver {
    rx: mpsc::Receiver<(NodeKey, Bytes)>,
}

impl AppReceiver {
    /// The next message; `None` once the engine stopped.
    pub async fn recv(&mut self) -> Option<(NodeKey, Bytes)> {
        use futures::StreamExt as _;
        self.rx.next().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<(NodeKey, Bytes)> {
        self.rx.try_recv().ok()
    }
}

pub struct AppChannel {
    pub sender: AppSender,
    pub receiver: AppReceiver,
}

/// The engine-side ends of an application channel.
pub(crate) struct AppBridge {
    outbound: mpsc::UnboundedReceiver<Outbound>,
    queued: Arc<AtomicUsize>,
    inbound: mpsc::Sender<(NodeKey, Bytes)>,
}

fn app_channel(config: &Config) -> (AppChannel, AppBridge) {
    let (out_tx, out_rx) = mpsc::unbounded();
    let (in_tx, in_rx) = mpsc::channel(config.app_queue);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        AppChannel {
            sender: AppSender {
                tx: out_tx,
                queued: queued.clone(),
                capacity: config.app_queue,
                max: config.max_app_message_bytes,
            },
            receiver: AppReceiver { rx: in_rx },
        },
        AppBridge {
            outbound: out_rx,
            queued,
            inbound: in_tx,
        },
    )
}

/// What the node holds of a running engine.
pub struct Node {
    pub role: Role,
    pub key: NodeKey,
    /// Transaction gossip.
    pub mempool: AppChannel,
    /// Pack transfer requests and responses (chunks of at most 1 MiB).
    pub packs: AppChannel,
    pub status: Status,
}

/// Everything the engine task needs besides the runtime and the network.
pub(crate) struct Parts<L> {
    pub config: Config,
    pub role: Role,
    pub ledger: L,
    pub mempool: AppBridge,
    pub packs: AppBridge,
    pub status: Status,
}

fn prepare<L: Ledger>(config: Config, ledger: L) -> Result<(Node, Parts<L>), ConfigError> {
    let role = config.validate()?;
    let (mempool, mempool_bridge) = app_channel(&config);
    let (packs, packs_bridge) = app_channel(&config);
    let status = Status::default();
    let node = Node {
        role,
        key: config.key.public(),
        mempool,
        packs,
        status: status.clone(),
    };
    Ok((
        node,
        Parts {
            config,
            role,
            ledger,
            mempool: mempool_bridge,
            packs: packs_bridge,
            status,
        },
    ))
}

/// Starts the engine inside an existing commonware runtime `context` (tokio or deterministic),
/// on the authenticated lookup p2p network. The returned handle completes only if the engine
/// stops (which it does not do on its own unless a component failed); aborting it stops every
/// task of the engine.
pub fn start<E, L>(context: E, config: Config, ledger: L) -> Result<(Handle<()>, Node), ConfigError>
where
    E: Spawner + Clock + Storage + Metrics + RNetwork + Resolver + CryptoRng,
    L: Ledger,
{
    let (node, parts) = prepare(config, ledger)?;
    let handle = context.spawn(move |context| network::run_lookup(context, parts));
    Ok((handle, node))
}

/// A running engine thread (see [`spawn`]).
pub struct EngineThread {
    stop: Option<futures::channel::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl EngineThread {
    /// Stops the engine and waits for its thread. Storage is left consistent: a later
    /// [`spawn`] over the same directory resumes from it.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        // Dropping the handle detaches the thread; the engine keeps running.
        if let Some(stop) = self.stop.take() {
            std::mem::forget(stop);
        }
    }
}

/// Runs the engine on its own OS thread, in a commonware tokio runtime with one worker thread
/// whose storage lives in `config.storage_dir`. Commonware's telemetry is not initialised (logs
/// go to the process's global subscriber).
///
/// Crash-only: if any engine task panics, or the engine stops without [`EngineThread::shutdown`]
/// having been called, the error is logged and the process exits with status 1.
pub fn spawn<L: Ledger>(config: Config, ledger: L) -> Result<(Node, EngineThread), ConfigError> {
    use commonware_runtime::{tokio, Runner as _};

    let storage = config.storage_dir.clone();
    std::fs::create_dir_all(&storage).map_err(|e| {
        ConfigError(format!(
            "cannot create storage directory {}: {e}",
            storage.display()
        ))
    })?;
    let (node, parts) = prepare(config, ledger)?;
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("consensus".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let runtime = tokio::Config::new()
                    .with_worker_threads(1)
                    .with_catch_panics(false)
                    .with_storage_directory(storage);
                tokio::Runner::new(runtime).start(|context| async move {
                    let engine = context.spawn(move |context| network::run_lookup(context, parts));
                    let stop = async {
                        if stop_rx.await.is_err() {
                            futures::future::pending::<()>().await;
                        }
                    };
                    futures::pin_mut!(stop);
                    match futures::future::select(engine, stop).await {
                        futures::future::Either::Left((result, _)) => Err(result),
                        futures::future::Either::Right(_) => Ok(()),
                    }
                })
            }));
            match outcome {
                Ok(Ok(())) => tracing::info!("consensus engine stopped"),
                Ok(Err(result)) => {
                    tracing::error!(?result, "consensus engine stopped unexpectedly; exiting");
                    std::process::exit(1);
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!(%message, "consensus engine panicked; exiting");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| ConfigError(format!("cannot start the consensus thread: {e}")))?;
    Ok((
        node,
        EngineThread {
            stop: Some(stop_tx),
            join: Some(join),
        },
    ))
}
