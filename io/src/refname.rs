//! Ref name rules: what `git check-ref-format` accepts, plus our own limits.
//!
//! [`check_git_ref_format`] is a byte-for-byte port of C git's
//! `check_refname_format` (refs.c) without `--allow-onelevel`,
//! `--refspec-pattern` or `--normalize`. [`check_ref_name`] adds what a
//! ref stored by this node must also satisfy: it lives under `refs/` and is
//! at most [`REF_NAME_MAX_BYTES`] long. `HEAD` is not a ref name here; the
//! caller handles it.

/// The longest ref name we store, in bytes. Git has no hard limit, but
/// every filesystem and pkt-line (65516 bytes of payload) has one.
pub const REF_NAME_MAX_BYTES: usize = 4096;

/// The prefix every stored ref name starts with.
pub const REF_NAME_PREFIX: &str = "refs/";

/// Why a ref name was refused. Every variant carries the offending name
/// (lossily decoded when it is not UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefNameError {
    /// The name is empty.
    #[error("ref name is empty")]
    Empty,
    /// The name is longer than [`REF_NAME_MAX_BYTES`].
    #[error("ref name {name:?} is {len_bytes} bytes, longer than the limit of {limit_bytes}")]
    TooLong {
        /// The offending name (truncated to the limit).
        name: String,
        /// Its length in bytes.
        len_bytes: usize,
        /// The limit it broke.
        limit_bytes: usize,
    },
    /// The name does not start with `refs/`.
    #[error("ref name {name:?} is not under refs/")]
    NotUnderRefs {
        /// The offending name.
        name: String,
    },
    /// The name has a single component (git requires at least two).
    #[error("ref name {name:?} has a single component")]
    OneLevel {
        /// The offending name.
        name: String,
    },
    /// The name is exactly `@`.
    #[error("ref name {name:?} is the single character '@'")]
    LoneAt {
        /// The offending name.
        name: String,
    },
    /// The name starts with `/` or contains `//`.
    #[error("ref name {name:?} has an empty component (leading '/' or '//')")]
    EmptyComponent {
        /// The offending name.
        name: String,
    },
    /// The name ends with `/`.
    #[error("ref name {name:?} ends with '/'")]
    EndsWithSlash {
        /// The offending name.
        name: String,
    },
    /// The name ends with `.`.
    #[error("ref name {name:?} ends with '.'")]
    EndsWithDot {
        /// The offending name.
        name: String,
    },
    /// A component starts with `.`.
    #[error("ref name {name:?} has a component starting with '.'")]
    ComponentStartsWithDot {
        /// The offending name.
        name: String,
    },
    /// A component ends with `.lock`.
    #[error("ref name {name:?} has a component ending with '.lock'")]
    ComponentEndsWithLock {
        /// The offending name.
        name: String,
    },
    /// The name contains `..`.
    #[error("ref name {name:?} contains '..'")]
    DoubleDot {
        /// The offending name.
        name: String,
    },
    /// The name contains `@{`.
    #[error("ref name {name:?} contains '@{{'")]
    AtBrace {
        /// The offending name.
        name: String,
    },
    /// The name contains an ASCII control character (below 0x20, or DEL).
    #[error("ref name {name:?} contains control character {byte:#04x}")]
    ControlChar {
        /// The offending name.
        name: String,
        /// The control character.
        byte: u8,
    },
    /// The name contains a space.
    #[error("ref name {name:?} contains a space")]
    Space {
        /// The offending name.
        name: String,
    },
    /// The name contains one of `~ ^ : ? * [ \`.
    #[error("ref name {name:?} contains the forbidden character {character:?}")]
    ForbiddenChar {
        /// The offending name.
        name: String,
        /// The forbidden character.
        character: char,
    },
}

/// Check a ref name for storage: git's rules ([`check_git_ref_format`]),
/// the `refs/` prefix and the [`REF_NAME_MAX_BYTES`] limit.
pub fn check_ref_name(name: &[u8]) -> Result<(), RefNameError> {
    if name.len() > REF_NAME_MAX_BYTES {
        return Err(RefNameError::TooLong {
            name: lossy(&name[..REF_NAME_MAX_BYTES]),
            len_bytes: name.len(),
            limit_bytes: REF_NAME_MAX_BYTES,
        });
    }
    check_git_ref_format(name)?;
    if !name.starts_with(REF_NAME_PREFIX.as_bytes()) {
        return Err(RefNameError::NotUnderRefs { name: lossy(name) });
    }
    Ok(())
}

