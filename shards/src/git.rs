//! git smart-HTTP services: `info/refs`, `git-upload-pack` (protocol v0,
//! v1 and v2) and `git-receive-pack`.
//!
//! Reads run on whichever shard accepted the connection, against an
//! immutable snapshot taken on the owner. Pushes stream the pack into a
//! temporary file while it arrives; the owner then makes the pack visible
//! and hands the ref updates to the ordering service; the client hears
//! `ok`/`ng` only after the updates are finalized and durable.

use bytes::Bytes;
use futures_channel::mpsc;
use guts_io::object::ObjectKind;
use guts_io::pack::ingest::{
    CheckOptions, Ingest, IngestError, IngestLimits, IngestedPack, ObjectSource,
};
use guts_io::pack::write::{pack_stream, PackStream, PackWriteOptions};
use guts_io::refname::check_ref_name;
use guts_io::refs::RefUpdate;
use guts_io::store::{ObjectStore, Pack};
use guts_io::walk::{self, Deepen as WalkDeepen, Filter, WalkRequest, WalkResult};
use guts_io::ObjectId;
use guts_net::advertise::{
    self, AdvertisedRef as WireRef, LsRefsEntry, ProtocolVersion, Service, V2Capabilities,
};
use guts_net::negotiate;
use guts_net::pktline;
use guts_net::receive::{PushParser, PushRequest, PushStep, RefReport, ReportStatusVersion};
use guts_net::sideband::{self, Band, SidebandMode};
use guts_net::upload::{
    Deepen, FetchRequest, FilterSpec, LsRefsRequest, RefPrefixes, UploadError, UploadRequest,
    UploadRequestParser, V2Request, V2RequestParser,
};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;
use std::sync::Arc;

use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::conn::ConnState;
use crate::http::{shard_error_response, text};
use crate::memory::{MemoryError, Reservation};
use crate::pack_cache::{self, Lookup};
use crate::repo::{check_name, AdvertisedRef, RefSnapshot};
use crate::shard::{Shard, ShardError, UpdateOutcome, UpdateRejection};
use crate::work::{self, contained, Budget, BudgetError, WorkError};

/// Bytes of a pack's SHA-1 trailer.
const TRAILER_BYTES: usize = 20;

/// Pack bytes produced per chunk: one side-band-64k frame, or sixteen
/// 1000-byte side-band frames, or (no side-band) the same as 64k.
fn pack_chunk_bytes(sideband: Option<SidebandMode>) -> usize {
    match sideband {
        Some(SidebandMode::SideBand) => SidebandMode::SideBand.payload_max_bytes() * 16,
        _ => SidebandMode::SideBand64k.payload_max_bytes(),
    }
}

/// Route a `/git/OWNER/NAME[.git]/...` request (`rest` is after `/git/`).
pub async fn route(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    rest: String,
) -> Response<ResponseBody> {
    let mut parts = rest.splitn(3, '/');
    let (Some(owner), Some(name), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: expected /git/OWNER/NAME.git/...",
        );
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    if let Err(e) = check_name("owner", owner).and_then(|_| check_name("repository name", name)) {
        return text(StatusCode::NOT_FOUND, format!("repository not found: {e}"));
    }
    let (owner, name) = (owner.to_string(), name.to_string());
    let method = req.method().clone();
    let (s, st) = (shard.clone(), state.clone());
    match (method, tail) {
        (Method::GET, "info/refs") => {
            shard
                .in_bulk(async move { info_refs(&s, req, &owner, &name).await })
                .await
        }
        (Method::POST, "git-upload-pack") => {
            shard
                .in_bulk(async move { upload_pack(&s, &st, req, &owner, &name).await })
                .await
        }
        (Method::POST, "git-receive-pack") => {
            shard
                .in_bulk(async move { receive_pack(&s, &st, req, &owner, &name).await })
                .await
        }
        (Method::GET | Method::HEAD, tail) if tail.starts_with("bundles/") => {
            let file = tail["bundles/".len()..].to_string();
            shard
                .in_bulk(async move { bundle_file(&s, req, &owner, &name, &file).await })
                .await
        }
        (_, "info/refs" | "git-upload-pack" | "git-receive-pack") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found (only the smart HTTP protocol is served)",
        ),
    }
}

fn protocol_version(headers: &HeaderMap) -> ProtocolVersion {
    headers
        .get("git-protocol")
        .map(|v| ProtocolVersion::from_git_protocol_header(v.as_bytes()))
        .unwrap_or(ProtocolVersion::V0)
}

fn git_response(content_type: &str, body: ResponseBody) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CACHE_CONTROL,
            "no-cache, max-age=0, must-revalidate",
        )
        .header(header::PRAGMA, "no-cache")
        .header(header::EXPIRES, "Fri, 01 Jan 1980 00:00:00 GMT")
        .body(body)
        .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
}

/// A 200 carrying the result of `service`.
fn git_result(service: Service, body: ResponseBody) -> Response<ResponseBody> {
    git_response(service.result_content_type(), body)
}

/// A git `ERR` answer inside a 200 response, as git's own services send.
fn git_error(service: Service, msg: &str) -> Response<ResponseBody> {
    tracing::debug!(service = service.name(), error = msg, "git request refused");
    let msg = crate::redact::message(msg);
    git_result(service, ResponseBody::full(pktline::err_pkt(&msg)))
}

fn bad_request(msg: impl std::fmt::Display) -> Response<ResponseBody> {
    text(StatusCode::BAD_REQUEST, format!("bad request: {msg}"))
}

/// 503 with `Retry-After`: the node's memory budget is spent.
pub(crate) fn memory_refused(e: &MemoryError) -> Response<ResponseBody> {
    tracing::warn!(error = %e, "request refused: memory budget spent");
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy (memory budget spent); retry later",
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        http::HeaderValue::from(crate::memory::MEMORY_RETRY_AFTER_S),
    );
    r
}

fn body_error_response(e: &BodyError) -> Response<ResponseBody> {
    match e {
        BodyError::TooLarge { limit } => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        ),
        e @ BodyError::InflationTooHigh { .. } => {
            text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        BodyError::UnsupportedEncoding(enc) => text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {enc:?}"),
        ),
        other => bad_request(other),
    }
}

#[allow(clippy::result_large_err)] // the error is the response to send
fn check_content_type(headers: &HeaderMap, service: Service) -> Result<(), Response<ResponseBody>> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = got.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case(service.request_content_type()) {
        Ok(())
    } else {
        Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "expected Content-Type {}, got {got:?}",
                service.request_content_type()
            ),
        ))
    }
}

/// Refuse a declared body larger than the limit before reading any of it.
#[allow(clippy::result_large_err)] // the error is the response to send
pub(crate) fn check_declared_length(
    headers: &HeaderMap,
    limit: u64,
) -> Result<(), Response<ResponseBody>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    // The limit is on decoded bytes. gzip never shrinks data by more than
    // its framing (stored blocks: 5 bytes per 64 KiB, plus header and
    // trailer), so a gzip body declared well past the limit decodes past
    // it too; allow that framing, refuse anything beyond at once.
    let allowed = if gzip {
        limit.saturating_add(limit / 1024 + 1024)
    } else {
        limit
    };
    match declared {
        Some(len) if len > allowed => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes exceeds the limit of {limit} bytes"),
        )),
        _ => Ok(()),
    }
}

async fn snapshot_or_404(
    shard: &Rc<Shard>,
    owner: &str,
    name: &str,
) -> Result<RefSnapshot, Response<ResponseBody>> {
    shard
        .snapshot(owner, name)
        .await
        .map_err(|e| shard_error_response(&e))
}

/// Bytes of a streamed advertisement gathered before they are sent.
const ADVERTISE_CHUNK_BYTES: usize = 64 * 1024;

