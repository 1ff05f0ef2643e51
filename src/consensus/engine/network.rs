//! Assembly: p2p channels, broadcast, marshal, simplex and the application channels.

use super::{
    app::{self, App, Views},
    block::{self, Block, BlockCfg},
    counted::{self, Counted},
    AppBridge, Config, Ledger, NodeKey, Outbound, Parts, Role, Status,
};
use commonware_broadcast::buffered;
use commonware_consensus::{
    marshal::{self, core::Actor as Marshal, resolver::p2p as backfill, standard::Inline},
    simplex::{
        self, elector::RoundRobin, scheme::ed25519::Scheme, ForwardPolicy, SkipBudget, SkipPolicy,
    },
    types::{Epoch, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    certificate::{ConstantProvider, Verifier as _},
    ed25519::{PrivateKey, PublicKey},
    sha256::{Digest, Sha256},
    ChaCha20Poly1305, Digestible as _,
};
use commonware_p2p::{
    authenticated::lookup, Address, AddressableManager as _, AddressableTrackedPeers, Blocker,
    CheckedSender as _, Provider, Receiver, Recipients, Sender,
};
use commonware_parallel::Sequential;
use commonware_runtime::{
    buffer::paged::CacheRef, Clock, Handle, Metrics, Network as RNetwork, Quota, Resolver, Spawner,
    Storage,
};
use commonware_storage::archive::immutable;
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
    SakeCups,
};
use commonware_utils::{ordered::Map, ordered::Set, NZDuration, NZUsize, NZU16, NZU32, NZU64};
use futures::StreamExt as _;
use rand_core::CryptoRng;
use std::{
    num::{NonZeroU16, NonZeroU32, NonZeroUsize},
    sync::atomic::Ordering,
    time::Duration,
};

// Channels of the p2p network.
const VOTES: u64 = 0;
const CERTIFICATES: u64 = 1;
const CERTIFICATE_FETCH: u64 = 2;
const BACKFILL: u64 = 3;
const BLOCKS: u64 = 4;
const MEMPOOL: u64 = 5;
const PACKS: u64 = 6;
/// Never carries a message: its sender resolves "all peers" to the connected ones.
const PROBE: u64 = 7;

/// Per-peer rate of each consensus channel.
const CONSENSUS_RATE: Quota = Quota::per_second(NZU32!(256));
const PROBE_RATE: Quota = Quota::per_second(NZU32!(16));

const MAILBOX: NonZeroUsize = NZUsize!(1024);
const PAGE_SIZE: NonZeroU16 = NZU16!(4096);
const PAGE_CACHE_PAGES: NonZeroUsize = NZUsize!(256);
const IO_BUFFER: NonZeroUsize = NZUsize!(64 * 1024);
/// Views of recent activity kept in memory and in the journals behind the finalized tip.
const VIEW_RETENTION: ViewDelta = ViewDelta::new(64);
/// Finalized blocks marshal may hand to the ledger before the first is acknowledged.
const MAX_PENDING_ACKS: NonZeroUsize = NZUsize!(4);

type Handshake = SakeCups<PrivateKey, ChaCha20Poly1305>;

fn block_cfg(config: &Config) -> BlockCfg {
    BlockCfg {
        max_txs: config.max_block_txs,
        max_tx_bytes: config.max_tx_bytes,
    }
}

/// The p2p message limit every peer of the network must share: the largest of the consensus,
/// marshal and application payloads. `None` if it exceeds what the transport supports.
pub fn max_message_size(config: &Config) -> Option<u32> {
    let participants = u32::try_from(config.validators.len()).ok()?;
    let limit = lookup::max_size::<Handshake>() as usize;
    if block::max_block_size(&block_cfg(config)) > limit || config.max_app_message_bytes > limit {
        return None;
    }
    let consensus = simplex::max_payload_size::<Scheme, Digest>(participants);
    let marshal = marshal::max_payload_size::<marshal::standard::Standard<Block>, Scheme>(
        participants,
        &block_cfg(config),
    );
    let largest = consensus
        .max(marshal)
        .max(config.max_app_message_bytes)
        .max(block::max_block_size(&block_cfg(config)));
    let largest = u32::try_from(largest).ok()?;
    (largest <= lookup::max_size::<Handshake>()).then_some(largest)
}

