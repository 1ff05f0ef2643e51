//! The consensus boundary: how a shard hands ref updates and access changes
//! to the ordering service and gets them back finalized.
//!
//! A push, a token change or a repository's visibility change becomes a
//! [`Transaction`] submitted through [`Orderer`]; the ordering service (a
//! local sequencer today, Simplex BFT later) batches transactions into
//! blocks and delivers each finalized block, in height order, to the shards
//! as [`FinalizedBatch`]es ([`split_block`] says which shard gets what). A
//! shard applies its batch in order (durably) and only then answers the
//! waiting requests. Replacing the sequencer changes nothing on this side of
//! the boundary.
//!
//! Everything in a transaction is plain data (strings, integers, byte
//! arrays), so it can be encoded on the wire as it is.

use guts_io::refs::RefUpdate;

/// A unique transaction id: the submitting shard in the top 16 bits.
pub type TxId = u64;

/// The shard that applies access changes durably and answers for them
/// (every shard applies them to its own copy of the access table).
pub const ACCESS_SHARD: usize = 0;

/// One ordered unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Unique id, used to find the waiting request when the batch comes back.
    pub id: TxId,
    /// Shard that submitted it: for ref updates the repository's owner,
    /// which applies them; for access changes [`ACCESS_SHARD`].
    pub shard: usize,
    /// `OWNER/NAME` the transaction is about; empty for token changes,
    /// which concern no one repository.
    pub repo: String,
    /// What to do.
    pub op: Op,
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A push: compare-and-swap ref updates to `repo`.
    Update {
        /// The updates; each carries the old id it expects.
        updates: Vec<RefUpdate>,
        /// All updates or none.
        atomic: bool,
        /// Checksum of the pack that carries the new objects, if any.
        pack: Option<[u8; 20]>,
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
    /// Whether every shard applies it (access changes) rather than only the
    /// submitting shard (ref updates, applied by the repository's owner).
    pub fn is_node_wide(&self) -> bool {
        matches!(
            self,
            Op::TokenCreate { .. } | Op::TokenRevoke { .. } | Op::SetVisibility { .. }
        )
    }
}

/// A finalized block as seen by one shard: its transactions, in order.
#[derive(Debug, Clone)]
pub struct FinalizedBatch {
    /// Height of the block (strictly increasing per shard).
    pub height: u64,
    /// The transactions for this shard, in block order.
    pub transactions: Vec<Transaction>,
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
}

/// The ordering service as seen from a shard.
pub trait Orderer: Send + Sync + 'static {
    /// Submit a transaction; its outcome arrives in a [`FinalizedBatch`].
    fn submit(&self, tx: Transaction) -> Result<(), OrdererError>;
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

    fn push(id: TxId, shard: usize) -> Transaction {
        Transaction {
            id,
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
            id: 9,
            shard: ACCESS_SHARD,
            repo: String::new(),
            op: Op::TokenRevoke { token_id: 3 },
        };
        let block = vec![push(1, 1), revoke.clone(), push(2, 1), push(3, 5)];
        let batches = split_block(7, block, 3);
        let ids: Vec<(usize, Vec<TxId>)> = batches
            .iter()
            .map(|(s, b)| (*s, b.transactions.iter().map(|t| t.id).collect()))
            .collect();
        // Shard 5 does not exist: its transaction is dropped (and logged).
        assert_eq!(ids, vec![(0, vec![9]), (1, vec![1, 9, 2]), (2, vec![9])]);
        assert!(batches.iter().all(|(_, b)| b.height == 7));
    }
}
