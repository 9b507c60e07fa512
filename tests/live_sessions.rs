//! The `sessionauth_sessions_live` gauge: the sessions the store holds, per kind, from the
//! store's own counts, on every backend. Each case runs a server process of its own, since the
//! metrics are process-wide.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::StatusCode;
use support::node::{eventually, Node};
use support::*;

route_tests!(live_sessions_follow_mints_logouts_and_the_cascade);

/// The gauge per kind, as `/metrics` shows it now (`None` for a kind not shown yet).
async fn live(node: &Node, ca: &str) -> [Option<f64>; 4] {
    let tls = client_config(ca, None, ClientTls::Default).unwrap();
    let mut conn = Conn::open(node.addr, tls).await.unwrap();
    let resp = conn.send(Req::get("/metrics")).await.unwrap();
    resp.assert_status(StatusCode::OK);
    let text = resp.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    ["session", "key_manager", "app", "obo"].map(|kind| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "sessionauth_sessions_live" && s.labels.get("kind") == Some(kind))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("sessions_live is not a gauge: {other:?}"),
            })
    })
}

/// Waits (bounded: the gauge is refreshed at most once a second) until it shows `want`.
async fn until_live(node: &Node, ca: &str, want: [f64; 4]) {
    let want = want.map(Some);
    eventually(
        Duration::from_secs(10),
        "sessions_live to match",
        || async move { (live(node, ca).await == want).then_some(()) },
    )
    .await;
}

async fn live_sessions_follow_mints_logouts_and_the_cascade(backend: Backend) {
    let site = Site::new(backend);
    let config = site.write_config(&Options::default(), "127.0.0.1:0");
    let node = Node::start(&config).await;
    let ca = site.pki().ca.cert_pem();
    let send = |id: Option<&Identity>, req: Req| {
        let tls = client_config(ca, id, ClientTls::Default).unwrap();
        let addr = node.addr;
        async move {
            Conn::open(addr, tls)
                .await
                .unwrap()
                .send(req)
                .await
                .unwrap()
        }
    };
    until_live(&node, ca, [0.0, 0.0, 0.0, 0.0]).await;

    let bot = site.pki().client("bot.user");
    let app = site.pki().client("demo-app");
    let mut bot_tokens = Vec::new();
    for _ in 0..3 {
        let resp = send(Some(&bot), Req::post(AUTH)).await;
        resp.assert_status(StatusCode::OK);
        bot_tokens.push(token_of(&resp));
    }
    send(Some(&bot), Req::post(KEYAUTH))
        .await
        .assert_status(StatusCode::OK);
    let resp = send(Some(&app), Req::post(APP_AUTH)).await;
    resp.assert_status(StatusCode::OK);
    let app_token = token_of(&resp);
    for path in [
        "/sessionauth/v1/app/user/2001/authenticate",
        "/sessionauth/v1/app/username/alice/authenticate",
    ] {
        send(Some(&app), Req::post(path).token(&app_token))
            .await
            .assert_status(StatusCode::OK);
    }
    // A refusal mints nothing.
    send(Some(&site.pki().client("nobody.here")), Req::post(AUTH))
        .await
        .assert_status(StatusCode::FORBIDDEN);
    until_live(&node, ca, [3.0, 1.0, 1.0, 2.0]).await;

    send(Some(&bot), Req::post(LOGOUT).token(&bot_tokens[0]))
        .await
        .assert_status(StatusCode::OK);
    // The app's logout ends its two on-behalf-of sessions with it.
    send(Some(&app), Req::post(LOGOUT).token(&app_token))
        .await
        .assert_status(StatusCode::OK);
    until_live(&node, ca, [2.0, 1.0, 0.0, 0.0]).await;
    node.kill().await;
}
