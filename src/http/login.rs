//! The RSA authenticator: `/login/pubkey/...` and `/relay/pubkey/authenticate`.
//!
//! The caller proves who it is with a JWT signed by its RSA key (rules in [`crate::jwt`]), sent
//! as the JSON body `{"token": "<JWT>"}`; no client certificate is needed. As the contract has
//! it, every failure is 401: a body that is not that JSON, and every JWT rule (the message names
//! the rule that failed). Sessions made here are ordinary sessions (session info, logout,
//! expiry) that live for the configured lifetime. The on-behalf-of paths take the app session
//! in `sessionToken` as the only credential and follow the certificate path's rules (`obo.rs`:
//! no such session outlives its app session), but answer in the RSA shape
//! `{"name":"sessionToken","token":…}`.

use std::sync::Arc;

use serde::Deserialize;

use super::json::{self, Reply};
use super::obo::{self, Target};
use super::{sessions, ApiError, Ctx};
use crate::directory::{App, AppId, User};
use crate::jwt::{Assertion, JwtError};
use crate::rsakey::RsaPublicKey;
use crate::session::{Credential, CredentialId, Fingerprint, SessionKind, TokenFamily};

/// The body of the authenticate calls.
#[derive(Deserialize)]
struct AuthenticateRequest {
    token: String,
}

const AUTHENTICATE_BODY: &str = r#"{"token": "<JWT>"}"#;

/// The authenticate body; one that is not `{"token": string}` is 401 (no credential), saying
/// what was expected.
fn authenticate_body(ctx: &Ctx<'_>) -> Result<AuthenticateRequest, ApiError> {
    json::parse_body(ctx.body, AUTHENTICATE_BODY).map_err(|e| match e {
        ApiError::BadRequest(message) => ApiError::Unauthorized(message),
        other => other,
    })
}

/// The subject the body's JWT claims (unverified), for the login throttle.
pub(super) fn claimed_subject(ctx: &Ctx<'_>) -> Option<String> {
    let body: AuthenticateRequest = serde_json::from_slice(ctx.body).ok()?;
    crate::jwt::claimed_subject(&body.token)
}

/// `POST /login/pubkey/authenticate`, `/relay/pubkey/authenticate`: a service user's session
/// or key-manager token.
pub(super) async fn authenticate(ctx: &Ctx<'_>, family: TokenFamily) -> Result<Reply, ApiError> {
    let body = authenticate_body(ctx)?;
    let (user, key) = verified_user(ctx, &body.token)?;
    let token = sessions::mint(ctx, family.user_kind(user.id), Some(key), None).await?;
    Ok(json::token(family.response_name(), &token))
}

/// `POST /login/pubkey/app/authenticate`: an app's own session.
pub(super) async fn app_authenticate(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let body = authenticate_body(ctx)?;
    let (app, key) = verified_app(ctx, &body.token)?;
    let kind = SessionKind::App {
        app: app.app_id.clone(),
    };
    let token = sessions::mint(ctx, kind, Some(key), None).await?;
    Ok(json::token("sessionToken", &token))
}

/// `POST /login/pubkey/app/user/{userId}/authenticate`.
pub(super) async fn obo_by_user_id(ctx: &Ctx<'_>, uid: &str) -> Result<Reply, ApiError> {
    on_behalf_of(ctx, Target::UserId(uid)).await
}

/// `POST /login/pubkey/app/username/{username}/authenticate`.
pub(super) async fn obo_by_username(ctx: &Ctx<'_>, username: &str) -> Result<Reply, ApiError> {
    on_behalf_of(ctx, Target::Username(username)).await
}

async fn on_behalf_of(ctx: &Ctx<'_>, target: Target<'_>) -> Result<Reply, ApiError> {
    let token = obo::session(ctx, None, target, None).await?;
    Ok(json::token("sessionToken", &token))
}

/// The active service user a JWT proves to be, and the key that proved it.
fn verified_user(ctx: &Ctx<'_>, token: &str) -> Result<(Arc<User>, Credential), ApiError> {
    let jwt = Assertion::parse(token, ctx.now)?;
    let dir = &ctx.directory;
    let user = dir
        .user_by_name(jwt.subject())
        .filter(|u| u.is_service_user() && u.active);
    let found = user.and_then(|u| dir.public_keys(&u.username).map(|k| (u, k)));
    let Some((user, keys)) = found else {
        return Err(JwtError::UnknownSubject(
            "sub is not an active service user with a registered public key",
        )
        .into());
    };
    let key = jwt.verify(keys)?;
    Ok((user.clone(), key_credential(key)))
}

/// The active app a JWT proves to be (also the credential of the extension-app call), and the
/// key that proved it.
pub(super) fn verified_app(ctx: &Ctx<'_>, token: &str) -> Result<(Arc<App>, Credential), ApiError> {
    let jwt = Assertion::parse(token, ctx.now)?;
    let dir = &ctx.directory;
    let app = dir.app(&AppId::new(jwt.subject())).filter(|a| a.active);
    let found = app.and_then(|a| dir.public_keys(a.app_id.as_str()).map(|k| (a, k)));
    let Some((app, keys)) = found else {
        return Err(JwtError::UnknownSubject(
            "sub is not an active app with a registered public key",
        )
        .into());
    };
    let key = jwt.verify(keys)?;
    Ok((app.clone(), key_credential(key)))
}

fn key_credential(key: &RsaPublicKey) -> Credential {
    Credential {
        id: CredentialId::rsa_key(key.modulus(), key.exponent()),
        chain: Vec::new(),
        fingerprint: Fingerprint::rsa_key(key.modulus(), key.exponent()),
    }
}
