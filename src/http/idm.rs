//! Short-lived access tokens for resource servers: `POST /login/idm/tokens` and
//! `GET /login/idm/keys`.
//!
//! An access token is a JWT signed (RS256) by the server's signing key, `kid` in its header,
//! with the claims `iss` (configured, default `sessionauth`), `sub` (the user id, as a string),
//! `username`, `iat`, `exp` and `scope` (the requested scopes, space-separated; empty when none
//! was asked for). A user is granted only the scopes its directory entry lists (`scopes`);
//! asking for any other is 403 and no token is made. It lives `signing.access_token_lifetime`
//! (default 5 minutes) and never past its session's expiry. It is not a session token: no endpoint here accepts it. A resource server
//! verifies it with the JWKS of `/login/idm/keys`.

use serde_json::json;

use super::json::{self, Reply};
use super::{query, sessions, ApiError, Ctx};

/// The longest `scope` accepted.
const MAX_SCOPE_LEN: usize = 1024;

/// `POST /login/idm/tokens`: header `sessionToken`, optional query `scope`.
pub(super) async fn access_token(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let raw = sessions::header(ctx)?.ok_or_else(ApiError::invalid_session)?;
    let scope = scope(ctx.query)?;
    let (session, user) = sessions::user_session(ctx, raw).await?;
    let refused: Vec<&str> = scope
        .split(' ')
        .filter(|s| !s.is_empty() && !user.may_have_scope(s))
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::Forbidden(format!(
            "Scope not granted to this user: {}",
            refused.join(" ")
        )));
    }
    let uid = user.id;
    let signing = &ctx.api.signing;
    let ends = ctx
        .now
        .saturating_add(signing.access_token_lifetime())
        .min(session.expires);
    let iat = ctx.now.as_epoch_millis() / 1000;
    let exp = ends.as_epoch_millis() / 1000;
    if exp <= iat {
        return Err(ApiError::invalid_session());
    }
    let claims = json!({
        "iss": signing.issuer(),
        "sub": uid.to_string(),
        "username": user.username,
        "iat": iat,
        "exp": exp,
        "scope": scope,
    });
    let token = signing
        .sign(&claims)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    tracing::info!(
        target: "sessionauth::session",
        event = "access_token",
        user = uid.0,
        session_id = session.id.0,
        kid = signing.kid(),
        expires = exp,
        trace_id = ctx.trace_id,
    );
    Ok(json::ok(&json!({
        "token_type": "Bearer",
        "expires_in": exp - iat,
        "access_token": token,
    })))
}

/// `GET /login/idm/keys`: the JWKS, no authentication.
pub(super) fn keys(ctx: &Ctx<'_>) -> Reply {
    json::ok(&ctx.api.signing.jwks())
}

/// The `scope` query parameter: scope tokens (RFC 6749 §3.3 characters) separated by spaces,
/// normalized to single spaces. Absent: empty.
pub(super) fn scope(query: Option<&str>) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("Invalid scope: {why}"));
    let scope = query::param(query, "scope")?.unwrap_or_default();
    if scope.len() > MAX_SCOPE_LEN {
        return Err(bad("longer than 1024 characters"));
    }
    let tokens: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    if !tokens.iter().all(|t| crate::directory::is_scope_token(t)) {
        return Err(bad("only printable ASCII without quotes or backslashes"));
    }
    Ok(tokens.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scopes are decoded, normalized, and refused when they hold forbidden characters or
    /// appear twice.
    #[test]
    fn scope_parsing() {
        assert_eq!(scope(None).unwrap(), "");
        assert_eq!(scope(Some("x=1")).unwrap(), "");
        assert_eq!(scope(Some("scope=a+b%20%20c&x=1")).unwrap(), "a b c");
        assert_eq!(scope(Some("scope=at2")).unwrap(), "at2");
        assert!(scope(Some("scope=a&scope=b")).is_err());
        assert!(scope(Some("scope=%22")).is_err());
        assert!(scope(Some("scope=%5C")).is_err());
        assert!(scope(Some("scope=%0A")).is_err());
        assert!(scope(Some("scope=%zz")).is_err());
    }
}
