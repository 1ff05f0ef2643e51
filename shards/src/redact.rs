//! What a client is told never includes the server's file system layout:
//! error messages that name files under the data directory (store and
//! ingest errors do, for the operator's log) are shown to clients with
//! that prefix removed.

use std::sync::OnceLock;

static DATA_DIR: OnceLock<String> = OnceLock::new();

/// Remember the data directory whose paths are hidden from clients.
pub fn set_data_dir(dir: &std::path::Path) {
    let mut s = dir.to_string_lossy().into_owned();
    while s.len() > 1 && s.ends_with('/') {
        s.pop();
    }
    let _ = DATA_DIR.set(s);
}

/// `msg` as a client may see it: paths under the data directory become
/// relative to it (`repos/OWNER/NAME.git/...`), and any other absolute
/// path is cut to its file name.
pub fn message(msg: &str) -> String {
    let mut out = match DATA_DIR.get() {
        Some(dir) if !dir.is_empty() && dir != "/" => msg.replace(&format!("{dir}/"), ""),
        _ => msg.to_string(),
    };
    if out.contains('/') {
        out = hide_absolute_paths(&out);
    }
    out
}

/// Replace each absolute path (a `/` at the start of a word followed by
/// more path) with its last component.
fn hide_absolute_paths(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find('/') {
        let at_word_start = i == 0
            || matches!(
                rest.as_bytes()[i - 1],
                b' ' | b'(' | b'"' | b'\'' | b'`' | b'=' | b':' | b'\t'
            );
        if !at_word_start {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | ','))
            .map_or(rest.len(), |e| i + e);
        let path = rest[i..end].trim_end_matches(':');
        let tail = &rest[i + path.len()..end];
        let name = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
        out.push_str(name);
        out.push_str(tail);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_hidden() {
        assert_eq!(
            hide_absolute_paths(
                "i/o error on /srv/guts/repos/a/b.git/objects/pack/tmp_pack_1: No space"
            ),
            "i/o error on tmp_pack_1: No space"
        );
        assert_eq!(
            hide_absolute_paths("refs/heads/main is fine"),
            "refs/heads/main is fine"
        );
        assert_eq!(hide_absolute_paths("(/x/y) and /z"), "(y) and z");
        assert_eq!(hide_absolute_paths("blob:limit=1/2"), "blob:limit=1/2");
    }
}
