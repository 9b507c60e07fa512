//! The embedded, durable backend (the default): the sessions and their indexes in memory (the
//! memory store's structures), and on disk an append-only journal of every change plus
//! periodic snapshots, under the data directory. One writer thread commits many requests'
//! changes together.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`EmbeddedStore`]: open (recovery), close, the [`SessionStore`] and [`Census`] impls, reads |
//! | `writer.rs` | the writer thread and its group commit, the shared state and what readers may see of it, the queue |
//! | `journal.rs` | the files: framed records, journal segments and snapshots, reading them back |
//! | `snapshot.rs` | writing a snapshot and dropping the segments it replaces |
//!
//! # Durability
//!
//! Every change (a session added, a session removed, a note) is one record, and all the records
//! of one group commit are one frame: its length, its CRC-32, then the records. The writer
//! appends the frame to the current journal segment and syncs it (`fdatasync`) before it lets
//! readers see the group's changes and answers any of its waiters. So a response that says a
//! session was made, a logout succeeded, or a user's or app's sessions were revoked is sent only
//! once that fact is on disk, and nothing a client was told is lost or comes back after a crash
//! (SIGKILL, power loss). A removal is a record of its own (the cascade of an app session, the
//! evictions of the per-user cap and the purge's expiries included, each named key by key), in
//! the same frame as what caused it, so it is all there or all gone.
//!
//! Each segment is allocated 64 MiB ahead (`fallocate`), so an append writes into blocks the
//! file already has and `fdatasync` persists the data with the little metadata needed to read
//! it back, without committing a change of the file's size (measured here: about 250 µs per
//! sync, against 700 to 1,000 µs for an append that grows the file). The written part ends at
//! the first all-zero frame header, which no frame has (the probe's frame holds a no-op
//! record); a full segment is followed by the next.
//!
//! A crash in the middle of an append leaves a torn frame at the segment's tail, shorter than
//! its length or failing its checksum. That group was never acknowledged, so recovery cuts it
//! off (and truncates the file there) and keeps everything before it. A damaged frame anywhere
//! else is not a torn write, and the store refuses to start rather than guess.
//!
//! When a write or a sync fails (a full disk, an I/O error), the group's changes are undone in
//! memory, its waiters get an error (503), and the writer refuses every later write in this
//! process: the store fails closed instead of acknowledging what it may not keep, and
//! [`SessionStore::failed`] tells the server to stop, so that its supervisor restarts it once
//! the cause is fixed. Reads go on from the state as last synced.
//!
//! # Reads
//!
//! Readers read the sessions in memory under one `parking_lot` mutex, as with the memory store,
//! so `get` costs what it costs there. While a group is being worked out and synced, its changes
//! are already in the maps (the group's later changes read its earlier ones, so two removals of
//! one session in one group have exactly one winner), and readers look around them: the group
//! keeps the keys it added and the sessions it removed aside, and every read answers as the last
//! synced commit left things. Once the frame is synced that aside is cleared, which is what makes
//! the group visible.
//!
//! # Snapshots and start-up
//!
//! Once the journal since the last snapshot is larger than 64 MiB (or than that snapshot, when
//! it is larger), the writer moves on to a new segment and a thread writes the live sessions
//! (expired ones are left out) and the notes to `snapshot-N.partial`, in chunks under the lock,
//! then syncs it, renames it to `snapshot-N.snap` and syncs the folder; only then are the older
//! snapshot and segments removed. Start-up reads the newest complete snapshot and replays the
//! segments from N on (decoding on one thread, applying on another, the indexes built at once
//! at the end), then goes on appending to the last segment. A snapshot takes the lock once to list the keys (a few milliseconds
//! with a million sessions), then in chunks of 1,024 sessions. A crash before the rename leaves a partial file, which start-up removes:
//! it then uses the older snapshot and segments, which are all still there. The snapshot is
//! fuzzy, copied while the writer goes on; see [`snapshot::start`] for why replaying the new
//! segments over it is exact. So the journal stays bounded, and start-up reads at most about
//! twice the live set.
//!
//! # Closing
//!
//! [`EmbeddedStore::close`] closes the queue and waits, on a blocking thread, until the writer
//! has committed and answered every queued change, finished the snapshot under way (or written
//! one, when the journal since the last is longer than 4 MiB and a quarter of that snapshot, so
//! that the next start reads it instead of replaying the journal) and let go of the folder's
//! lock. Dropping the store only closes the queue: the writer then does the same
//! on its own, and nothing waits for it (a later [`EmbeddedStore::open`] of the folder in this
//! process does). Neither changes what is durable: every acknowledged change was synced before
//! it was acknowledged.
//!
//! # Layout
//!
//! The folder `data_dir/sessions.db/` holds `journal.lock` (locked while a store has the folder
//! open), the segments `journal-N.log` and the snapshots `snapshot-N.snap` (N, 16 digits: the
//! first segment the snapshot is continued by). Each file starts with a head frame (kind and
//! [`LAYOUT_VERSION`]). A record is a tag byte: `P`, token hash (32 bytes), length (4 bytes) and
//! the session as JSON; `D`, token hash; `N`, name and value, each length-prefixed; a snapshot
//! ends with `E` and its session count. Sessions are JSON: small, self-describing (a field added
//! later reads back from old files through `serde(default)`), and the Redis backend's encoding
//! too.
//!
//! A folder in the layout of earlier releases (a fjall database: `version`, `keyspaces/`) is
//! not read: [`EmbeddedStore::open`] refuses it with an error that says to move it away.
//! Sessions are short-lived, and starting empty only makes every client authenticate again.

