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
use guts_io::pack::write::{pack_stream, PackWriteOptions};
use guts_io::refname::check_ref_name;
use guts_io::refs::RefUpdate;
use guts_io::store::ObjectStore;
use guts_io::walk::{self, Deepen as WalkDeepen, Filter, WalkRequest, WalkResult};
use guts_io::ObjectId;
use guts_net::advertise::{
    self, AdvertisedRef as WireRef, LsRefsEntry, ProtocolVersion, Service, V2Capabilities,
};
use guts_net::negotiate;
use guts_net::pktline;
use guts_net::receive::{PushParser, PushRequest, PushStep, RefReport, ReportStatusVersion};
use guts_net::sideband::{self, Band, SidebandMode};
use guts_net::upload::{Deepen, FetchRequest, FilterSpec, LsRefsRequest, UploadRequest, V2Request};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;

use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::conn::ConnState;
use crate::http::{shard_error_response, text};
use crate::repo::{check_name, RefSnapshot, RepoError};
use crate::shard::{Shard, ShardError, UpdateOutcome};

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
    match (method, tail) {
        (Method::GET, "info/refs") => info_refs(shard, req, &owner, &name).await,
        (Method::POST, "git-upload-pack") => upload_pack(shard, state, req, &owner, &name).await,
        (Method::POST, "git-receive-pack") => receive_pack(shard, state, req, &owner, &name).await,
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
    git_result(service, ResponseBody::full(pktline::err_pkt(msg)))
}

fn bad_request(msg: impl std::fmt::Display) -> Response<ResponseBody> {
    text(StatusCode::BAD_REQUEST, format!("bad request: {msg}"))
}

fn body_error_response(e: &BodyError) -> Response<ResponseBody> {
    match e {
        BodyError::TooLarge { limit } => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        ),
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

fn wire_refs(snap: &RefSnapshot) -> Vec<WireRef<'_>> {
    snap.refs
        .iter()
        .map(|r| WireRef {
            name: &r.name,
            oid: r.oid,
            peeled: r.peeled,
        })
        .collect()
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
    let mut out = Vec::with_capacity(256 + snap.refs.len() * 64);
    if version == ProtocolVersion::V2 {
        let caps = V2Capabilities {
            agent: agent.clone(),
            ..V2Capabilities::default()
        };
        advertise::write_v2_capabilities(&mut out, &caps);
    } else {
        advertise::write_service_header(&mut out, service);
        let caps = match service {
            Service::UploadPack => {
                let symref = snap.head.map(|_| snap.head_target.as_str());
                advertise::upload_pack_capabilities(agent, symref)
            }
            Service::ReceivePack => advertise::receive_pack_capabilities(agent, true),
        };
        let head = if service == Service::UploadPack {
            snap.head
        } else {
            None
        };
        if let Err(e) = advertise::write_v0_refs(&mut out, version, head, &wire_refs(&snap), &caps)
        {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("advertisement: {e}"),
            );
        }
    }
    git_response(
        service.advertisement_content_type(),
        ResponseBody::full(out),
    )
}

// ---------------------------------------------------------------- upload-pack

/// The body of a service POST, after the checks every one gets: content
/// type, declared length against `limit`, and content encoding.
#[allow(clippy::result_large_err)] // the error is the response to send
fn service_body(
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
    RequestBody::new(incoming, encoding, limit, state.clone()).map_err(|e| body_error_response(&e))
}

async fn read_small_body(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    service: Service,
) -> Result<(HeaderMap, Bytes), Response<ResponseBody>> {
    let (parts, incoming) = req.into_parts();
    let limit = shard.config.limits.upload_body_max_bytes;
    let body = service_body(state, &parts.headers, incoming, service, limit)?;
    let data = body.collect().await.map_err(|e| body_error_response(&e))?;
    Ok((parts.headers, data))
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
    let (headers, body) = match read_small_body(shard, state, req, service).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if body.is_empty() {
        return bad_request("empty upload-pack request body (expected pkt-lines)");
    }
    if protocol_version(&headers) == ProtocolVersion::V2 {
        return match V2Request::parse_with_limit(&body, shard.config.limits.request_pkts_max) {
            Ok(V2Request::LsRefs(ls)) => ls_refs(&snap, &ls),
            Ok(V2Request::Fetch(fetch)) => fetch_v2(snap, fetch).await,
            Err(e) => bad_request(format!("protocol v2 request: {e}")),
        };
    }
    match UploadRequest::parse_with_limit(&body, shard.config.limits.request_pkts_max) {
        Ok(request) => fetch_v0(snap, request).await,
        Err(e) => bad_request(format!("upload-pack request: {e}")),
    }
}

