//! The real ledger's verification against a byzantine proposer's transactions: each kind of
//! invalid transaction alone in a block gets a no (or, for a pack nobody has, no answer while
//! it is fetched), and valid controls get a yes, so the refusals are the transactions' own.
//!
//! The fixture (a data directory holding `alice/hello` with three commits, built by `git`)
//! is shared with the engine's byzantine-proposer test.

use super::*;
use crate::consensus::packs::PackWire;
use crate::consensus::tx::Tx;
use guts_io::refs::RefUpdate;
use guts_io::ObjectId;
use guts_shards::consensus::{batch_channel, BatchReceiver, Op, PackRef};
use std::process::Command;
use std::sync::OnceLock;

pub(crate) const REPO: &str = "alice/hello";

/// Runs `git` in `dir` with fixed identities and dates (so object ids are the same every run).
fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write as _;
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "A")
        .env("GIT_COMMITTER_EMAIL", "a@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("git runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn oid(hex: &[u8]) -> ObjectId {
    ObjectId::from_hex(hex.trim_ascii()).unwrap()
}

/// Packs `git` builds once per test: the base history, a valid follow-up and a corrupt one.
pub(crate) struct Fixture {
    /// Commits of the base history, oldest first (all in `base`).
    pub commits: Vec<ObjectId>,
    pub base: Vec<u8>,
    /// A commit on top of the last base commit, and the pack that holds it alone.
    pub next: ObjectId,
    pub next_pack: Vec<u8>,
    /// A commit whose parent line is garbage (fails the checks a push gets), alone in a pack
    /// whose bytes match its name.
    pub corrupt: ObjectId,
    pub corrupt_pack: Vec<u8>,
}

impl Fixture {
    pub fn build() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"], None);
        let mut commits = Vec::new();
        for i in 0..3 {
            let m = format!("commit {i}");
            git(d, &["commit", "-q", "--allow-empty", "-m", &m], None);
            commits.push(oid(&git(d, &["rev-parse", "HEAD"], None)));
        }
        let base = git(
            d,
            &["pack-objects", "-q", "--stdout", "--revs"],
            Some(b"HEAD\n"),
        );
        git(d, &["commit", "-q", "--allow-empty", "-m", "next"], None);
        let next = oid(&git(d, &["rev-parse", "HEAD"], None));
        let next_pack = git(
            d,
            &["pack-objects", "-q", "--stdout", "--revs"],
            Some(format!("HEAD\n^{}\n", commits[2]).as_bytes()),
        );
        let body = format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent {}\nparent not-an-object-id\n\
             author A <a@example.com> 1700000000 +0000\n\
             committer A <a@example.com> 1700000000 +0000\n\ncorrupt\n",
            commits[2]
        );
        let corrupt = oid(&git(
            d,
            &[
                "hash-object",
                "-t",
                "commit",
                "--literally",
                "-w",
                "--stdin",
            ],
            Some(body.as_bytes()),
        ));
        let corrupt_pack = git(
            d,
            &["pack-objects", "-q", "--stdout"],
            Some(format!("{corrupt}\n").as_bytes()),
        );
        Fixture {
            commits,
            base,
            next,
            next_pack,
            corrupt,
            corrupt_pack,
        }
    }
}

/// The name a pack's bytes give it.
pub(crate) fn pack_ref(bytes: &[u8]) -> PackRef {
    PackRef::of_bytes(bytes)
}

/// A data directory holding `alice/hello` with the base history ingested (checked as a push).
pub(crate) fn data_dir(packs: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (owner, name) = REPO.split_once('/').unwrap();
    drop(guts_shards::repo::Repo::create(dir.path(), owner, name).unwrap());
    let objects = guts_shards::repo::repo_dir(dir.path(), owner, name).join("objects");
    let mut ingest = guts_io::pack::ingest::Ingest::new(
        &objects.join("pack"),
        guts_io::pack::ingest::IngestLimits::default(),
    )
    .unwrap();
    ingest.write(&packs.base).unwrap();
    let source =
        guts_shards::git::StoreSource(guts_io::store::ObjectStore::open(&objects).unwrap());
    let checks = guts_io::pack::ingest::CheckOptions {
        strict: true,
        check_links: true,
    };
    ingest.finish(&source, &checks).unwrap().commit().unwrap();
    dir
}