mod journal;
mod snapshot;
mod writer;

pub use journal::LAYOUT_VERSION;
pub use writer::MAX_BATCH;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::MutexGuard;

use self::journal::{FileName, Kind, ReadError, Record, Segment, Tail};
use self::writer::{queued, Files, Shared, State, Tx, Writer};
use super::memory::Inner;
use super::table::SessionTable;
use super::{Census, KindCounts, OpenError, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::UserId;
use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// The store's folder's name inside the data directory.
pub const DB_DIR: &str = "sessions.db";

/// Files that only an earlier release's fjall database has.
const FJALL_FILES: [&str; 3] = ["version", "keyspaces", "journals"];

/// Sessions in memory, journalled under the data directory; see the module documentation for
/// what is guaranteed, and [`EmbeddedStore::close`] for how to stop it.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: Writer,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir/sessions.db`: reads the newest snapshot and
    /// replays the journal after it, cutting off a torn tail, then starts the writer thread. The
    /// directories are created (mode 0700 on Unix) when missing. Fails when another process (or
    /// another open store in this one) has the folder open, when it holds an earlier release's
    /// database, or when a file is damaged other than at the journal's tail. Blocks while it
    /// reads, and first, when a store of the same folder in this process was dropped without
    /// [`EmbeddedStore::close`], until that store's writer has let go.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        let path = data_dir.join(DB_DIR);
        let dir_error = |source| OpenError::DataDir {
            path: data_dir.to_owned(),
            source,
        };
        create_private_dir(data_dir).map_err(dir_error)?;
        // Private: token digests and who holds which session are the server user's only.
        create_private_dir(&path).map_err(dir_error)?;
        let folder = std::fs::canonicalize(&path).map_err(dir_error)?;
        writer::wait_for_dropped(&folder);
        let db_error = |source: Box<dyn std::error::Error + Send + Sync>| OpenError::Database {
            path: path.clone(),
            source,
        };
        for name in FJALL_FILES {
            if folder.join(name).exists() {
                return Err(OpenError::OldLayout { path: folder });
            }
        }
        let lock = lock_folder(&folder).map_err(|e| match e {
            Locked::Busy => OpenError::Locked {
                path: folder.clone(),
            },
            Locked::Io(e) => db_error(Box::new(e)),
        })?;
        let recovered = recover(&folder).map_err(|e| match e {
            ReadError::Version { found, .. } => OpenError::Layout {
                path: path.clone(),
                found,
                expected: LAYOUT_VERSION,
            },
            e => db_error(Box::new(e)),
        })?;
        let segment = match recovered.last {
            Some((seq, end)) => Segment::reopen(&folder, seq, end),
            None => Segment::create(&folder, recovered.next_seq),
        }
        .map_err(|e| db_error(Box::new(e)))?;
        let shared = Arc::new(Shared {
            state: parking_lot::Mutex::new(State::new(recovered.inner, recovered.notes)),
            closed: AtomicBool::new(false),
        });
        let files = Files {
            dir: folder.clone(),
            segment,
            lock,
            snapshot_bytes: recovered.snapshot_bytes,
            journal_bytes: recovered.journal_bytes,
        };
        let writer =
            Writer::start(shared.clone(), files, folder).map_err(|e| db_error(Box::new(e)))?;
        Ok(Self {
            shared,
            writer,
            path,
        })
    }

    /// The store's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the store: every change queued so far is committed (and answered), later ones are
    /// refused as unavailable, reads fail from then on too, and this returns once the writer
    /// thread has finished (or written) a snapshot and let go of the folder. The waiting happens on
    /// a blocking thread, never on the runtime's. Returns at once when the store is already
    /// closed or another call is closing it.
    ///
    /// Dropping the store without closing it only signals the writer, which then does the same
    /// on its own thread; nothing is lost either way, since every acknowledged change was
    /// synced before it was acknowledged.
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// Queues `f` for the next group commit and waits until that commit has returned.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = queued(f);
        self.writer.send(op)?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// The state, for one short read; unavailable once closed.
    fn read(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(self.shared.state.lock())
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
        self.write(move |tx| tx.sessions.insert_capped(key, session, keep))
            .await
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        Ok(self
            .read()?
            .synced(key)
            .filter(|s| !s.is_expired(now))
            .cloned())
    }

    async fn live_by_kind(&self, _now: Millis) -> Result<KindCounts, StoreError> {
        Ok(self.read()?.kinds())
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        let key = *key;
        self.write(move |tx| Ok(tx.sessions.remove_one(&key, now)))
            .await
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        Ok(self.read()?.list_user(user, now))
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let selector = selector.clone();
        self.write(move |tx| Ok(tx.sessions.remove_matching(&selector, now)))
            .await
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        self.write(move |tx| Ok(tx.sessions.remove_by_id(user, id, now)))
            .await
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        self.write(move |tx| Ok(tx.sessions.purge_expired(now, limit)))
            .await
    }

    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read()?.notes.get(name).cloned())
    }

    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write(move |tx| {
            tx.write_note(name, value);
            Ok(())
        })
        .await
    }

    async fn failed(&self) -> String {
        self.writer.failed().await
    }

    /// An empty frame through the writer's queue, appended and synced like a session: fails
    /// when the writer has stopped, a commit has failed, or the disk takes no write.
    async fn probe(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.sync();
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
        Ok(self.read()?.count())
    }
}

