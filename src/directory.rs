//! The directory: which service users, end users and apps exist, and who installed what.
//!
//! Loaded once from TOML (see `examples/directory.toml`) and checked whole: duplicate ids,
//! usernames or app ids, a username equal to an app id, and an installed app that does not exist
//! are load errors. Lookups are by exact, case-sensitive name.
//!
//! Service users and apps may register RSA public keys for JWT authentication: `publicKey`
//! (PEM inline) or `publicKeyPath` (a file, relative to the directory file's folder), and
//! `previousPublicKey` / `previousPublicKeyPath` during a key rotation. A key that does not
//! parse, or is shorter than 2048 bits, is a load error naming the entry. Entries without a
//! configured key can also take one from a key folder: see [`Directory::use_key_folder`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rsakey::{PublicKeyError, RsaPublicKey};

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
    /// The scopes this user's access tokens (`/login/idm/tokens`) may carry. Not part of
    /// `UserV2`.
    #[serde(default, skip_serializing)]
    pub scopes: Vec<String>,
    /// RSA public key, PEM (service users only). Not part of `UserV2`.
    #[serde(default, skip_serializing)]
    pub public_key: Option<String>,
    /// File holding the RSA public key, PEM (service users only). Not part of `UserV2`.
    #[serde(default, skip_serializing)]
    pub public_key_path: Option<PathBuf>,
    /// The previous RSA public key during a rotation, PEM. Not part of `UserV2`.
    #[serde(default, skip_serializing)]
    pub previous_public_key: Option<String>,
    /// File holding the previous RSA public key. Not part of `UserV2`.
    #[serde(default, skip_serializing)]
    pub previous_public_key_path: Option<PathBuf>,
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

    /// Whether this user's access tokens may carry `scope`.
    pub fn may_have_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Whether `scope` is one OAuth scope token (RFC 6749 §3.3): printable ASCII without spaces,
/// quotes or backslashes.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.chars().all(|c| {
            c == '\u{21}'
                || ('\u{23}'..='\u{5b}').contains(&c)
                || ('\u{5d}'..='\u{7e}').contains(&c)
        })
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
    /// RSA public key, PEM.
    #[serde(default)]
    pub public_key: Option<String>,
    /// File holding the RSA public key, PEM.
    #[serde(default)]
    pub public_key_path: Option<PathBuf>,
    /// The previous RSA public key during a rotation, PEM.
    #[serde(default)]
    pub previous_public_key: Option<String>,
    /// File holding the previous RSA public key.
    #[serde(default)]
    pub previous_public_key_path: Option<PathBuf>,
}

/// The RSA public keys a service user or app authenticates with: the current one and, during a
/// rotation, the previous one. A JWT verifying with either is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredKeys {
    /// The current key.
    pub current: RsaPublicKey,
    /// The key being rotated out, still accepted.
    pub previous: Option<RsaPublicKey>,
}

