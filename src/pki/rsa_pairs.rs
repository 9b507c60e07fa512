//! Dev RSA key pairs: what `sessionauth certs rsa` and the dev PKI make for principals to sign
//! their JWTs with, and what a default signing key is made from.
//!
//! Key pairs are generated with the `rsa` crate because *ring*, one of the two crypto providers,
//! cannot generate RSA keys; the `rsa` crate is never used for a private-key operation (its
//! RUSTSEC-2023-0071 timing issue concerns decryption and signing, not key generation).
//!
//! A dev key pair for `NAME` is two files: `NAME-rsa.pem` (the private key, PKCS#8 PEM, mode
//! 0600; this is what a Symphony BDK's `privateKey.path` names) and `NAME-rsa.pub.pem` (the
//! public key, SPKI PEM: what the directory registers). Existing private keys are never
//! overwritten.

use std::fmt;
use std::path::{Path, PathBuf};

use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use super::{check_name, disk, PkiError, Report};

/// The size of the dev key pairs the dev PKI makes for the sample principals.
pub const DEFAULT_DEV_BITS: usize = 2048;
/// The key sizes `sessionauth certs rsa --bits` makes.
const DEV_BITS: [usize; 2] = [2048, 4096];

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

/// `sessionauth certs rsa`: a new key pair of `bits` (2048 or 4096) for `name` in `dir`.
/// Refuses when the private key exists already.
pub fn make_pair(dir: &Path, name: &str, bits: usize) -> Result<Report, RsaKeyError> {
    check_name(name)?;
    if !DEV_BITS.contains(&bits) {
        return Err(RsaKeyError::Bits(bits));
    }
    let files = KeyPairFiles::new(dir, name);
    if files.private.exists() {
        return Err(PkiError::KeyExists(files.private).into());
    }
    disk::create_dir(dir)?;
    let pair = DevKeyPair::generate(bits)?;
    let mut report = Report::default();
    write_pair(&files, &pair, &mut report)?;
    Ok(report)
}

/// Makes (or completes) a dev key pair for each of `names` in `dir`: existing private keys are
/// kept, and a missing public key is derived from its private key. New keys are
/// [`DEFAULT_DEV_BITS`] bits, generated in parallel.
pub fn init_pairs(dir: &Path, names: &[String], report: &mut Report) -> Result<(), RsaKeyError> {
    let mut missing = Vec::new();
    for name in names {
        check_name(name)?;
        let files = KeyPairFiles::new(dir, name);
        if files.private.exists() {
            report.kept.push(files.private.clone());
            if !files.public.exists() {
                let pem = Zeroizing::new(disk::read(&files.private)?);
                let pair = pair_of(&files.private, &pem)?;
                // Another process may be writing the same public key right now: either is it.
                if let disk::Outcome::Created =
                    disk::create_public_or_read(&files.public, pair.public_pem())?
                {
                    report.created.push(files.public.clone());
                }
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
        complete_pair(files, &pair?, report)?;
    }
    Ok(())
}

/// Writes `pair` as `files`, unless another process (started at the same moment on the same
/// folder) wrote its private key first: then that one is kept, and its public key completed.
fn complete_pair(
    files: &KeyPairFiles,
    pair: &DevKeyPair,
    report: &mut Report,
) -> Result<(), RsaKeyError> {
    // A public key without its private key is useless. The public key is looked at first,
    // since a racing process writes it after the private key.
    if files.public.exists() && !files.private.exists() {
        disk::remove(&files.public)?;
    }
    let theirs = match disk::create_secret_or_read(&files.private, pair.private_pem())? {
        disk::Outcome::Created => {
            report.created.push(files.private.clone());
            None
        }
        disk::Outcome::Existing(pem) => {
            report.kept.push(files.private.clone());
            Some(pair_of(&files.private, &pem)?)
        }
    };
    let public = theirs.as_ref().unwrap_or(pair).public_pem();
    if let disk::Outcome::Created = disk::create_public_or_read(&files.public, public)? {
        report.created.push(files.public.clone());
    }
    Ok(())
}

/// The key pair of the private key `pem`, read from `path`.
fn pair_of(path: &Path, pem: &str) -> Result<DevKeyPair, RsaKeyError> {
    let private =
        rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|source| RsaKeyError::BadPrivateKey {
            path: path.to_owned(),
            source,
        })?;
    DevKeyPair::from_private(&private)
}

/// A freshly generated key pair, PEM.
pub(crate) struct DevKeyPair {
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
    pub(crate) fn generate(bits: usize) -> Result<Self, RsaKeyError> {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
            .map_err(RsaKeyError::Generate)?;
        Self::from_private(&private)
    }

    /// The private key, PKCS#8 PEM. A secret: write it with mode 0600.
    pub(crate) fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// The public key, SubjectPublicKeyInfo PEM.
    pub(crate) fn public_pem(&self) -> &str {
        &self.public_pem
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
}

/// The files of a principal's dev key pair in a folder.
#[derive(Debug, Clone)]
pub(crate) struct KeyPairFiles {
    /// `<name>-rsa.pem`: the private key (PKCS#8 PEM, 0600).
    pub(crate) private: PathBuf,
    /// `<name>-rsa.pub.pem`: the public key (PEM); the key-folder rule reads this file.
    pub(crate) public: PathBuf,
}

impl KeyPairFiles {
    /// The files for `name` in `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        Self {
            private: dir.join(format!("{name}-rsa.pem")),
            public: dir.join(format!("{name}-rsa.pub.pem")),
        }
    }
}

fn write_pair(
    files: &KeyPairFiles,
    pair: &DevKeyPair,
    report: &mut Report,
) -> Result<(), RsaKeyError> {
    disk::write_secret(&files.private, pair.private_pem())?;
    report.created.push(files.private.clone());
    if files.public.exists() {
        // A public key without its private key is useless; replace it along with the pair.
        disk::remove(&files.public)?;
    }
    disk::write_public(&files.public, pair.public_pem())?;
    report.created.push(files.public.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair's public key is the public half of its private key, and Debug hides the private
    /// key.
    #[test]
    fn pair_halves_match() {
        let pair = DevKeyPair::generate(2048).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pair.private_pem()).unwrap();
        let again = DevKeyPair::from_private(&private).unwrap();
        assert_eq!(again.public_pem(), pair.public_pem());
        assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
    }

    /// make_pair writes a 0600 private key and its public key, and never overwrites; init_pairs
    /// keeps existing keys and completes a missing public key from its private key.
    #[test]
    fn pairs_are_written_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyPairFiles::new(dir.path(), "bot.user");
        let report = make_pair(dir.path(), "bot.user", 2048).unwrap();
        assert_eq!(
            report.created,
            vec![files.private.clone(), files.public.clone()]
        );
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
