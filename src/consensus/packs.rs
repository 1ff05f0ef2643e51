//! Pack transfer between nodes: a validator that has not seen a pack a
//! block names fetches it from a peer in chunks of at most
//! [`CHUNK_MAX_BYTES`], feeding each chunk into the same streaming ingest
//! a push goes through (index, fsck rules, connectivity against the
//! repository), so a pack from a peer is checked exactly like one from a
//! client.
//!
//! A chunk is never trusted on its own: the pack's SHA-1 (its name, carried
//! in the transaction) must match the bytes received, or the peer lied and
//! the next peer is asked. A pack whose bytes match its name but fail the
//! checks is invalid for good: the block that names it gets a no.
//!
//! Wire format (commonware codec, every length bounded):
//!
//! ```text
//! request  = 0 | id u64 | repo (≤ 201 bytes) | checksum [20] | offset u64 | len u32 (≤ 1 MiB)
//! response = 1 | id u64 | status u8 (0 data, 1 missing) | data (≤ 1 MiB)
//! ```

use bytes::Bytes;
use commonware_codec::{Error as CodecError, RangeCfg, Read, ReadExt, Write};
use guts_io::pack::ingest::{CheckOptions, Ingest, IngestLimits};
use guts_io::store::ObjectStore;
use guts_shards::consensus::PackRef;
use guts_shards::git::StoreSource;
use sha1::Digest as _;
use std::collections::HashMap;
use std::io::{Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::state::check_repo_key;
use super::tx::REPO_KEY_MAX_BYTES;

/// Largest chunk of a pack in one message.
pub const CHUNK_MAX_BYTES: usize = 1024 * 1024;
/// How long a peer has to answer one chunk request.
pub const CHUNK_TIMEOUT_MS: u64 = 5_000;
/// Largest pack transferred between nodes (as a push body may be).
pub const PACK_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// A message on the pack channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackMsg {
    Request {
        id: u64,
        repo: String,
        checksum: [u8; 20],
        offset: u64,
        len: u32,
    },
    Response {
        id: u64,
        data: Option<Bytes>,
    },
}

impl PackMsg {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            PackMsg::Request {
                id,
                repo,
                checksum,
                offset,
                len,
            } => {
                0u8.write(&mut out);
                id.write(&mut out);
                Bytes::copy_from_slice(repo.as_bytes()).write(&mut out);
                checksum.write(&mut out);
                offset.write(&mut out);
                len.write(&mut out);
            }
            PackMsg::Response { id, data } => {
                1u8.write(&mut out);
                id.write(&mut out);
                match data {
                    Some(d) => {
                        0u8.write(&mut out);
                        d.write(&mut out);
                    }
                    None => 1u8.write(&mut out),
                }
            }
        }
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<PackMsg, CodecError> {
        let mut buf = Bytes::copy_from_slice(bytes);
        let msg = match u8::read(&mut buf)? {
            0 => {
                let id = u64::read(&mut buf)?;
                let repo = Bytes::read_cfg(&mut buf, &RangeCfg::new(0..=REPO_KEY_MAX_BYTES))?;
                let repo = String::from_utf8(repo.to_vec())
                    .map_err(|_| CodecError::Invalid("pack request", "repository not UTF-8"))?;
                let checksum = <[u8; 20]>::read(&mut buf)?;
                let offset = u64::read(&mut buf)?;
                let len = u32::read(&mut buf)?;
                if len as usize > CHUNK_MAX_BYTES {
                    return Err(CodecError::InvalidLength(len as usize));
                }
                PackMsg::Request {
                    id,
                    repo,
                    checksum,
                    offset,
                    len,
                }
            }
            1 => {
                let id = u64::read(&mut buf)?;
                let data = match u8::read(&mut buf)? {
                    0 => Some(Bytes::read_cfg(
                        &mut buf,
                        &RangeCfg::new(0..=CHUNK_MAX_BYTES),
                    )?),
                    1 => None,
                    t => return Err(CodecError::InvalidEnum(t)),
                };
                PackMsg::Response { id, data }
            }
            t => return Err(CodecError::InvalidEnum(t)),
        };
        if !buf.is_empty() {
            return Err(CodecError::ExtraData(buf.len()));
        }
        Ok(msg)
    }
}

