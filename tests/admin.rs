//! Session administration: an administrator's own session lists and ends other users' sessions
//! (and an app's) by public session id; every other caller is refused, and nothing but the named
//! sessions ends.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::header::ALLOW;
use hyper::{Method, StatusCode};
use serde_json::Value;
use sessionauth::clock::Clock as _;
use support::*;

route_tests!(
    list_describes_each_session_of_the_user,
    listing_is_paginated,
    answers_never_contain_a_token,
    obo_sessions_are_listed_under_their_user,
    expired_sessions_are_not_listed,
    logout_counts_only_live_sessions,
    expiration_delay_is_capped_by_the_certificate,
    missing_token_is_401,
    garbage_token_is_401,
    logged_out_admin_token_is_401,
    expired_admin_token_is_401,
    admin_key_manager_token_is_401,
    non_admin_is_403_and_ends_nothing,
    non_admin_is_403_before_any_lookup,
    app_and_obo_sessions_are_403,
    obo_session_acting_as_an_admin_is_403,
    administrator_role_is_required,
    unknown_user_is_404,
    user_id_not_an_integer_is_400,
    wrong_method_is_405,
    logout_user_ends_all_its_sessions,
    logout_user_ends_obo_sessions_acting_as_the_user,
    admin_may_end_its_own_sessions,
    logout_session_ends_exactly_that_one,
    logout_session_ends_a_key_manager_token,
    session_id_of_another_user_is_404,
    unknown_session_id_is_404,
    session_id_not_an_integer_is_400,
    same_session_id_twice_is_404_the_second_time,
    expired_session_id_is_404,
    logout_app_ends_its_app_and_obo_sessions,
    logout_app_leaves_other_apps_alone,
    unknown_app_is_404,
);

/// The sample directory's administrator (roles include `SUPER_ADMINISTRATOR`).
const ADMIN: &str = "admin.bot";
const ADMIN_UID: &str = "1003";
/// The sample directory's ordinary service user.
const BOT: &str = "bot.user";
const BOT_UID: &str = "1001";
/// The sample directory's NORMAL user who installed demo-app.
const ALICE_UID: &str = "2001";

const DAY_MS: u64 = 86_400_000;

/// `GET /pod/v1/users/{uid}/sessions`.
fn sessions_path(uid: &str) -> String {
    format!("/pod/v1/users/{uid}/sessions")
}

/// `POST /pod/v1/users/{uid}/sessions/logout`.
fn logout_user_path(uid: &str) -> String {
    format!("/pod/v1/users/{uid}/sessions/logout")
}

/// `POST /pod/v1/users/{uid}/sessions/{sid}/logout`.
fn logout_session_path(uid: &str, sid: &str) -> String {
    format!("/pod/v1/users/{uid}/sessions/{sid}/logout")
}

/// `POST /pod/v1/apps/{app}/sessions/logout`.
fn logout_app_path(app: &str) -> String {
    format!("/pod/v1/apps/{app}/sessions/logout")
}

/// Every administration request (method, path) about bot.user and demo-app, for caller checks.
fn every_admin_request() -> Vec<(Method, String)> {
    vec![
        (Method::GET, sessions_path(BOT_UID)),
        (Method::POST, logout_user_path(BOT_UID)),
        (Method::POST, logout_session_path(BOT_UID, "1")),
        (Method::POST, logout_app_path("demo-app")),
    ]
}

/// admin.bot's own session token.
async fn admin_token(server: &TestServer) -> String {
    server.session_token(&server.pki.client(ADMIN)).await
}

/// A token from `path` authenticated with `id`, sending `User-Agent: <ua>`.
async fn token_with_agent(server: &TestServer, id: &Identity, path: &str, ua: &str) -> String {
    let resp = server
        .request(Some(id), Req::post(path).header("User-Agent", ua))
        .await;
    resp.assert_status(StatusCode::OK);
    let token = resp.json()["token"].as_str().unwrap().to_owned();
    assert_token_shape(&token);
    token
}

/// `GET` the user's sessions with the caller's token (none when `None`).
async fn list(server: &TestServer, token: Option<&str>, uid: &str) -> Resp {
    server
        .request(None, Req::get(&sessions_path(uid)).token_opt(token))
        .await
}

/// Lists the user's sessions as `admin`, asserting the 200 shape; returns the entries.
async fn listed(server: &TestServer, admin: &str, uid: &str) -> Vec<Value> {
    let resp = list(server, Some(admin), uid).await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_keys(&body, &["sessions", "count", "total", "skip", "limit"]);
    let sessions = body["sessions"].as_array().expect("sessions array").clone();
    assert_eq!(body["count"], sessions.len(), "{body}");
    assert_eq!(
        body["total"],
        sessions.len(),
        "one page holds them all: {body}"
    );
    sessions
}

