//! The pod API: `GET /pod/v2/sessioninfo`.

use super::json::{self, Reply};
use super::{sessions, ApiError, Ctx};

/// `GET /pod/v2/sessioninfo`: the `UserV2` of the session's user (for an on-behalf-of session,
/// the user it acts for). Key-manager tokens are not session tokens (401); an app's own session
/// has no user (403).
pub(super) async fn session_info(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let raw = sessions::header(ctx)?.ok_or_else(ApiError::invalid_session)?;
    let (_, user) = sessions::user_session(ctx, raw).await?;
    Ok(json::ok(user.as_ref()))
}
