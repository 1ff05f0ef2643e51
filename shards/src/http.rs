//! The HTTP front end of one shard: accept loop on the shared
//! (SO_REUSEPORT) port, per-connection watchdog, and request routing to
//! the REST API, health checks and the git smart-HTTP services.

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::body::{RequestBody, ResponseBody};
use crate::conn::{ConnState, HyperStream, Phase, PhaseGuard};
use crate::repo::{check_name, list_repos, RepoError};
use crate::shard::{Shard, ShardError};

/// A node further behind the finalized chain than this is not ready.
pub const READY_LAG_MAX_BLOCKS: u64 = 8;

/// How often the watchdog looks at a connection.
const WATCHDOG_TICK_MS: u64 = 1000;
/// A response write that makes no progress for this long closes the connection.
const WRITE_STALL_TIMEOUT_MS: u64 = 120_000;

/// Accept connections for this shard until the listener fails.
pub async fn serve(shard: Rc<Shard>, listener: glommio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.connections.get() >= shard.config.limits.connections_max {
            tracing::warn!(
                shard = shard.id,
                limit = shard.config.limits.connections_max,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(WRITE_STALL_TIMEOUT_MS)));
        shard.connections.set(shard.connections.get() + 1);
        crate::metrics::set_connections(shard.id, shard.connections.get());
        let shard2 = shard.clone();
        glommio::spawn_local(async move {
            serve_connection(shard2.clone(), stream).await;
            shard2.connections.set(shard2.connections.get() - 1);
            crate::metrics::set_connections(shard2.id, shard2.connections.get());
        })
        .detach();
    }
}

async fn serve_connection(shard: Rc<Shard>, stream: glommio::net::TcpStream) {
    let state = ConnState::new();
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
    let watchdog = async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(WATCHDOG_TICK_MS)).await;
            if let Some(why) = state.verdict(&limits, Instant::now()) {
                tracing::debug!(reason = why, "closing connection");
                return;
            }
        }
    };
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
    let guard = PhaseGuard(state.clone());
    let started = Instant::now();
    let class = request_class(req.uri().path());
    let response = route(&shard, &state, req).await;
    crate::metrics::record_request(
        class,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
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

fn json_error(status: StatusCode, msg: impl std::fmt::Display) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
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
        other => {
            tracing::error!(error = %other, "internal error");
            text(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
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
            let lag = crate::metrics::replication_lag();
            let height = crate::metrics::block_height();
            if path == "/health/ready" && lag > READY_LAG_MAX_BLOCKS {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "catching_up", "shard": shard.id,
                        "height": height, "lag_blocks": lag,
                        "reason": format!("{lag} finalized blocks not applied yet (ready at {READY_LAG_MAX_BLOCKS} or fewer)")}),
                );
            }
            return json(
                StatusCode::OK,
                &serde_json::json!({"status": "ok", "shard": shard.id, "height": height, "lag_blocks": lag}),
            );
        }
        _ => {}
    }
    if path == "/api/repos" || path == "/api/repos/" {
        return match method {
            Method::GET => list_repositories(shard),
            Method::POST => create_repository(shard, state, req).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/repos/") {
        if method != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        return show_repository(shard, rest).await;
    }
    if let Some(rest) = path.strip_prefix("/git/") {
        return crate::git::route(shard, state, req, rest.to_string()).await;
    }
    text(StatusCode::NOT_FOUND, "not found")
}

fn list_repositories(shard: &Rc<Shard>) -> Response<ResponseBody> {
    let repos: Vec<_> = list_repos(&shard.config.data_dir)
        .into_iter()
        .map(|(owner, name)| serde_json::json!({"owner": owner, "name": name, "full_name": format!("{owner}/{name}")}))
        .collect();
    json(StatusCode::OK, &serde_json::Value::Array(repos))
}

#[derive(serde::Deserialize)]
struct CreateRepo {
    owner: String,
    name: String,
}

async fn create_repository(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let (parts, incoming) = req.into_parts();
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Err(r) =
        crate::git::check_declared_length(&parts.headers, shard.config.limits.api_body_max_bytes)
    {
        return r;
    }
    let body = match RequestBody::new(
        incoming,
        encoding.as_deref(),
        shard.config.limits.api_body_max_bytes,
        state.clone(),
    ) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e),
    };
    let data = match body.collect().await {
        Ok(d) => d,
        Err(crate::body::BodyError::TooLarge { limit }) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            )
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
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
    let (owner, n) = (req.owner.clone(), name.clone());
    let k = key.clone();
    let result = shard
        .on_owner(&key, move |s| async move {
            // Refuse a name that is taken here before asking the network.
            if crate::repo::repo_dir(&s.config.data_dir, &owner, &n).exists() {
                return Err(crate::shard::ShardError::Repo(RepoError::Exists(k)));
            }
            match s.order_create(&k).await? {
                Ok(()) => Ok(()),
                Err(reason) if reason.contains("already exists") => {
                    Err(crate::shard::ShardError::Repo(RepoError::Exists(k)))
                }
                Err(reason) => Err(crate::shard::ShardError::Rejected(reason)),
            }
        })
        .await
        .and_then(|r| r);
    match result {
        Ok(()) => json(
            StatusCode::CREATED,
            &serde_json::json!({"owner": req.owner, "name": name, "full_name": key}),
        ),
        Err(ShardError::Repo(RepoError::Exists(k))) => json_error(
            StatusCode::CONFLICT,
            format!("repository {k} already exists"),
        ),
        Err(ShardError::Repo(e @ RepoError::InvalidName { .. })) => {
            json_error(StatusCode::BAD_REQUEST, e)
        }
        Err(ShardError::Repo(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e @ ShardError::Orderer(crate::consensus::OrdererError::ReadOnly(_))) => {
            json_error(StatusCode::FORBIDDEN, e)
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn show_repository(shard: &Rc<Shard>, rest: &str) -> Response<ResponseBody> {
    let rest = rest.trim_end_matches('/');
    let Some((owner, name)) = rest.split_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "expected /api/repos/OWNER/NAME");
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    if check_name("owner", owner).is_err() || check_name("repository name", name).is_err() {
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
                    "refs": refs,
                }),
            )
        }
        Err(ShardError::Repo(RepoError::NotFound(_))) => {
            json_error(StatusCode::NOT_FOUND, "repository not found")
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
