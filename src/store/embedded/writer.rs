//! The writer thread, which owns all writing and, at the end, closes the database; the queue
//! that brings it changes and takes back their answers; and the handle that stops it.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use super::group::Group;
use super::{writer_gone, Db};
use crate::store::StoreError;

/// The most changes one commit carries.
pub const MAX_BATCH: usize = 4096;

/// How long the writer, once its queue has closed, waits for fjall's queued flushes.
const CLOSE_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// The writer threads of stores dropped without [`EmbeddedStore::close`] that may still be
/// closing their database, by database folder. [`EmbeddedStore::open`] of such a folder in this
/// process waits for them ([`wait_for_dropped`]): it would find the folder locked until then.
///
/// [`EmbeddedStore::close`]: super::EmbeddedStore::close
/// [`EmbeddedStore::open`]: super::EmbeddedStore::open
static DROPPED: Mutex<Vec<(PathBuf, JoinHandle<()>)>> = Mutex::new(Vec::new());

/// The store's handle on its writer thread: the queue, and the thread to wait for.
pub(super) struct Writer {
    /// `None` once closed: the writer ends when it sees the queue close.
    queue: Mutex<Option<mpsc::Sender<Box<dyn WriteOp>>>>,
    /// `None` once [`Writer::close`] has taken it to wait for it.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The database folder (canonical), for [`DROPPED`].
    folder: PathBuf,
    /// Set, once, to what failed when a commit fails: fjall refuses every write after a failed
    /// journal write (it poisons the database), so the store cannot serve again in this process.
    failed: watch::Receiver<Option<String>>,
}

impl Writer {
    /// Starts the writer thread, which owns `db` from now on: the store reads through the
    /// returned [`Weak`], and the database closes when the writer ends (see [`Writer::close`]).
    pub(super) fn start(db: Db, folder: PathBuf) -> std::io::Result<(Self, Weak<Db>)> {
        let db = Arc::new(db);
        let reader = Arc::downgrade(&db);
        let (queue, ops) = mpsc::channel();
        let (failed_tx, failed) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("sessionauth-store-writer".into())
            .spawn(move || {
                write_loop(&db, &ops, &failed_tx);
                settle(&db);
                // Unless a read still holds it, this is the database's last handle: fjall stops
                // its worker thread and syncs its journal here, off the async runtime.
                drop(db);
            })?;
        let writer = Self {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
            folder,
            failed,
        };
        Ok((writer, reader))
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
    /// was queued, fjall's flushes are done and the database is closed. Returns at once when
    /// the writer is already closed or being closed by another call.
    pub(super) async fn close(&self) {
        self.queue.lock().take();
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the session database writer panicked"),
            Err(e) => tracing::error!(error = %e, "waiting for the session database writer failed"),
        }
    }
}

impl Drop for Writer {
    /// Only signals, never waits (this may run on an async runtime's thread): dropping the
    /// queue ends the writer once it has committed what was queued, and the writer thread then
    /// closes the database on its own.
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
/// be closing the database. Blocks; [`EmbeddedStore::open`](super::EmbeddedStore::open), which
/// blocks anyway, calls it.
pub(super) fn wait_for_dropped(folder: &Path) {
    let mine: Vec<_> = DROPPED
        .lock()
        .extract_if(.., |(f, _)| f.as_path() == folder)
        .collect();
    for (_, thread) in mine {
        // A writer that panicked has let go of the database all the same.
        let _ = thread.join();
    }
}

/// One queued change: worked out inside its group, answered after the group's commit.
pub(super) trait WriteOp: Send {
    /// Works the change out against `group`, as the changes queued before it left it.
    fn apply(&mut self, group: &mut Group<'_>) -> Result<(), StoreError>;
    /// Answers the waiter with the change's outcome, once its group's commit has returned.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A change to queue, and the receiver of its answer.
pub(super) type Queued<T> = (Box<dyn WriteOp>, oneshot::Receiver<Result<T, StoreError>>);

/// Wraps `f` as a change to queue.
pub(super) fn queued<T, F>(f: F) -> Queued<T>
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

/// The writer thread's work: one batch and one commit per group of queued changes, until the
/// queue closes and is empty.
fn write_loop(
    db: &Db,
    ops: &mpsc::Receiver<Box<dyn WriteOp>>,
    failed: &watch::Sender<Option<String>>,
) {
    let mut group: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = ops.recv() {
        group.push(first);
        while group.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let committed = commit_group(db, &mut group);
        if let Err(e) = &committed {
            let reason = crate::chain::Chain(e).to_string();
            tracing::error!(error = %reason, changes = group.len(), "session database commit failed");
            failed.send_if_modified(|failed| {
                let first = failed.is_none();
                if first {
                    *failed = Some(reason);
                }
                first
            });
        }
        for op in group.drain(..) {
            op.finish(committed.clone());
        }
    }
}

/// Works out `ops` in order as one group and commits it.
pub(super) fn commit_group(db: &Db, ops: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    let mut group = Group::new(db);
    for op in ops.iter_mut() {
        // An error here is the storage failing, not a request's mistake: the whole group is
        // dropped (nothing is committed) and every waiter hears of it.
        op.apply(&mut group)?;
    }
    group.commit(&db.database)
}

/// fjall drops flushes still queued when it closes, and the next start then replays their
/// journal. Letting them finish first keeps that replay to the active journal.
fn settle(db: &Db) {
    let deadline = Instant::now() + CLOSE_FLUSH_WAIT;
    while db.database.outstanding_flushes() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
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
