//! The HTTP layer: routing, the access log, and one file per API family.
//!
//! | file | what |
//! |---|---|
//! | `certauth.rs` | `/sessionauth`, `/keyauth`, `/session`: certificate authentication and logout |
//! | `login.rs` | `/login/pubkey`, `/relay/pubkey`: RSA (signed JWT) authentication |
//! | `obo.rs` | on-behalf-of rules shared by the certificate and RSA paths |
//! | `extension.rs` | extension apps (circle of trust) and the pod certificate |
//! | `idm.rs` | `/login/idm`: short-lived access tokens and their JWKS |
//! | `pod.rs` | `/pod`: session info |
//! | `health.rs` | `/health/live` (and `/health`), `/health/ready`: liveness, and readiness with a cached store probe |
//! | `admin.rs` | `/pod/v1/users/…/sessions`, `/pod/v1/apps/…/sessions`: session administration |
//! | `sessions.rs` | the `sessionToken` header, and calls into the session lifecycle |
//! | `access.rs` | the access log: one line per request, fields escaped |
//! | `error.rs` | [`ApiError`] and its single mapping to status and JSON |
//! | `json.rs` | JSON replies and capped body reading |
//! | `query.rs` | query-string parameters |

mod access;
mod admin;
mod certauth;
pub mod error;
mod extension;
mod health;
mod idm;
pub mod json;
mod login;
mod obo;
mod pod;
mod query;
mod sessions;
mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request};

pub use error::ApiError;
use json::Reply;

pub(crate) use access::{access_log, AccessLine};

use crate::clock::Millis;
use crate::crl::CrlSet;
use crate::directory::Directory;
use crate::identity::PeerIdentity;
use crate::session::{Sessions, TokenFamily};
use crate::signing::SigningKeys;

/// The header clients put their session token in.
pub const SESSION_TOKEN_HEADER: &str = "sessiontoken";
/// How long a count of the store's live sessions serves `/metrics` scrapes.
const LIVE_COUNT_TTL: Duration = Duration::from_secs(1);
/// How long a scrape waits for the store to count its sessions.
const LIVE_COUNT_WAIT: Duration = Duration::from_secs(1);

/// The header clients put their trace id in.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Everything a request handler needs: shared by all connections.
pub struct Api {
    /// The current directory: replaced whole on reload; each request reads one snapshot.
    directory: ArcSwap<Directory>,
    /// The current CRLs: a connection whose certificate they revoke since its handshake mints
    /// nothing more.
    crls: ArcSwap<CrlSet>,
    sessions: Sessions,
    max_body_bytes: usize,
    body_read_timeout: Duration,
    signing: Arc<SigningKeys>,
    throttle: throttle::LoginThrottle,
    /// The readiness probe's last result.
    readiness: health::Readiness,
    /// When the store's live sessions were last counted for `/metrics`.
    live_counted: parking_lot::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("sessions", &self.sessions)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_read_timeout", &self.body_read_timeout)
            .finish_non_exhaustive()
    }
}

/// What is known about a connection once its TLS handshake is done.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Who the client proved to be.
    pub peer: PeerIdentity,
    /// The client's address.
    pub remote: SocketAddr,
}

/// The resolved route: which handler, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Live,
    Ready,
    Metrics,
    RsaAuthenticate(TokenFamily),
    RsaAppAuthenticate,
    RsaOboByUserId(String),
    RsaOboByUsername(String),
    CertExtensionApp,
    RsaExtensionApp,
    PodCertificate,
    AccessToken,
    Jwks,
    Authenticate(TokenFamily),
    AppAuthenticate,
    OboByUserId(String),
    OboByUsername(String),
    Logout(TokenFamily),
    SessionInfo,
    ListUserSessions(String),
    LogoutUser(String),
    LogoutUserSession(String, String),
    LogoutApp(String),
}

