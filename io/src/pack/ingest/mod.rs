//! Pack ingest: what `git index-pack --fix-thin --strict --stdin` does
//! for a push, and what checks a pack that a peer sends. It needs a pack
//! directory and the objects the repository already has ([`ObjectSource`]),
//! nothing else: no request, no executor.
//!
//! Bytes arrive in arbitrary chunks ([`Ingest::write`]), are appended to a
//! temporary file in the pack directory and parsed at once. Nothing holds
//! the whole pack; whole objects are held only where git holds them too:
//! commits, trees and tags for the checks, and delta bases while their
//! deltas are resolved. [`Ingest::finish`] then runs the phases in order,
//! one file each (the seams of gitoxide's gix-pack):
//!
//! - [`parse`]: the streaming entry parser, sans-IO (bytes in, entries out);
//! - `resolve`: delta resolution from the temporary file, on worker threads
//!   that ingest starts itself;
//! - `thin`: thin-pack completion from the repository's objects;
//! - `checks`: the object checks (fsck of each new object, every link
//!   resolvable, `.gitmodules`/`.gitattributes` contents), written once for
//!   streamed and resolved objects alike;
//! - `index`: the `.idx` written with the bytes git writes, both files
//!   fsynced, and [`IngestedPack::commit`] to give them their final names;
//! - `error`: [`IngestError`].
//!
//! Any error drops the temporary files; nothing else in the pack directory
//! changes until `commit`.

mod checks;
mod error;
mod index;
pub mod parse;
mod resolve;
mod thin;

pub use error::{IngestError, PackSection};
pub use index::IngestedPack;
pub use parse::{PackParser, ParsedPack, StreamedObject};

use crate::interrupt::Interrupt;
use crate::object::ObjectKind;
use crate::oid::ObjectId;
use checks::{ObjectChecks, PackObjects};
use error::io_err;
use index::TempFiles;
use resolve::Resolution;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Default largest pack accepted: 2 GiB (the push limit of large hosts).
pub const PACK_MAX_BYTES_DEFAULT: u64 = 2 << 30;
/// Default largest object (inflated): [`crate::limits::OBJECT_MAX_BYTES`].
/// A delta base of this size is held in memory while its deltas resolve.
pub const OBJECT_MAX_BYTES_DEFAULT: u64 = crate::limits::OBJECT_MAX_BYTES;
/// Default most objects in one pack. Each costs about 100 bytes of
/// bookkeeping during ingest.
pub const OBJECTS_MAX_DEFAULT: u32 = 4_000_000;
/// Default budget for cached delta bases, shared by the workers: 96 MiB,
/// git's `core.deltaBaseCacheLimit`.
pub const DELTA_CACHE_BYTES_DEFAULT: usize = 96 << 20;
/// Default deepest delta chain: [`crate::limits::DELTA_CHAIN_MAX_DEPTH`].
pub const DELTA_CHAIN_MAX_DEFAULT: u32 = crate::limits::DELTA_CHAIN_MAX_DEPTH;
/// Default worker threads for delta resolution (capped by the machine).
pub const THREADS_DEFAULT: usize = 2;
/// Default most distinct `.gitmodules`/`.gitattributes` objects one pack's
/// trees may name (each is remembered, 24 bytes, and read back for its
/// checks). Real histories name a few per directory that has one.
pub const SPECIAL_BLOBS_MAX_DEFAULT: usize = 100_000;

/// Default floor of the bytes one pack may inflate to (whole objects,
/// deltas and delta results, bases rebuilt after eviction included).
pub const INFLATED_FLOOR_BYTES_DEFAULT: u64 = 1 << 30;
/// Default most bytes one pack may inflate to per byte received, past the
/// floor: real packs inflate tens of times; a 686-byte pack whose delta
/// chain produces gigabytes does not get to.
pub const INFLATED_RATIO_MAX_DEFAULT: u64 = 1000;

/// Write buffer in front of the temporary pack file.
const WRITE_BUFFER_BYTES: usize = 256 << 10;

/// Objects the repository already has: thin-pack bases and link targets.
pub trait ObjectSource {
    /// True if the repository has `oid`.
    fn contains(&self, oid: &ObjectId) -> bool;
    /// The whole object (delta-resolved), or None if absent.
    fn read_object(&self, oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)>;
    /// The kind of `oid`, or None if absent. Stores should override this
    /// with a header-only lookup.
    fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        self.read_object(oid).map(|(kind, _)| kind)
    }
}

/// An empty repository.
pub struct NoObjects;

impl ObjectSource for NoObjects {
    fn contains(&self, _oid: &ObjectId) -> bool {
        false
    }
    fn read_object(&self, _oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)> {
        None
    }
}

/// Named limits of one ingest; every one is checked before the memory or
/// disk it guards is used.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest pack accepted, in bytes as received.
    pub pack_max_bytes: u64,
    /// Largest object (or delta) accepted, inflated.
    pub object_max_bytes: u64,
    /// Most objects a pack may declare.
    pub objects_max: u32,
    /// Budget for delta bases kept in memory during resolution (all workers).
    pub delta_cache_bytes: usize,
    /// Deepest delta chain accepted.
    pub delta_chain_max: u32,
    /// Worker threads for delta resolution (at least 1).
    pub threads: usize,
    /// Most distinct objects the pack's trees may name `.gitmodules` or
    /// `.gitattributes` (their contents are checked at the end).
    pub special_blobs_max: usize,
    /// Bytes the pack may always inflate to (see [`IngestLimits::inflated_limit`]).
    pub inflated_floor_bytes: u64,
    /// Bytes the pack may inflate to per byte of pack, past the floor.
    pub inflated_ratio_max: u64,
}

