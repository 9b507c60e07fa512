//! The in-memory backend: maps behind one `parking_lot` mutex. Fast, and gone at exit.
//!
//! Besides the sessions keyed by token hash it keeps indexes (by user, by app, by the app
//! session that minted an on-behalf-of session, by credential, by public id, by expiry) so that
//! administrative operations, cascades, revocations and the purge do not scan every session.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::table::{SessionTable, Slot};
use super::{Census, KindCounts, Owner, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::{AppId, UserId};
use crate::session::{CredentialId, Session, SessionId, SessionKind};
use crate::token::{BuildTokenHasher, TokenHash};

/// Sessions in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        self.inner.lock().insert_capped(key, session, keep)
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        Ok(self.inner.lock().live(key, now).cloned())
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        Ok(self.inner.lock().remove_one(key, now))
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let inner = self.inner.lock();
        Ok(inner
            .user_keys(user)
            .filter_map(|k| inner.live(k, now))
            .cloned()
            .collect())
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        Ok(self.inner.lock().remove_matching(selector, now))
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        Ok(self.inner.lock().remove_by_id(user, id, now))
    }

    async fn live_by_kind(&self, _now: Millis) -> Result<KindCounts, StoreError> {
        Ok(self.inner.lock().kinds)
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        Ok(self.inner.lock().purge_expired(now, limit))
    }
}

#[async_trait]
impl Census for MemoryStore {
    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.lock().sessions.len())
    }
}

/// Slot numbers in the [`SessionTable`]: what the indexes hold (4 bytes where a key is 32).
type Slots = HashSet<Slot, Named>;
/// For keys the directory names (user ids, app ids, owners) and slot numbers: foldhash, several
/// times cheaper than the standard SipHash. Clients cannot choose these keys, only the
/// operator's directory and the table.
type Named = foldhash::fast::RandomState;

/// The sessions and their indexes, without a lock: the memory store keeps one behind its mutex,
/// and the embedded store keeps one as the state its journal rebuilds (`embedded/`).
///
/// The indexes name a session by its slot in the table, which stays its own while it is
/// stored (a slot is reused only once its session and index entries are gone).
#[derive(Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
pub(super) struct Inner {
    pub(super) sessions: SessionTable,
    by_user: HashMap<UserId, Slots, Named>,
    by_app: HashMap<AppId, Slots, Named>,
    // Session ids are server-made random numbers: uniform, so the pass-through hasher fits.
    by_parent: HashMap<SessionId, Slots, BuildTokenHasher>,
    by_credential: HashMap<CredentialId, Slots, BuildTokenHasher>,
    by_expiry: BTreeSet<(Millis, Slot)>,
    /// Each owner's sessions, oldest first: what the per-principal cap evicts.
    by_owner: HashMap<Owner, BTreeSet<(Millis, Slot)>, Named>,
    /// How many sessions of each kind are stored.
    pub(super) kinds: KindCounts,
    /// When `Some`, every session added or removed is noted here, in order: the embedded store
    /// journals a change from it.
    changes: Option<Vec<Change>>,
}

/// One session added to or removed from an [`Inner`], as it notes them when asked.
#[derive(Debug)]
#[cfg_attr(test, derive(PartialEq))]
pub(super) enum Change {
    /// The session now under this key (read it from [`Inner::sessions`]).
    Added(TokenHash),
    /// The session that was under this key.
    Removed(TokenHash, Session),
}

