//! The session record: what a token stands for, whose it is, when it ends, and which token
//! family it belongs to.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::directory::{AppId, UserId};

/// What a session is, and whose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionKind {
    /// A service user's own session token (`/sessionauth/v1/authenticate`).
    User {
        /// The service user.
        user: UserId,
    },
    /// A service user's key-manager token (`/keyauth/v1/authenticate`).
    KeyManager {
        /// The service user.
        user: UserId,
    },
    /// An app's own session (`/sessionauth/v1/app/authenticate`).
    App {
        /// The app.
        app: AppId,
    },
    /// A session an app obtained on behalf of a user who installed it.
    OnBehalfOf {
        /// The app that minted it.
        app: AppId,
        /// The user it acts as.
        user: UserId,
    },
}

impl SessionKind {
    /// The user whose identity the session carries (none for an app's own session).
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::User { user } | Self::KeyManager { user } | Self::OnBehalfOf { user, .. } => {
                Some(*user)
            }
            Self::App { .. } => None,
        }
    }

    /// The app involved, for app and on-behalf-of sessions.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Self::App { app } | Self::OnBehalfOf { app, .. } => Some(app),
            Self::User { .. } | Self::KeyManager { .. } => None,
        }
    }

    /// A short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::User { .. } => "session",
            Self::KeyManager { .. } => "key_manager",
            Self::App { .. } => "app",
            Self::OnBehalfOf { .. } => "obo",
        }
    }
}

/// A public handle for a session, distinct from its token and useless for authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub i64);

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The public handle.
    pub id: SessionId,
    /// What the session is and whose.
    pub kind: SessionKind,
    /// When it was made.
    pub created: Millis,
    /// When it stops working.
    pub expires: Millis,
    /// The client's IP address when the session was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
    /// The client's `User-Agent` when the session was made (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<std::sync::Arc<str>>,
}

impl Session {
    /// Whether the session has ended by time at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires
    }
}

impl SessionId {
    /// A fresh random id: positive, 63 bits, unrelated to the token.
    pub fn generate() -> Result<Self, crate::token::RandomError> {
        use ring::rand::SecureRandom as _;
        let mut b = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| crate::token::RandomError)?;
        Ok(Self::from_random(b))
    }

    /// An id from 8 random bytes: the sign bit is cleared, and zero is avoided so that 0 never
    /// names a session.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self((i64::from_be_bytes(bytes) & i64::MAX).max(1))
    }
}

/// Session tokens and key-manager tokens are separate families: each is accepted only where it
/// belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFamily {
    /// Session tokens: a user's own, an app's, and on-behalf-of sessions.
    Session,
    /// Key-manager tokens (`/keyauth`, `/relay`).
    KeyManager,
}

impl TokenFamily {
    /// The `name` field of the token response.
    pub fn response_name(self) -> &'static str {
        match self {
            Self::Session => "sessionToken",
            Self::KeyManager => "keyManagerToken",
        }
    }

    /// Whether a session of `kind` belongs to this family.
    pub fn includes(self, kind: &SessionKind) -> bool {
        match self {
            Self::KeyManager => matches!(kind, SessionKind::KeyManager { .. }),
            Self::Session => !matches!(kind, SessionKind::KeyManager { .. }),
        }
    }

    /// The kind of a service user's own token in this family.
    pub fn user_kind(self, user: UserId) -> SessionKind {
        match self {
            Self::Session => SessionKind::User { user },
            Self::KeyManager => SessionKind::KeyManager { user },
        }
    }
}
