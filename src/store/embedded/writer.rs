//! The writer thread, which owns all writing: it works each group of queued changes out on the
//! sessions in memory, appends their records to the journal as one frame, syncs it, and only
//! then lets readers see them and answers the waiters; it also starts the snapshots. Here too
//! are the queue, the shared state readers read, and the handle that stops the thread.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::journal::{Frame, Segment};
use super::{snapshot, writer_gone};
use crate::chain::Chain;
use crate::clock::Millis;
use crate::directory::UserId;
use crate::session::Session;
use crate::store::memory::{Change, Inner};
use crate::store::{KindCounts, StoreError};
use crate::token::{BuildTokenHasher, TokenHash};

/// The most changes one commit carries.
pub const MAX_BATCH: usize = 4096;

/// The journal written since the last snapshot past which the writer starts a new snapshot:
/// this, or the size of the last snapshot when that is larger (so that writing snapshots costs
/// at most about as much as writing the journal).
pub(super) const SNAPSHOT_AFTER_BYTES: u64 = 64 * 1024 * 1024;

/// The journal since the last snapshot past which a clean stop writes a snapshot (when it is
/// also at least a quarter of that snapshot): below it, replaying is cheaper than writing.
const SHUTDOWN_SNAPSHOT_AFTER_BYTES: u64 = 4 * 1024 * 1024;

/// The writer threads of stores dropped without [`EmbeddedStore::close`] that may still be
/// finishing, by folder. [`EmbeddedStore::open`] of such a folder in this process waits for
/// them ([`wait_for_dropped`]): it would find the folder locked until then.
///
/// [`EmbeddedStore::close`]: super::EmbeddedStore::close
/// [`EmbeddedStore::open`]: super::EmbeddedStore::open
static DROPPED: Mutex<Vec<(PathBuf, JoinHandle<()>)>> = Mutex::new(Vec::new());

/// What the store's readers and its writer share.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Set by [`Writer::close`]: reads fail from then on, as writes do.
    pub(super) closed: AtomicBool,
}

/// The sessions as the writer has worked them out, and what readers must not see yet.
pub(super) struct State {
    /// Every change worked out so far, the current group's included.
    pub(super) inner: Inner,
    /// How the current group's changes differ from what is on disk.
    pub(super) staged: Staged,
    /// The server's notes, as synced.
    pub(super) notes: HashMap<String, Vec<u8>>,
}

/// What the group being committed has changed, for readers to see around: they read the state
/// as the last synced commit left it.
#[derive(Default)]
pub(super) struct Staged {
    /// Keys with a session now that had none on disk.
    added: HashSet<TokenHash, BuildTokenHasher>,
    /// The sessions on disk under keys this group removed (or removed and then reused).
    removed: HashMap<TokenHash, Session, BuildTokenHasher>,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    fn note(&mut self, change: Change) {
        match change {
            Change::Added(key) => {
                if !self.removed.contains_key(&key) {
                    self.added.insert(key);
                }
            }
            Change::Removed(key, session) => {
                if !self.added.remove(&key) {
                    self.removed.entry(key).or_insert(session);
                }
            }
        }
    }
}

impl State {
    /// A state rebuilt from disk.
    pub(super) fn new(inner: Inner, notes: HashMap<String, Vec<u8>>) -> Self {
        Self {
            inner,
            staged: Staged::default(),
            notes,
        }
    }

    /// The session under `key` as on disk, expired or not.
    pub(super) fn synced(&self, key: &TokenHash) -> Option<&Session> {
        if self.staged.is_empty() {
            return self.inner.sessions.get(key);
        }
        if let Some(s) = self.staged.removed.get(key) {
            return Some(s);
        }
        if self.staged.added.contains(key) {
            return None;
        }
        self.inner.sessions.get(key)
    }

    /// The sessions that act as `user`, live at `now`, as on disk.
    pub(super) fn list_user(&self, user: UserId, now: Millis) -> Vec<Session> {
        let mut out: Vec<Session> = self
            .inner
            .user_keys(user)
            .filter(|k| !self.staged.added.contains(*k) && !self.staged.removed.contains_key(*k))
            .filter_map(|k| self.inner.sessions.get(k))
            .chain(
                self.staged
                    .removed
                    .values()
                    .filter(|s| s.kind.user() == Some(user)),
            )
            .filter(|s| !s.is_expired(now))
            .cloned()
            .collect();
        out.shrink_to_fit();
        out
    }

