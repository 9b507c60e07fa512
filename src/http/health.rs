//! Health: `GET /health/live` (and its alias `GET /health`), which answers while the process
//! serves, and `GET /health/ready`, which answers 200 only while the session store answers and
//! takes a write. Neither needs a client certificate, as no route of the pod family does.
//!
//! Readiness is probed at most once per [`PROBE_TTL`] whatever the rate of probers: the last
//! result is kept, and while one probe is out the others are answered from it.

use std::time::Duration;

use hyper::StatusCode;
use parking_lot::Mutex;
use serde_json::json;
use std::time::Instant;

use super::json::{self, Reply};
use super::Ctx;
use crate::store::StoreError;

/// How long a readiness probe's result is reused.
pub(crate) const PROBE_TTL: Duration = Duration::from_secs(1);

/// How long a probe may take: past it, the store is not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a probe may be out before another caller starts one of its own (the request that
/// started it may have been dropped with its connection).
const PROBE_STALE: Duration = Duration::from_secs(3);

/// `GET /health/live`, `GET /health`: `{"status":"UP"}`. No authentication, no store access.
pub(super) fn live() -> Reply {
    json::ok(&json!({ "status": "UP" }))
}

/// `GET /health/ready`: 200 `{"status":"UP"}` while the store answers and takes a write; 503
/// `{"status":"DOWN","reason":"store_unavailable"}` otherwise (the store's error is logged when
/// readiness changes, never sent).
pub(super) async fn ready(ctx: &Ctx<'_>) -> Reply {
    ready_of(ctx.api).await
}

/// Readiness of `api`, for either listener.
pub(super) async fn ready_of(api: &super::Api) -> Reply {
    let ready = api
        .readiness
        .check(|| async { api.sessions().probe_store().await })
        .await;
    if ready {
        json::ok(&json!({ "status": "UP" }))
    } else {
        json::reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "DOWN", "reason": "store_unavailable" }),
        )
    }
}

/// The last readiness probe's result, shared by every request.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last result and when its probe started.
    last: Option<(Instant, bool)>,
    /// When the probe now out started, if one is.
    probing: Option<Instant>,
}

impl Readiness {
    /// Whether the store is ready: the last result while it is younger than [`PROBE_TTL`], or
    /// while another probe is out; otherwise the outcome of `probe`, run now.
    pub(crate) async fn check<F, Fut>(&self, probe: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        self.check_at(Instant::now(), probe).await
    }

    /// [`Readiness::check`] as if called at `started`.
    async fn check_at<F, Fut>(&self, started: Instant, probe: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        {
            let mut state = self.state.lock();
            if let Some((at, ready)) = state.last {
                let fresh = started.saturating_duration_since(at) < PROBE_TTL;
                let out = state
                    .probing
                    .is_some_and(|p| started.saturating_duration_since(p) < PROBE_STALE);
                if fresh || out {
                    return ready;
                }
            }
            state.probing = Some(started);
        }
        let result = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the readiness probe did not finish within {}s",
                PROBE_TIMEOUT.as_secs()
            ))),
        };
        let ready = result.is_ok();
        let mut state = self.state.lock();
        let was = state.last.map(|(_, r)| r);
        // A slower probe that started earlier does not overwrite a newer result.
        if state.last.is_none_or(|(at, _)| at <= started) {
            state.last = Some((started, ready));
        }
        if state.probing == Some(started) {
            state.probing = None;
        }
        drop(state);
        match (&result, was) {
            (Err(e), Some(true) | None) => {
                tracing::warn!(error = %crate::chain::Chain(e), "not ready: the session store fails its probe");
            }
            (Ok(()), Some(false)) => tracing::info!("ready: the session store answers again"),
            _ => {}
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Probes within a second share one result; the next second probes again and sees a
    /// change.
    #[tokio::test]
    async fn probes_at_most_once_per_ttl() {
        let readiness = Readiness::default();
        let probes = AtomicUsize::new(0);
        let probe = |fail: bool| {
            let probes = &probes;
            move || async move {
                probes.fetch_add(1, Ordering::SeqCst);
                if fail {
                    Err(StoreError::Unavailable("down".into()))
                } else {
                    Ok(())
                }
            }
        };
        let t0 = Instant::now();
        assert!(readiness.check_at(t0, probe(false)).await);
        for ms in 0..100 {
            let t = t0 + Duration::from_millis(ms * 9);
            assert!(readiness.check_at(t, probe(true)).await);
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        let t1 = t0 + PROBE_TTL;
        assert!(!readiness.check_at(t1, probe(true)).await);
        assert!(!readiness.check_at(t1, probe(false)).await);
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }
}
