//! Side-band multiplexing (gitprotocol-pack, "side-band, side-band-64k"):
//! each pkt's first payload byte names a band — 1 pack data, 2 progress
//! text, 3 a fatal error — and the rest is that band's bytes.
//!
//! `side-band` allows pkts of at most 1000 bytes, `side-band-64k` (and
//! every protocol v2 `packfile` section) at most 65520. Pack data is framed
//! without copying: [`frames`] splits a [`Bytes`] into (header, payload)
//! pairs whose payloads are slices of the original buffer, ready for a
//! vectored write.

use bytes::Bytes;

use crate::pktline::{self, Pkt};

/// Bytes of a side-band frame header: 4 length digits and the band byte.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Largest pkt under the `side-band` capability, prefix included.
pub const SIDEBAND_PKT_MAX_BYTES: usize = 1000;

/// Largest pkt under `side-band-64k`, prefix included.
pub const SIDEBAND_64K_PKT_MAX_BYTES: usize = pktline::PKT_MAX_BYTES;

/// A side-band channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Band {
    /// Band 1: pack data (or, for report-status, the status pkts).
    Data = 1,
    /// Band 2: progress messages, shown on the client's stderr.
    Progress = 2,
    /// Band 3: a fatal error message; the client stops.
    Error = 3,
}

impl Band {
    /// The band for a byte, if it names one.
    pub fn from_byte(byte: u8) -> Option<Band> {
        match byte {
            1 => Some(Band::Data),
            2 => Some(Band::Progress),
            3 => Some(Band::Error),
            _ => None,
        }
    }
}

/// Which side-band capability the client negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SidebandMode {
    /// `side-band`: pkts up to 1000 bytes.
    SideBand,
    /// `side-band-64k` (and protocol v2): pkts up to 65520 bytes.
    SideBand64k,
}

impl SidebandMode {
    /// Largest pkt in this mode, prefix and band byte included.
    pub const fn pkt_max_bytes(self) -> usize {
        match self {
            SidebandMode::SideBand => SIDEBAND_PKT_MAX_BYTES,
            SidebandMode::SideBand64k => SIDEBAND_64K_PKT_MAX_BYTES,
        }
    }

    /// Largest payload of one frame in this mode (995 or 65515 bytes).
    pub const fn payload_max_bytes(self) -> usize {
        self.pkt_max_bytes() - FRAME_HEADER_BYTES
    }
}

/// Errors from side-band framing and parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidebandError {
    /// A frame payload is larger than the mode allows.
    #[error("side-band payload of {len} bytes exceeds the maximum {max}")]
    PayloadTooLong {
        /// Payload length asked for.
        len: usize,
        /// The limit for the mode.
        max: usize,
    },
    /// A pkt that should be a side-band frame is empty or a special pkt.
    #[error("side-band frame is empty or not a data pkt")]
    NotAFrame,
    /// The band byte is not 1, 2 or 3.
    #[error("side-band frame names unknown band {band}")]
    UnknownBand {
        /// The band byte received.
        band: u8,
    },
}

/// The 5-byte header of a frame carrying `payload_len` bytes on `band`.
///
/// Fails if the payload does not fit in a `side-band-64k` pkt; use
/// [`frame_header_for`] to check against the `side-band` limit.
pub fn frame_header(band: Band, payload_len: usize) -> Result<[u8; 5], SidebandError> {
    frame_header_for(SidebandMode::SideBand64k, band, payload_len)
}

/// The 5-byte header of a frame, checked against `mode`'s limit.
pub fn frame_header_for(
    mode: SidebandMode,
    band: Band,
    payload_len: usize,
) -> Result<[u8; 5], SidebandError> {
    let max = mode.payload_max_bytes();
    if payload_len > max {
        return Err(SidebandError::PayloadTooLong {
            len: payload_len,
            max,
        });
    }
    let len = pktline::hex4(payload_len + FRAME_HEADER_BYTES);
    Ok([len[0], len[1], len[2], len[3], band as u8])
}

/// Split `data` into frames for a vectored write: each item is a header and
/// a slice of `data` (a reference count, no copy). Empty input gives no
/// frames.
pub fn frames(mode: SidebandMode, band: Band, data: Bytes) -> Frames {
    Frames {
        mode,
        band,
        rest: data,
    }
}

/// Iterator over the frames of one buffer; see [`frames`].
#[derive(Debug, Clone)]
pub struct Frames {
    mode: SidebandMode,
    band: Band,
    rest: Bytes,
}

impl Iterator for Frames {
    type Item = ([u8; FRAME_HEADER_BYTES], Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let take = self.rest.len().min(self.mode.payload_max_bytes());
        let payload = self.rest.split_to(take);
        let len = pktline::hex4(take + FRAME_HEADER_BYTES);
        Some(([len[0], len[1], len[2], len[3], self.band as u8], payload))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len().div_ceil(self.mode.payload_max_bytes());
        (n, Some(n))
    }
}

impl ExactSizeIterator for Frames {}

/// Append `data` to `out` as frames on `band` (copying; for small payloads
/// such as report-status or progress text).
pub fn write_frames(out: &mut Vec<u8>, mode: SidebandMode, band: Band, data: &[u8]) {
    for chunk in data.chunks(mode.payload_max_bytes()) {
        let len = pktline::hex4(chunk.len() + FRAME_HEADER_BYTES);
        out.extend_from_slice(&len);
        out.push(band as u8);
        out.extend_from_slice(chunk);
    }
}