impl Route {
    /// The route family, for the metrics: a fixed, small set of label values.
    fn family(&self) -> &'static str {
        match self {
            Self::Live => "health",
            Self::Ready => "ready",
            Self::Metrics => "metrics",
            Self::RsaAuthenticate(_) => "rsa_login",
            Self::RsaAppAuthenticate => "rsa_app_login",
            Self::RsaOboByUserId(_) | Self::RsaOboByUsername(_) => "rsa_obo",
            Self::CertExtensionApp | Self::RsaExtensionApp => "extension_app",
            Self::PodCertificate => "pod_certificate",
            Self::AccessToken => "access_token",
            Self::Jwks => "jwks",
            Self::Authenticate(_) => "cert_login",
            Self::AppAuthenticate => "cert_app_login",
            Self::OboByUserId(_) | Self::OboByUsername(_) => "cert_obo",
            Self::Logout(_) => "logout",
            Self::SessionInfo => "sessioninfo",
            Self::ListUserSessions(_)
            | Self::LogoutUser(_)
            | Self::LogoutUserSession(..)
            | Self::LogoutApp(_) => "admin",
        }
    }

    /// Whether this route authenticates a client and makes a session or token from it: its
    /// refusals are charged to the login throttle.
    fn is_login(&self) -> bool {
        matches!(
            self,
            Self::RsaAuthenticate(_)
                | Self::RsaAppAuthenticate
                | Self::RsaOboByUserId(_)
                | Self::RsaOboByUsername(_)
                | Self::CertExtensionApp
                | Self::RsaExtensionApp
                | Self::Authenticate(_)
                | Self::AppAuthenticate
                | Self::OboByUserId(_)
                | Self::OboByUsername(_)
        )
    }
}

/// One request's view of the world.
struct Ctx<'a> {
    api: &'a Api,
    /// The directory snapshot this request reads from start to end.
    directory: Arc<Directory>,
    peer: &'a PeerIdentity,
    headers: &'a HeaderMap,
    /// The request body (read, capped, for every route; empty for most).
    body: &'a Bytes,
    /// The query string, if any.
    query: Option<&'a str>,
    remote: SocketAddr,
    trace_id: &'a str,
    now: Millis,
}

impl Api {
    /// The request handler state: the directory, the session lifecycle (which the server
    /// closes at shutdown through [`Api::sessions`]), the request limits and the signing key.
    pub fn new(
        directory: Arc<Directory>,
        sessions: Sessions,
        limits: &crate::config::Limits,
        signing: Arc<SigningKeys>,
    ) -> Self {
        Self {
            directory: ArcSwap::new(directory),
            crls: ArcSwap::from_pointee(CrlSet::default()),
            sessions,
            max_body_bytes: limits.max_body_bytes,
            body_read_timeout: limits.body_read_timeout,
            signing,
            throttle: throttle::LoginThrottle::new(
                limits.failed_logins_per_ip,
                limits.failed_logins_per_identity,
            ),
            readiness: health::Readiness::default(),
            live_counted: parking_lot::Mutex::new(None),
        }
    }

    /// Forgets the login-throttle buckets that have refilled (the server calls this now and
    /// then).
    pub(crate) fn prune_throttle(&self) {
        self.throttle.prune();
    }

    /// The session lifecycle.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The directory requests read now.
    pub(crate) fn directory(&self) -> Arc<Directory> {
        self.directory.load_full()
    }

    /// Replaces the directory: requests that start from now on read `directory`; requests in
    /// flight finish with the one they started with. Returns the one replaced.
    pub(crate) fn replace_directory(&self, directory: Arc<Directory>) -> Arc<Directory> {
        self.directory.swap(directory)
    }

    /// The CRLs requests check presented certificates against now.
    pub(crate) fn crls(&self) -> Arc<CrlSet> {
        self.crls.load_full()
    }