/// The registered channels and network controls the engine runs on.
pub struct Wiring<S, R, B, P> {
    pub votes: (S, R),
    pub certificates: (S, R),
    pub certificate_fetch: (S, R),
    pub backfill: (S, R),
    pub blocks: (S, R),
    pub mempool: (S, R),
    pub packs: (S, R),
    pub probe: S,
    pub blocker: B,
    pub peers: P,
}

/// Registers the engine's channels through `register` (one call per channel, in any order).
pub async fn register<S, R, F, Fut>(mut register: F, app_rate: Quota) -> Channels<S, R>
where
    F: FnMut(u64, Quota) -> Fut,
    Fut: std::future::Future<Output = (S, R)>,
{
    Channels {
        votes: register(VOTES, CONSENSUS_RATE).await,
        certificates: register(CERTIFICATES, CONSENSUS_RATE).await,
        certificate_fetch: register(CERTIFICATE_FETCH, CONSENSUS_RATE).await,
        backfill: register(BACKFILL, CONSENSUS_RATE).await,
        blocks: register(BLOCKS, CONSENSUS_RATE).await,
        mempool: register(MEMPOOL, app_rate).await,
        packs: register(PACKS, app_rate).await,
        probe: register(PROBE, PROBE_RATE).await.0,
    }
}

pub struct Channels<S, R> {
    votes: (S, R),
    certificates: (S, R),
    certificate_fetch: (S, R),
    backfill: (S, R),
    blocks: (S, R),
    mempool: (S, R),
    packs: (S, R),
    probe: S,
}

impl<S, R, B, P> Wiring<S, R, B, P> {
    /// The same wiring with every channel's bytes counted (`guts_p2p_bytes_total`).
    fn counted(self) -> Wiring<Counted<S>, Counted<R>, B, P> {
        Wiring {
            votes: counted::channel(self.votes),
            certificates: counted::channel(self.certificates),
            certificate_fetch: counted::channel(self.certificate_fetch),
            backfill: counted::channel(self.backfill),
            blocks: counted::channel(self.blocks),
            mempool: counted::channel(self.mempool),
            packs: counted::channel(self.packs),
            probe: counted::sent(self.probe),
            blocker: self.blocker,
            peers: self.peers,
        }
    }
}

impl<S, R> Channels<S, R> {
    pub fn wire<B, P>(self, blocker: B, peers: P) -> Wiring<S, R, B, P> {
        Wiring {
            votes: self.votes,
            certificates: self.certificates,
            certificate_fetch: self.certificate_fetch,
            backfill: self.backfill,
            blocks: self.blocks,
            mempool: self.mempool,
            packs: self.packs,
            probe: self.probe,
            blocker,
            peers,
        }
    }
}

pub fn app_rate(config: &Config) -> Quota {
    Quota::per_second(NonZeroU32::new(config.app_messages_per_second).unwrap_or(NZU32!(1)))
}

/// Primary peers (validators, dialled) and secondary peers (followers, admitted inbound) with
/// their addresses.
fn tracked_peers(config: &Config) -> AddressableTrackedPeers<PublicKey> {
    let map = |peers: &[super::Peer]| -> Map<PublicKey, Address> {
        Map::from_iter_dedup(
            peers
                .iter()
                .map(|p| (p.key.0.clone(), Address::from(p.addr))),
        )
    };
    AddressableTrackedPeers::new(map(&config.validators), map(&config.followers))
}

