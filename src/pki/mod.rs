//! The dev PKI: a CA, a server certificate for `localhost`, client certificates (PEM, and
//! PKCS#12 keystores), and RSA key pairs for the principals of a directory.
//!
//! [`Ca`] works in memory (tests use it to make their PKI at run time); [`init`] and [`issue`]
//! keep the dev PKI in a folder, and [`init_pairs`] and [`make_pair`] the principals' dev RSA key
//! pairs beside it. Keys (and keystores, which hold them) are written with mode 0600 and never
//! overwritten: [`init`] completes what is missing and keeps the rest.

use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use rsa::pkcs8::der::zeroize::Zeroizing;

mod ca;
pub(crate) mod disk;
mod keystore;
mod rsa_pairs;

pub use ca::{Ca, Issued, Validity};
pub use keystore::{P12Password, DEFAULT_P12_PASSWORD};
pub use rsa_pairs::{init_pairs, make_pair, RsaKeyError, DEFAULT_DEV_BITS};
pub(crate) use rsa_pairs::{DevKeyPair, KeyPairFiles};

/// The CA certificate's file name.
pub(crate) const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
const CA_KEY: &str = "ca-key.pem";
/// The server certificate's file name.
pub(crate) const SERVER_CERT: &str = "server.pem";
/// The server key's file name.
pub(crate) const SERVER_KEY: &str = "server-key.pem";

/// The default validity of a client certificate, in days.
pub const DEFAULT_CLIENT_DAYS: u32 = 365;
/// How long the dev server certificate is valid.
const SERVER_DAYS: u32 = 825;

/// Why a dev PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not make or read a certificate or key.
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists already; keys are never overwritten.
    #[error("{0} already exists; keys are never overwritten (remove it first to re-issue)")]
    KeyExists(PathBuf),
    /// Only one of the CA's two files is present.
    #[error(
        "{present} exists but {missing} does not: restore it, or remove both to make a new CA"
    )]
    HalfCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// There is no CA to issue from.
    #[error("no dev CA in {0}: run `sessionauth certs init` first")]
    NoCa(PathBuf),
    /// The name cannot be used as a CN and file name.
    #[error("{0:?} is not a usable certificate name: use 1 to 64 of A-Z a-z 0-9 . _ @ -, not starting with '.'")]
    BadName(String),
    /// A validity of zero days.
    #[error("--days must be at least 1")]
    ZeroDays,
    /// A validity that ends after the last date a certificate can name.
    #[error("--days {0} would end the certificate after the year 9999")]
    TooManyDays(u32),
    /// A name whose files would be another principal's, or the dev PKI's own.
    #[error(
        "{0:?} cannot get dev PKI files: ca, server, signing and truststore name the PKI's own \
         files, and a \
         name ending in -key, -rsa, -rsa.pub or .bundle would share another principal's files"
    )]
    ReservedName(String),
    /// The random source failed.
    #[error("the operating system's random source failed")]
    Random,
    /// A PKCS#12 keystore could not be made.
    #[error("PKCS#12 keystore")]
    Keystore(#[from] p12_keystore::error::Error),
    /// A PEM text that should hold a certificate holds none.
    #[error("the {0} is not a PEM certificate")]
    NoPemCertificate(&'static str),
}

/// What [`init`], [`issue`], [`init_pairs`] or [`make_pair`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
}

/// Makes (or completes) the dev PKI in `dir`: the CA and `truststore.p12`, a server certificate
/// for `localhost`, `127.0.0.1` and `::1`, and a client certificate with bundle and PKCS#12
/// keystore (protected by `password`) for each of `principals`. Existing keys and keystores are
/// kept; a certificate missing beside an existing key is re-issued for it.
pub fn init(dir: &Path, principals: &[String], password: &P12Password) -> Result<Report, PkiError> {
    let mut report = Report::default();
    for name in principals {
        check_name(name)?;
    }
    disk::create_dir(dir)?;
    let ca = load_or_make_ca(dir, &mut report)?;
    let truststore = dir.join(keystore::TRUSTSTORE);
    if truststore.exists()
        || !disk::create_bytes(
            &truststore,
            &keystore::truststore(ca.cert_pem(), password)?,
            false,
        )?
    {
        report.kept.push(truststore);
    } else {
        report.created.push(truststore);
    }

    let (cert, key) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    complete_leaf(&cert, &key, None, &mut report, |k| {
        ca.issue_server_for(
            k,
            &["localhost", "127.0.0.1", "::1"],
            Validity::days_from_now(SERVER_DAYS),
        )
    })?;
    for name in principals {
        let files = ClientFiles::new(dir, name);
        complete_leaf(
            &files.cert,
            &files.key,
            Some(&files.bundle),
            &mut report,
            |k| ca.issue_client_for(k, name, Validity::days_from_now(DEFAULT_CLIENT_DAYS)),
        )?;
        complete_keystore(&files, name, &ca, password, &mut report)?;
    }
    Ok(report)
}

