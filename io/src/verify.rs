//! Offline checks of one repository's files, as `git fsck` and
//! `git verify-pack` make them: every pack's checksum, every index against
//! its pack (object count, pack checksum, offsets, each entry's CRC-32 and
//! each object's id), the ref store (snapshot and log, including a torn
//! tail), and that every ref's objects are present and connected.
//!
//! Nothing here writes: damage is reported, never repaired. The checks read
//! the ref store with [`crate::refs::read_state`], so they may run while a
//! node serves the repository; any set of valid packs is accepted (an
//! object stored in two packs, packs replaced by a repack).

use crate::object::hash_object;
use crate::oid::ObjectId;
use crate::refs::{read_state, RefError, RefState};
use crate::store::{Location, ObjectStore, Pack, StoreError};
use crate::walk::{enumerate, WalkError, WalkRequest};
use sha1::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Problems reported per pack before the rest are only counted.
pub const PROBLEMS_PER_PACK_MAX: usize = 20;
/// Bytes read at a time while hashing a pack.
const HASH_CHUNK_BYTES: usize = 1 << 20;
/// Pack header (signature, version, count) plus trailer: the smallest pack.
const PACK_MIN_BYTES: u64 = 12 + 20;

/// One damaged file or ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged file, or the ref (`refs/heads/main`) whose objects are
    /// missing or broken.
    pub subject: String,
    /// What is wrong.
    pub what: String,
}

/// The outcome of checking one repository.
#[derive(Debug, Default)]
pub struct RepoReport {
    /// Damage: any entry makes the repository inconsistent.
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<Problem>,
    /// Packs found (with or without damage).
    pub packs: usize,
    /// Objects whose ids were checked.
    pub objects: u64,
    /// Refs in the ref store.
    pub refs: usize,
    /// The ref store's sequence number, if it could be read.
    pub ref_sequence: Option<u64>,
}

impl RepoReport {
    /// True when nothing is damaged.
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, subject: impl std::fmt::Display, what: impl Into<String>) {
        self.problems.push(Problem {
            subject: subject.to_string(),
            what: what.into(),
        });
    }
}

/// The packs of `pack_dir` as `(stem, has .pack, has .idx)`, sorted by
/// name. Temporary files of pushes in progress are not packs yet.
pub fn list_packs(pack_dir: &Path) -> std::io::Result<Vec<(String, bool, bool)>> {
    let mut found: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("pack-") else {
            continue;
        };
        if let Some(stem) = rest.strip_suffix(".pack") {
            found.entry(stem.to_string()).or_default().0 = true;
        } else if let Some(stem) = rest.strip_suffix(".idx") {
            found.entry(stem.to_string()).or_default().1 = true;
        }
    }
    Ok(found
        .into_iter()
        .map(|(stem, (pack, idx))| (stem, pack, idx))
        .collect())
}

/// Check the repository in `dir` (a `NAME.git` directory).
pub fn verify_repository(dir: &Path) -> RepoReport {
    let mut report = RepoReport::default();
    let state = check_ref_store(dir, &mut report);
    let pack_dir = dir.join("objects").join("pack");
    let listed = match list_packs(&pack_dir) {
        Ok(listed) => listed,
        Err(e) => {
            report.problem(pack_dir.display(), format!("cannot be listed: {e}"));
            Vec::new()
        }
    };
    let mut good = Vec::new();
    for (stem, has_pack, has_idx) in listed {
        let pack_path = pack_dir.join(format!("pack-{stem}.pack"));
        let idx_path = pack_dir.join(format!("pack-{stem}.idx"));
        report.packs += 1;
        match (has_pack, has_idx) {
            (true, false) => {
                report.problem(
                    pack_path.display(),
                    "has no index (.idx): its objects are invisible",
                );
                continue;
            }
            (false, true) => {
                report.problem(idx_path.display(), "index without its pack (.pack)");
                continue;
            }
            _ => {}
        }
        if let Some(pack) = check_pack(&pack_path, &idx_path, &mut report) {
            good.push(pack);
        }
    }
    let store = ObjectStore::from_packs(&dir.join("objects"), good);
    for i in 0..store.packs().len() {
        check_objects(&store, i, &mut report);
    }
    if let Some(state) = state {
        check_connectivity(&store, &state, &mut report);
    }
    report
}

/// Read the ref store; report damage and a torn tail.
fn check_ref_store(dir: &Path, report: &mut RepoReport) -> Option<RefState> {
    match read_state(dir) {
        Ok(mut state) => {
            if let Some(torn) = state.torn_tail.take() {
                report.problem(
                    torn.path.display(),
                    format!(
                        "the last {} bytes (from offset {}) are not a valid record ({}): a write cut short by a crash, or a damaged record; the node drops them when it next opens the store",
                        torn.bytes, torn.offset, torn.reason
                    ),
                );
            }
            // packed-refs with the loose ref files read over it, as C git
            // reads them.
            let exported = crate::refs::exported_refs(dir).ok().flatten();
            if exported.as_ref() != Some(&state.refs) {
                report.notes.push(Problem {
                    subject: dir.join("packed-refs").display().to_string(),
                    what: "behind the ref log: C git reading this directory sees older refs until the node exports them again (after its next batch, or when it opens the repository)".into(),
                });
            }
            report.refs = state.refs.len();
            report.ref_sequence = Some(state.seq);
            Some(state)
        }
        Err(RefError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            report.problem(
                path.display(),
                format!("corrupt at offset {offset}: {reason}"),
            );
            None
        }
        Err(e) => {
            report.problem(
                dir.join(crate::refs::LOG_FILE_NAME).display(),
                format!("ref store unreadable: {e}"),
            );
            None
        }
    }
}

