//! Prometheus metrics (`prometheus-client`), served at `GET /metrics` in the OpenMetrics text
//! format, on the HTTPS listener and, when `metrics_listen` is set, on a plain-HTTP listener of
//! their own (so that a scraper needs no client certificate).
//!
//! One process-wide set: one process serves one configuration. Recording is a few atomic
//! operations per request; `metrics = false` turns it off (and `/metrics` answers 404).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `sessionauth_http_request_duration_seconds` | `route`, `status` (class: `2xx`…) | request latency histogram per route family |
//! | `sessionauth_refusals_total` | `route`, `reason` | refused requests by reason code (`unknown_cn`, `throttled`, …) |
//! | `sessionauth_sessions_created_total` | `kind` | sessions minted (`session`, `keymanager`, `app`, `obo`) |
//! | `sessionauth_sessions_ended_total` | `kind`, `reason` | sessions ended (`logout`, `expired`, `evicted`, `revoked`, …) |
//! | `sessionauth_tls_handshake_failures_total` | `reason` | failed handshakes (`unknown_ca`, `plain_http`, …) |
//! | `sessionauth_connections_refused_total` | `reason` | connections closed at accept (`per_address_cap`) |
//! | `sessionauth_store_operation_duration_seconds` | `op` | session store latency histogram per operation |
//! | `sessionauth_store_errors_total` | `op` | session store failures per operation |
//! | `sessionauth_crl_next_update_timestamp_seconds` | | the earliest `nextUpdate` of the loaded CRLs (absent without CRLs) |
//! | `sessionauth_build_info` | `version`, `crypto` (`ring` or `aws-lc-rs`) | always 1 |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Whether metrics are recorded (the `metrics` setting).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// The process's metrics.
static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

struct Metrics {
    registry: Registry,
    requests: HistogramFamily<Labels2>,
    refusals: Family<Labels2, Counter>,
    created: Family<Labels1, Counter>,
    ended: Family<Labels2, Counter>,
    live: Family<Labels1, Gauge>,
    handshake_failures: Family<Labels1, Counter>,
    connections_refused: Family<Labels1, Counter>,
    store_ops: HistogramFamily<Labels1>,
    store_errors: Family<Labels1, Counter>,
    crl_next_update: Gauge,
}

/// Request latencies: 50 µs to about 3 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Store latencies: 10 µs to about 0.6 s.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("sessionauth");
        let requests = HistogramFamily::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Request latency per route family and status class",
            requests.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "refusals",
            "Refused requests per route family and reason code",
            refusals.clone(),
        );
        let created = Family::default();
        registry.register(
            "sessions_created",
            "Sessions minted, per kind",
            created.clone(),
        );
        let ended = Family::default();
        registry.register(
            "sessions_ended",
            "Sessions ended, per kind and reason",
            ended.clone(),
        );
        let live = Family::default();
        registry.register(
            "sessions_live",
            "Sessions the store holds, per kind (counted every few seconds, for every node)",
            live.clone(),
        );
        let handshake_failures = Family::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes per reason",
            handshake_failures.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, per reason",
            connections_refused.clone(),
        );
        let store_ops = HistogramFamily::new_with_constructor(store_buckets as fn() -> Histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Session store latency per operation",
            store_ops.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "store_errors",
            "Session store failures per operation",
            store_errors.clone(),
        );
        let crl_next_update = Gauge::default();
        let build_info: Family<Labels2, Gauge> = Family::default();
        build_info
            .get_or_create(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("crypto", crate::crypto::NAME),
            ])
            .set(1);
        registry.register("build_info", "The build of this server", build_info);
        Self {
            registry,
            requests,
            refusals,
            created,
            ended,
            live,
            handshake_failures,
            connections_refused,
            store_ops,
            store_errors,
            crl_next_update,
        }
    }
}

fn on() -> Option<&'static Metrics> {
    ENABLED.load(Ordering::Relaxed).then(|| &*METRICS)
}

