//! The embedded, durable backend (the default): sessions in a [fjall] database (a log-structured
//! merge tree) under the data directory, written by one writer thread that commits many
//! requests' changes together.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`EmbeddedStore`]: open, close, the [`SessionStore`] and [`Census`] impls, reads |
//! | `group.rs` | the group overlay: one group's changes over the last commit |
//! | `writer.rs` | the writer thread, its queue and answers, and the handle that stops it |
//! | `layout.rs` | the keyspaces, key and value encodings, [`LAYOUT_VERSION`] |
//!
//! # Durability
//!
//! Every change is first appended to fjall's journal. [`EmbeddedStore::insert`] and every
//! `remove*` return only after the group commit holding their change has written the journal and
//! synced it to disk (`PersistMode::SyncData`, which is `fdatasync`: fjall preallocates each
//! journal file, so an append does not change the file's size, and `fdatasync` persists the
//! data together with the block allocation needed to read it back, which is all recovery
//! reads); only then does the change become visible to readers. So a response that says a
//! session was made, or that a logout succeeded, is sent only once that fact is on disk, and a
//! logout is a committed tombstone that no crash brings back. When fsync fails, fjall refuses
//! every later write (it "poisons" the database), so the store fails closed with 503 instead of
//! acknowledging what it cannot keep.
//!
//! On open, fjall reads its table metadata and replays the journal written since its in-memory
//! tables were last flushed to sorted files; a torn write at the journal's tail (a crash in the
//! middle of an append) is cut off. That replay is bounded by the journal's size (fjall rotates
//! it at 64 MB), not by the number of sessions, so start-up stays well under a second with a
//! million sessions, after a clean stop ([`EmbeddedStore::close`]) or a SIGKILL alike
//! (`scripts/bench-stores.sh` measures both).
//!
//! # Why a log-structured store
//!
//! The store is keyed by token hashes, which are uniformly random. A B-tree (this backend used
//! redb before) rewrites a random 4 KiB leaf per key and index entry on every commit, and on
//! this workload that write amplification capped it at a seventh of the memory store's rate.
//! An LSM tree appends a commit's few hundred bytes to its journal and sorts them into files in
//! the background, so a group commit costs one small sequential write and one fsync.
//!
//! # Group commit
//!
//! A dedicated OS thread owns all writing (`writer.rs`). Requests queue their change on a
//! channel and wait; the thread takes every change queued so far (up to [`MAX_BATCH`]), works
//! each one out in order against the last committed state plus what the group has done before
//! it (`group.rs`; so two removals of one session in the same group still have exactly one
//! winner), writes them all as one atomic batch with one fsync, then answers each waiter. While
//! one group commits, the next one queues up, so under load each fsync carries many requests. A
//! failed commit answers every waiter of its group with an error (503). fjall flushes and
//! compacts its sorted files on one background thread of its own.
//!
//! # Reads
//!
//! Reads never wait for the writer: they see the last committed state. The writer's own reads
//! (a group's lookups, the index scans of `remove_user`, `remove_app` and the purge) run on the
//! writer thread. Of the store's reads, `list_user` and `count`, whose cost grows with the
//! sessions they read, run on tokio's blocking threads. `get`, a single point read and the one
//! read on every authenticated request, runs on the calling task instead, because the hand-off
//! costs more than the read. Measured on the 2-core development machine under other load
//! (200,000 random point reads of 32-byte keys with 230-byte values, fjall configured as here):
//!
//! | sessions | inline: median, 99th, 99.9th percentile | through `spawn_blocking`: median | reads/s, 32 tasks on 2 workers: inline, `spawn_blocking` |
//! |---|---|---|---|
//! | 100,000 (all in the block cache) | 2.3–2.9 µs, 5–7 µs, 0.1–0.3 ms | 17–20 µs | 190,000–380,000, 50,000–55,000 |
//! | 1,000,000 (past the 64 MiB cache, from the OS page cache) | 6–7 µs, 16–17 µs, 3.7–4.3 ms | 20–29 µs | 52,000–63,000, 29,000–55,000 |
//!
//! So an inline `get` holds its worker thread for a few microseconds, and one in a thousand,
//! past the block cache, for a few milliseconds.
//!
//! # Closing
//!
//! The writer thread owns the database; the store holds only a weak handle, which each read
//! upgrades while it reads. [`EmbeddedStore::close`] closes the queue and waits, on a blocking
//! thread, until the writer has committed and answered every queued change, let fjall finish
//! its queued flushes and closed the database. Dropping the store only closes the queue: the
//! writer then does the same on its own, and nothing waits for it (a later
//! [`EmbeddedStore::open`] of the folder in this process does). Neither ever blocks a runtime
//! thread, and neither changes what is durable: every acknowledged change was synced before it
//! was acknowledged.
//!
//! # Layout
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `sessions` | token hash (32 bytes) | the session, JSON |
//! | `by_user` | user id (8 bytes, big-endian) ‖ token hash | empty |
//! | `by_app` | app id length (2 bytes) ‖ app id ‖ token hash | empty |
//! | `by_id` | session id (8 bytes) | token hash |
//! | `by_expiry` | expiry in epoch ms (8 bytes, big-endian) ‖ token hash | empty |
//! | `by_parent` | the minting app session's id (8 bytes) ‖ token hash | empty |
//! | `by_credential` | credential id (32 bytes) ‖ token hash | empty |
//! | `by_owner` | owner (kind letter ‖ user id and/or length-prefixed app id) ‖ creation in epoch ms (8 bytes) ‖ token hash | empty |
//! | `owner_count` | owner | how many sessions the owner has stored (8 bytes, big-endian): the per-principal cap reads it instead of counting |
//! | `meta` | `layout`; `note:<name>`; `probe` | [`LAYOUT_VERSION`] (4 bytes); a note the server keeps beside the sessions (`applied-directory`: the directory last applied, JSON); empty, rewritten by the readiness probe |
//!
//! The indexes make the administrative operations prefix reads, and let the purge take expired
//! sessions from the front of `by_expiry` in small batches that share commits with requests.
//!
//! Sessions are stored as JSON: the record is small (about 200 bytes), JSON is self-describing
//! (a field added later reads back from old files through `serde(default)`), and it is the same
//! encoding the Redis backend uses.
//!
//! [fjall]: https://crates.io/crates/fjall