fn ls_refs(snap: &RefSnapshot, req: &LsRefsRequest) -> Response<ResponseBody> {
    let mut entries = Vec::with_capacity(snap.refs.len() + 1);
    entries.push(LsRefsEntry {
        name: "HEAD",
        oid: snap.head,
        symref_target: Some(&snap.head_target),
        peeled: None,
    });
    for r in snap.refs.iter() {
        entries.push(LsRefsEntry {
            name: &r.name,
            oid: Some(r.oid),
            symref_target: None,
            peeled: if req.peel { r.peeled } else { None },
        });
    }
    let mut out = Vec::with_capacity(64 * entries.len());
    if let Err(e) = advertise::write_ls_refs(&mut out, req, &entries) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("ls-refs: {e}"));
    }
    git_result(Service::UploadPack, ResponseBody::full(out))
}

/// What a fetch asks for, in terms the object walk understands.
struct FetchPlan {
    walk: WalkRequest,
    sideband: Option<SidebandMode>,
    progress: bool,
    ofs_delta: bool,
    deepen: bool,
}

fn resolve_deepen(
    snap: &RefSnapshot,
    depth: &Option<Deepen>,
) -> Result<Option<WalkDeepen>, String> {
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
                    .find_map(|cand| {
                        snap.refs
                            .iter()
                            .find(|x| &x.name == cand)
                            .map(|x| x.peeled.unwrap_or(x.oid))
                    });
                    match found {
                        Some(oid) => oids.push(oid),
                        None => return Err(format!("deepen-not is not a ref: {r}")),
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

fn check_wants(store: &ObjectStore, wants: &[ObjectId]) -> Result<(), String> {
    if wants.is_empty() {
        return Err("upload-pack: no wants".into());
    }
    for w in wants {
        if !store.contains(w) {
            return Err(format!("upload-pack: not our ref {w}"));
        }
    }
    Ok(())
}

async fn fetch_v0(snap: RefSnapshot, req: UploadRequest) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    if req.wants.is_empty() {
        // A client that wants nothing sends only a flush (git's own
        // upload-pack then ends without a word); answer with a flush so the
        // response is a well-formed, non-empty pkt stream.
        return git_result(service, ResponseBody::full(&pktline::FLUSH_PKT[..]));
    }
    if let Err(msg) = check_wants(&snap.store, &req.wants) {
        return git_error(service, &msg);
    }
    let deepen = match resolve_deepen(&snap, &req.depth) {
        Ok(d) => d,
        Err(msg) => return git_error(service, &msg),
    };
    let store = snap.store.clone();
    let mut preamble = Vec::new();
    let plan = FetchPlan {
        walk: WalkRequest {
            wants: req.wants.clone(),
            haves: Vec::new(),
            client_shallows: req.shallows.clone(),
            deepen: deepen.clone(),
            deepen_relative: req.caps.deepen_relative,
            filter: walk_filter(&req.filter),
            include_tag_candidates: if req.caps.include_tag {
                tag_candidates(&snap)
            } else {
                Vec::new()
            },
        },
        sideband: req.caps.sideband_mode(),
        progress: !req.caps.no_progress,
        ofs_delta: req.caps.ofs_delta,
        deepen: deepen.is_some(),
    };
    let negotiation = negotiate::negotiate_v0_request(
        &req,
        |oid| store.contains(oid),
        |common| !common.is_empty(),
    );
    let mut plan = plan;
    plan.walk.haves = negotiation.common.clone();
    if !plan.deepen && !negotiation.pack_follows {
        return git_result(service, ResponseBody::full(negotiation.bytes));
    }
    // One walk serves both the shallow update (which does not depend on
    // the haves) and the pack.
    let walked = match run_walk(store, plan.walk.clone()).await {
        Ok(w) => w,
        Err(msg) => return git_error(service, &msg),
    };
    if plan.deepen {
        // Every stateless response starts with the shallow update.
        negotiate::write_shallow_update_v0(&mut preamble, &walked.shallow, &walked.unshallow);
    }
    preamble.extend_from_slice(&negotiation.bytes);
    if !negotiation.pack_follows {
        return git_result(service, ResponseBody::full(preamble));
    }
    stream_pack(snap, plan, walked, preamble, None).await
}

async fn fetch_v2(snap: RefSnapshot, req: FetchRequest) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    let mut wants = req.wants.clone();
    let mut wanted_refs = Vec::new();
    for r in &req.want_refs {
        match snap.refs.iter().find(|x| &x.name == r) {
            Some(x) => {
                wants.push(x.oid);
                wanted_refs.push((x.oid, x.name.clone()));
            }
            None => return git_error(service, &format!("unknown ref {r}")),
        }
    }
    if let Err(msg) = check_wants(&snap.store, &wants) {
        return git_error(service, &msg);
    }
    let deepen = match resolve_deepen(&snap, &req.depth) {
        Ok(d) => d,
        Err(msg) => return git_error(service, &msg),
    };
    let store = snap.store.clone();
    let acks = negotiate::acknowledge_v2(
        &req.haves,
        req.done,
        req.wait_for_done,
        |oid| store.contains(oid),
        |common| !common.is_empty(),
    );
    let plan = FetchPlan {
        walk: WalkRequest {
            wants,
            haves: acks.common.clone(),
            client_shallows: req.shallows.clone(),
            deepen: deepen.clone(),
            deepen_relative: req.deepen_relative,
            filter: walk_filter(&req.filter),
            include_tag_candidates: if req.include_tag {
                tag_candidates(&snap)
            } else {
                Vec::new()
            },
        },
        sideband: Some(SidebandMode::SideBand64k),
        progress: !req.no_progress,
        ofs_delta: req.ofs_delta,
        deepen: deepen.is_some(),
    };
    let preamble = acks.bytes;
    if !acks.pack_follows {
        return git_result(service, ResponseBody::full(preamble));
    }
    // wanted-refs comes after shallow-info, which stream_pack writes.
    let mut wanted_section = Vec::new();
    if !wanted_refs.is_empty() {
        let refs: Vec<(ObjectId, &str)> =
            wanted_refs.iter().map(|(o, n)| (*o, n.as_str())).collect();
        if let Err(e) = negotiate::write_wanted_refs(&mut wanted_section, &refs) {
            return git_error(service, &e.to_string());
        }
    }
    let walked = match run_walk(store, plan.walk.clone()).await {
        Ok(w) => w,
        Err(msg) => return git_error(service, &msg),
    };
    stream_pack(snap, plan, walked, preamble, Some(wanted_section)).await
}