    /// Replaces the CRLs requests check presented certificates against.
    pub(crate) fn replace_crls(&self, crls: Arc<CrlSet>) -> Arc<CrlSet> {
        let next_update = crls
            .crls()
            .iter()
            .map(|crl| crl.next_update().as_epoch_millis() / 1000)
            .min()
            .and_then(|secs| i64::try_from(secs).ok());
        crate::metrics::crl_next_update(next_update);
        self.crls.swap(crls)
    }

    /// Updates the live-sessions gauge from the store's counts, at most once per
    /// [`LIVE_COUNT_TTL`] whatever the number of scrapers, and waiting at most
    /// [`LIVE_COUNT_WAIT`] for the store (the gauge keeps its last value otherwise).
    async fn count_live(&self) {
        {
            let mut last = self.live_counted.lock();
            if last.is_some_and(|t| t.elapsed() < LIVE_COUNT_TTL) {
                return;
            }
            *last = Some(Instant::now());
        }
        match tokio::time::timeout(LIVE_COUNT_WAIT, self.sessions.live_by_kind()).await {
            Ok(Ok(counts)) => crate::metrics::sessions_live(&counts),
            Ok(Err(e)) => tracing::debug!(error = %e, "live sessions not counted"),
            Err(_) => {
                tracing::debug!("live sessions not counted: the store did not answer in time")
            }
        }
    }

    /// Whether the current CRLs revoke the certificate with this issuer and serial.
    fn is_revoked(&self, credential: &crate::session::CredentialId) -> bool {
        self.crls.load().is_revoked(credential.as_bytes())
    }

