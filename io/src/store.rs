//! The per-repository object store: the packs under `OBJECTS_DIR/pack`.
//!
//! The layout is git's (`pack-<hex>.pack` next to `pack-<hex>.idx`), so C git
//! can read a copy of a repository. Packs are immutable once written; the
//! store is a cheap-to-clone snapshot of the pack list plus caches shared by
//! all clones (a bounded delta-base cache and a parsed-commit cache).
//! Adding a pack replaces the list copy-on-write: clones made earlier keep
//! seeing the packs they started with.
//!
//! Reads are positional (`pread`) into owned buffers handed out as `Bytes`;
//! there is no mmap. All file access goes through the private
//! [`RandomRead`] trait so that moving to io_uring DMA files stays local.

use crate::delta::{self, DeltaError};
use crate::files::BudgetedFile;
use crate::object::{self, CommitInfo, ObjectKind, ParseError};
use crate::oid::ObjectId;
use crate::pack::entry::{decode_header, EntryError, EntryKind};
use crate::pack::idx::{IdxError, PackIndex};
use crate::pack::{PACK_HEADER_BYTES, PACK_SIGNATURE};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of resolved delta bases kept in memory per store (git's
/// `core.deltaBaseCacheLimit` defaults to 96 MiB).
pub const DELTA_BASE_CACHE_MAX_BYTES: usize = 96 << 20;
/// Longest delta chain followed before the object is declared corrupt.
pub const DELTA_CHAIN_MAX_DEPTH: usize = crate::limits::DELTA_CHAIN_MAX_DEPTH as usize;
/// Largest object the store will inflate into memory.
pub const OBJECT_MAX_BYTES: u64 = crate::limits::OBJECT_MAX_BYTES;
/// Parsed commits kept by the commit cache before it is cleared.
pub const COMMIT_CACHE_MAX_ENTRIES: usize = 4 << 20;
/// Cached objects larger than this are not kept in the delta-base cache.
const CACHE_ENTRY_MAX_BYTES: usize = DELTA_BASE_CACHE_MAX_BYTES / 8;
/// Bytes read to decode an entry header (and, for deltas, the start of the
/// compressed delta) without reading the whole entry.
const HEADER_PREFIX_BYTES: usize = 192;
/// zlib never expands more than ~1032:1; a declared size beyond this for the
/// compressed bytes at hand is corrupt, so it never reaches an allocation.
const ZLIB_MAX_RATIO: u64 = 1100;

/// Errors from the object store. Each names the file, and where the problem
/// is inside a pack, the entry offset.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system error on a file or directory.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The pack does not start with a valid v2/v3 header.
    #[error("{path}: not a pack file (bad signature or version)")]
    BadPackHeader {
        /// The pack file.
        path: PathBuf,
    },
    /// The index could not be parsed.
    #[error("{path}: bad pack index: {source}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What was wrong.
        source: IdxError,
    },
    /// The index does not describe this pack.
    #[error("{path}: index does not match pack: {reason}")]
    IndexMismatch {
        /// The pack file.
        path: PathBuf,
        /// Which check failed.
        reason: &'static str,
    },
    /// A pack entry header could not be decoded.
    #[error("{path} at offset {offset}: bad entry header: {source}")]
    BadEntry {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// What was wrong.
        source: EntryError,
    },
    /// Entry data did not inflate to its declared size.
    #[error("{path} at offset {offset}: entry data does not inflate to {size} bytes")]
    BadZlib {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// The declared inflated size.
        size: u64,
    },
    /// A delta could not be applied.
    #[error("{path} at offset {offset}: {source}")]
    BadDelta {
        /// The pack file.
        path: PathBuf,
        /// Offset of the delta entry.
        offset: u64,
        /// What was wrong.
        source: DeltaError,
    },
    /// An OFS_DELTA points outside the pack or not at an entry.
    #[error("{path} at offset {offset}: delta base offset points at no entry")]
    BadBaseOffset {
        /// The pack file.
        path: PathBuf,
        /// Offset of the delta entry.
        offset: u64,
    },
    /// A REF_DELTA names a base the store does not hold.
    #[error("{path} at offset {offset}: delta base {base} is missing")]
    MissingBase {
        /// The pack file.
        path: PathBuf,
        /// Offset of the delta entry.
        offset: u64,
        /// The missing base.
        base: ObjectId,
    },
    /// A delta chain exceeded [`DELTA_CHAIN_MAX_DEPTH`] (or loops).
    #[error("{path} at offset {offset}: delta chain longer than {limit}")]
    ChainTooDeep {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry whose chain was followed.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// An object declares a size beyond [`OBJECT_MAX_BYTES`] or beyond what
    /// its compressed bytes can hold.
    #[error(
        "{path} at offset {offset}: object of {size} bytes exceeds the limit of {limit} bytes"
    )]
    ObjectTooLarge {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// The declared size.
        size: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// An object that should be a commit is something else.
    #[error("object {oid} is a {kind:?}, expected a commit")]
    NotACommit {
        /// The object.
        oid: ObjectId,
        /// What it is.
        kind: ObjectKind,
    },
    /// A stored object's body is malformed.
    #[error("stored object {oid} is malformed: {source}")]
    Malformed {
        /// The object.
        oid: ObjectId,
        /// What was wrong.
        source: ParseError,
    },
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Positional reads from an immutable file. The only file access of the
/// store; an io_uring DMA implementation replaces [`StdFile`] later.
trait RandomRead: Send + Sync {
    /// Fill `buf` from `offset`; a short file is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// The file's name now.
    fn current_path(&self) -> PathBuf;
    /// Rename the file; reads go on from the new name.
    fn rename(&self, to: &Path) -> io::Result<()>;
}

/// A pack file opened on demand under the process's open-file budget
/// ([`crate::files`]): a repository with 20,000 packs does not hold
/// 20,000 descriptors.
struct StdFile(BudgetedFile);

impl RandomRead for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&*self.0.file()?, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.file()?.metadata()?.len())
    }
    fn current_path(&self) -> PathBuf {
        self.0.path()
    }
    fn rename(&self, to: &Path) -> io::Result<()> {
        self.0.rename(to)
    }
}

