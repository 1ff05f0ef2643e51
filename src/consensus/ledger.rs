//! The ledger: what consensus asks of the node, and how finalized blocks
//! reach the shards.
//!
//! - Mempool: transactions from this node's shards (gossiped to the other
//!   validators as they arrive) and from peers.
//! - Propose: everything pending that still applies on top of the parent,
//!   up to `max_batch_updates`, waiting up to `max_batch_delay_ms` for more.
//! - Verify: every transaction well formed, applying (compare-and-swap) on
//!   the state after the parent, every pack it names stored and checked
//!   here (fetched from peers while the vote waits).
//! - Finalized: blocks in height order are split per shard, applied there
//!   durably (the shards signal `done`), then the mirror state and the
//!   applied height move on and the block counts as delivered. Pending
//!   transactions of this node that the new state makes impossible are
//!   answered with their reasons.

use bytes::Bytes;
use futures_channel::oneshot;
use guts_shards::consensus::{
    BatchSender, FinalizedBatch, Orderer, OrdererError, Rejection, Transaction, TxId,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::genesis::ConsensusParams;
use super::packs::{PackError, Packs, Sleep};
use super::state::{pack_of, ChainState, View};
use super::tx::{Tx, BLOCK_TXS_MAX};

/// Transactions the mempool holds before new ones are refused.
pub const MEMPOOL_TXS_MAX: usize = 65_536;
/// Ids of finalized transactions remembered, so late gossip is ignored.
pub const FINALIZED_IDS_MAX: usize = 262_144;
/// How often a waiting proposal looks for new transactions.
const PROPOSE_POLL_MS: u64 = 2;
/// File (in the consensus directory) holding the applied height.
pub const APPLIED_FILE: &str = "applied-height";

/// Sends mempool gossip to the validators.
pub trait TxWire: Send + Sync + 'static {
    fn broadcast(&self, tx: Bytes);
}

#[derive(Default)]
struct Mempool {
    order: VecDeque<TxId>,
    txs: HashMap<TxId, Tx>,
    finalized: HashSet<TxId>,
    finalized_order: VecDeque<TxId>,
}

impl Mempool {
    fn insert(&mut self, tx: Tx) -> bool {
        let id = id_of(&tx);
        if self.finalized.contains(&id) || self.txs.contains_key(&id) {
            return false;
        }
        if self.txs.len() >= MEMPOOL_TXS_MAX {
            return false;
        }
        self.order.push_back(id);
        self.txs.insert(id, tx);
        true
    }

    fn remove(&mut self, id: &TxId) {
        self.txs.remove(id);
        // `order` is cleaned lazily by `pending`.
    }

    fn mark_finalized(&mut self, id: TxId) {
        self.remove(&id);
        if self.finalized.insert(id) {
            self.finalized_order.push_back(id);
            while self.finalized_order.len() > FINALIZED_IDS_MAX {
                if let Some(old) = self.finalized_order.pop_front() {
                    self.finalized.remove(&old);
                }
            }
        }
    }

    fn pending(&mut self) -> Vec<Tx> {
        self.order.retain(|id| self.txs.contains_key(id));
        self.order
            .iter()
            .filter_map(|id| self.txs.get(id).cloned())
            .collect()
    }
}

fn id_of(tx: &Tx) -> TxId {
    TxId {
        origin: tx.origin,
        nonce: tx.nonce,
    }
}

/// Shared state of the ledger.
pub struct Ledger {
    /// This node's index in the genesis, if it is a validator.
    pub me: Option<u32>,
    /// Public keys of the validators, in genesis order.
    validators: Vec<[u8; 32]>,
    params: ConsensusParams,
    data_dir: PathBuf,
    consensus_dir: PathBuf,
    shards: Mutex<Vec<BatchSender>>,
    shard_count: usize,
    state: Mutex<ChainState>,
    mempool: Mutex<Mempool>,
    /// Local transactions waiting, by id: their owning shard.
    local: Mutex<HashMap<TxId, usize>>,
    pub packs: Packs,
    wire: Arc<dyn TxWire>,
    read_only: Option<String>,
    sleep: Sleep,
    /// The record of applied blocks (`GET /api/consensus/blocks/HEIGHT`).
    record: Option<Mutex<guts_shards::blocks::BlockLog>>,
}

