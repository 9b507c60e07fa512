//! Extension apps (Symphony's "circle of trust") and the pod certificate.
//!
//! `POST /sessionauth/v1/authenticate/extensionApp` (app certificate, body `{"appToken"}`) and
//! `POST /login/v1/pubkey/app/authenticate/extensionApp` (body `{"appToken","authToken"}`, the
//! app's JWT) answer `{"appId","appToken","symphonyToken","expireAt"}`:
//!
//! - `appToken` is the app backend's own random value, echoed back;
//! - `symphonyToken` is a fresh 256-bit random value. The app's backend keeps the pair and later
//!   checks that the front end presents the same pair, proving both talk to this server. It is
//!   not a session token: no endpoint here accepts it, and it is not stored;
//! - `expireAt` (epoch milliseconds) is now plus the configured session lifetime: how long the
//!   app should keep the pair.
//!
//! `GET /sessionauth/v1/app/pod/certificate` and `GET /pod/v1/podcert` answer
//! `{"certificate":"<PEM>"}`: the self-signed certificate of the server's signing key, with
//! which an app verifies JWTs this server signs.

use serde::Deserialize;
use serde_json::json;

use super::certauth::{active_app, certificate};
use super::json::{self, Reply};
use super::{login, ApiError, Ctx};
use crate::clock::Millis;
use crate::directory::App;
use crate::token::SessionToken;

/// The longest app token accepted.
const MAX_APP_TOKEN_LEN: usize = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertRequest {
    app_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RsaRequest {
    app_token: String,
    auth_token: String,
}

/// `POST /sessionauth/v1/authenticate/extensionApp`.
pub(super) fn authenticate_by_certificate(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let cert = certificate(ctx)?;
    let app = active_app(ctx, cert)?;
    let body: CertRequest = json::parse_body(ctx.body, r#"{"appToken": "..."}"#)?;
    tokens(ctx, &app, body.app_token, Some(cert.not_after()))
}

/// `POST /login/v1/pubkey/app/authenticate/extensionApp`.
pub(super) fn authenticate_by_key(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let body: RsaRequest =
        json::parse_body(ctx.body, r#"{"appToken": "...", "authToken": "<JWT>"}"#)?;
    let (app, _) = login::verified_app(ctx, &body.auth_token)?;
    tokens(ctx, &app, body.app_token, None)
}

/// `GET /sessionauth/v1/app/pod/certificate`, `GET /pod/v1/podcert`.
pub(super) fn pod_certificate(ctx: &Ctx<'_>) -> Reply {
    json::ok(&json!({ "certificate": ctx.api.signing.certificate_pem() }))
}

/// The circle-of-trust answer; `symphonyToken` expires after the session lifetime, or at `cap`
/// (the app certificate's `notAfter`) when that comes first.
fn tokens(
    ctx: &Ctx<'_>,
    app: &App,
    app_token: String,
    cap: Option<Millis>,
) -> Result<Reply, ApiError> {
    if app_token.is_empty() || app_token.len() > MAX_APP_TOKEN_LEN {
        return Err(ApiError::BadRequest(format!(
            "appToken must be 1 to {MAX_APP_TOKEN_LEN} characters"
        )));
    }
    let symphony_token = SessionToken::generate()?;
    let lifetime_end = ctx.now.saturating_add(ctx.api.sessions.lifetime());
    let expire_at = cap.map_or(lifetime_end, |cap| cap.min(lifetime_end));
    tracing::info!(
        target: "sessionauth::session",
        event = "extension_app",
        app = app.app_id.as_str(),
        expires = expire_at.as_epoch_millis(),
        trace_id = ctx.trace_id,
        client = %ctx.remote,
    );
    Ok(json::ok(&json!({
        "appId": app.app_id.as_str(),
        "appToken": app_token,
        "symphonyToken": symphony_token.expose(),
        "expireAt": expire_at.as_epoch_millis(),
    })))
}
