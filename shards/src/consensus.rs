//! The consensus boundary: how a shard hands ref updates to the ordering
//! service and gets them back finalized.
//!
//! A push becomes a [`Transaction`] submitted through [`Orderer`]; the
//! ordering service (a local sequencer today, Simplex BFT later) batches
//! transactions into blocks and delivers each finalized block, in height
//! order, to every shard owning one of its repositories as a
//! [`FinalizedBatch`]. The shard applies the batch in order (durably) and
//! only then answers the waiting pushes. Replacing the sequencer changes
//! nothing on this side of the boundary.

use guts_io::refs::RefUpdate;

/// A unique transaction id: the submitting shard in the top 16 bits.
pub type TxId = u64;

/// One ordered unit of work: a set of ref updates to one repository.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Unique id, used to find the waiting push when the batch comes back.
    pub id: TxId,
    /// Shard that owns the repository and applies the update.
    pub shard: usize,
    /// `OWNER/NAME`.
    pub repo: String,
    /// The updates; each carries the old id it expects (compare-and-swap).
    pub updates: Vec<RefUpdate>,
    /// All updates or none.
    pub atomic: bool,
    /// Checksum of the pack that carries the new objects, if any.
    pub pack: Option<[u8; 20]>,
}

/// A finalized block as seen by one shard: its transactions, in order.
#[derive(Debug, Clone)]
pub struct FinalizedBatch {
    /// Height of the block (strictly increasing per shard).
    pub height: u64,
    /// The transactions for this shard, in block order.
    pub transactions: Vec<Transaction>,
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
