//! URL decoding and normalisation as C git does it for submodule URLs:
//! `url.c` (`url_decode`), `urlmatch.c` (`url_normalize`,
//! `append_normalized_escapes`) and `hex.h` (`hex2chr`).

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
pub(super) fn url_decode(url: &[u8]) -> Vec<u8> {
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

/// Position of the first byte of `url[from..]` that is in `set`, or the end.
fn find_any(url: &[u8], from: usize, set: &[u8]) -> usize {
    from + url[from..]
        .iter()
        .position(|b| set.contains(b))
        .unwrap_or(url.len() - from)
}

/// The port (the digits after the colon) as `url_normalize` writes it:
/// leading zeros and the scheme's default port dropped. None if it is not
/// a port number.
fn append_port(norm: &mut Vec<u8>, digits: &[u8]) -> Option<()> {
    let mut zeros = digits.iter().take_while(|d| **d == b'0').count();
    if zeros == digits.len() && zeros > 0 {
        zeros -= 1;
    }
    let port = &digits[zeros..];
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
    Some(())
}

/// The path from `url[p..]` as `url_normalize` writes it: %-escapes
/// normalized, `.` and `..` segments resolved. Returns where the query or
/// fragment starts; None where git gives up.
fn append_path(norm: &mut Vec<u8>, url: &[u8], mut p: usize) -> Option<usize> {
    let path_off = norm.len();
    norm.push(b'/');
    if url.get(p) == Some(&b'/') {
        p += 1;
    }
    loop {
        let seg_start = norm.len();
        let next_slash = find_any(url, p, b"/?#");
        let mut skip_add_slash = false;
        if !append_normalized_escapes(norm, &url[p..next_slash]) {
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
    Some(p)
}

/// git's `url_normalize` (urlmatch.c), for what it accepts and what it
/// makes: lowercased scheme and host, normalized %-escapes, default port
/// dropped, `.`/`..` path segments resolved. None where git gives NULL.
pub(super) fn url_normalize(url: &[u8]) -> Option<Vec<u8>> {
    let span = |from: usize, set: &[u8]| url[from..].iter().take_while(|b| set.contains(b)).count();
    let find_any = |from: usize, set: &[u8]| find_any(url, from, set);
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
        append_port(&mut norm, &url[colon + 1..slash])?;
        p = slash;
    }

    // path, dot segments resolved
    let p = append_path(&mut norm, url, p)?;

    // query and fragment
    if p < url.len() && !append_normalized_escapes(&mut norm, &url[p..]) {
        return None;
    }
    Some(norm)
}
