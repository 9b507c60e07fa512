//! The server's signing key: it signs the short-lived access tokens of `/login/idm/tokens`, it
//! is published with the keys rotated out as the JWKS of `/login/idm/keys`, and its self-signed
//! certificate is the "pod certificate" extension apps fetch.
//!
//! The key is an RSA private key in a PEM file (PKCS#8, or PKCS#1). When none is configured it
//! lives in `signing-key.pem` beside the TLS key and is made on first start (2048 bits, mode
//! 0600, never overwritten). Keys are named by their RFC 7638 thumbprint (`kid`), so a key keeps
//! its `kid` across restarts and a resource server can cache the JWKS. The certificate is made at
//! start-up from the key (self-signed, `CN=sessionauth signing key`); only the key is persisted.
//!
//! Rotation: make a new key (`sessionauth certs rsa --name signing-2 --dir certs`), configure
//! it as `signing.key`, move the old key's path to `signing.previous_keys` and restart. Tokens
//! signed by the old key keep verifying through the JWKS; remove it from `previous_keys` once
//! `access_token_lifetime` has passed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::EncodePrivateKey as _;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::json;

use crate::config::{SigningKeySource, SigningSettings};
use crate::crypto::rand::SystemRandom;
use crate::crypto::signature::{KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};
use crate::pki::disk::Outcome;
use crate::pki::{DevKeyPair, PkiError, RsaKeyError, Validity};
use crate::rsakey::{PublicKeyError, RsaPublicKey};

/// The size of a signing key made on first start.
const SIGNING_KEY_BITS: usize = 2048;
/// The JOSE algorithm of access tokens.
const ACCESS_TOKEN_ALG: &str = "RS256";
/// The subject of the signing key's self-signed certificate.
const CERTIFICATE_CN: &str = "sessionauth signing key";
/// How long the signing key's certificate is valid (it is re-made at every start).
const CERTIFICATE_DAYS: u32 = 3650;

/// The loaded signing key, the keys rotated out, and the settings of access tokens.
pub struct SigningKeys {
    current: RsaKeyPair,
    current_public: PublishedKey,
    previous: Vec<PublishedKey>,
    certificate_pem: String,
    issuer: String,
    access_token_lifetime: Duration,
    rng: SystemRandom,
    created: Option<PathBuf>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("kid", &self.current_public.kid)
            .field(
                "previous",
                &self.previous.iter().map(|p| &p.kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .field("access_token_lifetime", &self.access_token_lifetime)
            .finish_non_exhaustive()
    }
}

/// A public key as the JWKS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublishedKey {
    /// The key's RFC 7638 SHA-256 thumbprint, base64url.
    kid: String,
    key: RsaPublicKey,
}