/// Stream an advertisement of `snap`'s refs in chunks of about
/// [`ADVERTISE_CHUNK_BYTES`]: it is never built whole, and a client that
/// does not read stalls this producer, not the node's memory (the
/// response channel is bounded). `head` goes first; `write` is called
/// with each ref in order, then once with `None` to end the answer.
fn stream_refs<W>(
    snap: RefSnapshot,
    head: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    mut write: W,
) -> ResponseBody
where
    W: FnMut(&mut Vec<u8>, Option<&AdvertisedRef>) -> Result<(), pktline::PktError> + 'static,
{
    let (tx, body) = ResponseBody::channel();
    glommio::spawn_local(async move {
        let mut tx = tx;
        let mut out = head;
        let refs = ranges
            .into_iter()
            .flat_map(|r| snap.refs[r].iter())
            .map(Some)
            .chain(std::iter::once(None));
        for (i, r) in refs.enumerate() {
            if i % 256 == 255 {
                glommio::yield_if_needed().await;
            }
            if let Err(e) = write(&mut out, r) {
                // A name too long for one pkt: say so rather than end the
                // advertisement as if it were complete.
                tracing::error!(repo = %snap.key, error = %e, "advertisement stopped");
                out.extend_from_slice(&pktline::err_pkt(&e.to_string()));
                let _ = send(&mut tx, Bytes::from(out)).await;
                return;
            }
            if out.len() >= ADVERTISE_CHUNK_BYTES {
                let chunk = std::mem::take(&mut out);
                if send(&mut tx, Bytes::from(chunk)).await.is_err() {
                    return; // client went away
                }
                glommio::yield_if_needed().await;
            }
        }
        if !out.is_empty() {
            let _ = send(&mut tx, Bytes::from(out)).await;
        }
    })
    .detach();
    body
}

async fn info_refs(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    owner: &str,
    name: &str,
) -> Response<ResponseBody> {
    let query = req.uri().query().unwrap_or("");
    let service = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("service="))
        .and_then(Service::from_name);
    let Some(service) = service else {
        return text(StatusCode::FORBIDDEN, "unsupported service: use the smart HTTP protocol (?service=git-upload-pack or git-receive-pack)");
    };
    if service == Service::ReceivePack {
        if let Some(why) = shard.read_only() {
            return read_only_refusal(&why, true);
        }
    }
    let snap = match snapshot_or_404(shard, owner, name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let version = protocol_version(req.headers()).for_service(service);
    let agent = &shard.config.agent;
    let mut out = Vec::with_capacity(1024);
    if version == ProtocolVersion::V2 {
        let caps = V2Capabilities {
            agent: agent.clone(),
            bundle_uri: service == Service::UploadPack
                && shard.config.bundles.enabled
                && snap.bundle.is_some(),
            ..V2Capabilities::default()
        };
        advertise::write_v2_capabilities(&mut out, &caps);
        return git_response(
            service.advertisement_content_type(),
            ResponseBody::full(out),
        );
    }
    advertise::write_service_header(&mut out, service);
    let caps = match service {
        Service::UploadPack => {
            let symref = snap.head.map(|_| snap.head_target.as_str());
            advertise::upload_pack_capabilities(agent, symref)
        }
        Service::ReceivePack => advertise::receive_pack_capabilities(agent, true),
    };
    let mut writer = advertise::V0RefsWriter::start(&mut out, version, &caps);
    let head = if service == Service::UploadPack {
        snap.head
    } else {
        None
    };
    if let Some(head) = head {
        if let Err(e) = writer.head(&mut out, &head) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("advertisement: {e}"),
            );
        }
    }
    let mut writer = Some(writer);
    let all = std::iter::once(0..snap.refs.len()).collect();
    let body = stream_refs(snap, out, all, move |out, r| match (r, writer.as_mut()) {
        (Some(r), Some(w)) => w.write_ref(
            out,
            &WireRef {
                name: &r.name,
                oid: r.oid,
                peeled: r.peeled,
            },
        ),
        (None, Some(_)) => writer.take().map_or(Ok(()), |w| w.finish(out)),
        (_, None) => Ok(()),
    });
    git_response(service.advertisement_content_type(), body)
}

// ---------------------------------------------------------------- upload-pack

/// The body of a service POST, after the checks every one gets: content
/// type, declared length against `limit`, and content encoding.
#[allow(clippy::result_large_err)] // the error is the response to send
fn service_body(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    headers: &HeaderMap,
    incoming: Incoming,
    service: Service,
    limit: u64,
) -> Result<RequestBody, Response<ResponseBody>> {
    check_content_type(headers, service)?;
    check_declared_length(headers, limit)?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    RequestBody::new(incoming, encoding, limit, state.clone())
        .map(|b| b.with_inflation_limit(shard.config.limits.gzip_inflation_ratio_max))
        .map_err(|e| body_error_response(&e))
}

/// Request bytes parsed between chances for other tasks to run.
const PARSE_STEP_BYTES: usize = 16 * 1024;

/// An incremental parser of an upload-pack request body.
trait RequestParser {
    type Request;
    fn advance(&mut self, input: &[u8]) -> Result<usize, UploadError>;
    fn retained_bytes(&self) -> usize;
    fn finish(self, rest: &[u8]) -> Result<Self::Request, UploadError>;
}

impl RequestParser for UploadRequestParser {
    type Request = UploadRequest;
    fn advance(&mut self, input: &[u8]) -> Result<usize, UploadError> {
        UploadRequestParser::advance(self, input)
    }
    fn retained_bytes(&self) -> usize {
        UploadRequestParser::retained_bytes(self)
    }
    fn finish(self, rest: &[u8]) -> Result<UploadRequest, UploadError> {
        UploadRequestParser::finish(self, rest)
    }
}

impl RequestParser for V2RequestParser {
    type Request = V2Request;
    fn advance(&mut self, input: &[u8]) -> Result<usize, UploadError> {
        V2RequestParser::advance(self, input)
    }
    fn retained_bytes(&self) -> usize {
        V2RequestParser::retained_bytes(self)
    }
    fn finish(self, rest: &[u8]) -> Result<V2Request, UploadError> {
        V2RequestParser::finish(self, rest)
    }
}

/// Parse an upload-pack request as its body arrives: only one partial
/// pkt is ever buffered, the parsed state is charged to the node's memory
/// budget as it grows, and the executor yields between chunks.
async fn read_request<P: RequestParser>(
    shard: &Rc<Shard>,
    body: &mut RequestBody,
    mut parser: P,
    what: &str,
) -> Result<(P::Request, Reservation), Response<ResponseBody>> {
    let mut pending: Vec<u8> = Vec::new();
    let mut empty = true;
    let mut memory = shard.memory.reservation();
    let bad = |e: UploadError| bad_request(format!("{what}: {e}"));
    loop {
        let chunk = match body.next_chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(body_error_response(&e)),
        };
        if chunk.is_empty() {
            continue;
        }
        empty = false;
        // Parse in small pieces, giving way between them: a chunk of a
        // gzip body can be a quarter MiB of pkt-lines.
        for piece in chunk.chunks(PARSE_STEP_BYTES) {
            if pending.is_empty() {
                let used = parser.advance(piece).map_err(bad)?;
                pending.extend_from_slice(&piece[used..]);
            } else {
                pending.extend_from_slice(piece);
                let used = parser.advance(&pending).map_err(bad)?;
                pending.drain(..used);
            }
            if let Err(e) = memory.resize(parser.retained_bytes() + pending.capacity()) {
                return Err(memory_refused(&e));
            }
            glommio::yield_if_needed().await;
        }
    }
    if empty {
        return Err(bad_request(
            "empty upload-pack request body (expected pkt-lines)",
        ));
    }
    let request = parser.finish(&pending).map_err(bad)?;
    Ok((request, memory))
}

async fn upload_pack(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    owner: &str,
    name: &str,
) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    // Refuse unknown repositories before reading a body.
    let snap = match snapshot_or_404(shard, owner, name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (parts, incoming) = req.into_parts();
    let limit = shard.config.limits.upload_body_max_bytes;
    let mut body = match service_body(shard, state, &parts.headers, incoming, service, limit) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let pkts_max = shard.config.limits.request_pkts_max;
    if protocol_version(&parts.headers) == ProtocolVersion::V2 {
        let parser = V2RequestParser::new(pkts_max);
        return match read_request(shard, &mut body, parser, "protocol v2 request").await {
            Ok((V2Request::LsRefs(ls), _memory)) => ls_refs(shard, snap, ls).await,
            Ok((V2Request::Fetch(fetch), memory)) => {
                if is_clone(
                    &fetch.haves,
                    &fetch.shallows,
                    fetch.depth.is_some(),
                    &fetch.filter,
                ) {
                    crate::bundle::record_clone(&snap.key);
                }
                run_fetch(shard, snap, FetchKind::V2(fetch), memory).await
            }
            Ok((V2Request::BundleUri(_), _memory)) => bundle_uri(shard, snap),
            Err(r) => r,
        };
    }
    let parser = UploadRequestParser::new(pkts_max);
    match read_request(shard, &mut body, parser, "upload-pack request").await {
        Ok((request, memory)) => {
            if request.wants.is_empty() {
                // A client that wants nothing sends only a flush (git's own
                // upload-pack then ends without a word); answer with a flush
                // so the response is a well-formed, non-empty pkt stream.
                return git_result(service, ResponseBody::full(&pktline::FLUSH_PKT[..]));
            }
            if is_clone(
                &request.haves,
                &request.shallows,
                request.depth.is_some(),
                &request.filter,
            ) {
                crate::bundle::record_clone(&snap.key);
            }
            run_fetch(shard, snap, FetchKind::V0(request), memory).await
        }
        Err(r) => r,
    }
}

