//! RSA (signed JWT) authentication end to end: `/login/pubkey/...`, `/relay/pubkey/...`, the
//! extension-app calls and the pod certificate, over real TLS against an in-process server.

// Helpers outside #[test] functions panic on failure too: that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rsa_common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::StatusCode;
use rsa_common::{now_secs, Reply, Server, Setup, KEYS};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{json, Value};

const LOGIN: &str = "/login/pubkey/authenticate";
const RELAY: &str = "/relay/pubkey/authenticate";
const APP: &str = "/login/pubkey/app/authenticate";

async fn login(server: &Server, path: &str, jwt: &str) -> Reply {
    server
        .post(path)
        .json(&json!({ "token": jwt }))
        .send()
        .await
}

fn assert_refused(r: &Reply, status: StatusCode, message_part: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["code"], status.as_u16(), "{}", r.body);
    assert!(
        r.message().contains(message_part),
        "expected {message_part:?} in {:?}",
        r.message()
    );
    assert_eq!(r.headers["content-type"], "application/json");
}

async fn session_user(server: &Server, token: &str) -> Value {
    let r = server
        .get("/pod/v2/sessioninfo")
        .session(token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// A BDK-shaped RS512 JWT of bot.user yields a session token that sessioninfo resolves to
/// bot.user, and `/relay` a key-manager token that is not a session token.
#[tokio::test]
async fn bot_gets_session_and_key_manager_tokens() {
    let s = Setup::new().start().await;
    let r = login(&s, LOGIN, &KEYS.bot.jwt("bot.user", 290)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "sessionToken");
    let token = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert!(r.body.get("authorizationToken").is_none());
    assert_eq!(session_user(&s, &token).await["username"], "bot.user");

    let r = login(&s, RELAY, &KEYS.bot.jwt("bot.user", 290)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "keyManagerToken");
    let km = r.body["token"].as_str().unwrap();
    let info = s.get("/pod/v2/sessioninfo").session(km).send().await;
    assert_refused(&info, StatusCode::UNAUTHORIZED, "Invalid session");
    s.stop().await;
}

/// RS256 and RS384 are accepted too, with or without `typ`, and extra claims are ignored.
#[tokio::test]
async fn rs256_and_rs384_and_no_typ_are_accepted() {
    let s = Setup::new().start().await;
    for header in [
        json!({ "alg": "RS256" }),
        json!({ "alg": "RS384", "typ": "JWT" }),
        json!({ "alg": "RS512" }),
    ] {
        let claims = json!({ "sub": "bot.user", "exp": now_secs() + 60, "iat": now_secs() });
        let r = login(&s, LOGIN, &KEYS.bot.sign(&header, &claims)).await;
        assert_eq!(r.status, StatusCode::OK, "{header}: {}", r.body);
    }
    s.stop().await;
}

/// The same JWT sent twice is accepted twice (no replay rejection) and yields two sessions.
#[tokio::test]
async fn repeated_jwt_is_accepted() {
    let s = Setup::new().start().await;
    let jwt = KEYS.bot.jwt("bot.user", 290);
    let a = s.token_from(LOGIN, &jwt).await;
    let b = s.token_from(LOGIN, &jwt).await;
    assert_ne!(a, b);
    s.stop().await;
}

/// An expired JWT is refused with 401 naming the rule.
#[tokio::test]
async fn expired_jwt_is_refused() {
    let s = Setup::new().start().await;
    let r = login(&s, LOGIN, &KEYS.bot.jwt("bot.user", -120)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "JWT expired");
    s.stop().await;
}

/// A JWT whose `exp` is more than 300 s (plus skew) ahead is refused with 401.
#[tokio::test]
async fn exp_too_far_ahead_is_refused() {
    let s = Setup::new().start().await;
    let r = login(&s, LOGIN, &KEYS.bot.jwt("bot.user", 3600)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "too far ahead");
    s.stop().await;
}

/// Unknown subjects are 401: nobody, an end user, a service user without a key, an inactive
/// service user with a key, and an app id on the user path (and a username on the app path).
#[tokio::test]
async fn unknown_subjects_are_refused() {
    let s = Setup::new().start().await;
    for (path, sub, key) in [
        (LOGIN, "nobody", &KEYS.bot),
        (LOGIN, "alice", &KEYS.bot),
        (LOGIN, "admin.bot", &KEYS.bot),
        (LOGIN, "retired.bot", &KEYS.retired),
        (RELAY, "retired.bot", &KEYS.retired),
        (LOGIN, "demo-app", &KEYS.demo_app),
        (APP, "bot.user", &KEYS.bot),
        (APP, "nobody", &KEYS.demo_app),
    ] {
        let r = login(&s, path, &key.jwt(sub, 290)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    }
    s.stop().await;
}

/// A JWT signed by a key not registered for its subject is 401 "Bad JWT signature": a
/// stranger's key, an app's key for the bot, the bot's key for an app.
#[tokio::test]
async fn jwt_signed_by_another_key_is_refused() {
    let s = Setup::new().start().await;
    for (path, sub, key) in [
        (LOGIN, "bot.user", &KEYS.stranger),
        (LOGIN, "bot.user", &KEYS.demo_app),
        (APP, "demo-app", &KEYS.bot),
        (APP, "demo-app", &KEYS.other_app),
    ] {
        let r = login(&s, path, &key.jwt(sub, 290)).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "Bad JWT signature");
    }
    s.stop().await;
}

/// The previous key is accepted during a rotation; an unknown third key is not.
#[tokio::test]
async fn previous_key_is_accepted_and_third_key_refused() {
    let s = Setup::new().start().await;
    let r = login(&s, LOGIN, &KEYS.bot_previous.jwt("bot.user", 290)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = login(&s, LOGIN, &KEYS.stranger.jwt("bot.user", 290)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Bad JWT signature");
    s.stop().await;
}

/// `alg: none` (with and without a signature) and HS256 keyed with the subject's public key
/// (the classic key-confusion trick) are refused as unsupported algorithms.
#[tokio::test]
async fn alg_none_and_hs256_with_public_key_are_refused() {
    let s = Setup::new().start().await;
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
        let r = login(&s, LOGIN, &jwt).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "Unsupported JWT algorithm");
    }
    s.stop().await;
}

/// A malformed token is 401 "Malformed JWT"; a body that is not `{"token": string}` is 401 too
/// (every failure on these paths is 401), saying what was expected.
#[tokio::test]
async fn malformed_token_and_malformed_body() {
    let s = Setup::new().start().await;
    let r = login(&s, LOGIN, "not.a.jwt").await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Malformed JWT");
    let good = KEYS.bot.jwt("bot.user", 290);
    let truncated = &good[..good.len() - 10];
    let r = login(&s, LOGIN, truncated).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    for body in ["", "{", "[]", r#"{"token": 5}"#, r#"{"jwt": "x"}"#] {
        let r = s.post(LOGIN).body(body).send().await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "token");
    }
    let r = s
        .post(APP)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "not valid JSON");
    s.stop().await;
}

