//! The session events: one `created` line per minted session and one `ended` line, with its
//! reason, per ended session, on the `sessionauth::session` log target. Never with a token.

use std::net::SocketAddr;

use super::record::{Session, SessionId, SessionKind};
use crate::clock::Millis;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its owner logged it out.
    Logout,
    /// An administrator ended it.
    Admin,
    /// Its time ran out; the purge recorded it.
    Expired,
    /// The app session that minted it ended.
    Cascade,
    /// Its user or app was deactivated.
    Deactivated,
    /// Its user or app was removed from the directory, or its user id now names someone else.
    Removed,
    /// Its user uninstalled the app that holds it on the user's behalf.
    Uninstalled,
    /// The app that holds it on a user's behalf may no longer act on behalf of users.
    OnBehalfOfDisallowed,
    /// The certificate it was minted with was revoked.
    Revoked,
    /// Its owner made a session past `limits.max_sessions_per_user`, and it was the oldest.
    Evicted,
}

impl EndReason {
    /// The reason as it appears in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Admin => "admin",
            Self::Expired => "expired",
            Self::Cascade => "cascade",
            Self::Deactivated => "deactivated",
            Self::Removed => "removed",
            Self::Uninstalled => "uninstalled",
            Self::OnBehalfOfDisallowed => "obo_disallowed",
            Self::Revoked => "revoked",
            Self::Evicted => "evicted",
        }
    }
}

/// Records that the session `id` of `kind`, ending at `expires`, was made.
pub(super) fn created(
    kind: &SessionKind,
    id: SessionId,
    expires: Millis,
    trace_id: &str,
    client: SocketAddr,
) {
    crate::metrics::session_created(kind.label());
    tracing::info!(
        target: "sessionauth::session",
        event = "created",
        kind = kind.label(),
        user = kind.user().map(|u| u.0),
        app = kind.app().map(|a| a.as_str()),
        session_id = id.0,
        expires = expires.as_epoch_millis(),
        trace_id,
        client = %client,
    );
}

/// Records that `session` ended for `reason`; `trace_id` is `-` when no request caused it.
pub(super) fn ended(session: &Session, reason: EndReason, trace_id: &str) {
    crate::metrics::session_ended(session.kind.label(), reason.as_str());
    tracing::info!(
        target: "sessionauth::session",
        event = "ended",
        reason = reason.as_str(),
        kind = session.kind.label(),
        user = session.kind.user().map(|u| u.0),
        app = session.kind.app().map(|a| a.as_str()),
        session_id = session.id.0,
        trace_id,
    );
}
