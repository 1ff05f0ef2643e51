//! Bundle URIs (gitprotocol-v2 `bundle-uri`, git's `transfer.bundleURI`).
//!
//! A repository that is cloned often gets a git bundle: a v2 bundle file
//! (`# v2 git bundle`, one `<oid> <ref>` line per ref, a blank line, then
//! a pack of everything those refs reach), written by the repository's
//! shard in idle time (see [`crate::maintenance`]) into
//! `DATA/repos/OWNER/NAME.git/bundles/<sequence>-<pack checksum>.bundle`.
//! A v2 client that asks (`git -c transfer.bundleURI=true clone`) hears of
//! it from the `bundle-uri` command, downloads it as a static file —
//! `GET /git/OWNER/NAME.git/bundles/<file>`, with the repository's read
//! permission, streamed from disk — unbundles it, and then fetches only
//! what is newer, with the bundle's refs as its haves.
//!
//! When: once [`BundleSettings::clones`] clones (full clones, and clones
//! that asked for the bundle list) were served since the last bundle, the
//! refs changed since it, the repository is quiet, and its packs hold at
//! least [`BundleSettings::min_bytes`]. The pack is the one a clone gets
//! ([`guts_io::pack::write::pack_stream`]: the stored pack copied as it
//! is when it holds exactly what the refs reach). The file is written
//! under a temporary name, fsynced and renamed in; the newest
//! [`BUNDLES_KEPT`] bundles are kept, so a client that was just told of
//! the previous one still finds it, and a reader holding an older file
//! open keeps reading it after it is unlinked.

use crate::body::ResponseBody;
use crate::repo::Repo;
use crate::shard::Shard;
use crate::work::{contained, WorkError};
use bytes::Bytes;
use guts_io::pack::write::{pack_stream, PackStream, PackWriteError, PackWriteOptions};
use guts_io::walk::{self, WalkError, WalkRequest};
use guts_io::ObjectId;
use http::{header, Method, Request, Response, StatusCode};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, LazyLock, Mutex};

/// Default clones between two bundles of a repository.
pub const BUNDLE_CLONES: u64 = 4;
/// Default least bytes of packs for a repository to get a bundle.
pub const BUNDLE_MIN_BYTES: u64 = 1 << 20;
/// The directory of a repository's bundles.
pub const BUNDLES_DIR: &str = "bundles";
/// Bundles kept per repository: the current one and the one before.
pub const BUNDLES_KEPT: usize = 2;
/// Bytes of bundle written per job on the blocking pool.
const WRITE_STEP_BYTES: usize = 4 << 20;
/// Bytes of a bundle file read per job on the blocking pool when served.
const SERVE_STEP_BYTES: u64 = 1 << 20;
/// Bytes per chunk handed to the response.
const SERVE_CHUNK_BYTES: usize = 64 << 10;

/// Whether repositories get bundles, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleSettings {
    /// Bundles are written and offered.
    pub enabled: bool,
    /// Clones since the last bundle before a new one is written.
    pub clones: u64,
    /// Least bytes of packs for a repository to get a bundle.
    pub min_bytes: u64,
}

impl Default for BundleSettings {
    fn default() -> Self {
        BundleSettings {
            enabled: false,
            clones: BUNDLE_CLONES,
            min_bytes: BUNDLE_MIN_BYTES,
        }
    }
}

/// Clones served per repository (lower-cased `OWNER/NAME`) since its last
/// bundle; node-wide, as a clone is served by any shard.
static CLONES: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Count a clone of `key` (`OWNER/NAME`).
pub fn record_clone(key: &str) {
    let mut map = CLONES.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key.to_ascii_lowercase()).or_insert(0) += 1;
}

/// Clones of `key` counted since its last bundle.
fn clones_of(key: &str) -> u64 {
    let map = CLONES.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&key.to_ascii_lowercase()).copied().unwrap_or(0)
}

/// Forget `n` clones of `key` (those a bundle was written for).
fn forget_clones(key: &str, n: u64) {
    let mut map = CLONES.lock().unwrap_or_else(|e| e.into_inner());
    let k = key.to_ascii_lowercase();
    if let Some(c) = map.get_mut(&k) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            map.remove(&k);
        }
    }
}

/// `<sequence>-<pack checksum in hex>.bundle`.
pub fn file_name(sequence: u64, checksum: &[u8; 20]) -> String {
    let hex: String = checksum.iter().map(|b| format!("{b:02x}")).collect();
    format!("{sequence}-{hex}.bundle")
}