    /// Handles one request and writes its access-log line. Never fails: every error is a JSON
    /// reply.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Reply {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let trace_id = trace_id(req.headers());
        let routed = route(&method, &path);
        let family = routed.as_ref().map_or("unknown", Route::family);
        let result = match routed {
            Ok(route) => self.dispatch(route, req, conn, &trace_id).await,
            Err(e) => Err(e),
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                log_refusal(&e, conn, &trace_id, &path);
                if e.status().is_client_error() {
                    crate::metrics::refusal(family, e.reason());
                }
                e.into_reply()
            }
        };
        crate::metrics::request(family, reply.status().as_u16(), started.elapsed());
        access_log(&AccessLine {
            method: method.as_str(),
            path: &path,
            status: reply.status().as_u16(),
            cn: conn.peer.common_name(),
            trace_id: &trace_id,
            client: conn.remote,
            duration: Some(started.elapsed()),
            error: None,
        });
        reply
    }

    /// Handles a request on the plain-HTTP listener (`metrics_listen`): `GET /metrics` and the
    /// health endpoints; anything else is 404. Not access-logged (scrapes and probes would fill
    /// the log), but timed like every other request.
    pub(crate) async fn handle_plain<B>(&self, req: &Request<B>) -> Reply {
        let started = Instant::now();
        let (family, result) = match route(req.method(), req.uri().path()) {
            Ok(Route::Live) => ("health", Ok(health::live())),
            Ok(Route::Ready) => ("ready", Ok(health::ready_of(self).await)),
            Ok(Route::Metrics) => ("metrics", metrics_reply(self).await),
            _ => (
                "unknown",
                Err(ApiError::NotFound(
                    "This listener serves /metrics and /health, /health/live, /health/ready only"
                        .into(),
                )),
            ),
        };
        let reply = result.unwrap_or_else(ApiError::into_reply);
        crate::metrics::request(family, reply.status().as_u16(), started.elapsed());
        reply
    }

    async fn dispatch(
        &self,
        route: Route,
        req: Request<Incoming>,
        conn: &ConnInfo,
        trace_id: &str,
    ) -> Result<Reply, ApiError> {
        let headers = req.headers().clone();
        let query = req.uri().query().map(str::to_owned);
        // Every body is read (capped, and within the body time limit), also where none is
        // expected, so that the connection stays usable; an oversized or stalled one is refused
        // (and the connection, whose body was not read to its end, is closed). Handlers that
        // take a body find it in `ctx`.
        let body = tokio::time::timeout(
            self.body_read_timeout,
            json::read_body(req, self.max_body_bytes),
        )
        .await
        .map_err(|_| ApiError::BodyTimeout {
            limit: self.body_read_timeout,
        })??;
        let ctx = Ctx {
            api: self,
            directory: self.directory.load_full(),
            peer: &conn.peer,
            headers: &headers,
            body: &body,
            query: query.as_deref(),
            remote: conn.remote,
            trace_id,
            now: self.sessions.now(),
        };
        let login = route.is_login();
        let result = self.route_to(route, &ctx).await;
        match result {
            Err(e) if login && e.is_refusal() => {
                // A failed authentication: charged to the client's address and to the identity
                // it claimed; past either bucket the answer is 429 instead.
                let identity = match conn.peer.common_name() {
                    Some(cn) => Some(cn.to_owned()),
                    None => login::claimed_subject(&ctx),
                };
                match self.throttle.failed(conn.remote.ip(), identity.as_deref()) {
                    Ok(()) => Err(e),
                    Err(retry_after) => Err(ApiError::Throttled { retry_after }),
                }
            }
            other => other,
        }
    }

    async fn route_to(&self, route: Route, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        match route {
            Route::Live => Ok(health::live()),
            Route::Ready => Ok(health::ready(ctx).await),
            Route::Metrics => metrics_reply(ctx.api).await,
            Route::RsaAuthenticate(family) => login::authenticate(ctx, family).await,
            Route::RsaAppAuthenticate => login::app_authenticate(ctx).await,
            Route::RsaOboByUserId(uid) => login::obo_by_user_id(ctx, &uid).await,
            Route::RsaOboByUsername(name) => login::obo_by_username(ctx, &name).await,
            Route::CertExtensionApp => extension::authenticate_by_certificate(ctx),
            Route::RsaExtensionApp => extension::authenticate_by_key(ctx),
            Route::PodCertificate => Ok(extension::pod_certificate(ctx)),
            Route::AccessToken => idm::access_token(ctx).await,
            Route::Jwks => Ok(idm::keys(ctx)),
            Route::Authenticate(family) => certauth::authenticate(ctx, family).await,
            Route::AppAuthenticate => certauth::app_authenticate(ctx).await,
            Route::OboByUserId(uid) => certauth::obo_by_user_id(ctx, &uid).await,
            Route::OboByUsername(name) => certauth::obo_by_username(ctx, &name).await,
            Route::Logout(family) => certauth::logout(ctx, family).await,
            Route::SessionInfo => pod::session_info(ctx).await,
            Route::ListUserSessions(uid) => admin::list_user_sessions(ctx, &uid).await,
            Route::LogoutUser(uid) => admin::logout_user(ctx, &uid).await,
            Route::LogoutUserSession(uid, sid) => admin::logout_user_session(ctx, &uid, &sid).await,
            Route::LogoutApp(app) => admin::logout_app(ctx, &app).await,
        }
    }
}

/// `GET /metrics`: the Prometheus metrics (404 with `metrics = false`).
pub(crate) async fn metrics_reply(api: &Api) -> Result<Reply, ApiError> {
    if !crate::metrics::enabled() {
        return Err(ApiError::NotFound(
            "Metrics are turned off (metrics = false)".into(),
        ));
    }
    api.count_live().await;
    let mut reply = hyper::Response::new(http_body_util::Full::new(Bytes::from(
        crate::metrics::render(),
    )));
    reply.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(reply)
}

