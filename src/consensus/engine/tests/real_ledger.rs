//! A byzantine proposer against the real ledger: four validators on the deterministic runtime,
//! each running the node's ledger (its mempool, proposal, verification and apply) over its own
//! data directory; validator 0 adds an invalid transaction to every block it proposes. Nothing
//! invalid is ever finalized, every valid transaction is finalized exactly once, and every
//! validator applies the same blocks.
//!
//! The shards are stand-ins that acknowledge each finalized batch and record it; packs travel
//! nowhere (a pack nobody has stays missing). The pack checks themselves are exercised in the
//! ledger's own tests.

use super::*;
use crate::consensus::ledger::{
    self,
    tests::{data_dir, update, Fixture, REPO},
};
use crate::consensus::packs::{PackWire, Sleep};
use crate::consensus::tx::Tx;
use guts_io::ObjectId;
use guts_shards::consensus::PackRef;

struct NoPacks;

impl PackWire for NoPacks {
    fn send(&self, _: [u8; 32], _: Bytes) {}
}

/// Invalid transactions to inject, and how many were injected.
type Injector = Arc<Mutex<(usize, Vec<Bytes>)>>;

/// The node's ledger as the engine sees it; a byzantine one adds one of `inject` (in turn)
/// to each of its proposals.
#[derive(Clone)]
struct RealLedger {
    ledger: Arc<ledger::Ledger>,
    inject: Option<Injector>,
}

impl Ledger for RealLedger {
    async fn propose(&self, height: u64, ancestry: Vec<(u64, Vec<Bytes>)>) -> Vec<Bytes> {
        // No batching delay: the ledger then never looks at the wall clock.
        let mut txs = self.ledger.propose(height, ancestry, Duration::ZERO).await;
        if let Some(inject) = &self.inject {
            let mut inject = inject.lock().unwrap();
            let (next, bad) = &mut *inject;
            txs.push(bad[*next % bad.len()].clone());
            *next += 1;
        }
        txs
    }

    async fn verify(&self, height: u64, ancestry: Vec<(u64, Vec<Bytes>)>, txs: Vec<Bytes>) -> bool {
        self.ledger.verify(height, ancestry, txs).await
    }

    async fn finalized(&self, height: u64, txs: Vec<Bytes>) {
        self.ledger.finalized(height, txs).await
    }
}

/// What a validator's shard was given: blocks by height, transactions re-encoded.
type Applied = Arc<Mutex<Vec<(u64, Vec<Bytes>)>>>;

fn sleep_on(context: &deterministic::Context) -> Sleep {
    let context = Arc::new(Mutex::new(context.child("ledger")));
    Arc::new(move |d| Box::pin(context.lock().unwrap().sleep(d)))
}

