//! The key layout: the keyspaces, how keys and values are encoded, and the layout version.

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::{backend, corrupt, storage, MEMTABLE_BYTES};
use crate::directory::UserId;
use crate::session::{Session, SessionId, SessionKind};
use crate::store::StoreError;
use crate::token::TokenHash;

/// The key layout this build reads and writes.
pub const LAYOUT_VERSION: u32 = 3;

/// The keyspaces (see the layout table in the module documentation).
pub(super) struct Spaces {
    pub(super) sessions: Keyspace,
    pub(super) by_user: Keyspace,
    pub(super) by_app: Keyspace,
    pub(super) by_id: Keyspace,
    pub(super) by_expiry: Keyspace,
    pub(super) by_parent: Keyspace,
    pub(super) by_credential: Keyspace,
    pub(super) by_owner: Keyspace,
    pub(super) owner_count: Keyspace,
    /// The layout version and the server's notes.
    pub(super) meta: Keyspace,
}

/// A keyspace, named.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Space {
    Sessions,
    ByUser,
    ByApp,
    ById,
    ByExpiry,
    ByParent,
    ByCredential,
    ByOwner,
    OwnerCount,
    Meta,
}

/// Which index an entry belongs to.
#[derive(Clone, Copy)]
pub(super) enum Index {
    User,
    App,
    Expiry,
    Parent,
    Credential,
    Owner,
}

/// How the database was found on open.
pub(super) enum Opened {
    /// In this build's layout, with its keyspaces.
    Current(Spaces),
    /// Written in another layout: the version it records.
    Other(u32),
}

impl Spaces {
    /// Opens (or creates) the keyspaces, once the layout version recorded in `meta` is this
    /// build's (a new database records it, durably).
    pub(super) fn open(db: &Database) -> Result<Opened, fjall::Error> {
        let space = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
        };
        let meta = space("meta")?;
        let found = layout_version(db, &meta)?;
        if found != LAYOUT_VERSION {
            return Ok(Opened::Other(found));
        }
        Ok(Opened::Current(Self {
            sessions: space("sessions")?,
            by_user: space("by_user")?,
            by_app: space("by_app")?,
            by_id: space("by_id")?,
            by_expiry: space("by_expiry")?,
            by_parent: space("by_parent")?,
            by_credential: space("by_credential")?,
            by_owner: space("by_owner")?,
            owner_count: space("owner_count")?,
            meta,
        }))
    }

    /// The keyspace `space` names.
    pub(super) fn get(&self, space: Space) -> &Keyspace {
        match space {
            Space::Sessions => &self.sessions,
            Space::ByUser => &self.by_user,
            Space::ByApp => &self.by_app,
            Space::ById => &self.by_id,
            Space::ByExpiry => &self.by_expiry,
            Space::ByParent => &self.by_parent,
            Space::ByCredential => &self.by_credential,
            Space::ByOwner => &self.by_owner,
            Space::OwnerCount => &self.owner_count,
            Space::Meta => &self.meta,
        }
    }
}

impl Index {
    /// The keyspace that holds this index.
    pub(super) fn space(self) -> Space {
        match self {
            Self::User => Space::ByUser,
            Self::App => Space::ByApp,
            Self::Expiry => Space::ByExpiry,
            Self::Parent => Space::ByParent,
            Self::Credential => Space::ByCredential,
            Self::Owner => Space::ByOwner,
        }
    }
}

/// The `meta` key of the server's note `name`.
/// The `meta` key the readiness probe rewrites.
pub(super) const PROBE_KEY: &[u8] = b"probe";

pub(super) fn note_key(name: &str) -> Vec<u8> {
    [b"note:".as_slice(), name.as_bytes()].concat()
}

