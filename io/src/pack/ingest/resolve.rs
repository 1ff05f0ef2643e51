//! Delta resolution (gix-pack's `cache/delta/traverse`): every delta
//! rebuilt from the stored pack with positional reads, hashed, and checked.
//!
//! The entries form delta trees: a whole object and everything built on it.
//! Each tree is one task; [`Resolution::resolve_in_pack`] starts its own
//! worker threads (std scoped threads, `IngestLimits::threads` of them, not
//! the caller's executor) that take trees in pack order and walk each depth
//! first with a bounded cache of base data per worker; evicted bases are
//! rebuilt from the file, as git does.

use super::checks::ObjectChecks;
use super::error::{io_err, IngestError};
use super::parse::{Base, Entry, ParsedPack, Resolved};
use super::{CheckOptions, IngestLimits, IngestStats};
use crate::delta::apply_delta;
use crate::interrupt::Interrupt;
use crate::object::hash_object_checked;
use crate::oid::ObjectId;
use flate2::{Decompress, FlushDecompress, Status};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Read buffer for compressed entry data during resolution.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// Inflate entry `e`'s data from `file` (its size was verified while streaming).
fn inflate_entry(
    file: &File,
    e: &Entry,
    z: &mut Decompress,
    read_buf: &mut [u8],
    largest: &AtomicU64,
) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(e.size as usize);
    largest.fetch_max(out.capacity() as u64, Ordering::Relaxed);
    z.reset(true);
    let mut pos = e.offset + u64::from(e.header_len);
    let end = e.offset + e.packed_len;
    let corrupt = |message: &str| IngestError::CorruptZlib {
        offset: e.offset,
        message: format!("{message} (re-reading the temporary pack)"),
    };
    while pos < end {
        let n = (end - pos).min(read_buf.len() as u64) as usize;
        file.read_exact_at(&mut read_buf[..n], pos)
            .map_err(io_err("reading the temporary pack"))?;
        pos += n as u64;
        let mut chunk = &read_buf[..n];
        loop {
            let before_in = z.total_in();
            let before_out = z.total_out();
            let status = z
                .decompress_vec(chunk, &mut out, FlushDecompress::None)
                .map_err(|err| corrupt(&err.to_string()))?;
            let consumed = (z.total_in() - before_in) as usize;
            chunk = &chunk[consumed..];
            if status == Status::StreamEnd {
                if out.len() as u64 != e.size {
                    return Err(corrupt("size changed"));
                }
                return Ok(out);
            }
            if chunk.is_empty() || (consumed == 0 && z.total_out() == before_out) {
                break;
            }
        }
    }
    Err(corrupt("zlib stream does not end"))
}

/// The whole object of entry `i`: its chain of deltas applied, from the file.
pub(super) fn read_pack_object(
    file: &File,
    entries: &[Entry],
    resolved: &[Resolved],
    mut i: usize,
    limits: &IngestLimits,
) -> Result<Vec<u8>, IngestError> {
    let offset = entries[i].offset;
    let mut chain = Vec::new();
    while resolved[i].base != Resolved::NO_BASE {
        chain.push(i);
        i = resolved[i].base as usize;
        if chain.len() as u64 > u64::from(limits.delta_chain_max) + 1 {
            return Err(IngestError::DeltaChainTooDeep {
                offset,
                depth: chain.len() as u32,
                limit: limits.delta_chain_max,
            });
        }
    }
    let mut z = Decompress::new(true);
    let mut read_buf = vec![0u8; READ_BUFFER_BYTES];
    let largest = AtomicU64::new(0);
    let mut data = inflate_entry(file, &entries[i], &mut z, &mut read_buf, &largest)?;
    let mut out = Vec::new();
    for &d in chain.iter().rev() {
        let delta = inflate_entry(file, &entries[d], &mut z, &mut read_buf, &largest)?;
        apply_delta(&data, &delta, &mut out, limits.object_max_bytes).map_err(|source| {
            IngestError::BadDelta {
                offset: entries[d].offset,
                source,
            }
        })?;
        std::mem::swap(&mut data, &mut out);
    }
    Ok(data)
}