/// Logs a refusal once, with its reason code, the certificate's CN and the trace id: at INFO for
/// a refused credential or request, at DEBUG for a path or method that does not exist (what
/// scanners try), not at all for faults (logged where they happen, at ERROR).
fn log_refusal(e: &ApiError, conn: &ConnInfo, trace_id: &str, path: &str) {
    let status = e.status();
    if !status.is_client_error() {
        return;
    }
    let reason = e.reason();
    // Debug formatting quotes and escapes each field: a CN or path cannot forge a log line.
    let cn = conn.peer.common_name();
    if matches!(reason, "not_found" | "method_not_allowed") {
        tracing::debug!(reason, status = status.as_u16(), ?path, ?cn, trace_id, client = %conn.remote, message = %e, "refused");
    } else {
        tracing::info!(reason, status = status.as_u16(), ?path, ?cn, trace_id, client = %conn.remote, message = %e, "refused");
    }
}

/// One row of the routing table: a method, a path pattern (`{name}` segments are parameters,
/// any other segment must match exactly), and what makes the [`Route`] from the parameters (in
/// order of appearance). The table is the router: `docs/openapi.json` is checked against it.
struct RouteDef {
    method: &'static str,
    pattern: &'static str,
    make: fn(&[&str]) -> Result<Route, ApiError>,
}

const GET: &str = "GET";
const POST: &str = "POST";

/// Every route sessionauth serves.
const ROUTES: &[RouteDef] = &[
    RouteDef {
        method: GET,
        pattern: "/health",
        make: |_| Ok(Route::Live),
    },
    RouteDef {
        method: GET,
        pattern: "/health/live",
        make: |_| Ok(Route::Live),
    },
    RouteDef {
        method: GET,
        pattern: "/health/ready",
        make: |_| Ok(Route::Ready),
    },
    RouteDef {
        method: GET,
        pattern: "/metrics",
        make: |_| Ok(Route::Metrics),
    },
    RouteDef {
        method: POST,
        pattern: "/login/pubkey/authenticate",
        make: |_| Ok(Route::RsaAuthenticate(TokenFamily::Session)),
    },
    RouteDef {
        method: POST,
        pattern: "/relay/pubkey/authenticate",
        make: |_| Ok(Route::RsaAuthenticate(TokenFamily::KeyManager)),
    },
    RouteDef {
        method: POST,
        pattern: "/login/pubkey/app/authenticate",
        make: |_| Ok(Route::RsaAppAuthenticate),
    },
    RouteDef {
        method: POST,
        pattern: "/login/pubkey/app/user/{userId}/authenticate",
        make: |p| Ok(Route::RsaOboByUserId(p[0].to_owned())),
    },
    RouteDef {
        method: POST,
        pattern: "/login/pubkey/app/username/{username}/authenticate",
        make: |p| Ok(Route::RsaOboByUsername(percent_decode(p[0])?)),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/authenticate/extensionApp",
        make: |_| Ok(Route::CertExtensionApp),
    },
    RouteDef {
        method: POST,
        pattern: "/login/v1/pubkey/app/authenticate/extensionApp",
        make: |_| Ok(Route::RsaExtensionApp),
    },
    RouteDef {
        method: GET,
        pattern: "/sessionauth/v1/app/pod/certificate",
        make: |_| Ok(Route::PodCertificate),
    },
    RouteDef {
        method: GET,
        pattern: "/pod/v1/podcert",
        make: |_| Ok(Route::PodCertificate),
    },
    RouteDef {
        method: POST,
        pattern: "/login/idm/tokens",
        make: |_| Ok(Route::AccessToken),
    },
    RouteDef {
        method: GET,
        pattern: "/login/idm/keys",
        make: |_| Ok(Route::Jwks),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/authenticate",
        make: |_| Ok(Route::Authenticate(TokenFamily::Session)),
    },
    RouteDef {
        method: POST,
        pattern: "/session/authenticate",
        make: |_| Ok(Route::Authenticate(TokenFamily::Session)),
    },
    RouteDef {
        method: POST,
        pattern: "/keyauth/v1/authenticate",
        make: |_| Ok(Route::Authenticate(TokenFamily::KeyManager)),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/app/authenticate",
        make: |_| Ok(Route::AppAuthenticate),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/app/user/{uid}/authenticate",
        make: |p| Ok(Route::OboByUserId(p[0].to_owned())),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/app/username/{username}/authenticate",
        make: |p| Ok(Route::OboByUsername(percent_decode(p[0])?)),
    },
    RouteDef {
        method: POST,
        pattern: "/sessionauth/v1/logout",
        make: |_| Ok(Route::Logout(TokenFamily::Session)),
    },
    RouteDef {
        method: POST,
        pattern: "/keyauth/v1/logout",
        make: |_| Ok(Route::Logout(TokenFamily::KeyManager)),
    },
    RouteDef {
        method: GET,
        pattern: "/pod/v2/sessioninfo",
        make: |_| Ok(Route::SessionInfo),
    },
    RouteDef {
        method: GET,
        pattern: "/pod/v1/users/{uid}/sessions",
        make: |p| Ok(Route::ListUserSessions(p[0].to_owned())),
    },
    RouteDef {
        method: POST,
        pattern: "/pod/v1/users/{uid}/sessions/logout",
        make: |p| Ok(Route::LogoutUser(p[0].to_owned())),
    },
    RouteDef {
        method: POST,
        pattern: "/pod/v1/users/{uid}/sessions/{sessionId}/logout",
        make: |p| Ok(Route::LogoutUserSession(p[0].to_owned(), p[1].to_owned())),
    },
    RouteDef {
        method: POST,
        pattern: "/pod/v1/apps/{appId}/sessions/logout",
        make: |p| Ok(Route::LogoutApp(percent_decode(p[0])?)),
    },
];

