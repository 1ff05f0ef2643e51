//! The bridge between marshal's application interface and the node's [`Ledger`]: building and
//! verifying blocks, delivering finalized ones, and progress counters.

use super::{
    block::{Block, BlockCfg},
    Ledger, Status,
};
use bytes::Bytes;
use commonware_actor::Feedback;
use commonware_consensus::{
    marshal::{ancestry::Ancestry, Update},
    simplex::{
        scheme::ed25519::Scheme,
        types::{Activity, Context},
    },
    Heightable as _, Reporter, Viewable as _,
};
use commonware_cryptography::{ed25519::PublicKey, sha256::Digest, Digested, Digestible as _};
use commonware_utils::{acknowledgement::Exact, Acknowledgement as _};
use futures::{channel::mpsc, StreamExt as _};
use std::sync::{atomic::Ordering, Arc};

/// The consensus context of a proposal.
pub type Ctx = Context<Digest, PublicKey>;

/// Implements marshal's [`commonware_consensus::Application`] on top of a [`Ledger`].
#[derive(Clone)]
pub struct App<L> {
    ledger: L,
    status: Status,
    cfg: BlockCfg,
}

impl<L: Ledger> App<L> {
    pub fn new(ledger: L, status: Status, cfg: BlockCfg) -> Self {
        Self {
            ledger,
            status,
            cfg,
        }
    }

    /// Ancestors yielded by `stream` (newest first) above the ledger's durable height, returned
    /// oldest first.
    async fn ancestry(&self, stream: impl Ancestry<Block>) -> Vec<(u64, Vec<Bytes>)> {
        self.ancestry_above(stream, self.status.processed_height())
            .await
    }

    /// Ancestors yielded by `stream` (newest first) above `floor`, returned oldest first.
    async fn ancestry_above(
        &self,
        mut stream: impl Ancestry<Block>,
        floor: u64,
    ) -> Vec<(u64, Vec<Bytes>)> {
        let mut out = Vec::new();
        while let Some(block) = stream.next().await {
            let height = block.height().get();
            if height <= floor || height == 0 {
                break;
            }
            out.push((height, block.inner().txs.clone()));
        }
        out.reverse();
        out
    }
}

impl<E, L> commonware_consensus::Application<E> for App<L>
where
    E: Send + 'static,
    L: Ledger,
{
    type SigningScheme = Scheme;
    type Context = Ctx;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        _context: (E, Ctx),
        mut ancestry: impl Ancestry<Block>,
        _input: (),
    ) -> Option<Digested<Block>> {
        let parent = ancestry.next().await?;
        let height = parent.height().get() + 1;
        // One reading of the durable height for the whole chain, so it is
        // contiguous up to the parent even while blocks are being applied.
        let floor = self.status.processed_height();
        let mut chain = self.ancestry_above(ancestry, floor).await;
        if parent.height().get() > floor {
            chain.push((parent.height().get(), parent.inner().txs.clone()));
        }
        let mut txs = self.ledger.propose(height, chain).await;
        if txs.is_empty() {
            return None;
        }
        if txs.len() > self.cfg.max_txs {
            tracing::warn!(
                proposed = txs.len(),
                max = self.cfg.max_txs,
                "ledger proposed too many transactions; cutting the block"
            );
            txs.truncate(self.cfg.max_txs);
        }
        if let Some(tx) = txs.iter().find(|tx| tx.len() > self.cfg.max_tx_bytes) {
            tracing::warn!(
                len = tx.len(),
                max = self.cfg.max_tx_bytes,
                "ledger proposed an oversized transaction; skipping the view"
            );
            return None;
        }
        let block = Block {
            parent: parent.digest(),
            height,
            txs,
        };
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(&mut self, _context: (E, Ctx), mut ancestry: impl Ancestry<Block>) -> bool {
        // Marshal already checked that the block extends its parent at the next height.
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let block = block.inner().clone();
        if block.txs.is_empty() || !block.within(&self.cfg) {
            return false;
        }
        let chain = self.ancestry(ancestry).await;
        self.ledger.verify(block.height, chain, block.txs).await
    }
}

/// A finalized block waiting for the ledger, with the acknowledgement marshal waits for.
pub type Delivery = (Digested<Block>, Exact);

/// Marshal's reporter: finalized blocks go, in order, to the task that feeds the ledger.
#[derive(Clone)]
pub struct Finalized {
    tx: mpsc::UnboundedSender<Delivery>,
    status: Status,
}

impl Finalized {
    pub fn new(status: Status) -> (Self, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded();
        (Self { tx, status }, rx)
    }
}

impl Reporter for Finalized {
    type Activity = Update<Block>;

    fn report(&mut self, update: Update<Block>) -> Feedback {
        match update {
            Update::Tip(_, height, _) => {
                Status::raise(&self.status.0.finalized, height.get());
                Feedback::Ok
            }
            Update::Block(block, ack) => {
                // Marshal dispatches at most `max_pending_acks` blocks ahead of the
                // acknowledgements, which bounds this queue.
                if self.tx.unbounded_send((block, ack)).is_err() {
                    // The delivery task is gone; dropping the acknowledgement stops marshal.
                    return Feedback::Closed;
                }
                Feedback::Ok
            }
        }
    }
}

/// Feeds finalized blocks to the ledger one at a time and acknowledges each once the ledger
/// made it durable. Returns only when marshal is gone.
pub async fn deliver<L: Ledger>(
    ledger: L,
    status: Status,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    while let Some((block, ack)) = rx.next().await {
        let height = block.height().get();
        if height > 0 {
            ledger.finalized(height, block.inner().txs.clone()).await;
        }
        ack.acknowledge();
        status.0.processed.store(height, Ordering::Relaxed);
        Status::raise(&status.0.finalized, height);
    }
}

/// Wraps the consensus reporter (marshal's wrapper) to track the current view.
#[derive(Clone)]
pub struct Views<R> {
    inner: R,
    status: Arc<super::StatusInner>,
}

impl<R> Views<R> {
    pub fn new(inner: R, status: &Status) -> Self {
        Self {
            inner,
            status: status.0.clone(),
        }
    }
}

impl<R> Reporter for Views<R>
where
    R: Reporter<Activity = Activity<Scheme, Digest>>,
{
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        let certified = match &activity {
            Activity::Notarization(c) | Activity::Certification(c) => Some(c.view()),
            Activity::Nullification(c) => Some(c.view()),
            Activity::Finalization(c) => Some(c.view()),
            _ => None,
        };
        if let Some(view) = certified {
            Status::raise(&self.status.view, view.get().saturating_add(1));
        }
        self.inner.report(activity)
    }
}
