//! The admin API for access: tokens (`/api/tokens`), repository visibility
//! (`PATCH /api/repos/OWNER/NAME`), and repository creation's access side.
//!
//! Every change is an ordered transaction submitted by
//! [`ACCESS_SHARD`]; the answer comes once it is applied and on disk.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;

use crate::auth::{self, Caller};
use crate::body::ResponseBody;
use crate::conn::ConnState;
use crate::consensus::{Op, ACCESS_SHARD};
use crate::http::{forbidden, json, json_error, read_api_body};
use crate::repo::{check_name, repo_dir, RepoError};
use crate::shard::Shard;

/// `/api/tokens` (GET list, POST create) and `/api/tokens/ID` (DELETE revoke).
pub async fn route(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    caller: &Caller,
) -> Response<ResponseBody> {
    if !caller.is_admin() {
        return forbidden(caller, "manage tokens");
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    match (req.method().clone(), path.strip_prefix("/api/tokens")) {
        (Method::GET, Some("")) => list(shard),
        (Method::POST, Some("")) => create(shard, state, req, caller).await,
        (Method::DELETE, Some(id)) if id.starts_with('/') => revoke(shard, &id[1..], caller).await,
        (_, Some("")) => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        (_, Some(_)) => json_error(StatusCode::METHOD_NOT_ALLOWED, "use DELETE /api/tokens/ID"),
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn list(shard: &Rc<Shard>) -> Response<ResponseBody> {
    let access = shard.access.borrow();
    let tokens: Vec<serde_json::Value> = access
        .tokens()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "user": t.user,
                "repo": t.repo,
                "write": t.write,
                "admin": t.admin,
                "created_unix_s": t.created_unix_s,
                "revoked": t.revoked,
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::Value::Array(tokens))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    user: String,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    write: bool,
    #[serde(default)]
    admin: bool,
}

const CREATE_SHAPE: &str =
    "expected a JSON object {\"user\": \"...\", \"repo\": \"OWNER/NAME\" (optional), \"write\": bool, \"admin\": bool}";

/// Parse a JSON object body into `T`, or the 400 that says what was expected.
#[allow(clippy::result_large_err)] // the error is the response to send
fn parse_object<T: serde::de::DeserializeOwned>(
    data: &[u8],
    shape: &str,
) -> Result<T, Response<ResponseBody>> {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("{shape}: {e}"))),
        Ok(_) => Err(json_error(StatusCode::BAD_REQUEST, shape)),
        Err(e) => Err(json_error(StatusCode::BAD_REQUEST, format!("{shape}: {e}"))),
    }
}

async fn create(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    caller: &Caller,
) -> Response<ResponseBody> {
    let data = match read_api_body(shard, state, req).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let want: CreateToken = match parse_object(&data, CREATE_SHAPE) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(e) = auth::check_user(&want.user) {
        return json_error(StatusCode::BAD_REQUEST, e);
    }
    if let Some(r) = &want.repo {
        if let Err(e) = auth::check_repo_key(r) {
            return json_error(StatusCode::BAD_REQUEST, e);
        }
    }
    let token = match auth::new_token() {
        Ok(t) => t,
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no random bytes for a token: {e}"),
            )
        }
    };
    let created_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let op = Op::TokenCreate {
        user: want.user.clone(),
        scope: want.repo.clone(),
        write: want.write,
        admin: want.admin,
        secret_sha256: auth::sha256(token.as_bytes()),
        created_unix_s,
    };
    match order(shard, String::new(), op).await {
        Ok(Some(id)) => {
            tracing::info!(token = id, user = %want.user, repo = ?want.repo, write = want.write, admin = want.admin, by = %caller.label(), "token created");
            json(
                StatusCode::CREATED,
                &serde_json::json!({
                    "id": id,
                    "user": want.user,
                    "repo": want.repo,
                    "write": want.write,
                    "admin": want.admin,
                    "token": token,
                }),
            )
        }
        Ok(None) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "token created without an id",
        ),
        Err((status, msg)) => json_error(status, msg),
    }
}