/// The patterns of [`ROUTES`], split once: a literal segment, or `None` for a parameter.
static COMPILED: std::sync::LazyLock<Vec<Vec<Option<&'static str>>>> =
    std::sync::LazyLock::new(|| {
        ROUTES
            .iter()
            .map(|def| {
                def.pattern[1..]
                    .split('/')
                    .map(|s| (!is_param(s)).then_some(s))
                    .collect()
            })
            .collect()
    });

/// Whether a pattern segment is a `{parameter}`.
fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// Resolves a request to its route: 404 for an unknown path, 405 (with `Allow`) for a known
/// path with another method.
fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut params: Vec<&str> = Vec::with_capacity(2);
    for (def, pattern) in ROUTES.iter().zip(COMPILED.iter()) {
        if pattern.len() != segments.len() {
            continue;
        }
        params.clear();
        let matched = pattern.iter().zip(&segments).all(|(p, segment)| match p {
            None => {
                params.push(segment);
                true
            }
            Some(literal) => literal == segment,
        });
        if !matched {
            continue;
        }
        if method.as_str() != def.method {
            return Err(ApiError::MethodNotAllowed { allow: def.method });
        }
        return (def.make)(&params);
    }
    Err(ApiError::NotFound(format!("No such endpoint: {path}")))
}

/// What the fuzz targets drive of the HTTP layer: routing and path decoding of `path`, and the
/// `scope` query of `query`, as a request would. Never panics, whatever the input.
pub(crate) fn fuzz_request(method: &[u8], path: &str, query: Option<&str>) {
    if let Ok(method) = Method::from_bytes(method) {
        let _ = route(&method, path);
    }
    let _ = idm::scope(query);
    let _ = percent_decode(path);
}

