//! Logout: who may end which session, and that an ended session is dead everywhere at once
//! while every other session lives on.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hyper::StatusCode;
use support::*;

route_tests!(
    bot_ends_its_own_session,
    ending_one_session_leaves_the_others,
    bot_may_use_another_certificate_with_its_cn,
    app_ends_an_obo_session_it_minted,
    app_ends_its_own_app_session,
    ending_the_app_session_ends_its_obo_sessions,
    obo_mints_racing_the_app_logout_leave_nothing_alive,
    app_cannot_end_a_bots_session,
    bot_cannot_end_another_bots_session,
    app_cannot_end_another_apps_sessions,
    only_the_minting_app_ends_an_obo_session,
    bot_cannot_end_an_app_session,
    missing_header_is_400,
    no_certificate_is_401,
    unknown_common_name_is_403,
    garbage_token_is_401,
    key_manager_token_logout_only_on_keyauth,
    session_token_is_401_on_keyauth_logout,
    expired_session_logout_is_401,
    logout_is_effective_at_once_on_open_connections,
);

/// Asserts a successful logout in the contract's shape.
fn assert_logged_out(resp: &Resp) {
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_keys(&body, &["message", "count"]);
    assert_eq!(body["message"], "Logout successful");
    assert!(body["count"].as_u64().is_some_and(|n| n >= 1), "{body}");
}

