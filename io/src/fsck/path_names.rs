//! Tree entry names that HFS+ or NTFS would take for `.git`, `.gitmodules`
//! or `.gitattributes`, following C git's `utf8.c` (`next_hfs_char`,
//! `is_hfs_dot_generic`) and `path.c` (`is_ntfs_dotgit`,
//! `is_ntfs_dot_generic`).

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
pub(super) fn is_hfs_dot(name: &[u8], needle: &[u8]) -> bool {
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
pub(super) fn is_ntfs_dotgit(name: &[u8]) -> bool {
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
pub(super) fn is_ntfs_dot_generic(
    name: &[u8],
    dotgit_name: &[u8],
    shortname_prefix: &[u8],
) -> bool {
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
