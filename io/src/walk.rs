//! Object enumeration for upload-pack: what `git pack-objects --revs`
//! (`rev-list --objects`) computes from wants, haves, shallow/deepen
//! requests, filters and include-tag.
//!
//! The walk follows git's: commits are taken newest first from a queue;
//! commits reachable from the haves are marked uninteresting and the mark
//! propagates to their ancestors; the walk stops once only uninteresting
//! commits are queued (so clock skew can only make the result a superset,
//! never omit an object the client lacks). The trees of uninteresting
//! parents of sent commits (git's `mark_edges_uninteresting`) and
//! everything under them are excluded, then the trees of sent commits are
//! walked. Shallow handling follows `upload-pack.c` (`send_shallow_list`,
//! `deepen`, `deepen_by_rev_list`) and `shallow.c` (`get_shallow_commits`,
//! `get_shallow_commits_by_rev_list`): shallow commits are grafted (walked
//! as if parentless), unshallowed commits are edges whose parents are wanted.

use crate::interrupt::{Interrupt, Poll};
use crate::object::{self, CommitInfo, ObjectKind, ParseError};
use crate::oid::ObjectId;
use crate::store::{ObjectStore, StoreError};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Object ids are uniformly random: their first eight bytes are already a
/// good hash, so the walk's maps skip hashing (the hot cost of a full walk).
/// Seeded per process so that crafted ids cannot aim at one bucket.
#[derive(Clone, Copy)]
struct OidHasher(u64);

impl Default for OidHasher {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        OidHasher(*SEED.get_or_init(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x6775_7473u64)
        }))
    }
}

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // An id arrives as one 20-byte write; anything else is still mixed in.
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 =
            (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, _len: usize) {
        // The length prefix of the id's byte array carries no information.
    }
}

type OidBuild = BuildHasherDefault<OidHasher>;
type OidMap<K, V> = HashMap<K, V, OidBuild>;
type OidSet<K> = HashSet<K, OidBuild>;

/// `deepen` values at or above this mean "the whole history" (git's
/// `INFINITE_DEPTH`, what `git fetch --unshallow` sends).
pub const INFINITE_DEPTH: u32 = 0x7fff_ffff;
/// Longest chain of annotated tags followed before giving up.
pub const TAG_CHAIN_MAX_DEPTH: usize = crate::limits::TAG_CHAIN_MAX_DEPTH;

/// How a shallow request limits history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deepen {
    /// `deepen N`: N commits from each want (1 = only the tips).
    Depth(u32),
    /// `deepen-since T`: commits with committer time at or after T.
    Since(i64),
    /// `deepen-not`: exclude history reachable from these commits
    /// (ref names already resolved by the caller).
    Not(Vec<ObjectId>),
    /// `deepen-since` and `deepen-not` in one request: both limits apply
    /// (as `git rev-list --max-age=T --not ...` does in C git).
    SinceNot(i64, Vec<ObjectId>),
}

/// Object filters (`filter` capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `blob:none`: no blobs except those wanted directly.
    BlobNone,
    /// `blob:limit=N`: omit blobs of N bytes or more.
    BlobLimit(u64),
    /// `tree:D`: omit trees and blobs at depth D or deeper below a commit's
    /// root tree (the root is depth 0), except those wanted directly.
    TreeDepth(u64),
}

/// What the client asked for.
#[derive(Debug, Clone, Default)]
pub struct WalkRequest {
    /// Objects the client wants (commits, tags, trees or blobs).
    pub wants: Vec<ObjectId>,
    /// Objects the client has (only those in the store matter).
    pub haves: Vec<ObjectId>,
    /// Commits the client has as shallow (their parents are unknown to it).
    pub client_shallows: Vec<ObjectId>,
    /// A shallow/deepen request, if any.
    pub deepen: Option<Deepen>,
    /// `deepen-relative`: a depth counts from the client's shallow commits.
    pub deepen_relative: bool,
    /// An object filter, if any.
    pub filter: Option<Filter>,
    /// `include-tag` candidates: annotated tag and its peeled target; the
    /// tag (and any tags it passes through) is sent if the target is.
    pub include_tag_candidates: Vec<(ObjectId, ObjectId)>,
    /// When to give up (the request's budget ran out, or its client left).
    pub interrupt: Interrupt,
}

