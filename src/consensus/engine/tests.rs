//! Engine tests: four validators (and a follower) on commonware's deterministic runtime and
//! simulated network, then a smoke test on the real runtime over loopback sockets.

use super::*;
use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{deterministic, Clock as _, Runner as _, Supervisor as _};
use commonware_utils::{probability, NZUsize};
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Mutex,
};

/// A toy ledger: transactions are byte strings that must start with `tx` and may appear at most
/// once in the chain. Proposals take up to three pending transactions from a shared pool.
#[derive(Clone)]
struct TestLedger {
    pool: Arc<Mutex<Vec<Bytes>>>,
    state: Arc<Mutex<LedgerState>>,
    /// When set, every proposal also carries this (invalid) transaction.
    poison: Option<Bytes>,
}

#[derive(Default)]
struct LedgerState {
    /// Finalized blocks by height (the ledger's durable state).
    blocks: BTreeMap<u64, Vec<Bytes>>,
    applied: HashSet<Bytes>,
    /// Deliveries, duplicates included.
    deliveries: usize,
}

impl TestLedger {
    fn new(pool: Arc<Mutex<Vec<Bytes>>>) -> Self {
        Self {
            pool,
            state: Arc::default(),
            poison: None,
        }
    }

    fn durable_height(&self) -> u64 {
        self.state
            .lock()
            .unwrap()
            .blocks
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    fn chain(&self) -> Vec<(u64, Vec<Bytes>)> {
        let state = self.state.lock().unwrap();
        state.blocks.iter().map(|(h, t)| (*h, t.clone())).collect()
    }

    fn finalized_txs(&self) -> BTreeSet<Bytes> {
        self.state.lock().unwrap().applied.iter().cloned().collect()
    }

    /// Transactions in the chain after `ancestry`, skipping what the ledger already applied.
    fn seen(&self, ancestry: &[(u64, Vec<Bytes>)]) -> HashSet<Bytes> {
        let state = self.state.lock().unwrap();
        let durable = state.blocks.keys().next_back().copied().unwrap_or(0);
        let mut seen = state.applied.clone();
        for (height, txs) in ancestry {
            if *height > durable {
                seen.extend(txs.iter().cloned());
            }
        }
        seen
    }
}

impl Ledger for TestLedger {
    async fn propose(&self, height: u64, ancestry: Vec<(u64, Vec<Bytes>)>) -> Vec<Bytes> {
        if let Some((last, _)) = ancestry.last() {
            assert_eq!(*last, height - 1, "ancestry ends at the parent");
        }
        let seen = self.seen(&ancestry);
        let mut txs: Vec<Bytes> = self
            .pool
            .lock()
            .unwrap()
            .iter()
            .filter(|tx| !seen.contains(*tx))
            .take(3)
            .cloned()
            .collect();
        if let (Some(poison), false) = (&self.poison, txs.is_empty()) {
            txs.push(poison.clone());
        }
        txs
    }

    async fn verify(&self, height: u64, ancestry: Vec<(u64, Vec<Bytes>)>, txs: Vec<Bytes>) -> bool {
        if let Some((last, _)) = ancestry.last() {
            assert_eq!(*last, height - 1, "ancestry ends at the parent");
        }
        let mut seen = self.seen(&ancestry);
        txs.into_iter()
            .all(|tx| tx.starts_with(b"tx") && seen.insert(tx))
    }