/// Runs the engine over the authenticated lookup network (real sockets under the tokio
/// runtime, simulated sockets under the deterministic one).
pub async fn run_lookup<E, L>(context: E, parts: Parts<L>)
where
    E: Spawner + Clock + Storage + Metrics + RNetwork + Resolver + CryptoRng,
    L: Ledger,
{
    let config = &parts.config;
    let max_message = max_message_size(config).expect("validated configuration");
    let handshake: Handshake = Cups::new(
        Sake {
            signer: config.key.0.clone(),
            synchrony_bound: Duration::from_secs(5),
            max_handshake_age: Duration::from_secs(10),
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    let peer_count = config.validators.len() + config.followers.len();
    let mut p2p = lookup::Config::recommended(
        handshake,
        &[config.chain_id.as_slice(), b"_P2P"].concat(),
        config.listen,
        NonZeroUsize::new(peer_count + 1).expect("non-empty"),
        max_message,
        MAILBOX,
    );
    // Peers are listed explicitly, so private addresses (clusters on a private network, loopback
    // in tests) are as trustworthy as public ones.
    p2p.allow_private_ips = true;
    // Reconnect quickly after a peer restarts.
    p2p.peer_connection_cooldown = Duration::from_secs(1);
    p2p.dial_frequency = Duration::from_millis(500);
    p2p.ping_frequency = Duration::from_secs(10);
    // Several peers may share an IP (e.g. a test cluster on one host).
    p2p.allowed_handshake_rate_per_ip = Quota::per_second(NZU32!(16));
    p2p.block_duration = Duration::from_secs(3600);
    p2p.tracked_peer_sets = NZUsize!(1);

    let (mut network, mut oracle) = lookup::Network::new(context.child("p2p"), p2p);
    oracle.track(0, tracked_peers(config));
    let channels = register(
        |channel, quota| futures::future::ready(network.register(channel, quota)),
        app_rate(config),
    )
    .await;
    let network_handle = network.start();
    let wiring = channels.wire(oracle.clone(), oracle);
    run(context, parts, wiring, vec![network_handle]).await;
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: CacheRef,
    codec: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1 << 16,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 1 << 10,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache,
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 28,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(4096),
        codec_config: codec,
        replay_buffer: IO_BUFFER,
        freezer_key_write_buffer: IO_BUFFER,
        freezer_value_write_buffer: IO_BUFFER,
        ordinal_write_buffer: IO_BUFFER,
    }
}

/// Names every storage partition of a node: derived from its key so that several nodes can
/// share one storage (the deterministic runtime's) without colliding.
pub fn partition_prefix(key: &NodeKey) -> String {
    format!("guts-{}", &key.to_hex()[..16])
}

/// Starts every component on `wiring` and returns when one of them stops (or `extra`, handles
/// of tasks the caller started, such as the network).
pub async fn run<E, S, R, B, P, L>(
    context: E,
    parts: Parts<L>,
    wiring: Wiring<S, R, B, P>,
    extra: Vec<Handle<()>>,
) where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    L: Ledger,
{
    let wiring = wiring.counted();
    let Parts {
        config,
        role,
        ledger,
        mempool,
        packs,
        status,
    } = parts;
    let me = config.key.public();
    let prefix = partition_prefix(&me);
    let namespace = config.chain_id.clone();
    let participants = Set::from_iter_dedup(config.validators.iter().map(|p| p.key.0.clone()));
    let scheme = match role {
        Role::Validator => Scheme::signer(&namespace, participants, config.key.0.clone())
            .expect("validator key is in the validator set"),
        Role::Follower => Scheme::verifier(&namespace, participants),
    };
    let block_cfg = block_cfg(&config);
    let genesis = Block::genesis(&config.chain_id);
    let genesis_digest = genesis.digest();
    let page_cache = CacheRef::new(PAGE_SIZE, PAGE_CACHE_PAGES);
    // One epoch for the life of the chain: the validator set is static.
    let epocher = FixedEpocher::new(NZU64!(u64::MAX));

    // Backfill of finalized and notarized blocks from peers.
    let resolver = backfill::init(
        context.child("backfill"),
        backfill::Config {
            public_key: me.0.clone(),
            peer_provider: wiring.peers.clone(),
            blocker: wiring.blocker.clone(),
            mailbox_size: MAILBOX,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        wiring.backfill,
    );

    // Block dissemination.
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("blocks"),
        buffered::Config {
            public_key: me.0.clone(),
            mailbox_size: MAILBOX,
            deque_size: 16,
            priority: false,
            codec_config: block_cfg,
            peer_provider: wiring.peers.clone(),
            strategy: Sequential,
        },
    );
    let broadcast_handle = broadcast.start(wiring.blocks);

    // Marshal: finalized blocks and certificates, in height order, durable.
    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive_config(
            &prefix,
            "finalizations",
            page_cache.clone(),
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .expect("finalizations archive");
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "blocks", page_cache.clone(), block_cfg),
    )
    .await
    .expect("blocks archive");
    let (marshal_actor, marshal, floor) = Marshal::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: marshal::Start::Genesis(commonware_cryptography::Digested::precomputed(
                genesis,
                genesis_digest,
            )),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: MAILBOX,
            view_retention: VIEW_RETENTION,
            prunable_items_per_section: NZU64!(64),
            page_cache: page_cache.clone(),
            replay_buffer: IO_BUFFER,
            key_write_buffer: IO_BUFFER,
            value_write_buffer: IO_BUFFER,
            block_codec_config: block_cfg,
            max_repair: NZUsize!(16),
            max_pending_acks: MAX_PENDING_ACKS,
            strategy: Sequential,
        },
    )
    .await;
    if let Some(processed) = floor.processed() {
        let height = processed.height().get();
        status.0.processed.store(height, Ordering::Relaxed);
        Status::raise(&status.0.finalized, height);
    }
    let (finalized, deliveries) = app::Finalized::new(status.clone());
    let marshal_handle = marshal_actor.start(finalized, buffer, resolver);
    let deliver_handle = context.child("deliver").spawn({
        let ledger = ledger.clone();
        let status = status.clone();
        move |_| app::deliver(ledger, status, deliveries)
    });

    // Consensus.
    let inline = Inline::new(
        context.child("application"),
        App::new(ledger, status.clone(), block_cfg),
        marshal,
        epocher,
    );
    let skip_timeout = config
        .certification_timeout
        .max(config.nullify_retry)
        .saturating_mul(2);
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: wiring.blocker,
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: Views::new(inline, &status),
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size: MAILBOX,
            epoch: Epoch::zero(),
            floor: simplex::Floor::Genesis(genesis_digest),
            replay_buffer: IO_BUFFER,
            write_buffer: IO_BUFFER,
            page_cache,
            leader_timeout: config.leader_timeout,
            certification_timeout: config.certification_timeout,
            timeout_retry: config.nullify_retry,
            view_retention: VIEW_RETENTION,
            skip: SkipPolicy::Enabled {
                timeout: skip_timeout,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    let simplex_handle = engine.start(wiring.votes, wiring.certificates, wiring.certificate_fetch);

    // Application channels and the peer probe.
    let mut handles = extra;
    handles.extend([
        broadcast_handle,
        marshal_handle,
        deliver_handle,
        simplex_handle,
    ]);
    handles.extend(bridge(&context, "mempool", mempool, wiring.mempool));
    handles.extend(bridge(&context, "packs", packs, wiring.packs));
    handles.push(
        context
            .child("peers")
            .spawn(move |context| probe(context, wiring.probe, status)),
    );
    tracing::info!(key = %me, ?role, "consensus engine started");
    let result = Handle::select(handles).await;
    tracing::error!(?result, "a consensus engine component stopped");
}

