//! Streaming pack ingest: what `git index-pack --fix-thin --strict --stdin`
//! does for a push.
//!
//! Bytes arrive in arbitrary chunks ([`Ingest::write`]); each chunk is
//! appended to a temporary file in the pack directory and parsed at once:
//! entry headers, zlib streams (inflated into a fixed buffer), SHA-1DC of
//! every whole object, CRC-32 of every raw entry, the pack trailer. Nothing
//! holds the whole pack; whole objects are held only where git holds them
//! too: commits, trees and tags for the checks, and delta bases while their
//! deltas are resolved.
//!
//! [`Ingest::finish`] then resolves deltas from the temporary file with
//! positional reads, one delta tree (a whole object and everything built on
//! it) at a time per worker thread, with a bounded per-worker cache of base
//! data (evicted bases are rebuilt from the file, as git does). REF_DELTA
//! bases found only in the repository complete a thin pack: they are
//! appended as whole objects, the object count in the header is rewritten
//! and the trailer recomputed. Finally the checks run (fsck of each new
//! object, every link resolvable), the `.idx` is written with the same bytes
//! git writes, both files are fsynced, and the result waits, still under
//! temporary names, for [`IngestedPack::commit`].
//!
//! Any error drops the temporary files; nothing else in the pack directory
//! changes until `commit`.

use super::entry::{decode_header, encode_type_size, EntryError, EntryKind};
use super::idx::{write_idx, IdxEntry, PackIndex};
use super::{PACK_HEADER_BYTES, PACK_SIGNATURE};
use crate::delta::{apply_delta, delta_sizes, DeltaError};
use crate::fsck::{self, FsckError, FsckOptions, Link, LinkParseError, SpecialBlob, SpecialObject};
use crate::object::{hash_object_checked, CheckedHasher, HashError, ObjectKind};
use crate::oid::ObjectId;
use flate2::{Decompress, FlushDecompress, Status};
use sha1::Digest;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Default largest pack accepted: 2 GiB (the push limit of large hosts).
pub const PACK_MAX_BYTES_DEFAULT: u64 = 2 << 30;
/// Default largest object (inflated): 512 MiB, git's `core.bigFileThreshold`.
/// A delta base of this size is held in memory while its deltas resolve.
pub const OBJECT_MAX_BYTES_DEFAULT: u64 = 512 << 20;
/// Default most objects in one pack. Each costs about 100 bytes of
/// bookkeeping during ingest.
pub const OBJECTS_MAX_DEFAULT: u32 = 4_000_000;
/// Default budget for cached delta bases, shared by the workers: 96 MiB,
/// git's `core.deltaBaseCacheLimit`.
pub const DELTA_CACHE_BYTES_DEFAULT: usize = 96 << 20;
/// Default deepest delta chain: 4095, the deepest `pack-objects` writes.
pub const DELTA_CHAIN_MAX_DEFAULT: u32 = 4095;
/// Default worker threads for delta resolution (capped by the machine).
pub const THREADS_DEFAULT: usize = 2;
/// Default most distinct `.gitmodules`/`.gitattributes` objects one pack's
/// trees may name (each is remembered, 24 bytes, and read back for its
/// checks). Real histories name a few per directory that has one.
pub const SPECIAL_BLOBS_MAX_DEFAULT: usize = 100_000;

/// The empty tree, which git treats as present in every repository.
pub const EMPTY_TREE: ObjectId = ObjectId::from_sha1([
    0x4b, 0x82, 0x5d, 0xc6, 0x42, 0xcb, 0x6e, 0xb9, 0xa0, 0x60, 0xe5, 0x4b, 0xf8, 0xd6, 0x92, 0x88,
    0xfb, 0xee, 0x49, 0x04,
]);

/// Inflate output buffer used while streaming.
const INFLATE_BUFFER_BYTES: usize = 64 << 10;
/// Write buffer in front of the temporary pack file.
const WRITE_BUFFER_BYTES: usize = 256 << 10;
/// Read buffer for compressed entry data during resolution.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Longest entry header accepted (type+size varint, then an OFS varint or
/// a 20-byte REF id); real headers are at most 30 bytes.
const ENTRY_HEADER_MAX_BYTES: usize = 64;
/// Bytes of the pack trailer (SHA-1 of everything before it).
const TRAILER_BYTES: usize = 20;
/// Bytes of a delta's leading size header we keep while streaming.
const DELTA_HEAD_BYTES: usize = 20;

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
    #[error("ingest already failed")]
    AlreadyFailed,
}

fn io_err(context: &'static str) -> impl FnOnce(std::io::Error) -> IngestError {
    move |source| IngestError::Io { context, source }
}

/// What an entry holds.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// A whole object.
    Whole(ObjectKind),
    /// A delta against the entry with this index.
    Ofs(u32),
    /// A delta against the object with this id.
    Ref(ObjectId),
}

/// One entry of the pack, as recorded while streaming.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    /// Raw bytes of the entry (header + zlib data).
    packed_len: u64,
    header_len: u8,
    crc32: u32,
    /// Inflated size of the entry's data (object or delta).
    size: u64,
    base: Base,
}

/// An entry once its object is known.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    oid: ObjectId,
    kind: ObjectKind,
    depth: u32,
    /// Entry index of the delta base (u32::MAX for whole objects).
    base: u32,
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

/// The current entry while its bytes stream in.
struct CurrentEntry {
    offset: u64,
    header_len: u8,
    size: u64,
    base: Base,
    crc: crc32fast::Hasher,
    /// Pack checksum state at the start of the entry (to tell a short
    /// object count from a corrupt entry).
    pack_hash_at_start: sha1::Sha1,
    /// SHA-1DC of a whole object.
    hasher: Option<CheckedHasher>,
    /// Contents of a whole commit, tree or tag, for the checks.
    data: Option<Vec<u8>>,
    delta_head: [u8; DELTA_HEAD_BYTES],
    delta_head_len: usize,
    inflated: u64,
}

enum State {
    Header {
        buf: [u8; PACK_HEADER_BYTES],
        len: usize,
    },
    EntryHeader {
        buf: [u8; ENTRY_HEADER_MAX_BYTES],
        len: usize,
        pack_hash_at_start: Box<sha1::Sha1>,
    },
    EntryData(Box<CurrentEntry>),
    Trailer {
        buf: [u8; TRAILER_BYTES],
        len: usize,
    },
    /// Trailer verified.
    Done,
    /// The 20 bytes after the last entry are not its checksum; if more
    /// bytes follow, the header's object count is too small.
    BadTrailer {
        found: [u8; 20],
        computed: [u8; 20],
    },
    /// An entry failed; wait for 20 bytes from its start to tell whether
    /// it is really the trailer (object count too large).
    EntryFailed {
        error: Box<IngestError>,
        entry_offset: u64,
        pack_hash: Box<sha1::Sha1>,
    },
    Failed,
}

/// Temporary files removed on drop unless disarmed.
struct TempFiles {
    pack: PathBuf,
    idx: PathBuf,
    armed: bool,
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.pack);
            let _ = std::fs::remove_file(&self.idx);
        }
    }
}

