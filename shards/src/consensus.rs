//! The consensus boundary: how a shard hands transactions to the ordering
//! service and gets them back finalized.
//!
//! A push or a repository creation becomes a [`Transaction`] submitted
//! through [`Orderer`]; the ordering service (the local sequencer of a
//! single-validator node, or Simplex BFT among the validators of a
//! network) orders transactions into blocks and delivers each finalized
//! block, in height order, to every shard owning one of its repositories
//! as a [`FinalizedBatch`]. The shard applies the batch (durably), then
//! signals `done`: only then does the ordering service count the block as
//! delivered, and only then are the waiting pushes answered.
//!
//! Transactions that the finalized state has made impossible (a
//! concurrent push won the race) come back as [`Rejection`]s, so the
//! waiting client gets `ng <ref> <reason>` instead of waiting forever.

use futures_channel::oneshot;
use guts_io::refs::RefUpdate;

/// A transaction's unique id across the network: the node that accepted
/// it (its index in the genesis; 0 for a standalone node) and a nonce that
/// node never reuses, also across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId {
    pub origin: u32,
    pub nonce: u64,
}

/// A pack a transaction depends on, stored on the node that accepted the
/// push as `objects/pack/pack-<checksum>.pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackRef {
    /// The pack's trailing SHA-1 (its file name).
    pub checksum: [u8; 20],
    /// Size of the `.pack` file in bytes.
    pub size: u64,
    /// [`chunks_root`] of the pack's [`PACK_CHUNK_BYTES`] chunks: a node
    /// fetching the pack from peers checks each chunk as it arrives.
    pub chunks: [u8; 32],
}

/// Size of the chunks a pack travels between nodes in (the last one may
/// be shorter).
pub const PACK_CHUNK_BYTES: usize = 1024 * 1024;

/// The digest of one chunk of a pack: its SHA-256.
pub fn chunk_digest(chunk: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(chunk).into()
}

/// The [`chunk_digest`] of each [`PACK_CHUNK_BYTES`] chunk of `bytes`.
pub fn chunk_digests_of(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes.chunks(PACK_CHUNK_BYTES).map(chunk_digest).collect()
}

/// The SHA-256 of each [`PACK_CHUNK_BYTES`] chunk of the file at `path`.
pub fn chunk_digests(path: &std::path::Path) -> std::io::Result<Vec<[u8; 32]>> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; PACK_CHUNK_BYTES];
    let mut digests = Vec::new();
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(digests);
        }
        digests.extend(chunk_digests_of(&buf[..filled]));
        if filled < buf.len() {
            return Ok(digests);
        }
    }
}

/// What a transaction commits to for a pack's chunks: the SHA-256 of their
/// digests in order.
pub fn chunks_root(digests: &[[u8; 32]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

impl PackRef {
    /// The reference to a pack whose whole file is `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> PackRef {
        let mut checksum = [0u8; 20];
        let tail = bytes.len().saturating_sub(20);
        checksum[..bytes.len() - tail].copy_from_slice(&bytes[tail..]);
        PackRef {
            checksum,
            size: bytes.len() as u64,
            chunks: chunks_root(&chunk_digests_of(bytes)),
        }
    }

    /// `pack-<hex>` (the file stem in `objects/pack`).
    pub fn file_stem(&self) -> String {
        let mut s = String::with_capacity(45);
        s.push_str("pack-");
        for b in self.checksum {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the empty repository.
    CreateRepo,
    /// Compare-and-swap ref updates (each carries the old id it expects).
    Update {
        updates: Vec<RefUpdate>,
        /// All updates or none.
        atomic: bool,
        /// The pack that carries the new objects, if any.
        pack: Option<PackRef>,
    },
    /// Create an API token. Its id is assigned when the transaction is
    /// applied (the next free one, in block order), so every node agrees.
    TokenCreate {
        /// The user the token belongs to (the HTTP Basic user name).
        user: String,
        /// `OWNER/NAME` the token is limited to; `None`: every repository.
        scope: Option<String>,
        /// May push (and create repositories within its scope).
        write: bool,
        /// May do everything, the admin API included.
        admin: bool,
        /// SHA-256 of the token's secret; the secret itself is never ordered.
        secret_sha256: [u8; 32],
        /// When it was created, seconds since the Unix epoch.
        created_unix_s: u64,
    },
    /// Revoke an API token.
    TokenRevoke {
        /// The token's id.
        token_id: u64,
    },
    /// Make `repo` private (reads need a token that may see it) or public.
    SetVisibility {
        /// Private when true.
        private: bool,
    },
}

impl Op {
    /// Ref updates this operation carries.
    pub fn updates(&self) -> &[RefUpdate] {
        match self {
            Op::Update { updates, .. } => updates,
            _ => &[],
        }
    }

    /// Whether every shard applies it (access changes) rather than only the
    /// repository's owner (creations, ref updates).
    pub fn is_node_wide(&self) -> bool {
        matches!(
            self,
            Op::TokenCreate { .. } | Op::TokenRevoke { .. } | Op::SetVisibility { .. }
        )
    }
}

/// The shard that applies access changes durably and answers for them
/// (every shard applies them to its own copy of the access table).
pub const ACCESS_SHARD: usize = 0;

/// One ordered unit of work on one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Unique id, used to find the waiting client when the block comes back.
    pub id: TxId,
    /// Shard of this node that owns the repository (not part of the
    /// transaction on the wire: each node computes it from `repo`).
    pub shard: usize,
    /// `OWNER/NAME` the transaction is about; empty for token changes,
    /// which concern no one repository.
    pub repo: String,
    pub op: Op,
}

impl Transaction {
    /// Ref updates this transaction carries.
    pub fn updates(&self) -> &[RefUpdate] {
        self.op.updates()
    }
}

/// A transaction the finalized state has made impossible, with a reason
/// per ref update (or one reason for a repository creation).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub id: TxId,
    pub reasons: Vec<crate::rejection::UpdateRejection>,
}

/// A finalized block as seen by one shard.
#[derive(Debug)]
pub struct FinalizedBatch {
    /// Height of the block (strictly increasing per shard).
    pub height: u64,
    /// The transactions for this shard, in block order.
    pub transactions: Vec<Transaction>,
    /// Transactions of this shard's clients that can no longer apply.
    pub rejections: Vec<Rejection>,
    /// Signalled once the batch is applied and durable.
    pub done: Option<oneshot::Sender<()>>,
    /// Whether this height may be delivered again after a restart (true
    /// for consensus: its heights are never reused and finalized blocks
    /// are delivered at least once). Each repository then records the
    /// height with the block's changes and skips a block it already holds.
    /// The local sequencer does not replay blocks, so its heights are
    /// neither recorded nor used to skip.
    pub replayed: bool,
}

/// Split a finalized block into the batch each of `shards` shards applies:
/// ref updates go to the shard that submitted them (the repository's
/// owner), access changes to every shard, each in block order. Shards with
/// nothing to apply get no batch.
pub fn split_block(
    height: u64,
    transactions: Vec<Transaction>,
    shards: usize,
) -> Vec<(usize, FinalizedBatch)> {
    let mut per_shard: Vec<Vec<Transaction>> = vec![Vec::new(); shards.max(1)];
    for tx in transactions {
        if tx.op.is_node_wide() {
            for batch in per_shard.iter_mut() {
                batch.push(tx.clone());
            }
        } else if let Some(batch) = per_shard.get_mut(tx.shard) {
            batch.push(tx);
        } else {
            tracing::error!(
                shard = tx.shard,
                "finalized transaction for an unknown shard"
            );
        }
    }
    per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(shard, transactions)| {
            (
                shard,
                FinalizedBatch {
                    height,
                    transactions,
                    rejections: Vec::new(),
                    done: None,
                    replayed: false,
                },
            )
        })
        .collect()
}

