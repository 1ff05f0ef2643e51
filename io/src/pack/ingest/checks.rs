//! The object checks of ingest, written once for every object however it
//! arrived: whole objects as they stream past, deltas as the resolver's
//! threads rebuild them (git's `index-pack --strict`: `fsck_object` on each
//! new object, then `fsck_finish` and the connectivity check).
//!
//! Each pass (the stream, each resolver thread) fills its own
//! [`ObjectChecks`]; [`run`] merges them and decides, so the verdict names
//! the first offending object in pack order whatever the threads did.

use super::error::IngestError;
use super::parse::{Base, Entry, Resolved};
use super::resolve::read_pack_object;
use super::{CheckOptions, IngestLimits, ObjectSource};
use crate::fsck::{self, FsckError, FsckOptions, Link, SpecialBlob, SpecialObject};
use crate::object::ObjectKind;
use crate::oid::ObjectId;
use std::collections::{HashMap, HashSet};
use std::fs::File;

/// Objects named `.gitmodules`/`.gitattributes`, each once, at most
/// `IngestLimits::special_blobs_max` of them.
#[derive(Default)]
struct SpecialBlobs {
    set: HashSet<SpecialBlob>,
    /// More were named than the limit allows.
    overflow: bool,
}

impl SpecialBlobs {
    /// Move what `scratch` holds into the set.
    fn remember(&mut self, scratch: &mut Vec<SpecialBlob>, max: usize) {
        for special in scratch.drain(..) {
            if self.set.len() < max || self.set.contains(&special) {
                self.set.insert(special);
            } else {
                self.overflow = true;
            }
        }
    }

    fn merge(&mut self, other: SpecialBlobs, max: usize) {
        self.overflow |= other.overflow;
        self.remember(&mut other.set.into_iter().collect(), max);
    }
}

/// True if nothing is recorded in `slot` yet, or only something later in
/// the pack than `offset`.
fn is_first<T>(slot: &Option<(u64, T)>, offset: u64) -> bool {
    slot.as_ref().is_none_or(|(first, _)| offset < *first)
}

/// What the checks found in the objects one pass saw.
pub(super) struct ObjectChecks {
    options: CheckOptions,
    special_blobs_max: usize,
    /// First fsck failure, by pack offset.
    fsck: Option<(u64, FsckError)>,
    /// First object whose links could not be parsed.
    unparsable: Option<(u64, IngestError)>,
    /// Each link once, with the first object (offset, id) that points along it.
    links: HashMap<Link, (u64, ObjectId)>,
    /// Objects trees name `.gitmodules`/`.gitattributes` (git's
    /// `gitmodules_found`), checked at the end.
    special: SpecialBlobs,
    link_scratch: Vec<Link>,
    special_scratch: Vec<SpecialBlob>,
}

impl ObjectChecks {
    /// Checks that record what `options` asks for.
    pub(super) fn new(options: CheckOptions, special_blobs_max: usize) -> ObjectChecks {
        ObjectChecks {
            options,
            special_blobs_max,
            fsck: None,
            unparsable: None,
            links: HashMap::new(),
            special: SpecialBlobs::default(),
            link_scratch: Vec::new(),
            special_scratch: Vec::new(),
        }
    }

    /// Check one new object, found at pack offset `offset`. Blobs are
    /// checked only where a tree names them `.gitmodules`/`.gitattributes`.
    pub(super) fn check(&mut self, offset: u64, oid: ObjectId, kind: ObjectKind, data: &[u8]) {
        if kind == ObjectKind::Blob {
            return;
        }
        if self.options.strict && is_first(&self.fsck, offset) {
            if let Err(e) = fsck::check_object_collecting(
                &oid,
                kind,
                data,
                &FsckOptions::default(),
                &mut self.special_scratch,
            ) {
                self.fsck = Some((offset, e));
            }
            self.special
                .remember(&mut self.special_scratch, self.special_blobs_max);
        }
        if !self.options.check_links && !self.options.strict {
            return;
        }
        self.link_scratch.clear();
        match fsck::object_links(kind, data, &mut self.link_scratch) {
            Ok(()) if self.options.check_links => {
                for link in self.link_scratch.drain(..) {
                    let first = self.links.entry(link).or_insert((offset, oid));
                    if offset < first.0 {
                        *first = (offset, oid);
                    }
                }
            }
            Ok(()) => {}
            Err(source) => {
                if is_first(&self.unparsable, offset) {
                    self.unparsable = Some((offset, IngestError::Unparsable { oid, source }));
                }
            }
        }
    }

    /// Fold `other` in, keeping the first of everything in pack order.
    fn merge(&mut self, other: ObjectChecks) {
        if let Some((offset, e)) = other.fsck {
            if is_first(&self.fsck, offset) {
                self.fsck = Some((offset, e));
            }
        }
        if let Some((offset, e)) = other.unparsable {
            if is_first(&self.unparsable, offset) {
                self.unparsable = Some((offset, e));
            }
        }
        for (link, (offset, from)) in other.links {
            let first = self.links.entry(link).or_insert((offset, from));
            if offset < first.0 {
                *first = (offset, from);
            }
        }
        self.special.merge(other.special, self.special_blobs_max);
    }
}

/// The resolved objects of a pack, before it has an index.
pub(super) struct PackObjects<'a> {
    pub(super) file: &'a File,
    pub(super) entries: &'a [Entry],
    pub(super) resolved: &'a [Resolved],
    /// (oid, entry index), sorted.
    by_oid: Vec<(ObjectId, u32)>,
    pub(super) limits: &'a IngestLimits,
}