/// Results of checks run while streaming.
#[derive(Default)]
struct Checks {
    /// First fsck failure (entries stream in offset order).
    fsck: Option<(u64, FsckError)>,
    /// First object whose links could not be parsed.
    unparsable: Option<(u64, IngestError)>,
    /// Each link once, with the first object that points along it.
    links: HashMap<Link, ObjectId>,
    /// Objects trees name `.gitmodules`/`.gitattributes` (git's
    /// `gitmodules_found`), checked at the end.
    special: SpecialBlobs,
}

/// Objects named `.gitmodules`/`.gitattributes`, each once, at most
/// `IngestLimits::special_blobs_max` of them.
#[derive(Default)]
struct SpecialBlobs {
    set: HashSet<SpecialBlob>,
    /// More were named than the limit allows.
    overflow: bool,
}

impl SpecialBlobs {
    /// Move what `scratch` holds into the set.
    fn remember(&mut self, scratch: &mut Vec<SpecialBlob>, max: usize) {
        for special in scratch.drain(..) {
            if self.set.len() < max || self.set.contains(&special) {
                self.set.insert(special);
            } else {
                self.overflow = true;
            }
        }
    }

    fn merge(&mut self, other: SpecialBlobs, max: usize) {
        self.overflow |= other.overflow;
        self.remember(&mut other.set.into_iter().collect(), max);
    }
}

/// A pack being received. See the module documentation.
pub struct Ingest {
    limits: IngestLimits,
    dir: PathBuf,
    temp: TempFiles,
    out: BufWriter<File>,
    received: u64,
    state: State,
    /// SHA-1 of the bytes before the trailer, fed as they are parsed.
    pack_hash: sha1::Sha1,
    /// Bytes fed to `pack_hash` (the offset of the next entry or the trailer).
    consumed: u64,
    /// The received trailer, once verified.
    trailer: [u8; 20],
    declared_objects: u32,
    entries: Vec<Entry>,
    resolved: Vec<Option<Resolved>>,
    inflate: Decompress,
    inflate_buf: Vec<u8>,
    checks: Checks,
    link_scratch: Vec<Link>,
    special_scratch: Vec<SpecialBlob>,
    largest_buffer: u64,
}

