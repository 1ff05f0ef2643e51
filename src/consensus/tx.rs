//! Transactions as they travel between validators and sit in blocks.
//!
//! Encoded with commonware's codec; every length has an explicit bound, so
//! a hostile peer cannot make a decoder allocate more than the bound.
//!
//! ```text
//! tx      = origin u32 | nonce u64 | repo (len varint ≤ 201, bytes) | op
//! op      = 0 (create repository)
//!         | 1 | atomic bool | updates (count varint ≤ TX_UPDATES_MAX, update*) | pack?
//! update  = name (len varint ≤ REF_NAME_MAX_BYTES) | old [20] | new [20]
//! pack?   = 0 | 1 | checksum [20] | size u64 | chunks [32] (SHA-256 of the 1 MiB chunks' SHA-256s)
//! ```

use bytes::{Buf, BufMut, Bytes};
use commonware_codec::{Decode, Encode, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use guts_io::refs::RefUpdate;
use guts_io::ObjectId;

/// Longest `OWNER/NAME` key: two names of at most 100 bytes and a slash.
pub const REPO_KEY_MAX_BYTES: usize = 201;
/// Longest ref name carried in a transaction (C git's practical limit is
/// the path length of the file system; 4096 covers every real ref).
pub const REF_NAME_MAX_BYTES: usize = 4096;
/// Longest user name in a token transaction.
pub const USER_MAX_BYTES: usize = 256;
/// Most ref updates in one transaction.
pub const TX_UPDATES_MAX: usize = 65_536;
/// Most ref updates in one block (all transactions together).
pub const BLOCK_UPDATES_MAX: usize = 65_536;
/// Largest encoded transaction: what one gossip message and one entry of a
/// block may hold (the p2p message bound is derived from it). A push too
/// large for one is cut into several by its shard (see [`split_updates`]).
pub const TX_MAX_BYTES: usize = 256 * 1024;
/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 1024;

pub use guts_shards::consensus::{Op, PackRef};

/// One ordered unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// Index (in the genesis) of the validator that accepted it.
    pub origin: u32,
    /// Unique per origin (never reused, also across restarts).
    pub nonce: u64,
    /// `OWNER/NAME`.
    pub repo: String,
    pub op: Op,
}

impl Tx {
    /// Ref updates it carries.
    pub fn update_count(&self) -> usize {
        match &self.op {
            Op::Update { updates, .. } => updates.len(),
            _ => 0,
        }
    }

    /// Encode to bytes.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode().to_vec())
    }

    /// Decode from bytes, refusing anything over the bounds or with trailing data.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tx, CodecError> {
        if bytes.len() > TX_MAX_BYTES {
            return Err(CodecError::InvalidLength(bytes.len()));
        }
        Tx::decode_cfg(bytes.to_vec(), &())
    }
}

fn write_str(s: &str, buf: &mut impl BufMut) {
    Bytes::copy_from_slice(s.as_bytes()).write(buf);
}

fn str_size(s: &str) -> usize {
    s.len().encode_size() + s.len()
}

fn read_str(
    buf: &mut impl commonware_codec::Buf,
    max: usize,
    what: &'static str,
) -> Result<String, CodecError> {
    let raw = Bytes::read_cfg(buf, &RangeCfg::new(0..=max))?;
    String::from_utf8(raw.to_vec()).map_err(|_| CodecError::Invalid(what, "not UTF-8"))
}

fn read_oid(buf: &mut impl commonware_codec::Buf) -> Result<ObjectId, CodecError> {
    let raw = <[u8; 20]>::read_cfg(buf, &())?;
    ObjectId::from_bytes(&raw).map_err(|_| CodecError::Invalid("object id", "length"))
}

impl Write for Tx {
    fn write(&self, buf: &mut impl BufMut) {
        self.origin.write(buf);
        self.nonce.write(buf);
        write_str(&self.repo, buf);
        match &self.op {
            Op::CreateRepo => 0u8.write(buf),
            Op::Update {
                atomic,
                updates,
                pack,
            } => {
                1u8.write(buf);
                atomic.write(buf);
                updates.len().write(buf);
                for u in updates {
                    write_str(&u.name, buf);
                    buf.put_slice(u.old.as_bytes());
                    buf.put_slice(u.new.as_bytes());
                }
                match pack {
                    None => 0u8.write(buf),
                    Some(p) => {
                        1u8.write(buf);
                        p.checksum.write(buf);
                        p.size.write(buf);
                        p.chunks.write(buf);
                    }
                }
            }
            Op::TokenCreate {
                user,
                scope,
                write,
                admin,
                secret_sha256,
                created_unix_s,
            } => {
                2u8.write(buf);
                write_str(user, buf);
                match scope {
                    None => 0u8.write(buf),
                    Some(r) => {
                        1u8.write(buf);
                        write_str(r, buf);
                    }
                }
                write.write(buf);
                admin.write(buf);
                secret_sha256.write(buf);
                created_unix_s.write(buf);
            }
            Op::TokenRevoke { token_id } => {
                3u8.write(buf);
                token_id.write(buf);
            }
            Op::SetVisibility { private } => {
                4u8.write(buf);
                private.write(buf);
            }
        }
    }
}

