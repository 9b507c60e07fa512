//! The store as the server uses it: every operation of the configured backend timed and its
//! failures counted (`sessionauth_store_operation_duration_seconds`,
//! `sessionauth_store_errors_total`), whichever backend it is.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{KindCounts, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::UserId;
use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// A backend, metered.
pub(crate) struct Metered(pub(crate) Arc<dyn SessionStore>);

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    crate::metrics::store_op(op, started.elapsed(), result.is_err());
    result
}

#[async_trait]
impl SessionStore for Metered {
    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        timed("insert", self.0.insert_capped(key, session, keep)).await
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        timed("get", self.0.get(key, now)).await
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        timed("remove", self.0.remove(key, now)).await
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        timed("list_user", self.0.list_user(user, now)).await
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        timed("remove_matching", self.0.remove_matching(selector, now)).await
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        timed("remove_by_id", self.0.remove_by_id(user, id, now)).await
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        timed("purge_expired", self.0.purge_expired(now, limit)).await
    }

    async fn live_by_kind(&self, now: Millis) -> Result<KindCounts, StoreError> {
        timed("live_by_kind", self.0.live_by_kind(now)).await
    }

    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        timed("read_note", self.0.read_note(name)).await
    }

    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        timed("write_note", self.0.write_note(name, value)).await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        timed("probe", self.0.probe()).await
    }

    async fn failed(&self) -> String {
        self.0.failed().await
    }

    async fn close(&self) {
        self.0.close().await;
    }
}
