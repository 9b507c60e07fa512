//! The dev PKI: a CA, a server certificate for `localhost`, and client certificates, made with
//! rcgen.
//!
//! [`Ca`] works in memory (tests use it to make their PKI at run time); [`init`] and [`issue`]
//! write files. Keys are ECDSA P-256, written with mode 0600, and an existing key is never
//! overwritten: [`init`] completes what is missing and keeps the rest.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use time::OffsetDateTime;

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca-key.pem";
/// The server certificate's file name.
pub const SERVER_CERT: &str = "server.pem";
/// The server key's file name.
pub const SERVER_KEY: &str = "server-key.pem";

/// How long the dev CA is valid.
const CA_DAYS: u32 = 3650;
/// How long the dev server certificate is valid.
const SERVER_DAYS: u32 = 825;
/// The default validity of a client certificate.
pub const DEFAULT_CLIENT_DAYS: u32 = 365;
/// Certificates start slightly in the past so that a client whose clock is a little behind
/// still accepts them.
const BACKDATE: Duration = Duration::from_secs(300);

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

/// A certificate authority held in memory.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate and its freshly made (or reused) key.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    key_pem: String,
}

impl Issued {
    /// The private key, PEM (PKCS#8). A secret: write it with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate followed by its key: the single file the Python BDK takes.
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// From when to when a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start.
    pub not_before: OffsetDateTime,
    /// End.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago until `days` from now, or until the last instant a certificate
    /// can name (the end of year 9999) when that comes first.
    pub fn days_from_now(days: u32) -> Self {
        Self::checked_days_from_now(days).unwrap_or_else(|| Self {
            not_before: OffsetDateTime::now_utc() - BACKDATE,
            not_after: time::PrimitiveDateTime::MAX.assume_utc(),
        })
    }

    /// From a few minutes ago until `days` from now; `None` when that is past the end of year
    /// 9999.
    pub fn checked_days_from_now(days: u32) -> Option<Self> {
        let now = OffsetDateTime::now_utc();
        Some(Self {
            not_before: now - BACKDATE,
            not_after: now.checked_add(time::Duration::days(i64::from(days)))?,
        })
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        Self::generate_with(name, Validity::days_from_now(CA_DAYS))
    }

    /// A new self-signed CA with an explicit validity.
    pub fn generate_with(name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = base_params(name, validity)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key, PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: the trust store for servers and clients alike.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses, as SANs).
    pub fn issue_server(&self, names: &[&str], validity: Validity) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        self.issue_server_for(key, names, validity)
    }

    fn issue_server_for(
        &self,
        key: KeyPair,
        names: &[&str],
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let cn = names.first().copied().unwrap_or("localhost");
        let mut params = base_params(cn, validity)?;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, key)
    }

    /// A client certificate whose subject is exactly `CN=<cn>`.
    pub fn issue_client(&self, cn: &str, validity: Validity) -> Result<Issued, PkiError> {
        self.issue_client_for(KeyPair::generate()?, cn, validity)
    }

    fn issue_client_for(
        &self,
        key: KeyPair,
        cn: &str,
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let mut params = base_params(cn, validity)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, key)
    }

    fn sign(&self, params: CertificateParams, key: KeyPair) -> Result<Issued, PkiError> {
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn base_params(cn: &str, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    serial[0] &= 0x7f; // positive, as RFC 5280 requires
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

/// What [`init`] or [`issue`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
}

/// The file names of a principal's client certificate, key and bundle in `dir`.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// `<name>.pem`
    pub cert: PathBuf,
    /// `<name>-key.pem`
    pub key: PathBuf,
    /// `<name>.bundle.pem`: certificate and key together.
    pub bundle: PathBuf,
}

impl ClientFiles {
    /// The files for `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            bundle: dir.join(format!("{name}.bundle.pem")),
        }
    }
}

/// Makes (or completes) the dev PKI in `dir`: the CA, a server certificate for `localhost`,
/// `127.0.0.1` and `::1`, and a client certificate with bundle for each of `principals`.
/// Existing keys are kept; a certificate missing beside an existing key is re-issued for it.
pub fn init(dir: &Path, principals: &[String]) -> Result<Report, PkiError> {
    let mut report = Report::default();
    for name in principals {
        check_name(name)?;
    }
    fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
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
pub fn issue(dir: &Path, cn: &str, days: u32) -> Result<(ClientFiles, Report), PkiError> {
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
    write_secret(&files.key, issued.key_pem())?;
    report.created.push(files.key.clone());
    write_public(&files.cert, &issued.cert_pem)?;
    report.created.push(files.cert.clone());
    write_secret(&files.bundle, &issued.bundle_pem())?;
    report.created.push(files.bundle.clone());
    Ok((files, report))
}

pub(crate) fn check_name(name: &str) -> Result<(), PkiError> {
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
        (true, true) => Ok(Some(Ca::from_pem(&read(&cert)?, &read(&key)?)?)),
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
    write_secret(&dir.join(CA_KEY), &ca.key_pem)?;
    write_public(&dir.join(CA_CERT), ca.cert_pem())?;
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
        let existing = read(key)?;
        let issued = if cert.exists() {
            Issued {
                cert_pem: read(cert)?,
                key_pem: existing,
            }
        } else {
            let reissued = make(KeyPair::from_pem(&existing)?)?;
            write_public(cert, &reissued.cert_pem)?;
            report.created.push(cert.to_owned());
            reissued
        };
        report.kept.push(key.to_owned());
        issued
    } else {
        // A certificate without its key is useless; replace it along with a fresh key.
        let issued = make(KeyPair::generate()?)?;
        write_secret(key, issued.key_pem())?;
        report.created.push(key.to_owned());
        if cert.exists() {
            fs::remove_file(cert).map_err(|source| io(cert, source))?;
        }
        write_public(cert, &issued.cert_pem)?;
        report.created.push(cert.to_owned());
        issued
    };
    if let Some(bundle) = bundle.filter(|b| !b.exists()) {
        write_secret(bundle, &issued.bundle_pem())?;
        report.created.push(bundle.to_owned());
    }
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new file that holds a secret: mode 0600 from the moment it exists, never replacing
/// an existing file.
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_new(path, contents, 0o600)
}

pub(crate) fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_new(path, contents, 0o644)
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::KeyExists(path.to_owned())
        } else {
            io(path, e)
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io(path, source))
}

#[cfg(test)]
mod tests {
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

    /// Debug output of a CA or an issued certificate never shows a key.
    #[test]
    fn debug_hides_keys() {
        let ca = Ca::generate("t").unwrap();
        let issued = ca.issue_client("c", Validity::days_from_now(1)).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
        assert!(issued.bundle_pem().contains("PRIVATE KEY"));
    }
}