/// Encoded size of a transaction's fields around its updates, at most:
/// origin, nonce, repository, op tag, atomic flag, update count (a varint
/// of at most 5 bytes) and the pack.
fn update_tx_overhead(repo: &str) -> usize {
    4 + 8 + str_size(repo) + 1 + 1 + 5 + 1 + PACK_REF_BYTES
}

/// Encoded size of a pack reference: checksum, size, chunks root.
const PACK_REF_BYTES: usize = 20 + 8 + 32;

/// Lengths of consecutive parts of `updates` (one push to `repo`) such
/// that each part, as one transaction, holds at most `updates_max` updates
/// and encodes to at most [`TX_MAX_BYTES`]. Every ref name fits (a name is
/// at most [`REF_NAME_MAX_BYTES`]), so no part is empty.
pub fn split_updates(repo: &str, updates: &[RefUpdate], updates_max: usize) -> Vec<usize> {
    let overhead = update_tx_overhead(repo);
    let updates_max = updates_max.clamp(1, TX_UPDATES_MAX);
    let mut parts = Vec::new();
    let (mut len, mut bytes) = (0usize, overhead);
    for u in updates {
        let size = str_size(&u.name) + 40;
        if len > 0 && (len == updates_max || bytes + size > TX_MAX_BYTES) {
            parts.push(len);
            (len, bytes) = (0, overhead);
        }
        len += 1;
        bytes += size;
    }
    if len > 0 || parts.is_empty() {
        parts.push(len);
    }
    parts
}

impl EncodeSize for Tx {
    fn encode_size(&self) -> usize {
        if !matches!(self.op, Op::CreateRepo | Op::Update { .. }) {
            let mut v = Vec::new();
            self.write(&mut v);
            return v.len();
        }
        let head = 4 + 8 + str_size(&self.repo) + 1;
        match &self.op {
            Op::CreateRepo => head,
            Op::Update { updates, pack, .. } => {
                head + 1
                    + updates.len().encode_size()
                    + updates
                        .iter()
                        .map(|u| str_size(&u.name) + 40)
                        .sum::<usize>()
                    + 1
                    + if pack.is_some() { PACK_REF_BYTES } else { 0 }
            }
            _ => unreachable!("handled above"),
        }
    }
}

impl Read for Tx {
    type Cfg = ();