/// The ref-store sequence a bundle file name carries, if it is one of
/// [`file_name`]'s names (nothing else is ever served).
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".bundle")?;
    let (seq, hex) = stem.split_once('-')?;
    let digits_ok = !seq.is_empty() && seq.len() <= 20 && seq.bytes().all(|b| b.is_ascii_digit());
    let hex_ok = hex.len() == 40 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !digits_ok || !hex_ok {
        return None;
    }
    seq.parse().ok()
}

/// The bundles in `repo_dir`, oldest first.
fn bundle_files(repo_dir: &Path) -> Vec<(u64, String)> {
    let Ok(entries) = std::fs::read_dir(repo_dir.join(BUNDLES_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((parse_file_name(&name)?, name))
        })
        .collect();
    files.sort();
    files
}

/// The newest bundle of the repository in `repo_dir` (a directory read:
/// done when a repository is opened).
pub fn current(repo_dir: &Path) -> Option<Arc<str>> {
    bundle_files(repo_dir)
        .pop()
        .map(|(_, name)| Arc::from(name.as_str()))
}

/// The URI of bundle `name` in a bundle list: relative to the repository's
/// URL as the client cloned it (git resolves it against that URL), so it
/// is right whatever host name, port or scheme the client used.
pub fn uri(name: &str) -> String {
    format!("{BUNDLES_DIR}/{name}")
}

/// The id of bundle `name` in a bundle list.
pub fn list_id(name: &str) -> &str {
    name.strip_suffix(".bundle").unwrap_or(name)
}

