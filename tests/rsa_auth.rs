//! RSA (signed JWT) authentication end to end: `/login/pubkey/...`, `/relay/pubkey/...`, the
//! extension-app calls and the pod certificate, over real TLS against an in-process server.

// Helpers outside #[test] functions panic on failure too: that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::StatusCode;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{json, Value};
use support::rsa::{now_secs, KEYS};
use support::*;

route_tests!(
    bot_gets_session_and_key_manager_tokens,
    rs256_and_rs384_and_no_typ_are_accepted,
    repeated_jwt_is_accepted,
    expired_jwt_is_refused,
    exp_too_far_ahead_is_refused,
    unknown_subjects_are_refused,
    jwt_signed_by_another_key_is_refused,
    previous_key_is_accepted_and_third_key_refused,
    alg_none_and_hs256_with_public_key_are_refused,
    malformed_token_and_malformed_body,
    app_session_and_obo_by_id_and_username,
    obo_refusals_match_the_certificate_path,
    certificate_obo_still_checks_the_session_owner,
    rsa_session_logs_out_like_a_certificate_session,
    rsa_session_lives_the_configured_lifetime,
    extension_app_tokens,
    extension_app_refusals,
    pod_certificate_is_the_signing_key_certificate,
    key_folder_rule_with_the_embedded_sample,
    first_start_makes_dev_keys_that_the_sample_uses,
);

/// A server with the RSA test directory.
async fn rsa_server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, Options::rsa()).await
}

/// A BDK-shaped RS512 JWT of bot.user yields a session token that sessioninfo resolves to
/// bot.user, and `/relay` a key-manager token that is not a session token.
async fn bot_gets_session_and_key_manager_tokens(backend: Backend) {
    let s = rsa_server(backend).await;
    let r = s.rsa_login(RSA_LOGIN, &KEYS.bot.jwt("bot.user", 290)).await;
    r.assert_status(StatusCode::OK);
    let body = r.json();
    assert_eq!(body["name"], "sessionToken");
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert!(body.get("authorizationToken").is_none());
    assert_eq!(s.session_user(&token).await["username"], "bot.user");

    let r = s.rsa_login(RSA_RELAY, &KEYS.bot.jwt("bot.user", 290)).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["name"], "keyManagerToken");
    let km = r.string("token");
    s.session_info(Some(&km))
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "Invalid session");
    s.stop().await;
}

/// RS256 and RS384 are accepted too, with or without `typ`, and extra claims are ignored.
async fn rs256_and_rs384_and_no_typ_are_accepted(backend: Backend) {
    let s = rsa_server(backend).await;
    for header in [
        json!({ "alg": "RS256" }),
        json!({ "alg": "RS384", "typ": "JWT" }),
        json!({ "alg": "RS512" }),
    ] {
        let claims = json!({ "sub": "bot.user", "exp": now_secs() + 60, "iat": now_secs() });
        let r = s
            .rsa_login(RSA_LOGIN, &KEYS.bot.sign(&header, &claims))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{header}: {}", r.text());
    }
    s.stop().await;
}

/// The same JWT sent twice is accepted twice (no replay rejection) and yields two sessions.
async fn repeated_jwt_is_accepted(backend: Backend) {
    let s = rsa_server(backend).await;
    let jwt = KEYS.bot.jwt("bot.user", 290);
    let a = s.token_from(RSA_LOGIN, &jwt).await;
    let b = s.token_from(RSA_LOGIN, &jwt).await;
    assert_ne!(a, b);
    s.stop().await;
}

/// An expired JWT is refused with 401 naming the rule.
async fn expired_jwt_is_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    s.rsa_login(RSA_LOGIN, &KEYS.bot.jwt("bot.user", -120))
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "JWT expired");
    s.stop().await;
}