#[test]
fn byzantine_proposer_never_gets_invalid_transactions_finalized() {
    let fixture = Fixture::build();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| data_dir(&fixture)).collect();
    let runtime = deterministic::Config::new()
        .with_seed(7)
        .with_timeout(Some(Duration::from_secs(1200)));
    deterministic::Runner::new(runtime).start(|context| async move {
        let keys = keys(4);
        let validators: Vec<[u8; 32]> = keys
            .iter()
            .map(|k| k.public().to_bytes().try_into().unwrap())
            .collect();
        let oracle = start_network(&context, &keys, &[]).await;
        let [c0, c1, c2] = [fixture.commits[0], fixture.commits[1], fixture.commits[2]];
        let null = ObjectId::NULL_SHA1;
        let main = "refs/heads/main";
        let bad: Vec<Bytes> = vec![
            // Compare-and-swap whose old value is wrong.
            update(0, 1000, REPO, main, c2, c1, None).to_bytes(),
            // A repository that does not exist.
            update(0, 1001, "bob/nothing", main, null, c0, None).to_bytes(),
            // Garbage.
            Bytes::from_static(b"\xffgarbage"),
            // An origin that is not a validator.
            update(9, 1002, REPO, "refs/heads/x", null, c0, None).to_bytes(),
            // A pack nobody has.
            update(
                0,
                1003,
                REPO,
                "refs/heads/y",
                null,
                fixture.next,
                Some(PackRef {
                    checksum: [0xab; 20],
                    size: 4096,
                    chunks: [0; 32],
                }),
            )
            .to_bytes(),
            // An object the repository does not have, without a pack.
            update(0, 1004, REPO, "refs/heads/z", null, fixture.next, None).to_bytes(),
        ];
        let inject = Arc::new(Mutex::new((0usize, bad.clone())));
        let mut ledgers = Vec::new();
        let mut applied: Vec<Applied> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (real, mut batches) = ledger::tests::ledger(
                dirs[i].path(),
                i as u32,
                validators.clone(),
                Arc::new(NoPacks),
                sleep_on(&context),
            );
            let record: Applied = Arc::default();
            // The shard: records each batch and acknowledges it as durable.
            context.child("shard").spawn({
                let record = record.clone();
                move |_| async move {
                    use futures::StreamExt as _;
                    while let Some(mut batch) = batches.next().await {
                        let txs = batch
                            .transactions
                            .iter()
                            .map(|t| {
                                Tx {
                                    origin: t.id.origin,
                                    nonce: t.id.nonce,
                                    repo: t.repo.clone(),
                                    op: t.op.clone(),
                                }
                                .to_bytes()
                            })
                            .collect();
                        record.lock().unwrap().push((batch.height, txs));
                        if let Some(done) = batch.done.take() {
                            let _ = done.send(());
                        }
                    }
                }
            });
            let engine_ledger = RealLedger {
                ledger: real.clone(),
                inject: (i == 0).then(|| inject.clone()),
            };
            start_simulated(&context, &oracle, config(key, &keys, &[]), engine_ledger);
            ledgers.push(real);
            applied.push(record);
        }

        // Valid transactions, gossiped to every validator: new branches, then a chain of
        // compare-and-swaps on main.
        let gossip = |tx: &Tx| {
            for l in &ledgers {
                l.on_gossip(&tx.to_bytes());
            }
            tx.to_bytes()
        };
        let mut valid = Vec::new();
        for i in 0..8u64 {
            let name = format!("refs/heads/b{i}");
            let tx = update(
                (i % 4) as u32,
                i,
                REPO,
                &name,
                null,
                fixture.commits[(i % 3) as usize],
                None,
            );
            valid.push(gossip(&tx));
        }
        let finalized = |applied: &Applied| -> BTreeSet<Bytes> {
            applied
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(_, txs)| txs.clone())
                .collect()
        };
        let wait = |want: Vec<Bytes>| {
            let applied = applied.clone();
            let context = context.child("wait");
            let inject = inject.clone();
            let bad = bad.clone();
            async move {
                let kinds = bad.len();
                loop {
                    for (i, a) in applied.iter().enumerate() {
                        let finalized = finalized(a);
                        if let Some(tx) = bad.iter().find(|tx| finalized.contains(*tx)) {
                            panic!("validator {i} applied an invalid transaction: {tx:?}");
                        }
                    }
                    let all = applied
                        .iter()
                        .all(|a| want.iter().all(|tx| finalized(a).contains(tx)));
                    // Every kind of invalid transaction was proposed at least once.
                    if all && inject.lock().unwrap().0 >= kinds {
                        return;
                    }
                    context.sleep(Duration::from_millis(100)).await;
                }
            }
        };
        wait(valid.clone()).await;
        for (n, (old, new)) in [(null, c0), (c0, c1), (c1, c2)].into_iter().enumerate() {
            let tx = update(1, 100 + n as u64, REPO, main, old, new, None);
            let bytes = gossip(&tx);
            valid.push(bytes.clone());
            wait(vec![bytes]).await;
        }

        let reference = applied[1].lock().unwrap().clone();
        let heights: Vec<u64> = ledgers.iter().map(|l| l.applied_height()).collect();
        eprintln!(
            "byzantine proposer: {} blocks applied, {} invalid proposals, heights {heights:?}",
            reference.len(),
            inject.lock().unwrap().0
        );
        for (i, record) in applied.iter().enumerate() {
            let record = record.lock().unwrap();
            let shortest = record.len().min(reference.len());
            assert_eq!(
                record[..shortest],
                reference[..shortest],
                "validator {i} applied other blocks"
            );
        }
        let mut all: Vec<Bytes> = reference.iter().flat_map(|(_, t)| t.clone()).collect();
        for tx in &bad {
            assert!(!all.contains(tx), "an invalid transaction was finalized");
        }
        all.sort();
        valid.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            reference.iter().map(|(_, t)| t.len()).sum::<usize>(),
            "a transaction was applied twice"
        );
        assert_eq!(all, valid, "every valid transaction exactly once");
        let _ = &ledgers;
    });
}
