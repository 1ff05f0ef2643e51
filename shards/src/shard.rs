//! A shard: one glommio executor and the repositories it owns.
//!
//! Every repository belongs to exactly one shard (ahash of `OWNER/NAME`
//! with fixed seeds, so ownership is stable across restarts). The owner
//! holds the repository's mutable state; other shards reach it by sending
//! a message ([`crate::ingress`]) through the owner's bounded inbox and
//! awaiting the reply. Packs
//! are immutable once written, so a snapshot taken on the owner can be
//! read by any shard.

use futures_channel::oneshot;
use futures_lite::StreamExt;
use guts_io::refs::{RefError, RefUpdate};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::{AccessOutcome, AccessTable, FailureLimiter};
use crate::config::ShardConfig;
use crate::consensus::{
    BatchReceiver, FinalizedBatch, Op, Orderer, PackRef, Transaction, TxId, ACCESS_SHARD,
};
use crate::ingress::Inbox;
use crate::memory::MemoryBudget;
use crate::repo::{
    check_name, find_case_variant, repo_dir, DamagedRepo, RefSnapshot, Repo, RepoError,
};

/// Repositories a shard keeps open (ref store, pack indexes, caches);
/// the least recently used idle ones are closed beyond this.
pub const OPEN_REPOS_MAX: usize = 256;

/// Ref updates of a non-atomic push checked and written (as one log
/// record) before the executor is given to other tasks.
pub const APPLY_SLICE_UPDATES: usize = 1024;

/// Pushes that may resolve deltas (the long part of a push) at once on one
/// shard: one less than its blocking threads, so that pushes never hold
/// every thread a clone's walk needs.
pub const PUSH_RESOLVE_SLOTS: usize = if crate::BLOCKING_THREADS_PER_SHARD > 1 {
    crate::BLOCKING_THREADS_PER_SHARD - 1
} else {
    1
};

/// Shares of the git-services task queue (the default queue, which accepts
/// connections and answers health checks, has 1000).
pub const BULK_SHARES: usize = 1000;

pub use crate::rejection::{UpdateOutcome, UpdateRejection};

/// Default for how long a client waits for its transaction to be finalized
/// before it is told that the network did not finalize it (no quorum).
pub const FINALIZE_WAIT_MS: u64 = 30_000;

/// What a waiting request hears once its transaction is applied.
#[derive(Debug)]
pub enum TxOutcome {
    /// One outcome per ref update, in order.
    Refs(Vec<UpdateOutcome>),
    /// The outcome of an access change.
    Access(AccessOutcome),
}

/// A transaction handed to the ordering service, not yet answered.
struct Waiting {
    id: TxId,
    rx: oneshot::Receiver<TxOutcome>,
    submitted_at: std::time::Instant,
}

/// Errors of the shard layer.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("owning shard {0} is not running")]
    ShardGone(usize),
    #[error("ordering service: {0}")]
    Orderer(#[from] crate::consensus::OrdererError),
    #[error("{0}")]
    Rejected(String),
    #[error("ordering service dropped the transaction")]
    TransactionLost,
    #[error("not finalized within {waited_ms} ms: the validators have no quorum right now; the update may still apply once they recover (fetch to check)")]
    NotFinalized { waited_ms: u64 },
    #[error("the node is shutting down; nothing was changed, retry against a running node")]
    Stopping,
    #[error("access changes are ordered by shard {ACCESS_SHARD}, not shard {0}")]
    NotAccessShard(usize),
}

/// Stable owner of a repository among `shards` shards.
pub fn owner_of(key: &str, shards: usize) -> usize {
    // Fixed seeds: ownership must not change between runs.
    let state = ahash::RandomState::with_seeds(0x6775_7473, 0x6e6f_6465, 0x7368_6172, 0x6473_0001);
    (state.hash_one(key) % shards.max(1) as u64) as usize
}

/// An open repository and the use-clock value of its last use.
type OpenRepo = (Rc<RefCell<Repo>>, u64);

