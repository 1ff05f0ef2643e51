//! Geometric repacking: keep a repository in a few packs.
//!
//! Every push adds a pack; a busy repository would otherwise hold one per
//! push, and every lookup, negotiation and clone pays for each. As C git's
//! `repack --geometric=2` does, the packs are kept in a geometric
//! progression by object count: sorted by size, each pack holds at least
//! [`GEOMETRIC_FACTOR`] times the objects of the next smaller one. The
//! small packs that break the progression (and any larger ones the merged
//! pack would then outgrow) are merged into one new pack, so the pack
//! count stays logarithmic in the object count and the big old pack is
//! rarely rewritten.
//!
//! The new pack holds every object of the merged packs, reachable or not:
//! nothing a ref (or a push being checked right now) may need is lost.
//! Unreachable objects go only through [`prune_plan`]: packs older than a
//! grace period that hold objects no ref reaches (packs of losing
//! concurrent pushes, deleted or rewound branches) are rewritten without
//! them, as C git's `gc --prune` does, keeping everything reachable from a
//! ref or from an object of a recent pack.
//! It is written with the clone path's pack writer (whole packs are
//! concatenated verbatim; stored deltas are reused, never recomputed), a
//! step at a time ([`Repack::step`]), under a temporary name. [`Repack::finish`]
//! writes its index, fsyncs both and the directory, and renames them into
//! place; only then may the caller swap the store's list
//! ([`ObjectStore::replace_packs`]) and retire the old packs
//! ([`crate::store::Pack::retire`]). A crash at any point leaves either the
//! old packs, or the old packs and the new one (the same objects twice,
//! which every reader accepts and the next repack merges).

use super::idx::{write_idx, IdxEntry};
use super::write::{pack_stream, PackStream, PackWriteError, PackWriteOptions};
use crate::interrupt::Interrupt;
use crate::oid::ObjectId;
use crate::store::{ObjectStore, Pack, StoreError};
use crate::walk::{enumerate, WalkError, WalkRequest};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Each pack should hold at least this many times the objects of the next
/// smaller one (`git repack --geometric=2`).
pub const GEOMETRIC_FACTOR: u64 = 2;

