//! The certificate authenticator: who may obtain a session, key-manager token or app session
//! with which certificate, and the exact shape of the answers and refusals.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use hyper::header::CACHE_CONTROL;
use hyper::StatusCode;
use support::*;

route_tests!(
    service_user_authenticates_on_all_three_paths,
    token_responses_are_not_cacheable,
    alias_session_works_and_key_manager_token_is_not_a_session,
    tokens_are_unique_per_call,
    tokens_are_unique_on_one_connection,
    app_authenticates,
    no_certificate_is_401,
    certificate_from_another_ca_fails_the_handshake,
    certificate_from_another_ca_fails_the_tls12_handshake,
    expired_certificate_fails_the_handshake,
    certificate_expired_on_the_server_clock_mints_nothing,
    unknown_common_name_is_403,
    inactive_user_is_403,
    normal_user_certificate_is_403,
    app_certificate_on_bot_path_is_403,
    bot_certificate_on_app_path_is_403,
    inactive_app_is_403,
    certificate_without_common_name_is_401,
    certificate_with_two_common_names_is_401,
    certificate_with_empty_common_name_is_401,
    health_needs_no_certificate,
);

/// A SYSTEM user's certificate gets a session token on both session paths and a key-manager
/// token on /keyauth, each in exactly the contract's shape.
async fn service_user_authenticates_on_all_three_paths(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    for (path, name) in [
        (AUTH, "sessionToken"),
        (AUTH_ALIAS, "sessionToken"),
        (KEYAUTH, "keyManagerToken"),
    ] {
        let resp = server.post(Some(&bot), path, None).await;
        resp.assert_status(StatusCode::OK);
        resp.assert_json_content_type();
        let body = resp.json();
        assert_keys(&body, &["name", "token"]);
        assert_eq!(body["name"], name, "{path}");
        assert_token_shape(body["token"].as_str().expect("token is a string"));
    }
}

/// Token responses must not be cached by anything between client and server.
async fn token_responses_are_not_cacheable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let resp = server.post(Some(&bot), AUTH, None).await;
    resp.assert_status(StatusCode::OK);
    assert_eq!(
        resp.headers.get(CACHE_CONTROL).map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
}

/// The session from /session/authenticate (the alias) is a working session; the key-manager
/// token is not accepted as a session.
async fn alias_session_works_and_key_manager_token_is_not_a_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let session = server.token(&bot, AUTH_ALIAS).await;
    let resp = server.session_info(Some(&session)).await;
    resp.assert_status(StatusCode::OK);
    assert_eq!(resp.json()["username"], "bot.user");

    let km = server.token(&bot, KEYAUTH).await;
    let resp = server.session_info(Some(&km)).await;
    assert_eq!(
        resp.assert_error(StatusCode::UNAUTHORIZED),
        "Invalid session"
    );
}

/// Every call mints a new, distinct token.
async fn tokens_are_unique_per_call(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let app = server.pki.client("demo-app");
    let mut seen = HashSet::new();
    for _ in 0..5 {
        assert!(seen.insert(server.token(&bot, AUTH).await));
        assert!(seen.insert(server.token(&bot, KEYAUTH).await));
        assert!(seen.insert(server.token(&app, APP_AUTH).await));
    }
    assert_eq!(seen.len(), 15);
}

/// Several requests on one connection each get a fresh token (no per-connection reuse).
async fn tokens_are_unique_on_one_connection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let mut conn = server.connect(Some(&bot)).await.unwrap();
    let a = conn.send(Req::post(AUTH)).await.unwrap().json();
    let b = conn.send(Req::post(AUTH)).await.unwrap().json();
    assert_ne!(a["token"], b["token"]);
}

/// An active app's certificate gets an app session in exactly the contract's shape.
async fn app_authenticates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    let resp = server.post(Some(&app), APP_AUTH, None).await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    let body = resp.json();
    assert_keys(&body, &["name", "token"]);
    assert_eq!(body["name"], "sessionToken");
    assert_token_shape(body["token"].as_str().expect("token is a string"));
}

