//! The signed JWTs bots and apps present to `/login` and `/relay`: structure, algorithm, the
//! claim rules, and the signature check against the subject's registered keys.
//!
//! The rules (Symphony's): header `alg` RS512, RS384 or RS256 (`typ` optional, never
//! required); claims `sub` (a string) and `exp` (a number) and nothing else required; valid when
//! `now < exp <= now + 300 s`, each bound widened by 30 s of clock skew; the signature must
//! verify with a public key registered for `sub`. A repeated JWT is not refused: clients sign
//! `{sub, exp}` deterministically, so two calls in one second carry identical tokens.
//!
//! Checking is in two steps so that the caller looks the subject up in between:
//! `Assertion::parse` reads everything and applies the time rules, then `Assertion::verify`
//! checks the signature with the subject's keys. `alg: none`, the HS* family (including the
//! "HS256 keyed with the public key" trick) and every other algorithm are refused before any key
//! is looked at.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::clock::Millis;
use crate::directory::RegisteredKeys;
use crate::rsakey::RsaPublicKey;

/// How far ahead `exp` may be.
const MAX_AHEAD: Duration = Duration::from_secs(300);
/// The clock difference tolerated between client and server, on both bounds of `exp`.
const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The longest JWT read (a 8192-bit signature is 1366 characters; the rest is small).
const MAX_LEN: usize = 8 * 1024;

/// The signature algorithms accepted: RSASSA-PKCS1-v1_5 with SHA-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    /// RS256.
    Rs256,
    /// RS384.
    Rs384,
    /// RS512: what the Symphony BDKs send.
    Rs512,
}

impl Alg {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "RS384" => Some(Self::Rs384),
            "RS512" => Some(Self::Rs512),
            _ => None,
        }
    }

    fn ring_params(self) -> &'static crate::crypto::signature::RsaParameters {
        match self {
            Self::Rs256 => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// Why a JWT is refused. Every variant is a 401; the message names the rule and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    /// Not a compact JWS with a JSON header and `sub`/`exp` claims.
    #[error("Malformed JWT: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256, RS384 or RS512 (`none` and HS* included).
    #[error("Unsupported JWT algorithm: only RS512, RS384 and RS256 are accepted")]
    UnsupportedAlg,
    /// `exp` has passed.
    #[error("JWT expired: exp is in the past")]
    Expired,
    /// `exp` is more than 300 s ahead.
    #[error("JWT exp is too far ahead: at most 300 seconds from now is accepted")]
    TooFarAhead,
    /// `sub` names no one who may authenticate here with a key.
    #[error("Unknown JWT subject: {0}")]
    UnknownSubject(&'static str),
    /// No registered key of the subject verifies the signature.
    #[error("Bad JWT signature: it does not verify with the subject's registered public key")]
    BadSignature,
}

impl JwtError {
    /// The stable reason code of the refusal, for the log and the metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "jwt_malformed",
            Self::UnsupportedAlg => "jwt_unsupported_alg",
            Self::Expired => "jwt_expired",
            Self::TooFarAhead => "jwt_too_far_ahead",
            Self::UnknownSubject(_) => "unknown_subject",
            Self::BadSignature => "jwt_bad_signature",
        }
    }
}

/// A JWT whose structure, algorithm and time rules passed, and whose signature is still to be
/// checked with [`Assertion::verify`]. Its `Debug` shows the algorithm and subject only: the
/// JWT itself is a credential until it expires.
#[must_use = "an assertion proves nothing until verify() succeeds"]
pub(crate) struct Assertion<'t> {
    alg: Alg,
    signing_input: &'t str,
    signature: Vec<u8>,
    subject: String,
}

