//! The local sequencer: the ordering service of a single-validator node.
//!
//! It stands exactly where Simplex BFT will stand: shards submit
//! transactions, the sequencer (on its own OS thread, the consensus core)
//! takes everything waiting as one block, assigns it the next height, and
//! delivers the finalized block to the owning shards, which apply it in
//! order and only then acknowledge the pushes.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use guts_shards::blocks::BlockLog;
use guts_shards::{BatchSender, Orderer, OrdererError, Transaction};

/// Transactions that may wait for the sequencer before submitters are refused.
pub const PENDING_TRANSACTIONS_MAX: usize = 65_536;
/// Most transactions in one block.
pub const BLOCK_TRANSACTIONS_MAX: usize = 4096;

/// The shard-facing handle: submits into the sequencer's queue.
pub struct SequencerHandle {
    tx: Sender<Transaction>,
}

impl Orderer for SequencerHandle {
    fn submit(&self, tx: Transaction) -> Result<(), OrdererError> {
        self.tx.try_send(tx).map_err(|e| match e {
            TrySendError::Full(_) => OrdererError::QueueFull {
                limit: PENDING_TRANSACTIONS_MAX,
            },
            TrySendError::Disconnected(_) => OrdererError::Unavailable,
        })
    }
}

/// Create the sequencer's queue: the handle for shards and the receiving end.
pub fn queue() -> (SequencerHandle, Receiver<Transaction>) {
    let (tx, rx) = crossbeam_channel::bounded(PENDING_TRANSACTIONS_MAX);
    (SequencerHandle { tx }, rx)
}

/// Run the sequencer loop until every submitter is gone. Heights go on
/// from the last block in `record`; each block is recorded (durably)
/// before any shard applies it, so no push is acknowledged at a height a
/// restart could hand out again.
pub fn run(rx: Receiver<Transaction>, mut shards: Vec<BatchSender>, mut record: BlockLog) {
    let mut height = record.last_height();
    while let Ok(first) = rx.recv() {
        let mut block = vec![first];
        while block.len() < BLOCK_TRANSACTIONS_MAX {
            match rx.try_recv() {
                Ok(tx) => block.push(tx),
                Err(_) => break,
            }
        }
        height += 1;
        let transactions = block.len();
        let summaries: Vec<serde_json::Value> =
            block.iter().map(guts_shards::blocks::summarize).collect();
        if let Err(e) = record.append(height, &summaries) {
            // The ref logs stay the truth; only the record of this block
            // (and, if the disk lost it, the height after a restart) suffers.
            tracing::error!(height, error = %e, "block not recorded");
        }
        guts_shards::metrics::record_block(height, transactions as u64);
        guts_shards::metrics::record_batch_updates(
            block.iter().map(|tx| tx.updates().len() as u64).sum(),
        );
        let batches = guts_shards::consensus::split_block(height, block, shards.len());
        tracing::debug!(
            height,
            shards = batches.len(),
            transactions,
            "block finalized"
        );
        for (shard, batch) in batches {
            let Some(sender) = shards.get_mut(shard) else {
                continue;
            };
            // Blocks are delivered in height order; wait for room rather than drop.
            let sent = futures_lite::future::block_on(async {
                futures_lite::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
                sender.start_send(batch)
            });
            if sent.is_err() {
                tracing::error!(
                    shard,
                    height,
                    "shard stopped; finalized batch not delivered"
                );
            }
        }
    }
}
