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

/// An object another object points at, with the kind it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// The object pointed at.
    pub oid: ObjectId,
    /// The kind the pointing object says it has.
    pub kind: ObjectKind,
}

/// Errors extracting links from an object git could not parse either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {kind} object for its links: {reason}", kind = .kind.name())]
pub struct LinkParseError {
    /// Kind of the unparsable object.
    pub kind: ObjectKind,
    /// What was wrong.
    pub reason: &'static str,
}

/// The objects `data` points at, as git's connectivity walk (`fsck_walk`)
/// sees them: a commit's tree and parents, a tree's subtrees, blobs and
/// symlinks (gitlinks and unknown modes are skipped, as git's canonical
/// modes make them gitlinks), a tag's target. Appends to `out`.
pub fn object_links(
    kind: ObjectKind,
    data: &[u8],
    out: &mut Vec<Link>,
) -> Result<(), LinkParseError> {
    let bad = |reason| LinkParseError { kind, reason };
    match kind {
        ObjectKind::Blob => Ok(()),
        ObjectKind::Commit => {
            let tree = data
                .strip_prefix(b"tree ")
                .and_then(|r| r.get(..41))
                .filter(|r| r[40] == b'\n')
                .and_then(|r| ObjectId::from_hex(&r[..40]).ok())
                .ok_or_else(|| bad("bad tree pointer"))?;
            out.push(Link {
                oid: tree,
                kind: ObjectKind::Tree,
            });
            let mut rest = &data[46..];
            while let Some(r) = rest.strip_prefix(b"parent ") {
                let parent = r
                    .get(..41)
                    .filter(|r| r[40] == b'\n')
                    .and_then(|r| ObjectId::from_hex(&r[..40]).ok())
                    .ok_or_else(|| bad("bad parents"))?;
                out.push(Link {
                    oid: parent,
                    kind: ObjectKind::Commit,
                });
                rest = &r[41..];
            }
            Ok(())
        }
        ObjectKind::Tree => {
            let mut rest = data;
            while !rest.is_empty() {
                let entry = parse_tree_entry(rest).map_err(bad)?;
                rest = &rest[entry.len..];
                let mode = u32::from(entry.mode);
                let link_kind = match mode & S_IFMT {
                    S_IFDIR => ObjectKind::Tree,
                    S_IFREG | S_IFLNK => ObjectKind::Blob,
                    _ => continue,
                };
                out.push(Link {
                    oid: entry.oid,
                    kind: link_kind,
                });
            }
            Ok(())
        }
        ObjectKind::Tag => {
            let info = crate::object::parse_tag(data).map_err(|_| bad("bad tag header"))?;
            out.push(Link {
                oid: info.object,
                kind: info.target_kind,
            });
            Ok(())
        }
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFDIR: u32 = 0o040000;
const S_IFGITLINK: u32 = 0o160000;

/// One raw tree entry as `decode_tree_entry` (tree-walk.c) sees it.
struct RawEntry<'a> {
    /// Mode truncated to 16 bits, as git stores it.
    mode: u16,
    name: &'a [u8],
    oid: ObjectId,
    /// Bytes the entry occupies.
    len: usize,
}

fn parse_tree_entry(buf: &[u8]) -> Result<RawEntry<'_>, &'static str> {
    // git: size < hashsz + 3 || buf[size - (hashsz + 1)] != 0 → too short
    if buf.len() < 23 || buf[buf.len() - 21] != 0 {
        return Err("too-short tree object");
    }
    if buf[0] == b' ' {
        return Err("malformed mode in tree entry");
    }
    let mut mode: u32 = 0;
    let mut pos = 0;
    loop {
        let c = *buf.get(pos).ok_or("malformed mode in tree entry")?;
        pos += 1;
        if c == b' ' {
            break;
        }
        if !(b'0'..=b'7').contains(&c) {
            return Err("malformed mode in tree entry");
        }
        mode = (mode << 3).wrapping_add(u32::from(c - b'0'));
    }
    let nul = buf[pos..]
        .iter()
        .position(|b| *b == 0)
        .ok_or("too-short tree object")?;
    let name = &buf[pos..pos + nul];
    if name.is_empty() {
        return Err("empty filename in tree entry");
    }
    let oid_start = pos + nul + 1;
    let raw = buf
        .get(oid_start..oid_start + 20)
        .ok_or("too-short tree file")?;
    let oid = ObjectId::from_bytes(raw).map_err(|_| "too-short tree file")?;
    Ok(RawEntry {
        mode: mode as u16,
        name,
        oid,
        len: oid_start + 20,
    })
}

/// `verify_headers`: the header must end in "\n\n" or a final "\n", with no NUL.
fn verify_headers(data: &[u8]) -> Result<(), FsckProblem> {
    for (i, b) in data.iter().enumerate() {
        match b {
            0 => return Err(FsckProblem::NulInHeader { offset: i }),
            b'\n' if data.get(i + 1) == Some(&b'\n') => return Ok(()),
            _ => {}
        }
    }
    if data.last() == Some(&b'\n') {
        return Ok(());
    }
    Err(FsckProblem::UnterminatedHeader)
}

/// Parse `<40 hex>\n` at `data[pos..]`; returns the position after the newline.
fn hex_line(data: &[u8], pos: usize) -> Option<usize> {
    let hex = data.get(pos..pos + 40)?;
    ObjectId::from_hex(hex).ok()?;
    (data.get(pos + 40) == Some(&b'\n')).then_some(pos + 41)
}

fn check_commit(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let mut pos = if data.starts_with(b"tree ") {
        5
    } else {
        return Err(FsckProblem::MissingTree);
    };
    pos = hex_line(data, pos).ok_or(FsckProblem::BadTreeSha1)?;
    while data[pos..].starts_with(b"parent ") {
        pos = hex_line(data, pos + 7).ok_or(FsckProblem::BadParentSha1)?;
    }
    let mut authors = 0;
    while data[pos..].starts_with(b"author ") {
        authors += 1;
        pos = check_ident(data, pos + 7)?;
    }
    if authors == 0 {
        return Err(FsckProblem::MissingAuthor);
    }
    if authors > 1 {
        return Err(FsckProblem::MultipleAuthors);
    }
    if !data[pos..].starts_with(b"committer ") {
        return Err(FsckProblem::MissingCommitter);
    }
    check_ident(data, pos + 10)?;
    if data.contains(&0) {
        return Err(FsckProblem::NulInCommit);
    }
    Ok(())
}

/// `fsck_ident`: `Name <email> <digits> <+|-><4 digits>\n` starting at `start`.
/// Returns the position after the line. `verify_headers` guarantees a
/// newline before the end, so reading past the line is impossible; `at`
/// still bounds-checks and treats the end as a newline.
fn check_ident(data: &[u8], start: usize) -> Result<usize, FsckProblem> {
    let at = |i: usize| data.get(i).copied().unwrap_or(b'\n');
    let nl = data[start..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|n| start + n)
        .ok_or(FsckProblem::UnterminatedHeader)?;
    let next_line = nl + 1;
    let mut p = start;
    if at(p) == b'<' {
        return Err(FsckProblem::MissingNameBeforeEmail);
    }
    loop {
        match at(p) {
            b'\n' => return Err(FsckProblem::MissingEmail),
            b'>' => return Err(FsckProblem::BadName),
            b'<' => break,
            _ => p += 1,
        }
    }
    if p == 0 || at(p - 1) != b' ' {
        return Err(FsckProblem::MissingSpaceBeforeEmail);
    }
    p += 1;
    loop {
        match at(p) {
            b'<' | b'\n' => return Err(FsckProblem::BadEmail),
            b'>' => break,
            _ => p += 1,
        }
    }
    p += 1;
    if at(p) != b' ' {
        return Err(FsckProblem::MissingSpaceBeforeDate);
    }
    p += 1;
    while at(p) == b' ' || at(p) == b'\t' {
        p += 1;
    }
    if !at(p).is_ascii_digit() {
        return Err(FsckProblem::BadDate);
    }
    if at(p) == b'0' && at(p + 1) != b' ' {
        return Err(FsckProblem::ZeroPaddedDate);
    }
    // git parses at most 23 digits with strtoumax (saturating), then
    // rejects anything that does not fit a signed 64-bit time_t.
    let digits_start = p;
    let mut value: u128 = 0;
    while at(p).is_ascii_digit() {
        value = value
            .saturating_mul(10)
            .saturating_add(u128::from(at(p) - b'0'));
        p += 1;
    }
    if p - digits_start > 23 || value > i64::MAX as u128 {
        return Err(FsckProblem::BadDateOverflow);
    }
    if at(p) != b' ' {
        return Err(FsckProblem::BadDate);
    }
    p += 1;
    if !(at(p) == b'+' || at(p) == b'-')
        || !at(p + 1).is_ascii_digit()
        || !at(p + 2).is_ascii_digit()
        || !at(p + 3).is_ascii_digit()
        || !at(p + 4).is_ascii_digit()
        || p + 5 != nl
    {
        return Err(FsckProblem::BadTimezone);
    }
    Ok(next_line)
}

fn check_tag(data: &[u8]) -> Result<(), FsckProblem> {
    verify_headers(data)?;
    let mut pos = if data.starts_with(b"object ") {
        7
    } else {
        return Err(FsckProblem::MissingObject);
    };
    pos = hex_line(data, pos).ok_or(FsckProblem::BadObjectSha1)?;
    if !data[pos..].starts_with(b"type ") {
        return Err(FsckProblem::MissingTypeEntry);
    }
    pos += 5;
    let eol = data[pos..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|n| pos + n)
        .ok_or(FsckProblem::MissingType)?;
    if ObjectKind::from_name(&data[pos..eol]).is_none() {
        return Err(FsckProblem::BadType);
    }
    pos = eol + 1;
    if !data[pos..].starts_with(b"tag ") {
        return Err(FsckProblem::MissingTagEntry);
    }
    pos += 4;
    let eol = data[pos..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|n| pos + n)
        .ok_or(FsckProblem::MissingTag)?;
    // a bad tag name is only an info in git (badTagName)
    pos = eol + 1;
    if data[pos..].starts_with(b"tagger ") {
        pos = check_ident(data, pos + 7)?;
    }
    // a missing tagger is only an info in git (missingTaggerEntry)
    let rest = &data[pos..];
    let after_sig = rest
        .strip_prefix(b"gpgsig ")
        .or_else(|| rest.strip_prefix(b"gpgsig-sha256 "));
    if let Some(sig) = after_sig {
        let mut p = data.len() - sig.len();
        let eol = data[p..]
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(FsckProblem::BadGpgsig)?;
        p += eol + 1;
        while data[p..].starts_with(b" ") {
            let eol = data[p..]
                .iter()
                .position(|b| *b == b'\n')
                .ok_or(FsckProblem::BadHeaderContinuation)?;
            p += eol + 1;
        }
    }
    // extra headers after the tagger are ignored by default (extraHeaderEntry)
    Ok(())
}

fn check_tree(
    data: &[u8],
    opts: &FsckOptions,
    found: &mut Vec<SpecialBlob>,
) -> Result<(), FsckProblem> {
    let mut has_null_sha1 = false;
    let mut has_full_path = false;
    let mut has_empty_name = false;
    let mut has_dot = false;
    let mut has_dotdot = false;
    let mut dotgit: Option<&[u8]> = None;
    let mut has_zero_pad = false;
    let mut large: Option<usize> = None;
    let mut gitmodules_symlink = false;
    let mut dup: Option<&[u8]> = None;
    let mut unsorted: Option<&[u8]> = None;
    let mut candidates: Vec<&[u8]> = Vec::new();
    let mut prev: Option<(u32, &[u8])> = None;
    let mut rest = data;
    while !rest.is_empty() {
        let entry = parse_tree_entry(rest).map_err(|reason| FsckProblem::BadTree { reason })?;
        let name = entry.name;
        let mode = u32::from(entry.mode);
        has_null_sha1 |= entry.oid.is_null();
        has_full_path |= name.contains(&b'/');
        has_empty_name |= name.is_empty();
        has_dot |= name == b".";
        has_dotdot |= name == b"..";
        if dotgit.is_none() && (is_hfs_dot(name, b"git") || is_ntfs_dotgit(name)) {
            dotgit = Some(name);
        }
        has_zero_pad |= rest[0] == b'0';
        if name.len() > opts.tree_entry_name_max_bytes {
            large.get_or_insert(name.len());
        }
        let is_link = mode & S_IFMT == S_IFLNK;
        // git remembers these whatever the mode (a tree or gitlink here is
        // reported when the object is looked at: gitmodulesBlob); symlinks
        // are reported at once (gitattributesSymlink only as an info)
        let mut gitmodules_entry = |search: &[u8], whole_name: bool| {
            let hfs = whole_name && is_hfs_dot(search, b"gitmodules");
            if !hfs && !is_ntfs_dot_generic(search, b"gitmodules", b"gi7eba") {
                return;
            }
            if is_link {
                gitmodules_symlink = true;
            } else {
                found.push(SpecialBlob {
                    oid: entry.oid,
                    file: SpecialFile::Gitmodules,
                });
            }
        };
        gitmodules_entry(name, true);
        let mut search = name;
        while let Some(b) = search.iter().position(|c| *c == b'\\') {
            search = &search[b + 1..];
            if dotgit.is_none() && is_ntfs_dotgit(search) {
                dotgit = Some(name);
            }
            // after a backslash git looks for NTFS spellings only
            gitmodules_entry(search, false);
        }
        if !is_link
            && (is_hfs_dot(name, b"gitattributes")
                || is_ntfs_dot_generic(name, b"gitattributes", b"gi7d29"))
        {
            found.push(SpecialBlob {
                oid: entry.oid,
                file: SpecialFile::Gitattributes,
            });
        }
        // modes other than 100644/100755/120000/40000/160000 are only an
        // info in git (badFilemode): accepted
        let _standard = matches!(mode, 0o100755 | 0o100644 | S_IFLNK | S_IFDIR | S_IFGITLINK);
        if let Some((prev_mode, prev_name)) = prev {
            match verify_ordered(prev_mode, prev_name, mode, name, &mut candidates) {
                Order::Ok => {}
                Order::Unordered => {
                    unsorted.get_or_insert(name);
                }
                Order::Duplicate => {
                    dup.get_or_insert(name);
                }
            }
        }
        prev = Some((mode, name));
        rest = &rest[entry.len..];
    }
    let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    if gitmodules_symlink {
        // reported before the summary flags in git (during the walk)
        return Err(FsckProblem::GitmodulesSymlink);
    }
    if has_null_sha1 {
        return Err(FsckProblem::NullSha1);
    }
    if has_full_path {
        return Err(FsckProblem::FullPathname);
    }
    if has_empty_name {
        return Err(FsckProblem::EmptyName);
    }
    if has_dot {
        return Err(FsckProblem::HasDot);
    }
    if has_dotdot {
        return Err(FsckProblem::HasDotdot);
    }
    if let Some(name) = dotgit {
        return Err(FsckProblem::HasDotgit { name: lossy(name) });
    }
    if has_zero_pad {
        return Err(FsckProblem::ZeroPaddedFilemode);
    }
    if let Some(name) = dup {
        return Err(FsckProblem::DuplicateEntries { name: lossy(name) });
    }
    if let Some(name) = unsorted {
        return Err(FsckProblem::TreeNotSorted { name: lossy(name) });
    }
    if let Some(len) = large {
        return Err(FsckProblem::LargePathname {
            len,
            limit: opts.tree_entry_name_max_bytes,
        });
    }
    Ok(())
}

// ---- .gitmodules and .gitattributes contents (git's fsck_blob) ---------

/// Largest `.gitmodules` blob parsed: git's `core.bigFileThreshold`
/// (512 MiB), above which `index-pack` does not load a blob and reports
/// `gitmodulesLarge`.
pub const GITMODULES_MAX_BYTES: u64 = 512 << 20;
/// Largest `.gitattributes` blob accepted: git's `ATTR_MAX_FILE_SIZE`
/// (`gitattributesLarge`).
pub const GITATTRIBUTES_MAX_BYTES: u64 = 100 << 20;
/// Lines of a `.gitattributes` blob must be shorter than this: git's
/// `ATTR_MAX_LINE_LENGTH` (`gitattributesLineLength`).
pub const GITATTRIBUTES_LINE_MAX_BYTES: usize = 2048;

/// Which special file a tree entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpecialFile {
    /// `.gitmodules` (or an NTFS/HFS+ spelling of it).
    Gitmodules,
    /// `.gitattributes` (or an NTFS/HFS+ spelling of it).
    Gitattributes,
}

