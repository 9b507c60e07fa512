//! The writer thread, which owns all writing, and the queue that brings it changes and takes
//! back their answers.

use std::sync::mpsc;

use fjall::Database;
use tokio::sync::oneshot;

use super::group::Group;
use super::layout::Spaces;
use super::writer_gone;
use crate::store::StoreError;

/// The most changes one commit carries.
pub const MAX_BATCH: usize = 4096;

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

/// The writer thread: one batch and one commit per group of queued changes.
pub(super) fn write_loop(db: &Database, spaces: &Spaces, ops: &mpsc::Receiver<Box<dyn WriteOp>>) {
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

/// Works out `ops` in order as one group and commits it.
pub(super) fn commit_group(
    db: &Database,
    spaces: &Spaces,
    ops: &mut [Box<dyn WriteOp>],
) -> Result<(), StoreError> {
    let mut group = Group::new(db, spaces);
    for op in ops.iter_mut() {
        // An error here is the storage failing, not a request's mistake: the whole group is
        // dropped (nothing is committed) and every waiter hears of it.
        op.apply(&mut group)?;
    }
    group.commit(db)
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
