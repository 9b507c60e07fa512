//! Session administration, the Symphony pod way: list and end a user's sessions; beyond
//! Symphony, end every session an app holds.
//!
//! The caller authenticates with its own `sessionToken`: a user's own session (not an OBO or app
//! session, so that no app can borrow an administrator's authority) whose directory roles
//! include [`ADMIN_ROLES`]. Anyone else gets 403. Answers never carry a token: sessions are named
//! by their public id.

use serde_json::json;

use super::json::{self, Reply};
use super::{query, sessions, ApiError, Ctx};
use crate::directory::{AppId, UserId};
use crate::session::{EndReason, Session, SessionId, SessionKind, TokenFamily};
use crate::store::Selector;

/// Directory roles that may administer sessions.
pub(super) const ADMIN_ROLES: [&str; 2] = ["SUPER_ADMINISTRATOR", "ADMINISTRATOR"];

/// How many sessions a listing returns when the caller names no `limit`.
pub(super) const DEFAULT_PAGE: usize = 100;
/// The largest `limit` a listing accepts.
pub(super) const MAX_PAGE: usize = 1000;

/// `GET /pod/v1/users/{uid}/sessions?skip=&limit=`: the user's live sessions, oldest first,
/// `limit` (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]) of them after the first `skip`.
/// `count` is how many this page holds, `total` how many there are.
pub(super) async fn list_user_sessions(ctx: &Ctx<'_>, uid: &str) -> Result<Reply, ApiError> {
    let admin = require_admin(ctx).await?;
    let user = known_user(ctx, uid)?;
    let skip = query::number(ctx.query, "skip", 0, usize::MAX)?;
    let limit = query::number(ctx.query, "limit", DEFAULT_PAGE, MAX_PAGE)?;
    let sessions = ctx.api.sessions.list_user(user, ctx.now).await?;
    tracing::info!(target: "sessionauth::admin", action = "list", admin = admin.0, user = user.0, trace_id = ctx.trace_id);
    let listed: Vec<_> = sessions
        .iter()
        .skip(skip)
        .take(limit)
        .map(describe)
        .collect();
    Ok(json::ok(&json!({
        "sessions": listed,
        "count": listed.len(),
        "total": sessions.len(),
        "skip": skip,
        "limit": limit,
    })))
}

/// `POST /pod/v1/users/{uid}/sessions/logout`: ends every session that acts as the user.
pub(super) async fn logout_user(ctx: &Ctx<'_>, uid: &str) -> Result<Reply, ApiError> {
    let admin = require_admin(ctx).await?;
    let user = known_user(ctx, uid)?;
    let ended = ctx
        .api
        .sessions
        .end(
            &Selector::User(user),
            EndReason::Admin,
            ctx.now,
            ctx.trace_id,
        )
        .await?;
    tracing::info!(target: "sessionauth::admin", action = "logout_user", admin = admin.0, user = user.0, count = ended.len(), trace_id = ctx.trace_id);
    Ok(ended_reply(ended.len(), &format!("user {user}")))
}

/// `POST /pod/v1/users/{uid}/sessions/{sid}/logout`: ends one session of the user.
pub(super) async fn logout_user_session(
    ctx: &Ctx<'_>,
    uid: &str,
    sid: &str,
) -> Result<Reply, ApiError> {
    let admin = require_admin(ctx).await?;
    let user = known_user(ctx, uid)?;
    // A decimal string, as every answer writes it (a JSON number would lose digits in jq).
    let sid: i64 = sid
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("Session id {sid:?} is not an integer")))?;
    let ended = ctx
        .api
        .sessions
        .end_by_id(
            user,
            SessionId(sid),
            EndReason::Admin,
            ctx.now,
            ctx.trace_id,
        )
        .await?;
    if ended.is_empty() {
        return Err(ApiError::NotFound("Session not found".into()));
    }
    tracing::info!(target: "sessionauth::admin", action = "logout_session", admin = admin.0, user = user.0, session_id = sid, trace_id = ctx.trace_id);
    Ok(json::ok(&json!({
        "format": "TEXT",
        "message": format!("Ended session {sid} of user {user}"),
        "count": ended.len(),
    })))
}

/// `POST /pod/v1/apps/{appId}/sessions/logout`: ends the app's own sessions and every
/// on-behalf-of session it minted.
pub(super) async fn logout_app(ctx: &Ctx<'_>, app: &str) -> Result<Reply, ApiError> {
    let admin = require_admin(ctx).await?;
    let app = AppId::new(app);
    if ctx.directory.app(&app).is_none() {
        return Err(ApiError::NotFound("App id not found".into()));
    }
    let ended = ctx
        .api
        .sessions
        .end(
            &Selector::App(app.clone()),
            EndReason::Admin,
            ctx.now,
            ctx.trace_id,
        )
        .await?;
    tracing::info!(target: "sessionauth::admin", action = "logout_app", admin = admin.0, app = app.as_str(), count = ended.len(), trace_id = ctx.trace_id);
    Ok(ended_reply(ended.len(), &format!("app {app}")))
}

/// The caller's user id when its session is an administrator's own session; 401 or 403 else.
async fn require_admin(ctx: &Ctx<'_>) -> Result<UserId, ApiError> {
    let raw = sessions::header(ctx)?.ok_or_else(ApiError::invalid_session)?;
    let (_, session) = sessions::resolve(ctx, raw, TokenFamily::Session).await?;
    let forbidden =
        || ApiError::Forbidden("Session administration needs an administrator role".into());
    let SessionKind::User { user } = session.kind else {
        return Err(forbidden());
    };
    let is_admin = ctx
        .directory
        .user(user)
        .is_some_and(|u| u.roles.iter().any(|r| ADMIN_ROLES.contains(&r.as_str())));
    if is_admin {
        Ok(user)
    } else {
        Err(forbidden())
    }
}

fn known_user(ctx: &Ctx<'_>, uid: &str) -> Result<UserId, ApiError> {
    let uid: i64 = uid
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("User id {uid:?} is not an integer")))?;
    ctx.directory
        .user(UserId(uid))
        .map(|u| u.id)
        .ok_or_else(|| ApiError::NotFound("User id not found".into()))
}

fn describe(s: &Session) -> serde_json::Value {
    let mut v = json!({
        "sessionId": s.id.to_string(),
        "userId": s.kind.user().map(|u| u.0),
        "creationTime": s.created.as_epoch_millis(),
        "expirationDelay": u64::try_from(s.expires.saturating_since(s.created).as_millis()).unwrap_or(u64::MAX),
        "kind": s.kind.label(),
    });
    if let Some(app) = s.kind.app() {
        v["appId"] = json!(app.as_str());
    }
    if let Some(ip) = &s.client_ip {
        v["clientIp"] = json!(ip);
    }
    if let Some(ua) = &s.user_agent {
        v["userAgent"] = json!(ua);
    }
    if let Some(id) = &s.credential {
        v["credentialId"] = json!(id.to_string());
    }
    if let Some(fp) = &s.fingerprint {
        v["credentialFingerprint"] = json!(fp.to_string());
    }
    v
}

fn ended_reply(count: usize, whom: &str) -> Reply {
    let noun = if count == 1 { "session" } else { "sessions" };
    json::ok(&json!({
        "format": "TEXT",
        "message": format!("Ended {count} {noun} of {whom}"),
        "count": count,
    }))
}
