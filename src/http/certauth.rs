//! The certificate authenticator: `/sessionauth/v1/...`, `/keyauth/v1/...` and the short alias
//! `/session/authenticate`.
//!
//! The caller's identity is the CN of its verified client certificate, handed over as a
//! [`PeerIdentity`]. Refusals: no certificate 401; a CN that names no one allowed 403; for
//! on-behalf-of, the rules of `obo.rs` (shared with the RSA path).

use std::sync::Arc;

use serde_json::json;

use super::error::CERT_NOT_ALLOWED;
use super::json::{self, Reply};
use super::obo::{self, Target};
use super::{sessions, ApiError, Ctx};
use crate::directory::{App, Principal};
use crate::identity::{CertIdentity, PeerIdentity};
use crate::session::{SessionKind, TokenFamily};

/// `POST /sessionauth/v1/authenticate`, `/session/authenticate`, `/keyauth/v1/authenticate`:
/// a service user's session or key-manager token.
pub(super) async fn authenticate(ctx: &Ctx<'_>, family: TokenFamily) -> Result<Reply, ApiError> {
    let cert = certificate(ctx)?;
    let refused = |reason| Err(ApiError::Forbidden(CERT_NOT_ALLOWED.into()).because(reason));
    let user = match ctx.directory.principal(cert.common_name()) {
        Some(Principal::User(u)) if u.is_service_user() && u.active => u,
        Some(Principal::User(u)) if !u.is_service_user() => return refused("not_service_user"),
        Some(Principal::User(_)) => return refused("inactive"),
        Some(Principal::App(_)) => return refused("app_on_user_path"),
        None => return refused("unknown_cn"),
    };
    let kind = family.user_kind(user.id);
    let token = mint_with(ctx, cert, kind).await?;
    Ok(json::token(family.response_name(), &token))
}

/// `POST /sessionauth/v1/app/authenticate`: an app's own session.
pub(super) async fn app_authenticate(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let cert = certificate(ctx)?;
    let app = active_app(ctx, cert)?;
    let kind = SessionKind::App {
        app: app.app_id.clone(),
    };
    let token = mint_with(ctx, cert, kind).await?;
    Ok(json::token("sessionToken", &token))
}

/// `POST /sessionauth/v1/app/user/{uid}/authenticate`.
pub(super) async fn obo_by_user_id(ctx: &Ctx<'_>, uid: &str) -> Result<Reply, ApiError> {
    on_behalf_of(ctx, Target::UserId(uid)).await
}

/// `POST /sessionauth/v1/app/username/{username}/authenticate`.
pub(super) async fn obo_by_username(ctx: &Ctx<'_>, username: &str) -> Result<Reply, ApiError> {
    on_behalf_of(ctx, Target::Username(username)).await
}

/// An on-behalf-of session: an active app certificate, then the rules of [`obo`] with the
/// certificate's app as the caller.
async fn on_behalf_of(ctx: &Ctx<'_>, target: Target<'_>) -> Result<Reply, ApiError> {
    let cert = certificate(ctx)?;
    let app = active_app(ctx, cert)?;
    let token = obo::session(ctx, Some(&app.app_id), target, Some(cert.not_after())).await?;
    Ok(json::ok(&json!({ "sessionToken": token.expose() })))
}

/// `POST /sessionauth/v1/logout`, `/keyauth/v1/logout`: ends exactly the session named by the
/// `sessionToken` header, when the certificate's CN owns it (the service user for its own
/// sessions; the app for its app session and the on-behalf-of sessions it minted).
pub(super) async fn logout(ctx: &Ctx<'_>, family: TokenFamily) -> Result<Reply, ApiError> {
    let cert = certificate(ctx)?;
    let principal = ctx
        .directory
        .principal(cert.common_name())
        .ok_or_else(|| ApiError::Forbidden(CERT_NOT_ALLOWED.into()).because("unknown_cn"))?;
    let raw = sessions::header(ctx)?
        .ok_or_else(|| ApiError::BadRequest("Missing sessionToken header".into()))?;
    let ended = ctx
        .api
        .sessions
        .logout(
            &ctx.directory,
            &principal,
            raw,
            family,
            ctx.now,
            ctx.trace_id,
        )
        .await?;
    // `count` includes the on-behalf-of sessions an app session's logout ended with it.
    Ok(json::ok(
        &json!({ "message": "Logout successful", "count": ended.len() }),
    ))
}

/// The verified certificate, or 401: when none was presented, when it names no one, and when
/// it has expired or been revoked since the connection's handshake (a kept-alive or resumed
/// connection is checked at every request, not only when it was made).
pub(super) fn certificate<'c>(ctx: &Ctx<'c>) -> Result<&'c CertIdentity, ApiError> {
    let cert = match ctx.peer {
        PeerIdentity::Certificate(c) => c,
        PeerIdentity::Anonymous => {
            return Err(ApiError::Unauthorized(
                "A client certificate is required for this endpoint".into(),
            )
            .because("no_certificate"))
        }
        PeerIdentity::Unusable(e) => {
            return Err(ApiError::Unauthorized(e.to_string()).because("cert_unusable"))
        }
    };
    if ctx.now >= cert.not_after() {
        return Err(
            ApiError::Unauthorized("The client certificate has expired".into())
                .because("cert_expired"),
        );
    }
    if cert.revocation_ids().any(|id| ctx.api.is_revoked(id)) {
        return Err(
            ApiError::Unauthorized("The client certificate has been revoked".into())
                .because("revoked"),
        );
    }
    Ok(cert)
}

/// Mints a session of `kind` with the client certificate `cert`: it records the certificate
/// and ends no later than it does.
async fn mint_with(
    ctx: &Ctx<'_>,
    cert: &CertIdentity,
    kind: SessionKind,
) -> Result<crate::token::SessionToken, ApiError> {
    sessions::mint(
        ctx,
        kind,
        Some(cert.credential().clone()),
        Some(cert.not_after()),
    )
    .await
}

/// The active app the certificate names, or 403.
pub(super) fn active_app(ctx: &Ctx<'_>, cert: &CertIdentity) -> Result<Arc<App>, ApiError> {
    let refused = |reason| {
        Err(ApiError::Forbidden(
            "Forbidden: Certificate authentication is not allowed for the requested app.".into(),
        )
        .because(reason))
    };
    match ctx.directory.principal(cert.common_name()) {
        Some(Principal::App(a)) if a.active => Ok(a),
        Some(Principal::App(_)) => refused("inactive"),
        Some(Principal::User(_)) => refused("user_on_app_path"),
        None => refused("unknown_cn"),
    }
}