/// A JWT whose `exp` is more than 300 s (plus skew) ahead is refused with 401.
async fn exp_too_far_ahead_is_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    s.rsa_login(RSA_LOGIN, &KEYS.bot.jwt("bot.user", 3600))
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "too far ahead");
    s.stop().await;
}

/// Unknown subjects are 401: nobody, an end user, a service user without a key, an inactive
/// service user with a key, and an app id on the user path (and a username on the app path).
async fn unknown_subjects_are_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    for (path, sub, key) in [
        (RSA_LOGIN, "nobody", &KEYS.bot),
        (RSA_LOGIN, "alice", &KEYS.bot),
        (RSA_LOGIN, "admin.bot", &KEYS.bot),
        (RSA_LOGIN, "retired.bot", &KEYS.retired),
        (RSA_RELAY, "retired.bot", &KEYS.retired),
        (RSA_LOGIN, "demo-app", &KEYS.demo_app),
        (RSA_APP, "bot.user", &KEYS.bot),
        (RSA_APP, "nobody", &KEYS.demo_app),
    ] {
        s.rsa_login(path, &key.jwt(sub, 290))
            .await
            .assert_error_containing(StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    }
    s.stop().await;
}

/// A JWT signed by a key not registered for its subject is 401 "Bad JWT signature": a
/// stranger's key, an app's key for the bot, the bot's key for an app.
async fn jwt_signed_by_another_key_is_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    for (path, sub, key) in [
        (RSA_LOGIN, "bot.user", &KEYS.stranger),
        (RSA_LOGIN, "bot.user", &KEYS.demo_app),
        (RSA_APP, "demo-app", &KEYS.bot),
        (RSA_APP, "demo-app", &KEYS.other_app),
    ] {
        s.rsa_login(path, &key.jwt(sub, 290))
            .await
            .assert_error_containing(StatusCode::UNAUTHORIZED, "Bad JWT signature");
    }
    s.stop().await;
}

/// The previous key is accepted during a rotation; an unknown third key is not.
async fn previous_key_is_accepted_and_third_key_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    s.rsa_login(RSA_LOGIN, &KEYS.bot_previous.jwt("bot.user", 290))
        .await
        .assert_status(StatusCode::OK);
    s.rsa_login(RSA_LOGIN, &KEYS.stranger.jwt("bot.user", 290))
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "Bad JWT signature");
    s.stop().await;
}

/// `alg: none` (with and without a signature) and HS256 keyed with the subject's public key
/// (the classic key-confusion trick) are refused as unsupported algorithms.
async fn alg_none_and_hs256_with_public_key_are_refused(backend: Backend) {
    let s = rsa_server(backend).await;
    let claims = json!({ "sub": "bot.user", "exp": now_secs() + 60 });
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", part(&json!({ "alg": "none" })), part(&claims));
    let none_signed = format!(
        "{}.{}.{}",
        part(&json!({ "alg": "none", "typ": "JWT" })),
        part(&claims),
        URL_SAFE_NO_PAD.encode("x")
    );
    let input = format!(
        "{}.{}",
        part(&json!({ "alg": "HS256", "typ": "JWT" })),
        part(&claims)
    );
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEYS.bot.public_pem.as_bytes());
    let mac = ring::hmac::sign(&mac_key, input.as_bytes());
    let hs256 = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    for jwt in [none, none_signed, hs256] {
        s.rsa_login(RSA_LOGIN, &jwt)
            .await
            .assert_error_containing(StatusCode::UNAUTHORIZED, "Unsupported JWT algorithm");
    }
    s.stop().await;
}

