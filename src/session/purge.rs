//! The purge: a task that ends expired sessions, records each end, and stops with the
//! [`Sessions`](super::Sessions) that owns it.
//!
//! Expired sessions are already refused on read; the purge reclaims their space and records
//! their end (reason `expired`), so that every session's end is recorded exactly once. Each step
//! is short ([`BATCH`] index entries), so requests never wait for a sweep, and the loop goes on
//! while a step sweeps a full batch, whether the entries named sessions or were stale.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::events::{self, EndReason};
use crate::chain::Chain;
use crate::clock::Clock;
use crate::store::SessionStore;

/// How often expired sessions are purged from the store.
pub(super) const INTERVAL: Duration = Duration::from_secs(60);
/// How many expiry-index entries one purge step sweeps: small, so that each step is short and
/// the embedded store's steps share commits with requests.
pub(super) const BATCH: usize = 500;

/// The running purge task. Dropping it aborts the task; [`Purge::stop`] lets the step in
/// progress finish first.
#[derive(Debug)]
pub(super) struct Purge {
    stop: watch::Sender<bool>,
    /// `None` once [`Purge::stop`] has taken it.
    task: Option<JoinHandle<()>>,
}

impl Purge {
    /// Starts purging `store` every [`INTERVAL`]. Needs a tokio runtime.
    pub(super) fn start(store: Arc<dyn SessionStore>, clock: Arc<dyn Clock>) -> Self {
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(store, clock, stopping));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops the task once its current step is done, and waits for it.
    pub(super) async fn stop(mut self) {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else {
            return;
        };
        if let Err(e) = task.await {
            if e.is_panic() {
                tracing::error!(error = %e, "the purge task panicked");
            }
        }
    }
}

impl Drop for Purge {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        loop {
            let purged = match store.purge_expired(clock.now(), BATCH).await {
                Ok(purged) => purged,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "purging expired sessions failed");
                    break;
                }
            };
            for session in &purged.ended {
                events::ended(session, EndReason::Expired, "-");
            }
            if purged.is_last(BATCH) || *stopping.borrow() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
