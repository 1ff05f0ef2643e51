//! Pack index version 2: reading (fan-out + binary search, no mmap) and
//! writing byte-for-byte what `git index-pack` writes for the same pack.
//!
//! Layout: magic `\xfftOc`, version 2, 256 cumulative fan-out counts, the
//! sorted object ids, one CRC-32 per entry, one 31-bit offset per entry
//! (MSB set: index into the 64-bit offset table), the 64-bit offsets, the
//! pack checksum and the checksum of the index itself.

use crate::oid::ObjectId;
use bytes::Bytes;
use sha1::Digest;

/// Index file magic.
pub const IDX_MAGIC: [u8; 4] = [0xff, b't', b'O', b'c'];
/// Index version written and read.
pub const IDX_VERSION: u32 = 2;
/// Offsets above this go to the 64-bit table (git's `off32_limit`).
pub const OFFSET_32_LIMIT: u64 = 0x7fff_ffff;
const HEADER_BYTES: usize = 8;
const FANOUT_BYTES: usize = 256 * 4;
const OID_BYTES: usize = 20;

/// One object of a pack, as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxEntry {
    pub oid: ObjectId,
    /// CRC-32 of the entry's raw bytes in the pack (header + compressed data).
    pub crc32: u32,
    /// Offset of the entry's header in the pack.
    pub offset: u64,
}

/// Errors reading an index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdxError {
    #[error("pack index too short: {len} bytes")]
    TooShort { len: usize },
    #[error("pack index has a bad magic or version")]
    BadHeader,
    #[error("pack index fan-out table is not monotonic at byte {0}")]
    BadFanout(usize),
    #[error("pack index has {len} bytes, expected {expected} for {objects} objects")]
    BadLength {
        len: usize,
        expected: usize,
        objects: u32,
    },
    #[error("pack index checksum mismatch")]
    BadChecksum,
    #[error("pack index object ids are not sorted at entry {0}")]
    Unsorted(u32),
    #[error("pack index 64-bit offset reference {0} is out of range")]
    BadLargeOffset(u32),
}

/// Serialize an index for `entries` (sorted here by id) of the pack whose
/// trailing checksum is `pack_checksum`.
pub fn write_idx(entries: &mut [IdxEntry], pack_checksum: &[u8; 20]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.oid);
    let n = entries.len();
    let large = entries
        .iter()
        .filter(|e| e.offset > OFFSET_32_LIMIT)
        .count();
    let mut out = Vec::with_capacity(HEADER_BYTES + FANOUT_BYTES + n * 28 + large * 8 + 40);
    out.extend_from_slice(&IDX_MAGIC);
    out.extend_from_slice(&IDX_VERSION.to_be_bytes());
    let mut counts = [0u32; 256];
    for e in entries.iter() {
        counts[e.oid.first_byte() as usize] += 1;
    }
    let mut total = 0u32;
    for c in counts {
        total += c;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for e in entries.iter() {
        out.extend_from_slice(e.oid.as_bytes());
    }
    for e in entries.iter() {
        out.extend_from_slice(&e.crc32.to_be_bytes());
    }
    let mut next_large = 0u32;
    for e in entries.iter() {
        if e.offset > OFFSET_32_LIMIT {
            out.extend_from_slice(&(0x8000_0000 | next_large).to_be_bytes());
            next_large += 1;
        } else {
            out.extend_from_slice(&(e.offset as u32).to_be_bytes());
        }
    }
    for e in entries.iter() {
        if e.offset > OFFSET_32_LIMIT {
            out.extend_from_slice(&e.offset.to_be_bytes());
        }
    }
    out.extend_from_slice(pack_checksum);
    let digest: [u8; 20] = sha1::Sha1::digest(&out).into();
    out.extend_from_slice(&digest);
    out
}

/// A parsed pack index held in memory (the bytes are shared, not copied).
#[derive(Clone)]
pub struct PackIndex {
    data: Bytes,
    objects: u32,
    large_count: u32,
}

impl PackIndex {
    /// Parse and validate an index. The checksum is verified when `verify` is set.
    pub fn parse(data: Bytes, verify: bool) -> Result<PackIndex, IdxError> {
        if data.len() < HEADER_BYTES + FANOUT_BYTES + 40 {
            return Err(IdxError::TooShort { len: data.len() });
        }
        if data[..4] != IDX_MAGIC || be32(&data, 4) != IDX_VERSION {
            return Err(IdxError::BadHeader);
        }
        let mut prev = 0;
        for i in 0..256 {
            let v = be32(&data, HEADER_BYTES + i * 4);
            if v < prev {
                return Err(IdxError::BadFanout(i));
            }
            prev = v;
        }
        let objects = prev;
        let n = objects as usize;
        let base = HEADER_BYTES + FANOUT_BYTES + n * 28;
        if data.len() < base + 40 {
            return Err(IdxError::BadLength {
                len: data.len(),
                expected: base + 40,
                objects,
            });
        }
        let large_bytes = data.len() - base - 40;
        if !large_bytes.is_multiple_of(8) {
            return Err(IdxError::BadLength {
                len: data.len(),
                expected: base + 40,
                objects,
            });
        }
        if verify {
            let digest: [u8; 20] = sha1::Sha1::digest(&data[..data.len() - 20]).into();
            if digest[..] != data[data.len() - 20..] {
                return Err(IdxError::BadChecksum);
            }
        }
        let idx = PackIndex {
            data,
            objects,
            large_count: (large_bytes / 8) as u32,
        };
        if verify {
            for i in 1..objects {
                if idx.oid_bytes(i - 1) >= idx.oid_bytes(i) {
                    return Err(IdxError::Unsorted(i));
                }
            }
            for i in 0..objects {
                let raw = be32(&idx.data, idx.offsets_start() + i as usize * 4);
                if raw & 0x8000_0000 != 0 && raw & 0x7fff_ffff >= idx.large_count {
                    return Err(IdxError::BadLargeOffset(raw));
                }
            }
        }
        Ok(idx)
    }