fn random_suffix() -> String {
    let mut raw = [0u8; 8];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .is_ok();
    if !ok {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mix =
            nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        raw = mix.to_le_bytes();
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ingest {
    /// Start receiving a pack into a new temporary file `pack_dir/tmp_pack_<random>`.
    pub fn new(pack_dir: &Path, limits: IngestLimits) -> Result<Ingest, IngestError> {
        let mut attempts = 0;
        let (file, temp) = loop {
            let suffix = random_suffix();
            let pack = pack_dir.join(format!("tmp_pack_{suffix}"));
            let idx = pack_dir.join(format!("tmp_idx_{suffix}"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&pack)
            {
                Ok(file) => {
                    break (
                        file,
                        TempFiles {
                            pack,
                            idx,
                            armed: true,
                        },
                    )
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                    attempts += 1
                }
                Err(e) => return Err(io_err("creating the temporary pack")(e)),
            }
        };
        Ok(Ingest {
            limits,
            dir: pack_dir.to_path_buf(),
            temp,
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            received: 0,
            state: State::Header {
                buf: [0; PACK_HEADER_BYTES],
                len: 0,
            },
            pack_hash: sha1::Sha1::new(),
            consumed: 0,
            trailer: [0; 20],
            declared_objects: 0,
            entries: Vec::new(),
            resolved: Vec::new(),
            inflate: Decompress::new(true),
            inflate_buf: vec![0; INFLATE_BUFFER_BYTES],
            checks: Checks::default(),
            link_scratch: Vec::new(),
            special_scratch: Vec::new(),
            largest_buffer: 0,
        })
    }

    /// Path of the temporary pack file.
    pub fn temp_path(&self) -> &Path {
        &self.temp.pack
    }

    /// Bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// Feed the next bytes of the pack; chunks may split anywhere.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        if matches!(self.state, State::Failed) {
            return Err(IngestError::AlreadyFailed);
        }
        let result = self.write_inner(chunk);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn write_inner(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        let total = self.received + chunk.len() as u64;
        if total > self.limits.pack_max_bytes {
            return Err(IngestError::PackTooLarge {
                limit: self.limits.pack_max_bytes,
            });
        }
        self.out
            .write_all(chunk)
            .map_err(io_err("writing the temporary pack"))?;
        self.received = total;
        self.parse(chunk)
    }

    fn parse(&mut self, mut input: &[u8]) -> Result<(), IngestError> {
        loop {
            match &mut self.state {
                State::EntryFailed { entry_offset, .. } => {
                    if self.received >= *entry_offset + TRAILER_BYTES as u64 {
                        return Err(self.resolve_entry_failure()?);
                    }
                    return Ok(());
                }
                State::Failed => return Err(IngestError::AlreadyFailed),
                State::Header { .. }
                | State::EntryHeader { .. }
                | State::Trailer { .. }
                | State::Done
                | State::BadTrailer { .. }
                    if input.is_empty() =>
                {
                    return Ok(())
                }
                State::Header { buf, len } => {
                    let take = (PACK_HEADER_BYTES - *len).min(input.len());
                    buf[*len..*len + take].copy_from_slice(&input[..take]);
                    *len += take;
                    input = &input[take..];
                    if *len < PACK_HEADER_BYTES {
                        continue;
                    }
                    let header = *buf;
                    self.pack_hash.update(header);
                    self.consumed = PACK_HEADER_BYTES as u64;
                    self.start_pack(&header)?;
                }
                State::EntryHeader {
                    buf,
                    len,
                    pack_hash_at_start,
                } => {
                    let old_len = *len;
                    let take = (ENTRY_HEADER_MAX_BYTES - old_len).min(input.len());
                    buf[old_len..old_len + take].copy_from_slice(&input[..take]);
                    *len += take;
                    match decode_header(&buf[..*len]) {
                        Ok(header) => {
                            let used = header.header_len - old_len;
                            input = &input[used..];
                            let raw = *buf;
                            let at_start =
                                std::mem::replace(pack_hash_at_start, Box::new(sha1::Sha1::new()));
                            self.start_entry(&raw[..header.header_len], header, at_start)?;
                        }
                        Err(EntryError::Truncated) if *len < ENTRY_HEADER_MAX_BYTES => {
                            input = &input[take..];
                        }
                        Err(source) => {
                            let at_start =
                                std::mem::replace(pack_hash_at_start, Box::new(sha1::Sha1::new()));
                            let offset = self.consumed;
                            self.entry_failed(
                                IngestError::BadEntryHeader { offset, source },
                                offset,
                                at_start,
                            );
                        }
                    }
                }
                State::EntryData(_) => {
                    let (consumed, more_output) = self.inflate_step(input)?;
                    input = &input[consumed..];
                    if input.is_empty() && !more_output && matches!(self.state, State::EntryData(_))
                    {
                        return Ok(());
                    }
                }
                State::Trailer { buf, len } => {
                    let take = (TRAILER_BYTES - *len).min(input.len());
                    buf[*len..*len + take].copy_from_slice(&input[..take]);
                    *len += take;
                    input = &input[take..];
                    if *len < TRAILER_BYTES {
                        continue;
                    }
                    let found = *buf;
                    let computed: [u8; 20] = self.pack_hash.clone().finalize().into();
                    self.state = if found == computed {
                        self.trailer = found;
                        State::Done
                    } else {
                        State::BadTrailer { found, computed }
                    };
                }
                State::Done => return Err(IngestError::TrailingData),
                State::BadTrailer { .. } => {
                    return Err(IngestError::ObjectCountTooSmall {
                        declared: self.declared_objects,
                    })
                }
            }
        }
    }
}

impl Ingest {
    fn start_pack(&mut self, header: &[u8; PACK_HEADER_BYTES]) -> Result<(), IngestError> {
        let mut signature = [0u8; 4];
        signature.copy_from_slice(&header[..4]);
        if &signature != PACK_SIGNATURE {
            return Err(IngestError::NotAPack { found: signature });
        }
        let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if version != 2 && version != 3 {
            return Err(IngestError::UnsupportedVersion { version });
        }
        let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if count > self.limits.objects_max {
            return Err(IngestError::TooManyObjects {
                count,
                limit: self.limits.objects_max,
            });
        }
        self.declared_objects = count;
        let reserve = count.min(1 << 16) as usize;
        self.entries.reserve(reserve);
        self.resolved.reserve(reserve);
        self.next_entry_or_trailer();
        Ok(())
    }

    fn next_entry_or_trailer(&mut self) {
        self.state = if self.entries.len() as u64 == u64::from(self.declared_objects) {
            State::Trailer {
                buf: [0; TRAILER_BYTES],
                len: 0,
            }
        } else {
            State::EntryHeader {
                buf: [0; ENTRY_HEADER_MAX_BYTES],
                len: 0,
                pack_hash_at_start: Box::new(self.pack_hash.clone()),
            }
        };
    }

    fn entry_failed(&mut self, error: IngestError, entry_offset: u64, pack_hash: Box<sha1::Sha1>) {
        self.state = State::EntryFailed {
            error: Box::new(error),
            entry_offset,
            pack_hash,
        };
    }

    /// True if the 20 bytes at `offset` are the checksum of everything
    /// before them, i.e. the pack ended where the header promised more.
    fn is_trailer_at(&mut self, offset: u64, pack_hash: &sha1::Sha1) -> Result<bool, IngestError> {
        if self.received < offset + TRAILER_BYTES as u64 {
            return Ok(false);
        }
        self.out
            .flush()
            .map_err(io_err("writing the temporary pack"))?;
        let mut found = [0u8; TRAILER_BYTES];
        self.out
            .get_ref()
            .read_exact_at(&mut found, offset)
            .map_err(io_err("reading the temporary pack"))?;
        let computed: [u8; 20] = pack_hash.clone().finalize().into();
        Ok(found == computed)
    }

    /// The error to report for a failed entry (see `State::EntryFailed`).
    fn resolve_entry_failure(&mut self) -> Result<IngestError, IngestError> {
        let State::EntryFailed {
            error,
            entry_offset,
            pack_hash,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Ok(IngestError::AlreadyFailed);
        };
        if self.is_trailer_at(entry_offset, &pack_hash)? {
            return Ok(IngestError::ObjectCountTooLarge {
                declared: self.declared_objects,
                found: self.entries.len() as u32,
            });
        }
        Ok(*error)
    }

    fn start_entry(
        &mut self,
        raw: &[u8],
        header: super::entry::EntryHeader,
        at_start: Box<sha1::Sha1>,
    ) -> Result<(), IngestError> {
        let offset = self.consumed;
        self.pack_hash.update(raw);
        self.consumed += raw.len() as u64;
        let mut crc = crc32fast::Hasher::new();
        crc.update(raw);
        if header.size > self.limits.object_max_bytes {
            let error = IngestError::ObjectTooLarge {
                offset,
                size: header.size,
                limit: self.limits.object_max_bytes,
            };
            self.entry_failed(error, offset, at_start);
            return Ok(());
        }
        let base = match header.kind {
            EntryKind::Base(kind) => Base::Whole(kind),
            EntryKind::RefDelta { base } => Base::Ref(base),
            EntryKind::OfsDelta { distance } => {
                if distance == 0 || distance > offset {
                    self.entry_failed(
                        IngestError::OfsBaseOutOfRange { offset, distance },
                        offset,
                        at_start,
                    );
                    return Ok(());
                }
                let base_offset = offset - distance;
                match self
                    .entries
                    .binary_search_by_key(&base_offset, |e| e.offset)
                {
                    Ok(i) => Base::Ofs(i as u32),
                    Err(_) => {
                        self.entry_failed(
                            IngestError::OfsBaseNotEntry {
                                offset,
                                base_offset,
                            },
                            offset,
                            at_start,
                        );
                        return Ok(());
                    }
                }
            }
        };
        let (hasher, data) = match base {
            Base::Whole(kind) => {
                let data = (kind != ObjectKind::Blob).then(|| {
                    Vec::with_capacity(header.size.min(INFLATE_BUFFER_BYTES as u64) as usize)
                });
                (Some(CheckedHasher::new(kind, header.size)), data)
            }
            _ => (None, None),
        };
        self.inflate.reset(true);
        self.state = State::EntryData(Box::new(CurrentEntry {
            offset,
            header_len: raw.len() as u8,
            size: header.size,
            base,
            crc,
            pack_hash_at_start: *at_start,
            hasher,
            data,
            delta_head: [0; DELTA_HEAD_BYTES],
            delta_head_len: 0,
            inflated: 0,
        }));
        Ok(())
    }

    /// Inflate what `input` holds of the current entry. Returns the input
    /// bytes consumed and whether zlib may have more output pending.
    fn inflate_step(&mut self, input: &[u8]) -> Result<(usize, bool), IngestError> {
        let State::EntryData(cur) = &mut self.state else {
            return Ok((0, false));
        };
        let before_in = self.inflate.total_in();
        let before_out = self.inflate.total_out();
        let status = self
            .inflate
            .decompress(input, &mut self.inflate_buf, FlushDecompress::None);
        let consumed = (self.inflate.total_in() - before_in) as usize;
        let produced = (self.inflate.total_out() - before_out) as usize;
        cur.crc.update(&input[..consumed]);
        self.pack_hash.update(&input[..consumed]);
        self.consumed += consumed as u64;
        let offset = cur.offset;
        // size first: zlib output before an error does not depend on how
        // the input was chunked, so neither does the reported error
        let failure = match status {
            _ if cur.inflated + produced as u64 > cur.size => Some(IngestError::SizeMismatch {
                offset,
                declared: cur.size,
                actual: cur.inflated + produced as u64,
                at_least: true,
            }),
            Err(ref e) => Some(IngestError::CorruptZlib {
                offset,
                message: e.to_string(),
            }),
            Ok(Status::StreamEnd) if cur.inflated + produced as u64 != cur.size => {
                Some(IngestError::SizeMismatch {
                    offset,
                    declared: cur.size,
                    actual: cur.inflated + produced as u64,
                    at_least: false,
                })
            }
            Ok(_) if consumed == 0 && produced == 0 && !input.is_empty() => {
                Some(IngestError::CorruptZlib {
                    offset,
                    message: "inflate made no progress".into(),
                })
            }
            Ok(_) => None,
        };
        if let Some(error) = failure {
            let State::EntryData(cur) = std::mem::replace(&mut self.state, State::Failed) else {
                return Err(error);
            };
            self.entry_failed(error, cur.offset, Box::new(cur.pack_hash_at_start));
            return Ok((consumed, false));
        }
        let out = &self.inflate_buf[..produced];
        cur.inflated += produced as u64;
        if let Some(h) = &mut cur.hasher {
            h.update(out);
        }
        if let Some(d) = &mut cur.data {
            d.extend_from_slice(out);
        }
        if cur.hasher.is_none() && cur.delta_head_len < DELTA_HEAD_BYTES {
            let take = (DELTA_HEAD_BYTES - cur.delta_head_len).min(out.len());
            cur.delta_head[cur.delta_head_len..cur.delta_head_len + take]
                .copy_from_slice(&out[..take]);
            cur.delta_head_len += take;
        }
        if let Ok(Status::StreamEnd) = status {
            self.finish_entry()?;
            return Ok((consumed, false));
        }
        Ok((consumed, produced == self.inflate_buf.len()))
    }

    fn finish_entry(&mut self) -> Result<(), IngestError> {
        let State::EntryData(cur) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(IngestError::AlreadyFailed);
        };
        let cur = *cur;
        let offset = cur.offset;
        let resolved = match cur.base {
            Base::Whole(kind) => {
                let hasher = cur.hasher.ok_or(IngestError::AlreadyFailed)?;
                let oid = hasher
                    .finish()
                    .map_err(|source| IngestError::Collision { offset, source })?;
                if let Some(data) = cur.data {
                    self.largest_buffer = self.largest_buffer.max(data.capacity() as u64);
                    self.check_streamed(offset, oid, kind, &data);
                }
                Some(Resolved {
                    oid,
                    kind,
                    depth: 0,
                    base: u32::MAX,
                })
            }
            Base::Ofs(_) | Base::Ref(_) => {
                let (_, result_size) = delta_sizes(&cur.delta_head[..cur.delta_head_len])
                    .map_err(|source| IngestError::BadDelta { offset, source })?;
                if result_size > self.limits.object_max_bytes {
                    return Err(IngestError::ObjectTooLarge {
                        offset,
                        size: result_size,
                        limit: self.limits.object_max_bytes,
                    });
                }
                None
            }
        };
        self.entries.push(Entry {
            offset,
            packed_len: self.consumed - offset,
            header_len: cur.header_len,
            crc32: cur.crc.finalize(),
            size: cur.size,
            base: cur.base,
        });
        self.resolved.push(resolved);
        self.next_entry_or_trailer();
        Ok(())
    }

    /// fsck and links of a whole commit, tree or tag as it streams past.
    /// (The options arrive only with `finish`, so this always runs; the
    /// results are used only if asked for.)
    fn check_streamed(&mut self, offset: u64, oid: ObjectId, kind: ObjectKind, data: &[u8]) {
        if self.checks.fsck.is_none() {
            if let Err(e) = fsck::check_object_collecting(
                &oid,
                kind,
                data,
                &FsckOptions::default(),
                &mut self.special_scratch,
            ) {
                self.checks.fsck = Some((offset, e));
            }
            self.checks
                .special
                .remember(&mut self.special_scratch, self.limits.special_blobs_max);
        }
        self.link_scratch.clear();
        match fsck::object_links(kind, data, &mut self.link_scratch) {
            Ok(()) => {
                for link in self.link_scratch.drain(..) {
                    self.checks.links.entry(link).or_insert(oid);
                }
            }
            Err(source) => {
                if self.checks.unparsable.is_none() {
                    self.checks.unparsable =
                        Some((offset, IngestError::Unparsable { oid, source }));
                }
            }
        }
    }

    /// End of input: verify the pack ended cleanly, resolve deltas,
    /// complete a thin pack from `repo`, run `checks`, write the index.
    pub fn finish(
        mut self,
        repo: &dyn ObjectSource,
        checks: &CheckOptions,
    ) -> Result<IngestedPack, IngestError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Done => {}
            State::BadTrailer { found, computed } => {
                return Err(IngestError::ChecksumMismatch {
                    found: ObjectId::from_sha1(found),
                    computed: ObjectId::from_sha1(computed),
                })
            }
            State::Header { .. } => {
                return Err(IngestError::Truncated {
                    section: PackSection::Header,
                    received: self.received,
                })
            }
            State::Trailer { .. } => {
                return Err(IngestError::Truncated {
                    section: PackSection::Trailer,
                    received: self.received,
                })
            }
            State::EntryHeader {
                pack_hash_at_start, ..
            } => {
                let offset = self.consumed;
                return Err(self.truncated_entry(
                    offset,
                    &pack_hash_at_start,
                    PackSection::EntryHeader,
                )?);
            }
            State::EntryData(cur) => {
                return Err(self.truncated_entry(
                    cur.offset,
                    &cur.pack_hash_at_start,
                    PackSection::EntryData,
                )?);
            }
            failed @ State::EntryFailed { .. } => {
                self.state = failed;
                return Err(self.resolve_entry_failure()?);
            }
            State::Failed => return Err(IngestError::AlreadyFailed),
        }
        let Ingest {
            limits,
            dir,
            temp,
            out,
            received,
            trailer,
            entries,
            resolved,
            checks: streamed,
            largest_buffer,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| io_err("writing the temporary pack")(e.into_error()))?;
        debug_assert_eq!(entries.len(), resolved.len());
        let mut resolution =
            Resolution::new(&file, entries, resolved, &limits, *checks, largest_buffer);
        resolution.resolve_in_pack()?;
        let pack_end = received - TRAILER_BYTES as u64;
        let appended = resolution.complete_thin(repo, pack_end)?;
        resolution.all_resolved()?;
        let checksum = if appended.count > 0 {
            rewrite_header_and_trailer(&file, resolution.entries.len() as u32, appended.end)?
        } else {
            trailer
        };
        let stats = IngestStats {
            largest_object_buffer_bytes: resolution.largest.load(Ordering::Relaxed),
            deltas: resolution.deltas.load(Ordering::Relaxed) as u32,
            thin_bases_appended: appended.count,
        };
        let Resolution {
            entries,
            results,
            outcomes,
            ..
        } = resolution;
        let resolved: Vec<Resolved> = results
            .into_iter()
            .map(|r| r.into_inner().ok_or(IngestError::AlreadyFailed))
            .collect::<Result<_, _>>()?;

        // one id per object
        let mut by_oid: Vec<(ObjectId, u32)> = resolved
            .iter()
            .enumerate()
            .map(|(i, r)| (r.oid, i as u32))
            .collect();
        by_oid.sort_unstable();
        if let Some(w) = by_oid.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(IngestError::DuplicateObject { oid: w[0].0 });
        }

        let pack = PackObjects {
            file: &file,
            entries: &entries,
            resolved: &resolved,
            by_oid: &by_oid,
            limits: &limits,
        };
        run_checks(checks, streamed, outcomes, &pack, repo)?;

        let mut idx_entries: Vec<IdxEntry> = entries
            .iter()
            .zip(&resolved)
            .map(|(e, r)| IdxEntry {
                oid: r.oid,
                crc32: e.crc32,
                offset: e.offset,
            })
            .collect();
        let idx_bytes = write_idx(&mut idx_entries, &checksum);
        let mut idx_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.idx)
            .map_err(io_err("creating the temporary index"))?;
        idx_file
            .write_all(&idx_bytes)
            .map_err(io_err("writing the temporary index"))?;
        idx_file
            .sync_all()
            .map_err(io_err("syncing the temporary index"))?;
        file.sync_all()
            .map_err(io_err("syncing the temporary pack"))?;
        let index = PackIndex::parse(bytes::Bytes::from(idx_bytes), false)
            .map_err(|e| io_err("parsing the written index")(std::io::Error::other(e)))?;
        Ok(IngestedPack {
            dir,
            temp,
            file,
            checksum,
            index,
            entries,
            resolved,
            limits,
            stats,
        })
    }

    fn truncated_entry(
        &mut self,
        offset: u64,
        pack_hash: &sha1::Sha1,
        section: PackSection,
    ) -> Result<IngestError, IngestError> {
        if self.received == offset + TRAILER_BYTES as u64
            && self.is_trailer_at(offset, pack_hash)?
        {
            return Ok(IngestError::ObjectCountTooLarge {
                declared: self.declared_objects,
                found: self.entries.len() as u32,
            });
        }
        Ok(IngestError::Truncated {
            section,
            received: self.received,
        })
    }
}

