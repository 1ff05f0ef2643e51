//! Pack transfer between nodes: a validator that has not seen a pack a
//! block names fetches it from a peer in chunks of at most
//! [`CHUNK_MAX_BYTES`], feeding each chunk into the same streaming ingest
//! a push goes through (index, fsck rules, connectivity against the
//! repository), so a pack from a peer is checked exactly like one from a
//! client.
//!
//! Every chunk is checked as it arrives. The transaction names the pack by
//! its SHA-1 (its file name), its size, and the SHA-256 of the SHA-256s of
//! its [`PACK_CHUNK_BYTES`] chunks. The fetcher first asks a peer for the
//! chunk digests (checked against that root), then asks for the chunks,
//! each checked against its digest: a peer that sends a wrong chunk or a
//! wrong list is dropped at once and the same chunk is asked of the next
//! peer, so a lying peer costs one chunk, not the whole pack. Bytes that
//! match the transaction's digests but not its SHA-1, or fail the checks a
//! push gets, make the pack invalid for good: the block that names it gets
//! a no.
//!
//! Wire format (commonware codec, every length bounded):
//!
//! ```text
//! request  = 0 | id u64 | repo (≤ 201 bytes) | checksum [20] | offset u64 | len u32 (≤ 1 MiB)
//! response = 1 | id u64 | status u8 (0 data, 1 missing) | data (≤ 1 MiB)
//! digests  = 2 | id u64 | repo (≤ 201 bytes) | checksum [20]
//! ```
//!
//! A digests request is answered with a response whose data is the chunk
//! digests, 32 bytes each, in order (at most 32 KiB for the largest pack).

