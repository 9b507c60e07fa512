//! The sessions by token hash, as the memory and embedded stores hold them: each session with
//! its key in one slot of a [`Slab`], and a [`HashTable`] of slot numbers to find them by key.
//!
//! A `HashMap<TokenHash, Session>` keeps its entries in its own buckets, which it holds at
//! between one and two per entry (a million sessions take 2^21 buckets of 224 bytes: 470 bytes a
//! session). Here the buckets hold only a slot number (4 bytes, and a control byte), and the
//! slab holds one entry per session (and at most the free slots of those removed, which it
//! reuses first): about 235 bytes a session at a million instead of 470. A second table of slot
//! numbers finds a session by its public id the same way (5 bytes a bucket where a
//! `HashMap<SessionId, _>` entry takes 16 or more). Slot numbers are [`Slot`]s, 32 bits: a
//! table holds at most `u32::MAX` sessions (some 900 GiB of them), and refuses more.

use std::fmt;

use hashbrown::HashTable;
use slab::Slab;

use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// A session's place in a [`SessionTable`], its own while it is stored there.
pub(super) type Slot = u32;

/// The slab's index of a slot (`usize` is at least 32 bits wide wherever this builds).
fn ix(slot: Slot) -> usize {
    slot as usize
}

/// Sessions by token hash.
#[derive(Default)]
pub(super) struct SessionTable {
    slots: Slab<(TokenHash, Session)>,
    /// The slot of each session, found by its key's hash.
    by_key: HashTable<Slot>,
    /// The slot of the session with each id, found by the id's hash: the one stored last, when
    /// (briefly, while a journal is replayed over a snapshot) two share an id.
    by_id: HashTable<Slot>,
}