/// The public ids of the user's live sessions, oldest first.
async fn session_ids(server: &TestServer, admin: &str, uid: &str) -> Vec<i64> {
    listed(server, admin, uid)
        .await
        .iter()
        .map(sid_of)
        .collect()
}

/// A listed session's `sessionId`: a decimal string (the BDK's `V1Session.session_id` is a
/// strict string, and jq rounds a 64-bit number), read as the integer it spells.
fn sid_of(s: &Value) -> i64 {
    let text = s["sessionId"].as_str().expect("sessionId is a string");
    assert!(text.bytes().all(|b| b.is_ascii_digit()), "{s}");
    text.parse().expect("sessionId is a decimal integer")
}

/// `POST path` with no certificate and the caller's token.
async fn admin_post(server: &TestServer, token: &str, path: &str) -> Resp {
    server.post(None, path, Some(token)).await
}

/// Asserts `{"format":"TEXT","message":"…","count":n}`; returns the message.
fn assert_ended(resp: &Resp, count: usize) -> String {
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_keys(&body, &["format", "message", "count"]);
    assert_eq!(body["format"], "TEXT", "{body}");
    assert_eq!(body["count"], count, "{body}");
    body["message"].as_str().expect("message string").to_owned()
}

/// The app session is live: it still mints an OBO session for alice.
async fn assert_app_session_live(server: &TestServer, app: &Identity, app_session: &str) {
    server
        .post(Some(app), &obo_by_id(ALICE_UID), Some(app_session))
        .await
        .assert_status(StatusCode::OK);
}