/// An app authenticates by RSA, then gets OBO sessions by id and by username in the RSA shape;
/// they resolve to alice.
#[tokio::test]
async fn app_session_and_obo_by_id_and_username() {
    let s = Setup::new().start().await;
    let r = login(&s, APP, &KEYS.demo_app.jwt("demo-app", 290)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "sessionToken");
    let app = r.body["token"].as_str().unwrap().to_owned();
    for path in [
        "/login/pubkey/app/user/2001/authenticate",
        "/login/pubkey/app/username/alice/authenticate",
    ] {
        let r = s.post(path).session(&app).send().await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["name"], "sessionToken", "{path}");
        let obo = r.body["token"].as_str().unwrap();
        assert_eq!(session_user(&s, obo).await["id"], 2001);
    }
    // The app session itself has no user.
    let r = s.get("/pod/v2/sessioninfo").session(&app).send().await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    s.stop().await;
}

/// The OBO refusals of the certificate path hold on the RSA path, in the same order.
#[tokio::test]
async fn obo_refusals_match_the_certificate_path() {
    let s = Setup::new().start().await;
    let demo = s.app_session("demo-app", &KEYS.demo_app).await;
    let no_obo = s.app_session("no-obo-app", &KEYS.no_obo_app).await;
    let bot = s.bot_session().await;
    let by_id = |uid: &str| format!("/login/pubkey/app/user/{uid}/authenticate");
    let by_name = |n: &str| format!("/login/pubkey/app/username/{n}/authenticate");

    let r = s.post(&by_id("2001")).send().await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "Missing sessionToken");
    let r = s.post(&by_id("2001")).session("garbage").send().await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Invalid session");
    let r = s.post(&by_id("2001")).session(&bot).send().await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "not an app session");
    let r = s.post(&by_id("2001")).session(&no_obo).send().await;
    assert_refused(&r, StatusCode::FORBIDDEN, "not allowed");
    let r = s.post(&by_id("alice")).session(&demo).send().await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "not an integer");
    let r = s.post(&by_id("9999")).session(&demo).send().await;
    assert_refused(&r, StatusCode::NOT_FOUND, "User id not found");
    let r = s.post(&by_name("nobody")).session(&demo).send().await;
    assert_refused(&r, StatusCode::NOT_FOUND, "Username not found");
    let r = s.post(&by_name("carol")).session(&demo).send().await;
    assert_refused(&r, StatusCode::FORBIDDEN, "not active");
    let r = s.post(&by_id("2002")).session(&demo).send().await;
    assert_refused(&r, StatusCode::FORBIDDEN, "not installed");
    s.stop().await;
}