/// A token hash is a SHA-256 digest, uniform already: its first 8 bytes are its hash (as
/// [`BuildTokenHasher`](crate::token::BuildTokenHasher) takes them for a `HashMap`).
fn hash(key: &TokenHash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Session ids are random numbers the server makes; multiplying spreads the tests' small ones
/// over the high bits too, which the table's control bytes take.
fn id_hash(id: SessionId) -> u64 {
    u64::from_ne_bytes(id.0.to_ne_bytes()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Points the id of `slot`'s session at `slot` in `by_id` (a map by id of `slots`).
fn point(by_id: &mut HashTable<Slot>, slots: &Slab<(TokenHash, Session)>, slot: Slot) {
    let id = slots[ix(slot)].1.id;
    match by_id.find_mut(id_hash(id), |&s| slots[ix(s)].1.id == id) {
        Some(pointed) => *pointed = slot,
        None => {
            by_id.insert_unique(id_hash(id), slot, |&s| id_hash(slots[ix(s)].1.id));
        }
    }
}

impl SessionTable {
    /// Makes room for `n` more sessions, as a replay fills them in (see
    /// [`SessionTable::replay`]: the map by id is built afterwards, at its own size).
    pub(super) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        let slots = &self.slots;
        self.by_key.reserve(n, |&slot| hash(&slots[ix(slot)].0));
    }

    /// How many sessions it holds.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot holding `key`.
    fn slot(&self, key: &TokenHash) -> Option<Slot> {
        self.by_key
            .find(hash(key), |&slot| self.slots[ix(slot)].0 == *key)
            .copied()
    }

    /// The session under `key`.
    pub(super) fn get(&self, key: &TokenHash) -> Option<&Session> {
        self.slot(key).map(|slot| &self.slots[ix(slot)].1)
    }

    /// Whether a session is under `key`.
    pub(super) fn contains_key(&self, key: &TokenHash) -> bool {
        self.slot(key).is_some()
    }

    /// The slot of the session with public id `id`.
    pub(super) fn id_slot(&self, id: SessionId) -> Option<Slot> {
        self.by_id
            .find(id_hash(id), |&slot| self.slots[ix(slot)].1.id == id)
            .copied()
    }

    /// Points `slot`'s session id at `slot`.
    fn point_id(&mut self, slot: Slot) {
        point(&mut self.by_id, &self.slots, slot);
    }

    /// Drops the id entry of `slot`'s session when it points at `slot`.
    fn unpoint_id(&mut self, slot: Slot) {
        let id = self.slots[ix(slot)].1.id;
        if let Ok(entry) = self.by_id.find_entry(id_hash(id), |&s| s == slot) {
            entry.remove();
        }
    }

    /// The slot the next session stored under a new key goes into; `None` when the table is
    /// full.
    pub(super) fn next_slot(&self) -> Option<Slot> {
        Slot::try_from(self.slots.vacant_key()).ok()
    }

    /// The key and session in `slot`.
    pub(super) fn at(&self, slot: Slot) -> Option<(&TokenHash, &Session)> {
        self.slots
            .get(ix(slot))
            .map(|(key, session)| (key, session))
    }

    /// The key in `slot`.
    pub(super) fn key_at(&self, slot: Slot) -> Option<&TokenHash> {
        self.slots.get(ix(slot)).map(|(key, _)| key)
    }

    /// Stores `session` under `key`; returns the session it replaces. A full table (see
    /// [`Slot`]) stores no new key. (The tests' way to fill a table; the stores use
    /// [`SessionTable::insert_new`] and [`SessionTable::replay`].)
    #[cfg(test)]
    pub(super) fn insert(&mut self, key: TokenHash, session: Session) -> Option<Session> {
        if let Some(slot) = self.slot(&key) {
            self.unpoint_id(slot);
            let old = std::mem::replace(&mut self.slots[ix(slot)].1, session);
            self.point_id(slot);
            return Some(old);
        }
        self.insert_new(key, session);
        None
    }

    /// Stores `session` under `key` as a start-up's replay does: replacing what is there, and
    /// leaving the map by id alone, which [`SessionTable::index_ids`] then builds once, on all
    /// the sessions (the replay's thread sets the pace of a start, the indexing has a second
    /// thread). Like [`SessionTable::insert`], a full table stores no new key.
    pub(super) fn replay(&mut self, key: TokenHash, session: Session) {
        if let Some(slot) = self.slot(&key) {
            self.slots[ix(slot)].1 = session;
        } else {
            self.place(key, session);
        }
    }

    /// Takes the session under `key` out as a replay does (see [`SessionTable::replay`]).
    pub(super) fn replay_remove(&mut self, key: &TokenHash) {
        if let Some(slot) = self.unkey(key) {
            self.slots.remove(ix(slot));
        }
    }

    /// The map by id of a table [`SessionTable::replay`] filled (where two sessions share an
    /// id, the one in the later slot), for [`SessionTable::set_ids`]: it only reads the table,
    /// so it runs beside other readers.
    pub(super) fn index_ids(&self) -> HashTable<Slot> {
        let slots = &self.slots;
        let mut by_id = HashTable::with_capacity(slots.len());
        for (slot, _) in slots {
            if let Ok(slot) = Slot::try_from(slot) {
                point(&mut by_id, slots, slot);
            }
        }
        by_id
    }

    /// Puts in the map by id [`SessionTable::index_ids`] built.
    pub(super) fn set_ids(&mut self, by_id: HashTable<Slot>) {
        self.by_id = by_id;
    }

    /// Stores `session` under `key`, which holds none (the caller knows), in the slot
    /// [`SessionTable::next_slot`] named; returns that slot, or `None` (storing nothing) when
    /// the table is full.
    pub(super) fn insert_new(&mut self, key: TokenHash, session: Session) -> Option<Slot> {
        let slot = self.place(key, session)?;
        self.point_id(slot);
        Some(slot)
    }

    /// Puts `session` under the new `key` in the next free slot, found by key but not yet by
    /// id; `None` (storing nothing) when the table is full.
    fn place(&mut self, key: TokenHash, session: Session) -> Option<Slot> {
        let vacant = self.slots.vacant_entry();
        let slot = Slot::try_from(vacant.key()).ok()?;
        vacant.insert((key, session));
        let slots = &self.slots;
        self.by_key
            .insert_unique(hash(&key), slot, |&slot| hash(&slots[ix(slot)].0));
        Some(slot)
    }

    /// Drops `key` from the map by key; returns the slot it named (still holding its session).
    fn unkey(&mut self, key: &TokenHash) -> Option<Slot> {
        let slots = &self.slots;
        let entry = self
            .by_key
            .find_entry(hash(key), |&slot| slots[ix(slot)].0 == *key)
            .ok()?;
        Some(entry.remove().0)
    }

    /// Takes the session under `key` out.
    #[cfg(test)]
    pub(super) fn remove(&mut self, key: &TokenHash) -> Option<Session> {
        self.remove_entry(key).map(|(_, session)| session)
    }

    /// Takes the session under `key` out, with the slot it was in (free from now on).
    pub(super) fn remove_entry(&mut self, key: &TokenHash) -> Option<(Slot, Session)> {
        let slot = self.unkey(key)?;
        self.unpoint_id(slot);
        Some((slot, self.slots.remove(ix(slot)).1))
    }

    /// Every key, in no particular order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &TokenHash> {
        self.slots.iter().map(|(_, (key, _))| key)
    }

    /// Every session with its key, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&TokenHash, &Session)> {
        self.slots.iter().map(|(_, (key, session))| (key, session))
    }

    /// Every session with its slot and key, in slot order.
    pub(super) fn slots(&self) -> impl Iterator<Item = (Slot, &TokenHash, &Session)> {
        // Every slot in use came from `insert_new`, so fits a `Slot`.
        self.slots.iter().filter_map(|(slot, (key, session))| {
            Slot::try_from(slot).ok().map(|slot| (slot, key, session))
        })
    }
}

