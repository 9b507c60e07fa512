//! Registered RSA public keys: reading the keys service users and apps register for JWT
//! authentication, and verifying their RSASSA-PKCS1-v1_5 signatures (RS256, RS384, RS512).
//!
//! Keys are read with RustCrypto's DER decoders and used with the crypto provider
//! (`RSA_PKCS1_2048_8192_SHA*`), so 2048 to 8192 bits are accepted. Making key pairs is the dev
//! PKI's business (`crate::pki`).

use std::fmt;

use rsa::pkcs1::der::Decode as _;

// The dev key pairs moved to the dev PKI; these paths stay for the server's start-up.
pub(crate) use crate::pki::{init_pairs, RsaKeyError};

/// The smallest registered key accepted, in bits.
const MIN_BITS: usize = 2048;
/// The largest registered key accepted, in bits (the provider's verification limit).
const MAX_BITS: usize = 8192;

/// Why a public key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// The text is not one PEM block.
    #[error("not a PEM public key (expected one \"-----BEGIN PUBLIC KEY-----\" block)")]
    NotPem,
    /// A private key was given where the public key belongs.
    #[error("this is a private key: register the public key instead (PEM \"PUBLIC KEY\")")]
    PrivateKey,
    /// A PEM block of another kind.
    #[error("unexpected PEM label {0:?}: expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\"")]
    Label(String),
    /// The DER inside is not an RSA public key.
    #[error("not an RSA public key")]
    NotRsa,
    /// Fewer than 2048 bits.
    #[error("the key has {bits} bits; at least 2048 are required")]
    TooShort {
        /// The modulus size.
        bits: usize,
    },
    /// More than 8192 bits.
    #[error("the key has {bits} bits; at most 8192 are supported")]
    TooLong {
        /// The modulus size.
        bits: usize,
    },
    /// An exponent that the provider refuses, or an even modulus.
    #[error("the key's numbers are not usable (the exponent must be odd, 3 or more and below 2^33; the modulus odd)")]
    BadNumbers,
}

/// A registered RSA public key: parsed, 2048 to 8192 bits, with an exponent the provider accepts.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RsaPublicKey {
    /// The modulus, big-endian, without leading zeros.
    n: Vec<u8>,
    /// The public exponent, big-endian, without leading zeros.
    e: Vec<u8>,
}

impl RsaPublicKey {
    /// Reads a PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo, what `openssl rsa -pubout`
    /// writes) or `RSA PUBLIC KEY` (PKCS#1).
    pub(crate) fn from_pem(pem: &str) -> Result<Self, PublicKeyError> {
        let (label, der) = rsa::pkcs8::der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|_| PublicKeyError::NotPem)?;
        match label {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => Self::from_pkcs1_der(&der),
            l if l.contains("PRIVATE KEY") => Err(PublicKeyError::PrivateKey),
            other => Err(PublicKeyError::Label(other.to_owned())),
        }
    }

    /// Reads a DER SubjectPublicKeyInfo holding an RSA key.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, PublicKeyError> {
        let spki = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|_| PublicKeyError::NotRsa)?;
        if spki.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
            return Err(PublicKeyError::NotRsa);
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or(PublicKeyError::NotRsa)?;
        Self::from_pkcs1_der(key)
    }

    /// Reads a DER PKCS#1 `RSAPublicKey`.
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<Self, PublicKeyError> {
        let key = rsa::pkcs1::RsaPublicKey::from_der(der).map_err(|_| PublicKeyError::NotRsa)?;
        Self::from_components(key.modulus.as_bytes(), key.public_exponent.as_bytes())
    }

    fn from_components(n: &[u8], e: &[u8]) -> Result<Self, PublicKeyError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = bit_len(n);
        if bits < MIN_BITS {
            return Err(PublicKeyError::TooShort { bits });
        }
        if bits > MAX_BITS {
            return Err(PublicKeyError::TooLong { bits });
        }
        let exponent =
            (e.len() <= 8).then(|| e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
        let exponent_ok = exponent.is_some_and(|x| x >= 3 && x % 2 == 1 && x < (1 << 33));
        let modulus_odd = n.last().is_some_and(|b| b % 2 == 1);
        if !exponent_ok || !modulus_odd {
            return Err(PublicKeyError::BadNumbers);
        }
        Ok(Self {
            n: n.to_vec(),
            e: e.to_vec(),
        })
    }

    /// The modulus size in bits.
    fn bits(&self) -> usize {
        bit_len(&self.n)
    }

    /// The modulus, big-endian without leading zeros (JWK `n`).
    pub(crate) fn modulus(&self) -> &[u8] {
        &self.n
    }

    /// The public exponent, big-endian without leading zeros (JWK `e`).
    pub(crate) fn exponent(&self) -> &[u8] {
        &self.e
    }

    /// Whether `signature` is a valid PKCS#1 v1.5 signature of `message` under this key.
    pub(crate) fn verify(
        &self,
        params: &'static crate::crypto::signature::RsaParameters,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        crate::crypto::signature::RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        }
        .verify(params, message, signature)
        .is_ok()
    }
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPublicKey")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(first) => be.len() * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

    use super::*;

    fn private_key(bits: usize) -> rsa::RsaPrivateKey {
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap()
    }

    fn public_pem(key: &rsa::RsaPrivateKey) -> String {
        key.to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// A public key reads back with its size; a private key, garbage and a short key are
    /// refused with a reason, and Debug shows the size only.
    #[test]
    fn public_keys_parse_and_refuse() {
        let private = private_key(2048);
        let key = RsaPublicKey::from_pem(&public_pem(&private)).unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.exponent(), &[1, 0, 1]);
        assert_eq!(format!("{key:?}"), "RsaPublicKey { bits: 2048, .. }");
        let private_pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(
            RsaPublicKey::from_pem(&private_pem),
            Err(PublicKeyError::PrivateKey)
        );
        assert_eq!(RsaPublicKey::from_pem("hello"), Err(PublicKeyError::NotPem));
        assert_eq!(
            RsaPublicKey::from_pem(&public_pem(&private_key(1024))),
            Err(PublicKeyError::TooShort { bits: 1024 })
        );
    }

    /// The PKCS#1 form (`RSA PUBLIC KEY`) is accepted too.
    #[test]
    fn pkcs1_public_key_parses() {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let pem = private_key(2048)
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(RsaPublicKey::from_pem(&pem).unwrap().bits(), 2048);
    }

    /// An RS512 signature verifies under its key; another message, another digest or another
    /// key does not.
    #[test]
    fn signatures_verify_only_under_their_key() {
        let private = private_key(2048);
        let der = private.to_pkcs8_der().unwrap();
        let pair = crate::crypto::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap();
        let mut signature =
            vec![0; crate::crypto::signature::KeyPair::public_key(&pair).modulus_len()];
        pair.sign(
            &crate::crypto::signature::RSA_PKCS1_SHA512,
            &crate::crypto::rand::SystemRandom::new(),
            b"header.claims",
            &mut signature,
        )
        .unwrap();
        let key = RsaPublicKey::from_pem(&public_pem(&private)).unwrap();
        let rs512 = &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA512;
        assert!(key.verify(rs512, b"header.claims", &signature));
        assert!(!key.verify(rs512, b"header.claimz", &signature));
        let rs256 = &crate::crypto::signature::RSA_PKCS1_2048_8192_SHA256;
        assert!(!key.verify(rs256, b"header.claims", &signature));
        let other = RsaPublicKey::from_pem(&public_pem(&private_key(2048))).unwrap();
        assert!(!other.verify(rs512, b"header.claims", &signature));
    }
}