/// Errors while repacking. Nothing visible has changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum RepackError {
    /// Writing the pack from the store failed.
    #[error(transparent)]
    Write(#[from] PackWriteError),
    /// The written pack could not be opened again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{what} ({path}): {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The reachability walk of a prune failed (an object a ref or a
    /// recent object needs is missing, or the walk was interrupted):
    /// nothing is pruned.
    #[error("reachability walk: {0}")]
    Walk(#[from] WalkError),
    /// The written pack does not hold what the merged packs held.
    #[error("the merged pack holds {got} objects, expected {expected}")]
    Mismatch {
        /// Distinct objects of the merged packs.
        expected: usize,
        /// Objects in the written pack.
        got: usize,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RepackError + 'a {
    move |source| RepackError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Which of packs with these object counts to merge (positions into
/// `counts`), so that the rest and the merged pack form a geometric
/// progression with `factor`; empty when there is nothing to gain (fewer
/// than two packs to merge). This is C git's `repack --geometric` split.
pub fn geometric_plan(counts: &[u64], factor: u64) -> Vec<usize> {
    let factor = factor.max(2);
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| (counts[i], i));
    let w = |k: usize| counts[order[k]].max(1);
    let n = order.len();
    if n < 2 {
        return Vec::new();
    }
    // The largest packs that already form a progression stay; everything
    // left of the first pair (from the top) that breaks it is merged.
    let mut split = 0;
    for k in (1..n).rev() {
        if w(k) < factor.saturating_mul(w(k - 1)) {
            split = k + 1;
            break;
        }
    }
    if split == 0 {
        return Vec::new();
    }
    let mut total: u64 = (0..split).map(w).sum();
    // The merged pack may outgrow packs above the split: take those in too.
    while split < n && factor.saturating_mul(total) >= w(split) {
        total += w(split);
        split += 1;
    }
    if split < 2 {
        return Vec::new();
    }
    let mut picked: Vec<usize> = order[..split].to_vec();
    picked.sort_unstable();
    picked
}

/// What pruning a store would do.
#[derive(Debug)]
pub struct PrunePlan {
    /// Positions, in the store the plan was made from, of the old packs
    /// that hold unreachable objects: they are rewritten with only
    /// [`keep`](PrunePlan::keep)'s objects (or removed, if none is left).
    pub picked: Vec<usize>,
    /// The objects to keep: reachable from a tip, or from an object of a
    /// recent pack.
    pub keep: ahash::AHashSet<ObjectId>,
    /// Distinct objects of the picked packs that are not kept.
    pub dropped: usize,
    /// Distinct objects of the picked packs that are kept.
    pub kept: usize,
}

/// The packs of `store` worth rewriting to drop unreachable objects, if
/// any. Kept are the objects reachable from `tips` (every ref), every
/// object of a pack modified after `cutoff` (a push being checked or
/// ordered right now, a recent losing push: the grace period), and every
/// object those reach, so a kept object never points at a dropped one
/// (C git's `gc` keeps what recent unreachable objects reach the same
/// way). Only packs modified at or before `cutoff` are rewritten. A
/// missing object anywhere in the walk fails the plan: nothing is pruned
/// from a damaged repository.
pub fn prune_plan(
    store: &ObjectStore,
    tips: &[ObjectId],
    cutoff: SystemTime,
    interrupt: Interrupt,
) -> Result<Option<PrunePlan>, RepackError> {
    let old: Vec<bool> = store
        .packs()
        .iter()
        .map(|p| {
            std::fs::metadata(p.path())
                .and_then(|m| m.modified())
                .map(|t| t <= cutoff)
                // A pack whose age cannot be read counts as recent.
                .unwrap_or(false)
        })
        .collect();
    if !old.iter().any(|&o| o) {
        return Ok(None);
    }
    let mut tips: Vec<ObjectId> = tips.to_vec();
    tips.sort_unstable();
    tips.dedup();
    let reachable = enumerate(
        store,
        &WalkRequest {
            wants: tips.clone(),
            interrupt: interrupt.clone(),
            ..Default::default()
        },
    )?;
    let mut keep: ahash::AHashSet<ObjectId> = reachable.objects.into_iter().collect();
    // Recent objects no ref reaches, and what they reach.
    let mut recent: Vec<ObjectId> = Vec::new();
    for (p, _) in store.packs().iter().zip(&old).filter(|(_, &o)| !o) {
        recent.extend(
            p.index()
                .entries()
                .map(|e| e.oid)
                .filter(|o| !keep.contains(o)),
        );
    }
    recent.sort_unstable();
    recent.dedup();
    if !recent.is_empty() {
        let closure = enumerate(
            store,
            &WalkRequest {
                wants: recent.clone(),
                haves: tips,
                interrupt,
                ..Default::default()
            },
        )?;
        keep.extend(closure.objects);
        keep.extend(recent);
    }
    let mut picked = Vec::new();
    let mut in_picked: ahash::AHashSet<ObjectId> = ahash::AHashSet::new();
    for (i, p) in store.packs().iter().enumerate() {
        if old[i] && p.index().entries().any(|e| !keep.contains(&e.oid)) {
            picked.push(i);
            in_picked.extend(p.index().entries().map(|e| e.oid));
        }
    }
    if picked.is_empty() {
        return Ok(None);
    }
    let kept = in_picked.iter().filter(|o| keep.contains(*o)).count();
    Ok(Some(PrunePlan {
        picked,
        dropped: in_picked.len() - kept,
        kept,
        keep,
    }))
}

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A merge of some packs into one, being written.
pub struct Repack {
    dir: PathBuf,
    stream: PackStream,
    file: File,
    temp_pack: PathBuf,
    temp_idx: PathBuf,
    /// Checksums of the packs merged.
    replaced: Vec<[u8; 20]>,
    /// Distinct objects of the merged packs.
    expected: usize,
    armed: bool,
}

impl Drop for Repack {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.temp_pack);
            let _ = std::fs::remove_file(&self.temp_idx);
        }
    }
}

impl Repack {
    /// Start merging the packs at positions `picked` of `store` into a new
    /// pack in the store's pack directory.
    pub fn start(store: &ObjectStore, picked: &[usize]) -> Result<Repack, RepackError> {
        Repack::start_keeping(store, picked, None)
    }