/// The app session is dead: minting with it is 401.
async fn assert_app_session_dead(server: &TestServer, app: &Identity, app_session: &str) {
    server
        .post(Some(app), &obo_by_id(ALICE_UID), Some(app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// The key-manager token is live: its owner can log it out (which ends it).
async fn assert_key_manager_live_then_end(server: &TestServer, owner: &Identity, km: &str) {
    server
        .post(Some(owner), KEY_LOGOUT, Some(km))
        .await
        .assert_status(StatusCode::OK);
}

/// The key-manager token is dead: logging it out is 401.
async fn assert_key_manager_dead(server: &TestServer, owner: &Identity, km: &str) {
    server
        .post(Some(owner), KEY_LOGOUT, Some(km))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A directory with an administrator that installed an app (so that an app can hold an OBO
/// session acting as an administrator), an `ADMINISTRATOR`, and a service user with other roles.
const ADMIN_DIRECTORY: &str = r#"
    [[user]]
    id = 1
    username = "root.bot"
    accountType = "SYSTEM"
    roles = ["INDIVIDUAL", "SUPER_ADMINISTRATOR"]
    installedApps = ["the-app"]

    [[user]]
    id = 2
    username = "plain.admin"
    accountType = "SYSTEM"
    roles = ["ADMINISTRATOR"]

    [[user]]
    id = 3
    username = "provisioner"
    accountType = "SYSTEM"
    roles = ["INDIVIDUAL", "USER_PROVISIONING", "COMPLIANCE_OFFICER"]

    [[app]]
    appId = "the-app"
    active = true
    allowOnBehalfOf = true
"#;

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

/// A listing is one page: `limit` sessions after the first `skip`, oldest first, with the
/// total; a limit past the cap, a negative or non-numeric value, or one given twice is 400.
async fn listing_is_paginated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    let bot = server.pki.client(BOT);
    for _ in 0..5 {
        server.session_token(&bot).await;
    }
    let all = session_ids(&server, &admin, BOT_UID).await;
    assert_eq!(all.len(), 5);
    let page = |q: &'static str| {
        let path = format!("{}?{q}", sessions_path(BOT_UID));
        let server = &server;
        let admin = admin.clone();
        async move { server.request(None, Req::get(&path).token(&admin)).await }
    };
    let resp = page("skip=1&limit=2").await;
    resp.assert_status(StatusCode::OK);
    let body = resp.json();
    assert_eq!(body["count"], 2, "{body}");
    assert_eq!(body["total"], 5, "{body}");
    let ids: Vec<i64> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(sid_of)
        .collect();
    assert_eq!(ids, all[1..3]);
    let resp = page("skip=9").await;
    assert_eq!(resp.json()["count"], 0);
    for bad in ["limit=1001", "limit=-1", "skip=x", "limit=1&limit=2"] {
        page(bad).await.assert_error(StatusCode::BAD_REQUEST);
    }
}

/// The list describes each of bot.user's sessions (own and key-manager) with integer ids and
/// times, its lifetime in ms, the client IP, the User-Agent when one was sent, and its kind,
/// oldest first, with a matching `count`.
async fn list_describes_each_session_of_the_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let t0 = server.clock.now().as_epoch_millis();
    token_with_agent(&server, &bot, AUTH, "symphony-bdk-java/3.0").await;
    server.advance(Duration::from_secs(1));
    token_with_agent(&server, &bot, KEYAUTH, "key-manager-client/1.1").await;
    server.advance(Duration::from_secs(1));
    server.session_token(&bot).await;
    let admin = admin_token(&server).await;
    let digest = ring::digest::digest(&ring::digest::SHA256, bot.chain[0].as_ref());
    let fingerprint: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();

    let resp = list(&server, Some(&admin), BOT_UID).await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_no_nulls(&body);
    assert_eq!(body["count"], 3, "{body}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{body}");

    let expected = [
        ("session", Some("symphony-bdk-java/3.0"), t0),
        ("key_manager", Some("key-manager-client/1.1"), t0 + 1000),
        ("session", None, t0 + 2000),
    ];
    for (s, (kind, ua, created)) in sessions.iter().zip(expected) {
        let mut keys = vec![
            "sessionId",
            "userId",
            "creationTime",
            "expirationDelay",
            "clientIp",
            "kind",
            "credentialId",
            "credentialFingerprint",
        ];
        if ua.is_some() {
            keys.push("userAgent");
        }
        assert_keys(s, &keys);
        assert!(sid_of(s) > 0, "{s}");
        assert_eq!(s["userId"].as_i64(), Some(1001), "{s}");
        assert_eq!(s["creationTime"].as_u64(), Some(created), "{s}");
        assert_eq!(s["expirationDelay"].as_u64(), Some(DAY_MS), "{s}");
        assert_eq!(s["clientIp"], "127.0.0.1", "{s}");
        assert_eq!(s["kind"], kind, "{s}");
        assert_eq!(s["userAgent"].as_str(), ua, "{s}");
        // What `openssl x509 -fingerprint -sha256` prints, lowercase and without colons.
        assert_eq!(s["credentialFingerprint"], fingerprint, "{s}");
    }
    let mut ids: Vec<i64> = sessions.iter().map(sid_of).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "session ids are distinct: {body}");
}

/// No answer of the administration API contains a token issued in the test, nor any
/// token-shaped string.
async fn answers_never_contain_a_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let app = server.pki.client("demo-app");
    let admin = admin_token(&server).await;
    let app_session = server.app_token(&app).await;
    let mut tokens = vec![
        admin.clone(),
        server.session_token(&bot).await,
        server.token(&bot, KEYAUTH).await,
        server.token(&server.pki.client(ADMIN), KEYAUTH).await,
        server
            .obo_token(&app, &app_session, &obo_by_id(ALICE_UID))
            .await,
    ];
    tokens.push(app_session);

    let mut bodies = Vec::new();
    for uid in [BOT_UID, ADMIN_UID, ALICE_UID] {
        let resp = list(&server, Some(&admin), uid).await;
        resp.assert_status(StatusCode::OK);
        assert!(resp.json()["count"].as_u64().unwrap() >= 1);
        bodies.push(resp.text());
    }
    let sid = session_ids(&server, &admin, BOT_UID).await[0].to_string();
    for path in [
        logout_session_path(BOT_UID, &sid),
        logout_user_path(BOT_UID),
        logout_user_path(ALICE_UID),
        logout_app_path("demo-app"),
    ] {
        let resp = admin_post(&server, &admin, &path).await;
        resp.assert_status(StatusCode::OK);
        bodies.push(resp.text());
    }
    for body in &bodies {
        for token in &tokens {
            assert!(!body.contains(token.as_str()), "a token in {body}");
        }
        let json: Value = serde_json::from_str(body).unwrap();
        assert_no_token_shaped_string(&json);
    }
}