/// Frame of the depth-first walk over one delta tree.
struct Frame {
    idx: u32,
    res: Resolved,
    /// The object's data, unless evicted (then rebuilt from the file).
    data: Option<Vec<u8>>,
    children: Vec<u32>,
    next: usize,
}

/// Per-thread state of delta resolution.
pub(super) struct Worker {
    z: Decompress,
    read_buf: Vec<u8>,
    /// Bytes of base data this worker may hold.
    budget: usize,
    checks: ObjectChecks,
}

/// Read-only view shared by the workers.
struct Shared<'a> {
    file: &'a File,
    entries: &'a [Entry],
    results: &'a [OnceLock<Resolved>],
    children: &'a DeltaChildren,
    limits: &'a IngestLimits,
    largest: &'a AtomicU64,
    deltas: &'a AtomicU64,
    /// Bytes inflated and produced by deltas so far, streaming included.
    produced: &'a AtomicU64,
    /// The most `produced` may reach.
    produced_limit: u64,
    interrupt: &'a Interrupt,
}

impl Shared<'_> {
    /// Count `bytes` more produced; an error past the pack's allowance.
    fn produce(&self, bytes: usize) -> Result<(), IngestError> {
        let total = self.produced.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if total > self.produced_limit {
            return Err(IngestError::TooMuchInflation {
                limit: self.produced_limit,
            });
        }
        Ok(())
    }
}

impl Worker {
    pub(super) fn new(budget: usize, checks: CheckOptions, limits: &IngestLimits) -> Worker {
        Worker {
            z: Decompress::new(true),
            read_buf: vec![0; READ_BUFFER_BYTES],
            budget,
            checks: ObjectChecks::new(checks, limits.special_blobs_max),
        }
    }

    fn inflate(&mut self, sh: &Shared, idx: u32) -> Result<Vec<u8>, IngestError> {
        let entry = &sh.entries[idx as usize];
        sh.produce(entry.size as usize)?;
        inflate_entry(sh.file, entry, &mut self.z, &mut self.read_buf, sh.largest)
    }