/// The certificate OBO path still works after the refactoring, and refuses another app's
/// session with 403 (the RSA app session accepted on the certificate path for its own app).
#[tokio::test]
async fn certificate_obo_still_checks_the_session_owner() {
    let s = Setup::new().start().await;
    let demo = s.app_session("demo-app", &KEYS.demo_app).await;
    let path = "/sessionauth/v1/app/user/2001/authenticate";
    let r = s.post(path).cert("demo-app").session(&demo).send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["sessionToken"].is_string());
    let r = s.post(path).cert("other-app").session(&demo).send().await;
    assert_refused(&r, StatusCode::FORBIDDEN, "another app");
    let r = s.post(path).session(&demo).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// An RSA session is an ordinary session: its owner's certificate logs it out, after which it
/// answers 401.
#[tokio::test]
async fn rsa_session_logs_out_like_a_certificate_session() {
    let s = Setup::new().start().await;
    let token = s.bot_session().await;
    let r = s
        .post("/sessionauth/v1/logout")
        .cert("bot.user")
        .session(&token)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.get("/pod/v2/sessioninfo").session(&token).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// An RSA session lives exactly the configured session lifetime.
#[tokio::test]
async fn rsa_session_lives_the_configured_lifetime() {
    let mut setup = Setup::new();
    setup.top = "session_lifetime = \"1h\"".into();
    let s = setup.start().await;
    let token = s.bot_session().await;
    s.clock.advance(Duration::from_secs(3600 - 5));
    session_user(&s, &token).await;
    s.clock.advance(Duration::from_secs(10));
    let r = s.get("/pod/v2/sessioninfo").session(&token).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// Extension apps: the certificate and the JWT flavours return appId, the app token, a fresh
/// symphonyToken and an integer expireAt; the symphony token is not a session.
#[tokio::test]
async fn extension_app_tokens() {
    let s = Setup::new().start().await;
    let r = s
        .post("/sessionauth/v1/authenticate/extensionApp")
        .cert("demo-app")
        .json(&json!({ "appToken": "app-token-1" }))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["appId"], "demo-app");
    assert_eq!(r.body["appToken"], "app-token-1");
    let first = r.body["symphonyToken"].as_str().unwrap().to_owned();
    let expire_at = r.body["expireAt"].as_i64().unwrap();
    assert!(expire_at > now_secs() * 1000);

    let r = s
        .post("/login/v1/pubkey/app/authenticate/extensionApp")
        .json(
            &json!({ "appToken": "app-token-2", "authToken": KEYS.demo_app.jwt("demo-app", 290) }),
        )
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["appId"], "demo-app");
    assert_eq!(r.body["appToken"], "app-token-2");
    let second = r.body["symphonyToken"].as_str().unwrap();
    assert_ne!(first, second);
    assert!(r.body["expireAt"].is_i64());
    let r = s.get("/pod/v2/sessioninfo").session(second).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// Extension-app refusals: no certificate 401, a bot certificate 403, a missing or empty app
/// token 400, a bad app JWT 401, a bot's JWT 401.
#[tokio::test]
async fn extension_app_refusals() {
    let s = Setup::new().start().await;
    let cert_path = "/sessionauth/v1/authenticate/extensionApp";
    let rsa_path = "/login/v1/pubkey/app/authenticate/extensionApp";
    let body = json!({ "appToken": "t" });
    let r = s.post(cert_path).json(&body).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s.post(cert_path).cert("bot.user").json(&body).send().await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .post(cert_path)
        .cert("demo-app")
        .json(&json!({}))
        .send()
        .await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "appToken");
    let r = s
        .post(cert_path)
        .cert("demo-app")
        .json(&json!({ "appToken": "" }))
        .send()
        .await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "appToken");
    let r = s
        .post(rsa_path)
        .json(&json!({ "appToken": "t", "authToken": KEYS.stranger.jwt("demo-app", 290) }))
        .send()
        .await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Bad JWT signature");
    let r = s
        .post(rsa_path)
        .json(&json!({ "appToken": "t", "authToken": KEYS.bot.jwt("bot.user", 290) }))
        .send()
        .await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    let r = s
        .post(rsa_path)
        .json(&json!({ "appToken": "t" }))
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// Both pod certificate paths return the same PEM certificate, whose key is the one the JWKS
/// publishes.
#[tokio::test]
async fn pod_certificate_is_the_signing_key_certificate() {
    let s = Setup::new().start().await;
    let a = s.get("/sessionauth/v1/app/pod/certificate").send().await;
    let b = s.get("/pod/v1/podcert").send().await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b.body);
    let pem = a.body["certificate"].as_str().unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = der.parse_x509().unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = cert.public_key().parsed().unwrap() else {
        panic!("not an RSA certificate");
    };
    let jwks = s.get("/login/idm/keys").send().await.body;
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
#[tokio::test]
async fn key_folder_rule_with_the_embedded_sample() {
    let mut setup = Setup::new();
    setup.use_directory = false;
    setup.top = "public_key_dir = \"folder\"".into();
    let folder = setup.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    rsa_common::write(&folder.join("bot.user-rsa.pub.pem"), &KEYS.bot.public_pem);
    let s = setup.start().await;
    s.bot_session().await;
    let r = login(&s, LOGIN, &KEYS.bot.jwt("admin.bot", 290)).await;
    assert_refused(&r, StatusCode::UNAUTHORIZED, "Unknown JWT subject");
    s.stop().await;
}

/// First start with the dev PKI makes `<name>-rsa.pem` (0600) and `<name>-rsa.pub.pem` for
/// the sample's principals, and the embedded sample authenticates with them.
#[tokio::test]
async fn first_start_makes_dev_keys_that_the_sample_uses() {
    let setup = Setup::new();
    let certs = setup.path().join("certs");
    let mut config = setup.config();
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
    let s = Server::run(prepared, trust, &setup.ca, clock).await;
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
    let token = s.token_from(LOGIN, &jwt).await;
    assert_eq!(session_user(&s, &token).await["username"], "bot.user");
    s.stop().await;
}