    /// The number of sessions on disk.
    pub(super) fn count(&self) -> usize {
        let gone = self
            .staged
            .removed
            .keys()
            .filter(|k| !self.inner.sessions.contains_key(k))
            .count();
        self.inner.sessions.len() - self.staged.added.len() + gone
    }

    /// The sessions on disk per kind.
    pub(super) fn kinds(&self) -> KindCounts {
        let mut counts = self.inner.kinds;
        for key in &self.staged.added {
            if let Some(s) = self.inner.sessions.get(key) {
                counts.sub(KindCounts::tag_of(&s.kind), 1);
            }
        }
        for (key, s) in &self.staged.removed {
            counts.add(KindCounts::tag_of(&s.kind), 1);
            if let Some(now) = self.inner.sessions.get(key) {
                counts.sub(KindCounts::tag_of(&now.kind), 1);
            }
        }
        counts
    }

    /// The keys of every session on disk (for a snapshot).
    pub(super) fn synced_keys(&self) -> Vec<TokenHash> {
        let mut keys: Vec<TokenHash> = self
            .inner
            .sessions
            .keys()
            .filter(|k| !self.staged.added.contains(*k))
            .copied()
            .collect();
        keys.extend(
            self.staged
                .removed
                .keys()
                .filter(|k| !self.inner.sessions.contains_key(k)),
        );
        keys
    }

    /// Moves the changes noted since [`Inner::record`] aside for readers to look around (the
    /// tests' way in; the writer notes them as it journals them).
    #[cfg(test)]
    pub(super) fn stage(&mut self) {
        for change in self.inner.take_changes() {
            self.staged.note(change);
        }
    }

    /// The group's changes are on disk: readers see them from now on.
    pub(super) fn publish(&mut self, notes: Vec<(String, Vec<u8>)>) {
        self.staged = Staged::default();
        self.notes.extend(notes);
    }

    /// The group's changes are not on disk: undoes them.
    pub(super) fn roll_back(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        for key in &staged.added {
            self.inner.remove(key);
        }
        for (key, session) in staged.removed {
            self.inner.put(key, session);
        }
    }
}

/// What a queued change may do: change the sessions, and write a note or the probe's empty
/// commit. Only the writer thread makes one.
pub(super) struct Tx<'a> {
    /// The sessions, with the group's earlier changes: a change sees them.
    pub(super) sessions: &'a mut Inner,
    notes: &'a mut Vec<(String, Vec<u8>)>,
    sync: &'a mut bool,
    snapshot: &'a mut bool,
}

impl Tx<'_> {
    /// Replaces the note `name` when the group commits.
    pub(super) fn write_note(&mut self, name: String, value: Vec<u8>) {
        self.notes.push((name, value));
    }

    /// Makes the group write and sync its frame even when nothing else changes.
    pub(super) fn sync(&mut self) {
        *self.sync = true;
    }

    /// Makes the writer start a snapshot after this group, however short the journal (the
    /// tests' way to take one).
    #[cfg_attr(not(test), expect(dead_code))]
    pub(super) fn snapshot(&mut self) {
        *self.snapshot = true;
    }
}

/// The store's handle on its writer thread: the queue, and the thread to wait for.
pub(super) struct Writer {
    /// `None` once closed: the writer ends when it sees the queue close.
    queue: Mutex<Option<mpsc::Sender<Box<dyn WriteOp>>>>,
    /// `None` once [`Writer::close`] has taken it to wait for it.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The store's folder (canonical), for [`DROPPED`].
    folder: PathBuf,
    /// Set, once, to what failed when a commit fails: the writer refuses every write after.
    failed: watch::Receiver<Option<String>>,
    shared: Arc<Shared>,
}

/// What the writer thread owns besides the shared state.
pub(super) struct Files {
    /// The store's folder.
    pub(super) dir: PathBuf,
    /// The segment appended to.
    pub(super) segment: Segment,
    /// The lock file, held while the folder is open.
    pub(super) lock: std::fs::File,
    /// The size of the snapshot read at start-up (zero if none).
    pub(super) snapshot_bytes: u64,
    /// The journal read at start-up, past that snapshot.
    pub(super) journal_bytes: u64,
}

