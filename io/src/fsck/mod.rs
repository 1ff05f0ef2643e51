//! Push-time object checks: what C git's `fsck.c` reports when a receiving
//! repository runs with `receive.fsckObjects = true`.
//!
//! git's checks have three levels (see `fsck.h`): errors, warnings and
//! infos. `index-pack --strict` (which `receive.fsckObjects` runs) turns
//! every warning into an error and leaves infos as mere warnings. This
//! module reports exactly the problems that reject a push there, each as a
//! [`FsckProblem`] named after git's message id; problems git only reports
//! as infos (`badFilemode`, `badTagName`, `missingTaggerEntry`, symlinked
//! `.gitattributes`/`.gitignore`/`.mailmap`) are accepted, as git accepts
//! them.
//!
//! The contents of `.gitmodules` and `.gitattributes` blobs are checked too
//! ([`check_gitmodules`], [`check_gitattributes`]), as git's `fsck_blob` does:
//! [`check_object_collecting`] reports which blobs a tree names so (git's
//! `gitmodules_found`/`gitattributes_found`), and the caller checks each of
//! them once every object is known (git's `fsck_finish`), whether the blob
//! came in the pack or was already in the repository.
//!
//! One file per part of C git it follows:
//! - `objects`: commits, trees and tags (`fsck.c`: `fsck_commit`,
//!   `fsck_tree`, `fsck_tag`; `tree-walk.c`'s entry decoding) and the links
//!   git's connectivity walk follows (`fsck_walk`);
//! - `gitmodules`: the contents of `.gitmodules` and `.gitattributes`
//!   blobs (`fsck.c`'s `fsck_blob`, `submodule-config.c`'s name and URL
//!   checks);
//! - `url`: URL decoding and normalisation (`url.c`, `urlmatch.c`);
//! - `config`: git's config-file parser over a blob (`config.c`);
//! - `path_names`: names that HFS+ or NTFS would take for `.git`,
//!   `.gitmodules` and the like (`utf8.c`, `path.c`).

mod config;
mod gitmodules;
mod objects;
mod path_names;
mod url;

pub use gitmodules::{
    check_gitattributes, check_gitmodules, check_special_blob, special_blob_max_bytes, SpecialBlob,
    SpecialFile, SpecialObject, GITATTRIBUTES_LINE_MAX_BYTES, GITATTRIBUTES_MAX_BYTES,
    GITMODULES_MAX_BYTES,
};
use objects::{check_commit, check_tag, check_tree};
pub use objects::{object_links, Link, LinkParseError};

use crate::object::ObjectKind;
use crate::oid::ObjectId;

/// git's default for `fsck.largePathname`-style limits: tree entry names
/// longer than this are reported (`largePathname`).
pub const TREE_ENTRY_NAME_MAX_BYTES: usize = 4096;

/// Options for [`check_object`].
#[derive(Debug, Clone, Copy)]
pub struct FsckOptions {
    /// Tree entry names longer than this are rejected (`largePathname`).
    pub tree_entry_name_max_bytes: usize,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            tree_entry_name_max_bytes: TREE_ENTRY_NAME_MAX_BYTES,
        }
    }
}

