//! Short-lived access tokens (`POST /login/idm/tokens`) and their JWKS (`GET /login/idm/keys`),
//! verified the way a resource server would: with the `jsonwebtoken` crate and the JWKS alone.

// Helpers outside #[test] functions panic on failure too: that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use support::rsa::{now_secs, KEYS};
use support::*;

route_tests!(
    access_token_verifies_against_the_jwks,
    forged_access_tokens_do_not_verify,
    lifetime_is_configured_and_capped_by_the_session,
    scope_is_granted_and_checked,
    access_token_refusals,
    obo_and_certificate_sessions_get_tokens,
    jwks_shape,
    token_fails_after_its_key_is_rotated_out,
    unconfigured_signing_key_is_made_once_and_persisted,
);

const TOKENS: &str = "/login/idm/tokens";
const KEYS_PATH: &str = "/login/idm/keys";

/// A server with the RSA test directory.
async fn rsa_server(backend: Backend) -> TestServer {
    TestServer::start_with(backend, Options::rsa()).await
}

async fn jwks(s: &TestServer) -> JwkSet {
    let r = s.request(None, Req::get(KEYS_PATH)).await;
    r.assert_status(StatusCode::OK);
    serde_json::from_value(r.json()).unwrap()
}

/// `POST /login/idm/tokens<query>` with `session`, asserting 200; the body.
async fn access_token(s: &TestServer, session: &str, query: &str) -> Value {
    let r = tokens(s, session, query).await;
    r.assert_status(StatusCode::OK);
    r.json()
}

/// `POST /login/idm/tokens<query>` with `session`.
async fn tokens(s: &TestServer, session: &str, query: &str) -> Resp {
    s.request(None, Req::post(&format!("{TOKENS}{query}")).token(session))
        .await
}

/// What a resource server does: pick the JWKS key named by `kid`, verify RS256, `exp` and `iss`.
fn verify(token: &str, set: &JwkSet) -> Result<Value, String> {
    let kid = decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&["sessionauth"]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// An access token for a bot session verifies against the JWKS with an ordinary JWT library,
/// and carries iss, sub (user id), username, iat, exp and scope; it lives the default 5 minutes.
async fn access_token_verifies_against_the_jwks(backend: Backend) {
    let s = rsa_server(backend).await;
    let session = s.bot_session().await;
    let body = access_token(&s, &session, "").await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let token = body["access_token"].as_str().unwrap();
    let header = decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let claims = verify(token, &jwks(&s).await).unwrap();
    assert_eq!(claims["iss"], "sessionauth");
    assert_eq!(claims["sub"], "1001");
    assert_eq!(claims["username"], "bot.user");
    assert_eq!(claims["scope"], "");
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now_secs()).abs() < 5);
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 300);
    // It is not a session token.
    s.assert_dead(token).await;
    s.stop().await;
}

/// A token signed by another key, or altered, does not verify.
async fn forged_access_tokens_do_not_verify(backend: Backend) {
    let s = rsa_server(backend).await;
    let session = s.bot_session().await;
    let body = access_token(&s, &session, "").await;
    let token = body["access_token"].as_str().unwrap();
    let set = jwks(&s).await;
    let kid = decode_header(token).unwrap().kid.unwrap();
    let forged = KEYS.stranger.sign(
        &json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
        &json!({ "iss": "sessionauth", "sub": "1001", "exp": now_secs() + 60 }),
    );
    assert!(verify(&forged, &set).is_err());
    let (head, _) = token.rsplit_once('.').unwrap();
    let tampered = format!("{head}.{}", &token[token.len() - 20..]);
    assert!(verify(&tampered, &set).is_err());
    s.stop().await;
}