impl<'a> PackObjects<'a> {
    /// The objects of `entries`, each id once ([`IngestError::DuplicateObject`]
    /// otherwise).
    pub(super) fn new(
        file: &'a File,
        entries: &'a [Entry],
        resolved: &'a [Resolved],
        limits: &'a IngestLimits,
    ) -> Result<Self, IngestError> {
        debug_assert_eq!(entries.len(), resolved.len());
        let mut by_oid: Vec<(ObjectId, u32)> = resolved
            .iter()
            .enumerate()
            .map(|(i, r)| (r.oid, i as u32))
            .collect();
        by_oid.sort_unstable();
        if let Some(w) = by_oid.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(IngestError::DuplicateObject { oid: w[0].0 });
        }
        Ok(PackObjects {
            file,
            entries,
            resolved,
            by_oid,
            limits,
        })
    }

    /// Entry index of `oid`.
    fn find(&self, oid: &ObjectId) -> Option<usize> {
        let pos = self.by_oid.binary_search_by(|(o, _)| o.cmp(oid)).ok()?;
        Some(self.by_oid[pos].1 as usize)
    }

    /// The kind of `oid` if the pack has it, or the repository (where git
    /// treats the empty tree as always present).
    fn kind_of(&self, oid: &ObjectId, repo: &dyn ObjectSource) -> Option<ObjectKind> {
        match self.find(oid) {
            Some(i) => Some(self.resolved[i].kind),
            None if *oid == ObjectId::EMPTY_TREE_SHA1 => Some(ObjectKind::Tree),
            None => repo.object_kind(oid),
        }
    }
}

/// The verdict over everything streamed and resolved: the first object
/// that could not be parsed, then the first fsck failure, then every link,
/// then the contents of the objects trees name `.gitmodules` or
/// `.gitattributes` (git's `fsck_finish`, after its connectivity check).
pub(super) fn run(
    options: &CheckOptions,
    passes: Vec<ObjectChecks>,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    if !options.strict && !options.check_links {
        return Ok(());
    }
    let mut all = ObjectChecks::new(*options, pack.limits.special_blobs_max);
    for pass in passes {
        all.merge(pass);
    }
    if let Some((_, e)) = all.unparsable {
        return Err(e);
    }
    if options.strict {
        if let Some((_, e)) = all.fsck {
            return Err(IngestError::Fsck(e));
        }
    }
    if options.check_links {
        check_links(all.links, pack, repo)?;
    }
    if options.strict {
        check_special_blobs(all.special, pack, repo)?;
    }
    Ok(())
}

/// Every link resolves to an object of the kind it names. Links are tried
/// in order of the id they point at.
fn check_links(
    links: HashMap<Link, (u64, ObjectId)>,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    let mut links: Vec<(Link, ObjectId)> = links
        .into_iter()
        .map(|(link, (_, from))| (link, from))
        .collect();
    links.sort_unstable_by_key(|(link, _)| (link.oid, link.kind.pack_code()));
    for (link, from) in links {
        match pack.kind_of(&link.oid, repo) {
            None => {
                return Err(IngestError::MissingLink {
                    from,
                    missing: link.oid,
                })
            }
            Some(kind) if kind != link.kind => {
                return Err(IngestError::LinkKindMismatch {
                    from,
                    oid: link.oid,
                    expected: link.kind,
                    actual: kind,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// git's `fsck_finish`: the contents of each object a new tree names
/// `.gitmodules` or `.gitattributes`, read from the pack or, if the pack
/// does not have it, from the repository. One object at a time is held.
fn check_special_blobs(
    special: SpecialBlobs,
    pack: &PackObjects<'_>,
    repo: &dyn ObjectSource,
) -> Result<(), IngestError> {
    if special.overflow {
        return Err(IngestError::TooManySpecialBlobs {
            limit: pack.limits.special_blobs_max,
        });
    }
    let mut special: Vec<SpecialBlob> = special.set.into_iter().collect();
    special.sort_unstable();
    for blob in special {
        let max_bytes = fsck::special_blob_max_bytes(blob.file);
        let data;
        let object = match pack.find(&blob.oid) {
            Some(i) => match pack.resolved[i].kind {
                ObjectKind::Blob => {
                    let entry = &pack.entries[i];
                    if matches!(entry.base, Base::Whole(_)) && entry.size > max_bytes {
                        SpecialObject::TooLarge(entry.size)
                    } else {
                        data = read_pack_object(
                            pack.file,
                            pack.entries,
                            pack.resolved,
                            i,
                            pack.limits,
                        )?;
                        SpecialObject::Blob(&data)
                    }
                }
                kind => SpecialObject::NotBlob(kind),
            },
            // git's object store always has the empty tree
            None if blob.oid == ObjectId::EMPTY_TREE_SHA1 => {
                SpecialObject::NotBlob(ObjectKind::Tree)
            }
            None => match repo.object_kind(&blob.oid) {
                None => SpecialObject::Missing,
                Some(ObjectKind::Blob) => match repo.read_object(&blob.oid) {
                    Some((_, bytes)) => {
                        data = bytes;
                        SpecialObject::Blob(&data)
                    }
                    None => SpecialObject::Missing,
                },
                Some(kind) => SpecialObject::NotBlob(kind),
            },
        };
        fsck::check_special_blob(&blob, object)?;
    }
    Ok(())
}