/// Check a ref name exactly as `git check-ref-format <name>` does (no
/// options): at least two components, none empty, none starting with `.`
/// or ending with `.lock`; no `..`, `@{`, control characters, space, or any
/// of `~ ^ : ? * [ \`; not ending with `.`; not `@`.
///
/// Bytes of 0x80 and above are allowed, as in git; a NUL byte (which a C
/// string cannot hold) is refused as a control character.
pub fn check_git_ref_format(name: &[u8]) -> Result<(), RefNameError> {
    if name.is_empty() {
        return Err(RefNameError::Empty);
    }
    if name == b"@" {
        return Err(RefNameError::LoneAt { name: lossy(name) });
    }
    let mut components = 0usize;
    let mut rest = name;
    loop {
        let len = check_component(name, rest)?;
        components += 1;
        if len == rest.len() {
            break;
        }
        // rest[len] is '/', and a component follows it.
        rest = &rest[len + 1..];
        if rest.is_empty() {
            return Err(RefNameError::EndsWithSlash { name: lossy(name) });
        }
    }
    if name.last() == Some(&b'.') {
        return Err(RefNameError::EndsWithDot { name: lossy(name) });
    }
    if components < 2 {
        return Err(RefNameError::OneLevel { name: lossy(name) });
    }
    Ok(())
}