mod group;
mod layout;
mod writer;

pub use layout::LAYOUT_VERSION;
pub use writer::MAX_BATCH;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use fjall::{Database, PersistMode, Readable as _};

use self::group::{Group, Insertion};
use self::layout::{decode, encode, hashes_under, user_prefix, Opened, Spaces};
use self::writer::{queued, Writer};
use super::{Census, KindCounts, OpenError, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::UserId;
use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// The database folder's name inside the data directory.
pub const DB_DIR: &str = "sessions.db";
/// fjall's block cache. Blocks beyond it are read through the OS page cache.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The in-memory table of each keyspace is written out to a sorted file at this size. Small,
/// so that the journal a restart replays stays short.
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
/// The journal size past which fjall flushes in-memory tables to let old journals go (the
/// smallest fjall accepts).
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// Sessions in a fjall database under the data directory; see the module documentation for
/// what is guaranteed, and [`EmbeddedStore::close`] for how to stop it.
pub struct EmbeddedStore {
    /// The open database, which the writer thread owns: a read upgrades this for as long as it
    /// reads, and fails once the writer has closed the database.
    db: Weak<Db>,
    writer: Writer,
    path: PathBuf,
}

/// Every fjall handle of one open database. They are kept together because they close
/// together: whichever thread lets go of the last one waits there for fjall's worker thread and
/// its journal sync (see [`EmbeddedStore::close`]).
struct Db {
    database: Database,
    spaces: Spaces,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database in `data_dir/sessions.db` and starts the writer thread.
    /// The directories are created (mode 0700 on Unix) when missing. Fails when another process
    /// (or another open store in this one) has the database open. Blocks while fjall reads its
    /// journal, and first, when a store of the same folder in this process was dropped without
    /// [`EmbeddedStore::close`], until that store's writer has closed the database.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        let path = data_dir.join(DB_DIR);
        let dir_error = |source| OpenError::DataDir {
            path: data_dir.to_owned(),
            source,
        };
        create_private_dir(data_dir).map_err(dir_error)?;
        // fjall creates its folder with the default mode; make it private first, so that token
        // digests and who holds which session are readable by the server's user only.
        create_private_dir(&path).map_err(dir_error)?;
        let folder = std::fs::canonicalize(&path).map_err(dir_error)?;
        writer::wait_for_dropped(&folder);
        let db_error = |source: fjall::Error| OpenError::Database {
            path: path.clone(),
            source: Box::new(source),
        };
        let database = Database::builder(&path)
            .cache_size(CACHE_BYTES)
            // One thread for flushes and compactions: the writer is the only writer, and more
            // threads would compete with request handling for the same cores.
            .worker_threads(1)
            // fjall's smallest journal budget: past it, fjall flushes the in-memory tables that
            // keep the oldest journal alive (the rarely written `meta`, say), so the journal a
            // restart replays stays short.
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => OpenError::Locked {
                    path: folder.clone(),
                },
                e => db_error(e),
            })?;
        let spaces = match Spaces::open(&database).map_err(db_error)? {
            Opened::Current(spaces) => spaces,
            Opened::Other(found) => {
                return Err(OpenError::Layout {
                    path,
                    found,
                    expected: LAYOUT_VERSION,
                })
            }
        };
        let (writer, db) =
            Writer::start(Db { database, spaces }, folder).map_err(|e| OpenError::Database {
                path: path.clone(),
                source: Box::new(e),
            })?;
        Ok(Self { db, writer, path })
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the store: every change queued so far is committed (and answered), later ones are
    /// refused as unavailable, and this returns once the writer thread has let fjall finish
    /// its queued flushes (up to 10 s) and has closed the database, so that the next start
    /// replays only the active journal. The waiting happens on a blocking thread, never on the
    /// runtime's. Reads fail from then on too. A read still running when the writer lets go
    /// closes the database itself when it ends, a moment later. Returns at once when the store
    /// is already closed or another call is closing it.
    ///
    /// Dropping the store without closing it only signals the writer, which then does the same
    /// on its own thread; nothing waits for it, so a process that exits right after may cut
    /// the flushes short (which costs a longer journal replay at the next start, never a
    /// committed change).
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// Queues `f` for the next group commit and waits until that commit has returned.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Group<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = queued(f);
        self.writer.send(op)?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// The database, for one read; unavailable once closed.
    fn open_db(&self) -> Result<Arc<Db>, StoreError> {
        self.db.upgrade().ok_or_else(closed)
    }

    /// Runs `read` on this thread. Only for point reads: see "Reads" in the module
    /// documentation for what they cost.
    fn read_here<T>(
        &self,
        read: impl FnOnce(&Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.open_db()?;
        let out = read(&db);
        if let Some(last) = Arc::into_inner(db) {
            // The writer let go while this read ran, and closing the database waits: on a
            // blocking thread, when this is a runtime's thread.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn_blocking(move || drop(last));
            }
        }
        out
    }

    /// Runs `read` on a blocking thread, for reads whose length grows with the data.
    async fn read_blocking<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.open_db()?;
        match tokio::task::spawn_blocking(move || read(&db)).await {
            Ok(out) => out,
            // As if the read had run here.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Unavailable(
                "a session database read was cancelled".into(),
            )),
        }
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let value = encode(&session)?;
        let inserted = self
            .write(move |g| {
                Ok(match g.insert(&key, &session, value)? {
                    Insertion::Added => Ok(g.evict_beyond(&key, &session, keep)?),
                    refused => Err(refused),
                })
            })
            .await?;
        match inserted {
            Ok(evicted) => Ok(evicted),
            Err(Insertion::ParentEnded) => Err(StoreError::ParentEnded),
            Err(_) => Err(StoreError::Duplicate),
        }
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let found = self.read_here(|db| {
            db.spaces
                .sessions
                .get(key.as_bytes())
                .map_err(storage)?
                .map(|v| decode(&v))
                .transpose()
        })?;
        Ok(found.filter(|s| !s.is_expired(now)))
    }

    async fn live_by_kind(&self, _now: Millis) -> Result<KindCounts, StoreError> {
        // The per-owner counts the cap keeps, summed by their kind byte: one entry per owner,
        // not per session.
        self.read_blocking(|db| {
            let mut counts = KindCounts::default();
            for entry in db.database.snapshot().iter(&db.spaces.owner_count) {
                let (owner, n) = entry.into_inner().map_err(storage)?;
                let n = <[u8; 8]>::try_from(&*n).map_or(0, u64::from_be_bytes);
                if let Some(tag) = owner.first() {
                    counts.add(*tag, n);
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        let key = *key;
        self.write(move |g| g.remove_live(&[key], now)).await
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        self.read_blocking(move |db| {
            // One snapshot for the index and the sessions, so the list is a consistent view.
            let snapshot = db.database.snapshot();
            let keys = hashes_under(&snapshot, &db.spaces.by_user, &user_prefix(user))?;
            let mut out = Vec::with_capacity(keys.len());
            for key in &keys {
                if let Some(v) = snapshot
                    .get(&db.spaces.sessions, key.as_bytes())
                    .map_err(storage)?
                {
                    let s = decode(&v)?;
                    if !s.is_expired(now) {
                        out.push(s);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let selector = selector.clone();
        self.write(move |g| g.remove_matching(&selector, now)).await
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        self.write(move |g| g.remove_by_id(user, id, now)).await
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        self.write(move |g| g.purge_expired(now, limit)).await
    }

    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = layout::note_key(name);
        self.read_blocking(move |db| {
            let found = db.spaces.meta.get(&key).map_err(storage)?;
            Ok(found.map(|v| v.to_vec()))
        })
        .await
    }

    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = layout::note_key(name);
        // Beside the writer's group commits: notes are rare and live in a keyspace of their own.
        self.read_blocking(move |db| {
            let mut batch = db.database.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&db.spaces.meta, key, value);
            batch.commit().map_err(storage)
        })
        .await
    }

    async fn failed(&self) -> String {
        self.writer.failed().await
    }

    /// A one-key write through the writer's queue, committed and synced like a session: fails
    /// when the writer has stopped, the database is poisoned by a failed fsync, or the disk is
    /// full.
    async fn probe(&self) -> Result<(), StoreError> {
        self.write(|g| {
            g.probe();
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        EmbeddedStore::close(self).await;
    }
}

#[async_trait]
impl Census for EmbeddedStore {
    async fn count(&self) -> Result<usize, StoreError> {
        // Exact, so it reads every key: for tests and tools, not for request paths.
        self.read_blocking(|db| {
            db.database
                .snapshot()
                .len(&db.spaces.sessions)
                .map_err(storage)
        })
        .await
    }
}

/// A failure of this backend's storage or encoding.
fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        source: Arc::new(e),
    }
}

fn storage(e: fjall::Error) -> StoreError {
    backend(e)
}

fn corrupt(what: &str) -> StoreError {
    backend(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("session database: {what}"),
    ))
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the session database writer has stopped".into())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the session database is closed".into())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data folder and the database folder are 0700: only the server's user reads them.
    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, data, store) = temp_store();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DB_DIR)), 0o700);
        drop(store);
    }

    /// The time the tests' sessions are made at.
    pub(super) const NOW: Millis = Millis::from_epoch_millis(1_000_000);

    /// A store in a fresh data folder: the folder (removed when dropped), the data folder's
    /// path, and the store.
    pub(super) fn temp_store() -> (tempfile::TempDir, PathBuf, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = EmbeddedStore::open(&data).unwrap();
        (dir, data, store)
    }

    /// A user's session, `id`, made at `now` for an hour.
    pub(super) fn session(user: i64, id: i64, now: Millis) -> Session {
        Session {
            id: SessionId(id),
            kind: crate::session::SessionKind::User { user: UserId(user) },
            created: now,
            expires: now.saturating_add(std::time::Duration::from_secs(3600)),
            client_ip: None,
            user_agent: None,
            credential: None,
            chain: Vec::new(),
            fingerprint: None,
        }
    }

    /// `close` returns once what was written is closed away: the folder opens again at once
    /// and holds it, and the closed store refuses reads and writes as unavailable.
    #[tokio::test]
    async fn close_then_reopen() {
        let (_dir, data, store) = temp_store();
        let now = NOW;
        let (key, s) = (TokenHash::from_bytes([5; 32]), session(5, 50, now));
        store.insert(key, s.clone()).await.unwrap();
        store.close().await;
        store.close().await;
        let unavailable = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
        assert!(unavailable(store.get(&key, now).await.map(|_| ())));
        assert!(unavailable(
            store.list_user(UserId(5), now).await.map(|_| ())
        ));
        assert!(unavailable(store.count().await.map(|_| ())));
        let other = (TokenHash::from_bytes([6; 32]), session(5, 51, now));
        assert!(unavailable(store.insert(other.0, other.1).await));
        assert!(unavailable(store.remove(&key, now).await.map(|_| ())));

        let reopened = EmbeddedStore::open(&data).unwrap();
        assert_eq!(reopened.get(&key, now).await.unwrap(), Some(s));
        assert_eq!(reopened.count().await.unwrap(), 1);
    }

    /// Dropping a store does not wait for its writer (here held inside a change until after
    /// the drop): the queued change still commits and is answered, and the folder opens again
    /// once the writer has closed the database.
    #[tokio::test]
    async fn drop_does_not_wait_for_the_writer() {
        let (_dir, data, store) = temp_store();
        let now = NOW;
        let (key, s) = (TokenHash::from_bytes([7; 32]), session(7, 70, now));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (value, s2) = (encode(&s).unwrap(), s.clone());
        let (op, answer) = queued(move |g| {
            let _ = held.recv();
            g.insert(&key, &s2, value)
        });
        store.writer.send(op).unwrap();
        drop(store);
        release.send(()).unwrap();
        assert_eq!(answer.await.unwrap().unwrap(), Insertion::Added);

        let reopened = EmbeddedStore::open(&data).unwrap();
        assert_eq!(reopened.get(&key, now).await.unwrap(), Some(s));
    }
}
