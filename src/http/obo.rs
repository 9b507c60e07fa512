//! On-behalf-of sessions: the rules shared by the certificate path
//! (`/sessionauth/v1/app/.../authenticate`) and the RSA path (`/login/pubkey/app/.../authenticate`).
//!
//! Once the caller's own credential is checked, in this order: `sessionToken` header missing 400;
//! a bad, expired or ended token 401; not an app session 401; another app's session 403 (on the
//! certificate path, where the caller is also named by its certificate); app not allowed to act
//! on behalf of users 403; user id not an integer 400; unknown user 404; inactive user 403; the
//! user did not install the app 403.
//!
//! An on-behalf-of session never outlives the app session that minted it: it ends at the
//! configured lifetime, the app certificate's `notAfter` (certificate path), or the app
//! session's own end, whichever comes first. So an app session made with a short-lived
//! certificate cannot mint longer-lived sessions on the RSA path, where no certificate is shown.

use std::sync::Arc;

use super::{sessions, ApiError, Ctx};
use crate::clock::Millis;
use crate::directory::{App, AppId, User, UserId};
use crate::session::{Session, SessionKind, TokenFamily};
use crate::token::SessionToken;

/// Whom the on-behalf-of session is for, as the path names them.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// `/app/user/{uid}/authenticate`: not yet known to be an integer.
    UserId(&'a str),
    /// `/app/username/{username}/authenticate`.
    Username(&'a str),
}

/// Mints an on-behalf-of session for `target`, with the app session in the `sessionToken`
/// header as the app's credential. `caller`: the app the client certificate names, which must
/// own that app session (`None` on the RSA path, where the app session is the only credential).
/// `cap`: the certificate's `notAfter`, which no session made with it outlives.
pub(super) async fn session(
    ctx: &Ctx<'_>,
    caller: Option<&AppId>,
    target: Target<'_>,
    cap: Option<Millis>,
) -> Result<SessionToken, ApiError> {
    let (app, app_session) = app_of_session(ctx, caller).await?;
    let user = target_user(ctx, &app, target)?;
    let kind = SessionKind::OnBehalfOf {
        app: app.app_id.clone(),
        user: user.id,
        parent: app_session.id,
    };
    let cap = cap.map_or(app_session.expires, |cap| cap.min(app_session.expires));
    // Its credential is its app session: ending that one (for any reason) ends this one.
    sessions::mint(ctx, kind, None, Some(cap)).await
}

/// The app whose live app session is in `sessionToken`, when it may act on behalf of users,
/// and that app session.
async fn app_of_session(
    ctx: &Ctx<'_>,
    caller: Option<&AppId>,
) -> Result<(Arc<App>, Session), ApiError> {
    let raw = sessions::header(ctx)?.ok_or_else(|| {
        ApiError::BadRequest("Missing sessionToken header (the app's session)".into())
    })?;
    let (_, session) = sessions::resolve(ctx, raw, TokenFamily::Session).await?;
    let SessionKind::App { app: owner } = &session.kind else {
        return Err(ApiError::Unauthorized(
            "The sessionToken is not an app session".into(),
        ));
    };
    if caller.is_some_and(|caller| caller != owner) {
        return Err(ApiError::Forbidden(
            "The sessionToken is another app's session".into(),
        ));
    }
    // `resolve` has checked that the app still exists and is active.
    let app = ctx
        .directory
        .app(owner)
        .cloned()
        .ok_or_else(ApiError::invalid_session)?;
    if !app.allow_on_behalf_of {
        return Err(ApiError::Forbidden(
            "This app is not allowed to authenticate on behalf of users".into(),
        ));
    }
    Ok((app, session))
}

/// The active user `target` names who installed `app`.
fn target_user(ctx: &Ctx<'_>, app: &App, target: Target<'_>) -> Result<Arc<User>, ApiError> {
    let dir = &ctx.directory;
    let user = match target {
        Target::UserId(uid) => {
            let uid: i64 = uid
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("User id {uid:?} is not an integer")))?;
            dir.user(UserId(uid))
                .ok_or_else(|| ApiError::NotFound("User id not found".into()))?
        }
        Target::Username(name) => dir
            .user_by_name(name)
            .ok_or_else(|| ApiError::NotFound("Username not found".into()))?,
    };
    if !user.active {
        return Err(ApiError::Forbidden("The user is not active".into()));
    }
    if !user.installed(&app.app_id) {
        return Err(ApiError::Forbidden(
            "The user has not installed this app".into(),
        ));
    }
    Ok(user.clone())
}
