//! git smart-HTTP services (placeholder while the wire layer lands).
use crate::body::ResponseBody;
use crate::conn::ConnState;
use crate::shard::Shard;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::rc::Rc;

/// Route `/git/...` requests.
pub async fn route(_shard: &Rc<Shard>, _state: &Rc<ConnState>, _req: Request<Incoming>, _rest: String) -> Response<ResponseBody> {
    crate::http::text(StatusCode::NOT_IMPLEMENTED, "git services not yet available")
}