impl Writer {
    /// Starts the writer thread over `shared`, writing to `files`.
    pub(super) fn start(
        shared: Arc<Shared>,
        files: Files,
        folder: PathBuf,
    ) -> std::io::Result<Self> {
        let (queue, ops) = mpsc::channel();
        let (failed_tx, failed) = watch::channel(None);
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sessionauth-store-writer".into())
            .spawn(move || write_loop(&state, files, &ops, &failed_tx))?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
            folder,
            failed,
            shared,
        })
    }

    /// Completes with what failed once a commit has failed; never while commits succeed.
    pub(super) async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        // The writer ending without a failure (the store closed) means nothing will fail now.
        let reason = failed
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Queues `op` for the next group commit.
    pub(super) fn send(&self, op: Box<dyn WriteOp>) -> Result<(), StoreError> {
        self.queue
            .lock()
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(op)
            .map_err(|_| writer_gone())
    }

    /// Closes the queue and waits, on a blocking thread, until the writer has committed what
    /// was queued, finished (or written) a snapshot and let go of the folder. Returns at once when
    /// the writer is already closed or being closed by another call.
    pub(super) async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.queue.lock().take();
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the session store writer panicked"),
            Err(e) => tracing::error!(error = %e, "waiting for the session store writer failed"),
        }
    }
}

impl Drop for Writer {
    /// Only signals, never waits (this may run on an async runtime's thread): dropping the
    /// queue ends the writer once it has committed what was queued.
    fn drop(&mut self) {
        self.queue.get_mut().take();
        if let Some(thread) = self.thread.get_mut().take() {
            let mut dropped = DROPPED.lock();
            dropped.retain(|(_, t)| !t.is_finished());
            dropped.push((std::mem::take(&mut self.folder), thread));
        }
    }
}

/// Waits for the writers of this process's stores of `folder` that were dropped and may still
/// hold it. Blocks; [`EmbeddedStore::open`](super::EmbeddedStore::open), which blocks anyway,
/// calls it.
pub(super) fn wait_for_dropped(folder: &Path) {
    let mine: Vec<_> = DROPPED
        .lock()
        .extract_if(.., |(f, _)| f.as_path() == folder)
        .collect();
    for (_, thread) in mine {
        // A writer that panicked has let go of the folder all the same.
        let _ = thread.join();
    }
}

