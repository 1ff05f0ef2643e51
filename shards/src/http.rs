//! The HTTP front end of one shard: accept loop on the shared
//! (SO_REUSEPORT) port, per-connection watchdog, and request routing to
//! the REST API, health checks and the git smart-HTTP services.

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::auth::{self, Caller};
use crate::body::{RequestBody, ResponseBody};
use crate::conn::{
    ClientKey, ConnState, HyperStream, Phase, PhaseGuard, Registry, RequestLog, UnansweredRequest,
};
use crate::repo::{check_name, list_repos, RepoError};
use crate::shard::{Shard, ShardError};

/// How often the watchdog looks at a connection.
const WATCHDOG_TICK_MS: u64 = 1000;
/// A response write that makes no progress for this long closes the connection.
const WRITE_STALL_TIMEOUT_MS: u64 = 120_000;

/// Accept connections for this shard until the node stops.
pub async fn serve(shard: Rc<Shard>, listener: glommio::net::TcpListener) {
    let registry = Rc::new(Registry::default());
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopped().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            // Closing the listener is what stops the kernel from handing
            // this shard new connections.
            drop(listener);
            tracing::info!(shard = shard.id, "no longer accepting connections");
            return;
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let limits = &shard.config.limits;
        let peer = stream.peer_addr().ok();
        let client = peer.map(|a| ClientKey::of(a.ip()));
        if let Some(c) = client {
            if registry.client_count(c) >= limits.connections_per_client_max {
                tracing::debug!(shard = shard.id, client = %c, limit = limits.connections_per_client_max, "per-client connection limit reached");
                refuse(
                    stream,
                    "429 Too Many Requests",
                    "too many connections from your address",
                );
                continue;
            }
        }
        if shard.connections.get() >= limits.connections_max && !registry.evict_idlest() {
            tracing::warn!(
                shard = shard.id,
                limit = limits.connections_max,
                "connection limit reached and no connection is idle; refusing a new one"
            );
            refuse(
                stream,
                "503 Service Unavailable",
                "the server has too many connections; retry later",
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_STALL_TIMEOUT_MS)));
        shard.connections.set(shard.connections.get() + 1);
        crate::metrics::set_connections(shard.id, shard.connections.get());
        // The connection's state (and its place in the registry) exists from
        // accept on, so that the header timeout and eviction cover a TLS
        // handshake too.
        let state = ConnState::new(peer);
        let id = registry.add(client, state.clone());
        let (shard2, registry2) = (shard.clone(), registry.clone());
        let tls = shard.tls.borrow().clone();
        glommio::spawn_local(async move {
            match tls {
                None => serve_connection(shard2.clone(), stream, state).await,
                Some(acceptor) => {
                    if let Some(session) = tls_handshake(&shard2, acceptor, stream, peer).await {
                        serve_connection(shard2.clone(), session, state).await
                    }
                }
            }
            registry2.remove(id, client);
            shard2.connections.set(shard2.connections.get() - 1);
            crate::metrics::set_connections(shard2.id, shard2.connections.get());
        })
        .detach();
    }
}

/// Longest a refused connection is given to take its answer.
const REFUSE_WRITE_TIMEOUT_MS: u64 = 1000;

/// Answer a connection that will not be served with `status` and close it.
fn refuse(stream: glommio::net::TcpStream, status: &'static str, msg: &'static str) {
    use futures_lite::AsyncWriteExt;
    crate::metrics::record_connection_refused();
    glommio::spawn_local(async move {
        let mut stream = stream;
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{msg}\n",
            msg.len() + 1
        );
        let write = async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.close().await;
        };
        let give_up = glommio::timer::sleep(Duration::from_millis(REFUSE_WRITE_TIMEOUT_MS));
        futures_lite::future::or(write, async {
            give_up.await;
        })
        .await;
    })
    .detach();
}

