//! The replicated state the validators agree on, as the consensus core
//! sees it: which repositories exist and where their refs point.
//!
//! It is a mirror of what the shards hold durably (loaded from the ref
//! stores at start, advanced as finalized blocks are applied). Checking a
//! block means replaying its not-yet-applied ancestry and then its own
//! transactions on a copy-on-write [`View`] of this state.

use guts_io::refname::check_ref_name;
use guts_io::refs::RefUpdate;
use guts_io::ObjectId;
use guts_shards::consensus::{Op, PackRef};
use guts_shards::rejection::UpdateRejection;
use guts_shards::repo::RepoError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::tx::{Tx, TX_UPDATES_MAX};

/// Refs of one repository.
pub type Refs = BTreeMap<String, ObjectId>;

/// The finalized, applied state.
#[derive(Debug, Default, Clone)]
pub struct ChainState {
    repos: HashMap<String, Refs>,
    /// Height of the last block applied.
    pub applied: u64,
}

/// Why a transaction cannot apply, one reason per ref update (one for a
/// repository creation).
pub type Reasons = Vec<UpdateRejection>;

impl ChainState {
    /// Load the state from the repositories on disk (before the shards
    /// open them: the ref stores take an exclusive lock).
    pub fn load(data_dir: &Path, applied: u64) -> anyhow::Result<ChainState> {
        let mut repos = HashMap::new();
        for (owner, name) in guts_shards::repo::list_repos(data_dir) {
            let dir = guts_shards::repo::repo_dir(data_dir, &owner, &name);
            match guts_io::refs::RefStore::open(&dir) {
                Ok(store) => {
                    repos.insert(format!("{owner}/{name}"), store.refs().clone());
                }
                Err(e) => {
                    // The shard reports the damage when the repository is used;
                    // consensus treats it as existing with no refs it can vouch for.
                    tracing::error!(repo = %format!("{owner}/{name}"), error = %e, "ref store unreadable at start");
                    repos.insert(format!("{owner}/{name}"), Refs::new());
                }
            }
        }
        Ok(ChainState { repos, applied })
    }

    /// A view for checking transactions on top of this state.
    pub fn view(&self) -> View<'_> {
        View {
            base: self,
            touched: HashMap::new(),
        }
    }

    /// Make a view's changes part of this state.
    pub fn commit(&mut self, touched: HashMap<String, Option<Refs>>) {
        for (k, v) in touched {
            match v {
                Some(refs) => {
                    self.repos.insert(k, refs);
                }
                None => {
                    self.repos.remove(&k);
                }
            }
        }
    }
}

/// A copy-on-write view of the state plus the effects of transactions
/// applied to it (ancestry not yet applied, earlier transactions of the
/// same block).
pub struct View<'a> {
    base: &'a ChainState,
    touched: HashMap<String, Option<Refs>>,
}