/// A fetch of everything, as a full clone asks: no haves, not shallow,
/// not filtered (the clones counted towards a bundle).
fn is_clone(
    haves: &[ObjectId],
    shallows: &[ObjectId],
    deepen: bool,
    filter: &Option<FilterSpec>,
) -> bool {
    haves.is_empty() && shallows.is_empty() && !deepen && filter.is_none()
}

/// The v2 `bundle-uri` answer: the repository's bundle, if it has one
/// (with bundles off the command is not offered, and refused as any
/// command not served is). A client asking is cloning, and
/// counts towards the next bundle.
fn bundle_uri(shard: &Rc<Shard>, snap: RefSnapshot) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    if !shard.config.bundles.enabled {
        let e = UploadError::UnknownCommand {
            command: "bundle-uri".to_owned(),
        };
        return bad_request(format!("protocol v2 request: {e}"));
    }
    crate::bundle::record_clone(&snap.key);
    let mut out = Vec::new();
    let uri;
    let entries: Vec<advertise::BundleListEntry<'_>> = match snap.bundle.as_deref() {
        Some(name) => {
            uri = crate::bundle::uri(name);
            vec![advertise::BundleListEntry {
                id: crate::bundle::list_id(name),
                uri: &uri,
            }]
        }
        None => Vec::new(),
    };
    if let Err(e) = advertise::write_bundle_list(&mut out, &entries) {
        return git_error(service, &format!("bundle-uri: {e}"));
    }
    git_result(service, ResponseBody::full(out))
}

/// `GET /git/OWNER/NAME.git/bundles/<file>` (read permission checked by
/// the router): the bundle file, if the repository exists and has it.
async fn bundle_file(
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    owner: &str,
    name: &str,
    file: &str,
) -> Response<ResponseBody> {
    if !shard.config.bundles.enabled {
        return text(StatusCode::NOT_FOUND, "bundle URIs are off on this node");
    }
    if let Err(r) = snapshot_or_404(shard, owner, name).await {
        return r;
    }
    let dir = crate::repo::repo_dir(&shard.config.data_dir, owner, name);
    crate::bundle::serve(&req, dir, file).await
}

/// `ref-prefix` lines arranged on the executor; more go to the blocking pool.
const LS_REFS_PREFIXES_INLINE_MAX: usize = 256;

/// The v2 `ls-refs` answer, streamed. The refs are sorted, so each prefix
/// is one range of them, found by binary search: a prefix naming a few of
/// 100,000 refs costs those few, and a request with 65,536 prefixes costs
/// what a short one does.
async fn ls_refs(
    shard: &Rc<Shard>,
    snap: RefSnapshot,
    req: LsRefsRequest,
) -> Response<ResponseBody> {
    // Sorting tens of thousands of prefixes is work for the blocking pool.
    let (prefixes, ranges) = if req.ref_prefixes.len() > LS_REFS_PREFIXES_INLINE_MAX {
        let list = req.ref_prefixes.clone();
        let refs = snap.refs.clone();
        let budget = Budget::new(shard.config.limits.request_work_max_ms);
        match work::blocking(&budget, move |_| {
            let prefixes = RefPrefixes::new(&list);
            let ranges = prefixes.ranges(&refs, |r| r.name.as_str());
            Ok::<_, WorkError>((prefixes, ranges))
        })
        .await
        {
            Ok(p) => p,
            Err(e) => return git_error(Service::UploadPack, &e.to_string()),
        }
    } else {
        let prefixes = req.prefixes();
        let ranges = prefixes.ranges(&snap.refs, |r| r.name.as_str());
        (prefixes, ranges)
    };
    let mut head = Vec::new();
    let head_entry = LsRefsEntry {
        name: "HEAD",
        oid: snap.head,
        symref_target: Some(&snap.head_target),
        peeled: None,
    };
    if prefixes.matches("HEAD") {
        if let Err(e) = advertise::write_ls_refs_entry(&mut head, &req, &head_entry) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("ls-refs: {e}"));
        }
    }
    let body = stream_refs(snap, head, ranges, move |out, r| {
        let Some(r) = r else {
            pktline::write_flush(out);
            return Ok(());
        };
        advertise::write_ls_refs_entry(
            out,
            &req,
            &LsRefsEntry {
                name: &r.name,
                oid: Some(r.oid),
                symref_target: None,
                peeled: if req.peel { r.peeled } else { None },
            },
        )
    });
    git_result(Service::UploadPack, body)
}

/// A parsed fetch, protocol v0/v1 or v2.
#[derive(Clone)]
enum FetchKind {
    V0(UploadRequest),
    V2(FetchRequest),
}

/// A pack ready to stream, and what goes before it.
struct PackToSend {
    preamble: Vec<u8>,
    stream: PackStream,
    sideband: Option<SidebandMode>,
    count: usize,
}

/// What a fetch answers: pkt-lines only (a negotiation round), or a pack.
enum Prepared {
    Answer(Vec<u8>),
    Pack(Box<PackToSend>),
}

/// Answer a fetch. A clone's response is computed once for every
/// identical clone arriving meanwhile and kept for the next ones until a
/// ref update (see [`crate::pack_cache`]); anything else is computed for
/// its own request.
async fn run_fetch(
    shard: &Rc<Shard>,
    snap: RefSnapshot,
    kind: FetchKind,
    memory: Reservation,
) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    let key = match &kind {
        FetchKind::V0(r) => pack_cache::v0_key(&snap.key, snap.sequence, r),
        FetchKind::V2(r) => pack_cache::v2_key(&snap.key, snap.sequence, r),
    };
    let lookup = match key {
        Some(key) => shard.pack_cache.lookup(key, &snap.refs),
        None => Lookup::Bypass,
    };
    let reader = match lookup {
        Lookup::Bypass => {
            let (body, _) = fetch_answer(shard, snap, kind, Some(memory)).await;
            return git_result(service, body);
        }
        Lookup::Join { reader, .. } => {
            drop(memory);
            reader
        }
        Lookup::Lead { producer, reader } => {
            // Computed apart from the leader's request, whose client may
            // go while others still read.
            let (s, snap, kind) = (shard.clone(), snap.clone(), kind.clone());
            glommio::spawn_local(async move {
                let (body, pack) = fetch_answer(&s, snap, kind, Some(memory)).await;
                producer.produce(body, pack).await;
            })
            .detach();
            reader
        }
    };
    let s = shard.clone();
    let body = pack_cache::serve(reader, move || async move {
        fetch_answer(&s, snap, kind, None).await.0
    });
    git_result(service, body)
}

/// Negotiate, walk and plan a fetch on the blocking pool, then answer:
/// the body, and whether it is a pack in side-band. `memory` (the parsed
/// request's share of the node's budget) is held until the plan is made.
async fn fetch_answer(
    shard: &Rc<Shard>,
    snap: RefSnapshot,
    kind: FetchKind,
    memory: Option<Reservation>,
) -> (ResponseBody, bool) {
    let service = Service::UploadPack;
    let budget = Budget::new(shard.config.limits.request_work_max_ms);
    let job_snap = snap.clone();
    let prepared = work::blocking(&budget, move |budget| {
        prepare_fetch(&job_snap, kind, budget)
    })
    .await;
    drop(memory);
    match prepared {
        Ok(Prepared::Answer(bytes)) => (ResponseBody::full(bytes), false),
        Ok(Prepared::Pack(pack)) => {
            let sideband = pack.sideband.is_some();
            (stream_pack(snap, *pack, budget).into_body(), sideband)
        }
        Err(e) => (git_error(service, &e.to_string()).into_body(), false),
    }
}