impl Inner {
    /// Starts noting every change ([`Inner::take_changes`] hands them over).
    pub(super) fn record(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes noted since [`Inner::record`]; stops noting.
    pub(super) fn take_changes(&mut self) -> Vec<Change> {
        self.changes.take().unwrap_or_default()
    }

    /// The session under `key` when it is live at `now`.
    pub(super) fn live(&self, key: &TokenHash, now: Millis) -> Option<&Session> {
        self.sessions.get(key).filter(|s| !s.is_expired(now))
    }

    /// The keys of the sessions that act as `user`, expired or not.
    pub(super) fn user_keys(&self, user: UserId) -> impl Iterator<Item = &TokenHash> {
        self.by_user
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(|&slot| self.sessions.key_at(slot))
    }

    /// Stores `session` and ends the oldest of its owner's beyond the newest `keep`, as
    /// [`SessionStore::insert_capped`] describes.
    pub(super) fn insert_capped(
        &mut self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let owner = Owner::of(&session.kind);
        let now = session.created;
        let slot = self.insert(key, session)?;
        Ok(self.evict_beyond(&owner, keep, slot, now))
    }

    /// Ends the live session under `key`, with what it minted, as [`SessionStore::remove`]
    /// describes.
    pub(super) fn remove_one(&mut self, key: &TokenHash, now: Millis) -> Vec<Session> {
        let mut out = Vec::new();
        self.remove_live(key, now, &mut out);
        out
    }

    /// As [`SessionStore::remove_matching`] describes.
    pub(super) fn remove_matching(&mut self, selector: &Selector, now: Millis) -> Vec<Session> {
        let keys = match selector {
            Selector::User(user) => self.members(&self.by_user, user),
            Selector::App(app) | Selector::OnBehalfOf { app, .. } => {
                self.members(&self.by_app, app)
            }
            Selector::Credential(id) => self.members(&self.by_credential, id),
        };
        let mut out = Vec::new();
        for key in keys {
            if self.sessions.get(&key).is_some_and(|s| selector.matches(s)) {
                self.remove_live(&key, now, &mut out);
            }
        }
        out
    }

    /// As [`SessionStore::remove_by_id`] describes.
    pub(super) fn remove_by_id(
        &mut self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Option<Session> {
        let (key, session) = self.sessions.at(self.sessions.id_slot(id)?)?;
        if session.kind.user() == Some(user) && !session.is_expired(now) {
            let key = *key;
            self.remove(&key)
        } else {
            None
        }
    }

    /// As [`SessionStore::purge_expired`] describes: in order of expiry, then of token hash
    /// (every backend's order). The index orders sessions that expire in the same millisecond
    /// by slot, so the ties at the batch's edge are all taken and sorted by hash first.
    pub(super) fn purge_expired(&mut self, now: Millis, limit: usize) -> Purged {
        // Expired means `expires <= now`: everything up to (now, the largest slot) inclusive.
        let mut due = self.by_expiry.range(..=(now, Slot::MAX));
        let mut expired: Vec<(Millis, TokenHash)> = due
            .by_ref()
            .take(limit)
            .filter_map(|&(at, slot)| Some((at, *self.sessions.key_at(slot)?)))
            .collect();
        if let Some(&(last, _)) = expired.last().filter(|_| expired.len() == limit) {
            expired.extend(
                due.take_while(|&&(at, _)| at == last)
                    .filter_map(|&(at, slot)| Some((at, *self.sessions.key_at(slot)?))),
            );
        }
        expired.sort_unstable_by(|(a, x), (b, y)| (a, x.as_bytes()).cmp(&(b, y.as_bytes())));
        expired.truncate(limit);
        Purged {
            swept: expired.len(),
            ended: expired.iter().filter_map(|(_, k)| self.remove(k)).collect(),
        }
    }

    /// Stores `session` under `key` with no check, replacing what is there: for replaying a
    /// journal, whose records were checked when they were written.
    /// (A journal holds no more sessions than [`Inner::insert`] let in, so the table has room.)
    pub(super) fn put(&mut self, key: TokenHash, session: Session) {
        self.remove(&key);
        self.index(key, session);
    }

    /// Stores a session under a new key; returns its slot.
    fn insert(&mut self, key: TokenHash, session: Session) -> Result<Slot, StoreError> {
        if self.sessions.contains_key(&key) || self.sessions.id_slot(session.id).is_some() {
            return Err(StoreError::Duplicate);
        }
        if session
            .kind
            .parent()
            .is_some_and(|parent| self.sessions.id_slot(parent).is_none())
        {
            return Err(StoreError::ParentEnded);
        }
        self.index(key, session).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "the session table is full ({} sessions)",
                Slot::MAX
            ))
        })
    }

    /// The state holding `sessions`, as a restart reads them back (`embedded/`): each index is
    /// built from all of its entries at once, the B-trees from sorted runs (several times
    /// cheaper than adding the sessions one by one, which inserts into them at random), the
    /// expiry index and the table's map by id on a second thread meanwhile. `sessions` come
    /// from [`SessionTable::replay`] (or have their map by id already: it is rebuilt). The
    /// same state as
    /// [`Inner::put`] of each session, in slot order, would make.
    pub(super) fn from_sessions(sessions: SessionTable) -> Self {
        // On a second thread: the expiry B-tree and the map by id.
        let expiry = || {
            let mut expiry: Vec<_> = sessions
                .slots()
                .map(|(slot, _, session)| (session.expires, slot))
                .collect();
            expiry.sort_unstable();
            let by_id = sessions.index_ids();
            (expiry.into_iter().collect::<BTreeSet<_>>(), by_id)
        };
        let ((by_expiry, by_id), mut inner) = std::thread::scope(|scope| {
            let second = scope.spawn(expiry);
            let mut inner = Self::default();
            let mut owners: HashMap<Owner, Vec<(Millis, Slot)>, Named> = HashMap::default();
            for (slot, _, session) in sessions.slots() {
                inner.index_by_principal(slot, session);
                owners
                    .entry(Owner::of(&session.kind))
                    .or_default()
                    .push((session.created, slot));
            }
            inner.by_owner = owners
                .into_iter()
                .map(|(owner, mut slots)| {
                    slots.sort_unstable();
                    (owner, slots.into_iter().collect())
                })
                .collect();
            // The closure only sorts and collects; it does not panic but for want of memory.
            let built = second
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (built, inner)
        });
        inner.by_expiry = by_expiry;
        inner.sessions = sessions;
        inner.sessions.set_ids(by_id);
        inner
    }

    /// Adds `session` under `key` to the table and the indexes (`key` is free); returns its
    /// slot, or `None` (adding nothing) when the table is full.
    fn index(&mut self, key: TokenHash, session: Session) -> Option<Slot> {
        let slot = self.sessions.next_slot()?;
        self.index_by_principal(slot, &session);
        self.by_expiry.insert((session.expires, slot));
        self.by_owner
            .entry(Owner::of(&session.kind))
            .or_default()
            .insert((session.created, slot));
        let placed = self.sessions.insert_new(key, session);
        debug_assert_eq!(placed, Some(slot), "the slab fills the slot it named");
        if let Some(changes) = &mut self.changes {
            changes.push(Change::Added(key));
        }
        Some(slot)
    }

    /// The index entries and counts that [`Inner::index`] and [`Inner::from_sessions`] both
    /// add one session at a time: by user, app, parent and credential, and the kind count.
    fn index_by_principal(&mut self, slot: Slot, session: &Session) {
        if let Some(user) = session.kind.user() {
            self.by_user.entry(user).or_default().insert(slot);
        }
        if let Some(app) = session.kind.app() {
            self.by_app.entry(app.clone()).or_default().insert(slot);
        }
        if let Some(parent) = session.kind.parent() {
            self.by_parent.entry(parent).or_default().insert(slot);
        }
        for id in session.credential_ids() {
            self.by_credential.entry(*id).or_default().insert(slot);
        }
        self.kinds.add(KindCounts::tag_of(&session.kind), 1);
    }

    /// Removes a session and its index entries, expired or not; returns it.
    pub(super) fn remove(&mut self, key: &TokenHash) -> Option<Session> {
        let (slot, session) = self.sessions.remove_entry(key)?;
        if let Some(changes) = &mut self.changes {
            changes.push(Change::Removed(*key, session.clone()));
        }
        self.kinds.sub(KindCounts::tag_of(&session.kind), 1);
        if let Some(user) = session.kind.user() {
            unindex(&mut self.by_user, &user, slot);
        }
        if let Some(app) = session.kind.app() {
            unindex(&mut self.by_app, app, slot);
        }
        if let Some(parent) = session.kind.parent() {
            unindex(&mut self.by_parent, &parent, slot);
        }
        for id in session.credential_ids() {
            unindex(&mut self.by_credential, id, slot);
        }
        self.by_expiry.remove(&(session.expires, slot));
        let owner = Owner::of(&session.kind);
        if let Some(set) = self.by_owner.get_mut(&owner) {
            set.remove(&(session.created, slot));
            if set.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
        Some(session)
    }

    /// Removes the oldest sessions of `owner` beyond the newest `keep`, expired or not, each
    /// with the on-behalf-of sessions it minted that are live at `now`; returns them. The session
    /// just stored in slot `new` is never one of them (another may share its creation time).
    fn evict_beyond(&mut self, owner: &Owner, keep: usize, new: Slot, now: Millis) -> Vec<Session> {
        let mut out = Vec::new();
        while let Some(key) = self
            .by_owner
            .get(owner)
            .filter(|set| set.len() > keep.max(1))
            .and_then(|set| self.oldest(set, new))
        {
            let Some(session) = self.remove(&key) else {
                break;
            };
            self.remove_with_minted(session, now, &mut out);
        }
        out
    }

    /// The key of the oldest session in `set` other than `new`: the earliest created, and of
    /// those created in that millisecond (the index orders them by slot) the least token hash,
    /// as every backend orders them.
    fn oldest(&self, set: &BTreeSet<(Millis, Slot)>, new: Slot) -> Option<TokenHash> {
        let others = set.iter().filter(|&&(_, slot)| slot != new);
        let &(first, _) = others.clone().next()?;
        others
            .take_while(|&&(at, _)| at == first)
            .filter_map(|&(_, slot)| self.sessions.key_at(slot))
            .min_by(|a, b| a.as_bytes().cmp(b.as_bytes()))
            .copied()
    }

    /// Removes the live session under `key` and, for an app session, the live on-behalf-of
    /// sessions minted with it, appending them to `out`. Expired ones are left for the purge.
    fn remove_live(&mut self, key: &TokenHash, now: Millis, out: &mut Vec<Session>) {
        if self.sessions.get(key).is_none_or(|s| s.is_expired(now)) {
            return;
        }
        let Some(session) = self.remove(key) else {
            return;
        };
        self.remove_with_minted(session, now, out);
    }

    /// Appends `session` (already removed) to `out`, then removes the on-behalf-of sessions it
    /// minted, when it is an app session, that are live at `now`, appending them too.
    fn remove_with_minted(&mut self, session: Session, now: Millis, out: &mut Vec<Session>) {
        let minted = match session.kind {
            SessionKind::App { .. } => self.members(&self.by_parent, &session.id),
            _ => Vec::new(),
        };
        out.push(session);
        for child in minted {
            if self
                .sessions
                .get(&child)
                .is_some_and(|s| !s.is_expired(now))
            {
                out.extend(self.remove(&child));
            }
        }
    }

    /// The keys of the sessions an index holds under `k`.
    fn members<K: Hash + Eq, S: std::hash::BuildHasher>(
        &self,
        index: &HashMap<K, Slots, S>,
        k: &K,
    ) -> Vec<TokenHash> {
        index
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|&slot| self.sessions.key_at(slot).copied())
            .collect()
    }
}

