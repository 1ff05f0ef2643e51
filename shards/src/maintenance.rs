//! Background maintenance of a shard's repositories: geometric repacking,
//! pruning of unreachable objects, and the bundles of busy repositories
//! ([`crate::bundle`], after a repack; on whether repacking is or not).
//!
//! Every push adds a pack. Each shard looks over its open repositories now
//! and then, in a task queue of its own with few shares (requests always
//! come first), and merges the small packs of a repository whose refs have
//! been quiet for [`ShardConfig::repack_quiet_ms`](crate::config::ShardConfig)
//! — or that has gathered [`REPACK_BUSY_PACKS`] packs, quiet or not — as
//! `git repack --geometric=2` would ([`guts_io::pack::repack`]).
//!
//! The merge runs on the blocking pool a few MiB at a time, off the
//! repository: pushes go on (their packs are added to the list as usual
//! and kept by the switch), clones read their snapshot's packs. The new
//! pack and its index are fsynced and renamed in before the store's list
//! is switched; the old packs are retired only after the switch, and their
//! files stay readable until the last snapshot holding them is gone.
//!
//! Pruning: now and then a quiet repository's reachable objects are
//! walked from its refs ([`guts_io::pack::repack::prune_plan`]); packs
//! older than [`ShardConfig::prune_unreachable_after_ms`](crate::config::ShardConfig)
//! that hold objects no ref (and no newer object) reaches are rewritten
//! without them, or removed. A push checks its objects against a
//! snapshot of the store and applies later, so the switch happens only if
//! no push of the repository was in flight at any time since the walk
//! began ([`PushInFlight`]) and nothing changed the repository meanwhile;
//! otherwise the rewritten pack is thrown away and the prune is tried
//! again later.

use crate::repo::Repo;
use crate::shard::Shard;
use crate::work::{contained, WorkError};
use guts_io::pack::repack::{geometric_plan, prune_plan, Repack, RepackError, GEOMETRIC_FACTOR};
use guts_io::store::StoreError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Default quiet time before a repository is repacked.
pub const REPACK_QUIET_MS: u64 = 1_000;
/// A repository with this many packs is repacked even if it is never quiet.
pub const REPACK_BUSY_PACKS: usize = 64;
/// Longest pause between looks over the open repositories.
pub const REPACK_CHECK_MAX_MS: u64 = 1_000;
/// Bytes of new pack written per job on the blocking pool.
pub const REPACK_STEP_BYTES: usize = 4 << 20;
/// Shares of the maintenance task queue (git services have 1000).
pub const MAINTENANCE_SHARES: usize = 50;
/// Default age of a pack before its unreachable objects are dropped: the
/// default request timeout, so no push still running can need them.
pub const PRUNE_UNREACHABLE_AFTER_MS: u64 = 3_600_000;
/// Longest time between two reachability walks of a repository whose refs
/// changed (at most the prune age itself).
pub const PRUNE_RECHECK_MS: u64 = 600_000;

/// Pushes in flight per repository (by lower-cased `OWNER/NAME`, which
/// names one repository as names differing only in case are refused),
/// from before the push's snapshot is taken until it is answered; node-wide,
/// as a push is received on any shard.
static PUSHES_IN_FLIGHT: LazyLock<Mutex<HashMap<String, u64>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn push_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

/// A push of one repository in flight: a prune does not switch packs while
/// one exists (or existed since its walk began).
pub struct PushInFlight {
    key: String,
}

impl PushInFlight {
    /// Count a push of `owner/name`. Taken before the push's snapshot.
    pub fn begin(owner: &str, name: &str) -> PushInFlight {
        let key = push_key(owner, name);
        let mut map = PUSHES_IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key.clone()).or_insert(0) += 1;
        PushInFlight { key }
    }
}