/// Why the signing keys could not be loaded, or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file could not be read.
    #[error("signing key {path}: cannot read it")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one PEM block of a private or public key.
    #[error("signing key {path}: not a PEM RSA key (\"PRIVATE KEY\", \"RSA PRIVATE KEY\" or, for previous keys, \"PUBLIC KEY\")")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The private key was refused.
    #[error("signing key {path}: not a usable RSA private key (2048 to 4096 bits)")]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// What the crypto provider or the decoder said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A previous public key was refused.
    #[error("signing key {path}: not a usable RSA public key")]
    BadPublicKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: PublicKeyError,
    },
    /// A new key could not be generated.
    #[error("cannot make the signing key")]
    Generate(#[source] RsaKeyError),
    /// A new key could not be written.
    #[error("cannot write the signing key (or configure an existing one as [signing] key)")]
    Write(#[source] PkiError),
    /// The self-signed certificate could not be made.
    #[error("cannot make the signing key's certificate")]
    Certificate(#[source] rcgen::Error),
    /// The crypto provider could not sign (the random source failed).
    #[error("signing failed")]
    Sign,
}

impl SigningKeys {
    /// Loads the current key (making it when it is the unconfigured default and missing), the
    /// previous keys, and makes the certificate.
    pub(crate) fn load(settings: &SigningSettings) -> Result<Self, SigningError> {
        let mut created = None;
        let pkcs8 = match &settings.key {
            SigningKeySource::File(path) => read_private(path)?,
            SigningKeySource::Default(path) if path.exists() => read_private(path)?,
            SigningKeySource::Default(path) => {
                let pair =
                    DevKeyPair::generate(SIGNING_KEY_BITS).map_err(SigningError::Generate)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| SigningError::Read {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                // Nodes started together on one key folder race here: the first to link its
                // complete file wins, and the others load that one.
                match crate::pki::disk::create_secret_or_read(path, pair.private_pem())
                    .map_err(SigningError::Write)?
                {
                    Outcome::Created => {
                        created = Some(path.clone());
                        private_from_pem(path, pair.private_pem())?
                    }
                    Outcome::Existing(theirs) => private_from_pem(path, &theirs)?,
                }
            }
            SigningKeySource::Ephemeral => {
                let pair =
                    DevKeyPair::generate(SIGNING_KEY_BITS).map_err(SigningError::Generate)?;
                private_from_pem(Path::new("(ephemeral)"), pair.private_pem())?
            }
        };
        let key_path = match &settings.key {
            SigningKeySource::File(p) | SigningKeySource::Default(p) => p.clone(),
            SigningKeySource::Ephemeral => PathBuf::from("(ephemeral)"),
        };
        let current = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| SigningError::BadPrivateKey {
            path: key_path.clone(),
            source: Box::new(e),
        })?;
        let current_public = PublishedKey::new(
            RsaPublicKey::from_pkcs1_der(current.public_key().as_ref()).map_err(|source| {
                SigningError::BadPublicKey {
                    path: key_path.clone(),
                    source,
                }
            })?,
        );
        let mut previous: Vec<PublishedKey> = Vec::new();
        for path in &settings.previous_keys {
            let key = PublishedKey::new(read_public(path)?);
            if key.kid != current_public.kid && !previous.contains(&key) {
                previous.push(key);
            }
        }
        let certificate_pem = certificate(&pkcs8)?;
        Ok(Self {
            current,
            current_public,
            previous,
            certificate_pem,
            issuer: settings.issuer.clone(),
            access_token_lifetime: settings.access_token_lifetime,
            rng: SystemRandom::new(),
            created,
        })
    }

    /// The file the key was written to when this start made it.
    pub fn created(&self) -> Option<&Path> {
        self.created.as_deref()
    }

    /// The current key's `kid`.
    pub(crate) fn kid(&self) -> &str {
        &self.current_public.kid
    }

    /// The `kid`s of the keys rotated out, still published.
    pub(crate) fn previous_kids(&self) -> impl Iterator<Item = &str> {
        self.previous.iter().map(|p| p.kid.as_str())
    }

    /// The `iss` claim of access tokens.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The configured lifetime of access tokens.
    pub(crate) fn access_token_lifetime(&self) -> Duration {
        self.access_token_lifetime
    }

    /// The self-signed certificate of the current key, PEM.
    pub(crate) fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The JWKS: the current key first, then the keys rotated out. Every member is a string
    /// (the Symphony BDK's model requires it).
    pub(crate) fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = std::iter::once(&self.current_public)
            .chain(&self.previous)
            .map(PublishedKey::jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` as a compact JWS: RS256, `typ: JWT`, `kid` of the current key.
    pub(crate) fn sign(&self, claims: &serde_json::Value) -> Result<String, SigningError> {
        let header = json!({ "alg": ACCESS_TOKEN_ALG, "typ": "JWT", "kid": self.kid() });
        let mut out = String::new();
        URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut out);
        let mut signature = vec![0u8; self.current.public_key().modulus_len()];
        self.current
            .sign(&RSA_PKCS1_SHA256, &self.rng, out.as_bytes(), &mut signature)
            .map_err(|_| SigningError::Sign)?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }
}

impl PublishedKey {
    fn new(key: RsaPublicKey) -> Self {
        Self {
            kid: thumbprint(&key),
            key,
        }
    }

    fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": ACCESS_TOKEN_ALG,
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(self.key.modulus()),
            "e": URL_SAFE_NO_PAD.encode(self.key.exponent()),
        })
    }
}

/// RFC 7638: SHA-256 over `{"e":…,"kty":"RSA","n":…}` (members sorted, no whitespace).
fn thumbprint(key: &RsaPublicKey) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.exponent()),
        URL_SAFE_NO_PAD.encode(key.modulus())
    );
    URL_SAFE_NO_PAD.encode(crate::crypto::digest::digest(
        &crate::crypto::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn read_pem(path: &Path) -> Result<(String, Zeroizing<Vec<u8>>), SigningError> {
    let text = Zeroizing::new(
        crate::files::read_text_capped(path, crate::files::MAX_PEM_BYTES).map_err(|source| {
            SigningError::Read {
                path: path.to_owned(),
                source,
            }
        })?,
    );
    let (label, der) = rsa::pkcs8::der::pem::decode_vec(text.trim().as_bytes()).map_err(|_| {
        SigningError::NotPem {
            path: path.to_owned(),
        }
    })?;
    Ok((label.to_owned(), Zeroizing::new(der)))
}

/// A private key file as PKCS#8 DER (a PKCS#1 key is re-wrapped).
fn read_private(path: &Path) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let (label, der) = read_pem(path)?;
    private_der(path, &label, der)
}

fn private_from_pem(path: &Path, pem: &str) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let (label, der) =
        rsa::pkcs8::der::pem::decode_vec(pem.as_bytes()).map_err(|_| SigningError::NotPem {
            path: path.to_owned(),
        })?;
    let label = label.to_owned();
    private_der(path, &label, Zeroizing::new(der))
}

fn private_der(
    path: &Path,
    label: &str,
    der: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| SigningError::BadPrivateKey {
        path: path.to_owned(),
        source,
    };
    match label {
        "PRIVATE KEY" => Ok(der),
        "RSA PRIVATE KEY" => {
            let key = rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| bad(Box::new(e)))?;
            let pkcs8 = key.to_pkcs8_der().map_err(|e| bad(Box::new(e)))?;
            Ok(Zeroizing::new(pkcs8.as_bytes().to_vec()))
        }
        _ => Err(SigningError::NotPem {
            path: path.to_owned(),
        }),
    }
}

/// A previous key: its public half, from a private or a public key file.
fn read_public(path: &Path) -> Result<RsaPublicKey, SigningError> {
    let (label, der) = read_pem(path)?;
    let bad_public = |source| SigningError::BadPublicKey {
        path: path.to_owned(),
        source,
    };
    match label.as_str() {
        "PUBLIC KEY" => RsaPublicKey::from_spki_der(&der).map_err(bad_public),
        "RSA PUBLIC KEY" => RsaPublicKey::from_pkcs1_der(&der).map_err(bad_public),
        _ => {
            let pkcs8 = private_der(path, &label, der)?;
            let pair = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| SigningError::BadPrivateKey {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
            RsaPublicKey::from_pkcs1_der(pair.public_key().as_ref()).map_err(bad_public)
        }
    }
}

/// A self-signed certificate for the key (PKCS#8 DER), PEM.
fn certificate(pkcs8: &[u8]) -> Result<String, SigningError> {
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
        .map_err(SigningError::Certificate)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, CERTIFICATE_CN);
    params.distinguished_name = dn;
    let validity = Validity::days_from_now(CERTIFICATE_DAYS);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params
        .self_signed(&key)
        .map_err(SigningError::Certificate)?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: SigningKeySource, previous: Vec<PathBuf>) -> SigningSettings {
        SigningSettings {
            key,
            previous_keys: previous,
            access_token_lifetime: Duration::from_secs(300),
            issuer: "t".into(),
        }
    }

    /// Several nodes starting at once on one key folder all start, with one and the same key:
    /// exactly one of them made it.
    #[test]
    fn nodes_starting_together_share_one_default_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("signing-key.pem");
        let barrier = std::sync::Barrier::new(4);
        let loaded: Vec<SigningKeys> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (&path, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        SigningKeys::load(&settings(
                            SigningKeySource::Default(path.clone()),
                            vec![],
                        ))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(loaded.iter().all(|k| k.kid() == loaded[0].kid()));
        assert_eq!(loaded.iter().filter(|k| k.created().is_some()).count(), 1);
        let again = SigningKeys::load(&settings(SigningKeySource::Default(path), vec![])).unwrap();
        assert_eq!(again.kid(), loaded[0].kid());
    }

    /// The default key is made on first start with mode 0600 and reused (same kid) after.
    #[test]
    fn default_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.pem");
        let first =
            SigningKeys::load(&settings(SigningKeySource::Default(path.clone()), vec![])).unwrap();
        assert_eq!(first.created(), Some(path.as_path()));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let second = SigningKeys::load(&settings(SigningKeySource::Default(path), vec![])).unwrap();
        assert_eq!(second.created(), None);
        assert_eq!(first.kid(), second.kid());
        assert!(!format!("{second:?}").contains("PRIVATE"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A configured key must exist; previous keys are published after the current one, from
    /// private or public files, without duplicates.
    #[test]
    fn configured_and_previous_keys() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SigningKeys::load(&settings(
            SigningKeySource::File(dir.path().join("nope.pem")),
            vec![],
        ));
        assert!(matches!(missing, Err(SigningError::Read { .. })));
        crate::pki::make_pair(dir.path(), "a", 2048).unwrap();
        crate::pki::make_pair(dir.path(), "b", 2048).unwrap();
        let a = crate::pki::KeyPairFiles::new(dir.path(), "a");
        let b = crate::pki::KeyPairFiles::new(dir.path(), "b");
        let keys = SigningKeys::load(&settings(
            SigningKeySource::File(b.private.clone()),
            vec![a.private, a.public, b.private],
        ))
        .unwrap();
        let jwks = keys.jwks();
        let kids: Vec<_> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[0], keys.kid());
        assert!(jwks["keys"][0]
            .as_object()
            .unwrap()
            .values()
            .all(serde_json::Value::is_string));
    }

    /// A signed token verifies with the published key.
    #[test]
    fn signed_tokens_verify() {
        let keys = SigningKeys::load(&settings(SigningKeySource::Ephemeral, vec![])).unwrap();
        let token = keys.sign(&json!({ "sub": "1" })).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert!(keys.current_public.key.verify(
            &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &sig
        ));
        assert!(keys
            .certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