    async fn finalized(&self, height: u64, txs: Vec<Bytes>) {
        let mut state = self.state.lock().unwrap();
        state.deliveries += 1;
        let durable = state.blocks.keys().next_back().copied().unwrap_or(0);
        if height <= durable {
            assert_eq!(
                state.blocks.get(&height),
                Some(&txs),
                "redelivery changed a block"
            );
            return;
        }
        assert_eq!(
            height,
            durable + 1,
            "finalized blocks arrive in height order"
        );
        assert!(!txs.is_empty(), "empty block finalized");
        for tx in &txs {
            assert!(
                state.applied.insert(tx.clone()),
                "transaction finalized twice"
            );
        }
        state.blocks.insert(height, txs);
    }
}

const CHAIN: &[u8] = b"engine-test";

fn keys(n: u64) -> Vec<SecretKey> {
    (0..n).map(SecretKey::from_seed).collect()
}

fn peer(key: &SecretKey, port: u16) -> Peer {
    Peer {
        key: key.public(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn config(key: &SecretKey, validators: &[SecretKey], followers: &[SecretKey]) -> Config {
    let mut config = Config::new(
        key.clone(),
        validators
            .iter()
            .enumerate()
            .map(|(i, k)| peer(k, 3000 + i as u16))
            .collect(),
        SocketAddr::from(([127, 0, 0, 1], 3000)),
        CHAIN,
        "unused",
    );
    config.followers = followers
        .iter()
        .enumerate()
        .map(|(i, k)| peer(k, 4000 + i as u16))
        .collect();
    config.max_block_txs = 16;
    config.max_tx_bytes = 256;
    config.max_app_message_bytes = 4096;
    config
}

fn txs(range: std::ops::Range<u32>) -> Vec<Bytes> {
    range.map(|i| Bytes::from(format!("tx-{i}"))).collect()
}

async fn start_network(
    context: &deterministic::Context,
    validators: &[SecretKey],
    followers: &[SecretKey],
) -> Oracle<PublicKey, deterministic::Context> {
    let primary: Vec<PublicKey> = validators.iter().map(|k| k.public().0).collect();
    let secondary: Vec<PublicKey> = followers.iter().map(|k| k.public().0).collect();
    let config = config(&validators[0], validators, followers);
    let (network, oracle) = Network::new_with_split_peers(
        context.child("network"),
        simulated::Config {
            max_size: network::max_message_size(&config).unwrap(),
            max_peers_per_set: NZUsize!(primary.len() + secondary.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        primary.clone(),
        secondary.clone(),
    )
    .await;
    network.start();
    let all: Vec<PublicKey> = primary.into_iter().chain(secondary).collect();
    for a in &all {
        for b in &all {
            if a != b {
                oracle
                    .add_link(
                        a.clone(),
                        b.clone(),
                        Link {
                            latency: Duration::from_millis(20),
                            jitter: Duration::from_millis(5),
                            success_rate: probability!(1.0),
                        },
                    )
                    .await
                    .unwrap();
            }
        }
    }
    oracle
}

/// Starts a node on the simulated network.
fn start_simulated<L: Ledger>(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    config: Config,
    ledger: L,
) -> (Handle<()>, Node) {
    let (node, parts) = prepare(config, ledger).unwrap();
    let oracle = oracle.clone();
    let me = node.key.0.clone();
    let rate = network::app_rate(&parts.config);
    let handle = context
        .child("node")
        .with_attribute("key", &node.key)
        .spawn(move |context| async move {
            let control = oracle.control(me);
            let channels = network::register(
                |channel, quota| {
                    let control = control.clone();
                    async move { control.register(channel, quota).await.unwrap() }
                },
                rate,
            )
            .await;
            let wiring = channels.wire(control, oracle.manager());
            network::run(context, parts, wiring, Vec::new()).await;
        });
    (handle, node)
}

/// Waits (in simulated time) until every ledger finalized every transaction of `expected`.
async fn wait_all(context: &deterministic::Context, ledgers: &[&TestLedger], expected: &[Bytes]) {
    let expected: BTreeSet<Bytes> = expected.iter().cloned().collect();
    loop {
        if ledgers
            .iter()
            .all(|l| expected.is_subset(&l.finalized_txs()))
        {
            return;
        }
        context.sleep(Duration::from_millis(100)).await;
    }
}

/// Every ledger holds the same chain: contiguous heights from 1, identical blocks.
fn assert_same_chain(ledgers: &[&TestLedger]) -> Vec<(u64, Vec<Bytes>)> {
    let shortest = ledgers.iter().map(|l| l.durable_height()).min().unwrap();
    let reference: Vec<_> = ledgers[0]
        .chain()
        .into_iter()
        .take(shortest as usize)
        .collect();
    for (i, (height, _)) in reference.iter().enumerate() {
        assert_eq!(*height, i as u64 + 1, "heights are contiguous from 1");
    }
    for ledger in ledgers {
        let chain: Vec<_> = ledger.chain().into_iter().take(shortest as usize).collect();
        assert_eq!(chain, reference, "validators finalized different blocks");
    }
    reference
}

fn runner() -> deterministic::Runner {
    deterministic::Runner::timed(Duration::from_secs(600))
}

#[test]
fn four_validators_finalize_identical_blocks() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut nodes = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            nodes.push((handle, node));
        }
        let expected = txs(0..20);
        pool.lock().unwrap().extend(expected.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &expected).await;
        let chain = assert_same_chain(&refs);
        eprintln!(
            "four validators: {} blocks, view {}, {:?} simulated",
            chain.len(),
            nodes[0].1.status.current_view(),
            context
                .current()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        );
        let all: Vec<Bytes> = chain.iter().flat_map(|(_, t)| t.clone()).collect();
        assert_eq!(all.len(), expected.len(), "every transaction exactly once");
        for (_, node) in &nodes {
            assert_eq!(node.role, Role::Validator);
            assert!(node.status.processed_height() >= 1);
            assert!(node.status.finalized_height() >= node.status.processed_height());
            assert!(node.status.current_view() > 1);
            assert_eq!(node.status.connected_peers(), 3);
        }
    });
}

#[test]
fn invalid_proposals_are_not_finalized() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut handles = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let mut ledger = TestLedger::new(pool.clone());
            if i == 0 {
                ledger.poison = Some(Bytes::from_static(b"bad"));
            }
            let (handle, _node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            handles.push(handle);
        }
        let expected = txs(0..12);
        pool.lock().unwrap().extend(expected.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &expected).await;
        let chain = assert_same_chain(&refs);
        assert!(chain
            .iter()
            .all(|(_, txs)| txs.iter().all(|tx| tx.starts_with(b"tx"))));
    });
}