/// A malformed token is 401 "Malformed JWT"; a body that is not `{"token": string}` is 401 too
/// (every failure on these paths is 401), saying what was expected.
async fn malformed_token_and_malformed_body(backend: Backend) {
    let s = rsa_server(backend).await;
    s.rsa_login(RSA_LOGIN, "not.a.jwt")
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "Malformed JWT");
    let good = KEYS.bot.jwt("bot.user", 290);
    let truncated = &good[..good.len() - 10];
    s.rsa_login(RSA_LOGIN, truncated)
        .await
        .assert_status(StatusCode::UNAUTHORIZED);

    for body in ["", "{", "[]", r#"{"token": 5}"#, r#"{"jwt": "x"}"#] {
        s.request(None, Req::post(RSA_LOGIN).body(body))
            .await
            .assert_error_containing(StatusCode::UNAUTHORIZED, "token");
    }
    s.request(
        None,
        Req::post(RSA_APP)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await
    .assert_error_containing(StatusCode::UNAUTHORIZED, "not valid JSON");
    s.stop().await;
}

/// An app authenticates by RSA, then gets OBO sessions by id and by username in the RSA shape;
/// they resolve to alice.
async fn app_session_and_obo_by_id_and_username(backend: Backend) {
    let s = rsa_server(backend).await;
    let r = s
        .rsa_login(RSA_APP, &KEYS.demo_app.jwt("demo-app", 290))
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["name"], "sessionToken");
    let app = r.string("token");
    for path in [
        "/login/pubkey/app/user/2001/authenticate",
        "/login/pubkey/app/username/alice/authenticate",
    ] {
        let r = s.request(None, Req::post(path).token(&app)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.json()["name"], "sessionToken", "{path}");
        let obo = r.string("token");
        assert_eq!(s.session_user(&obo).await["id"], 2001);
    }
    // The app session itself has no user.
    s.session_info(Some(&app))
        .await
        .assert_status(StatusCode::FORBIDDEN);
    s.stop().await;
}

/// The OBO refusals of the certificate path hold on the RSA path, in the same order.
async fn obo_refusals_match_the_certificate_path(backend: Backend) {
    let s = rsa_server(backend).await;
    let demo = s.app_session("demo-app", &KEYS.demo_app).await;
    let no_obo = s.app_session("no-obo-app", &KEYS.no_obo_app).await;
    let bot = s.bot_session().await;
    let by_id = |uid: &str| format!("/login/pubkey/app/user/{uid}/authenticate");
    let by_name = |n: &str| format!("/login/pubkey/app/username/{n}/authenticate");

    for (path, token, status, part) in [
        (
            by_id("2001"),
            None,
            StatusCode::BAD_REQUEST,
            "Missing sessionToken",
        ),
        (
            by_id("2001"),
            Some("garbage"),
            StatusCode::UNAUTHORIZED,
            "Invalid session",
        ),
        (
            by_id("2001"),
            Some(bot.as_str()),
            StatusCode::UNAUTHORIZED,
            "not an app session",
        ),
        (
            by_id("2001"),
            Some(no_obo.as_str()),
            StatusCode::FORBIDDEN,
            "not allowed",
        ),
        (
            by_id("alice"),
            Some(demo.as_str()),
            StatusCode::BAD_REQUEST,
            "not an integer",
        ),
        (
            by_id("9999"),
            Some(demo.as_str()),
            StatusCode::NOT_FOUND,
            "User id not found",
        ),
        (
            by_name("nobody"),
            Some(demo.as_str()),
            StatusCode::NOT_FOUND,
            "Username not found",
        ),
        (
            by_name("carol"),
            Some(demo.as_str()),
            StatusCode::FORBIDDEN,
            "not active",
        ),
        (
            by_id("2002"),
            Some(demo.as_str()),
            StatusCode::FORBIDDEN,
            "not installed",
        ),
    ] {
        s.request(None, Req::post(&path).token_opt(token))
            .await
            .assert_error_containing(status, part);
    }
    s.stop().await;
}