/// No string in the value is 43 characters of base64url (the shape of a token).
fn assert_no_token_shaped_string(value: &Value) {
    match value {
        Value::String(s) => assert!(
            !(s.len() == 43
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
            "token-shaped string {s:?}"
        ),
        Value::Array(items) => items.iter().for_each(assert_no_token_shaped_string),
        Value::Object(map) => map.values().for_each(assert_no_token_shaped_string),
        _ => {}
    }
}

/// OBO sessions acting as a user are listed under that user with `kind` "obo" and the minting
/// `appId`; the app's own session is listed under nobody.
async fn obo_sessions_are_listed_under_their_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let app_session = server.app_token(&app).await;
    let ua_resp = server
        .request(
            Some(&app),
            Req::post(&obo_by_name("alice"))
                .token(&app_session)
                .header("User-Agent", "demo-app/2.0"),
        )
        .await;
    ua_resp.assert_status(StatusCode::OK);
    server.advance(Duration::from_secs(1));
    server
        .obo_token(&app, &app_session, &obo_by_id(ALICE_UID))
        .await;
    let admin = admin_token(&server).await;

    let sessions = listed(&server, &admin, ALICE_UID).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let mut ends = Vec::new();
    for s in &sessions {
        assert_eq!(s["kind"], "obo", "{s}");
        assert_eq!(s["appId"], "demo-app", "{s}");
        assert_eq!(s["userId"].as_i64(), Some(2001), "{s}");
        assert_eq!(s["clientIp"], "127.0.0.1", "{s}");
        ends.push(s["creationTime"].as_u64().unwrap() + s["expirationDelay"].as_u64().unwrap());
    }
    // Both end with the app session that minted them: the first lives the full day, the one
    // minted a second later a second less.
    assert_eq!(sessions[0]["expirationDelay"].as_u64(), Some(DAY_MS));
    assert_eq!(sessions[1]["expirationDelay"].as_u64(), Some(DAY_MS - 1000));
    assert_eq!(ends[0], ends[1]);
    assert_eq!(sessions[0]["userAgent"], "demo-app/2.0");
    // The app session acts as no user: bot.user and bob have nothing listed.
    assert!(listed(&server, &admin, BOT_UID).await.is_empty());
    assert!(listed(&server, &admin, "2002").await.is_empty());
}

/// Expired sessions are not listed; a session ends exactly at creationTime + expirationDelay.
async fn expired_sessions_are_not_listed(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("1h")).await;
    let bot = server.pki.client(BOT);
    let old = server.session_token(&bot).await;
    server.advance(Duration::from_secs(1800));
    let young = server.session_token(&bot).await;
    let admin = admin_token(&server).await;

    let sessions = listed(&server, &admin, BOT_UID).await;
    assert_eq!(sessions.len(), 2);
    let end = sessions[0]["creationTime"].as_u64().unwrap()
        + sessions[0]["expirationDelay"].as_u64().unwrap();
    assert_eq!(sessions[0]["expirationDelay"].as_u64(), Some(3_600_000));
    let now = server.clock.now().as_epoch_millis();

    // One millisecond before the old session's end it is listed and live.
    server.advance(Duration::from_millis(end - now - 1));
    assert_eq!(listed(&server, &admin, BOT_UID).await.len(), 2);
    server.assert_live(&old).await;
    // At its end it is neither.
    server.advance(Duration::from_millis(1));
    let sessions = listed(&server, &admin, BOT_UID).await;
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0]["creationTime"].as_u64().unwrap() > end - 3_600_000);
    server.assert_dead(&old).await;
    server.assert_live(&young).await;
}

/// Ending all of a user's or an app's sessions counts only live ones: expired sessions that
/// the purge has not dropped yet are not counted.
async fn logout_counts_only_live_sessions(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("1h")).await;
    let bot = server.pki.client(BOT);
    let demo = server.pki.client("demo-app");
    server.session_token(&bot).await;
    server.app_token(&demo).await;
    server.advance(Duration::from_secs(3600));
    let live = server.session_token(&bot).await;
    let live_app = server.app_token(&demo).await;
    let admin = admin_token(&server).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_user_path(BOT_UID)).await,
        1,
    );
    server.assert_dead(&live).await;
    assert_ended(
        &admin_post(&server, &admin, &logout_app_path("demo-app")).await,
        1,
    );
    assert_app_session_dead(&server, &demo, &live_app).await;
}

/// A session capped by its certificate's notAfter lists that shorter lifetime.
async fn expiration_delay_is_capped_by_the_certificate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let short = Validity::for_the_next(Duration::from_secs(3600));
    server
        .session_token(&server.pki.client_valid(BOT, short))
        .await;
    let admin = admin_token(&server).await;
    let sessions = listed(&server, &admin, BOT_UID).await;
    let delay = sessions[0]["expirationDelay"].as_u64().unwrap();
    // The manual clock started when the server did, a little before the certificate was made,
    // so the capped lifetime is an hour plus the start-up time (well under a minute).
    assert!(
        (3_500_000..=3_660_000).contains(&delay),
        "expirationDelay {delay}"
    );
}

