//! What one shard asks of another: every operation that crosses shards.
//!
//! A repository's mutable state lives on its owning shard only, so a
//! request that arrived on another shard sends the owner a [`Message`]
//! through the owner's bounded inbox ([`SHARD_INBOX_MAX`] messages; a
//! sender whose inbox is full waits) and awaits the reply on the
//! message's `oneshot` channel. [`Mailbox`] has one async method per
//! operation; the owner answers each message in [`Shard::handle`], one
//! `match` over the variants. A message for the sending shard itself is
//! handled at once, without the inbox.
//!
//! The node's control thread (outside every executor) reaches the shards
//! the same way, with [`post`], for stopping and for TLS reloads.

use futures_channel::{mpsc, oneshot};
use guts_io::pack::ingest::IngestedPack;
use guts_io::refs::RefUpdate;
use http::StatusCode;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::AccessOutcome;
use crate::consensus::Op;
use crate::repo::{RefSnapshot, RepoError};
use crate::shard::{Shard, ShardError, UpdateOutcome};

/// Messages one shard may have queued for another before the sender waits.
pub const SHARD_INBOX_MAX: usize = 1024;

/// The sending end of a shard's inbox.
pub type Inbox = mpsc::Sender<Message>;

/// The receiving end of a shard's inbox, read by the shard itself.
pub type InboxReceiver = mpsc::Receiver<Message>;

/// A shard's inbox, bounded at [`SHARD_INBOX_MAX`].
pub fn inbox() -> (Inbox, InboxReceiver) {
    mpsc::channel(SHARD_INBOX_MAX)
}

/// An operation run on the shard that receives it, with where its answer goes.
pub enum Message {
    /// A snapshot of repository `owner/name` (refs, HEAD, packs), taken on
    /// its owner.
    Snapshot {
        owner: String,
        name: String,
        reply: oneshot::Sender<Result<RefSnapshot, RepoError>>,
    },
    /// Make a push's checked pack visible in `owner/name`, order its ref
    /// updates and wait until they are final and durable.
    ApplyPush {
        owner: String,
        name: String,
        /// Boxed: a pack's ingest state is large beside the other messages.
        pack: Option<Box<IngestedPack>>,
        updates: Vec<RefUpdate>,
        atomic: bool,
        reply: oneshot::Sender<Result<Vec<UpdateOutcome>, ShardError>>,
    },
    /// Create repository `owner/name` (private ones are marked private
    /// first); the error is the HTTP status and message for the client.
    CreateRepo {
        owner: String,
        name: String,
        private: bool,
        reply: oneshot::Sender<Result<(), (StatusCode, String)>>,
    },
    /// Order an access change (only the access shard orders them); `repo`
    /// is the repository a visibility change is about, empty for tokens.
    OrderAccess {
        repo: String,
        op: Op,
        reply: oneshot::Sender<Result<AccessOutcome, ShardError>>,
    },
    /// Stop accepting connections (and, with `halt`, submitting
    /// transactions), then report `(shard, open connections, pending
    /// transactions)` every [`crate::DRAIN_REPORT_EVERY_MS`] until nothing
    /// is left in flight.
    Stop {
        halt: bool,
        report: crossbeam_channel::Sender<(usize, usize, usize)>,
    },
    /// Serve new TLS connections with `config`.
    SetTls {
        config: Arc<futures_rustls::rustls::ServerConfig>,
    },
}

/// The way from one shard to another (or to itself).
pub struct Mailbox<'a> {
    from: &'a Rc<Shard>,
    to: usize,
}

