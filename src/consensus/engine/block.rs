//! The block the validators agree on: a parent digest, a height and an ordered list of opaque
//! transactions. The encoding is canonical (commonware codec, varint lengths) and bounded by
//! [`BlockCfg`]; the digest is SHA-256 over the encoding.

use bytes::{BufMut, Bytes};
use commonware_codec::{
    varint::UInt, Buf, Encode, EncodeSize, Error as CodecError, Read, ReadExt as _, Write,
};
use commonware_consensus::{types::Height, BoundedBlock, Heightable};
use commonware_cryptography::{
    sha256::{Digest, Sha256},
    Digestible, Hasher,
};

/// Decoding bounds for a block. Every node of a network must use the same bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCfg {
    /// Maximum number of transactions in one block.
    pub max_txs: usize,
    /// Maximum size of one transaction in bytes.
    pub max_tx_bytes: usize,
}

/// Largest encoding of a `usize` length prefix (a `u32` varint).
const LEN_PREFIX_MAX: usize = 5;
/// Largest encoding of a `u64` varint.
const U64_MAX_ENCODED: usize = 10;
/// Size of a SHA-256 digest.
const DIGEST_SIZE: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub parent: Digest,
    pub height: u64,
    pub txs: Vec<Bytes>,
}

impl Block {
    /// The height-zero block every node of a chain starts from. Its parent commits to the chain
    /// id, so chains with different ids never share a genesis digest.
    pub fn genesis(chain_id: &[u8]) -> Self {
        Self {
            parent: Sha256::hash(&[b"guts-genesis", chain_id]),
            height: 0,
            txs: Vec::new(),
        }
    }

    /// Whether the block respects `cfg` (what a decoder with `cfg` would accept).
    pub fn within(&self, cfg: &BlockCfg) -> bool {
        self.txs.len() <= cfg.max_txs && self.txs.iter().all(|tx| tx.len() <= cfg.max_tx_bytes)
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.parent.write(buf);
        UInt(self.height).write(buf);
        self.txs.write(buf);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        self.parent.encode_size() + UInt(self.height).encode_size() + self.txs.encode_size()
    }
}

impl Read for Block {
    type Cfg = BlockCfg;

    fn read_cfg(buf: &mut impl Buf, cfg: &BlockCfg) -> Result<Self, CodecError> {
        let parent = Digest::read(buf)?;
        let height: u64 = UInt::read(buf)?.into();
        let txs = Vec::<Bytes>::read_cfg(
            buf,
            &((0..=cfg.max_txs).into(), (0..=cfg.max_tx_bytes).into()),
        )?;
        Ok(Self {
            parent,
            height,
            txs,
        })
    }
}

impl Digestible for Block {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        Sha256::hash(&[self.encode().as_ref()])
    }
}

impl Heightable for Block {
    fn height(&self) -> Height {
        Height::new(self.height)
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> Digest {
        self.parent
    }
}

impl BoundedBlock for Block {
    fn max_encode_size(cfg: &BlockCfg) -> usize {
        max_block_size(cfg)
    }
}

/// Upper bound on the encoded size of a block admitted by `cfg`.
pub fn max_block_size(cfg: &BlockCfg) -> usize {
    let per_tx = LEN_PREFIX_MAX.saturating_add(cfg.max_tx_bytes);
    DIGEST_SIZE
        .saturating_add(U64_MAX_ENCODED)
        .saturating_add(LEN_PREFIX_MAX)
        .saturating_add(cfg.max_txs.saturating_mul(per_tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::Decode;

    const CFG: BlockCfg = BlockCfg {
        max_txs: 3,
        max_tx_bytes: 8,
    };

    fn block(txs: &[&[u8]]) -> Block {
        Block {
            parent: Sha256::hash(&[b"p"]),
            height: 300,
            txs: txs.iter().map(|t| Bytes::copy_from_slice(t)).collect(),
        }
    }

    #[test]
    fn roundtrip_and_digest() {
        let b = block(&[b"a", b"", b"12345678"]);
        let enc = b.encode();
        assert!(enc.len() <= max_block_size(&CFG));
        let d = Block::decode_cfg(enc.clone(), &CFG).unwrap();
        assert_eq!(d, b);
        assert_eq!(d.digest(), b.digest());
        assert_ne!(block(&[b"a"]).digest(), block(&[b"b"]).digest());
    }

    #[test]
    fn bounds_enforced() {
        let too_many = block(&[b"a", b"b", b"c", b"d"]);
        assert!(!too_many.within(&CFG));
        assert!(Block::decode_cfg(too_many.encode(), &CFG).is_err());
        let too_big = block(&[b"123456789"]);
        assert!(!too_big.within(&CFG));
        assert!(Block::decode_cfg(too_big.encode(), &CFG).is_err());
        // Trailing bytes are rejected.
        let mut enc = block(&[b"a"]).encode().to_vec();
        enc.push(0);
        assert!(Block::decode_cfg(Bytes::from(enc), &CFG).is_err());
        // Truncation is rejected.
        let enc = block(&[b"abc"]).encode();
        assert!(Block::decode_cfg(enc.slice(..enc.len() - 1), &CFG).is_err());
    }

    #[test]
    fn max_size_is_tight_enough() {
        let full = Block {
            parent: Sha256::hash(&[b"p"]),
            height: u64::MAX,
            txs: vec![Bytes::from(vec![7u8; 8]); 3],
        };
        assert!(full.encode().len() <= max_block_size(&CFG));
        assert_eq!(Block::decode_cfg(full.encode(), &CFG).unwrap(), full);
    }
}