use bytes::Bytes;
use commonware_codec::{Error as CodecError, RangeCfg, Read, ReadExt, Write};
use guts_io::pack::ingest::{CheckOptions, Ingest, IngestLimits};
use guts_io::store::ObjectStore;
use guts_shards::consensus::{chunk_digest, chunk_digests, chunks_root, PackRef, PACK_CHUNK_BYTES};
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
pub const CHUNK_MAX_BYTES: usize = PACK_CHUNK_BYTES;
/// Chunk digest lists kept for serving (a list is at most 32 KiB).
const DIGEST_LISTS_CACHED_MAX: usize = 256;
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
    Digests {
        id: u64,
        repo: String,
        checksum: [u8; 20],
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
            PackMsg::Digests { id, repo, checksum } => {
                2u8.write(&mut out);
                id.write(&mut out);
                Bytes::copy_from_slice(repo.as_bytes()).write(&mut out);
                checksum.write(&mut out);
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
            2 => {
                let id = u64::read(&mut buf)?;
                let repo = Bytes::read_cfg(&mut buf, &RangeCfg::new(0..=REPO_KEY_MAX_BYTES))?;
                let repo = String::from_utf8(repo.to_vec())
                    .map_err(|_| CodecError::Invalid("pack request", "repository not UTF-8"))?;
                let checksum = <[u8; 20]>::read(&mut buf)?;
                PackMsg::Digests { id, repo, checksum }
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
    let path = servable_pack(data_dir, repo, checksum)?;
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

/// The path of a pack served to peers: only packs that passed the checks
/// (indexed) are.
fn servable_pack(data_dir: &Path, repo: &str, checksum: [u8; 20]) -> Option<PathBuf> {
    let pack = PackRef {
        checksum,
        size: 0,
        chunks: [0; 32],
    };
    let (path, idx) = pack_paths(data_dir, repo, &pack)?;
    idx.is_file().then_some(path)
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
    /// Chunk digests of packs served recently (computed from the file).
    digests: Mutex<HashMap<[u8; 20], Bytes>>,
}

impl Packs {
    pub fn new(data_dir: PathBuf, wire: Arc<dyn PackWire>, sleep: Sleep) -> Packs {
        Packs {
            data_dir,
            wire,
            sleep,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
        }
    }

    /// The chunk digests of a pack stored here, 32 bytes each.
    fn digests_of(&self, repo: &str, checksum: [u8; 20]) -> Option<Bytes> {
        let path = servable_pack(&self.data_dir, repo, checksum)?;
        if let Some(d) = lock(&self.digests).get(&checksum) {
            return Some(d.clone());
        }
        let list: Vec<u8> = chunk_digests(&path).ok()?.concat();
        let list = Bytes::from(list);
        let mut cache = lock(&self.digests);
        if cache.len() >= DIGEST_LISTS_CACHED_MAX {
            cache.clear();
        }
        cache.insert(checksum, list.clone());
        Some(list)
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
            Ok(PackMsg::Digests { id, repo, checksum }) => {
                let data = self.digests_of(&repo, checksum);
                self.wire
                    .send(from, PackMsg::Response { id, data }.encode());
            }
            Ok(PackMsg::Response { id, data }) => {
                let waiter = lock(&self.waiting).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(data);
                }
            }
            Err(e) => {
                tracing::debug!(peer = %super::genesis::hex(&from[..4]), error = %e, "malformed pack message dropped");
            }
        }
    }

    /// Send the request `make` builds (given its id) to `peer` and wait for
    /// the answer, at most [`CHUNK_TIMEOUT_MS`].
    async fn ask(&self, peer: [u8; 32], make: impl FnOnce(u64) -> PackMsg) -> Option<Bytes> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = futures_channel::oneshot::channel();
        lock(&self.waiting).insert(id, tx);
        self.wire.send(peer, make(id).encode());
        let timeout = (self.sleep)(Duration::from_millis(CHUNK_TIMEOUT_MS));
        let answer = futures_util::future::select(rx, timeout).await;
        lock(&self.waiting).remove(&id);
        match answer {
            futures_util::future::Either::Left((Ok(data), _)) => data,
            _ => None,
        }
    }

    /// Make sure `pack` of `repo` is stored and checked here, fetching it
    /// from `peers` (in order of preference) if not.
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
        match self.fetch(repo, pack, &pack_dir, peers).await {
            Ok(()) => Ok(()),
            Err(FetchFailure::Invalid(reason)) => Err(PackError::Invalid { stem, reason }),
            Err(FetchFailure::Peer(reason)) => Err(PackError::Unavailable { stem, reason }),
        }
    }

    /// The pack's chunk digests from the first of `peers` whose list
    /// matches the transaction's root. Peers that send a wrong list leave
    /// `peers`.
    async fn chunk_list(
        &self,
        repo: &str,
        pack: &PackRef,
        peers: &mut Vec<[u8; 32]>,
    ) -> Result<Vec<[u8; 32]>, FetchFailure> {
        let chunks = pack.size.div_ceil(CHUNK_MAX_BYTES as u64) as usize;
        let mut last = String::from("no peers");
        let mut i = 0;
        while i < peers.len() {
            let peer = peers[i];
            let who = super::genesis::hex(&peer[..4]);
            let answer = self
                .ask(peer, |id| PackMsg::Digests {
                    id,
                    repo: repo.to_string(),
                    checksum: pack.checksum,
                })
                .await;
            let Some(list) = answer else {
                last = format!("peer {who} sent no chunk digests");
                i += 1;
                continue;
            };
            let digests: Vec<[u8; 32]> = list
                .chunks_exact(32)
                .map(|d| d.try_into().expect("32 bytes"))
                .collect();
            if list.len() == chunks * 32 && chunks_root(&digests) == pack.chunks {
                return Ok(digests);
            }
            tracing::debug!(pack = %pack.file_stem(), peer = %who, "chunk digests do not match the transaction; peer dropped");
            last = format!("peer {who} sent chunk digests that do not match the transaction");
            peers.remove(i);
        }
        Err(FetchFailure::Peer(last))
    }

    /// Fetch the pack chunk by chunk, each chunk checked against its digest
    /// and asked of the next peer when one fails to send it or sends wrong
    /// bytes (a liar is not asked again), feeding the push's streaming
    /// checks; then its SHA-1 and the whole-pack checks.
    async fn fetch(
        &self,
        repo: &str,
        pack: &PackRef,
        pack_dir: &Path,
        peers: &[[u8; 32]],
    ) -> Result<(), FetchFailure> {
        let mut peers = peers.to_vec();
        let digests = self.chunk_list(repo, pack, &mut peers).await?;
        let mut ingest = Ingest::new(pack_dir, IngestLimits::default())
            .map_err(|e| FetchFailure::Peer(format!("cannot start ingest: {e}")))?;
        let mut sha1 = sha1::Sha1::new();
        let mut cursor = 0usize;
        for (i, digest) in digests.iter().enumerate() {
            let offset = i as u64 * CHUNK_MAX_BYTES as u64;
            let want = (pack.size - offset).min(CHUNK_MAX_BYTES as u64) as u32;
            let mut chunk = None;
            let mut tries = 0;
            while chunk.is_none() && !peers.is_empty() && tries < peers.len() {
                let at = cursor % peers.len();
                let peer = peers[at];
                let answer = self
                    .ask(peer, |id| PackMsg::Request {
                        id,
                        repo: repo.to_string(),
                        checksum: pack.checksum,
                        offset,
                        len: want,
                    })
                    .await;
                match answer {
                    Some(c) if c.len() == want as usize && chunk_digest(&c) == *digest => {
                        chunk = Some(c);
                    }
                    Some(_) => {
                        tracing::debug!(pack = %pack.file_stem(), peer = %super::genesis::hex(&peer[..4]), offset, "chunk does not match its digest; peer dropped");
                        peers.remove(at);
                    }
                    None => {
                        cursor += 1;
                        tries += 1;
                    }
                }
            }
            let Some(chunk) = chunk else {
                return Err(FetchFailure::Peer(format!(
                    "no peer sent the chunk at offset {offset}"
                )));
            };
            sha1.update(
                &chunk[..chunk
                    .len()
                    .min((pack.size - 20).saturating_sub(offset) as usize)],
            );
            match ingest.write(&chunk) {
                Ok(()) => {}
                // A local failure (the temporary file) says nothing about the pack.
                Err(e @ guts_io::pack::ingest::IngestError::Io { .. }) => {
                    return Err(FetchFailure::Peer(format!("stream refused: {e}")));
                }
                // The bytes are the ones the transaction names: the pack is bad.
                Err(e) => return Err(FetchFailure::Invalid(e.to_string().replace('\n', " "))),
            }
        }
        let name: [u8; 20] = sha1.finalize().into();
        if name != pack.checksum {
            return Err(FetchFailure::Invalid(
                "the chunks the transaction names do not hash to the pack's name".into(),
            ));
        }
        // From here on, any failure is the pack's own.
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            PackMsg::Digests {
                id: 9,
                repo: "a/b".into(),
                checksum: [4; 20],
            },
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

    /// Peers as scripted answers: each answers digests and chunks of the
    /// one pack it is given, honestly or not, straight into the fetcher.
    struct Scripted {
        fetcher: std::sync::OnceLock<Arc<Packs>>,
        /// Per peer (by first key byte): the bytes it serves as the pack,
        /// and whether its digest list is the honest one.
        peers: HashMap<u8, (Vec<u8>, Vec<[u8; 32]>)>,
        asked: Mutex<Vec<(u8, &'static str)>>,
    }

    impl PackWire for Scripted {
        fn send(&self, to: [u8; 32], msg: Bytes) {
            let Some((bytes, digests)) = self.peers.get(&to[0]) else {
                return;
            };
            let (id, data, what) = match PackMsg::decode(&msg).unwrap() {
                PackMsg::Digests { id, .. } => (id, Bytes::from(digests.concat()), "digests"),
                PackMsg::Request {
                    id, offset, len, ..
                } => {
                    let end = (offset as usize + len as usize).min(bytes.len());
                    (
                        id,
                        Bytes::copy_from_slice(&bytes[offset as usize..end]),
                        "chunk",
                    )
                }
                PackMsg::Response { .. } => return,
            };
            self.asked.lock().unwrap().push((to[0], what));
            let answer = PackMsg::Response {
                id,
                data: Some(data),
            };
            self.fetcher.get().unwrap().on_message(to, &answer.encode());
        }
    }

    fn fetch_through(
        peers: HashMap<u8, (Vec<u8>, Vec<[u8; 32]>)>,
        order: &[u8],
        pack: &PackRef,
    ) -> (
        Result<(), PackError>,
        Vec<(u8, &'static str)>,
        tempfile::TempDir,
    ) {
        let fixture = crate::consensus::ledger::tests::Fixture::build();
        let dir = crate::consensus::ledger::tests::data_dir(&fixture);
        let wire = Arc::new(Scripted {
            fetcher: std::sync::OnceLock::new(),
            peers,
            asked: Mutex::new(Vec::new()),
        });
        let sleep: Sleep = Arc::new(|_| Box::pin(futures_util::future::pending()));
        let packs = Arc::new(Packs::new(dir.path().to_path_buf(), wire.clone(), sleep));
        let _ = wire.fetcher.set(packs.clone());
        let order: Vec<[u8; 32]> = order.iter().map(|&b| [b; 32]).collect();
        let result = futures_lite::future::block_on(packs.ensure(
            crate::consensus::ledger::tests::REPO,
            pack,
            &order,
        ));
        let asked = wire.asked.lock().unwrap().clone();
        (result, asked, dir)
    }

    #[test]
    fn a_lying_peer_costs_one_chunk_and_the_next_peer_sends_it() {
        let fixture = crate::consensus::ledger::tests::Fixture::build();
        let good = fixture.next_pack.clone();
        let pack = PackRef::of_bytes(&good);
        let honest = guts_shards::consensus::chunk_digests_of(&good);
        let mut bad = good.clone();
        bad[40] ^= 0xff;
        // Peer 1 has the right list but sends a wrong chunk; peer 2 is honest.
        let peers = HashMap::from([
            (1, (bad.clone(), honest.clone())),
            (2, (good.clone(), honest.clone())),
        ]);
        let (result, asked, dir) = fetch_through(peers, &[1, 2], &pack);
        result.unwrap();
        assert!(have_pack(
            dir.path(),
            crate::consensus::ledger::tests::REPO,
            &pack
        ));
        assert_eq!(asked, vec![(1, "digests"), (1, "chunk"), (2, "chunk")]);

        // Peer 1's list does not match the transaction: it is never asked for a chunk.
        let lying_list = guts_shards::consensus::chunk_digests_of(&bad);
        let peers = HashMap::from([
            (1, (bad.clone(), lying_list)),
            (2, (good.clone(), honest.clone())),
        ]);
        let (result, asked, _dir) = fetch_through(peers, &[1, 2], &pack);
        result.unwrap();
        assert_eq!(asked, vec![(1, "digests"), (2, "digests"), (2, "chunk")]);

        // Only liars: unavailable (not invalid: the pack may still be had elsewhere).
        let peers = HashMap::from([(1, (bad.clone(), honest.clone()))]);
        let (result, _, _dir) = fetch_through(peers, &[1], &pack);
        assert!(
            matches!(result, Err(PackError::Unavailable { .. })),
            "{result:?}"
        );

        // A transaction whose chunk root fits bytes that are not the named pack: invalid.
        let forged = PackRef {
            chunks: chunks_root(&guts_shards::consensus::chunk_digests_of(&bad)),
            ..pack
        };
        let peers = HashMap::from([(
            1,
            (bad.clone(), guts_shards::consensus::chunk_digests_of(&bad)),
        )]);
        let (result, _, _dir) = fetch_through(peers, &[1], &forged);
        assert!(
            matches!(result, Err(PackError::Invalid { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn serves_only_indexed_packs_inside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_chunk(dir.path(), "../x/y", [0; 20], 0, 10).is_none());
        assert!(read_chunk(dir.path(), "a/b", [0; 20], 0, 10).is_none());
        let pack = PackRef {
            checksum: [0xab; 20],
            size: 5,
            chunks: [0; 32],
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