/// An object a tree names as `.gitmodules` or `.gitattributes`; its
/// contents must pass [`check_special_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecialBlob {
    /// The object the entry points at (not necessarily a blob).
    pub oid: ObjectId,
    /// The name it was found under.
    pub file: SpecialFile,
}

/// What the checker knows of the object a [`SpecialBlob`] names.
#[derive(Debug, Clone, Copy)]
pub enum SpecialObject<'a> {
    /// Neither in the pack nor in the repository.
    Missing,
    /// Present, but not a blob.
    NotBlob(ObjectKind),
    /// A blob of `size` bytes whose contents were not loaded because
    /// `size` is over [`special_blob_max_bytes`].
    TooLarge(u64),
    /// A blob with these contents.
    Blob(&'a [u8]),
}

/// The largest blob worth loading for `file`: bigger ones fail anyway.
pub fn special_blob_max_bytes(file: SpecialFile) -> u64 {
    match file {
        SpecialFile::Gitmodules => GITMODULES_MAX_BYTES,
        SpecialFile::Gitattributes => GITATTRIBUTES_MAX_BYTES,
    }
}

/// git's `fsck_blobs` for one remembered object, with the message types
/// `index-pack --strict` gives them: a missing `.gitmodules` is only
/// listed (`gitmodulesMissing` is not an error there: a connectivity check
/// reports a missing object), a missing `.gitattributes` is an error.
pub fn check_special_blob(
    special: &SpecialBlob,
    object: SpecialObject<'_>,
) -> Result<(), FsckError> {
    let oid = &special.oid;
    let fail = |kind, problem| FsckError {
        oid: *oid,
        kind,
        problem,
    };
    match (special.file, object) {
        (SpecialFile::Gitmodules, SpecialObject::Missing) => Ok(()),
        (SpecialFile::Gitattributes, SpecialObject::Missing) => {
            Err(fail(ObjectKind::Blob, FsckProblem::GitattributesMissing))
        }
        (SpecialFile::Gitmodules, SpecialObject::NotBlob(kind)) => {
            Err(fail(kind, FsckProblem::GitmodulesBlob))
        }
        (SpecialFile::Gitattributes, SpecialObject::NotBlob(kind)) => {
            Err(fail(kind, FsckProblem::GitattributesBlob))
        }
        (file, SpecialObject::TooLarge(size)) => Err(fail(ObjectKind::Blob, large(file, size))),
        (SpecialFile::Gitmodules, SpecialObject::Blob(data)) => check_gitmodules(oid, data),
        (SpecialFile::Gitattributes, SpecialObject::Blob(data)) => check_gitattributes(oid, data),
    }
}

