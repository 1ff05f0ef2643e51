//! Pack writing for upload-pack, streamed in chunks.
//!
//! Entries go out in stored order (by pack, then offset), so every stored
//! delta's base precedes it. Stored bytes are reused without inflating:
//! whole objects are copied raw; a delta whose base is also sent is copied
//! with a new header (OFS_DELTA with the new distance, or REF_DELTA naming
//! the base when the client lacks `ofs-delta`); only a delta whose base is
//! not sent is resolved and deflated as a whole object, so the pack is never
//! thin. When the objects are exactly the union of some stored packs, those
//! packs are streamed verbatim (one pack: the file as it is; several: a new
//! header and trailer around the concatenated bodies, whose OFS distances
//! stay valid).
//!
//! Nothing builds the whole pack in memory: output is produced in chunks of
//! about [`PackWriteOptions::chunk_bytes`], read through a bounded window.

use super::entry::{decode_header, encode_ofs_distance, encode_type_size, EntryError, EntryKind};
use super::{OFS_DELTA, PACK_HEADER_BYTES, PACK_SIGNATURE, PACK_VERSION, REF_DELTA};
use crate::oid::ObjectId;
use crate::store::{Location, ObjectStore, StoreError};
use bytes::Bytes;
use sha1::Digest;
use std::io::Write;
use std::path::PathBuf;

/// Default size of the chunks a [`PackStream`] yields.
pub const CHUNK_BYTES_DEFAULT: usize = 64 << 10;
/// Most bytes read from a pack at once to cover several small entries.
pub const READ_WINDOW_BYTES: usize = 1 << 20;
/// zlib level for objects that must be re-deflated (stored deltas whose
/// base is not sent): cheap on the server's CPU, still compact.
pub const DEFLATE_LEVEL: u32 = 3;
/// Bytes read to decode an entry header of a large entry.
const HEADER_PREFIX_BYTES: usize = 64;

/// How to write a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackWriteOptions {
    /// The client accepts OFS_DELTA entries (`ofs-delta` capability).
    pub ofs_delta: bool,
    /// Target size of each yielded chunk.
    pub chunk_bytes: usize,
}

impl Default for PackWriteOptions {
    fn default() -> Self {
        PackWriteOptions {
            ofs_delta: true,
            chunk_bytes: CHUNK_BYTES_DEFAULT,
        }
    }
}

/// Errors while planning or streaming a pack.
#[derive(Debug, thiserror::Error)]
pub enum PackWriteError {
    /// Reading from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object to send is not in the store.
    #[error("object {0} is not in the repository")]
    Missing(ObjectId),
    /// More objects than a pack header can count.
    #[error("{count} objects exceed the pack limit of {limit}")]
    TooManyObjects {
        /// Objects requested.
        count: usize,
        /// The limit (u32::MAX).
        limit: u32,
    },
    /// A stored entry header could not be decoded.
    #[error("{path} at offset {offset}: bad entry header: {source}")]
    BadEntry {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry.
        offset: u64,
        /// What was wrong.
        source: EntryError,
    },
    /// The index lists an offset the pack does not have.
    #[error("{path}: no entry at offset {offset}")]
    NoEntry {
        /// The pack file.
        path: PathBuf,
        /// The offset.
        offset: u64,
    },
    /// Deflating a resolved object failed.
    #[error("deflate failed: {0}")]
    Deflate(std::io::Error),
}

/// Bytes still to be emitted before the next entry.
enum Pending {
    /// Bytes in memory.
    Mem(Bytes),
    /// A byte range of a pack file, `[pos, end)`.
    File { pack: u32, pos: u64, end: u64 },
}

/// How to send a verbatim pack: an optional new header, file ranges, and
/// (when `header` is set) a new SHA-1 trailer over everything sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbatimPlan {
    /// A new pack header (several packs concatenated). `None`: one stored
    /// pack is sent whole, its own header and trailer included.
    pub header: Option<[u8; PACK_HEADER_BYTES]>,
    /// `(pack file, start, end)` byte ranges, in order.
    pub ranges: Vec<(std::path::PathBuf, u64, u64)>,
}

impl VerbatimPlan {
    /// True if the sender must append a SHA-1 trailer over the bytes sent.
    pub fn needs_trailer(&self) -> bool {
        self.header.is_some()
    }
}

enum Mode {
    /// Whole stored packs, streamed as ranges `(pack, start, end)`.
    Verbatim {
        ranges: Vec<(u32, u64, u64)>,
        next: usize,
    },
    /// Entry by entry from `plan`.
    Entries,
}

