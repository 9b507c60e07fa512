//! `GET /pod/v2/sessioninfo`: the session owner's UserV2 for a live session, "Invalid session"
//! for everything else, and expiry by lifetime or by the client certificate's notAfter, driven
//! by the manual clock.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hyper::StatusCode;
use sessionauth::pki::Validity;

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
#[tokio::test]
async fn bot_session_answers_user_v2() {
    let server = TestServer::start().await;
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
#[tokio::test]
async fn structured_fields_keep_their_types() {
    let server = TestServer::start().await;
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
#[tokio::test]
async fn sessioninfo_with_a_certificate_on_the_connection() {
    let server = TestServer::start().await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .request(Some(&bot), Req::get(SESSIONINFO).token(&token))
        .await
        .assert_status(StatusCode::OK);
}

/// Without the header: 401 "Invalid session".
#[tokio::test]
async fn missing_header_is_401() {
    let server = TestServer::start().await;
    let message = server
        .session_info(None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(message, "Invalid session");
}

/// Garbage tokens (wrong shape, never issued, non-ASCII, a near miss of a real one) are 401.
#[tokio::test]
async fn garbage_token_is_401() {
    let server = TestServer::start().await;
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
    server
        .session_info(Some(&real))
        .await
        .assert_status(StatusCode::OK);
}

/// A header value with bytes that are not visible ASCII is a bad token (401), not a 400/500.
#[tokio::test]
async fn non_ascii_token_is_401() {
    let server = TestServer::start().await;
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
#[tokio::test]
async fn key_manager_token_is_401() {
    let server = TestServer::start().await;
    let bot = server.pki.client("bot.user");
    let km = server.token(&bot, KEYAUTH).await;
    let message = server
        .session_info(Some(&km))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(message, "Invalid session");
}

/// An app's own session has no user: 403 (while its OBO session answers 200).
#[tokio::test]
async fn app_session_is_403() {
    let server = TestServer::start().await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    server
        .session_info(Some(&app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let obo = server
        .obo_token(&app, &app_session, &obo_by_id("2001"))
        .await;
    server
        .session_info(Some(&obo))
        .await
        .assert_status(StatusCode::OK);
}

/// A session is valid until session_lifetime has passed on the clock, then 401.
#[tokio::test]
async fn session_expires_after_its_lifetime() {
    let server = TestServer::start_with(Options::default().session_lifetime("2h")).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.advance(2 * HOUR - Duration::from_secs(1));
    server
        .session_info(Some(&token))
        .await
        .assert_status(StatusCode::OK);
    server.advance(Duration::from_secs(1));
    let message = server
        .session_info(Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_eq!(message, "Invalid session");
    // A session minted now is fresh and lives again.
    let fresh = server.session_token(&bot).await;
    server
        .session_info(Some(&fresh))
        .await
        .assert_status(StatusCode::OK);
}

/// The default lifetime is 24 hours.
#[tokio::test]
async fn default_lifetime_is_24_hours() {
    let server = TestServer::start().await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.advance(24 * HOUR - Duration::from_secs(1));
    server
        .session_info(Some(&token))
        .await
        .assert_status(StatusCode::OK);
    server.advance(Duration::from_secs(1));
    server
        .session_info(Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A session never outlives the client certificate it was made with: a 1-hour certificate's
/// session is dead after 2 hours while a long-lived certificate's session (same lifetime, 24h)
/// is still valid.
#[tokio::test]
async fn session_is_capped_by_certificate_not_after() {
    let server = TestServer::start().await;
    let now = time::OffsetDateTime::now_utc();
    let short = server.pki.client_valid(
        "bot.user",
        Validity {
            not_before: now - Duration::from_secs(300),
            not_after: now + HOUR,
        },
    );
    let long = server.pki.client("bot.user");
    let short_token = server.session_token(&short).await;
    let long_token = server.session_token(&long).await;
    server.advance(HOUR - Duration::from_secs(120));
    server
        .session_info(Some(&short_token))
        .await
        .assert_status(StatusCode::OK);

    server.advance(HOUR + Duration::from_secs(120));

    server
        .session_info(Some(&short_token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .session_info(Some(&long_token))
        .await
        .assert_status(StatusCode::OK);
}

/// The certificate cap applies to app and OBO sessions too.
#[tokio::test]
async fn app_and_obo_sessions_are_capped_by_certificate() {
    let server = TestServer::start().await;
    let now = time::OffsetDateTime::now_utc();
    let short = server.pki.client_valid(
        "demo-app",
        Validity {
            not_before: now - Duration::from_secs(300),
            not_after: now + HOUR,
        },
    );
    let app_session = server.app_token(&short).await;
    let obo = server
        .obo_token(&short, &app_session, &obo_by_id("2001"))
        .await;
    server.advance(2 * HOUR);
    server
        .session_info(Some(&obo))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let long = server.pki.client("demo-app");
    server
        .post(Some(&long), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A logged-out session is 401 on sessioninfo.
#[tokio::test]
async fn logged_out_session_is_401() {
    let server = TestServer::start().await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server
        .post(Some(&bot), LOGOUT, Some(&token))
        .await
        .assert_status(StatusCode::OK);
    server
        .session_info(Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// Sessions of different servers are unrelated: a token from one is 401 on another.
#[tokio::test]
async fn token_from_another_server_is_401() {
    let one = TestServer::start().await;
    let two = TestServer::start().await;
    let token = one.session_token(&one.pki.client("bot.user")).await;
    two.session_info(Some(&token))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}