    fn apply(&mut self, sh: &Shared, base: &[u8], idx: u32) -> Result<Vec<u8>, IngestError> {
        let delta = self.inflate(sh, idx)?;
        if let Ok((_, result_size)) = crate::delta::delta_sizes(&delta) {
            sh.produce(result_size as usize)?;
        }
        let mut out = Vec::new();
        apply_delta(base, &delta, &mut out, sh.limits.object_max_bytes).map_err(|source| {
            IngestError::BadDelta {
                offset: sh.entries[idx as usize].offset,
                source,
            }
        })?;
        sh.largest
            .fetch_max(out.capacity() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Make sure `stack[k]` holds its data, rebuilding it from the nearest
    /// frame below that still does (or from the root entry).
    fn ensure_data(
        &mut self,
        sh: &Shared,
        stack: &mut [Frame],
        k: usize,
        held: &mut usize,
    ) -> Result<(), IngestError> {
        if stack[k].data.is_some() {
            return Ok(());
        }
        let mut j = k;
        while j > 0 && stack[j].data.is_none() {
            j -= 1;
        }
        let mut current: Option<Vec<u8>> = None;
        if stack[j].data.is_none() {
            current = Some(self.inflate(sh, stack[j].idx)?);
        }
        for frame in &stack[j + 1..=k] {
            let base: &[u8] = match &current {
                Some(c) => c,
                None => stack[j].data.as_deref().unwrap_or(&[]),
            };
            current = Some(self.apply(sh, base, frame.idx)?);
        }
        let data = current.unwrap_or_default();
        *held += data.len();
        stack[k].data = Some(data);
        Ok(())
    }

    /// Drop the data of the frames nearest the root until at most the
    /// budget is held; the top frame keeps its data.
    fn evict(&self, stack: &mut [Frame], held: &mut usize) {
        let keep = stack.len().saturating_sub(1);
        for f in &mut stack[..keep] {
            if *held <= self.budget {
                break;
            }
            if let Some(d) = f.data.take() {
                *held -= d.len();
            }
        }
    }

    /// Resolve delta `child` of the top frame of `stack`: rebuild, hash and
    /// check it. None if another worker got there first.
    fn resolve_child(
        &mut self,
        sh: &Shared,
        stack: &mut [Frame],
        child: u32,
        held: &mut usize,
    ) -> Result<Option<(Resolved, Vec<u8>)>, IngestError> {
        let top = stack.len() - 1;
        let base = stack[top].res;
        let slot = &sh.results[child as usize];
        if slot.get().is_some() {
            return Ok(None);
        }
        let offset = sh.entries[child as usize].offset;
        let depth = base.depth + 1;
        if depth > sh.limits.delta_chain_max {
            return Err(IngestError::DeltaChainTooDeep {
                offset,
                depth,
                limit: sh.limits.delta_chain_max,
            });
        }
        self.ensure_data(sh, stack, top, held)?;
        let out = {
            let base_data = stack[top].data.as_deref().unwrap_or(&[]);
            self.apply(sh, base_data, child)?
        };
        let oid = hash_object_checked(base.kind, &out)
            .map_err(|source| IngestError::Collision { offset, source })?;
        let res = Resolved {
            oid,
            kind: base.kind,
            depth,
            base: stack[top].idx,
        };
        if slot.set(res).is_err() {
            return Ok(None);
        }
        sh.deltas.fetch_add(1, Ordering::Relaxed);
        self.checks.check(offset, res.oid, res.kind, &out);
        Ok(Some((res, out)))
    }

    /// Resolve every delta built on `root`, depth first.
    fn resolve_tree(
        &mut self,
        sh: &Shared,
        root: u32,
        root_data: Option<Vec<u8>>,
    ) -> Result<(), IngestError> {
        let Some(res) = sh.results[root as usize].get().copied() else {
            return Ok(());
        };
        let children = sh.children.of(root, &res.oid);
        if children.is_empty() {
            return Ok(());
        }
        let data = match root_data {
            Some(d) => d,
            None => self.inflate(sh, root)?,
        };
        let mut held = data.len();
        let mut stack = vec![Frame {
            idx: root,
            res,
            data: Some(data),
            children,
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(&child) = frame.children.get(frame.next) else {
                if let Some(d) = stack.pop().and_then(|f| f.data) {
                    held -= d.len();
                }
                continue;
            };
            frame.next += 1;
            if sh.interrupt.is_set() {
                return Err(IngestError::Interrupted);
            }
            let Some((res, out)) = self.resolve_child(sh, &mut stack, child, &mut held)? else {
                continue;
            };
            let children = sh.children.of(child, &res.oid);
            if children.is_empty() {
                continue;
            }
            held += out.len();
            stack.push(Frame {
                idx: child,
                res,
                data: Some(out),
                children,
                next: 0,
            });
            if held > self.budget {
                self.evict(&mut stack, &mut held);
            }
        }
        Ok(())
    }
}

/// Delta resolution over the received entries.
pub(super) struct Resolution<'a> {
    pub(super) file: &'a File,
    pub(super) entries: Vec<Entry>,
    pub(super) results: Vec<OnceLock<Resolved>>,
    children: DeltaChildren,
    pub(super) limits: &'a IngestLimits,
    pub(super) checks: CheckOptions,
    largest: AtomicU64,
    deltas: AtomicU64,
    produced: AtomicU64,
    produced_limit: u64,
    interrupt: Interrupt,
    /// What each worker's checks found.
    passes: Vec<ObjectChecks>,
}

/// The deltas built directly on each entry.
struct DeltaChildren {
    /// `ofs_list[ofs_start[i]..ofs_start[i + 1]]`: the OFS_DELTAs against entry i.
    ofs_start: Vec<u32>,
    ofs_list: Vec<u32>,
    /// The REF_DELTAs against each base id.
    ref_children: HashMap<ObjectId, Vec<u32>>,
}

impl DeltaChildren {
    fn new(entries: &[Entry]) -> DeltaChildren {
        let n = entries.len();
        let mut counts = vec![0u32; n + 1];
        let mut ref_children: HashMap<ObjectId, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            match e.base {
                Base::Ofs(b) => counts[b as usize + 1] += 1,
                Base::Ref(oid) => ref_children.entry(oid).or_default().push(i as u32),
                Base::Whole(_) => {}
            }
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let ofs_start = counts.clone();
        let mut fill = counts;
        let mut ofs_list = vec![0u32; ofs_start[n] as usize];
        for (i, e) in entries.iter().enumerate() {
            if let Base::Ofs(b) = e.base {
                ofs_list[fill[b as usize] as usize] = i as u32;
                fill[b as usize] += 1;
            }
        }
        DeltaChildren {
            ofs_start,
            ofs_list,
            ref_children,
        }
    }

    /// The deltas against entry `idx` (object `oid`), those known to have
    /// no deltas of their own first: they are resolved while their base is
    /// at hand, before the walk descends and the base may be evicted (a
    /// "comb" of long objects, each with a leaf and a deeper delta, would
    /// otherwise rebuild its whole chain for every leaf).
    fn of(&self, idx: u32, oid: &ObjectId) -> Vec<u32> {
        let i = idx as usize;
        let mut out = Vec::new();
        if i + 1 < self.ofs_start.len() {
            out.extend_from_slice(
                &self.ofs_list[self.ofs_start[i] as usize..self.ofs_start[i + 1] as usize],
            );
        }
        if let Some(refs) = self.ref_children.get(oid) {
            out.extend_from_slice(refs);
        }
        out.sort_by_key(|&c| self.has_ofs_children(c));
        out
    }

    /// True if an OFS_DELTA is built on entry `idx`.
    fn has_ofs_children(&self, idx: u32) -> bool {
        let i = idx as usize;
        i + 1 < self.ofs_start.len() && self.ofs_start[i] != self.ofs_start[i + 1]
    }

    /// True if any delta is built on entry `idx` (object `oid`).
    fn any(&self, idx: u32, oid: &ObjectId) -> bool {
        let i = idx as usize;
        self.ofs_start[i] != self.ofs_start[i + 1] || self.ref_children.contains_key(oid)
    }
}

/// Every entry resolved.
pub(super) struct ResolvedPack {
    pub(super) entries: Vec<Entry>,
    /// Per entry, its object.
    pub(super) resolved: Vec<Resolved>,
    /// What the workers' checks found.
    pub(super) passes: Vec<ObjectChecks>,
    /// Largest object buffer allocated.
    pub(super) largest_buffer: u64,
    /// Deltas resolved.
    pub(super) deltas: u32,
}

impl ResolvedPack {
    /// Objects in the pack.
    pub(super) fn count(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Measurements, with the number of thin-pack bases appended.
    pub(super) fn stats(&self, thin_bases_appended: u32) -> IngestStats {
        IngestStats {
            largest_object_buffer_bytes: self.largest_buffer,
            deltas: self.deltas,
            thin_bases_appended,
        }
    }
}

impl<'a> Resolution<'a> {
    pub(super) fn new(
        file: &'a File,
        parsed: ParsedPack,
        limits: &'a IngestLimits,
        checks: CheckOptions,
        interrupt: Interrupt,
    ) -> Self {
        let ParsedPack {
            entries,
            resolved,
            largest_buffer,
            end,
            inflated,
            ..
        } = parsed;
        let produced_limit = limits.inflated_limit(end + 20);
        let children = DeltaChildren::new(&entries);
        let results = resolved
            .into_iter()
            .map(|r| {
                let cell = OnceLock::new();
                if let Some(r) = r {
                    let _ = cell.set(r);
                }
                cell
            })
            .collect();
        Resolution {
            file,
            entries,
            results,
            children,
            limits,
            checks,
            largest: AtomicU64::new(largest_buffer),
            deltas: AtomicU64::new(0),
            produced: AtomicU64::new(inflated),
            produced_limit,
            interrupt,
            passes: Vec::new(),
        }
    }

    fn shared(&self) -> Shared<'_> {
        Shared {
            file: self.file,
            entries: &self.entries,
            results: &self.results,
            children: &self.children,
            limits: self.limits,
            largest: &self.largest,
            deltas: &self.deltas,
            produced: &self.produced,
            produced_limit: self.produced_limit,
            interrupt: &self.interrupt,
        }
    }

    /// Whole objects in the pack that have deltas built on them.
    fn roots(&self) -> Vec<u32> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.base, Base::Whole(_)))
            .map(|(i, _)| i as u32)
            .filter(|&i| {
                let oid = self.results[i as usize]
                    .get()
                    .map(|r| r.oid)
                    .unwrap_or(ObjectId::NULL_SHA1);
                self.children.any(i, &oid)
            })
            .collect()
    }

    /// Resolve every delta whose chain starts at a whole object in the
    /// pack, one delta tree per task, on `threads` workers. The reported
    /// error is the one of the first failing tree in pack order.
    pub(super) fn resolve_in_pack(&mut self) -> Result<(), IngestError> {
        let roots = self.roots();
        if roots.is_empty() {
            return Ok(());
        }
        let threads = self.limits.threads.max(1).min(roots.len());
        let budget = self.limits.delta_cache_bytes / threads;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let sh = self.shared();
        let run = || {
            let mut worker = Worker::new(budget, self.checks, self.limits);
            let mut failure = None;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&root) = roots.get(i) else {
                    break;
                };
                if let Err(e) = worker.resolve_tree(&sh, root, None) {
                    failure = Some((i, e));
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            (worker.checks, failure)
        };
        let results: Vec<(ObjectChecks, Option<(usize, IngestError)>)> = if threads == 1 {
            vec![run()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads).map(|_| s.spawn(run)).collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            let panicked = IngestError::Io {
                                context: "resolving deltas",
                                source: std::io::Error::other("worker thread panicked"),
                            };
                            (
                                ObjectChecks::new(self.checks, self.limits.special_blobs_max),
                                Some((0, panicked)),
                            )
                        })
                    })
                    .collect()
            })
        };
        let mut first_error: Option<(usize, IngestError)> = None;
        for (checks, failure) in results {
            self.passes.push(checks);
            if let Some((i, e)) = failure {
                if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_error = Some((i, e));
                }
            }
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Add a whole object at the end of the entry list (a thin-pack base
    /// appended to the file) and resolve its delta tree with `worker`.
    pub(super) fn add_base(
        &mut self,
        worker: &mut Worker,
        entry: Entry,
        object: Resolved,
        data: Vec<u8>,
    ) -> Result<(), IngestError> {
        let idx = self.entries.len() as u32;
        self.entries.push(entry);
        let cell = OnceLock::new();
        let _ = cell.set(object);
        self.results.push(cell);
        let sh = self.shared();
        worker.resolve_tree(&sh, idx, Some(data))
    }

    /// Keep what `worker`'s checks found.
    pub(super) fn keep_checks(&mut self, worker: Worker) {
        self.passes.push(worker.checks);
    }

    /// Every entry must be resolved by now.
    pub(super) fn finish(self) -> Result<ResolvedPack, IngestError> {
        let mut unresolved = self
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.get().is_none());
        if let Some((first, _)) = unresolved.next() {
            return Err(IngestError::UnresolvedDeltas {
                count: 1 + unresolved.count(),
                offset: self.entries[first].offset,
            });
        }
        let resolved = self
            .results
            .into_iter()
            .map(|r| r.into_inner().ok_or(IngestError::AlreadyFailed))
            .collect::<Result<_, _>>()?;
        Ok(ResolvedPack {
            entries: self.entries,
            resolved,
            passes: self.passes,
            largest_buffer: self.largest.load(Ordering::Relaxed),
            deltas: self.deltas.load(Ordering::Relaxed) as u32,
        })
    }
}
