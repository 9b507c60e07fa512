//! The directory: which service users, end users and apps exist, who installed what, and which
//! RSA keys they registered.
//!
//! It is read once from the TOML file the operator writes and checked whole (the file shape and
//! its rules: `file`); a user is answered with Symphony's `UserV2` JSON (the wire shape: `wire`);
//! the RSA public keys a service user or app authenticates with, and the key-folder rule, are
//! `keys`. Lookups are by exact, case-sensitive name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod file;
mod keys;
mod wire;

pub use keys::KeyLoadError;
pub(crate) use keys::RegisteredKeys;
pub(crate) use wire::{AccountType, Avatar, Profile};

/// A Symphony user id (int64 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An app's id: the CN of the app's certificate. Shared text: a clone (each app session and
/// on-behalf-of session holds one, and the store's index by app) costs no copy, and the id
/// takes 16 bytes in a session where a `String` takes 24.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(std::sync::Arc<str>);

impl AppId {
    /// Wraps an app id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The loaded, checked directory.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<UserId, Arc<User>>,
    by_username: HashMap<String, UserId>,
    apps: HashMap<AppId, Arc<App>>,
    /// Registered RSA keys by username or app id (the two never collide).
    keys: HashMap<String, RegisteredKeys>,
}

impl Directory {
    /// Every service user and app: the principals that authenticate with a certificate.
    pub fn certificate_principals(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .users
            .values()
            .filter(|u| u.is_service_user())
            .map(|u| u.username.clone())
            .chain(self.apps.keys().map(|a| a.0.to_string()))
            .collect();
        names.sort();
        names
    }

    /// The user with this id.
    pub(crate) fn user(&self, id: UserId) -> Option<&Arc<User>> {
        self.users.get(&id)
    }

    /// The user with this username.
    pub(crate) fn user_by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.by_username
            .get(username)
            .and_then(|id| self.users.get(id))
    }

    /// The app with this id.
    pub(crate) fn app(&self, id: &AppId) -> Option<&Arc<App>> {
        self.apps.get(id)
    }

    /// Every user, in no particular order.
    pub(crate) fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }

    /// Every app, in no particular order.
    pub(crate) fn apps(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.values()
    }

    /// Whom a certificate CN names, if anyone.
    pub(crate) fn principal(&self, cn: &str) -> Option<Principal> {
        if let Some(user) = self.user_by_name(cn) {
            return Some(Principal::User(user.clone()));
        }
        self.apps
            .get(&AppId::new(cn))
            .map(|a| Principal::App(a.clone()))
    }

    /// The RSA public keys registered for a service user (by username) or an app (by app id).
    pub(crate) fn public_keys(&self, name: &str) -> Option<&RegisteredKeys> {
        self.keys.get(name)
    }

    /// How errors name the entry of a principal: `user "bot.user"` or `app "demo-app"`.
    fn entry_name(&self, name: &str) -> String {
        if self.apps.contains_key(&AppId::new(name)) {
            format!("app {name:?}")
        } else {
            format!("user {name:?}")
        }
    }
}

/// Why a directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("cannot read directory file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid directory {origin}: {message}")]
    Parse {
        /// The file, or "(embedded sample)".
        origin: String,
        /// What the parser said, one line.
        message: String,
    },
    /// The entries contradict each other.
    #[error("invalid directory {origin}: {message}")]
    Inconsistent {
        /// The file, or "(embedded sample)".
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A registered RSA public key cannot be read or used.
    #[error("invalid directory {origin}: {entry} {field}")]
    Key {
        /// The file, "(embedded sample)", or the key folder.
        origin: String,
        /// The entry, for example `user "bot.user"`.
        entry: String,
        /// The field and, for a path, the file.
        field: String,
        /// What is wrong with the key.
        #[source]
        source: KeyLoadError,
    },
}

/// A user: who it is, what it may do here, and the `UserV2` fields it is answered with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct User {
    /// The user id.
    pub(crate) id: UserId,
    /// The username: for a service user, its certificate's CN.
    pub(crate) username: String,
    /// Service user, end user or SDL account.
    pub(crate) account_type: AccountType,
    /// Inactive users cannot authenticate and their sessions stop working.
    pub(crate) active: bool,
    /// Apps this user installed (on-behalf-of targets).
    pub(crate) installed_apps: Vec<AppId>,
    /// The scopes this user's access tokens (`/login/idm/tokens`) may carry.
    pub(crate) scopes: Vec<String>,
    /// `UserV2.roles`; the administrator roles also grant session administration.
    pub(crate) roles: Vec<String>,
    /// `UserV2.userMetadata`: each value is itself an object, as the clients require.
    pub(crate) user_metadata: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
    /// The descriptive `UserV2` fields, passed through as the directory has them.
    pub(crate) profile: Profile,
}

impl User {
    /// Whether this account may authenticate as itself by certificate.
    pub(crate) fn is_service_user(&self) -> bool {
        self.account_type == AccountType::System
    }

    /// Whether this user installed `app`.
    pub(crate) fn installed(&self, app: &AppId) -> bool {
        self.installed_apps.iter().any(|a| a == app)
    }

    /// Whether this user's access tokens may carry `scope`.
    pub(crate) fn may_have_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// An app (an extension application).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct App {
    /// The app id: its certificate's CN.
    pub(crate) app_id: AppId,
    /// Inactive apps cannot authenticate.
    pub(crate) active: bool,
    /// Whether the app may obtain sessions on behalf of the users who installed it.
    pub(crate) allow_on_behalf_of: bool,
}

/// Who a certificate's CN names.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// A user (any account type; callers check [`User::is_service_user`]).
    User(Arc<User>),
    /// An app.
    App(Arc<App>),
}

/// Whether `scope` is one OAuth scope token (RFC 6749 §3.3): printable ASCII without spaces,
/// quotes or backslashes.
pub(crate) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.chars().all(|c| {
            c == '\u{21}'
                || ('\u{23}'..='\u{5b}').contains(&c)
                || ('\u{5d}'..='\u{7e}').contains(&c)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded sample holds the documented principals, and lookups find them by exact name.
    #[test]
    fn embedded_sample_lookups() {
        let d = Directory::embedded_sample().unwrap();
        let bot = d.user_by_name("bot.user").unwrap();
        assert!(bot.is_service_user() && bot.active);
        assert!(d.user_by_name("Bot.User").is_none());
        assert!(d
            .user(UserId(2001))
            .unwrap()
            .installed(&AppId::new("demo-app")));
        assert!(d.app(&AppId::new("demo-app")).unwrap().allow_on_behalf_of);
        assert!(matches!(d.principal("demo-app"), Some(Principal::App(_))));
        assert!(matches!(d.principal("alice"), Some(Principal::User(_))));
        assert!(d.principal("nobody").is_none());
        assert!(d.certificate_principals().contains(&"demo-app".to_string()));
        assert!(!d.certificate_principals().contains(&"alice".to_string()));
    }

    /// Scope tokens are printable ASCII without spaces, quotes or backslashes.
    #[test]
    fn scope_tokens() {
        for ok in ["read", "at2", "a:b/c", "!"] {
            assert!(is_scope_token(ok), "{ok:?}");
        }
        for bad in ["", "a b", "q\"uote", "back\\slash", "é"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
