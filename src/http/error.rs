//! API errors and their one mapping to HTTP status and JSON body.
//!
//! Client mistakes are 4xx and logged at debug level; internal faults are a generic 5xx body with
//! the detail only in the log.

use hyper::StatusCode;

use super::json::{self, Reply};
use crate::chain::Chain;
use crate::store::StoreError;

/// The message Symphony sends when a certificate names no one who may authenticate.
pub const CERT_NOT_ALLOWED: &str =
    "Forbidden: Certificate authentication is not allowed for the requested user.";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credential (certificate or session token).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid credential that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such path, user or app.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("Method not allowed")]
    MethodNotAllowed {
        /// The method the path accepts.
        allow: &'static str,
    },
    /// 408: the body did not arrive in time.
    #[error(
        "The request body did not arrive within {}",
        humantime::format_duration(*.limit)
    )]
    BodyTimeout {
        /// The configured limit.
        limit: std::time::Duration,
    },
    /// 413: the body is larger than the configured cap.
    #[error("Request body too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The cap.
        limit: usize,
    },
    /// 429: too many failed authentications from this address or for this identity.
    #[error(
        "Too many failed authentication attempts: retry after {} s",
        retry_after_secs(*.retry_after)
    )]
    Throttled {
        /// How long until the next attempt may be judged.
        retry_after: std::time::Duration,
    },
    /// 503: the session store could not be reached; nothing was done.
    #[error("Session store unavailable")]
    Store(#[source] StoreError),
    /// 500: an internal fault.
    #[error("Internal server error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another error, with the stable reason code the log and the metrics give it (see
    /// [`ApiError::because`]); the client sees the wrapped error's status and message only.
    #[error("{error}")]
    Reasoned {
        /// The reason code: `unknown_cn`, `inactive`, `cert_expired`, ….
        reason: &'static str,
        /// The error the client sees.
        error: Box<ApiError>,
    },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Every JWT refusal is a 401 that names the rule that failed.
impl From<crate::jwt::JwtError> for ApiError {
    fn from(e: crate::jwt::JwtError) -> Self {
        Self::Unauthorized(e.to_string()).because(e.reason())
    }
}

/// The lifecycle's refusals keep their meaning: invalid 401, not yours 403, store 503.
impl From<crate::session::SessionError> for ApiError {
    fn from(e: crate::session::SessionError) -> Self {
        use crate::session::SessionError;
        let message = e.to_string();
        match e {
            SessionError::Invalid => Self::invalid_session(),
            SessionError::CredentialExpired => Self::Unauthorized(message).because("cert_expired"),
            SessionError::NotYours => Self::Forbidden(message).because("not_yours"),
            SessionError::Store(e) => Self::Store(e),
            SessionError::Random(e) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<crate::token::RandomError> for ApiError {
    fn from(e: crate::token::RandomError) -> Self {
        Self::Internal(Box::new(e))
    }
}

impl ApiError {
    /// The "Invalid session" answer for bad, expired or ended tokens.
    pub fn invalid_session() -> Self {
        Self::Unauthorized("Invalid session".into())
    }

    /// The same error, logged and counted under `reason`.
    pub fn because(self, reason: &'static str) -> Self {
        Self::Reasoned {
            reason,
            error: Box::new(self.into_unreasoned()),
        }
    }

    fn into_unreasoned(self) -> Self {
        match self {
            Self::Reasoned { error, .. } => *error,
            other => other,
        }
    }

    /// The stable reason code: the one given with [`ApiError::because`], else one for the kind
    /// of error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Reasoned { reason, .. } => reason,
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(m) if m == "Invalid session" => "invalid_session",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::PayloadTooLarge { .. } => "body_too_large",
            Self::Throttled { .. } => "throttled",
            Self::Store(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether this is the server saying no to the credential or the request (400, 401, 403),
    /// as opposed to a fault of its own.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Reasoned { error, .. } => error.is_refusal(),
            other => matches!(
                other,
                Self::BadRequest(_) | Self::Unauthorized(_) | Self::Forbidden(_)
            ),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Reasoned { error, .. } => error.status(),
        }
    }

    /// The response: `{"code": <status>, "message": "<text>"}`, always JSON.
    /// Faults are logged here (the refusals by the request handler, with the request's CN and
    /// trace id).
    pub fn into_reply(self) -> Reply {
        let this = self.into_unreasoned();
        let status = this.status();
        match &this {
            Self::Store(source) => {
                tracing::error!(error = %Chain(source), "session store failure");
            }
            Self::Internal(source) => {
                tracing::error!(error = %Chain(source.as_ref()), "internal error");
            }
            _ => {}
        }
        let body = serde_json::json!({ "code": status.as_u16(), "message": this.to_string() });
        let mut reply = json::reply(status, &body);
        match this {
            Self::MethodNotAllowed { allow } => {
                reply.headers_mut().insert(
                    hyper::header::ALLOW,
                    hyper::header::HeaderValue::from_static(allow),
                );
            }
            Self::Throttled { retry_after } => {
                reply.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from(retry_after_secs(retry_after)),
                );
            }
            _ => {}
        }
        reply
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}