/// Read the applied height (0 if none recorded).
pub fn load_applied(consensus_dir: &Path) -> u64 {
    std::fs::read(consensus_dir.join(APPLIED_FILE))
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn store_applied(consensus_dir: &Path, height: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = consensus_dir.join(format!("{APPLIED_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&height.to_le_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, consensus_dir.join(APPLIED_FILE))?;
    std::fs::File::open(consensus_dir)?.sync_all()
}

/// What the ledger is built from.
pub struct LedgerConfig {
    pub me: Option<u32>,
    pub validators: Vec<[u8; 32]>,
    pub params: ConsensusParams,
    pub data_dir: PathBuf,
    pub consensus_dir: PathBuf,
    pub shards: Vec<BatchSender>,
    pub state: ChainState,
    pub packs: Packs,
    pub wire: Arc<dyn TxWire>,
    /// Set on a node that is not a validator: why it refuses writes.
    pub read_only: Option<String>,
    pub sleep: Sleep,
    /// Where applied blocks are recorded, if anywhere.
    pub record: Option<guts_shards::blocks::BlockLog>,
}

impl Ledger {
    pub fn new(cfg: LedgerConfig) -> Arc<Ledger> {
        let shard_count = cfg.shards.len();
        Arc::new(Ledger {
            me: cfg.me,
            validators: cfg.validators,
            params: cfg.params,
            data_dir: cfg.data_dir,
            consensus_dir: cfg.consensus_dir,
            shards: Mutex::new(cfg.shards),
            shard_count,
            state: Mutex::new(cfg.state),
            mempool: Mutex::new(Mempool::default()),
            local: Mutex::new(HashMap::new()),
            packs: cfg.packs,
            wire: cfg.wire,
            read_only: cfg.read_only,
            sleep: cfg.sleep,
            record: cfg.record.map(Mutex::new),
        })
    }

    /// Height of the last block applied here.
    pub fn applied_height(&self) -> u64 {
        lock(&self.state).applied
    }

    /// A transaction gossiped by a peer.
    pub fn on_gossip(&self, bytes: &[u8]) {
        let Ok(tx) = Tx::from_bytes(bytes) else {
            tracing::debug!("malformed transaction gossip dropped");
            return;
        };
        if tx.origin as usize >= self.validators.len() {
            return;
        }
        if tx.update_count() > self.params.max_batch_updates {
            // No block may hold it: proposing it would only waste a view.
            tracing::warn!(
                origin = tx.origin,
                updates = tx.update_count(),
                "transaction gossip over the block's update bound dropped"
            );
            return;
        }
        lock(&self.mempool).insert(tx);
    }

    /// A transaction from one of this node's shards.
    fn submit_local(&self, t: Transaction) -> Result<(), OrdererError> {
        let tx = Tx {
            origin: t.id.origin,
            nonce: t.id.nonce,
            repo: t.repo,
            op: t.op,
        };
        let bytes = tx.to_bytes();
        if bytes.len() > super::tx::TX_MAX_BYTES
            || tx.update_count() > self.params.max_batch_updates
        {
            return Err(OrdererError::TooLarge {
                updates: tx.update_count(),
                bytes: bytes.len(),
                updates_max: self.params.max_batch_updates,
                bytes_max: super::tx::TX_MAX_BYTES,
            });
        }
        let id = id_of(&tx);
        if !lock(&self.mempool).insert(tx) {
            return Err(OrdererError::QueueFull {
                limit: MEMPOOL_TXS_MAX,
            });
        }
        lock(&self.local).insert(id, t.shard);
        self.wire.broadcast(bytes);
        Ok(())
    }

    /// Replay `ancestry` (blocks not yet applied here, oldest first) on a view.
    fn replay<'a>(state: &'a ChainState, ancestry: &[(u64, Vec<Bytes>)]) -> Option<View<'a>> {
        let mut view = state.view();
        for (height, txs) in ancestry {
            if *height <= state.applied {
                continue;
            }
            for raw in txs {
                let tx = Tx::from_bytes(raw).ok()?;
                view.apply_finalized(&tx);
            }
        }
        Some(view)
    }

    /// Wait until blocks below `height`'s ancestry are applied here.
    async fn wait_applied(&self, height: u64, ancestry: &[(u64, Vec<Bytes>)]) {
        let needed = ancestry
            .first()
            .map(|(h, _)| h.saturating_sub(1))
            .unwrap_or(height.saturating_sub(1));
        while self.applied_height() < needed {
            (self.sleep)(Duration::from_millis(PROPOSE_POLL_MS)).await;
        }
    }

    /// Transactions for a block at `height`.
    pub async fn propose(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
        wait_max: Duration,
    ) -> Vec<Bytes> {
        self.wait_applied(height, &ancestry).await;
        let started = Instant::now();
        let delay = Duration::from_millis(self.params.max_batch_delay_ms);
        let mut first_seen: Option<Instant> = None;
        loop {
            let picked = self.pick(&ancestry);
            if !picked.is_empty() {
                let seen = *first_seen.get_or_insert_with(Instant::now);
                let updates: usize = picked.iter().map(|(_, n)| *n).sum();
                if seen.elapsed() >= delay || updates >= self.params.max_batch_updates {
                    return picked.into_iter().map(|(b, _)| b).collect();
                }
            }
            if started.elapsed() >= wait_max {
                return picked.into_iter().map(|(b, _)| b).collect();
            }
            (self.sleep)(Duration::from_millis(PROPOSE_POLL_MS)).await;
        }
    }

    fn pick(&self, ancestry: &[(u64, Vec<Bytes>)]) -> Vec<(Bytes, usize)> {
        let pending = lock(&self.mempool).pending();
        if pending.is_empty() {
            return Vec::new();
        }
        let mut in_ancestry = HashSet::new();
        for (_, txs) in ancestry {
            for raw in txs {
                if let Ok(tx) = Tx::from_bytes(raw) {
                    in_ancestry.insert(id_of(&tx));
                }
            }
        }
        let state = lock(&self.state);
        let Some(mut view) = Self::replay(&state, ancestry) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut updates = 0usize;
        for tx in pending {
            if in_ancestry.contains(&id_of(&tx)) {
                continue;
            }
            let n = tx.update_count().max(1);
            if tx.update_count() > self.params.max_batch_updates {
                // Never valid in a block (refused on arrival; kept out here too).
                continue;
            }
            if updates + n > self.params.max_batch_updates {
                break;
            }
            if out.len() >= BLOCK_TXS_MAX {
                break;
            }
            if view.check(&tx).is_ok() {
                view.apply(&tx);
                updates += n;
                out.push((tx.to_bytes(), n));
            }
        }
        out
    }

    /// Whether a proposed block is valid. Waits for missing packs; answers
    /// `false` only for a block that is invalid for good.
    pub async fn verify(
        &self,
        height: u64,
        ancestry: Vec<(u64, Vec<Bytes>)>,
        txs: Vec<Bytes>,
    ) -> bool {
        self.wait_applied(height, &ancestry).await;
        if txs.is_empty() || txs.len() > BLOCK_TXS_MAX {
            tracing::warn!(height, txs = txs.len(), "block refused: transaction count");
            return false;
        }
        let mut decoded = Vec::with_capacity(txs.len());
        let mut ids = HashSet::new();
        for (_, block) in &ancestry {
            for raw in block {
                if let Ok(tx) = Tx::from_bytes(raw) {
                    ids.insert(id_of(&tx));
                }
            }
        }
        let mut updates = 0usize;
        for raw in &txs {
            let Ok(tx) = Tx::from_bytes(raw) else {
                tracing::warn!(height, "block refused: malformed transaction");
                return false;
            };
            if tx.origin as usize >= self.validators.len() {
                tracing::warn!(height, origin = tx.origin, "block refused: unknown origin");
                return false;
            }
            if !ids.insert(id_of(&tx)) || lock(&self.mempool).finalized.contains(&id_of(&tx)) {
                tracing::warn!(height, "block refused: transaction included twice");
                return false;
            }
            updates += tx.update_count();
            decoded.push(tx);
        }
        if updates > self.params.max_batch_updates {
            tracing::warn!(height, updates, "block refused: too many ref updates");
            return false;
        }
        {
            let state = lock(&self.state);
            let Some(mut view) = Self::replay(&state, &ancestry) else {
                return false;
            };
            for tx in &decoded {
                if let Err(why) = view.check(tx) {
                    tracing::warn!(height, repo = %tx.repo, reason = %why.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), "block refused: transaction does not apply");
                    return false;
                }
                view.apply(tx);
            }
        }
        // Every pack present and checked (the objects the refs point at included).
        for tx in &decoded {
            match self.ensure_pack(tx).await {
                Ok(()) => {}
                Err(reason) => {
                    tracing::warn!(height, repo = %tx.repo, %reason, "block refused: pack invalid");
                    return false;
                }
            }
        }
        true
    }

    /// Fetch and check the pack `tx` needs, retrying while no peer has it;
    /// `Err` only if it is invalid for good. Also checks that every new
    /// ref value is an object the repository will have.
    async fn ensure_pack(&self, tx: &Tx) -> Result<(), String> {
        let mut peers: Vec<[u8; 32]> = Vec::new();
        if let Some(origin) = self.validators.get(tx.origin as usize) {
            peers.push(*origin);
        }
        for v in &self.validators {
            if !peers.contains(v)
                && Some(v) != self.me.and_then(|m| self.validators.get(m as usize))
            {
                peers.push(*v);
            }
        }
        if let Some(pack) = pack_of(tx) {
            let mut backoff = 50u64;
            loop {
                match self.packs.ensure(&tx.repo, &pack, &peers).await {
                    Ok(()) => break,
                    Err(PackError::Invalid { reason, .. }) => return Err(reason),
                    Err(e @ PackError::Unavailable { .. }) => {
                        tracing::debug!(repo = %tx.repo, error = %e, "pack not available yet");
                        (self.sleep)(Duration::from_millis(backoff)).await;
                        backoff = (backoff * 2).min(2_000);
                    }
                }
            }
        }
        // New ref values must name objects the repository has (now that the
        // pack is in), and branches must point at commits.
        if let guts_shards::consensus::Op::Update { updates, .. } = &tx.op {
            if updates.iter().all(|u| u.new.is_null()) {
                return Ok(());
            }
            let (owner, name) = tx.repo.split_once('/').unwrap_or(("", ""));
            let objects = guts_shards::repo::repo_dir(&self.data_dir, owner, name).join("objects");
            let store = match guts_io::store::ObjectStore::open(&objects) {
                Ok(s) => s,
                Err(e) => return Err(format!("object store: {e}")),
            };
            for u in updates.iter().filter(|u| !u.new.is_null()) {
                match store.read_header(&u.new) {
                    Ok(Some((kind, _))) => {
                        if u.name.starts_with("refs/heads/") && kind != guts_io::ObjectKind::Commit
                        {
                            return Err(format!("{} would point at a {}", u.name, kind.name()));
                        }
                    }
                    _ => return Err(format!("{} names missing object {}", u.name, u.new)),
                }
            }
        }
        Ok(())
    }

    /// A finalized block: apply it on the shards, durably, then move on.
    pub async fn finalized(&self, height: u64, txs: Vec<Bytes>) {
        if height <= self.applied_height() {
            return; // delivered again after a restart
        }
        let decoded: Vec<Tx> = txs
            .iter()
            .filter_map(|raw| match Tx::from_bytes(raw) {
                Ok(tx) => Some(tx),
                Err(e) => {
                    tracing::error!(height, error = %e, "finalized block holds a malformed transaction; skipped");
                    None
                }
            })
            .collect();
        // Packs first (a follower or a node that missed the proposal).
        for tx in &decoded {
            if let Err(reason) = self.ensure_pack(tx).await {
                tracing::error!(height, repo = %tx.repo, %reason, "finalized transaction's pack failed the checks here");
            }
        }
        // The new state, and this node's pending transactions it makes impossible.
        let (changes, rejections) = {
            let state = lock(&self.state);
            let mut view = state.view();
            for tx in &decoded {
                view.apply_finalized(tx);
            }
            let included: HashSet<TxId> = decoded.iter().map(id_of).collect();
            let local: Vec<(TxId, usize)> = lock(&self.local)
                .iter()
                .filter(|(id, _)| !included.contains(id))
                .map(|(id, s)| (*id, *s))
                .collect();
            let mempool = lock(&self.mempool);
            let mut rejections: Vec<(usize, Rejection)> = Vec::new();
            for (id, shard) in local {
                if let Some(tx) = mempool.txs.get(&id) {
                    if let Err(reasons) = view.check(tx) {
                        rejections.push((shard, Rejection { id, reasons }));
                    }
                }
            }
            (view.into_changes(), rejections)
        };
        // Per shard, in block order: ref updates and creations to the
        // repository's owner, access changes to every shard.
        let transactions: Vec<Transaction> = decoded
            .iter()
            .map(|tx| Transaction {
                id: id_of(tx),
                shard: if tx.op.is_node_wide() {
                    guts_shards::consensus::ACCESS_SHARD
                } else {
                    guts_shards::shard::owner_of(&tx.repo, self.shard_count)
                },
                repo: tx.repo.clone(),
                op: tx.op.clone(),
            })
            .collect();
        let summaries: Vec<serde_json::Value> = transactions
            .iter()
            .map(guts_shards::blocks::summarize)
            .collect();
        let mut per_shard: HashMap<usize, (Vec<Transaction>, Vec<Rejection>)> =
            guts_shards::consensus::split_block(height, transactions, self.shard_count)
                .into_iter()
                .map(|(s, b)| (s, (b.transactions, Vec::new())))
                .collect();
        for (shard, r) in &rejections {
            per_shard.entry(*shard).or_default().1.push(r.clone());
        }
        let mut acks = Vec::new();
        {
            let mut shards = lock(&self.shards);
            for (shard, (transactions, rejections)) in per_shard {
                let Some(sender) = shards.get_mut(shard) else {
                    continue;
                };
                let (done, ack) = oneshot::channel();
                let batch = FinalizedBatch {
                    height,
                    transactions,
                    rejections,
                    done: Some(done),
                    replayed: true,
                };
                if sender.try_send(batch).is_err() {
                    // Full or gone: a shard that stopped makes the node exit.
                    tracing::error!(shard, height, "shard did not take a finalized batch");
                    continue;
                }
                acks.push(ack);
            }
        }
        for ack in acks {
            let _ = ack.await;
        }
        {
            let mut state = lock(&self.state);
            state.commit(changes);
            state.applied = height;
        }
        if let Some(record) = &self.record {
            // The applied height (below) is the durable truth; the record
            // only describes the blocks, so it is not synced on its own.
            if let Err(e) = lock(record).append(height, &summaries) {
                tracing::error!(height, error = %e, "block not recorded");
            }
        }
        if let Err(e) = store_applied(&self.consensus_dir, height) {
            tracing::error!(height, error = %e, "could not record the applied height");
        }
        let state = lock(&self.state);
        let mut local = lock(&self.local);
        let mut mempool = lock(&self.mempool);
        for tx in &decoded {
            let id = id_of(tx);
            mempool.mark_finalized(id);
            local.remove(&id);
        }
        for (_, r) in &rejections {
            mempool.remove(&r.id);
            local.remove(&r.id);
        }
        // Others' transactions that can never apply now leave the pool too.
        let view = state.view();
        let dead: Vec<TxId> = mempool
            .txs
            .iter()
            .filter(|(id, tx)| !local.contains_key(id) && view.check(tx).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            mempool.remove(&id);
        }
        guts_shards::metrics::record_block(height, decoded.len() as u64);
        guts_shards::metrics::record_batch_updates(
            decoded.iter().map(|tx| tx.op.updates().len() as u64).sum(),
        );
    }

    /// Why this node refuses writes (not a validator).
    pub fn read_only(&self) -> Option<String> {
        self.read_only.clone()
    }
}

/// The shard-facing handle of the ledger.
pub struct LedgerHandle(pub Arc<Ledger>);

impl Orderer for LedgerHandle {
    fn submit(&self, tx: Transaction) -> Result<(), OrdererError> {
        if let Some(why) = self.0.read_only() {
            return Err(OrdererError::ReadOnly(why));
        }
        self.0.submit_local(tx)
    }

    fn origin(&self) -> u32 {
        self.0.me.unwrap_or(u32::MAX)
    }

    fn read_only(&self) -> Option<String> {
        self.0.read_only()
    }

    fn split_updates(&self, repo: &str, updates: &[guts_io::refs::RefUpdate]) -> Vec<usize> {
        super::tx::split_updates(repo, updates, self.0.params.max_batch_updates)
    }

    fn tx_bounds(&self) -> Option<(usize, usize)> {
        Some((self.0.params.max_batch_updates, super::tx::TX_MAX_BYTES))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests;
