//! The directory file: the TOML the operator writes (see `examples/directory.toml`), and loading
//! it into a checked [`Directory`].
//!
//! Every table refuses unknown keys. Checked whole: duplicate ids, usernames or app ids, a
//! username equal to an app id, an installed app that does not exist, a malformed scope and an
//! unusable RSA public key are load errors.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::keys::{EntryOrigin, KeySources};
use super::{
    is_scope_token, AccountType, App, AppId, Avatar, Directory, DirectoryError, Profile, User,
    UserId,
};

/// The sample directory compiled into the binary.
const EMBEDDED_SAMPLE: &str = include_str!("../../examples/directory.toml");

impl Directory {
    /// Loads a directory file. Relative key paths are resolved against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, DirectoryError> {
        let text = crate::files::read_text_capped(path, crate::files::MAX_TOML_BYTES).map_err(
            |source| DirectoryError::Read {
                path: path.to_owned(),
                source,
            },
        )?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// The sample directory compiled into the binary.
    pub fn embedded_sample() -> Result<Self, DirectoryError> {
        Self::parse(EMBEDDED_SAMPLE, "(embedded sample)", Path::new("."))
    }

    /// Parses directory text for a test: errors name it `test`, relative key paths start at the
    /// current folder.
    #[cfg(test)]
    pub(super) fn from_toml(text: &str) -> Result<Self, DirectoryError> {
        Self::parse(text, "test", Path::new("."))
    }

    /// Parses directory text; `origin` names it in errors, `base` is the folder relative key
    /// paths are resolved against.
    pub(crate) fn parse(text: &str, origin: &str, base: &Path) -> Result<Self, DirectoryError> {
        let raw: RawDirectory = toml::from_str(text).map_err(|e| DirectoryError::Parse {
            origin: origin.to_owned(),
            message: crate::config::toml_error_line(text, &e),
        })?;
        let bad = |message: String| DirectoryError::Inconsistent {
            origin: origin.to_owned(),
            message,
        };
        let mut dir = Directory::default();
        for entry in raw.app {
            let (app, key_sources) = entry.split();
            if app.app_id.as_str().is_empty() {
                return Err(bad("an app has an empty appId".into()));
            }
            let id = app.app_id.clone();
            let keys = key_sources.load(&EntryOrigin {
                origin,
                entry: format!("app {:?}", id.as_str()),
                base,
            })?;
            if dir.apps.insert(id.clone(), Arc::new(app)).is_some() {
                return Err(bad(format!("duplicate appId {id:?}")));
            }
            if let Some(keys) = keys {
                dir.keys.insert(id.0.to_string(), keys);
            }
        }
        let mut seen_names = HashSet::new();
        for entry in raw.user {
            let (user, key_sources) = entry.split();
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
            let keys = key_sources.load(&EntryOrigin {
                origin,
                entry: format!("user {:?}", user.username),
                base,
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
}

/// The file, exactly as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    app: Vec<AppEntry>,
}

/// A `[[user]]` table: Symphony's `UserV2` fields, plus what only this directory knows.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserEntry {
    id: UserId,
    username: String,
    account_type: AccountType,
    /// Default `true`.
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    installed_apps: Vec<AppId>,
    #[serde(default)]
    scopes: Vec<String>,
    /// RSA public key, PEM (service users only).
    public_key: Option<String>,
    /// File holding the RSA public key, PEM (service users only).
    public_key_path: Option<PathBuf>,
    /// The previous RSA public key during a rotation, PEM.
    previous_public_key: Option<String>,
    /// File holding the previous RSA public key.
    previous_public_key_path: Option<PathBuf>,
    email_address: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    display_name: Option<String>,
    title: Option<String>,
    company: Option<String>,
    location: Option<String>,
    avatars: Option<Vec<Avatar>>,
    work_phone_number: Option<String>,
    mobile_phone_number: Option<String>,
    job_function: Option<String>,
    department: Option<String>,
    division: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    user_metadata: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
}

impl UserEntry {
    fn split(self) -> (User, KeySources) {
        let keys = KeySources {
            current: (self.public_key, self.public_key_path),
            previous: (self.previous_public_key, self.previous_public_key_path),
        };
        let profile = Profile {
            email_address: self.email_address,
            first_name: self.first_name,
            last_name: self.last_name,
            display_name: self.display_name,
            title: self.title,
            company: self.company,
            location: self.location,
            avatars: self.avatars,
            work_phone_number: self.work_phone_number,
            mobile_phone_number: self.mobile_phone_number,
            job_function: self.job_function,
            department: self.department,
            division: self.division,
        };
        let user = User {
            id: self.id,
            username: self.username,
            account_type: self.account_type,
            active: self.active,
            installed_apps: self.installed_apps,
            scopes: self.scopes,
            roles: self.roles,
            user_metadata: self.user_metadata,
            profile,
        };
        (user, keys)
    }
}

/// An `[[app]]` table.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppEntry {
    app_id: AppId,
    /// A human name, for the operator; read and type-checked, not used.
    #[serde(default, rename = "name")]
    _name: String,
    /// Default `true`.
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    allow_on_behalf_of: bool,
    public_key: Option<String>,
    public_key_path: Option<PathBuf>,
    previous_public_key: Option<String>,
    previous_public_key_path: Option<PathBuf>,
}

impl AppEntry {
    fn split(self) -> (App, KeySources) {
        let keys = KeySources {
            current: (self.public_key, self.public_key_path),
            previous: (self.previous_public_key, self.previous_public_key_path),
        };
        let app = App {
            app_id: self.app_id,
            active: self.active,
            allow_on_behalf_of: self.allow_on_behalf_of,
        };
        (app, keys)
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Directory, DirectoryError> {
        Directory::from_toml(text)
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
        let d = load(ok).unwrap();
        let u = d.user(UserId(1)).unwrap();
        assert!(u.may_have_scope("at2") && !u.may_have_scope("write"));
        assert!(serde_json::to_value(&**u).unwrap().get("scopes").is_none());
        for bad in ["", "a b", "q\\\"uote"] {
            let text = ok.replace("\"at2\"", &format!("{bad:?}"));
            let e = load(&text).unwrap_err().to_string();
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

    /// Installing an app that does not exist is a load error, as is an unknown key; a parse
    /// error names the line it is on.
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
        let e =
            load("[[user]]\nid=1\nusername=\"a\"\naccountType=\"NORMAL\"\ntitle=9\n").unwrap_err();
        assert!(e.to_string().contains("line 5 (title=9)"), "{e}");
    }
}
