//! Adversarial runs on the deterministic runtime: one honest scenario (lossy, jittery links, a
//! partition that heals, an isolated validator, a crash and restart) under many seeds, and one
//! vote-level byzantine validator of four running each of the misbehaving voters commonware
//! ships for simplex.

use super::*;
use commonware_consensus::{
    simplex::{elector::RoundRobin, mocks, scheme::ed25519::Scheme},
    types::{Epoch, ViewDelta},
};
use commonware_cryptography::sha256::{Digest as Sha256Digest, Sha256};
use commonware_utils::ordered::Set;

fn lossy_link() -> Link {
    Link {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(20),
        success_rate: probability!(0.9),
    }
}

/// A simulated network of `validators` where every pair is joined by `link`.
async fn network_with(
    context: &deterministic::Context,
    validators: &[SecretKey],
    link: Link,
) -> Oracle<PublicKey, deterministic::Context> {
    let peers: Vec<PublicKey> = validators.iter().map(|k| k.public().0).collect();
    let config = config(&validators[0], validators, &[]);
    let (network, oracle) = Network::new_with_split_peers(
        context.child("network"),
        simulated::Config {
            max_size: network::max_message_size(&config).unwrap(),
            max_peers_per_set: NZUsize!(peers.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        peers.clone(),
        Vec::new(),
    )
    .await;
    network.start();
    for a in &peers {
        for b in &peers {
            if a != b {
                oracle
                    .add_link(a.clone(), b.clone(), link.clone())
                    .await
                    .unwrap();
            }
        }
    }
    oracle
}

/// Cuts (both directions) every link between a node of `left` and a node of `right`.
async fn cut(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    left: &[&SecretKey],
    right: &[&SecretKey],
) {
    for a in left {
        for b in right {
            let (a, b) = (a.public().0, b.public().0);
            oracle.remove_link(a.clone(), b.clone()).await.unwrap();
            oracle.remove_link(b, a).await.unwrap();
        }
    }
}

/// Restores what [`cut`] removed.
async fn heal(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    left: &[&SecretKey],
    right: &[&SecretKey],
    link: &Link,
) {
    for a in left {
        for b in right {
            let (a, b) = (a.public().0, b.public().0);
            oracle
                .add_link(a.clone(), b.clone(), link.clone())
                .await
                .unwrap();
            oracle.add_link(b, a, link.clone()).await.unwrap();
        }
    }
}

/// The end state every honest run must reach: identical chains and heights, and every
/// submitted transaction finalized exactly once (and nothing else).
fn assert_converged(ledgers: &[&TestLedger], submitted: &[Bytes]) -> Vec<(u64, Vec<Bytes>)> {
    let heights: Vec<u64> = ledgers.iter().map(|l| l.durable_height()).collect();
    assert!(
        heights.windows(2).all(|w| w[0] == w[1]),
        "validators ended at different heights: {heights:?}"
    );
    let chain = assert_same_chain(ledgers);
    let mut finalized: Vec<Bytes> = chain.iter().flat_map(|(_, t)| t.clone()).collect();
    finalized.sort();
    let mut expected = submitted.to_vec();
    expected.sort();
    assert_eq!(finalized, expected, "every transaction exactly once");
    chain
}

/// The honest scenario under one seed.
fn honest_scenario(seed: u64) {
    let runtime = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(1200)));
    deterministic::Runner::new(runtime).start(|context| async move {
        let keys = keys(4);
        let link = lossy_link();
        let oracle = network_with(&context, &keys, link.clone()).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut handles = Vec::new();
        for key in &keys {
            let ledger = TestLedger::new(pool.clone());
            let (handle, _node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            handles.push(Some(handle));
        }
        let all: Vec<&TestLedger> = ledgers.iter().collect();
        let mut submitted = Vec::new();
        let mut submit = |batch: Vec<Bytes>| {
            pool.lock().unwrap().extend(batch.iter().cloned());
            submitted.extend(batch.iter().cloned());
            batch
        };

        // Everybody up.
        let batch = submit(txs(0..10));
        wait_all(&context, &all, &batch).await;

        // Two against two: no side holds a quorum, so nothing new may be finalized.
        let (left, right) = (
            [&keys[0], &keys[(seed % 3 + 1) as usize]],
            keys.iter()
                .enumerate()
                .filter(|(i, _)| *i != 0 && *i != (seed % 3 + 1) as usize)
                .map(|(_, k)| k)
                .collect::<Vec<_>>(),
        );
        cut(&oracle, &left, &right).await;
        let split = submit(txs(10..20));
        context.sleep(Duration::from_secs(20)).await;
        for ledger in &ledgers {
            let finalized = ledger.finalized_txs();
            assert!(
                split.iter().all(|tx| !finalized.contains(tx)),
                "a transaction was finalized without a quorum"
            );
        }
        heal(&oracle, &left, &right, &link).await;
        wait_all(&context, &all, &split).await;

        // One validator cut off: the other three go on; it catches up once the link heals.
        let isolated = (seed % 4) as usize;
        let others: Vec<&SecretKey> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != isolated)
            .map(|(_, k)| k)
            .collect();
        cut(&oracle, &[&keys[isolated]], &others).await;
        let stalled = ledgers[isolated].durable_height();
        let batch = submit(txs(20..35));
        let live: Vec<&TestLedger> = (0..4)
            .filter(|i| *i != isolated)
            .map(|i| &ledgers[i])
            .collect();
        wait_all(&context, &live, &batch).await;
        assert_eq!(ledgers[isolated].durable_height(), stalled);
        heal(&oracle, &[&keys[isolated]], &others, &link).await;
        wait_all(&context, &all, &batch).await;

        // A crash, progress without it, and a restart over its storage.
        let crashed = ((seed / 4 + 1 + seed) % 4) as usize;
        let handle = handles[crashed].take().unwrap();
        handle.abort();
        let _ = handle.await;
        let batch = submit(txs(35..50));
        let live: Vec<&TestLedger> = (0..4)
            .filter(|i| *i != crashed)
            .map(|i| &ledgers[i])
            .collect();
        wait_all(&context, &live, &batch).await;
        let (handle, _node) = start_simulated(
            &context,
            &oracle,
            config(&keys[crashed], &keys, &[]),
            ledgers[crashed].clone(),
        );
        handles[crashed] = Some(handle);
        wait_all(&context, &all, &batch).await;

        // And everybody takes part again.
        let batch = submit(txs(50..60));
        wait_all(&context, &all, &batch).await;
        let chain = assert_converged(&all, &submitted);
        eprintln!(
            "seed {seed}: {} blocks, isolated {isolated}, crashed {crashed}, {:?} simulated",
            chain.len(),
            context
                .current()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        );
    });
}