/// What start-up read back.
struct Recovered {
    inner: Inner,
    notes: HashMap<String, Vec<u8>>,
    /// The segment to write next when there is none to go on with.
    next_seq: u64,
    /// The last segment and where its intact frames end: the one to go on appending to.
    last: Option<(u64, u64)>,
    snapshot_bytes: u64,
    journal_bytes: u64,
}

/// Reads the folder back: removes partial snapshots (and what a newer snapshot replaced),
/// loads the newest snapshot, replays the segments after it in order, and cuts a torn tail off
/// the last one.
fn recover(dir: &Path) -> Result<Recovered, ReadError> {
    let started = std::time::Instant::now();
    let io = |source| ReadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        match FileName::parse(&name.to_string_lossy()) {
            FileName::Segment(n) => segments.push(n),
            FileName::Snapshot(n) => snapshots.push(n),
            // A snapshot cut short by a crash: the older one and its segments are still here.
            FileName::Partial => std::fs::remove_file(entry.path()).map_err(io)?,
            FileName::Lock | FileName::Unknown => {}
        }
    }
    let base = snapshots.iter().copied().max().unwrap_or(0);
    // Left by a crash after a snapshot was put in place but before what it replaces went.
    snapshot::remove_before(dir, base).map_err(io)?;
    segments.retain(|n| *n >= base);
    segments.sort_unstable();

    // Decoding (here) and building the map (on a second thread) overlap.
    std::thread::scope(|scope| {
        // Sized for the snapshot's sessions up front: growing a map of a million moves every
        // entry several times over.
        let expected = (base > 0)
            .then(|| journal::snapshot_sessions(&dir.join(journal::snapshot_name(base))))
            .flatten()
            .unwrap_or(0);
        let mut pipe = Pipe::start(scope, usize::try_from(expected).unwrap_or(0));
        let mut snapshot_bytes = 0;
        if base > 0 {
            let path = dir.join(journal::snapshot_name(base));
            let (mut puts, mut ended) = (0u64, None);
            let tail = journal::read(&path, Kind::Snapshot, |record| {
                match record {
                    Record::End(count) => ended = Some(count),
                    record => {
                        puts += u64::from(matches!(record, Record::Put(..)));
                        pipe.push(record);
                    }
                }
                Ok(())
            })?;
            if !matches!(tail, Tail::Clean(_)) || ended != Some(puts) {
                return Err(ReadError::Corrupt {
                    path,
                    what: "the snapshot is incomplete".into(),
                });
            }
            snapshot_bytes = std::fs::metadata(&path).map_err(io)?.len();
        }
        let mut journal_bytes = 0;
        let mut last = None;
        for (i, seq) in segments.iter().enumerate() {
            let path = dir.join(journal::segment_name(*seq));
            let tail = journal::read(&path, Kind::Journal, |record| {
                pipe.push(record);
                Ok(())
            })?;
            let end = match tail {
                Tail::Clean(end) => end,
                Tail::Torn(offset) => offset,
            };
            if let Tail::Torn(offset) = tail {
                if i + 1 < segments.len() {
                    // Every segment but the last was synced whole before the next one began.
                    return Err(ReadError::Corrupt {
                        path,
                        what: format!("damaged at byte {offset}, and a later segment follows"),
                    });
                }
                tracing::warn!(file = %path.display(), offset, "cutting off a torn write at the journal's end");
                journal::truncate(&path, offset).map_err(io)?;
            }
            journal_bytes += end;
            last = Some((*seq, end));
        }
        let next_seq = segments.last().copied().unwrap_or(base).max(base) + 1;
        let loader = pipe.finish();
        let read = started.elapsed();
        let inner = Inner::from_sessions(loader.sessions);
        tracing::info!(
            sessions = inner.sessions.len(),
            snapshot_bytes,
            journal_bytes,
            read_ms = read.as_millis(),
            index_ms = (started.elapsed() - read).as_millis(),
            "session store read back"
        );
        Ok(Recovered {
            inner,
            notes: loader.notes,
            next_seq,
            last,
            snapshot_bytes,
            journal_bytes,
        })
    })
}