/// Check the component at the start of `rest` (up to the next `/` or the
/// end); return its length. `full` is the whole name, for errors.
fn check_component(full: &[u8], rest: &[u8]) -> Result<usize, RefNameError> {
    let mut last = 0u8;
    let mut len = rest.len();
    for (i, &ch) in rest.iter().enumerate() {
        match ch {
            b'/' => {
                len = i;
                break;
            }
            b'.' if last == b'.' => return Err(RefNameError::DoubleDot { name: lossy(full) }),
            b'{' if last == b'@' => return Err(RefNameError::AtBrace { name: lossy(full) }),
            0..=0x1f | 0x7f => {
                return Err(RefNameError::ControlChar {
                    name: lossy(full),
                    byte: ch,
                })
            }
            b' ' => return Err(RefNameError::Space { name: lossy(full) }),
            b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\' => {
                return Err(RefNameError::ForbiddenChar {
                    name: lossy(full),
                    character: ch as char,
                })
            }
            _ => {}
        }
        last = ch;
    }
    let component = &rest[..len];
    if component.is_empty() {
        return Err(RefNameError::EmptyComponent { name: lossy(full) });
    }
    if component[0] == b'.' {
        return Err(RefNameError::ComponentStartsWithDot { name: lossy(full) });
    }
    if component.ends_with(b".lock") {
        return Err(RefNameError::ComponentEndsWithLock { name: lossy(full) });
    }
    Ok(len)
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Names chosen to hit every rule and its edges. Each is checked against
    /// the real `git check-ref-format`.
    const TABLE: &[&[u8]] = &[
        b"refs/heads/main",
        b"refs/heads/feature/x",
        b"refs/tags/v1.0",
        b"refs/heads/a.b",
        b"refs/heads/a..b",
        b"refs/heads/.hidden",
        b"refs/heads/a/.b",
        b"refs/heads/a.",
        b"refs/heads/a/",
        b"refs/heads//a",
        b"/refs/heads/a",
        b"refs/heads/a.lock",
        b"refs/heads/a.lock/b",
        b"refs/heads/.lock",
        b"refs/heads/lock",
        b"refs/heads/a.lockx",
        b"refs/heads/alock",
        b"refs/heads/a@{b",
        b"refs/heads/a@b",
        b"refs/heads/a{b",
        b"refs/heads/@",
        b"refs/heads/@{",
        b"@",
        b"@/x",
        b"refs/@/x",
        b"refs/heads/a b",
        b"refs/heads/a\tb",
        b"refs/heads/a\x01b",
        b"refs/heads/a\x1fb",
        b"refs/heads/a\x7fb",
        b"refs/heads/a~1",
        b"refs/heads/a^",
        b"refs/heads/a:b",
        b"refs/heads/a?",
        b"refs/heads/a*",
        b"refs/heads/a[b",
        b"refs/heads/a]b",
        b"refs/heads/a\\b",
        b"refs/heads/caf\xc3\xa9",
        b"refs/heads/\xff\xfe",
        b"refs",
        b"refs/",
        b"refs/x",
        b"heads/main",
        b"main",
        b"HEAD",
        b"refs/heads/-dash",
        b"refs/heads/a-",
        b"refs/heads/a_b+c=d,e;f'g\"h",
        b"refs/heads/a!b#c$d%e&f(g)h",
        b"refs/heads/a/b/c/d/e/f/g",
        b"refs/heads/...",
        b"refs/heads/a/..",
        b"refs/heads/a/../b",
        b"refs/heads/.",
        b"refs/./heads",
        b"./refs/heads",
        b"refs/heads/a./b",
        b"refs/heads/a.b.c",
        b"refs/heads/@@",
        b"refs/heads/{}",
        b"refs/heads/}@{",
        b"refs/heads/x.lock.y",
        b"refs/heads/0123456789abcdef0123456789abcdef01234567",
        b"refs.lock/x",
        b"a/b",
        b"x//",
        b"refs/heads/a/",
    ];

    fn git_accepts(name: &[u8]) -> bool {
        let status = guts_testkit::git(&std::env::temp_dir())
            .arg("check-ref-format")
            .arg(std::ffi::OsStr::from_bytes(name))
            .status()
            .unwrap();
        // 0: valid, 1: invalid; anything else is a harness problem.
        match status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("git check-ref-format exited with {other:?}"),
        }
    }

    #[test]
    fn matches_git_check_ref_format() {
        let mut mismatches = Vec::new();
        for &name in TABLE {
            let git = git_accepts(name);
            let ours = check_git_ref_format(name);
            if git != ours.is_ok() {
                mismatches.push(format!(
                    "{:?}: git {}, ours {:?}",
                    String::from_utf8_lossy(name),
                    if git { "accepts" } else { "refuses" },
                    ours
                ));
            }
            // Our storage rule is git's plus the refs/ prefix.
            let stored = check_ref_name(name).is_ok();
            assert_eq!(
                stored,
                git && name.starts_with(b"refs/"),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn reports_the_rule_broken() {
        type IsExpected = fn(&RefNameError) -> bool;
        let cases: &[(&[u8], IsExpected)] = &[
            (b"refs/heads/.a", |e| {
                matches!(e, RefNameError::ComponentStartsWithDot { .. })
            }),
            (b"refs/heads/a..b", |e| {
                matches!(e, RefNameError::DoubleDot { .. })
            }),
            (b"refs/heads/a\x01", |e| {
                matches!(e, RefNameError::ControlChar { byte: 1, .. })
            }),
            (b"refs/heads/a\x7f", |e| {
                matches!(e, RefNameError::ControlChar { byte: 0x7f, .. })
            }),
            (b"refs/heads/a\0", |e| {
                matches!(e, RefNameError::ControlChar { byte: 0, .. })
            }),
            (b"refs/heads/a b", |e| {
                matches!(e, RefNameError::Space { .. })
            }),
            (b"refs/heads/a~", |e| {
                matches!(e, RefNameError::ForbiddenChar { character: '~', .. })
            }),
            (b"refs/heads/a\\", |e| {
                matches!(
                    e,
                    RefNameError::ForbiddenChar {
                        character: '\\',
                        ..
                    }
                )
            }),
            (b"refs/heads/a/", |e| {
                matches!(e, RefNameError::EndsWithSlash { .. })
            }),
            (b"refs/heads/a.", |e| {
                matches!(e, RefNameError::EndsWithDot { .. })
            }),
            (b"refs/heads/a.lock", |e| {
                matches!(e, RefNameError::ComponentEndsWithLock { .. })
            }),
            (b"refs/heads/a@{1}", |e| {
                matches!(e, RefNameError::AtBrace { .. })
            }),
            (b"@", |e| matches!(e, RefNameError::LoneAt { .. })),
            (b"refs//a", |e| {
                matches!(e, RefNameError::EmptyComponent { .. })
            }),
            (b"/refs/a", |e| {
                matches!(e, RefNameError::EmptyComponent { .. })
            }),
            (b"heads/main", |e| {
                matches!(e, RefNameError::NotUnderRefs { .. })
            }),
            (b"main", |e| matches!(e, RefNameError::OneLevel { .. })),
            (b"", |e| matches!(e, RefNameError::Empty)),
        ];
        for (name, is_expected) in cases {
            let err = check_ref_name(name).unwrap_err();
            assert!(
                is_expected(&err),
                "{:?}: got {err:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn length_limit() {
        let mut name = b"refs/heads/".to_vec();
        name.resize(REF_NAME_MAX_BYTES, b'a');
        assert!(check_ref_name(&name).is_ok());
        name.push(b'a');
        match check_ref_name(&name) {
            Err(RefNameError::TooLong {
                len_bytes,
                limit_bytes,
                ..
            }) => {
                assert_eq!(len_bytes, REF_NAME_MAX_BYTES + 1);
                assert_eq!(limit_bytes, REF_NAME_MAX_BYTES);
            }
            other => panic!("expected TooLong, got {other:?}"),
        }
    }
}
