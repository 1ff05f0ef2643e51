//! pkt-line framing (gitprotocol-common): a 4-hex-digit length that counts
//! itself, then the payload. `0000` is a flush, `0001` a delimiter and
//! `0002` a response end (protocol v2); `0003` is reserved and lengths 1–3
//! can never frame a payload.
//!
//! The decoder works over a byte slice and never copies: [`decode_pkt`]
//! decodes one pkt and says how many bytes it used (or that more input is
//! needed), and [`PktReader`] walks a whole request body with a limit on the
//! number of pkts.

use crate::text;

/// Largest pkt-line, length prefix included (git's `LARGE_PACKET_MAX`).
pub const PKT_MAX_BYTES: usize = 65520;

/// Largest payload of one data pkt: [`PKT_MAX_BYTES`] less the 4-byte prefix.
pub const PKT_DATA_MAX_BYTES: usize = PKT_MAX_BYTES - 4;

/// Default limit on the number of pkts one request body may hold.
pub const REQUEST_PKTS_MAX: usize = 1_000_000;

/// The flush pkt: end of a message or section.
pub const FLUSH_PKT: &[u8; 4] = b"0000";

/// The delimiter pkt (protocol v2): separates sections of one message.
pub const DELIM_PKT: &[u8; 4] = b"0001";

/// The response-end pkt (protocol v2 over stateless transports).
pub const RESPONSE_END_PKT: &[u8; 4] = b"0002";

/// One decoded pkt-line. Data borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pkt<'a> {
    /// A data pkt; the payload as sent, trailing LF included if any.
    Data(&'a [u8]),
    /// `0000`.
    Flush,
    /// `0001`.
    Delim,
    /// `0002`.
    ResponseEnd,
}

/// Errors from decoding or encoding pkt-lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The 4-byte length prefix was not hexadecimal.
    #[error("pkt-line at byte {offset}: length prefix {prefix:?} is not 4 hex digits")]
    BadLengthHex {
        /// The prefix as received (lossy).
        prefix: String,
        /// Offset of the pkt in the input.
        offset: usize,
    },
    /// The length `0003`: reserved, and too short to hold its own prefix
    /// (`0000`–`0002` are the special pkts, everything else is at least 4).
    #[error(
        "pkt-line at byte {offset}: invalid length {len} (reserved or shorter than its own prefix)"
    )]
    ReservedLength {
        /// The decoded length.
        len: usize,
        /// Offset of the pkt in the input.
        offset: usize,
    },
    /// The length exceeds [`PKT_MAX_BYTES`].
    #[error("pkt-line at byte {offset}: length {len} exceeds the maximum {max}")]
    TooLong {
        /// The decoded length.
        len: usize,
        /// The limit, [`PKT_MAX_BYTES`].
        max: usize,
        /// Offset of the pkt in the input.
        offset: usize,
    },
    /// The input ended inside a pkt.
    #[error(
        "pkt-line at byte {offset}: truncated, {needed} bytes needed but {available} available"
    )]
    Truncated {
        /// Bytes the pkt needs (prefix included).
        needed: usize,
        /// Bytes left in the input.
        available: usize,
        /// Offset of the pkt in the input.
        offset: usize,
    },
    /// The request holds more pkts than allowed.
    #[error("request has more than {max} pkt-lines")]
    TooManyPkts {
        /// The limit in force.
        max: usize,
    },
    /// A payload to encode does not fit in one pkt.
    #[error("pkt-line payload of {len} bytes exceeds the maximum {max}")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
        /// The limit, [`PKT_DATA_MAX_BYTES`].
        max: usize,
    },
}

/// Decode one pkt from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a pkt (call again
/// with more input), or the pkt and the number of bytes it used. `offset` is
/// only used to label errors (the position of `buf` in the whole input).
pub fn decode_pkt(buf: &[u8], offset: usize) -> Result<Option<(Pkt<'_>, usize)>, PktError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = parse_len(prefix).ok_or_else(|| PktError::BadLengthHex {
        prefix: text::show(prefix),
        offset,
    })?;
    match len {
        0 => return Ok(Some((Pkt::Flush, 4))),
        1 => return Ok(Some((Pkt::Delim, 4))),
        2 => return Ok(Some((Pkt::ResponseEnd, 4))),
        3 => return Err(PktError::ReservedLength { len, offset }),
        _ => {}
    }
    if len > PKT_MAX_BYTES {
        return Err(PktError::TooLong {
            len,
            max: PKT_MAX_BYTES,
            offset,
        });
    }
    match buf.get(4..len) {
        Some(payload) => Ok(Some((Pkt::Data(payload), len))),
        None => Ok(None),
    }
}

