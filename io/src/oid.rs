//! Object ids: the hash that names a git object.
//!
//! Only SHA-1 repositories exist today; the type carries its hash kind so
//! that SHA-256 repositories can be added without changing every caller.

use std::fmt;

/// Which hash function names the objects of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// 20-byte SHA-1 (git's default object format).
    Sha1,
}

impl HashKind {
    /// Length of a raw id in bytes.
    pub const fn len_bytes(self) -> usize {
        match self {
            HashKind::Sha1 => 20,
        }
    }

    /// Length of a hex id in characters.
    pub const fn len_hex(self) -> usize {
        self.len_bytes() * 2
    }
}

/// Errors from parsing an object id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidError {
    /// The input had the wrong length for any supported hash.
    #[error("object id has {got} bytes, expected {expected}")]
    BadLength { got: usize, expected: usize },
    /// The input was not lowercase/uppercase hexadecimal.
    #[error("object id is not hexadecimal: {0:?}")]
    NotHex(String),
}

/// A git object id. Ordering is bytewise, as in pack indexes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    bytes: [u8; 20],
}

impl ObjectId {
    /// The all-zero id git uses for "no object" (ref creation/deletion).
    pub const NULL_SHA1: ObjectId = ObjectId { bytes: [0; 20] };

    /// The empty tree (`4b825dc6…`), which git treats as present in every
    /// repository whether or not it is stored.
    pub const EMPTY_TREE_SHA1: ObjectId = ObjectId {
        bytes: [
            0x4b, 0x82, 0x5d, 0xc6, 0x42, 0xcb, 0x6e, 0xb9, 0xa0, 0x60, 0xe5, 0x4b, 0xf8, 0xd6,
            0x92, 0x88, 0xfb, 0xee, 0x49, 0x04,
        ],
    };

    /// Build an id from raw SHA-1 bytes.
    pub const fn from_sha1(bytes: [u8; 20]) -> Self {
        ObjectId { bytes }
    }

    /// Build an id from a raw byte slice of the right length.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, OidError> {
        let bytes: [u8; 20] = raw.try_into().map_err(|_| OidError::BadLength {
            got: raw.len(),
            expected: 20,
        })?;
        Ok(ObjectId { bytes })
    }

    /// Parse a 40-character hex id (either case).
    pub fn from_hex(hex: &[u8]) -> Result<Self, OidError> {
        if hex.len() != 40 {
            return Err(OidError::BadLength {
                got: hex.len(),
                expected: 40,
            });
        }
        let mut bytes = [0u8; 20];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]);
            let lo = hex_val(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => bytes[i] = (h << 4) | l,
                _ => return Err(OidError::NotHex(String::from_utf8_lossy(hex).into_owned())),
            }
        }
        Ok(ObjectId { bytes })
    }

    /// The hash kind of this id.
    pub const fn kind(&self) -> HashKind {
        HashKind::Sha1
    }

    /// Raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The first byte, used by pack index fan-out tables.
    pub fn first_byte(&self) -> u8 {
        self.bytes[0]
    }

    /// True for the all-zero id.
    pub fn is_null(&self) -> bool {
        self.bytes.iter().all(|b| *b == 0)
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(40);
        self.write_hex(&mut out);
        out
    }

    /// Append the lowercase hex form to `out`.
    pub fn write_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in self.bytes {
            out.push(DIGITS[(b >> 4) as usize] as char);
            out.push(DIGITS[(b & 0xf) as usize] as char);
        }
    }

    /// Lowercase hex form as bytes, without allocation.
    pub fn hex_bytes(&self) -> [u8; 40] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 40];
        for (i, b) in self.bytes.iter().enumerate() {
            out[2 * i] = DIGITS[(b >> 4) as usize];
            out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
        }
        out
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // hex_bytes is always ASCII
        f.write_str(std::str::from_utf8(&self.hex_bytes()).unwrap_or(""))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl std::str::FromStr for ObjectId {
    type Err = OidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectId::from_hex(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hex = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
        let oid = ObjectId::from_hex(hex.as_bytes()).unwrap();
        assert_eq!(oid.to_hex(), hex);
        assert_eq!(format!("{oid}"), hex);
        assert!(ObjectId::from_hex(b"zz9de29bb2d1d6434b8b29ae775ad8c2e48c5391").is_err());
        assert!(ObjectId::from_hex(b"e69d").is_err());
        assert!(ObjectId::NULL_SHA1.is_null());
    }
}