/// One shard's state. Lives on its executor only.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Node configuration.
    pub config: ShardConfig,
    /// Open repositories and when each was last used (a use counter).
    repos: RefCell<HashMap<String, OpenRepo>>,
    use_clock: Cell<u64>,
    pending: RefCell<HashMap<TxId, oneshot::Sender<TxOutcome>>>,
    orderer: Arc<dyn Orderer>,
    next_tx: Cell<u64>,
    /// Nonces start from the wall clock at start, so they are never reused
    /// across restarts; shards interleave (nonce ≡ shard id mod shards).
    nonce_base: u64,
    pub(crate) peers: Vec<Inbox>,
    /// Open connections on this shard.
    pub connections: Cell<usize>,
    /// This shard's copy of the access table (tokens, private
    /// repositories), changed only by applying finalized batches.
    pub access: RefCell<AccessTable>,
    /// Failed authentication attempts per client address.
    pub auth_failures: RefCell<FailureLimiter>,
    /// Repositories being created right now (owner shard only).
    pub creating: RefCell<std::collections::HashSet<String>>,
    /// Repositories whose creation is being applied (on the blocking
    /// pool) on this shard: not opened by requests until it is done.
    being_created: RefCell<std::collections::HashSet<String>>,
    /// Set when the node stops: no new connections, connections close
    /// once their request in flight is answered.
    pub stopping: Cell<bool>,
    /// Closed when the node stops: waiting on it is how tasks hear of it.
    stop: glommio::sync::Semaphore,
    /// Set when the drain time is over: no new transactions are submitted.
    pub halted: Cell<bool>,
    /// Repositories found damaged at start (reported by `/health`).
    pub damaged: Arc<Vec<DamagedRepo>>,
    /// The node's memory budget (shared by every shard).
    pub memory: Arc<MemoryBudget>,
    /// Pack responses shared by identical requests (shared by every shard).
    pub pack_cache: Arc<crate::pack_cache::PackCache>,
    /// Pushes resolving deltas at once on this shard: fewer than its
    /// blocking threads, so fetches always have one.
    pub push_slots: glommio::sync::Semaphore,
    /// The task queue git services run in, beside the default queue that
    /// accepts connections and answers health checks: the executor splits
    /// its time between the two, so no number of busy git requests delays
    /// a health check by more than one time slice.
    bulk: glommio::TaskQueueHandle,
    /// TLS for new connections, if configured (replaced on reload).
    pub tls: RefCell<Option<futures_rustls::TlsAcceptor>>,
    /// Repositories whose `packed-refs`/`HEAD` export is being written (by
    /// key); `true` when refs changed again meanwhile, so the writer goes
    /// round once more.
    exports: RefCell<HashMap<String, bool>>,
}