/// Decodes `%XX` escapes in a path segment; the result must be UTF-8.
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("Malformed percent-encoding in the path".into());
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The client's `X-Trace-Id`, reduced to a safe, short string for the log (`-` when absent).
fn trace_id(headers: &HeaderMap) -> String {
    let id: String = headers
        .get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if id.is_empty() {
        "-".to_owned()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is a valid OpenAPI 3.1 document of the router: every routed method and
    /// path is in it, every one in it is routed, with its path parameters declared, and each
    /// pattern is reached by its own row (no row shadows another).
    #[test]
    fn openapi_document_matches_the_router() {
        let text = include_str!("../../docs/openapi.json");
        let spec =
            oas3::from_json(text).expect("docs/openapi.json is a valid OpenAPI 3.1 document");
        assert_eq!(spec.info.version, env!("CARGO_PKG_VERSION"));
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let methods = [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ];
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if !methods.contains(&method.as_str()) {
                    continue;
                }
                documented.insert((method.to_uppercase(), path.clone()));
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let in_path: Vec<&str> = path[1..]
                    .split('/')
                    .filter(|s| is_param(s))
                    .map(|s| &s[1..s.len() - 1])
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}: path parameters");
            }
        }
        let routed: std::collections::BTreeSet<_> = ROUTES
            .iter()
            .map(|def| (def.method.to_owned(), def.pattern.to_owned()))
            .collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routed but not in docs/openapi.json: {missing:?}"
        );
        assert!(
            unrouted.is_empty(),
            "in docs/openapi.json but not routed: {unrouted:?}"
        );
        assert_eq!(
            routed.len(),
            ROUTES.len(),
            "a method and pattern routed twice"
        );

        for def in ROUTES {
            let path = def
                .pattern
                .split('/')
                .map(|s| if is_param(s) { "1001" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let own = (def.make)(&["1001", "1001"]).unwrap();
            let method = Method::from_bytes(def.method.as_bytes()).unwrap();
            assert_eq!(route(&method, &path).unwrap(), own, "{path}");
            let other = if method == Method::GET {
                Method::POST
            } else {
                Method::GET
            };
            assert_eq!(
                route(&other, &path).unwrap_err().status(),
                hyper::StatusCode::METHOD_NOT_ALLOWED,
                "{other} {path}"
            );
        }
    }

    /// Known paths route; unknown paths are 404; wrong methods are 405.
    #[test]
    fn routing() {
        assert_eq!(
            route(&Method::POST, "/session/authenticate").unwrap(),
            Route::Authenticate(TokenFamily::Session)
        );
        assert_eq!(
            route(
                &Method::POST,
                "/sessionauth/v1/app/username/a%20b/authenticate"
            )
            .unwrap(),
            Route::OboByUsername("a b".into())
        );
        assert_eq!(
            route(&Method::GET, "/nope").unwrap_err().status(),
            hyper::StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::GET, "/sessionauth/v1/authenticate")
                .unwrap_err()
                .status(),
            hyper::StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(
                &Method::POST,
                "/sessionauth/v1/app/username/%zz/authenticate"
            )
            .unwrap_err()
            .status(),
            hyper::StatusCode::BAD_REQUEST
        );
    }

    /// The RSA, extension-app and access-token paths route, with their methods.
    #[test]
    fn rsa_routing() {
        assert_eq!(
            route(&Method::POST, "/relay/pubkey/authenticate").unwrap(),
            Route::RsaAuthenticate(TokenFamily::KeyManager)
        );
        assert_eq!(
            route(
                &Method::POST,
                "/login/pubkey/app/username/a%2Eb/authenticate"
            )
            .unwrap(),
            Route::RsaOboByUsername("a.b".into())
        );
        assert_eq!(
            route(&Method::GET, "/pod/v1/podcert").unwrap(),
            Route::PodCertificate
        );
        assert_eq!(
            route(&Method::GET, "/login/idm/tokens")
                .unwrap_err()
                .status(),
            hyper::StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::POST, "/login/idm/keys")
                .unwrap_err()
                .status(),
            hyper::StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// Trace ids are kept short and free of anything that could forge a log line.
    #[test]
    fn trace_ids_are_sanitized() {
        let mut h = HeaderMap::new();
        assert_eq!(trace_id(&h), "-");
        h.insert(TRACE_ID_HEADER, "abc123".parse().unwrap());
        assert_eq!(trace_id(&h), "abc123");
        h.insert(TRACE_ID_HEADER, "a b\tc=d".parse().unwrap());
        assert_eq!(trace_id(&h), "abcd");
    }
}