fn large(file: SpecialFile, size: u64) -> FsckProblem {
    let limit = special_blob_max_bytes(file);
    match file {
        SpecialFile::Gitmodules => FsckProblem::GitmodulesLarge { size, limit },
        SpecialFile::Gitattributes => FsckProblem::GitattributesLarge { size, limit },
    }
}

/// git's checks of a `.gitattributes` blob: at most
/// [`GITATTRIBUTES_MAX_BYTES`], every line shorter than
/// [`GITATTRIBUTES_LINE_MAX_BYTES`] (git reads the blob as a C string, so
/// nothing after a NUL byte counts).
pub fn check_gitattributes(oid: &ObjectId, data: &[u8]) -> Result<(), FsckError> {
    let fail = |problem| FsckError {
        oid: *oid,
        kind: ObjectKind::Blob,
        problem,
    };
    if data.len() as u64 > GITATTRIBUTES_MAX_BYTES {
        return Err(fail(large(SpecialFile::Gitattributes, data.len() as u64)));
    }
    let text = data
        .iter()
        .position(|b| *b == 0)
        .map_or(data, |nul| &data[..nul]);
    if let Some(len) = text
        .split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .find(|len| *len >= GITATTRIBUTES_LINE_MAX_BYTES)
    {
        return Err(fail(FsckProblem::GitattributesLineLength {
            len,
            limit: GITATTRIBUTES_LINE_MAX_BYTES,
        }));
    }
    Ok(())
}

