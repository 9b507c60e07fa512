//! RSA keys: the public keys service users and apps register for JWT authentication
//! ([`RsaPublicKey`]), and the dev key pairs that `sessionauth certs rsa` and the dev PKI make.
//!
//! Registered keys are read with RustCrypto's DER decoders and used with *ring*
//! (`RSA_PKCS1_2048_8192_SHA*`), so 2048 to 8192 bits are accepted. Key pairs are generated
//! with the `rsa` crate because *ring* cannot generate RSA keys; the `rsa` crate is never used
//! for a private-key operation (its RUSTSEC-2023-0071 timing issue concerns decryption and
//! signing, not key generation).
//!
//! A dev key pair for `NAME` is two files: `NAME-rsa.pem` (the private key, PKCS#8 PEM, mode
//! 0600; this is what a Symphony BDK's `privateKey.path` names) and `NAME-rsa.pub.pem` (the
//! public key, SPKI PEM: what the directory registers). Existing private keys are never
//! overwritten.

use std::fmt;
use std::path::{Path, PathBuf};

use rsa::pkcs1::der::Decode as _;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use crate::pki::{PkiError, Report};

/// The smallest registered key accepted, in bits.
pub const MIN_BITS: usize = 2048;
/// The largest registered key accepted, in bits (*ring*'s limit for verification).
pub const MAX_BITS: usize = 8192;
/// The key sizes `sessionauth certs rsa --bits` makes.
pub const DEV_BITS: [usize; 2] = [2048, 4096];
/// The size of the dev key pairs the dev PKI makes for the sample principals.
pub const DEFAULT_DEV_BITS: usize = 2048;

/// A registered RSA public key: parsed, 2048 to 8192 bits, with an exponent *ring* accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    /// The modulus, big-endian, without leading zeros.
    n: Vec<u8>,
    /// The public exponent, big-endian, without leading zeros.
    e: Vec<u8>,
}

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
    /// Fewer than [`MIN_BITS`] bits.
    #[error("the key has {bits} bits; at least 2048 are required")]
    TooShort {
        /// The modulus size.
        bits: usize,
    },
    /// More than [`MAX_BITS`] bits.
    #[error("the key has {bits} bits; at most 8192 are supported")]
    TooLong {
        /// The modulus size.
        bits: usize,
    },
    /// An exponent that *ring* refuses, or an even modulus.
    #[error("the key's numbers are not usable (the exponent must be odd, 3 or more and below 2^33; the modulus odd)")]
    BadNumbers,
}

