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
//! Not checked (yet): the contents of `.gitmodules` and `.gitattributes`
//! blobs (git's `gitmodules*`/`gitattributes*` message ids), which need the
//! tree that names the blob and a config parser.

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

/// Check one object the way `git index-pack --strict` does. Blobs always pass.
pub fn check_object(
    oid: &ObjectId,
    kind: ObjectKind,
    data: &[u8],
    opts: &FsckOptions,
) -> Result<(), FsckError> {
    let result = match kind {
        ObjectKind::Blob => Ok(()),
        ObjectKind::Commit => check_commit(data),
        ObjectKind::Tree => check_tree(data, opts),
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
pub fn object_links(kind: ObjectKind, data: &[u8], out: &mut Vec<Link>) -> Result<(), LinkParseError> {
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
    let raw = buf.get(oid_start..oid_start + 20).ok_or("too-short tree file")?;
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
        value = value.saturating_mul(10).saturating_add(u128::from(at(p) - b'0'));
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
        let eol = data[p..].iter().position(|b| *b == b'\n').ok_or(FsckProblem::BadGpgsig)?;
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

fn check_tree(data: &[u8], opts: &FsckOptions) -> Result<(), FsckProblem> {
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
        if (is_hfs_dot(name, b"gitmodules") || is_ntfs_dot_generic(name, b"gitmodules", b"gi7eba")) && is_link {
            gitmodules_symlink = true;
        }
        let mut search = name;
        while let Some(b) = search.iter().position(|c| *c == b'\\') {
            search = &search[b + 1..];
            if dotgit.is_none() && is_ntfs_dotgit(search) {
                dotgit = Some(name);
            }
            if is_link && is_ntfs_dot_generic(search, b"gitmodules", b"gi7eba") {
                gitmodules_symlink = true;
            }
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
fn verify_ordered<'a>(mode1: u32, name1: &'a [u8], mode2: u32, name2: &'a [u8], candidates: &mut Vec<&'a [u8]>) -> Order {
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
        if !at(1).eq_ignore_ascii_case(&b'g') || !at(2).eq_ignore_ascii_case(&b'i') || !at(3).eq_ignore_ascii_case(&b't') {
            return false;
        }
        i = 4;
    } else if at(0).eq_ignore_ascii_case(&b'g') {
        if !at(1).eq_ignore_ascii_case(&b'i') || !at(2).eq_ignore_ascii_case(&b't') || at(3) != b'~' || at(4) != b'1' {
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
    if name.len() >= 8 && name[..6].eq_ignore_ascii_case(&dotgit_name[..6]) && name[6] == b'~' && (b'1'..=b'4').contains(&name[7]) {
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
        check_object(&ObjectId::NULL_SHA1, kind, data, &FsckOptions::default()).map_err(|e| e.problem)
    }

    const GOOD_COMMIT: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\nauthor A U Thor <a@example.com> 1700000000 +0000\ncommitter C <c@example.com> 1700000001 -0130\nencoding ISO-8859-1\n\nmsg\n";

    #[test]
    fn commits() {
        assert_eq!(check(ObjectKind::Commit, GOOD_COMMIT), Ok(()));
        let bad = |from: &str, to: &str| {
            let s = String::from_utf8(GOOD_COMMIT.to_vec()).unwrap().replacen(from, to, 1);
            check(ObjectKind::Commit, s.as_bytes())
        };
        assert_eq!(bad("A U Thor <", "A U Thor<"), Err(FsckProblem::MissingSpaceBeforeEmail));
        assert_eq!(bad("A U Thor ", ""), Err(FsckProblem::MissingNameBeforeEmail));
        assert_eq!(bad("1700000000", "01700000000"), Err(FsckProblem::ZeroPaddedDate));
        assert_eq!(bad("+0000", "+000"), Err(FsckProblem::BadTimezone));
        assert_eq!(bad("1700000000", "99999999999999999999"), Err(FsckProblem::BadDateOverflow));
        assert_eq!(bad("> 1700000000", ">1700000000"), Err(FsckProblem::MissingSpaceBeforeDate));
        assert_eq!(bad("tree 4b82", "tree 4x82"), Err(FsckProblem::BadTreeSha1));
        assert_eq!(bad("parent e69d", "parent e6"), Err(FsckProblem::BadParentSha1));
        assert_eq!(bad("committer", "commuter"), Err(FsckProblem::MissingCommitter));
        assert_eq!(bad("author", "author A <a@b> 1 +0000\nauthor"), Err(FsckProblem::MultipleAuthors));
        assert_eq!(bad("tree", "tee"), Err(FsckProblem::MissingTree));
        assert_eq!(bad("\n\nmsg\n", "\n\nm\0sg\n"), Err(FsckProblem::NulInCommit));
        assert_eq!(bad("\n\nmsg\n", ""), Err(FsckProblem::UnterminatedHeader));
    }

    #[test]
    fn trees() {
        assert_eq!(check(ObjectKind::Tree, &tree(&[("100644", b"a"), ("40000", b"b")])), Ok(()));
        // a.c sorts before directory a ("a/")
        assert_eq!(check(ObjectKind::Tree, &tree(&[("100644", b"a.c"), ("40000", b"a")])), Ok(()));
        assert!(matches!(
            check(ObjectKind::Tree, &tree(&[("40000", b"a"), ("100644", b"a.c")])),
            Err(FsckProblem::TreeNotSorted { .. })
        ));
        assert!(matches!(
            check(ObjectKind::Tree, &tree(&[("100644", b"a"), ("100644", b"a.c"), ("40000", b"a")])),
            Err(FsckProblem::DuplicateEntries { .. })
        ));
        for name in [&b".git"[..], b".GIT", b"git~1", b"GIT~1", b".git.", b".git ", b".g\xe2\x80\x8cit", b"x\\.git"] {
            assert!(
                matches!(check(ObjectKind::Tree, &tree(&[("40000", name)])), Err(FsckProblem::HasDotgit { .. })),
                "{name:?}"
            );
        }
        assert_eq!(check(ObjectKind::Tree, &tree(&[("40000", b".gitx")])), Ok(()));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("40000", b"..")])), Err(FsckProblem::HasDotdot));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("40000", b"a/b")])), Err(FsckProblem::FullPathname));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("040000", b"a")])), Err(FsckProblem::ZeroPaddedFilemode));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("100664", b"a")])), Ok(()));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("120000", b".gitmodules")])), Err(FsckProblem::GitmodulesSymlink));
        assert_eq!(check(ObjectKind::Tree, &tree(&[("120000", b"GITMOD~1")])), Err(FsckProblem::GitmodulesSymlink));
        assert!(matches!(check(ObjectKind::Tree, &tree(&[("40000", b"")])), Err(FsckProblem::BadTree { .. })));
        assert!(matches!(check(ObjectKind::Tree, b"100644 a\0short"), Err(FsckProblem::BadTree { .. })));
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
            check(ObjectKind::Tag, b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntype blub\ntag v1\n\n"),
            Err(FsckProblem::BadType)
        );
        // no tagger: only an info in git
        assert_eq!(
            check(ObjectKind::Tag, b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntype blob\ntag v1\n\n"),
            Ok(())
        );
        assert_eq!(
            check(ObjectKind::Tag, b"object e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\ntag v1\n\n"),
            Err(FsckProblem::MissingTypeEntry)
        );
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
            &tree(&[("100644", b"a"), ("160000", b"sub"), ("40000", b"t"), ("120000", b"z")]),
            &mut out,
        )
        .unwrap();
        let kinds: Vec<_> = out.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, [ObjectKind::Blob, ObjectKind::Tree, ObjectKind::Blob]);
    }
}