/// Errors from handing a transaction to the ordering service.
#[derive(Debug, thiserror::Error)]
pub enum OrdererError {
    /// The ordering service is not running (shutdown or crash).
    #[error("ordering service unavailable")]
    Unavailable,
    /// Too many transactions are waiting; the push should be retried.
    #[error("ordering queue full ({limit} transactions)")]
    QueueFull { limit: usize },
    /// The transaction can never be in a block (its shard should have cut it).
    #[error("a transaction of {updates} ref updates in {bytes} bytes exceeds the network's bound of {updates_max} updates in {bytes_max} bytes")]
    TooLarge {
        updates: usize,
        bytes: usize,
        updates_max: usize,
        bytes_max: usize,
    },
    /// This node does not accept writes (a read replica).
    #[error("{0}")]
    ReadOnly(String),
}

/// The ordering service as seen from a shard.
pub trait Orderer: Send + Sync + 'static {
    /// Submit a transaction; its outcome arrives in a [`FinalizedBatch`].
    fn submit(&self, tx: Transaction) -> Result<(), OrdererError>;
    /// This node's origin id for [`TxId`]s.
    fn origin(&self) -> u32 {
        0
    }
    /// Why writes are refused on this node, if they are (a read replica).
    fn read_only(&self) -> Option<String> {
        None
    }
    /// How `updates` of one push to `repo` must be cut so that each part
    /// fits one transaction: the lengths of consecutive parts, one part
    /// (the default) when transactions are not bounded.
    fn split_updates(&self, repo: &str, updates: &[RefUpdate]) -> Vec<usize> {
        let _ = repo;
        vec![updates.len()]
    }
    /// The most ref updates and encoded bytes one transaction may hold,
    /// when bounded (named in the refusal of an atomic push too large).
    fn tx_bounds(&self) -> Option<(usize, usize)> {
        None
    }
}

/// The receiving end of finalized batches for one shard.
pub type BatchReceiver = futures_channel::mpsc::Receiver<FinalizedBatch>;
/// The sending end of finalized batches for one shard (held by the orderer).
pub type BatchSender = futures_channel::mpsc::Sender<FinalizedBatch>;

/// Batches each shard may have queued before the orderer waits.
pub const BATCH_QUEUE_MAX: usize = 1024;

/// Make the batch channel of one shard.
pub fn batch_channel() -> (BatchSender, BatchReceiver) {
    futures_channel::mpsc::channel(BATCH_QUEUE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(nonce: u64) -> TxId {
        TxId { origin: 0, nonce }
    }

    fn push(n: u64, shard: usize) -> Transaction {
        Transaction {
            id: id(n),
            shard,
            repo: "alice/x".into(),
            op: Op::Update {
                updates: Vec::new(),
                atomic: false,
                pack: None,
            },
        }
    }

    #[test]
    fn split_sends_pushes_to_their_owner_and_access_changes_everywhere() {
        let revoke = Transaction {
            id: id(9),
            shard: ACCESS_SHARD,
            repo: String::new(),
            op: Op::TokenRevoke { token_id: 3 },
        };
        let block = vec![push(1, 1), revoke.clone(), push(2, 1), push(3, 5)];
        let batches = split_block(7, block, 3);
        let ids: Vec<(usize, Vec<u64>)> = batches
            .iter()
            .map(|(s, b)| (*s, b.transactions.iter().map(|t| t.id.nonce).collect()))
            .collect();
        // Shard 5 does not exist: its transaction is dropped (and logged).
        assert_eq!(ids, vec![(0, vec![9]), (1, vec![1, 9, 2]), (2, vec![9])]);
        assert!(batches.iter().all(|(_, b)| b.height == 7));
    }
}