async fn run_walk(store: ObjectStore, req: WalkRequest) -> Result<WalkResult, String> {
    glommio::executor()
        .spawn_blocking(move || {
            contained(move || {
                walk::enumerate(&store, &req).map_err(|e| format!("upload-pack: {e}"))
            })
        })
        .await
}

/// Stream the pack of `walked` (side-band framed) behind `preamble`.
/// `v2` is `Some(wanted-refs section, possibly empty)` for protocol v2: the
/// sections then follow in protocol order (shallow-info, wanted-refs, packfile).
async fn stream_pack(
    snap: RefSnapshot,
    plan: FetchPlan,
    walked: WalkResult,
    mut preamble: Vec<u8>,
    v2: Option<Vec<u8>>,
) -> Response<ResponseBody> {
    let service = Service::UploadPack;
    let store = snap.store.clone();
    if let Some(wanted_section) = v2 {
        if plan.deepen {
            negotiate::write_shallow_info(&mut preamble, &walked.shallow, &walked.unshallow);
        }
        preamble.extend_from_slice(&wanted_section);
        negotiate::write_packfile_header(&mut preamble);
    }
    let opts = PackWriteOptions {
        ofs_delta: plan.ofs_delta,
        chunk_bytes: pack_chunk_bytes(plan.sideband),
    };
    let objects = walked.objects;
    let count = objects.len();
    crate::metrics::record_pack_sent(0, count as u64);
    let stream = match glommio::executor()
        .spawn_blocking(move || {
            contained(move || pack_stream(&store, &objects, opts).map_err(|e| e.to_string()))
        })
        .await
    {
        Ok(s) => s,
        Err(msg) => return git_error(service, &format!("upload-pack: {msg}")),
    };
    let (tx, body) = ResponseBody::channel();
    let sideband = plan.sideband;
    if plan.progress {
        if let Some(mode) = sideband {
            sideband::write_progress(
                &mut preamble,
                mode,
                &format!("Enumerating objects: {count}, done.\n"),
            );
        }
    }
    glommio::spawn_local(async move {
        let mut tx = tx;
        if send(&mut tx, Bytes::from(preamble)).await.is_err() {
            return;
        }
        let mut stream = stream;
        let verbatim = match stream.verbatim_plan() {
            Some(plan) => stream_verbatim_dma(&mut tx, sideband, &plan).await,
            None => Err(DmaStreamError::NotVerbatim),
        };
        let streamed: Result<(), String> = match verbatim {
            Ok(()) => Ok(()),
            Err(DmaStreamError::ClientGone) => return,
            Err(DmaStreamError::Failed(e)) => Err(format!("pack read failed: {e}")),
            Err(other) => {
                if let DmaStreamError::Unavailable(e) = &other {
                    // Nothing sent yet: serve the same bytes with positional reads.
                    warn_dma_unavailable(e);
                }
                loop {
                    let chunk = match stream.next() {
                        None => break Ok(()),
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => break Err(format!("pack generation failed: {e}")),
                    };
                    if send_pack_data(&mut tx, sideband, chunk).await.is_err() {
                        return; // client went away
                    }
                    glommio::yield_if_needed().await;
                }
            }
        };
        match streamed {
            Ok(()) => {
                if sideband.is_some() {
                    let _ = send(&mut tx, Bytes::from_static(pktline::FLUSH_PKT)).await;
                }
            }
            Err(msg) => {
                tracing::error!(repo = %snap.key, error = %msg, "pack stream failed");
                // Without side-band there is no way to signal the error: the
                // body ends early and the client sees a truncated pack.
                if let Some(mode) = sideband {
                    let mut out = Vec::new();
                    sideband::write_error(&mut out, mode, &msg);
                    let _ = send(&mut tx, Bytes::from(out)).await;
                }
            }
        }
    })
    .detach();
    git_result(service, body)
}

