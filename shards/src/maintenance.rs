//! Background maintenance of a shard's repositories: geometric repacking.
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

use crate::repo::Repo;
use crate::shard::Shard;
use crate::work::contained;
use guts_io::pack::repack::{geometric_plan, Repack, GEOMETRIC_FACTOR};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

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

/// Run the shard's maintenance until the node stops.
pub async fn run(shard: Rc<Shard>) {
    let quiet_ms = shard.config.repack_quiet_ms;
    if quiet_ms == 0 {
        return;
    }
    let quiet = Duration::from_millis(quiet_ms);
    let pause = Duration::from_millis(quiet_ms.clamp(10, REPACK_CHECK_MAX_MS));
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
            let due = {
                let Ok(r) = repo.try_borrow() else { continue };
                let packs = r.store.packs().len();
                packs >= 2 && (r.quiet_for() >= quiet || packs >= REPACK_BUSY_PACKS)
            };
            if !due {
                continue;
            }
            if let Err(e) = repack(&shard, &key, &repo).await {
                tracing::warn!(repo = %key, error = %e, "repack failed; the repository is unchanged and is tried again later");
            }
        }
    }
}

/// Merge `repo`'s small packs if its packs are not a geometric progression.
/// Returns once the new list is in use and the old packs are retired.
pub async fn repack(shard: &Shard, key: &str, repo: &Rc<RefCell<Repo>>) -> Result<(), String> {
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
    let mut job =
        offload(move || Repack::start(&store, &picked).map_err(|e| e.to_string())).await?;
    loop {
        if shard.stopping.get() {
            // Dropping the job removes its temporary files.
            return Ok(());
        }
        let (back, done) = offload(move || {
            let done = job.step(REPACK_STEP_BYTES).map_err(|e| e.to_string())?;
            Ok((job, done))
        })
        .await?;
        job = back;
        if done {
            break;
        }
    }
    let (pack, replaced) = offload(move || job.finish().map_err(|e| e.to_string())).await?;
    let (objects, bytes) = (pack.object_count(), pack.len());
    // The switch: packs pushed meanwhile stay in the list.
    let removed = {
        let mut r = repo.borrow_mut();
        let removed = r.store.replace_packs(&replaced, pack);
        r.packs_rearranged();
        removed
    };
    let packs_now = repo.borrow().store.packs().len();
    let retired = removed.len();
    offload(move || {
        for p in &removed {
            p.retire().map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await?;
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

/// Run `work` on the shard's blocking pool.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    glommio::executor()
        .spawn_blocking(move || contained(work))
        .await
}