/// Rewrite the object count and the trailer after thin completion; returns
/// the new checksum.
fn rewrite_header_and_trailer(
    file: &File,
    objects: u32,
    end: u64,
) -> Result<[u8; 20], IngestError> {
    const HASH_READ_BUFFER_BYTES: usize = 1 << 20;
    file.write_all_at(&objects.to_be_bytes(), 8)
        .map_err(io_err("rewriting the pack header"))?;
    let mut hash = sha1::Sha1::new();
    let mut buf = vec![0u8; HASH_READ_BUFFER_BYTES];
    let mut pos = 0u64;
    while pos < end {
        let n = (end - pos).min(HASH_READ_BUFFER_BYTES as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("reading the pack back"))?;
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    let checksum: [u8; 20] = hash.finalize().into();
    file.write_all_at(&checksum, end)
        .map_err(io_err("writing the pack trailer"))?;
    file.set_len(end + TRAILER_BYTES as u64)
        .map_err(io_err("truncating the pack"))?;
    Ok(checksum)
}

/// Inflate entry `e`'s data from `file` (its size was verified while streaming).
fn inflate_entry(
    file: &File,
    e: &Entry,
    z: &mut Decompress,
    read_buf: &mut [u8],
    largest: &AtomicU64,
) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(e.size as usize);
    largest.fetch_max(out.capacity() as u64, Ordering::Relaxed);
    z.reset(true);
    let mut pos = e.offset + u64::from(e.header_len);
    let end = e.offset + e.packed_len;
    let corrupt = |message: &str| IngestError::CorruptZlib {
        offset: e.offset,
        message: format!("{message} (re-reading the temporary pack)"),
    };
    while pos < end {
        let n = (end - pos).min(read_buf.len() as u64) as usize;
        file.read_exact_at(&mut read_buf[..n], pos)
            .map_err(io_err("reading the temporary pack"))?;
        pos += n as u64;
        let mut chunk = &read_buf[..n];
        loop {
            let before_in = z.total_in();
            let before_out = z.total_out();
            let status = z
                .decompress_vec(chunk, &mut out, FlushDecompress::None)
                .map_err(|err| corrupt(&err.to_string()))?;
            let consumed = (z.total_in() - before_in) as usize;
            chunk = &chunk[consumed..];
            if status == Status::StreamEnd {
                if out.len() as u64 != e.size {
                    return Err(corrupt("size changed"));
                }
                return Ok(out);
            }
            if chunk.is_empty() || (consumed == 0 && z.total_out() == before_out) {
                break;
            }
        }
    }
    Err(corrupt("zlib stream does not end"))
}

