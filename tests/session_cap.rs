//! The per-owner session cap (`limits.max_sessions_per_user`): past it a new session ends the
//! owner's oldest, and nobody else's.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

route_tests!(
    past_the_cap_the_oldest_session_of_that_bot_ends,
    the_cap_counts_an_apps_sessions_for_each_user_apart,
    the_default_cap_leaves_an_honest_bot_alone,
    a_cap_of_zero_is_no_cap,
);

fn capped(n: usize) -> Options {
    Options::default().limit(&format!("max_sessions_per_user = {n}"))
}

/// The sample directory with carol (2003, who installed demo-app) active.
fn carol_active() -> String {
    let sample = include_str!("../examples/directory.toml");
    let inactive = "active = false\nroles = [\"INDIVIDUAL\"]\ninstalledApps = [\"demo-app\"]";
    assert!(
        sample.contains(inactive),
        "the sample's carol entry changed"
    );
    sample.replace(
        inactive,
        "active = true\nroles = [\"INDIVIDUAL\"]\ninstalledApps = [\"demo-app\"]",
    )
}

/// With a cap of 2, a bot's third session ends its first (401 from then on), keeps its second,
/// and touches neither its key-manager token nor another bot's session.
async fn past_the_cap_the_oldest_session_of_that_bot_ends(backend: Backend) {
    let server = TestServer::start_with(backend, capped(2)).await;
    let bot = server.pki.client("bot.user");
    let key_manager = server.token(&bot, KEYAUTH).await;
    let other = server.session_token(&server.pki.client("admin.bot")).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(server.session_token(&bot).await);
        server.advance(Duration::from_millis(5));
    }
    server.assert_dead(&tokens[0]).await;
    server.assert_live(&tokens[1]).await;
    server.assert_live(&tokens[2]).await;
    server.assert_live(&other).await;
    server
        .post(Some(&bot), KEY_LOGOUT, Some(&key_manager))
        .await
        .assert_status(hyper::StatusCode::OK);
}

/// An app's on-behalf-of sessions are capped per user: alice's third ends her first, carol's
/// session and the app's own session stay.
async fn the_cap_counts_an_apps_sessions_for_each_user_apart(backend: Backend) {
    let server = TestServer::start_with(backend, capped(2).directory(&carol_active())).await;
    let (app, app_session, first) = server.demo_app_with_obo().await;
    let carol = server
        .obo_token(&app, &app_session, &obo_by_id("2003"))
        .await;
    let mut alice = vec![first];
    for _ in 0..2 {
        server.advance(Duration::from_millis(5));
        alice.push(
            server
                .obo_token(&app, &app_session, &obo_by_id("2001"))
                .await,
        );
    }
    server.assert_dead(&alice[0]).await;
    server.assert_live(&alice[1]).await;
    server.assert_live(&alice[2]).await;
    server.assert_live(&carol).await;
    // The app session lives on: it mints carol's second.
    server
        .obo_token(&app, &app_session, &obo_by_id("2003"))
        .await;
    server.assert_live(&carol).await;
}

/// Under the default cap (1,000) a bot that keeps twenty sessions keeps them all.
async fn the_default_cap_leaves_an_honest_bot_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(server.session_token(&bot).await);
    }
    for token in &tokens {
        server.assert_live(token).await;
    }
}

/// `max_sessions_per_user = 0` turns the cap off: with it, a cap-of-one workload keeps all.
async fn a_cap_of_zero_is_no_cap(backend: Backend) {
    let server = TestServer::start_with(backend, capped(0)).await;
    let bot = server.pki.client("bot.user");
    let first = server.session_token(&bot).await;
    server.advance(Duration::from_millis(5));
    let second = server.session_token(&bot).await;
    server.assert_live(&first).await;
    server.assert_live(&second).await;
}