/// The TLS handshake of a new connection, within the time a client has
/// to send a request head; `None` if it fails or takes too long.
async fn tls_handshake(
    shard: &Rc<Shard>,
    acceptor: futures_rustls::TlsAcceptor,
    stream: glommio::net::TcpStream,
    peer: Option<std::net::SocketAddr>,
) -> Option<futures_rustls::server::TlsStream<glommio::net::TcpStream>> {
    let limit = Duration::from_millis(shard.config.limits.header_timeout_ms);
    let result = futures_lite::future::or(async { Some(acceptor.accept(stream).await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await;
    match result {
        Some(Ok(session)) => Some(session),
        Some(Err(e)) => {
            tracing::debug!(client = ?peer, error = %e, "TLS handshake failed");
            None
        }
        None => {
            tracing::debug!(client = ?peer, "TLS handshake not completed in time");
            None
        }
    }
}

async fn serve_connection<S>(shard: Rc<Shard>, stream: S, state: Rc<ConnState>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let peer = state.peer;
    let io = HyperStream::new(stream, state.clone());
    let svc_shard = shard.clone();
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let shard = svc_shard.clone();
        let state = svc_state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(shard, state, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(shard.config.limits.header_max_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let limits = shard.config.limits.clone();
    let client = peer;
    // When the node stops, the request in flight is answered and then the
    // connection closes (an idle one closes at once).
    let stop_shard = shard.clone();
    let conn = async move {
        let mut conn = std::pin::pin!(conn);
        let stopping = futures_lite::future::or(
            async {
                let _ = conn.as_mut().await.map_err(|e| {
                    tracing::debug!(error = %e, "connection ended with error");
                });
                false
            },
            async {
                stop_shard.stopped().await;
                true
            },
        )
        .await;
        if stopping {
            conn.as_mut().graceful_shutdown();
            conn.await
        } else {
            Ok(())
        }
    };
    let evicted = state.on_close();
    let evicted = async move {
        if evicted.await.is_ok() {
            tracing::debug!(client = ?client, "closing the idlest connection to make room");
        } else {
            futures_lite::future::pending::<()>().await;
        }
    };
    let watchdog = async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(WATCHDOG_TICK_MS)).await;
            if let Some(why) = state.verdict(&limits, Instant::now()) {
                // An idle keep-alive connection closing is routine; a client
                // cut off by a limit is worth an operator's attention.
                if why == "idle timeout" {
                    tracing::debug!(client = ?client, reason = why, "closing connection");
                } else {
                    tracing::info!(client = ?client, reason = why, "closing connection");
                }
                return;
            }
        }
    };
    let watchdog = futures_lite::future::or(watchdog, evicted);
    futures_lite::future::or(
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with error");
            }
        },
        watchdog,
    )
    .await;
}

async fn handle(
    shard: Rc<Shard>,
    state: Rc<ConnState>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    state.set_phase(Phase::Responding);
    let started = Instant::now();
    let class = request_class(req.uri().path());
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    *state.caller.borrow_mut() = "-".into();
    let unanswered = UnansweredRequest::new(
        RequestLog {
            method,
            path,
            status: 0,
            client: state.peer,
            caller: String::new(),
            started,
            bytes: 0,
            complete: false,
        },
        state.clone(),
    );
    let in_flight = crate::metrics::request_started(shard.id);
    let response = route(&shard, &state, req).await;
    drop(in_flight);
    crate::metrics::record_request(
        shard.id,
        class,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    let log = unanswered.answered(response.status().as_u16());
    let guard = PhaseGuard::new(state.clone(), log);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.with_guard(guard))
}