/// One queued change: worked out inside its group, answered after the group's commit.
pub(super) trait WriteOp: Send {
    /// Works the change out on the sessions, as the changes queued before it left them.
    fn apply(&mut self, tx: &mut Tx<'_>);
    /// Answers the waiter with the change's outcome, once its group's commit has returned.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A change to queue, and the receiver of its answer.
pub(super) type Queued<T> = (Box<dyn WriteOp>, oneshot::Receiver<Result<T, StoreError>>);

/// Wraps `f` as a change to queue.
pub(super) fn queued<T, F>(f: F) -> Queued<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let op = Box::new(Job {
        f: Some(f),
        out: None,
        reply,
    });
    (op, answer)
}

/// The writer thread's work: one frame and one sync per group of queued changes, until the
/// queue closes and is empty; then it finishes (or writes) a snapshot and lets go of the folder.
fn write_loop(
    shared: &Arc<Shared>,
    mut files: Files,
    ops: &mpsc::Receiver<Box<dyn WriteOp>>,
    failed: &watch::Sender<Option<String>>,
) {
    let mut group: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_BATCH);
    let mut frame = Frame::default();
    let mut broken: Option<StoreError> = None;
    let mut since_snapshot = files.journal_bytes;
    let mut last_snapshot = files.snapshot_bytes;
    let mut snapshotting: Option<snapshot::Running> = None;
    while let Ok(first) = ops.recv() {
        group.push(first);
        while group.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if let Some(e) = &broken {
            // A commit failed: nothing more is written in this process.
            for op in group.drain(..) {
                op.finish(Err(e.clone()));
            }
            continue;
        }
        frame.clear();
        let mut snapshot_now = false;
        let committed = commit_group(
            shared,
            &mut files.segment,
            &mut group,
            &mut frame,
            &mut snapshot_now,
        );
        if let Err(e) = &committed {
            let reason = Chain(e).to_string();
            tracing::error!(error = %reason, changes = group.len(), "session store commit failed");
            failed.send_if_modified(|failed| {
                let first = failed.is_none();
                if first {
                    *failed = Some(reason);
                }
                first
            });
            broken = Some(e.clone());
        }
        for op in group.drain(..) {
            op.finish(committed.clone());
        }
        since_snapshot += frame.len() as u64;
        if let Some(running) = snapshotting.take() {
            match running.poll() {
                Ok(Some(bytes)) => last_snapshot = bytes,
                Ok(None) => {}
                Err(running) => snapshotting = Some(running),
            }
        }
        if snapshotting.is_none()
            && broken.is_none()
            && (snapshot_now || since_snapshot >= SNAPSHOT_AFTER_BYTES.max(last_snapshot))
        {
            match snapshot::start(shared, &files.dir, &mut files.segment) {
                Ok(running) => {
                    since_snapshot = 0;
                    snapshotting = Some(running);
                }
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "cannot start a session store snapshot");
                    since_snapshot = 0;
                }
            }
        }
    }
    // A clean stop leaves a snapshot behind when the journal since the last one is long (as
    // PostgreSQL's shutdown checkpoint does), so that the next start reads that snapshot
    // instead of replaying the journal: one under way is finished, or one is written now.
    // Not after a failed write (the disk is suspect), nor when the journal is short.
    let snapshotting = match snapshotting {
        Some(running) if broken.is_some() => {
            running.stop();
            None
        }
        None if broken.is_none()
            && since_snapshot >= (last_snapshot / 4).max(SHUTDOWN_SNAPSHOT_AFTER_BYTES) =>
        {
            tracing::info!(
                journal_bytes = since_snapshot,
                "writing a session store snapshot before stopping (the next start reads it \
                 instead of replaying the journal)"
            );
            snapshot::start(shared, &files.dir, &mut files.segment)
                .inspect_err(|e| {
                    tracing::error!(error = %Chain(e), "cannot start a session store snapshot");
                })
                .ok()
        }
        running => running,
    };
    if let Some(running) = snapshotting {
        running.finish();
    }
    drop(files.lock);
}

/// Works out `ops` in order as one group, appends their records as one frame and syncs it, then
/// publishes them to readers (or, when that failed, undoes them).
fn commit_group(
    shared: &Shared,
    segment: &mut Segment,
    ops: &mut [Box<dyn WriteOp>],
    frame: &mut Frame,
    snapshot_now: &mut bool,
) -> Result<(), StoreError> {
    let mut notes = Vec::new();
    let mut sync = false;
    let mut encoded = Ok(());
    for op in ops.iter_mut() {
        let mut state = shared.state.lock();
        let state = &mut *state;
        state.inner.record();
        op.apply(&mut Tx {
            sessions: &mut state.inner,
            notes: &mut notes,
            sync: &mut sync,
            snapshot: snapshot_now,
        });
        for change in state.inner.take_changes() {
            match &change {
                Change::Added(key) => {
                    if let Some(s) = state.inner.sessions.get(key) {
                        encoded = encoded.and(frame.put(key, s).map_err(super::backend));
                    }
                }
                Change::Removed(key, _) => frame.del(key),
            }
            state.staged.note(change);
        }
    }
    for (name, value) in &notes {
        frame.note(name, value);
    }
    if sync && frame.is_empty() {
        frame.sync();
    }
    let written = match encoded {
        Ok(()) if frame.is_empty() && !sync => Ok(()),
        Ok(()) => segment.append(frame).map_err(super::backend),
        Err(e) => Err(e),
    };
    let mut state = shared.state.lock();
    match written {
        Ok(()) => state.publish(notes),
        Err(_) => state.roll_back(),
    }
    written
}

struct Job<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, tx: &mut Tx<'_>) {
        if let Some(f) = self.f.take() {
            self.out = Some(f(tx));
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let this = *self;
        let result = committed.and_then(|()| this.out.unwrap_or_else(|| Err(writer_gone())));
        // The waiter may have gone (its request was cancelled); the change stands regardless.
        let _ = this.reply.send(result);
    }
}
