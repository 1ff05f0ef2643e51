//! The streaming entry parser, sans-IO: bytes in, entries out (gix-pack's
//! `data/input`).
//!
//! [`PackParser::feed`] takes the pack in chunks split anywhere and parses
//! as it goes: the pack header, each entry header, each zlib stream
//! (inflated into a fixed buffer), SHA-1DC of every whole object, CRC-32 of
//! every raw entry, the trailer. Whole commits, trees and tags are handed to
//! the caller as they complete (for the object checks); nothing else is
//! kept but the entry list. It touches no file, so it runs the same over a
//! socket, a peer's pack in memory, or a fuzzer's input.
//!
//! An entry that fails to parse is not reported at once: if the 20 bytes
//! from its start are the checksum of everything before it, the pack simply
//! ended early and the header declared too many objects, which is the error
//! git reports too. The parser keeps those 20 bytes itself.

use super::error::{IngestError, PackSection};
use super::IngestLimits;
use crate::delta::delta_sizes;
use crate::object::{CheckedHasher, ObjectKind};
use crate::oid::ObjectId;
use crate::pack::entry::{decode_header, EntryError, EntryHeader, EntryKind};
use crate::pack::{PACK_HEADER_BYTES, PACK_SIGNATURE};
use flate2::{Decompress, FlushDecompress, Status};
use sha1::Digest;

/// Inflate output buffer used while streaming.
const INFLATE_BUFFER_BYTES: usize = 64 << 10;
/// Longest entry header accepted (type+size varint, then an OFS varint or
/// a 20-byte REF id); real headers are at most 30 bytes.
const ENTRY_HEADER_MAX_BYTES: usize = 64;
/// Bytes of the pack trailer (SHA-1 of everything before it).
pub(super) const TRAILER_BYTES: usize = 20;
/// Bytes of a delta's leading size header we keep while streaming.
const DELTA_HEAD_BYTES: usize = 20;

/// What an entry holds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Base {
    /// A whole object.
    Whole(ObjectKind),
    /// A delta against the entry with this index.
    Ofs(u32),
    /// A delta against the object with this id.
    Ref(ObjectId),
}

/// One entry of the pack, as recorded while streaming.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) offset: u64,
    /// Raw bytes of the entry (header + zlib data).
    pub(super) packed_len: u64,
    pub(super) header_len: u8,
    pub(super) crc32: u32,
    /// Inflated size of the entry's data (object or delta).
    pub(super) size: u64,
    pub(super) base: Base,
}

/// An entry once its object is known.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resolved {
    pub(super) oid: ObjectId,
    pub(super) kind: ObjectKind,
    pub(super) depth: u32,
    /// Entry index of the delta base ([`Resolved::NO_BASE`] for whole objects).
    pub(super) base: u32,
}

impl Resolved {
    /// `base` of a whole object.
    pub(super) const NO_BASE: u32 = u32::MAX;
}

/// A whole commit, tree or tag as it streamed past.
#[derive(Debug, Clone, Copy)]
pub struct StreamedObject<'a> {
    /// Offset of its entry in the pack.
    pub offset: u64,
    /// Its id (SHA-1DC).
    pub oid: ObjectId,
    /// Commit, tree or tag (blobs are not held).
    pub kind: ObjectKind,
    /// The whole object.
    pub data: &'a [u8],
}

/// The first bytes of an entry: enough to tell a failing entry from the
/// trailer of a pack whose header declared too many objects.
#[derive(Debug, Clone, Copy)]
struct EntryPrefix {
    bytes: [u8; TRAILER_BYTES],
    len: usize,
}

impl EntryPrefix {
    fn new(first: &[u8]) -> EntryPrefix {
        let mut prefix = EntryPrefix {
            bytes: [0; TRAILER_BYTES],
            len: 0,
        };
        prefix.push(first);
        prefix
    }

    fn push(&mut self, data: &[u8]) {
        let take = (TRAILER_BYTES - self.len).min(data.len());
        self.bytes[self.len..self.len + take].copy_from_slice(&data[..take]);
        self.len += take;
    }