/// Frame of the depth-first walk over one delta tree.
struct Frame {
    idx: u32,
    res: Resolved,
    /// The object's data, unless evicted (then rebuilt from the file).
    data: Option<Vec<u8>>,
    children: Vec<u32>,
    next: usize,
}

/// What one worker found besides fatal errors.
#[derive(Default)]
struct Outcome {
    fsck: Option<(u64, FsckError)>,
    unparsable: Option<(u64, IngestError)>,
    links: Vec<(Link, ObjectId)>,
    special: SpecialBlobs,
}

/// Per-thread scratch state of delta resolution.
struct Worker {
    z: Decompress,
    read_buf: Vec<u8>,
    budget: usize,
    link_scratch: Vec<Link>,
    special_scratch: Vec<SpecialBlob>,
    outcome: Outcome,
}

/// Read-only view shared by the workers.
struct Shared<'a> {
    file: &'a File,
    entries: &'a [Entry],
    results: &'a [OnceLock<Resolved>],
    ofs_start: &'a [u32],
    ofs_list: &'a [u32],
    ref_children: &'a HashMap<ObjectId, Vec<u32>>,
    limits: &'a IngestLimits,
    checks: CheckOptions,
    largest: &'a AtomicU64,
    deltas: &'a AtomicU64,
}

impl Shared<'_> {
    fn children(&self, idx: u32, oid: &ObjectId) -> Vec<u32> {
        let i = idx as usize;
        let mut out = Vec::new();
        if i + 1 < self.ofs_start.len() {
            out.extend_from_slice(
                &self.ofs_list[self.ofs_start[i] as usize..self.ofs_start[i + 1] as usize],
            );
        }
        if let Some(refs) = self.ref_children.get(oid) {
            out.extend_from_slice(refs);
        }
        out
    }
}

impl Worker {
    fn new(budget: usize) -> Worker {
        Worker {
            z: Decompress::new(true),
            read_buf: vec![0; READ_BUFFER_BYTES],
            budget,
            link_scratch: Vec::new(),
            special_scratch: Vec::new(),
            outcome: Outcome::default(),
        }
    }

    fn inflate(&mut self, sh: &Shared, idx: u32) -> Result<Vec<u8>, IngestError> {
        inflate_entry(
            sh.file,
            &sh.entries[idx as usize],
            &mut self.z,
            &mut self.read_buf,
            sh.largest,
        )
    }