fn parse_len(prefix: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for &c in prefix {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        len = (len << 4) | digit as usize;
    }
    Some(len)
}

/// Walks the pkts of a complete request body, counting them against a limit.
#[derive(Debug, Clone)]
pub struct PktReader<'a> {
    buf: &'a [u8],
    pos: usize,
    pkts_read: usize,
    pkts_max: usize,
}

impl<'a> PktReader<'a> {
    /// A reader over `buf` with the default limit [`REQUEST_PKTS_MAX`].
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_limit(buf, REQUEST_PKTS_MAX)
    }

    /// A reader over `buf` that refuses more than `pkts_max` pkts.
    pub fn with_limit(buf: &'a [u8], pkts_max: usize) -> Self {
        PktReader {
            buf,
            pos: 0,
            pkts_read: 0,
            pkts_max,
        }
    }

    /// The next pkt, `Ok(None)` at the clean end of the input, or an error
    /// (a pkt cut short by the end of input is [`PktError::Truncated`]).
    pub fn next_pkt(&mut self) -> Result<Option<Pkt<'a>>, PktError> {
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        match decode_pkt(rest, self.pos)? {
            Some((pkt, used)) => {
                if self.pkts_read >= self.pkts_max {
                    return Err(PktError::TooManyPkts { max: self.pkts_max });
                }
                self.pkts_read += 1;
                self.pos += used;
                Ok(Some(pkt))
            }
            None => Err(PktError::Truncated {
                needed: truncated_need(rest),
                available: rest.len(),
                offset: self.pos,
            }),
        }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Number of pkts read so far.
    pub fn pkts_read(&self) -> usize {
        self.pkts_read
    }
}

/// Decodes the pkts of a request body that arrives in pieces, counting
/// them against a limit and labelling errors with their offset in the
/// whole body. The caller keeps the bytes of a pkt not yet complete (at
/// most [`PKT_MAX_BYTES`]) and passes them again with the next piece, so
/// nothing but one partial pkt is ever buffered.
#[derive(Debug, Clone)]
pub struct PktFeed {
    /// Offset in the whole body of the next undecoded byte.
    offset: usize,
    pkts_read: usize,
    pkts_max: usize,
}

impl PktFeed {
    /// A feed that refuses more than `pkts_max` pkts.
    pub fn new(pkts_max: usize) -> Self {
        PktFeed {
            offset: 0,
            pkts_read: 0,
            pkts_max,
        }
    }

    /// The next whole pkt at the front of `input` and the bytes it used,
    /// or `Ok(None)` if `input` holds only part of one.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<Option<(Pkt<'a>, usize)>, PktError> {
        match decode_pkt(input, self.offset)? {
            Some((pkt, used)) => {
                self.count()?;
                self.offset += used;
                Ok(Some((pkt, used)))
            }
            None => Ok(None),
        }
    }

    /// Count one pkt consumed without [`PktFeed::next`] (`used` bytes).
    pub fn consume(&mut self, used: usize) -> Result<(), PktError> {
        self.count()?;
        self.offset += used;
        Ok(())
    }

    fn count(&mut self) -> Result<(), PktError> {
        if self.pkts_read >= self.pkts_max {
            return Err(PktError::TooManyPkts { max: self.pkts_max });
        }
        self.pkts_read += 1;
        Ok(())
    }

    /// The error for a body that ends with `rest`, part of a pkt.
    pub fn truncated(&self, rest: &[u8]) -> PktError {
        PktError::Truncated {
            needed: truncated_need(rest),
            available: rest.len(),
            offset: self.offset,
        }
    }

    /// Number of pkts decoded so far.
    pub fn pkts_read(&self) -> usize {
        self.pkts_read
    }
}

/// How many bytes a truncated pkt at the front of `rest` needs.
fn truncated_need(rest: &[u8]) -> usize {
    rest.get(..4).and_then(parse_len).unwrap_or(4).max(4)
}