/// Seeds of the honest scenario; each picks other partitions and interleavings.
const SEEDS: std::ops::Range<u64> = 0..16;

#[test]
fn honest_network_converges_under_many_seeds() {
    for seed in SEEDS {
        honest_scenario(seed);
    }
}

/// The vote-level misbehaviours commonware ships for simplex.
#[derive(Clone, Copy, Debug)]
enum Byzantine {
    /// Votes for the proposal and for a random digest in the same view.
    Conflicter,
    /// Sends a proposal to one validator and a different one to the others.
    Equivocator,
    /// Votes to skip and to finalize the same view.
    Nuller,
    /// Votes for proposals of long-gone views.
    Outdated,
    /// Sends votes signed as somebody else.
    Impersonator,
    /// Only ever votes to skip.
    NullifyOnly,
}

/// Starts a byzantine voter as `key` on the simulated network: it registers every channel of
/// the engine (so honest nodes see a connected peer) and runs commonware's mock on the vote
/// (and, for the equivocator, certificate) channel.
async fn start_byzantine(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    config: &Config,
    kind: Byzantine,
) {
    let control = oracle.control(config.key.public().0);
    let channels = network::register(
        |channel, quota| {
            let control = control.clone();
            async move { control.register(channel, quota).await.unwrap() }
        },
        network::app_rate(config),
    )
    .await;
    let wiring = channels.wire(control, oracle.manager());
    let participants = Set::from_iter_dedup(config.validators.iter().map(|p| p.key.0.clone()));
    let scheme = Scheme::signer(&config.chain_id, participants, config.key.0.clone()).unwrap();
    let context = context.child("byzantine");
    match kind {
        Byzantine::Conflicter => {
            let mock: mocks::conflicter::Conflicter<_, _, Sha256> =
                mocks::conflicter::Conflicter::new(context, mocks::conflicter::Config { scheme });
            mock.start(wiring.votes);
        }
        Byzantine::Equivocator => {
            let mock = mocks::equivocator::Equivocator::new(
                context,
                mocks::equivocator::Config::<_, _, Sha256> {
                    scheme,
                    elector: RoundRobin::<Sha256>::default(),
                    epoch: Epoch::zero(),
                    relay: Arc::new(mocks::relay::Relay::<Sha256Digest, PublicKey>::new()),
                },
            );
            mock.start(wiring.votes, wiring.certificates);
        }
        Byzantine::Nuller => {
            let mock: mocks::nuller::Nuller<_, _, Sha256> =
                mocks::nuller::Nuller::new(context, mocks::nuller::Config { scheme });
            mock.start(wiring.votes);
        }
        Byzantine::Outdated => {
            let mock: mocks::outdated::Outdated<_, _, Sha256> = mocks::outdated::Outdated::new(
                context,
                mocks::outdated::Config {
                    scheme,
                    view_delta: ViewDelta::new(8),
                },
            );
            mock.start(wiring.votes);
        }
        Byzantine::Impersonator => {
            let mock: mocks::impersonator::Impersonator<_, _, Sha256> =
                mocks::impersonator::Impersonator::new(
                    context,
                    mocks::impersonator::Config { scheme },
                );
            mock.start(wiring.votes);
        }
        Byzantine::NullifyOnly => {
            let mock: mocks::nullify_only::NullifyOnly<_, _, Sha256> =
                mocks::nullify_only::NullifyOnly::new(
                    context,
                    mocks::nullify_only::Config { scheme },
                );
            mock.start(wiring.votes);
        }
    }
}

