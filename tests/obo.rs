//! On-behalf-of authentication: an app, holding its own app session, obtains a session for a
//! user who installed it. Every check in the documented order, each next to a success.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hyper::StatusCode;
use support::*;

route_tests!(
    obo_by_user_id_succeeds,
    obo_by_username_succeeds,
    sessioninfo_of_obo_session_is_the_target_user,
    obo_without_certificate_is_401,
    obo_with_bot_certificate_is_403,
    obo_without_app_session_header_is_400,
    obo_with_garbage_token_is_401,
    obo_with_bot_session_is_401,
    obo_with_obo_session_is_401,
    obo_with_another_apps_session_is_403,
    app_without_obo_permission_is_403,
    user_who_did_not_install_the_app_is_403,
    obo_for_service_user_is_403,
    unknown_user_id_is_404,
    unknown_username_is_404,
    percent_encoded_username_is_decoded,
    inactive_user_is_403,
    non_integer_uid_is_400,
    logged_out_app_session_cannot_mint,
    obo_session_expires,
    obo_session_ends_with_its_app_session,
    checks_run_in_the_documented_order,
);

/// Starts a server and returns it with demo-app's certificate and app session.
async fn demo_app(backend: Backend) -> (TestServer, Identity, String) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    (server, app, app_session)
}

/// By user id: 200 `{"sessionToken": "<43 chars>"}` and nothing else, as JSON.
async fn obo_by_user_id_succeeds(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    let resp = server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_keys(&body, &["sessionToken"]);
    let token = body["sessionToken"].as_str().expect("string");
    assert_token_shape(token);
    assert_ne!(token, app_session);
}

/// By username: same shape, and each call mints a new session.
async fn obo_by_username_succeeds(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    let resp = server
        .post(Some(&app), &obo_by_name("alice"), Some(&app_session))
        .await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    assert_keys(&resp.json(), &["sessionToken"]);
    let first = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;
    let second = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;
    assert_ne!(first, second);
}

/// The OBO session's sessioninfo is the target user (alice), not the app; by id and by name.
async fn sessioninfo_of_obo_session_is_the_target_user(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for path in [obo_by_id("2001"), obo_by_name("alice")] {
        let obo = server.obo_token(&app, &app_session, &path).await;
        let resp = server.session_info(Some(&obo)).await;
        resp.assert_status(StatusCode::OK);
        let user = resp.json();
        assert_eq!(user["id"], 2001);
        assert_eq!(user["username"], "alice");
        assert_eq!(user["accountType"], "NORMAL");
    }
}

