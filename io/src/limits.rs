//! Limits on the objects a repository holds, declared once for everything
//! that accepts or reads them: ingest refuses what the store could not read
//! back, and the store, the object walk and the ref advertisement give up
//! at the same points.

/// Largest object, inflated: 512 MiB, git's `core.bigFileThreshold`.
/// Ingest refuses larger objects (a delta base of this size is held in
/// memory while its deltas resolve) and the store inflates nothing larger.
/// Every object the store holds came through ingest, so the store's old
/// bound of 2 GiB only allowed what no push could bring.
pub const OBJECT_MAX_BYTES: u64 = 512 << 20;

/// Deepest delta chain: 4095, the deepest `git pack-objects` writes (it
/// caps `--depth` there). Ingest refuses deeper chains and the store takes
/// them for corrupt; the store's old bound of 10,000 was deeper than
/// anything ingest accepts or git writes.
pub const DELTA_CHAIN_MAX_DEPTH: u32 = 4095;

/// Longest chain of annotated tags (tags of tags) followed: 64. The walk
/// refuses longer chains and the ref advertisement peels as far; the
/// advertisement used to stop at 16, so a chain of 17 to 64 tags was
/// walked but advertised half peeled. (git itself has no bound.)
pub const TAG_CHAIN_MAX_DEPTH: usize = 64;
