//! JSON responses and request-body reading.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// Every response this server sends.
pub type Reply = Response<Full<Bytes>>;

/// A JSON response with the given status. Token-bearing responses must not be cached.
pub fn reply(status: StatusCode, body: &impl Serialize) -> Reply {
    // Serializing our own plain data types cannot fail; fall back to an empty object anyway.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The 200 answer that hands out a token: `{"name": <name>, "token": <token>}`.
pub fn token(name: &str, token: &crate::token::SessionToken) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        name: &'a str,
        token: &'a str,
    }
    ok(&Body {
        name,
        token: token.expose(),
    })
}

/// A 200 JSON response.
pub fn ok(body: &impl Serialize) -> Reply {
    reply(StatusCode::OK, body)
}

/// Parses a JSON request body; an empty, malformed or wrongly shaped one is 400 saying what
/// was `expected` (for example `{"token": "<JWT>"}`).
pub fn parse_body<T: DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "A JSON body {expected} is required"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        let problem = if e.is_data() {
            "does not have the expected fields"
        } else {
            "is not valid JSON"
        };
        ApiError::BadRequest(format!("The request body {problem}: expected {expected}"))
    })
}

/// Reads the whole body, refusing more than `limit` bytes with 413. A declared length over the
/// limit is refused before anything is read.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::BadRequest(
            "Could not read the request body".into(),
        )),
    }
}