/// The database's layout version, recorded (durably) when the database is new.
fn layout_version(db: &Database, meta: &Keyspace) -> Result<u32, fjall::Error> {
    const KEY: &str = "layout";
    if let Some(v) = meta.get(KEY)? {
        return Ok(<[u8; 4]>::try_from(&*v).map_or(0, u32::from_be_bytes));
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(meta, KEY, LAYOUT_VERSION.to_be_bytes());
    batch.commit()?;
    Ok(LAYOUT_VERSION)
}

/// The index entries of session `s` under `key` (the by-id entry aside, which has a value).
pub(super) fn index_entries(
    key: &TokenHash,
    s: &Session,
) -> Result<Vec<(Index, Vec<u8>)>, StoreError> {
    let mut out = Vec::with_capacity(4);
    if let Some(user) = s.kind.user() {
        out.push((Index::User, key_with_hash(&user_prefix(user), key)));
    }
    if let Some(app) = s.kind.app() {
        out.push((Index::App, key_with_hash(&app_prefix(app.as_str())?, key)));
    }
    if let Some(parent) = s.kind.parent() {
        out.push((Index::Parent, key_with_hash(&id_key(parent), key)));
    }
    for credential in s.credential_ids() {
        out.push((Index::Credential, key_with_hash(credential.as_bytes(), key)));
    }
    out.push((Index::Expiry, expiry_key(s.expires.as_epoch_millis(), key)));
    let mut owned = owner_prefix(&s.kind)?;
    owned.extend_from_slice(&s.created.as_epoch_millis().to_be_bytes());
    out.push((Index::Owner, key_with_hash(&owned, key)));
    Ok(out)
}

/// The prefix of an owner's entries in `by_owner`, and its key in `owner_count`: the kind's
/// letter, then the user id and the (length-prefixed) app id the kind names.
pub(super) fn owner_prefix(kind: &SessionKind) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(16);
    match kind {
        SessionKind::User { user } => {
            out.push(b'u');
            out.extend_from_slice(&user_prefix(*user));
        }
        SessionKind::KeyManager { user } => {
            out.push(b'k');
            out.extend_from_slice(&user_prefix(*user));
        }
        SessionKind::App { app } => {
            out.push(b'a');
            out.extend_from_slice(&app_prefix(app.as_str())?);
        }
        SessionKind::OnBehalfOf { app, user, .. } => {
            out.push(b'o');
            out.extend_from_slice(&user_prefix(*user));
            out.extend_from_slice(&app_prefix(app.as_str())?);
        }
    }
    Ok(out)
}

/// The prefix of a user's entries in `by_user`.
pub(super) fn user_prefix(user: UserId) -> [u8; 8] {
    user.0.to_be_bytes()
}

/// The prefix of an app's entries in `by_app`. Length-prefixed, so that no app id's prefix is
/// another's.
pub(super) fn app_prefix(app: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(app.len()).map_err(|_| {
        backend(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an app id longer than 65535 bytes cannot be indexed",
        ))
    })?;
    let mut out = Vec::with_capacity(2 + app.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(app.as_bytes());
    Ok(out)
}

/// A session id's key in `by_id`.
pub(super) fn id_key(id: SessionId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// A session's key in `by_expiry`.
pub(super) fn expiry_key(expires_ms: u64, key: &TokenHash) -> Vec<u8> {
    key_with_hash(&expires_ms.to_be_bytes(), key)
}

/// The largest `by_expiry` key of the sessions that expire at `expires_ms`: a range that ends
/// here holds every session that expires by then.
pub(super) fn last_expiry_key(expires_ms: u64) -> Vec<u8> {
    expiry_key(
        expires_ms,
        &TokenHash::from_bytes([u8::MAX; TokenHash::LEN]),
    )
}

fn key_with_hash(prefix: &[u8], key: &TokenHash) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + TokenHash::LEN);
    out.extend_from_slice(prefix);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The token hash at the end of an index key.
pub(super) fn trailing_hash(index_key: &[u8]) -> Result<TokenHash, StoreError> {
    index_key
        .len()
        .checked_sub(TokenHash::LEN)
        .and_then(|start| index_key.get(start..))
        .and_then(TokenHash::from_slice)
        .ok_or_else(|| corrupt("an index key shorter than a token hash"))
}

/// The token hashes of the index entries under `prefix`.
pub(super) fn hashes_under(
    reader: &impl Readable,
    index: &Keyspace,
    prefix: &[u8],
) -> Result<Vec<TokenHash>, StoreError> {
    reader
        .prefix(index, prefix)
        .map(|entry| trailing_hash(&entry.key().map_err(storage)?))
        .collect()
}

/// A session's value in `sessions`.
pub(super) fn encode(s: &Session) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(s).map_err(backend)
}

/// Reads a value of `sessions` back.
pub(super) fn decode(bytes: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(bytes).map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index keys end in the token hash, an expiry range up to `t` takes every session that
    /// expires at `t` and none later, and app prefixes cannot run into each other.
    #[test]
    fn index_keys() {
        let key = TokenHash::from_bytes([7u8; 32]);
        assert_eq!(trailing_hash(&expiry_key(5, &key)).unwrap(), key);
        assert!(trailing_hash(&[1, 2, 3]).is_err());
        assert!(expiry_key(5, &key) <= last_expiry_key(5));
        assert!(last_expiry_key(5) < expiry_key(6, &TokenHash::from_bytes([0; 32])));
        let a = app_prefix("ab").unwrap();
        let b = app_prefix("abc").unwrap();
        assert!(!b.starts_with(&a));
    }
}
