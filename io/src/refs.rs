//! The durable per-repository ref store.
//!
//! State is a sorted map of ref names to object ids plus `HEAD`, a symbolic
//! ref. It lives in memory and on disk as two files in the repository
//! directory:
//!
//! - [`LOG_FILE_NAME`]: an append-only log of applied updates. Each
//!   [`RefStore::apply`] writes one checksummed record and `fdatasync`s it
//!   before returning `Ok`; that is the durability point. Updates can also
//!   be staged ([`RefStore::stage`]: checked and visible in memory, not yet
//!   written) and committed together ([`RefStore::commit`]): one record and
//!   one `fdatasync` for everything one finalized block changed in the
//!   repository (group commit).
//! - [`SNAPSHOT_FILE_NAME`]: the whole state at some sequence number,
//!   written by compaction (every [`COMPACT_EVERY_RECORDS`] records and on
//!   demand) through a temporary file, `fsync`, `rename` and a directory
//!   `fsync`; only then is the log emptied.
//!
//! [`RefStore::open`] loads the snapshot and replays the log after it. A
//! torn tail (the last record cut short or failing its checksum, the only
//! damage a crash can cause because records are synced one at a time) is
//! logged and truncated away so later appends follow valid data. Damage
//! followed by a valid record is not a torn tail: it is corruption of
//! acknowledged data, and `open` refuses it with [`RefError::Corrupt`].
//!
//! Log record layout (integers little-endian):
//!
//! ```text
//! magic "GRL1" | payload_len u32 | crc32(payload_len bytes ++ payload) u32 | payload
//! payload = seq u64 | flags u8 (bit 0: HEAD changes, bit 1: height) | count u32
//!           | count × (name_len u16 | name | old oid [20] | new oid [20])
//!           | if HEAD changes: target_len u16 | target
//!           | if height: height u64
//! ```
//!
//! A record with a height holds everything finalized block `height`
//! changed in this repository: the store's applied height
//! ([`RefStore::applied_height`]) is the greatest one recorded, so a block
//! delivered again after a restart is known to be here.
//!
//! A null `new` is a deletion. `old` is stored too so that replay can check
//! that the log and the snapshot agree.
//!
//! Snapshot layout:
//!
//! ```text
//! magic "GRSNAP02" | payload_len u64 | crc32(payload_len bytes ++ payload) u32 | payload
//! payload = seq u64 | height u64 | head_len u16 | head | count u64
//!           | count × (name_len u16 | name | oid [20])
//! ```
//!
//! Snapshots written before heights were recorded ("GRSNAP01", no height
//! field) are read with height 0.
//!
//! `HEAD` and `packed-refs` are exported in C git's formats ([`GitExport`]),
//! so a copy of the directory (with its `objects/`) is a bare repository
//! `git` can read: at compaction, at `open` when they are missing or behind
//! the log, and by the owner after each batch it applies. Those files are
//! an export, never read back into the state: the log is the truth.
//!
//! [`read_state`] reads a store another process has open (a backup or a
//! check of a running node's data): no lock, nothing written.
//!
//! One process at a time: `open` takes an exclusive `flock` on the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::oid::ObjectId;
use crate::refname::{check_ref_name, RefNameError, REF_NAME_MAX_BYTES};

/// File name of the update log inside the repository directory.
pub const LOG_FILE_NAME: &str = "refs.log";
/// File name of the compacted snapshot inside the repository directory.
pub const SNAPSHOT_FILE_NAME: &str = "refs.snapshot";
/// Temporary name a snapshot is written under before it is renamed.
const SNAPSHOT_TMP_FILE_NAME: &str = "refs.snapshot.tmp";
/// Compact after this many records have been appended since the last
/// snapshot. Bounds replay time and log size.
pub const COMPACT_EVERY_RECORDS: u64 = 1024;
/// The largest log record payload, in bytes. A batch whose record would be
/// larger is refused; a record header claiming more is damage.
pub const LOG_RECORD_MAX_BYTES: usize = 64 << 20;
/// Where `HEAD` points in a new store.
pub const DEFAULT_HEAD_TARGET: &str = "refs/heads/main";

const RECORD_MAGIC: [u8; 4] = *b"GRL1";
/// magic + payload_len + crc.
const RECORD_HEADER_BYTES: usize = 12;
/// seq + flags + count: the smallest possible payload.
const RECORD_MIN_PAYLOAD_BYTES: usize = 8 + 1 + 4;
const RECORD_FLAG_HEAD: u8 = 1;
const RECORD_FLAG_HEIGHT: u8 = 2;

const SNAPSHOT_MAGIC: [u8; 8] = *b"GRSNAP02";
/// Snapshots without the height field.
const SNAPSHOT_MAGIC_V1: [u8; 8] = *b"GRSNAP01";
/// magic + payload_len + crc.
const SNAPSHOT_HEADER_BYTES: usize = 8 + 8 + 4;

/// The header C git writes on a `packed-refs` file whose entries are sorted
/// but whose tags are not peeled (we cannot peel without the objects).
const PACKED_REFS_HEADER: &str = "# pack-refs with: sorted \n";

/// One compare-and-swap ref update.
///
/// `old` is the value the ref must have now ([`ObjectId::NULL_SHA1`]: the
/// ref must not exist); `new` is its value afterwards (`NULL_SHA1`: delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    /// Full ref name, e.g. `refs/heads/main`.
    pub name: String,
    /// Expected current value; null means "must not exist".
    pub old: ObjectId,
    /// New value; null means "delete".
    pub new: ObjectId,
}

/// Errors from the ref store.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// Compare-and-swap failed: the ref does not have the expected value.
    #[error("ref {name} is at {actual}, expected {expected}")]
    Stale {
        /// The ref.
        name: String,
        /// The value the update expected (null: must not exist).
        expected: ObjectId,
        /// The value it has (null: does not exist).
        actual: ObjectId,
    },
    /// A ref name or `HEAD` target broke git's ref name rules.
    #[error("invalid ref name: {0}")]
    InvalidName(#[from] RefNameError),
    /// The update would make one ref a directory of another
    /// (`refs/heads/a` and `refs/heads/a/b`).
    #[error("ref {name} conflicts with {existing}: one would be a directory of the other")]
    DirectoryFileConflict {
        /// The ref being created or updated.
        name: String,
        /// The ref (existing, or created by the same batch) it conflicts with.
        existing: String,
    },
    /// The same ref appears twice in one batch.
    #[error("ref {name} appears more than once in one batch")]
    DuplicateRef {
        /// The repeated ref.
        name: String,
    },
    /// The batch is too large for one log record.
    #[error("ref batch needs a {record_bytes}-byte log record, over the limit of {limit_bytes}")]
    BatchTooLarge {
        /// Size of the record the batch would need.
        record_bytes: usize,
        /// [`LOG_RECORD_MAX_BYTES`].
        limit_bytes: usize,
    },
    /// The on-disk state is damaged in a way that is not a torn tail.
    #[error("ref store file {path} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: DecodeError,
    },
    /// Another process (or another `RefStore` in this one) has the store open.
    #[error("ref store log {path} is locked by another opener")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// An earlier append failed in a way that leaves the log's durable
    /// contents unknown; reopen the store to find out what survived.
    #[error("ref store in {dir} failed an earlier write; reopen it")]
    Poisoned {
        /// The repository directory.
        dir: PathBuf,
    },
    /// Compaction was asked for while updates are staged: the snapshot
    /// would hold values the log does not have yet.
    #[error("ref store has staged updates; commit them first")]
    Staged,
    /// An I/O error. From `apply` or `set_head` it means the update may or
    /// may not be durable; the store is poisoned and must be reopened.
    #[error("ref store I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Why a record of the ref log or the snapshot does not decode; each