/// Moves application messages between the node's queues and a p2p channel.
fn bridge<E, S, R>(
    context: &E,
    name: &'static str,
    bridge: AppBridge,
    (mut sender, mut receiver): (S, R),
) -> [Handle<()>; 2]
where
    E: Spawner,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    let AppBridge {
        mut outbound,
        queued,
        mut inbound,
    } = bridge;
    let send = context.child(name).spawn(move |_| async move {
        while let Some(Outbound { to, message }) = outbound.next().await {
            queued.fetch_sub(1, Ordering::AcqRel);
            let recipients = match to {
                Some(peer) => Recipients::One(peer.0),
                None => Recipients::All,
            };
            sender.send(recipients, message, false);
        }
        // Every sender was dropped: the node no longer sends on this channel.
        futures::future::pending::<()>().await;
    });
    let receive = context.child(name).spawn(move |_| async move {
        while let Ok((peer, message)) = receiver.recv().await {
            // A full queue drops the message (like the network would); a dropped receiver
            // means the node no longer listens.
            let _ = inbound.try_send((NodeKey(peer), message.into()));
        }
        tracing::error!(channel = name, "application channel closed by the network");
    });
    [send, receive]
}

/// Samples the number of connected peers once a second.
async fn probe<E: Clock, S: Sender<PublicKey = PublicKey>>(
    context: E,
    mut sender: S,
    status: Status,
) {
    loop {
        if let Ok(checked) = sender.check(Recipients::All) {
            status
                .0
                .connected
                .store(checked.recipients().len(), Ordering::Relaxed);
        }
        context.sleep(Duration::from_secs(1)).await;
    }
}