#[test]
fn one_crashed_validator_of_four_does_not_stop_finality() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut handles = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            handles.push((handle, node));
        }
        let first = txs(0..6);
        pool.lock().unwrap().extend(first.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &first).await;

        // Crash validator 3.
        let (crashed, _) = handles.pop().unwrap();
        crashed.abort();
        let _ = crashed.await;
        let stalled = ledgers[3].durable_height();

        let second = txs(6..30);
        pool.lock().unwrap().extend(second.iter().cloned());
        let live: Vec<&TestLedger> = ledgers[..3].iter().collect();
        wait_all(&context, &live, &second).await;
        assert_same_chain(&live);
        assert_eq!(ledgers[3].durable_height(), stalled);
    });
}

#[test]
fn restarted_validator_catches_up() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut handles = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, _node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            handles.push(handle);
        }
        let first = txs(0..6);
        pool.lock().unwrap().extend(first.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &first).await;

        // Crash validator 3; the others move on.
        let crashed = handles.pop().unwrap();
        crashed.abort();
        let _ = crashed.await;
        let before = ledgers[3].durable_height();
        let second = txs(6..30);
        pool.lock().unwrap().extend(second.iter().cloned());
        let live: Vec<&TestLedger> = ledgers[..3].iter().collect();
        wait_all(&context, &live, &second).await;
        assert_eq!(ledgers[3].durable_height(), before);

        // Restart it over the same storage with the same (durable) ledger.
        let (_handle, node) = start_simulated(
            &context,
            &oracle,
            config(&keys[3], &keys, &[]),
            ledgers[3].clone(),
        );
        let all: Vec<Bytes> = first.iter().chain(&second).cloned().collect();
        wait_all(&context, &refs, &all).await;
        let chain = assert_same_chain(&refs);
        eprintln!(
            "restart: caught up from height {before} to {} ({} deliveries)",
            chain.len(),
            ledgers[3].state.lock().unwrap().deliveries
        );
        assert!(node.status.processed_height() > before);

        // And it takes part again: new transactions are finalized everywhere.
        let third = txs(30..40);
        pool.lock().unwrap().extend(third.iter().cloned());
        wait_all(&context, &refs, &third).await;
        assert_same_chain(&refs);
    });
}