// ---------------------------------------------------------------------------------------------
// Who may call
// ---------------------------------------------------------------------------------------------

/// Without the sessionToken header: 401 on every administration endpoint.
async fn missing_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (method, path) in every_admin_request() {
        server
            .request(None, Req::new(method, &path))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
}

/// A garbage or never-issued token: 401 on every administration endpoint.
async fn garbage_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let never_issued = "x".repeat(43);
    for token in ["garbage", never_issued.as_str(), ""] {
        for (method, path) in every_admin_request() {
            server
                .request(None, Req::new(method, &path).token(token))
                .await
                .assert_error(StatusCode::UNAUTHORIZED);
        }
    }
}

/// The admin's token works until the admin logs it out; then it is 401.
async fn logged_out_admin_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin_id = server.pki.client(ADMIN);
    let admin = server.session_token(&admin_id).await;
    listed(&server, &admin, BOT_UID).await;
    server
        .post(Some(&admin_id), LOGOUT, Some(&admin))
        .await
        .assert_status(StatusCode::OK);
    for (method, path) in every_admin_request() {
        server
            .request(None, Req::new(method, &path).token(&admin))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
}

/// The admin's token works until it expires; then it is 401.
async fn expired_admin_token_is_401(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("10m")).await;
    let admin = admin_token(&server).await;
    listed(&server, &admin, BOT_UID).await;
    server.advance(Duration::from_secs(600));
    list(&server, Some(&admin), BOT_UID)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// admin.bot's key-manager token is 401 (only its session token administers); its session
/// token is 200.
async fn admin_key_manager_token_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin_id = server.pki.client(ADMIN);
    let km = server.token(&admin_id, KEYAUTH).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    for (method, path) in every_admin_request() {
        server
            .request(None, Req::new(method, &path).token(&km))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server.assert_live(&bot_session).await;
    let admin = server.session_token(&admin_id).await;
    assert_eq!(listed(&server, &admin, BOT_UID).await.len(), 1);
}

/// A service user without an administrator role (bot.user) is 403 on every endpoint, and ends
/// nothing; admin.bot's session on the same request is 200.
async fn non_admin_is_403_and_ends_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let bot_session = server.session_token(&bot).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    let sid = session_ids(&server, &admin_token(&server).await, BOT_UID).await[0].to_string();
    let requests = [
        (Method::GET, sessions_path(BOT_UID)),
        (Method::POST, logout_session_path(BOT_UID, &sid)),
        (Method::POST, logout_user_path(BOT_UID)),
        (Method::POST, logout_user_path(ALICE_UID)),
        (Method::POST, logout_app_path("demo-app")),
    ];
    for (method, path) in &requests {
        server
            .request(None, Req::new(method.clone(), path).token(&bot_session))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server.assert_live(&bot_session).await;
    server.assert_live(&obo).await;
    assert_app_session_live(&server, &app, &app_session).await;
    // The same list request from the administrator succeeds.
    assert_eq!(
        listed(&server, &admin_token(&server).await, BOT_UID)
            .await
            .len(),
        1
    );
}

/// A non-admin learns nothing from 404 or 400: unknown users, unknown apps and malformed ids
/// are 403 for it too.
async fn non_admin_is_403_before_any_lookup(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    for (method, path) in [
        (Method::GET, sessions_path("9999")),
        (Method::GET, sessions_path("abc")),
        (Method::POST, logout_user_path("9999")),
        (Method::POST, logout_session_path(BOT_UID, "abc")),
        (Method::POST, logout_session_path(BOT_UID, "12345")),
        (Method::POST, logout_app_path("no-such-app")),
    ] {
        server
            .request(None, Req::new(method, &path).token(&bot_session))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
}

/// An app's own session and an OBO session (alice via demo-app) are 403.
async fn app_and_obo_sessions_are_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    for token in [&app_session, &obo] {
        for (method, path) in every_admin_request() {
            server
                .request(None, Req::new(method, &path).token(token))
                .await
                .assert_error(StatusCode::FORBIDDEN);
        }
    }
    server.assert_live(&obo).await;
    assert_app_session_live(&server, &app, &app_session).await;
}