/// The SHA-1 of a pack's contents must be its trailer; the index must
/// match the pack. Returns the opened pack when both hold.
fn check_pack(pack_path: &Path, idx_path: &Path, report: &mut RepoReport) -> Option<Pack> {
    let trailer_ok = match pack_checksum(pack_path) {
        Ok(None) => true,
        Ok(Some(what)) => {
            report.problem(pack_path.display(), what);
            false
        }
        Err(e) => {
            report.problem(pack_path.display(), format!("cannot be read: {e}"));
            false
        }
    };
    match Pack::open(pack_path, idx_path) {
        Ok(pack) if trailer_ok => Some(pack),
        Ok(_) => None,
        Err(StoreError::BadIndex { path, source }) => {
            report.problem(path.display(), format!("bad pack index: {source}"));
            None
        }
        Err(StoreError::IndexMismatch { reason, .. }) => {
            report.problem(
                idx_path.display(),
                format!(
                    "does not match its pack {}: {reason}",
                    pack_path.file_name().unwrap_or_default().to_string_lossy()
                ),
            );
            None
        }
        Err(StoreError::BadPackHeader { path }) => {
            if trailer_ok {
                report.problem(path.display(), "not a pack file (bad signature or version)");
            }
            None
        }
        Err(e) => {
            report.problem(pack_path.display(), e.to_string());
            None
        }
    }
}

/// `None` when the pack's trailer is the SHA-1 of what precedes it,
/// otherwise what is wrong.
fn pack_checksum(path: &Path) -> std::io::Result<Option<String>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len < PACK_MIN_BYTES {
        return Ok(Some(format!(
            "{len} bytes: shorter than the smallest pack ({PACK_MIN_BYTES})"
        )));
    }
    let mut hasher = sha1::Sha1::new();
    let mut remaining = len - 20;
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    while remaining > 0 {
        let n = remaining.min(HASH_CHUNK_BYTES as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut trailer = [0u8; 20];
    file.read_exact(&mut trailer)?;
    let digest: [u8; 20] = hasher.finalize().into();
    if digest == trailer {
        return Ok(None);
    }
    Ok(Some(format!(
        "checksum mismatch: the trailer says {}, the contents hash to {}",
        ObjectId::from_sha1(trailer),
        ObjectId::from_sha1(digest)
    )))
}

/// Every entry of pack `i`: its CRC-32 as the index records it, and the
/// object it decodes to hashes to the id the index gives it.
fn check_objects(store: &ObjectStore, i: usize, report: &mut RepoReport) {
    let pack = &store.packs()[i];
    let path = pack.path().display().to_string();
    let entries = pack.entries_by_offset();
    let mut damaged = 0usize;
    let mut note = |report: &mut RepoReport, what: String| {
        damaged += 1;
        if damaged <= PROBLEMS_PER_PACK_MAX {
            report.problem(&path, what);
        }
    };
    for &(offset, position) in entries {
        let oid = pack.index().oid_at(position);
        report.objects += 1;
        match pack.entry_range(offset) {
            Some((start, end)) => {
                match pack.read_at(start, (end - start) as usize) {
                    Ok(raw) => {
                        let crc = crc32fast::hash(&raw);
                        if crc != pack.index().crc_at(position) {
                            note(
                            report,
                            format!("object {oid} at offset {offset}: CRC-32 differs from the index's"),
                        );
                            continue;
                        }
                    }
                    Err(e) => {
                        note(report, format!("object {oid} at offset {offset}: {e}"));
                        continue;
                    }
                }
            }
            None => {
                note(
                    report,
                    format!("object {oid}: offset {offset} is not an entry"),
                );
                continue;
            }
        }
        let loc = Location {
            pack: i as u32,
            offset,
        };
        match store.read_uncached(loc) {
            Ok((kind, data)) => {
                let actual = hash_object(kind, &data);
                if actual != oid {
                    note(
                        report,
                        format!(
                            "object at offset {offset} hashes to {actual}, the index says {oid}"
                        ),
                    );
                }
            }
            Err(e) => note(report, format!("object {oid}: {e}")),
        }
    }
    if damaged > PROBLEMS_PER_PACK_MAX {
        report.problem(
            &path,
            format!(
                "{} more damaged objects not listed",
                damaged - PROBLEMS_PER_PACK_MAX
            ),
        );
    }
}

/// Every ref's objects are present and connected: one walk over all refs,
/// and when it fails, one walk per ref to name each damaged ref.
fn check_connectivity(store: &ObjectStore, state: &RefState, report: &mut RepoReport) {
    let all: Vec<ObjectId> = state.refs.values().copied().collect();
    if all.is_empty() || walk_complete(store, all).is_ok() {
        return;
    }
    for (name, oid) in &state.refs {
        if let Err(what) = walk_complete(store, vec![*oid]) {
            report.problem(name, what);
        }
    }
}

/// Walk everything reachable from `wants`; every object must be stored.
/// `Err` names the first object found missing or broken.
pub fn walk_complete(store: &ObjectStore, wants: Vec<ObjectId>) -> Result<(), String> {
    let request = WalkRequest {
        wants,
        ..WalkRequest::default()
    };
    let result = enumerate(store, &request).map_err(|e| match e {
        WalkError::Missing { oid, role } => format!("{role} {oid} is missing"),
        other => other.to_string(),
    })?;
    match result.objects.iter().find(|oid| !store.contains(oid)) {
        Some(missing) => Err(format!("object {missing} is missing")),
        None => Ok(()),
    }
}

/// Where the pack files of the repository in `dir` live.
pub fn pack_dir(dir: &Path) -> PathBuf {
    dir.join("objects").join("pack")
}