    fn read_cfg(buf: &mut impl commonware_codec::Buf, _: &()) -> Result<Self, CodecError> {
        let origin = u32::read_cfg(buf, &())?;
        let nonce = u64::read_cfg(buf, &())?;
        let repo = read_str(buf, REPO_KEY_MAX_BYTES, "repository")?;
        let op = match u8::read_cfg(buf, &())? {
            0 => Op::CreateRepo,
            1 => {
                let atomic = bool::read_cfg(buf, &())?;
                let count = usize::read_cfg(buf, &RangeCfg::new(0..=TX_UPDATES_MAX))?;
                // Each update takes at least 41 bytes: never allocate past the input.
                if count.saturating_mul(41) > buf.remaining() {
                    return Err(CodecError::EndOfBuffer);
                }
                let mut updates = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = read_str(buf, REF_NAME_MAX_BYTES, "ref name")?;
                    let old = read_oid(buf)?;
                    let new = read_oid(buf)?;
                    updates.push(RefUpdate { name, old, new });
                }
                let pack = match u8::read_cfg(buf, &())? {
                    0 => None,
                    1 => Some(PackRef {
                        checksum: <[u8; 20]>::read_cfg(buf, &())?,
                        size: u64::read_cfg(buf, &())?,
                        chunks: <[u8; 32]>::read_cfg(buf, &())?,
                    }),
                    t => return Err(CodecError::InvalidEnum(t)),
                };
                Op::Update {
                    atomic,
                    updates,
                    pack,
                }
            }
            2 => {
                let user = read_str(buf, USER_MAX_BYTES, "user")?;
                let scope = match u8::read_cfg(buf, &())? {
                    0 => None,
                    1 => Some(read_str(buf, REPO_KEY_MAX_BYTES, "scope")?),
                    t => return Err(CodecError::InvalidEnum(t)),
                };
                Op::TokenCreate {
                    user,
                    scope,
                    write: bool::read_cfg(buf, &())?,
                    admin: bool::read_cfg(buf, &())?,
                    secret_sha256: <[u8; 32]>::read_cfg(buf, &())?,
                    created_unix_s: u64::read_cfg(buf, &())?,
                }
            }
            3 => Op::TokenRevoke {
                token_id: u64::read_cfg(buf, &())?,
            },
            4 => Op::SetVisibility {
                private: bool::read_cfg(buf, &())?,
            },
            t => return Err(CodecError::InvalidEnum(t)),
        };
        Ok(Tx {
            origin,
            nonce,
            repo,
            op,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(b: u8) -> ObjectId {
        ObjectId::from_bytes(&[b; 20]).unwrap()
    }

    fn sample() -> Tx {
        Tx {
            origin: 3,
            nonce: 77,
            repo: "alice/hello".into(),
            op: Op::Update {
                atomic: true,
                updates: vec![
                    RefUpdate {
                        name: "refs/heads/main".into(),
                        old: ObjectId::NULL_SHA1,
                        new: oid(1),
                    },
                    RefUpdate {
                        name: "refs/tags/v1".into(),
                        old: oid(2),
                        new: oid(3),
                    },
                ],
                pack: Some(PackRef {
                    checksum: [9; 20],
                    size: 1234,
                    chunks: [5; 32],
                }),
            },
        }
    }

    #[test]
    fn round_trips() {
        for tx in [
            sample(),
            Tx {
                origin: 0,
                nonce: 1,
                repo: "a/b".into(),
                op: Op::CreateRepo,
            },
        ] {
            let bytes = tx.to_bytes();
            assert_eq!(bytes.len(), tx.encode_size());
            assert_eq!(Tx::from_bytes(&bytes).unwrap(), tx);
        }
    }

    #[test]
    fn refuses_truncated_trailing_and_oversized_input() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Tx::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(Tx::from_bytes(&long).is_err());
        // A count claiming far more updates than the bytes hold.
        let mut lying = Vec::new();
        3u32.write(&mut lying);
        1u64.write(&mut lying);
        write_str("a/b", &mut lying);
        1u8.write(&mut lying);
        false.write(&mut lying);
        60_000usize.write(&mut lying);
        assert!(Tx::from_bytes(&lying).is_err());
        // Over the bound.
        let mut over = Vec::new();
        3u32.write(&mut over);
        1u64.write(&mut over);
        write_str(&"x".repeat(REPO_KEY_MAX_BYTES + 1), &mut over);
        0u8.write(&mut over);
        assert!(Tx::from_bytes(&over).is_err());
    }

    /// Every part of a cut push is one valid transaction within both bounds,
    /// and the parts cover the push in order.
    #[test]
    fn a_large_push_is_cut_into_transactions_that_fit() {
        let repo = format!("{}/{}", "o".repeat(100), "n".repeat(100));
        let cases: Vec<(Vec<RefUpdate>, usize)> = vec![
            // Short names: the update count binds.
            (
                (0..20_000)
                    .map(|i| RefUpdate {
                        name: format!("refs/heads/b-{i}"),
                        old: ObjectId::NULL_SHA1,
                        new: oid(1),
                    })
                    .collect(),
                4096,
            ),
            // The longest names: the byte bound binds.
            (
                (0..300)
                    .map(|i| RefUpdate {
                        name: format!("refs/heads/{i:05}{}", "x".repeat(REF_NAME_MAX_BYTES - 16)),
                        old: oid(2),
                        new: oid(3),
                    })
                    .collect(),
                4096,
            ),
            (Vec::new(), 10),
            (vec![sample().op.updates()[0].clone()], 1),
        ];
        for (updates, updates_max) in cases {
            let parts = split_updates(&repo, &updates, updates_max);
            assert_eq!(parts.iter().sum::<usize>(), updates.len());
            assert!(!parts.is_empty());
            let mut at = 0;
            for len in &parts {
                assert!(*len <= updates_max);
                assert!(*len > 0 || updates.is_empty());
                let tx = Tx {
                    origin: 1,
                    nonce: 2,
                    repo: repo.clone(),
                    op: Op::Update {
                        updates: updates[at..at + len].to_vec(),
                        atomic: false,
                        pack: Some(PackRef {
                            checksum: [7; 20],
                            size: u64::MAX,
                            chunks: [0xff; 32],
                        }),
                    },
                };
                let bytes = tx.to_bytes();
                assert!(bytes.len() <= TX_MAX_BYTES, "{} bytes", bytes.len());
                assert_eq!(Tx::from_bytes(&bytes).unwrap(), tx);
                at += len;
            }
            if updates.len() > updates_max {
                assert!(parts.len() > 1);
            }
        }
    }
}