/// git's checks of a `.gitmodules` blob (`fsck_gitmodules_fn`), over the
/// entries git's config parser reads before it stops: every
/// `submodule.<name>.*` needs a name without `..` components
/// (`gitmodulesName`), a `url` that is neither an option nor one of the
/// URLs of CVE-2020-11008/CVE-2023-... (`gitmodulesUrl`), a `path` that is
/// not an option (`gitmodulesPath`), an `update` that is not `!command`
/// (`gitmodulesUpdate`). A blob git cannot parse is only an info
/// (`gitmodulesParse`): the entries before the error are still checked.
///
/// git parses blobs with signed chars, so its fsck stops at a 0xff byte
/// (taken for end of file) and does not skip a UTF-8 byte order mark,
/// while a checked-out `.gitmodules` file is read with neither quirk. We
/// check both readings, and so reject the (rare) blobs that hide a bad
/// entry from git's fsck behind such bytes; git accepts those.
pub fn check_gitmodules(oid: &ObjectId, data: &[u8]) -> Result<(), FsckError> {
    let fail = |problem| FsckError {
        oid: *oid,
        kind: ObjectKind::Blob,
        problem,
    };
    if data.len() as u64 > GITMODULES_MAX_BYTES {
        return Err(fail(large(SpecialFile::Gitmodules, data.len() as u64)));
    }
    parse_config(data, ConfigBytes::Blob, &mut gitmodules_entry).map_err(fail)?;
    if data.contains(&0xff) || data.starts_with(UTF8_BOM) {
        parse_config(data, ConfigBytes::File, &mut gitmodules_entry).map_err(fail)?;
    }
    Ok(())
}

/// `fsck_gitmodules_fn`: one config entry, `var` as git builds it
/// (`section.subsection.key`, section and key lowercased).
fn gitmodules_entry(var: &[u8], value: Option<&[u8]>) -> Result<(), FsckProblem> {
    // git passes C strings: both end at a NUL byte
    let var = c_str(var);
    let value = value.map(c_str);
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // parse_config_key(var, "submodule", ...): a subsection is required
    let Some(rest) = var.strip_prefix(b"submodule.") else {
        return Ok(());
    };
    let Some(dot) = rest.iter().rposition(|b| *b == b'.') else {
        return Ok(());
    };
    let (name, key) = (&rest[..dot], &rest[dot + 1..]);
    if !submodule_name_ok(name) {
        return Err(FsckProblem::GitmodulesName { name: lossy(name) });
    }
    let Some(value) = value else {
        return Ok(());
    };
    match key {
        b"url" if !submodule_url_ok(value) => Err(FsckProblem::GitmodulesUrl { url: lossy(value) }),
        b"path" if value.first() == Some(&b'-') => {
            Err(FsckProblem::GitmodulesPath { path: lossy(value) })
        }
        b"update" if value.first() == Some(&b'!') => Err(FsckProblem::GitmodulesUpdate {
            value: lossy(value),
        }),
        _ => Ok(()),
    }
}

fn c_str(s: &[u8]) -> &[u8] {
    s.iter().position(|b| *b == 0).map_or(s, |nul| &s[..nul])
}

/// Both of git's directory separators (`is_xplatform_dir_sep`).
fn is_dir_sep(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

/// git's `check_submodule_name`: not empty, no `..` path component.
fn submodule_name_ok(name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let dotdot_at = |i: usize| {
        name.get(i..i + 2) == Some(b"..") && name.get(i + 2).is_none_or(|c| is_dir_sep(*c))
    };
    if dotdot_at(0) {
        return false;
    }
    !name
        .iter()
        .enumerate()
        .any(|(i, c)| is_dir_sep(*c) && dotdot_at(i + 1))
}

/// git's `check_submodule_url`.
fn submodule_url_ok(url: &[u8]) -> bool {
    if url.first() == Some(&b'-') {
        return false;
    }
    let starts_dot_slash = |u: &[u8]| u.len() >= 2 && u[0] == b'.' && is_dir_sep(u[1]);
    let starts_dot_dot_slash =
        |u: &[u8]| u.len() >= 3 && u[0] == b'.' && u[1] == b'.' && is_dir_sep(u[2]);
    if starts_dot_slash(url) || starts_dot_dot_slash(url) || url.starts_with(b"git://") {
        // this could be appended to an http URL and url-decoded
        if url_decode(url).contains(&b'\n') {
            return false;
        }
        // leading "../" that escape the root can rewrite the host
        // (CVE-2020-11008)
        let mut rest = url;
        let mut dotdots = 0;
        loop {
            if starts_dot_dot_slash(rest) {
                dotdots += 1;
                rest = &rest[3..];
            } else if starts_dot_slash(rest) {
                rest = &rest[2..];
            } else {
                break;
            }
        }
        return !(dotdots > 0 && matches!(rest.first(), Some(b':' | b'/')));
    }
    // url_to_curl_url: what git hands to curl must normalize, and not
    // decode to a newline (CVE-2020-5260 credential leak)
    let curl_url = [&b"http::"[..], b"https::", b"ftp::", b"ftps::"]
        .iter()
        .find_map(|p| url.strip_prefix(*p))
        .or_else(|| {
            [&b"http://"[..], b"https://", b"ftp://", b"ftps://"]
                .iter()
                .any(|p| url.starts_with(p))
                .then_some(url)
        });
    match curl_url {
        Some(curl_url) => url_normalize(curl_url).is_some_and(|n| !url_decode(&n).contains(&b'\n')),
        None => true,
    }
}

/// git's `hex2chr`: the byte two hex digits spell, or -1.
fn hex2chr(hi: u8, lo: u8) -> i32 {
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as i32);
    match (val(hi), val(lo)) {
        (Some(h), Some(l)) => (h << 4) | l,
        _ => -1,
    }
}

/// git's `url_decode`: %XX escapes decoded after the first colon (a
/// scheme before it is copied as is); `%00` and bad escapes stay.
fn url_decode(url: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(url.len());
    let mut rest = url;
    if let Some(colon) = url.iter().position(|b| *b == b':').filter(|c| *c > 0) {
        out.extend_from_slice(&url[..colon]);
        rest = &url[colon..];
    }
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'%' && rest.len() - i >= 3 {
            let val = hex2chr(rest[i + 1], rest[i + 2]);
            if val > 0 {
                out.push(val as u8);
                i += 3;
                continue;
            }
        }
        out.push(rest[i]);
        i += 1;
    }
    out
}

const URL_SCHEME_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-";
const URL_HOST_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_[:]";
const URL_UNSAFE_CHARS: &[u8] = b" <>\"%{}|\\^`";
const URL_RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=";

/// git's `append_normalized_escapes` (with no extra escapes and
/// [`URL_RESERVED`] left escaped): false on a bad %-escape.
fn append_normalized_escapes(out: &mut Vec<u8>, from: &[u8]) -> bool {
    let mut i = 0;
    while i < from.len() {
        let mut ch = from[i];
        i += 1;
        let mut was_escaped = false;
        if ch == b'%' {
            if from.len() - i < 2 {
                return false;
            }
            let val = hex2chr(from[i], from[i + 1]);
            if val < 0 {
                return false;
            }
            ch = val as u8;
            i += 2;
            was_escaped = true;
        }
        if ch <= 0x1f
            || ch >= 0x7f
            || URL_UNSAFE_CHARS.contains(&ch)
            || (was_escaped && URL_RESERVED.contains(&ch))
        {
            out.extend_from_slice(format!("%{ch:02X}").as_bytes());
        } else {
            out.push(ch);
        }
    }
    true
}