/// Prefix of a retired pack's file: replaced by a repack, still read by
/// older snapshots, removed when the last of them is dropped (or at the
/// next start, see [`ObjectStore::remove_leftovers`]).
pub const RETIRED_PACK_PREFIX: &str = "old_pack-";

static NEXT_RETIRED: AtomicU64 = AtomicU64::new(1);

static NEXT_PACK_ID: AtomicU64 = AtomicU64::new(1);

/// One pack file and its index, opened and checked against each other.
pub struct Pack {
    id: u64,
    path: PathBuf,
    file: Box<dyn RandomRead>,
    index: PackIndex,
    len: u64,
    checksum: [u8; 20],
    /// `(offset, index position)` of every entry, sorted by offset; the
    /// next entry's offset (or the trailer) ends an entry.
    by_offset: Vec<(u64, u32)>,
    /// Set by [`Pack::retire`]: the file goes when this pack is dropped.
    retired: AtomicBool,
}

impl Drop for Pack {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            let path = self.file.current_path();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(pack = %path.display(), error = %e, "could not remove a retired pack file; it is removed at the next start");
            }
        }
    }
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("path", &self.path)
            .field("objects", &self.index.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Pack {
    /// Open `pack_path` with its index `idx_path`, checking the pack header,
    /// the object count, that the index's pack checksum is the pack's
    /// trailer, and that every indexed offset lies inside the pack body.
    pub fn open(pack_path: &Path, idx_path: &Path) -> Result<Pack, StoreError> {
        let idx_bytes = std::fs::read(idx_path).map_err(|e| io_err(idx_path, e))?;
        let index = PackIndex::parse(Bytes::from(idx_bytes), true).map_err(|source| {
            StoreError::BadIndex {
                path: idx_path.to_path_buf(),
                source,
            }
        })?;
        let file = BudgetedFile::open(pack_path).map_err(|e| io_err(pack_path, e))?;
        let file: Box<dyn RandomRead> = Box::new(StdFile(file));
        let len = file.len().map_err(|e| io_err(pack_path, e))?;
        let bad_header = || StoreError::BadPackHeader {
            path: pack_path.to_path_buf(),
        };
        if len < (PACK_HEADER_BYTES + 20) as u64 {
            return Err(bad_header());
        }
        let mut header = [0u8; PACK_HEADER_BYTES];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_err(pack_path, e))?;
        let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if &header[..4] != PACK_SIGNATURE || !(version == 2 || version == 3) {
            return Err(bad_header());
        }
        let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let mismatch = |reason| StoreError::IndexMismatch {
            path: pack_path.to_path_buf(),
            reason,
        };
        if count != index.len() {
            return Err(mismatch("object count differs"));
        }
        let mut checksum = [0u8; 20];
        file.read_exact_at(&mut checksum, len - 20)
            .map_err(|e| io_err(pack_path, e))?;
        if checksum != index.pack_checksum() {
            return Err(mismatch("pack checksum differs from the index's"));
        }
        let mut by_offset: Vec<(u64, u32)> =
            (0..index.len()).map(|i| (index.offset_at(i), i)).collect();
        by_offset.sort_unstable();
        let body_end = len - 20;
        for pair in by_offset.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(mismatch("two objects share an offset"));
            }
        }
        if let (Some(first), Some(last)) = (by_offset.first(), by_offset.last()) {
            if first.0 < PACK_HEADER_BYTES as u64 || last.0 >= body_end {
                return Err(mismatch("an offset lies outside the pack body"));
            }
        }
        Ok(Pack {
            id: NEXT_PACK_ID.fetch_add(1, Ordering::Relaxed),
            path: pack_path.to_path_buf(),
            file,
            index,
            len,
            checksum,
            by_offset,
            retired: AtomicBool::new(false),
        })
    }

    /// Take this pack out of the repository after a repack has put its
    /// objects in a new pack (durably) and the store's list no longer
    /// names it: its index is removed and its pack file renamed out of
    /// git's sight (`old_pack-*`), so that nothing opening the repository
    /// sees it again, while snapshots that still hold it read on from the
    /// renamed file (it is removed when the last of them drops it). The
    /// directory is fsynced.
    pub fn retire(&self) -> Result<(), StoreError> {
        if self.retired.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let hex = ObjectId::from_sha1(self.checksum).to_hex();
        let to = dir.join(format!(
            "{RETIRED_PACK_PREFIX}{}-{hex}.pack",
            NEXT_RETIRED.fetch_add(1, Ordering::Relaxed)
        ));
        // The pack file first: a crash right after leaves an index without
        // its pack, which every reader ignores (and the next start removes).
        if let Err(e) = self.file.rename(&to) {
            self.retired.store(false, Ordering::Release);
            return Err(io_err(&self.path, e));
        }
        let idx = self.path.with_extension("idx");
        match std::fs::remove_file(&idx) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&idx, e)),
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&dir, e))
    }

    /// Where the pack's bytes are now: its name, or the name it was moved
    /// to when it was retired.
    pub fn current_path(&self) -> PathBuf {
        self.file.current_path()
    }

    /// Path of the pack file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pack's index.
    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    /// Length of the pack file in bytes (header, entries, trailer).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the pack holds no objects.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }

    /// Number of objects in the pack.
    pub fn object_count(&self) -> u32 {
        self.index.len()
    }

    /// The trailing SHA-1 of the pack (its name).
    pub fn checksum(&self) -> [u8; 20] {
        self.checksum
    }

    /// Entries as `(offset, index position)`, sorted by offset.
    pub fn entries_by_offset(&self) -> &[(u64, u32)] {
        &self.by_offset
    }

    /// Position in [`Pack::entries_by_offset`] of the entry at `offset`.
    pub fn entry_position(&self, offset: u64) -> Option<usize> {
        self.by_offset.binary_search_by(|e| e.0.cmp(&offset)).ok()
    }

    /// The end (exclusive) of the entry at sorted position `pos`.
    fn end_of(&self, pos: usize) -> u64 {
        match self.by_offset.get(pos + 1) {
            Some(next) => next.0,
            None => self.len - 20,
        }
    }

    /// The byte range `(start, end)` of the entry at `offset`.
    pub fn entry_range(&self, offset: u64) -> Option<(u64, u64)> {
        self.entry_position(offset)
            .map(|pos| (offset, self.end_of(pos)))
    }

    /// The id of the object whose entry starts at `offset`.
    pub fn oid_at_offset(&self, offset: u64) -> Option<ObjectId> {
        self.entry_position(offset)
            .map(|pos| self.index.oid_at(self.by_offset[pos].1))
    }

    /// Read `len` bytes at `offset` into a fresh buffer.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Fill `buf` from `offset`.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(io_err(
                &self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read of {} bytes at {offset} past end", buf.len()),
                ),
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| io_err(&self.path, e))
    }

    /// The raw bytes of the entry at `offset`: header plus compressed data.
    pub fn raw_entry(&self, offset: u64) -> Result<Bytes, StoreError> {
        let (start, end) = self
            .entry_range(offset)
            .ok_or_else(|| StoreError::BadBaseOffset {
                path: self.path.clone(),
                offset,
            })?;
        self.read_at(start, (end - start) as usize)
    }

    fn corrupt_entry(&self, offset: u64, source: EntryError) -> StoreError {
        StoreError::BadEntry {
            path: self.path.clone(),
            offset,
            source,
        }
    }

    /// Inflate exactly `size` bytes from `compressed` (entry data at `offset`).
    fn inflate(&self, offset: u64, compressed: &[u8], size: u64) -> Result<Vec<u8>, StoreError> {
        self.check_size(offset, size, compressed.len())?;
        let mut out = Vec::new();
        inflate_exact(compressed, size as usize, &mut out).map_err(|()| StoreError::BadZlib {
            path: self.path.clone(),
            offset,
            size,
        })?;
        Ok(out)
    }

    fn check_size(&self, offset: u64, size: u64, compressed_len: usize) -> Result<(), StoreError> {
        let ratio_limit = (compressed_len as u64)
            .saturating_mul(ZLIB_MAX_RATIO)
            .saturating_add(64);
        let limit = OBJECT_MAX_BYTES.min(ratio_limit);
        if size > limit {
            return Err(StoreError::ObjectTooLarge {
                path: self.path.clone(),
                offset,
                size,
                limit,
            });
        }
        Ok(())
    }
}