/// Without a certificate: 401, even with a valid app session in the header.
async fn obo_without_certificate_is_401(backend: Backend) {
    let (server, _app, app_session) = demo_app(backend).await;
    server
        .post(None, &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A certificate that is not an app (a bot) is 403, even with a valid app session.
async fn obo_with_bot_certificate_is_403(backend: Backend) {
    let (server, _app, app_session) = demo_app(backend).await;
    let bot = server.pki.client("bot.user");
    server
        .post(Some(&bot), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// Without the app session header: 400; with it: 200.
async fn obo_without_app_session_header_is_400(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for path in [obo_by_id("2001"), obo_by_name("alice")] {
        server
            .post(Some(&app), &path, None)
            .await
            .assert_error(StatusCode::BAD_REQUEST);
        server
            .post(Some(&app), &path, Some(&app_session))
            .await
            .assert_status(StatusCode::OK);
    }
}

/// A garbage token (wrong shape, or right shape but never issued) is 401 "Invalid session".
async fn obo_with_garbage_token_is_401(backend: Backend) {
    let (server, app, _app_session) = demo_app(backend).await;
    let never_issued = "A".repeat(43);
    for token in ["garbage", never_issued.as_str()] {
        let message = server
            .post(Some(&app), &obo_by_id("2001"), Some(token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
        assert_eq!(message, "Invalid session", "token {token:?}");
    }
}

/// A bot's session (or key-manager token) is not an app session: 401.
async fn obo_with_bot_session_is_401(backend: Backend) {
    let (server, app, _app_session) = demo_app(backend).await;
    let bot = server.pki.client("bot.user");
    let bot_session = server.session_token(&bot).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&bot_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let km = server.token(&bot, KEYAUTH).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&km))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// An OBO session is not an app session either: it cannot mint further OBO sessions (401).
async fn obo_with_obo_session_is_401(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    let obo = server
        .obo_token(&app, &app_session, &obo_by_id("2001"))
        .await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&obo))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// Another app's app session with this app's certificate: 403 (and each app's own works).
async fn obo_with_another_apps_session_is_403(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&other_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .post(Some(&other), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// An app without allowOnBehalfOf is 403, even for a user who installed it.
async fn app_without_obo_permission_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_obo = server.pki.client("no-obo-app");
    let session = server.app_token(&no_obo).await;
    for path in [obo_by_id("2001"), obo_by_name("alice")] {
        server
            .post(Some(&no_obo), &path, Some(&session))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
}

/// A user who did not install the app is 403 (bob installed nothing; alice did not install
/// other-app), by id and by name.
async fn user_who_did_not_install_the_app_is_403(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for path in [obo_by_id("2002"), obo_by_name("bob")] {
        server
            .post(Some(&app), &path, Some(&app_session))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    server
        .post(Some(&other), &obo_by_name("alice"), Some(&other_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// OBO for a service user who did not install the app is refused too (403).
async fn obo_for_service_user_is_403(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    server
        .post(Some(&app), &obo_by_id("1001"), Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// An unknown user id is 404 "User id not found".
async fn unknown_user_id_is_404(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for uid in ["9999", "-1", "0"] {
        let message = server
            .post(Some(&app), &obo_by_id(uid), Some(&app_session))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "User id not found", "uid {uid}");
    }
}

/// An unknown username is 404 "Username not found"; an app id is not a username.
async fn unknown_username_is_404(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for name in ["nobody", "demo-app", "ALICE"] {
        let message = server
            .post(Some(&app), &obo_by_name(name), Some(&app_session))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "Username not found", "username {name}");
    }
}

/// A percent-encoded username is decoded before the lookup.
async fn percent_encoded_username_is_decoded(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    server
        .post(Some(&app), &obo_by_name("%61lice"), Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// An inactive user who installed the app is 403, by id and by name.
async fn inactive_user_is_403(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for path in [obo_by_id("2003"), obo_by_name("carol")] {
        server
            .post(Some(&app), &path, Some(&app_session))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
}

/// A uid that is not an integer is 400; an integer one is not.
async fn non_integer_uid_is_400(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    for uid in ["abc", "2001x", "1.5", "99999999999999999999"] {
        server
            .post(Some(&app), &obo_by_id(uid), Some(&app_session))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// A logged-out app session can no longer mint OBO sessions (401).
async fn logged_out_app_session_cannot_mint(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    server
        .post(Some(&app), LOGOUT, Some(&app_session))
        .await
        .assert_status(StatusCode::OK);
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// An OBO session expires with the configured lifetime like any other session.
async fn obo_session_expires(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("1h")).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    server.advance(std::time::Duration::from_secs(3599));
    server.assert_live(&obo).await;
    server.advance(std::time::Duration::from_secs(2));
    server.assert_dead(&obo).await;
    // The app session expired at the same moment.
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// An on-behalf-of session ends when the app session that minted it ends, on the certificate
/// path and on the RSA path (where no certificate caps it), even when minted late in the app
/// session's life.
async fn obo_session_ends_with_its_app_session(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("1h")).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    server.advance(std::time::Duration::from_secs(1800));
    let by_certificate = server
        .obo_token(&app, &app_session, &obo_by_id("2001"))
        .await;
    let resp = server
        .request(
            None,
            Req::post("/login/pubkey/app/user/2001/authenticate").token(&app_session),
        )
        .await;
    resp.assert_status(StatusCode::OK);
    let by_rsa_path = resp.json()["token"].as_str().unwrap().to_owned();
    server.advance(std::time::Duration::from_secs(1799));
    for obo in [&by_certificate, &by_rsa_path] {
        server.assert_live(obo).await;
    }
    server.advance(std::time::Duration::from_secs(2));
    for obo in [&by_certificate, &by_rsa_path] {
        server.assert_dead(obo).await;
    }
}

/// The checks run in the documented order: certificate, app, header, token, token kind,
/// permission, uid syntax, user. Each request below fails two checks; the earlier one decides.
async fn checks_run_in_the_documented_order(backend: Backend) {
    let (server, app, app_session) = demo_app(backend).await;
    let bot = server.pki.client("bot.user");
    let no_obo = server.pki.client("no-obo-app");
    let no_obo_session = server.app_token(&no_obo).await;
    let bot_session = server.session_token(&bot).await;

    // No certificate before the app check and before the header.
    server
        .post(None, &obo_by_id("abc"), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    // Not an app before the header.
    server
        .post(Some(&bot), &obo_by_id("abc"), None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    // Missing header before the uid syntax.
    server
        .post(Some(&app), &obo_by_id("abc"), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    // A bad token before the uid syntax and before the target user.
    server
        .post(Some(&app), &obo_by_id("abc"), Some("garbage"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .post(Some(&app), &obo_by_id("9999"), Some(&bot_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    // Permission before the uid syntax and the user lookup.
    server
        .post(Some(&no_obo), &obo_by_id("abc"), Some(&no_obo_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .post(Some(&no_obo), &obo_by_id("9999"), Some(&no_obo_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    // uid syntax, then the lookup.
    server
        .post(Some(&app), &obo_by_id("abc"), Some(&app_session))
        .await
        .assert_error(StatusCode::BAD_REQUEST);
    server
        .post(Some(&app), &obo_by_id("9999"), Some(&app_session))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}