/// Validator 0 of four is byzantine (`kind`); the three honest ones keep finalizing, agree on
/// every block, and finalize every transaction exactly once.
fn byzantine_voter(kind: Byzantine, seed: u64) {
    let runtime = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(1200)));
    deterministic::Runner::new(runtime).start(|context| async move {
        let keys = keys(4);
        let link = Link {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            success_rate: probability!(1.0),
        };
        let oracle = network_with(&context, &keys, link).await;
        start_byzantine(&context, &oracle, &config(&keys[0], &keys, &[]), kind).await;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let mut ledgers = Vec::new();
        let mut nodes = Vec::new();
        for key in &keys[1..] {
            let ledger = TestLedger::new(pool.clone());
            let (handle, node) =
                start_simulated(&context, &oracle, config(key, &keys, &[]), ledger.clone());
            ledgers.push(ledger);
            nodes.push((handle, node));
        }
        let honest: Vec<&TestLedger> = ledgers.iter().collect();
        let mut submitted = Vec::new();
        for round in 0..3u32 {
            let batch = txs(round * 10..round * 10 + 10);
            pool.lock().unwrap().extend(batch.iter().cloned());
            submitted.extend(batch.iter().cloned());
            wait_all(&context, &honest, &batch).await;
        }
        let chain = assert_converged(&honest, &submitted);
        let blocked = oracle.blocked().await.unwrap();
        if matches!(
            kind,
            Byzantine::Conflicter | Byzantine::Nuller | Byzantine::Impersonator
        ) {
            // Its votes contradict each other (or are forged): every honest validator
            // noticed and blocked it.
            let byzantine = keys[0].public().0;
            for key in &keys[1..] {
                assert!(
                    blocked.contains(&(key.public().0, byzantine.clone())),
                    "{kind:?} was not blocked by every honest validator: {blocked:?}"
                );
            }
        }
        eprintln!(
            "{kind:?} (seed {seed}): {} blocks, view {}, blocked {}",
            chain.len(),
            nodes[0].1.status.current_view(),
            blocked.len()
        );
    });
}

#[test]
fn byzantine_conflicter_does_not_stop_finality() {
    byzantine_voter(Byzantine::Conflicter, 1);
}

#[test]
fn byzantine_equivocator_does_not_stop_finality() {
    byzantine_voter(Byzantine::Equivocator, 2);
}

#[test]
fn byzantine_nuller_does_not_stop_finality() {
    byzantine_voter(Byzantine::Nuller, 3);
}

#[test]
fn byzantine_outdated_voter_does_not_stop_finality() {
    byzantine_voter(Byzantine::Outdated, 4);
}

#[test]
fn byzantine_impersonator_does_not_stop_finality() {
    byzantine_voter(Byzantine::Impersonator, 5);
}

#[test]
fn byzantine_nullify_only_voter_does_not_stop_finality() {
    byzantine_voter(Byzantine::NullifyOnly, 6);
}
