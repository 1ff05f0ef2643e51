//! Checks of commits, trees and tags, following C git's `fsck.c`
//! (`fsck_commit`, `fsck_ident`, `fsck_tag`, `fsck_tree`,
//! `verify_headers`, `verify_ordered`) and `tree-walk.c`
//! (`decode_tree_entry`); and the links of an object as `fsck_walk`
//! follows them.

use super::gitmodules::{SpecialBlob, SpecialFile};
use super::path_names::{is_hfs_dot, is_ntfs_dot_generic, is_ntfs_dotgit};
use super::{FsckOptions, FsckProblem};
use crate::object::ObjectKind;
use crate::oid::ObjectId;

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

pub(super) fn check_commit(data: &[u8]) -> Result<(), FsckProblem> {
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

pub(super) fn check_tag(data: &[u8]) -> Result<(), FsckProblem> {
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

/// What git's `fsck_tree` notes while it walks a tree's entries, to report
/// afterwards in its order.
#[derive(Default)]
struct TreeFindings<'a> {
    null_sha1: bool,
    full_path: bool,
    empty_name: bool,
    dot: bool,
    dotdot: bool,
    dotgit: Option<&'a [u8]>,
    zero_pad: bool,
    large: Option<usize>,
    gitmodules_symlink: bool,
    duplicate: Option<&'a [u8]>,
    unsorted: Option<&'a [u8]>,
}

impl<'a> TreeFindings<'a> {
    /// The name of one entry: `.`, `..`, `.git` in any spelling a file
    /// system takes for it, and the `.gitmodules`/`.gitattributes` entries,
    /// appended to `found`.
    fn note_name(
        &mut self,
        name: &'a [u8],
        oid: ObjectId,
        is_link: bool,
        found: &mut Vec<SpecialBlob>,
    ) {
        self.full_path |= name.contains(&b'/');
        self.empty_name |= name.is_empty();
        self.dot |= name == b".";
        self.dotdot |= name == b"..";
        if self.dotgit.is_none() && (is_hfs_dot(name, b"git") || is_ntfs_dotgit(name)) {
            self.dotgit = Some(name);
        }
        self.note_gitmodules(name, true, oid, is_link, found);
        let mut search = name;
        while let Some(b) = search.iter().position(|c| *c == b'\\') {
            search = &search[b + 1..];
            if self.dotgit.is_none() && is_ntfs_dotgit(search) {
                self.dotgit = Some(name);
            }
            // after a backslash git looks for NTFS spellings only
            self.note_gitmodules(search, false, oid, is_link, found);
        }
        if !is_link
            && (is_hfs_dot(name, b"gitattributes")
                || is_ntfs_dot_generic(name, b"gitattributes", b"gi7d29"))
        {
            found.push(SpecialBlob {
                oid,
                file: SpecialFile::Gitattributes,
            });
        }
    }

    /// git remembers a `.gitmodules` entry whatever the mode (a tree or
    /// gitlink here is reported when the object is looked at:
    /// gitmodulesBlob); a symlink is reported at once (gitattributesSymlink
    /// only as an info).
    fn note_gitmodules(
        &mut self,
        search: &[u8],
        whole_name: bool,
        oid: ObjectId,
        is_link: bool,
        found: &mut Vec<SpecialBlob>,
    ) {
        let hfs = whole_name && is_hfs_dot(search, b"gitmodules");
        if !hfs && !is_ntfs_dot_generic(search, b"gitmodules", b"gi7eba") {
            return;
        }
        if is_link {
            self.gitmodules_symlink = true;
        } else {
            found.push(SpecialBlob {
                oid,
                file: SpecialFile::Gitmodules,
            });
        }
    }

    /// The first problem in the order git reports them.
    fn verdict(self, opts: &FsckOptions) -> Result<(), FsckProblem> {
        let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
        if self.gitmodules_symlink {
            // reported before the summary flags in git (during the walk)
            return Err(FsckProblem::GitmodulesSymlink);
        }
        if self.null_sha1 {
            return Err(FsckProblem::NullSha1);
        }
        if self.full_path {
            return Err(FsckProblem::FullPathname);
        }
        if self.empty_name {
            return Err(FsckProblem::EmptyName);
        }
        if self.dot {
            return Err(FsckProblem::HasDot);
        }
        if self.dotdot {
            return Err(FsckProblem::HasDotdot);
        }
        if let Some(name) = self.dotgit {
            return Err(FsckProblem::HasDotgit { name: lossy(name) });
        }
        if self.zero_pad {
            return Err(FsckProblem::ZeroPaddedFilemode);
        }
        if let Some(name) = self.duplicate {
            return Err(FsckProblem::DuplicateEntries { name: lossy(name) });
        }
        if let Some(name) = self.unsorted {
            return Err(FsckProblem::TreeNotSorted { name: lossy(name) });
        }
        if let Some(len) = self.large {
            return Err(FsckProblem::LargePathname {
                len,
                limit: opts.tree_entry_name_max_bytes,
            });
        }
        Ok(())
    }
}

pub(super) fn check_tree(
    data: &[u8],
    opts: &FsckOptions,
    found: &mut Vec<SpecialBlob>,
) -> Result<(), FsckProblem> {
    let mut findings = TreeFindings::default();
    let mut candidates: Vec<&[u8]> = Vec::new();
    let mut prev: Option<(u32, &[u8])> = None;
    let mut rest = data;
    while !rest.is_empty() {
        let entry = parse_tree_entry(rest).map_err(|reason| FsckProblem::BadTree { reason })?;
        let name = entry.name;
        let mode = u32::from(entry.mode);
        findings.null_sha1 |= entry.oid.is_null();
        findings.zero_pad |= rest[0] == b'0';
        if name.len() > opts.tree_entry_name_max_bytes {
            findings.large.get_or_insert(name.len());
        }
        findings.note_name(name, entry.oid, mode & S_IFMT == S_IFLNK, found);
        // modes other than 100644/100755/120000/40000/160000 are only an
        // info in git (badFilemode): accepted
        let _standard = matches!(mode, 0o100755 | 0o100644 | S_IFLNK | S_IFDIR | S_IFGITLINK);
        if let Some((prev_mode, prev_name)) = prev {
            match verify_ordered(prev_mode, prev_name, mode, name, &mut candidates) {
                Order::Ok => {}
                Order::Unordered => {
                    findings.unsorted.get_or_insert(name);
                }
                Order::Duplicate => {
                    findings.duplicate.get_or_insert(name);
                }
            }
        }
        prev = Some((mode, name));
        rest = &rest[entry.len..];
    }
    findings.verdict(opts)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsck::{check_object, check_object_collecting};

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
