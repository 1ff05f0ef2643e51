//! One repository as its owning shard holds it: the object store, the ref
//! store, and a cached snapshot of the advertised refs.
//!
//! Owned by exactly one shard (`Rc<RefCell<Repo>>` never leaves it); other
//! shards see only [`RefSnapshot`]s, which are immutable and `Send`.

use guts_io::object::parse_tag;
use guts_io::refs::RefStore;
use guts_io::store::ObjectStore;
use guts_io::{ObjectId, ObjectKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest owner or repository name.
pub const REPO_NAME_MAX_BYTES: usize = 100;
/// Annotated tags followed when peeling a tag ref: as far as the walk.
const PEEL_DEPTH_MAX: usize = guts_io::limits::TAG_CHAIN_MAX_DEPTH;

/// Errors from opening or creating repositories.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("repository {0} already exists")]
    Exists(String),
    #[error("repository {0} not found")]
    NotFound(String),
    #[error("repository {repo} is damaged and cannot be served (the other repositories are unaffected): {reason}")]
    Damaged { repo: String, reason: String },
    #[error("object store: {0}")]
    Store(#[from] guts_io::store::StoreError),
    #[error("ref store: {0}")]
    Refs(#[from] guts_io::refs::RefError),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Check an owner or repository name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most
/// [`REPO_NAME_MAX_BYTES`], no `..`, not ending in `.git` or `.lock`.
/// Anything percent-encoded or containing a slash fails here, which is what
/// keeps request paths inside the repository store.
pub fn check_name(what: &'static str, value: &str) -> Result<(), RepoError> {
    let bad = |reason| RepoError::InvalidName {
        what,
        value: value.chars().take(200).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("must not be empty"));
    }
    if value.len() > REPO_NAME_MAX_BYTES {
        return Err(bad("longer than 100 bytes"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(bad("may contain only letters, digits, '.', '_' and '-'"));
    }
    if value.contains("..") {
        return Err(bad("must not contain '..'"));
    }
    let lower = value.to_ascii_lowercase();
    if lower.ends_with(".git") || lower.ends_with(".lock") {
        return Err(bad("must not end in .git or .lock"));
    }
    Ok(())
}

/// Directory of repository `owner/name` under the data dir.
pub fn repo_dir(data_dir: &Path, owner: &str, name: &str) -> PathBuf {
    data_dir
        .join("repos")
        .join(owner)
        .join(format!("{name}.git"))
}

/// One advertised ref.
#[derive(Debug, Clone)]
pub struct AdvertisedRef {
    pub name: String,
    pub oid: ObjectId,
    /// For annotated tags: the object the tag finally points at.
    pub peeled: Option<ObjectId>,
}

/// An immutable view of a repository's refs and objects at one moment.
#[derive(Clone)]
pub struct RefSnapshot {
    /// `OWNER/NAME`.
    pub key: String,
    /// Target of HEAD (`refs/heads/main`).
    pub head_target: String,
    /// Value of HEAD if its target exists.
    pub head: Option<ObjectId>,
    /// All refs, sorted by name.
    pub refs: Arc<Vec<AdvertisedRef>>,
    /// The object store as of this snapshot.
    pub store: ObjectStore,
    /// Ref-store sequence this snapshot reflects.
    pub sequence: u64,
    /// File name of the repository's newest bundle, if it has one
    /// (see [`crate::bundle`]).
    pub bundle: Option<Arc<str>>,
}

impl RefSnapshot {
    /// The ref named `name`: a binary search, as the refs are sorted by
    /// name (bytewise, as the ref store keeps them).
    pub fn find(&self, name: &str) -> Option<&AdvertisedRef> {
        self.refs
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.refs[i])
    }
}

/// A repository held by its owning shard.
pub struct Repo {
    pub key: String,
    pub dir: PathBuf,
    pub store: ObjectStore,
    pub refs: RefStore,
    peeled: HashMap<ObjectId, Option<ObjectId>>,
    snapshot: Option<RefSnapshot>,
    /// When the refs or packs last changed (background repacking waits
    /// for a quiet repository).
    changed_at: std::time::Instant,
    /// File name of the newest bundle (see [`crate::bundle`]).
    bundle: Option<Arc<str>>,
}

impl Repo {
    /// Open an existing repository.
    pub fn open(dir: PathBuf, key: String) -> Result<Repo, RepoError> {
        if !dir.join("objects").is_dir() {
            return Err(RepoError::NotFound(key));
        }
        let store = ObjectStore::open(&dir.join("objects"))?;
        let refs = RefStore::open(&dir).map_err(|e| match e {
            e @ guts_io::refs::RefError::Corrupt { .. } => RepoError::Damaged {
                repo: key.clone(),
                reason: e.to_string(),
            },
            e => RepoError::Refs(e),
        })?;
        let bundle = crate::bundle::current(&dir);
        Ok(Repo {
            key,
            bundle,
            dir,
            store,
            refs,
            peeled: HashMap::new(),
            snapshot: None,
            changed_at: std::time::Instant::now(),
        })
    }

    /// Create a new, empty repository durably (directories fsynced), in a
    /// layout C git can read: `HEAD`, `config`, `objects/pack`, `refs/`.
    pub fn create(data_dir: &Path, owner: &str, name: &str) -> Result<Repo, RepoError> {
        check_name("owner", owner)?;
        check_name("repository name", name)?;
        let key = format!("{owner}/{name}");
        let dir = repo_dir(data_dir, owner, name);
        if dir.exists() {
            return Err(RepoError::Exists(key));
        }
        let owner_dir = dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.to_path_buf());
        std::fs::create_dir_all(&owner_dir).map_err(io_err(&owner_dir))?;
        // Build in a temporary directory and rename, so a crash never leaves
        // a half-made repository under its real name. Leftovers of other
        // processes' creations cut short by a crash are removed at start
        // ([`remove_stale_temp_packs`]), not looked for here: that would be
        // a scan of every repository of the owner per creation.
        let tmp = owner_dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            // An earlier process with this id left it.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
            let p = tmp.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let config = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n";
        write_synced(&tmp.join("config"), config.as_bytes())?;
        write_synced(&tmp.join("HEAD"), b"ref: refs/heads/main\n")?;
        drop(RefStore::open(&tmp)?);
        for sub in ["objects/pack", "objects", "refs", ""] {
            sync_dir(&tmp.join(sub))?;
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                if dir.exists() {
                    return Err(RepoError::Exists(key));
                }
                return Err(io_err(&dir)(e));
            }
        }
        sync_dir(&owner_dir)?;
        if let Some(repos) = owner_dir.parent() {
            sync_dir(repos)?;
        }
        Repo::open(dir, key)
    }

    /// The current snapshot (cached until refs or packs change).
    pub fn snapshot(&mut self) -> RefSnapshot {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let current: Vec<(String, ObjectId)> = self
            .refs
            .refs()
            .iter()
            .map(|(n, o)| (n.clone(), *o))
            .collect();
        let mut refs = Vec::with_capacity(current.len());
        for (name, oid) in current {
            let peeled = if name.starts_with("refs/tags/") {
                self.peel(&oid)
            } else {
                None
            };
            refs.push(AdvertisedRef { name, oid, peeled });
        }
        let snap = RefSnapshot {
            key: self.key.clone(),
            head_target: self.refs.head_target().to_string(),
            head: self.refs.head_oid(),
            refs: Arc::new(refs),
            store: self.store.clone(),
            sequence: self.refs.sequence(),
            bundle: self.bundle.clone(),
        };
        self.snapshot = Some(snap.clone());
        snap
    }

    /// Forget the cached snapshot after a change.
    pub fn invalidate(&mut self) {
        self.snapshot = None;
        self.changed_at = std::time::Instant::now();
    }

    /// Forget the cached snapshot after the packs were rearranged (a
    /// repack: the same objects, so not a change the quiet time counts).
    pub fn packs_rearranged(&mut self) {
        self.snapshot = None;
    }

    /// Offer bundle `name` from now on (not a change of the repository).
    pub fn set_bundle(&mut self, name: Arc<str>) {
        self.bundle = Some(name);
        self.snapshot = None;
    }

    /// The ref-store sequence the newest bundle was written at.
    pub fn bundle_sequence(&self) -> Option<u64> {
        self.bundle
            .as_deref()
            .and_then(crate::bundle::parse_file_name)
    }

    /// When the refs or packs last changed.
    pub fn changed_at(&self) -> std::time::Instant {
        self.changed_at
    }

    /// Time since the refs or packs last changed.
    pub fn quiet_for(&self) -> std::time::Duration {
        self.changed_at.elapsed()
    }

    fn peel(&mut self, oid: &ObjectId) -> Option<ObjectId> {
        if let Some(p) = self.peeled.get(oid) {
            return *p;
        }
        let mut current = *oid;
        let mut result = None;
        for _ in 0..PEEL_DEPTH_MAX {
            match self.store.read(&current) {
                Ok(Some((ObjectKind::Tag, data))) => match parse_tag(&data) {
                    Ok(tag) => {
                        current = tag.object;
                        result = Some(current);
                    }
                    Err(_) => break,
                },
                _ => break,
            }
        }
        self.peeled.insert(*oid, result);
        result
    }
}

/// Write a file and fsync it.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), RepoError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// fsync a directory so that entries created in it are durable.
pub fn sync_dir(path: &Path) -> Result<(), RepoError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// The repositories of each data directory this process created or found,
/// by lower-case `owner/name`: one scan of the directory on first use, then
/// kept up to date by [`note_created`], so that checking a new name costs
/// a lookup, not a scan of every repository of its owner. Repositories
/// appear in a data directory only through [`Repo::create`] while a node
/// runs on it (a restore runs on a stopped node).
type CaseIndex = std::sync::Mutex<HashMap<PathBuf, HashMap<String, String>>>;

fn case_index() -> &'static CaseIndex {
    static INDEX: std::sync::OnceLock<CaseIndex> = std::sync::OnceLock::new();
    INDEX.get_or_init(Default::default)
}