/// git's `url_normalize` (urlmatch.c), for what it accepts and what it
/// makes: lowercased scheme and host, normalized %-escapes, default port
/// dropped, `.`/`..` path segments resolved. None where git gives NULL.
fn url_normalize(url: &[u8]) -> Option<Vec<u8>> {
    let span = |from: usize, set: &[u8]| url[from..].iter().take_while(|b| set.contains(b)).count();
    let find_any = |from: usize, set: &[u8]| {
        from + url[from..]
            .iter()
            .position(|b| set.contains(b))
            .unwrap_or(url.len() - from)
    };
    let scheme_len = span(0, URL_SCHEME_CHARS);
    if scheme_len == 0
        || !url[0].is_ascii_alphabetic()
        || scheme_len + 3 > url.len()
        || &url[scheme_len..scheme_len + 3] != b"://"
    {
        return None;
    }
    let mut norm: Vec<u8> = url[..scheme_len + 3].to_ascii_lowercase();
    let mut p = scheme_len + 3;

    // user:password@, %-escapes normalized
    let slash = find_any(p, b"/?#");
    if let Some(at) = url[p..]
        .iter()
        .position(|b| *b == b'@')
        .map(|i| p + i)
        .filter(|at| *at < slash)
    {
        if !append_normalized_escapes(&mut norm, &url[p..at]) {
            return None;
        }
        norm.push(b'@');
        p = at + 1;
    }

    // host, no %-escapes
    let mut has_host = false;
    if p == url.len() || b":/?#".contains(&url[p]) {
        if !norm.starts_with(b"file:") {
            return None;
        }
    } else {
        has_host = true;
    }
    // the port colon: the last ':' of the authority not inside [...]
    // (before `p` git finds "//" or '@', never a colon)
    let mut colon = slash;
    if slash > p {
        let mut c = slash - 1;
        while c > p && url[c] != b':' && url[c] != b']' {
            c -= 1;
        }
        if url[c] == b':' {
            if !has_host && c + 1 != slash {
                return None; // a file: URL with a port
            }
            colon = c;
        }
    }
    if span(p, URL_HOST_CHARS) < colon - p {
        return None;
    }
    norm.extend(url[p..colon].iter().map(u8::to_ascii_lowercase));
    p = colon;

    // port: digits, leading zeros and default ports dropped
    if colon < slash {
        let mut q = colon + 1;
        while q < slash && url[q] == b'0' {
            q += 1;
        }
        if q == slash && url[q - 1] == b'0' {
            q -= 1;
        }
        let port = &url[q..slash];
        let default = port.is_empty()
            || (port == b"80" && norm.starts_with(b"http:"))
            || (port == b"443" && norm.starts_with(b"https:"));
        if !default {
            if !port.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let number: u32 = if port.len() <= 5 {
                port.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
            } else {
                0
            };
            if number == 0 || number > 65535 {
                return None;
            }
            norm.push(b':');
            norm.extend_from_slice(port);
        }
        p = slash;
    }

    // path, dot segments resolved
    let path_off = norm.len();
    norm.push(b'/');
    if url.get(p) == Some(&b'/') {
        p += 1;
    }
    loop {
        let seg_start = norm.len();
        let next_slash = find_any(p, b"/?#");
        let mut skip_add_slash = false;
        if !append_normalized_escapes(&mut norm, &url[p..next_slash]) {
            return None;
        }
        if &norm[seg_start..] == b"." {
            if seg_start == path_off + 1 {
                norm.truncate(norm.len() - 1);
                skip_add_slash = true;
            } else {
                norm.truncate(norm.len() - 2);
            }
        } else if &norm[seg_start..] == b".." {
            let mut prev_slash = norm.len() - 3;
            if prev_slash == path_off {
                return None; // no segment to remove
            }
            loop {
                prev_slash -= 1;
                if norm[prev_slash] == b'/' {
                    break;
                }
            }
            if prev_slash == path_off {
                norm.truncate(prev_slash + 1);
                skip_add_slash = true;
            } else {
                norm.truncate(prev_slash);
            }
        }
        p = next_slash;
        if url.get(p) != Some(&b'/') {
            break;
        }
        p += 1;
        if !skip_add_slash {
            norm.push(b'/');
        }
    }

    // query and fragment
    if p < url.len() && !append_normalized_escapes(&mut norm, &url[p..]) {
        return None;
    }
    Some(norm)
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// How git's config parser sees bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ConfigBytes {
    /// From memory (a blob): `char` is signed, so 0xff reads as EOF and a
    /// byte order mark is never recognised.
    Blob,
    /// From a file (`getc`): bytes as they are.
    File,
}

/// End of input as git's `get_next_char` returns it.
const EOF: i32 = -1;

/// git's `config_source` over a buffer (config.c).
struct ConfigReader<'a> {
    buf: &'a [u8],
    pos: usize,
    bytes: ConfigBytes,
    eof: bool,
    total_len: u64,
}

impl ConfigReader<'_> {
    fn fgetc(&mut self) -> i32 {
        let Some(&b) = self.buf.get(self.pos) else {
            return EOF;
        };
        self.pos += 1;
        match self.bytes {
            ConfigBytes::Blob => i32::from(b as i8),
            ConfigBytes::File => i32::from(b),
        }
    }

    /// `get_next_char`: CRLF as LF, end of input as a (sticky) '\n'.
    fn next(&mut self) -> i32 {
        let mut c = self.fgetc();
        if c == i32::from(b'\r') {
            c = self.fgetc();
            if c != i32::from(b'\n') {
                if c != EOF {
                    self.pos -= 1;
                }
                c = i32::from(b'\r');
            }
        }
        if c != EOF {
            self.total_len += 1;
            if self.total_len > i32::MAX as u64 {
                self.eof = true;
                return 0;
            }
        }
        if c == EOF {
            self.eof = true;
            c = i32::from(b'\n');
        }
        c
    }
}

// git's sane_ctype, which looks at the low byte of a (possibly negative) char
fn is_space(c: i32) -> bool {
    matches!(c as u8, b' ' | b'\t' | b'\n' | b'\r')
}
fn is_alpha(c: i32) -> bool {
    (c as u8).is_ascii_alphabetic()
}
fn is_key_char(c: i32) -> bool {
    (c as u8).is_ascii_alphanumeric() || c == i32::from(b'-')
}
fn lower(c: i32) -> u8 {
    (c as u8).to_ascii_lowercase()
}

/// Called with each config entry: `var` (`section.subsection.key`) and
/// its value (None for a bare boolean key).
type ConfigEntryFn<'a> = dyn FnMut(&[u8], Option<&[u8]>) -> Result<(), FsckProblem> + 'a;