    /// As [`start`](Repack::start), but the new pack holds only the objects
    /// in `keep` (all of them if `None`): a prune's rewrite
    /// ([`prune_plan`]). The caller must not write a pack that would be
    /// empty.
    pub fn start_keeping(
        store: &ObjectStore,
        picked: &[usize],
        keep: Option<&ahash::AHashSet<ObjectId>>,
    ) -> Result<Repack, RepackError> {
        let subset = store.subset(picked);
        let mut objects: Vec<ObjectId> = Vec::new();
        for p in subset.packs() {
            objects.extend(p.index().entries().map(|e| e.oid));
        }
        if let Some(keep) = keep {
            objects.retain(|o| keep.contains(o));
        }
        objects.sort_unstable();
        objects.dedup();
        let expected = objects.len();
        let stream = pack_stream(&subset, &objects, PackWriteOptions::default())?;
        drop(objects);
        let dir = store.objects_dir().join("pack");
        let stamp = format!(
            "{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        );
        // The `tmp_` names are what the start-up sweep removes after a crash.
        let temp_pack = dir.join(format!("tmp_pack_repack-{stamp}"));
        let temp_idx = dir.join(format!("tmp_idx_repack-{stamp}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_pack)
            .map_err(io_err("creating the repacked pack", &temp_pack))?;
        Ok(Repack {
            dir,
            stream,
            file,
            temp_pack,
            temp_idx,
            replaced: subset.packs().iter().map(|p| p.checksum()).collect(),
            expected,
            armed: true,
        })
    }

    /// Checksums of the packs being merged.
    pub fn replaced(&self) -> &[[u8; 20]] {
        &self.replaced
    }

    /// Write about `max_bytes` more of the pack; `true` once it is all written.
    pub fn step(&mut self, max_bytes: usize) -> Result<bool, RepackError> {
        let mut written = 0;
        while written < max_bytes {
            match self.stream.next() {
                None => return Ok(true),
                Some(chunk) => {
                    let chunk = chunk?;
                    self.file
                        .write_all(&chunk)
                        .map_err(io_err("writing the repacked pack", &self.temp_pack))?;
                    written += chunk.len();
                }
            }
        }
        Ok(false)
    }

    /// Write the whole pack at once (tests, tools).
    pub fn run(mut self) -> Result<(Pack, Vec<[u8; 20]>), RepackError> {
        while !self.step(usize::MAX)? {}
        self.finish()
    }

    /// After the last [`step`](Repack::step): write the index, fsync the
    /// pack, the index and the directory, rename both into place (the
    /// index last), and open the new pack. Returns it with the checksums
    /// of the packs it replaces.
    pub fn finish(mut self) -> Result<(Pack, Vec<[u8; 20]>), RepackError> {
        let entries = self.stream.written_entries().ok_or(RepackError::Mismatch {
            expected: self.expected,
            got: 0,
        })?;
        if entries.len() != self.expected {
            return Err(RepackError::Mismatch {
                expected: self.expected,
                got: entries.len(),
            });
        }
        self.file
            .sync_all()
            .map_err(io_err("syncing the repacked pack", &self.temp_pack))?;
        let len = self
            .file
            .metadata()
            .map_err(io_err("reading the repacked pack", &self.temp_pack))?
            .len();
        // Entry CRCs from the bytes as written, read back in order.
        let mut sorted = entries;
        sorted.sort_unstable_by_key(|e| e.1);
        let mut reader = std::io::BufReader::with_capacity(
            1 << 20,
            File::open(&self.temp_pack)
                .map_err(io_err("reading the repacked pack", &self.temp_pack))?,
        );
        let mut skip = vec![0u8; sorted.first().map_or(0, |e| e.1 as usize)];
        reader
            .read_exact(&mut skip)
            .map_err(io_err("reading the repacked pack", &self.temp_pack))?;
        let mut idx_entries = Vec::with_capacity(sorted.len());
        let mut buf = Vec::new();
        for (i, &(oid, offset)) in sorted.iter().enumerate() {
            let end = sorted.get(i + 1).map_or(len.saturating_sub(20), |e| e.1);
            buf.resize((end - offset) as usize, 0);
            reader
                .read_exact(&mut buf)
                .map_err(io_err("reading the repacked pack", &self.temp_pack))?;
            idx_entries.push(IdxEntry {
                oid,
                crc32: crc32fast::hash(&buf),
                offset,
            });
        }
        let mut checksum = [0u8; 20];
        reader
            .read_exact(&mut checksum)
            .map_err(io_err("reading the repacked pack", &self.temp_pack))?;
        let idx_bytes = write_idx(&mut idx_entries, &checksum);
        let mut idx = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.temp_idx)
            .map_err(io_err("creating the repacked index", &self.temp_idx))?;
        idx.write_all(&idx_bytes)
            .and_then(|()| idx.sync_all())
            .map_err(io_err("writing the repacked index", &self.temp_idx))?;
        // Check the pair before anything is renamed into place.
        let check = Pack::open(&self.temp_pack, &self.temp_idx)?;
        if check.object_count() as usize != self.expected {
            return Err(RepackError::Mismatch {
                expected: self.expected,
                got: check.object_count() as usize,
            });
        }
        drop(check);
        let hex = ObjectId::from_sha1(checksum).to_hex();
        let pack_path = self.dir.join(format!("pack-{hex}.pack"));
        let idx_path = self.dir.join(format!("pack-{hex}.idx"));
        if !(pack_path.exists() && idx_path.exists()) {
            std::fs::rename(&self.temp_pack, &pack_path)
                .map_err(io_err("renaming the repacked pack", &pack_path))?;
            std::fs::rename(&self.temp_idx, &idx_path)
                .map_err(io_err("renaming the repacked index", &idx_path))?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the pack directory", &self.dir))?;
        let _ = std::fs::remove_file(&self.temp_pack);
        let _ = std::fs::remove_file(&self.temp_idx);
        self.armed = false;
        let pack = Pack::open(&pack_path, &idx_path)?;
        Ok((pack, std::mem::take(&mut self.replaced)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn geometric_plan_merges_the_small_packs() {
        // One big pack and many tiny ones: the tiny ones merge, the big stays.
        let mut counts = vec![10_000u64];
        counts.extend(vec![3; 300]);
        let plan = geometric_plan(&counts, 2);
        assert_eq!(plan.len(), 300);
        assert!(!plan.contains(&0));
        // Already a progression: nothing to do.
        assert!(geometric_plan(&[1, 2, 4, 8, 100], 2).is_empty());
        assert!(geometric_plan(&[5], 2).is_empty());
        assert!(geometric_plan(&[], 2).is_empty());
        // Two equal packs merge.
        assert_eq!(geometric_plan(&[7, 7], 2), vec![0, 1]);
        // The merged pack outgrows the next one: it joins.
        assert_eq!(geometric_plan(&[100, 3, 3, 3, 10], 2).len(), 4);
        assert_eq!(geometric_plan(&[100, 3, 3, 3, 30], 2).len(), 3);
    }

    #[test]
    fn repeated_plans_stay_logarithmic() {
        // Simulate 3000 pushes of 3 objects, repacking after each.
        let mut packs: Vec<u64> = vec![5000];
        let mut most = 0;
        for _ in 0..3000 {
            packs.push(3);
            let plan = geometric_plan(&packs, GEOMETRIC_FACTOR);
            if !plan.is_empty() {
                let merged: u64 = plan.iter().map(|&i| packs[i]).sum();
                let mut rest: Vec<u64> = packs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !plan.contains(i))
                    .map(|(_, c)| *c)
                    .collect();
                rest.push(merged);
                packs = rest;
            }
            most = most.max(packs.len());
        }
        assert!(most <= 16, "{most} packs");
    }

    /// A repository whose objects sit in one pack per commit (as pushes
    /// leave them), some objects stored twice, copied into a store dir.
    fn many_packs() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let git = |args: &[&str]| guts_testkit::git_ok(&repo, args);
        git(&["init", "-q"]);
        let store = tmp.path().join("objects/pack");
        std::fs::create_dir_all(&store).unwrap();
        for i in 0..12 {
            let body: String = (0..300)
                .map(|j| format!("line {j} {}\n", if j == i { "changed" } else { "" }))
                .collect();
            std::fs::write(repo.join("file.txt"), body).unwrap();
            guts_testkit::commit_all(&repo, &format!("c{i}"));
            // Every third pack also repeats everything so far (duplicates).
            if i % 3 == 2 {
                git(&["repack", "-aq"]);
            } else {
                git(&["repack", "-q"]);
            }
        }
        for e in std::fs::read_dir(repo.join(".git/objects/pack")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if name.ends_with(".pack") || name.ends_with(".idx") {
                std::fs::copy(&p, store.join(name)).unwrap();
            }
        }
        (tmp, repo)
    }

    fn all_objects(repo: &Path) -> Vec<(ObjectId, String)> {
        guts_testkit::git_ok(
            repo,
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname) %(objecttype)",
            ],
        )
        .lines()
        .map(|l| {
            let (o, k) = l.split_once(' ').unwrap();
            (o.parse().unwrap(), k.to_string())
        })
        .collect()
    }

    #[test]
    fn merged_packs_keep_every_object_and_old_files_go_with_their_readers() {
        let (tmp, repo) = many_packs();
        let objects_dir = tmp.path().join("objects");
        let mut store = ObjectStore::open(&objects_dir).unwrap();
        let before = store.packs().len();
        assert!(before >= 6, "{before} packs");
        let all = all_objects(&repo);
        // Merge all but the newest pack, twice over (the second time the
        // input includes a repacked pack).
        for round in 0..2 {
            let n = store.packs().len();
            let picked: Vec<usize> = (1..n).collect();
            let old = store.clone();
            let (pack, replaced) = Repack::start(&store, &picked).unwrap().run().unwrap();
            assert_eq!(replaced.len(), n - 1);
            let removed = store.replace_packs(&replaced, pack);
            assert_eq!(store.packs().len(), 2, "round {round}");
            for p in &removed {
                assert!(store.holds_pack(&p.checksum()));
                p.retire().unwrap();
            }
            // The old snapshot still reads everything from retired files.
            for (oid, _) in &all {
                let (k, d) = old.read(oid).unwrap().unwrap();
                assert_eq!(crate::object::hash_object(k, &d), *oid);
            }
            let retired = |dir: &Path| {
                std::fs::read_dir(dir.join("pack"))
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .starts_with(crate::store::RETIRED_PACK_PREFIX)
                    })
                    .count()
            };
            assert_eq!(retired(&objects_dir), removed.len());
            drop(removed);
            drop(old);
            assert_eq!(
                retired(&objects_dir),
                0,
                "retired files removed with their last reader"
            );
            // What is on disk opens to the same objects; C git agrees.
            let reopened = ObjectStore::open(&objects_dir).unwrap();
            assert_eq!(reopened.packs().len(), 2);
            for (oid, kind) in &all {
                let (k, d) = store.read(oid).unwrap().unwrap();
                assert_eq!(k.name(), kind.as_str());
                assert_eq!(crate::object::hash_object(k, &d), *oid);
                assert!(reopened.contains(oid));
            }
        }
        // C git reads the repacked directory: fsck --strict in a bare copy.
        let bare = tmp.path().join("bare.git");
        guts_testkit::git_ok(
            tmp.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        for e in std::fs::read_dir(objects_dir.join("pack")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, bare.join("objects/pack").join(p.file_name().unwrap())).unwrap();
        }
        let head = guts_testkit::git_ok(&repo, &["rev-parse", "HEAD"]);
        guts_testkit::git_ok(&bare, &["update-ref", "refs/heads/main", head.trim()]);
        guts_testkit::git_ok(&bare, &["fsck", "--strict", "--no-dangling"]);
        for e in std::fs::read_dir(bare.join("objects/pack")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "pack") {
                guts_testkit::git_ok(&bare, &["verify-pack", p.to_str().unwrap()]);
            }
        }
    }

    /// Objects as their own pack in `store` (`git pack-objects`), its file
    /// dated `age` ago.
    fn pack_of(repo: &Path, store: &Path, oids: &[&str], age: Duration) {
        let list = oids.join("\n") + "\n";
        let prefix = store.join("pack/pack");
        let out = guts_testkit::git_bytes(
            repo,
            &["pack-objects", "-q", prefix.to_str().unwrap()],
            Some(list.as_bytes()),
        );
        let sum = String::from_utf8(out).unwrap();
        let pack = store.join(format!("pack/pack-{}.pack", sum.trim()));
        let f = std::fs::File::options().write(true).open(&pack).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn write_blob(repo: &Path, text: &str) -> String {
        let out = guts_testkit::git_bytes(
            repo,
            &["hash-object", "-w", "--stdin"],
            Some(text.as_bytes()),
        );
        String::from_utf8(out).unwrap().trim().to_string()
    }

    #[test]
    fn prune_drops_old_unreachable_objects_and_keeps_what_recent_ones_reach() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let git = |args: &[&str]| guts_testkit::git_ok(&repo, args).trim().to_string();
        git(&["init", "-q"]);
        std::fs::write(repo.join("a.txt"), "reachable\n").unwrap();
        guts_testkit::commit_all(&repo, "a");
        let head = git(&["rev-parse", "HEAD"]);
        let tree = git(&["rev-parse", "HEAD^{tree}"]);
        let blob = git(&["rev-parse", "HEAD:a.txt"]);
        // Unreachable: an old blob nothing names, and an old blob that a
        // recent unreachable tree names (a push still being ordered).
        let garbage = write_blob(&repo, "garbage\n");
        let named = write_blob(&repo, "named by a recent tree\n");
        let recent_tree = {
            let line = format!("100644 blob {named}\tn.txt\n");
            let out = guts_testkit::git_bytes(&repo, &["mktree"], Some(line.as_bytes()));
            String::from_utf8(out).unwrap().trim().to_string()
        };
        let store_dir = tmp.path().join("objects");
        std::fs::create_dir_all(store_dir.join("pack")).unwrap();
        let day = Duration::from_secs(86_400);
        pack_of(&repo, &store_dir, &[&head, &tree, &blob], day);
        pack_of(&repo, &store_dir, &[&garbage, &named, &blob], day);
        pack_of(&repo, &store_dir, &[&recent_tree], Duration::ZERO);

        let mut store = ObjectStore::open(&store_dir).unwrap();
        let oid = |h: &str| h.parse::<ObjectId>().unwrap();
        let tips = [oid(&head)];
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        let plan = prune_plan(&store, &tips, cutoff, Default::default())
            .unwrap()
            .expect("something to prune");
        assert_eq!(plan.picked.len(), 1, "only the pack holding garbage");
        assert_eq!((plan.dropped, plan.kept), (1, 2));
        for kept in [&head, &tree, &blob, &named, &recent_tree] {
            assert!(plan.keep.contains(&oid(kept)), "{kept} must be kept");
        }
        assert!(!plan.keep.contains(&oid(&garbage)));
        // Nothing is old: nothing to do.
        let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
        assert!(prune_plan(&store, &tips, long_ago, Default::default())
            .unwrap()
            .is_none());

        let picked: Vec<[u8; 20]> = plan
            .picked
            .iter()
            .map(|&i| store.packs()[i].checksum())
            .collect();
        let (pack, _) = Repack::start_keeping(&store, &plan.picked, Some(&plan.keep))
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(pack.object_count(), 2);
        let removed = store.prune_packs(&picked, Some(pack));
        assert_eq!(removed.len(), 1);
        assert!(!store.holds_pack(&picked[0]), "a pruned pack is not held");
        for p in &removed {
            p.retire().unwrap();
        }
        drop(removed);
        let reopened = ObjectStore::open(&store_dir).unwrap();
        assert!(!reopened.contains(&oid(&garbage)));
        for kept in [&head, &tree, &blob, &named, &recent_tree] {
            assert!(reopened.contains(&oid(kept)), "{kept} lost");
        }
        // Again, now that the garbage is gone: nothing more to drop.
        assert!(prune_plan(&reopened, &tips, cutoff, Default::default())
            .unwrap()
            .is_none());
        // A ref to an object the store lacks fails the plan (nothing is
        // pruned from a damaged repository).
        let missing = oid("0123456789012345678901234567890123456789");
        assert!(prune_plan(&reopened, &[missing], cutoff, Default::default()).is_err());
    }
}