/// A pack being written: an iterator of chunks (header, entries, then the
/// SHA-1 trailer of everything before it). Holds its own store snapshot,
/// so it is `'static` and can move to another task.
pub struct PackStream {
    store: ObjectStore,
    chunk_bytes: usize,
    ofs_delta: bool,
    mode: Mode,
    /// Entry locations sorted by (pack, offset).
    plan: Vec<Location>,
    /// Output offset of each planned entry, filled as entries are written.
    out_offsets: Vec<u64>,
    next_entry: usize,
    header: Option<[u8; PACK_HEADER_BYTES]>,
    pending: Option<Pending>,
    buf: Vec<u8>,
    /// Bytes scheduled so far (the output offset of the next entry).
    out_pos: u64,
    /// `None` when the trailer is already part of the streamed bytes.
    hasher: Option<sha1::Sha1>,
    window_pack: u32,
    window_start: u64,
    window: Bytes,
    done: bool,
}

/// Plan a pack of `objects` (duplicates are sent once) and return the
/// stream that writes it. Fails up front if an object is missing.
pub fn pack_stream(
    store: &ObjectStore,
    objects: &[ObjectId],
    opts: PackWriteOptions,
) -> Result<PackStream, PackWriteError> {
    let mut plan = Vec::with_capacity(objects.len());
    for oid in objects {
        match store.locate(oid) {
            Some(loc) => plan.push(loc),
            // The empty tree may be referenced without being stored; every
            // git treats it as present, so it need not be sent.
            None if *oid == ObjectId::EMPTY_TREE_SHA1 => {}
            None => return Err(PackWriteError::Missing(*oid)),
        }
    }
    plan.sort_unstable();
    plan.dedup();
    let count = u32::try_from(plan.len()).map_err(|_| PackWriteError::TooManyObjects {
        count: plan.len(),
        limit: u32::MAX,
    })?;
    let packs = store.packs();

    // Whole stored packs? Count planned entries per pack.
    let mut per_pack = vec![0u32; packs.len()];
    for loc in &plan {
        per_pack[loc.pack as usize] += 1;
    }
    let verbatim = opts.ofs_delta
        && !plan.is_empty()
        && per_pack
            .iter()
            .zip(packs.iter())
            .all(|(n, p)| *n == 0 || *n == p.object_count());
    let chunk_bytes = opts.chunk_bytes.max(1);
    let mut header = [0u8; PACK_HEADER_BYTES];
    header[..4].copy_from_slice(PACK_SIGNATURE);
    header[4..8].copy_from_slice(&PACK_VERSION.to_be_bytes());
    header[8..12].copy_from_slice(&count.to_be_bytes());

    let (mode, header, hasher) = if verbatim {
        let used: Vec<u32> = (0..packs.len() as u32)
            .filter(|i| per_pack[*i as usize] > 0)
            .collect();
        if let [only] = used[..] {
            // One pack: the file as it is, trailer included.
            let len = packs[only as usize].len();
            (
                Mode::Verbatim {
                    ranges: vec![(only, 0, len)],
                    next: 0,
                },
                None,
                None,
            )
        } else {
            let ranges = used
                .iter()
                .map(|&i| (i, PACK_HEADER_BYTES as u64, packs[i as usize].len() - 20))
                .collect();
            (
                Mode::Verbatim { ranges, next: 0 },
                Some(header),
                Some(sha1::Sha1::new()),
            )
        }
    } else {
        (Mode::Entries, Some(header), Some(sha1::Sha1::new()))
    };
    let out_offsets = match mode {
        Mode::Entries => vec![0u64; plan.len()],
        Mode::Verbatim { .. } => Vec::new(),
    };
    Ok(PackStream {
        store: store.clone(),
        chunk_bytes,
        ofs_delta: opts.ofs_delta,
        mode,
        plan,
        out_offsets,
        next_entry: 0,
        header,
        pending: None,
        buf: Vec::with_capacity(chunk_bytes),
        out_pos: 0,
        hasher,
        window_pack: u32::MAX,
        window_start: 0,
        window: Bytes::new(),
        done: false,
    })
}

impl PackStream {
    /// Number of objects in the pack.
    pub fn object_count(&self) -> usize {
        self.plan.len()
    }

    /// Once the stream has ended: every object written and the offset of
    /// its entry in the output, in output order (what an index of the
    /// written pack needs, with each entry's CRC-32). `None` before the end.
    pub fn written_entries(&self) -> Option<Vec<(ObjectId, u64)>> {
        if !self.done {
            return None;
        }
        let packs = self.store.packs();
        match &self.mode {
            Mode::Entries => Some(
                self.plan
                    .iter()
                    .zip(&self.out_offsets)
                    .map(|(loc, out)| {
                        let pack = &packs[loc.pack as usize];
                        let oid = pack
                            .oid_at_offset(loc.offset)
                            .unwrap_or(ObjectId::NULL_SHA1);
                        (oid, *out)
                    })
                    .collect(),
            ),
            Mode::Verbatim { ranges, .. } => {
                let mut out = Vec::with_capacity(self.plan.len());
                // A whole stored pack keeps its header; concatenated bodies
                // follow a new one.
                let mut base = if ranges.first().is_some_and(|r| r.1 == 0) {
                    0
                } else {
                    PACK_HEADER_BYTES as u64
                };
                for &(pack_i, start, end) in ranges {
                    let pack = &packs[pack_i as usize];
                    for &(offset, pos) in pack.entries_by_offset() {
                        out.push((pack.index().oid_at(pos), base + offset - start));
                    }
                    base += end - start;
                }
                Some(out)
            }
        }
    }