/// An OBO session acting as an administrator does not carry the administrator's authority
/// (403), while the administrator's own session does (200).
async fn obo_session_acting_as_an_admin_is_403(backend: Backend) {
    let server =
        TestServer::start_with(backend, Options::default().directory(ADMIN_DIRECTORY)).await;
    let app = server.pki.client("the-app");
    let app_session = server.app_token(&app).await;
    let obo = server.obo_token(&app, &app_session, &obo_by_id("1")).await;
    server.advance(Duration::from_secs(1));
    let requests = [
        (Method::GET, sessions_path("1")),
        (Method::POST, logout_user_path("3")),
        (Method::POST, logout_app_path("the-app")),
    ];
    for (method, path) in &requests {
        server
            .request(None, Req::new(method.clone(), path).token(&obo))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server.assert_live(&obo).await;
    let root = server.session_token(&server.pki.client("root.bot")).await;
    let sessions = listed(&server, &root, "1").await;
    let kinds: Vec<&str> = sessions
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["obo", "session"]);
}

/// The `ADMINISTRATOR` role is enough (200); a service user whose roles name no administrator
/// role is 403.
async fn administrator_role_is_required(backend: Backend) {
    let server =
        TestServer::start_with(backend, Options::default().directory(ADMIN_DIRECTORY)).await;
    let plain = server
        .session_token(&server.pki.client("plain.admin"))
        .await;
    let provisioner = server
        .session_token(&server.pki.client("provisioner"))
        .await;
    assert_eq!(listed(&server, &plain, "3").await.len(), 1);
    list(&server, Some(&provisioner), "2")
        .await
        .assert_error(StatusCode::FORBIDDEN);
    admin_post(&server, &provisioner, &logout_user_path("2"))
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server.assert_live(&plain).await;
}

/// An unknown user id is 404 "User id not found" on the three user endpoints.
async fn unknown_user_is_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    for (method, path) in [
        (Method::GET, sessions_path("9999")),
        (Method::POST, logout_user_path("9999")),
        (Method::POST, logout_session_path("9999", "1")),
    ] {
        let message = server
            .request(None, Req::new(method, &path).token(&admin))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "User id not found");
    }
}

/// A user id that is not an integer (a username, a fraction, too large) is 400.
async fn user_id_not_an_integer_is_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    for uid in ["bot.user", "1.5", "abc", "99999999999999999999"] {
        for (method, path) in [
            (Method::GET, sessions_path(uid)),
            (Method::POST, logout_user_path(uid)),
            (Method::POST, logout_session_path(uid, "1")),
        ] {
            server
                .request(None, Req::new(method, &path).token(&admin))
                .await
                .assert_error(StatusCode::BAD_REQUEST);
        }
    }
}

/// The wrong method is 405 with `Allow`, on every administration path.
async fn wrong_method_is_405(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    for (method, path, allow) in [
        (Method::POST, sessions_path(BOT_UID), "GET"),
        (Method::DELETE, sessions_path(BOT_UID), "GET"),
        (Method::GET, logout_user_path(BOT_UID), "POST"),
        (Method::GET, logout_session_path(BOT_UID, "1"), "POST"),
        (Method::PUT, logout_session_path(BOT_UID, "1"), "POST"),
        (Method::GET, logout_app_path("demo-app"), "POST"),
    ] {
        let resp = server
            .request(None, Req::new(method, &path).token(&admin))
            .await;
        resp.assert_error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            resp.headers.get(ALLOW).map(|v| v.to_str().unwrap()),
            Some(allow),
            "{path}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Ending all of a user's sessions
// ---------------------------------------------------------------------------------------------

/// Ending all of bot.user's sessions ends its sessions and key-manager tokens (count 3); other
/// users' sessions and the admin's own live on; a second call ends 0.
async fn logout_user_ends_all_its_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let admin_id = server.pki.client(ADMIN);
    let first = server.session_token(&bot).await;
    let second = server.session_token(&bot).await;
    let km = server.token(&bot, KEYAUTH).await;
    let (app, app_session, obo) = server.demo_app_with_obo().await;
    let admin = server.session_token(&admin_id).await;
    let admin_km = server.token(&admin_id, KEYAUTH).await;

    let message = assert_ended(
        &admin_post(&server, &admin, &logout_user_path(BOT_UID)).await,
        3,
    );
    assert!(message.contains('3'), "{message}");

    server.assert_dead(&first).await;
    server.assert_dead(&second).await;
    assert_key_manager_dead(&server, &bot, &km).await;
    assert!(listed(&server, &admin, BOT_UID).await.is_empty());
    // Everyone else's sessions live on, the admin's own included.
    server.assert_live(&admin).await;
    server.assert_live(&obo).await;
    assert_app_session_live(&server, &app, &app_session).await;
    assert_key_manager_live_then_end(&server, &admin_id, &admin_km).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_user_path(BOT_UID)).await,
        0,
    );
    // bot.user can sign in again afterwards.
    let again = server.session_token(&bot).await;
    server.assert_live(&again).await;
}