/// Stores `bytes` as a pack of `alice/hello` without checking it (as a byzantine node would
/// serve it).
pub(crate) fn plant_pack(data: &Path, bytes: &[u8]) -> PackRef {
    let pack = pack_ref(bytes);
    let (p, i) = crate::consensus::packs::pack_paths(data, REPO, &pack).unwrap();
    std::fs::write(p, bytes).unwrap();
    std::fs::write(i, b"not checked").unwrap();
    pack
}

pub(crate) struct NoGossip;

impl TxWire for NoGossip {
    fn broadcast(&self, _: Bytes) {}
}

/// A real ledger over `data` with one shard whose batches are returned for the caller to
/// apply (or acknowledge).
pub(crate) fn ledger(
    data: &Path,
    me: u32,
    validators: Vec<[u8; 32]>,
    packs_wire: Arc<dyn PackWire>,
    sleep: Sleep,
) -> (Arc<Ledger>, BatchReceiver) {
    let consensus_dir = data.join("consensus");
    std::fs::create_dir_all(&consensus_dir).unwrap();
    let (shard, batches) = batch_channel();
    let ledger = Ledger::new(LedgerConfig {
        me: Some(me),
        validators,
        params: ConsensusParams::default(),
        data_dir: data.to_path_buf(),
        consensus_dir,
        shards: vec![shard],
        state: ChainState::load(data, 0).unwrap(),
        packs: Packs::new(data.to_path_buf(), packs_wire, sleep.clone()),
        wire: Arc::new(NoGossip),
        read_only: None,
        record: None,
        sleep,
    });
    (ledger, batches)
}

pub(crate) fn update(
    origin: u32,
    nonce: u64,
    repo: &str,
    name: &str,
    old: ObjectId,
    new: ObjectId,
    pack: Option<PackRef>,
) -> Tx {
    Tx {
        origin,
        nonce,
        repo: repo.into(),
        op: Op::Update {
            updates: vec![RefUpdate {
                name: name.into(),
                old,
                new,
            }],
            atomic: true,
            pack,
        },
    }
}

/// Pack messages between two ledgers in this process, answered synchronously.
#[derive(Default)]
struct Loopback {
    peer: OnceLock<(Arc<Ledger>, [u8; 32])>,
}

impl PackWire for Loopback {
    fn send(&self, _to: [u8; 32], msg: Bytes) {
        if let Some((ledger, me)) = self.peer.get() {
            ledger.packs.on_message(*me, &msg);
        }
    }
}

/// A sleep that never ends: a ledger that would wait for a retry stays pending.
fn never() -> Sleep {
    Arc::new(|_| Box::pin(futures::future::pending()))
}

/// A real sleep on a helper thread (for the pack checks, which run on their own thread).
fn real_sleep() -> Sleep {
    Arc::new(|d| {
        Box::pin(async move {
            let (tx, rx) = futures_channel::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                let _ = tx.send(());
            });
            let _ = rx.await;
        })
    })
}

const HONEST: [u8; 32] = [1; 32];
const BYZANTINE: [u8; 32] = [2; 32];

/// An honest validator (index 0) and a byzantine one (index 1) holding `planted` packs,
/// joined by a loopback pack wire.
struct Pair {
    honest: Arc<Ledger>,
    _byzantine: Arc<Ledger>,
    _dirs: [tempfile::TempDir; 2],
}

fn pair(packs: &Fixture, planted: &[&[u8]], sleep: Sleep) -> Pair {
    let (hd, bd) = (data_dir(packs), data_dir(packs));
    for bytes in planted {
        plant_pack(bd.path(), bytes);
    }
    let validators = vec![HONEST, BYZANTINE];
    let (hw, bw) = (Arc::new(Loopback::default()), Arc::new(Loopback::default()));
    let (honest, _) = ledger(hd.path(), 0, validators.clone(), hw.clone(), sleep.clone());
    let (byzantine, _) = ledger(bd.path(), 1, validators, bw.clone(), sleep);
    let _ = hw.peer.set((byzantine.clone(), HONEST));
    let _ = bw.peer.set((honest.clone(), BYZANTINE));
    Pair {
        honest,
        _byzantine: byzantine,
        _dirs: [hd, bd],
    }
}

/// Verifies on this thread; `None` if no verdict came within a generous bound (the pack
/// checks run on a thread of their own, so the verdict may take a moment).
fn verify_bounded(
    ledger: &Ledger,
    height: u64,
    ancestry: Vec<(u64, Vec<Bytes>)>,
    txs: Vec<Bytes>,
) -> Option<bool> {
    let verify = Box::pin(ledger.verify(height, ancestry, txs));
    let bound = real_sleep()(Duration::from_secs(60));
    match futures_lite::future::block_on(futures::future::select(verify, bound)) {
        futures::future::Either::Left((verdict, _)) => Some(verdict),
        futures::future::Either::Right(_) => None,
    }
}

