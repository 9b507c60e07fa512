//! Prometheus metrics: `GET /metrics` parses as Prometheus text, and its counters move with what
//! the server does; `metrics = false` turns it off; `metrics_listen` serves it in plain HTTP.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hyper::StatusCode;
use support::*;

const BACKEND: Backend = Backend::Embedded;

/// The metrics the server serves now, parsed by a Prometheus text parser.
async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let resp = server.request(None, Req::get("/metrics")).await;
    resp.assert_status(StatusCode::OK);
    let content_type = resp.headers[hyper::header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&resp.text())
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    assert!(text.ends_with("# EOF\n"), "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` with these labels (0 when absent: a counter not yet moved).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
}

/// Logins, refusals, logouts and requests move their counters; the store's operations are
/// timed; build info is there.
#[tokio::test]
async fn counters_move_with_what_the_server_does() {
    let server = TestServer::start(BACKEND).await;
    let before = scrape(&server).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .post(Some(&server.pki.client("nobody.here")), AUTH, None)
        .await
        .assert_status(StatusCode::FORBIDDEN);
    server
        .post(Some(&bot), LOGOUT, Some(&token))
        .await
        .assert_status(StatusCode::OK);
    let after = scrape(&server).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert!(moved("sessionauth_sessions_created_total", &[("kind", "session")]) >= 1.0);
    assert!(
        moved(
            "sessionauth_sessions_ended_total",
            &[("kind", "session"), ("reason", "logout")]
        ) >= 1.0
    );
    assert!(
        moved(
            "sessionauth_refusals_total",
            &[("route", "cert_login"), ("reason", "unknown_cn")]
        ) >= 1.0
    );
    assert!(
        moved(
            "sessionauth_http_request_duration_seconds_count",
            &[("route", "cert_login"), ("status", "2xx")]
        ) >= 1.0,
        "{:?}",
        after.samples.iter().map(|s| &s.metric).collect::<Vec<_>>()
    );
    assert!(
        value(
            &after,
            "sessionauth_store_operation_duration_seconds_count",
            &[("op", "insert")]
        ) >= 1.0
    );
    assert_eq!(value(&after, "sessionauth_build_info", &[]), 1.0);
}

/// With `metrics = false`, `/metrics` is a 404 JSON error. (A process of its own: the setting
/// is process-wide, and the other tests of this binary need metrics on.)
#[tokio::test]
async fn metrics_can_be_turned_off() {
    let site = Site::new(BACKEND);
    let config = site.write_config(&Options::default().top("metrics = false"), "127.0.0.1:0");
    let node = node::Node::start(&config).await;
    let tls = client_config(site.pki().ca.cert_pem(), None, ClientTls::Default).unwrap();
    let mut conn = Conn::open(node.addr, tls).await.unwrap();
    conn.send(Req::get("/metrics"))
        .await
        .unwrap()
        .assert_error(StatusCode::NOT_FOUND);
    conn.send(Req::get("/health"))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    node.kill().await;
}

/// `metrics_listen` serves `/metrics` and `/health` in plain HTTP, without a certificate, and
/// nothing else.
#[tokio::test]
async fn metrics_listen_serves_plain_http() {
    let site = Site::new(BACKEND);
    let config = site.write_config(
        &Options::default().top("metrics_listen = \"127.0.0.1:0\""),
        "127.0.0.1:0",
    );
    let node = node::Node::start(&config).await;
    let line = node
        .log()
        .lines()
        .find(|l| l.contains("metrics and health listening"))
        .map(str::to_owned)
        .expect("the metrics listener is announced");
    let at = line.find("addr=").unwrap() + 5;
    let addr: std::net::SocketAddr = line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let get = |path: &'static str| async move {
        let tcp = tcp_connect(addr).await.unwrap();
        Conn::over(tcp)
            .await
            .unwrap()
            .send(Req::get(path))
            .await
            .unwrap()
    };
    let metrics = get("/metrics").await;
    metrics.assert_status(StatusCode::OK);
    let scrape = parse(&metrics.text());
    assert_eq!(value(&scrape, "sessionauth_build_info", &[]), 1.0);
    get("/health").await.assert_status(StatusCode::OK);
    get("/health/ready").await.assert_status(StatusCode::OK);
    get(AUTH).await.assert_error(StatusCode::NOT_FOUND);
    node.kill().await;
}