#[test]
fn idle_network_stores_no_empty_blocks() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut nodes = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            nodes.push((handle, node));
        }
        context.sleep(Duration::from_secs(30)).await;
        eprintln!(
            "idle: views after 30 s: {:?}",
            nodes
                .iter()
                .map(|(_, n)| n.status.current_view())
                .collect::<Vec<_>>()
        );
        for (ledger, (_, node)) in ledgers.iter().zip(&nodes) {
            assert_eq!(ledger.durable_height(), 0, "an idle network made a block");
            assert_eq!(ledger.state.lock().unwrap().deliveries, 0);
            assert_eq!(node.status.finalized_height(), 0);
            // Consensus is alive: views are skipped.
            assert!(node.status.current_view() > 5, "views did not advance");
        }
        // The first transaction is the first block.
        let tx = txs(0..1);
        pool.lock().unwrap().extend(tx.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &tx).await;
        let chain = assert_same_chain(&refs);
        assert_eq!(chain, vec![(1, tx)]);
    });
}

#[test]
fn follower_receives_finalized_blocks() {
    runner().start(|context| async move {
        let keys = keys(5);
        let (validators, followers) = keys.split_at(4);
        let oracle = start_network(&context, validators, followers).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut nodes = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, node) = start_simulated(
                &context,
                &oracle,
                config(key, validators, followers),
                ledger.clone(),
            );
            ledgers.push(ledger);
            nodes.push((handle, node));
        }
        assert_eq!(nodes[4].1.role, Role::Follower);
        let expected = txs(0..15);
        pool.lock().unwrap().extend(expected.iter().cloned());
        let refs: Vec<&TestLedger> = ledgers.iter().collect();
        wait_all(&context, &refs, &expected).await;
        assert_same_chain(&refs);
    });
}

#[test]
fn application_channels_carry_messages() {
    runner().start(|context| async move {
        let keys = keys(4);
        let oracle = start_network(&context, &keys, &[]).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut nodes = Vec::new();
        for key in &keys {
            let (handle, node) = start_simulated(
                &context,
                &oracle,
                config(key, &keys, &[]),
                TestLedger::new(pool.clone()),
            );
            nodes.push((handle, node));
        }
        context.sleep(Duration::from_secs(1)).await;
        let max = nodes[0].1.packs.sender.max_message_bytes();
        assert_eq!(
            nodes[0]
                .1
                .packs
                .sender
                .send_to_all(Bytes::from(vec![0u8; max + 1])),
            Err(SendError::TooLarge { len: max + 1, max })
        );
        let target = nodes[2].1.key.clone();
        nodes[0]
            .1
            .packs
            .sender
            .send_to(&target, Bytes::from(vec![7u8; max]))
            .unwrap();
        nodes[1]
            .1
            .mempool
            .sender
            .send_to_all(Bytes::from_static(b"hello"))
            .unwrap();
        let from0 = nodes[0].1.key.clone();
        let from1 = nodes[1].1.key.clone();
        let (peer, message) = nodes[2].1.packs.receiver.recv().await.unwrap();
        assert_eq!((peer, message.len()), (from0, max));
        for i in [0, 2, 3] {
            let (peer, message) = nodes[i].1.mempool.receiver.recv().await.unwrap();
            assert_eq!(
                (peer, message),
                (from1.clone(), Bytes::from_static(b"hello"))
            );
        }
        // Nobody else got the pack chunk.
        context.sleep(Duration::from_secs(1)).await;
        for i in [1, 3] {
            assert!(nodes[i].1.packs.receiver.try_recv().is_none());
        }
    });
}

#[test]
fn config_is_validated() {
    let keys = keys(5);
    let (validators, followers) = keys.split_at(4);
    assert_eq!(
        config(&keys[0], validators, followers).validate(),
        Ok(Role::Validator)
    );
    assert_eq!(
        config(&keys[4], validators, followers).validate(),
        Ok(Role::Follower)
    );
    assert!(config(&keys[4], validators, &[]).validate().is_err());
    assert!(config(&keys[0], &[], &[]).validate().is_err());
    let mut dup = config(&keys[0], validators, &[]);
    dup.followers.push(dup.validators[1].clone());
    assert!(dup.validate().is_err());
    let mut timeouts = config(&keys[0], validators, &[]);
    timeouts.certification_timeout = timeouts.leader_timeout;
    assert!(timeouts.validate().is_err());
    let mut huge = config(&keys[0], validators, &[]);
    huge.max_block_txs = usize::MAX / 2;
    assert!(huge.validate().is_err());
}

