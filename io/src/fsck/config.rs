//! git's config-file parser, as C git's `config.c` runs it over a
//! `.gitmodules` blob (`git_parse_source`, `get_next_char`,
//! `get_base_var`, `get_extended_base_var`, `parse_value`), quirks
//! included: what it reads is what git's fsck checks.

use super::FsckProblem;

pub(super) const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// How git's config parser sees bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ConfigBytes {
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
pub(super) type ConfigEntryFn<'a> = dyn FnMut(&[u8], Option<&[u8]>) -> Result<(), FsckProblem> + 'a;

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
pub(super) fn parse_config(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
