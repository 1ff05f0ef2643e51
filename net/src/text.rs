//! Small helpers shared by the parsers: showing untrusted bytes in errors.

/// Bytes of an offending value kept in an error message; the rest is cut so
/// that a hostile request cannot make the error (or the log line) large.
pub(crate) const SHOWN_VALUE_MAX_BYTES: usize = 128;

/// A printable, bounded rendering of untrusted bytes for error messages.
pub(crate) fn show(bytes: &[u8]) -> String {
    let cut = bytes.len().min(SHOWN_VALUE_MAX_BYTES);
    let mut shown = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        shown.push_str("...");
    }
    shown
}

/// Cut `text` to at most `max` bytes on a char boundary.
pub(crate) fn truncate_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