/// Without a client certificate every certificate endpoint answers 401 JSON, while the same
/// request with a certificate succeeds.
async fn no_certificate_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in [AUTH, AUTH_ALIAS, KEYAUTH] {
        server
            .post(None, path, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
        let bot = server.pki.client("bot.user");
        server
            .post(Some(&bot), path, None)
            .await
            .assert_status(StatusCode::OK);
    }
    server
        .post(None, APP_AUTH, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A certificate for a valid CN from a CA the server does not trust fails the TLS handshake
/// (TLS 1.3: the first request fails), while the same CN from the trusted CA succeeds.
async fn certificate_from_another_ca_fails_the_handshake(backend: Backend) {
    let server = TestServer::start(backend).await;
    let foreign = server.pki.foreign_client("bot.user");
    for path in [AUTH, KEYAUTH, APP_AUTH, "/health"] {
        let req = if path == "/health" {
            Req::get(path)
        } else {
            Req::post(path)
        };
        match server.try_request(Some(&foreign), req).await {
            Err(_) => {}
            Ok(resp) => panic!("foreign certificate got a response on {path}: {resp:?}"),
        }
    }
    let trusted = server.pki.client("bot.user");
    server
        .post(Some(&trusted), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// With TLS 1.2 the refusal of a foreign certificate happens in the handshake itself.
async fn certificate_from_another_ca_fails_the_tls12_handshake(backend: Backend) {
    let server = TestServer::start(backend).await;
    let foreign = server.pki.foreign_client("bot.user");
    assert!(server
        .tls_with(Some(&foreign), ClientTls::Tls12Only)
        .await
        .is_err());
    let trusted = server.pki.client("bot.user");
    assert!(server
        .tls_with(Some(&trusted), ClientTls::Tls12Only)
        .await
        .is_ok());
}

/// An expired certificate from the trusted CA fails the handshake too.
async fn expired_certificate_fails_the_handshake(backend: Backend) {
    let server = TestServer::start(backend).await;
    let expired = server.pki.client_valid("bot.user", Validity::expired());
    assert!(server
        .try_request(Some(&expired), Req::post(AUTH))
        .await
        .is_err());
}

/// A certificate the server's clock says has expired (rustls, on the wall clock, still accepts
/// it) mints nothing on any certificate path, extension apps included: 401; a certificate still
/// valid on that clock works.
async fn certificate_expired_on_the_server_clock_mints_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let hour = std::time::Duration::from_secs(3600);
    let short = Validity::for_the_next(hour);
    let bot = server.pki.client_valid("bot.user", short);
    let app = server.pki.client_valid("demo-app", short);
    let app_session = server.app_token(&app).await;
    server.advance(2 * hour);
    for path in [AUTH, KEYAUTH] {
        server
            .post(Some(&bot), path, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server
        .post(Some(&app), APP_AUTH, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    // The circle-of-trust call mints from the certificate too (its success is in rsa_auth.rs).
    server
        .request(
            Some(&app),
            Req::post("/sessionauth/v1/authenticate/extensionApp").body(r#"{"appToken":"t"}"#),
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    let long = server.pki.client("bot.user");
    server
        .post(Some(&long), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// A CN that names nobody is 403 with Symphony's message.
async fn unknown_common_name_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let stranger = server.pki.client("nobody.here");
    for path in [AUTH, AUTH_ALIAS, KEYAUTH] {
        let message = server
            .post(Some(&stranger), path, None)
            .await
            .assert_error(StatusCode::FORBIDDEN);
        assert_eq!(message, CERT_NOT_ALLOWED);
    }
    server
        .post(Some(&stranger), APP_AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// An inactive SYSTEM user is refused (403), an active one on the same path is not.
async fn inactive_user_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let retired = server.pki.client("retired.bot");
    for path in [AUTH, KEYAUTH] {
        let message = server
            .post(Some(&retired), path, None)
            .await
            .assert_error(StatusCode::FORBIDDEN);
        assert_eq!(message, CERT_NOT_ALLOWED);
    }
    let admin = server.pki.client("admin.bot");
    server
        .post(Some(&admin), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// A NORMAL (end-user) account cannot authenticate by certificate.
async fn normal_user_certificate_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.pki.client("alice");
    for path in [AUTH, AUTH_ALIAS, KEYAUTH, APP_AUTH] {
        server
            .post(Some(&alice), path, None)
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
}

/// An app certificate on the bot paths is 403; it works on the app path.
async fn app_certificate_on_bot_path_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let app = server.pki.client("demo-app");
    for path in [AUTH, AUTH_ALIAS, KEYAUTH] {
        let message = server
            .post(Some(&app), path, None)
            .await
            .assert_error(StatusCode::FORBIDDEN);
        assert_eq!(message, CERT_NOT_ALLOWED);
    }
    server
        .post(Some(&app), APP_AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// A bot certificate on the app path is 403; it works on the bot path.
async fn bot_certificate_on_app_path_is_403(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    server
        .post(Some(&bot), APP_AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    server
        .post(Some(&bot), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// An inactive app cannot get an app session; an active one in the same directory can.
async fn inactive_app_is_403(backend: Backend) {
    let directory = r#"
        [[user]]
        id = 1
        username = "svc"
        accountType = "SYSTEM"

        [[app]]
        appId = "live-app"
        active = true

        [[app]]
        appId = "dead-app"
        active = false
    "#;
    let server = TestServer::start_with(backend, Options::default().directory(directory)).await;
    let dead = server.pki.client("dead-app");
    server
        .post(Some(&dead), APP_AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let live = server.pki.client("live-app");
    server
        .post(Some(&live), APP_AUTH, None)
        .await
        .assert_status(StatusCode::OK);
    // The file replaced the sample: its service user works, the sample's does not exist.
    let svc = server.pki.client("svc");
    server
        .post(Some(&svc), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
    let bot = server.pki.client("bot.user");
    server
        .post(Some(&bot), AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// A trusted certificate whose subject has no CN names no one: 401, never a guess.
async fn certificate_without_common_name_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_cn = server.pki.client_without_cn();
    for path in [AUTH, KEYAUTH, APP_AUTH] {
        server
            .post(Some(&no_cn), path, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
}

/// A trusted certificate whose subject has two CNs (both real bots) is 401, never a guess; a
/// single-CN certificate from the same second CA works.
async fn certificate_with_two_common_names_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let two = server.pki.client_with_two_cns();
    for path in [AUTH, KEYAUTH, APP_AUTH] {
        server
            .post(Some(&two), path, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "bot.user");
    let one = server.pki.client_with_subject(dn);
    server
        .post(Some(&one), AUTH, None)
        .await
        .assert_status(StatusCode::OK);
}

/// An empty CN is no CN: 401.
async fn certificate_with_empty_common_name_is_401(backend: Backend) {
    let server = TestServer::start(backend).await;
    let empty = server.pki.client("");
    server
        .post(Some(&empty), AUTH, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
}

/// A certificate is not needed for /health (certificates are optional at the TLS layer).
async fn health_needs_no_certificate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let resp = server.request(None, Req::get("/health")).await;
    resp.assert_status(StatusCode::OK);
    resp.assert_json_content_type();
    assert_eq!(resp.json(), serde_json::json!({ "status": "UP" }));
}