/// The objects to pack and the shallow boundary changes to announce.
#[derive(Debug, Clone, Default)]
pub struct WalkResult {
    /// Objects to send: commits, then trees and blobs, then tags.
    pub objects: Vec<ObjectId>,
    /// Commits to announce as `shallow`.
    pub shallow: Vec<ObjectId>,
    /// Client shallow commits to announce as `unshallow`.
    pub unshallow: Vec<ObjectId>,
}

/// Errors from a walk.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Reading from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object the walk needs is not in the store.
    #[error("{role} {oid} is not in the repository")]
    Missing {
        /// The object.
        oid: ObjectId,
        /// Why it was needed ("want", "parent", "tree", ...).
        role: &'static str,
    },
    /// An object is not of the kind its reference says.
    #[error("object {oid} is a {got:?}, expected a {expected:?}")]
    WrongKind {
        /// The object.
        oid: ObjectId,
        /// The kind the reference promised.
        expected: ObjectKind,
        /// The kind stored.
        got: ObjectKind,
    },
    /// A stored tree or tag is malformed.
    #[error("stored object {oid} is malformed: {source}")]
    Malformed {
        /// The object.
        oid: ObjectId,
        /// What was wrong.
        source: ParseError,
    },
    /// A tag chain exceeded [`TAG_CHAIN_MAX_DEPTH`].
    #[error("tag chain from {oid} is longer than {limit}")]
    TagChainTooDeep {
        /// The first tag.
        oid: ObjectId,
        /// The limit.
        limit: usize,
    },
    /// `deepen-since`/`deepen-not` left no commit to send (git dies here too).
    #[error("no commits selected for shallow requests")]
    NoCommitsSelected,
    /// The walk was stopped by its [`Interrupt`].
    #[error("object walk stopped: the request ran out of time or its client went away")]
    Interrupted,
}

/// Which of `haves` the store holds (the common objects for negotiation).
pub fn find_common(store: &ObjectStore, haves: &[ObjectId]) -> Vec<ObjectId> {
    haves
        .iter()
        .filter(|h| store.contains(h))
        .copied()
        .collect()
}

/// True if `ancestor` is reachable from `descendant` through parents
/// (a commit is its own ancestor): the fast-forward check for pushes.
pub fn is_ancestor(
    store: &ObjectStore,
    ancestor: &ObjectId,
    descendant: &ObjectId,
) -> Result<bool, WalkError> {
    if ancestor == descendant {
        return Ok(true);
    }
    if !store.contains(ancestor) {
        return Ok(false);
    }
    let start = commit(store, descendant, "commit")?;
    let mut seen: OidSet<ObjectId> = OidSet::default();
    let mut queue = BinaryHeap::new();
    seen.insert(*descendant);
    queue.push((start.commit_time, *descendant));
    while let Some((_, oid)) = queue.pop() {
        let info = commit(store, &oid, "commit")?;
        for p in &info.parents {
            if p == ancestor {
                return Ok(true);
            }
            if seen.insert(*p) {
                let pinfo = commit(store, p, "parent")?;
                queue.push((pinfo.commit_time, *p));
            }
        }
    }
    Ok(false)
}

fn commit(
    store: &ObjectStore,
    oid: &ObjectId,
    role: &'static str,
) -> Result<Arc<CommitInfo>, WalkError> {
    store
        .commit_info(oid)?
        .ok_or(WalkError::Missing { oid: *oid, role })
}