impl RegisteredKeys {
    /// The current key, then the previous one.
    pub fn iter(&self) -> impl Iterator<Item = &RsaPublicKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
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
    /// Registered RSA keys by username or app id (the two never collide).
    keys: HashMap<String, RegisteredKeys>,
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
        /// The file, or "(embedded sample)".
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

/// Why a registered key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// The key file could not be read.
    #[error("cannot read the file")]
    Read(#[source] std::io::Error),
    /// The key is not usable.
    #[error(transparent)]
    Key(#[from] PublicKeyError),
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
    /// Loads a directory file. Relative key paths are resolved against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// The sample directory compiled into the binary.
    pub fn embedded_sample() -> Result<Self, DirectoryError> {
        Self::from_toml(EMBEDDED_SAMPLE, "(embedded sample)")
    }

    /// Parses directory text; `origin` names it in errors. Relative key paths are resolved
    /// against the current folder.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, DirectoryError> {
        Self::parse(text, origin, Path::new("."))
    }

    fn parse(text: &str, origin: &str, base: &Path) -> Result<Self, DirectoryError> {
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
            let keys = load_keys(KeyFields {
                origin,
                entry: &format!("app {:?}", id.as_str()),
                base,
                current: (app.public_key.as_deref(), app.public_key_path.as_deref()),
                previous: (
                    app.previous_public_key.as_deref(),
                    app.previous_public_key_path.as_deref(),
                ),
            })?;
            if dir.apps.insert(id.clone(), Arc::new(app)).is_some() {
                return Err(bad(format!("duplicate appId {id:?}")));
            }
            if let Some(keys) = keys {
                dir.keys.insert(id.0.clone(), keys);
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
            if let Some(scope) = user.scopes.iter().find(|s| !is_scope_token(s)) {
                return Err(bad(format!(
                    "user {:?} has scope {scope:?}: a scope is printable ASCII without spaces, \
                     quotes or backslashes",
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
            let keys = load_keys(KeyFields {
                origin,
                entry: &format!("user {:?}", user.username),
                base,
                current: (user.public_key.as_deref(), user.public_key_path.as_deref()),
                previous: (
                    user.previous_public_key.as_deref(),
                    user.previous_public_key_path.as_deref(),
                ),
            })?;
            if keys.is_some() && !user.is_service_user() {
                return Err(bad(format!(
                    "user {:?} has an RSA public key, but only service users (accountType \"SYSTEM\") authenticate with one",
                    user.username
                )));
            }
            if let Some(keys) = keys {
                dir.keys.insert(user.username.clone(), keys);
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

    /// The RSA public keys registered for a service user (by username) or an app (by app id).
    pub fn public_keys(&self, name: &str) -> Option<&RegisteredKeys> {
        self.keys.get(name)
    }

    /// The key-folder rule: every service user and app with no configured key takes
    /// `<folder>/<name>-rsa.pub.pem` as its key when that file exists (the dev PKI writes these
    /// files). A file that exists but holds no usable key is a load error naming the entry.
    /// Returns the files taken.
    pub fn use_key_folder(&mut self, folder: &Path) -> Result<Vec<PathBuf>, DirectoryError> {
        let mut taken = Vec::new();
        for name in self.certificate_principals() {
            if self.keys.contains_key(&name) {
                continue;
            }
            let path = crate::pki::KeyPairFiles::new(folder, &name).public;
            if !path.exists() {
                continue;
            }
            let entry = if self.apps.contains_key(&AppId::new(name.clone())) {
                format!("app {name:?}")
            } else {
                format!("user {name:?}")
            };
            let current = read_key(&path).map_err(|source| DirectoryError::Key {
                origin: format!("key folder {}", folder.display()),
                entry,
                field: format!("key file {}", path.display()),
                source,
            })?;
            self.keys.insert(
                name,
                RegisteredKeys {
                    current,
                    previous: None,
                },
            );
            taken.push(path);
        }
        Ok(taken)
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

/// Where one entry's key fields are, for [`load_keys`].
struct KeyFields<'a> {
    origin: &'a str,
    entry: &'a str,
    base: &'a Path,
    /// `publicKey`, `publicKeyPath`.
    current: (Option<&'a str>, Option<&'a Path>),
    /// `previousPublicKey`, `previousPublicKeyPath`.
    previous: (Option<&'a str>, Option<&'a Path>),
}

fn load_keys(f: KeyFields<'_>) -> Result<Option<RegisteredKeys>, DirectoryError> {
    let bad = |message: String| DirectoryError::Inconsistent {
        origin: f.origin.to_owned(),
        message: format!("{} {message}", f.entry),
    };
    let one = |(inline, path): (Option<&str>, Option<&Path>),
               names: (&str, &str)|
     -> Result<Option<RsaPublicKey>, DirectoryError> {
        let key_error = |field: String, source: KeyLoadError| DirectoryError::Key {
            origin: f.origin.to_owned(),
            entry: f.entry.to_owned(),
            field,
            source,
        };
        match (inline, path) {
            (Some(_), Some(_)) => Err(bad(format!(
                "sets both {} and {}: use one",
                names.0, names.1
            ))),
            (Some(pem), None) => RsaPublicKey::from_pem(pem)
                .map(Some)
                .map_err(|e| key_error(names.0.to_owned(), e.into())),
            (None, Some(path)) => {
                let path = if path.is_absolute() {
                    path.to_owned()
                } else {
                    f.base.join(path)
                };
                read_key(&path)
                    .map(Some)
                    .map_err(|e| key_error(format!("{} {}", names.1, path.display()), e))
            }
            (None, None) => Ok(None),
        }
    };
    let current = one(f.current, ("publicKey", "publicKeyPath"))?;
    let previous = one(f.previous, ("previousPublicKey", "previousPublicKeyPath"))?;
    match (current, previous) {
        (Some(current), previous) => Ok(Some(RegisteredKeys { current, previous })),
        (None, Some(_)) => Err(bad(
            "has a previous public key but no current one (publicKey or publicKeyPath)".into(),
        )),
        (None, None) => Ok(None),
    }
}

fn read_key(path: &Path) -> Result<RsaPublicKey, KeyLoadError> {
    let pem = std::fs::read_to_string(path).map_err(KeyLoadError::Read)?;
    Ok(RsaPublicKey::from_pem(&pem)?)
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

    /// Scopes are kept (out of `UserV2`) and a malformed one is a load error.
    #[test]
    fn scopes_are_checked() {
        let ok =
            "[[user]]\nid=1\nusername=\"a\"\naccountType=\"SYSTEM\"\nscopes=[\"read\",\"at2\"]\n";
        let d = Directory::parse(ok, "test", Path::new(".")).unwrap();
        let u = d.user(UserId(1)).unwrap();
        assert!(u.may_have_scope("at2") && !u.may_have_scope("write"));
        assert!(serde_json::to_value(&**u).unwrap().get("scopes").is_none());
        for bad in ["", "a b", "q\\\"uote"] {
            let text = ok.replace("\"at2\"", &format!("{bad:?}"));
            let e = Directory::parse(&text, "test", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains("scope"), "{bad:?}: {e}");
        }
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

    fn pem(bits: usize) -> String {
        use rsa::pkcs8::EncodePublicKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
        key.to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    }

    fn bot(extra: &str) -> String {
        format!("[[user]]\nid=1\nusername=\"bot\"\naccountType=\"SYSTEM\"\n{extra}\n")
    }

    /// Keys load inline and by path (relative to the directory file), current and previous.
    #[test]
    fn keys_load_inline_and_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pem(2048), pem(2048));
        std::fs::write(dir.path().join("app.pub.pem"), &b).unwrap();
        let text = format!(
            "{}[[app]]\nappId=\"app\"\npublicKeyPath=\"app.pub.pem\"\npreviousPublicKey='''{a}'''\n",
            bot(&format!("publicKey='''{a}'''"))
        );
        let file = dir.path().join("directory.toml");
        std::fs::write(&file, text).unwrap();
        let d = Directory::from_file(&file).unwrap();
        assert_eq!(d.public_keys("bot").unwrap().iter().count(), 1);
        let app = d.public_keys("app").unwrap();
        assert_eq!(app.current, RsaPublicKey::from_pem(&b).unwrap());
        assert_eq!(app.previous, Some(RsaPublicKey::from_pem(&a).unwrap()));
        assert_eq!(app.iter().count(), 2);
        assert!(d.public_keys("nobody").is_none());
    }

    /// A short key, garbage, a missing file, both forms at once, a previous key alone and a key
    /// on an end user are load errors naming the entry; the reason is the error's source.
    #[test]
    fn bad_keys_are_load_errors_naming_the_entry() {
        let short = pem(1024);
        let good = pem(2048);
        let cases = [
            (bot(&format!("publicKey='''{short}'''")), "at least 2048"),
            (bot("publicKey=\"garbage\""), "not a PEM public key"),
            (bot("publicKeyPath=\"/nonexistent/k.pem\""), "cannot read"),
            (
                bot(&format!("publicKey='''{good}'''\npublicKeyPath=\"x\"")),
                "both publicKey and publicKeyPath",
            ),
            (
                bot(&format!("previousPublicKey='''{good}'''")),
                "no current one",
            ),
            (
                format!(
                    "[[user]]\nid=2\nusername=\"bot\"\naccountType=\"NORMAL\"\npublicKey='''{good}'''\n"
                ),
                "only service users",
            ),
        ];
        for (text, expected) in cases {
            let e = load(&text).unwrap_err();
            let source = std::error::Error::source(&e).map(ToString::to_string);
            let chain = format!("{e}: {}", source.unwrap_or_default());
            assert!(chain.contains("\"bot\""), "{chain}");
            assert!(chain.contains(expected), "{expected}: {chain}");
            if let Some(source) = std::error::Error::source(&e) {
                assert!(!e.to_string().contains(&source.to_string()), "{e}");
            }
        }
    }

    /// The key-folder rule gives `<name>-rsa.pub.pem` to service users and apps without a
    /// configured key, leaves end users alone, and refuses a bad file naming the entry.
    #[test]
    fn key_folder_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Directory::embedded_sample().unwrap();
        for name in ["bot.user", "demo-app", "alice"] {
            std::fs::write(dir.path().join(format!("{name}-rsa.pub.pem")), pem(2048)).unwrap();
        }
        let taken = d.use_key_folder(dir.path()).unwrap();
        assert_eq!(taken.len(), 2);
        assert!(d.public_keys("bot.user").is_some() && d.public_keys("demo-app").is_some());
        assert!(d.public_keys("alice").is_none() && d.public_keys("admin.bot").is_none());
        std::fs::write(dir.path().join("admin.bot-rsa.pub.pem"), "junk").unwrap();
        let e = d.use_key_folder(dir.path()).unwrap_err();
        assert!(e.to_string().contains("admin.bot"), "{e}");
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
        assert!(v.get("publicKey").is_none() && v.get("publicKeyPath").is_none());
        let v = serde_json::to_value(d.user(UserId(2001)).unwrap().as_ref()).unwrap();
        assert_eq!(v["userMetadata"]["desk"]["floor"], 3);
        assert_eq!(v["avatars"][0]["size"], "original");
    }
}
