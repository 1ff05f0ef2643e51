//! Pack entry headers: the variable-length type+size header and the
//! offset encoding of OFS_DELTA bases.

use super::{OFS_DELTA, REF_DELTA};
use crate::object::ObjectKind;

/// Errors decoding an entry header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("pack entry header truncated")]
    Truncated,
    #[error("pack entry has invalid type code {0}")]
    BadType(u8),
    #[error("pack entry size does not fit in 64 bits")]
    SizeOverflow,
    #[error("OFS_DELTA offset overflows")]
    OffsetOverflow,
}

/// What kind of data an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A whole object.
    Base(ObjectKind),
    /// A delta against the entry `distance` bytes before this entry's start.
    OfsDelta { distance: u64 },
    /// A delta against the object with this id.
    RefDelta { base: crate::ObjectId },
}

/// A decoded entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub kind: EntryKind,
    /// Inflated size of the entry data (object size, or delta size).
    pub size: u64,
    /// Bytes the header occupied, including any delta base reference.
    pub header_len: usize,
}

/// Decode an entry header at the start of `data`.
pub fn decode_header(data: &[u8]) -> Result<EntryHeader, EntryError> {
    let mut pos = 0;
    let first = *data.first().ok_or(EntryError::Truncated)?;
    pos += 1;
    let code = (first >> 4) & 7;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4u32;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = *data.get(pos).ok_or(EntryError::Truncated)?;
        pos += 1;
        if shift > 57 {
            return Err(EntryError::SizeOverflow);
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    let kind = match code {
        OFS_DELTA => {
            let mut b = *data.get(pos).ok_or(EntryError::Truncated)?;
            pos += 1;
            let mut distance = u64::from(b & 0x7f);
            while b & 0x80 != 0 {
                b = *data.get(pos).ok_or(EntryError::Truncated)?;
                pos += 1;
                distance = distance
                    .checked_add(1)
                    .and_then(|d| d.checked_mul(128))
                    .ok_or(EntryError::OffsetOverflow)?
                    | u64::from(b & 0x7f);
            }
            EntryKind::OfsDelta { distance }
        }
        REF_DELTA => {
            let raw = data.get(pos..pos + 20).ok_or(EntryError::Truncated)?;
            pos += 20;
            EntryKind::RefDelta {
                base: crate::ObjectId::from_bytes(raw).map_err(|_| EntryError::Truncated)?,
            }
        }
        other => {
            EntryKind::Base(ObjectKind::from_pack_code(other).ok_or(EntryError::BadType(other))?)
        }
    };
    Ok(EntryHeader {
        kind,
        size,
        header_len: pos,
    })
}

/// Encode a type+size header into `out`, returning its length (at most 10 bytes).
pub fn encode_type_size(code: u8, size: u64, out: &mut [u8; 16]) -> usize {
    let mut n = 0;
    let mut c = (code << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out[n] = c | 0x80;
        n += 1;
        c = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out[n] = c;
    n + 1
}

/// Encode an OFS_DELTA distance into `out`, returning its length.
pub fn encode_ofs_distance(distance: u64, out: &mut [u8; 16]) -> usize {
    let mut buf = [0u8; 16];
    let mut pos = buf.len() - 1;
    let mut d = distance;
    buf[pos] = (d & 0x7f) as u8;
    d >>= 7;
    while d != 0 {
        d -= 1;
        pos -= 1;
        buf[pos] = 0x80 | (d & 0x7f) as u8;
        d >>= 7;
    }
    let len = buf.len() - pos;
    out[..len].copy_from_slice(&buf[pos..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for size in [0u64, 15, 16, 1000, 1 << 30, u64::from(u32::MAX) * 7] {
            let mut out = [0u8; 16];
            let n = encode_type_size(3, size, &mut out);
            let h = decode_header(&out[..n]).unwrap();
            assert_eq!(h.size, size);
            assert_eq!(h.kind, EntryKind::Base(ObjectKind::Blob));
            assert_eq!(h.header_len, n);
        }
    }

    #[test]
    fn ofs_round_trip() {
        for distance in [1u64, 127, 128, 16511, 16512, 1 << 40] {
            let mut out = [0u8; 32];
            out[0] = (OFS_DELTA << 4) | 5;
            let mut enc = [0u8; 16];
            let n = encode_ofs_distance(distance, &mut enc);
            out[1..1 + n].copy_from_slice(&enc[..n]);
            let h = decode_header(&out).unwrap();
            assert_eq!(h.kind, EntryKind::OfsDelta { distance });
        }
    }
}
