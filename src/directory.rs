//! The directory: which service users, end users and apps exist, and who installed what.
//!
//! Loaded once from TOML (see `examples/directory.toml`) and checked whole: duplicate ids,
//! usernames or app ids, a username equal to an app id, and an installed app that does not exist
//! are load errors. Lookups are by exact, case-sensitive name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The sample directory compiled into the binary.
pub const EMBEDDED_SAMPLE: &str = include_str!("../examples/directory.toml");

/// A Symphony user id (int64 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An app's id: the CN of the app's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// Wraps an app id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
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

/// Symphony's account types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccountType {
    /// An end user.
    Normal,
    /// A service user ("bot"): the only kind that may authenticate by certificate.
    System,
    /// A Symphony Data Loss prevention account.
    Sdl,
}

/// One avatar of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Avatar {
    /// The avatar's size label, for example `"original"`.
    pub size: String,
    /// Where the image is.
    pub url: String,
}

/// A user, with the fields of Symphony's `UserV2`.
///
/// It serializes to exactly the `UserV2` JSON the pod answers with: unknown optional fields are
/// omitted, never `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    /// The user id.
    pub id: UserId,
    /// The username: for a service user, its certificate's CN.
    pub username: String,
    /// Service user, end user or SDL account.
    pub account_type: AccountType,
    /// Inactive users cannot authenticate and their sessions stop working.
    #[serde(default = "yes", skip_serializing)]
    pub active: bool,
    /// Apps this user installed (on-behalf-of targets). Not part of `UserV2`.
    #[serde(default, skip_serializing)]
    pub installed_apps: Vec<AppId>,
    /// `UserV2.emailAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// `UserV2.firstName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// `UserV2.lastName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// `UserV2.displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `UserV2.title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `UserV2.company`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// `UserV2.location`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `UserV2.avatars`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatars: Option<Vec<Avatar>>,
    /// `UserV2.workPhoneNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_phone_number: Option<String>,
    /// `UserV2.mobilePhoneNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile_phone_number: Option<String>,
    /// `UserV2.jobFunction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_function: Option<String>,
    /// `UserV2.department`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// `UserV2.division`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    /// `UserV2.roles`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `UserV2.userMetadata`: each value is itself an object, as the clients require.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
}

fn yes() -> bool {
    true
}

impl User {
    /// Whether this account may authenticate as itself by certificate.
    pub fn is_service_user(&self) -> bool {
        self.account_type == AccountType::System
    }

    /// Whether this user installed `app`.
    pub fn installed(&self, app: &AppId) -> bool {
        self.installed_apps.iter().any(|a| a == app)
    }
}

/// An app (an extension application).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// The app id: its certificate's CN.
    pub app_id: AppId,
    /// A human name.
    #[serde(default)]
    pub name: String,
    /// Inactive apps cannot authenticate.
    #[serde(default = "yes")]
    pub active: bool,
    /// Whether the app may obtain sessions on behalf of the users who installed it.
    #[serde(default)]
    pub allow_on_behalf_of: bool,
}

/// Who a certificate's CN names.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user (any account type; callers check [`User::is_service_user`]).
    User(Arc<User>),
    /// An app.
    App(Arc<App>),
}

/// The loaded, checked directory.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<UserId, Arc<User>>,
    by_username: HashMap<String, UserId>,
    apps: HashMap<AppId, Arc<App>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    user: Vec<User>,
    #[serde(default)]
    app: Vec<App>,
}

impl Directory {
    /// Loads a directory file.
    pub fn from_file(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The sample directory compiled into the binary.
    pub fn embedded_sample() -> Result<Self, DirectoryError> {
        Self::from_toml(EMBEDDED_SAMPLE, "(embedded sample)")
    }

    /// Parses directory text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, DirectoryError> {
        let raw: RawDirectory = toml::from_str(text).map_err(|e| DirectoryError::Parse {
            origin: origin.to_owned(),
            message: crate::config::toml_error_line(text, &e),
        })?;
        let bad = |message: String| DirectoryError::Inconsistent {
            origin: origin.to_owned(),
            message,
        };
        let mut dir = Directory::default();
        for app in raw.app {
            if app.app_id.as_str().is_empty() {
                return Err(bad("an app has an empty appId".into()));
            }
            let id = app.app_id.clone();
            if dir.apps.insert(id.clone(), Arc::new(app)).is_some() {
                return Err(bad(format!("duplicate appId {id:?}")));
            }
        }
        let mut seen_names = HashSet::new();
        for user in raw.user {
            if user.username.is_empty() {
                return Err(bad(format!("user {} has an empty username", user.id)));
            }
            if !seen_names.insert(user.username.clone()) {
                return Err(bad(format!("duplicate username {:?}", user.username)));
            }
            if dir.apps.contains_key(&AppId::new(user.username.clone())) {
                return Err(bad(format!(
                    "username {:?} is also an appId: a certificate CN must name one principal",
                    user.username
                )));
            }
            if let Some(app) = user
                .installed_apps
                .iter()
                .find(|a| !dir.apps.contains_key(*a))
            {
                return Err(bad(format!(
                    "user {:?} installed app {:?}, which is not in the directory",
                    user.username, app.0
                )));
            }
            let id = user.id;
            dir.by_username.insert(user.username.clone(), id);
            if dir.users.insert(id, Arc::new(user)).is_some() {
                return Err(bad(format!("duplicate user id {id}")));
            }
        }
        Ok(dir)
    }

