//! Byte counting on the p2p channels: every channel the engine runs on
//! (votes, certificates, backfill, blocks, mempool, packs) is wrapped here,
//! so `guts_p2p_bytes_total` counts every message the node exchanges with
//! its authenticated peers, whatever component sent or received it.
//!
//! A message is counted by its payload (the transport's framing and
//! encryption are not included): once per recipient it was handed to the
//! network for, and once when a receiver takes it.

use commonware_actor::{Feedback, Unreliable};
use commonware_p2p::{CheckedSender, LimitedSender, Message, Receiver, Recipients};
use commonware_runtime::IoBufs;
use std::future::Future;
use std::num::NonZeroUsize;
use std::time::SystemTime;

/// A channel end whose traffic is counted: `count` is called with the bytes
/// of every message it sends (per recipient) or receives.
#[derive(Clone)]
pub struct Counted<T> {
    inner: T,
    count: fn(u64),
}

impl<T> Counted<T> {
    pub fn new(inner: T, count: fn(u64)) -> Self {
        Self { inner, count }
    }
}

/// A sending end counted in `guts_p2p_bytes_total{direction="sent"}`.
pub fn sent<S>(sender: S) -> Counted<S> {
    Counted::new(sender, guts_shards::metrics::record_p2p_sent)
}

/// A receiving end counted in `guts_p2p_bytes_total{direction="received"}`.
pub fn received<R>(receiver: R) -> Counted<R> {
    Counted::new(receiver, guts_shards::metrics::record_p2p_received)
}

/// Both ends of a channel, counted.
pub fn channel<S, R>((sender, receiver): (S, R)) -> (Counted<S>, Counted<R>) {
    (sent(sender), received(receiver))
}

impl<T: std::fmt::Debug> std::fmt::Debug for Counted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<S: LimitedSender> LimitedSender for Counted<S> {
    type PublicKey = S::PublicKey;
    type Checked<'a>
        = CountedChecked<S::Checked<'a>>
    where
        Self: 'a;

    fn check(
        &mut self,
        recipients: Recipients<Self::PublicKey>,
    ) -> Result<Self::Checked<'_>, SystemTime> {
        let count = self.count;
        self.inner
            .check(recipients)
            .map(|inner| CountedChecked { inner, count })
    }
}

/// A checked send whose bytes are counted once the network takes it.
pub struct CountedChecked<C> {
    inner: C,
    count: fn(u64),
}

impl<C: CheckedSender> CheckedSender for CountedChecked<C> {
    type PublicKey = C::PublicKey;

    fn recipients(&self) -> Vec<Self::PublicKey> {
        self.inner.recipients()
    }

    fn send(self, message: impl Into<IoBufs> + Send, priority: bool) -> Unreliable<Feedback> {
        let message: IoBufs = message.into();
        let bytes = message.len() as u64;
        let recipients = self.inner.recipients().len() as u64;
        let feedback = self.inner.send(message, priority);
        if feedback.accepted() {
            (self.count)(bytes.saturating_mul(recipients));
        }
        feedback
    }
}

impl<R: Receiver> Receiver for Counted<R> {
    type Error = R::Error;
    type PublicKey = R::PublicKey;

    fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Message<Self::PublicKey>, Self::Error>> + Send {
        let count = self.count;
        let inner = self.inner.recv();
        async move {
            let received = inner.await;
            if let Ok((_, message)) = &received {
                count(message.len() as u64);
            }
            received
        }
    }

    fn capacity(&self) -> NonZeroUsize {
        self.inner.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_cryptography::{ed25519::PrivateKey, ed25519::PublicKey, Signer as _};
    use commonware_p2p::Sender as _;
    use commonware_runtime::IoBuf;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static SENT: AtomicU64 = AtomicU64::new(0);
    static RECEIVED: AtomicU64 = AtomicU64::new(0);

    fn key(seed: u64) -> PublicKey {
        PrivateKey::from_seed(seed).public_key()
    }

    /// A network that takes every message for every listed peer, or refuses all.
    #[derive(Clone)]
    struct Fake {
        peers: Vec<PublicKey>,
        accept: bool,
    }

    struct FakeChecked {
        peers: Vec<PublicKey>,
        accept: bool,
    }

    impl LimitedSender for Fake {
        type PublicKey = PublicKey;
        type Checked<'a> = FakeChecked;

        fn check(&mut self, recipients: Recipients<PublicKey>) -> Result<FakeChecked, SystemTime> {
            let peers = match recipients {
                Recipients::All => self.peers.clone(),
                Recipients::Some(p) => p,
                Recipients::One(p) => vec![p],
            };
            Ok(FakeChecked {
                peers,
                accept: self.accept,
            })
        }
    }

    impl CheckedSender for FakeChecked {
        type PublicKey = PublicKey;

        fn recipients(&self) -> Vec<PublicKey> {
            self.peers.clone()
        }

        fn send(self, _: impl Into<IoBufs> + Send, _: bool) -> Unreliable<Feedback> {
            if self.accept {
                Unreliable::new(Feedback::Ok)
            } else {
                Unreliable::rejected()
            }
        }
    }

    #[derive(Debug)]
    struct FakeReceiver(Vec<u8>);

    impl Receiver for FakeReceiver {
        type Error = std::io::Error;
        type PublicKey = PublicKey;

        async fn recv(&mut self) -> Result<Message<PublicKey>, std::io::Error> {
            Ok((key(9), IoBuf::from(self.0.clone())))
        }

        fn capacity(&self) -> NonZeroUsize {
            NonZeroUsize::MIN
        }
    }

    #[test]
    fn bytes_are_counted_per_recipient_and_only_when_taken() {
        let peers = vec![key(1), key(2), key(3)];
        let count: fn(u64) = |n| {
            SENT.fetch_add(n, Relaxed);
        };
        let mut sender = Counted::new(
            Fake {
                peers: peers.clone(),
                accept: true,
            },
            count,
        );
        assert_eq!(sender.send(Recipients::All, vec![0u8; 100], false), peers);
        assert_eq!(SENT.load(Relaxed), 300);
        sender.send(Recipients::One(key(1)), vec![0u8; 10], false);
        assert_eq!(SENT.load(Relaxed), 310);
        let mut refused = Counted::new(
            Fake {
                peers,
                accept: false,
            },
            count,
        );
        assert!(refused
            .send(Recipients::All, vec![0u8; 100], false)
            .is_empty());
        assert_eq!(SENT.load(Relaxed), 310, "a refused message was counted");

        let mut receiver = Counted::new(FakeReceiver(vec![1u8; 42]), |n| {
            RECEIVED.fetch_add(n, Relaxed);
        });
        let (from, message) = futures::executor::block_on(receiver.recv()).unwrap();
        assert_eq!((from, message.len()), (key(9), 42));
        futures::executor::block_on(receiver.recv()).unwrap();
        assert_eq!(RECEIVED.load(Relaxed), 84);
    }
}
