//! The git pack format (v2) and pack index v2.

pub mod entry;
pub mod idx;
pub mod ingest;
pub mod repack;
pub mod write;

/// Pack file signature.
pub const PACK_SIGNATURE: &[u8; 4] = b"PACK";
/// The only pack version written (version 3 is read identically).
pub const PACK_VERSION: u32 = 2;
/// Bytes of the pack header: signature, version, object count.
pub const PACK_HEADER_BYTES: usize = 12;
/// Type code of an offset delta entry.
pub const OFS_DELTA: u8 = 6;
/// Type code of a reference delta entry.
pub const REF_DELTA: u8 = 7;