    /// Number of objects in the pack.
    pub fn len(&self) -> u32 {
        self.objects
    }

    /// True if the pack holds no objects.
    pub fn is_empty(&self) -> bool {
        self.objects == 0
    }

    /// The pack checksum this index belongs to.
    pub fn pack_checksum(&self) -> [u8; 20] {
        let end = self.data.len() - 20;
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.data[end - 20..end]);
        out
    }

    fn oids_start(&self) -> usize {
        HEADER_BYTES + FANOUT_BYTES
    }
    fn crcs_start(&self) -> usize {
        self.oids_start() + self.objects as usize * OID_BYTES
    }
    fn offsets_start(&self) -> usize {
        self.crcs_start() + self.objects as usize * 4
    }
    fn large_start(&self) -> usize {
        self.offsets_start() + self.objects as usize * 4
    }

    fn oid_bytes(&self, i: u32) -> &[u8] {
        let s = self.oids_start() + i as usize * OID_BYTES;
        &self.data[s..s + OID_BYTES]
    }

    /// The id of the `i`-th object in id order.
    pub fn oid_at(&self, i: u32) -> ObjectId {
        let mut raw = [0u8; 20];
        raw.copy_from_slice(self.oid_bytes(i));
        ObjectId::from_sha1(raw)
    }

    /// The CRC-32 of the `i`-th object's raw entry.
    pub fn crc_at(&self, i: u32) -> u32 {
        be32(&self.data, self.crcs_start() + i as usize * 4)
    }

    /// The pack offset of the `i`-th object.
    pub fn offset_at(&self, i: u32) -> u64 {
        let raw = be32(&self.data, self.offsets_start() + i as usize * 4);
        if raw & 0x8000_0000 == 0 {
            return u64::from(raw);
        }
        let k = (raw & 0x7fff_ffff) as usize;
        let s = self.large_start() + k * 8;
        match self.data.get(s..s + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])),
            // validated in parse(verify); an unverified corrupt index yields an impossible offset
            None => u64::MAX,
        }
    }

    /// Position of `oid` in id order, if present.
    pub fn find(&self, oid: &ObjectId) -> Option<u32> {
        let first = oid.first_byte() as usize;
        let lo = if first == 0 {
            0
        } else {
            be32(&self.data, HEADER_BYTES + (first - 1) * 4)
        };
        let hi = be32(&self.data, HEADER_BYTES + first * 4);
        let (mut lo, mut hi) = (lo, hi.min(self.objects));
        let want = oid.as_bytes();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.oid_bytes(mid).cmp(want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Offset of `oid` in the pack, if present.
    pub fn lookup(&self, oid: &ObjectId) -> Option<u64> {
        self.find(oid).map(|i| self.offset_at(i))
    }

    /// All entries, in id order.
    pub fn entries(&self) -> impl Iterator<Item = IdxEntry> + '_ {
        (0..self.objects).map(move |i| IdxEntry {
            oid: self.oid_at(i),
            crc32: self.crc_at(i),
            offset: self.offset_at(i),
        })
    }

    /// The raw bytes of the index.
    pub fn as_bytes(&self) -> &Bytes {
        &self.data
    }
}

fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut entries: Vec<IdxEntry> = (0u32..1000)
            .map(|i| {
                let h = crate::object::hash_object(crate::ObjectKind::Blob, &i.to_le_bytes());
                IdxEntry {
                    oid: h,
                    crc32: i,
                    offset: if i % 100 == 7 {
                        (1u64 << 33) + u64::from(i)
                    } else {
                        12 + u64::from(i) * 10
                    },
                }
            })
            .collect();
        let bytes = write_idx(&mut entries.clone(), &[7u8; 20]);
        let idx = PackIndex::parse(Bytes::from(bytes), true).unwrap();
        assert_eq!(idx.len(), 1000);
        assert_eq!(idx.pack_checksum(), [7u8; 20]);
        for e in &entries {
            let i = idx.find(&e.oid).unwrap();
            assert_eq!(idx.offset_at(i), e.offset);
            assert_eq!(idx.crc_at(i), e.crc32);
        }
        entries.sort_by_key(|e| e.oid);
        assert!(idx.entries().eq(entries.into_iter()));
        assert!(idx.lookup(&ObjectId::NULL_SHA1).is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(PackIndex::parse(Bytes::from_static(b"nope"), true).is_err());
        let mut bytes = write_idx(&mut [], &[0u8; 20]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            PackIndex::parse(Bytes::from(bytes), true).err(),
            Some(IdxError::BadChecksum)
        );
    }
}