/// Turns recording on or off (the `metrics` setting; on by default).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether metrics are recorded and served.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The metrics in the OpenMetrics text format.
pub fn render() -> String {
    let mut out = String::new();
    let m = &*METRICS;
    // Registered here, not at start: the gauge only exists once there are CRLs.
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    if m.crl_next_update.get() > 0 {
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(
            eof,
            &format!(
                "# HELP sessionauth_crl_next_update_timestamp_seconds The earliest nextUpdate of the loaded CRLs.\n\
                 # TYPE sessionauth_crl_next_update_timestamp_seconds gauge\n\
                 sessionauth_crl_next_update_timestamp_seconds {}\n",
                m.crl_next_update.get()
            ),
        );
    }
    out
}

/// The status class label of `status`.
fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One request answered.
pub(crate) fn request(route: &'static str, status: u16, took: Duration) {
    if let Some(m) = on() {
        m.requests
            .get_or_create(&[("route", route), ("status", class(status))])
            .observe(took.as_secs_f64());
    }
}

/// One request refused, with its reason code.
pub(crate) fn refusal(route: &'static str, reason: &'static str) {
    if let Some(m) = on() {
        m.refusals
            .get_or_create(&[("route", route), ("reason", reason)])
            .inc();
    }
}

/// A session of `kind` minted.
pub(crate) fn session_created(kind: &'static str) {
    if let Some(m) = on() {
        m.created.get_or_create(&[("kind", kind)]).inc();
    }
}

/// A session of `kind` ended for `reason`.
pub(crate) fn session_ended(kind: &'static str, reason: &'static str) {
    if let Some(m) = on() {
        m.ended
            .get_or_create(&[("kind", kind), ("reason", reason)])
            .inc();
    }
}

/// The sessions the store holds, per kind.
pub(crate) fn sessions_live(counts: &crate::store::KindCounts) {
    if let Some(m) = on() {
        for (kind, n) in counts.labelled() {
            m.live
                .get_or_create(&[("kind", kind)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// A TLS handshake failed for `reason`.
pub(crate) fn handshake_failure(reason: &'static str) {
    if let Some(m) = on() {
        m.handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// A connection closed at accept for `reason`.
pub(crate) fn connection_refused(reason: &'static str) {
    if let Some(m) = on() {
        m.connections_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// A store operation `op` took `took`, and failed when `failed`.
pub(crate) fn store_op(op: &'static str, took: Duration, failed: bool) {
    if let Some(m) = on() {
        m.store_ops
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
        if failed {
            m.store_errors.get_or_create(&[("op", op)]).inc();
        }
    }
}

/// The earliest `nextUpdate` of the loaded CRLs (Unix seconds), or `None` without CRLs.
pub(crate) fn crl_next_update(at: Option<i64>) {
    METRICS.crl_next_update.set(at.unwrap_or(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is recorded shows in the rendering, in the OpenMetrics text format.
    #[test]
    fn recorded_values_are_rendered() {
        request("cert_login", 200, Duration::from_millis(2));
        refusal("cert_login", "unknown_cn");
        session_created("session");
        session_ended("session", "logout");
        handshake_failure("unknown_ca");
        store_op("insert", Duration::from_micros(300), true);
        let text = render();
        for needle in [
            "sessionauth_http_request_duration_seconds_count{route=\"cert_login\",status=\"2xx\"}",
            "sessionauth_refusals_total{route=\"cert_login\",reason=\"unknown_cn\"}",
            "sessionauth_sessions_created_total{kind=\"session\"}",
            "sessionauth_sessions_ended_total{kind=\"session\",reason=\"logout\"}",
            "sessionauth_tls_handshake_failures_total{reason=\"unknown_ca\"}",
            "sessionauth_store_errors_total{op=\"insert\"}",
            "sessionauth_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} not in:\n{text}");
        }
        let crypto = format!("crypto=\"{}\"", crate::crypto::NAME);
        assert!(text.contains(&crypto), "{crypto} not in:\n{text}");
    }
}