/// Why a fetch was refused or failed before its answer began; the text is
/// the client's `ERR` line.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The request used its work budget (or its client went away) while
    /// it was being prepared.
    #[error("upload-pack: {0}")]
    Budget(BudgetError),
    /// The work did not start, or failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
    /// A `want-ref` naming no ref.
    #[error("unknown ref {name}")]
    UnknownRef { name: String },
    /// A `deepen-not` naming no ref.
    #[error("deepen-not is not a ref: {name}")]
    DeepenNotRef { name: String },
    #[error("upload-pack: no wants")]
    NoWants,
    /// A want the repository does not hold.
    #[error("upload-pack: not our ref {oid}")]
    NotOurRef { oid: ObjectId },
    /// The object walk (see [`walk_failed`]).
    #[error("upload-pack: {0}")]
    Walk(walk::WalkError),
    /// The `wanted-refs` section could not be framed.
    #[error("{0}")]
    WantedRefs(#[from] pktline::PktError),
    /// Planning the pack.
    #[error("upload-pack: {0}")]
    Plan(#[from] guts_io::pack::write::PackWriteError),
}

/// Everything a fetch computes, proportional to its request: run off the
/// executor, with the budget checked between (and inside) the steps.
fn prepare_fetch(
    snap: &RefSnapshot,
    kind: FetchKind,
    budget: &Budget,
) -> Result<Prepared, FetchError> {
    let store = &snap.store;
    let budget_err = FetchError::Budget;
    match kind {
        FetchKind::V0(req) => {
            check_wants(store, &req.wants, budget)?;
            let deepen = resolve_deepen(snap, &req.depth)?;
            let known = known_haves(store, &req.haves, budget)?;
            let negotiation = negotiate::negotiate_v0_request(
                &req,
                |oid| known.binary_search(oid).is_ok(),
                |common| !common.is_empty(),
            );
            if deepen.is_none() && !negotiation.pack_follows {
                return Ok(Prepared::Answer(negotiation.bytes));
            }
            let walk = WalkRequest {
                wants: distinct(&req.wants),
                haves: negotiation.common.clone(),
                client_shallows: req.shallows.clone(),
                deepen: deepen.clone(),
                deepen_relative: req.caps.deepen_relative,
                filter: walk_filter(&req.filter),
                include_tag_candidates: if req.caps.include_tag {
                    tag_candidates(snap)
                } else {
                    Vec::new()
                },
                interrupt: budget.interrupt(),
            };
            budget.check().map_err(budget_err)?;
            // One walk serves both the shallow update (which does not
            // depend on the haves) and the pack.
            let walked = walk::enumerate(store, &walk).map_err(|e| walk_failed(snap, e))?;
            let mut preamble = Vec::new();
            if deepen.is_some() {
                // Every stateless response starts with the shallow update.
                negotiate::write_shallow_update_v0(
                    &mut preamble,
                    &walked.shallow,
                    &walked.unshallow,
                );
            }
            preamble.extend_from_slice(&negotiation.bytes);
            if !negotiation.pack_follows {
                return Ok(Prepared::Answer(preamble));
            }
            budget.check().map_err(budget_err)?;
            plan_pack(
                store,
                walked,
                preamble,
                req.caps.sideband_mode(),
                !req.caps.no_progress,
                req.caps.ofs_delta,
            )
        }
        FetchKind::V2(req) => {
            let mut wants = req.wants.clone();
            let mut wanted_refs = Vec::with_capacity(req.want_refs.len());
            for (i, r) in req.want_refs.iter().enumerate() {
                if i % BUDGET_CHECK_EVERY == 0 {
                    budget.check().map_err(budget_err)?;
                }
                match snap.find(r) {
                    Some(x) => {
                        wants.push(x.oid);
                        wanted_refs.push((x.oid, x.name.as_str()));
                    }
                    None => return Err(FetchError::UnknownRef { name: r.clone() }),
                }
            }
            let wants = distinct(&wants);
            check_wants(store, &wants, budget)?;
            let deepen = resolve_deepen(snap, &req.depth)?;
            let known = known_haves(store, &req.haves, budget)?;
            let acks = negotiate::acknowledge_v2(
                &req.haves,
                req.done,
                req.wait_for_done,
                |oid| known.binary_search(oid).is_ok(),
                |common| !common.is_empty(),
            );
            if !acks.pack_follows {
                return Ok(Prepared::Answer(acks.bytes));
            }
            let mut preamble = acks.bytes;
            let walk = WalkRequest {
                wants,
                haves: acks.common.clone(),
                client_shallows: req.shallows.clone(),
                deepen: deepen.clone(),
                deepen_relative: req.deepen_relative,
                filter: walk_filter(&req.filter),
                include_tag_candidates: if req.include_tag {
                    tag_candidates(snap)
                } else {
                    Vec::new()
                },
                interrupt: budget.interrupt(),
            };
            budget.check().map_err(budget_err)?;
            let walked = walk::enumerate(store, &walk).map_err(|e| walk_failed(snap, e))?;
            // The sections follow in protocol order: shallow-info,
            // wanted-refs, packfile.
            if deepen.is_some() {
                negotiate::write_shallow_info(&mut preamble, &walked.shallow, &walked.unshallow);
            }
            if !wanted_refs.is_empty() {
                negotiate::write_wanted_refs(&mut preamble, &wanted_refs)?;
            }
            negotiate::write_packfile_header(&mut preamble);
            budget.check().map_err(budget_err)?;
            plan_pack(
                store,
                walked,
                preamble,
                Some(SidebandMode::SideBand64k),
                !req.no_progress,
                req.ofs_delta,
            )
        }
    }
}

fn resolve_deepen(
    snap: &RefSnapshot,
    depth: &Option<Deepen>,
) -> Result<Option<WalkDeepen>, FetchError> {
    match depth {
        None => Ok(None),
        Some(Deepen::Depth(n)) => Ok(Some(WalkDeepen::Depth(*n))),
        Some(Deepen::Revs { since, not }) => {
            if !not.is_empty() {
                let mut oids = Vec::with_capacity(not.len());
                for r in not {
                    let found = [
                        r.clone(),
                        format!("refs/{r}"),
                        format!("refs/tags/{r}"),
                        format!("refs/heads/{r}"),
                    ]
                    .iter()
                    .find_map(|cand| snap.find(cand).map(|x| x.peeled.unwrap_or(x.oid)));
                    match found {
                        Some(oid) => oids.push(oid),
                        None => return Err(FetchError::DeepenNotRef { name: r.clone() }),
                    }
                }
                match since {
                    Some(ts) => Ok(Some(WalkDeepen::SinceNot(*ts as i64, oids))),
                    None => Ok(Some(WalkDeepen::Not(oids))),
                }
            } else if let Some(ts) = since {
                Ok(Some(WalkDeepen::Since(*ts as i64)))
            } else {
                Ok(None)
            }
        }
    }
}

fn walk_filter(spec: &Option<FilterSpec>) -> Option<Filter> {
    spec.map(|f| match f {
        FilterSpec::BlobNone => Filter::BlobNone,
        FilterSpec::BlobLimit(n) => Filter::BlobLimit(n),
        FilterSpec::TreeDepth(n) => Filter::TreeDepth(n),
    })
}

fn tag_candidates(snap: &RefSnapshot) -> Vec<(ObjectId, ObjectId)> {
    snap.refs
        .iter()
        .filter_map(|r| r.peeled.map(|p| (r.oid, p)))
        .collect()
}

/// A failed walk; a store that cannot be read (a corrupt or missing pack)
/// is the operator's problem, and is logged as such.
fn walk_failed(snap: &RefSnapshot, e: walk::WalkError) -> FetchError {
    if let walk::WalkError::Store(store) = &e {
        tracing::error!(repo = %snap.key, error = %store, "stored object unreadable (corrupt or missing pack data)");
    }
    FetchError::Walk(e)
}

/// Budget checks in loops over request items happen this often.
const BUDGET_CHECK_EVERY: usize = 4096;

/// `ids` without repeats, first occurrences in order.
fn distinct(ids: &[ObjectId]) -> Vec<ObjectId> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// The distinct haves the store holds, sorted for binary search: one store
/// lookup per distinct have, however often a client repeats it.
fn known_haves(
    store: &ObjectStore,
    haves: &[ObjectId],
    budget: &Budget,
) -> Result<Vec<ObjectId>, FetchError> {
    let mut sorted = haves.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut known = Vec::new();
    for (i, have) in sorted.into_iter().enumerate() {
        if i % BUDGET_CHECK_EVERY == 0 {
            budget.check().map_err(FetchError::Budget)?;
        }
        if store.contains(&have) {
            known.push(have);
        }
    }
    Ok(known)
}

fn check_wants(store: &ObjectStore, wants: &[ObjectId], budget: &Budget) -> Result<(), FetchError> {
    if wants.is_empty() {
        return Err(FetchError::NoWants);
    }
    for (i, w) in wants.iter().enumerate() {
        if i % BUDGET_CHECK_EVERY == 0 {
            budget.check().map_err(FetchError::Budget)?;
        }
        if !store.contains(w) {
            return Err(FetchError::NotOurRef { oid: *w });
        }
    }
    Ok(())
}

/// Plan the pack of `walked` and put the progress line after `preamble`.
fn plan_pack(
    store: &ObjectStore,
    walked: WalkResult,
    mut preamble: Vec<u8>,
    sideband: Option<SidebandMode>,
    progress: bool,
    ofs_delta: bool,
) -> Result<Prepared, FetchError> {
    let opts = PackWriteOptions {
        ofs_delta,
        chunk_bytes: pack_chunk_bytes(sideband),
    };
    let count = walked.objects.len();
    let stream = pack_stream(store, &walked.objects, opts)?;
    if progress {
        if let Some(mode) = sideband {
            sideband::write_progress(
                &mut preamble,
                mode,
                &format!("Enumerating objects: {count}, done.\n"),
            );
        }
    }
    Ok(Prepared::Pack(Box::new(PackToSend {
        preamble,
        stream,
        sideband,
        count,
    })))
}

/// Pack bytes generated per blocking-pool job when a pack is not sent
/// verbatim (so the executor never compresses or resolves deltas, and
/// other requests' jobs get the pool between these).
const PACK_GENERATE_STEP_BYTES: usize = 1024 * 1024;

/// Stream a planned pack behind its preamble (side-band framed). Whole
/// stored packs go out with io_uring DMA reads; anything else is
/// generated on the blocking pool a step at a time, one step ahead of
/// the client.
fn stream_pack(snap: RefSnapshot, pack: PackToSend, budget: Budget) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    let PackToSend {
        preamble,
        stream,
        sideband,
        count,
    } = pack;
    crate::metrics::record_pack_sent(0, count as u64);
    let (tx, body) = ResponseBody::channel();
    glommio::spawn_local(async move {
        let mut tx = tx;
        // The client going away (the body dropped) ends this task, and the
        // guard then stops generation on the pool.
        let _cancel = budget.cancel_on_drop();
        if send(&mut tx, Bytes::from(preamble)).await.is_err() {
            return;
        }
        let verbatim = match stream.verbatim_plan() {
            Some(plan) => stream_verbatim_dma(&mut tx, sideband, &plan).await,
            None => Err(DmaStreamError::NotVerbatim),
        };
        let streamed: Result<(), PackSendError> = match verbatim {
            Ok(()) => Ok(()),
            Err(DmaStreamError::ClientGone) => return,
            Err(DmaStreamError::Failed(e)) => Err(PackSendError::Read(e)),
            Err(DmaStreamError::Corrupt(path)) => {
                tracing::error!(repo = %snap.key, pack = %path.display(), "stored pack is corrupt: its contents do not match its checksum; restore it from a replica or backup");
                Err(PackSendError::Corrupt)
            }
            Err(other) => {
                if let DmaStreamError::Unavailable(e) = &other {
                    // Nothing sent yet: serve the same bytes with positional reads.
                    warn_dma_unavailable(e);
                }
                match stream_generated(&mut tx, sideband, stream, &budget).await {
                    Ok(()) => Ok(()),
                    Err(None) => return, // client went away
                    Err(Some(e)) => Err(e),
                }
            }
        };
        match streamed {
            Ok(()) => {
                if sideband.is_some() {
                    let _ = send(&mut tx, Bytes::from_static(pktline::FLUSH_PKT)).await;
                }
            }
            Err(e) => {
                tracing::error!(repo = %snap.key, error = %e, "pack stream failed");
                // Without side-band there is no way to signal the error: the
                // body ends early and the client sees a truncated pack.
                if let Some(mode) = sideband {
                    let mut out = Vec::new();
                    let msg = crate::redact::message(&e.to_string());
                    sideband::write_error(&mut out, mode, &msg);
                    let _ = send(&mut tx, Bytes::from(out)).await;
                }
            }
        }
    })
    .detach();
    git_result(service, body)
}