    /// The user with this id.
    pub fn user(&self, id: UserId) -> Option<&Arc<User>> {
        self.users.get(&id)
    }

    /// The user with this username.
    pub fn user_by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.by_username
            .get(username)
            .and_then(|id| self.users.get(id))
    }

    /// The app with this id.
    pub fn app(&self, id: &AppId) -> Option<&Arc<App>> {
        self.apps.get(id)
    }

    /// Whom a certificate CN names, if anyone.
    pub fn principal(&self, cn: &str) -> Option<Principal> {
        if let Some(user) = self.user_by_name(cn) {
            return Some(Principal::User(user.clone()));
        }
        self.apps
            .get(&AppId::new(cn))
            .map(|a| Principal::App(a.clone()))
    }

    /// Every service user and app: the principals that authenticate with a certificate.
    pub fn certificate_principals(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .users
            .values()
            .filter(|u| u.is_service_user())
            .map(|u| u.username.clone())
            .chain(self.apps.keys().map(|a| a.0.clone()))
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded sample loads and holds the documented principals.
    #[test]
    fn embedded_sample_loads() {
        let d = Directory::embedded_sample().unwrap();
        let bot = d.user_by_name("bot.user").unwrap();
        assert!(bot.is_service_user() && bot.active);
        assert!(d
            .user(UserId(2001))
            .unwrap()
            .installed(&AppId::new("demo-app")));
        assert!(d.app(&AppId::new("demo-app")).unwrap().allow_on_behalf_of);
        assert!(d.certificate_principals().contains(&"demo-app".to_string()));
        assert!(!d.certificate_principals().contains(&"alice".to_string()));
    }

    fn load(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_toml(text, "test")
    }

    /// Duplicate ids, usernames and app ids are load errors.
    #[test]
    fn duplicates_are_refused() {
        let e = load("[[user]]\nid=1\nusername=\"a\"\naccountType=\"SYSTEM\"\n[[user]]\nid=1\nusername=\"b\"\naccountType=\"SYSTEM\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("duplicate user id 1"), "{e}");
        let e = load("[[user]]\nid=1\nusername=\"a\"\naccountType=\"SYSTEM\"\n[[user]]\nid=2\nusername=\"a\"\naccountType=\"SYSTEM\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("duplicate username"), "{e}");
        let e = load("[[app]]\nappId=\"x\"\n[[app]]\nappId=\"x\"\n").unwrap_err();
        assert!(e.to_string().contains("duplicate appId"), "{e}");
    }

    /// A username that is also an app id is a load error: one CN, one principal.
    #[test]
    fn username_equal_to_app_id_is_refused() {
        let e =
            load("[[app]]\nappId=\"x\"\n[[user]]\nid=1\nusername=\"x\"\naccountType=\"SYSTEM\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("also an appId"), "{e}");
    }

    /// Installing an app that does not exist is a load error, as is an unknown key.
    #[test]
    fn unknown_app_and_unknown_key_are_refused() {
        let e = load(
            "[[user]]\nid=1\nusername=\"a\"\naccountType=\"NORMAL\"\ninstalledApps=[\"nope\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = load("[[user]]\nid=1\nusername=\"a\"\naccountType=\"NORMAL\"\nshoeSize=9\n")
            .unwrap_err();
        assert!(e.to_string().contains("shoeSize"), "{e}");
    }

    /// A user serializes to UserV2 without nulls and without the directory-only fields.
    #[test]
    fn user_serializes_as_user_v2() {
        let d = Directory::embedded_sample().unwrap();
        let v = serde_json::to_value(d.user(UserId(2002)).unwrap().as_ref()).unwrap();
        assert_eq!(v["id"], 2002);
        assert_eq!(v["accountType"], "NORMAL");
        assert!(v.get("title").is_none());
        assert!(v.get("active").is_none() && v.get("installedApps").is_none());
        let v = serde_json::to_value(d.user(UserId(2001)).unwrap().as_ref()).unwrap();
        assert_eq!(v["userMetadata"]["desk"]["floor"], 3);
        assert_eq!(v["avatars"][0]["size"], "original");
    }
}