/// One problem git's fsck reports at error level under `--strict`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsckProblem {
    #[error("NUL byte in object header at offset {offset}")]
    NulInHeader { offset: usize },
    #[error("unterminated object header")]
    UnterminatedHeader,
    #[error("invalid format - expected 'tree' line")]
    MissingTree,
    #[error("invalid 'tree' line format - bad sha1")]
    BadTreeSha1,
    #[error("invalid 'parent' line format - bad sha1")]
    BadParentSha1,
    #[error("invalid format - expected 'author' line")]
    MissingAuthor,
    #[error("invalid format - multiple 'author' lines")]
    MultipleAuthors,
    #[error("invalid format - expected 'committer' line")]
    MissingCommitter,
    #[error("invalid author/committer line - missing space before email")]
    MissingNameBeforeEmail,
    #[error("invalid author/committer line - missing email")]
    MissingEmail,
    #[error("invalid author/committer line - bad name")]
    BadName,
    #[error("invalid author/committer line - missing space before email")]
    MissingSpaceBeforeEmail,
    #[error("invalid author/committer line - bad email")]
    BadEmail,
    #[error("invalid author/committer line - missing space before date")]
    MissingSpaceBeforeDate,
    #[error("invalid author/committer line - bad date")]
    BadDate,
    #[error("invalid author/committer line - zero-padded date")]
    ZeroPaddedDate,
    #[error("invalid author/committer line - date causes integer overflow")]
    BadDateOverflow,
    #[error("invalid author/committer line - bad time zone")]
    BadTimezone,
    #[error("NUL byte in the commit object body")]
    NulInCommit,
    #[error("cannot be parsed as a tree: {reason}")]
    BadTree { reason: &'static str },
    #[error("contains entries pointing to null sha1")]
    NullSha1,
    #[error("contains full pathnames")]
    FullPathname,
    #[error("contains empty pathname")]
    EmptyName,
    #[error("contains '.'")]
    HasDot,
    #[error("contains '..'")]
    HasDotdot,
    #[error("contains '.git' (entry {name:?})")]
    HasDotgit { name: String },
    #[error("contains zero-padded file modes")]
    ZeroPaddedFilemode,
    #[error("contains duplicate file entries ({name:?})")]
    DuplicateEntries { name: String },
    #[error("not properly sorted (at {name:?})")]
    TreeNotSorted { name: String },
    #[error("contains excessively large pathname ({len} bytes, limit {limit})")]
    LargePathname { len: usize, limit: usize },
    #[error(".gitmodules is a symbolic link")]
    GitmodulesSymlink,
    #[error("invalid format - expected 'object' line")]
    MissingObject,
    #[error("invalid 'object' line format - bad sha1")]
    BadObjectSha1,
    #[error("invalid format - expected 'type' line")]
    MissingTypeEntry,
    #[error("invalid format - unexpected end after 'type' line")]
    MissingType,
    #[error("invalid 'type' value")]
    BadType,
    #[error("invalid format - expected 'tag' line")]
    MissingTagEntry,
    #[error("invalid format - unexpected end after 'tag' line")]
    MissingTag,
    #[error("invalid format - unexpected end after 'gpgsig' line")]
    BadGpgsig,
    #[error("invalid format - unexpected end in 'gpgsig' continuation line")]
    BadHeaderContinuation,
    #[error("disallowed submodule name: {name:?}")]
    GitmodulesName { name: String },
    #[error("disallowed submodule url: {url:?}")]
    GitmodulesUrl { url: String },
    #[error("disallowed submodule path: {path:?}")]
    GitmodulesPath { path: String },
    #[error("disallowed submodule update setting: {value:?}")]
    GitmodulesUpdate { value: String },
    #[error("non-blob found at .gitmodules")]
    GitmodulesBlob,
    #[error(".gitmodules too large to parse ({size} bytes, limit {limit})")]
    GitmodulesLarge { size: u64, limit: u64 },
    #[error("non-blob found at .gitattributes")]
    GitattributesBlob,
    #[error("unable to read .gitattributes blob")]
    GitattributesMissing,
    #[error(".gitattributes too large to parse ({size} bytes, limit {limit})")]
    GitattributesLarge { size: u64, limit: u64 },
    #[error(".gitattributes has too long lines to parse ({len} bytes, limit {limit})")]
    GitattributesLineLength { len: usize, limit: usize },
}