/// Why a bundle was not written (the repository is unchanged; it is tried
/// again after more clones).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Writing, syncing or renaming the file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Walking the refs' objects.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// Planning or writing the pack.
    #[error(transparent)]
    Pack(#[from] PackWriteError),
    /// The blocking pool's work failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether `repo` should get a new bundle now: bundles are on, it was
/// cloned often enough since its last bundle, its refs changed since that
/// bundle, and it is big enough for a bundle to be worth the disk.
pub fn due(settings: &BundleSettings, key: &str, repo: &Repo) -> bool {
    if !settings.enabled || repo.refs.refs().is_empty() {
        return false;
    }
    if clones_of(key) < settings.clones {
        return false;
    }
    if repo.bundle_sequence() == Some(repo.refs.sequence()) {
        return false;
    }
    let bytes: u64 = repo.store.packs().iter().map(|p| p.len()).sum();
    bytes >= settings.min_bytes
}

/// Write a bundle of `repo`'s refs now and make it the one offered.
/// `Ok(None)`: nothing written (no refs, or the node is stopping). A
/// failure forgets the clones counted so far, so the next try waits for
/// as many new ones.
pub async fn write(
    shard: &Shard,
    key: &str,
    repo: &Rc<RefCell<Repo>>,
) -> Result<Option<String>, BundleError> {
    let counted = clones_of(key);
    let written = write_counted(shard, key, repo, counted).await;
    if written.is_err() {
        forget_clones(key, counted);
    }
    written
}

async fn write_counted(
    shard: &Shard,
    key: &str,
    repo: &Rc<RefCell<Repo>>,
    counted: u64,
) -> Result<Option<String>, BundleError> {
    let started = std::time::Instant::now();
    let (snap, repo_dir) = {
        let mut r = repo.borrow_mut();
        (r.snapshot(), r.dir.clone())
    };
    if snap.refs.is_empty() {
        return Ok(None);
    }
    let sequence = snap.sequence;
    let dir = repo_dir.join(BUNDLES_DIR);
    let tmp = dir.join(format!(
        ".tmp-{sequence}-{}-{}",
        std::process::id(),
        shard.id
    ));
    let refs = snap.refs.clone();
    let store = snap.store.clone();
    let (dir_c, tmp_c) = (dir.clone(), tmp.clone());
    let started_job = offload(move || {
        std::fs::create_dir_all(&dir_c).map_err(io_err(&dir_c))?;
        // Leftovers of a write cut short (a crash, a stop).
        if let Ok(entries) = std::fs::read_dir(&dir_c) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut wants: Vec<ObjectId> = refs.iter().map(|r| r.oid).collect();
        wants.sort_unstable();
        wants.dedup();
        let walked = walk::enumerate(
            &store,
            &WalkRequest {
                wants,
                ..WalkRequest::default()
            },
        )?;
        let stream = pack_stream(
            &store,
            &walked.objects,
            PackWriteOptions {
                ofs_delta: true,
                chunk_bytes: 1 << 20,
            },
        )?;
        let mut header = Vec::with_capacity(32 + refs.len() * 64);
        header.extend_from_slice(b"# v2 git bundle\n");
        for r in refs.iter() {
            header.extend_from_slice(&r.oid.hex_bytes());
            header.push(b' ');
            header.extend_from_slice(r.name.as_bytes());
            header.push(b'\n');
        }
        header.push(b'\n');
        let mut file = std::fs::File::create(&tmp_c).map_err(io_err(&tmp_c))?;
        file.write_all(&header).map_err(io_err(&tmp_c))?;
        Ok(Writing {
            file,
            stream,
            tail: Vec::new(),
            bytes: header.len() as u64,
            objects: walked.objects.len(),
        })
    })
    .await;
    let mut job = match started_job {
        Ok(job) => job,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let written: Result<Option<Writing>, BundleError> = async {
        loop {
            if shard.stopping.get() {
                return Ok(None);
            }
            let tmp_c = tmp.clone();
            let (back, done) = offload(move || {
                let done = job.step(&tmp_c)?;
                Ok((job, done))
            })
            .await?;
            job = back;
            if done {
                return Ok(Some(job));
            }
        }
    }
    .await;
    let job = match written {
        Ok(Some(job)) => job,
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let checksum: [u8; 20] = job.tail.as_slice().try_into().unwrap_or_default();
    let name = file_name(sequence, &checksum);
    let (bytes, objects) = (job.bytes, job.objects);
    let (tmp_c, dir_c, name_c) = (tmp.clone(), dir.clone(), name.clone());
    let renamed = offload(move || {
        job.file.sync_all().map_err(io_err(&tmp_c))?;
        drop(job.file);
        let path = dir_c.join(&name_c);
        std::fs::rename(&tmp_c, &path).map_err(io_err(&path))?;
        std::fs::File::open(&dir_c)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir_c))
    })
    .await;
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    repo.borrow_mut().set_bundle(Arc::from(name.as_str()));
    forget_clones(key, counted);
    crate::metrics::record_bundle_written(bytes);
    // Older bundles go; the newest [`BUNDLES_KEPT`] stay.
    let removed = offload(move || {
        let files = bundle_files(&repo_dir);
        let old = files.len().saturating_sub(BUNDLES_KEPT);
        let mut removed = 0;
        for (_, f) in &files[..old] {
            if std::fs::remove_file(dir.join(f)).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    })
    .await
    .unwrap_or(0);
    tracing::info!(
        repo = %key,
        bundle = %name,
        objects,
        bytes,
        removed,
        ms = started.elapsed().as_millis() as u64,
        "bundle written"
    );
    Ok(Some(name))
}

/// A bundle being written: the file, the pack stream, and the pack's last
/// 20 bytes seen (its checksum, once the stream ends).
struct Writing {
    file: std::fs::File,
    stream: PackStream,
    tail: Vec<u8>,
    bytes: u64,
    objects: usize,
}

impl Writing {
    /// Write about [`WRITE_STEP_BYTES`] more; `true` once the pack is whole.
    fn step(&mut self, path: &Path) -> Result<bool, BundleError> {
        let mut step = 0;
        while step < WRITE_STEP_BYTES {
            let Some(chunk) = self.stream.next() else {
                return Ok(true);
            };
            let chunk = chunk?;
            self.file.write_all(&chunk).map_err(io_err(path))?;
            step += chunk.len();
            self.bytes += chunk.len() as u64;
            self.tail.extend_from_slice(&chunk);
            let extra = self.tail.len().saturating_sub(20);
            self.tail.drain(..extra);
        }
        Ok(false)
    }
}

/// Run `work` on the shard's blocking pool.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BundleError> + Send + 'static,
) -> Result<T, BundleError> {
    glommio::executor()
        .spawn_blocking(move || contained(work))
        .await
}

/// A byte range asked for with `Range: bytes=...` (one range; several, or
/// a header that is not understood, are ignored as RFC 9110 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// The whole file.
    Whole,
    /// `[start, end)`.
    Part(u64, u64),
    /// Nothing of the file is in the range.
    Unsatisfiable,
}

fn parse_range(value: Option<&[u8]>, len: u64) -> RangeAsk {
    let Some(spec) = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(len.saturating_sub(n), len)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if end.is_some_and(|e| e < start) {
                return RangeAsk::Whole;
            }
            if start >= len {
                return RangeAsk::Unsatisfiable;
            }
            let end = end.map_or(len, |e| e.saturating_add(1).min(len));
            RangeAsk::Part(start, end)
        }
        _ => RangeAsk::Whole,
    }
}