const SEEN: u8 = 1;
const UNINTERESTING: u8 = 2;
const PROCESSED: u8 = 4;
const ADDED: u8 = 8;

/// One limited commit walk (git's `limit_list`).
struct CommitWalk<'a> {
    store: &'a ObjectStore,
    grafts: &'a OidSet<ObjectId>,
    nodes: OidMap<ObjectId, (u8, Arc<CommitInfo>)>,
    queue: BinaryHeap<(i64, ObjectId)>,
    interesting_queued: usize,
    /// Interesting commits in the order they were taken from the queue.
    order: Vec<ObjectId>,
    poll: Poll,
}

impl<'a> CommitWalk<'a> {
    fn new(store: &'a ObjectStore, grafts: &'a OidSet<ObjectId>, interrupt: &Interrupt) -> Self {
        CommitWalk {
            store,
            grafts,
            nodes: OidMap::default(),
            queue: BinaryHeap::new(),
            interesting_queued: 0,
            order: Vec::new(),
            poll: Poll::new(interrupt.clone()),
        }
    }

    fn parents_of<'i>(&self, oid: &ObjectId, info: &'i CommitInfo) -> &'i [ObjectId] {
        if self.grafts.contains(oid) {
            &[]
        } else {
            &info.parents
        }
    }

    /// Queue `oid`; an uninteresting push of a commit already seen marks it
    /// (and what it already reached) uninteresting.
    fn push(
        &mut self,
        oid: ObjectId,
        uninteresting: bool,
        role: &'static str,
    ) -> Result<(), WalkError> {
        if let Some((flags, _)) = self.nodes.get(&oid) {
            if uninteresting && flags & UNINTERESTING == 0 {
                self.mark_uninteresting(oid);
            }
            return Ok(());
        }
        let info = match self.store.commit_info(&oid)? {
            Some(info) => info,
            // The client's side of history may reach commits we lack.
            None if uninteresting => return Ok(()),
            None => return Err(WalkError::Missing { oid, role }),
        };
        let flags = SEEN | if uninteresting { UNINTERESTING } else { 0 };
        if !uninteresting {
            self.interesting_queued += 1;
        }
        self.queue.push((info.commit_time, oid));
        self.nodes.insert(oid, (flags, info));
        Ok(())
    }

    /// git's `mark_parents_uninteresting`, for a commit already seen.
    fn mark_uninteresting(&mut self, oid: ObjectId) {
        let mut stack = vec![oid];
        while let Some(c) = stack.pop() {
            let Some((flags, info)) = self.nodes.get_mut(&c) else {
                continue;
            };
            if *flags & UNINTERESTING != 0 {
                continue;
            }
            *flags |= UNINTERESTING;
            if *flags & PROCESSED == 0 {
                self.interesting_queued -= 1;
                continue;
            }
            let info = info.clone();
            for p in self.parents_of(&c, &info) {
                // Parents of processed commits were all queued when processed.
                stack.push(*p);
            }
        }
    }

    /// Walk until only uninteresting commits are queued. Commits older than
    /// `max_age` become uninteresting, as with `rev-list --max-age`.
    fn run(&mut self, max_age: Option<i64>) -> Result<(), WalkError> {
        while self.interesting_queued > 0 {
            if self.poll.stop() {
                return Err(WalkError::Interrupted);
            }
            let Some((time, oid)) = self.queue.pop() else {
                break;
            };
            let Some((flags, info)) = self.nodes.get_mut(&oid) else {
                continue;
            };
            if *flags & PROCESSED != 0 {
                continue;
            }
            *flags |= PROCESSED;
            let mut uninteresting = *flags & UNINTERESTING != 0;
            if !uninteresting {
                self.interesting_queued -= 1;
                if max_age.is_some_and(|limit| time < limit) {
                    *flags |= UNINTERESTING;
                    uninteresting = true;
                }
            }
            let info = info.clone();
            if !uninteresting {
                self.order.push(oid);
            }
            for p in self.parents_of(&oid, &info) {
                self.push(*p, uninteresting, "parent")?;
            }
        }
        Ok(())
    }

    fn flags(&self, oid: &ObjectId) -> u8 {
        self.nodes.get(oid).map_or(0, |n| n.0)
    }

    /// The interesting commits, in walk order.
    fn result(&self) -> Vec<ObjectId> {
        self.order
            .iter()
            .filter(|c| self.flags(c) & UNINTERESTING == 0)
            .copied()
            .collect()
    }
}