thread_local! {
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(true));
}

/// Inflate a whole zlib stream that must produce exactly `size` bytes.
fn inflate_exact(input: &[u8], size: usize, out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    // One spare byte so that a stream longer than declared is noticed.
    out.reserve_exact(size + 1);
    let run = |d: &mut flate2::Decompress, out: &mut Vec<u8>| {
        d.reset(true);
        match d.decompress_vec(input, out, flate2::FlushDecompress::Finish) {
            Ok(flate2::Status::StreamEnd) if out.len() == size => Ok(()),
            _ => Err(()),
        }
    };
    INFLATER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut d) => run(&mut d, out),
        Err(_) => run(&mut flate2::Decompress::new(true), out),
    })
}

/// Inflate at most `max` bytes from the start of a zlib stream.
fn inflate_prefix(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(max);
    let run = |d: &mut flate2::Decompress, out: &mut Vec<u8>| {
        d.reset(true);
        let _ = d.decompress_vec(input, out, flate2::FlushDecompress::None);
    };
    INFLATER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut d) => run(&mut d, &mut out),
        Err(_) => run(&mut flate2::Decompress::new(true), &mut out),
    });
    out
}

type CacheKey = (u64, u64);

/// A bounded least-recently-used map of resolved objects by pack entry.
struct BaseCache {
    map: ahash::AHashMap<CacheKey, (ObjectKind, Bytes, u64)>,
    /// Access order; entries whose tick no longer matches are stale.
    order: VecDeque<(CacheKey, u64)>,
    bytes: usize,
    tick: u64,
}