/// A bot ends its own session: the token is then 401 on sessioninfo and on a second logout.
async fn bot_ends_its_own_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.assert_live(&token).await;

    assert_logged_out(&server.post(Some(&bot), LOGOUT, Some(&token)).await);

    server.assert_dead(&token).await;
    server
        .post(Some(&bot), LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// Ending one session leaves the bot's other sessions (and its key-manager token) valid.
async fn ending_one_session_leaves_the_others(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let first = server.session_token(&bot).await;
    let second = server.session_token(&bot).await;
    let km = server.token(&bot, KEYAUTH).await;

    assert_logged_out(&server.post(Some(&bot), LOGOUT, Some(&first)).await);

    server.assert_dead(&first).await;
    server.assert_live(&second).await;
    // The key-manager token is still alive: it can be logged out once.
    assert_logged_out(&server.post(Some(&bot), KEY_LOGOUT, Some(&km)).await);
    assert_logged_out(&server.post(Some(&bot), LOGOUT, Some(&second)).await);
}

/// The same bot with a different certificate (another key, same CN) may end its session.
async fn bot_may_use_another_certificate_with_its_cn(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.session_token(&server.pki.client("bot.user")).await;
    let again = server.pki.client("bot.user");
    assert_logged_out(&server.post(Some(&again), LOGOUT, Some(&token)).await);
}

/// An app ends an OBO session it minted; its app session and other OBO sessions live on.
async fn app_ends_an_obo_session_it_minted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    let other_obo = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;

    assert_logged_out(&server.post(Some(&app), LOGOUT, Some(&obo)).await);

    server.assert_dead(&obo).await;
    server.assert_live(&other_obo).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// An app ends its own app session; then it cannot mint OBO sessions with it, and logging it
/// out again is 401.
async fn app_ends_its_own_app_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    assert_logged_out(&server.post(Some(&app), LOGOUT, Some(&app_session)).await);
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .post(Some(&app), LOGOUT, Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// Ending the app session ends the OBO sessions minted with it, at once, and the answer
/// counts them.
async fn ending_the_app_session_ends_its_obo_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    let reply = server.post(Some(&app), LOGOUT, Some(&app_session)).await;
    assert_logged_out(&reply);
    assert_eq!(
        reply.json()["count"],
        2,
        "the app session and its OBO session"
    );
    server.assert_dead(&obo).await;
}

/// On-behalf-of mints that race their app session's logout either fail or are ended with it:
/// once the logout has answered and every mint has, no OBO session minted with that app
/// session is alive (the store refuses an OBO session whose app session is gone, in the same
/// step as the insert).
async fn obo_mints_racing_the_app_logout_leave_nothing_alive(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    for _ in 0..20 {
        let session = server.app_token(&app).await;
        let mut mints = Vec::new();
        for _ in 0..3 {
            let mut conn = server.connect(Some(&app)).await.unwrap();
            let session = session.clone();
            mints.push(tokio::spawn(async move {
                let mut minted = Vec::new();
                for _ in 0..3 {
                    let r = conn
                        .send(Req::post(&obo_by_id("2001")).token(&session))
                        .await
                        .unwrap();
                    if r.status == StatusCode::OK {
                        minted.push(token_of(&r));
                    }
                }
                minted
            }));
        }
        let mut logout = server.connect(Some(&app)).await.unwrap();
        let r = logout
            .send(Req::post(LOGOUT).token(&session))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        for mint in mints {
            for obo in mint.await.unwrap() {
                server.assert_dead(&obo).await;
            }
        }
    }
}

/// A bot's token presented with an app's certificate is 403, and stays valid.
async fn app_cannot_end_a_bots_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    let app = server.pki.client("demo-app");
    server
        .post(Some(&app), LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server.assert_live(&token).await;
}

/// Bot B cannot end bot A's session (403); A's session stays valid and A can end it.
async fn bot_cannot_end_another_bots_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    let admin = server.pki.client("admin.bot");
    server
        .post(Some(&admin), LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let km = server.token(&bot, KEYAUTH).await;
    server
        .post(Some(&admin), KEY_LOGOUT, Some(&km))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server.assert_live(&token).await;
    assert_logged_out(&server.post(Some(&bot), LOGOUT, Some(&token)).await);
}

/// Another app cannot end an app's OBO session or its app session (403); both stay valid.
async fn app_cannot_end_another_apps_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    let other = server.pki.client("other-app");
    for token in [&obo, &app_session] {
        server
            .post(Some(&other), LOGOUT, Some(token))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server.assert_live(&obo).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// Neither a bot nor the OBO target's own certificate may end an app's OBO session.
async fn only_the_minting_app_ends_an_obo_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, _, obo) = server.demo_app_with_obo().await;
    for cn in ["bot.user", "alice"] {
        let who = server.pki.client(cn);
        server
            .post(Some(&who), LOGOUT, Some(&obo))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server.assert_live(&obo).await;
}

/// A bot's certificate cannot end an app session (403).
async fn bot_cannot_end_an_app_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    let bot = server.pki.client("bot.user");
    server
        .post(Some(&bot), LOGOUT, Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// Without the sessionToken header: 400, on both logout paths.
async fn missing_header_is_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    for path in [LOGOUT, KEY_LOGOUT] {
        server
            .post(Some(&bot), path, None)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
}

/// Without a certificate: 401, and the session survives.
async fn no_certificate_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    for path in [LOGOUT, KEY_LOGOUT] {
        server
            .post(None, path, Some(&token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server.assert_live(&token).await;
}

/// A certificate whose CN names no one: 403, and the session survives.
async fn unknown_common_name_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    let stranger = server.pki.client("nobody.here");
    server
        .post(Some(&stranger), LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server.assert_live(&token).await;
}

/// A garbage or never-issued token: 401.
async fn garbage_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let never_issued = "x".repeat(43);
    for token in ["garbage", never_issued.as_str()] {
        server
            .post(Some(&bot), LOGOUT, Some(token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
}

/// A key-manager token is ended on /keyauth/v1/logout, and is 401 on /sessionauth/v1/logout
/// (where it stays alive).
async fn key_manager_token_logout_only_on_keyauth(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let km = server.token(&bot, KEYAUTH).await;
    server
        .post(Some(&bot), LOGOUT, Some(&km))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_logged_out(&server.post(Some(&bot), KEY_LOGOUT, Some(&km)).await);
    server
        .post(Some(&bot), KEY_LOGOUT, Some(&km))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A session token is 401 on /keyauth/v1/logout (and stays alive).
async fn session_token_is_401_on_keyauth_logout(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .post(Some(&bot), KEY_LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server.assert_live(&token).await;
}

/// An expired session cannot be logged out (401).
async fn expired_session_logout_is_401(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("10m")).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.advance(std::time::Duration::from_secs(600));
    server
        .post(Some(&bot), LOGOUT, Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A logout on one connection is seen at once by a request on another, already-open one.
async fn logout_is_effective_at_once_on_open_connections(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    let mut reader = server.connect(None).await.unwrap();
    reader
        .send(Req::get(SESSIONINFO).token(&token))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    assert_logged_out(&server.post(Some(&bot), LOGOUT, Some(&token)).await);
    reader
        .send(Req::get(SESSIONINFO).token(&token))
        .await
        .unwrap()
        .assert_error(StatusCode::UNAUTHORIZED);
}
