//! Minting sessions and resolving the `sessionToken` header back to a live session.

use std::sync::Arc;

use super::{ApiError, Ctx, TokenFamily, SESSION_TOKEN_HEADER};
use crate::clock::Millis;
use crate::directory::User;
use crate::session::{Session, SessionId, SessionKind};
use crate::token::{SessionToken, TokenHash};

/// Makes a session of `kind` that ends after the configured lifetime or at `cap` (the client
/// certificate's `notAfter`, the minting app session's end; `None` when only the lifetime
/// applies), whichever comes first, and stores it.
pub(super) async fn mint(
    ctx: &Ctx<'_>,
    kind: SessionKind,
    cap: Option<Millis>,
) -> Result<SessionToken, ApiError> {
    let lifetime_end = ctx.now.saturating_add(ctx.api.session_lifetime);
    let expires = cap.map_or(lifetime_end, |cap| lifetime_end.min(cap));
    if expires <= ctx.now {
        return Err(ApiError::Unauthorized(
            "The client certificate has expired".into(),
        ));
    }
    let (token, id) = SessionToken::generate_with::<8>()?;
    let session = Session {
        id: SessionId::from_random(id),
        kind,
        created: ctx.now,
        expires,
        client_ip: Some(ctx.remote.ip()),
        user_agent: user_agent(ctx),
    };
    let (id, kind) = (session.id, session.kind.clone());
    ctx.api.store.insert(token.hash(), session).await?;
    tracing::info!(
        target: "sessionauth::session",
        event = "created",
        kind = kind.label(),
        user = kind.user().map(|u| u.0),
        app = kind.app().map(|a| a.as_str()),
        session_id = id.0,
        expires = expires.as_epoch_millis(),
        trace_id = ctx.trace_id,
        client = %ctx.remote,
    );
    Ok(token)
}

/// The client's `User-Agent`, printable ASCII only, at most 256 characters. Sessions from the
/// same client share one copy: the last value seen is reused when it matches.
fn user_agent(ctx: &Ctx<'_>) -> Option<Arc<str>> {
    let raw = ctx.headers.get(hyper::header::USER_AGENT)?.to_str().ok()?;
    let clean = |s: &str| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect::<String>()
    };
    let mut last = ctx.api.last_user_agent.lock();
    if let Some(ua) = last.as_ref().filter(|ua| ***ua == *raw) {
        return Some(ua.clone());
    }
    let ua = clean(raw);
    if ua.is_empty() {
        return None;
    }
    let ua: Arc<str> = Arc::from(ua);
    if *ua == *raw {
        *last = Some(ua.clone());
    }
    Some(ua)
}

/// The raw `sessionToken` header, if one was sent.
pub(super) fn header<'h>(ctx: &Ctx<'h>) -> Option<&'h str> {
    // A header that is not visible ASCII cannot be one of our tokens; it is treated as a
    // garbage token (401), not as a missing one.
    ctx.headers
        .get(SESSION_TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Resolves a presented token to its live session in `family`, or 401. A session whose user or
/// app has been deactivated or removed from the directory is no longer valid either.
pub(super) async fn resolve(
    ctx: &Ctx<'_>,
    raw: &str,
    family: TokenFamily,
) -> Result<(TokenHash, Session), ApiError> {
    let token = SessionToken::parse(raw).ok_or_else(ApiError::invalid_session)?;
    let key = token.hash();
    let session = ctx
        .api
        .store
        .get(&key, ctx.now)
        .await?
        .ok_or_else(ApiError::invalid_session)?;
    if !family.includes(&session.kind) || !principals_active(ctx, &session.kind) {
        return Err(ApiError::invalid_session());
    }
    Ok((key, session))
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
        .api
        .directory
        .user(uid)
        .cloned()
        .ok_or_else(ApiError::invalid_session)?;
    Ok((session, user))
}

fn principals_active(ctx: &Ctx<'_>, kind: &SessionKind) -> bool {
    let dir = &ctx.api.directory;
    let user_ok = kind
        .user()
        .is_none_or(|u| dir.user(u).is_some_and(|u| u.active));
    let app_ok = kind
        .app()
        .is_none_or(|a| dir.app(a).is_some_and(|a| a.active));
    user_ok && app_ok
}

/// Logs the end of a session.
pub(super) fn log_ended(ctx: &Ctx<'_>, session: &Session, reason: &'static str) {
    tracing::info!(
        target: "sessionauth::session",
        event = "ended",
        reason,
        kind = session.kind.label(),
        user = session.kind.user().map(|u| u.0),
        app = session.kind.app().map(|a| a.as_str()),
        session_id = session.id.0,
        trace_id = ctx.trace_id,
    );
}
