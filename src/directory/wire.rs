//! The `UserV2` wire shape: the JSON a user is answered with (`/pod/v2/sessioninfo`). Optional
//! fields the directory does not know are omitted, never `null`; the fields that only matter
//! here (`active`, `installedApps`, `scopes`, the keys) are never part of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{User, UserId};

/// Symphony's account types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum AccountType {
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
pub(crate) struct Avatar {
    /// The avatar's size label, for example `"original"`.
    pub(crate) size: String,
    /// Where the image is.
    pub(crate) url: String,
}

/// The descriptive `UserV2` fields: the directory passes them through and never reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    /// `UserV2.emailAddress`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) email_address: Option<String>,
    /// `UserV2.firstName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_name: Option<String>,
    /// `UserV2.lastName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_name: Option<String>,
    /// `UserV2.displayName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) display_name: Option<String>,
    /// `UserV2.title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    /// `UserV2.company`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) company: Option<String>,
    /// `UserV2.location`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) location: Option<String>,
    /// `UserV2.avatars`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) avatars: Option<Vec<Avatar>>,
    /// `UserV2.workPhoneNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) work_phone_number: Option<String>,
    /// `UserV2.mobilePhoneNumber`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mobile_phone_number: Option<String>,
    /// `UserV2.jobFunction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) job_function: Option<String>,
    /// `UserV2.department`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) department: Option<String>,
    /// `UserV2.division`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) division: Option<String>,
}

/// A user serializes to exactly its `UserV2`.
impl Serialize for User {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        UserV2 {
            id: self.id,
            username: &self.username,
            account_type: self.account_type,
            profile: &self.profile,
            roles: &self.roles,
            user_metadata: self.user_metadata.as_ref(),
        }
        .serialize(serializer)
    }
}

/// `UserV2`, borrowed from a [`User`]; the members in the order the pod sends them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserV2<'a> {
    id: UserId,
    username: &'a str,
    account_type: AccountType,
    #[serde(flatten)]
    profile: &'a Profile,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    user_metadata: Option<&'a BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
}

#[cfg(test)]
mod tests {
    use super::super::Directory;
    use super::*;

    /// A user serializes to UserV2 without nulls and without the directory-only fields, its
    /// members in the pod's order.
    #[test]
    fn user_serializes_as_user_v2() {
        let d = Directory::embedded_sample().unwrap();
        let v = serde_json::to_value(d.user(UserId(2002)).unwrap().as_ref()).unwrap();
        assert_eq!(v["id"], 2002);
        assert_eq!(v["accountType"], "NORMAL");
        assert!(v.get("title").is_none());
        assert!(v.get("active").is_none() && v.get("installedApps").is_none());
        assert!(v.get("scopes").is_none());
        assert!(v.get("publicKey").is_none() && v.get("publicKeyPath").is_none());
        let text = serde_json::to_string(d.user(UserId(2001)).unwrap().as_ref()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["userMetadata"]["desk"]["floor"], 3);
        assert_eq!(v["avatars"][0]["size"], "original");
        let order = [
            "id",
            "username",
            "accountType",
            "emailAddress",
            "department",
            "roles",
            "userMetadata",
        ];
        let at: Vec<_> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