/// Strip one trailing LF, as git's `PACKET_READ_CHOMP_NEWLINE` does.
pub fn strip_lf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// The 4-byte length prefix of a data pkt with a `payload_len`-byte payload.
///
/// Fails if the payload does not fit in one pkt.
pub fn pkt_header(payload_len: usize) -> Result<[u8; 4], PktError> {
    if payload_len > PKT_DATA_MAX_BYTES {
        return Err(PktError::PayloadTooLong {
            len: payload_len,
            max: PKT_DATA_MAX_BYTES,
        });
    }
    Ok(hex4(payload_len + 4))
}

pub(crate) fn hex4(value: usize) -> [u8; 4] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert!(value <= 0xffff);
    [
        DIGITS[(value >> 12) & 0xf],
        DIGITS[(value >> 8) & 0xf],
        DIGITS[(value >> 4) & 0xf],
        DIGITS[value & 0xf],
    ]
}

/// Append a data pkt carrying `payload` to `out`.
pub fn write_data(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), PktError> {
    out.extend_from_slice(&pkt_header(payload.len())?);
    out.extend_from_slice(payload);
    Ok(())
}

/// Append a data pkt made of several pieces (no intermediate copy).
pub fn write_data_parts(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), PktError> {
    let len = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&pkt_header(len)?);
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Append a flush pkt (`0000`).
pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(FLUSH_PKT);
}

/// Append a delimiter pkt (`0001`).
pub fn write_delim(out: &mut Vec<u8>) {
    out.extend_from_slice(DELIM_PKT);
}

/// Append a response-end pkt (`0002`).
pub fn write_response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(RESPONSE_END_PKT);
}

/// Append a data pkt for a line the server wrote itself (short, known to
/// fit). Oversized input is cut rather than allowed to break framing.
pub(crate) fn write_line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len <= PKT_DATA_MAX_BYTES, "server line of {len} bytes");
    let len = len.min(PKT_DATA_MAX_BYTES);
    out.extend_from_slice(&hex4(len + 4));
    let mut left = len;
    for part in parts {
        let take = part.len().min(left);
        out.extend_from_slice(&part[..take]);
        left -= take;
    }
}