/// Hands the records read back to a second thread that applies them to a [`Loader`], in
/// batches, so that decoding the files and building the map overlap on two cores.
struct Pipe<'scope> {
    tx: std::sync::mpsc::SyncSender<Vec<Record>>,
    batch: Vec<Record>,
    applier: std::thread::ScopedJoinHandle<'scope, Loader>,
}

/// Records per batch handed to the applier.
const PIPE_BATCH: usize = 4096;

impl<'scope> Pipe<'scope> {
    /// `sessions`: how many sessions the map is sized for up front.
    fn start(scope: &'scope std::thread::Scope<'scope, '_>, sessions: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Record>>(8);
        let applier = scope.spawn(move || {
            let mut loader = Loader::default();
            loader.sessions.reserve(sessions);
            for batch in rx {
                for record in batch {
                    loader.apply(record);
                }
            }
            loader
        });
        Self {
            tx,
            batch: Vec::with_capacity(PIPE_BATCH),
            applier,
        }
    }

    fn push(&mut self, record: Record) {
        self.batch.push(record);
        if self.batch.len() == PIPE_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(PIPE_BATCH));
        // Fails only when the applier is gone, which happens only if it panicked: `finish`
        // passes that panic on.
        let _ = self.tx.send(batch);
    }

    /// Applies what is left and returns the loader with every record applied.
    fn finish(mut self) -> Loader {
        self.flush();
        drop(self.tx);
        self.applier
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Applies records read back to the state being rebuilt: the sessions only, whose indexes
/// [`Inner::from_sessions`] builds once every record is read (a replay may set and clear a key
/// several times; only the last record of each key counts).
#[derive(Default)]
struct Loader {
    sessions: SessionTable,
    notes: HashMap<String, Vec<u8>>,
    /// User agents seen, so that sessions read back share one copy each, as the server's do.
    agents: HashSet<Arc<str>>,
}

impl Loader {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Put(key, mut session) => {
                if let Some(agent) = session.user_agent.take() {
                    let shared = match self.agents.get(&agent) {
                        Some(shared) => shared.clone(),
                        None => {
                            self.agents.insert(agent.clone());
                            agent
                        }
                    };
                    session.user_agent = Some(shared);
                }
                self.sessions.replay(key, session);
            }
            Record::Del(key) => {
                self.sessions.replay_remove(&key);
            }
            Record::Note(name, value) => {
                self.notes.insert(name, value);
            }
            Record::End(_) => {}
        }
    }
}

/// Why the folder's lock was not taken.
enum Locked {
    Busy,
    Io(std::io::Error),
}

/// Takes the folder's lock (an advisory lock on `journal.lock`), held while the file is open.
fn lock_folder(dir: &Path) -> Result<std::fs::File, Locked> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(journal::LOCK_FILE))
        .map_err(Locked::Io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Locked::Busy),
        Err(std::fs::TryLockError::Error(e)) => Err(Locked::Io(e)),
    }
}

/// A failure of this backend's storage or encoding.
fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend {
        backend: "embedded",
        source: Arc::new(e),
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the session store writer has stopped".into())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the session store is closed".into())
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
mod tests;