impl IngestLimits {
    /// The most bytes a pack of `pack_bytes` may inflate to, counting
    /// every inflated entry and every delta result (bases rebuilt after
    /// eviction too): the work ingest does is bounded by what was sent.
    pub fn inflated_limit(&self, pack_bytes: u64) -> u64 {
        self.inflated_floor_bytes
            .max(self.inflated_ratio_max.saturating_mul(pack_bytes))
    }
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            pack_max_bytes: PACK_MAX_BYTES_DEFAULT,
            object_max_bytes: OBJECT_MAX_BYTES_DEFAULT,
            objects_max: OBJECTS_MAX_DEFAULT,
            delta_cache_bytes: DELTA_CACHE_BYTES_DEFAULT,
            delta_chain_max: DELTA_CHAIN_MAX_DEFAULT,
            threads: THREADS_DEFAULT,
            special_blobs_max: SPECIAL_BLOBS_MAX_DEFAULT,
            inflated_floor_bytes: INFLATED_FLOOR_BYTES_DEFAULT,
            inflated_ratio_max: INFLATED_RATIO_MAX_DEFAULT,
        }
    }
}

/// Which checks `finish` runs on the new objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Run git's fsck checks on every object (`receive.fsckObjects`).
    pub strict: bool,
    /// Every object a new object points at must be in the pack or the
    /// repository, with the kind the pointer says.
    pub check_links: bool,
}

/// Measurements of one ingest, for tests and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestStats {
    /// Largest single object buffer allocated (bytes). Blobs that are not
    /// delta bases stream through fixed buffers and do not count.
    pub largest_object_buffer_bytes: u64,
    /// Deltas resolved.
    pub deltas: u32,
    /// Whole objects appended to complete a thin pack.
    pub thin_bases_appended: u32,
}

impl CheckOptions {
    /// Every check. Whole objects are checked as they stream past, before
    /// `finish` says which checks are wanted; `finish` uses only those.
    const ALL: CheckOptions = CheckOptions {
        strict: true,
        check_links: true,
    };
}

/// A pack being received. See the module documentation.
pub struct Ingest {
    limits: IngestLimits,
    dir: PathBuf,
    temp: TempFiles,
    out: BufWriter<File>,
    parser: PackParser,
    /// The checks of the whole objects that streamed past.
    streamed: ObjectChecks,
    failed: bool,
    /// When to give up resolving (the push's client left, or its budget ran out).
    interrupt: Interrupt,
}

impl Ingest {
    /// Start receiving a pack into a new temporary file `pack_dir/tmp_pack_<random>`.
    pub fn new(pack_dir: &Path, limits: IngestLimits) -> Result<Ingest, IngestError> {
        let (file, temp) = index::create_temp_pack(pack_dir)?;
        Ok(Ingest {
            dir: pack_dir.to_path_buf(),
            temp,
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            parser: PackParser::new(&limits),
            streamed: ObjectChecks::new(CheckOptions::ALL, limits.special_blobs_max),
            limits,
            failed: false,
            interrupt: Interrupt::default(),
        })
    }

    /// Stop [`Ingest::finish`] with [`IngestError::Interrupted`] once
    /// `interrupt` is set (checked between deltas).
    pub fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    /// Path of the temporary pack file.
    pub fn temp_path(&self) -> &Path {
        &self.temp.pack
    }

    /// Bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.parser.received_bytes()
    }

    /// Feed the next bytes of the pack; chunks may split anywhere. They
    /// are parsed first (so a chunk over the size limit is never written),
    /// then appended to the temporary file.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        if self.failed {
            return Err(IngestError::AlreadyFailed);
        }
        let streamed = &mut self.streamed;
        let result = self
            .parser
            .feed(chunk, |o| streamed.check(o.offset, o.oid, o.kind, o.data))
            .and_then(|()| {
                self.out
                    .write_all(chunk)
                    .map_err(io_err("writing the temporary pack"))
            });
        self.failed = result.is_err();
        result
    }

    /// End of input: verify the pack ended cleanly, resolve deltas,
    /// complete a thin pack from `repo`, run `checks`, write the index.
    pub fn finish(
        self,
        repo: &dyn ObjectSource,
        checks: &CheckOptions,
    ) -> Result<IngestedPack, IngestError> {
        if self.failed {
            return Err(IngestError::AlreadyFailed);
        }
        let parsed = self.parser.finish()?;
        let (trailer, end) = (parsed.trailer, parsed.end);
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err("writing the temporary pack")(e.into_error()))?;

        let mut resolution =
            Resolution::new(&file, parsed, &self.limits, *checks, self.interrupt.clone());
        resolution.resolve_in_pack()?;
        let appended = thin::complete(&mut resolution, repo, end)?;
        let mut objects = resolution.finish()?;
        let checksum = match appended.count {
            0 => trailer,
            _ => thin::rewrite_header_and_trailer(&file, objects.count(), appended.end)?,
        };

        let mut passes = std::mem::take(&mut objects.passes);
        passes.push(self.streamed);
        let pack = PackObjects::new(&file, &objects.entries, &objects.resolved, &self.limits)?;
        checks::run(checks, passes, &pack, repo)?;

        let index = index::write_index(&self.temp, &file, &objects, &checksum)?;
        Ok(IngestedPack {
            dir: self.dir,
            temp: self.temp,
            file,
            checksum,
            index,
            stats: objects.stats(appended.count),
            entries: objects.entries,
            resolved: objects.resolved,
            limits: self.limits,
        })
    }
}