impl Drop for PushInFlight {
    fn drop(&mut self) {
        let mut map = PUSHES_IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Pushes begun for the repository `key` (`OWNER/NAME`) and not answered yet.
fn pushes_in_flight(key: &str) -> u64 {
    let map = PUSHES_IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&key.to_ascii_lowercase()).copied().unwrap_or(0)
}

/// What a shard remembers of a repository's last reachability walk.
struct PruneSeen {
    /// The repository's last change when it was walked.
    changed_at: Instant,
    /// When it was walked.
    at: Instant,
}

/// Run the shard's maintenance until the node stops.
pub async fn run(shard: Rc<Shard>) {
    let quiet_ms = shard.config.repack_quiet_ms;
    let bundles = shard.config.bundles;
    if quiet_ms == 0 && !bundles.enabled {
        return;
    }
    let repacking = quiet_ms > 0;
    // Bundles wait for the same quiet (the default one where repacking
    // is off, as on a node of a network).
    let quiet_ms = if repacking { quiet_ms } else { REPACK_QUIET_MS };
    let quiet = Duration::from_millis(quiet_ms);
    let pause = Duration::from_millis(quiet_ms.clamp(10, REPACK_CHECK_MAX_MS));
    let prune_ms = shard.config.prune_unreachable_after_ms;
    let recheck = Duration::from_millis(prune_ms.min(PRUNE_RECHECK_MS));
    let mut walked: HashMap<String, PruneSeen> = HashMap::new();
    loop {
        let stopped = futures_lite::future::or(
            async {
                shard.stopped().await;
                true
            },
            async {
                glommio::timer::sleep(pause).await;
                false
            },
        )
        .await;
        if stopped || shard.stopping.get() {
            return;
        }
        for (key, repo) in shard.open_repos() {
            if shard.stopping.get() {
                return;
            }
            let (due, prune_due, bundle_due) = {
                let Ok(r) = repo.try_borrow() else { continue };
                let packs = r.store.packs().len();
                let quiet_now = r.quiet_for() >= quiet;
                // Walk a quiet repository once after it changed (at most
                // every `recheck`), and again a prune age after the last
                // walk, when what was recent then has aged.
                let prune_due = repacking
                    && prune_ms > 0
                    && quiet_now
                    && match walked.get(&key) {
                        None => true,
                        Some(seen) => {
                            let since = seen.at.elapsed();
                            (seen.changed_at != r.changed_at() && since >= recheck)
                                || since >= Duration::from_millis(prune_ms)
                        }
                    };
                (
                    repacking && packs >= 2 && (quiet_now || packs >= REPACK_BUSY_PACKS),
                    prune_due,
                    quiet_now && crate::bundle::due(&bundles, &key, &r),
                )
            };
            if due {
                if let Err(e) = repack(&shard, &key, &repo).await {
                    tracing::warn!(repo = %key, error = %e, "repack failed; the repository is unchanged and is tried again later");
                }
            }
            if prune_due && !shard.stopping.get() {
                let seen = PruneSeen {
                    changed_at: repo.borrow().changed_at(),
                    at: Instant::now(),
                };
                match prune(&shard, &key, &repo, prune_ms).await {
                    Ok(true) => {
                        walked.insert(key.clone(), seen);
                    }
                    // Not this time (a push in flight, a change): soon again.
                    Ok(false) => {
                        walked.remove(&key);
                    }
                    Err(e) => {
                        tracing::warn!(repo = %key, error = %e, "prune failed; the repository is unchanged and is tried again later");
                        walked.insert(key.clone(), seen);
                    }
                }
            }
            // After a repack, so that a bundle's pack is one stored pack
            // copied as it is.
            if bundle_due && !shard.stopping.get() {
                if let Err(e) = crate::bundle::write(&shard, &key, &repo).await {
                    tracing::warn!(repo = %key, error = %e, "bundle not written; tried again after more clones");
                }
            }
        }
        // Forget repositories no longer open.
        if walked.len() > 2 * shard.open_repos().len() + 64 {
            let open: std::collections::HashSet<String> =
                shard.open_repos().into_iter().map(|(k, _)| k).collect();
            walked.retain(|k, _| open.contains(k));
        }
    }
}

/// Why a repack or a prune stopped; the repository is unchanged then, and
/// it is tried again later.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// Planning or writing the new pack.
    #[error(transparent)]
    Repack(#[from] RepackError),
    /// Retiring a pack taken out of the list.
    #[error(transparent)]
    Retire(#[from] StoreError),
    /// The blocking pool's work failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
}

/// Merge `repo`'s small packs if its packs are not a geometric progression.
/// Returns once the new list is in use and the old packs are retired.
pub async fn repack(
    shard: &Shard,
    key: &str,
    repo: &Rc<RefCell<Repo>>,
) -> Result<(), MaintenanceError> {
    let store = repo.borrow().store.clone();
    let counts: Vec<u64> = store
        .packs()
        .iter()
        .map(|p| u64::from(p.object_count()))
        .collect();
    let picked = geometric_plan(&counts, GEOMETRIC_FACTOR);
    if picked.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let merging = picked.len();
    let job =
        offload(move || Repack::start(&store, &picked).map_err(MaintenanceError::from)).await?;
    let Some((pack, replaced)) = write_out(shard, job).await? else {
        return Ok(());
    };
    let (objects, bytes) = (pack.object_count(), pack.len());
    // The switch: packs pushed meanwhile stay in the list.
    let (packs_now, retired) =
        switch(repo, move |store| store.replace_packs(&replaced, pack)).await?;
    tracing::info!(
        repo = %key,
        merged = merging,
        retired,
        objects,
        bytes,
        packs = packs_now,
        ms = started.elapsed().as_millis() as u64,
        "repacked"
    );
    Ok(())
}

/// Drop the objects no ref reaches from `repo`'s packs older than
/// `prune_ms` (see the module documentation). `Ok(false)` when it must be
/// tried again later: a push was in flight or the repository changed
/// while the new pack was written (nothing is switched then).
pub async fn prune(
    shard: &Shard,
    key: &str,
    repo: &Rc<RefCell<Repo>>,
    prune_ms: u64,
) -> Result<bool, MaintenanceError> {
    if pushes_in_flight(key) > 0 {
        return Ok(false);
    }
    let (store, tips, changed_at) = {
        let r = repo.borrow();
        let tips: Vec<_> = r.refs.refs().values().copied().collect();
        (r.store.clone(), tips, r.changed_at())
    };
    let started = Instant::now();
    let cutoff = SystemTime::now()
        .checked_sub(Duration::from_millis(prune_ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let walk_store = store.clone();
    let plan = offload(move || {
        prune_plan(&walk_store, &tips, cutoff, Default::default()).map_err(MaintenanceError::from)
    })
    .await?;
    let Some(plan) = plan else {
        return Ok(true);
    };
    let pruned: Vec<[u8; 20]> = plan
        .picked
        .iter()
        .map(|&i| store.packs()[i].checksum())
        .collect();
    let (dropped, kept) = (plan.dropped, plan.kept);
    let rewritten = if kept == 0 {
        None
    } else {
        let picked = plan.picked.clone();
        let keep = plan.keep;
        let job = offload(move || {
            Repack::start_keeping(&store, &picked, Some(&keep)).map_err(MaintenanceError::from)
        })
        .await?;
        match write_out(shard, job).await? {
            Some((pack, _)) => Some(pack),
            None => return Ok(false),
        }
    };
    // The switch, with no await between the checks and it: a push that
    // began since the walk started may rely on an object being dropped.
    let changed = pushes_in_flight(key) > 0 || repo.borrow().changed_at() != changed_at;
    if changed {
        if let Some(pack) = rewritten {
            let held = repo
                .borrow()
                .store
                .packs()
                .iter()
                .any(|p| p.checksum() == pack.checksum());
            if !held {
                offload(move || pack.retire().map_err(MaintenanceError::from)).await?;
            }
        }
        return Ok(false);
    }
    let (packs_now, retired) =
        switch(repo, move |store| store.prune_packs(&pruned, rewritten)).await?;
    tracing::info!(
        repo = %key,
        dropped,
        kept,
        retired,
        packs = packs_now,
        ms = started.elapsed().as_millis() as u64,
        "pruned unreachable objects"
    );
    Ok(true)
}

/// Write `job`'s pack on the blocking pool a step at a time and finish
/// it; `None` if the node is stopping (the job's temporary files go with it).
async fn write_out(
    shard: &Shard,
    mut job: Repack,
) -> Result<Option<(guts_io::store::Pack, Vec<[u8; 20]>)>, MaintenanceError> {
    loop {
        if shard.stopping.get() {
            return Ok(None);
        }
        let (back, done) = offload(move || {
            let done = job.step(REPACK_STEP_BYTES)?;
            Ok((job, done))
        })
        .await?;
        job = back;
        if done {
            break;
        }
    }
    offload(move || job.finish().map_err(MaintenanceError::from))
        .await
        .map(Some)
}

/// Change `repo`'s pack list with `swap` (no await in between, so nothing
/// sees a half-changed list), then retire the packs it took out. Returns
/// the pack count after and how many were retired.
async fn switch(
    repo: &Rc<RefCell<Repo>>,
    swap: impl FnOnce(&mut guts_io::store::ObjectStore) -> Vec<std::sync::Arc<guts_io::store::Pack>>,
) -> Result<(usize, usize), MaintenanceError> {
    let removed = {
        let mut r = repo.borrow_mut();
        let removed = swap(&mut r.store);
        r.packs_rearranged();
        removed
    };
    let packs_now = repo.borrow().store.packs().len();
    let retired = removed.len();
    offload(move || {
        for p in &removed {
            p.retire()?;
        }
        Ok(())
    })
    .await?;
    Ok((packs_now, retired))
}

/// Run `work` on the shard's blocking pool.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MaintenanceError> + Send + 'static,
) -> Result<T, MaintenanceError> {
    glommio::executor()
        .spawn_blocking(move || contained(work))
        .await
}