impl FsckProblem {
    /// git's camelCase message id for this problem (as in `fsck.<msg-id>`).
    pub fn msg_id(&self) -> &'static str {
        use FsckProblem::*;
        match self {
            NulInHeader { .. } => "nulInHeader",
            UnterminatedHeader => "unterminatedHeader",
            MissingTree => "missingTree",
            BadTreeSha1 => "badTreeSha1",
            BadParentSha1 => "badParentSha1",
            MissingAuthor => "missingAuthor",
            MultipleAuthors => "multipleAuthors",
            MissingCommitter => "missingCommitter",
            MissingNameBeforeEmail => "missingNameBeforeEmail",
            MissingEmail => "missingEmail",
            BadName => "badName",
            MissingSpaceBeforeEmail => "missingSpaceBeforeEmail",
            BadEmail => "badEmail",
            MissingSpaceBeforeDate => "missingSpaceBeforeDate",
            BadDate => "badDate",
            ZeroPaddedDate => "zeroPaddedDate",
            BadDateOverflow => "badDateOverflow",
            BadTimezone => "badTimezone",
            NulInCommit => "nulInCommit",
            BadTree { .. } => "badTree",
            NullSha1 => "nullSha1",
            FullPathname => "fullPathname",
            EmptyName => "emptyName",
            HasDot => "hasDot",
            HasDotdot => "hasDotdot",
            HasDotgit { .. } => "hasDotgit",
            ZeroPaddedFilemode => "zeroPaddedFilemode",
            DuplicateEntries { .. } => "duplicateEntries",
            TreeNotSorted { .. } => "treeNotSorted",
            LargePathname { .. } => "largePathname",
            GitmodulesSymlink => "gitmodulesSymlink",
            MissingObject => "missingObject",
            BadObjectSha1 => "badObjectSha1",
            MissingTypeEntry => "missingTypeEntry",
            MissingType => "missingType",
            BadType => "badType",
            MissingTagEntry => "missingTagEntry",
            MissingTag => "missingTag",
            BadGpgsig => "badGpgsig",
            BadHeaderContinuation => "badHeaderContinuation",
            GitmodulesName { .. } => "gitmodulesName",
            GitmodulesUrl { .. } => "gitmodulesUrl",
            GitmodulesPath { .. } => "gitmodulesPath",
            GitmodulesUpdate { .. } => "gitmodulesUpdate",
            GitmodulesBlob => "gitmodulesBlob",
            GitmodulesLarge { .. } => "gitmodulesLarge",
            GitattributesBlob => "gitattributesBlob",
            GitattributesMissing => "gitattributesMissing",
            GitattributesLarge { .. } => "gitattributesLarge",
            GitattributesLineLength { .. } => "gitattributesLineLength",
        }
    }
}

/// An object failed the checks; names the object and git's message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object {oid} ({kind}): {id}: {problem}", kind = .kind.name(), id = .problem.msg_id())]
pub struct FsckError {
    /// The object that failed.
    pub oid: ObjectId,
    /// Its kind.
    pub kind: ObjectKind,
    /// What is wrong with it.
    pub problem: FsckProblem,
}

/// Check one object the way `git index-pack --strict` does. Blobs always
/// pass here: the special ones are checked by [`check_special_blob`] once a
/// tree has named them.
pub fn check_object(
    oid: &ObjectId,
    kind: ObjectKind,
    data: &[u8],
    opts: &FsckOptions,
) -> Result<(), FsckError> {
    check_object_collecting(oid, kind, data, opts, &mut Vec::new())
}

/// [`check_object`], also appending to `found` the `.gitmodules` and
/// `.gitattributes` entries of a tree (any spelling git's fsck recognises,
/// any mode but a symlink), whose contents the caller must then check with
/// [`check_special_blob`]. `found` may hold duplicates.
pub fn check_object_collecting(
    oid: &ObjectId,
    kind: ObjectKind,
    data: &[u8],
    opts: &FsckOptions,
    found: &mut Vec<SpecialBlob>,
) -> Result<(), FsckError> {
    let result = match kind {
        ObjectKind::Blob => Ok(()),
        ObjectKind::Commit => check_commit(data),
        ObjectKind::Tree => check_tree(data, opts, found),
        ObjectKind::Tag => check_tag(data),
    };
    result.map_err(|problem| FsckError {
        oid: *oid,
        kind,
        problem,
    })
}