    /// True if whole stored packs are streamed verbatim.
    pub fn is_verbatim(&self) -> bool {
        matches!(self.mode, Mode::Verbatim { .. })
    }

    /// For a verbatim pack that has not started streaming: the file ranges
    /// to send, so that a caller with a faster bulk-read path (io_uring DMA)
    /// can stream them itself. `None` for entry-by-entry packs.
    pub fn verbatim_plan(&self) -> Option<VerbatimPlan> {
        let Mode::Verbatim { ranges, next: 0 } = &self.mode else {
            return None;
        };
        if self.out_pos != 0 {
            return None;
        }
        let packs = self.store.packs();
        let ranges = ranges
            .iter()
            .map(|(pack, start, end)| (packs[*pack as usize].current_path(), *start, *end))
            .collect();
        Some(VerbatimPlan {
            header: self.header,
            ranges,
        })
    }

    fn push_bytes(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.out_pos += data.len() as u64;
    }

    fn schedule(&mut self, pending: Pending) {
        self.out_pos += match &pending {
            Pending::Mem(b) => b.len() as u64,
            Pending::File { pos, end, .. } => end - pos,
        };
        self.pending = Some(pending);
    }

    fn flush(&mut self) -> Bytes {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&self.buf);
        }
        Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk_bytes),
        ))
    }

    /// Move part of the pending bytes into the buffer.
    fn drain_pending(&mut self) -> Result<(), PackWriteError> {
        let room = self.chunk_bytes.saturating_sub(self.buf.len()).max(1);
        match self.pending.take() {
            None => {}
            Some(Pending::Mem(mut b)) => {
                let part = b.split_to(room.min(b.len()));
                self.buf.extend_from_slice(&part);
                if !b.is_empty() {
                    self.pending = Some(Pending::Mem(b));
                }
            }
            Some(Pending::File { pack, pos, end }) => {
                let n = room.min((end - pos) as usize);
                let at = self.buf.len();
                self.buf.resize(at + n, 0);
                self.store.packs()[pack as usize].read_into(pos, &mut self.buf[at..])?;
                if pos + (n as u64) < end {
                    self.pending = Some(Pending::File {
                        pack,
                        pos: pos + n as u64,
                        end,
                    });
                }
            }
        }
        Ok(())
    }

    /// The byte range of planned entry `i`.
    fn range_of(&self, i: usize) -> Result<(u64, u64), PackWriteError> {
        let loc = self.plan[i];
        let pack = &self.store.packs()[loc.pack as usize];
        pack.entry_range(loc.offset)
            .ok_or_else(|| PackWriteError::NoEntry {
                path: pack.path().to_path_buf(),
                offset: loc.offset,
            })
    }

    /// The bytes `[start, end)` of planned entry `i`'s pack, through the
    /// read window (refilled to cover the following planned entries too).
    fn window_bytes(&mut self, i: usize, start: u64, end: u64) -> Result<Bytes, PackWriteError> {
        let pack_i = self.plan[i].pack;
        let window_end = self.window_start + self.window.len() as u64;
        if self.window_pack != pack_i || start < self.window_start || end > window_end {
            let mut read_end = end;
            let mut j = i + 1;
            while j < self.plan.len() && self.plan[j].pack == pack_i {
                let (_, e) = self.range_of(j)?;
                if e - start > READ_WINDOW_BYTES as u64 {
                    break;
                }
                read_end = e;
                j += 1;
            }
            let pack = &self.store.packs()[pack_i as usize];
            self.window = pack.read_at(start, (read_end - start) as usize)?;
            self.window_pack = pack_i;
            self.window_start = start;
        }
        let from = (start - self.window_start) as usize;
        let to = (end - self.window_start) as usize;
        Ok(self.window.slice(from..to))
    }

    /// Plan index of the entry stored at `loc`, if it is being sent.
    fn planned(&self, loc: Location) -> Option<usize> {
        self.plan.binary_search(&loc).ok()
    }

    fn write_entry(&mut self, i: usize) -> Result<(), PackWriteError> {
        self.out_offsets[i] = self.out_pos;
        let loc = self.plan[i];
        let (start, end) = self.range_of(i)?;
        let len = (end - start) as usize;
        let small = len <= self.chunk_bytes;
        let head = if small {
            self.window_bytes(i, start, end)?
        } else {
            let pack = &self.store.packs()[loc.pack as usize];
            pack.read_at(start, len.min(HEADER_PREFIX_BYTES))?
        };
        let pack = self.store.packs()[loc.pack as usize].clone();
        let header = decode_header(&head).map_err(|source| PackWriteError::BadEntry {
            path: pack.path().to_path_buf(),
            offset: start,
            source,
        })?;
        // Where the base is, if this is a delta: its stored location and id.
        let base = match header.kind {
            EntryKind::Base(_) => None,
            EntryKind::OfsDelta { distance } => {
                let base_offset = start.checked_sub(distance).filter(|_| distance > 0);
                let base_loc = base_offset.map(|offset| Location {
                    pack: loc.pack,
                    offset,
                });
                let base_oid = base_offset.and_then(|o| pack.oid_at_offset(o));
                match (base_loc, base_oid) {
                    (Some(l), Some(oid)) => Some((l, oid)),
                    _ => {
                        return Err(PackWriteError::NoEntry {
                            path: pack.path().to_path_buf(),
                            offset: start,
                        })
                    }
                }
            }
            EntryKind::RefDelta { base } => match self.store.locate(&base) {
                Some(l) => Some((l, base)),
                None => return Err(PackWriteError::Missing(base)),
            },
        };
        let mut hdr = [0u8; 16];
        match base {
            None => {
                // A whole object: copy it raw.
                if small {
                    self.push_bytes(&head);
                } else {
                    self.schedule(Pending::File {
                        pack: loc.pack,
                        pos: start,
                        end,
                    });
                }
                return Ok(());
            }
            Some((base_loc, base_oid)) => {
                // The base may be sent from the stored location or, if the
                // object is stored twice, from wherever the store finds it.
                let base_index = self
                    .planned(base_loc)
                    .or_else(|| self.store.locate(&base_oid).and_then(|l| self.planned(l)));
                if let Some(b) = base_index {
                    let data_start = start + header.header_len as u64;
                    if self.ofs_delta && b < i {
                        let n = encode_type_size(OFS_DELTA, header.size, &mut hdr);
                        self.push_bytes(&hdr[..n]);
                        let n = encode_ofs_distance(
                            self.out_offsets[i] - self.out_offsets[b],
                            &mut hdr,
                        );
                        self.push_bytes(&hdr[..n]);
                    } else {
                        let n = encode_type_size(REF_DELTA, header.size, &mut hdr);
                        self.push_bytes(&hdr[..n]);
                        self.push_bytes(base_oid.as_bytes());
                    }
                    if small {
                        let data = head.slice(header.header_len..);
                        self.push_bytes(&data);
                    } else {
                        self.schedule(Pending::File {
                            pack: loc.pack,
                            pos: data_start,
                            end,
                        });
                    }
                    return Ok(());
                }
            }
        }
        // A delta whose base is not sent: resolve and deflate it whole.
        let (kind, data) = self.store.read_uncached(loc)?;
        let mut enc = flate2::write::ZlibEncoder::new(
            Vec::with_capacity(data.len() / 2 + 64),
            flate2::Compression::new(DEFLATE_LEVEL),
        );
        enc.write_all(&data).map_err(PackWriteError::Deflate)?;
        let compressed = enc.finish().map_err(PackWriteError::Deflate)?;
        let n = encode_type_size(kind.pack_code(), data.len() as u64, &mut hdr);
        self.push_bytes(&hdr[..n]);
        self.schedule(Pending::Mem(Bytes::from(compressed)));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Bytes>, PackWriteError> {
        loop {
            if self.buf.len() >= self.chunk_bytes {
                return Ok(Some(self.flush()));
            }
            if self.pending.is_some() {
                self.drain_pending()?;
                continue;
            }
            if let Some(h) = self.header.take() {
                self.push_bytes(&h);
                continue;
            }
            match &mut self.mode {
                Mode::Verbatim { ranges, next } => {
                    if let Some(&(pack, pos, end)) = ranges.get(*next) {
                        *next += 1;
                        self.schedule(Pending::File { pack, pos, end });
                        continue;
                    }
                }
                Mode::Entries => {
                    if self.next_entry < self.plan.len() {
                        let i = self.next_entry;
                        self.next_entry += 1;
                        self.write_entry(i)?;
                        continue;
                    }
                }
            }
            // Everything is scheduled and drained: the trailer.
            self.done = true;
            if let Some(h) = self.hasher.take() {
                let mut h = h;
                h.update(&self.buf);
                let digest: [u8; 20] = h.finalize().into();
                self.buf.extend_from_slice(&digest);
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Ok(Some(Bytes::from(std::mem::take(&mut self.buf))));
        }
    }
}

impl Iterator for PackStream {
    type Item = Result<Bytes, PackWriteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
