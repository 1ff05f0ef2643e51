//! The errors of pack ingest: each names what was wrong, where in the pack,
//! and the limit it broke.

use crate::delta::DeltaError;
use crate::fsck::{FsckError, LinkParseError};
use crate::object::{HashError, ObjectKind};
use crate::oid::ObjectId;
use crate::pack::entry::EntryError;

/// Where in the pack the stream ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackSection {
    /// The 12-byte pack header.
    Header,
    /// An entry's type/size header.
    EntryHeader,
    /// An entry's zlib data.
    EntryData,
    /// The 20-byte trailer.
    Trailer,
}

/// Errors of pack ingest; each names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("I/O error while {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("not a pack: signature {found:02x?}")]
    NotAPack { found: [u8; 4] },
    #[error("unsupported pack version {version}")]
    UnsupportedVersion { version: u32 },
    #[error("pack declares {count} objects, the limit is {limit}")]
    TooManyObjects { count: u32, limit: u32 },
    #[error("pack exceeds the limit of {limit} bytes")]
    PackTooLarge { limit: u64 },
    #[error("pack truncated in {section:?} after {received} bytes")]
    Truncated { section: PackSection, received: u64 },
    #[error("bad entry header at offset {offset}: {source}")]
    BadEntryHeader {
        offset: u64,
        #[source]
        source: EntryError,
    },
    #[error("entry at offset {offset} declares {size} bytes, the limit is {limit}")]
    ObjectTooLarge { offset: u64, size: u64, limit: u64 },
    #[error("corrupt zlib data in entry at offset {offset}: {message}")]
    CorruptZlib { offset: u64, message: String },
    #[error("entry at offset {offset} inflates to {actual}{more} bytes, its header declares {declared}", more = if *.at_least { " or more" } else { "" })]
    SizeMismatch {
        offset: u64,
        declared: u64,
        actual: u64,
        at_least: bool,
    },
    #[error("pack checksum mismatch: trailer {found}, computed {computed}")]
    ChecksumMismatch { found: ObjectId, computed: ObjectId },
    #[error("pack header declares {declared} objects, but the pack ends after {found}")]
    ObjectCountTooLarge { declared: u32, found: u32 },
    #[error("pack header declares {declared} objects, but more entries follow them")]
    ObjectCountTooSmall { declared: u32 },
    #[error("data after the pack trailer")]
    TrailingData,
    #[error("OFS_DELTA at offset {offset} points {distance} bytes back, before the pack start")]
    OfsBaseOutOfRange { offset: u64, distance: u64 },
    #[error("OFS_DELTA at offset {offset} points to offset {base_offset}, which is not an entry")]
    OfsBaseNotEntry { offset: u64, base_offset: u64 },
    #[error("delta at offset {offset} needs base {base}, which is neither in the pack nor in the repository")]
    MissingBase { offset: u64, base: ObjectId },
    #[error("delta at offset {offset} is invalid: {source}")]
    BadDelta {
        offset: u64,
        #[source]
        source: DeltaError,
    },
    #[error("delta at offset {offset} is at depth {depth}, the limit is {limit}")]
    DeltaChainTooDeep { offset: u64, depth: u32, limit: u32 },
    #[error(
        "{count} deltas could not be resolved (cyclic or missing bases), first at offset {offset}"
    )]
    UnresolvedDeltas { count: usize, offset: u64 },
    #[error("object at offset {offset}: {source}")]
    Collision {
        offset: u64,
        #[source]
        source: HashError,
    },
    #[error("object {oid} appears twice in the pack")]
    DuplicateObject { oid: ObjectId },
    #[error("fsck: {0}")]
    Fsck(#[from] FsckError),
    #[error("the pack's trees name more than {limit} distinct .gitmodules/.gitattributes objects")]
    TooManySpecialBlobs { limit: usize },
    #[error("object {oid}: {source}")]
    Unparsable {
        oid: ObjectId,
        #[source]
        source: LinkParseError,
    },
    #[error(
        "object {from} points at {missing}, which is neither in the pack nor in the repository"
    )]
    MissingLink { from: ObjectId, missing: ObjectId },
    #[error("object {from} points at {oid} as a {expected}, but it is a {actual}", expected = .expected.name(), actual = .actual.name())]
    LinkKindMismatch {
        from: ObjectId,
        oid: ObjectId,
        expected: ObjectKind,
        actual: ObjectKind,
    },
    #[error("the pack inflates to more than {limit} bytes (objects, deltas and delta results; a pack of this size may inflate to at most this much)")]
    TooMuchInflation { limit: u64 },
    #[error("pack ingest stopped: the push ran out of time or its client went away")]
    Interrupted,
    #[error("ingest already failed")]
    AlreadyFailed,
}

/// Wrap an I/O error with what ingest was doing.
pub(super) fn io_err(context: &'static str) -> impl FnOnce(std::io::Error) -> IngestError {
    move |source| IngestError::Io { context, source }
}