#[test]
fn keys_roundtrip() {
    let key = SecretKey::generate();
    let again = SecretKey::from_hex(&key.to_hex()).unwrap();
    assert_eq!(key.public(), again.public());
    let public: NodeKey = key.public().to_hex().parse().unwrap();
    assert_eq!(public, key.public());
    assert_eq!(NodeKey::from_bytes(&public.to_bytes()).unwrap(), public);
    assert!("zz".parse::<NodeKey>().is_err());
    assert!(SecretKey::from_bytes(&[1, 2, 3]).is_err());
    assert_ne!(SecretKey::generate().public(), key.public());
}

/// Waits (in real time, bounded) until `done` holds.
fn wait_real(what: &str, mut done: impl FnMut() -> bool, progress: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not reached in time ({})",
            progress()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Four validators and a follower on loopback sockets, each on its own engine thread (real
/// tokio runtime, real authenticated p2p): they finalize blocks; a validator that is shut down
/// and restarted over its storage catches up.
#[test]
fn real_runtime_smoke() {
    let keys = keys(5);
    let ports: Vec<u16> = keys
        .iter()
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let peers: Vec<Peer> = keys.iter().zip(&ports).map(|(k, p)| peer(k, *p)).collect();
    let (validators, followers) = peers.split_at(4);
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Mutex::new(Vec::new()));
    let node_config = |i: usize| {
        let mut config = Config::new(
            keys[i].clone(),
            validators.to_vec(),
            peers[i].addr,
            b"engine-smoke".to_vec(),
            dir.path().join(format!("node-{i}")),
        );
        config.followers = followers.to_vec();
        config.leader_timeout = Duration::from_millis(500);
        config.certification_timeout = Duration::from_secs(1);
        config.nullify_retry = Duration::from_millis(500);
        config
    };
    let ledgers: Vec<TestLedger> = keys.iter().map(|_| TestLedger::new(pool.clone())).collect();
    let mut running: Vec<Option<(Node, EngineThread)>> = (0..keys.len())
        .map(|i| Some(spawn(node_config(i), ledgers[i].clone()).unwrap()))
        .collect();
    assert_eq!(running[4].as_ref().unwrap().0.role, Role::Follower);
    let heights = |ledgers: &[TestLedger]| {
        format!(
            "heights {:?}",
            ledgers
                .iter()
                .map(|l| l.durable_height())
                .collect::<Vec<_>>()
        )
    };
    let has_all = |ledgers: &[&TestLedger], txs: &[Bytes]| {
        let txs: BTreeSet<Bytes> = txs.iter().cloned().collect();
        ledgers.iter().all(|l| txs.is_subset(&l.finalized_txs()))
    };
    let all: Vec<&TestLedger> = ledgers.iter().collect();

    // Everybody connects (validators to each other and the follower; the follower to the
    // validators) and finalizes.
    let first = txs(0..9);
    pool.lock().unwrap().extend(first.iter().cloned());
    wait_real(
        "first blocks",
        || {
            has_all(&all, &first)
                && running
                    .iter()
                    .all(|r| r.as_ref().unwrap().0.status.connected_peers() == 4)
        },
        || heights(&ledgers),
    );

    // A validator stops; the others go on.
    let (_, thread) = running[3].take().unwrap();
    thread.shutdown();
    let stopped_at = ledgers[3].durable_height();
    let second = txs(9..15);
    pool.lock().unwrap().extend(second.iter().cloned());
    let live: Vec<&TestLedger> = [0, 1, 2, 4].iter().map(|&i| &ledgers[i]).collect();
    wait_real(
        "without one validator",
        || has_all(&live, &second),
        || heights(&ledgers),
    );
    assert_eq!(ledgers[3].durable_height(), stopped_at);

    // It restarts over its storage and catches up.
    running[3] = Some(spawn(node_config(3), ledgers[3].clone()).unwrap());
    wait_real("catch up", || has_all(&all, &second), || heights(&ledgers));
    let chain = assert_same_chain(&all);
    eprintln!(
        "real runtime: {} blocks, restarted validator from height {stopped_at}",
        chain.len()
    );
    for (node, thread) in running.into_iter().flatten() {
        assert!(node.status.processed_height() >= chain.len() as u64);
        thread.shutdown();
    }
}

mod adversarial;
mod real_ledger;
