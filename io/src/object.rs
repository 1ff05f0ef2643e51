//! Object kinds, loose object headers, object hashing and the parsing of
//! commits, trees and tags needed for object walks.
//!
//! Parsers here are lenient about what they do not need (they are used on
//! objects already accepted into the store); strict validation of incoming
//! objects lives in `fsck`.

use crate::oid::ObjectId;
use sha1::Digest;

/// The four git object kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl ObjectKind {
    /// The type code used in pack entry headers (1..=4).
    pub const fn pack_code(self) -> u8 {
        match self {
            ObjectKind::Commit => 1,
            ObjectKind::Tree => 2,
            ObjectKind::Blob => 3,
            ObjectKind::Tag => 4,
        }
    }

    /// Kind for a pack type code, if it names a whole object.
    pub const fn from_pack_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ObjectKind::Commit),
            2 => Some(ObjectKind::Tree),
            3 => Some(ObjectKind::Blob),
            4 => Some(ObjectKind::Tag),
            _ => None,
        }
    }

    /// The name used in loose headers and `git cat-file -t`.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
            ObjectKind::Tag => "tag",
        }
    }

    /// Parse a kind name as it appears in tag objects.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"commit" => Some(ObjectKind::Commit),
            b"tree" => Some(ObjectKind::Tree),
            b"blob" => Some(ObjectKind::Blob),
            b"tag" => Some(ObjectKind::Tag),
            _ => None,
        }
    }
}

/// Write the loose object header `"<kind> <size>\0"` into `out`, returning its length.
pub fn loose_header(kind: ObjectKind, size: u64, out: &mut [u8; 32]) -> usize {
    let mut n = 0;
    for b in kind.name().bytes() {
        out[n] = b;
        n += 1;
    }
    out[n] = b' ';
    n += 1;
    let mut digits = [0u8; 20];
    let mut d = 0;
    let mut v = size;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        out[n] = digits[d];
        n += 1;
    }
    out[n] = 0;
    n + 1
}

/// Hash of a whole object with plain SHA-1 (for data the node produced itself).
pub fn hash_object(kind: ObjectKind, data: &[u8]) -> ObjectId {
    let mut header = [0u8; 32];
    let n = loose_header(kind, data.len() as u64, &mut header);
    let mut h = sha1::Sha1::new();
    h.update(&header[..n]);
    h.update(data);
    ObjectId::from_sha1(h.finalize().into())
}

/// Errors from hashing untrusted object data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// SHA-1DC detected a collision attack in the object's bytes.
    #[error("SHA-1 collision attack detected in object (would be {0})")]
    Collision(ObjectId),
}

/// Streaming hasher for objects that came from clients or peers: SHA-1
/// with collision detection (SHA-1DC), as C git and hosting services use.
pub struct CheckedHasher {
    inner: sha1_checked::Sha1,
}

impl CheckedHasher {
    /// Start hashing an object of `kind` and exactly `size` bytes.
    pub fn new(kind: ObjectKind, size: u64) -> Self {
        let mut inner = sha1_checked::Sha1::new();
        let mut header = [0u8; 32];
        let n = loose_header(kind, size, &mut header);
        inner.update(&header[..n]);
        CheckedHasher { inner }
    }

    /// Feed object bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// Finish, failing if a collision attack was detected.
    pub fn finish(self) -> Result<ObjectId, HashError> {
        let result = self.inner.try_finalize();
        let oid = ObjectId::from_sha1((*result.hash()).into());
        if result.has_collision() {
            return Err(HashError::Collision(oid));
        }
        Ok(oid)
    }
}

/// Hash untrusted object data in one call (SHA-1DC).
pub fn hash_object_checked(kind: ObjectKind, data: &[u8]) -> Result<ObjectId, HashError> {
    let mut h = CheckedHasher::new(kind, data.len() as u64);
    h.update(data);
    h.finish()
}

/// Errors from parsing an object's body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed {kind} object: {reason}")]
    Malformed {
        kind: &'static str,
        reason: &'static str,
    },
}

fn malformed(kind: &'static str, reason: &'static str) -> ParseError {
    ParseError::Malformed { kind, reason }
}

/// The parts of a commit that object walks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time in seconds since the epoch (0 if unparsable).
    pub commit_time: i64,
}

