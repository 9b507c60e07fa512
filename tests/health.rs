//! Liveness and readiness: `/health/live` (and its alias `/health`) answers while the process
//! serves; `/health/ready` answers 200 only while the session store answers and takes a write,
//! 503 with a reason otherwise. Neither needs a client certificate.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hyper::StatusCode;
use serde_json::json;
use support::*;

route_tests!(live_and_ready_are_up, health_routes_take_only_get);

/// On a working store, live, its alias and ready are 200 `{"status":"UP"}`, with a client
/// certificate or without one; repeated probes (answered from the cached result) agree.
async fn live_and_ready_are_up(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    for path in ["/health", "/health/live", "/health/ready", "/health/ready"] {
        for id in [None, Some(&bot)] {
            let resp = server.request(id, Req::get(path)).await;
            resp.assert_status(StatusCode::OK);
            resp.assert_json_content_type();
            assert_eq!(resp.json(), json!({ "status": "UP" }), "{path}");
        }
    }
    // The store still serves requests after the probes' writes.
    let token = server.session_token(&bot).await;
    server.assert_live(&token).await;
}

/// The health routes answer GET only (405 otherwise), and nothing under them but live and
/// ready exists.
async fn health_routes_take_only_get(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in ["/health/live", "/health/ready"] {
        server
            .request(None, Req::post(path))
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    server
        .request(None, Req::get("/health/other"))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

/// A Redis store that nobody listens for (a port bound, then closed): the server starts and is
/// live, but not ready: 503 `{"status":"DOWN","reason":"store_unavailable"}`, on every probe.
#[tokio::test]
async fn ready_is_503_while_redis_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let options = Options::default().store(&format!("store = \"redis://127.0.0.1:{port}/0\"\n"));
    let server = TestServer::start_with(Backend::Memory, options).await;
    for _ in 0..3 {
        let resp = server.request(None, Req::get("/health/ready")).await;
        resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        resp.assert_json_content_type();
        assert_eq!(
            resp.json(),
            json!({ "status": "DOWN", "reason": "store_unavailable" })
        );
    }
    for path in ["/health", "/health/live"] {
        let resp = server.request(None, Req::get(path)).await;
        resp.assert_status(StatusCode::OK);
        assert_eq!(resp.json(), json!({ "status": "UP" }));
    }
}
