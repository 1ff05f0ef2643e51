//! The contents of `.gitmodules` and `.gitattributes` blobs, following C
//! git's `fsck.c` (`fsck_blob`, `fsck_gitmodules_fn`, `fsck_finish`) and
//! `submodule-config.c` (`check_submodule_name`, `check_submodule_url`);
//! the `.gitattributes` limits are `attr.c`'s.

use super::config::{parse_config, ConfigBytes, UTF8_BOM};
use super::url::{url_decode, url_normalize};
use super::{FsckError, FsckProblem};
use crate::object::ObjectKind;
use crate::oid::ObjectId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