    fn apply(&mut self, sh: &Shared, base: &[u8], idx: u32) -> Result<Vec<u8>, IngestError> {
        let delta = self.inflate(sh, idx)?;
        let mut out = Vec::new();
        apply_delta(base, &delta, &mut out, sh.limits.object_max_bytes).map_err(|source| {
            IngestError::BadDelta {
                offset: sh.entries[idx as usize].offset,
                source,
            }
        })?;
        sh.largest
            .fetch_max(out.capacity() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Make sure `stack[k]` holds its data, rebuilding it from the nearest
    /// frame below that still does (or from the root entry).
    fn ensure_data(
        &mut self,
        sh: &Shared,
        stack: &mut [Frame],
        k: usize,
        held: &mut usize,
    ) -> Result<(), IngestError> {
        if stack[k].data.is_some() {
            return Ok(());
        }
        let mut j = k;
        while j > 0 && stack[j].data.is_none() {
            j -= 1;
        }
        let mut current: Option<Vec<u8>> = None;
        if stack[j].data.is_none() {
            current = Some(self.inflate(sh, stack[j].idx)?);
        }
        for frame in &stack[j + 1..=k] {
            let base: &[u8] = match &current {
                Some(c) => c,
                None => stack[j].data.as_deref().unwrap_or(&[]),
            };
            current = Some(self.apply(sh, base, frame.idx)?);
        }
        let data = current.unwrap_or_default();
        *held += data.len();
        stack[k].data = Some(data);
        Ok(())
    }

    /// Resolve every delta built on `root`, depth first.
    fn resolve_tree(
        &mut self,
        sh: &Shared,
        root: u32,
        root_data: Option<Vec<u8>>,
    ) -> Result<(), IngestError> {
        let Some(res) = sh.results[root as usize].get().copied() else {
            return Ok(());
        };
        let children = sh.children(root, &res.oid);
        if children.is_empty() {
            return Ok(());
        }
        let data = match root_data {
            Some(d) => d,
            None => self.inflate(sh, root)?,
        };
        let mut held = data.len();
        let mut stack = vec![Frame {
            idx: root,
            res,
            data: Some(data),
            children,
            next: 0,
        }];
        while let Some(top) = stack.len().checked_sub(1) {
            let frame = &mut stack[top];
            let Some(&child) = frame.children.get(frame.next) else {
                if let Some(d) = stack.pop().and_then(|f| f.data) {
                    held -= d.len();
                }
                continue;
            };
            frame.next += 1;
            let base = frame.res;
            let base_idx = frame.idx;
            let slot = &sh.results[child as usize];
            if slot.get().is_some() {
                continue;
            }
            let offset = sh.entries[child as usize].offset;
            let depth = base.depth + 1;
            if depth > sh.limits.delta_chain_max {
                return Err(IngestError::DeltaChainTooDeep {
                    offset,
                    depth,
                    limit: sh.limits.delta_chain_max,
                });
            }
            self.ensure_data(sh, &mut stack, top, &mut held)?;
            let out = {
                let base_data = stack[top].data.as_deref().unwrap_or(&[]);
                self.apply(sh, base_data, child)?
            };
            let oid = hash_object_checked(base.kind, &out)
                .map_err(|source| IngestError::Collision { offset, source })?;
            let res = Resolved {
                oid,
                kind: base.kind,
                depth,
                base: base_idx,
            };
            if slot.set(res).is_err() {
                continue;
            }
            sh.deltas.fetch_add(1, Ordering::Relaxed);
            self.check(sh, offset, &res, &out);
            let children = sh.children(child, &oid);
            if children.is_empty() {
                continue;
            }
            held += out.len();
            stack.push(Frame {
                idx: child,
                res,
                data: Some(out),
                children,
                next: 0,
            });
            if held > self.budget {
                let keep = stack.len() - 1;
                for f in &mut stack[..keep] {
                    if held <= self.budget {
                        break;
                    }
                    if let Some(d) = f.data.take() {
                        held -= d.len();
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&mut self, sh: &Shared, offset: u64, res: &Resolved, data: &[u8]) {
        if res.kind == ObjectKind::Blob {
            return;
        }
        let first = |slot: &Option<(u64, _)>| slot.as_ref().is_none_or(|(o, _)| offset < *o);
        if sh.checks.strict && first(&self.outcome.fsck) {
            if let Err(e) = fsck::check_object_collecting(
                &res.oid,
                res.kind,
                data,
                &FsckOptions::default(),
                &mut self.special_scratch,
            ) {
                self.outcome.fsck = Some((offset, e));
            }
            self.outcome
                .special
                .remember(&mut self.special_scratch, sh.limits.special_blobs_max);
        }
        if sh.checks.check_links || sh.checks.strict {
            self.link_scratch.clear();
            match fsck::object_links(res.kind, data, &mut self.link_scratch) {
                Ok(()) => {
                    if sh.checks.check_links {
                        self.outcome
                            .links
                            .extend(self.link_scratch.drain(..).map(|l| (l, res.oid)));
                    }
                }
                Err(source) => {
                    if self
                        .outcome
                        .unparsable
                        .as_ref()
                        .is_none_or(|(o, _)| offset < *o)
                    {
                        self.outcome.unparsable = Some((
                            offset,
                            IngestError::Unparsable {
                                oid: res.oid,
                                source,
                            },
                        ));
                    }
                }
            }
        }
    }
}

/// Whole objects appended to complete a thin pack.
struct Appended {
    count: u32,
    /// End of the last entry (where the trailer goes).
    end: u64,
}

/// Delta resolution over the received entries.
struct Resolution<'a> {
    file: &'a File,
    entries: Vec<Entry>,
    results: Vec<OnceLock<Resolved>>,
    ofs_start: Vec<u32>,
    ofs_list: Vec<u32>,
    ref_children: HashMap<ObjectId, Vec<u32>>,
    limits: &'a IngestLimits,
    checks: CheckOptions,
    largest: AtomicU64,
    deltas: AtomicU64,
    outcomes: Vec<Outcome>,
}

impl<'a> Resolution<'a> {
    fn new(
        file: &'a File,
        entries: Vec<Entry>,
        resolved: Vec<Option<Resolved>>,
        limits: &'a IngestLimits,
        checks: CheckOptions,
        largest: u64,
    ) -> Self {
        let n = entries.len();
        let mut counts = vec![0u32; n + 1];
        let mut ref_children: HashMap<ObjectId, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            match e.base {
                Base::Ofs(b) => counts[b as usize + 1] += 1,
                Base::Ref(oid) => ref_children.entry(oid).or_default().push(i as u32),
                Base::Whole(_) => {}
            }
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let ofs_start = counts.clone();
        let mut fill = counts;
        let mut ofs_list = vec![0u32; ofs_start[n] as usize];
        for (i, e) in entries.iter().enumerate() {
            if let Base::Ofs(b) = e.base {
                ofs_list[fill[b as usize] as usize] = i as u32;
                fill[b as usize] += 1;
            }
        }
        let results = resolved
            .into_iter()
            .map(|r| {
                let cell = OnceLock::new();
                if let Some(r) = r {
                    let _ = cell.set(r);
                }
                cell
            })
            .collect();
        Resolution {
            file,
            entries,
            results,
            ofs_start,
            ofs_list,
            ref_children,
            limits,
            checks,
            largest: AtomicU64::new(largest),
            deltas: AtomicU64::new(0),
            outcomes: Vec::new(),
        }
    }

    fn shared(&self) -> Shared<'_> {
        Shared {
            file: self.file,
            entries: &self.entries,
            results: &self.results,
            ofs_start: &self.ofs_start,
            ofs_list: &self.ofs_list,
            ref_children: &self.ref_children,
            limits: self.limits,
            checks: self.checks,
            largest: &self.largest,
            deltas: &self.deltas,
        }
    }

    /// Resolve every delta whose chain starts at a whole object in the
    /// pack, one delta tree per task, on `threads` workers. The reported
    /// error is the one of the first failing tree in pack order.
    fn resolve_in_pack(&mut self) -> Result<(), IngestError> {
        let roots: Vec<u32> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.base, Base::Whole(_)))
            .map(|(i, _)| i as u32)
            .filter(|&i| {
                let oid = self.results[i as usize]
                    .get()
                    .map(|r| r.oid)
                    .unwrap_or(ObjectId::NULL_SHA1);
                self.ofs_start[i as usize] != self.ofs_start[i as usize + 1]
                    || self.ref_children.contains_key(&oid)
            })
            .collect();
        if roots.is_empty() {
            return Ok(());
        }
        let threads = self.limits.threads.max(1).min(roots.len());
        let budget = self.limits.delta_cache_bytes / threads;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let sh = self.shared();
        let run = || {
            let mut worker = Worker::new(budget);
            let mut failure = None;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&root) = roots.get(i) else {
                    break;
                };
                if let Err(e) = worker.resolve_tree(&sh, root, None) {
                    failure = Some((i, e));
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            (worker.outcome, failure)
        };
        let results: Vec<(Outcome, Option<(usize, IngestError)>)> = if threads == 1 {
            vec![run()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(run)).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (
                                Outcome::default(),
                                Some((
                                    0,
                                    IngestError::Io {
                                        context: "resolving deltas",
                                        source: std::io::Error::other("worker thread panicked"),
                                    },
                                )),
                            )
                        })
                    })
                    .collect()
            })
        };
        let mut first_error: Option<(usize, IngestError)> = None;
        for (outcome, failure) in results {
            self.outcomes.push(outcome);
            if let Some((i, e)) = failure {
                if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_error = Some((i, e));
                }
            }
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Append the bases of still unresolved REF_DELTAs from `repo`, in pack
    /// order of the deltas (as `index-pack --fix-thin`), resolving each
    /// base's delta tree right away.
    fn complete_thin(
        &mut self,
        repo: &dyn ObjectSource,
        mut end: u64,
    ) -> Result<Appended, IngestError> {
        let waiting: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&i| {
                self.results[i as usize].get().is_none()
                    && matches!(self.entries[i as usize].base, Base::Ref(_))
            })
            .collect();
        let mut count = 0u32;
        let mut worker = Worker::new(self.limits.delta_cache_bytes);
        for i in waiting {
            let entry = self.entries[i as usize];
            let Base::Ref(base) = entry.base else {
                continue;
            };
            if self.results[i as usize].get().is_some() {
                continue;
            }
            let Some((kind, data)) = repo.read_object(&base) else {
                return Err(IngestError::MissingBase {
                    offset: entry.offset,
                    base,
                });
            };
            if data.len() as u64 > self.limits.object_max_bytes {
                return Err(IngestError::ObjectTooLarge {
                    offset: entry.offset,
                    size: data.len() as u64,
                    limit: self.limits.object_max_bytes,
                });
            }
            if self.entries.len() as u64 >= u64::from(u32::MAX) {
                return Err(IngestError::TooManyObjects {
                    count: u32::MAX,
                    limit: self.limits.objects_max,
                });
            }
            let (raw, header_len) = encode_whole(kind, &data)?;
            self.file
                .write_all_at(&raw, end)
                .map_err(io_err("appending a thin-pack base"))?;
            let crc32 = crc32fast::hash(&raw);
            let idx = self.entries.len() as u32;
            self.entries.push(Entry {
                offset: end,
                packed_len: raw.len() as u64,
                header_len,
                crc32,
                size: data.len() as u64,
                base: Base::Whole(kind),
            });
            let cell = OnceLock::new();
            let _ = cell.set(Resolved {
                oid: base,
                kind,
                depth: 0,
                base: u32::MAX,
            });
            self.results.push(cell);
            end += raw.len() as u64;
            count += 1;
            let sh = self.shared();
            worker.resolve_tree(&sh, idx, Some(data))?;
        }
        self.outcomes.push(worker.outcome);
        Ok(Appended { count, end })
    }

    fn all_resolved(&self) -> Result<(), IngestError> {
        let mut unresolved = self
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.get().is_none());
        if let Some((first, _)) = unresolved.next() {
            return Err(IngestError::UnresolvedDeltas {
                count: 1 + unresolved.count(),
                offset: self.entries[first].offset,
            });
        }
        Ok(())
    }
}