/// Ending all of alice's sessions ends the OBO sessions apps hold for her; the app session
/// that minted them lives on.
async fn logout_user_ends_obo_sessions_acting_as_the_user(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (app, app_session, obo1) = server.demo_app_with_obo().await;
    let obo2 = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;
    let admin = admin_token(&server).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_user_path(ALICE_UID)).await,
        2,
    );
    server.assert_dead(&obo1).await;
    server.assert_dead(&obo2).await;
    assert_app_session_live(&server, &app, &app_session).await;
}

/// An administrator may end its own sessions: its token is then 401.
async fn admin_may_end_its_own_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    let other = admin_token(&server).await;
    assert_ended(
        &admin_post(&server, &admin, &logout_user_path(ADMIN_UID)).await,
        2,
    );
    server.assert_dead(&admin).await;
    server.assert_dead(&other).await;
    list(&server, Some(&admin), BOT_UID)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------------
// Ending one session
// ---------------------------------------------------------------------------------------------

/// Ending one session by id ends exactly it (count 1); the user's other session stays valid.
async fn logout_session_ends_exactly_that_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let admin = admin_token(&server).await;
    let first = server.session_token(&bot).await;
    let first_sid = session_ids(&server, &admin, BOT_UID).await[0];
    server.advance(Duration::from_secs(1));
    let second = server.session_token(&bot).await;
    let ids = session_ids(&server, &admin, BOT_UID).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], first_sid);

    let message = assert_ended(
        &admin_post(
            &server,
            &admin,
            &logout_session_path(BOT_UID, &first_sid.to_string()),
        )
        .await,
        1,
    );
    assert!(message.contains(&first_sid.to_string()), "{message}");

    server.assert_dead(&first).await;
    server.assert_live(&second).await;
    assert_eq!(session_ids(&server, &admin, BOT_UID).await, [ids[1]]);
    server.assert_live(&admin).await;
}

/// A key-manager token can be ended by its session id, and only it ends.
async fn logout_session_ends_a_key_manager_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client(BOT);
    let admin = admin_token(&server).await;
    let km = server.token(&bot, KEYAUTH).await;
    let km_sid = session_ids(&server, &admin, BOT_UID).await[0];
    server.advance(Duration::from_secs(1));
    let session = server.session_token(&bot).await;

    assert_ended(
        &admin_post(
            &server,
            &admin,
            &logout_session_path(BOT_UID, &km_sid.to_string()),
        )
        .await,
        1,
    );
    assert_key_manager_dead(&server, &bot, &km).await;
    server.assert_live(&session).await;
}

/// A session id of another user is 404 under this user, and that session stays valid; under
/// its own user it ends.
async fn session_id_of_another_user_is_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, _, obo) = server.demo_app_with_obo().await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    let admin = admin_token(&server).await;
    let alice_sid = session_ids(&server, &admin, ALICE_UID).await[0].to_string();
    let admin_sid = session_ids(&server, &admin, ADMIN_UID).await[0].to_string();

    for (uid, sid) in [
        (BOT_UID, &alice_sid),
        (BOT_UID, &admin_sid),
        ("2002", &alice_sid),
    ] {
        let message = admin_post(&server, &admin, &logout_session_path(uid, sid))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "Session not found");
    }
    server.assert_live(&obo).await;
    server.assert_live(&admin).await;
    server.assert_live(&bot_session).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_session_path(ALICE_UID, &alice_sid)).await,
        1,
    );
    server.assert_dead(&obo).await;
}

/// A session id that names no session (0, negative, random) is 404, and ends nothing.
async fn unknown_session_id_is_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    let admin = admin_token(&server).await;
    for sid in ["0", "-1", "4611686018427387904", "9223372036854775807"] {
        admin_post(&server, &admin, &logout_session_path(BOT_UID, sid))
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    server.assert_live(&bot_session).await;
    assert_eq!(session_ids(&server, &admin, BOT_UID).await.len(), 1);
}

/// A session id that is not an integer is 400; in particular a token is not a session id.
async fn session_id_not_an_integer_is_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    let admin = admin_token(&server).await;
    for sid in [
        "abc",
        "1.0",
        "9223372036854775808",
        bot_session.as_str(),
        admin.as_str(),
    ] {
        admin_post(&server, &admin, &logout_session_path(BOT_UID, sid))
            .await
            .assert_error(StatusCode::BAD_REQUEST);
    }
    server.assert_live(&bot_session).await;
    server.assert_live(&admin).await;
}

