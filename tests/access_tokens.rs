//! Short-lived access tokens (`POST /login/idm/tokens`) and their JWKS (`GET /login/idm/keys`),
//! verified the way a resource server would: with the `jsonwebtoken` crate and the JWKS alone.

// Helpers outside #[test] functions panic on failure too: that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rsa_common;

use std::time::Duration;

use hyper::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use rsa_common::{now_secs, Server, Setup, KEYS};
use serde_json::{json, Value};

const TOKENS: &str = "/login/idm/tokens";

async fn jwks(s: &Server) -> JwkSet {
    let r = s.get("/login/idm/keys").send().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    serde_json::from_value(r.body).unwrap()
}

async fn access_token(s: &Server, session: &str, query: &str) -> Value {
    let r = s
        .post(&format!("{TOKENS}{query}"))
        .session(session)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
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
#[tokio::test]
async fn access_token_verifies_against_the_jwks() {
    let s = Setup::new().start().await;
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
    let r = s.get("/pod/v2/sessioninfo").session(token).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// A token signed by another key, or altered, does not verify.
#[tokio::test]
async fn forged_access_tokens_do_not_verify() {
    let s = Setup::new().start().await;
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
#[tokio::test]
async fn lifetime_is_configured_and_capped_by_the_session() {
    let mut setup = Setup::new();
    setup.tail.push_str("access_token_lifetime = \"90s\"\n");
    let s = setup.start().await;
    let session = s.bot_session().await;
    assert_eq!(access_token(&s, &session, "").await["expires_in"], 90);
    s.stop().await;

    let mut setup = Setup::new();
    setup.top = "session_lifetime = \"2m\"".into();
    let s = setup.start().await;
    let session = s.bot_session().await;
    let first = access_token(&s, &session, "").await["expires_in"]
        .as_i64()
        .unwrap();
    assert!((119..=120).contains(&first), "{first}");
    s.clock.advance(Duration::from_secs(100));
    let later = access_token(&s, &session, "").await["expires_in"]
        .as_i64()
        .unwrap();
    assert!((19..=20).contains(&later), "{later}");
    s.clock.advance(Duration::from_secs(25));
    let r = s.post(TOKENS).session(&session).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// A requested scope the user's directory entry lists is granted as a space-separated claim;
/// asking for one it does not list is 403 with no token; a malformed one is 400.
#[tokio::test]
async fn scope_is_granted_and_checked() {
    let s = Setup::new().start().await;
    let session = s.bot_session().await;
    let body = access_token(&s, &session, "?scope=at2%20read+write").await;
    let claims = verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).unwrap();
    assert_eq!(claims["scope"], "at2 read write");
    for ungranted in ["admin", "read+admin", "READ"] {
        let r = s
            .post(&format!("{TOKENS}?scope={ungranted}"))
            .session(&session)
            .send()
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{ungranted}: {}", r.body);
        assert!(
            r.message().starts_with("Scope not granted to this user: "),
            "{}",
            r.body
        );
        assert!(r.body.get("access_token").is_none(), "{}", r.body);
    }
    let r = s
        .post(&format!("{TOKENS}?scope=%22quoted%22"))
        .session(&session)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    s.stop().await;
}

/// Refusals: no header, garbage, a key-manager token, a logged-out session are 401; an app's
/// own session (no user) is 403; GET is 405.
#[tokio::test]
async fn access_token_refusals() {
    let s = Setup::new().start().await;
    let r = s.post(TOKENS).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s.post(TOKENS).session("garbage").send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let km = s
        .token_from("/relay/pubkey/authenticate", &KEYS.bot.jwt("bot.user", 290))
        .await;
    let r = s.post(TOKENS).session(&km).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let app = s.app_session("demo-app", &KEYS.demo_app).await;
    let r = s.post(TOKENS).session(&app).send().await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let bot = s.bot_session().await;
    let r = s
        .post("/sessionauth/v1/logout")
        .cert("bot.user")
        .session(&bot)
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.post(TOKENS).session(&bot).send().await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s.get(TOKENS).session(&bot).send().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

/// An on-behalf-of session's token names the user it acts for; a certificate session gets
/// tokens too.
#[tokio::test]
async fn obo_and_certificate_sessions_get_tokens() {
    let s = Setup::new().start().await;
    let app = s.app_session("demo-app", &KEYS.demo_app).await;
    let r = s
        .post("/login/pubkey/app/username/alice/authenticate")
        .session(&app)
        .send()
        .await;
    let obo = r.body["token"].as_str().unwrap().to_owned();
    let body = access_token(&s, &obo, "").await;
    let claims = verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).unwrap();
    assert_eq!(claims["sub"], "2001");
    assert_eq!(claims["username"], "alice");

    let r = s
        .post("/sessionauth/v1/authenticate")
        .cert("bot.user")
        .send()
        .await;
    let cert_session = r.body["token"].as_str().unwrap().to_owned();
    let body = access_token(&s, &cert_session, "").await;
    assert!(verify(body["access_token"].as_str().unwrap(), &jwks(&s).await).is_ok());
    s.stop().await;
}

/// The JWKS is RFC 7517 with string members only (the BDK's model requires it), one RS256
/// signing key with the `kid` access tokens name.
#[tokio::test]
async fn jwks_shape() {
    let s = Setup::new().start().await;
    let r = s.get("/login/idm/keys").send().await;
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().unwrap();
    assert!(key.values().all(Value::is_string), "{key:?}");
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert!(key["kid"].as_str().unwrap().len() >= 43);
    let r = s.post("/login/idm/keys").send().await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

/// Rotation: after the key changes, the old key stays published as a previous key and its
/// tokens keep verifying; once it is rotated out, its tokens fail verification.
#[tokio::test]
async fn token_fails_after_its_key_is_rotated_out() {
    let mut setup = Setup::new();
    let s = setup.start().await;
    let session = s.bot_session().await;
    let old = access_token(&s, &session, "").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = decode_header(&old).unwrap().kid.unwrap();
    assert!(verify(&old, &jwks(&s).await).is_ok());
    s.stop().await;

    // Step 1: new key, old key still published.
    setup.tail =
        "[signing]\nkey = \"keys/signing-b.pem\"\nprevious_keys = [\"keys/signing-a.pem\"]\n"
            .into();
    let s = setup.start().await;
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
    setup.tail = "[signing]\nkey = \"keys/signing-b.pem\"\n".into();
    let s = setup.start().await;
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
#[tokio::test]
async fn unconfigured_signing_key_is_made_once_and_persisted() {
    let mut setup = Setup::new();
    setup.tail = String::new();
    let path = setup.path().join("signing-key.pem");
    assert!(!path.exists());
    let s = setup.start().await;
    let first = jwks(&s).await.keys[0].common.key_id.clone().unwrap();
    s.stop().await;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let s = setup.start().await;
    let second = jwks(&s).await.keys[0].common.key_id.clone().unwrap();
    assert_eq!(first, second);
    s.stop().await;
}

/// A configured signing key that does not exist stops start-up with an error naming it.
#[tokio::test]
async fn missing_configured_signing_key_is_a_start_error() {
    let mut setup = Setup::new();
    setup.tail = "[signing]\nkey = \"keys/absent.pem\"\n".into();
    let e = sessionauth::server::Prepared::new(setup.config()).unwrap_err();
    assert!(e.to_string().contains("absent.pem"), "{e}");
}

/// A start refused for bad TLS material writes no signing key.
#[tokio::test]
async fn refused_start_writes_no_signing_key() {
    let mut setup = Setup::new();
    setup.tail = String::new();
    std::fs::write(setup.path().join("server.pem"), "not a certificate").unwrap();
    assert!(sessionauth::server::Prepared::new(setup.config()).is_err());
    assert!(!setup.path().join("signing-key.pem").exists());
}