/// Parse the header of a commit: tree, parents and committer time.
pub fn parse_commit(data: &[u8]) -> Result<CommitInfo, ParseError> {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().ok_or_else(|| malformed("commit", "empty"))?;
    let tree_hex = first
        .strip_prefix(b"tree ")
        .ok_or_else(|| malformed("commit", "missing tree line"))?;
    let tree = ObjectId::from_hex(tree_hex).map_err(|_| malformed("commit", "bad tree id"))?;
    let mut parents = Vec::new();
    let mut commit_time = 0;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"parent ") {
            parents
                .push(ObjectId::from_hex(hex).map_err(|_| malformed("commit", "bad parent id"))?);
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            commit_time = parse_ident_time(rest).unwrap_or(0);
        }
    }
    Ok(CommitInfo {
        tree,
        parents,
        commit_time,
    })
}

/// Parse the timestamp out of an identity line: `Name <email> 1234567890 +0000`.
pub fn parse_ident_time(ident: &[u8]) -> Option<i64> {
    let close = ident.iter().rposition(|b| *b == b'>')?;
    let rest = ident.get(close + 1..)?;
    let rest = std::str::from_utf8(rest).ok()?.trim_start();
    let secs = rest.split(' ').next()?;
    secs.parse().ok()
}

/// The parts of an annotated tag that walks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub object: ObjectId,
    pub target_kind: ObjectKind,
}

/// Parse the target of an annotated tag.
pub fn parse_tag(data: &[u8]) -> Result<TagInfo, ParseError> {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().ok_or_else(|| malformed("tag", "empty"))?;
    let hex = first
        .strip_prefix(b"object ")
        .ok_or_else(|| malformed("tag", "missing object line"))?;
    let object = ObjectId::from_hex(hex).map_err(|_| malformed("tag", "bad object id"))?;
    let second = lines
        .next()
        .ok_or_else(|| malformed("tag", "missing type line"))?;
    let kind = second
        .strip_prefix(b"type ")
        .ok_or_else(|| malformed("tag", "missing type line"))?;
    let target_kind =
        ObjectKind::from_name(kind).ok_or_else(|| malformed("tag", "unknown type"))?;
    Ok(TagInfo {
        object,
        target_kind,
    })
}

/// One entry of a tree object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    /// Octal mode as written (e.g. 100644, 40000, 120000, 160000).
    pub mode: u32,
    pub name: &'a [u8],
    pub oid: ObjectId,
}

impl TreeEntry<'_> {
    /// True for subtrees.
    pub fn is_tree(&self) -> bool {
        self.mode == 0o40000
    }
    /// True for gitlinks (submodule commits, never present in this repository).
    pub fn is_gitlink(&self) -> bool {
        self.mode == 0o160000
    }
}

/// Iterator over tree entries; yields an error once and stops on malformed data.
pub struct TreeIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterate the entries of a tree object.
pub fn tree_entries(data: &[u8]) -> TreeIter<'_> {
    TreeIter {
        rest: data,
        failed: false,
    }
}

impl<'a> Iterator for TreeIter<'a> {
    type Item = Result<TreeEntry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let parsed = (|| {
            let sp = self.rest.iter().position(|b| *b == b' ')?;
            let mode_bytes = &self.rest[..sp];
            if mode_bytes.is_empty() || mode_bytes.len() > 7 {
                return None;
            }
            let mut mode = 0u32;
            for b in mode_bytes {
                if !(b'0'..=b'7').contains(b) {
                    return None;
                }
                mode = mode * 8 + u32::from(b - b'0');
            }
            let after = &self.rest[sp + 1..];
            let nul = after.iter().position(|b| *b == 0)?;
            let name = &after[..nul];
            let id = after.get(nul + 1..nul + 21)?;
            let oid = ObjectId::from_bytes(id).ok()?;
            let consumed = sp + 1 + nul + 21;
            Some((TreeEntry { mode, name, oid }, consumed))
        })();
        match parsed {
            Some((entry, consumed)) => {
                self.rest = &self.rest[consumed..];
                Some(Ok(entry))
            }
            None => {
                self.failed = true;
                Some(Err(malformed("tree", "truncated or malformed entry")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tree_constant_is_the_hash_of_the_empty_tree() {
        assert_eq!(
            hash_object(ObjectKind::Tree, b""),
            crate::ObjectId::EMPTY_TREE_SHA1
        );
    }

    #[test]
    fn empty_blob_hash() {
        assert_eq!(
            hash_object(ObjectKind::Blob, b"").to_hex(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            hash_object_checked(ObjectKind::Blob, b"").unwrap().to_hex(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    #[test]
    fn commit_parse() {
        let c = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\nauthor A <a@b> 1700000000 +0000\ncommitter A <a@b> 1700000001 +0100\n\nmsg\n";
        let info = parse_commit(c).unwrap();
        assert_eq!(info.parents.len(), 1);
        assert_eq!(info.commit_time, 1700000001);
    }
}