/// Writes `<name>.p12` from the certificate and key on disk, unless it exists.
fn complete_keystore(
    files: &ClientFiles,
    name: &str,
    ca: &Ca,
    password: &P12Password,
    report: &mut Report,
) -> Result<(), PkiError> {
    if files.p12.exists() {
        report.kept.push(files.p12.clone());
        return Ok(());
    }
    let p12 = keystore::client_keystore(
        &disk::read(&files.cert)?,
        &Zeroizing::new(disk::read(&files.key)?),
        ca.cert_pem(),
        name,
        password,
    )?;
    if disk::create_bytes(&files.p12, &p12, true)? {
        report.created.push(files.p12.clone());
    } else {
        report.kept.push(files.p12.clone());
    }
    Ok(())
}

/// Issues a client certificate for `cn` from the dev CA in `dir`, valid for `days`, with its
/// bundle and its PKCS#12 keystore (protected by `password`). Refuses when a key or keystore
/// for `cn` exists already.
pub fn issue(dir: &Path, cn: &str, days: u32, password: &P12Password) -> Result<Report, PkiError> {
    check_name(cn)?;
    if days == 0 {
        return Err(PkiError::ZeroDays);
    }
    let files = ClientFiles::new(dir, cn);
    for secret in [&files.key, &files.p12] {
        if secret.exists() {
            return Err(PkiError::KeyExists(secret.clone()));
        }
    }
    let ca = load_ca(dir)?.ok_or_else(|| PkiError::NoCa(dir.to_owned()))?;
    let validity = Validity::checked_days_from_now(days).ok_or(PkiError::TooManyDays(days))?;
    let issued = ca.issue_client(cn, validity)?;
    let mut report = Report::default();
    disk::write_secret(&files.key, issued.key_pem())?;
    report.created.push(files.key.clone());
    disk::write_public(&files.cert, &issued.cert_pem)?;
    report.created.push(files.cert.clone());
    disk::write_secret(&files.bundle, &issued.bundle_pem())?;
    report.created.push(files.bundle);
    let p12 = keystore::client_keystore(
        &issued.cert_pem,
        issued.key_pem(),
        ca.cert_pem(),
        cn,
        password,
    )?;
    disk::write_new_bytes(&files.p12, &p12, true)?;
    report.created.push(files.p12);
    Ok(report)
}

/// The file names of a principal's client certificate, key and bundle in `dir`.
#[derive(Debug, Clone)]
pub(crate) struct ClientFiles {
    /// `<name>.pem`
    pub(crate) cert: PathBuf,
    /// `<name>-key.pem`
    pub(crate) key: PathBuf,
    /// `<name>.bundle.pem`: certificate and key together.
    pub(crate) bundle: PathBuf,
    /// `<name>.p12`: certificate, key and CA as a PKCS#12 keystore.
    pub(crate) p12: PathBuf,
}

impl ClientFiles {
    /// The files for `name` in `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            bundle: dir.join(format!("{name}.bundle.pem")),
            p12: dir.join(format!("{name}.p12")),
        }
    }
}