/// Ending the same session id twice: 200 then 404.
async fn same_session_id_twice_is_404_the_second_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    let admin = admin_token(&server).await;
    let sid = session_ids(&server, &admin, BOT_UID).await[0].to_string();
    let path = logout_session_path(BOT_UID, &sid);
    assert_ended(&admin_post(&server, &admin, &path).await, 1);
    admin_post(&server, &admin, &path)
        .await
        .assert_error(StatusCode::NOT_FOUND);
    server.assert_dead(&bot_session).await;
}

/// The id of an expired session is 404.
async fn expired_session_id_is_404(backend: Backend) {
    let server = TestServer::start_with(backend, Options::default().session_lifetime("1h")).await;
    let admin_id = server.pki.client(ADMIN);
    let first_admin = server.session_token(&admin_id).await;
    server.session_token(&server.pki.client(BOT)).await;
    let sid = session_ids(&server, &first_admin, BOT_UID).await[0].to_string();
    server.advance(Duration::from_secs(3600));
    let admin = server.session_token(&admin_id).await;
    admin_post(&server, &admin, &logout_session_path(BOT_UID, &sid))
        .await
        .assert_error(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Ending an app's sessions
// ---------------------------------------------------------------------------------------------

/// Ending demo-app's sessions ends its app sessions and every OBO session it minted (count);
/// other apps', bots' and the admin's sessions live on; a second call ends 0.
async fn logout_app_ends_its_app_and_obo_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let demo = server.pki.client("demo-app");
    let demo_session1 = server.app_token(&demo).await;
    let demo_session2 = server.app_token(&demo).await;
    let obo1 = server
        .obo_token(&demo, &demo_session1, &obo_by_id(ALICE_UID))
        .await;
    let obo2 = server
        .obo_token(&demo, &demo_session2, &obo_by_name("alice"))
        .await;
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    let no_obo = server.pki.client("no-obo-app");
    let no_obo_session = server.app_token(&no_obo).await;
    let bot = server.pki.client(BOT);
    let bot_session = server.session_token(&bot).await;
    let bot_km = server.token(&bot, KEYAUTH).await;
    let admin = admin_token(&server).await;

    let message = assert_ended(
        &admin_post(&server, &admin, &logout_app_path("demo-app")).await,
        4,
    );
    assert!(message.contains("demo-app"), "{message}");

    assert_app_session_dead(&server, &demo, &demo_session1).await;
    assert_app_session_dead(&server, &demo, &demo_session2).await;
    server.assert_dead(&obo1).await;
    server.assert_dead(&obo2).await;
    assert!(listed(&server, &admin, ALICE_UID).await.is_empty());
    // An app's own live session answers 403 on sessioninfo (a dead one 401).
    for token in [&other_session, &no_obo_session] {
        server
            .session_info(Some(token))
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    server.assert_live(&bot_session).await;
    server.assert_live(&admin).await;
    assert_key_manager_live_then_end(&server, &bot, &bot_km).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_app_path("demo-app")).await,
        0,
    );
    // demo-app can start over.
    let fresh = server.app_token(&demo).await;
    assert_app_session_live(&server, &demo, &fresh).await;
}

/// Ending other-app's sessions leaves demo-app's app and OBO sessions alone.
async fn logout_app_leaves_other_apps_alone(backend: Backend) {
    let server = TestServer::start(backend).await;
    let demo = server.pki.client("demo-app");
    let demo_session = server.app_token(&demo).await;
    let obo = server
        .obo_token(&demo, &demo_session, &obo_by_id(ALICE_UID))
        .await;
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    let admin = admin_token(&server).await;

    assert_ended(
        &admin_post(&server, &admin, &logout_app_path("other-app")).await,
        1,
    );
    server.assert_dead(&other_session).await;
    server.assert_live(&obo).await;
    assert_app_session_live(&server, &demo, &demo_session).await;
}

/// An unknown app id (including a user's name) is 404 "App id not found".
async fn unknown_app_is_404(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = admin_token(&server).await;
    let bot_session = server.session_token(&server.pki.client(BOT)).await;
    for app in ["no-such-app", BOT, "Demo-App"] {
        let message = admin_post(&server, &admin, &logout_app_path(app))
            .await
            .assert_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "App id not found");
    }
    server.assert_live(&bot_session).await;
}