/// Drops `slot` from an index entry, and the entry once it is empty.
fn unindex<K: Hash + Eq, S: std::hash::BuildHasher>(
    index: &mut HashMap<K, Slots, S>,
    k: &K,
    slot: Slot,
) {
    if let Some(set) = index.get_mut(k) {
        set.remove(&slot);
        if set.is_empty() {
            index.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::directory::AppId;
    use crate::session::{CredentialId, SessionKind};

    /// Sessions of every kind, owner and index: users with several sessions (made at the same
    /// and at different times, with and without credentials and chains), key-manager tokens,
    /// apps and their on-behalf-of sessions.
    fn sessions() -> Vec<(TokenHash, Session)> {
        let now = Millis::from_epoch_millis(1_000_000);
        let apps = [AppId::new("app-a"), AppId::new("app-b")];
        let cred = |n: u8| CredentialId::certificate(b"issuer", &[n]);
        let mut out = Vec::new();
        for i in 0..300u16 {
            let n = i64::from(i);
            let app = apps[usize::from(i % 2)].clone();
            let kind = match i % 4 {
                0 => SessionKind::User {
                    user: UserId(n % 7),
                },
                1 => SessionKind::KeyManager {
                    user: UserId(n % 5),
                },
                2 => SessionKind::App { app },
                _ => SessionKind::OnBehalfOf {
                    app,
                    user: UserId(n % 11),
                    parent: SessionId(n - 1),
                },
            };
            let created = now.saturating_add(Duration::from_millis(u64::from(i % 13)));
            let [hi, lo] = i.to_be_bytes();
            let mut key = [lo; 32];
            key[0] = hi;
            out.push((
                TokenHash::from_bytes(key),
                Session {
                    id: SessionId(n),
                    kind,
                    created,
                    expires: created.saturating_add(Duration::from_secs(u64::from(i % 17))),
                    client_ip: None,
                    user_agent: None,
                    credential: (i % 3 == 0).then(|| cred(lo % 4)),
                    chain: if i % 5 == 0 {
                        vec![cred(9)].into()
                    } else {
                        Box::default()
                    },
                    fingerprint: None,
                },
            ));
        }
        out
    }

    /// Building the indexes at once gives the state that adding the sessions one by one does.
    #[test]
    fn from_sessions_is_put_one_by_one() {
        let mut one_by_one = Inner::default();
        let mut table = SessionTable::default();
        for (key, session) in sessions() {
            one_by_one.put(key, session.clone());
            table.insert(key, session);
        }
        assert_eq!(Inner::from_sessions(table), one_by_one);
        assert_eq!(
            Inner::from_sessions(SessionTable::default()),
            Inner::default()
        );
    }
    /// Sessions made in the same millisecond are evicted, and purged, in order of token hash,
    /// whatever order they were stored in (the indexes order such ties by slot). The model the
    /// other backends are checked against is this store, so this order is checked here.
    #[test]
    fn ties_go_in_token_hash_order() {
        let at = Millis::from_epoch_millis(1_000_000);
        let session = |id: i64| Session {
            id: SessionId(id),
            kind: SessionKind::KeyManager { user: UserId(7) },
            created: at,
            expires: at,
            client_ip: None,
            user_agent: None,
            credential: None,
            chain: Box::default(),
            fingerprint: None,
        };
        // Stored in slot order 0, 1, 2 with hashes 3, 1, 2: the least hash is the second.
        let keys = [3u8, 1, 2].map(|b| TokenHash::from_bytes([b; 32]));
        let ids = |ended: &[Session]| ended.iter().map(|s| s.id.0).collect::<Vec<_>>();

        let mut inner = Inner::default();
        inner.put(keys[0], session(0));
        inner.put(keys[1], session(1));
        let evicted = inner.insert_capped(keys[2], session(2), 2).unwrap();
        assert_eq!(
            ids(&evicted),
            [1],
            "the least hash of the oldest goes first"
        );
        let evicted = inner
            .insert_capped(TokenHash::from_bytes([0; 32]), session(3), 2)
            .unwrap();
        assert_eq!(
            ids(&evicted),
            [2],
            "the new session is never the one evicted"
        );

        let mut inner = Inner::default();
        for (n, key) in keys.iter().enumerate() {
            inner.put(*key, session(n as i64));
        }
        assert_eq!(ids(&inner.purge_expired(at, 1).ended), [1]);
        assert_eq!(ids(&inner.purge_expired(at, 1).ended), [2]);
        assert_eq!(ids(&inner.purge_expired(at, 5).ended), [0]);
    }
}
