//! The session record: what a token stands for, whose it is, when it ends, and which token
//! family it belongs to.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::directory::{AppId, UserId};

/// What a session is, and whose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionKind {
    /// A service user's own session token (`/sessionauth/v1/authenticate`).
    User {
        /// The service user.
        user: UserId,
    },
    /// A service user's key-manager token (`/keyauth/v1/authenticate`).
    KeyManager {
        /// The service user.
        user: UserId,
    },
    /// An app's own session (`/sessionauth/v1/app/authenticate`).
    App {
        /// The app.
        app: AppId,
    },
    /// A session an app obtained on behalf of a user who installed it.
    OnBehalfOf {
        /// The app that minted it.
        app: AppId,
        /// The user it acts as.
        user: UserId,
        /// The app session it was minted with: ending that one ends this one too.
        parent: SessionId,
    },
}

impl SessionKind {
    /// The user whose identity the session carries (none for an app's own session).
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::User { user } | Self::KeyManager { user } | Self::OnBehalfOf { user, .. } => {
                Some(*user)
            }
            Self::App { .. } => None,
        }
    }

    /// The app involved, for app and on-behalf-of sessions.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Self::App { app } | Self::OnBehalfOf { app, .. } => Some(app),
            Self::User { .. } | Self::KeyManager { .. } => None,
        }
    }

    /// For an on-behalf-of session, the app session that minted it.
    pub fn parent(&self) -> Option<SessionId> {
        match self {
            Self::OnBehalfOf { parent, .. } => Some(*parent),
            _ => None,
        }
    }

    /// A short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::User { .. } => "session",
            Self::KeyManager { .. } => "key_manager",
            Self::App { .. } => "app",
            Self::OnBehalfOf { .. } => "obo",
        }
    }
}

/// A public handle for a session, distinct from its token and useless for authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub i64);

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The public handle.
    pub id: SessionId,
    /// What the session is and whose.
    pub kind: SessionKind,
    /// When it was made.
    pub created: Millis,
    /// When it stops working.
    pub expires: Millis,
    /// The client's IP address when the session was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
    /// The client's `User-Agent` when the session was made (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<std::sync::Arc<str>>,
    /// The credential the session was minted with (none for on-behalf-of sessions, whose
    /// credential is their app session): revoking it ends the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialId>,
    /// The intermediate certificates the client presented with its certificate, as
    /// [`CredentialId`]s: revoking any of them ends the session too.
    /// (A boxed slice: 16 bytes in every session where a `Vec` takes 24.)
    #[serde(default, skip_serializing_if = "no_chain")]
    pub chain: Box<[CredentialId]>,
    /// The credential's fingerprint (see [`Fingerprint`]), for operators to match a session
    /// with a certificate or key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
}

/// Whether a session's chain is empty (then it is not written).
fn no_chain(chain: &[CredentialId]) -> bool {
    chain.is_empty()
}

/// What a session is minted with, as the session records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// What a revocation names: the certificate's issuer and serial, or the RSA key.
    pub id: CredentialId,
    /// The ids of the intermediate certificates presented with a client certificate.
    pub chain: Vec<CredentialId>,
    /// The certificate's or key's fingerprint.
    pub fingerprint: Fingerprint,
}

/// A SHA-256 fingerprint, written as 64 lowercase hex digits: of the DER certificate for a
/// client certificate (`openssl x509 -noout -fingerprint -sha256` without the colons), of the
/// RFC 7638 JWK thumbprint input for an RSA key (the key's standard `SHA-256` thumbprint).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The SHA-256 digest of a DER-encoded certificate.
    pub fn certificate(der: &[u8]) -> Self {
        Self(digest32(&crate::crypto::digest::digest(
            &crate::crypto::digest::SHA256,
            der,
        )))
    }

    /// The RFC 7638 thumbprint of an RSA key: the SHA-256 digest of its canonical JWK
    /// (`{"e":…,"kty":"RSA","n":…}`, base64url numbers without leading zeros).
    pub fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Self {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            b64.encode(strip_leading_zeros(exponent)),
            b64.encode(strip_leading_zeros(modulus))
        );
        Self(digest32(&crate::crypto::digest::digest(
            &crate::crypto::digest::SHA256,
            jwk.as_bytes(),
        )))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        if rest.is_empty() {
            break;
        }
        b = rest;
    }
    b
}