async fn revoke(shard: &Rc<Shard>, id: &str, caller: &Caller) -> Response<ResponseBody> {
    let Ok(id) = id.parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, format!("no token {id:?}"));
    };
    if shard.access.borrow().token(id).is_none() {
        return json_error(StatusCode::NOT_FOUND, format!("no token {id}"));
    }
    match order(shard, String::new(), Op::TokenRevoke { token_id: id }).await {
        Ok(_) => {
            tracing::info!(token = id, by = %caller.label(), "token revoked");
            json(
                StatusCode::OK,
                &serde_json::json!({"id": id, "revoked": true}),
            )
        }
        Err((status, msg)) => json_error(status, msg),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetVisibility {
    private: bool,
}

/// `PATCH /api/repos/OWNER/NAME` `{"private": bool}` (admin only).
pub async fn set_visibility(
    shard: &Rc<Shard>,
    state: &Rc<ConnState>,
    req: Request<Incoming>,
    rest: &str,
    caller: &Caller,
) -> Response<ResponseBody> {
    if !caller.is_admin() {
        return forbidden(caller, "change repository visibility");
    }
    let rest = rest.trim_end_matches('/');
    let Some((owner, name)) = rest.split_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "expected /api/repos/OWNER/NAME");
    };
    let name = name.strip_suffix(".git").unwrap_or(name);
    if check_name("owner", owner).is_err() || check_name("repository name", name).is_err() {
        return json_error(StatusCode::NOT_FOUND, "repository not found");
    }
    let data = match read_api_body(shard, state, req).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let want: SetVisibility =
        match parse_object(&data, "expected a JSON object {\"private\": true|false}") {
            Ok(w) => w,
            Err(r) => return r,
        };
    if !repo_dir(&shard.config.data_dir, owner, name).is_dir() {
        return json_error(StatusCode::NOT_FOUND, "repository not found");
    }
    let key = format!("{owner}/{name}");
    let op = Op::SetVisibility {
        private: want.private,
    };
    match order(shard, key.clone(), op).await {
        Ok(_) => {
            tracing::info!(repo = %key, private = want.private, by = %caller.label(), "repository visibility changed");
            json(
                StatusCode::OK,
                &serde_json::json!({"full_name": key, "private": want.private}),
            )
        }
        Err((status, msg)) => json_error(status, msg),
    }
}

/// Order an access change on [`ACCESS_SHARD`] and wait for it to be applied.
async fn order(
    shard: &Rc<Shard>,
    repo: String,
    op: Op,
) -> Result<Option<u64>, (StatusCode, String)> {
    let result = shard.to_shard(ACCESS_SHARD).order_access(repo, op).await;
    match result {
        Ok(Ok(Ok(id))) => Ok(id),
        Ok(Ok(Err(refused))) => Err((StatusCode::CONFLICT, refused)),
        Ok(Err(e)) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// Create `owner/name` on its owning shard; a private one is marked
/// private (an ordered change) before it exists, so it is never visible.
pub async fn create_repo(
    shard: Rc<Shard>,
    owner: String,
    name: String,
    private: bool,
) -> Result<(), (StatusCode, String)> {
    let key = format!("{owner}/{name}");
    let refused = |e: RepoError| match e {
        RepoError::Exists(k) => (
            StatusCode::CONFLICT,
            format!("repository {k} already exists"),
        ),
        e @ RepoError::InvalidName { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if repo_dir(&shard.config.data_dir, &owner, &name).exists() {
        return Err(refused(RepoError::Exists(key)));
    }
    if !shard.creating.borrow_mut().insert(key.clone()) {
        return Err((
            StatusCode::CONFLICT,
            format!("repository {key} is being created by another request"),
        ));
    }
    let result = async {
        if private {
            order(&shard, key.clone(), Op::SetVisibility { private: true }).await?;
        }
        match shard.order_create(&key).await {
            Ok(Ok(())) => Ok(()),
            // The reason names the repository that exists, which may be
            // spelled in another letter case than the request.
            Ok(Err(reason)) => Err((StatusCode::CONFLICT, reason.to_string())),
            Err(
                e @ crate::shard::ShardError::Orderer(crate::consensus::OrdererError::ReadOnly(_)),
            ) => Err((StatusCode::FORBIDDEN, e.to_string())),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    }
    .await;
    shard.creating.borrow_mut().remove(&key);
    result
}