/// Generate a pack on the blocking pool, [`PACK_GENERATE_STEP_BYTES`] per
/// job, the next step running while the last one is sent. `Err(None)`:
/// the client went away.
async fn stream_generated(
    tx: &mut mpsc::Sender<Bytes>,
    sideband: Option<SidebandMode>,
    stream: PackStream,
    budget: &Budget,
) -> Result<(), Option<PackSendError>> {
    type Step = (PackStream, Vec<Bytes>, Option<PackSendError>, bool);
    fn generate(
        budget: &Budget,
        mut stream: PackStream,
    ) -> glommio::task::JoinHandle<Result<Step, PackSendError>> {
        let budget = budget.clone();
        glommio::spawn_local(async move {
            work::blocking(&budget.clone(), move |budget| {
                let mut chunks = Vec::new();
                let mut bytes = 0;
                while bytes < PACK_GENERATE_STEP_BYTES {
                    match stream.next() {
                        None => return Ok((stream, chunks, None, true)),
                        Some(Ok(chunk)) => {
                            bytes += chunk.len();
                            chunks.push(chunk);
                        }
                        Some(Err(e)) => {
                            return Ok((stream, chunks, Some(PackSendError::Generate(e)), true))
                        }
                    }
                    if let Err(e) = budget.check() {
                        return Ok((stream, chunks, Some(PackSendError::Budget(e)), true));
                    }
                }
                Ok((stream, chunks, None, false))
            })
            .await
        })
        .detach()
    }
    let mut next = Some(generate(budget, stream));
    while let Some(job) = next.take() {
        let step = match job.await {
            Some(Ok(step)) => step,
            Some(Err(e)) => return Err(Some(e)),
            None => return Err(Some(PackSendError::Stopped)),
        };
        let (stream, chunks, failed, last) = step;
        if !last {
            next = Some(generate(budget, stream));
        }
        for chunk in chunks {
            if send_pack_data(tx, sideband, chunk).await.is_err() {
                return Err(None);
            }
        }
        if let Some(e) = failed {
            return Err(Some(e));
        }
    }
    Ok(())
}

/// Why a pack stopped after its response began; the text goes to the
/// client on side-band 3 (without the node's paths).
#[derive(Debug, thiserror::Error)]
enum PackSendError {
    /// Reading a stored pack with direct I/O.
    #[error("pack read failed: {0}")]
    Read(guts_io::dma::DmaError),
    /// A stored pack does not match its checksum (logged with its path).
    #[error("a stored pack is corrupt (checksum mismatch); the server's operator has been told")]
    Corrupt,
    /// Generating the pack from the store.
    #[error("pack generation failed: {0}")]
    Generate(guts_io::pack::write::PackWriteError),
    /// The request used its work budget, or its client went away.
    #[error(transparent)]
    Budget(BudgetError),
    /// A generation step did not start, or failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
    /// A generation step ended without an answer.
    #[error("pack generation stopped")]
    Stopped,
}

enum DmaStreamError {
    /// The pack is not made of whole stored packs; nothing was sent.
    NotVerbatim,
    /// Direct I/O could not start (e.g. a file system without O_DIRECT);
    /// nothing was sent.
    Unavailable(guts_io::dma::DmaError),
    /// Reading failed after bytes were sent.
    Failed(guts_io::dma::DmaError),
    /// The stored pack's contents do not match its checksum.
    Corrupt(std::path::PathBuf),
    ClientGone,
}

fn warn_dma_unavailable(e: &guts_io::dma::DmaError) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(error = %e, "direct I/O unavailable for pack reads; falling back to positional reads through the page cache");
    });
}