impl<'a> Mailbox<'a> {
    /// The mailbox of shard `to`, used by shard `from`.
    pub fn new(from: &'a Rc<Shard>, to: usize) -> Mailbox<'a> {
        Mailbox { from, to }
    }

    /// A snapshot of `owner/name`, taken on its owner.
    pub async fn snapshot(
        &self,
        owner: String,
        name: String,
    ) -> Result<Result<RefSnapshot, RepoError>, ShardError> {
        self.request(|reply| Message::Snapshot { owner, name, reply })
            .await
    }

    /// Make `pack` visible and order `updates` on the owner of `owner/name`.
    pub async fn apply_push(
        &self,
        owner: String,
        name: String,
        pack: Option<IngestedPack>,
        updates: Vec<RefUpdate>,
        atomic: bool,
    ) -> Result<Result<Vec<UpdateOutcome>, ShardError>, ShardError> {
        self.request(|reply| Message::ApplyPush {
            owner,
            name,
            pack: pack.map(Box::new),
            updates,
            atomic,
            reply,
        })
        .await
    }

    /// Create `owner/name` on its owner.
    pub async fn create_repo(
        &self,
        owner: String,
        name: String,
        private: bool,
    ) -> Result<Result<(), (StatusCode, String)>, ShardError> {
        self.request(|reply| Message::CreateRepo {
            owner,
            name,
            private,
            reply,
        })
        .await
    }

    /// Order an access change on the access shard.
    pub async fn order_access(
        &self,
        repo: String,
        op: Op,
    ) -> Result<Result<AccessOutcome, ShardError>, ShardError> {
        self.request(|reply| Message::OrderAccess { repo, op, reply })
            .await
    }

    /// Send the message `make` builds around a reply channel and await the
    /// reply: through the inbox, waiting while it is full, or, for this
    /// shard itself, handled here and now.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Message,
    ) -> Result<T, ShardError> {
        let (tx, rx) = oneshot::channel();
        let message = make(tx);
        if self.to == self.from.id {
            // Boxed: handling a message may send another (a creation
            // orders its visibility on the access shard, maybe this one).
            Box::pin(self.from.clone().handle(message)).await;
        } else {
            let Some(inbox) = self.from.peers.get(self.to) else {
                return Err(ShardError::ShardGone(self.to));
            };
            let mut inbox = inbox.clone();
            futures_lite::future::poll_fn(|cx| inbox.poll_ready(cx))
                .await
                .map_err(|_| ShardError::ShardGone(self.to))?;
            inbox
                .start_send(message)
                .map_err(|_| ShardError::ShardGone(self.to))?;
        }
        rx.await.map_err(|_| ShardError::ShardGone(self.to))
    }
}

/// Send `message` to a shard from outside the executors, waiting while
/// its inbox is full; a shard that is gone is skipped.
pub fn post(inbox: &Inbox, message: Message) {
    let mut inbox = inbox.clone();
    let _ = futures_lite::future::block_on(async {
        futures_lite::future::poll_fn(|cx| inbox.poll_ready(cx)).await?;
        inbox.start_send(message)
    });
}

impl Shard {
    /// The mailbox of shard `to`.
    pub fn to_shard(self: &Rc<Self>, to: usize) -> Mailbox<'_> {
        Mailbox::new(self, to)
    }

    /// The mailbox of the shard owning repository `key`.
    pub fn to_owner(self: &Rc<Self>, key: &str) -> Mailbox<'_> {
        Mailbox::new(self, self.owner(key))
    }

    /// Run one message's operation on this shard and send its reply (a
    /// requester that went away meanwhile is not an error).
    pub async fn handle(self: Rc<Self>, message: Message) {
        match message {
            Message::Snapshot { owner, name, reply } => {
                let snap = self
                    .repo(&owner, &name)
                    .map(|repo| repo.borrow_mut().snapshot());
                let _ = reply.send(snap);
            }
            Message::ApplyPush {
                owner,
                name,
                pack,
                updates,
                atomic,
                reply,
            } => {
                let out =
                    crate::git::apply_push(self, &owner, &name, pack.map(|p| *p), updates, atomic)
                        .await;
                let _ = reply.send(out);
            }
            Message::CreateRepo {
                owner,
                name,
                private,
                reply,
            } => {
                let out = crate::access_api::create_repo(self, owner, name, private).await;
                let _ = reply.send(out);
            }
            Message::OrderAccess { repo, op, reply } => {
                let out = self.order_access(&repo, op).await;
                let _ = reply.send(out);
            }
            Message::Stop { halt, report } => {
                self.begin_stop();
                if halt {
                    self.halted.set(true);
                }
                loop {
                    let open = self.connections.get();
                    let pending = self.pending_transactions();
                    let done = pending == 0 && (open == 0 || halt);
                    if report.send((self.id, open, pending)).is_err() || done {
                        return;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(
                        crate::DRAIN_REPORT_EVERY_MS,
                    ))
                    .await;
                }
            }
            Message::SetTls { config } => {
                *self.tls.borrow_mut() = Some(crate::tls::acceptor(config));
            }
        }
    }
}