impl RsaPublicKey {
    /// Reads a PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo, what `openssl rsa -pubout`
    /// writes) or `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, PublicKeyError> {
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
    pub fn from_spki_der(der: &[u8]) -> Result<Self, PublicKeyError> {
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
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, PublicKeyError> {
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
    pub fn bits(&self) -> usize {
        bit_len(&self.n)
    }

    /// The modulus, big-endian without leading zeros (JWK `n`).
    pub fn modulus(&self) -> &[u8] {
        &self.n
    }

    /// The public exponent, big-endian without leading zeros (JWK `e`).
    pub fn exponent(&self) -> &[u8] {
        &self.e
    }

    /// Whether `signature` is a valid PKCS#1 v1.5 signature of `message` under this key.
    pub fn verify(
        &self,
        params: &'static ring::signature::RsaParameters,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        ring::signature::RsaPublicKeyComponents {
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

/// Why a dev key pair could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RsaKeyError {
    /// The `rsa` crate could not generate a key.
    #[error("RSA key generation failed")]
    Generate(#[source] rsa::Error),
    /// The private key could not be encoded.
    #[error("cannot encode the RSA private key as PKCS#8 PEM")]
    Encode(#[source] rsa::pkcs8::Error),
    /// The public key could not be encoded.
    #[error("cannot encode the RSA public key as PEM")]
    EncodePublic(#[source] rsa::pkcs8::spki::Error),
    /// An existing private key file could not be read as one.
    #[error("{path} is not a usable RSA private key (PKCS#8 PEM)")]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: rsa::pkcs8::Error,
    },
    /// A key size other than those offered.
    #[error("--bits must be 2048 or 4096, not {0}")]
    Bits(usize),
    /// A file could not be written, or the name is not usable.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// A freshly generated key pair, PEM.
pub struct DevKeyPair {
    private_pem: Zeroizing<String>,
    public_pem: String,
}

impl fmt::Debug for DevKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKeyPair")
            .field("public_pem", &self.public_pem)
            .field("private_pem", &"<redacted>")
            .finish()
    }
}

impl DevKeyPair {
    /// A new key pair of `bits` bits (exponent 65537) from the operating system's random source.
    pub fn generate(bits: usize) -> Result<Self, RsaKeyError> {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
            .map_err(RsaKeyError::Generate)?;
        Self::from_private(&private)
    }

    fn from_private(private: &rsa::RsaPrivateKey) -> Result<Self, RsaKeyError> {
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(RsaKeyError::Encode)?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(RsaKeyError::EncodePublic)?;
        Ok(Self {
            private_pem,
            public_pem,
        })
    }

    /// The private key, PKCS#8 PEM. A secret: write it with mode 0600.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// The public key, SubjectPublicKeyInfo PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }
}

/// The files of a principal's dev key pair in a folder.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    /// `<name>-rsa.pem`: the private key (PKCS#8 PEM, 0600).
    pub private: PathBuf,
    /// `<name>-rsa.pub.pem`: the public key (PEM).
    pub public: PathBuf,
}

impl KeyPairFiles {
    /// The files for `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            private: dir.join(format!("{name}-rsa.pem")),
            public: dir.join(format!("{name}-rsa.pub.pem")),
        }
    }
}

/// `sessionauth certs rsa`: a new key pair of `bits` (2048 or 4096) for `name` in `dir`.
/// Refuses when the private key exists already.
pub fn make_pair(
    dir: &Path,
    name: &str,
    bits: usize,
) -> Result<(KeyPairFiles, Report), RsaKeyError> {
    crate::pki::check_name(name)?;
    if !DEV_BITS.contains(&bits) {
        return Err(RsaKeyError::Bits(bits));
    }
    let files = KeyPairFiles::new(dir, name);
    if files.private.exists() {
        return Err(PkiError::KeyExists(files.private).into());
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let pair = DevKeyPair::generate(bits)?;
    let mut report = Report::default();
    write_pair(&files, &pair, &mut report)?;
    Ok((files, report))
}

/// Makes (or completes) a dev key pair for each of `names` in `dir`: existing private keys are
/// kept, and a missing public key is derived from its private key. New keys are
/// [`DEFAULT_DEV_BITS`] bits, generated in parallel.
pub fn init_pairs(dir: &Path, names: &[String], report: &mut Report) -> Result<(), RsaKeyError> {
    let mut missing = Vec::new();
    for name in names {
        crate::pki::check_name(name)?;
        let files = KeyPairFiles::new(dir, name);
        if files.private.exists() {
            report.kept.push(files.private.clone());
            if !files.public.exists() {
                let pem = Zeroizing::new(crate::pki::read(&files.private)?);
                let private = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|source| {
                    RsaKeyError::BadPrivateKey {
                        path: files.private.clone(),
                        source,
                    }
                })?;
                let pair = DevKeyPair::from_private(&private)?;
                crate::pki::write_public(&files.public, pair.public_pem())?;
                report.created.push(files.public.clone());
            }
        } else {
            missing.push(files);
        }
    }
    let pairs: Vec<Result<DevKeyPair, RsaKeyError>> = std::thread::scope(|s| {
        let handles: Vec<_> = missing
            .iter()
            .map(|_| s.spawn(|| DevKeyPair::generate(DEFAULT_DEV_BITS)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for (files, pair) in missing.iter().zip(pairs) {
        write_pair(files, &pair?, report)?;
    }
    Ok(())
}

fn write_pair(
    files: &KeyPairFiles,
    pair: &DevKeyPair,
    report: &mut Report,
) -> Result<(), RsaKeyError> {
    crate::pki::write_secret(&files.private, pair.private_pem())?;
    report.created.push(files.private.clone());
    if files.public.exists() {
        // A public key without its private key is useless; replace it along with the pair.
        std::fs::remove_file(&files.public).map_err(|source| PkiError::Io {
            path: files.public.clone(),
            source,
        })?;
    }
    crate::pki::write_public(&files.public, pair.public_pem())?;
    report.created.push(files.public.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated public key reads back with its size; a private key, garbage and a short key
    /// are refused with a reason.
    #[test]
    fn public_keys_parse_and_refuse() {
        let pair = DevKeyPair::generate(2048).unwrap();
        let key = RsaPublicKey::from_pem(pair.public_pem()).unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.exponent(), &[1, 0, 1]);
        assert_eq!(
            RsaPublicKey::from_pem(pair.private_pem()),
            Err(PublicKeyError::PrivateKey)
        );
        assert_eq!(RsaPublicKey::from_pem("hello"), Err(PublicKeyError::NotPem));
        let short = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let short = DevKeyPair::from_private(&short).unwrap();
        assert_eq!(
            RsaPublicKey::from_pem(short.public_pem()),
            Err(PublicKeyError::TooShort { bits: 1024 })
        );
        assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
    }

    /// The PKCS#1 form (`RSA PUBLIC KEY`) is accepted too.
    #[test]
    fn pkcs1_public_key_parses() {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = private
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(RsaPublicKey::from_pem(&pem).unwrap().bits(), 2048);
    }

    /// make_pair writes a 0600 private key and its public key, and never overwrites; init_pairs
    /// keeps existing keys and completes a missing public key from its private key.
    #[test]
    fn pairs_are_written_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = make_pair(dir.path(), "bot.user", 2048).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&files.private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            make_pair(dir.path(), "bot.user", 2048),
            Err(RsaKeyError::Pki(PkiError::KeyExists(_)))
        ));
        assert!(matches!(
            make_pair(dir.path(), "x", 1024),
            Err(RsaKeyError::Bits(1024))
        ));
        let public_before = std::fs::read_to_string(&files.public).unwrap();
        std::fs::remove_file(&files.public).unwrap();
        let mut report = Report::default();
        init_pairs(dir.path(), &["bot.user".to_string()], &mut report).unwrap();
        assert_eq!(report.created, vec![files.public.clone()]);
        assert_eq!(
            std::fs::read_to_string(&files.public).unwrap(),
            public_before
        );
    }
}