/// carries the value that was wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("short record header ({len_bytes} bytes)")]
    ShortRecordHeader { len_bytes: usize },
    #[error("bad record magic")]
    RecordMagic,
    #[error("bad record length {len_bytes}")]
    RecordLength {
        len_bytes: usize,
        /// The largest length a record may have ([`LOG_RECORD_MAX_BYTES`]).
        limit_bytes: usize,
    },
    #[error("short record ({have_bytes} of {len_bytes} payload bytes)")]
    ShortRecord { have_bytes: usize, len_bytes: usize },
    #[error("bad record checksum")]
    RecordChecksum,
    #[error("unknown record flags {flags:#04x}")]
    UnknownFlags { flags: u8 },
    #[error("{count} trailing bytes in record")]
    TrailingRecordBytes { count: usize },
    #[error("{reason}, but a valid record follows at offset {later}")]
    ValidRecordFollows {
        reason: Box<DecodeError>,
        later: usize,
    },
    #[error("log starts at sequence {seq} but the snapshot ends at {snapshot_seq}")]
    LogStart { seq: u64, snapshot_seq: u64 },
    #[error("sequence {seq} where {expected} was expected")]
    Sequence { seq: u64, expected: u64 },
    #[error("record {seq} moves {name} from {old} but it is at {actual}")]
    ReplayStale {
        seq: u64,
        name: String,
        old: ObjectId,
        actual: ObjectId,
    },
    #[error("short snapshot header ({len_bytes} bytes)")]
    ShortSnapshotHeader { len_bytes: usize },
    #[error("bad snapshot magic")]
    SnapshotMagic,
    #[error("snapshot claims {claimed_bytes} payload bytes, file has {actual_bytes}")]
    SnapshotLength {
        claimed_bytes: u64,
        actual_bytes: usize,
    },
    #[error("bad snapshot checksum")]
    SnapshotChecksum,
    #[error("ref {name} has the null id")]
    NullId { name: String },
    #[error("ref {name} is out of order")]
    OutOfOrder { name: String },
    #[error("{count} trailing bytes in snapshot")]
    TrailingSnapshotBytes { count: usize },
    #[error("payload ends inside a {len_bytes}-byte field")]
    ShortField { len_bytes: usize },
    #[error("{0}")]
    Oid(#[from] crate::oid::OidError),
    #[error("{0}")]
    Name(#[from] RefNameError),
    #[error("ref name is not UTF-8")]
    NameNotUtf8,
}

/// The durable ref store of one repository. Not shared: one owner calls
/// it, and one process at a time opens a directory.
#[derive(Debug)]
pub struct RefStore {
    dir: PathBuf,
    log_path: PathBuf,
    /// Opened read + append; holds the exclusive `flock`.
    log: File,
    /// Length of the valid log contents.
    log_len: u64,
    refs: BTreeMap<String, ObjectId>,
    head: String,
    /// Sequence number of the last applied record.
    seq: u64,
    /// Greatest block height recorded (see [`RefStore::applied_height`]).
    height: u64,
    /// Updates staged since the last commit, if any.
    staged: Option<Staged>,
    /// Records appended to the log since the snapshot.
    records_since_snapshot: u64,
    /// Set when an append failed in a way that leaves the log unknown.
    poisoned: bool,
    /// Reused record buffer.
    record_buf: Vec<u8>,
    /// Refs changed since the last export was taken
    /// ([`take_git_export`](Self::take_git_export)), to be written as
    /// loose ref files.
    unexported: BTreeSet<String>,
    /// The next export must be whole: a deletion, a `HEAD` change, too
    /// many loose files, or a failed export happened since the last one.
    unexported_whole: bool,
    /// Loose ref files written since the last whole export.
    loose_exported: usize,
}

impl RefStore {
    /// Open the store in `dir`, creating the directory and files if missing,
    /// and recover: load the snapshot, replay the log, truncate a torn tail.
    pub fn open(dir: &Path) -> Result<RefStore, RefError> {
        fs::create_dir_all(dir)?;
        let log_path = dir.join(LOG_FILE_NAME);
        let snapshot_path = dir.join(SNAPSHOT_FILE_NAME);
        let log_existed = exists(&log_path)?;

        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)?;
        lock_exclusive(&log, &log_path)?;
        if !log_existed {
            // Make the new log's directory entry durable, and the directory's
            // own entry in case `create_dir_all` just made it.
            sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        match fs::remove_file(dir.join(SNAPSHOT_TMP_FILE_NAME)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }

        let mut state = match fs::read(&snapshot_path) {
            Ok(bytes) => decode_snapshot(&bytes).map_err(|(offset, reason)| RefError::Corrupt {
                path: snapshot_path.clone(),
                offset,
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::new(),
            Err(e) => return Err(e.into()),
        };
        let snapshot_seq = state.seq;

        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)?;
        let replay =
            replay_log(&bytes, &mut state).map_err(|(offset, reason)| RefError::Corrupt {
                path: log_path.clone(),
                offset,
                reason,
            })?;

        let mut log_len = replay.valid_end as u64;
        if let Some(torn) = &replay.torn {
            tracing::warn!(
                path = %log_path.display(),
                offset = torn.offset,
                dropped_bytes = bytes.len() - torn.offset,
                reason = %torn.reason,
                "ref log has a torn tail; truncating it"
            );
        }
        if replay.applied == 0 && replay.valid_end > 0 {
            // Every record is already in the snapshot: a crash hit
            // compaction between the snapshot rename and the log reset.
            tracing::info!(
                path = %log_path.display(),
                snapshot_seq,
                "ref log holds only snapshotted records; resetting it"
            );
            log_len = 0;
        }
        if log_len != bytes.len() as u64 {
            log.set_len(log_len)?;
            log.sync_all()?;
        }

        let store = RefStore {
            dir: dir.to_path_buf(),
            log_path,
            log,
            log_len,
            refs: state.refs,
            head: state.head,
            seq: state.seq,
            height: state.height,
            staged: None,
            records_since_snapshot: replay.applied,
            poisoned: false,
            record_buf: Vec::new(),
            unexported: BTreeSet::new(),
            unexported_whole: false,
            loose_exported: 0,
        };
        // The export may be missing (a new store) or behind the log (the
        // node stopped between applying a batch and exporting it): bring
        // it up to date. It is compared, never read back into the state.
        // Loose ref files that agree with the state are current too: a
        // start opening every store rewrites nothing after ordinary pushes.
        if !store.export_is_current()? {
            store.git_export().write()?;
        }
        Ok(store)
    }

    /// Whether what C git reads in the directory (`HEAD`, and
    /// `packed-refs` with the loose ref files over it) is this state.
    fn export_is_current(&self) -> io::Result<bool> {
        let head = match fs::read(self.dir.join("HEAD")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(head == format!("ref: {}\n", self.head).as_bytes()
            && self.dir.join("refs").is_dir()
            && exported_refs(&self.dir)?.as_ref() == Some(&self.refs))
    }

    /// The value of a ref, if it exists.
    pub fn get(&self, name: &str) -> Option<ObjectId> {
        self.refs.get(name).copied()
    }

    /// All refs, sorted by name (bytewise, as git sorts them).
    pub fn refs(&self) -> &BTreeMap<String, ObjectId> {
        &self.refs
    }

    /// The ref `HEAD` points at, e.g. `refs/heads/main`.
    pub fn head_target(&self) -> &str {
        &self.head
    }

    /// The object `HEAD` resolves to; `None` while its branch is unborn.
    pub fn head_oid(&self) -> Option<ObjectId> {
        self.get(&self.head)
    }

    /// Number of records applied since the store was created (updates and
    /// `HEAD` changes). Increases by one with each successful `apply` of a
    /// non-empty batch and each `set_head` that changes `HEAD`.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The greatest finalized block height whose changes to this repository
    /// are all durable here (0 when none was recorded).
    pub fn applied_height(&self) -> u64 {
        self.height
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Validate a batch without writing: ref names, no ref twice,
    /// compare-and-swap against the current state, and no
    /// directory/file conflict in the state the batch would produce
    /// (a deletion in the same batch frees a path).
    pub fn check(&self, updates: &[RefUpdate]) -> Result<(), RefError> {
        let mut batch: HashMap<&str, &RefUpdate> = HashMap::with_capacity(updates.len());
        for update in updates {
            check_ref_name(update.name.as_bytes())?;
            if batch.insert(update.name.as_str(), update).is_some() {
                return Err(RefError::DuplicateRef {
                    name: update.name.clone(),
                });
            }
            let actual = self.get(&update.name).unwrap_or(ObjectId::NULL_SHA1);
            if actual != update.old {
                return Err(RefError::Stale {
                    name: update.name.clone(),
                    expected: update.old,
                    actual,
                });
            }
        }

        // Whether `name` exists once the batch is applied.
        let exists_after = |name: &str| match batch.get(name) {
            Some(update) => !update.new.is_null(),
            None => self.refs.contains_key(name),
        };
        for update in updates.iter().filter(|u| !u.new.is_null()) {
            let name = update.name.as_str();
            // A ref at one of our parent directories. Conflicts inside the
            // batch are found here too, from the deeper name's side.
            for (i, byte) in name.bytes().enumerate() {
                if byte == b'/' && exists_after(&name[..i]) {
                    return Err(RefError::DirectoryFileConflict {
                        name: name.to_owned(),
                        existing: name[..i].to_owned(),
                    });
                }
            }
            // An existing ref below us that the batch does not delete.
            let dir = format!("{name}/");
            let below = self
                .refs
                .range::<str, _>((Bound::Included(dir.as_str()), Bound::Unbounded))
                .take_while(|(existing, _)| existing.starts_with(&dir));
            for (existing, _) in below {
                if exists_after(existing) {
                    return Err(RefError::DirectoryFileConflict {
                        name: name.to_owned(),
                        existing: existing.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Apply a batch atomically: [`check`](Self::check) it, append one log
    /// record and `fdatasync` it, then update memory. Returns `Ok` only once
    /// the batch is durable; on any error nothing changed in memory. An
    /// empty batch writes nothing. Updates staged before are committed with
    /// it.
    pub fn apply(&mut self, updates: &[RefUpdate]) -> Result<(), RefError> {
        self.stage(updates)?;
        self.commit(None)
    }

    /// Check a batch against the current state (staged updates included)
    /// and make it visible in memory without writing it: the next
    /// [`commit`](Self::commit) writes everything staged as one record. On
    /// error nothing changed. Until that commit the staged values are not
    /// durable; a store dropped with updates staged forgets them.
    pub fn stage(&mut self, updates: &[RefUpdate]) -> Result<(), RefError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.ensure_not_poisoned()?;
        self.check(updates)?;
        let staged = self.staged.get_or_insert_with(Staged::default);
        for update in updates {
            staged
                .before
                .entry(update.name.clone())
                .or_insert(update.old);
            if update.new.is_null() {
                self.refs.remove(&update.name);
                // A deleted ref must leave packed-refs too.
                self.unexported_whole = true;
            } else {
                self.refs.insert(update.name.clone(), update.new);
                if !self.unexported_whole {
                    self.unexported.insert(update.name.clone());
                }
            }
        }
        if self.unexported.len() > LOOSE_EXPORT_BATCH_MAX {
            self.unexported_whole = true;
        }
        if self.unexported_whole {
            self.unexported.clear();
        }
        Ok(())
    }

    /// Write everything staged since the last commit as one record (the
    /// net change of each ref: its value before the first staged update
    /// and after the last; a ref staged back to where it was is left out)
    /// and `fdatasync` it. With `height`, the record also says that block
    /// `height` is complete here ([`applied_height`](Self::applied_height)),
    /// written even if the block changed nothing. Nothing staged and no new
    /// height writes nothing. On error the staged updates are undone in
    /// memory.
    pub fn commit(&mut self, height: Option<u64>) -> Result<(), RefError> {
        let staged = self.staged.take().unwrap_or_default();
        let height = height.filter(|&h| h > self.height);
        let mut net: Vec<RefUpdate> = Vec::with_capacity(staged.before.len());
        for (name, old) in &staged.before {
            let new = self.get(name).unwrap_or(ObjectId::NULL_SHA1);
            if new != *old {
                net.push(RefUpdate {
                    name: name.clone(),
                    old: *old,
                    new,
                });
            }
        }
        let head = staged
            .head_before
            .as_ref()
            .filter(|before| **before != self.head)
            .map(|_| self.head.clone());
        if net.is_empty() && head.is_none() && height.is_none() {
            return Ok(());
        }
        let written = self.ensure_not_poisoned().and_then(|()| {
            let seq = self.seq + 1;
            let mut record = std::mem::take(&mut self.record_buf);
            let written = encode_record(&mut record, seq, &net, head.as_deref(), height)
                .and_then(|()| self.append(&record));
            self.record_buf = record;
            written
        });
        if let Err(e) = written {
            for (name, old) in staged.before {
                if old.is_null() {
                    self.refs.remove(&name);
                } else {
                    self.refs.insert(name, old);
                }
            }
            if let Some(before) = staged.head_before {
                self.head = before;
            }
            // An export taken meanwhile may hold the undone values.
            self.export_failed();
            return Err(e);
        }
        if let Some(h) = height {
            self.height = h;
        }
        self.record_applied(self.seq + 1);
        Ok(())
    }

    /// Point `HEAD` at `target` (a ref name under `refs/`, which need not
    /// exist yet). Durable like [`apply`](Self::apply) (committed with
    /// anything staged); setting the current target again writes nothing.
    pub fn set_head(&mut self, target: &str) -> Result<(), RefError> {
        self.stage_head(target)?;
        self.commit(None)
    }

    /// Point `HEAD` at `target` in memory, written by the next
    /// [`commit`](Self::commit) like a staged update.
    pub fn stage_head(&mut self, target: &str) -> Result<(), RefError> {
        check_ref_name(target.as_bytes())?;
        if target == self.head {
            return Ok(());
        }
        self.ensure_not_poisoned()?;
        let staged = self.staged.get_or_insert_with(Staged::default);
        if staged.head_before.is_none() {
            staged.head_before = Some(self.head.clone());
        }
        self.head = target.to_owned();
        self.unexported_whole = true;
        self.unexported.clear();
        Ok(())
    }

    /// Write a snapshot of the whole state (temporary file, `fsync`,
    /// `rename`, directory `fsync`), then empty the log and export the git
    /// files ([`export_git_files`](Self::export_git_files)).
    pub fn compact(&mut self) -> Result<(), RefError> {
        self.ensure_not_poisoned()?;
        if self.staged.is_some() {
            // The snapshot would hold values not in the log yet.
            return Err(RefError::Staged);
        }
        let snapshot = encode_snapshot(self.seq, self.height, &self.head, &self.refs);
        let tmp_path = self.dir.join(SNAPSHOT_TMP_FILE_NAME);
        {
            let mut tmp = File::create(&tmp_path)?;
            tmp.write_all(&snapshot)?;
            tmp.sync_all()?;
        }
        fs::rename(&tmp_path, self.dir.join(SNAPSHOT_FILE_NAME))?;
        sync_dir(&self.dir)?;
        // The snapshot is durable; the log's records are now redundant. If
        // we crash before the reset is durable, `open` skips them.
        self.log.set_len(0)?;
        self.log_len = 0;
        self.records_since_snapshot = 0;
        self.log.sync_all()?;
        self.export_git_files()?;
        self.unexported.clear();
        self.unexported_whole = false;
        self.loose_exported = 0;
        Ok(())
    }

    /// Write `HEAD` (`ref: <target>`) and `packed-refs` (sorted, unpeeled)
    /// in C git's formats, each through a temporary file, `fsync` and
    /// `rename`, and make sure a `refs/` directory exists, so that a copy of
    /// the repository directory (with its `objects/`) is a bare repository C
    /// git can read. These files are an export: the store never reads them.
    pub fn export_git_files(&self) -> Result<(), RefError> {
        self.git_export().write()?;
        Ok(())
    }

    /// The current state as C git's `HEAD` and `packed-refs`, to be written
    /// later, elsewhere (off the thread that applies updates):
    /// [`GitExport::write`].
    pub fn git_export(&self) -> GitExport {
        GitExport {
            dir: self.dir.clone(),
            seq: self.seq,
            head: format!("ref: {}\n", self.head),
            content: ExportContent::Whole(packed_refs_text(&self.refs)),
        }
    }

    /// What changed since the last export taken here, to be written later,
    /// elsewhere ([`GitExport::write`]): the refs created or moved, as
    /// loose ref files beside an unchanged `packed-refs` (what C git itself
    /// writes for a push), so that a push moving one ref of 100,000 writes
    /// one small file, not all of them. Whole (`packed-refs` rewritten,
    /// loose files removed) after a deletion or a `HEAD` change, when the
    /// batch changed more than [`LOOSE_EXPORT_BATCH_MAX`] refs, once
    /// [`LOOSE_EXPORT_TOTAL_MAX`] loose files were written since the last
    /// whole one, and after [`export_failed`](Self::export_failed).
    /// Compaction writes a whole one itself.
    pub fn take_git_export(&mut self) -> GitExport {
        let names = std::mem::take(&mut self.unexported);
        if self.unexported_whole || self.loose_exported + names.len() > LOOSE_EXPORT_TOTAL_MAX {
            self.unexported_whole = false;
            self.loose_exported = 0;
            return self.git_export();
        }
        self.loose_exported += names.len();
        let loose = names
            .into_iter()
            .filter_map(|name| self.refs.get(&name).map(|oid| (name, *oid)))
            .collect();
        GitExport {
            dir: self.dir.clone(),
            seq: self.seq,
            head: format!("ref: {}\n", self.head),
            content: ExportContent::Loose(loose),
        }
    }

    /// An export taken with [`take_git_export`](Self::take_git_export) was
    /// not written: the next one is whole, so nothing it held is lost.
    pub fn export_failed(&mut self) {
        self.unexported_whole = true;
        self.unexported.clear();
    }

    /// True after a failed write: the store refuses writes until reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn ensure_not_poisoned(&self) -> Result<(), RefError> {
        if self.poisoned {
            return Err(RefError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Append one encoded record and `fdatasync` it.
    fn append(&mut self, record: &[u8]) -> Result<(), RefError> {
        if let Err(e) = self.log.write_all(record) {
            // Cut a partial write off so later appends do not land after
            // garbage; if even that fails, the log is in an unknown state.
            if self.log.set_len(self.log_len).is_err() {
                self.poisoned = true;
            }
            return Err(e.into());
        }
        if let Err(e) = self.log.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages: whether the record survives is unknown until reopen.
            self.poisoned = true;
            return Err(e.into());
        }
        self.log_len += record.len() as u64;
        Ok(())
    }

    fn record_applied(&mut self, seq: u64) {
        debug_assert_eq!(seq, self.seq + 1, "ref log sequence must be contiguous");
        self.seq = seq;
        self.records_since_snapshot += 1;
        if self.records_since_snapshot >= COMPACT_EVERY_RECORDS {
            // The record is durable already; a failed compaction must not
            // turn an applied update into an error. The next one retries.
            if let Err(e) = self.compact() {
                tracing::warn!(
                    path = %self.log_path.display(),
                    error = %e,
                    "ref store compaction failed; will retry"
                );
            }
        }
    }
}

/// Most refs one batch may change and still be exported as loose ref
/// files; a larger one rewrites `packed-refs`.
pub const LOOSE_EXPORT_BATCH_MAX: usize = 64;
/// Most loose ref files written between two whole exports (compaction
/// writes a whole one every [`COMPACT_EVERY_RECORDS`] records anyway).
pub const LOOSE_EXPORT_TOTAL_MAX: usize = 4096;

/// `HEAD` and the refs of one ref store at one sequence number, in C
/// git's formats: what C git reads of a copy of the repository. `Send`, so
/// the files can be written off the thread that owns the store.
#[derive(Debug, Clone)]
pub struct GitExport {
    dir: PathBuf,
    seq: u64,
    head: String,
    content: ExportContent,
}

#[derive(Debug, Clone)]
enum ExportContent {
    /// The whole state as `packed-refs`; no loose ref files.
    Whole(String),
    /// Refs created or moved since the last export, as loose ref files
    /// (`refs/...`, which C git reads before `packed-refs`).
    Loose(Vec<(String, ObjectId)>),
}

impl GitExport {
    /// The sequence number of the state this export holds.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The contents of `packed-refs`, for a whole export.
    pub fn packed_refs(&self) -> Option<&str> {
        match &self.content {
            ExportContent::Whole(text) => Some(text),
            ExportContent::Loose(_) => None,
        }
    }

    /// The loose ref files this export writes (none for a whole one).
    pub fn loose_refs(&self) -> &[(String, ObjectId)] {
        match &self.content {
            ExportContent::Whole(_) => &[],
            ExportContent::Loose(refs) => refs,
        }
    }

    /// Whether the files on disk already hold this (whole) export: `HEAD`,
    /// `packed-refs`, and no loose ref file that would hide it.
    pub fn is_current(&self) -> io::Result<bool> {
        let read = |name: &str| match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let ExportContent::Whole(packed_refs) = &self.content else {
            return Ok(false);
        };
        Ok(read("HEAD")?.as_deref() == Some(self.head.as_bytes())
            && read("packed-refs")?.as_deref() == Some(packed_refs.as_bytes())
            && self.dir.join("refs").is_dir()
            && !has_loose_refs(&self.dir.join("refs"))?)
    }

    /// Write the export: a whole one writes `packed-refs` and `HEAD`
    /// atomically (temporary file, `fsync`, `rename`, directory `fsync`)
    /// and then removes the loose ref files; a loose one writes each ref
    /// file the same way (as `NAME.lock`, which C git never reads as a
    /// ref). Exports of one directory are written one at a time and never
    /// go backwards: an export older than one already written is skipped
    /// (returns `false`).
    pub fn write(&self) -> io::Result<bool> {
        let guard = export_guard(&self.dir);
        let mut last = guard.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|last| self.seq < last) {
            return Ok(false);
        }
        match &self.content {
            ExportContent::Whole(packed_refs) => {
                write_file_atomically(&self.dir, "packed-refs", packed_refs.as_bytes())?;
                write_file_atomically(&self.dir, "HEAD", self.head.as_bytes())?;
                let refs = self.dir.join("refs");
                fs::create_dir_all(&refs)?;
                remove_loose_refs(&refs, true)?;
                sync_dir(&self.dir)?;
            }
            ExportContent::Loose(refs) => {
                let mut dirs = BTreeSet::new();
                for (name, oid) in refs {
                    let path = self.dir.join(name);
                    let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
                    fs::create_dir_all(&parent)?;
                    let lock = path.with_file_name(format!(
                        "{}.lock",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    {
                        let mut f = File::create(&lock)?;
                        f.write_all(format!("{oid}\n").as_bytes())?;
                        f.sync_all()?;
                    }
                    fs::rename(&lock, &path)?;
                    dirs.insert(parent);
                }
                for d in dirs {
                    sync_dir(&d)?;
                }
            }
        }
        *last = Some(self.seq);
        Ok(true)
    }
}

/// Whether any file (a loose ref) is under `dir`.
fn has_loose_refs(dir: &Path) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            if has_loose_refs(&e.path())? {
                return Ok(true);
            }
        } else {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove every file under `dir` and the directories left empty, but for
/// `refs/heads` and `refs/tags` (`top`: `dir` is `refs/`), which a bare
/// repository has.
fn remove_loose_refs(dir: &Path, top: bool) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            remove_loose_refs(&path, false)?;
            let keep = top && (e.file_name() == "heads" || e.file_name() == "tags");
            if !keep {
                match fs::remove_dir(&path) {
                    Ok(()) => {}
                    // Not empty (another writer) or gone: harmless.
                    Err(_) if path.exists() => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The refs C git sees in repository directory `dir`: `packed-refs`, with
/// the loose ref files under `refs/` read over it (`None` if
/// `packed-refs` is missing or a file does not read as a ref).
pub fn exported_refs(dir: &Path) -> io::Result<Option<BTreeMap<String, ObjectId>>> {
    let packed = match fs::read_to_string(dir.join("packed-refs")) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut refs = BTreeMap::new();
    for line in packed.lines() {
        if line.starts_with('#') || line.starts_with('^') {
            continue;
        }
        let Some((hex, name)) = line.split_once(' ') else {
            return Ok(None);
        };
        let Ok(oid) = ObjectId::from_hex(hex.as_bytes()) else {
            return Ok(None);
        };
        refs.insert(name.to_owned(), oid);
    }
    fn walk(dir: &Path, name: &str, refs: &mut BTreeMap<String, ObjectId>) -> io::Result<bool> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let child = format!("{name}/{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                if !walk(&e.path(), &child, refs)? {
                    return Ok(false);
                }
            } else if !child.ends_with(".lock") {
                let text = fs::read_to_string(e.path())?;
                let Ok(oid) = ObjectId::from_hex(text.trim_end().as_bytes()) else {
                    return Ok(false);
                };
                refs.insert(child, oid);
            }
        }
        Ok(true)
    }
    if !walk(&dir.join("refs"), "refs", &mut refs)? {
        return Ok(None);
    }
    Ok(Some(refs))
}

/// A snapshot file ([`SNAPSHOT_FILE_NAME`]) holding `state`: with an empty
/// log next to it, a store whose state is `state` (how a backup is
/// restored).
pub fn snapshot_file_bytes(state: &RefState) -> Vec<u8> {
    encode_snapshot(state.seq, state.height, &state.head, &state.refs)
}

/// `refs` as C git's `packed-refs` file (sorted, unpeeled).
pub fn packed_refs_text(refs: &BTreeMap<String, ObjectId>) -> String {
    let mut packed = String::with_capacity(PACKED_REFS_HEADER.len() + refs.len() * 64);
    packed.push_str(PACKED_REFS_HEADER);
    for (name, oid) in refs {
        oid.write_hex(&mut packed);
        packed.push(' ');
        packed.push_str(name);
        packed.push('\n');
    }
    packed
}

/// The last sequence exported per repository directory in this process,
/// each behind its own lock: exports of one directory are serialised and
/// monotonic whichever store instance or thread writes them.
fn export_guard(dir: &Path) -> std::sync::Arc<std::sync::Mutex<Option<u64>>> {
    type Guards = std::sync::Mutex<HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<Option<u64>>>>>;
    static GUARDS: std::sync::OnceLock<Guards> = std::sync::OnceLock::new();
    let mut guards = GUARDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    guards.entry(dir.to_path_buf()).or_default().clone()
}

/// A ref store's state as [`read_state`] found it.
#[derive(Debug)]
pub struct RefState {
    /// All refs, sorted by name.
    pub refs: BTreeMap<String, ObjectId>,
    /// Where `HEAD` points.
    pub head: String,
    /// Sequence number of the last record.
    pub seq: u64,
    /// Greatest finalized block height recorded.
    pub height: u64,
    /// Damage at the end of the log that recovery would drop, if any.
    pub torn_tail: Option<TornTailReport>,
}

/// Damage at the end of a ref log: a record cut short by a crash, or the
/// last record damaged later (recovery cannot tell the two apart).
#[derive(Debug, PartialEq, Eq)]
pub struct TornTailReport {
    /// The log file.
    pub path: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes from there to the end of the log.
    pub bytes: u64,
    /// Why the record there does not decode.
    pub reason: DecodeError,
}

/// Attempts [`read_state`] makes when compaction replaces the snapshot
/// while it reads.
const READ_STATE_ATTEMPTS_MAX: usize = 16;

/// Read the state of the store in `dir` without opening it for writing: no
/// lock is taken, a torn tail is reported rather than truncated, and
/// nothing is created. Safe while the node has the store open: a record
/// being appended reads as a torn tail (not yet part of the state), and a
/// compaction running meanwhile is detected (the snapshot file changed
/// under the read) and the read starts over.
pub fn read_state(dir: &Path) -> Result<RefState, RefError> {
    use std::os::unix::fs::MetadataExt;
    let log_path = dir.join(LOG_FILE_NAME);
    let snapshot_path = dir.join(SNAPSHOT_FILE_NAME);
    let identity = |path: &Path| -> io::Result<Option<(u64, u64)>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some((m.dev(), m.ino()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    for _ in 0..READ_STATE_ATTEMPTS_MAX {
        // Compaction renames a new snapshot into place before it empties
        // the log: if the snapshot is the same file after the log was
        // read, the log read belongs to it.
        let (snapshot_id, snapshot_bytes) = match File::open(&snapshot_path) {
            Ok(mut f) => {
                let meta = f.metadata()?;
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                (Some((meta.dev(), meta.ino())), Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
            Err(e) => return Err(e.into()),
        };
        let log_bytes = match fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound && snapshot_id.is_some() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if identity(&snapshot_path)? != snapshot_id {
            continue;
        }
        let mut state = match &snapshot_bytes {
            Some(bytes) => {
                decode_snapshot(bytes).map_err(|(offset, reason)| RefError::Corrupt {
                    path: snapshot_path.clone(),
                    offset,
                    reason,
                })?
            }
            None => State::new(),
        };
        let replay =
            replay_log(&log_bytes, &mut state).map_err(|(offset, reason)| RefError::Corrupt {
                path: log_path.clone(),
                offset,
                reason,
            })?;
        let torn_tail = replay.torn.map(|torn| TornTailReport {
            path: log_path.clone(),
            offset: torn.offset as u64,
            bytes: (log_bytes.len() - torn.offset) as u64,
            reason: torn.reason,
        });
        return Ok(RefState {
            refs: state.refs,
            head: state.head,
            seq: state.seq,
            height: state.height,
            torn_tail,
        });
    }
    Err(RefError::Io(io::Error::other(format!(
        "{}: the snapshot kept changing while it was read ({READ_STATE_ATTEMPTS_MAX} attempts)",
        snapshot_path.display()
    ))))
}

/// The recovered state while loading.
struct State {
    refs: BTreeMap<String, ObjectId>,
    head: String,
    seq: u64,
    height: u64,
}

impl State {
    fn new() -> State {
        State {
            refs: BTreeMap::new(),
            head: DEFAULT_HEAD_TARGET.to_owned(),
            seq: 0,
            height: 0,
        }
    }
}

/// What is staged and not yet committed: each touched ref's value before
/// its first staged update, and `HEAD` before it was staged to change.
#[derive(Debug, Default)]
struct Staged {
    before: BTreeMap<String, ObjectId>,
    head_before: Option<String>,
}

/// Damage at the end of the log that recovery drops.
struct TornTail {
    offset: usize,
    reason: DecodeError,
}

/// What replaying the log found.
struct Replay {
    /// End of the last valid record.
    valid_end: usize,
    /// Records applied on top of the snapshot.
    applied: u64,
    torn: Option<TornTail>,
}

/// A decoded log record.
struct Record {
    seq: u64,
    updates: Vec<(String, ObjectId, ObjectId)>,
    head: Option<String>,
    height: Option<u64>,
}

/// Corruption found while decoding: (offset, reason).
type Damage = (u64, DecodeError);

/// Replay log `bytes` onto `state` (loaded from the snapshot). Records at or
/// below the snapshot's sequence number are skipped; the rest must follow
/// it without a gap.
fn replay_log(bytes: &[u8], state: &mut State) -> Result<Replay, Damage> {
    let snapshot_seq = state.seq;
    let mut offset = 0usize;
    let mut expected_seq: Option<u64> = None;
    let mut applied = 0u64;
    while offset < bytes.len() {
        let (payload, end) = match frame_at(bytes, offset) {
            Ok(frame) => frame,
            Err(reason) => {
                if let Some(later) = find_valid_frame(bytes, offset + 1) {
                    return Err((
                        offset as u64,
                        DecodeError::ValidRecordFollows {
                            reason: Box::new(reason),
                            later,
                        },
                    ));
                }
                return Ok(Replay {
                    valid_end: offset,
                    applied,
                    torn: Some(TornTail { offset, reason }),
                });
            }
        };
        let record = decode_record(payload).map_err(|reason| (offset as u64, reason))?;
        match expected_seq {
            None if record.seq == 0 || record.seq > snapshot_seq + 1 => {
                return Err((
                    offset as u64,
                    DecodeError::LogStart {
                        seq: record.seq,
                        snapshot_seq,
                    },
                ))
            }
            Some(expected) if record.seq != expected => {
                return Err((
                    offset as u64,
                    DecodeError::Sequence {
                        seq: record.seq,
                        expected,
                    },
                ))
            }
            _ => {}
        }
        expected_seq = Some(record.seq + 1);
        if record.seq > snapshot_seq {
            replay_record(state, record).map_err(|reason| (offset as u64, reason))?;
            applied += 1;
        }
        offset = end;
    }
    Ok(Replay {
        valid_end: offset,
        applied,
        torn: None,
    })
}

fn replay_record(state: &mut State, record: Record) -> Result<(), DecodeError> {
    for (name, old, new) in record.updates {
        let actual = state
            .refs
            .get(&name)
            .copied()
            .unwrap_or(ObjectId::NULL_SHA1);
        if actual != old {
            return Err(DecodeError::ReplayStale {
                seq: record.seq,
                name,
                old,
                actual,
            });
        }
        if new.is_null() {
            state.refs.remove(&name);
        } else {
            state.refs.insert(name, new);
        }
    }
    if let Some(head) = record.head {
        state.head = head;
    }
    if let Some(height) = record.height {
        state.height = state.height.max(height);
    }
    state.seq = record.seq;
    Ok(())
}

/// Check the frame (header, length, checksum) of the record at `offset`;
/// return its payload and the offset after it, or why it is not valid.
fn frame_at(bytes: &[u8], offset: usize) -> Result<(&[u8], usize), DecodeError> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::ShortRecordHeader {
            len_bytes: rest.len(),
        });
    }
    if rest[..4] != RECORD_MAGIC {
        return Err(DecodeError::RecordMagic);
    }
    let len_bytes = [rest[4], rest[5], rest[6], rest[7]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if !(RECORD_MIN_PAYLOAD_BYTES..=LOG_RECORD_MAX_BYTES).contains(&len) {
        return Err(DecodeError::RecordLength {
            len_bytes: len,
            limit_bytes: LOG_RECORD_MAX_BYTES,
        });
    }
    let stored_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
    let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Err(DecodeError::ShortRecord {
            have_bytes: rest.len() - RECORD_HEADER_BYTES,
            len_bytes: len,
        });
    };
    if checksum(&len_bytes, payload) != stored_crc {
        return Err(DecodeError::RecordChecksum);
    }
    Ok((payload, offset + RECORD_HEADER_BYTES + len))
}

/// The offset of the first valid record frame at or after `from`.
fn find_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1))
        .filter(|&at| bytes[at..].starts_with(&RECORD_MAGIC))
        .find(|&at| frame_at(bytes, at).is_ok())
}

fn checksum(len_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// Encode a log record into `out` (cleared first).
fn encode_record(
    out: &mut Vec<u8>,
    seq: u64,
    updates: &[RefUpdate],
    head: Option<&str>,
    height: Option<u64>,
) -> Result<(), RefError> {
    out.clear();
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    out.extend_from_slice(&seq.to_le_bytes());
    let mut flags = 0;
    if head.is_some() {
        flags |= RECORD_FLAG_HEAD;
    }
    if height.is_some() {
        flags |= RECORD_FLAG_HEIGHT;
    }
    out.push(flags);
    let count = u32::try_from(updates.len()).map_err(|_| RefError::BatchTooLarge {
        record_bytes: usize::MAX,
        limit_bytes: LOG_RECORD_MAX_BYTES,
    })?;
    out.extend_from_slice(&count.to_le_bytes());
    for update in updates {
        put_name(out, &update.name)?;
        out.extend_from_slice(update.old.as_bytes());
        out.extend_from_slice(update.new.as_bytes());
    }
    if let Some(head) = head {
        put_name(out, head)?;
    }
    if let Some(height) = height {
        out.extend_from_slice(&height.to_le_bytes());
    }
    let len = out.len() - RECORD_HEADER_BYTES;
    if len > LOG_RECORD_MAX_BYTES {
        return Err(RefError::BatchTooLarge {
            record_bytes: out.len(),
            limit_bytes: LOG_RECORD_MAX_BYTES,
        });
    }
    // len <= LOG_RECORD_MAX_BYTES < u32::MAX
    let len_bytes = (len as u32).to_le_bytes();
    let crc = checksum(&len_bytes, &out[RECORD_HEADER_BYTES..]);
    out[..4].copy_from_slice(&RECORD_MAGIC);
    out[4..8].copy_from_slice(&len_bytes);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Append a length-prefixed ref name. Names were checked against
/// [`REF_NAME_MAX_BYTES`], which fits a u16.
fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), RefError> {
    let len = u16::try_from(name.len()).map_err(|_| RefNameError::TooLong {
        name: name.chars().take(REF_NAME_MAX_BYTES).collect(),
        len_bytes: name.len(),
        limit_bytes: REF_NAME_MAX_BYTES,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn decode_record(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader::new(payload);
    let seq = r.u64()?;
    let flags = r.u8()?;
    if flags & !(RECORD_FLAG_HEAD | RECORD_FLAG_HEIGHT) != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    let count = r.u32()? as usize;
    // Each update takes at least 2 + 40 bytes; don't trust `count` further.
    let mut updates = Vec::with_capacity(count.min(r.remaining() / 42));
    for _ in 0..count {
        let name = r.name()?;
        let old = r.oid()?;
        let new = r.oid()?;
        updates.push((name, old, new));
    }
    let head = if flags & RECORD_FLAG_HEAD != 0 {
        Some(r.name()?)
    } else {
        None
    };
    let height = if flags & RECORD_FLAG_HEIGHT != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingRecordBytes {
            count: r.remaining(),
        });
    }
    Ok(Record {
        seq,
        updates,
        head,
        height,
    })
}

fn encode_snapshot(
    seq: u64,
    height: u64,
    head: &str,
    refs: &BTreeMap<String, ObjectId>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + 40 + refs.len() * 64);
    out.extend_from_slice(&[0u8; SNAPSHOT_HEADER_BYTES]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    // Names in the state were checked against REF_NAME_MAX_BYTES on entry.
    out.extend_from_slice(&(head.len() as u16).to_le_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&(refs.len() as u64).to_le_bytes());
    for (name, oid) in refs {
        debug_assert!(name.len() <= REF_NAME_MAX_BYTES);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(oid.as_bytes());
    }
    let len_bytes = ((out.len() - SNAPSHOT_HEADER_BYTES) as u64).to_le_bytes();
    let crc = checksum(&len_bytes, &out[SNAPSHOT_HEADER_BYTES..]);
    out[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..16].copy_from_slice(&len_bytes);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_snapshot(bytes: &[u8]) -> Result<State, Damage> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err((
            0,
            DecodeError::ShortSnapshotHeader {
                len_bytes: bytes.len(),
            },
        ));
    }
    let with_height = match &bytes[..8] {
        m if m == SNAPSHOT_MAGIC => true,
        m if m == SNAPSHOT_MAGIC_V1 => false,
        _ => return Err((0, DecodeError::SnapshotMagic)),
    };
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if len != payload.len() as u64 {
        return Err((
            8,
            DecodeError::SnapshotLength {
                claimed_bytes: len,
                actual_bytes: payload.len(),
            },
        ));
    }
    let stored_crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if checksum(&len_bytes, payload) != stored_crc {
        return Err((16, DecodeError::SnapshotChecksum));
    }
    let at = |r: &Reader| (SNAPSHOT_HEADER_BYTES + r.position()) as u64;
    let mut r = Reader::new(payload);
    let seq = r.u64().map_err(|e| (at(&r), e))?;
    let height = if with_height {
        r.u64().map_err(|e| (at(&r), e))?
    } else {
        0
    };
    let head = r.name().map_err(|e| (at(&r), e))?;
    let count = r.u64().map_err(|e| (at(&r), e))?;
    let mut refs = BTreeMap::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let offset = at(&r);
        let name = r.name().map_err(|e| (offset, e))?;
        let oid = r.oid().map_err(|e| (offset, e))?;
        if oid.is_null() {
            return Err((offset, DecodeError::NullId { name }));
        }
        if previous.as_ref().is_some_and(|p| *p >= name) {
            return Err((offset, DecodeError::OutOfOrder { name }));
        }
        previous = Some(name.clone());
        refs.insert(name, oid);
    }
    if r.remaining() != 0 {
        return Err((
            at(&r),
            DecodeError::TrailingSnapshotBytes {
                count: r.remaining(),
            },
        ));
    }
    Ok(State {
        refs,
        head,
        seq,
        height,
    })
}

/// A bounds-checked little-endian reader over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .position
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::ShortField { len_bytes: n })?;
        let out = &self.bytes[self.position..end];
        self.position = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn oid(&mut self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId::from_bytes(self.take(20)?)?)
    }

    /// A length-prefixed ref name, checked against the ref name rules.
    fn name(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let raw = self.take(len)?;
        check_ref_name(raw)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::NameNotUtf8)
    }
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Take an exclusive, non-blocking `flock` on the log, held for as long as
/// the file stays open (and released by the kernel if the process dies).
///
/// A child process forked by any thread of this process holds a copy of
/// the descriptor, and so the lock, until it calls `exec` (which closes
/// it: files are opened close-on-exec). A store closed and reopened while
/// that happens would find its own lock taken, so a held lock is retried
/// for a short, bounded time ([`LOCK_RETRY_MAX`]) before it is reported.
fn lock_exclusive(file: &File, path: &Path) -> Result<(), RefError> {
    let deadline = std::time::Instant::now() + LOCK_RETRY_MAX;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::WouldBlock {
            return Err(err.into());
        }
        if std::time::Instant::now() >= deadline {
            return Err(RefError::Locked {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// How long a taken ref-log lock is retried before it is reported as held
/// by another process (see [`lock_exclusive`]).
const LOCK_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Write `dir/name` through `dir/name.tmp`, `fsync` and `rename`. The
/// caller syncs the directory.
fn write_file_atomically(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp_path = dir.join(format!("{name}.tmp"));
    {
        let mut tmp = File::create(&tmp_path)?;
        tmp.write_all(contents)?;
        tmp.sync_all()?;
    }
    fs::rename(&tmp_path, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u64) -> ObjectId {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        bytes[19] = 0xa5;
        ObjectId::from_sha1(bytes)
    }

    fn create(name: &str, new: ObjectId) -> RefUpdate {
        RefUpdate {
            name: name.to_owned(),
            old: ObjectId::NULL_SHA1,
            new,
        }
    }

    fn update(name: &str, old: ObjectId, new: ObjectId) -> RefUpdate {
        RefUpdate {
            name: name.to_owned(),
            old,
            new,
        }
    }

    fn delete(name: &str, old: ObjectId) -> RefUpdate {
        RefUpdate {
            name: name.to_owned(),
            old,
            new: ObjectId::NULL_SHA1,
        }
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(LOG_FILE_NAME)
    }

    fn append_raw(dir: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(log_path(dir)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn record_bytes(seq: u64, updates: &[RefUpdate]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, seq, updates, None, None).unwrap();
        out
    }

    /// A store with refs/heads/r1..=r3 created one record each.
    fn three_records(dir: &Path) -> RefStore {
        let mut store = RefStore::open(dir).unwrap();
        for i in 1..=3 {
            store
                .apply(&[create(&format!("refs/heads/r{i}"), oid(i))])
                .unwrap();
        }
        store
    }

    fn assert_three(store: &RefStore) {
        assert_eq!(store.sequence(), 3);
        for i in 1..=3 {
            assert_eq!(store.get(&format!("refs/heads/r{i}")), Some(oid(i)));
        }
    }

    #[test]
    fn create_update_delete_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let mut store = RefStore::open(dir).unwrap();
            assert_eq!(store.sequence(), 0);
            assert_eq!(store.head_target(), DEFAULT_HEAD_TARGET);
            assert_eq!(store.head_oid(), None);
            store.apply(&[create("refs/heads/main", oid(1))]).unwrap();
            store
                .apply(&[update("refs/heads/main", oid(1), oid(2))])
                .unwrap();
            store.apply(&[create("refs/tags/v1", oid(3))]).unwrap();
            store.apply(&[delete("refs/tags/v1", oid(3))]).unwrap();
            store.apply(&[]).unwrap();
            assert_eq!(store.sequence(), 4);
            assert_eq!(store.head_oid(), Some(oid(2)));
        }
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.sequence(), 4);
        assert_eq!(store.get("refs/heads/main"), Some(oid(2)));
        assert_eq!(store.get("refs/tags/v1"), None);
        assert_eq!(store.refs().len(), 1);
        assert_eq!(store.head_oid(), Some(oid(2)));
    }

    #[test]
    fn set_head_is_durable_and_validated() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut store = RefStore::open(tmp.path()).unwrap();
            store.set_head("refs/heads/trunk").unwrap();
            store.set_head("refs/heads/trunk").unwrap();
            assert_eq!(store.sequence(), 1);
            assert!(matches!(
                store.set_head("HEAD"),
                Err(RefError::InvalidName(_))
            ));
            assert!(matches!(
                store.set_head("refs/heads/a..b"),
                Err(RefError::InvalidName(_))
            ));
            store.apply(&[create("refs/heads/trunk", oid(7))]).unwrap();
        }
        let store = RefStore::open(tmp.path()).unwrap();
        assert_eq!(store.head_target(), "refs/heads/trunk");
        assert_eq!(store.head_oid(), Some(oid(7)));
        assert_eq!(store.sequence(), 2);
    }

    #[test]
    fn stale_compare_and_swap_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        store.apply(&[create("refs/heads/main", oid(1))]).unwrap();
        match store.apply(&[create("refs/heads/main", oid(2))]) {
            Err(RefError::Stale {
                name,
                expected,
                actual,
            }) => {
                assert_eq!(name, "refs/heads/main");
                assert_eq!(expected, ObjectId::NULL_SHA1);
                assert_eq!(actual, oid(1));
            }
            other => panic!("expected Stale, got {other:?}"),
        }
        assert!(matches!(
            store.apply(&[update("refs/heads/main", oid(9), oid(2))]),
            Err(RefError::Stale { .. })
        ));
        assert!(matches!(
            store.apply(&[delete("refs/heads/nope", oid(9))]),
            Err(RefError::Stale { actual, .. }) if actual.is_null()
        ));
        assert_eq!(store.get("refs/heads/main"), Some(oid(1)));
        assert_eq!(store.sequence(), 1);
    }

    #[test]
    fn invalid_and_duplicate_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        for bad in [
            "HEAD",
            "heads/main",
            "refs/heads/a.lock",
            "refs/heads/a b",
            "refs/heads/",
        ] {
            assert!(
                matches!(
                    store.apply(&[create(bad, oid(1))]),
                    Err(RefError::InvalidName(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            store.apply(&[create("refs/heads/x", oid(1)), create("refs/heads/x", oid(2))]),
            Err(RefError::DuplicateRef { name }) if name == "refs/heads/x"
        ));
        assert_eq!(store.sequence(), 0);
        assert!(store.refs().is_empty());
    }

    #[test]
    fn directory_file_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        store.apply(&[create("refs/heads/a", oid(1))]).unwrap();
        store.apply(&[create("refs/heads/d/e", oid(2))]).unwrap();

        // A file where a directory is needed, and the reverse.
        assert!(matches!(
            store.check(&[create("refs/heads/a/b", oid(3))]),
            Err(RefError::DirectoryFileConflict { name, existing })
                if name == "refs/heads/a/b" && existing == "refs/heads/a"
        ));
        assert!(matches!(
            store.check(&[create("refs/heads/d", oid(3))]),
            Err(RefError::DirectoryFileConflict { name, existing })
                if name == "refs/heads/d" && existing == "refs/heads/d/e"
        ));
        // Siblings sharing a prefix are not conflicts.
        store.check(&[create("refs/heads/ab", oid(3))]).unwrap();
        store.check(&[create("refs/heads/a-b/c", oid(3))]).unwrap();
        store.check(&[create("refs/heads/d/f", oid(3))]).unwrap();
        // Both sides created in one batch, in either order.
        for batch in [
            vec![
                create("refs/heads/n", oid(3)),
                create("refs/heads/n/m", oid(4)),
            ],
            vec![
                create("refs/heads/n/m", oid(4)),
                create("refs/heads/n", oid(3)),
            ],
        ] {
            assert!(matches!(
                store.check(&batch),
                Err(RefError::DirectoryFileConflict { .. })
            ));
        }
        // A deletion in the same batch frees the path, both ways round.
        store
            .check(&[
                delete("refs/heads/a", oid(1)),
                create("refs/heads/a/b", oid(3)),
            ])
            .unwrap();
        store
            .check(&[
                create("refs/heads/d", oid(3)),
                delete("refs/heads/d/e", oid(2)),
            ])
            .unwrap();
        store
            .apply(&[
                delete("refs/heads/a", oid(1)),
                create("refs/heads/a/b", oid(3)),
            ])
            .unwrap();
        assert_eq!(store.get("refs/heads/a"), None);
        assert_eq!(store.get("refs/heads/a/b"), Some(oid(3)));
        // Deleting a ref never conflicts.
        store.check(&[delete("refs/heads/d/e", oid(2))]).unwrap();
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let mut store = RefStore::open(dir).unwrap();
            store.apply(&[create("refs/heads/a", oid(1))]).unwrap();
            let len_before = fs::metadata(log_path(dir)).unwrap().len();
            let batch = [
                create("refs/heads/b", oid(2)),
                update("refs/heads/a", oid(1), oid(3)),
                create("refs/heads/a", oid(4)), // duplicate
            ];
            assert!(store.apply(&batch).is_err());
            let batch = [
                create("refs/heads/b", oid(2)),
                update("refs/heads/a", oid(9), oid(3)), // stale
            ];
            assert!(matches!(store.apply(&batch), Err(RefError::Stale { .. })));
            assert_eq!(store.get("refs/heads/b"), None);
            assert_eq!(store.get("refs/heads/a"), Some(oid(1)));
            assert_eq!(store.sequence(), 1);
            assert_eq!(fs::metadata(log_path(dir)).unwrap().len(), len_before);

            let batch = [
                create("refs/heads/b", oid(2)),
                update("refs/heads/a", oid(1), oid(3)),
                create("refs/tags/t", oid(5)),
            ];
            store.apply(&batch).unwrap();
            assert_eq!(store.sequence(), 2);
        }
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.sequence(), 2);
        assert_eq!(store.get("refs/heads/a"), Some(oid(3)));
        assert_eq!(store.get("refs/heads/b"), Some(oid(2)));
        assert_eq!(store.get("refs/tags/t"), Some(oid(5)));
    }

    #[test]
    fn torn_tails_are_truncated_and_appends_survive() {
        let good = record_bytes(4, &[create("refs/heads/r4", oid(4))]);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0x40;
        let mut bad_len = good.clone();
        bad_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let tails: Vec<(&str, Vec<u8>)> = vec![
            ("half a record", good[..good.len() / 2].to_vec()),
            ("header only", good[..RECORD_HEADER_BYTES].to_vec()),
            ("partial header", good[..5].to_vec()),
            ("last byte missing", good[..good.len() - 1].to_vec()),
            ("bad checksum", bad_crc),
            ("bad length", bad_len),
            ("zeros", vec![0u8; 4096]),
            ("garbage", b"\xde\xad\xbe\xef not a record at all".to_vec()),
        ];
        for (what, tail) in tails {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let clean_len = {
                let store = three_records(dir);
                store.log_len
            };
            append_raw(dir, &tail);
            {
                let mut store = RefStore::open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_three(&store);
                assert_eq!(
                    fs::metadata(log_path(dir)).unwrap().len(),
                    clean_len,
                    "{what}"
                );
                store.apply(&[create("refs/heads/after", oid(10))]).unwrap();
            }
            let store = RefStore::open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(store.sequence(), 4, "{what}");
            assert_eq!(store.get("refs/heads/after"), Some(oid(10)), "{what}");
            assert_eq!(store.get("refs/heads/r3"), Some(oid(3)), "{what}");
        }
    }

    #[test]
    fn mid_log_corruption_is_an_error() {
        // Damage the first or second of three records: a valid one follows.
        for (record, byte_in_record) in [(0usize, 20usize), (1, 2), (1, 6), (0, 9)] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let record_len = {
                let store = three_records(dir);
                (store.log_len / 3) as usize
            };
            let mut bytes = fs::read(log_path(dir)).unwrap();
            bytes[record * record_len + byte_in_record] ^= 0x01;
            fs::write(log_path(dir), &bytes).unwrap();
            match RefStore::open(dir) {
                Err(RefError::Corrupt { offset, path, .. }) => {
                    assert_eq!(offset, (record * record_len) as u64);
                    assert_eq!(path, log_path(dir));
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            // Nothing was truncated.
            assert_eq!(fs::read(log_path(dir)).unwrap(), bytes);
        }
    }

    #[test]
    fn sequence_gaps_and_replayed_mismatches_are_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        drop(three_records(dir));
        append_raw(dir, &record_bytes(5, &[create("refs/heads/r5", oid(5))]));
        assert!(matches!(RefStore::open(dir), Err(RefError::Corrupt { .. })));

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        drop(three_records(dir));
        // Valid frame, right sequence, but it claims r1 is at oid(9).
        append_raw(
            dir,
            &record_bytes(4, &[update("refs/heads/r1", oid(9), oid(4))]),
        );
        assert!(matches!(RefStore::open(dir), Err(RefError::Corrupt { .. })));
    }

    #[test]
    fn staged_updates_are_one_record_with_their_height() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        assert_eq!(store.applied_height(), 0);
        store.stage(&[create("refs/heads/a", oid(1))]).unwrap();
        // Later staged updates see the earlier ones.
        store
            .stage(&[update("refs/heads/a", oid(1), oid(2))])
            .unwrap();
        store.stage(&[create("refs/heads/b", oid(3))]).unwrap();
        assert!(store.stage(&[create("refs/heads/a", oid(9))]).is_err());
        store.stage_head("refs/heads/b").unwrap();
        assert_eq!(store.get("refs/heads/a"), Some(oid(2)));
        store.commit(Some(7)).unwrap();
        assert_eq!(store.sequence(), 1, "one record for the whole block");
        assert_eq!(store.applied_height(), 7);
        drop(store);

        let store = RefStore::open(tmp.path()).unwrap();
        assert_eq!(store.sequence(), 1);
        assert_eq!(store.applied_height(), 7);
        assert_eq!(store.get("refs/heads/a"), Some(oid(2)));
        assert_eq!(store.get("refs/heads/b"), Some(oid(3)));
        assert_eq!(store.head_target(), "refs/heads/b");
        let state = read_state(tmp.path()).unwrap();
        assert_eq!((state.seq, state.height), (1, 7));
    }

    #[test]
    fn a_block_that_changes_nothing_still_records_its_height_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        store.apply(&[create("refs/heads/a", oid(1))]).unwrap();
        // There and back again: no net change, only the height.
        store
            .stage(&[update("refs/heads/a", oid(1), oid(2))])
            .unwrap();
        store
            .stage(&[update("refs/heads/a", oid(2), oid(1))])
            .unwrap();
        store.commit(Some(3)).unwrap();
        assert_eq!((store.sequence(), store.applied_height()), (2, 3));
        // A height not above the recorded one, with nothing staged: nothing written.
        store.commit(Some(3)).unwrap();
        store.commit(None).unwrap();
        assert_eq!(store.sequence(), 2);
        drop(store);
        let store = RefStore::open(tmp.path()).unwrap();
        assert_eq!((store.sequence(), store.applied_height()), (2, 3));
        assert_eq!(store.get("refs/heads/a"), Some(oid(1)));
    }

    #[test]
    fn staged_updates_not_committed_are_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        store.apply(&[create("refs/heads/a", oid(1))]).unwrap();
        store
            .stage(&[update("refs/heads/a", oid(1), oid(2))])
            .unwrap();
        assert!(matches!(store.compact(), Err(RefError::Staged)));
        drop(store);
        let store = RefStore::open(tmp.path()).unwrap();
        assert_eq!(store.get("refs/heads/a"), Some(oid(1)));
        assert_eq!((store.sequence(), store.applied_height()), (1, 0));
    }

    #[test]
    fn heights_survive_compaction_and_old_snapshots_read_as_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = RefStore::open(tmp.path()).unwrap();
        store.stage(&[create("refs/heads/a", oid(1))]).unwrap();
        store.commit(Some(41)).unwrap();
        store.compact().unwrap();
        drop(store);
        let store = RefStore::open(tmp.path()).unwrap();
        assert_eq!(store.applied_height(), 41);
        drop(store);

        // A snapshot from before heights were recorded.
        let mut refs = BTreeMap::new();
        refs.insert("refs/heads/a".to_string(), oid(1));
        let mut payload = Vec::new();
        payload.extend_from_slice(&5u64.to_le_bytes());
        payload.extend_from_slice(&15u16.to_le_bytes());
        payload.extend_from_slice(b"refs/heads/main");
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.extend_from_slice(&12u16.to_le_bytes());
        payload.extend_from_slice(b"refs/heads/a");
        payload.extend_from_slice(oid(1).as_bytes());
        let len_bytes = (payload.len() as u64).to_le_bytes();
        let mut v1 = SNAPSHOT_MAGIC_V1.to_vec();
        v1.extend_from_slice(&len_bytes);
        v1.extend_from_slice(&checksum(&len_bytes, &payload).to_le_bytes());
        v1.extend_from_slice(&payload);
        let old = tempfile::tempdir().unwrap();
        fs::write(old.path().join(SNAPSHOT_FILE_NAME), v1).unwrap();
        let store = RefStore::open(old.path()).unwrap();
        assert_eq!((store.sequence(), store.applied_height()), (5, 0));
        assert_eq!(store.refs(), &refs);
    }

    #[test]
    fn compaction_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let mut store = three_records(dir);
            store.set_head("refs/heads/r2").unwrap();
            store.compact().unwrap();
            assert_eq!(fs::metadata(log_path(dir)).unwrap().len(), 0);
            assert!(dir.join(SNAPSHOT_FILE_NAME).exists());
            store
                .apply(&[update("refs/heads/r1", oid(1), oid(11))])
                .unwrap();
            store.apply(&[delete("refs/heads/r3", oid(3))]).unwrap();
        }
        {
            let mut store = RefStore::open(dir).unwrap();
            assert_eq!(store.sequence(), 6);
            assert_eq!(store.head_target(), "refs/heads/r2");
            assert_eq!(store.head_oid(), Some(oid(2)));
            assert_eq!(store.get("refs/heads/r1"), Some(oid(11)));
            assert_eq!(store.get("refs/heads/r3"), None);
            assert_eq!(store.refs().len(), 2);
            store.compact().unwrap();
            store.compact().unwrap();
        }
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.sequence(), 6);
        assert_eq!(store.get("refs/heads/r1"), Some(oid(11)));
        assert_eq!(store.refs().len(), 2);
    }

    #[test]
    fn crash_between_snapshot_and_log_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old_log = {
            let mut store = three_records(dir);
            let old_log = fs::read(log_path(dir)).unwrap();
            store.compact().unwrap();
            old_log
        };
        // As if the log reset never reached the disk.
        fs::write(log_path(dir), &old_log).unwrap();
        {
            let mut store = RefStore::open(dir).unwrap();
            assert_three(&store);
            assert_eq!(fs::metadata(log_path(dir)).unwrap().len(), 0);
            store.apply(&[create("refs/heads/r4", oid(4))]).unwrap();
        }
        // And with a record appended after the stale ones.
        let mut stale_then_new = old_log.clone();
        stale_then_new.extend_from_slice(&record_bytes(4, &[create("refs/heads/r4", oid(4))]));
        fs::write(log_path(dir), &stale_then_new).unwrap();
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.sequence(), 4);
        assert_eq!(store.get("refs/heads/r4"), Some(oid(4)));
    }

    #[test]
    fn corrupt_snapshot_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        three_records(dir).compact().unwrap();
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(RefStore::open(dir), Err(RefError::Corrupt { .. })));
    }

    #[test]
    fn automatic_compaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        {
            let mut store = RefStore::open(dir).unwrap();
            let mut current = ObjectId::NULL_SHA1;
            for i in 1..=COMPACT_EVERY_RECORDS + 5 {
                store
                    .apply(&[update("refs/heads/main", current, oid(i))])
                    .unwrap();
                current = oid(i);
            }
            assert_eq!(store.records_since_snapshot, 5);
            let log_len = fs::metadata(log_path(dir)).unwrap().len();
            assert_eq!(log_len, store.log_len);
            assert!(log_len < 5 * 200);
        }
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.sequence(), COMPACT_EVERY_RECORDS + 5);
        assert_eq!(
            store.get("refs/heads/main"),
            Some(oid(COMPACT_EVERY_RECORDS + 5))
        );
    }

    #[test]
    fn ten_thousand_refs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let count = 10_000u64;
        let name = |i: u64| format!("refs/heads/topic/{:02}/branch-{i}", i % 97);
        {
            let mut store = RefStore::open(dir).unwrap();
            let batch: Vec<RefUpdate> = (0..count).map(|i| create(&name(i), oid(i + 1))).collect();
            store.apply(&batch).unwrap();
            // A second batch touching half of them.
            let batch: Vec<RefUpdate> = (0..count)
                .step_by(2)
                .map(|i| update(&name(i), oid(i + 1), oid(i + 1 + count)))
                .collect();
            store.apply(&batch).unwrap();
        }
        let check = |store: &RefStore| {
            assert_eq!(store.refs().len(), count as usize);
            for i in 0..count {
                let expected = if i % 2 == 0 {
                    oid(i + 1 + count)
                } else {
                    oid(i + 1)
                };
                assert_eq!(store.get(&name(i)), Some(expected));
            }
        };
        {
            let mut store = RefStore::open(dir).unwrap();
            check(&store);
            store.compact().unwrap();
        }
        let store = RefStore::open(dir).unwrap();
        check(&store);
        let packed = fs::read_to_string(dir.join("packed-refs")).unwrap();
        assert_eq!(packed.lines().count(), count as usize + 1);
    }

    #[test]
    fn second_opener_is_locked_out() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RefStore::open(tmp.path()).unwrap();
        assert!(matches!(
            RefStore::open(tmp.path()),
            Err(RefError::Locked { .. })
        ));
        drop(store);
        RefStore::open(tmp.path()).unwrap();
    }

    #[test]
    fn exported_files_have_git_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = RefStore::open(dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("HEAD")).unwrap(),
            "ref: refs/heads/main\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join("packed-refs")).unwrap(),
            PACKED_REFS_HEADER
        );
        store
            .apply(&[
                create("refs/tags/v1", oid(2)),
                create("refs/heads/main", oid(1)),
            ])
            .unwrap();
        store.compact().unwrap();
        let expected = format!(
            "# pack-refs with: sorted \n{} refs/heads/main\n{} refs/tags/v1\n",
            oid(1),
            oid(2)
        );
        assert_eq!(
            fs::read_to_string(dir.join("packed-refs")).unwrap(),
            expected
        );
    }

    fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
        let git_dir = format!("--git-dir={}", dir.display());
        let args: Vec<&str> = std::iter::once(git_dir.as_str())
            .chain(args.iter().copied())
            .collect();
        String::from_utf8(guts_testkit::git_bytes(dir, &args, stdin)).unwrap()
    }

    /// C git reads the exported `HEAD` and `packed-refs` (with an `objects/`
    /// directory, which the object store provides in a real repository).
    #[test]
    fn git_reads_exported_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = RefStore::open(dir).unwrap();
        fs::create_dir(dir.join("objects")).unwrap();
        let blob = git(dir, &["hash-object", "-w", "--stdin"], Some(b"hello\n"));
        let blob = ObjectId::from_hex(blob.trim().as_bytes()).unwrap();
        store
            .apply(&[
                create("refs/heads/main", blob),
                create("refs/heads/feature/x", blob),
                create("refs/tags/v1", blob),
            ])
            .unwrap();
        store.compact().unwrap();
        let listed = git(
            dir,
            &["for-each-ref", "--format=%(objectname) %(refname)"],
            None,
        );
        let expected: String = ["refs/heads/feature/x", "refs/heads/main", "refs/tags/v1"]
            .iter()
            .map(|name| format!("{blob} {name}\n"))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(
            git(dir, &["symbolic-ref", "HEAD"], None),
            "refs/heads/main\n"
        );
        assert_eq!(git(dir, &["rev-parse", "HEAD"], None), format!("{blob}\n"));
    }

    /// A batch moving one ref of many is exported as one loose ref file
    /// beside an unchanged packed-refs; a deletion rewrites packed-refs
    /// and removes the loose files; C git sees the state throughout.
    #[test]
    fn a_one_ref_update_is_exported_as_one_loose_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = RefStore::open(dir).unwrap();
        fs::create_dir(dir.join("objects")).unwrap();
        let blob = |text: &str| {
            let hex = git(
                dir,
                &["hash-object", "-w", "--stdin"],
                Some(text.as_bytes()),
            );
            ObjectId::from_hex(hex.trim().as_bytes()).unwrap()
        };
        let (a, b) = (blob("a\n"), blob("b\n"));
        let many: Vec<RefUpdate> = (0..500)
            .map(|i| create(&format!("refs/heads/b/{i:04}"), a))
            .chain([create("refs/heads/main", a), create("refs/tags/v1", a)])
            .collect();
        store.apply(&many).unwrap();
        // 502 changed refs: more than a loose export takes.
        let whole = store.take_git_export();
        assert!(whole.packed_refs().is_some());
        assert!(whole.write().unwrap());
        let packed = fs::read(dir.join("packed-refs")).unwrap();

        store
            .apply(&[
                update("refs/heads/main", a, b),
                create("refs/heads/feature/x", b),
            ])
            .unwrap();
        let loose = store.take_git_export();
        assert!(loose.packed_refs().is_none());
        assert_eq!(loose.loose_refs().len(), 2);
        assert!(loose.write().unwrap());
        assert_eq!(
            fs::read(dir.join("packed-refs")).unwrap(),
            packed,
            "packed-refs rewritten"
        );
        assert_eq!(
            fs::read_to_string(dir.join("refs/heads/main")).unwrap(),
            format!("{b}\n")
        );
        assert_eq!(exported_refs(dir).unwrap().as_ref(), Some(store.refs()));
        let listed = git(
            dir,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads/main",
                "refs/heads/feature/",
            ],
            None,
        );
        assert_eq!(
            listed,
            format!("{b} refs/heads/feature/x\n{b} refs/heads/main\n")
        );
        assert_eq!(git(dir, &["rev-parse", "HEAD"], None), format!("{b}\n"));
        // Nothing changed since: an export of nothing.
        assert!(store.take_git_export().loose_refs().is_empty());

        // A deletion: packed-refs again, and no loose file hides it.
        store
            .apply(&[RefUpdate {
                name: "refs/heads/feature/x".into(),
                old: b,
                new: ObjectId::NULL_SHA1,
            }])
            .unwrap();
        let whole = store.take_git_export();
        assert!(whole.packed_refs().is_some());
        assert!(whole.write().unwrap());
        assert!(!has_loose_refs(&dir.join("refs")).unwrap());
        assert!(dir.join("refs/heads").is_dir(), "refs/heads is kept");
        assert!(!dir.join("refs/heads/feature").exists());
        assert!(whole.is_current().unwrap());
        assert_eq!(exported_refs(dir).unwrap().as_ref(), Some(store.refs()));
        assert_eq!(
            git(
                dir,
                &["for-each-ref", "--format=%(refname)", "refs/heads/feature/"],
                None
            ),
            ""
        );
    }

    /// Loose ref files left by exports are folded into packed-refs when
    /// the store is next opened; a failed export makes the next one whole.
    #[test]
    fn open_folds_loose_exports_and_a_failed_export_is_redone_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = RefStore::open(dir).unwrap();
        store.apply(&[create("refs/heads/main", oid(1))]).unwrap();
        store.take_git_export().write().unwrap();
        store
            .apply(&[update("refs/heads/main", oid(1), oid(2))])
            .unwrap();
        let loose = store.take_git_export();
        assert_eq!(
            loose.loose_refs(),
            &[("refs/heads/main".to_string(), oid(2))]
        );
        store
            .apply(&[update("refs/heads/main", oid(2), oid(3))])
            .unwrap();
        store.export_failed();
        assert!(store.take_git_export().packed_refs().is_some());
        loose.write().unwrap();
        drop(store);
        // The loose file is behind the log: open rewrites the export whole.
        let mut store = RefStore::open(dir).unwrap();
        assert!(!has_loose_refs(&dir.join("refs")).unwrap());
        assert!(store.git_export().is_current().unwrap());
        assert_eq!(exported_refs(dir).unwrap().as_ref(), Some(store.refs()));
        // A loose file that agrees with the log is current: left as it is.
        store
            .apply(&[update("refs/heads/main", oid(3), oid(4))])
            .unwrap();
        store.take_git_export().write().unwrap();
        let packed = fs::read(dir.join("packed-refs")).unwrap();
        drop(store);
        let store = RefStore::open(dir).unwrap();
        assert_eq!(fs::read(dir.join("packed-refs")).unwrap(), packed);
        assert!(dir.join("refs/heads/main").is_file());
        assert_eq!(exported_refs(dir).unwrap().as_ref(), Some(store.refs()));
    }

    #[test]
    fn read_state_sees_what_open_sees_without_locking_or_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let store = three_records(dir);
        // The store is open (locked): read_state still reads it.
        let state = read_state(dir).unwrap();
        assert_eq!(state.seq, 3);
        assert_eq!(&state.refs, store.refs());
        assert!(state.torn_tail.is_none());
        drop(store);
        // A torn tail is reported, not truncated.
        append_raw(
            dir,
            &record_bytes(4, &[create("refs/heads/r4", oid(4))])[..20],
        );
        let len = fs::metadata(log_path(dir)).unwrap().len();
        let state = read_state(dir).unwrap();
        assert_eq!(state.seq, 3);
        let torn = state.torn_tail.unwrap();
        assert_eq!(torn.bytes, 20);
        assert_eq!(fs::metadata(log_path(dir)).unwrap().len(), len);
    }

    #[test]
    fn read_state_across_compaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = three_records(dir);
        store.compact().unwrap();
        store.apply(&[create("refs/heads/r4", oid(4))]).unwrap();
        let state = read_state(dir).unwrap();
        assert_eq!(state.seq, 4);
        assert_eq!(&state.refs, store.refs());
        // A snapshot file rebuilt from the state, with an empty log, opens
        // as the same store.
        let copy = tempfile::tempdir().unwrap();
        fs::write(
            copy.path().join(SNAPSHOT_FILE_NAME),
            snapshot_file_bytes(&state),
        )
        .unwrap();
        fs::write(copy.path().join(LOG_FILE_NAME), b"").unwrap();
        let reopened = RefStore::open(copy.path()).unwrap();
        assert_eq!(reopened.refs(), store.refs());
        assert_eq!(reopened.sequence(), 4);
        assert_eq!(
            fs::read_to_string(copy.path().join("packed-refs")).unwrap(),
            packed_refs_text(store.refs())
        );
    }

    #[test]
    fn exports_never_go_backwards_and_open_repairs_a_stale_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut store = RefStore::open(dir).unwrap();
        store.apply(&[create("refs/heads/main", oid(1))]).unwrap();
        let old = store.git_export();
        store
            .apply(&[update("refs/heads/main", oid(1), oid(2))])
            .unwrap();
        let new = store.git_export();
        assert!(new.write().unwrap());
        assert!(
            !old.write().unwrap(),
            "an older export overwrote a newer one"
        );
        assert!(new.is_current().unwrap());
        assert!(fs::read_to_string(dir.join("packed-refs"))
            .unwrap()
            .contains(&oid(2).to_string()));
        drop(store);
        // Someone writes other values: the log wins at the next open.
        fs::write(dir.join("packed-refs"), "# pack-refs with: sorted \n").unwrap();
        fs::write(dir.join("HEAD"), "ref: refs/heads/other\n").unwrap();
        let store = RefStore::open(dir).unwrap();
        assert_eq!(store.get("refs/heads/main"), Some(oid(2)));
        assert_eq!(store.head_target(), "refs/heads/main");
        assert!(store.git_export().is_current().unwrap());
    }
}