/// A complete `ERR <msg>\n` pkt, which tells a git client the request
/// failed (it prints the message and stops). Overlong messages are cut to
/// fit one pkt; a LF inside the message is replaced by a space.
pub fn err_pkt(msg: &str) -> Vec<u8> {
    let msg = text::truncate_str(msg, PKT_DATA_MAX_BYTES - "ERR \n".len());
    let mut out = Vec::with_capacity(msg.len() + 9);
    out.extend_from_slice(&hex4(msg.len() + 9));
    out.extend_from_slice(b"ERR ");
    out.extend(msg.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &[u8]) -> Result<Vec<Pkt<'_>>, PktError> {
        let mut reader = PktReader::new(buf);
        let mut out = Vec::new();
        while let Some(pkt) = reader.next_pkt()? {
            out.push(pkt);
        }
        Ok(out)
    }

    #[test]
    fn decodes_specials_and_data() {
        let pkts = all(b"0006a\n00000001000200040009done\n").unwrap();
        assert_eq!(
            pkts,
            vec![
                Pkt::Data(b"a\n"),
                Pkt::Flush,
                Pkt::Delim,
                Pkt::ResponseEnd,
                Pkt::Data(b""),
                Pkt::Data(b"done\n"),
            ]
        );
    }

    #[test]
    fn uppercase_hex_length_is_accepted() {
        assert_eq!(all(b"000Ahello\n").unwrap(), vec![Pkt::Data(b"hello\n")]);
    }

    #[test]
    fn bad_hex_is_rejected() {
        assert!(matches!(
            all(b"00g4"),
            Err(PktError::BadLengthHex { offset: 0, .. })
        ));
        assert!(matches!(
            all(b"0000 x00"),
            Err(PktError::BadLengthHex { offset: 4, .. })
        ));
        assert!(matches!(all(b"+004"), Err(PktError::BadLengthHex { .. })));
    }

    #[test]
    fn reserved_length_is_rejected() {
        assert_eq!(
            all(b"0003"),
            Err(PktError::ReservedLength { len: 3, offset: 0 })
        );
    }

    #[test]
    fn overlong_is_rejected() {
        assert_eq!(
            all(b"fff1"),
            Err(PktError::TooLong {
                len: 0xfff1,
                max: PKT_MAX_BYTES,
                offset: 0
            })
        );
        assert!(matches!(all(b"ffff"), Err(PktError::TooLong { .. })));
    }

    #[test]
    fn maximum_length_is_accepted() {
        let mut buf = b"fff0".to_vec();
        buf.resize(PKT_MAX_BYTES, b'x');
        let pkts = all(&buf).unwrap();
        assert_eq!(pkts.len(), 1);
        assert!(matches!(pkts[0], Pkt::Data(d) if d.len() == PKT_DATA_MAX_BYTES));
    }

    #[test]
    fn truncated_is_rejected() {
        assert_eq!(
            all(b"000ahel"),
            Err(PktError::Truncated {
                needed: 10,
                available: 7,
                offset: 0
            })
        );
        assert!(matches!(all(b"00"), Err(PktError::Truncated { .. })));
        assert!(matches!(
            all(b"0000000"),
            Err(PktError::Truncated { offset: 4, .. })
        ));
    }

    #[test]
    fn incremental_decode_asks_for_more() {
        assert_eq!(decode_pkt(b"", 0), Ok(None));
        assert_eq!(decode_pkt(b"000", 0), Ok(None));
        assert_eq!(decode_pkt(b"0009don", 0), Ok(None));
        assert_eq!(
            decode_pkt(b"0009done\nrest", 0),
            Ok(Some((Pkt::Data(b"done\n"), 9)))
        );
    }

    #[test]
    fn pkt_count_limit() {
        let mut reader = PktReader::with_limit(b"000000000000", 2);
        assert_eq!(reader.next_pkt(), Ok(Some(Pkt::Flush)));
        assert_eq!(reader.next_pkt(), Ok(Some(Pkt::Flush)));
        assert_eq!(reader.next_pkt(), Err(PktError::TooManyPkts { max: 2 }));
    }

    #[test]
    fn encode_round_trip() {
        let mut out = Vec::new();
        write_data(&mut out, b"want x\n").unwrap();
        write_delim(&mut out);
        write_data_parts(&mut out, &[b"a", b"bc"]).unwrap();
        write_response_end(&mut out);
        write_flush(&mut out);
        assert_eq!(out, b"000bwant x\n00010007abc00020000");
        assert_eq!(
            all(&out).unwrap(),
            vec![
                Pkt::Data(b"want x\n"),
                Pkt::Delim,
                Pkt::Data(b"abc"),
                Pkt::ResponseEnd,
                Pkt::Flush
            ]
        );
    }

    #[test]
    fn encode_rejects_oversized_payload() {
        let big = vec![0u8; PKT_DATA_MAX_BYTES + 1];
        let mut out = Vec::new();
        assert_eq!(
            write_data(&mut out, &big),
            Err(PktError::PayloadTooLong {
                len: PKT_DATA_MAX_BYTES + 1,
                max: PKT_DATA_MAX_BYTES
            })
        );
        assert!(out.is_empty());
        assert!(write_data(&mut out, &big[1..]).is_ok());
        assert_eq!(&out[..4], b"fff0");
    }

    #[test]
    fn err_pkt_format() {
        assert_eq!(err_pkt("no such repo"), b"0015ERR no such repo\n");
        assert_eq!(err_pkt("a\nb"), b"000cERR a b\n");
        let long = "é".repeat(40_000);
        let pkt = err_pkt(&long);
        assert!(pkt.len() <= PKT_MAX_BYTES);
        let (parsed, used) = decode_pkt(&pkt, 0).unwrap().unwrap();
        assert_eq!(used, pkt.len());
        let Pkt::Data(data) = parsed else { panic!() };
        assert!(std::str::from_utf8(data).is_ok());
    }

    #[test]
    fn strip_lf_strips_one() {
        assert_eq!(strip_lf(b"done\n"), b"done");
        assert_eq!(strip_lf(b"done\n\n"), b"done\n");
        assert_eq!(strip_lf(b"done"), b"done");
        assert_eq!(strip_lf(b""), b"");
    }
}
