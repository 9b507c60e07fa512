//! The dev PKI: a CA, a server certificate for `localhost`, client certificates, and RSA key
//! pairs for the principals of a directory.
//!
//! [`Ca`] works in memory (tests use it to make their PKI at run time); [`init`] and [`issue`]
//! keep the dev PKI in a folder, and [`init_pairs`] and [`make_pair`] the principals' dev RSA key
//! pairs beside it. Keys are written with mode 0600 and never overwritten: [`init`] completes
//! what is missing and keeps the rest.

use std::path::{Path, PathBuf};

use rcgen::KeyPair;

mod ca;
pub(crate) mod disk;
mod rsa_pairs;

pub use ca::{Ca, Issued, Validity};
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
        "{0:?} cannot get dev PKI files: ca, server and signing name the PKI's own files, and a \
         name ending in -key, -rsa, -rsa.pub or .bundle would share another principal's files"
    )]
    ReservedName(String),
    /// The random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

/// What [`init`], [`issue`], [`init_pairs`] or [`make_pair`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
}

/// Makes (or completes) the dev PKI in `dir`: the CA, a server certificate for `localhost`,
/// `127.0.0.1` and `::1`, and a client certificate with bundle for each of `principals`.
/// Existing keys are kept; a certificate missing beside an existing key is re-issued for it.
pub fn init(dir: &Path, principals: &[String]) -> Result<Report, PkiError> {
    let mut report = Report::default();
    for name in principals {
        check_name(name)?;
    }
    disk::create_dir(dir)?;
    let ca = load_or_make_ca(dir, &mut report)?;

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
    }
    Ok(report)
}

/// Issues a client certificate for `cn` from the dev CA in `dir`, valid for `days`.
/// Refuses when a key for `cn` exists already.
pub fn issue(dir: &Path, cn: &str, days: u32) -> Result<Report, PkiError> {
    check_name(cn)?;
    if days == 0 {
        return Err(PkiError::ZeroDays);
    }
    let files = ClientFiles::new(dir, cn);
    if files.key.exists() {
        return Err(PkiError::KeyExists(files.key));
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
}

impl ClientFiles {
    /// The files for `name` in `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            bundle: dir.join(format!("{name}.bundle.pem")),
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
    // A principal's files are <name>.pem, <name>-key.pem, <name>.bundle.pem, <name>-rsa.pem and
    // <name>-rsa.pub.pem, beside ca(-key).pem, server(-key).pem and signing-key.pem. These rules
    // keep every name's files apart from every other's (a user named `ca` would otherwise be
    // handed the CA's key in its bundle).
    let lower = name.to_ascii_lowercase();
    let reserved = matches!(lower.as_str(), "ca" | "server" | "signing")
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

fn load_or_make_ca(dir: &Path, report: &mut Report) -> Result<Ca, PkiError> {
    if let Some(ca) = load_ca(dir)? {
        report.kept.push(dir.join(CA_CERT));
        report.kept.push(dir.join(CA_KEY));
        return Ok(ca);
    }
    let ca = Ca::generate("sessionauth dev CA")?;
    disk::write_secret(&dir.join(CA_KEY), ca.key_pem())?;
    disk::write_public(&dir.join(CA_CERT), ca.cert_pem())?;
    report.created.push(dir.join(CA_KEY));
    report.created.push(dir.join(CA_CERT));
    Ok(ca)
}

/// Ensures a leaf's key, certificate and (optionally) bundle exist, reusing an existing key.
fn complete_leaf(
    cert: &Path,
    key: &Path,
    bundle: Option<&Path>,
    report: &mut Report,
    make: impl FnOnce(KeyPair) -> Result<Issued, PkiError>,
) -> Result<(), PkiError> {
    let bundle_done = bundle.is_none_or(Path::exists);
    if cert.exists() && key.exists() && bundle_done {
        report.kept.push(cert.to_owned());
        return Ok(());
    }
    let issued = if key.exists() {
        let existing = disk::read(key)?;
        let issued = if cert.exists() {
            Issued::existing(disk::read(cert)?, existing)
        } else {
            let reissued = make(KeyPair::from_pem(&existing)?)?;
            disk::write_public(cert, &reissued.cert_pem)?;
            report.created.push(cert.to_owned());
            reissued
        };
        report.kept.push(key.to_owned());
        issued
    } else {
        // A certificate without its key is useless; replace it along with a fresh key.
        let issued = make(KeyPair::generate()?)?;
        disk::write_secret(key, issued.key_pem())?;
        report.created.push(key.to_owned());
        if cert.exists() {
            disk::remove(cert)?;
        }
        disk::write_public(cert, &issued.cert_pem)?;
        report.created.push(cert.to_owned());
        issued
    };
    if let Some(bundle) = bundle.filter(|b| !b.exists()) {
        disk::write_secret(bundle, &issued.bundle_pem())?;
        report.created.push(bundle.to_owned());
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
        let first = init(dir.path(), &names).unwrap();
        assert_eq!(first.created.len(), 2 + 2 + 2 * 3);
        for f in [
            "ca-key.pem",
            "server-key.pem",
            "bot.user-key.pem",
            "demo-app.bundle.pem",
        ] {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &fs::metadata(dir.path().join(f)).unwrap().permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let key_before = fs::read(dir.path().join("bot.user-key.pem")).unwrap();
        fs::remove_file(dir.path().join("bot.user.pem")).unwrap();
        let second = init(dir.path(), &names).unwrap();
        assert_eq!(second.created, vec![dir.path().join("bot.user.pem")]);
        assert_eq!(
            fs::read(dir.path().join("bot.user-key.pem")).unwrap(),
            key_before
        );
    }

    /// issue refuses to overwrite a key and refuses names that are not file-safe.
    #[test]
    fn issue_refuses_existing_key_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(issue(dir.path(), "x", 1), Err(PkiError::NoCa(_))));
        init(dir.path(), &[]).unwrap();
        issue(dir.path(), "new.bot", 30).unwrap();
        assert!(matches!(
            issue(dir.path(), "new.bot", 30),
            Err(PkiError::KeyExists(_))
        ));
        for bad in ["../evil", ".hidden", "a b", ""] {
            assert!(
                matches!(issue(dir.path(), bad, 1), Err(PkiError::BadName(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            issue(dir.path(), "ok", 0),
            Err(PkiError::ZeroDays)
        ));
    }

    /// Names whose files would be the PKI's own or another principal's are refused, by init
    /// and by issue, before anything is written; a validity past year 9999 is an error, not a
    /// panic.
    #[test]
    fn colliding_names_and_endless_validity_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[]).unwrap();
        let ca_key = fs::read(dir.path().join(CA_KEY)).unwrap();
        for bad in [
            "ca",
            "CA",
            "server",
            "signing",
            "x-key",
            "ca-key",
            "x-rsa",
            "x-rsa.pub",
            "x.bundle",
        ] {
            assert!(
                matches!(issue(dir.path(), bad, 1), Err(PkiError::ReservedName(_))),
                "{bad}"
            );
            assert!(
                matches!(
                    init(dir.path(), &[bad.to_owned()]),
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
            issue(dir.path(), "long.lived", 4_000_000),
            Err(PkiError::TooManyDays(4_000_000))
        ));
        assert!(!dir.path().join("long.lived-key.pem").exists());
        issue(dir.path(), "long.lived", 3650).unwrap();
    }
}