/// Stream whole stored packs with io_uring DMA reads (O_DIRECT, read-ahead,
/// zero-copy `Bytes` over the aligned buffers) into side-band frames.
async fn stream_verbatim_dma(
    tx: &mut mpsc::Sender<Bytes>,
    sideband: Option<SidebandMode>,
    plan: &guts_io::pack::write::VerbatimPlan,
) -> Result<(), DmaStreamError> {
    use guts_io::dma::DmaRangeReader;
    use sha1::Digest;
    // Open every file before sending a byte, so a failure can fall back.
    let mut readers = Vec::with_capacity(plan.ranges.len());
    for (path, start, end) in &plan.ranges {
        readers.push(
            DmaRangeReader::open(path, *start, *end)
                .await
                .map_err(DmaStreamError::Unavailable)?,
        );
    }
    let max = pack_chunk_bytes(sideband);
    let mut hasher = plan.needs_trailer().then(sha1::Sha1::new);
    // One stored pack sent whole: check its trailer against its contents
    // as it goes, and withhold the trailer until it matches, so that a pack
    // corrupted on disk is reported (and logged) instead of served.
    let mut verify = match (plan.header, &plan.ranges[..]) {
        (None, [(path, 0, _)]) => Some((sha1::Sha1::new(), Bytes::new(), path.clone())),
        _ => None,
    };
    async fn out(
        tx: &mut mpsc::Sender<Bytes>,
        sideband: Option<SidebandMode>,
        hasher: &mut Option<sha1::Sha1>,
        chunk: Bytes,
    ) -> Result<(), DmaStreamError> {
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        send_pack_data(tx, sideband, chunk)
            .await
            .map_err(|()| DmaStreamError::ClientGone)
    }
    if let Some(header) = plan.header {
        out(tx, sideband, &mut hasher, Bytes::copy_from_slice(&header)).await?;
    }
    let mut first_read = true;
    for mut reader in readers {
        while let Some(next) = reader.next_chunk(max).await {
            let chunk = match next {
                Ok(c) => c,
                // The very first read failing (e.g. O_DIRECT refused at read
                // time) is still a clean fallback if no header went out.
                Err(e) if first_read && plan.header.is_none() => {
                    return Err(DmaStreamError::Unavailable(e))
                }
                Err(e) => return Err(DmaStreamError::Failed(e)),
            };
            first_read = false;
            let chunk = match verify.as_mut() {
                Some((h, held, _)) => {
                    let mut all = if held.is_empty() {
                        chunk
                    } else {
                        let mut v = Vec::with_capacity(held.len() + chunk.len());
                        v.extend_from_slice(held);
                        v.extend_from_slice(&chunk);
                        Bytes::from(v)
                    };
                    *held = all.split_off(all.len().saturating_sub(TRAILER_BYTES));
                    h.update(&all);
                    all
                }
                None => chunk,
            };
            if !chunk.is_empty() {
                out(tx, sideband, &mut hasher, chunk).await?;
            }
        }
        reader.close().await;
    }
    if let Some((h, held, path)) = verify {
        let computed: [u8; 20] = h.finalize().into();
        if held.as_ref() != computed.as_slice() {
            return Err(DmaStreamError::Corrupt(path));
        }
        out(tx, sideband, &mut hasher, held).await?;
    }
    if let Some(h) = hasher {
        let trailer: [u8; 20] = h.finalize().into();
        send_pack_data(tx, sideband, Bytes::copy_from_slice(&trailer))
            .await
            .map_err(|()| DmaStreamError::ClientGone)?;
    }
    Ok(())
}

pub(crate) async fn send(tx: &mut mpsc::Sender<Bytes>, data: Bytes) -> Result<(), ()> {
    futures_lite::future::poll_fn(|cx| tx.poll_ready(cx))
        .await
        .map_err(|_| ())?;
    tx.start_send(data).map_err(|_| ())
}

/// Send pack bytes to the client: as they are, or in band-1 side-band
/// frames (headers and payload slices, no copy of the payload).
async fn send_pack_data(
    tx: &mut mpsc::Sender<Bytes>,
    sideband: Option<SidebandMode>,
    data: Bytes,
) -> Result<(), ()> {
    crate::metrics::record_pack_sent(data.len() as u64, 0);
    let Some(mode) = sideband else {
        return send(tx, data).await;
    };
    for (header, payload) in sideband::frames(mode, Band::Data, data) {
        send(tx, Bytes::copy_from_slice(&header)).await?;
        send(tx, payload).await?;
    }
    Ok(())
}

// --------------------------------------------------------------- receive-pack

/// Objects a push may refer to: the repository's store.
/// A repository's object store as the source ingest checks links against.
pub struct StoreSource(pub ObjectStore);

impl ObjectSource for StoreSource {
    fn contains(&self, oid: &ObjectId) -> bool {
        self.0.contains(oid)
    }
    fn read_object(&self, oid: &ObjectId) -> Option<(ObjectKind, Vec<u8>)> {
        self.0
            .read(oid)
            .ok()
            .flatten()
            .map(|(k, b)| (k, b.to_vec()))
    }
    fn object_kind(&self, oid: &ObjectId) -> Option<ObjectKind> {
        self.0.read_header(oid).ok().flatten().map(|(k, _)| k)
    }
}

struct PushReply {
    version: Option<ReportStatusVersion>,
    sideband: Option<SidebandMode>,
    quiet: bool,
}

impl PushReply {
    fn from_request(req: &PushRequest) -> Self {
        PushReply {
            version: req.caps.report_status_version(),
            sideband: req.caps.sideband_mode(),
            quiet: req.caps.quiet,
        }
    }

    fn render(
        &self,
        progress: &[String],
        unpack: Result<(), &str>,
        refs: &[RefReport<'_>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        if let (Some(mode), false) = (self.sideband, self.quiet) {
            for msg in progress {
                guts_net::receive::write_push_progress(&mut out, mode, msg);
            }
        }
        match self.version {
            Some(v) => {
                guts_net::receive::write_report_status(&mut out, v, unpack, refs, self.sideband)
            }
            // No report requested: still end the multiplexed stream.
            None if self.sideband.is_some() => out.extend_from_slice(pktline::FLUSH_PKT),
            None => {}
        }
        out
    }
}

/// A read replica's answer to a push: an `ERR` pkt-line, which git prints as
/// `remote error: ...` (after the service header on the advertisement).
fn read_only_refusal(why: &str, advertisement: bool) -> Response<ResponseBody> {
    let mut out = Vec::new();
    if advertisement {
        advertise::write_service_header(&mut out, Service::ReceivePack);
        out.extend_from_slice(&pktline::err_pkt(why));
        return git_response(
            Service::ReceivePack.advertisement_content_type(),
            ResponseBody::full(out),
        );
    }
    out.extend_from_slice(&pktline::err_pkt(why));
    receive_response(out)
}

fn receive_response(out: Vec<u8>) -> Response<ResponseBody> {
    let service = Service::ReceivePack;
    git_result(service, ResponseBody::full(out))
}

