//! Pack responses computed once for identical requests, in memory.
//!
//! A fetch that asks for no haves (a clone, full or shallow) is answered
//! by bytes that depend only on the request and on the repository's ref
//! state. The first such request (the leader) starts one producer task
//! that computes the response and appends it, chunk by chunk, to an
//! [`Entry`] in a node-wide table; the leader's own client and every
//! identical request that arrives meanwhile (joiners) are readers of that
//! entry: each one is sent what has been produced so far, then follows
//! live, at its own client's pace. Once complete, the entry stays in the
//! table as a cache of recent responses (hits), bounded in bytes and
//! entries, least recently used evicted first. Nothing is written to disk.
//!
//! The key holds the ref-store sequence the request's snapshot was taken
//! at: any ref update changes it, so older entries stop matching and are
//! dropped at the next request for the repository (or by eviction).
//!
//! Flow control: the producer never waits for a reader; an entry holds
//! the whole response, so a slow reader falls behind without holding up
//! anyone. An entry may hold at most a quarter of the cache's bytes, and
//! all entries together at most the cache's bytes: a response that would
//! grow past either stops being shared, and its readers, once they have
//! sent what the entry holds, compute the response on their own and send
//! the rest of it (checking that the bytes they already sent match). The
//! same happens when every reader of an unfinished entry has gone (the
//! producer stops) and when the producer fails to finish.
//!
//! The table is shared by every shard (a mutex never held across an
//! await); readers on other executors are woken through their wakers.

use bytes::Bytes;
use futures_channel::mpsc;
use futures_lite::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};

use crate::body::ResponseBody;
use crate::repo::AdvertisedRef;

/// Produced bytes are gathered into chunks of about this size before
/// readers see them (fewer, larger writes per reader).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What identifies a response: repository, ref state and request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// `OWNER/NAME`.
    pub repo: String,
    /// The ref-store sequence of the snapshot the request was served from.
    pub sequence: u64,
    /// The request, with everything that does not change the response
    /// (agent, session id) left out.
    pub request: String,
}

/// The key of a protocol v0/v1 request, if its response can be shared
/// (it has no haves: a clone).
pub fn v0_key(repo: &str, sequence: u64, req: &guts_net::upload::UploadRequest) -> Option<Key> {
    if !req.haves.is_empty() {
        return None;
    }
    let mut req = req.clone();
    req.caps.agent = None;
    req.caps.session_id = None;
    Some(Key {
        repo: repo.to_string(),
        sequence,
        request: format!("v0 {req:?}"),
    })
}

