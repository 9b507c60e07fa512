//! The HTTP side of the session lifecycle: reading the `sessionToken` header, and calling
//! [`Sessions`](crate::session::Sessions) with what the request carries.

use std::sync::Arc;

use super::{ApiError, Ctx, SESSION_TOKEN_HEADER};
use crate::clock::Millis;
use crate::directory::User;
use crate::session::{Credential, Origin, Session, SessionKind, TokenFamily};
use crate::token::{SessionToken, TokenHash};

/// Mints a session of `kind` with `credential` for this request's client, capped at `cap` (see
/// [`Sessions::mint`](crate::session::Sessions::mint)).
pub(super) async fn mint(
    ctx: &Ctx<'_>,
    kind: SessionKind,
    credential: Option<Credential>,
    cap: Option<Millis>,
) -> Result<SessionToken, ApiError> {
    let origin = Origin {
        client: ctx.remote,
        user_agent: ctx
            .headers
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        trace_id: ctx.trace_id,
    };
    Ok(ctx
        .api
        .sessions
        .mint(kind, credential, cap, ctx.now, origin)
        .await?)
}

/// The raw `sessionToken` header, if one was sent. Two of them are a 400: which one a proxy or
/// a peer would pick is anyone's guess, so neither is.
pub(super) fn header<'h>(ctx: &Ctx<'h>) -> Result<Option<&'h str>, ApiError> {
    let mut values = ctx.headers.get_all(SESSION_TOKEN_HEADER).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "More than one sessionToken header: send exactly one".into(),
        ));
    }
    // A header that is not visible ASCII cannot be one of our tokens; it is treated as a
    // garbage token (401), not as a missing one.
    Ok(first.map(|v| v.to_str().unwrap_or("\u{0}")))
}

/// Resolves a presented token to its live session in `family`, or 401.
pub(super) async fn resolve(
    ctx: &Ctx<'_>,
    raw: &str,
    family: TokenFamily,
) -> Result<(TokenHash, Session), ApiError> {
    Ok(ctx
        .api
        .sessions
        .resolve(&ctx.directory, raw, family, ctx.now)
        .await?)
}

/// Resolves a presented token to a live session that acts as a user, and that user: a bot's
/// own session or an on-behalf-of session. A key-manager token is not a session token (401); an
/// app's own session has no user (403).
pub(super) async fn user_session(
    ctx: &Ctx<'_>,
    raw: &str,
) -> Result<(Session, Arc<User>), ApiError> {
    let (_, session) = resolve(ctx, raw, TokenFamily::Session).await?;
    let uid = match session.kind {
        SessionKind::User { user } | SessionKind::OnBehalfOf { user, .. } => user,
        SessionKind::App { .. } => {
            return Err(ApiError::Forbidden(
                "An app session has no user: use an on-behalf-of session".into(),
            ))
        }
        SessionKind::KeyManager { .. } => return Err(ApiError::invalid_session()),
    };
    let user = ctx
        .directory
        .user(uid)
        .cloned()
        .ok_or_else(ApiError::invalid_session)?;
    Ok((session, user))
}