/// The configured lifetime applies, and a token never outlives its session.
async fn lifetime_is_configured_and_capped_by_the_session(backend: Backend) {
    let options = Options::rsa().signing("access_token_lifetime = \"90s\"");
    let s = TestServer::start_with(backend, options).await;
    let session = s.bot_session().await;
    assert_eq!(access_token(&s, &session, "").await["expires_in"], 90);
    s.stop().await;

    let s = TestServer::start_with(backend, Options::rsa().session_lifetime("2m")).await;
    let session = s.bot_session().await;
    let first = access_token(&s, &session, "").await["expires_in"]
        .as_i64()
        .unwrap();
    assert!((119..=120).contains(&first), "{first}");
    s.advance(Duration::from_secs(100));
    let later = access_token(&s, &session, "").await["expires_in"]
        .as_i64()
        .unwrap();
    assert!((19..=20).contains(&later), "{later}");
    s.advance(Duration::from_secs(25));
    tokens(&s, &session, "")
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// A requested scope the user's directory entry lists is granted as a space-separated claim;
/// asking for one it does not list is 403 with no token; a malformed one is 400.
async fn scope_is_granted_and_checked(backend: Backend) {
    let s = rsa_server(backend).await;
    let session = s.bot_session().await;
    let body = access_token(&s, &session, "?scope=at2%20read+write").await;
    let claims = verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).unwrap();
    assert_eq!(claims["scope"], "at2 read write");
    for ungranted in ["admin", "read+admin", "READ"] {
        let r = tokens(&s, &session, &format!("?scope={ungranted}")).await;
        let message = r.assert_error(StatusCode::FORBIDDEN);
        assert!(
            message.starts_with("Scope not granted to this user: "),
            "{ungranted}: {message}"
        );
        assert!(r.json().get("access_token").is_none(), "{}", r.text());
    }
    tokens(&s, &session, "?scope=%22quoted%22")
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// Refusals: no header, garbage, a key-manager token, a logged-out session are 401; an app's
/// own session (no user) is 403; GET is 405.
async fn access_token_refusals(backend: Backend) {
    let s = rsa_server(backend).await;
    s.request(None, Req::post(TOKENS))
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    tokens(&s, "garbage", "")
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let km = s
        .token_from(RSA_RELAY, &KEYS.bot.jwt("bot.user", 290))
        .await;
    tokens(&s, &km, "")
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let app = s.app_session("demo-app", &KEYS.demo_app).await;
    tokens(&s, &app, "")
        .await
        .assert_status(StatusCode::FORBIDDEN);
    let bot = s.bot_session().await;
    s.post(Some(&s.pki.client("bot.user")), LOGOUT, Some(&bot))
        .await
        .assert_status(StatusCode::OK);
    tokens(&s, &bot, "")
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    s.request(None, Req::get(TOKENS).token(&bot))
        .await
        .assert_status(StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

/// An on-behalf-of session's token names the user it acts for; a certificate session gets
/// tokens too.
async fn obo_and_certificate_sessions_get_tokens(backend: Backend) {
    let s = rsa_server(backend).await;
    let app = s.app_session("demo-app", &KEYS.demo_app).await;
    let obo = s
        .request(
            None,
            Req::post("/login/pubkey/app/username/alice/authenticate").token(&app),
        )
        .await
        .string("token");
    let body = access_token(&s, &obo, "").await;
    let claims = verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).unwrap();
    assert_eq!(claims["sub"], "2001");
    assert_eq!(claims["username"], "alice");

    let cert_session = s.session_token(&s.pki.client("bot.user")).await;
    let body = access_token(&s, &cert_session, "").await;
    assert!(verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).is_ok());
    s.stop().await;
}

/// The JWKS is RFC 7517 with string members only (the BDK's model requires it), one RS256
/// signing key with the `kid` access tokens name.
async fn jwks_shape(backend: Backend) {
    let s = rsa_server(backend).await;
    let body = s.request(None, Req::get(KEYS_PATH)).await.json();
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().unwrap();
    assert!(key.values().all(Value::is_string), "{key:?}");
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert!(key["kid"].as_str().unwrap().len() >= 43);
    s.request(None, Req::post(KEYS_PATH))
        .await
        .assert_status(StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

/// Rotation: after the key changes, the old key stays published as a previous key and its
/// tokens keep verifying; once it is rotated out, its tokens fail verification.
async fn token_fails_after_its_key_is_rotated_out(backend: Backend) {
    let site = Site::new(backend);
    let s = site.start(&Options::rsa()).await;
    let session = s.bot_session().await;
    let old = access_token(&s, &session, "").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = decode_header(&old).unwrap().kid.unwrap();
    assert!(verify(&old, &jwks(&s).await).is_ok());
    s.stop().await;

    // Step 1: new key, old key still published.
    let rotated = Options::rsa().signing_keys("keys/signing-b.pem", &["keys/signing-a.pem"]);
    let s = site.start(&rotated).await;
    let set = jwks(&s).await;
    assert_eq!(set.keys.len(), 2);
    assert!(verify(&old, &set).is_ok());
    let session = s.bot_session().await;
    let new = access_token(&s, &session, "").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_kid = decode_header(&new).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(verify(&new, &set).is_ok());
    s.stop().await;

    // Step 2: the old key is rotated out.
    let s = site
        .start(&Options::rsa().signing_keys("keys/signing-b.pem", &[]))
        .await;
    let set = jwks(&s).await;
    assert_eq!(set.keys.len(), 1);
    let e = verify(&old, &set).unwrap_err();
    assert!(e.contains("not in the JWKS"), "{e}");
    // Nor does it verify with the remaining key.
    let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
    assert!(decode::<Value>(&old, &key, &Validation::new(Algorithm::RS256)).is_err());
    assert!(verify(&new, &set).is_ok());
    s.stop().await;
}

/// Without `[signing]`, the key is made on first start beside the TLS key (mode 0600) and
/// reused after a restart: the `kid` stays the same.
async fn unconfigured_signing_key_is_made_once_and_persisted(backend: Backend) {
    let site = Site::new(backend);
    let options = Options::rsa().unconfigured_signing();
    let path = site.path().join("signing-key.pem");
    assert!(!path.exists());
    let s = site.start(&options).await;
    let first = jwks(&s).await.keys[0].common.key_id.clone().unwrap();
    s.stop().await;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let s = site.start(&options).await;
    let second = jwks(&s).await.keys[0].common.key_id.clone().unwrap();
    assert_eq!(first, second);
    s.stop().await;
}

/// Three `sessionauth serve` processes started at the same moment on one key folder, without
/// `[signing]`: all three start (none exits with "signing-key.pem already exists"), and all
/// publish the one key that is on disk. The store does not matter; it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_started_together_share_one_signing_key() {
    let site = Site::new(Backend::Memory);
    let options = Options::rsa().unconfigured_signing();
    let configs: Vec<_> = (0..3)
        .map(|i| site.write_config_as(&format!("node{i}.toml"), &options, "127.0.0.1:0"))
        .collect();
    assert!(!site.path().join("signing-key.pem").exists());
    // Spawned together, so that the processes race to make the key.
    let starting: Vec<_> = configs
        .into_iter()
        .map(|c| tokio::spawn(async move { support::node::Node::start(&c).await }))
        .collect();
    let mut nodes = Vec::new();
    for node in starting {
        nodes.push(node.await.expect("a node failed to start"));
    }
    let tls = client_config(site.pki().ca.cert_pem(), None, ClientTls::Default).unwrap();
    let mut kids = Vec::new();
    for node in &nodes {
        let mut conn = Conn::open(node.addr, tls.clone()).await.unwrap();
        let r = conn.send(Req::get(KEYS_PATH)).await.unwrap();
        r.assert_status(StatusCode::OK);
        let set: JwkSet = serde_json::from_value(r.json()).unwrap();
        kids.push(set.keys[0].common.key_id.clone().unwrap());
    }
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    let leftovers: Vec<_> = std::fs::read_dir(site.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// Start-up refusals: no server answers, so the store does not matter; they run once.

/// A configured signing key that does not exist stops start-up with an error naming it.
#[test]
fn missing_configured_signing_key_is_a_start_error() {
    let site = Site::new(Backend::Memory);
    let options = Options::rsa().signing_keys("keys/absent.pem", &[]);
    let e = sessionauth::server::Prepared::new(site.config(&options)).unwrap_err();
    assert!(e.to_string().contains("absent.pem"), "{e}");
}

/// A start refused for bad TLS material writes no signing key.
#[test]
fn refused_start_writes_no_signing_key() {
    let site = Site::new(Backend::Memory);
    std::fs::write(site.path().join(pki::SERVER_CERT_FILE), "not a certificate").unwrap();
    let config = site.config(&Options::rsa().unconfigured_signing());
    assert!(sessionauth::server::Prepared::new(config).is_err());
    assert!(!site.path().join("signing-key.pem").exists());
}
