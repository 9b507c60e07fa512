//! The in-memory backend: a hash map behind a `parking_lot` mutex. Fast, and gone at exit.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{SessionStore, StoreError};
use crate::clock::Millis;
use crate::session::Session;
use crate::token::TokenHash;

/// Sessions in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<TokenHash, Session>>,
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
        let mut map = self.sessions.lock();
        if map.contains_key(&key) {
            return Err(StoreError::Duplicate);
        }
        map.insert(key, session);
        Ok(())
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let map = self.sessions.lock();
        Ok(map.get(key).filter(|s| !s.is_expired(now)).cloned())
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let mut map = self.sessions.lock();
        Ok(map.remove(key).filter(|s| !s.is_expired(now)))
    }

    async fn purge_expired(&self, now: Millis) -> Result<usize, StoreError> {
        let mut map = self.sessions.lock();
        let before = map.len();
        map.retain(|_, s| !s.is_expired(now));
        Ok(before - map.len())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.sessions.lock().len())
    }
}