impl BaseCache {
    fn new() -> Self {
        BaseCache {
            map: ahash::AHashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            tick: 0,
        }
    }

    fn get(&mut self, key: CacheKey) -> Option<(ObjectKind, Bytes)> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.map.get_mut(&key)?;
        slot.2 = tick;
        let found = (slot.0, slot.1.clone());
        self.order.push_back((key, tick));
        self.compact();
        Some(found)
    }

    fn insert(&mut self, key: CacheKey, kind: ObjectKind, data: Bytes) {
        if data.len() > CACHE_ENTRY_MAX_BYTES {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        self.bytes += data.len();
        if let Some(old) = self.map.insert(key, (kind, data, tick)) {
            self.bytes -= old.1.len();
        }
        self.order.push_back((key, tick));
        while self.bytes > DELTA_BASE_CACHE_MAX_BYTES {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|slot| slot.2 == t) {
                if let Some(old) = self.map.remove(&k) {
                    self.bytes -= old.1.len();
                }
            }
        }
        self.compact();
    }

    /// Drop stale access records so the order queue stays proportional to the map.
    fn compact(&mut self) {
        if self.order.len() > 4 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, t)| map.get(k).is_some_and(|slot| slot.2 == *t));
        }
    }
}

struct Shared {
    bases: Mutex<BaseCache>,
    commits: Mutex<ahash::AHashMap<ObjectId, Arc<CommitInfo>>>,
}

/// A snapshot of a repository's packs plus caches shared by all clones.
/// Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ObjectStore {
    objects_dir: Arc<PathBuf>,
    packs: Arc<Vec<Arc<Pack>>>,
    /// Checksums of packs a repack merged into a pack of this list: their
    /// objects are all here, under another pack's name.
    absorbed: Arc<ahash::AHashSet<[u8; 20]>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("objects_dir", &self.objects_dir)
            .field("packs", &self.packs)
            .finish()
    }
}

/// Where an object lives: position in [`ObjectStore::packs`] and entry offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Index into [`ObjectStore::packs`].
    pub pack: u32,
    /// Offset of the entry in that pack.
    pub offset: u64,
}

