//! Thin-pack completion (`index-pack --fix-thin`): the bases of REF_DELTAs
//! that the pack leaves out are read from the repository and appended as
//! whole objects; then the object count in the header is rewritten and the
//! trailer recomputed.

use super::error::{io_err, IngestError};
use super::parse::{Base, Entry, Resolved, TRAILER_BYTES};
use super::resolve::{Resolution, Worker};
use super::ObjectSource;
use crate::object::ObjectKind;
use crate::oid::ObjectId;
use crate::pack::entry::encode_type_size;
use sha1::Digest;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Whole objects appended to complete a thin pack.
pub(super) struct Appended {
    pub(super) count: u32,
    /// End of the last entry (where the trailer goes).
    pub(super) end: u64,
}

/// Append the bases of still unresolved REF_DELTAs from `repo` at `end`,
/// in pack order of the deltas (as `index-pack --fix-thin`), resolving each
/// base's delta tree right away.
pub(super) fn complete(
    resolution: &mut Resolution<'_>,
    repo: &dyn ObjectSource,
    mut end: u64,
) -> Result<Appended, IngestError> {
    let limits = resolution.limits;
    let waiting: Vec<u32> = (0..resolution.entries.len() as u32)
        .filter(|&i| {
            resolution.results[i as usize].get().is_none()
                && matches!(resolution.entries[i as usize].base, Base::Ref(_))
        })
        .collect();
    let mut count = 0u32;
    let mut worker = Worker::new(limits.delta_cache_bytes, resolution.checks, limits);
    for i in waiting {
        let entry = resolution.entries[i as usize];
        let Base::Ref(base) = entry.base else {
            continue;
        };
        // an earlier base may have resolved it already
        if resolution.results[i as usize].get().is_some() {
            continue;
        }
        let appended = fetch_base(resolution, repo, &entry, base, end)?;
        resolution
            .file
            .write_all_at(&appended.raw, end)
            .map_err(io_err("appending a thin-pack base"))?;
        end += appended.raw.len() as u64;
        count += 1;
        let object = Resolved {
            oid: base,
            kind: appended.kind,
            depth: 0,
            base: Resolved::NO_BASE,
        };
        resolution.add_base(&mut worker, appended.entry, object, appended.data)?;
    }
    resolution.keep_checks(worker);
    Ok(Appended { count, end })
}

/// A base read from the repository, to be appended as a whole object.
struct ThinBase {
    kind: ObjectKind,
    data: Vec<u8>,
    /// The entry as it goes into the file.
    raw: Vec<u8>,
    entry: Entry,
}

/// Base `base` of the REF_DELTA `delta`, read from `repo`, as an entry to
/// append at `end`.
fn fetch_base(
    resolution: &Resolution<'_>,
    repo: &dyn ObjectSource,
    delta: &Entry,
    base: ObjectId,
    end: u64,
) -> Result<ThinBase, IngestError> {
    let limits = resolution.limits;
    let Some((kind, data)) = repo.read_object(&base) else {
        return Err(IngestError::MissingBase {
            offset: delta.offset,
            base,
        });
    };
    if data.len() as u64 > limits.object_max_bytes {
        return Err(IngestError::ObjectTooLarge {
            offset: delta.offset,
            size: data.len() as u64,
            limit: limits.object_max_bytes,
        });
    }
    if resolution.entries.len() as u64 >= u64::from(u32::MAX) {
        return Err(IngestError::TooManyObjects {
            count: u32::MAX,
            limit: limits.objects_max,
        });
    }
    let (raw, header_len) = encode_whole(kind, &data)?;
    let entry = Entry {
        offset: end,
        packed_len: raw.len() as u64,
        header_len,
        crc32: crc32fast::hash(&raw),
        size: data.len() as u64,
        base: Base::Whole(kind),
    };
    Ok(ThinBase {
        kind,
        data,
        raw,
        entry,
    })
}

/// A whole-object pack entry (header + zlib data) and its header length.
fn encode_whole(kind: ObjectKind, data: &[u8]) -> Result<(Vec<u8>, u8), IngestError> {
    let mut header = [0u8; 16];
    let n = encode_type_size(kind.pack_code(), data.len() as u64, &mut header);
    let mut out = Vec::with_capacity(n + data.len() / 2 + 64);
    out.extend_from_slice(&header[..n]);
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
    z.write_all(data)
        .map_err(io_err("compressing a thin-pack base"))?;
    let out = z.finish().map_err(io_err("compressing a thin-pack base"))?;
    Ok((out, n as u8))
}

/// Rewrite the object count and the trailer after thin completion; returns
/// the new checksum.
pub(super) fn rewrite_header_and_trailer(
    file: &File,
    objects: u32,
    end: u64,
) -> Result<[u8; 20], IngestError> {
    const HASH_READ_BUFFER_BYTES: usize = 1 << 20;
    file.write_all_at(&objects.to_be_bytes(), 8)
        .map_err(io_err("rewriting the pack header"))?;
    let mut hash = sha1::Sha1::new();
    let mut buf = vec![0u8; HASH_READ_BUFFER_BYTES];
    let mut pos = 0u64;
    while pos < end {
        let n = (end - pos).min(HASH_READ_BUFFER_BYTES as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("reading the pack back"))?;
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    let checksum: [u8; 20] = hash.finalize().into();
    file.write_all_at(&checksum, end)
        .map_err(io_err("writing the pack trailer"))?;
    file.set_len(end + TRAILER_BYTES as u64)
        .map_err(io_err("truncating the pack"))?;
    Ok(checksum)
}