/// The certificate OBO path still works after the refactoring, and refuses another app's
/// session with 403 (the RSA app session accepted on the certificate path for its own app).
async fn certificate_obo_still_checks_the_session_owner(backend: Backend) {
    let s = rsa_server(backend).await;
    let demo = s.app_session("demo-app", &KEYS.demo_app).await;
    let path = obo_by_id("2001");
    let r = s
        .post(Some(&s.pki.client("demo-app")), &path, Some(&demo))
        .await;
    r.assert_status(StatusCode::OK);
    assert!(r.json()["sessionToken"].is_string());
    s.post(Some(&s.pki.client("other-app")), &path, Some(&demo))
        .await
        .assert_error_containing(StatusCode::FORBIDDEN, "another app");
    s.post(None, &path, Some(&demo))
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// An RSA session is an ordinary session: its owner's certificate logs it out, after which it
/// answers 401.
async fn rsa_session_logs_out_like_a_certificate_session(backend: Backend) {
    let s = rsa_server(backend).await;
    let token = s.bot_session().await;
    s.post(Some(&s.pki.client("bot.user")), LOGOUT, Some(&token))
        .await
        .assert_status(StatusCode::OK);
    s.assert_dead(&token).await;
    s.stop().await;
}

/// An RSA session lives exactly the configured session lifetime.
async fn rsa_session_lives_the_configured_lifetime(backend: Backend) {
    let s = TestServer::start_with(backend, Options::rsa().session_lifetime("1h")).await;
    let token = s.bot_session().await;
    s.advance(Duration::from_secs(3600 - 5));
    s.session_user(&token).await;
    s.advance(Duration::from_secs(10));
    s.assert_dead(&token).await;
    s.stop().await;
}

/// Extension apps: the certificate and the JWT flavours return appId, the app token, a fresh
/// symphonyToken and an integer expireAt; the symphony token is not a session.
async fn extension_app_tokens(backend: Backend) {
    let s = rsa_server(backend).await;
    let r = s
        .request(
            Some(&s.pki.client("demo-app")),
            Req::post("/sessionauth/v1/authenticate/extensionApp")
                .json(&json!({ "appToken": "app-token-1" })),
        )
        .await;
    r.assert_status(StatusCode::OK);
    let body = r.json();
    assert_eq!(body["appId"], "demo-app");
    assert_eq!(body["appToken"], "app-token-1");
    let first = body["symphonyToken"].as_str().unwrap().to_owned();
    let expire_at = body["expireAt"].as_i64().unwrap();
    assert!(expire_at > now_secs() * 1000);

    let r = s
        .request(
            None,
            Req::post("/login/v1/pubkey/app/authenticate/extensionApp").json(
                &json!({ "appToken": "app-token-2", "authToken": KEYS.demo_app.jwt("demo-app", 290) }),
            ),
        )
        .await;
    r.assert_status(StatusCode::OK);
    let body = r.json();
    assert_eq!(body["appId"], "demo-app");
    assert_eq!(body["appToken"], "app-token-2");
    let second = body["symphonyToken"].as_str().unwrap();
    assert_ne!(first, second);
    assert!(body["expireAt"].is_i64());
    s.assert_dead(second).await;
    s.stop().await;
}

/// Extension-app refusals: no certificate 401, a bot certificate 403, a missing or empty app
/// token 400, a bad app JWT 401, a bot's JWT 401.
async fn extension_app_refusals(backend: Backend) {
    let s = rsa_server(backend).await;
    let cert_path = "/sessionauth/v1/authenticate/extensionApp";
    let rsa_path = "/login/v1/pubkey/app/authenticate/extensionApp";
    let body = json!({ "appToken": "t" });
    let app = s.pki.client("demo-app");
    s.request(None, Req::post(cert_path).json(&body))
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    s.request(
        Some(&s.pki.client("bot.user")),
        Req::post(cert_path).json(&body),
    )
    .await
    .assert_status(StatusCode::FORBIDDEN);
    for missing in [json!({}), json!({ "appToken": "" })] {
        s.request(Some(&app), Req::post(cert_path).json(&missing))
            .await
            .assert_error_containing(StatusCode::BAD_REQUEST, "appToken");
    }
    s.request(
        None,
        Req::post(rsa_path)
            .json(&json!({ "appToken": "t", "authToken": KEYS.stranger.jwt("demo-app", 290) })),
    )
    .await
    .assert_error_containing(StatusCode::UNAUTHORIZED, "Bad JWT signature");
    s.request(
        None,
        Req::post(rsa_path)
            .json(&json!({ "appToken": "t", "authToken": KEYS.bot.jwt("bot.user", 290) })),
    )
    .await
    .assert_error_containing(StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    s.request(None, Req::post(rsa_path).json(&json!({ "appToken": "t" })))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// Both pod certificate paths return the same PEM certificate, whose key is the one the JWKS
/// publishes.
async fn pod_certificate_is_the_signing_key_certificate(backend: Backend) {
    let s = rsa_server(backend).await;
    let a = s
        .request(None, Req::get("/sessionauth/v1/app/pod/certificate"))
        .await;
    let b = s.request(None, Req::get("/pod/v1/podcert")).await;
    a.assert_status(StatusCode::OK);
    assert_eq!(a.json(), b.json());
    let pem = a.string("certificate");
    let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = der.parse_x509().unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = cert.public_key().parsed().unwrap() else {
        panic!("not an RSA certificate");
    };
    let jwks = s.request(None, Req::get("/login/idm/keys")).await.json();
    let n = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().unwrap())
        .unwrap();
    let modulus: Vec<u8> = rsa
        .modulus
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    assert_eq!(modulus, n);
    s.stop().await;
}

/// The key-folder rule with the embedded sample: bot.user's `bot.user-rsa.pub.pem` in
/// `public_key_dir` lets it authenticate; admin.bot, with no file, cannot.
async fn key_folder_rule_with_the_embedded_sample(backend: Backend) {
    let site = Site::new(backend);
    let folder = site.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("bot.user-rsa.pub.pem"), &KEYS.bot.public_pem).unwrap();
    let options = Options::default().top("public_key_dir = \"folder\"");
    let s = site.start(&options).await;
    s.bot_session().await;
    s.rsa_login(RSA_LOGIN, &KEYS.bot.jwt("admin.bot", 290))
        .await
        .assert_error_containing(StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    s.stop().await;
}

/// First start with the dev PKI makes `<name>-rsa.pem` (0600) and `<name>-rsa.pub.pem` for
/// the sample's principals, and the embedded sample authenticates with them.
async fn first_start_makes_dev_keys_that_the_sample_uses(backend: Backend) {
    let site = Site::new(backend);
    let certs = site.path().join("certs");
    // A dev PKI cannot be asked for in a configuration file (only the embedded defaults do), so
    // the test sets it on the parsed configuration.
    let mut config = site.config(&Options::default());
    config.directory = sessionauth::config::DirectorySource::Embedded;
    config.dev_pki = Some(certs.clone());
    config.public_key_dir = Some(certs.clone());
    config.tls.cert_chain = certs.join("server.pem");
    config.tls.key = certs.join("server-key.pem");
    config.tls.client_cas = vec![certs.join("ca.pem")];
    let clock = std::sync::Arc::new(sessionauth::clock::ManualClock::starting_now());
    let prepared = sessionauth::server::Prepared::new(config)
        .unwrap()
        .with_clock(clock.clone());
    assert_eq!(prepared.adopted_keys.len(), 6);
    let private = certs.join("bot.user-rsa.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&private).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let trust = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let s = TestServer::serve(&site, prepared, clock, trust).await;
    let pem = std::fs::read_to_string(&private).unwrap();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS512"}"#),
        URL_SAFE_NO_PAD.encode(json!({ "sub": "bot.user", "exp": now_secs() + 100 }).to_string())
    );
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA512,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let token = s.token_from(RSA_LOGIN, &jwt).await;
    assert_eq!(s.session_user(&token).await["username"], "bot.user");
    s.stop().await;
}
