//! guts-io: git objects and the storage engine.
//!
//! Everything about how a node keeps git data: object ids and headers, the
//! pack format (v2, OFS_DELTA and REF_DELTA) and pack index v2, streaming
//! pack ingest with push-time object checks, pack writing for upload-pack,
//! the per-repository object store and the durable ref store.
//!
//! Parsers are sans-IO: pure functions over byte slices, so they can be
//! fuzzed and benchmarked without a disk.

pub mod delta;
pub mod dma;
pub mod files;
pub mod fsck;
pub mod interrupt;
pub mod limits;
pub mod object;
pub mod oid;
pub mod pack;
pub mod refname;
pub mod refs;
pub mod store;
pub mod verify;
pub mod walk;

pub use object::ObjectKind;
pub use oid::{HashKind, ObjectId};