/// Trees, blobs and tags seen by one enumeration.
struct ObjectWalk<'a> {
    store: &'a ObjectStore,
    filter: Option<Filter>,
    flags: OidMap<ObjectId, u8>,
    /// Smallest depth each tree was walked at (only with `tree:D`).
    tree_depth: OidMap<ObjectId, u64>,
    out: Vec<ObjectId>,
    stack: Vec<(ObjectId, u64)>,
    poll: Poll,
}

impl ObjectWalk<'_> {
    fn read_tree(&self, oid: &ObjectId) -> Result<Option<bytes::Bytes>, WalkError> {
        match self.store.read(oid)? {
            Some((ObjectKind::Tree, data)) => Ok(Some(data)),
            Some((got, _)) => Err(WalkError::WrongKind {
                oid: *oid,
                expected: ObjectKind::Tree,
                got,
            }),
            None => Ok(None),
        }
    }

    /// Mark a tree and everything below it uninteresting (git's
    /// `mark_tree_uninteresting`). Missing trees are skipped, as in git.
    fn mark_tree_uninteresting(&mut self, root: ObjectId) -> Result<(), WalkError> {
        let mut stack = vec![root];
        while let Some(tree) = stack.pop() {
            if self.poll.stop() {
                return Err(WalkError::Interrupted);
            }
            let f = self.flags.entry(tree).or_insert(0);
            if *f & UNINTERESTING != 0 {
                continue;
            }
            *f |= UNINTERESTING;
            let Some(data) = self.read_tree(&tree)? else {
                continue;
            };
            for entry in object::tree_entries(&data) {
                let entry = entry.map_err(|source| WalkError::Malformed { oid: tree, source })?;
                if entry.is_gitlink() {
                    continue;
                }
                if entry.is_tree() {
                    stack.push(entry.oid);
                } else {
                    *self.flags.entry(entry.oid).or_insert(0) |= UNINTERESTING;
                }
            }
        }
        Ok(())
    }

    /// Add `oid` unconditionally (a directly wanted object).
    fn add(&mut self, oid: ObjectId) -> bool {
        let f = self.flags.entry(oid).or_insert(0);
        if *f & ADDED != 0 {
            return false;
        }
        *f |= ADDED;
        self.out.push(oid);
        true
    }

    /// Walk the tree `root` found at `depth`; `forced` adds the root even if
    /// a filter would omit it (a directly wanted tree).
    fn walk_tree(&mut self, root: ObjectId, depth: u64, forced: bool) -> Result<(), WalkError> {
        let depth_limit = match self.filter {
            Some(Filter::TreeDepth(limit)) => Some(limit),
            _ => None,
        };
        self.stack.clear();
        self.stack.push((root, depth));
        let mut first = forced;
        while let Some((tree, depth)) = self.stack.pop() {
            if self.poll.stop() {
                return Err(WalkError::Interrupted);
            }
            let forced_here = std::mem::take(&mut first);
            let flags = self.flags.get(&tree).copied().unwrap_or(0);
            if flags & UNINTERESTING != 0 && !forced_here {
                continue;
            }
            match depth_limit {
                Some(limit) => {
                    if depth >= limit && !forced_here {
                        continue;
                    }
                    // Revisit a tree only when met closer to the root.
                    match self.tree_depth.get(&tree) {
                        Some(&seen) if seen <= depth => continue,
                        _ => {
                            self.tree_depth.insert(tree, depth);
                        }
                    }
                }
                None => {
                    if flags & ADDED != 0 {
                        continue;
                    }
                }
            }
            if flags & ADDED == 0 {
                self.flags.insert(tree, flags | ADDED);
                self.out.push(tree);
            }
            if depth_limit.is_some_and(|limit| depth + 1 >= limit) {
                // Nothing below can be sent; do not even read the tree.
                continue;
            }
            let data = self.read_tree(&tree)?.ok_or(WalkError::Missing {
                oid: tree,
                role: "tree",
            })?;
            for entry in object::tree_entries(&data) {
                let entry = entry.map_err(|source| WalkError::Malformed { oid: tree, source })?;
                if entry.is_gitlink() {
                    continue;
                }
                if entry.is_tree() {
                    self.stack.push((entry.oid, depth + 1));
                    continue;
                }
                let f = self.flags.entry(entry.oid).or_insert(0);
                if *f & (ADDED | UNINTERESTING) != 0 {
                    continue;
                }
                if blob_wanted(self.store, self.filter, &entry.oid, depth + 1)? {
                    *f |= ADDED;
                    self.out.push(entry.oid);
                }
            }
        }
        Ok(())
    }
}