impl Shard {
    /// Create the shard state; `peers[i]` is shard i's inbox.
    pub fn new(
        id: usize,
        config: ShardConfig,
        orderer: Arc<dyn Orderer>,
        peers: Vec<Inbox>,
        access: AccessTable,
        damaged: Arc<Vec<DamagedRepo>>,
    ) -> Rc<Shard> {
        let config_memory = config.limits.memory_budget_bytes;
        let pack_cache = crate::pack_cache::PackCache::node(
            config.limits.pack_cache_bytes,
            config.limits.pack_cache_entries,
        );
        let auth_failures = FailureLimiter::new(
            config.limits.auth_failures_max,
            config.limits.auth_failure_window_ms,
        );
        Rc::new(Shard {
            id,
            repos: RefCell::new(HashMap::new()),
            use_clock: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            orderer,
            next_tx: Cell::new(0),
            nonce_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0)
                .saturating_mul(64),
            peers,
            connections: Cell::new(0),
            access: RefCell::new(access),
            auth_failures: RefCell::new(auth_failures),
            creating: RefCell::new(Default::default()),
            being_created: RefCell::new(Default::default()),
            stopping: Cell::new(false),
            stop: glommio::sync::Semaphore::new(0),
            halted: Cell::new(false),
            damaged,
            memory: MemoryBudget::node(config_memory),
            pack_cache,
            push_slots: glommio::sync::Semaphore::new(PUSH_RESOLVE_SLOTS as u64),
            bulk: glommio::executor().create_task_queue(
                glommio::Shares::Static(BULK_SHARES),
                glommio::Latency::NotImportant,
                "git-services",
            ),
            tls: RefCell::new(config.tls.clone().map(crate::tls::acceptor)),
            exports: RefCell::new(HashMap::new()),
            config,
        })
    }

    /// Begin stopping: the accept loop ends, connections finish their
    /// request in flight and close.
    pub fn begin_stop(&self) {
        if !self.stopping.replace(true) {
            self.stop.close();
        }
    }

    /// Resolves once the node is stopping.
    pub async fn stopped(&self) {
        if self.stopping.get() {
            return;
        }
        // Nobody signals the semaphore: acquiring fails once it is closed.
        let _ = self.stop.acquire(1).await;
    }

    /// Transactions submitted and not yet applied.
    pub fn pending_transactions(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Run `work` (a git service request) in the shard's git-services task
    /// queue and wait for it; dropping the returned future cancels it.
    pub async fn in_bulk<T: 'static>(&self, work: impl Future<Output = T> + 'static) -> T {
        let work = Rc::new(RefCell::new(Some(work)));
        let inner = work.clone();
        let task = glommio::spawn_local_into(
            async move {
                let taken = inner.borrow_mut().take();
                match taken {
                    Some(w) => Some(w.await),
                    None => None,
                }
            },
            self.bulk,
        );
        if let Ok(task) = task {
            if let Some(out) = task.await {
                return out;
            }
        }
        // The queue refused the task (it cannot: the shard made it): run here.
        let taken = work.borrow_mut().take();
        match taken {
            Some(w) => w.await,
            None => std::future::pending().await,
        }
    }

    /// Number of shards.
    pub fn count(&self) -> usize {
        self.peers.len()
    }

    /// Owner shard of `key`.
    pub fn owner(&self, key: &str) -> usize {
        owner_of(key, self.count())
    }

    /// The repositories this shard holds open now.
    pub fn open_repos(&self) -> Vec<(String, Rc<RefCell<Repo>>)> {
        self.repos
            .borrow()
            .iter()
            .map(|(k, (r, _))| (k.clone(), r.clone()))
            .collect()
    }

    /// The repository `owner/name` (owner shard only), opened on first use.
    pub fn repo(&self, owner: &str, name: &str) -> Result<Rc<RefCell<Repo>>, RepoError> {
        check_name("owner", owner)?;
        check_name("repository name", name)?;
        let key = format!("{owner}/{name}");
        debug_assert_eq!(
            self.owner(&key),
            self.id,
            "repository used off its owning shard"
        );
        let now = self.tick();
        if let Some((r, used)) = self.repos.borrow_mut().get_mut(&key) {
            *used = now;
            return Ok(r.clone());
        }
        if self.being_created.borrow().contains(&key) {
            return Err(RepoError::NotFound(key));
        }
        let dir = repo_dir(&self.config.data_dir, owner, name);
        let repo = Rc::new(RefCell::new(Repo::open(dir, key.clone())?));
        self.insert_repo(key, repo.clone());
        Ok(repo)
    }

    fn tick(&self) -> u64 {
        let now = self.use_clock.get() + 1;
        self.use_clock.set(now);
        now
    }

    /// Keep a repository open, closing the least recently used idle ones
    /// beyond [`OPEN_REPOS_MAX`] (their caches and file handles go with them).
    fn insert_repo(&self, key: String, repo: Rc<RefCell<Repo>>) {
        let now = self.tick();
        let mut repos = self.repos.borrow_mut();
        repos.insert(key, (repo, now));
        while repos.len() > OPEN_REPOS_MAX {
            // Only a repository nobody holds right now may close: a handle
            // alive across an await (a push being applied) keeps it open.
            let victim = repos
                .iter()
                .filter(|(_, (r, _))| Rc::strong_count(r) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    repos.remove(&k);
                }
                None => break,
            }
        }
    }

    /// Create repository `owner/name` (owner shard only), refusing one
    /// whose name differs from an existing repository's only in letter
    /// case (hosts treat such names as one). Different spellings live on
    /// different shards, so the check and the creation hold a node-wide
    /// claim on the lower-case name.
    ///
    /// The directory scans and the dozen fsyncs of a creation run on the
    /// blocking pool, not the executor: a burst of creations would
    /// otherwise stall every request on the shard for their whole length.
    /// Until the creation is done, the repository is not opened by
    /// requests ([`Shard::repo`] answers `NotFound`), so it is never open
    /// twice.
    pub async fn create_repo(&self, owner: &str, name: &str) -> Result<(), RepoError> {
        check_name("owner", owner)?;
        check_name("repository name", name)?;
        let key = format!("{owner}/{name}");
        if !self.being_created.borrow_mut().insert(key.clone()) {
            return Err(RepoError::Exists(key));
        }
        let data_dir = self.config.data_dir.clone();
        let (o, n) = (owner.to_string(), name.to_string());
        let created = glommio::executor()
            .spawn_blocking(move || {
                let _claim = CaseClaim::take(&o, &n)?;
                if let Some(existing) = find_case_variant(&data_dir, &o, &n) {
                    return Err(RepoError::Exists(existing));
                }
                let repo = Repo::create(&data_dir, &o, &n)?;
                crate::repo::note_created(&data_dir, &o, &n);
                Ok(repo)
            })
            .await;
        self.being_created.borrow_mut().remove(&key);
        let repo = created?;
        self.insert_repo(repo.key.clone(), Rc::new(RefCell::new(repo)));
        Ok(())
    }

    /// A snapshot of `owner/name`, taken on its owner.
    pub async fn snapshot(
        self: &Rc<Self>,
        owner: &str,
        name: &str,
    ) -> Result<RefSnapshot, ShardError> {
        let key = format!("{owner}/{name}");
        check_name("owner", owner)?;
        check_name("repository name", name)?;
        self.to_owner(&key)
            .snapshot(owner.to_string(), name.to_string())
            .await?
            .map_err(ShardError::from)
    }

    /// Why this node refuses writes, if it does (a read replica).
    pub fn read_only(&self) -> Option<String> {
        self.orderer.read_only()
    }

    /// Hand ref updates of a repository owned by this shard to the ordering
    /// service and wait until they are finalized and applied durably.
    ///
    /// A push larger than one transaction of the ordering service may be
    /// (a network bounds the updates and bytes of each, so every block
    /// fits its messages) is cut into consecutive parts ordered on their
    /// own, when it is not atomic: each ref stands alone then, as in git's
    /// own receive-pack. Every part names the push's pack. An atomic push
    /// that does not fit is refused whole before anything is ordered.
    pub async fn order_updates(
        &self,
        key: &str,
        updates: Vec<RefUpdate>,
        atomic: bool,
        pack: Option<PackRef>,
    ) -> Result<Vec<UpdateOutcome>, ShardError> {
        let count = updates.len();
        let parts = self.orderer.split_updates(key, &updates);
        if parts.len() > 1 && atomic {
            let (updates_max, bytes_max) = self.orderer.tx_bounds().unwrap_or((0, 0));
            let why = UpdateRejection::AtomicTooLarge {
                count,
                updates_max,
                bytes_max,
            };
            return Ok(vec![Err(why); count]);
        }
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(self.config.finalize_wait_ms);
        let mut submitted = Vec::with_capacity(parts.len());
        let mut rest = updates;
        for len in parts {
            let tail = rest.split_off(len.min(rest.len()));
            let op = Op::Update {
                updates: std::mem::replace(&mut rest, tail),
                atomic,
                pack,
            };
            match self.submit(key, op) {
                Ok(waiting) => submitted.push((len, Ok(waiting))),
                Err(e) => submitted.push((len, Err(e))),
            }
        }
        // Parts are submitted at once (they may share a block) and then
        // waited for in turn, all against one deadline. A part that fails
        // fails only its own refs; when the only part fails, so does the push.
        let single = submitted.len() == 1;
        let mut outcomes = Vec::with_capacity(count);
        for (len, waiting) in submitted {
            let result = match waiting {
                Ok(w) => self.wait(w, deadline).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(TxOutcome::Refs(part)) => outcomes.extend(part),
                Ok(TxOutcome::Access(_)) => {
                    outcomes.extend((0..len).map(|_| Err(UpdateRejection::UnexpectedOutcome)))
                }
                Err(e) if single => return Err(e),
                Err(e) => {
                    let why = Arc::new(e);
                    outcomes
                        .extend((0..len).map(|_| Err(UpdateRejection::NotApplied(why.clone()))));
                }
            }
        }
        Ok(outcomes)
    }

    /// Order the creation of repository `key` (owned by this shard) and wait
    /// until it is final and on disk.
    pub async fn order_create(&self, key: &str) -> Result<UpdateOutcome, ShardError> {
        match self.order(key, Op::CreateRepo).await? {
            TxOutcome::Refs(mut out) => Ok(out.pop().unwrap_or(Ok(()))),
            TxOutcome::Access(_) => Ok(Err(UpdateRejection::UnexpectedOutcome)),
        }
    }

    /// Order an access change (token creation or revocation, repository
    /// visibility) and wait until every shard's table will have it and it
    /// is on disk. Only [`ACCESS_SHARD`] submits access changes.
    /// `repo` is the repository a visibility change is about, empty for tokens.
    pub async fn order_access(&self, repo: &str, op: Op) -> Result<AccessOutcome, ShardError> {
        debug_assert!(op.is_node_wide(), "not an access change");
        if self.id != ACCESS_SHARD {
            return Err(ShardError::NotAccessShard(self.id));
        }
        match self.order(repo, op).await? {
            TxOutcome::Access(outcome) => Ok(outcome),
            TxOutcome::Refs(_) => Ok(Err("unexpected outcome".into())),
        }
    }

    async fn order(&self, repo: &str, op: Op) -> Result<TxOutcome, ShardError> {
        let waiting = self.submit(repo, op)?;
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(self.config.finalize_wait_ms);
        self.wait(waiting, deadline).await
    }

    /// Hand one transaction to the ordering service.
    fn submit(&self, repo: &str, op: Op) -> Result<Waiting, ShardError> {
        if let Some(why) = self.orderer.read_only() {
            return Err(crate::consensus::OrdererError::ReadOnly(why).into());
        }
        if self.halted.get() {
            return Err(ShardError::Stopping);
        }
        let seq = self.next_tx.get() + 1;
        self.next_tx.set(seq);
        let id = TxId {
            origin: self.orderer.origin(),
            nonce: self.nonce_base + seq * self.count() as u64 + self.id as u64,
        };
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        // The finalization time runs from here to the outcome: what the
        // client waits for once its pack is checked.
        let submitted_at = std::time::Instant::now();
        let submitted = self.orderer.submit(Transaction {
            id,
            shard: self.id,
            repo: repo.to_string(),
            op,
        });
        if let Err(e) = submitted {
            self.pending.borrow_mut().remove(&id);
            return Err(e.into());
        }
        Ok(Waiting {
            id,
            rx,
            submitted_at,
        })
    }

    /// Wait for a submitted transaction's outcome until `deadline`.
    async fn wait(
        &self,
        waiting: Waiting,
        deadline: std::time::Instant,
    ) -> Result<TxOutcome, ShardError> {
        let Waiting {
            id,
            mut rx,
            submitted_at,
        } = waiting;
        // Answered already (a part waited for after the others): no timer.
        if let Ok(Some(outcome)) = rx.try_recv() {
            crate::metrics::record_finalization(submitted_at.elapsed().as_secs_f64());
            return Ok(outcome);
        }
        let wait_ms = self.config.finalize_wait_ms;
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let result = glommio::timer::timeout(wait, async {
            Ok::<_, glommio::GlommioError<()>>(rx.await.map_err(|_| ShardError::TransactionLost))
        })
        .await;
        match result {
            Ok(r) => {
                if r.is_ok() {
                    crate::metrics::record_finalization(submitted_at.elapsed().as_secs_f64());
                }
                r
            }
            Err(_) => {
                self.pending.borrow_mut().remove(&id);
                Err(ShardError::NotFinalized { waited_ms: wait_ms })
            }
        }
    }

    /// Apply finalized batches in order as they arrive; runs for the life of the shard.
    pub async fn apply_batches(self: Rc<Self>, mut batches: BatchReceiver) {
        let mut last_height = 0;
        while let Some(batch) = batches.next().await {
            if batch.height <= last_height && batch.height != 0 {
                // Delivered again (at-least-once): already applied.
                if let Some(done) = batch.done {
                    let _ = done.send(());
                }
                continue;
            }
            last_height = batch.height.max(last_height);
            let touched: Vec<String> = batch
                .transactions
                .iter()
                .filter(|tx| matches!(tx.op, Op::Update { .. }))
                .map(|tx| tx.repo.clone())
                .collect();
            self.apply_batch(batch).await;
            for key in touched {
                self.export_git_files(key);
            }
        }
    }

    /// Bring the `packed-refs` and `HEAD` C git reads in repository `key`
    /// up to date with its ref log, off the push's path: the waiting pushes
    /// are already answered, the files are written on the blocking pool,
    /// and changes made while one export is written are coalesced into the
    /// next. Those files are never read back (the log is the truth), so a
    /// crash that leaves them behind loses nothing: the store rewrites
    /// them when it is next opened.
    fn export_git_files(self: &Rc<Self>, key: String) {
        {
            let mut exports = self.exports.borrow_mut();
            if let Some(again) = exports.get_mut(&key) {
                *again = true;
                return;
            }
            exports.insert(key.clone(), false);
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            loop {
                shard.exports.borrow_mut().insert(key.clone(), false);
                let repo = key
                    .split_once('/')
                    .and_then(|(owner, name)| shard.repo(owner, name).ok());
                // What changed since the last export: usually a few loose
                // ref files, not the whole packed-refs.
                let export = match &repo {
                    Some(r) => r
                        .try_borrow_mut()
                        .map(|mut r| Some(r.refs.take_git_export())),
                    None => Ok(None),
                };
                drop(repo);
                let Ok(export) = export else {
                    // In use across an await: try again shortly.
                    futures_lite::future::yield_now().await;
                    continue;
                };
                if let Some(export) = export {
                    let written = glommio::executor()
                        .spawn_blocking(move || export.write())
                        .await;
                    if let Err(e) = written {
                        tracing::warn!(repo = %key, error = %e, "packed-refs/HEAD export not written; C git reading the data directory sees older refs until the next one");
                        // The next export is whole, so that what this one
                        // held is not lost.
                        let repo = key
                            .split_once('/')
                            .and_then(|(owner, name)| shard.repo(owner, name).ok());
                        if let Some(repo) = repo {
                            loop {
                                if let Ok(mut r) = repo.try_borrow_mut() {
                                    r.refs.export_failed();
                                    break;
                                }
                                futures_lite::future::yield_now().await;
                            }
                        }
                    }
                }
                let mut exports = shard.exports.borrow_mut();
                if exports.get(&key) == Some(&true) {
                    continue;
                }
                exports.remove(&key);
                break;
            }
        })
        .detach();
    }

    /// Apply one finalized batch. Ref updates are staged in their
    /// repository in block order (each checked against the state the ones
    /// before it left) and committed together at the end: one log record
    /// and one `fdatasync` per repository per block, carrying the block's
    /// height when blocks may be replayed. Only then are the pushes
    /// answered. A repository that already holds the height skips the
    /// block (delivered again after a restart).
    async fn apply_batch(&self, batch: FinalizedBatch) {
        let height = batch.height;
        // Repositories this block changes, held open until committed, with
        // the indexes of their transactions' outcomes.
        let mut staged: Vec<(String, Rc<RefCell<Repo>>, Vec<usize>)> = Vec::new();
        let mut answers: Vec<(TxId, bool, TxOutcome)> = Vec::new();
        for tx in batch.transactions {
            let outcome = match &tx.op {
                Op::Update {
                    updates,
                    atomic,
                    pack,
                } => {
                    let held = staged.iter().position(|(k, _, _)| *k == tx.repo);
                    let handle = match held {
                        Some(i) => Ok(staged[i].1.clone()),
                        None => tx
                            .repo
                            .split_once('/')
                            .ok_or(UpdateRejection::BadRepoKey)
                            .and_then(|(owner, name)| Ok(self.repo(owner, name)?)),
                    };
                    match handle {
                        Err(why) => TxOutcome::Refs(vec![Err(why); updates.len()]),
                        Ok(r) if batch.replayed && r.borrow().refs.applied_height() >= height => {
                            tracing::debug!(repo = %tx.repo, height, "block already applied here");
                            TxOutcome::Refs(vec![Ok(()); updates.len()])
                        }
                        Ok(r) => {
                            let slot = match held {
                                Some(i) => i,
                                None => {
                                    staged.push((tx.repo.clone(), r, Vec::new()));
                                    staged.len() - 1
                                }
                            };
                            staged[slot].2.push(answers.len());
                            TxOutcome::Refs(
                                self.apply_ref_updates(&tx.repo, updates, *atomic, pack.as_ref())
                                    .await,
                            )
                        }
                    }
                }
                Op::CreateRepo => TxOutcome::Refs(vec![self.apply_create(&tx.repo).await]),
                _ => TxOutcome::Access(self.apply_access(&tx)),
            };
            answers.push((tx.id, tx.shard == self.id, outcome));
        }
        for (key, repo, indexes) in staged {
            let committed = {
                let mut repo = repo.borrow_mut();
                let committed = repo.refs.commit(batch.replayed.then_some(height));
                repo.invalidate();
                committed
            };
            if let Err(e) = committed {
                tracing::error!(repo = %key, height, error = %e, "ref updates not written; closing the repository so it is recovered on next use");
                let why = UpdateRejection::from(e);
                for i in indexes {
                    if let TxOutcome::Refs(outcomes) = &mut answers[i].2 {
                        for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                            *o = Err(why.clone());
                        }
                    }
                }
                // Whether the record reached the disk is unknown: the next
                // use replays the log and settles it.
                self.repos.borrow_mut().remove(&key);
            }
        }
        for (id, mine, outcome) in answers {
            if !mine {
                continue;
            }
            if let Some(waiter) = self.pending.borrow_mut().remove(&id) {
                let _ = waiter.send(outcome);
            }
        }
        for r in batch.rejections {
            if let Some(waiter) = self.pending.borrow_mut().remove(&r.id) {
                let _ = waiter.send(TxOutcome::Refs(r.reasons.into_iter().map(Err).collect()));
            }
        }
        if let Some(done) = batch.done {
            let _ = done.send(());
        }
    }

    async fn apply_create(&self, repo: &str) -> UpdateOutcome {
        let Some((owner, name)) = repo.split_once('/') else {
            return Err(UpdateRejection::BadRepoKey);
        };
        self.create_repo(owner, name).await?;
        tracing::info!(repo = %repo, "repository created");
        Ok(())
    }

    /// Apply an access change to this shard's table; [`ACCESS_SHARD`] also
    /// writes the table to disk before the change is answered.
    fn apply_access(&self, tx: &Transaction) -> AccessOutcome {
        let outcome = self.access.borrow_mut().apply(tx);
        if self.id == ACCESS_SHARD && outcome.is_ok() {
            if let Err(e) = self.access.borrow().save(&self.config.data_dir) {
                tracing::error!(error = %e, "access table not written; it is written again with the next change");
                return Err(format!(
                    "the change is final but was not written to disk: {e}"
                ));
            }
        }
        outcome
    }

    async fn apply_ref_updates(
        &self,
        repo: &str,
        updates: &[RefUpdate],
        atomic: bool,
        pack: Option<&PackRef>,
    ) -> Vec<UpdateOutcome> {
        let had_branches = self.has_branches(repo);
        let outcomes = self
            .apply_ref_updates_inner(repo, updates, atomic, pack)
            .await;
        if !had_branches {
            self.adopt_default_branch(repo, updates, &outcomes);
        }
        outcomes
    }

    /// Whether repository `key` has any branch now.
    fn has_branches(&self, key: &str) -> bool {
        let Some((owner, name)) = key.split_once('/') else {
            return false;
        };
        let Ok(repo) = self.repo(owner, name) else {
            return false;
        };
        let has = repo.try_borrow().is_ok_and(|r| {
            r.refs
                .refs()
                .range::<str, _>((
                    std::ops::Bound::Included("refs/heads/"),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_some_and(|(n, _)| n.starts_with("refs/heads/"))
        });
        has
    }

    /// In a repository that had no branch before this push (a new one, or
    /// one whose branches were all deleted), point HEAD at a branch the
    /// push creates — `main` or `master` when present — so clones check
    /// out what was pushed, as hosting services do. A push never moves HEAD
    /// in a repository that has branches, even if HEAD's own branch is gone.
    fn adopt_default_branch(&self, key: &str, updates: &[RefUpdate], outcomes: &[UpdateOutcome]) {
        let Some((entry, _)) = self.repos.borrow().get(key).cloned() else {
            return;
        };
        let Ok(mut repo) = entry.try_borrow_mut() else {
            return;
        };
        if repo.refs.get(repo.refs.head_target()).is_some() {
            return;
        }
        let created: Vec<&str> = updates
            .iter()
            .zip(outcomes)
            .filter(|(u, o)| o.is_ok() && !u.new.is_null() && u.name.starts_with("refs/heads/"))
            .map(|(u, _)| u.name.as_str())
            .collect();
        let pick = ["refs/heads/main", "refs/heads/master"]
            .into_iter()
            .find(|p| created.contains(p))
            .or_else(|| created.first().copied());
        if let Some(target) = pick {
            let target = target.to_string();
            match repo.refs.stage_head(&target) {
                Ok(()) => {
                    tracing::info!(repo = %key, head = %target, "HEAD now points at the first pushed branch");
                    repo.invalidate();
                }
                Err(e) => tracing::warn!(repo = %key, error = %e, "could not move HEAD"),
            }
        }
    }

    async fn apply_ref_updates_inner(
        &self,
        repo: &str,
        updates: &[RefUpdate],
        atomic: bool,
        pack: Option<&PackRef>,
    ) -> Vec<UpdateOutcome> {
        let key = repo;
        let Some((owner, name)) = key.split_once('/') else {
            return vec![Err(UpdateRejection::BadRepoKey); updates.len()];
        };
        let repo = match self.repo(owner, name) {
            Ok(r) => r,
            Err(e) => return vec![Err(e.into()); updates.len()],
        };
        if let Some(p) = pack {
            let mut repo = repo.borrow_mut();
            // A pack that arrived from a peer is on disk but not yet in
            // this shard's store: adopt it before the refs point into it.
            // (A pack a repack merged is held under the merged pack's name.)
            if !repo.store.holds_pack(&p.checksum) {
                let dir = repo.store.objects_dir().join("pack");
                let stem = p.file_stem();
                let (pack_path, idx_path) = (
                    dir.join(format!("{stem}.pack")),
                    dir.join(format!("{stem}.idx")),
                );
                let merged_earlier = !pack_path.exists()
                    && updates
                        .iter()
                        .all(|u| u.new.is_null() || repo.store.contains(&u.new));
                if merged_earlier {
                    // Applied again after a restart, its pack since merged
                    // by a repack (whose objects are all kept): the objects
                    // it brought are here.
                    tracing::info!(repo = %key, pack = %stem, "the update's pack was merged by a repack; its objects are in the store");
                } else if let Err(e) = repo.store.add_pack(&pack_path, &idx_path) {
                    tracing::error!(repo = %key, pack = %stem, error = %e, "finalized update names a pack this node cannot open");
                    let why = UpdateRejection::PackUnavailable {
                        pack: stem,
                        source: Arc::new(e),
                    };
                    return vec![Err(why); updates.len()];
                }
            }
        }
        if atomic {
            let mut repo = repo.borrow_mut();
            repo.invalidate();
            return match repo.refs.stage(updates) {
                Ok(()) => vec![Ok(()); updates.len()],
                Err(e) => {
                    let failing = failing_ref(&e);
                    let why = UpdateRejection::from(e);
                    updates
                        .iter()
                        .map(|u| {
                            if failing.as_deref() == Some(u.name.as_str()) {
                                Err(why.clone())
                            } else {
                                Err(UpdateRejection::AtomicPushFailed)
                            }
                        })
                        .collect()
                }
            };
        }
        // Non-atomic: each update stands alone. They are checked and staged
        // a slice at a time, yielding between slices, so that a push of
        // many refs does not hold the executor (git's own receive-pack also
        // updates refs one after another); the block's commit writes them.
        let mut outcomes: Vec<UpdateOutcome> = Vec::with_capacity(updates.len());
        for (i, slice) in updates.chunks(APPLY_SLICE_UPDATES).enumerate() {
            if i > 0 {
                futures_lite::future::yield_now().await;
            }
            let mut repo = repo.borrow_mut();
            repo.invalidate();
            let base = outcomes.len();
            let mut valid = Vec::new();
            for u in slice {
                match repo.refs.check(std::slice::from_ref(u)) {
                    Ok(()) => {
                        outcomes.push(Ok(()));
                        valid.push(u.clone());
                    }
                    Err(e) => outcomes.push(Err(e.into())),
                }
            }
            if valid.is_empty() {
                continue;
            }
            if let Err(joint) = repo.refs.stage(&valid) {
                // Updates valid alone may conflict together (D/F): apply one by one.
                tracing::debug!(repo = %key, error = %joint, "joint apply failed, applying singly");
                for (k, u) in slice.iter().enumerate() {
                    if outcomes[base + k].is_err() {
                        continue;
                    }
                    if let Err(e) = repo.refs.stage(std::slice::from_ref(u)) {
                        outcomes[base + k] = Err(e.into());
                    }
                }
            }
            repo.invalidate();
        }
        outcomes
    }
}

/// A node-wide claim on a repository name in lower case, held while it is
/// checked and created (creation is rare: one lock is fine here).
struct CaseClaim(String);

fn case_claims() -> &'static std::sync::Mutex<std::collections::HashSet<String>> {
    static CLAIMS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    CLAIMS.get_or_init(Default::default)
}

impl CaseClaim {
    fn take(owner: &str, name: &str) -> Result<CaseClaim, RepoError> {
        let key = format!("{owner}/{name}").to_ascii_lowercase();
        let mut claims = case_claims().lock().unwrap_or_else(|e| e.into_inner());
        if !claims.insert(key.clone()) {
            return Err(RepoError::Exists(format!("{owner}/{name}")));
        }
        Ok(CaseClaim(key))
    }
}

impl Drop for CaseClaim {
    fn drop(&mut self) {
        case_claims()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

fn failing_ref(e: &RefError) -> Option<String> {
    match e {
        RefError::Stale { name, .. } => Some(name.clone()),
        RefError::DirectoryFileConflict { name, .. } => Some(name.clone()),
        _ => None,
    }
}
