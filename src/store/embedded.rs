//! The embedded, durable backend (the default): sessions in a [fjall] database (a log-structured
//! merge tree) under the data directory, written by one writer thread that commits many
//! requests' changes together.
//!
//! # Durability
//!
//! Every change is first appended to fjall's journal. [`EmbeddedStore::insert`] and every
//! `remove*` return only after the group commit holding their change has written the journal and
//! synced it to disk (`PersistMode::SyncData`, which is `fdatasync`: fjall preallocates each
//! journal file, so an append does not change the file's size, and `fdatasync` persists the
//! data together with the block allocation needed to read it back, which is all recovery
//! reads); only then does the change become visible to readers. So a response that says a session was made, or that a logout
//! succeeded, is sent only once that fact is on disk, and a logout is a committed tombstone that
//! no crash brings back. When fsync fails, fjall refuses every later write (it "poisons" the
//! database), so the store fails closed with 503 instead of acknowledging what it cannot keep.
//!
//! On open, fjall reads its table metadata and replays the journal written since its in-memory
//! tables were last flushed to sorted files; a torn write at the journal's tail (a crash in the
//! middle of an append) is cut off. That replay is bounded by the journal's size (fjall rotates
//! it at 64 MB), not by the number of sessions, so start-up stays well under a second with a
//! million sessions, after a clean stop or a SIGKILL alike (`scripts/bench-stores.sh` measures
//! both).
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
//! A dedicated OS thread owns all writing. Requests queue their change on a channel and wait;
//! the thread takes every change queued so far (up to [`MAX_BATCH`]), works each one out in
//! order against the last committed state plus what the group has done before it (so two
//! removals of one session in the same group still have exactly one winner), writes them all
//! as one atomic batch with one fsync, then answers each waiter. While one group commits, the
//! next one queues up, so under load each fsync carries many requests. A failed commit answers
//! every waiter of its group with an error (503).
//!
//! Reads (`get`, `list_user`, `count`) run on the calling task against the last committed
//! state and never wait for the writer. fjall flushes and compacts its sorted files on one
//! background thread of its own.
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
//! | `meta` | `layout` | [`LAYOUT_VERSION`] (4 bytes) |
//!
//! The indexes make the administrative operations prefix reads, and let the purge take expired
//! sessions from the front of `by_expiry` in small batches that share commits with requests.
//!
//! Sessions are stored as JSON: the record is small (about 200 bytes), JSON is self-describing
//! (a field added later reads back from old files through `serde(default)`), and it is the same
//! encoding the Redis backend uses.
//!
//! [fjall]: https://crates.io/crates/fjall

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use tokio::sync::oneshot;

