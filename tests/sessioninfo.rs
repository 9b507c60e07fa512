//! `GET /pod/v2/sessioninfo`: the session owner's UserV2 for a live session, "Invalid session"
//! for everything else, and expiry by lifetime or by the client certificate's notAfter, driven
//! by the manual clock.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::StatusCode;
use support::*;

route_tests!(
    bot_session_answers_user_v2,
    structured_fields_keep_their_types,
    sessioninfo_with_a_certificate_on_the_connection,
    missing_header_is_401,
    garbage_token_is_401,
    non_ascii_token_is_401,
    key_manager_token_is_401,
    app_session_is_403,
    session_expires_after_its_lifetime,
    default_lifetime_is_24_hours,
    session_is_capped_by_certificate_not_after,
    app_and_obo_sessions_are_capped_by_certificate,
    logged_out_session_is_401,
    token_from_another_server_is_401,
);

const HOUR: Duration = Duration::from_secs(3600);

/// The fields UserV2 may carry; nothing else (no `active`, no `installedApps`).
const USER_V2_FIELDS: &[&str] = &[
    "id",
    "emailAddress",
    "firstName",
    "lastName",
    "displayName",
    "title",
    "company",
    "username",
    "location",
    "accountType",
    "avatars",
    "workPhoneNumber",
    "mobilePhoneNumber",
    "jobFunction",
    "department",
    "division",
    "roles",
    "userMetadata",
];

/// A bot's session answers its UserV2: integer id, strict types, no nulls, no private fields;
/// no certificate is needed on the connection.
async fn bot_session_answers_user_v2(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    let resp = server.session_info(Some(&token)).await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let user = resp.json();
    assert_no_nulls(&user);
    for key in user.as_object().expect("object").keys() {
        assert!(USER_V2_FIELDS.contains(&key.as_str()), "unexpected {key}");
    }
    assert!(user["id"].is_i64(), "id is an integer: {user}");
    assert_eq!(user["id"], 1001);
    assert_eq!(user["username"], "bot.user");
    assert_eq!(user["accountType"], "SYSTEM");
    assert_eq!(user["displayName"], "Demo Bot");
    assert_eq!(user["emailAddress"], "bot.user@example.com");
    assert_eq!(user["roles"], serde_json::json!(["INDIVIDUAL"]));
}

/// Optional structured fields keep their types: avatars an array of {size,url}, userMetadata an
/// object of objects (alice, through an OBO session).
async fn structured_fields_keep_their_types(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    let obo = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;
    let user = server.session_info(Some(&obo)).await.json();
    assert_no_nulls(&user);
    assert_eq!(user["id"], 2001);
    let avatars = user["avatars"].as_array().expect("avatars array");
    assert_keys(&avatars[0], &["size", "url"]);
    assert!(user["userMetadata"]["desk"].is_object(), "{user}");
    assert!(user.get("installedApps").is_none());
    assert!(user.get("active").is_none());
}

/// The same sessioninfo works on a connection that presents a certificate.
async fn sessioninfo_with_a_certificate_on_the_connection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .request(Some(&bot), Req::get(SESSIONINFO).token(&token))
        .await
        .assert_status(StatusCode::OK);
}

/// Without the header: 401 "Invalid session".
async fn missing_header_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let message = server
        .session_info(None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(message, "Invalid session");
}

/// Garbage tokens (wrong shape, never issued, non-ASCII, a near miss of a real one) are 401.
async fn garbage_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let real = server.session_token(&bot).await;
    let mut near_miss = real.clone();
    let last = near_miss.pop().expect("non-empty");
    near_miss.push(if last == 'A' { 'B' } else { 'A' });
    let too_long = format!("{real}A");
    for token in [
        "garbage",
        "A".repeat(43).as_str(),
        &near_miss,
        &too_long,
        &real[..42],
        "Bearer x",
    ] {
        let message = server
            .session_info(Some(token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
        assert_eq!(message, "Invalid session", "token {token:?}");
    }
    server.assert_live(&real).await;
}

/// A header value with bytes that are not visible ASCII is a bad token (401), not a 400/500.
async fn non_ascii_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut stream = server.tls(None).await.unwrap();
    write_raw(
        &mut stream,
        b"GET /pod/v2/sessioninfo HTTP/1.1\r\nHost: localhost\r\nsessionToken: \xc3\xa9t\xc3\xa9\r\nConnection: close\r\n\r\n",
    )
    .await;
    let response = read_to_end_within(&mut stream, WAIT).await.expect("closed");
    assert_eq!(
        raw_status(&response),
        Some(401),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

/// A key-manager token is not a session: 401 "Invalid session".
async fn key_manager_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let km = server.token(&bot, KEYAUTH).await;
    server.assert_dead(&km).await;
}

/// An app's own session has no user: 403 (while its OBO session answers 200).
async fn app_session_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    server
        .session_info(Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let obo = server
        .obo_token(&app, &app_session, &obo_by_id("2001"))
        .await;
    server.assert_live(&obo).await;
}

/// A session is valid until session_lifetime has passed on the clock, then 401.
async fn session_expires_after_its_lifetime(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("2h")).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.advance(2 * HOUR - Duration::from_secs(1));
    server.assert_live(&token).await;
    server.advance(Duration::from_secs(1));
    server.assert_dead(&token).await;
    // A session minted now is fresh and lives again.
    let fresh = server.session_token(&bot).await;
    server.assert_live(&fresh).await;
}

/// The default lifetime is 24 hours.
async fn default_lifetime_is_24_hours(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.advance(24 * HOUR - Duration::from_secs(1));
    server.assert_live(&token).await;
    server.advance(Duration::from_secs(1));
    server.assert_dead(&token).await;
}

/// A session never outlives the client certificate it was made with: a 1-hour certificate's
/// session is dead after 2 hours while a long-lived certificate's session (same lifetime, 24h)
/// is still valid.
async fn session_is_capped_by_certificate_not_after(backend: Backend) {
    let server = TestServer::start(backend).await;
    let short = server
        .pki
        .client_valid("bot.user", Validity::for_the_next(HOUR));
    let long = server.pki.client("bot.user");
    let short_token = server.session_token(&short).await;
    let long_token = server.session_token(&long).await;
    server.advance(HOUR - Duration::from_secs(120));
    server.assert_live(&short_token).await;

    server.advance(HOUR + Duration::from_secs(120));

    server.assert_dead(&short_token).await;
    server.assert_live(&long_token).await;
}

/// The certificate cap applies to app and OBO sessions too.
async fn app_and_obo_sessions_are_capped_by_certificate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let short = server
        .pki
        .client_valid("demo-app", Validity::for_the_next(HOUR));
    let app_session = server.app_token(&short).await;
    let obo = server
        .obo_token(&short, &app_session, &obo_by_id("2001"))
        .await;
    server.advance(2 * HOUR);
    server.assert_dead(&obo).await;
    let long = server.pki.client("demo-app");
    server
        .post(Some(&long), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A logged-out session is 401 on sessioninfo.
async fn logged_out_session_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .post(Some(&bot), LOGOUT, Some(&token))
        .await
        .assert_status(StatusCode::OK);
    server.assert_dead(&token).await;
}

/// Sessions of different servers are unrelated: a token from one is 401 on another.
async fn token_from_another_server_is_401(backend: Backend) {
    let one = TestServer::start(backend).await;
    let two = TestServer::start(backend).await;
    let token = one.session_token(&one.pki.client("bot.user")).await;
    two.session_info(Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}