fn digest32(d: &crate::crypto::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn write_hex(bytes: &[u8; 32], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex(&self.0, f)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_hex(&text)
            .map(Self)
            .ok_or_else(|| serde::de::Error::custom("a fingerprint is 64 hex digits"))
    }
}

/// Names the credential a session was minted with: for a client certificate, a SHA-256 digest
/// of its issuer's name and its serial number (what a CRL names); for an RSA key, a SHA-256
/// digest of its modulus and exponent. Written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CredentialId([u8; 32]);

/// A digest is uniform already: its first 8 bytes are its hash (for
/// [`BuildTokenHasher`](crate::token::BuildTokenHasher) maps).
impl std::hash::Hash for CredentialId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl CredentialId {
    /// The id of a certificate issued by `issuer` (its DER-encoded name) with `serial` (the
    /// serial number's big-endian bytes).
    pub fn certificate(issuer: &[u8], serial: &[u8]) -> Self {
        let mut ctx = crate::crypto::digest::Context::new(&crate::crypto::digest::SHA256);
        ctx.update(b"cert\0");
        ctx.update(
            &u32::try_from(issuer.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        ctx.update(issuer);
        // Serial numbers are positive integers; a leading zero byte is DER padding, not value.
        let serial = match serial {
            [0, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        ctx.update(serial);
        Self::from_digest(&ctx.finish())
    }

    /// The id of an RSA public key, from its modulus and public exponent (big-endian).
    pub fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Self {
        let mut ctx = crate::crypto::digest::Context::new(&crate::crypto::digest::SHA256);
        ctx.update(b"rsa\0");
        ctx.update(
            &u32::try_from(modulus.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        ctx.update(modulus);
        ctx.update(exponent);
        Self::from_digest(&ctx.finish())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn from_digest(d: &crate::crypto::digest::Digest) -> Self {
        Self(digest32(d))
    }
}

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_hex(&self.0, f)
    }
}

impl std::fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialId({self})")
    }
}

impl std::str::FromStr for CredentialId {
    type Err = InvalidCredentialId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self).ok_or(InvalidCredentialId)
    }
}

/// A text that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a credential id is 64 hex digits")]
pub struct InvalidCredentialId;

impl Serialize for CredentialId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CredentialId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Session {
    /// Whether the session has ended by time at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        now >= self.expires
    }

    /// Every credential whose revocation ends the session: the one it was minted with, then
    /// the intermediate certificates presented with it.
    pub fn credential_ids(&self) -> impl Iterator<Item = &CredentialId> {
        self.credential.iter().chain(&self.chain)
    }

    /// Records what the session is minted with.
    pub fn with_credential(mut self, credential: Option<Credential>) -> Self {
        if let Some(c) = credential {
            self.credential = Some(c.id);
            self.chain = c.chain.into_boxed_slice();
            self.fingerprint = Some(c.fingerprint);
        }
        self
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl SessionId {
    /// A fresh random id: positive, 63 bits, unrelated to the token.
    pub fn generate() -> Result<Self, crate::token::RandomError> {
        use crate::crypto::rand::SecureRandom as _;
        let mut b = [0u8; 8];
        crate::crypto::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| crate::token::RandomError)?;
        Ok(Self::from_random(b))
    }

    /// An id from 8 random bytes: the sign bit is cleared, and zero is avoided so that 0 never
    /// names a session.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self((i64::from_be_bytes(bytes) & i64::MAX).max(1))
    }
}

/// Session tokens and key-manager tokens are separate families: each is accepted only where it
/// belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFamily {
    /// Session tokens: a user's own, an app's, and on-behalf-of sessions.
    Session,
    /// Key-manager tokens (`/keyauth`, `/relay`).
    KeyManager,
}

impl TokenFamily {
    /// The `name` field of the token response.
    pub fn response_name(self) -> &'static str {
        match self {
            Self::Session => "sessionToken",
            Self::KeyManager => "keyManagerToken",
        }
    }

    /// Whether a session of `kind` belongs to this family.
    pub fn includes(self, kind: &SessionKind) -> bool {
        match self {
            Self::KeyManager => matches!(kind, SessionKind::KeyManager { .. }),
            Self::Session => !matches!(kind, SessionKind::KeyManager { .. }),
        }
    }

    /// The kind of a service user's own token in this family.
    pub fn user_kind(self, user: UserId) -> SessionKind {
        match self {
            Self::Session => SessionKind::User { user },
            Self::KeyManager => SessionKind::KeyManager { user },
        }
    }
}