/// A whole-object pack entry (header + zlib data) and its header length.
fn encode_whole(kind: ObjectKind, data: &[u8]) -> Result<(Vec<u8>, u8), IngestError> {
    let mut header = [0u8; 16];
    let n = encode_type_size(kind.pack_code(), data.len() as u64, &mut header);
    let mut out = Vec::with_capacity(n + data.len() / 2 + 64);
    out.extend_from_slice(&header[..n]);
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
    z.write_all(data)
        .map_err(io_err("compressing a thin-pack base"))?;
    let out = z.finish().map_err(io_err("compressing a thin-pack base"))?;
    Ok((out, n as u8))
}

/// The resolved objects of a pack, before it has an index.
struct PackObjects<'a> {
    file: &'a File,
    entries: &'a [Entry],
    resolved: &'a [Resolved],
    /// (oid, entry index), sorted.
    by_oid: &'a [(ObjectId, u32)],
    limits: &'a IngestLimits,
}

impl PackObjects<'_> {
    /// Entry index of `oid`.
    fn find(&self, oid: &ObjectId) -> Option<usize> {
        let pos = self.by_oid.binary_search_by(|(o, _)| o.cmp(oid)).ok()?;
        Some(self.by_oid[pos].1 as usize)
    }
}

/// fsck and link checks over everything streamed and resolved, then the
/// contents of the objects trees name `.gitmodules`/`.gitattributes`
/// (git's `fsck_finish`, after its connectivity check).
fn run_checks(
    checks: &CheckOptions,
    streamed: Checks,
    outcomes: Vec<Outcome>,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    if !checks.strict && !checks.check_links {
        return Ok(());
    }
    let special_max = pack.limits.special_blobs_max;
    let mut fsck_first = streamed.fsck;
    let mut unparsable_first = streamed.unparsable;
    let mut special = streamed.special;
    let mut links: Vec<(Link, ObjectId)> = Vec::new();
    for outcome in outcomes {
        if let Some((o, e)) = outcome.fsck {
            if fsck_first.as_ref().is_none_or(|(f, _)| o < *f) {
                fsck_first = Some((o, e));
            }
        }
        if let Some((o, e)) = outcome.unparsable {
            if unparsable_first.as_ref().is_none_or(|(f, _)| o < *f) {
                unparsable_first = Some((o, e));
            }
        }
        links.extend(outcome.links);
        special.merge(outcome.special, special_max);
    }
    if let Some((_, e)) = unparsable_first {
        return Err(e);
    }
    if checks.strict {
        if let Some((_, e)) = fsck_first {
            return Err(IngestError::Fsck(e));
        }
    }
    if checks.check_links {
        links.extend(streamed.links);
        check_links(links, pack, repo)?;
    }
    if checks.strict {
        check_special_blobs(special, pack, repo)?;
    }
    debug_assert_eq!(pack.entries.len(), pack.resolved.len());
    Ok(())
}

