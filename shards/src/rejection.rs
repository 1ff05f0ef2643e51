//! Why a ref update (or a repository creation) was not applied.
//!
//! A push's commands are refused at three places: checked against the
//! advertised refs and the pack when the push arrives (`git.rs`), checked
//! by the ordering service against the refs every earlier transaction
//! left (the consensus core's state), and applied on the owning shard
//! (`shard.rs`). Each produces an [`UpdateRejection`] carrying the values
//! involved; its `Display` is the reason the client reads, once, in
//! `ng <ref> <reason>` (or the HTTP error of a repository creation).

use guts_io::object::ObjectKind;
use guts_io::refname::RefNameError;
use guts_io::refs::RefError;
use guts_io::ObjectId;
use std::sync::Arc;

use crate::repo::RepoError;
use crate::shard::ShardError;

/// The outcome of one ref update after ordering: `Ok` or why it failed.
pub type UpdateOutcome = Result<(), UpdateRejection>;

/// Why one ref update (or a repository creation) was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpdateRejection {
    /// The ref name breaks git's rules (`git check-ref-format`).
    #[error("funny refname: {0}")]
    FunnyRefname(#[from] RefNameError),
    /// The ref moved since it was advertised to the pushing client.
    #[error("stale info: the ref changed since it was advertised; fetch first")]
    StaleAdvertised,
    /// The client expected a ref that the advertisement did not have.
    #[error("stale info: the ref does not exist; fetch first")]
    StaleMissing,
    /// The ref moved between the push's check and its application.
    #[error("stale info: the ref changed since the push began; fetch first")]
    StaleApplied,
    /// A transaction ordered earlier deleted the ref.
    #[error("stale info: the ref was deleted by a concurrent push; fetch first")]
    DeletedConcurrently,
    /// A transaction ordered earlier moved the ref.
    #[error("stale info: the ref was changed by a concurrent push; fetch first")]
    ChangedConcurrently,
    /// A delete of a ref that is not there.
    #[error("cannot delete a ref that does not exist")]
    DeleteMissing,
    /// The new value is neither in the repository nor in the pushed pack.
    #[error("missing necessary objects: {oid} is not in the repository or the pack")]
    MissingObject { oid: ObjectId },
    /// A branch (`refs/heads/`) set to something other than a commit.
    #[error("branch must point at a commit, {oid} is a {}", kind.name())]
    BranchNotCommit { oid: ObjectId, kind: ObjectKind },
    /// The same ref twice in one transaction.
    #[error("ref updated twice in one push")]
    UpdatedTwice,
    /// An update whose old and new values are both null.
    #[error("neither old nor new value")]
    NeitherOldNorNew,
    /// A transaction without ref updates.
    #[error("a transaction without ref updates")]
    NoUpdates,
    /// More ref updates in one transaction than the ordering service takes.
    #[error("{count} ref updates in one transaction (at most {max})")]
    TooManyUpdates { count: usize, max: usize },
    /// Another update of the same transaction failed, and this one was
    /// ordered with it.
    #[error(
        "not applied: another ref of this push was updated concurrently; fetch and push again"
    )]
    SiblingRejected,
    /// An atomic push with more ref updates (or bytes) than one transaction
    /// of the network may hold: refused before anything is ordered.
    #[error("atomic push of {count} ref updates does not fit one transaction of this network (at most {updates_max} updates in {bytes_max} bytes); push without --atomic, or in parts")]
    AtomicTooLarge {
        count: usize,
        updates_max: usize,
        bytes_max: usize,
    },
    /// Another update of the same atomic push failed.
    #[error("atomic push failed")]
    AtomicPushFailed,
    /// A repository key that is not `OWNER/NAME`.
    #[error("bad repository key")]
    BadRepoKey,
    /// A repository key that is not `OWNER/NAME`, as the ordering service
    /// saw it.
    #[error("bad repository key {key:?}")]
    BadRepoKeyValue { key: String },
    /// The repository: missing, existing (creation), damaged, a bad name,
    /// or its stores failing.
    #[error("{0}")]
    Repo(Arc<RepoError>),
    /// The ref store refused the update (other than a stale old value).
    #[error("{0}")]
    Ref(Arc<RefError>),
    /// The finalized update names a pack this node cannot open.
    #[error("pack {pack} unavailable: {source}")]
    PackUnavailable {
        pack: String,
        source: Arc<guts_io::store::StoreError>,
    },
    /// The pushed pack could not be made part of the repository; the reason
    /// is shown without the node's paths.
    #[error("could not store the pack: {}", crate::redact::message(&.0.to_string()))]
    PackNotStored(Arc<crate::git::PackStoreError>),
    /// The updates were not ordered, or not finalized in time.
    #[error("{}", not_applied(.0))]
    NotApplied(Arc<ShardError>),
    /// The ordering service answered with an access outcome instead.
    #[error("unexpected outcome")]
    UnexpectedOutcome,
}

impl From<RepoError> for UpdateRejection {
    fn from(e: RepoError) -> UpdateRejection {
        UpdateRejection::Repo(Arc::new(e))
    }
}

impl From<RefError> for UpdateRejection {
    /// A stale old value reads as git's "stale info"; the rest as the
    /// store words it.
    fn from(e: RefError) -> UpdateRejection {
        match e {
            RefError::Stale { .. } => UpdateRejection::StaleApplied,
            other => UpdateRejection::Ref(Arc::new(other)),
        }
    }
}

/// A push that was not finalized in time says so as it is; any other
/// failure to order it is "not applied", without the node's paths.
fn not_applied(e: &ShardError) -> String {
    match e {
        ShardError::NotFinalized { .. } => e.to_string(),
        other => format!(
            "not applied: {}",
            crate::redact::message(&other.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons clients read in `ng <ref> <reason>` (the tests that
    /// push with git match several of them).
    #[test]
    fn reasons_read_as_before() {
        let oid = ObjectId::from_sha1([0xab; 20]);
        let cases: Vec<(UpdateRejection, String)> = vec![
            (
                UpdateRejection::StaleAdvertised,
                "stale info: the ref changed since it was advertised; fetch first".into(),
            ),
            (
                RefError::Stale {
                    name: "refs/heads/main".into(),
                    expected: oid,
                    actual: ObjectId::NULL_SHA1,
                }
                .into(),
                "stale info: the ref changed since the push began; fetch first".into(),
            ),
            (
                UpdateRejection::MissingObject { oid },
                format!("missing necessary objects: {oid} is not in the repository or the pack"),
            ),
            (
                UpdateRejection::BranchNotCommit {
                    oid,
                    kind: ObjectKind::Tree,
                },
                format!("branch must point at a commit, {oid} is a tree"),
            ),
            (
                UpdateRejection::TooManyUpdates { count: 9, max: 8 },
                "9 ref updates in one transaction (at most 8)".into(),
            ),
            (
                RepoError::Exists("a/b".into()).into(),
                "repository a/b already exists".into(),
            ),
            (
                UpdateRejection::NotApplied(Arc::new(ShardError::NotFinalized { waited_ms: 5 })),
                ShardError::NotFinalized { waited_ms: 5 }.to_string(),
            ),
            (
                UpdateRejection::NotApplied(Arc::new(ShardError::ShardGone(3))),
                "not applied: owning shard 3 is not running".into(),
            ),
        ];
        for (why, text) in cases {
            assert_eq!(why.to_string(), text, "{why:?}");
        }
    }
}