fn request_class(path: &str) -> crate::metrics::RequestClass {
    use crate::metrics::RequestClass;
    if path.starts_with("/git/") {
        if path.ends_with("/info/refs") {
            RequestClass::InfoRefs
        } else if path.ends_with("/git-upload-pack") {
            RequestClass::UploadPack
        } else if path.ends_with("/git-receive-pack") {
            RequestClass::ReceivePack
        } else {
            RequestClass::Other
        }
    } else if path.starts_with("/api/") {
        RequestClass::Api
    } else if path.starts_with("/health") {
        RequestClass::Health
    } else {
        RequestClass::Other
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<ResponseBody> {
    let mut msg: String = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(ResponseBody::full(msg))
        .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut body = value.to_string();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(ResponseBody::full(body))
        .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
}

/// A 401 with the Basic challenge, so git asks for (or looks up) credentials.
pub fn unauthorized(msg: impl Into<String>) -> Response<ResponseBody> {
    let mut r = text(StatusCode::UNAUTHORIZED, msg);
    let challenge = format!("Basic realm=\"{}\"", auth::REALM);
    if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// What a request without the right credentials hears: 401 (and the
/// challenge) when it brought none, 403 when its token lacks the right.
pub fn forbidden(caller: &Caller, what: &str) -> Response<ResponseBody> {
    match caller {
        Caller::Anonymous => unauthorized(format!(
            "authentication required to {what}: send an API token as the HTTP Basic password \
             (user admin with the node's DATA/admin.token, or the token's user)"
        )),
        other => text(
            StatusCode::FORBIDDEN,
            format!("{} may not {what}", describe(other)),
        ),
    }
}

fn describe(caller: &Caller) -> String {
    match caller {
        Caller::Anonymous => "an anonymous client".into(),
        Caller::Admin => "the admin token".into(),
        Caller::Token(g) => format!("token {} of user {}", g.id, g.user),
    }
}

/// Who sent the request: anonymous, or the holder of valid credentials.
/// Bad credentials get 400 or 401 and count against the client's address;
/// an address past [`crate::config::Limits::auth_failures_max`] failures in
/// the window gets 429 until the window ends.
#[allow(clippy::result_large_err)] // the error is the response to send
fn authenticate(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    headers: &http::HeaderMap,
) -> Result<Caller, Response<ResponseBody>> {
    let parsed = auth::parse_authorization(headers);
    if matches!(parsed, Ok(None)) {
        return Ok(Caller::Anonymous);
    }
    let ip = state.peer.map(|p| p.ip());
    let now = Instant::now();
    if let Some(ip) = ip {
        let blocked = shard.auth_failures.borrow_mut().blocked(ip, now);
        if let Some(wait) = blocked {
            crate::metrics::record_auth_rate_limited();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentication attempts from {ip}; retry in {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(secs.max(1)));
            return Err(r);
        }
    }
    let refused = match parsed {
        Ok(None) => return Ok(Caller::Anonymous),
        Ok(Some(creds)) => {
            let table = shard.access.borrow();
            match auth::verify(&creds, &shard.config.admin_token_sha256, &table) {
                Some(caller) => return Ok(caller),
                None => unauthorized("wrong user name or token, or the token was revoked"),
            }
        }
        Err(e) if e.is_bad_request() => text(
            StatusCode::BAD_REQUEST,
            format!("bad Authorization header: {e}"),
        ),
        Err(e) => unauthorized(e.to_string()),
    };
    crate::metrics::record_auth_failure();
    if let Some(ip) = ip {
        shard.auth_failures.borrow_mut().record_failure(ip, now);
    }
    tracing::info!(client = ?state.peer, status = refused.status().as_u16(), "authentication failed");
    Err(refused)
}

/// May `caller` use `/git/OWNER/NAME.git/...` (`rest` is after `/git/`)?
/// A private repository is "not found" for a token that may not see it
/// (and asks for credentials from an anonymous client, so git can send
/// them); pushing needs a token with write access. Malformed paths pass:
/// the git router refuses them.
#[allow(clippy::result_large_err)] // the error is the response to send
fn authorize_git(
    shard: &Rc<Shard>,
    caller: &Caller,
    rest: &str,
    query: Option<&str>,
) -> Result<(), Response<ResponseBody>> {
    let mut parts = rest.splitn(3, '/');
    let (Some(owner), Some(name), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(());
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    if check_name("owner", owner).is_err() || check_name("repository name", name).is_err() {
        return Ok(());
    }
    let key = format!("{owner}/{name}");
    let write = tail == "git-receive-pack"
        || (tail == "info/refs"
            && query.is_some_and(|q| q.split('&').any(|kv| kv == "service=git-receive-pack")));
    let private = shard.access.borrow().is_private(&key);
    if !caller.can_read(&key, private) {
        return Err(match caller {
            Caller::Anonymous => unauthorized(format!("authentication required for {key}")),
            _ => text(StatusCode::NOT_FOUND, format!("repository {key} not found")),
        });
    }
    if write && !caller.can_write(&key) {
        return Err(forbidden(caller, &format!("push to {key}")));
    }
    Ok(())
}

pub(crate) fn json_error(
    status: StatusCode,
    msg: impl std::fmt::Display,
) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

/// Client addresses remembered by one shard's creation rate limiter
/// before full buckets are forgotten.
const CREATION_LIMITER_CLIENTS_MAX: usize = 10_000;

thread_local! {
    /// Per client address: tokens left and when they were counted. One
    /// per shard thread, like everything else a shard owns.
    static CREATION_TOKENS: std::cell::RefCell<std::collections::HashMap<ClientKey, (f64, Instant)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Take one repository creation from the client's bucket (`per_minute`
/// tokens, refilled continuously; 0: no limit), or say how many seconds
/// until one is free.
fn take_creation_token(state: &Rc<ConnState>, per_minute: u64) -> Result<(), u64> {
    let Some(client) = state.client() else {
        return Ok(());
    };
    if per_minute == 0 {
        return Ok(());
    }
    let capacity = per_minute as f64;
    let per_second = capacity / 60.0;
    let now = Instant::now();
    CREATION_TOKENS.with(|cell| {
        let mut buckets = cell.borrow_mut();
        if buckets.len() >= CREATION_LIMITER_CLIENTS_MAX {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil().max(1.0) as u64)
        }
    })
}

/// Seconds a client told 503 waits before retrying.
const RETRY_AFTER_S: u64 = 5;

/// A JSON 503 with `Retry-After`: a passing condition (disk, descriptors,
/// a shard restarting), never the client's fault.
fn unavailable(msg: &str) -> Response<ResponseBody> {
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_S));
    r
}

/// Map a shard-layer error to an HTTP answer.
pub fn shard_error_response(e: &ShardError) -> Response<ResponseBody> {
    match e {
        ShardError::Repo(RepoError::NotFound(k)) => {
            text(StatusCode::NOT_FOUND, format!("repository {k} not found"))
        }
        ShardError::Repo(e @ RepoError::InvalidName { .. }) => {
            text(StatusCode::NOT_FOUND, e.to_string())
        }
        ShardError::Repo(e @ RepoError::Damaged { .. }) => {
            text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        ShardError::Stopping => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::redact::message(&other.to_string()),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_S));
            r
        }
    }
}