/// Whether a blob met at `depth` passes the filter.
fn blob_wanted(
    store: &ObjectStore,
    filter: Option<Filter>,
    oid: &ObjectId,
    depth: u64,
) -> Result<bool, WalkError> {
    Ok(match filter {
        None => true,
        Some(Filter::BlobNone) => false,
        Some(Filter::TreeDepth(limit)) => depth < limit,
        Some(Filter::BlobLimit(limit)) => match store.read_header(oid)? {
            Some((_, size)) => size < limit,
            None => {
                return Err(WalkError::Missing {
                    oid: *oid,
                    role: "blob",
                })
            }
        },
    })
}

/// Follow annotated tags from `oid` to a non-tag object, calling `on_tag`
/// for every tag passed. Returns the final object and its kind.
fn peel(
    store: &ObjectStore,
    oid: ObjectId,
    mut on_tag: impl FnMut(ObjectId),
) -> Result<Option<(ObjectId, ObjectKind)>, WalkError> {
    let mut cur = oid;
    for _ in 0..TAG_CHAIN_MAX_DEPTH {
        let Some((kind, _)) = store.read_header(&cur)? else {
            return Ok(None);
        };
        if kind != ObjectKind::Tag {
            return Ok(Some((cur, kind)));
        }
        let Some((_, data)) = store.read(&cur)? else {
            return Ok(None);
        };
        let tag =
            object::parse_tag(&data).map_err(|source| WalkError::Malformed { oid: cur, source })?;
        on_tag(cur);
        cur = tag.object;
    }
    Err(WalkError::TagChainTooDeep {
        oid,
        limit: TAG_CHAIN_MAX_DEPTH,
    })
}

/// git's `get_shallow_commits`: minimum distances from `heads`, cut at
/// `depth`. Returns the commits at distance `depth - 1` (the boundary) and
/// those strictly inside it (`NOT_SHALLOW`).
fn shallow_by_depth(
    store: &ObjectStore,
    heads: &[ObjectId],
    depth: u32,
) -> Result<(Vec<ObjectId>, OidSet<ObjectId>), WalkError> {
    let mut dist: OidMap<ObjectId, u32> = OidMap::default();
    let mut queue = VecDeque::new();
    for h in heads {
        if dist.insert(*h, 0).is_none() {
            queue.push_back(*h);
        }
    }
    let mut boundary = Vec::new();
    let mut inside = OidSet::default();
    while let Some(c) = queue.pop_front() {
        let d = dist.get(&c).copied().unwrap_or(0);
        if d + 1 >= depth {
            boundary.push(c);
            continue;
        }
        inside.insert(c);
        let info = commit(store, &c, "commit")?;
        for p in &info.parents {
            if !dist.contains_key(p) {
                dist.insert(*p, d + 1);
                queue.push_back(*p);
            }
        }
    }
    Ok((boundary, inside))
}