impl View<'_> {
    fn repo(&self, key: &str) -> Option<&Refs> {
        match self.touched.get(key) {
            Some(v) => v.as_ref(),
            None => self.base.repos.get(key),
        }
    }

    fn repo_mut(&mut self, key: &str) -> Option<&mut Refs> {
        if !self.touched.contains_key(key) {
            let copy = self.base.repos.get(key).cloned();
            self.touched.insert(key.to_string(), copy);
        }
        self.touched.get_mut(key).and_then(Option::as_mut)
    }

    /// The changes this view holds over its base.
    pub fn into_changes(self) -> HashMap<String, Option<Refs>> {
        self.touched
    }

    /// Check that `tx` is well formed and applies on this view: every
    /// update's old id matches (compare-and-swap), the repository exists
    /// (or, for a creation, does not).
    pub fn check(&self, tx: &Tx) -> Result<(), Reasons> {
        match &tx.op {
            // Token changes concern no repository; the access table checks them.
            Op::TokenCreate { .. } | Op::TokenRevoke { .. } => return Ok(()),
            Op::SetVisibility { .. } => {
                check_repo_key(&tx.repo).map_err(|e| vec![e])?;
                return Ok(());
            }
            _ => {}
        }
        check_repo_key(&tx.repo).map_err(|e| vec![e])?;
        match &tx.op {
            Op::CreateRepo => {
                if self.repo(&tx.repo).is_some() {
                    return Err(vec![RepoError::Exists(tx.repo.clone()).into()]);
                }
                Ok(())
            }
            Op::Update { updates, pack, .. } => {
                let fail_all = |why: UpdateRejection| vec![why; updates.len().max(1)];
                if updates.is_empty() {
                    return Err(fail_all(UpdateRejection::NoUpdates));
                }
                if updates.len() > TX_UPDATES_MAX {
                    return Err(fail_all(UpdateRejection::TooManyUpdates {
                        count: updates.len(),
                        max: TX_UPDATES_MAX,
                    }));
                }
                let Some(refs) = self.repo(&tx.repo) else {
                    return Err(fail_all(RepoError::NotFound(tx.repo.clone()).into()));
                };
                if pack.is_none() && updates.iter().any(|u| !u.new.is_null()) {
                    // New objects arrive in a pack; a ref may also move to an
                    // object the repository already has, which the object
                    // check (with the store) confirms.
                }
                let mut seen = HashSet::with_capacity(updates.len());
                let mut reasons: Vec<Option<UpdateRejection>> = Vec::with_capacity(updates.len());
                for u in updates {
                    reasons.push(check_update(refs, u, &mut seen));
                }
                if reasons.iter().all(Option::is_none) {
                    return Ok(());
                }
                Err(reasons
                    .into_iter()
                    .map(|r| r.unwrap_or(UpdateRejection::SiblingRejected))
                    .collect())
            }
            _ => Ok(()),
        }
    }

    /// Apply a checked transaction.
    pub fn apply(&mut self, tx: &Tx) {
        match &tx.op {
            Op::CreateRepo => {
                self.touched.insert(tx.repo.clone(), Some(Refs::new()));
            }
            Op::Update { updates, .. } => {
                if let Some(refs) = self.repo_mut(&tx.repo) {
                    apply_updates(refs, updates);
                }
            }
            _ => {}
        }
    }

    /// Apply a transaction as a shard does when it comes back finalized:
    /// the updates whose old id matches are applied (all or none when
    /// atomic). In a valid block every update matches; this also keeps the
    /// mirror equal to the disk when a block is delivered again.
    pub fn apply_finalized(&mut self, tx: &Tx) {
        match &tx.op {
            Op::CreateRepo if self.repo(&tx.repo).is_none() => {
                self.touched.insert(tx.repo.clone(), Some(Refs::new()));
            }
            Op::CreateRepo => {}
            Op::Update {
                updates, atomic, ..
            } => {
                let Some(refs) = self.repo_mut(&tx.repo) else {
                    return;
                };
                let matches = |refs: &Refs, u: &RefUpdate| {
                    refs.get(&u.name).copied().unwrap_or(ObjectId::NULL_SHA1) == u.old
                };
                if *atomic {
                    if updates.iter().all(|u| matches(refs, u)) {
                        apply_updates(refs, updates);
                    }
                } else {
                    for u in updates {
                        if matches(refs, u) {
                            apply_updates(refs, std::slice::from_ref(u));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn apply_updates(refs: &mut Refs, updates: &[RefUpdate]) {
    for u in updates {
        if u.new.is_null() {
            refs.remove(&u.name);
        } else {
            refs.insert(u.name.clone(), u.new);
        }
    }
}

fn check_update(refs: &Refs, u: &RefUpdate, seen: &mut HashSet<String>) -> Option<UpdateRejection> {
    if let Err(e) = check_ref_name(u.name.as_bytes()) {
        return Some(e.into());
    }
    if !seen.insert(u.name.clone()) {
        return Some(UpdateRejection::UpdatedTwice);
    }
    if u.old.is_null() && u.new.is_null() {
        return Some(UpdateRejection::NeitherOldNorNew);
    }
    let current = refs.get(&u.name).copied().unwrap_or(ObjectId::NULL_SHA1);
    if current != u.old {
        return Some(if current.is_null() {
            UpdateRejection::DeletedConcurrently
        } else {
            UpdateRejection::ChangedConcurrently
        });
    }
    None
}

/// `OWNER/NAME` with both parts valid names.
pub fn check_repo_key(key: &str) -> Result<(), UpdateRejection> {
    let Some((owner, name)) = key.split_once('/') else {
        return Err(UpdateRejection::BadRepoKeyValue {
            key: key.to_string(),
        });
    };
    guts_shards::repo::check_name("owner", owner)
        .and_then(|_| guts_shards::repo::check_name("repository name", name))
        .map_err(UpdateRejection::from)
}

/// The pack a transaction needs, if any.
pub fn pack_of(tx: &Tx) -> Option<PackRef> {
    match &tx.op {
        Op::Update { pack, .. } => *pack,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(b: u8) -> ObjectId {
        ObjectId::from_sha1([b; 20])
    }

    fn update(repo: &str, name: &str, old: ObjectId, new: ObjectId, atomic: bool) -> Tx {
        Tx {
            origin: 0,
            nonce: 1,
            repo: repo.into(),
            op: Op::Update {
                updates: vec![RefUpdate {
                    name: name.into(),
                    old,
                    new,
                }],
                atomic,
                pack: None,
            },
        }
    }

    fn create(repo: &str) -> Tx {
        Tx {
            origin: 0,
            nonce: 2,
            repo: repo.into(),
            op: Op::CreateRepo,
        }
    }

    #[test]
    fn compare_and_swap_across_a_block() {
        let state = ChainState::default();
        let mut v = state.view();
        assert!(v
            .check(&update(
                "a/b",
                "refs/heads/main",
                ObjectId::NULL_SHA1,
                oid(1),
                true
            ))
            .is_err());
        v.check(&create("a/b")).unwrap();
        v.apply(&create("a/b"));
        assert!(
            v.check(&create("a/b")).is_err(),
            "created twice in one block"
        );
        let first = update("a/b", "refs/heads/main", ObjectId::NULL_SHA1, oid(1), true);
        v.check(&first).unwrap();
        v.apply(&first);
        // A second push racing from the same old value loses.
        let racing = update("a/b", "refs/heads/main", ObjectId::NULL_SHA1, oid(2), true);
        let why = v.check(&racing).unwrap_err();
        assert!(why[0].to_string().contains("stale"), "{why:?}");
        let next = update("a/b", "refs/heads/main", oid(1), oid(3), false);
        v.check(&next).unwrap();
        v.apply(&next);
        let changes = v.into_changes();
        let mut state = state;
        state.commit(changes);
        assert_eq!(state.repos["a/b"]["refs/heads/main"], oid(3));
    }

    #[test]
    fn refuses_malformed_transactions() {
        let mut state = ChainState::default();
        state.repos.insert("a/b".into(), Refs::new());
        let v = state.view();
        assert!(v.check(&create("a")).is_err());
        assert!(v.check(&create("../x/y")).is_err());
        let bad_name = update("a/b", "refs/heads/a..b", ObjectId::NULL_SHA1, oid(1), true);
        assert!(v.check(&bad_name).unwrap_err()[0]
            .to_string()
            .contains("refname"));
        let nothing = update(
            "a/b",
            "refs/heads/x",
            ObjectId::NULL_SHA1,
            ObjectId::NULL_SHA1,
            true,
        );
        assert!(v.check(&nothing).is_err());
        let missing = update("c/d", "refs/heads/x", ObjectId::NULL_SHA1, oid(1), true);
        assert!(v.check(&missing).unwrap_err()[0]
            .to_string()
            .contains("not found"));
    }

    #[test]
    fn finalized_apply_is_idempotent() {
        let mut state = ChainState::default();
        state.repos.insert("a/b".into(), Refs::new());
        let tx = update("a/b", "refs/heads/main", ObjectId::NULL_SHA1, oid(1), false);
        for _ in 0..2 {
            let mut v = state.view();
            v.apply_finalized(&tx);
            let c = v.into_changes();
            state.commit(c);
        }
        assert_eq!(state.repos["a/b"]["refs/heads/main"], oid(1));
    }
}