/// Bytes of the request head as it was sent (request line and header lines).
fn head_bytes<B>(req: &Request<B>) -> usize {
    let line =
        req.method().as_str().len() + 1 + req.uri().to_string().len() + " HTTP/1.1\r\n".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

async fn route(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    // hyper only enforces its buffer limit on a head that arrives in pieces;
    // one that arrives whole is parsed whatever its size. Enforce ours here.
    let limit = shard.config.limits.header_max_bytes;
    if head_bytes(&req) > limit {
        let mut r = text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request head exceeds {limit} bytes"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return r;
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET | Method::HEAD, "/health/live") => return text(StatusCode::OK, "ok"),
        (Method::GET | Method::HEAD, "/health" | "/health/ready") => {
            // Damaged repositories do not stop the node serving the others:
            // "degraded" (200), naming which ones and why. A failing check
            // (storage not writable, disk nearly full) is 503; so is
            // readiness while catching up with the finalized chain.
            let report =
                crate::health::evaluate(&crate::health::latest(), shard.id, &shard.damaged);
            let failing = if path == "/health/ready" {
                !report.ready
            } else {
                report.level == crate::health::Level::Fail
            };
            let status = if failing {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            return json(status, &report.json);
        }
        (_, p) if p.starts_with("/api/consensus/") || p == "/api/consensus" => {
            return crate::consensus_api::route(shard, &method, p).await;
        }
        _ => {}
    }
    let caller = match authenticate(shard, state, req.headers()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    *state.caller.borrow_mut() = caller.label();
    if path == "/api/repos" || path == "/api/repos/" {
        return match method {
            Method::GET => list_repositories(shard, &caller, req.uri().query().unwrap_or("")).await,
            Method::POST => create_repository(shard, state, req, &caller).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/repos/") {
        return match method {
            Method::GET => show_repository(shard, rest, &caller).await,
            Method::PATCH => {
                crate::access_api::set_visibility(shard, state, req, rest, &caller).await
            }
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or PATCH"),
        };
    }
    if path == "/api/tokens" || path.starts_with("/api/tokens/") {
        return crate::access_api::route(shard, state, req, &caller).await;
    }
    if let Some(rest) = path.strip_prefix("/git/") {
        if let Err(r) = authorize_git(shard, &caller, rest, req.uri().query()) {
            return r;
        }
        return crate::git::route(shard, state, req, rest.to_string()).await;
    }
    text(StatusCode::NOT_FOUND, "not found")
}

/// Repositories per page of `GET /api/repos` unless `per_page` says otherwise.
pub const REPOS_PER_PAGE_DEFAULT: usize = 100;
/// Most repositories per page of `GET /api/repos`.
pub const REPOS_PER_PAGE_MAX: usize = 1000;

/// `GET /api/repos?page=N&per_page=M`: one page of the repositories, sorted
/// by name; a `Link: <...>; rel="next"` header names the next page. The
/// data directory is read on the blocking pool, not the shard's executor.
async fn list_repositories(
    shard: &Rc<Shard>,
    caller: &Caller,
    query: &str,
) -> Response<ResponseBody> {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let page = match param("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, "page must be a number from 1"),
    };
    let per_page = match param("per_page").map(str::parse::<usize>) {
        None => REPOS_PER_PAGE_DEFAULT,
        Some(Ok(n)) if (1..=REPOS_PER_PAGE_MAX).contains(&n) => n,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("per_page must be a number from 1 to {REPOS_PER_PAGE_MAX}"),
            )
        }
    };
    let dir = shard.config.data_dir.clone();
    let skip = (page - 1).saturating_mul(per_page);
    // Which repositories this caller may see is decided here, on the
    // shard (the access table is the shard's); the directory is read on
    // the blocking pool.
    let all = glommio::executor()
        .spawn_blocking(move || list_repos(&dir))
        .await;
    let access = shard.access.borrow();
    let mut visible = all.into_iter().filter(|(owner, name)| {
        let key = format!("{owner}/{name}");
        caller.can_read(&key, access.is_private(&key))
    });
    let repos: Vec<(String, String)> = visible.by_ref().skip(skip).take(per_page).collect();
    let more = visible.next().is_some();
    drop(access);
    let repos: Vec<_> = repos
        .into_iter()
        .map(|(owner, name)| serde_json::json!({"owner": owner, "name": name, "full_name": format!("{owner}/{name}")}))
        .collect();
    let mut r = json(StatusCode::OK, &serde_json::Value::Array(repos));
    if more {
        let link = format!(
            "</api/repos?page={}&per_page={per_page}>; rel=\"next\"",
            page + 1
        );
        if let Ok(v) = http::HeaderValue::from_str(&link) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

#[derive(serde::Deserialize)]
struct CreateRepo {
    owner: String,
    name: String,
    #[serde(default)]
    private: bool,
}

/// Read a bounded JSON API request body.
pub(crate) async fn read_api_body(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
) -> Result<bytes::Bytes, Response<ResponseBody>> {
    let (parts, incoming) = req.into_parts();
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    crate::git::check_declared_length(&parts.headers, shard.config.limits.api_body_max_bytes)?;
    let body = RequestBody::new(
        incoming,
        encoding.as_deref(),
        shard.config.limits.api_body_max_bytes,
        state.clone(),
    )
    .map_err(|e| json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e))?;
    match body.collect().await {
        Ok(d) => Ok(d),
        Err(crate::body::BodyError::TooLarge { limit }) => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        )),
        Err(e) => Err(json_error(StatusCode::BAD_REQUEST, e)),
    }
}