/// Enumerate the objects to send for `req` (see the module docs).
pub fn enumerate(store: &ObjectStore, req: &WalkRequest) -> Result<WalkResult, WalkError> {
    let mut objects = ObjectWalk {
        store,
        filter: req.filter,
        flags: OidMap::default(),
        tree_depth: OidMap::default(),
        out: Vec::new(),
        stack: Vec::new(),
        poll: Poll::new(req.interrupt.clone()),
    };
    let mut tags_out: Vec<ObjectId> = Vec::new();
    let mut want_commits = Vec::new();
    let mut want_trees = Vec::new();
    let mut want_blobs = Vec::new();
    for want in &req.wants {
        let peeled = peel(store, *want, |t| tags_out.push(t))?;
        match peeled {
            Some((oid, ObjectKind::Commit)) => want_commits.push(oid),
            Some((oid, ObjectKind::Tree)) => want_trees.push(oid),
            Some((oid, ObjectKind::Blob)) => want_blobs.push(oid),
            Some((_, ObjectKind::Tag)) => {}
            None => {
                return Err(WalkError::Missing {
                    oid: *want,
                    role: "want",
                })
            }
        }
    }
    let mut have_commits = Vec::new();
    let mut have_trees = Vec::new();
    for have in &req.haves {
        // Haves we lack (or whose tags point at objects we lack) are ignored.
        match peel(store, *have, |t| {
            objects.flags.insert(t, UNINTERESTING);
        })? {
            Some((oid, ObjectKind::Commit)) => have_commits.push(oid),
            Some((oid, ObjectKind::Tree)) => have_trees.push(oid),
            Some((oid, _)) => {
                *objects.flags.entry(oid).or_insert(0) |= UNINTERESTING;
            }
            None => {}
        }
    }

    // Client shallows we do not hold cannot matter (git ignores them too).
    let client_shallows: Vec<ObjectId> = req
        .client_shallows
        .iter()
        .filter(|s| store.contains(s))
        .copied()
        .collect();
    let client_shallow_set: OidSet<ObjectId> = client_shallows.iter().copied().collect();
    let mut grafts: OidSet<ObjectId> = client_shallow_set.clone();
    let mut shallow = Vec::new();
    let mut not_shallow: OidSet<ObjectId> = OidSet::default();
    let deepen = match &req.deepen {
        Some(Deepen::Depth(0)) | None => None,
        Some(d) => Some(d),
    };
    match deepen {
        None => {}
        Some(Deepen::Depth(depth)) if *depth >= INFINITE_DEPTH => {
            not_shallow = client_shallow_set.clone();
        }
        Some(Deepen::Depth(depth)) => {
            let (heads, depth) = if req.deepen_relative {
                (client_shallows.clone(), depth.saturating_add(1))
            } else {
                (want_commits.clone(), *depth)
            };
            let (boundary, inside) = shallow_by_depth(store, &heads, depth)?;
            shallow = boundary
                .into_iter()
                .filter(|c| !client_shallow_set.contains(c) && !inside.contains(c))
                .collect();
            not_shallow = inside;
        }
        Some(Deepen::Since(_)) | Some(Deepen::Not(_)) | Some(Deepen::SinceNot(..)) => {
            let no_grafts = OidSet::default();
            let mut walk = CommitWalk::new(store, &no_grafts, &req.interrupt);
            let max_age = match deepen {
                Some(Deepen::Since(t)) | Some(Deepen::SinceNot(t, _)) => Some(*t),
                _ => None,
            };
            for c in &want_commits {
                walk.push(*c, false, "want")?;
            }
            if let Some(Deepen::Not(excluded)) | Some(Deepen::SinceNot(_, excluded)) = deepen {
                for c in excluded {
                    walk.push(*c, true, "deepen-not")?;
                }
            }
            walk.run(max_age)?;
            let selected = walk.result();
            if selected.is_empty() {
                return Err(WalkError::NoCommitsSelected);
            }
            let selected_set: OidSet<ObjectId> = selected.iter().copied().collect();
            for c in &selected {
                let info = commit(store, c, "commit")?;
                if info.parents.iter().any(|p| !selected_set.contains(p)) {
                    if !client_shallow_set.contains(c) {
                        shallow.push(*c);
                    }
                } else {
                    not_shallow.insert(*c);
                }
            }
        }
    }
    grafts.extend(shallow.iter().copied());

    // send_unshallow: the client's shallow commits now inside the history
    // are edges it has; their parents are wanted.
    let mut unshallow = Vec::new();
    let mut interesting = want_commits.clone();
    let mut uninteresting = have_commits.clone();
    for s in &client_shallows {
        if not_shallow.contains(s) {
            unshallow.push(*s);
            let info = commit(store, s, "shallow commit")?;
            interesting.extend(info.parents.iter().copied());
            uninteresting.push(*s);
        }
    }
    let aggressive_edges = !client_shallows.is_empty() || deepen.is_some();

    let mut walk = CommitWalk::new(store, &grafts, &req.interrupt);
    for c in &interesting {
        walk.push(*c, false, "want")?;
    }
    for c in &uninteresting {
        walk.push(*c, true, "have")?;
    }
    walk.run(None)?;
    let commits = walk.result();

    // mark_edges_uninteresting: trees of uninteresting parents of sent commits.
    for tree in &have_trees {
        objects.mark_tree_uninteresting(*tree)?;
    }
    let mut edge_trees = Vec::new();
    for c in &commits {
        if let Some((_, info)) = walk.nodes.get(c) {
            for p in walk.parents_of(c, info) {
                if let Some((flags, pinfo)) = walk.nodes.get(p) {
                    if flags & UNINTERESTING != 0 {
                        edge_trees.push(pinfo.tree);
                    }
                }
            }
        }
    }
    if aggressive_edges {
        for c in &uninteresting {
            if let Some((_, info)) = walk.nodes.get(c) {
                edge_trees.push(info.tree);
            }
        }
    }
    for tree in edge_trees {
        objects.mark_tree_uninteresting(tree)?;
    }

    let mut tag_count = 0;
    for t in &tags_out {
        if objects.add(*t) {
            tag_count += 1;
        }
    }
    for c in &commits {
        objects.add(*c);
    }
    for b in &want_blobs {
        objects.add(*b);
    }
    for t in &want_trees {
        objects.walk_tree(*t, 0, true)?;
    }
    for c in &commits {
        if let Some((_, info)) = walk.nodes.get(c) {
            objects.walk_tree(info.tree, 0, false)?;
        }
    }

    // include-tag: tags whose peeled target is being sent.
    for (tag, target) in &req.include_tag_candidates {
        let sent = objects.flags.get(target).is_some_and(|f| f & ADDED != 0);
        if !sent || objects.flags.get(tag).is_some_and(|f| f & ADDED != 0) || !store.contains(tag) {
            continue;
        }
        let mut chain = Vec::new();
        peel(store, *tag, |t| chain.push(t))?;
        for t in chain {
            objects.add(t);
        }
    }

    // Commits, then trees and blobs, then tags: tags were added first only
    // to mark them; move them to the end.
    let mut out = objects.out;
    if tag_count > 0 {
        let mut moved: Vec<ObjectId> = Vec::with_capacity(out.len());
        let (tags, rest) = (out[..tag_count].to_vec(), &out[tag_count..]);
        moved.extend_from_slice(rest);
        moved.extend(tags);
        out = moved;
    }
    Ok(WalkResult {
        objects: out,
        shallow,
        unshallow,
    })
}