/// Every link resolves to an object of the kind it names.
fn check_links(
    mut links: Vec<(Link, ObjectId)>,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    links.sort_unstable_by_key(|(link, from)| (link.oid, link.kind.pack_code(), *from));
    links.dedup_by(|a, b| a.0 == b.0);
    for (link, from) in links {
        let actual = match pack.find(&link.oid) {
            Some(i) => Some(pack.resolved[i].kind),
            // git treats the empty tree as present in every repository
            None if link.oid == EMPTY_TREE => Some(ObjectKind::Tree),
            None => repo.object_kind(&link.oid),
        };
        match actual {
            None => {
                return Err(IngestError::MissingLink {
                    from,
                    missing: link.oid,
                })
            }
            Some(kind) if kind != link.kind => {
                return Err(IngestError::LinkKindMismatch {
                    from,
                    oid: link.oid,
                    expected: link.kind,
                    actual: kind,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// git's `fsck_finish`: the contents of each object a new tree names
/// `.gitmodules` or `.gitattributes`, read from the pack or, if the pack
/// does not have it, from the repository. One object at a time is held.
fn check_special_blobs(
    special: SpecialBlobs,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    if special.overflow {
        return Err(IngestError::TooManySpecialBlobs {
            limit: pack.limits.special_blobs_max,
        });
    }
    let mut special: Vec<SpecialBlob> = special.set.into_iter().collect();
    special.sort_unstable();
    for blob in special {
        let max_bytes = fsck::special_blob_max_bytes(blob.file);
        let data;
        let object = match pack.find(&blob.oid) {
            Some(i) => match pack.resolved[i].kind {
                ObjectKind::Blob => {
                    let entry = &pack.entries[i];
                    if matches!(entry.base, Base::Whole(_)) && entry.size > max_bytes {
                        SpecialObject::TooLarge(entry.size)
                    } else {
                        data = read_pack_object(
                            pack.file,
                            pack.entries,
                            pack.resolved,
                            i,
                            pack.limits,
                        )?;
                        SpecialObject::Blob(&data)
                    }
                }
                kind => SpecialObject::NotBlob(kind),
            },
            // git's object store always has the empty tree
            None if blob.oid == EMPTY_TREE => SpecialObject::NotBlob(ObjectKind::Tree),
            None => match repo.object_kind(&blob.oid) {
                None => SpecialObject::Missing,
                Some(ObjectKind::Blob) => match repo.read_object(&blob.oid) {
                    Some((_, bytes)) => {
                        data = bytes;
                        SpecialObject::Blob(&data)
                    }
                    None => SpecialObject::Missing,
                },
                Some(kind) => SpecialObject::NotBlob(kind),
            },
        };
        fsck::check_special_blob(&blob, object)?;
    }
    Ok(())
}

/// The whole object of entry `i`: its chain of deltas applied, from the file.
fn read_pack_object(
    file: &File,
    entries: &[Entry],
    resolved: &[Resolved],
    mut i: usize,
    limits: &IngestLimits,
) -> Result<Vec<u8>, IngestError> {
    let offset = entries[i].offset;
    let mut chain = Vec::new();
    while resolved[i].base != u32::MAX {
        chain.push(i);
        i = resolved[i].base as usize;
        if chain.len() as u64 > u64::from(limits.delta_chain_max) + 1 {
            return Err(IngestError::DeltaChainTooDeep {
                offset,
                depth: chain.len() as u32,
                limit: limits.delta_chain_max,
            });
        }
    }
    let mut z = Decompress::new(true);
    let mut read_buf = vec![0u8; READ_BUFFER_BYTES];
    let largest = AtomicU64::new(0);
    let mut data = inflate_entry(file, &entries[i], &mut z, &mut read_buf, &largest)?;
    let mut out = Vec::new();
    for &d in chain.iter().rev() {
        let delta = inflate_entry(file, &entries[d], &mut z, &mut read_buf, &largest)?;
        apply_delta(&data, &delta, &mut out, limits.object_max_bytes).map_err(|source| {
            IngestError::BadDelta {
                offset: entries[d].offset,
                source,
            }
        })?;
        std::mem::swap(&mut data, &mut out);
    }
    Ok(data)
}

/// A received pack, verified and indexed, still under temporary names.
/// Dropping it without [`commit`](IngestedPack::commit) removes both files.
pub struct IngestedPack {
    dir: PathBuf,
    temp: TempFiles,
    file: File,
    checksum: [u8; 20],
    index: PackIndex,
    entries: Vec<Entry>,
    resolved: Vec<Resolved>,
    limits: IngestLimits,
    stats: IngestStats,
}

impl IngestedPack {
    /// The pack's trailing checksum (after thin completion): its name.
    pub fn checksum(&self) -> [u8; 20] {
        self.checksum
    }

    /// Lookup of the new objects.
    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    /// Objects in the pack, including appended thin-pack bases.
    pub fn object_count(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Measurements of the ingest.
    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    /// Path of the temporary pack file.
    pub fn temp_pack_path(&self) -> &Path {
        &self.temp.pack
    }

    /// Path of the temporary index file.
    pub fn temp_idx_path(&self) -> &Path {
        &self.temp.idx
    }

    /// Every object with its kind, in pack order.
    pub fn objects(&self) -> impl Iterator<Item = (ObjectId, ObjectKind)> + '_ {
        self.resolved.iter().map(|r| (r.oid, r.kind))
    }

    /// The kind of `oid` if the pack has it.
    pub fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        let offset = self.index.lookup(oid)?;
        let i = self
            .entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()?;
        Some(self.resolved[i].kind)
    }

    /// Read a whole object of the pack (for connectivity and fast-forward
    /// checks before commit). None if the pack does not have it.
    pub fn read_object(
        &self,
        oid: &ObjectId,
    ) -> Result<Option<(ObjectKind, Vec<u8>)>, IngestError> {
        let Some(offset) = self.index.lookup(oid) else {
            return Ok(None);
        };
        let Ok(i) = self.entries.binary_search_by_key(&offset, |e| e.offset) else {
            return Ok(None);
        };
        let kind = self.resolved[i].kind;
        let data = read_pack_object(&self.file, &self.entries, &self.resolved, i, &self.limits)?;
        Ok(Some((kind, data)))
    }

    /// Make the pack visible: rename to `pack-<hex>.pack`, then (last, so
    /// that a pack is never visible without its index) `pack-<hex>.idx`,
    /// then fsync the directory. A pack with no objects is dropped instead
    /// (`None`). If a pack with the same checksum is already there, it is
    /// kept and the new copy dropped.
    pub fn commit(mut self) -> Result<Option<(PathBuf, PathBuf)>, IngestError> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let hex = ObjectId::from_sha1(self.checksum).to_hex();
        let pack = self.dir.join(format!("pack-{hex}.pack"));
        let idx = self.dir.join(format!("pack-{hex}.idx"));
        if idx.exists() && pack.exists() {
            return Ok(Some((pack, idx)));
        }
        self.file.sync_all().map_err(io_err("syncing the pack"))?;
        std::fs::rename(&self.temp.pack, &pack).map_err(io_err("renaming the pack"))?;
        self.temp.pack = pack.clone();
        std::fs::rename(&self.temp.idx, &idx).map_err(io_err("renaming the index"))?;
        self.temp.armed = false;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the pack directory"))?;
        Ok(Some((pack, idx)))
    }
}

impl ObjectSource for IngestedPack {
    fn contains(&self, oid: &ObjectId) -> bool {
        self.index.find(oid).is_some()
    }
    fn read_object(&self, oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)> {
        IngestedPack::read_object(self, oid).ok().flatten()
    }
    fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        IngestedPack::object_kind(self, oid)
    }
}