impl std::fmt::Debug for Assertion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion")
            .field("alg", &self.alg)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl<'t> Assertion<'t> {
    /// Reads `token` and applies the algorithm and time rules at `now`.
    pub(crate) fn parse(token: &'t str, now: Millis) -> Result<Self, JwtError> {
        if token.len() > MAX_LEN {
            return Err(JwtError::Malformed("longer than 8192 characters"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed(
                "expected three base64url parts separated by dots",
            ));
        };
        let header = decode_object(header, "the header is not a base64url JSON object")?;
        if header.contains_key("crit") {
            return Err(JwtError::Malformed("the crit header is not supported"));
        }
        let alg = header
            .get("alg")
            .ok_or(JwtError::Malformed("the header has no alg"))?
            .as_str()
            .and_then(Alg::from_name)
            .ok_or(JwtError::UnsupportedAlg)?;
        let mut claims = decode_object(claims, "the claims are not a base64url JSON object")?;
        let subject = match claims.remove("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            _ => {
                return Err(JwtError::Malformed(
                    "the claims need a non-empty string sub",
                ))
            }
        };
        let exp_ms = epoch_ms(
            claims
                .get("exp")
                .ok_or(JwtError::Malformed("the claims need a numeric exp"))?,
        )?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| JwtError::Malformed("the signature is not base64url"))?;
        if signature.is_empty() {
            return Err(JwtError::Malformed("the signature is empty"));
        }
        let exp_ms = i128::from(exp_ms);
        let now_ms = i128::from(now.as_epoch_millis());
        let skew = i128::from(u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX));
        let ahead = i128::from(u64::try_from(MAX_AHEAD.as_millis()).unwrap_or(u64::MAX));
        if exp_ms + skew <= now_ms {
            return Err(JwtError::Expired);
        }
        if exp_ms > now_ms + ahead + skew {
            return Err(JwtError::TooFarAhead);
        }
        let signing_input = &token[..header_and_claims_len(token)];
        Ok(Self {
            alg,
            signing_input,
            signature,
            subject,
        })
    }

    /// The `sub` claim, to look the registered keys up by.
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    /// Checks the signature with the subject's current key, then its previous one; returns the
    /// key that verified it.
    pub(crate) fn verify(self, keys: &RegisteredKeys) -> Result<&RsaPublicKey, JwtError> {
        let params = self.alg.ring_params();
        let input = self.signing_input.as_bytes();
        keys.iter()
            .find(|key| key.verify(params, input, &self.signature))
            .ok_or(JwtError::BadSignature)
    }
}

/// The `sub` a JWT claims, read without checking anything else: for the login throttle, which
/// charges failures to the identity a client claimed. Never a basis for trust.
pub(crate) fn claimed_subject(token: &str) -> Option<String> {
    if token.len() > MAX_LEN {
        return None;
    }
    let claims = token.split('.').nth(1)?;
    match decode_object(claims, "").ok()?.remove("sub")? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The length of `header.claims`: everything before the second dot.
fn header_and_claims_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_object(
    part: &str,
    what: &'static str,
) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}