async fn receive_pack(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    owner: &str,
    name: &str,
) -> Response<ResponseBody> {
    let service = Service::ReceivePack;
    if let Some(why) = shard.read_only() {
        return read_only_refusal(&why, false);
    }
    let (parts, incoming) = req.into_parts();
    // Counted before its snapshot is taken, until it is answered: no prune
    // switches this repository's packs meanwhile.
    let _in_flight = crate::maintenance::PushInFlight::begin(owner, name);
    // Unknown repository: answer before reading any of the body.
    let snap = match snapshot_or_404(shard, owner, name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let limit = shard.config.limits.push_body_max_bytes;
    let mut body = match service_body(shard, state, &parts.headers, incoming, service, limit) {
        Ok(b) => b,
        Err(r) => return r,
    };

    // 1. The command header, parsed incrementally; the rest is the pack.
    let mut parser = PushParser::new(Default::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut body_was_empty = true;
    // The parsed commands are charged to the node's memory budget as they
    // grow, and held until the push is answered.
    let mut memory = shard.memory.reservation();
    let (request, mut leftover) = loop {
        let chunk = match body.next_chunk().await {
            Ok(Some(c)) => {
                body_was_empty &= c.is_empty();
                c
            }
            Ok(None) => {
                if pending.is_empty() && parser.finish().is_ok() {
                    // Only a flush: no commands, nothing to do (as git).
                    return receive_response(pktline::FLUSH_PKT.to_vec());
                }
                if pending.is_empty() && body_was_empty {
                    return bad_request("empty receive-pack request body (expected pkt-lines)");
                }
                return bad_request("push request ended before its commands were complete");
            }
            Err(e) => return body_error_response(&e),
        };
        // Parse in small pieces, giving way between them.
        let mut offset = 0;
        let mut done = None;
        while offset < chunk.len() {
            let end = (offset + PARSE_STEP_BYTES).min(chunk.len());
            pending.extend_from_slice(&chunk[offset..end]);
            offset = end;
            match parser.advance(&pending) {
                Ok(PushStep::NeedMore { consumed }) => {
                    pending.drain(..consumed);
                    if let Err(e) = memory.resize(parser.retained_bytes() + pending.capacity()) {
                        return memory_refused(&e);
                    }
                    glommio::yield_if_needed().await;
                }
                Ok(PushStep::Done { consumed, request }) => {
                    let mut rest = pending.split_off(consumed);
                    rest.extend_from_slice(&chunk[offset..]);
                    done = Some((request, rest));
                    break;
                }
                Err(
                    e @ (guts_net::receive::ReceiveError::TooManyPushOptions { .. }
                    | guts_net::receive::ReceiveError::PushOptionsTooLarge { .. }),
                ) => {
                    // Refuse in the client's own report format, which git prints
                    // ("remote unpack failed: ..." and "[remote rejected]"),
                    // rather than a bare 400 that git shows as "RPC failed".
                    let so_far = parser.request_so_far();
                    let reply = PushReply::from_request(so_far);
                    let msg = e.to_string();
                    let refs: Vec<RefReport<'_>> = so_far
                        .commands
                        .iter()
                        .map(|c| RefReport {
                            name: &c.name,
                            result: Err(msg.as_str()),
                        })
                        .collect();
                    log_push(&snap.key, state, &refs, Some(&msg));
                    // Read the rest (the pack) so the client reads the answer.
                    while let Ok(Some(_)) = body.next_chunk().await {}
                    return receive_response(reply.render(&[], Err(&msg), &refs));
                }
                Err(e) => return bad_request(format!("receive-pack request: {e}")),
            }
        }
        if let Some(done) = done {
            break done;
        }
    };
    let reply = PushReply::from_request(&request);
    if request.commands.is_empty() {
        return receive_response(pktline::FLUSH_PKT.to_vec());
    }
    if !request.push_options.is_empty() {
        tracing::debug!(repo = %snap.key, options = ?request.push_options, "push options");
    }

    // 2. The pack, streamed into a temporary file as it arrives.
    let ingested = if request.expects_pack() || !leftover.is_empty() {
        match receive_pack_data(shard, &snap, &mut body, std::mem::take(&mut leftover)).await {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                let refs: Vec<RefReport<'_>> = request
                    .commands
                    .iter()
                    .map(|c| RefReport {
                        name: &c.name,
                        result: Err("unpacker error"),
                    })
                    .collect();
                log_push(&snap.key, state, &refs, Some(&msg));
                return receive_response(reply.render(&[], Err(&msg), &refs));
            }
        }
    } else {
        // Drain anything after the commands (a delete-only push has no pack).
        while let Ok(Some(_)) = body.next_chunk().await {}
        None
    };

    let mut progress = Vec::new();
    if let Some(pack) = &ingested {
        let stats = pack.stats();
        progress.push(format!(
            "Received {} objects ({} deltas resolved, {} bases added to complete a thin pack); object checks passed.\n",
            pack.object_count(),
            stats.deltas,
            stats.thin_bases_appended
        ));
    }

    // 3. Validate each command against the snapshot and the new objects
    //    (a lookup each, on the blocking pool: a push may carry 100,000).
    let commands = request.commands.clone();
    let job_snap = snap.clone();
    let budget = Budget::new(shard.config.limits.request_work_max_ms);
    let validated = work::blocking(&budget, move |budget| {
        let mut results: Vec<Option<UpdateRejection>> = Vec::with_capacity(commands.len());
        for (i, cmd) in commands.iter().enumerate() {
            if i % BUDGET_CHECK_EVERY == 0 {
                budget.check()?;
            }
            results.push(validate_command(&job_snap, ingested.as_ref(), cmd).err());
        }
        Ok::<_, WorkError>((ingested, results))
    })
    .await;
    let (ingested, mut results) = match validated {
        Ok(v) => v,
        Err(e) => {
            let msg = crate::redact::message(&e.to_string());
            let refs: Vec<RefReport<'_>> = request
                .commands
                .iter()
                .map(|c| RefReport {
                    name: &c.name,
                    result: Err(msg.as_str()),
                })
                .collect();
            log_push(&snap.key, state, &refs, None);
            return receive_response(reply.render(&progress, Ok(()), &refs));
        }
    };
    let atomic = request.caps.atomic;
    if atomic && results.iter().any(Option::is_some) {
        for r in results.iter_mut() {
            if r.is_none() {
                *r = Some(UpdateRejection::AtomicPushFailed);
            }
        }
    }
    let updates: Vec<(usize, RefUpdate)> = request
        .commands
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_none())
        .map(|(i, c)| {
            (
                i,
                RefUpdate {
                    name: c.name.clone(),
                    old: c.old,
                    new: c.new,
                },
            )
        })
        .collect();

    // 4. On the owner: make the pack visible, order the updates, wait for
    //    them to be final and durable.
    let key = snap.key.clone();
    let update_list: Vec<RefUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
    let outcome = shard
        .to_owner(&key)
        .apply_push(
            owner.to_string(),
            name.to_string(),
            ingested,
            update_list,
            atomic,
        )
        .await;
    let outcomes: Vec<UpdateOutcome> = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) | Err(e) => {
            if matches!(e, ShardError::NotFinalized { .. }) {
                tracing::warn!(repo = %key, error = %e, "push not finalized in time");
            } else {
                tracing::error!(repo = %key, error = %e, "push not applied");
            }
            vec![Err(UpdateRejection::NotApplied(Arc::new(e))); updates.len()]
        }
    };
    for ((i, _), outcome) in updates.iter().zip(outcomes) {
        if let Err(reason) = outcome {
            results[*i] = Some(reason);
        }
    }
    // Rendered once, here, for the client.
    let results: Vec<Option<String>> = results
        .into_iter()
        .map(|r| r.map(|why| why.to_string()))
        .collect();
    let rejected = results.iter().filter(|r| r.is_some()).count() as u64;
    crate::metrics::record_ref_updates(results.len() as u64 - rejected, rejected);
    let refs: Vec<RefReport<'_>> = request
        .commands
        .iter()
        .zip(results.iter())
        .map(|(c, r)| RefReport {
            name: &c.name,
            result: match r {
                None => Ok(()),
                Some(reason) => Err(reason.as_str()),
            },
        })
        .collect();
    progress.push(format!(
        "Updated {} of {} refs (finalized and durable).\n",
        results.len() as u64 - rejected,
        results.len()
    ));
    log_push(&key, state, &refs, None);
    receive_response(reply.render(&progress, Ok(()), &refs))
}

/// Longest ref-results summary in a push log line.
const PUSH_LOG_REFS_MAX_BYTES: usize = 4096;

