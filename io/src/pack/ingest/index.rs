//! The files of an ingest (gix-pack's `index/write`): the temporary pack
//! and index, writing the `.idx` with the bytes git writes, fsyncing both,
//! and committing them under their final names.
//!
//! Until [`IngestedPack::commit`] both files have temporary names and are
//! removed if the ingest fails or is dropped; nothing else in the pack
//! directory changes.

use super::error::{io_err, IngestError};
use super::parse::{Entry, Resolved};
use super::resolve::{read_pack_object, ResolvedPack};
use super::{IngestLimits, IngestStats, ObjectSource};
use crate::object::ObjectKind;
use crate::oid::ObjectId;
use crate::pack::idx::{write_idx, IdxEntry, PackIndex};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files removed on drop unless disarmed.
pub(super) struct TempFiles {
    pub(super) pack: PathBuf,
    pub(super) idx: PathBuf,
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

/// Create `pack_dir/tmp_pack_<random>` (and reserve the name of its index).
pub(super) fn create_temp_pack(pack_dir: &Path) -> Result<(File, TempFiles), IngestError> {
    let mut attempts = 0;
    loop {
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
                let temp = TempFiles {
                    pack,
                    idx,
                    armed: true,
                };
                return Ok((file, temp));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1
            }
            Err(e) => return Err(io_err("creating the temporary pack")(e)),
        }
    }
}

/// Write the `.idx` of `entries` to its temporary name, fsync it and the
/// pack, and return it parsed.
pub(super) fn write_index(
    temp: &TempFiles,
    pack: &File,
    objects: &ResolvedPack,
    checksum: &[u8; 20],
) -> Result<PackIndex, IngestError> {
    let mut idx_entries: Vec<IdxEntry> = objects
        .entries
        .iter()
        .zip(&objects.resolved)
        .map(|(e, r)| IdxEntry {
            oid: r.oid,
            crc32: e.crc32,
            offset: e.offset,
        })
        .collect();
    let idx_bytes = write_idx(&mut idx_entries, checksum);
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
    pack.sync_all()
        .map_err(io_err("syncing the temporary pack"))?;
    PackIndex::parse(bytes::Bytes::from(idx_bytes), false)
        .map_err(|e| io_err("parsing the written index")(std::io::Error::other(e)))
}

/// A received pack, verified and indexed, still under temporary names.
/// Dropping it without [`commit`](IngestedPack::commit) removes both files.
pub struct IngestedPack {
    pub(super) dir: PathBuf,
    pub(super) temp: TempFiles,
    pub(super) file: File,
    pub(super) checksum: [u8; 20],
    pub(super) index: PackIndex,
    pub(super) entries: Vec<Entry>,
    pub(super) resolved: Vec<Resolved>,
    pub(super) limits: IngestLimits,
    pub(super) stats: IngestStats,
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