/// The key of a protocol v2 fetch, if its response can be shared (it has
/// no haves: a clone).
pub fn v2_key(repo: &str, sequence: u64, req: &guts_net::upload::FetchRequest) -> Option<Key> {
    if !req.haves.is_empty() {
        return None;
    }
    let mut req = req.clone();
    req.common.agent = None;
    req.common.session_id = None;
    Some(Key {
        repo: repo.to_string(),
        sequence,
        request: format!("v2 {req:?}"),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The producer is appending.
    Producing,
    /// Every byte is here; `cacheable`: a complete pack response that
    /// later requests may be answered with.
    Complete { cacheable: bool },
    /// The producer stopped before the end (bound reached, no readers
    /// left, or it failed): readers finish on their own.
    Stopped,
}

struct EntryState {
    chunks: Vec<Bytes>,
    bytes: u64,
    phase: Phase,
    readers: usize,
    wakers: Vec<Waker>,
    /// In the table (its bytes counted in the table's total).
    in_table: bool,
    last_used: u64,
}

/// One response being produced or kept.
pub struct Entry {
    key: Key,
    refs: Arc<Vec<AdvertisedRef>>,
    state: Mutex<EntryState>,
}

impl Entry {
    fn new(key: Key, refs: Arc<Vec<AdvertisedRef>>, clock: u64) -> Arc<Entry> {
        Arc::new(Entry {
            key,
            refs,
            state: Mutex::new(EntryState {
                chunks: Vec::new(),
                bytes: 0,
                phase: Phase::Producing,
                readers: 1,
                wakers: Vec::new(),
                in_table: true,
                last_used: clock,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

struct Table {
    map: HashMap<Key, Arc<Entry>>,
    held: u64,
    clock: u64,
}

/// The node's table of shared pack responses.
pub struct PackCache {
    max_bytes: u64,
    max_entries: usize,
    table: Mutex<Table>,
}

/// What a request does with the table.
pub enum Lookup {
    /// Not shared (cache disabled, or full of unfinished entries).
    Bypass,
    /// Read an entry produced by someone else (`hit`: already complete).
    Join { reader: Reader, hit: bool },
    /// Produce the entry (with the producer) and read it (with the reader).
    Lead { producer: Producer, reader: Reader },
}

static NODE: OnceLock<Arc<PackCache>> = OnceLock::new();

impl PackCache {
    /// A cache of at most `max_bytes` and `max_entries` (either 0: off).
    pub fn new(max_bytes: u64, max_entries: usize) -> Arc<PackCache> {
        Arc::new(PackCache {
            max_bytes,
            max_entries,
            table: Mutex::new(Table {
                map: HashMap::new(),
                held: 0,
                clock: 0,
            }),
        })
    }

    /// The process's cache, shared by every shard; the first call sets
    /// its bounds.
    pub fn node(max_bytes: u64, max_entries: usize) -> Arc<PackCache> {
        NODE.get_or_init(|| PackCache::new(max_bytes, max_entries))
            .clone()
    }

    /// Most bytes one entry may hold.
    pub fn entry_max_bytes(&self) -> u64 {
        self.max_bytes / 4
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held by the entries in the table.
    pub fn held_bytes(&self) -> u64 {
        self.lock().held
    }

    /// Entries in the table.
    pub fn entries(&self) -> usize {
        self.lock().map.len()
    }

    /// Join the entry for `key` (made from the same `refs`), or lead a new one.
    pub fn lookup(self: &Arc<Self>, key: Key, refs: &Arc<Vec<AdvertisedRef>>) -> Lookup {
        if self.max_bytes == 0 || self.max_entries == 0 {
            return Lookup::Bypass;
        }
        let mut t = self.lock();
        t.clock += 1;
        let clock = t.clock;
        // Entries of this repository made at an older ref state never match again.
        let stale: Vec<Key> = t
            .map
            .iter()
            .filter(|(k, _)| k.repo == key.repo && k.sequence < key.sequence)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(e) = t.map.get(&k).cloned() {
                let done = !matches!(e.lock().phase, Phase::Producing);
                if done {
                    remove(&mut t, &e);
                }
            }
        }
        if let Some(e) = t.map.get(&key).cloned() {
            let same_refs = Arc::ptr_eq(&e.refs, refs) || same_refs(&e.refs, refs);
            let mut s = e.lock();
            match s.phase {
                Phase::Producing | Phase::Complete { cacheable: true } if same_refs => {
                    s.readers += 1;
                    s.last_used = clock;
                    let hit = s.phase != Phase::Producing;
                    drop(s);
                    crate::metrics::record_pack_cache(if hit { "hit" } else { "join" });
                    return Lookup::Join {
                        reader: Reader::new(self.clone(), e),
                        hit,
                    };
                }
                Phase::Producing => {
                    // Same name and sequence, other refs (a repository made
                    // again): leave it to its readers.
                    drop(s);
                    crate::metrics::record_pack_cache("bypass");
                    return Lookup::Bypass;
                }
                _ => {
                    drop(s);
                    remove(&mut t, &e);
                }
            }
        }
        if t.map.len() >= self.max_entries && !evict_one(&mut t, None) {
            crate::metrics::record_pack_cache("bypass");
            return Lookup::Bypass;
        }
        let e = Entry::new(key.clone(), refs.clone(), clock);
        t.map.insert(key, e.clone());
        crate::metrics::record_pack_cache("miss");
        Lookup::Lead {
            producer: Producer {
                cache: self.clone(),
                entry: e.clone(),
                pending: Vec::new(),
                tail: [0; 4],
                finished: false,
            },
            reader: Reader::new(self.clone(), e),
        }
    }

    /// Append `chunk` to `entry`; false: the entry stopped (bound reached
    /// or no readers left), produce no more.
    fn append(&self, entry: &Arc<Entry>, chunk: Bytes) -> bool {
        let len = chunk.len() as u64;
        let mut t = self.lock();
        let s = entry.lock();
        if s.phase != Phase::Producing {
            return false;
        }
        let over_entry = s.bytes + len > self.entry_max_bytes();
        drop(s);
        let fits = !over_entry && {
            let mut fits = t.held + len <= self.max_bytes;
            while !fits && evict_one(&mut t, Some(entry)) {
                fits = t.held + len <= self.max_bytes;
            }
            fits
        };
        if !fits {
            crate::metrics::record_pack_cache("overflow");
            stop(&mut t, entry);
            return false;
        }
        let mut s = entry.lock();
        s.chunks.push(chunk);
        s.bytes += len;
        t.held += len;
        crate::metrics::set_pack_cache_held(t.held, t.map.len());
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        drop(t);
        wake_all(wakers);
        true
    }

    fn finish(&self, entry: &Arc<Entry>, cacheable: bool) {
        let mut t = self.lock();
        let mut s = entry.lock();
        if s.phase != Phase::Producing {
            return;
        }
        s.phase = Phase::Complete { cacheable };
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        if !cacheable {
            remove(&mut t, entry);
        }
        drop(t);
        wake_all(wakers);
    }
}

fn same_refs(a: &[AdvertisedRef], b: &[AdvertisedRef]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.oid == y.oid && x.peeled == y.peeled)
}

/// Take `e` out of the table (its bytes no longer counted there); an
/// unfinished entry stops.
fn remove(t: &mut Table, e: &Arc<Entry>) {
    let mut s = e.lock();
    if !s.in_table {
        return;
    }
    s.in_table = false;
    t.held -= s.bytes;
    let wakers = if s.phase == Phase::Producing {
        s.phase = Phase::Stopped;
        std::mem::take(&mut s.wakers)
    } else {
        Vec::new()
    };
    drop(s);
    if t.map.get(&e.key).is_some_and(|x| Arc::ptr_eq(x, e)) {
        t.map.remove(&e.key);
    }
    crate::metrics::set_pack_cache_held(t.held, t.map.len());
    wake_all(wakers);
}

fn stop(t: &mut Table, e: &Arc<Entry>) {
    remove(t, e);
    let mut s = e.lock();
    if s.phase == Phase::Producing {
        s.phase = Phase::Stopped;
    }
    let wakers = std::mem::take(&mut s.wakers);
    drop(s);
    wake_all(wakers);
}

/// Evict the least recently used complete entry other than `keep`; false
/// if there is none.
fn evict_one(t: &mut Table, keep: Option<&Arc<Entry>>) -> bool {
    let victim = t
        .map
        .values()
        .filter(|e| keep.is_none_or(|k| !Arc::ptr_eq(e, k)))
        .filter_map(|e| {
            let s = e.lock();
            matches!(s.phase, Phase::Complete { .. }).then_some((s.last_used, e.clone()))
        })
        .min_by_key(|(used, _)| *used)
        .map(|(_, e)| e);
    match victim {
        Some(e) => {
            remove(t, &e);
            crate::metrics::record_pack_cache("evicted");
            true
        }
        None => false,
    }
}

/// Appends a response to its entry; dropped unfinished, the entry stops.
pub struct Producer {
    cache: Arc<PackCache>,
    entry: Arc<Entry>,
    pending: Vec<u8>,
    /// The last four bytes produced (a complete side-band response ends
    /// with a flush-pkt).
    tail: [u8; 4],
    finished: bool,
}

impl Producer {
    /// Add produced bytes; false: stop producing.
    pub fn push(&mut self, data: &[u8]) -> bool {
        if data.len() >= 4 {
            self.tail.copy_from_slice(&data[data.len() - 4..]);
        } else {
            self.tail.rotate_left(data.len());
            let n = self.tail.len();
            self.tail[n - data.len()..].copy_from_slice(data);
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::take(&mut self.pending));
            return self.cache.append(&self.entry, chunk);
        }
        true
    }

    /// The response is complete; `pack`: it is a side-band pack response,
    /// kept for later requests if it ended well (with a flush-pkt).
    pub fn finish(mut self, pack: bool) {
        if !self.pending.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.pending));
            if !self.cache.append(&self.entry, chunk) {
                return;
            }
        }
        self.finished = true;
        let cacheable = pack && &self.tail == b"0000";
        self.cache.finish(&self.entry, cacheable);
    }

    /// Read `body` to its end into the entry (stopping early if the entry
    /// stops), then finish.
    pub async fn produce(mut self, body: ResponseBody, pack: bool) {
        match body {
            ResponseBody::Full(data, _) => {
                if let Some(d) = data {
                    if !self.push(&d) {
                        return;
                    }
                }
            }
            ResponseBody::Stream(mut rx, _) => {
                while let Some(chunk) = rx.next().await {
                    if !self.push(&chunk) {
                        return;
                    }
                }
            }
        }
        self.finish(pack);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.finished {
            let mut t = self.cache.lock();
            stop(&mut t, &self.entry);
        }
    }
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Next {
    Chunk(Bytes),
    /// The response is complete.
    End,
    /// The entry stopped: the rest must be computed by the reader.
    Stopped,
}

/// One client's position in an entry.
pub struct Reader {
    cache: Arc<PackCache>,
    entry: Arc<Entry>,
    next: usize,
    sent: u64,
}

impl Reader {
    fn new(cache: Arc<PackCache>, entry: Arc<Entry>) -> Reader {
        Reader {
            cache,
            entry,
            next: 0,
            sent: 0,
        }
    }

    /// The next chunk, waiting for the producer if there is none yet.
    pub async fn next(&mut self) -> Next {
        let next = futures_lite::future::poll_fn(|cx| {
            let mut s = self.entry.lock();
            if let Some(c) = s.chunks.get(self.next) {
                return Poll::Ready(Next::Chunk(c.clone()));
            }
            match s.phase {
                Phase::Complete { .. } => Poll::Ready(Next::End),
                Phase::Stopped => Poll::Ready(Next::Stopped),
                Phase::Producing => {
                    if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        s.wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        if let Next::Chunk(c) = &next {
            self.next += 1;
            self.sent += c.len() as u64;
        }
        next
    }

    /// Bytes returned by [`Reader::next`] so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The chunks returned so far.
    fn sent_chunks(&self) -> Vec<Bytes> {
        self.entry.lock().chunks[..self.next].to_vec()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut t = self.cache.lock();
        let mut s = self.entry.lock();
        s.readers -= 1;
        let abandoned = s.readers == 0 && s.phase == Phase::Producing;
        drop(s);
        if abandoned {
            // Nobody to produce for: stop rather than compute for no one.
            stop(&mut t, &self.entry);
        }
    }
}

async fn send(tx: &mut mpsc::Sender<Bytes>, data: Bytes) -> Result<(), ()> {
    futures_lite::future::poll_fn(|cx| tx.poll_ready(cx))
        .await
        .map_err(|_| ())?;
    tx.start_send(data).map_err(|_| ())
}

/// The response body of `reader`'s client: the entry's bytes at the
/// client's pace; if the entry stops, the rest from `fallback` (the whole
/// response computed again), after checking that it starts with the bytes
/// already sent.
pub fn serve<F, Fut>(mut reader: Reader, fallback: F) -> ResponseBody
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = ResponseBody> + 'static,
{
    let (tx, body) = ResponseBody::channel();
    glommio::spawn_local(async move {
        let mut tx = tx;
        loop {
            match reader.next().await {
                Next::Chunk(c) => {
                    if send(&mut tx, c).await.is_err() {
                        return; // client went away
                    }
                }
                Next::End => return,
                Next::Stopped => break,
            }
        }
        crate::metrics::record_pack_cache("fallback");
        let sent = reader.sent_chunks();
        let repo = reader.entry.key.repo.clone();
        drop(reader);
        let mut skip = Skip::new(sent);
        match fallback().await {
            ResponseBody::Full(data, _) => {
                if let Some(d) = data {
                    match skip.feed(d) {
                        Ok(Some(rest)) => {
                            let _ = send(&mut tx, rest).await;
                        }
                        Ok(None) => {}
                        Err(()) => mismatch(&repo),
                    }
                }
            }
            ResponseBody::Stream(mut rx, _) => {
                while let Some(chunk) = rx.next().await {
                    match skip.feed(chunk) {
                        Ok(Some(rest)) => {
                            if send(&mut tx, rest).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(()) => {
                            mismatch(&repo);
                            return;
                        }
                    }
                }
            }
        }
    })
    .detach();
    body
}

fn mismatch(repo: &str) {
    // The client's response ends short, which its git reports; it never
    // gets a mix of two different responses.
    tracing::error!(repo = %repo, "a shared pack response stopped and computing it again gave other bytes; the response was cut short");
}

/// Drops the first bytes of a stream, checking they equal `expected`.
struct Skip {
    expected: Vec<Bytes>,
    chunk: usize,
    offset: usize,
}

impl Skip {
    fn new(expected: Vec<Bytes>) -> Skip {
        Skip {
            expected,
            chunk: 0,
            offset: 0,
        }
    }

    /// What is left of `data` past the expected prefix (`None`: nothing);
    /// `Err` if `data` differs from it.
    fn feed(&mut self, mut data: Bytes) -> Result<Option<Bytes>, ()> {
        while !data.is_empty() {
            let Some(want) = self.expected.get(self.chunk) else {
                return Ok(Some(data));
            };
            let want = &want[self.offset..];
            let n = want.len().min(data.len());
            if want[..n] != data[..n] {
                return Err(());
            }
            let _ = data.split_to(n);
            self.offset += n;
            if self.offset == self.expected[self.chunk].len() {
                self.chunk += 1;
                self.offset = 0;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(repo: &str, seq: u64) -> Key {
        Key {
            repo: repo.into(),
            sequence: seq,
            request: "r".into(),
        }
    }

    fn refs() -> Arc<Vec<AdvertisedRef>> {
        Arc::new(Vec::new())
    }

    fn lead(c: &Arc<PackCache>, k: Key) -> (Producer, Reader) {
        match c.lookup(k, &refs()) {
            Lookup::Lead { producer, reader } => (producer, reader),
            _ => panic!("expected to lead"),
        }
    }

    fn join(c: &Arc<PackCache>, k: Key) -> (Reader, bool) {
        match c.lookup(k, &refs()) {
            Lookup::Join { reader, hit } => (reader, hit),
            _ => panic!("expected to join"),
        }
    }

    fn read_all(r: &mut Reader) -> (Vec<u8>, Next) {
        let mut out = Vec::new();
        loop {
            match futures_lite::future::block_on(r.next()) {
                Next::Chunk(c) => out.extend_from_slice(&c),
                other => return (out, other),
            }
        }
    }

    fn big(n: usize, b: u8) -> Vec<u8> {
        vec![b; n]
    }

    #[test]
    fn late_joiner_sees_every_byte_then_follows_live() {
        let c = PackCache::new(64 * CHUNK_BYTES as u64, 8);
        let (mut p, mut first) = lead(&c, key("a/b", 1));
        assert!(p.push(&big(CHUNK_BYTES, 1)));
        assert!(p.push(&big(CHUNK_BYTES, 2)));
        let (mut late, hit) = join(&c, key("a/b", 1));
        assert!(!hit);
        // Two chunks are there already; the third is not.
        for want in [1u8, 2] {
            match futures_lite::future::block_on(late.next()) {
                Next::Chunk(ch) => assert!(ch.iter().all(|b| *b == want)),
                other => panic!("{other:?}"),
            }
        }
        assert!(p.push(&big(10, 3)));
        p.push(b"0000");
        p.finish(true);
        let (rest, end) = read_all(&mut late);
        assert!(matches!(end, Next::End));
        assert_eq!(rest.len(), 14);
        let (all, _) = read_all(&mut first);
        assert_eq!(all.len(), 2 * CHUNK_BYTES + 14);
        // Complete and cacheable: the next identical request is a hit.
        let (mut again, hit) = join(&c, key("a/b", 1));
        assert!(hit);
        assert_eq!(read_all(&mut again).0, all);
        // Another ref state does not match, and drops the old entry.
        drop((first, late, again));
        let (_p, _r) = lead(&c, key("a/b", 2));
        assert_eq!(c.entries(), 1);
    }

    #[test]
    fn entry_bound_stops_sharing_and_readers_finish_on_their_own() {
        // Entries hold at most a quarter: two chunks.
        let c = PackCache::new(8 * CHUNK_BYTES as u64, 8);
        let (mut p, mut r) = lead(&c, key("a/b", 1));
        assert!(p.push(&big(CHUNK_BYTES, 1)));
        assert!(p.push(&big(CHUNK_BYTES, 2)));
        assert!(!p.push(&big(CHUNK_BYTES, 3)));
        assert!(c.held_bytes() == 0 && c.entries() == 0);
        let (got, end) = read_all(&mut r);
        assert_eq!(got.len(), 2 * CHUNK_BYTES);
        assert!(matches!(end, Next::Stopped));
        // Not joinable any more.
        assert!(matches!(
            c.lookup(key("a/b", 1), &refs()),
            Lookup::Lead { .. }
        ));
    }

    /// A complete entry of exactly `CHUNK_BYTES` for `repo`.
    fn complete(c: &Arc<PackCache>, repo: &str) {
        let (mut p, _r) = lead(c, key(repo, 1));
        assert!(p.push(&big(CHUNK_BYTES - 4, 1)));
        assert!(p.push(b"0000"));
        p.finish(true);
    }

    #[test]
    fn total_bound_evicts_least_recently_used_complete_entries() {
        // Four chunks in all, one per entry.
        let c = PackCache::new(4 * CHUNK_BYTES as u64, 8);
        for repo in ["a/1", "a/2", "a/3"] {
            complete(&c, repo);
        }
        assert_eq!(c.held_bytes(), 3 * CHUNK_BYTES as u64);
        // Use a/1: a/2 is now the least recently used.
        drop(join(&c, key("a/1", 1)));
        complete(&c, "a/4");
        assert_eq!(c.held_bytes(), 4 * CHUNK_BYTES as u64);
        let (mut p, _r) = lead(&c, key("a/5", 1));
        assert!(p.push(&big(CHUNK_BYTES, 5)));
        assert_eq!(c.held_bytes(), 4 * CHUNK_BYTES as u64);
        assert!(join(&c, key("a/1", 1)).1);
        assert!(join(&c, key("a/3", 1)).1);
        assert!(matches!(
            c.lookup(key("a/2", 1), &refs()),
            Lookup::Lead { .. }
        ));
    }

    #[test]
    fn entries_bound_evicts_complete_entries_only() {
        let c = PackCache::new(64 * CHUNK_BYTES as u64, 2);
        let (mut p1, _r1) = lead(&c, key("a/1", 1));
        let (_p2, _r2) = lead(&c, key("a/2", 1));
        assert!(matches!(c.lookup(key("a/3", 1), &refs()), Lookup::Bypass));
        assert!(p1.push(b"0000"));
        p1.finish(true);
        let _lead = lead(&c, key("a/3", 1));
        assert_eq!(c.entries(), 2);
    }

    #[test]
    fn last_reader_gone_stops_an_unfinished_entry() {
        let c = PackCache::new(64 * CHUNK_BYTES as u64, 8);
        let (mut p, r) = lead(&c, key("a/b", 1));
        assert!(p.push(&big(CHUNK_BYTES, 1)));
        let (j, _) = join(&c, key("a/b", 1));
        drop(r);
        // A joiner remains: production goes on.
        assert!(p.push(&big(CHUNK_BYTES, 1)));
        drop(j);
        assert!(!p.push(&big(CHUNK_BYTES, 1)));
        assert_eq!(c.entries(), 0);
        assert_eq!(c.held_bytes(), 0);
    }

    #[test]
    fn producer_dropped_unfinished_lets_readers_fall_back() {
        let c = PackCache::new(64 * CHUNK_BYTES as u64, 8);
        let (mut p, mut r) = lead(&c, key("a/b", 1));
        p.push(&big(CHUNK_BYTES, 1));
        drop(p);
        let (got, end) = read_all(&mut r);
        assert_eq!(got.len(), CHUNK_BYTES);
        assert!(matches!(end, Next::Stopped));
    }

    #[test]
    fn failed_responses_are_not_kept() {
        let c = PackCache::new(64 * CHUNK_BYTES as u64, 8);
        let (mut p, mut r) = lead(&c, key("a/b", 1));
        p.push(b"0011ERR whatever");
        p.finish(true);
        assert_eq!(read_all(&mut r).0, b"0011ERR whatever");
        assert_eq!(c.entries(), 0);
        assert!(matches!(
            c.lookup(key("a/b", 1), &refs()),
            Lookup::Lead { .. }
        ));
    }

    #[test]
    fn disabled_cache_bypasses() {
        let c = PackCache::new(0, 8);
        assert!(matches!(c.lookup(key("a/b", 1), &refs()), Lookup::Bypass));
    }

    #[test]
    fn skip_checks_the_prefix() {
        let mut s = Skip::new(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]);
        assert_eq!(s.feed(Bytes::from_static(b"ab")), Ok(None));
        assert_eq!(
            s.feed(Bytes::from_static(b"cdefg")),
            Ok(Some(Bytes::from_static(b"fg")))
        );
        let mut s = Skip::new(vec![Bytes::from_static(b"abc")]);
        assert_eq!(s.feed(Bytes::from_static(b"abd")), Err(()));
    }
}