/// Why a pack could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The bytes match the pack's name but fail the checks a push gets:
    /// whatever names this pack is invalid.
    #[error("pack {stem} is invalid: {reason}")]
    Invalid { stem: String, reason: String },
    /// No peer had it (or all lied); worth trying again later.
    #[error("pack {stem} not available from any peer: {reason}")]
    Unavailable { stem: String, reason: String },
}

/// Paths of a repository's pack.
pub fn pack_paths(data_dir: &Path, repo: &str, pack: &PackRef) -> Option<(PathBuf, PathBuf)> {
    check_repo_key(repo).ok()?;
    let (owner, name) = repo.split_once('/')?;
    let dir = guts_shards::repo::repo_dir(data_dir, owner, name)
        .join("objects")
        .join("pack");
    let stem = pack.file_stem();
    Some((
        dir.join(format!("{stem}.pack")),
        dir.join(format!("{stem}.idx")),
    ))
}

/// Whether the pack is stored (and indexed) here.
pub fn have_pack(data_dir: &Path, repo: &str, pack: &PackRef) -> bool {
    let Some((p, i)) = pack_paths(data_dir, repo, pack) else {
        return false;
    };
    i.is_file()
        && std::fs::metadata(&p)
            .map(|m| m.len() == pack.size)
            .unwrap_or(false)
}

/// Read a chunk of a stored pack for a peer.
pub fn read_chunk(
    data_dir: &Path,
    repo: &str,
    checksum: [u8; 20],
    offset: u64,
    len: u32,
) -> Option<Bytes> {
    let pack = PackRef { checksum, size: 0 };
    let (path, idx) = pack_paths(data_dir, repo, &pack)?;
    if !idx.is_file() {
        // Only packs that passed the checks (indexed) are served.
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    if offset > size {
        return None;
    }
    let len = (len as u64).min(size - offset).min(CHUNK_MAX_BYTES as u64) as usize;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).ok()?;
    Some(Bytes::from(buf))
}

/// Sends pack messages to one peer (by public key).
pub trait PackWire: Send + Sync + 'static {
    fn send(&self, to: [u8; 32], msg: Bytes);
}

type Waiters = HashMap<u64, futures_channel::oneshot::Sender<Option<Bytes>>>;