async fn create_repository(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    caller: &Caller,
) -> Response<ResponseBody> {
    if matches!(caller, Caller::Anonymous) {
        return forbidden(caller, "create repositories");
    }
    let data = match read_api_body(shard, state, req).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    // Only a JSON object will do (serde would also take `["owner", "name"]`).
    let req: CreateRepo = match serde_json::from_slice::<serde_json::Value>(&data) {
        Ok(v @ serde_json::Value::Object(_)) => match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("expected JSON {{\"owner\": \"...\", \"name\": \"...\"}}: {e}"),
                )
            }
        },
        Ok(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "expected a JSON object {\"owner\": \"...\", \"name\": \"...\"}",
            )
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("expected JSON {{\"owner\": \"...\", \"name\": \"...\"}}: {e}"),
            )
        }
    };
    let name = req
        .name
        .strip_suffix(".git")
        .unwrap_or(&req.name)
        .to_string();
    if let Err(e) =
        check_name("owner", &req.owner).and_then(|_| check_name("repository name", &name))
    {
        return json_error(StatusCode::BAD_REQUEST, e);
    }
    let key = format!("{}/{}", req.owner, name);
    if let Some(why) = shard.read_only() {
        return json_error(StatusCode::FORBIDDEN, why);
    }
    if !caller.can_write(&key) {
        return forbidden(caller, &format!("create {key}"));
    }
    if let Err(wait_s) = take_creation_token(state, shard.config.limits.repo_creates_per_minute) {
        let mut r = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many repositories created from your address (limit {} per minute); retry in {wait_s} s",
                shard.config.limits.repo_creates_per_minute
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(wait_s));
        return r;
    }

    let result = shard
        .to_owner(&key)
        .create_repo(req.owner.clone(), name.clone(), req.private)
        .await;
    match result {
        Ok(Ok(())) => {
            tracing::info!(repo = %key, private = req.private, user = %caller.label(), "repository created");
            json(
                StatusCode::CREATED,
                &serde_json::json!({"owner": req.owner, "name": name, "full_name": key, "private": req.private}),
            )
        }
        Ok(Err((status, msg))) if status.is_server_error() => {
            tracing::error!(repo = %key, error = %msg, "repository creation failed");
            // Out of disk space or descriptors: the client may retry, and
            // is not shown the server's paths.
            unavailable(&format!(
                "could not create the repository: {}",
                crate::redact::message(&msg)
            ))
        }
        Ok(Err((status, msg))) => json_error(status, msg),
        Err(e) => unavailable(&crate::redact::message(&e.to_string())),
    }
}