/// Why the config walk stopped early.
enum ConfigStop {
    /// git's parser fails here (`gitmodulesParse`, an info).
    Parse,
    /// The callback reported a problem.
    Problem(FsckProblem),
}

/// git's `git_parse_source`: calls `entry(var, value)` for each entry
/// until the end or the first syntax error (which is not a problem: git
/// only reports `gitmodulesParse` as an info), stopping at the first
/// problem `entry` reports.
fn parse_config(
    data: &[u8],
    bytes: ConfigBytes,
    entry: &mut ConfigEntryFn<'_>,
) -> Result<(), FsckProblem> {
    let mut reader = ConfigReader {
        buf: data,
        pos: 0,
        bytes,
        eof: false,
        total_len: 0,
    };
    match parse_config_entries(&mut reader, entry) {
        Ok(()) | Err(ConfigStop::Parse) => Ok(()),
        Err(ConfigStop::Problem(p)) => Err(p),
    }
}

fn parse_config_entries(
    r: &mut ConfigReader<'_>,
    entry: &mut ConfigEntryFn<'_>,
) -> Result<(), ConfigStop> {
    let mut var: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let mut base_len = 0;
    let mut comment = false;
    let mut bom_matched = Some(0usize);
    loop {
        let c = r.next();
        if let Some(n) = bom_matched.filter(|n| *n < UTF8_BOM.len()) {
            if c == i32::from(UTF8_BOM[n]) {
                bom_matched = Some(n + 1);
                continue;
            }
            if n != 0 {
                return Err(ConfigStop::Parse); // a partial byte order mark
            }
            bom_matched = None;
        }
        if c == i32::from(b'\n') {
            if r.eof {
                return Ok(());
            }
            comment = false;
            continue;
        }
        if comment || is_space(c) {
            continue;
        }
        if c == i32::from(b'#') || c == i32::from(b';') {
            comment = true;
            continue;
        }
        if c == i32::from(b'[') {
            var.clear();
            if !section_header(r, &mut var) || var.is_empty() {
                return Err(ConfigStop::Parse);
            }
            var.push(b'.');
            base_len = var.len();
            continue;
        }
        if !is_alpha(c) {
            return Err(ConfigStop::Parse);
        }
        var.truncate(base_len);
        var.push(lower(c));
        // get_value: the rest of the key, then '=' and a value or nothing
        let mut c;
        loop {
            c = r.next();
            if r.eof || !is_key_char(c) {
                break;
            }
            var.push(lower(c));
        }
        while c == i32::from(b' ') || c == i32::from(b'\t') {
            c = r.next();
        }
        let has_value = c != i32::from(b'\n');
        if has_value && (c != i32::from(b'=') || !config_value(r, &mut value)) {
            return Err(ConfigStop::Parse);
        }
        entry(&var, has_value.then_some(&value[..])).map_err(ConfigStop::Problem)?;
    }
}

/// `get_base_var`: `[section]`, `[section.sub]` or `[section "sub"]`
/// after the '['; false on a syntax error.
fn section_header(r: &mut ConfigReader<'_>, var: &mut Vec<u8>) -> bool {
    loop {
        let c = r.next();
        if r.eof {
            return false;
        }
        if c == i32::from(b']') {
            return true;
        }
        if is_space(c) {
            return extended_section_header(r, var, c);
        }
        if !is_key_char(c) && c != i32::from(b'.') {
            return false;
        }
        var.push(lower(c));
    }
}

/// `get_extended_base_var`: ` "subsection"]`, the subsection kept as is.
fn extended_section_header(r: &mut ConfigReader<'_>, var: &mut Vec<u8>, mut c: i32) -> bool {
    let newline = i32::from(b'\n');
    loop {
        if c == newline {
            return false;
        }
        c = r.next();
        if !is_space(c) {
            break;
        }
    }
    if c != i32::from(b'"') {
        return false;
    }
    var.push(b'.');
    loop {
        let mut c = r.next();
        if c == newline {
            return false;
        }
        if c == i32::from(b'"') {
            break;
        }
        if c == i32::from(b'\\') {
            c = r.next();
            if c == newline {
                return false;
            }
        }
        var.push(c as u8);
    }
    r.next() == i32::from(b']')
}

/// `parse_value`: quotes, escapes, comments, trailing blanks trimmed;
/// false on a syntax error.
fn config_value(r: &mut ConfigReader<'_>, value: &mut Vec<u8>) -> bool {
    let mut quote = false;
    let mut comment = false;
    let mut trim_len = 0;
    value.clear();
    loop {
        let mut c = r.next();
        if c == i32::from(b'\n') {
            if quote {
                return false;
            }
            if trim_len != 0 {
                value.truncate(trim_len);
            }
            return true;
        }
        if comment {
            continue;
        }
        if is_space(c) && !quote {
            if trim_len == 0 {
                trim_len = value.len();
            }
            if !value.is_empty() {
                value.push(c as u8);
            }
            continue;
        }
        if !quote && (c == i32::from(b';') || c == i32::from(b'#')) {
            comment = true;
            continue;
        }
        trim_len = 0;
        if c == i32::from(b'\\') {
            c = r.next();
            let escaped = match c as u8 {
                _ if c == i32::from(b'\n') => continue,
                b't' => b'\t',
                b'b' => 0x08,
                b'n' => b'\n',
                b'\\' | b'"' => c as u8,
                _ => return false,
            };
            value.push(escaped);
            continue;
        }
        if c == i32::from(b'"') {
            quote = !quote;
            continue;
        }
        value.push(c as u8);
    }
}

enum Order {
    Ok,
    Unordered,
    Duplicate,
}

fn is_less_than_slash(c: u8) -> bool {
    c != 0 && c < b'/'
}

/// git's `verify_ordered`: entries sort by name, directories as if they
/// ended in '/'; a file and a directory with the same name are duplicates
/// even when other entries sort between them (tracked in `candidates`).
fn verify_ordered<'a>(
    mode1: u32,
    name1: &'a [u8],
    mode2: u32,
    name2: &'a [u8],
    candidates: &mut Vec<&'a [u8]>,
) -> Order {
    let len = name1.len().min(name2.len());
    match name1[..len].cmp(&name2[..len]) {
        std::cmp::Ordering::Less => return Order::Ok,
        std::cmp::Ordering::Greater => return Order::Unordered,
        std::cmp::Ordering::Equal => {}
    }
    let mut c1 = name1.get(len).copied().unwrap_or(0);
    let mut c2 = name2.get(len).copied().unwrap_or(0);
    if c1 == 0 && c2 == 0 {
        return Order::Duplicate;
    }
    if c1 == 0 && mode1 & S_IFMT == S_IFDIR {
        c1 = b'/';
    }
    if c2 == 0 && mode2 & S_IFMT == S_IFDIR {
        c2 = b'/';
    }
    if c1 == 0 && is_less_than_slash(c2) {
        candidates.push(name1);
    } else if c2 == b'/' && is_less_than_slash(c1) {
        while let Some(f_name) = candidates.pop() {
            let Some(p) = name2.strip_prefix(f_name) else {
                continue;
            };
            match p.first() {
                None => return Order::Duplicate,
                Some(c) if is_less_than_slash(*c) => {
                    candidates.push(f_name);
                    break;
                }
                Some(_) => {}
            }
        }
    }
    if c1 < c2 {
        Order::Ok
    } else {
        Order::Unordered
    }
}