/// A timer usable from whichever runtime the consensus core runs on.
pub type Sleep = Arc<
    dyn Fn(Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Fetches packs from peers and serves ours.
pub struct Packs {
    data_dir: PathBuf,
    wire: Arc<dyn PackWire>,
    next_id: AtomicU64,
    waiting: Mutex<Waiters>,
    sleep: Sleep,
}

impl Packs {
    pub fn new(data_dir: PathBuf, wire: Arc<dyn PackWire>, sleep: Sleep) -> Packs {
        Packs {
            data_dir,
            wire,
            sleep,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Handle a message from `from`: serve a request, or hand a response to
    /// the fetch waiting for it. Malformed messages are dropped.
    pub fn on_message(&self, from: [u8; 32], bytes: &[u8]) {
        match PackMsg::decode(bytes) {
            Ok(PackMsg::Request {
                id,
                repo,
                checksum,
                offset,
                len,
            }) => {
                let data = read_chunk(&self.data_dir, &repo, checksum, offset, len);
                self.wire
                    .send(from, PackMsg::Response { id, data }.encode());
            }
            Ok(PackMsg::Response { id, data }) => {
                let waiter = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(data);
                }
            }
            Err(e) => {
                tracing::debug!(peer = %super::genesis::hex(&from[..4]), error = %e, "malformed pack message dropped");
            }
        }
    }

    async fn request(
        &self,
        peer: [u8; 32],
        repo: &str,
        checksum: [u8; 20],
        offset: u64,
        len: u32,
    ) -> Option<Bytes> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = futures_channel::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.wire.send(
            peer,
            PackMsg::Request {
                id,
                repo: repo.to_string(),
                checksum,
                offset,
                len,
            }
            .encode(),
        );
        let timeout = (self.sleep)(Duration::from_millis(CHUNK_TIMEOUT_MS));
        let answer = futures_util::future::select(rx, timeout).await;
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match answer {
            futures_util::future::Either::Left((Ok(data), _)) => data,
            _ => None,
        }
    }

    /// Make sure `pack` of `repo` is stored and checked here, fetching it
    /// from `peers` in order if not.
    pub async fn ensure(
        &self,
        repo: &str,
        pack: &PackRef,
        peers: &[[u8; 32]],
    ) -> Result<(), PackError> {
        let stem = pack.file_stem();
        if have_pack(&self.data_dir, repo, pack) {
            return Ok(());
        }
        if pack.size > PACK_MAX_BYTES || pack.size < 32 {
            return Err(PackError::Invalid {
                stem,
                reason: format!("size {} outside 32..={PACK_MAX_BYTES}", pack.size),
            });
        }
        let Some((pack_path, _)) = pack_paths(&self.data_dir, repo, pack) else {
            return Err(PackError::Invalid {
                stem,
                reason: format!("bad repository {repo:?}"),
            });
        };
        let pack_dir = pack_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if !pack_dir.is_dir() {
            return Err(PackError::Unavailable {
                stem,
                reason: format!("repository {repo} is not here yet"),
            });
        }
        let mut last = String::from("no peers");
        for peer in peers {
            match self.fetch_from(*peer, repo, pack, &pack_dir).await {
                Ok(()) => return Ok(()),
                Err(FetchFailure::Invalid(reason)) => {
                    return Err(PackError::Invalid { stem, reason })
                }
                Err(FetchFailure::Peer(reason)) => {
                    tracing::debug!(pack = %stem, peer = %super::genesis::hex(&peer[..4]), %reason, "pack fetch failed; trying another peer");
                    last = reason;
                }
            }
        }
        Err(PackError::Unavailable { stem, reason: last })
    }

    async fn fetch_from(
        &self,
        peer: [u8; 32],
        repo: &str,
        pack: &PackRef,
        pack_dir: &Path,
    ) -> Result<(), FetchFailure> {
        let mut ingest = Ingest::new(pack_dir, IngestLimits::default())
            .map_err(|e| FetchFailure::Peer(format!("cannot start ingest: {e}")))?;
        let mut hasher = sha1::Sha1::new();
        let body_len = pack.size - 20;
        let mut trailer = Vec::with_capacity(20);
        let mut offset = 0u64;
        // Why the streaming checks refused the bytes, if they did: the rest is still fetched
        // and hashed, to tell a lying peer (bytes that are not the pack) from a pack that is
        // invalid for good (its own bytes fail the checks).
        let mut refused: Option<String> = None;
        while offset < pack.size {
            let want = (pack.size - offset).min(CHUNK_MAX_BYTES as u64) as u32;
            let Some(chunk) = self.request(peer, repo, pack.checksum, offset, want).await else {
                return Err(FetchFailure::Peer(format!("no chunk at offset {offset}")));
            };
            if chunk.is_empty() || chunk.len() as u64 > want as u64 {
                return Err(FetchFailure::Peer(format!(
                    "chunk of {} bytes for {want} asked",
                    chunk.len()
                )));
            }
            // Hash the body; keep the trailer aside.
            let end = offset + chunk.len() as u64;
            let body_part = if end <= body_len {
                &chunk[..]
            } else if offset >= body_len {
                &chunk[..0]
            } else {
                &chunk[..(body_len - offset) as usize]
            };
            hasher.update(body_part);
            trailer.extend_from_slice(&chunk[body_part.len()..]);
            if refused.is_none() {
                match ingest.write(&chunk) {
                    Ok(()) => {}
                    // A local failure (the temporary file) says nothing about the pack.
                    Err(e @ guts_io::pack::ingest::IngestError::Io { .. }) => {
                        return Err(FetchFailure::Peer(format!("stream refused: {e}")));
                    }
                    // Could be the peer's bytes or the pack: decided by the hash below.
                    Err(e) => refused = Some(e.to_string().replace('\n', " ")),
                }
            }
            offset = end;
        }
        let digest: [u8; 20] = hasher.finalize().into();
        if digest != pack.checksum || trailer != pack.checksum {
            return Err(FetchFailure::Peer(
                "bytes do not match the pack's checksum".into(),
            ));
        }
        if let Some(reason) = refused {
            return Err(FetchFailure::Invalid(reason));
        }
        // The bytes are the pack the transaction names: from here on, any
        // failure is the pack's own.
        let objects = pack_dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let (done_tx, done_rx) = futures_channel::oneshot::channel();
        std::thread::Builder::new()
            .name("pack-verify".into())
            .spawn(move || {
                let result = (|| {
                    let store = ObjectStore::open(&objects)
                        .map_err(|e| FetchFailure::Peer(format!("object store: {e}")))?;
                    let source = StoreSource(store);
                    let checks = CheckOptions {
                        strict: true,
                        check_links: true,
                    };
                    let ingested = ingest
                        .finish(&source, &checks)
                        .map_err(|e| FetchFailure::Invalid(e.to_string().replace('\n', " ")))?;
                    ingested
                        .commit()
                        .map_err(|e| FetchFailure::Peer(format!("storing the pack: {e}")))?;
                    Ok::<(), FetchFailure>(())
                })();
                let _ = done_tx.send(result);
            })
            .map_err(|e| FetchFailure::Peer(format!("cannot start verification: {e}")))?;
        match done_rx.await {
            Ok(result) => result,
            Err(_) => Err(FetchFailure::Peer("verification thread died".into())),
        }
    }
}

enum FetchFailure {
    Peer(String),
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_refuse_garbage() {
        let msgs = [
            PackMsg::Request {
                id: 7,
                repo: "a/b".into(),
                checksum: [3; 20],
                offset: 1 << 20,
                len: 1 << 20,
            },
            PackMsg::Response {
                id: 7,
                data: Some(Bytes::from_static(b"PACK")),
            },
            PackMsg::Response { id: 8, data: None },
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(PackMsg::decode(&b).unwrap(), m);
            for cut in 0..b.len() {
                assert!(PackMsg::decode(&b[..cut]).is_err());
            }
        }
        let too_big = PackMsg::Request {
            id: 1,
            repo: "a/b".into(),
            checksum: [0; 20],
            offset: 0,
            len: CHUNK_MAX_BYTES as u32 + 1,
        };
        assert!(PackMsg::decode(&too_big.encode()).is_err());
        assert!(PackMsg::decode(&[9]).is_err());
    }

    #[test]
    fn serves_only_indexed_packs_inside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_chunk(dir.path(), "../x/y", [0; 20], 0, 10).is_none());
        assert!(read_chunk(dir.path(), "a/b", [0; 20], 0, 10).is_none());
        let pack = PackRef {
            checksum: [0xab; 20],
            size: 5,
        };
        let (p, i) = pack_paths(dir.path(), "a/b", &pack).unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"hello").unwrap();
        assert!(read_chunk(dir.path(), "a/b", pack.checksum, 0, 10).is_none());
        std::fs::write(&i, b"idx").unwrap();
        assert_eq!(
            read_chunk(dir.path(), "a/b", pack.checksum, 1, 3).unwrap(),
            Bytes::from_static(b"ell")
        );
        assert!(have_pack(dir.path(), "a/b", &pack));
    }
}