use super::{Census, OpenError, Purged, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::{AppId, UserId};
use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// The database folder's name inside the data directory.
pub const DB_DIR: &str = "sessions.db";
/// The key layout this build reads and writes.
pub const LAYOUT_VERSION: u32 = 2;
/// The most changes one commit carries.
pub const MAX_BATCH: usize = 4096;
/// fjall's block cache. Blocks beyond it are read through the OS page cache.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The in-memory table of each keyspace is written out to a sorted file at this size. Small,
/// so that the journal a restart replays stays short.
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// How long closing the store waits for fjall's queued flushes.
const CLOSE_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The journal size past which fjall flushes in-memory tables to let old journals go (the
/// smallest fjall accepts).
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

type Hash = [u8; 32];

/// Sessions in a fjall database under the data directory; see the module documentation for
/// what is guaranteed.
pub struct EmbeddedStore {
    db: Database,
    spaces: Arc<Spaces>,
    path: PathBuf,
    /// `None` only while dropping, so that the writer sees the channel close.
    queue: Option<mpsc::Sender<Box<dyn WriteOp>>>,
    writer: Option<JoinHandle<()>>,
}

/// The keyspaces (see the layout table in the module documentation).
struct Spaces {
    sessions: Keyspace,
    by_user: Keyspace,
    by_app: Keyspace,
    by_id: Keyspace,
    by_expiry: Keyspace,
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
    /// (or another store in this one) has the database open.
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
        let db_error = |source: fjall::Error| OpenError::Database {
            path: path.clone(),
            source: Box::new(source),
        };
        let db = Database::builder(&path)
            .cache_size(CACHE_BYTES)
            // One thread for flushes and compactions: the writer is the only writer, and more
            // threads would compete with request handling for the same cores.
            .worker_threads(1)
            // fjall's smallest journal budget: past it, fjall flushes the in-memory tables that
            // keep the oldest journal alive (the rarely written `meta`, say), so the journal a
            // restart replays stays short.
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(db_error)?;
        let space = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(db_error)
        };
        let found = layout_version(&db, &space("meta")?).map_err(db_error)?;
        if found != LAYOUT_VERSION {
            return Err(OpenError::Layout {
                path,
                found,
                expected: LAYOUT_VERSION,
            });
        }
        let spaces = Arc::new(Spaces {
            sessions: space("sessions")?,
            by_user: space("by_user")?,
            by_app: space("by_app")?,
            by_id: space("by_id")?,
            by_expiry: space("by_expiry")?,
        });
        let (queue, ops) = mpsc::channel();
        let (writer_db, writer_spaces) = (db.clone(), spaces.clone());
        let writer = std::thread::Builder::new()
            .name("sessionauth-store-writer".into())
            .spawn(move || write_loop(&writer_db, &writer_spaces, &ops))
            .map_err(|e| OpenError::Database {
                path: path.clone(),
                source: Box::new(e),
            })?;
        Ok(Self {
            db,
            spaces,
            path,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// The database folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `f` for the next group commit and waits until that commit has returned.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Group<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = queued(f);
        self.queue
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(op)
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its current group; joining it lets fjall
        // close the database cleanly.
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // fjall drops flushes still queued when it closes, and the next start then replays
        // their journal. Letting them finish first keeps that replay to the active journal.
        let deadline = std::time::Instant::now() + CLOSE_FLUSH_WAIT;
        while self.db.outstanding_flushes() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert(&self, key: TokenHash, session: Session) -> Result<(), StoreError> {
        let value = encode(&session)?;
        self.write(move |g| g.insert(key.as_bytes(), &session, value))
            .await?
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let Some(v) = self.spaces.sessions.get(key.as_bytes()).map_err(storage)? else {
            return Ok(None);
        };
        let s = decode(&v)?;
        Ok((!s.is_expired(now)).then_some(s))
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let key = *key.as_bytes();
        self.write(move |g| g.remove_live(&[key], now).map(|mut v| v.pop()))
            .await
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        // One snapshot for the index and the sessions, so the list is a consistent view.
        let snapshot = self.db.snapshot();
        let keys = hashes_under(&snapshot, &self.spaces.by_user, &user_prefix(user))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Some(v) = snapshot.get(&self.spaces.sessions, key).map_err(storage)? {
                let s = decode(&v)?;
                if !s.is_expired(now) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    async fn remove_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        self.write(move |g| {
            let keys = g.hashes_under(Index::User, &user_prefix(user), |s| {
                s.kind.user() == Some(user)
            })?;
            g.remove_live(&keys, now)
        })
        .await
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        self.write(move |g| {
            let Some(key) = g.key_of(id)? else {
                return Ok(None);
            };
            match g.session(&key)? {
                Some(s) if s.kind.user() == Some(user) && !s.is_expired(now) => {
                    g.drop_session(&key, &s)?;
                    Ok(Some(s))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    async fn remove_app(&self, app: &AppId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let prefix = app_prefix(app.as_str())?;
        let app = app.clone();
        self.write(move |g| {
            let keys = g.hashes_under(Index::App, &prefix, |s| s.kind.app() == Some(&app))?;
            g.remove_live(&keys, now)
        })
        .await
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        self.write(move |g| {
            // Expired means `expires <= now`: every key up to (now, the largest hash).
            let last = expiry_key(now.as_epoch_millis(), &[u8::MAX; 32]);
            let mut entries = Vec::new();
            for entry in g
                .snapshot
                .range(&g.spaces.by_expiry, ..=last.as_slice())
                .take(limit)
            {
                let index_key = entry.key().map_err(storage)?;
                let key = trailing_hash(&index_key)?;
                entries.push((index_key, key));
            }
            let swept = entries.len();
            let mut out = Vec::with_capacity(entries.len());
            for (index_key, key) in entries {
                match g.remove(&key)? {
                    Some(s) => out.push(s),
                    // An index entry without its session (none is written so, but a purge
                    // that met one must not meet it forever): drop it.
                    None => {
                        g.rewrites = true;
                        g.writes.push((Space::ByExpiry, index_key.to_vec(), None));
                    }
                }
            }
            Ok(Purged { ended: out, swept })
        })
        .await
    }
}

#[async_trait]
impl Census for EmbeddedStore {
    async fn count(&self) -> Result<usize, StoreError> {
        // Exact, so it reads every key: for tests and tools, not for request paths.
        self.db
            .snapshot()
            .len(&self.spaces.sessions)
            .map_err(storage)
    }
}

/// One group's changes over the state of the last commit, and what the group has done so far,
/// so that each change sees the ones queued before it (two removals of one session in one
/// group: the second finds nothing).
struct Group<'a> {
    spaces: &'a Spaces,
    /// The committed state when the group began (only this thread commits).
    snapshot: Snapshot,
    /// The writes, in order: `None` removes the key.
    writes: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    /// Whether some key is written twice (a session added and removed in the same group): the
    /// writes then go through [`dedup`] before the commit. All writes of one fjall batch share
    /// one sequence number; fjall's memtable happens to keep the last of two writes to a key,
    /// but it does not promise to, so the batch holds one write per key.
    rewrites: bool,
    /// Sessions this group added (`Some`) or removed (`None`), by token hash.
    sessions: HashMap<Hash, Option<Session>>,
    /// Session ids this group gave out (`Some`, with their token hash) or freed (`None`).
    ids: HashMap<i64, Option<Hash>>,
}

impl Group<'_> {
    /// The session under `key`, as this group leaves it so far (expired or not).
    fn session(&self, key: &Hash) -> Result<Option<Session>, StoreError> {
        if let Some(s) = self.sessions.get(key) {
            return Ok(s.clone());
        }
        match self
            .snapshot
            .get(&self.spaces.sessions, key)
            .map_err(storage)?
        {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The token hash of the session with public id `id`, as this group leaves it so far.
    fn key_of(&self, id: SessionId) -> Result<Option<Hash>, StoreError> {
        if let Some(key) = self.ids.get(&id.0) {
            return Ok(*key);
        }
        match self
            .snapshot
            .get(&self.spaces.by_id, id_key(id))
            .map_err(storage)?
        {
            Some(v) => Hash::try_from(&*v)
                .map(Some)
                .map_err(|_| corrupt("a by-id entry that is not a token hash")),
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
    ) -> Result<Vec<Hash>, StoreError> {
        let mut keys = hashes_under(&self.snapshot, self.spaces.get(index.space()), prefix)?;
        keys.extend(
            self.sessions
                .iter()
                .filter(|(_, s)| s.as_ref().is_some_and(&added))
                .map(|(k, _)| *k),
        );
        Ok(keys)
    }

    /// Adds a session and its index entries; `Ok(Err(Duplicate))` leaves everything unchanged.
    fn insert(
        &mut self,
        key: &Hash,
        s: &Session,
        value: Vec<u8>,
    ) -> Result<Result<(), StoreError>, StoreError> {
        if self.session(key)?.is_some() || self.key_of(s.id)?.is_some() {
            return Ok(Err(StoreError::Duplicate));
        }
        self.rewrites |= self.sessions.contains_key(key) || self.ids.contains_key(&s.id.0);
        for (index, index_key) in index_entries(key, s)? {
            self.writes
                .push((index.space(), index_key, Some(Vec::new())));
        }
        self.writes
            .push((Space::ById, id_key(s.id).to_vec(), Some(key.to_vec())));
        self.writes
            .push((Space::Sessions, key.to_vec(), Some(value)));
        self.sessions.insert(*key, Some(s.clone()));
        self.ids.insert(s.id.0, Some(*key));
        Ok(Ok(()))
    }

    /// Removes a session and its index entries; returns it, expired or not.
    fn remove(&mut self, key: &Hash) -> Result<Option<Session>, StoreError> {
        let found = self.session(key)?;
        if let Some(s) = &found {
            self.drop_session(key, s)?;
        }
        Ok(found)
    }

    /// Writes the removal of session `s` under `key` and its index entries.
    fn drop_session(&mut self, key: &Hash, s: &Session) -> Result<(), StoreError> {
        self.rewrites |= self.sessions.contains_key(key) || self.ids.contains_key(&s.id.0);
        for (index, index_key) in index_entries(key, s)? {
            self.writes.push((index.space(), index_key, None));
        }
        self.writes.push((Space::ById, id_key(s.id).to_vec(), None));
        self.writes.push((Space::Sessions, key.to_vec(), None));
        self.sessions.insert(*key, None);
        self.ids.insert(s.id.0, None);
        Ok(())
    }

    /// Removes the live sessions under `keys` and returns them; expired ones are left for the
    /// purge, which records their end.
    fn remove_live(&mut self, keys: &[Hash], now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(s) = self.session(key)?.filter(|s| !s.is_expired(now)) {
                self.drop_session(key, &s)?;
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// Which index an entry belongs to.
#[derive(Clone, Copy)]
enum Index {
    User,
    App,
    Expiry,
}

impl Index {
    fn space(self) -> Space {
        match self {
            Self::User => Space::ByUser,
            Self::App => Space::ByApp,
            Self::Expiry => Space::ByExpiry,
        }
    }
}

/// A keyspace, named.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Space {
    Sessions,
    ByUser,
    ByApp,
    ById,
    ByExpiry,
}

impl Spaces {
    fn get(&self, space: Space) -> &Keyspace {
        match space {
            Space::Sessions => &self.sessions,
            Space::ByUser => &self.by_user,
            Space::ByApp => &self.by_app,
            Space::ById => &self.by_id,
            Space::ByExpiry => &self.by_expiry,
        }
    }
}

/// Keeps the last write to each key, in order.
fn dedup(writes: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>) -> Vec<(Space, Vec<u8>, Option<Vec<u8>>)> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<_> = writes
        .into_iter()
        .rev()
        .filter(|(space, key, _)| seen.insert((*space, key.clone())))
        .collect();
    kept.reverse();
    kept
}

/// The index entries of session `s` under `key` (the by-id entry aside, which has a value).
fn index_entries(key: &Hash, s: &Session) -> Result<Vec<(Index, Vec<u8>)>, StoreError> {
    let mut out = Vec::with_capacity(3);
    if let Some(user) = s.kind.user() {
        out.push((Index::User, key_with_hash(&user_prefix(user), key)));
    }
    if let Some(app) = s.kind.app() {
        out.push((Index::App, key_with_hash(&app_prefix(app.as_str())?, key)));
    }
    out.push((Index::Expiry, expiry_key(s.expires.as_epoch_millis(), key)));
    Ok(out)
}

fn user_prefix(user: UserId) -> [u8; 8] {
    user.0.to_be_bytes()
}

/// Length-prefixed, so that no app id's prefix is another's.
fn app_prefix(app: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(app.len()).map_err(|_| StoreError::Backend {
        backend: "embedded",
        source: Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an app id longer than 65535 bytes cannot be indexed",
        )),
    })?;
    let mut out = Vec::with_capacity(2 + app.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(app.as_bytes());
    Ok(out)
}

fn id_key(id: SessionId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn expiry_key(expires_ms: u64, key: &Hash) -> Vec<u8> {
    key_with_hash(&expires_ms.to_be_bytes(), key)
}

fn key_with_hash(prefix: &[u8], key: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + key.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(key);
    out
}

/// The token hash at the end of an index key.
fn trailing_hash(index_key: &[u8]) -> Result<Hash, StoreError> {
    index_key
        .len()
        .checked_sub(32)
        .and_then(|start| index_key.get(start..))
        .and_then(|tail| Hash::try_from(tail).ok())
        .ok_or_else(|| corrupt("an index key shorter than a token hash"))
}

/// The token hashes of the index entries under `prefix`.
fn hashes_under(
    reader: &impl Readable,
    index: &Keyspace,
    prefix: &[u8],
) -> Result<Vec<Hash>, StoreError> {
    reader
        .prefix(index, prefix)
        .map(|entry| trailing_hash(&entry.key().map_err(storage)?))
        .collect()
}

/// One queued change: worked out inside its group, answered after the group's commit.
trait WriteOp: Send {
    fn apply(&mut self, group: &mut Group<'_>) -> Result<(), StoreError>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Job<T, F> {
    f: Option<F>,
    out: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut Group<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, group: &mut Group<'_>) -> Result<(), StoreError> {
        if let Some(f) = self.f.take() {
            self.out = Some(f(group)?);
        }
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let this = *self;
        let result = committed.and_then(|()| this.out.ok_or_else(writer_gone));
        // The waiter may have gone (its request was cancelled); the change stands regardless.
        let _ = this.reply.send(result);
    }
}

/// A change to queue, and the receiver of its answer.
type Queued<T> = (Box<dyn WriteOp>, oneshot::Receiver<Result<T, StoreError>>);

fn queued<T, F>(f: F) -> Queued<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Group<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let op = Box::new(Job {
        f: Some(f),
        out: None,
        reply,
    });
    (op, answer)
}

/// The writer thread: one batch and one commit per group of queued changes.
fn write_loop(db: &Database, spaces: &Spaces, ops: &mpsc::Receiver<Box<dyn WriteOp>>) {
    let mut group: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = ops.recv() {
        group.push(first);
        while group.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let committed = commit_group(db, spaces, &mut group);
        if let Err(e) = &committed {
            tracing::error!(error = %e, changes = group.len(), "session database commit failed");
        }
        for op in group.drain(..) {
            op.finish(committed.clone());
        }
    }
}

fn commit_group(
    db: &Database,
    spaces: &Spaces,
    ops: &mut [Box<dyn WriteOp>],
) -> Result<(), StoreError> {
    let mut group = Group {
        spaces,
        snapshot: db.snapshot(),
        writes: Vec::new(),
        rewrites: false,
        sessions: HashMap::new(),
        ids: HashMap::new(),
    };
    for op in ops.iter_mut() {
        // An error here is the storage failing, not a request's mistake: the whole group is
        // dropped (nothing is committed) and every waiter hears of it.
        op.apply(&mut group)?;
    }
    let writes = if group.rewrites {
        dedup(group.writes)
    } else {
        group.writes
    };
    // fdatasync: see "Durability" in the module documentation.
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    for (space, key, value) in writes {
        match value {
            Some(value) => batch.insert(spaces.get(space), key, value),
            None => batch.remove(spaces.get(space), key),
        }
    }
    batch.commit().map_err(storage)
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

fn encode(s: &Session) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(s).map_err(|e| StoreError::Backend {
        backend: "embedded",
        source: Arc::new(e),
    })
}

fn decode(bytes: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend {
        backend: "embedded",
        source: Arc::new(e),
    })
}

fn storage(e: fjall::Error) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        source: Arc::new(e),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        source: Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("session database: {what}"),
        )),
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the session database writer has stopped".into())
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
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = EmbeddedStore::open(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DB_DIR)), 0o700);
        drop(store);
    }

    fn session(user: i64, id: i64, now: Millis) -> Session {
        Session {
            id: SessionId(id),
            kind: crate::session::SessionKind::User { user: UserId(user) },
            created: now,
            expires: now.saturating_add(std::time::Duration::from_secs(3600)),
            client_ip: None,
            user_agent: None,
        }
    }

    /// Commits `ops` as one group, as the writer thread would, and answers them.
    fn commit(store: &EmbeddedStore, ops: Vec<Box<dyn WriteOp>>) {
        let mut ops = ops;
        let committed = commit_group(&store.db, &store.spaces, &mut ops);
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
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        let now = Millis::from_epoch_millis(1_000_000);
        let s = session(7, 70, now);
        let key = [1u8; 32];
        let value = encode(&s).unwrap();
        let s2 = s.clone();
        let (a, ins) = queued(move |g| g.insert(&key, &s2, value));
        let (b, rm) = queued(move |g| g.remove(&key));
        let (c, rm_again) = queued(move |g| g.remove(&key));
        commit(&store, vec![a, b, c]);
        assert!(answer(ins).is_ok());
        assert_eq!(answer(rm), Some(s));
        assert_eq!(answer(rm_again), None);
        let t = TokenHash::from_bytes(key);
        assert_eq!(store.get(&t, now).await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(store.list_user(UserId(7), now).await.unwrap().is_empty());
        for space in [
            &store.spaces.by_user,
            &store.spaces.by_id,
            &store.spaces.by_expiry,
        ] {
            assert!(space.is_empty().unwrap());
        }
        // The same after the journal is replayed.
        drop(store);
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        assert_eq!(store.get(&t, now).await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 0);
        assert!(store.spaces.by_user.is_empty().unwrap());
    }

    /// Ending a user's sessions ends the one added earlier in the same group too; a session id
    /// freed in a group can be given out again in the same group.
    #[tokio::test]
    async fn later_changes_see_earlier_ones_of_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        let now = Millis::from_epoch_millis(1_000_000);
        let (old_key, old) = ([2u8; 32], session(8, 80, now));
        store
            .insert(TokenHash::from_bytes(old_key), old.clone())
            .await
            .unwrap();

        let (new_key, new) = ([3u8; 32], session(8, 81, now));
        let value = encode(&new).unwrap();
        let new2 = new.clone();
        let (a, ins) = queued(move |g| g.insert(&new_key, &new2, value));
        let (b, ended) = queued(move |g| {
            let keys = g.hashes_under(Index::User, &user_prefix(UserId(8)), |s| {
                s.kind.user() == Some(UserId(8))
            })?;
            g.remove_live(&keys, now)
        });
        // The old session's id, free again, goes to a third session of another user.
        let (reuse_key, reuse) = ([4u8; 32], session(9, 80, now));
        let value = encode(&reuse).unwrap();
        let reuse2 = reuse.clone();
        let (c, reinsert) = queued(move |g| g.insert(&reuse_key, &reuse2, value));
        commit(&store, vec![a, b, c]);
        assert!(answer(ins).is_ok());
        let mut ended: Vec<i64> = answer(ended).iter().map(|s| s.id.0).collect();
        ended.sort_unstable();
        assert_eq!(ended, vec![80, 81]);
        assert!(answer(reinsert).is_ok());
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

    /// Index keys end in the token hash, and app prefixes cannot run into each other.
    #[test]
    fn index_keys() {
        let key = [7u8; 32];
        assert_eq!(trailing_hash(&expiry_key(5, &key)).unwrap(), key);
        assert!(trailing_hash(&[1, 2, 3]).is_err());
        let a = app_prefix("ab").unwrap();
        let b = app_prefix("abc").unwrap();
        assert!(!b.starts_with(&a));
    }
}