/// Refuses a name that is not a safe CN and file name, or whose files would be another's.
fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if !ok {
        return Err(PkiError::BadName(name.to_owned()));
    }
    // A principal's files are <name>.pem, <name>-key.pem, <name>.bundle.pem, <name>.p12,
    // <name>-rsa.pem and <name>-rsa.pub.pem, beside ca(-key).pem, server(-key).pem,
    // signing-key.pem and truststore.p12. These rules
    // keep every name's files apart from every other's (a user named `ca` would otherwise be
    // handed the CA's key in its bundle).
    let lower = name.to_ascii_lowercase();
    let reserved = matches!(lower.as_str(), "ca" | "server" | "signing" | "truststore")
        || RESERVED_SUFFIXES.iter().any(|s| lower.ends_with(s));
    if reserved {
        return Err(PkiError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// Name endings that would make one principal's files another's.
const RESERVED_SUFFIXES: [&str; 4] = ["-key", "-rsa", "-rsa.pub", ".bundle"];

fn load_ca(dir: &Path) -> Result<Option<Ca>, PkiError> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    match (cert.exists(), key.exists()) {
        (false, false) => Ok(None),
        (true, true) => Ok(Some(Ca::from_pem(&disk::read(&cert)?, &disk::read(&key)?)?)),
        (true, false) => Err(PkiError::HalfCa {
            present: cert,
            missing: key,
        }),
        (false, true) => Err(PkiError::HalfCa {
            present: key,
            missing: cert,
        }),
    }
}

const CA_NAME: &str = "sessionauth dev CA";

/// Loads the CA, or makes it. Race-free: of processes making it at once, the first to link its
/// key wins and the others load that key; the certificate likewise, each loser taking the
/// winner's (every candidate certificate is for the one key, so any of them is right).
/// A key without its certificate is completed: that is also what the folder looks like for a
/// moment while another process makes the CA (it writes the key first).
fn load_or_make_ca(dir: &Path, report: &mut Report) -> Result<Ca, PkiError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    // The certificate is looked at first: written after the key, it is never seen without it
    // but in a broken folder, which `load_ca` refuses.
    if cert_path.exists() || !key_path.exists() {
        if let Some(ca) = load_ca(dir)? {
            report.kept.push(cert_path);
            report.kept.push(key_path);
            return Ok(ca);
        }
    }
    let ca = if key_path.exists() {
        report.kept.push(key_path.clone());
        Ca::self_signed_for(CA_NAME, KeyPair::from_pem(&disk::read(&key_path)?)?)?
    } else {
        let fresh = Ca::generate(CA_NAME)?;
        match disk::create_secret_or_read(&key_path, fresh.key_pem())? {
            disk::Outcome::Created => {
                report.created.push(key_path.clone());
                fresh
            }
            disk::Outcome::Existing(theirs) => {
                report.kept.push(key_path.clone());
                Ca::self_signed_for(CA_NAME, KeyPair::from_pem(&theirs)?)?
            }
        }
    };
    match disk::create_public_or_read(&cert_path, ca.cert_pem())? {
        disk::Outcome::Created => {
            report.created.push(cert_path);
            Ok(ca)
        }
        disk::Outcome::Existing(theirs) => {
            report.kept.push(cert_path);
            Ca::from_pem(&theirs, ca.key_pem())
        }
    }
}