enum DmaStreamError {
    /// The pack is not made of whole stored packs; nothing was sent.
    NotVerbatim,
    /// Direct I/O could not start (e.g. a file system without O_DIRECT);
    /// nothing was sent.
    Unavailable(guts_io::dma::DmaError),
    /// Reading failed after bytes were sent.
    Failed(guts_io::dma::DmaError),
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
            out(tx, sideband, &mut hasher, chunk).await?;
        }
        reader.close().await;
    }
    if let Some(h) = hasher {
        let trailer: [u8; 20] = h.finalize().into();
        send_pack_data(tx, sideband, Bytes::copy_from_slice(&trailer))
            .await
            .map_err(|()| DmaStreamError::ClientGone)?;
    }
    Ok(())
}

/// Run blocking-pool work so that a bug (a panic) fails this one request
/// with an error instead of taking a pool thread down with it.
fn contained<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(panic = %what, "internal error in a git service worker");
            Err(format!("internal error: {what}"))
        }
    }
}

async fn send(tx: &mut mpsc::Sender<Bytes>, data: Bytes) -> Result<(), ()> {
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
    // Unknown repository: answer before reading any of the body.
    let snap = match snapshot_or_404(shard, owner, name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let limit = shard.config.limits.push_body_max_bytes;
    let mut body = match service_body(state, &parts.headers, incoming, service, limit) {
        Ok(b) => b,
        Err(r) => return r,
    };

    // 1. The command header, parsed incrementally; the rest is the pack.
    let mut parser = PushParser::new(Default::default());
    let mut pending: Vec<u8> = Vec::new();
    let mut body_was_empty = true;
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
        pending.extend_from_slice(&chunk);
        match parser.advance(&pending) {
            Ok(PushStep::NeedMore { consumed }) => {
                pending.drain(..consumed);
            }
            Ok(PushStep::Done { consumed, request }) => {
                let rest = pending.split_off(consumed);
                break (request, rest);
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
        match receive_pack_data(&snap, &mut body, std::mem::take(&mut leftover)).await {
            Ok(p) => p,
            Err(msg) => {
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

    // 3. Validate each command against the snapshot and the new objects.
    let mut results: Vec<Option<String>> = vec![None; request.commands.len()];
    for (i, cmd) in request.commands.iter().enumerate() {
        if let Err(reason) = validate_command(&snap, ingested.as_ref(), cmd) {
            results[i] = Some(reason);
        }
    }
    let atomic = request.caps.atomic;
    if atomic && results.iter().any(Option::is_some) {
        for r in results.iter_mut() {
            if r.is_none() {
                *r = Some("atomic push failed".to_string());
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
    let (o, n) = (owner.to_string(), name.to_string());
    let update_list: Vec<RefUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
    let outcome = shard
        .on_owner(&key.clone(), move |s| async move {
            apply_push(s, &o, &n, ingested, update_list, atomic).await
        })
        .await;
    let outcomes: Vec<UpdateOutcome> = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e @ ShardError::NotFinalized { .. })) | Err(e @ ShardError::NotFinalized { .. }) => {
            tracing::warn!(repo = %key, error = %e, "push not finalized in time");
            vec![Err(e.to_string()); updates.len()]
        }
        Ok(Err(e)) | Err(e) => {
            tracing::error!(repo = %key, error = %e, "push not applied");
            vec![Err(format!("not applied: {e}")); updates.len()]
        }
    };
    for ((i, _), outcome) in updates.iter().zip(outcomes) {
        if let Err(reason) = outcome {
            results[*i] = Some(reason);
        }
    }
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

/// Stream the pack part of a push into an ingest; returns the verified,
/// not yet visible pack (None for an empty pack).
async fn receive_pack_data(
    snap: &RefSnapshot,
    body: &mut RequestBody,
    first: Vec<u8>,
) -> Result<Option<IngestedPack>, String> {
    let pack_dir = snap.store.objects_dir().join("pack");
    let limits = IngestLimits::default();
    let mut ingest = Ingest::new(&pack_dir, limits).map_err(|e| e.to_string())?;
    if !first.is_empty() {
        ingest.write(&first).map_err(|e| ingest_message(&e))?;
    }
    loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => ingest.write(&chunk).map_err(|e| ingest_message(&e))?,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
        glommio::yield_if_needed().await;
    }
    crate::metrics::record_pack_received(ingest.received_bytes());
    let source = StoreSource(snap.store.clone());
    let checks = CheckOptions {
        strict: true,
        check_links: true,
    };
    let finished = glommio::executor()
        .spawn_blocking(move || {
            contained(move || {
                ingest
                    .finish(&source, &checks)
                    .map_err(|e| ingest_message(&e))
            })
        })
        .await?;
    Ok(Some(finished))
}

fn ingest_message(e: &IngestError) -> String {
    e.to_string().replace('\n', " ")
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
) -> Result<(), String> {
    if let Err(e) = check_ref_name(cmd.name.as_bytes()) {
        return Err(format!("funny refname: {e}"));
    }
    let current = snap.refs.iter().find(|r| r.name == cmd.name).map(|r| r.oid);
    match (current, cmd.old.is_null()) {
        (Some(cur), _) if cur != cmd.old => {
            return Err("stale info: the ref changed since it was advertised; fetch first".into())
        }
        (None, false) => return Err("stale info: the ref does not exist; fetch first".into()),
        _ => {}
    }
    if cmd.new.is_null() {
        if current.is_none() {
            return Err("cannot delete a ref that does not exist".into());
        }
        return Ok(());
    }
    match object_kind(snap, pack, &cmd.new) {
        None => Err(format!(
            "missing necessary objects: {} is not in the repository or the pack",
            cmd.new
        )),
        Some(kind) if cmd.name.starts_with("refs/heads/") && kind != ObjectKind::Commit => {
            Err(format!(
                "branch must point at a commit, {} is a {}",
                cmd.new,
                kind.name()
            ))
        }
        Some(_) => Ok(()),
    }
}

async fn apply_push(
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
        let committed = glommio::executor()
            .spawn_blocking(move || contained(move || pack.commit().map_err(|e| e.to_string())))
            .await;
        match committed {
            Ok(Some((pack_path, idx_path))) => {
                let size = std::fs::metadata(&pack_path).map(|m| m.len()).unwrap_or(0);
                pack_ref = Some(crate::consensus::PackRef { checksum, size });
                let mut r = repo.borrow_mut();
                r.store
                    .add_pack(&pack_path, &idx_path)
                    .map_err(|e| ShardError::Repo(RepoError::Store(e)))?;
                r.invalidate();
            }
            Ok(None) => {}
            Err(msg) => {
                return Ok(vec![
                    Err(format!("could not store the pack: {msg}"));
                    updates.len()
                ])
            }
        }
    }
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    shard.order_updates(&key, updates, atomic, pack_ref).await
}