/// Bytes that are not a pack, named (trailer and checksum) after their own SHA-1.
fn not_a_pack() -> Vec<u8> {
    use sha1::Digest as _;
    let mut bytes = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    let digest: [u8; 20] = sha1::Sha1::digest(&bytes).into();
    bytes.extend_from_slice(&digest);
    bytes
}

fn verify_now(
    ledger: &Ledger,
    height: u64,
    ancestry: Vec<(u64, Vec<Bytes>)>,
    txs: Vec<Bytes>,
) -> Option<bool> {
    use futures::FutureExt as _;
    ledger.verify(height, ancestry, txs).now_or_never()
}

#[test]
fn real_verify_refuses_a_byzantine_proposers_transactions() {
    let packs = Fixture::build();
    let garbage_pack = not_a_pack();
    let pair = pair(&packs, &[&packs.corrupt_pack, &garbage_pack], never());
    let l = &pair.honest;
    let [c0, c1, c2] = [packs.commits[0], packs.commits[1], packs.commits[2]];
    let null = ObjectId::NULL_SHA1;
    let main = "refs/heads/main";
    let first = update(1, 1, REPO, main, null, c0, None).to_bytes();

    // Controls: a valid update, and one that applies only on top of its ancestry.
    assert_eq!(verify_now(l, 1, vec![], vec![first.clone()]), Some(true));
    let second = update(1, 2, REPO, main, c0, c1, None).to_bytes();
    assert_eq!(
        verify_now(l, 2, vec![(1, vec![first.clone()])], vec![second.clone()]),
        Some(true)
    );

    type Case = (&'static str, u64, Vec<(u64, Vec<Bytes>)>, Vec<Bytes>);
    let refused: Vec<Case> = vec![
        (
            "compare-and-swap with a wrong old value",
            1,
            vec![],
            vec![update(1, 3, REPO, main, c1, c2, None).to_bytes()],
        ),
        (
            "compare-and-swap stale against the ancestry",
            2,
            vec![(1, vec![first.clone()])],
            vec![update(1, 4, REPO, main, null, c1, None).to_bytes()],
        ),
        (
            "two updates racing in one block",
            1,
            vec![],
            vec![
                first.clone(),
                update(1, 5, REPO, main, null, c1, None).to_bytes(),
            ],
        ),
        (
            "repository that does not exist",
            1,
            vec![],
            vec![update(1, 6, "bob/nothing", main, null, c0, None).to_bytes()],
        ),
        (
            "garbage bytes",
            1,
            vec![],
            vec![Bytes::from_static(b"\xff\x00garbage")],
        ),
        (
            "valid transaction followed by garbage",
            1,
            vec![],
            vec![first.clone(), Bytes::from_static(b"\x01")],
        ),
        (
            "unknown origin",
            1,
            vec![],
            vec![update(9, 7, REPO, main, null, c0, None).to_bytes()],
        ),
        (
            "the same transaction twice",
            1,
            vec![],
            vec![first.clone(), first.clone()],
        ),
        (
            "a transaction already in the ancestry",
            2,
            vec![(1, vec![first.clone()])],
            vec![first.clone()],
        ),
        (
            "a ref moved to an object the repository lacks, without a pack",
            1,
            vec![],
            vec![update(1, 8, REPO, main, null, packs.next, None).to_bytes()],
        ),
        (
            "a branch moved to a tree",
            1,
            vec![],
            vec![update(
                1,
                9,
                REPO,
                main,
                null,
                oid(b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
                None,
            )
            .to_bytes()],
        ),
        (
            "a pack whose bytes match its name but fail the checks",
            1,
            vec![],
            vec![update(
                1,
                10,
                REPO,
                main,
                null,
                packs.corrupt,
                Some(pack_ref(&packs.corrupt_pack)),
            )
            .to_bytes()],
        ),
        (
            "a pack whose bytes match its name but are not a pack",
            1,
            vec![],
            vec![update(1, 13, REPO, main, null, c0, Some(pack_ref(&garbage_pack))).to_bytes()],
        ),
        (
            "a pack with an impossible size",
            1,
            vec![],
            vec![update(
                1,
                11,
                REPO,
                main,
                null,
                c0,
                Some(PackRef {
                    checksum: [7; 20],
                    size: 3,
                    chunks: [0; 32],
                }),
            )
            .to_bytes()],
        ),
        ("an empty block", 1, vec![], vec![]),
    ];
    for (what, height, ancestry, txs) in refused {
        assert_eq!(
            verify_bounded(l, height, ancestry, txs),
            Some(false),
            "accepted (or left waiting): {what}"
        );
    }

    // A pack nobody has: the vote waits for it (fetch, retry), it is never a yes.
    let missing = update(
        1,
        12,
        REPO,
        main,
        null,
        c0,
        Some(PackRef {
            checksum: [0xab; 20],
            size: 4096,
            chunks: [0; 32],
        }),
    )
    .to_bytes();
    assert_eq!(verify_now(l, 1, vec![], vec![missing]), None);
    // Nothing of it was stored.
    assert!(!crate::consensus::packs::have_pack(
        &l.data_dir,
        REPO,
        &PackRef {
            checksum: [0xab; 20],
            size: 4096,
            chunks: [0; 32],
        }
    ));
    for bytes in [&packs.corrupt_pack, &garbage_pack] {
        assert!(!crate::consensus::packs::have_pack(
            &l.data_dir,
            REPO,
            &pack_ref(bytes)
        ));
    }
}

/// The control for the pack cases: a valid pack only the proposer holds is fetched, checked
/// and accepted.
#[test]
fn real_verify_fetches_and_accepts_a_valid_pack() {
    let packs = Fixture::build();
    let pair = pair(&packs, &[&packs.next_pack], real_sleep());
    let l = &pair.honest;
    let c2 = packs.commits[2];
    let ancestry = vec![(
        1,
        vec![update(1, 1, REPO, "refs/heads/main", ObjectId::NULL_SHA1, c2, None).to_bytes()],
    )];
    let tx = update(
        1,
        2,
        REPO,
        "refs/heads/main",
        c2,
        packs.next,
        Some(pack_ref(&packs.next_pack)),
    )
    .to_bytes();
    let ok = futures_lite::future::block_on(l.verify(2, ancestry, vec![tx]));
    assert!(ok, "a valid pack from the proposer was refused");
    assert!(crate::consensus::packs::have_pack(
        &l.data_dir,
        REPO,
        &pack_ref(&packs.next_pack)
    ));
}

/// A transaction with more ref updates than a block may hold can never be
/// finalized: it is refused at submission, dropped from gossip, and never
/// proposed (a leader proposing it would only waste its view), while the
/// transactions behind it still are.
#[test]
fn a_transaction_no_block_may_hold_is_never_proposed() {
    use futures::FutureExt as _;
    let packs = Fixture::build();
    let dir = data_dir(&packs);
    let (l, _batches) = ledger(
        dir.path(),
        0,
        vec![HONEST, BYZANTINE],
        Arc::new(Loopback::default()),
        never(),
    );
    let max = ConsensusParams::default().max_batch_updates;
    let branches = |n: usize, nonce: u64| Tx {
        origin: 1,
        nonce,
        repo: REPO.into(),
        op: Op::Update {
            updates: (0..n)
                .map(|k| RefUpdate {
                    name: format!("refs/heads/b{nonce}-{k}"),
                    old: ObjectId::NULL_SHA1,
                    new: packs.commits[2],
                })
                .collect(),
            atomic: false,
            pack: None,
        },
    };
    let huge = branches(max + 1, 1);
    assert!(huge.to_bytes().len() <= crate::consensus::tx::TX_MAX_BYTES);
    let small = branches(2, 2);
    let propose = |l: &Ledger| {
        l.propose(1, Vec::new(), Duration::ZERO)
            .now_or_never()
            .expect("nothing to wait for")
    };

    l.on_gossip(&huge.to_bytes());
    assert!(propose(&l).is_empty(), "gossip over the bound is dropped");

    // Forced into the pool anyway (a peer with other bounds): skipped, and
    // the valid transaction behind it is proposed.
    lock(&l.mempool).insert(huge.clone());
    l.on_gossip(&small.to_bytes());
    assert_eq!(propose(&l), vec![small.to_bytes()]);

    let refused = l.submit_local(Transaction {
        id: TxId {
            origin: 0,
            nonce: 3,
        },
        shard: 0,
        repo: REPO.into(),
        op: branches(max + 1, 3).op,
    });
    assert!(
        matches!(refused, Err(OrdererError::TooLarge { updates, .. }) if updates == max + 1),
        "{refused:?}"
    );
    // What the shard is told to do instead: parts that each fit.
    let parts = LedgerHandle(l.clone()).split_updates(REPO, huge.op.updates());
    assert_eq!(parts, vec![max, 1]);
}