/// Ensures a leaf's key, certificate and (optionally) bundle exist, reusing an existing key.
/// Race-free as [`load_or_make_ca`] is: the key is written first, then the certificate for
/// whichever key won, then the bundle of what is on disk.
fn complete_leaf(
    cert: &Path,
    key: &Path,
    bundle: Option<&Path>,
    report: &mut Report,
    make: impl Fn(KeyPair) -> Result<Issued, PkiError>,
) -> Result<(), PkiError> {
    let bundle_done = bundle.is_none_or(Path::exists);
    if cert.exists() && key.exists() && bundle_done {
        report.kept.push(cert.to_owned());
        return Ok(());
    }
    // A certificate without its key is useless: it goes, and a fresh key comes. The certificate
    // is looked at first, since a racing process writes it after the key.
    if cert.exists() && !key.exists() {
        disk::remove(cert)?;
    }
    let key_pem = if key.exists() {
        report.kept.push(key.to_owned());
        Zeroizing::new(disk::read(key)?)
    } else {
        let fresh = KeyPair::generate()?;
        let pem = Zeroizing::new(fresh.serialize_pem());
        match disk::create_secret_or_read(key, &pem)? {
            disk::Outcome::Created => {
                report.created.push(key.to_owned());
                pem
            }
            disk::Outcome::Existing(theirs) => {
                report.kept.push(key.to_owned());
                theirs
            }
        }
    };
    let cert_pem = if cert.exists() {
        disk::read(cert)?
    } else {
        let issued = make(KeyPair::from_pem(&key_pem)?)?;
        match disk::create_public_or_read(cert, &issued.cert_pem)? {
            disk::Outcome::Created => {
                report.created.push(cert.to_owned());
                issued.cert_pem
            }
            disk::Outcome::Existing(theirs) => theirs.to_string(),
        }
    };
    if let Some(bundle) = bundle.filter(|b| !b.exists()) {
        let issued = Issued::existing(cert_pem, key_pem.to_string());
        if let disk::Outcome::Created = disk::create_secret_or_read(bundle, &issued.bundle_pem())? {
            report.created.push(bundle.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// init makes every file, keys 0600, and a second run keeps every key.
    #[test]
    fn init_makes_files_and_never_overwrites_keys() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["bot.user".to_string(), "demo-app".to_string()];
        let first = init(dir.path(), &names, &P12Password::default()).unwrap();
        assert_eq!(first.created.len(), 2 + 1 + 2 + 2 * 4);
        for f in [
            "ca-key.pem",
            "server-key.pem",
            "bot.user-key.pem",
            "demo-app.bundle.pem",
            "demo-app.p12",
        ] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &fs::metadata(dir.path().join(f)).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let key_before = fs::read(dir.path().join("bot.user-key.pem")).unwrap();
        fs::remove_file(dir.path().join("bot.user.pem")).unwrap();
        let second = init(dir.path(), &names, &P12Password::default()).unwrap();
        assert_eq!(second.created, vec![dir.path().join("bot.user.pem")]);
        assert_eq!(
            fs::read(dir.path().join("bot.user-key.pem")).unwrap(),
            key_before
        );
    }

    /// Several processes making the dev PKI in one folder at once all succeed and end with the
    /// same files: one CA, and leaf certificates that chain to it and match their keys.
    #[test]
    fn concurrent_inits_agree_on_one_pki() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["bot.user".to_string(), "demo-app".to_string()];
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (dir, names, barrier) = (dir.path(), &names, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        init(dir, names, &P12Password::default())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        let read = |f: &str| fs::read_to_string(dir.path().join(f)).unwrap();
        let ca = Ca::from_pem(&read(CA_CERT), &read(CA_KEY)).unwrap();
        for (cert, key) in [
            ("server.pem", "server-key.pem"),
            ("bot.user.pem", "bot.user-key.pem"),
        ] {
            let cert_pem = read(cert);
            let key = KeyPair::from_pem(&read(key)).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
            let parsed = pem.parse_x509().unwrap();
            assert_eq!(
                &*parsed.public_key().subject_public_key.data,
                key.public_key_raw(),
                "{cert}"
            );
            let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
            let ca_cert = ca_pem.parse_x509().unwrap();
            parsed
                .verify_signature(Some(ca_cert.public_key()))
                .unwrap_or_else(|e| panic!("{cert} is not signed by the CA on disk: {e}"));
        }
        let bundle = read("bot.user.bundle.pem");
        assert!(
            bundle.starts_with(&read("bot.user.pem")),
            "bundle and certificate differ"
        );
        assert!(
            bundle.ends_with(&read("bot.user-key.pem")),
            "bundle and key differ"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// issue refuses to overwrite a key and refuses names that are not file-safe.
    #[test]
    fn issue_refuses_existing_key_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            issue(dir.path(), "x", 1, &P12Password::default()),
            Err(PkiError::NoCa(_))
        ));
        init(dir.path(), &[], &P12Password::default()).unwrap();
        issue(dir.path(), "new.bot", 30, &P12Password::default()).unwrap();
        assert!(matches!(
            issue(dir.path(), "new.bot", 30, &P12Password::default()),
            Err(PkiError::KeyExists(_))
        ));
        for bad in ["../evil", ".hidden", "a b", ""] {
            assert!(
                matches!(
                    issue(dir.path(), bad, 1, &P12Password::default()),
                    Err(PkiError::BadName(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            issue(dir.path(), "ok", 0, &P12Password::default()),
            Err(PkiError::ZeroDays)
        ));
    }

    /// Names whose files would be the PKI's own or another principal's are refused, by init
    /// and by issue, before anything is written; a validity past year 9999 is an error, not a
    /// panic.
    #[test]
    fn colliding_names_and_endless_validity_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[], &P12Password::default()).unwrap();
        let ca_key = fs::read(dir.path().join(CA_KEY)).unwrap();
        for bad in [
            "ca",
            "CA",
            "server",
            "signing",
            "truststore",
            "x-key",
            "ca-key",
            "x-rsa",
            "x-rsa.pub",
            "x.bundle",
        ] {
            assert!(
                matches!(
                    issue(dir.path(), bad, 1, &P12Password::default()),
                    Err(PkiError::ReservedName(_))
                ),
                "{bad}"
            );
            assert!(
                matches!(
                    init(dir.path(), &[bad.to_owned()], &P12Password::default()),
                    Err(PkiError::ReservedName(_))
                ),
                "{bad}"
            );
        }
        assert!(!dir.path().join("ca.bundle.pem").exists());
        assert_eq!(fs::read(dir.path().join(CA_KEY)).unwrap(), ca_key);
        for fine in ["cable", "x-keys", "rsa", "bundle.bot", "servers"] {
            check_name(fine).unwrap();
        }
        assert!(matches!(
            issue(dir.path(), "long.lived", 4_000_000, &P12Password::default()),
            Err(PkiError::TooManyDays(4_000_000))
        ));
        assert!(!dir.path().join("long.lived-key.pem").exists());
        issue(dir.path(), "long.lived", 3650, &P12Password::default()).unwrap();
    }
}