async fn show_repository(shard: &Rc<Shard>, rest: &str, caller: &Caller) -> Response<ResponseBody> {
    let rest = rest.trim_end_matches('/');
    let Some((owner, name)) = rest.split_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "expected /api/repos/OWNER/NAME");
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    if check_name("owner", owner).is_err() || check_name("repository name", name).is_err() {
        return json_error(StatusCode::NOT_FOUND, "repository not found");
    }
    let key = format!("{owner}/{name}");
    let private = shard.access.borrow().is_private(&key);
    if !caller.can_read(&key, private) {
        return json_error(StatusCode::NOT_FOUND, "repository not found");
    }
    match shard.snapshot(owner, name).await {
        Ok(snap) => {
            let refs: serde_json::Map<String, serde_json::Value> = snap
                .refs
                .iter()
                .map(|r| (r.name.clone(), serde_json::Value::String(r.oid.to_hex())))
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "owner": owner,
                    "name": name,
                    "full_name": snap.key,
                    "head": snap.head_target,
                    "private": private,
                    "refs": refs,
                }),
            )
        }
        Err(ShardError::Repo(RepoError::NotFound(_))) => {
            json_error(StatusCode::NOT_FOUND, "repository not found")
        }
        Err(e) => {
            tracing::error!(repo = %key, error = %e, "repository unavailable");
            unavailable(&crate::redact::message(&e.to_string()))
        }
    }
}
