//! The in-memory backend: maps behind one `parking_lot` mutex. Fast, and gone at exit.
//!
//! Besides the sessions keyed by token hash it keeps four indexes (by user, by app, by public
//! id, by expiry) so that administrative operations and the purge do not scan every session.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Census, Purged, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::{AppId, UserId};
use crate::session::{Session, SessionId};
use crate::token::{BuildTokenHasher, TokenHash};

/// Sessions in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<TokenHash, Session, BuildTokenHasher>,
    by_user: HashMap<UserId, HashSet<TokenHash, BuildTokenHasher>>,
    by_app: HashMap<AppId, HashSet<TokenHash, BuildTokenHasher>>,
    // Session ids are server-made random numbers: uniform, so the pass-through hasher fits.
    by_id: HashMap<SessionId, TokenHash, BuildTokenHasher>,
    by_expiry: BTreeSet<(Millis, [u8; 32])>,
}

impl Inner {
    fn insert(&mut self, key: TokenHash, session: Session) -> Result<(), StoreError> {
        if self.sessions.contains_key(&key) || self.by_id.contains_key(&session.id) {
            return Err(StoreError::Duplicate);
        }
        if let Some(user) = session.kind.user() {
            self.by_user.entry(user).or_default().insert(key);
        }
        if let Some(app) = session.kind.app() {
            self.by_app.entry(app.clone()).or_default().insert(key);
        }
        self.by_id.insert(session.id, key);
        self.by_expiry.insert((session.expires, *key.as_bytes()));
        self.sessions.insert(key, session);
        Ok(())
    }

    fn remove(&mut self, key: &TokenHash) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if let Some(user) = session.kind.user() {
            if let Some(set) = self.by_user.get_mut(&user) {
                set.remove(key);
                if set.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
        if let Some(app) = session.kind.app() {
            if let Some(set) = self.by_app.get_mut(app) {
                set.remove(key);
                if set.is_empty() {
                    self.by_app.remove(app);
                }
            }
        }
        self.by_id.remove(&session.id);
        self.by_expiry.remove(&(session.expires, *key.as_bytes()));
        Some(session)
    }

    /// Removes the live session under `key`; an expired one is left for the purge.
    fn remove_live(&mut self, key: &TokenHash, now: Millis) -> Option<Session> {
        if self.sessions.get(key)?.is_expired(now) {
            return None;
        }
        self.remove(key)
    }

    /// Removes the live sessions under `keys` and returns them.
    fn remove_all(&mut self, keys: Vec<TokenHash>, now: Millis) -> Vec<Session> {
        keys.iter()
            .filter_map(|k| self.remove_live(k, now))
            .collect()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, key: TokenHash, session: Session) -> Result<(), StoreError> {
        self.inner.lock().insert(key, session)
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner
            .sessions
            .get(key)
            .filter(|s| !s.is_expired(now))
            .cloned())
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        Ok(self.inner.lock().remove_live(key, now))
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let inner = self.inner.lock();
        let keys = inner.by_user.get(&user).into_iter().flatten();
        Ok(keys
            .filter_map(|k| inner.sessions.get(k))
            .filter(|s| !s.is_expired(now))
            .cloned()
            .collect())
    }

    async fn remove_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut inner = self.inner.lock();
        let keys: Vec<TokenHash> = inner
            .by_user
            .get(&user)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        Ok(inner.remove_all(keys, now))
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let mut inner = self.inner.lock();
        let Some(key) = inner.by_id.get(&id).copied() else {
            return Ok(None);
        };
        let belongs = inner
            .sessions
            .get(&key)
            .is_some_and(|s| s.kind.user() == Some(user) && !s.is_expired(now));
        Ok(if belongs { inner.remove(&key) } else { None })
    }

    async fn remove_app(&self, app: &AppId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut inner = self.inner.lock();
        let keys: Vec<TokenHash> = inner
            .by_app
            .get(app)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        Ok(inner.remove_all(keys, now))
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        let mut inner = self.inner.lock();
        // Expired means `expires <= now`: everything up to (now, the largest key) inclusive.
        let expired: Vec<TokenHash> = inner
            .by_expiry
            .range(..=(now, [u8::MAX; 32]))
            .take(limit)
            .map(|(_, k)| TokenHash::from_bytes(*k))
            .collect();
        Ok(Purged {
            swept: expired.len(),
            ended: expired.iter().filter_map(|k| inner.remove(k)).collect(),
        })
    }
}

#[async_trait]
impl Census for MemoryStore {
    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.lock().sessions.len())
    }
}