/// Next code point as HFS+ compares names, skipping the ignorable ones;
/// 0 at the end or on malformed UTF-8 (as git's `next_hfs_char`).
fn next_hfs_char(s: &mut &[u8]) -> u32 {
    loop {
        let Some(&first) = s.first() else {
            return 0;
        };
        let len = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => {
                *s = &[];
                return 0;
            }
        };
        let Some(ch) = s
            .get(..len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.chars().next())
        else {
            *s = &[];
            return 0;
        };
        *s = &s[len..];
        let c = ch as u32;
        if c == 0xfffe || c == 0xffff {
            *s = &[];
            return 0;
        }
        match c {
            0x200c..=0x200f | 0x202a..=0x202e | 0x206a..=0x206f | 0xfeff => continue,
            _ => return c,
        }
    }
}

/// git's `is_hfs_dot_generic`: `.` + needle, case-insensitively, ignoring
/// the code points HFS+ ignores.
fn is_hfs_dot(name: &[u8], needle: &[u8]) -> bool {
    let mut s = name;
    if next_hfs_char(&mut s) != u32::from(b'.') {
        return false;
    }
    for n in needle {
        let c = next_hfs_char(&mut s);
        if c > 127 || (c as u8).to_ascii_lowercase() != *n {
            return false;
        }
    }
    let c = next_hfs_char(&mut s);
    c == 0 || c == u32::from(b'/')
}

/// git's `is_ntfs_dotgit`: `.git` or `git~1` (any case) followed only by
/// spaces and dots, up to the end, a directory separator or a ':'.
fn is_ntfs_dotgit(name: &[u8]) -> bool {
    let at = |i: usize| name.get(i).copied().unwrap_or(0);
    let mut i;
    if at(0) == b'.' {
        if !at(1).eq_ignore_ascii_case(&b'g')
            || !at(2).eq_ignore_ascii_case(&b'i')
            || !at(3).eq_ignore_ascii_case(&b't')
        {
            return false;
        }
        i = 4;
    } else if at(0).eq_ignore_ascii_case(&b'g') {
        if !at(1).eq_ignore_ascii_case(&b'i')
            || !at(2).eq_ignore_ascii_case(&b't')
            || at(3) != b'~'
            || at(4) != b'1'
        {
            return false;
        }
        i = 5;
    } else {
        return false;
    }
    loop {
        let c = at(i);
        i += 1;
        if c == 0 || c == b'/' || c == b'\\' || c == b':' {
            return true;
        }
        if c != b'.' && c != b' ' {
            return false;
        }
    }
}