    fn is_full(&self) -> bool {
        self.len == TRAILER_BYTES
    }

    /// True if these 20 bytes are the checksum of everything before them.
    fn is_checksum_of(&self, pack_hash: &sha1::Sha1) -> bool {
        let computed: [u8; 20] = pack_hash.clone().finalize().into();
        self.is_full() && self.bytes == computed
    }
}

/// The current entry while its bytes stream in.
struct CurrentEntry {
    offset: u64,
    header_len: u8,
    size: u64,
    base: Base,
    crc: crc32fast::Hasher,
    /// Pack checksum state at the start of the entry (to tell a short
    /// object count from a corrupt entry).
    pack_hash_at_start: sha1::Sha1,
    prefix: EntryPrefix,
    /// SHA-1DC of a whole object.
    hasher: Option<CheckedHasher>,
    /// Contents of a whole commit, tree or tag, for the checks.
    data: Option<Vec<u8>>,
    delta_head: [u8; DELTA_HEAD_BYTES],
    delta_head_len: usize,
    inflated: u64,
}

enum State {
    Header {
        buf: [u8; PACK_HEADER_BYTES],
        len: usize,
    },
    EntryHeader {
        buf: [u8; ENTRY_HEADER_MAX_BYTES],
        len: usize,
        pack_hash_at_start: Box<sha1::Sha1>,
    },
    EntryData(Box<CurrentEntry>),
    Trailer {
        buf: [u8; TRAILER_BYTES],
        len: usize,
    },
    /// Trailer verified.
    Done,
    /// The 20 bytes after the last entry are not its checksum; if more
    /// bytes follow, the header's object count is too small.
    BadTrailer {
        found: [u8; 20],
        computed: [u8; 20],
    },
    /// An entry failed; wait for 20 bytes from its start to tell whether
    /// it is really the trailer (object count too large).
    EntryFailed {
        error: Box<IngestError>,
        prefix: EntryPrefix,
        pack_hash: Box<sha1::Sha1>,
    },
    Failed,
}

/// A pack parsed to its verified trailer: every entry, and the ids of the
/// whole objects (deltas are resolved later, from the stored pack).
pub struct ParsedPack {
    pub(super) entries: Vec<Entry>,
    /// Per entry: the object, for whole objects.
    pub(super) resolved: Vec<Option<Resolved>>,
    pub(super) trailer: [u8; 20],
    /// Offset of the trailer: where the entries end.
    pub(super) end: u64,
    /// Largest object buffer held while streaming.
    pub(super) largest_buffer: u64,
    /// Bytes inflated while streaming.
    pub(super) inflated: u64,
}

impl ParsedPack {
    /// Entries in the pack.
    pub fn object_count(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Entries that are deltas.
    pub fn delta_count(&self) -> u32 {
        self.resolved.iter().filter(|r| r.is_none()).count() as u32
    }

    /// The pack's trailer (SHA-1 of everything before it), verified.
    pub fn checksum(&self) -> [u8; 20] {
        self.trailer
    }
}

/// The streaming parser of one pack. See the module documentation.
pub struct PackParser {
    pack_max_bytes: u64,
    object_max_bytes: u64,
    objects_max: u32,
    limits: IngestLimits,
    /// Bytes inflated so far (whole objects and deltas).
    inflated: u64,
    state: State,
    /// Bytes fed so far.
    received: u64,
    /// SHA-1 of the bytes before the trailer, fed as they are parsed.
    pack_hash: sha1::Sha1,
    /// Bytes fed to `pack_hash` (the offset of the next entry or the trailer).
    consumed: u64,
    /// The received trailer, once verified.
    trailer: [u8; 20],
    declared_objects: u32,
    entries: Vec<Entry>,
    resolved: Vec<Option<Resolved>>,
    inflate: Decompress,
    inflate_buf: Vec<u8>,
    largest_buffer: u64,
}

impl PackParser {
    /// A parser for one pack, held to `limits` (pack size, object size,
    /// object count).
    pub fn new(limits: &IngestLimits) -> PackParser {
        PackParser {
            pack_max_bytes: limits.pack_max_bytes,
            object_max_bytes: limits.object_max_bytes,
            objects_max: limits.objects_max,
            limits: *limits,
            inflated: 0,
            state: State::Header {
                buf: [0; PACK_HEADER_BYTES],
                len: 0,
            },
            received: 0,
            pack_hash: sha1::Sha1::new(),
            consumed: 0,
            trailer: [0; 20],
            declared_objects: 0,
            entries: Vec::new(),
            resolved: Vec::new(),
            inflate: Decompress::new(true),
            inflate_buf: vec![0; INFLATE_BUFFER_BYTES],
            largest_buffer: 0,
        }
    }