/// The largest NumericDate read: the last second of year 9999. A claim beyond it (`1e300`, a
/// 20-digit integer) is malformed, not "expired" by wrapping arithmetic.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// A NumericDate (seconds, possibly fractional) as milliseconds: a number within
/// ±[`MAX_NUMERIC_DATE`], else malformed.
fn epoch_ms(v: &serde_json::Value) -> Result<i64, JwtError> {
    let out_of_range = || JwtError::Malformed("the exp claim is not a date before year 10000");
    let n = v
        .as_number()
        .ok_or(JwtError::Malformed("the claims need a numeric exp"))?;
    if let Some(i) = n.as_i64() {
        return if i.unsigned_abs() <= MAX_NUMERIC_DATE.unsigned_abs() {
            Ok(i * 1000)
        } else {
            Err(out_of_range())
        };
    }
    // A u64 beyond i64 arrives here as a float too; JSON cannot carry NaN or infinities.
    let seconds = n.as_f64().ok_or_else(out_of_range)?;
    #[allow(clippy::cast_precision_loss)] // exact: the bound is below 2^53
    if seconds.is_nan() || seconds.abs() > MAX_NUMERIC_DATE as f64 {
        return Err(out_of_range());
    }
    // In range: the product fits an i64 with room to spare.
    #[allow(clippy::cast_possible_truncation)]
    Ok((seconds * 1000.0).floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    const NOW: u64 = 1_700_000_000_000;

    fn parse(t: &str) -> Result<Assertion<'_>, JwtError> {
        Assertion::parse(t, Millis::from_epoch_millis(NOW))
    }

    /// Debug output never shows the JWT's parts: it is a credential until it expires.
    #[test]
    fn debug_hides_the_jwt() {
        let n = NOW / 1000 + 60;
        let t = token(
            r#"{"alg":"RS512"}"#,
            &format!(r#"{{"sub":"bot.user","exp":{n}}}"#),
        );
        let shown = format!("{:?}", parse(&t).unwrap());
        assert!(shown.contains("bot.user"), "{shown}");
        for part in t.split('.') {
            assert!(!shown.contains(part), "{shown}");
        }
    }

    /// The time window: now < exp + 30 s, exp <= now + 330 s.
    #[test]
    fn time_window() {
        let now = NOW / 1000;
        let at = |exp: i64| {
            token(
                r#"{"alg":"RS512"}"#,
                &format!(r#"{{"sub":"a","exp":{exp}}}"#),
            )
        };
        let n = i64::try_from(now).unwrap();
        assert!(parse(&at(n + 290)).is_ok());
        assert!(parse(&at(n + 330)).is_ok());
        assert_eq!(parse(&at(n + 331)).unwrap_err(), JwtError::TooFarAhead);
        assert!(parse(&at(n - 29)).is_ok());
        assert_eq!(parse(&at(n - 30)).unwrap_err(), JwtError::Expired);
        assert_eq!(parse(&at(0)).unwrap_err(), JwtError::Expired);
        assert_eq!(
            parse(&at(253_402_300_799)).unwrap_err(),
            JwtError::TooFarAhead
        );
        assert!(matches!(
            parse(&at(i64::MAX)).unwrap_err(),
            JwtError::Malformed(_)
        ));
    }

    /// `none`, HS256 and unknown algorithms are refused as unsupported; `typ` is optional.
    #[test]
    fn algorithms() {
        let claims = format!(r#"{{"sub":"a","exp":{}}}"#, NOW / 1000 + 60);
        for alg in ["none", "HS256", "HS512", "ES256", "PS512", "rs512", ""] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), &claims);
            assert_eq!(parse(&t).unwrap_err(), JwtError::UnsupportedAlg, "{alg}");
        }
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims));
        assert_eq!(parse(&t).unwrap_err(), JwtError::UnsupportedAlg);
        for alg in ["RS256", "RS384", "RS512"] {
            let t = token(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &claims);
            assert_eq!(Some(parse(&t).unwrap().alg), Alg::from_name(alg));
        }
    }

    /// Structural problems are "Malformed" with a reason.
    #[test]
    fn malformed() {
        let exp = NOW / 1000 + 60;
        let cases = [
            "".to_string(),
            "abc".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            format!("!!.{}.c", b64("{}")),
            token("[1]", "{}"),
            token(r#"["RS512"]"#, "{}"),
            token(r#"{"typ":"JWT"}"#, "{}"),
            token(r#"{"alg":"RS512","crit":["x"]}"#, "{}"),
            token(r#"{"alg":"RS512"}"#, "not json"),
            token(r#"{"alg":"RS512"}"#, &format!(r#"{{"exp":{exp}}}"#)),
            token(
                r#"{"alg":"RS512"}"#,
                &format!(r#"{{"sub":"","exp":{exp}}}"#),
            ),
            token(r#"{"alg":"RS512"}"#, &format!(r#"{{"sub":7,"exp":{exp}}}"#)),
            token(r#"{"alg":"RS512"}"#, r#"{"sub":"a"}"#),
            token(r#"{"alg":"RS512"}"#, r#"{"sub":"a","exp":"soon"}"#),
            format!(
                "{}.{}.",
                b64(r#"{"alg":"RS512"}"#),
                b64(&format!(r#"{{"sub":"a","exp":{exp}}}"#))
            ),
            format!(
                "{}.{}.a=b",
                b64(r#"{"alg":"RS512"}"#),
                b64(&format!(r#"{{"sub":"a","exp":{exp}}}"#))
            ),
            "a".repeat(MAX_LEN + 1),
            // Numbers that do not fit are malformed, never wrapped into "expired".
            token(r#"{"alg":"RS512"}"#, r#"{"sub":"a","exp":1e300}"#),
            token(r#"{"alg":"RS512"}"#, r#"{"sub":"a","exp":-1e300}"#),
            token(
                r#"{"alg":"RS512"}"#,
                r#"{"sub":"a","exp":18446744073709551615}"#,
            ),
            token(
                r#"{"alg":"RS512"}"#,
                r#"{"sub":"a","exp":9223372036854775807}"#,
            ),
            token(r#"{"alg":"RS512"}"#, r#"{"sub":"a","exp":253402300800}"#),
        ];
        for t in &cases {
            assert!(
                matches!(parse(t), Err(JwtError::Malformed(_))),
                "{t:?}: {:?}",
                parse(t)
            );
        }
    }

    /// The claimed subject is read from any JWT-shaped token, signed or not, valid or not.
    #[test]
    fn claimed_subject_of_anything() {
        let t = token(r#"{"alg":"none"}"#, r#"{"sub":"bot.user","exp":1}"#);
        assert_eq!(claimed_subject(&t).as_deref(), Some("bot.user"));
        assert_eq!(claimed_subject("garbage"), None);
        assert_eq!(claimed_subject(&token("{}", r#"{"sub":7}"#)), None);
    }

    /// Fractional exp values are read; the subject is kept.
    #[test]
    fn fractional_exp_and_subject() {
        let t = token(
            r#"{"alg":"RS512"}"#,
            &format!(
                r#"{{"sub":"bot.user","exp":{}.5,"iat":1}}"#,
                NOW / 1000 + 10
            ),
        );
        assert_eq!(parse(&t).unwrap().subject(), "bot.user");
    }
}