/// The push log line: repository, who, each ref's result, and the unpack
/// error if the pack was refused.
fn log_push(repo: &str, state: &Rc<ConnState>, refs: &[RefReport<'_>], unpack: Option<&str>) {
    let mut summary = String::new();
    for r in refs {
        if summary.len() > PUSH_LOG_REFS_MAX_BYTES {
            summary.push_str(" ...");
            break;
        }
        if !summary.is_empty() {
            summary.push_str(", ");
        }
        match r.result {
            Ok(()) => summary.push_str(&format!("{} ok", r.name)),
            Err(why) => summary.push_str(&format!("{} ng ({why})", r.name)),
        }
    }
    let ok = refs.iter().filter(|r| r.result.is_ok()).count();
    let client = state
        .peer
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    tracing::info!(
        target: "guts::push",
        repo = %repo,
        user = %state.caller.borrow(),
        client = %client,
        refs_ok = ok,
        refs_rejected = refs.len() - ok,
        unpack = %unpack.unwrap_or("ok"),
        refs = %summary,
        "push"
    );
}
/// Compressed pack bytes handed to the blocking pool per ingest step:
/// small enough that one step of a pathological pack (zlib inflates about
/// 1000-fold) stays short, so other requests' jobs get the pool between steps.
const INGEST_STEP_BYTES: usize = 256 * 1024;

/// Stream the pack part of a push into an ingest; returns the verified,
/// not yet visible pack (None for an empty pack). Inflating and hashing
/// run on the blocking pool, one step behind the socket.
async fn receive_pack_data(
    shard: &Rc<Shard>,
    snap: &RefSnapshot,
    body: &mut RequestBody,
    first: Vec<u8>,
) -> Result<Option<IngestedPack>, ReceivePackError> {
    let limits = &shard.config.limits;
    let pack_dir = snap.store.objects_dir().join("pack");
    let ingest_limits = IngestLimits {
        inflated_floor_bytes: limits.push_inflated_floor_bytes,
        inflated_ratio_max: limits.push_inflated_ratio_max,
        ..IngestLimits::default()
    };
    let streaming = Budget::new(limits.request_timeout_ms);
    let ingest = work::blocking(&streaming, move |_| {
        Ingest::new(&pack_dir, ingest_limits).map_err(ReceivePackError::Start)
    })
    .await?;
    let mut ingest = Some(ingest);
    let mut in_flight: Option<glommio::task::JoinHandle<Result<Ingest, ReceivePackError>>> = None;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_bytes = 0;
    if !first.is_empty() {
        batch_bytes += first.len();
        batch.push(Bytes::from(first));
    }
    loop {
        let done = match body.next_chunk().await {
            Ok(Some(chunk)) => {
                batch_bytes += chunk.len();
                batch.push(chunk);
                false
            }
            Ok(None) => true,
            Err(e) => return Err(e.into()),
        };
        if batch_bytes < INGEST_STEP_BYTES && !done {
            continue;
        }
        if let Some(step) = in_flight.take() {
            ingest = Some(step.await.ok_or(ReceivePackError::Stopped)??);
        }
        let Some(mut next) = ingest.take() else {
            return Err(ReceivePackError::Stopped);
        };
        let chunks = std::mem::take(&mut batch);
        batch_bytes = 0;
        let budget = streaming.clone();
        in_flight = Some(
            glommio::spawn_local(async move {
                work::blocking(&budget, move |_| {
                    for chunk in &chunks {
                        next.write(chunk).map_err(ReceivePackError::Pack)?;
                    }
                    Ok(next)
                })
                .await
            })
            .detach(),
        );
        if done {
            break;
        }
    }
    let ingest = match in_flight.take() {
        Some(step) => step.await.ok_or(ReceivePackError::Stopped)??,
        None => ingest.ok_or(ReceivePackError::Stopped)?,
    };
    crate::metrics::record_pack_received(ingest.received_bytes());
    let source = StoreSource(snap.store.clone());
    let checks = CheckOptions {
        strict: true,
        check_links: true,
    };
    // One push at a time resolves deltas on this shard (the rest wait
    // their turn), so clones always find a blocking thread free.
    let _slot = shard
        .push_slots
        .acquire_permit(1)
        .await
        .map_err(ReceivePackError::Slots)?;
    let budget = Budget::new(limits.request_work_max_ms);
    let mut ingest = ingest;
    ingest.set_interrupt(budget.interrupt());
    let finished = work::blocking(&budget, move |_| {
        ingest
            .finish(&source, &checks)
            .map_err(ReceivePackError::Pack)
    })
    .await?;
    crate::metrics::record_objects_ingested(u64::from(finished.object_count()));
    Ok(Some(finished))
}

/// Why a push's pack was not taken; the text is the client's
/// `unpack <reason>` line.
#[derive(Debug, thiserror::Error)]
pub enum ReceivePackError {
    /// The temporary pack file could not be created.
    #[error("{0}")]
    Start(IngestError),
    /// The pack: malformed, over a limit, or an object failed its checks
    /// (shown on one line, without the node's paths).
    #[error("{}", ingest_message(.0))]
    Pack(IngestError),
    /// Reading the request body.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// An ingest step ended without an answer.
    #[error("pack ingest stopped")]
    Stopped,
    /// The shard's push slots are gone (it is stopping).
    #[error("{0}")]
    Slots(glommio::GlommioError<()>),
    /// The work did not start (budget, client gone), or failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
}

/// An ingest error as the client sees it (`unpack <msg>`): one line, no
/// server paths.
fn ingest_message(e: &IngestError) -> String {
    crate::redact::message(&e.to_string().replace('\n', " "))
}

fn object_kind(
    snap: &RefSnapshot,
    pack: Option<&IngestedPack>,
    oid: &ObjectId,
) -> Option<ObjectKind> {
    if let Some(p) = pack {
        if let Some(kind) = p.object_kind(oid) {
            return Some(kind);
        }
    }
    snap.store.read_header(oid).ok().flatten().map(|(k, _)| k)
}

fn validate_command(
    snap: &RefSnapshot,
    pack: Option<&IngestedPack>,
    cmd: &guts_net::receive::RefUpdate,
) -> Result<(), UpdateRejection> {
    check_ref_name(cmd.name.as_bytes())?;
    let current = snap.find(&cmd.name).map(|r| r.oid);
    match (current, cmd.old.is_null()) {
        (Some(cur), _) if cur != cmd.old => return Err(UpdateRejection::StaleAdvertised),
        (None, false) => return Err(UpdateRejection::StaleMissing),
        _ => {}
    }
    if cmd.new.is_null() {
        if current.is_none() {
            return Err(UpdateRejection::DeleteMissing);
        }
        return Ok(());
    }
    let oid = cmd.new;
    match object_kind(snap, pack, &oid) {
        None => Err(UpdateRejection::MissingObject { oid }),
        Some(kind) if cmd.name.starts_with("refs/heads/") && kind != ObjectKind::Commit => {
            Err(UpdateRejection::BranchNotCommit { oid, kind })
        }
        Some(_) => Ok(()),
    }
}

/// Why a push's checked pack could not be made part of its repository.
#[derive(Debug, thiserror::Error)]
pub enum PackStoreError {
    /// Moving the pack and its index into place, or syncing them.
    #[error(transparent)]
    Commit(#[from] IngestError),
    /// Opening the pack just committed.
    #[error(transparent)]
    Open(#[from] guts_io::store::StoreError),
    /// Reading the committed pack back for its chunk digests.
    #[error("reading the stored pack: {0}")]
    Chunks(std::io::Error),
    /// The blocking pool's work failed (a bug).
    #[error(transparent)]
    Work(#[from] WorkError),
}

pub(crate) async fn apply_push(
    shard: Rc<Shard>,
    owner: &str,
    name: &str,
    ingested: Option<IngestedPack>,
    updates: Vec<RefUpdate>,
    atomic: bool,
) -> Result<Vec<UpdateOutcome>, ShardError> {
    let repo = shard.repo(owner, name)?;
    let key = repo.borrow().key.clone();
    let mut pack_ref = None;
    if let Some(pack) = ingested {
        let checksum = pack.checksum();
        if updates.is_empty() {
            // Nothing will refer to it: drop it (its temp files go with it).
            return Ok(Vec::new());
        }
        // Renaming, fsyncing and reading the new index happen on the
        // blocking pool; the executor only adds the opened pack to the list.
        let committed = glommio::executor()
            .spawn_blocking(move || {
                contained(move || match pack.commit()? {
                    Some((pack_path, idx_path)) => {
                        let opened = Pack::open(&pack_path, &idx_path)?;
                        // What peers check the pack's chunks against when
                        // they fetch it (read back while the file is cached).
                        let digests = crate::consensus::chunk_digests(&pack_path)
                            .map_err(PackStoreError::Chunks)?;
                        Ok(Some((opened, crate::consensus::chunks_root(&digests))))
                    }
                    None => Ok::<_, PackStoreError>(None),
                })
            })
            .await;
        match committed {
            Ok(Some((opened, chunks))) => {
                pack_ref = Some(crate::consensus::PackRef {
                    checksum,
                    size: opened.len(),
                    chunks,
                });
                let mut r = repo.borrow_mut();
                r.store.add_opened_pack(opened);
                r.invalidate();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(repo = %key, error = %e, "could not store a pushed pack");
                let why = UpdateRejection::PackNotStored(Arc::new(e));
                return Ok(vec![Err(why); updates.len()]);
            }
        }
    }
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    shard.order_updates(&key, updates, atomic, pack_ref).await
}