/// git's `is_ntfs_dot_generic` for `.gitmodules`-like names and their
/// 8.3 short names.
fn is_ntfs_dot_generic(name: &[u8], dotgit_name: &[u8], shortname_prefix: &[u8]) -> bool {
    let at = |i: usize| name.get(i).copied().unwrap_or(0);
    let only_spaces_and_periods = |mut i: usize| loop {
        let c = at(i);
        i += 1;
        if c == 0 || c == b':' {
            return true;
        }
        if c != b' ' && c != b'.' {
            return false;
        }
    };
    let len = dotgit_name.len();
    if at(0) == b'.' && name.len() > len && name[1..=len].eq_ignore_ascii_case(dotgit_name) {
        return only_spaces_and_periods(len + 1);
    }
    if name.len() >= 8
        && name[..6].eq_ignore_ascii_case(&dotgit_name[..6])
        && name[6] == b'~'
        && (b'1'..=b'4').contains(&name[7])
    {
        return only_spaces_and_periods(8);
    }
    let mut saw_tilde = false;
    let mut i = 0;
    while i < 8 {
        let c = at(i);
        if c == 0 {
            return false;
        } else if saw_tilde {
            if !c.is_ascii_digit() {
                return false;
            }
        } else if c == b'~' {
            i += 1;
            if !(b'1'..=b'9').contains(&at(i)) {
                return false;
            }
            saw_tilde = true;
        } else if i >= 6 || c & 0x80 != 0 || c.to_ascii_lowercase() != shortname_prefix[i] {
            return false;
        }
        i += 1;
    }
    only_spaces_and_periods(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name) in entries {
            out.extend_from_slice(mode.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(&[0x11; 20]);
        }
        out
    }

    fn check(kind: ObjectKind, data: &[u8]) -> Result<(), FsckProblem> {
        check_object(&ObjectId::NULL_SHA1, kind, data, &FsckOptions::default())
            .map_err(|e| e.problem)
    }

    const GOOD_COMMIT: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\nauthor A U Thor <a@example.com> 1700000000 +0000\ncommitter C <c@example.com> 1700000001 -0130\nencoding ISO-8859-1\n\nmsg\n";

    #[test]
    fn commits() {
        assert_eq!(check(ObjectKind::Commit, GOOD_COMMIT), Ok(()));
        let bad = |from: &str, to: &str| {
            let s = String::from_utf8(GOOD_COMMIT.to_vec())
                .unwrap()
                .replacen(from, to, 1);
            check(ObjectKind::Commit, s.as_bytes())
        };
        assert_eq!(
            bad("A U Thor <", "A U Thor<"),
            Err(FsckProblem::MissingSpaceBeforeEmail)
        );
        assert_eq!(
            bad("A U Thor ", ""),
            Err(FsckProblem::MissingNameBeforeEmail)
        );
        assert_eq!(
            bad("1700000000", "01700000000"),
            Err(FsckProblem::ZeroPaddedDate)
        );
        assert_eq!(bad("+0000", "+000"), Err(FsckProblem::BadTimezone));
        assert_eq!(
            bad("1700000000", "99999999999999999999"),
            Err(FsckProblem::BadDateOverflow)
        );
        assert_eq!(
            bad("> 1700000000", ">1700000000"),
            Err(FsckProblem::MissingSpaceBeforeDate)
        );
        assert_eq!(bad("tree 4b82", "tree 4x82"), Err(FsckProblem::BadTreeSha1));
        assert_eq!(
            bad("parent e69d", "parent e6"),
            Err(FsckProblem::BadParentSha1)
        );
        assert_eq!(
            bad("committer", "commuter"),
            Err(FsckProblem::MissingCommitter)
        );
        assert_eq!(
            bad("author", "author A <a@b> 1 +0000\nauthor"),
            Err(FsckProblem::MultipleAuthors)
        );
        assert_eq!(bad("tree", "tee"), Err(FsckProblem::MissingTree));
        assert_eq!(
            bad("\n\nmsg\n", "\n\nm\0sg\n"),
            Err(FsckProblem::NulInCommit)
        );
        assert_eq!(bad("\n\nmsg\n", ""), Err(FsckProblem::UnterminatedHeader));
    }

    #[test]
    fn trees() {
        assert_eq!(
            check(
                ObjectKind::Tree,
                &tree(&[("100644", b"a"), ("40000", b"b")])
            ),
            Ok(())
        );
        // a.c sorts before directory a ("a/")
        assert_eq!(
            check(
                ObjectKind::Tree,
                &tree(&[("100644", b"a.c"), ("40000", b"a")])
            ),
            Ok(())
        );
        assert!(matches!(
            check(
                ObjectKind::Tree,
                &tree(&[("40000", b"a"), ("100644", b"a.c")])
            ),
            Err(FsckProblem::TreeNotSorted { .. })
        ));
        assert!(matches!(
            check(
                ObjectKind::Tree,
                &tree(&[("100644", b"a"), ("100644", b"a.c"), ("40000", b"a")])
            ),
            Err(FsckProblem::DuplicateEntries { .. })
        ));
        for name in [
            &b".git"[..],
            b".GIT",
            b"git~1",
            b"GIT~1",
            b".git.",
            b".git ",
            b".g\xe2\x80\x8cit",
            b"x\\.git",
        ] {
            assert!(
                matches!(
                    check(ObjectKind::Tree, &tree(&[("40000", name)])),
                    Err(FsckProblem::HasDotgit { .. })
                ),
                "{name:?}"
            );
        }
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("40000", b".gitx")])),
            Ok(())
        );
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("40000", b"..")])),
            Err(FsckProblem::HasDotdot)
        );
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("40000", b"a/b")])),
            Err(FsckProblem::FullPathname)
        );
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("040000", b"a")])),
            Err(FsckProblem::ZeroPaddedFilemode)
        );
        assert_eq!(check(ObjectKind::Tree, &tree(&[("100664", b"a")])), Ok(()));
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("120000", b".gitmodules")])),
            Err(FsckProblem::GitmodulesSymlink)
        );
        assert_eq!(
            check(ObjectKind::Tree, &tree(&[("120000", b"GITMOD~1")])),
            Err(FsckProblem::GitmodulesSymlink)
        );
        assert!(matches!(
            check(ObjectKind::Tree, &tree(&[("40000", b"")])),
            Err(FsckProblem::BadTree { .. })
        ));
        assert!(matches!(
            check(ObjectKind::Tree, b"100644 a\0short"),
            Err(FsckProblem::BadTree { .. })
        ));
        let mut null = tree(&[("100644", b"a")]);
        let n = null.len();
        null[n - 20..].fill(0);
        assert_eq!(check(ObjectKind::Tree, &null), Err(FsckProblem::NullSha1));
    }

    #[test]
    fn tags() {
        let good = b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntype blob\ntag v1\ntagger T <t@example.com> 1700000000 +0000\n\nmsg\n";
        assert_eq!(check(ObjectKind::Tag, good), Ok(()));
        assert_eq!(
            check(
                ObjectKind::Tag,
                b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntype blub\ntag v1\n\n"
            ),
            Err(FsckProblem::BadType)
        );
        // no tagger: only an info in git
        assert_eq!(
            check(
                ObjectKind::Tag,
                b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntype blob\ntag v1\n\n"
            ),
            Ok(())
        );
        assert_eq!(
            check(
                ObjectKind::Tag,
                b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntag v1\n\n"
            ),
            Err(FsckProblem::MissingTypeEntry)
        );
    }

    #[test]
    fn trees_name_special_blobs() {
        let mut found = Vec::new();
        let data = tree(&[
            ("100644", b".GITATTRIBUTES"),
            ("120000", b".gitattributes"),
            ("100644", b".gitmodules"),
            ("100644", b"a\\.gitmodules"),
            ("100644", b"gitmodules"),
        ]);
        check_object_collecting(
            &ObjectId::NULL_SHA1,
            ObjectKind::Tree,
            &data,
            &FsckOptions::default(),
            &mut found,
        )
        .unwrap();
        let files: Vec<SpecialFile> = found.iter().map(|f| f.file).collect();
        assert_eq!(
            files,
            [
                SpecialFile::Gitattributes,
                SpecialFile::Gitmodules,
                SpecialFile::Gitmodules
            ]
        );
    }

    fn config_entries(data: &[u8], bytes: ConfigBytes) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        parse_config(data, bytes, &mut |var, value| {
            out.push((lossy(var), value.map(lossy)));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn config_parser_reads_what_git_reads() {
        let entries = config_entries(
            b"# c\n[Sub \"A.b\"] Key = \" x \" y ; c\n\tflag\n[s.T]\r\nv = a\\\n b\\t\n[bad",
            ConfigBytes::Blob,
        );
        let want = [
            ("sub.A.b.key", Some(" x  y")),
            ("sub.A.b.flag", None),
            ("s.t.v", Some("a b\t")),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(entries, want);
        // 0xff ends a blob for git; a file goes on
        let data = b"[a]\nx = 1\xff\ny = 2\n";
        assert_eq!(config_entries(data, ConfigBytes::Blob).len(), 1);
        assert_eq!(config_entries(data, ConfigBytes::File).len(), 2);
        // a byte order mark is skipped in files only
        assert!(config_entries(b"\xef\xbb\xbf[a]\nx = 1\n", ConfigBytes::Blob).is_empty());
        assert_eq!(
            config_entries(b"\xef\xbb\xbf[a]\nx = 1\n", ConfigBytes::File).len(),
            1
        );
    }

    #[test]
    fn urls_normalize_like_git() {
        let norm = |u: &str| url_normalize(u.as_bytes()).map(|n| String::from_utf8(n).unwrap());
        assert_eq!(
            norm("HTTP://User%41@Example.COM:0080/a/./b/../c%7e?x=%41&y=%2f#f").as_deref(),
            Some("http://UserA@example.com/a/c~?x=A&y=%2F#f")
        );
        assert_eq!(norm("https://h:443").as_deref(), Some("https://h/"));
        assert_eq!(
            norm("https://h/a b\n").as_deref(),
            Some("https://h/a%20b%0A")
        );
        assert_eq!(norm("https://h/.."), None);
        assert_eq!(norm("https://h:65536/"), None);
        assert_eq!(norm("file://:1/"), None);
        assert_eq!(norm("file:///x").as_deref(), Some("file:///x"));
        assert!(!submodule_url_ok(b"https://h/a%0ab"));
        assert!(submodule_url_ok(b"https://h/a%250ab"));
        assert!(!submodule_name_ok(b"x/.."));
        assert!(submodule_name_ok(b"x/..y"));
    }

    #[test]
    fn links() {
        let mut out = Vec::new();
        object_links(ObjectKind::Commit, GOOD_COMMIT, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, ObjectKind::Tree);
        assert_eq!(out[1].kind, ObjectKind::Commit);
        out.clear();
        object_links(
            ObjectKind::Tree,
            &tree(&[
                ("100644", b"a"),
                ("160000", b"sub"),
                ("40000", b"t"),
                ("120000", b"z"),
            ]),
            &mut out,
        )
        .unwrap();
        let kinds: Vec<_> = out.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [ObjectKind::Blob, ObjectKind::Tree, ObjectKind::Blob]
        );
    }
}