impl ObjectStore {
    /// Remove `tmp_pack_*`/`tmp_idx_*` leftovers of a crash under
    /// `objects_dir/pack`, packs retired by a repack (`old_pack-*`) and
    /// indexes whose pack is gone (a retirement cut short). Only at start, before anything writes packs: at
    /// run time those files are packs being received. Returns how many.
    pub fn remove_leftovers(objects_dir: &Path) -> Result<usize, StoreError> {
        let pack_dir = objects_dir.join("pack");
        let Ok(entries) = std::fs::read_dir(&pack_dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&pack_dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let index_without_pack = name
                .strip_prefix("pack-")
                .and_then(|n| n.strip_suffix(".idx"))
                .is_some_and(|stem| !pack_dir.join(format!("pack-{stem}.pack")).exists());
            if name.starts_with("tmp_pack_")
                || name.starts_with("tmp_idx_")
                || name.starts_with(RETIRED_PACK_PREFIX)
                || index_without_pack
            {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Open the store under `objects_dir` (creating `objects_dir/pack` if
    /// missing) and load every `pack-*.idx` whose `.pack` exists, newest
    /// first. Temporary files of packs being received are left alone.
    pub fn open(objects_dir: &Path) -> Result<ObjectStore, StoreError> {
        let pack_dir = objects_dir.join("pack");
        std::fs::create_dir_all(&pack_dir).map_err(|e| io_err(&pack_dir, e))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&pack_dir).map_err(|e| io_err(&pack_dir, e))? {
            let entry = entry.map_err(|e| io_err(&pack_dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if let Some(stem) = name
                .strip_prefix("pack-")
                .and_then(|n| n.strip_suffix(".pack"))
            {
                if !pack_dir.join(format!("pack-{stem}.idx")).exists() {
                    // C git ignores such a pack too, but someone should know:
                    // its objects are invisible until it is indexed again.
                    tracing::error!(pack = %path.display(), "pack has no index (.idx); its objects are not served (run `git index-pack` on it)");
                }
                continue;
            }
            if let Some(stem) = name
                .strip_prefix("pack-")
                .and_then(|n| n.strip_suffix(".idx"))
            {
                let pack_path = pack_dir.join(format!("pack-{stem}.pack"));
                if !pack_path.exists() {
                    tracing::warn!(index = %path.display(), "index without its pack; ignored");
                    continue;
                }
                let mtime = std::fs::metadata(&pack_path)
                    .and_then(|m| m.modified())
                    .map_err(|e| io_err(&pack_path, e))?;
                found.push((mtime, pack_path, path));
            }
        }
        // Newest first, as git searches; names break ties for determinism.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut packs = Vec::with_capacity(found.len());
        for (_, pack_path, idx_path) in found {
            match Pack::open(&pack_path, &idx_path) {
                Ok(p) => packs.push(Arc::new(p)),
                Err(e) => {
                    tracing::error!(error = %e, "pack does not match its index; the repository cannot be opened until it is repaired");
                    return Err(e);
                }
            }
        }
        Ok(ObjectStore {
            objects_dir: Arc::new(objects_dir.to_path_buf()),
            packs: Arc::new(packs),
            absorbed: Arc::new(ahash::AHashSet::new()),
            shared: Arc::new(Shared {
                bases: Mutex::new(BaseCache::new()),
                commits: Mutex::new(ahash::AHashMap::new()),
            }),
        })
    }

    /// A store over packs the caller opened one by one (a check that
    /// reports each damaged pack rather than stopping at the first).
    pub fn from_packs(objects_dir: &Path, packs: Vec<Pack>) -> ObjectStore {
        ObjectStore {
            objects_dir: Arc::new(objects_dir.to_path_buf()),
            packs: Arc::new(packs.into_iter().map(Arc::new).collect()),
            absorbed: Arc::new(ahash::AHashSet::new()),
            shared: Arc::new(Shared {
                bases: Mutex::new(BaseCache::new()),
                commits: Mutex::new(ahash::AHashMap::new()),
            }),
        }
    }

    /// The objects directory this store reads.
    pub fn objects_dir(&self) -> &Path {
        &self.objects_dir
    }

    /// Add a pack (already in place, e.g. renamed into `objects/pack` by
    /// ingest) to this store's list. Copy-on-write: clones made earlier keep
    /// their snapshot. A pack already present (same checksum) is not added twice.
    pub fn add_pack(&mut self, pack_path: &Path, idx_path: &Path) -> Result<(), StoreError> {
        self.add_opened_pack(Pack::open(pack_path, idx_path)?);
        Ok(())
    }

    /// [`ObjectStore::add_pack`] for a pack already opened (off the
    /// caller's thread, say).
    pub fn add_opened_pack(&mut self, pack: Pack) {
        if self.packs.iter().any(|p| p.checksum == pack.checksum) {
            return;
        }
        let mut list = Vec::with_capacity(self.packs.len() + 1);
        list.push(Arc::new(pack));
        list.extend(self.packs.iter().cloned());
        self.packs = Arc::new(list);
    }

    /// The packs of this snapshot, newest first.
    pub fn packs(&self) -> &[Arc<Pack>] {
        &self.packs
    }

    /// True if the pack named by `checksum` is in this store, or was merged
    /// by a repack into a pack that is (its objects are all here).
    pub fn holds_pack(&self, checksum: &[u8; 20]) -> bool {
        self.absorbed.contains(checksum) || self.packs.iter().any(|p| p.checksum == *checksum)
    }

    /// A store of only the packs at positions `packs` of this one (sharing
    /// its caches), e.g. the packs a repack merges.
    pub fn subset(&self, packs: &[usize]) -> ObjectStore {
        ObjectStore {
            objects_dir: self.objects_dir.clone(),
            packs: Arc::new(packs.iter().map(|&i| self.packs[i].clone()).collect()),
            absorbed: self.absorbed.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Put `merged` (a pack already durable under its final name, holding
    /// every object of the packs named by `replaced`) in the place of the
    /// packs named by `replaced`; packs added since the merge was planned
    /// stay. Copy-on-write: snapshots taken earlier keep their list.
    /// Returns the packs taken out, for the caller to
    /// [`retire`](Pack::retire) once this list is the one in use.
    pub fn replace_packs(&mut self, replaced: &[[u8; 20]], merged: Pack) -> Vec<Arc<Pack>> {
        self.swap_packs(replaced, Some(merged), true)
    }

    /// Put `rewritten` (a pack already durable under its final name,
    /// holding the objects of the packs named by `pruned` that a prune
    /// keeps), or nothing if none is kept, in the place of the packs named
    /// by `pruned`. Unlike [`replace_packs`](ObjectStore::replace_packs)
    /// the packs taken out are not counted as held: some of their objects
    /// are gone. Returns the packs taken out, to retire.
    pub fn prune_packs(&mut self, pruned: &[[u8; 20]], rewritten: Option<Pack>) -> Vec<Arc<Pack>> {
        self.swap_packs(pruned, rewritten, false)
    }

    fn swap_packs(
        &mut self,
        replaced: &[[u8; 20]],
        merged: Option<Pack>,
        absorb: bool,
    ) -> Vec<Arc<Pack>> {
        let mut removed = Vec::new();
        let mut list = Vec::with_capacity(self.packs.len() + 1);
        let merged_sum = merged.as_ref().map(|m| m.checksum);
        let keep_new = merged_sum.is_some_and(|c| !self.packs.iter().any(|p| p.checksum == c));
        for p in self.packs.iter() {
            if replaced.contains(&p.checksum) && Some(p.checksum) != merged_sum {
                removed.push(p.clone());
            } else {
                list.push(p.clone());
            }
        }
        // After the packs newer than what it replaces, before the older ones:
        // where the newest replaced pack was, so lookups keep their order.
        if let (true, Some(merged)) = (keep_new, merged) {
            let at = self
                .packs
                .iter()
                .position(|p| replaced.contains(&p.checksum))
                .unwrap_or(list.len())
                .min(list.len());
            list.insert(at, Arc::new(merged));
        }
        if absorb {
            let mut absorbed = (*self.absorbed).clone();
            absorbed.extend(removed.iter().map(|p| p.checksum));
            self.absorbed = Arc::new(absorbed);
        }
        self.packs = Arc::new(list);
        removed
    }

    /// Total entries over all packs (an object stored twice counts twice).
    pub fn object_count(&self) -> u64 {
        self.packs.iter().map(|p| u64::from(p.index.len())).sum()
    }

    /// Where `oid` is stored (the first pack holding it).
    pub fn locate(&self, oid: &ObjectId) -> Option<Location> {
        self.packs.iter().enumerate().find_map(|(i, p)| {
            p.index.lookup(oid).map(|offset| Location {
                pack: i as u32,
                offset,
            })
        })
    }

    /// True if the store holds `oid`.
    pub fn contains(&self, oid: &ObjectId) -> bool {
        // git treats the empty tree as always present, stored or not.
        self.packs.iter().any(|p| p.index.find(oid).is_some()) || *oid == ObjectId::EMPTY_TREE_SHA1
    }

    /// Read a whole object, resolving delta chains.
    pub fn read(&self, oid: &ObjectId) -> Result<Option<(ObjectKind, Bytes)>, StoreError> {
        match self.locate(oid) {
            Some(loc) => self.read_at(loc).map(Some),
            None if *oid == ObjectId::EMPTY_TREE_SHA1 => Ok(Some((ObjectKind::Tree, Bytes::new()))),
            None => Ok(None),
        }
    }

    /// Read the object stored at `loc`, resolving delta chains.
    pub fn read_at(&self, loc: Location) -> Result<(ObjectKind, Bytes), StoreError> {
        self.resolve(loc, true)
    }

    /// Resolve the entry at `loc`. `cache_result` also caches the final
    /// object (bases met on the way are always cached).
    fn resolve(
        &self,
        loc: Location,
        cache_result: bool,
    ) -> Result<(ObjectKind, Bytes), StoreError> {
        // (pack, offset, inflated delta) from the wanted object down to the base.
        let mut chain: Vec<(u32, u64, Vec<u8>)> = Vec::new();
        let (mut pack_i, mut offset) = (loc.pack, loc.offset);
        let mut raw = Vec::new();
        let (kind, mut data) = loop {
            let pack = &self.packs[pack_i as usize];
            if let Some(hit) = self.cache_get((pack.id, offset)) {
                break hit;
            }
            if chain.len() > DELTA_CHAIN_MAX_DEPTH {
                return Err(StoreError::ChainTooDeep {
                    path: pack.path.clone(),
                    offset: loc.offset,
                    limit: DELTA_CHAIN_MAX_DEPTH,
                });
            }
            let pos = pack
                .entry_position(offset)
                .ok_or_else(|| StoreError::BadBaseOffset {
                    path: pack.path.clone(),
                    offset,
                })?;
            let end = pack.end_of(pos);
            raw.resize((end - offset) as usize, 0);
            pack.read_into(offset, &mut raw)?;
            let header = decode_header(&raw).map_err(|e| pack.corrupt_entry(offset, e))?;
            let body = &raw[header.header_len..];
            match header.kind {
                EntryKind::Base(kind) => {
                    let data = Bytes::from(pack.inflate(offset, body, header.size)?);
                    if cache_result || !chain.is_empty() {
                        self.cache_put((pack.id, offset), kind, data.clone());
                    }
                    break (kind, data);
                }
                delta_kind => {
                    let delta = pack.inflate(offset, body, header.size)?;
                    chain.push((pack_i, offset, delta));
                    let next = self.delta_base(pack_i, offset, delta_kind)?;
                    pack_i = next.pack;
                    offset = next.offset;
                }
            }
        };
        let mut out = Vec::new();
        while let Some((p, off, delta)) = chain.pop() {
            let pack = &self.packs[p as usize];
            delta::apply_delta(&data, &delta, &mut out, OBJECT_MAX_BYTES).map_err(|source| {
                StoreError::BadDelta {
                    path: pack.path.clone(),
                    offset: off,
                    source,
                }
            })?;
            data = Bytes::from(std::mem::take(&mut out));
            if cache_result || !chain.is_empty() {
                self.cache_put((pack.id, off), kind, data.clone());
            }
        }
        Ok((kind, data))
    }

    /// Where the base of the delta entry at (`pack_i`, `offset`) lives: an
    /// earlier offset of the same pack (OFS_DELTA), or the object named by a
    /// REF_DELTA — in the same pack when it is there, as git prefers.
    fn delta_base(
        &self,
        pack_i: u32,
        offset: u64,
        kind: EntryKind,
    ) -> Result<Location, StoreError> {
        let pack = &self.packs[pack_i as usize];
        match kind {
            EntryKind::OfsDelta { distance } => offset
                .checked_sub(distance)
                .filter(|_| distance > 0)
                .map(|base| Location {
                    pack: pack_i,
                    offset: base,
                })
                .ok_or_else(|| StoreError::BadBaseOffset {
                    path: pack.path.clone(),
                    offset,
                }),
            EntryKind::RefDelta { base } => match pack.index.lookup(&base) {
                Some(o) => Ok(Location {
                    pack: pack_i,
                    offset: o,
                }),
                None => self.locate(&base).ok_or_else(|| StoreError::MissingBase {
                    path: pack.path.clone(),
                    offset,
                    base,
                }),
            },
            EntryKind::Base(_) => Ok(Location {
                pack: pack_i,
                offset,
            }),
        }
    }

    fn cache_get(&self, key: CacheKey) -> Option<(ObjectKind, Bytes)> {
        match self.shared.bases.lock() {
            Ok(mut c) => c.get(key),
            Err(_) => None,
        }
    }

    fn cache_put(&self, key: CacheKey, kind: ObjectKind, data: Bytes) {
        if let Ok(mut c) = self.shared.bases.lock() {
            c.insert(key, kind, data);
        }
    }

    /// Read an object without caching the result itself (bases met on the
    /// way are still cached). For one-off reads of large objects such as
    /// blobs being re-encoded for a pack.
    pub fn read_uncached(&self, loc: Location) -> Result<(ObjectKind, Bytes), StoreError> {
        self.resolve(loc, false)
    }

    /// Kind and size of an object without inflating it where possible: for a
    /// whole object both come from the entry header; for a delta the size is
    /// the result size in the delta header and the kind is the chain base's.
    pub fn read_header(&self, oid: &ObjectId) -> Result<Option<(ObjectKind, u64)>, StoreError> {
        match self.locate(oid) {
            Some(loc) => self.read_header_at(loc).map(Some),
            None if *oid == ObjectId::EMPTY_TREE_SHA1 => Ok(Some((ObjectKind::Tree, 0))),
            None => Ok(None),
        }
    }

    /// [`ObjectStore::read_header`] for a known location.
    pub fn read_header_at(&self, loc: Location) -> Result<(ObjectKind, u64), StoreError> {
        let (mut pack_i, mut offset) = (loc.pack, loc.offset);
        let mut size = None;
        for _ in 0..=DELTA_CHAIN_MAX_DEPTH {
            let pack = &self.packs[pack_i as usize];
            let (start, end) =
                pack.entry_range(offset)
                    .ok_or_else(|| StoreError::BadBaseOffset {
                        path: pack.path.clone(),
                        offset,
                    })?;
            let prefix_len = ((end - start) as usize).min(HEADER_PREFIX_BYTES);
            let mut prefix = [0u8; HEADER_PREFIX_BYTES];
            pack.read_into(start, &mut prefix[..prefix_len])?;
            let prefix = &prefix[..prefix_len];
            let header = decode_header(prefix).map_err(|e| pack.corrupt_entry(offset, e))?;
            if let EntryKind::Base(kind) = header.kind {
                return Ok((kind, size.unwrap_or(header.size)));
            }
            if size.is_none() {
                let mut head = inflate_prefix(&prefix[header.header_len..], 32);
                if delta::delta_sizes(&head).is_err() {
                    // The compressed delta header did not fit in the prefix.
                    let raw = pack.raw_entry(offset)?;
                    head = inflate_prefix(&raw[header.header_len..], 32);
                }
                let (_, result) =
                    delta::delta_sizes(&head).map_err(|source| StoreError::BadDelta {
                        path: pack.path.clone(),
                        offset,
                        source,
                    })?;
                size = Some(result);
            }
            if !matches!(header.kind, EntryKind::Base(_)) {
                let next = self.delta_base(pack_i, offset, header.kind)?;
                pack_i = next.pack;
                offset = next.offset;
            }
        }
        Err(StoreError::ChainTooDeep {
            path: self.packs[loc.pack as usize].path.clone(),
            offset: loc.offset,
            limit: DELTA_CHAIN_MAX_DEPTH,
        })
    }

    /// The parsed header of commit `oid` (tree, parents, committer time),
    /// from a cache shared by all clones of this store. `Ok(None)` if the
    /// store does not hold `oid`.
    pub fn commit_info(&self, oid: &ObjectId) -> Result<Option<Arc<CommitInfo>>, StoreError> {
        if let Ok(cache) = self.shared.commits.lock() {
            if let Some(info) = cache.get(oid) {
                return Ok(Some(info.clone()));
            }
        }
        let Some(loc) = self.locate(oid) else {
            return Ok(None);
        };
        // Commits are rarely delta bases worth keeping; do not cache the body.
        let (kind, data) = self.resolve(loc, false)?;
        if kind != ObjectKind::Commit {
            return Err(StoreError::NotACommit { oid: *oid, kind });
        }
        let info = Arc::new(
            object::parse_commit(&data)
                .map_err(|source| StoreError::Malformed { oid: *oid, source })?,
        );
        if let Ok(mut cache) = self.shared.commits.lock() {
            if cache.len() >= COMMIT_CACHE_MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(*oid, info.clone());
        }
        Ok(Some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        guts_testkit::git_ok(dir, args)
    }

    /// A small repository packed by C git, copied into a fresh store dir.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        for i in 0..30 {
            let body: String = (0..200)
                .map(|j| format!("line {j} {}\n", if j == i { "changed" } else { "" }))
                .collect();
            std::fs::write(repo.join("file.txt"), body).unwrap();
            std::fs::write(repo.join(format!("f{}.txt", i % 3)), format!("{i}\n")).unwrap();
            guts_testkit::commit_all(&repo, &format!("c{i}"));
        }
        git(&repo, &["repack", "-adfq"]);
        let store = tmp.path().join("objects");
        std::fs::create_dir_all(store.join("pack")).unwrap();
        for e in std::fs::read_dir(repo.join(".git/objects/pack")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.ends_with(".pack") || name.ends_with(".idx") {
                std::fs::copy(&p, store.join("pack").join(name)).unwrap();
            }
        }
        (tmp, repo)
    }

    #[test]
    fn reads_match_git() {
        let (tmp, repo) = fixture();
        std::fs::write(tmp.path().join("objects/pack/tmp_pack_abc"), b"junk").unwrap();
        let store = ObjectStore::open(&tmp.path().join("objects")).unwrap();
        assert!(tmp.path().join("objects/pack/tmp_pack_abc").exists());
        assert_eq!(
            ObjectStore::remove_leftovers(&tmp.path().join("objects")).unwrap(),
            1
        );
        assert!(!tmp.path().join("objects/pack/tmp_pack_abc").exists());
        assert_eq!(store.packs().len(), 1);
        let all = git(
            &repo,
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname) %(objecttype) %(objectsize)",
            ],
        );
        let mut n = 0;
        for line in all.lines() {
            let mut parts = line.split(' ');
            let oid: ObjectId = parts.next().unwrap().parse().unwrap();
            let kind = ObjectKind::from_name(parts.next().unwrap().as_bytes()).unwrap();
            let size: u64 = parts.next().unwrap().parse().unwrap();
            let (k, data) = store.read(&oid).unwrap().unwrap();
            assert_eq!(k, kind);
            assert_eq!(data.len() as u64, size);
            assert_eq!(object::hash_object(k, &data), oid);
            assert_eq!(store.read_header(&oid).unwrap(), Some((kind, size)));
            n += 1;
        }
        assert_eq!(n as u64, store.object_count());
        assert!(store.read(&ObjectId::NULL_SHA1).unwrap().is_none());
        assert!(!store.contains(&ObjectId::NULL_SHA1));
    }

    #[test]
    fn snapshots_and_corruption() {
        let (tmp, _repo) = fixture();
        let empty = tmp.path().join("empty");
        let mut store = ObjectStore::open(&empty).unwrap();
        assert_eq!(store.object_count(), 0);
        let before = store.clone();
        let pack_dir = tmp.path().join("objects/pack");
        let mut pack = None;
        let mut idx = None;
        for e in std::fs::read_dir(&pack_dir).unwrap() {
            let p = e.unwrap().path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("pack") => pack = Some(p),
                Some("idx") => idx = Some(p),
                _ => {}
            }
        }
        let (pack, idx) = (pack.unwrap(), idx.unwrap());
        store.add_pack(&pack, &idx).unwrap();
        store.add_pack(&pack, &idx).unwrap();
        assert_eq!(store.packs().len(), 1);
        assert_eq!(before.packs().len(), 0);

        // Flip bytes in the middle of every entry: reads must fail, not panic.
        let mut bytes = std::fs::read(&pack).unwrap();
        let corrupt_dir = tmp.path().join("corrupt/pack");
        std::fs::create_dir_all(&corrupt_dir).unwrap();
        let p = &store.packs()[0];
        for &(off, _) in p.entries_by_offset() {
            let (s, e) = p.entry_range(off).unwrap();
            let mid = ((s + e) / 2) as usize;
            bytes[mid] ^= 0x5a;
        }
        std::fs::write(corrupt_dir.join(pack.file_name().unwrap()), &bytes).unwrap();
        std::fs::copy(&idx, corrupt_dir.join(idx.file_name().unwrap())).unwrap();
        let bad = ObjectStore::open(&tmp.path().join("corrupt")).unwrap();
        let mut errors = 0;
        for e in bad.packs()[0].index().entries() {
            match bad.read(&e.oid) {
                Err(_) => errors += 1,
                Ok(Some((k, d))) => assert_ne!(object::hash_object(k, &d), e.oid),
                Ok(None) => unreachable!(),
            }
            let _ = bad.read_header(&e.oid);
        }
        assert!(errors > 0);

        // A truncated pack no longer matches its index.
        std::fs::write(
            corrupt_dir.join(pack.file_name().unwrap()),
            &bytes[..bytes.len() - 7],
        )
        .unwrap();
        assert!(ObjectStore::open(&tmp.path().join("corrupt")).is_err());
    }
}