/// An existing repository whose `OWNER/NAME` equals `owner/name` but for
/// letter case, as `OWNER/NAME`: hosts treat such names as one, and so
/// must a node (a clone URL typed in another case must not reach a
/// different repository). The first call for a data directory scans it:
/// call it off the executor.
pub fn find_case_variant(data_dir: &Path, owner: &str, name: &str) -> Option<String> {
    let mut index = case_index().lock().unwrap_or_else(|e| e.into_inner());
    let known = index.entry(data_dir.to_path_buf()).or_insert_with(|| {
        list_repos(data_dir)
            .into_iter()
            .map(|(o, n)| (format!("{o}/{n}").to_ascii_lowercase(), format!("{o}/{n}")))
            .collect()
    });
    known
        .get(&format!("{owner}/{name}").to_ascii_lowercase())
        .cloned()
}

/// Record a repository [`Repo::create`] made, for [`find_case_variant`].
pub fn note_created(data_dir: &Path, owner: &str, name: &str) {
    let mut index = case_index().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = index.get_mut(data_dir) {
        let key = format!("{owner}/{name}");
        known.insert(key.to_ascii_lowercase(), key);
    }
}

/// Remove the temporary files of pushes cut short before `before` (the
/// node's start) from every repository's pack directory, and the
/// temporary directories of repository creations cut short — a push that
/// died with the process leaves them, and a repository nobody opens again
/// would keep them forever. Files newer than `before` belong to pushes in
/// progress and are left alone. Returns how many files were removed.
pub fn remove_stale_temp_packs(data_dir: &Path, before: std::time::SystemTime) -> usize {
    let mut removed = 0;
    let Ok(owners) = std::fs::read_dir(data_dir.join("repos")) else {
        return 0;
    };
    for owner in owners.flatten() {
        let Ok(repos) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        for repo in repos.flatten() {
            // A repository creation cut short (`.tmp-NAME-PID`).
            let file = repo.file_name().to_string_lossy().into_owned();
            if let Some(rest) = file.strip_prefix(".tmp-") {
                let is_creation = rest.rsplit_once('-').is_some_and(|(_, pid)| {
                    !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
                });
                let stale = repo
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if is_creation && stale && std::fs::remove_dir_all(repo.path()).is_ok() {
                    removed += 1;
                }
                continue;
            }
            let Ok(files) = std::fs::read_dir(repo.path().join("objects").join("pack")) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                if !(name.starts_with("tmp_pack_") || name.starts_with("tmp_idx_")) {
                    continue;
                }
                let stale = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if stale && std::fs::remove_file(file.path()).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// Every repository on disk as `(owner, name)`, sorted.
pub fn list_repos(data_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(owners) = std::fs::read_dir(data_dir.join("repos")) else {
        return out;
    };
    for owner in owners.flatten() {
        let owner_name = owner.file_name().to_string_lossy().into_owned();
        if check_name("owner", &owner_name).is_err() {
            continue;
        }
        let Ok(repos) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        for repo in repos.flatten() {
            let file = repo.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".git") {
                if check_name("repository name", name).is_ok() {
                    out.push((owner_name.clone(), name.to_string()));
                }
            }
        }
    }
    out.sort();
    out
}

/// A repository whose ref store could not be opened at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRepo {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Why it cannot be served.
    pub reason: String,
}

/// Open every repository's ref store once (replaying its log, dropping a
/// torn tail as after any crash) and return the ones that are damaged, so
/// damage is reported at start rather than when a client first asks.
pub fn check_ref_stores(data_dir: &Path) -> Vec<DamagedRepo> {
    let mut damaged = Vec::new();
    for (owner, name) in list_repos(data_dir) {
        let dir = repo_dir(data_dir, &owner, &name);
        if let Err(e) = RefStore::open(&dir) {
            damaged.push(DamagedRepo {
                repo: format!("{owner}/{name}"),
                reason: e.to_string(),
            });
        }
    }
    damaged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A name differing only in letter case is found without a scan per
    /// creation: from the first scan, then from the creations noted.
    #[test]
    fn case_variants_are_found_from_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        Repo::create(data, "Org", "Before").unwrap();
        assert_eq!(
            find_case_variant(data, "org", "BEFORE").as_deref(),
            Some("Org/Before")
        );
        assert_eq!(find_case_variant(data, "org", "after"), None);
        Repo::create(data, "org", "After").unwrap();
        note_created(data, "org", "After");
        assert_eq!(
            find_case_variant(data, "ORG", "after").as_deref(),
            Some("org/After")
        );
        assert_eq!(find_case_variant(data, "org", "other"), None);
    }

    /// Temporary directories of creations cut short before the start are
    /// removed by the start's sweep; newer ones, other dot-names and
    /// repositories are left alone.
    #[test]
    fn the_start_sweep_removes_interrupted_creations() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        Repo::create(data, "o", "real").unwrap();
        let owner = data.join("repos").join("o");
        for d in [".tmp-gone-12345", ".tmp-other"] {
            std::fs::create_dir_all(owner.join(d).join("objects")).unwrap();
        }
        let earlier = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(remove_stale_temp_packs(data, earlier), 0);
        assert!(
            owner.join(".tmp-gone-12345").exists(),
            "a creation in progress"
        );
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(remove_stale_temp_packs(data, later), 1);
        assert!(!owner.join(".tmp-gone-12345").exists());
        assert!(owner.join(".tmp-other").exists());
        assert!(owner.join("real.git").join("objects").is_dir());
        // A leftover under this process's own id is replaced at creation.
        let mine = owner.join(format!(".tmp-again-{}", std::process::id()));
        std::fs::create_dir_all(mine.join("junk")).unwrap();
        Repo::create(data, "o", "again").unwrap();
        assert!(!mine.exists());
        assert!(!owner.join("again.git").join("junk").exists());
    }
}