/// Append a progress message (band 2). Git prints it as is, so end it with
/// `\n` or `\r`.
pub fn write_progress(out: &mut Vec<u8>, mode: SidebandMode, msg: &str) {
    write_frames(out, mode, Band::Progress, msg.as_bytes());
}

/// Append a fatal error message (band 3); the client prints it and stops.
/// The message is cut to one frame.
pub fn write_error(out: &mut Vec<u8>, mode: SidebandMode, msg: &str) {
    let msg = crate::text::truncate_str(msg, mode.payload_max_bytes());
    write_frames(out, mode, Band::Error, msg.as_bytes());
}

/// Split a decoded pkt into its band and payload (the client's view; used
/// by tests and by tools that read our own output).
pub fn parse_frame<'a>(pkt: Pkt<'a>) -> Result<(Band, &'a [u8]), SidebandError> {
    let Pkt::Data(data) = pkt else {
        return Err(SidebandError::NotAFrame);
    };
    let (&band, payload) = data.split_first().ok_or(SidebandError::NotAFrame)?;
    let band = Band::from_byte(band).ok_or(SidebandError::UnknownBand { band })?;
    Ok((band, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::PktReader;

    #[test]
    fn header_layout() {
        assert_eq!(frame_header(Band::Data, 0).unwrap(), *b"0005\x01");
        assert_eq!(frame_header(Band::Progress, 10).unwrap(), *b"000f\x02");
        assert_eq!(frame_header(Band::Data, 65515).unwrap(), *b"fff0\x01");
        assert_eq!(
            frame_header(Band::Data, 65516),
            Err(SidebandError::PayloadTooLong {
                len: 65516,
                max: 65515
            })
        );
        assert_eq!(
            frame_header_for(SidebandMode::SideBand, Band::Error, 996),
            Err(SidebandError::PayloadTooLong { len: 996, max: 995 })
        );
        assert_eq!(
            frame_header_for(SidebandMode::SideBand, Band::Error, 995).unwrap(),
            *b"03e8\x03"
        );
    }

    fn reassemble(mode: SidebandMode, data: Bytes) -> (usize, Vec<u8>) {
        let mut wire = Vec::new();
        let frames: Vec<_> = frames(mode, Band::Data, data).collect();
        for (header, payload) in &frames {
            wire.extend_from_slice(header);
            wire.extend_from_slice(payload);
        }
        let mut reader = PktReader::new(&wire);
        let mut out = Vec::new();
        while let Some(pkt) = reader.next_pkt().unwrap() {
            let Pkt::Data(d) = pkt else { panic!() };
            assert!(d.len() + 4 <= mode.pkt_max_bytes());
            let (band, payload) = parse_frame(pkt).unwrap();
            assert_eq!(band, Band::Data);
            out.extend_from_slice(payload);
        }
        (frames.len(), out)
    }

    #[test]
    fn frames_split_without_loss() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (n, out) = reassemble(SidebandMode::SideBand64k, Bytes::from(data.clone()));
        assert_eq!(n, 4);
        assert_eq!(out, data);
        let (n, out) = reassemble(SidebandMode::SideBand, Bytes::from(data.clone()));
        assert_eq!(n, 200_000usize.div_ceil(995));
        assert_eq!(out, data);
        assert_eq!(reassemble(SidebandMode::SideBand64k, Bytes::new()).0, 0);
    }

    #[test]
    fn frames_do_not_copy() {
        let data = Bytes::from(vec![7u8; 70_000]);
        let base = data.as_ptr();
        let parts: Vec<_> = frames(SidebandMode::SideBand64k, Band::Data, data).collect();
        assert_eq!(parts[0].1.as_ptr(), base);
        assert_eq!(parts[1].1.as_ptr(), base.wrapping_add(65515));
        assert_eq!(parts[1].1.len(), 70_000 - 65515);
    }

    #[test]
    fn write_frames_matches_iterator() {
        let data = vec![9u8; 3000];
        let mut copied = Vec::new();
        write_frames(&mut copied, SidebandMode::SideBand, Band::Data, &data);
        let mut vectored = Vec::new();
        for (h, p) in frames(SidebandMode::SideBand, Band::Data, Bytes::from(data)) {
            vectored.extend_from_slice(&h);
            vectored.extend_from_slice(&p);
        }
        assert_eq!(copied, vectored);
    }

    #[test]
    fn progress_and_error() {
        let mut out = Vec::new();
        write_progress(&mut out, SidebandMode::SideBand64k, "Counting objects: 3\r");
        write_error(&mut out, SidebandMode::SideBand, "boom\n");
        assert_eq!(&out, b"0019\x02Counting objects: 3\r000a\x03boom\n");
    }

    #[test]
    fn parse_frame_errors() {
        assert_eq!(parse_frame(Pkt::Flush), Err(SidebandError::NotAFrame));
        assert_eq!(parse_frame(Pkt::Data(b"")), Err(SidebandError::NotAFrame));
        assert_eq!(
            parse_frame(Pkt::Data(b"\x04x")),
            Err(SidebandError::UnknownBand { band: 4 })
        );
    }
}
