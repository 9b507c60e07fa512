//! The group overlay: one group's changes over the last commit, so that each change in a group
//! reads the ones queued before it (read-your-writes within a group).

use std::collections::{HashMap, HashSet};

use fjall::{Database, PersistMode, Readable as _, Snapshot};

use super::layout::{
    app_prefix, decode, hashes_under, id_key, index_entries, last_expiry_key, owner_prefix,
    trailing_hash, user_prefix, Index, Space, Spaces, PROBE_KEY,
};
use super::{corrupt, storage, Db};
use crate::clock::Millis;
use crate::directory::UserId;
use crate::session::{Session, SessionId, SessionKind};
use crate::store::{Owner, Purged, Selector, StoreError};
use crate::token::{BuildTokenHasher, TokenHash};

/// One group's changes over the state of the last commit, and what the group has done so far,
/// so that each change sees the ones queued before it (two removals of one session in one
/// group: the second finds nothing).
pub(super) struct Group<'a> {
    spaces: &'a Spaces,
    /// The committed state when the group began (only the writer thread commits).
    snapshot: Snapshot,
    /// The writes, in order.
    writes: Vec<Write>,
    /// Whether some key is written twice (a session added and removed in the same group): the
    /// writes then go through [`dedup`] before the commit. All writes of one fjall batch share
    /// one sequence number; fjall's memtable happens to keep the last of two writes to a key,
    /// but it does not promise to, so the batch holds one write per key.
    rewrites: bool,
    /// Sessions this group added (`Some`) or removed (`None`), by token hash.
    sessions: HashMap<TokenHash, Option<Session>, BuildTokenHasher>,
    /// Session ids this group gave out (`Some`, with their token hash) or freed (`None`).
    ids: HashMap<i64, Option<TokenHash>>,
    /// Owners' session counts as this group leaves them, by owner prefix.
    owner_counts: HashMap<Vec<u8>, u64>,
}

/// What [`Group::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Insertion {
    /// The session and its index entries are written.
    Added,
    /// The token hash or the session id is taken (by a committed session or one added earlier
    /// in the group): nothing is written.
    Duplicate,
    /// An on-behalf-of session whose app session is gone (ended by a committed change or one
    /// earlier in the group): nothing is written.
    ParentEnded,
}

/// One key written by a group.
struct Write {
    space: Space,
    key: Vec<u8>,
    /// `None` removes the key.
    value: Option<Vec<u8>>,
}

impl<'a> Group<'a> {
    /// A group over the state `db` has committed so far.
    pub(super) fn new(db: &'a Db) -> Self {
        Self {
            spaces: &db.spaces,
            snapshot: db.database.snapshot(),
            writes: Vec::new(),
            rewrites: false,
            sessions: HashMap::default(),
            ids: HashMap::new(),
            owner_counts: HashMap::new(),
        }
    }
}