/// Equal when they hold the same sessions under the same keys, in whatever slots, and find
/// the same one by each id.
impl PartialEq for SessionTable {
    fn eq(&self, other: &Self) -> bool {
        let ids = |table: &Self| {
            let mut ids: Vec<_> = table
                .by_id
                .iter()
                .map(|&slot| (table.slots[ix(slot)].1.id.0, table.slots[ix(slot)].0))
                .collect();
            ids.sort_unstable_by_key(|(id, key)| (*id, *key.as_bytes()));
            ids
        };
        self.len() == other.len()
            && self.iter().all(|(k, s)| other.get(k) == Some(s))
            && ids(self) == ids(other)
    }
}

impl fmt::Debug for SessionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::clock::Millis;
    use crate::directory::UserId;
    use crate::session::{SessionId, SessionKind};

    /// Ids repeat across keys (as while a journal is replayed over a snapshot).
    fn session(n: u8) -> Session {
        Session {
            id: SessionId(i64::from(n % 16)),
            kind: SessionKind::User {
                user: UserId(i64::from(n)),
            },
            created: Millis::from_epoch_millis(0),
            expires: Millis::from_epoch_millis(1),
            client_ip: None,
            user_agent: None,
            credential: None,
            chain: Box::default(),
            fingerprint: None,
        }
    }

    /// Keys that share their first 8 bytes (their hash) but differ after: the table must tell
    /// them apart by the whole key.
    fn key(n: u8) -> TokenHash {
        let mut bytes = [0u8; 32];
        bytes[0] = n % 4;
        bytes[31] = n;
        TokenHash::from_bytes(bytes)
    }

    proptest! {
        /// Any run of inserts and removes leaves the table holding what a `HashMap` does.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec((any::<bool>(), 0u8..24, any::<u8>()), 0..300)) {
            let mut table = SessionTable::default();
            let mut model: HashMap<TokenHash, Session> = HashMap::new();
            // By id: the key stored last with that id, dropped when that key's session goes.
            let mut ids: HashMap<SessionId, TokenHash> = HashMap::new();
            let replay = ops.clone();
            for (put, k, v) in ops {
                let k = key(k);
                if let Some(old) = model.get(&k) {
                    if ids.get(&old.id) == Some(&k) {
                        ids.remove(&old.id);
                    }
                }
                if put {
                    prop_assert_eq!(table.insert(k, session(v)), model.insert(k, session(v)));
                    ids.insert(session(v).id, k);
                } else {
                    prop_assert_eq!(table.remove(&k), model.remove(&k));
                }
                prop_assert_eq!(table.len(), model.len());
                for n in 0..16 {
                    let id = SessionId(n);
                    let found = table.id_slot(id).and_then(|slot| table.key_at(slot)).copied();
                    prop_assert_eq!(found, ids.get(&id).copied());
                }
            }
            for n in 0..24 {
                prop_assert_eq!(table.get(&key(n)), model.get(&key(n)));
                prop_assert_eq!(table.contains_key(&key(n)), model.contains_key(&key(n)));
            }
            // A replay of the same operations, its map by id built at the end, holds the same
            // sessions and finds the same one by each id that one session holds (of two that
            // share an id, it finds the one in the later slot, not the one stored last).
            let mut replayed = SessionTable::default();
            for (put, k, v) in &replay {
                if *put {
                    replayed.replay(key(*k), session(*v));
                } else {
                    replayed.replay_remove(&key(*k));
                }
            }
            let ids = replayed.index_ids();
            replayed.set_ids(ids);
            prop_assert_eq!(replayed.len(), table.len());
            for (k, s) in table.iter() {
                prop_assert_eq!(replayed.get(k), Some(s));
                if table.iter().filter(|(_, other)| other.id == s.id).count() == 1 {
                    let found = replayed.id_slot(s.id).and_then(|slot| replayed.key_at(slot));
                    prop_assert_eq!(found, Some(k));
                }
            }
            let mut listed: Vec<_> = table.iter().map(|(k, s)| (*k, s.clone())).collect();
            listed.sort_by_key(|(k, _)| *k.as_bytes());
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort_by_key(|(k, _)| *k.as_bytes());
            prop_assert_eq!(listed, expected);
        }
    }
}