    /// Bytes fed so far.
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// Parse the next bytes of the pack; chunks may split anywhere. Each
    /// whole commit, tree and tag is passed to `on_object` as it completes,
    /// in pack order. After an error every call fails.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_object: impl FnMut(StreamedObject<'_>),
    ) -> Result<(), IngestError> {
        if matches!(self.state, State::Failed) {
            return Err(IngestError::AlreadyFailed);
        }
        let total = self.received + chunk.len() as u64;
        let result = if total > self.pack_max_bytes {
            Err(IngestError::PackTooLarge {
                limit: self.pack_max_bytes,
            })
        } else {
            self.received = total;
            self.parse(chunk, &mut on_object)
        };
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// End of input: the pack must have ended with its verified trailer.
    pub fn finish(mut self) -> Result<ParsedPack, IngestError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Done => {}
            State::BadTrailer { found, computed } => {
                return Err(IngestError::ChecksumMismatch {
                    found: ObjectId::from_sha1(found),
                    computed: ObjectId::from_sha1(computed),
                })
            }
            State::Header { .. } => return Err(self.truncated(PackSection::Header)),
            State::Trailer { .. } => return Err(self.truncated(PackSection::Trailer)),
            State::EntryHeader {
                buf,
                len,
                pack_hash_at_start,
            } => {
                let offset = self.consumed;
                let prefix = EntryPrefix::new(&buf[..len]);
                return Err(self.truncated_entry(
                    offset,
                    &prefix,
                    &pack_hash_at_start,
                    PackSection::EntryHeader,
                ));
            }
            State::EntryData(cur) => {
                return Err(self.truncated_entry(
                    cur.offset,
                    &cur.prefix,
                    &cur.pack_hash_at_start,
                    PackSection::EntryData,
                ));
            }
            failed @ State::EntryFailed { .. } => {
                self.state = failed;
                return Err(self.entry_failure());
            }
            State::Failed => return Err(IngestError::AlreadyFailed),
        }
        debug_assert_eq!(self.entries.len(), self.resolved.len());
        debug_assert_eq!(self.consumed + TRAILER_BYTES as u64, self.received);
        Ok(ParsedPack {
            entries: self.entries,
            resolved: self.resolved,
            trailer: self.trailer,
            end: self.received - TRAILER_BYTES as u64,
            largest_buffer: self.largest_buffer,
            inflated: self.inflated,
        })
    }

    fn parse(
        &mut self,
        mut input: &[u8],
        on_object: &mut dyn FnMut(StreamedObject<'_>),
    ) -> Result<(), IngestError> {
        loop {
            match &mut self.state {
                State::EntryFailed { prefix, .. } => {
                    prefix.push(input);
                    if prefix.is_full() {
                        return Err(self.entry_failure());
                    }
                    return Ok(());
                }
                State::Failed => return Err(IngestError::AlreadyFailed),
                // zlib may hold output for this entry even with no input left
                State::EntryData(_) => {
                    let (consumed, more_output) = self.inflate_step(input, on_object)?;
                    input = &input[consumed..];
                    if input.is_empty() && !more_output && matches!(self.state, State::EntryData(_))
                    {
                        return Ok(());
                    }
                }
                _ if input.is_empty() => return Ok(()),
                State::Header { buf, len } => {
                    if fill(buf, len, &mut input) {
                        let header = *buf;
                        self.start_pack(&header)?;
                    }
                }
                State::EntryHeader { .. } => self.entry_header_bytes(&mut input),
                State::Trailer { buf, len } => {
                    if fill(buf, len, &mut input) {
                        let found = *buf;
                        self.end_pack(found);
                    }
                }
                State::Done => return Err(IngestError::TrailingData),
                State::BadTrailer { .. } => {
                    return Err(IngestError::ObjectCountTooSmall {
                        declared: self.declared_objects,
                    })
                }
            }
        }
    }

    /// Bytes of an entry header; once it decodes, the entry's data starts.
    fn entry_header_bytes(&mut self, input: &mut &[u8]) {
        let State::EntryHeader {
            buf,
            len,
            pack_hash_at_start,
        } = &mut self.state
        else {
            return;
        };
        let old_len = *len;
        let take = (ENTRY_HEADER_MAX_BYTES - old_len).min(input.len());
        buf[old_len..old_len + take].copy_from_slice(&input[..take]);
        *len += take;
        match decode_header(&buf[..*len]) {
            Ok(header) => {
                *input = &input[header.header_len - old_len..];
                let raw = *buf;
                let at_start = std::mem::take(pack_hash_at_start);
                self.start_entry(&raw[..header.header_len], header, at_start);
            }
            Err(EntryError::Truncated) if *len < ENTRY_HEADER_MAX_BYTES => {
                *input = &input[take..];
            }
            Err(source) => {
                let at_start = std::mem::take(pack_hash_at_start);
                let prefix = EntryPrefix::new(&buf[..*len]);
                *input = &input[take..];
                let offset = self.consumed;
                self.entry_failed(
                    IngestError::BadEntryHeader { offset, source },
                    prefix,
                    at_start,
                );
            }
        }
    }

    /// The 20 bytes after the last entry arrived: the pack is complete if
    /// they are its checksum.
    fn end_pack(&mut self, found: [u8; 20]) {
        let computed: [u8; 20] = self.pack_hash.clone().finalize().into();
        self.state = if found == computed {
            self.trailer = found;
            State::Done
        } else {
            State::BadTrailer { found, computed }
        };
    }

    fn start_pack(&mut self, header: &[u8; PACK_HEADER_BYTES]) -> Result<(), IngestError> {
        self.pack_hash.update(header);
        self.consumed = PACK_HEADER_BYTES as u64;
        let mut signature = [0u8; 4];
        signature.copy_from_slice(&header[..4]);
        if &signature != PACK_SIGNATURE {
            return Err(IngestError::NotAPack { found: signature });
        }
        let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if version != 2 && version != 3 {
            return Err(IngestError::UnsupportedVersion { version });
        }
        let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if count > self.objects_max {
            return Err(IngestError::TooManyObjects {
                count,
                limit: self.objects_max,
            });
        }
        self.declared_objects = count;
        let reserve = count.min(1 << 16) as usize;
        self.entries.reserve(reserve);
        self.resolved.reserve(reserve);
        self.next_entry_or_trailer();
        Ok(())
    }

    fn next_entry_or_trailer(&mut self) {
        self.state = if self.entries.len() as u64 == u64::from(self.declared_objects) {
            State::Trailer {
                buf: [0; TRAILER_BYTES],
                len: 0,
            }
        } else {
            State::EntryHeader {
                buf: [0; ENTRY_HEADER_MAX_BYTES],
                len: 0,
                pack_hash_at_start: Box::new(self.pack_hash.clone()),
            }
        };
    }

    fn entry_failed(
        &mut self,
        error: IngestError,
        prefix: EntryPrefix,
        pack_hash: Box<sha1::Sha1>,
    ) {
        self.state = State::EntryFailed {
            error: Box::new(error),
            prefix,
            pack_hash,
        };
    }

    /// The error to report for a failed entry (see `State::EntryFailed`).
    fn entry_failure(&mut self) -> IngestError {
        let State::EntryFailed {
            error,
            prefix,
            pack_hash,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return IngestError::AlreadyFailed;
        };
        if prefix.is_checksum_of(&pack_hash) {
            return self.count_too_large();
        }
        *error
    }

    fn count_too_large(&self) -> IngestError {
        IngestError::ObjectCountTooLarge {
            declared: self.declared_objects,
            found: self.entries.len() as u32,
        }
    }

    fn truncated(&self, section: PackSection) -> IngestError {
        IngestError::Truncated {
            section,
            received: self.received,
        }
    }

    /// The input ended inside the entry at `offset`: if exactly 20 bytes
    /// of it arrived and they are the checksum, the pack ended where the
    /// header promised more.
    fn truncated_entry(
        &self,
        offset: u64,
        prefix: &EntryPrefix,
        pack_hash: &sha1::Sha1,
        section: PackSection,
    ) -> IngestError {
        if self.received == offset + TRAILER_BYTES as u64 && prefix.is_checksum_of(pack_hash) {
            return self.count_too_large();
        }
        self.truncated(section)
    }

    fn start_entry(&mut self, raw: &[u8], header: EntryHeader, at_start: Box<sha1::Sha1>) {
        let offset = self.consumed;
        self.pack_hash.update(raw);
        self.consumed += raw.len() as u64;
        let prefix = EntryPrefix::new(raw);
        let mut crc = crc32fast::Hasher::new();
        crc.update(raw);
        let base = if header.size > self.object_max_bytes {
            Err(IngestError::ObjectTooLarge {
                offset,
                size: header.size,
                limit: self.object_max_bytes,
            })
        } else {
            self.entry_base(header.kind, offset)
        };
        let base = match base {
            Ok(base) => base,
            Err(error) => return self.entry_failed(error, prefix, at_start),
        };
        let (hasher, data) = match base {
            Base::Whole(kind) => {
                let data = (kind != ObjectKind::Blob).then(|| {
                    Vec::with_capacity(header.size.min(INFLATE_BUFFER_BYTES as u64) as usize)
                });
                (Some(CheckedHasher::new(kind, header.size)), data)
            }
            _ => (None, None),
        };
        self.inflate.reset(true);
        self.state = State::EntryData(Box::new(CurrentEntry {
            offset,
            header_len: raw.len() as u8,
            size: header.size,
            base,
            crc,
            pack_hash_at_start: *at_start,
            prefix,
            hasher,
            data,
            delta_head: [0; DELTA_HEAD_BYTES],
            delta_head_len: 0,
            inflated: 0,
        }));
    }

    /// What the entry at `offset` holds; an OFS_DELTA must point back at
    /// the start of an earlier entry.
    fn entry_base(&self, kind: EntryKind, offset: u64) -> Result<Base, IngestError> {
        Ok(match kind {
            EntryKind::Base(kind) => Base::Whole(kind),
            EntryKind::RefDelta { base } => Base::Ref(base),
            EntryKind::OfsDelta { distance } => {
                if distance == 0 || distance > offset {
                    return Err(IngestError::OfsBaseOutOfRange { offset, distance });
                }
                let base_offset = offset - distance;
                let i = self
                    .entries
                    .binary_search_by_key(&base_offset, |e| e.offset)
                    .map_err(|_| IngestError::OfsBaseNotEntry {
                        offset,
                        base_offset,
                    })?;
                Base::Ofs(i as u32)
            }
        })
    }

    /// Inflate what `input` holds of the current entry. Returns the input
    /// bytes consumed and whether zlib may have more output pending.
    fn inflate_step(
        &mut self,
        input: &[u8],
        on_object: &mut dyn FnMut(StreamedObject<'_>),
    ) -> Result<(usize, bool), IngestError> {
        let State::EntryData(cur) = &mut self.state else {
            return Ok((0, false));
        };
        let before_in = self.inflate.total_in();
        let before_out = self.inflate.total_out();
        let status = self
            .inflate
            .decompress(input, &mut self.inflate_buf, FlushDecompress::None);
        let consumed = (self.inflate.total_in() - before_in) as usize;
        let produced = (self.inflate.total_out() - before_out) as usize;
        cur.crc.update(&input[..consumed]);
        cur.prefix.push(&input[..consumed]);
        self.pack_hash.update(&input[..consumed]);
        self.consumed += consumed as u64;
        if let Some(error) = inflate_failure(cur, &status, consumed, produced, input.is_empty()) {
            let State::EntryData(cur) = std::mem::replace(&mut self.state, State::Failed) else {
                return Err(error);
            };
            self.entry_failed(error, cur.prefix, Box::new(cur.pack_hash_at_start));
            return Ok((consumed, false));
        }
        self.inflated += produced as u64;
        let limit = self.limits.inflated_limit(self.received);
        if self.inflated > limit {
            return Err(IngestError::TooMuchInflation { limit });
        }
        let out = &self.inflate_buf[..produced];
        cur.inflated += produced as u64;
        if let Some(h) = &mut cur.hasher {
            h.update(out);
        }
        if let Some(d) = &mut cur.data {
            d.extend_from_slice(out);
        }
        if cur.hasher.is_none() && cur.delta_head_len < DELTA_HEAD_BYTES {
            let take = (DELTA_HEAD_BYTES - cur.delta_head_len).min(out.len());
            cur.delta_head[cur.delta_head_len..cur.delta_head_len + take]
                .copy_from_slice(&out[..take]);
            cur.delta_head_len += take;
        }
        if let Ok(Status::StreamEnd) = status {
            self.finish_entry(on_object)?;
            return Ok((consumed, false));
        }
        Ok((consumed, produced == self.inflate_buf.len()))
    }

    fn finish_entry(
        &mut self,
        on_object: &mut dyn FnMut(StreamedObject<'_>),
    ) -> Result<(), IngestError> {
        let State::EntryData(cur) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(IngestError::AlreadyFailed);
        };
        let cur = *cur;
        let offset = cur.offset;
        let resolved = match cur.base {
            Base::Whole(kind) => {
                let hasher = cur.hasher.ok_or(IngestError::AlreadyFailed)?;
                let oid = hasher
                    .finish()
                    .map_err(|source| IngestError::Collision { offset, source })?;
                if let Some(data) = cur.data {
                    self.largest_buffer = self.largest_buffer.max(data.capacity() as u64);
                    on_object(StreamedObject {
                        offset,
                        oid,
                        kind,
                        data: &data,
                    });
                }
                Some(Resolved {
                    oid,
                    kind,
                    depth: 0,
                    base: Resolved::NO_BASE,
                })
            }
            Base::Ofs(_) | Base::Ref(_) => {
                let (_, result_size) = delta_sizes(&cur.delta_head[..cur.delta_head_len])
                    .map_err(|source| IngestError::BadDelta { offset, source })?;
                if result_size > self.object_max_bytes {
                    return Err(IngestError::ObjectTooLarge {
                        offset,
                        size: result_size,
                        limit: self.object_max_bytes,
                    });
                }
                None
            }
        };
        self.entries.push(Entry {
            offset,
            packed_len: self.consumed - offset,
            header_len: cur.header_len,
            crc32: cur.crc.finalize(),
            size: cur.size,
            base: cur.base,
        });
        self.resolved.push(resolved);
        self.next_entry_or_trailer();
        Ok(())
    }
}

/// Copy from `input` into `buf[*len..]`, advancing `input`; true once
/// `buf` is full.
fn fill(buf: &mut [u8], len: &mut usize, input: &mut &[u8]) -> bool {
    let take = (buf.len() - *len).min(input.len());
    buf[*len..*len + take].copy_from_slice(&input[..take]);
    *len += take;
    *input = &input[take..];
    *len == buf.len()
}

/// What is wrong with the current entry after one inflate step, if
/// anything. The size is checked first: zlib's output before an error does
/// not depend on how the input was chunked, so neither does the error.
fn inflate_failure(
    cur: &CurrentEntry,
    status: &Result<Status, flate2::DecompressError>,
    consumed: usize,
    produced: usize,
    input_empty: bool,
) -> Option<IngestError> {
    let offset = cur.offset;
    let actual = cur.inflated + produced as u64;
    match status {
        _ if actual > cur.size => Some(IngestError::SizeMismatch {
            offset,
            declared: cur.size,
            actual,
            at_least: true,
        }),
        Err(e) => Some(IngestError::CorruptZlib {
            offset,
            message: e.to_string(),
        }),
        Ok(Status::StreamEnd) if actual != cur.size => Some(IngestError::SizeMismatch {
            offset,
            declared: cur.size,
            actual,
            at_least: false,
        }),
        Ok(_) if consumed == 0 && produced == 0 && !input_empty => Some(IngestError::CorruptZlib {
            offset,
            message: "inflate made no progress".into(),
        }),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::hash_object;
    use crate::pack::entry::encode_type_size;
    use std::io::Write;

    /// A pack of whole objects, made in memory.
    fn pack_of(objects: &[(ObjectKind, &[u8])]) -> Vec<u8> {
        let mut pack = Vec::new();
        pack.extend_from_slice(PACK_SIGNATURE);
        pack.extend_from_slice(&2u32.to_be_bytes());
        pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
        for (kind, data) in objects {
            let mut header = [0u8; 16];
            let n = encode_type_size(kind.pack_code(), data.len() as u64, &mut header);
            pack.extend_from_slice(&header[..n]);
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(data).unwrap();
            pack.extend_from_slice(&z.finish().unwrap());
        }
        let trailer: [u8; 20] = sha1::Sha1::digest(&pack).into();
        pack.extend_from_slice(&trailer);
        pack
    }

    #[test]
    fn parses_in_memory_in_any_chunking_and_hands_out_whole_objects() {
        let tree = b"100644 f\0aaaaaaaaaaaaaaaaaaaa".as_slice();
        let pack = pack_of(&[(ObjectKind::Blob, b"hello\n"), (ObjectKind::Tree, tree)]);
        for chunk in [1, 7, pack.len()] {
            let mut parser = PackParser::new(&IngestLimits::default());
            let mut seen = Vec::new();
            for piece in pack.chunks(chunk) {
                parser
                    .feed(piece, |o| {
                        seen.push((o.offset, o.oid, o.kind, o.data.to_vec()))
                    })
                    .unwrap();
            }
            let parsed = parser.finish().unwrap();
            assert_eq!(parsed.object_count(), 2);
            assert_eq!(parsed.delta_count(), 0);
            assert_eq!(parsed.checksum(), pack[pack.len() - 20..]);
            // the blob is hashed but not held; the tree is handed out
            assert_eq!(seen.len(), 1, "chunk {chunk}");
            assert_eq!(seen[0].1, hash_object(ObjectKind::Tree, tree));
            assert_eq!(seen[0].3, tree);
        }
    }

    #[test]
    fn a_short_object_count_is_told_from_a_corrupt_entry_without_a_file() {
        let mut pack = pack_of(&[(ObjectKind::Blob, b"one\n")]);
        // the header promises two objects: the body hash changes, so fix the trailer
        pack[11] = 2;
        let body = pack.len() - 20;
        let trailer: [u8; 20] = sha1::Sha1::digest(&pack[..body]).into();
        pack[body..].copy_from_slice(&trailer);
        // whole, or ending just after the 20 bytes that are the checksum
        for split in [pack.len(), body + 10] {
            let mut parser = PackParser::new(&IngestLimits::default());
            let result = parser
                .feed(&pack[..split], |_| {})
                .and_then(|()| parser.feed(&pack[split..], |_| {}));
            let result = match result {
                Ok(()) => parser.finish().map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Err(IngestError::ObjectCountTooLarge { declared, found }) => {
                    assert_eq!((declared, found), (2, 1))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