impl Group<'_> {
    /// Writes the group's changes as one atomic batch, synced to disk before this returns.
    pub(super) fn commit(self, db: &Database) -> Result<(), StoreError> {
        let writes = if self.rewrites {
            dedup(self.writes)
        } else {
            self.writes
        };
        // fdatasync: see "Durability" in the module documentation.
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        for Write { space, key, value } in writes {
            match value {
                Some(value) => batch.insert(self.spaces.get(space), key, value),
                None => batch.remove(self.spaces.get(space), key),
            }
        }
        batch.commit().map_err(storage)
    }

    /// Adds a session and its index entries, unless its token hash or its id is taken.
    pub(super) fn insert(
        &mut self,
        key: &TokenHash,
        s: &Session,
        value: Vec<u8>,
    ) -> Result<Insertion, StoreError> {
        if self.session(key)?.is_some() || self.key_of(s.id)?.is_some() {
            return Ok(Insertion::Duplicate);
        }
        if let Some(parent) = s.kind.parent() {
            if self.key_of(parent)?.is_none() {
                return Ok(Insertion::ParentEnded);
            }
        }
        self.rewrites |= self.sessions.contains_key(key) || self.ids.contains_key(&s.id.0);
        for (index, index_key) in index_entries(key, s)? {
            self.put(index.space(), index_key, Vec::new());
        }
        self.put(Space::ById, id_key(s.id).to_vec(), key.as_bytes().to_vec());
        self.put(Space::Sessions, key.as_bytes().to_vec(), value);
        self.sessions.insert(*key, Some(s.clone()));
        self.ids.insert(s.id.0, Some(*key));
        self.count_owner(&owner_prefix(&s.kind)?, 1)?;
        Ok(Insertion::Added)
    }

    /// After `s` was added under `new`: removes the oldest sessions of its owner beyond the
    /// newest `keep` (never `s`), expired or not, each with the on-behalf-of sessions it minted
    /// that are live; returns them.
    pub(super) fn evict_beyond(
        &mut self,
        new: &TokenHash,
        s: &Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let keep = u64::try_from(keep.max(1)).unwrap_or(u64::MAX);
        let owner = owner_prefix(&s.kind)?;
        let mut out = Vec::new();
        while self.owner_count(&owner)? > keep {
            // None: the count is ahead of the entries, which no change writes.
            let Some(victim) = self.oldest_of(&owner, &s.kind, new)? else {
                break;
            };
            let Some(session) = self.remove(&victim)? else {
                break;
            };
            self.cascade(&session, s.created, &mut out)?;
        }
        Ok(out)
    }

    /// Removes a session and its index entries; returns it, expired or not.
    pub(super) fn remove(&mut self, key: &TokenHash) -> Result<Option<Session>, StoreError> {
        let found = self.session(key)?;
        if let Some(s) = &found {
            self.drop_session(key, s)?;
        }
        Ok(found)
    }

    /// Removes the live sessions under `keys` and, for each app session among them, the live
    /// on-behalf-of sessions minted with it; returns them. Expired ones are left for the purge,
    /// which records their end.
    pub(super) fn remove_live(
        &mut self,
        keys: &[TokenHash],
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            self.remove_cascading(key, now, &mut out)?;
        }
        Ok(out)
    }

    /// Removes the live sessions `selector` names, with their cascades, and returns them.
    pub(super) fn remove_matching(
        &mut self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let (index, prefix) = match selector {
            Selector::User(user) => (Index::User, user_prefix(*user).to_vec()),
            Selector::App(app) | Selector::OnBehalfOf { app, .. } => {
                (Index::App, app_prefix(app.as_str())?)
            }
            Selector::Credential(id) => (Index::Credential, id.as_bytes().to_vec()),
        };
        let keys = self.hashes_under(index, &prefix, |s| selector.matches(s))?;
        let mut out = Vec::new();
        for key in keys {
            if self.session(&key)?.is_some_and(|s| selector.matches(&s)) {
                self.remove_cascading(&key, now, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Removes the live session under `key` and, when it is an app session, the live
    /// on-behalf-of sessions minted with it, appending them to `out`.
    fn remove_cascading(
        &mut self,
        key: &TokenHash,
        now: Millis,
        out: &mut Vec<Session>,
    ) -> Result<(), StoreError> {
        let Some(s) = self.session(key)?.filter(|s| !s.is_expired(now)) else {
            return Ok(());
        };
        self.drop_session(key, &s)?;
        self.cascade(&s, now, out)
    }

    /// Appends `s` (already removed) to `out`, then removes the on-behalf-of sessions it minted,
    /// when it is an app session, that are live at `now`, appending them too.
    fn cascade(
        &mut self,
        s: &Session,
        now: Millis,
        out: &mut Vec<Session>,
    ) -> Result<(), StoreError> {
        let minted = match s.kind {
            SessionKind::App { .. } => {
                let id = s.id;
                self.hashes_under(Index::Parent, &id_key(id), |c| c.kind.parent() == Some(id))?
            }
            _ => Vec::new(),
        };
        out.push(s.clone());
        for child in minted {
            if let Some(c) = self.session(&child)?.filter(|c| !c.is_expired(now)) {
                self.drop_session(&child, &c)?;
                out.push(c);
            }
        }
        Ok(())
    }

    /// Removes the live session with public id `id` when it acts as `user`, and returns it.
    pub(super) fn remove_by_id(
        &mut self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let Some(key) = self.key_of(id)? else {
            return Ok(None);
        };
        match self.session(&key)? {
            Some(s) if s.kind.user() == Some(user) && !s.is_expired(now) => {
                self.drop_session(&key, &s)?;
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    /// Sweeps at most `limit` committed entries of the expiry index up to `now`, as
    /// [`SessionStore::purge_expired`](crate::store::SessionStore::purge_expired) describes.
    pub(super) fn purge_expired(
        &mut self,
        now: Millis,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        // Expired means `expires <= now`.
        let last = last_expiry_key(now.as_epoch_millis());
        let mut entries = Vec::new();
        for entry in self
            .snapshot
            .range(&self.spaces.by_expiry, ..=last.as_slice())
        {
            if entries.len() == limit {
                break;
            }
            let index_key = entry.key().map_err(storage)?;
            let key = trailing_hash(&index_key)?;
            // Removed by an earlier change of this group (another purge step, a logout): that
            // change swept it, so this step does not count it again.
            if matches!(self.sessions.get(&key), Some(None)) {
                continue;
            }
            entries.push((index_key, key));
        }
        let swept = entries.len();
        let mut ended = Vec::with_capacity(entries.len());
        for (index_key, key) in entries {
            match self.remove(&key)? {
                Some(s) => ended.push(s),
                // An index entry without its session (none is written so, but a purge that met
                // one must not meet it forever): drop it.
                None => {
                    self.rewrites = true;
                    self.delete(Space::ByExpiry, index_key.to_vec());
                }
            }
        }
        Ok(Purged { ended, swept })
    }

    /// The session under `key`, as this group leaves it so far (expired or not).
    fn session(&self, key: &TokenHash) -> Result<Option<Session>, StoreError> {
        if let Some(s) = self.sessions.get(key) {
            return Ok(s.clone());
        }
        match self
            .snapshot
            .get(&self.spaces.sessions, key.as_bytes())
            .map_err(storage)?
        {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The token hash of the session with public id `id`, as this group leaves it so far.
    fn key_of(&self, id: SessionId) -> Result<Option<TokenHash>, StoreError> {
        if let Some(key) = self.ids.get(&id.0) {
            return Ok(*key);
        }
        match self
            .snapshot
            .get(&self.spaces.by_id, id_key(id))
            .map_err(storage)?
        {
            Some(v) => TokenHash::from_slice(&v)
                .map(Some)
                .ok_or_else(|| corrupt("a by-id entry that is not a token hash")),
            None => Ok(None),
        }
    }

    /// The token hashes under `prefix` in `index`: the committed entries, and the sessions this
    /// group added that `added` selects. Some may have been removed by this group since;
    /// [`Group::remove`] then finds nothing.
    fn hashes_under(
        &self,
        index: Index,
        prefix: &[u8],
        added: impl Fn(&Session) -> bool,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let mut keys = hashes_under(&self.snapshot, self.spaces.get(index.space()), prefix)?;
        keys.extend(
            self.sessions
                .iter()
                .filter(|(_, s)| s.as_ref().is_some_and(&added))
                .map(|(k, _)| *k),
        );
        Ok(keys)
    }

    /// Writes the removal of session `s` under `key` and its index entries.
    fn drop_session(&mut self, key: &TokenHash, s: &Session) -> Result<(), StoreError> {
        self.rewrites |= self.sessions.contains_key(key) || self.ids.contains_key(&s.id.0);
        for (index, index_key) in index_entries(key, s)? {
            self.delete(index.space(), index_key);
        }
        self.delete(Space::ById, id_key(s.id).to_vec());
        self.delete(Space::Sessions, key.as_bytes().to_vec());
        self.sessions.insert(*key, None);
        self.ids.insert(s.id.0, None);
        self.count_owner(&owner_prefix(&s.kind)?, -1)
    }

    /// The number of sessions `owner` has stored, as this group leaves it.
    fn owner_count(&self, owner: &[u8]) -> Result<u64, StoreError> {
        if let Some(n) = self.owner_counts.get(owner) {
            return Ok(*n);
        }
        let found = self
            .snapshot
            .get(&self.spaces.owner_count, owner)
            .map_err(storage)?;
        Ok(found
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Adds `delta` to `owner`'s count (never below zero: sessions stored before the count was
    /// kept are not in it), and writes it.
    fn count_owner(&mut self, owner: &[u8], delta: i64) -> Result<(), StoreError> {
        let n = self.owner_count(owner)?.saturating_add_signed(delta);
        self.rewrites |= self.owner_counts.insert(owner.to_vec(), n).is_some();
        if n == 0 {
            self.delete(Space::OwnerCount, owner.to_vec());
        } else {
            self.put(Space::OwnerCount, owner.to_vec(), n.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// The token hash of `owner`'s oldest stored session other than `new`: the committed ones
    /// in creation order first, then those this group added (of `kind`'s owner).
    fn oldest_of(
        &self,
        owner: &[u8],
        kind: &SessionKind,
        new: &TokenHash,
    ) -> Result<Option<TokenHash>, StoreError> {
        for entry in self.snapshot.prefix(&self.spaces.by_owner, owner) {
            let key = trailing_hash(&entry.key().map_err(storage)?)?;
            if &key != new && !matches!(self.sessions.get(&key), Some(None)) {
                return Ok(Some(key));
            }
        }
        let mut added: Vec<(Millis, TokenHash)> = self
            .sessions
            .iter()
            .filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
            .filter(|(k, s)| *k != new && Owner::of(&s.kind) == Owner::of(kind))
            .map(|(k, s)| (s.created, *k))
            .collect();
        added.sort_unstable_by_key(|(created, k)| (*created, *k.as_bytes()));
        Ok(added.first().map(|(_, k)| *k))
    }

    /// Rewrites the readiness probe's key: a write that commits, and syncs, with the group.
    pub(super) fn probe(&mut self) {
        // Two probes may share a group: the commit then keeps one write of the key.
        self.rewrites = true;
        self.put(Space::Meta, PROBE_KEY.to_vec(), Vec::new());
    }

    fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(Write {
            space,
            key,
            value: Some(value),
        });
    }

    fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.writes.push(Write {
            space,
            key,
            value: None,
        });
    }
}

/// Keeps the last write to each key, in order.
fn dedup(writes: Vec<Write>) -> Vec<Write> {
    let mut seen = HashSet::new();
    let mut kept: Vec<_> = writes
        .into_iter()
        .rev()
        .filter(|w| seen.insert((w.space, w.key.clone())))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::super::layout::encode;
    use super::super::tests::{session, temp_store, NOW};
    use super::super::writer::{commit_group, queued, WriteOp};
    use super::super::EmbeddedStore;
    use super::Insertion;
    use crate::directory::UserId;
    use crate::session::SessionId;
    use crate::store::{Census as _, SessionStore as _, StoreError};
    use crate::token::TokenHash;

    /// Commits `ops` as one group, as the writer thread would, and answers them.
    fn commit(store: &EmbeddedStore, ops: Vec<Box<dyn WriteOp>>) {
        let mut ops = ops;
        let committed = commit_group(&store.db.upgrade().unwrap(), &mut ops);
        for op in ops {
            op.finish(committed.clone());
        }
    }

    fn answer<T>(mut rx: oneshot::Receiver<Result<T, StoreError>>) -> T {
        rx.try_recv().unwrap().unwrap()
    }

    /// A session added and removed in one group: the removal sees it, and the commit leaves
    /// neither the session nor any of its index entries.
    #[tokio::test]
    async fn insert_then_remove_in_one_group() {
        let (_dir, data, store) = temp_store();
        let now = NOW;
        let s = session(7, 70, now);
        let key = TokenHash::from_bytes([1u8; 32]);
        let value = encode(&s).unwrap();
        let s2 = s.clone();
        let (a, ins) = queued(move |g| g.insert(&key, &s2, value));
        let (b, rm) = queued(move |g| g.remove(&key));
        let (c, rm_again) = queued(move |g| g.remove(&key));
        commit(&store, vec![a, b, c]);
        assert_eq!(answer(ins), Insertion::Added);
        assert_eq!(answer(rm), Some(s));
        assert_eq!(answer(rm_again), None);
        assert_eq!(store.get(&key, now).await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(store.list_user(UserId(7), now).await.unwrap().is_empty());
        let db = store.db.upgrade().unwrap();
        for space in [&db.spaces.by_user, &db.spaces.by_id, &db.spaces.by_expiry] {
            assert!(space.is_empty().unwrap());
        }
        drop(db);
        // The same after the journal is replayed.
        store.close().await;
        let store = EmbeddedStore::open(&data).unwrap();
        assert_eq!(store.get(&key, now).await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(store
            .db
            .upgrade()
            .unwrap()
            .spaces
            .by_user
            .is_empty()
            .unwrap());
    }

    /// Ending a user's sessions ends the one added earlier in the same group too; a session id
    /// freed in a group can be given out again in the same group.
    #[tokio::test]
    async fn later_changes_see_earlier_ones_of_the_group() {
        let (_dir, _, store) = temp_store();
        let now = NOW;
        let (old_key, old) = (TokenHash::from_bytes([2u8; 32]), session(8, 80, now));
        store.insert(old_key, old.clone()).await.unwrap();

        let (new_key, new) = (TokenHash::from_bytes([3u8; 32]), session(8, 81, now));
        let value = encode(&new).unwrap();
        let new2 = new.clone();
        let (a, ins) = queued(move |g| g.insert(&new_key, &new2, value));
        let (b, ended) =
            queued(move |g| g.remove_matching(&crate::store::Selector::User(UserId(8)), now));
        // The old session's id, free again, goes to a third session of another user.
        let (reuse_key, reuse) = (TokenHash::from_bytes([4u8; 32]), session(9, 80, now));
        let value = encode(&reuse).unwrap();
        let reuse2 = reuse.clone();
        let (c, reinsert) = queued(move |g| g.insert(&reuse_key, &reuse2, value));
        commit(&store, vec![a, b, c]);
        assert_eq!(answer(ins), Insertion::Added);
        let mut ended: Vec<i64> = answer(ended).iter().map(|s| s.id.0).collect();
        ended.sort_unstable();
        assert_eq!(ended, vec![80, 81]);
        assert_eq!(answer(reinsert), Insertion::Added);
        assert!(store.list_user(UserId(8), now).await.unwrap().is_empty());
        assert_eq!(
            store
                .remove_by_id(UserId(9), SessionId(80), now)
                .await
                .unwrap(),
            Some(reuse)
        );
        assert_eq!(store.count().await.unwrap(), 0);
    }
}