/// `GET`/`HEAD /git/OWNER/NAME.git/bundles/<file>`: the file streamed from
/// the store a step at a time on the blocking pool (never buffered whole),
/// with its length, honouring one `Range`. The caller has checked the
/// repository's read permission; `repo_dir` is its directory.
pub async fn serve(
    req: &Request<hyper::body::Incoming>,
    repo_dir: PathBuf,
    file: &str,
) -> Response<ResponseBody> {
    if parse_file_name(file).is_none() {
        return crate::http::text(StatusCode::NOT_FOUND, "no such bundle");
    }
    let path = repo_dir.join(BUNDLES_DIR).join(file);
    let opened = offload({
        let path = path.clone();
        move || {
            let f = std::fs::File::open(&path).map_err(io_err(&path))?;
            let len = f.metadata().map_err(io_err(&path))?.len();
            Ok((f, len))
        }
    })
    .await;
    let (f, len) = match opened {
        Ok(x) => x,
        Err(_) => {
            return crate::http::text(
                StatusCode::NOT_FOUND,
                "no such bundle (a newer one replaced it)",
            )
        }
    };
    let range = parse_range(req.headers().get(header::RANGE).map(|v| v.as_bytes()), len);
    let (status, start, end) = match range {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        RangeAsk::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(ResponseBody::empty())
                .unwrap_or_else(|_| Response::new(ResponseBody::empty()));
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/x-git-bundle")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "public, max-age=86400, immutable");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    if req.method() == Method::HEAD || start == end {
        return builder
            .body(ResponseBody::empty())
            .unwrap_or_else(|_| Response::new(ResponseBody::empty()));
    }
    crate::metrics::record_bundle_served();
    let (tx, body) = ResponseBody::channel();
    glommio::spawn_local(async move {
        let mut tx = tx;
        let f = Arc::new(f);
        let mut pos = start;
        while pos < end {
            let step_end = end.min(pos + SERVE_STEP_BYTES);
            let (fc, pc) = (f.clone(), path.clone());
            let read = offload(move || {
                use std::os::unix::fs::FileExt;
                let mut chunks = Vec::new();
                let mut at = pos;
                while at < step_end {
                    let n = (step_end - at).min(SERVE_CHUNK_BYTES as u64) as usize;
                    let mut buf = vec![0u8; n];
                    fc.read_exact_at(&mut buf, at).map_err(io_err(&pc))?;
                    at += n as u64;
                    chunks.push(Bytes::from(buf));
                }
                Ok(chunks)
            })
            .await;
            let chunks = match read {
                Ok(c) => c,
                Err(e) => {
                    // The body ends short of its length: the client sees
                    // a truncated download and falls back to a fetch.
                    tracing::error!(bundle = %path.display(), error = %e, "bundle read failed");
                    return;
                }
            };
            for chunk in chunks {
                let n = chunk.len() as u64;
                if crate::git::send(&mut tx, chunk).await.is_err() {
                    return; // client went away
                }
                crate::metrics::record_bundle_sent_bytes(n);
            }
            pos = step_end;
        }
    })
    .detach();
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let name = file_name(42, &[0xab; 20]);
        assert_eq!(name, format!("42-{}.bundle", "ab".repeat(20)));
        assert_eq!(parse_file_name(&name), Some(42));
        assert_eq!(list_id(&name), format!("42-{}", "ab".repeat(20)));
        for bad in [
            "42.bundle",
            "x-abab.bundle",
            "../1-abababababababababababababababababababab.bundle",
            "1-ABABABABABABABABABABABABABABABABABABABAB.bundle",
            "1-abababababababababababababababababababab",
            ".tmp-1-2-3",
            "-abababababababababababababababababababab.bundle",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let r = |v: &str| parse_range(Some(v.as_bytes()), 100);
        assert_eq!(parse_range(None, 100), RangeAsk::Whole);
        assert_eq!(r("bytes=0-9"), RangeAsk::Part(0, 10));
        assert_eq!(r("bytes=90-"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=90-500"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=-10"), RangeAsk::Part(90, 100));
        assert_eq!(r("bytes=-1000"), RangeAsk::Part(0, 100));
        assert_eq!(r("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), RangeAsk::Whole);
        assert_eq!(r("bytes=9-1"), RangeAsk::Whole);
        assert_eq!(r("items=0-1"), RangeAsk::Whole);
        assert_eq!(r("bytes=a-b"), RangeAsk::Whole);
        assert_eq!(r("bytes=-"), RangeAsk::Whole);
    }
}
