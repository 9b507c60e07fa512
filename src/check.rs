//! `sessionauth check`: the start-up validation without serving, plus warnings about
//! certificates that expire within 30 days and directory entries with no certificate. Every
//! warning ends with `fix: ` and the command that fixes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::{Clock, Millis, SystemClock};
use crate::config::{Config, DirectorySource, SigningKeySource, StoreConfig};
use crate::pki::ClientFiles;
use crate::server::Prepared;

/// Certificates expiring sooner than this are warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// What `check` found: the configuration is valid (or `run` would have failed), plus warnings.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// One line each.
    warnings: Vec<String>,
    /// What was checked, one line each.
    checked: Vec<String>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.checked {
            writeln!(f, "ok: {line}")?;
        }
        for line in &self.warnings {
            writeln!(f, "warning: {line}")?;
        }
        writeln!(
            f,
            "configuration is valid ({} warning{})",
            self.warnings.len(),
            if self.warnings.len() == 1 { "" } else { "s" }
        )
    }
}

/// Why `check` stopped before validating anything.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The embedded defaults name a dev PKI that has not been made yet.
    #[error(
        "no dev PKI in {shown} yet: run `sessionauth certs init --dir {shown}` (or `sessionauth \
         serve`, which makes it on first start), or pass --certs DIR or --config FILE",
        shown = .dir.display()
    )]
    NoDevPki {
        /// The folder the dev PKI would be made in.
        dir: PathBuf,
    },
}

/// Validates `config` (read from a file, or the embedded defaults) exactly as `serve` would,
/// without making the dev PKI or binding a port.
pub fn run(mut config: Config) -> Result<CheckReport, Box<dyn std::error::Error + Send + Sync>> {
    if let Some(dir) = config.dev_pki.take() {
        if !dir.join(crate::pki::SERVER_CERT).exists() && !dir.join(crate::pki::CA_CERT).exists() {
            return Err(CheckError::NoDevPki { dir }.into());
        }
    }
    let mut report = CheckReport::default();
    // `check` writes nothing: a signing key that `serve` would make on first start is only
    // announced, and an in-memory one stands in for it.
    if let SigningKeySource::Default(path) = &config.signing.key {
        if !path.exists() {
            report.warnings.push(format!(
                "signing key {} does not exist yet: serve makes it on first start, or make it \
                 now; fix: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out \
                 {p} && chmod 600 {p}",
                path.display(),
                p = quoted(path)
            ));
            config.signing.key = SigningKeySource::Ephemeral;
        }
    }
    report.warnings.extend(crate::keyperms::warnings(&config));
    // The store is described, not opened: a running server holds the embedded store's file.
    let store = std::mem::replace(&mut config.store, StoreConfig::Memory);
    let prepared = Prepared::new(config)?;
    let config = prepared.config();
    let now = SystemClock.now();
    report.checked.push(match store {
        StoreConfig::Memory => "session store: memory (sessions end at exit)".to_owned(),
        StoreConfig::Embedded { data_dir } => format!(
            "session store: embedded, {}",
            data_dir.join(crate::store::embedded::DB_DIR).display()
        ),
        StoreConfig::Redis { url, prefix, wait } => match wait {
            Some(w) => format!(
                "session store: redis {url}, key prefix {prefix:?}, every write waits for {} \
                 replica(s) within {}",
                w.replicas(),
                humantime::format_duration(w.timeout())
            ),
            None => format!("session store: redis {url}, key prefix {prefix:?}"),
        },
        StoreConfig::Postgres { url, prefix } => {
            format!(
                "session store: postgres {url}, table prefix {:?}",
                prefix.as_str()
            )
        }
    });
    report.checked.push(format!(
        "server certificate {} matches key {}",
        config.tls.cert_chain.display(),
        config.tls.key.display()
    ));
    expiry_warnings(
        &config.tls.cert_chain,
        "server certificate",
        &server_fix(config),
        now,
        &mut report,
    )?;
    for ca in &config.tls.client_cas {
        report
            .checked
            .push(format!("client CA bundle {}", ca.display()));
        expiry_warnings(ca, "client CA", &ca_fix(config, ca), now, &mut report)?;
    }
    // Each CRL: who issued it, until when it is current, how many certificates it revokes.
    for line in prepared.crls().summary() {
        report.checked.push(format!("CRL {line}"));
    }
    for crl in prepared.crls().stale(now) {
        report.warnings.push(format!(
            "CRL {crl} is past its nextUpdate: with tls.crl_stale = \"deny\" (the default) \
             certificates of its issuer are refused until a current CRL is loaded; fix: have \
             its issuer publish a current CRL (with openssl: openssl ca -batch -config \
             CA.cnf -gencrl -out FILE), then kill -HUP <pid>"
        ));
    }
    // Client certificates are looked for where the dev PKI puts them: beside the first CA bundle.
    let certs_dir = config
        .tls
        .client_cas
        .first()
        .and_then(|p| p.parent())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    report.checked.push(format!(
        "signing key (kid {}), {} previous key(s) published",
        prepared.signing().kid(),
        prepared.signing().previous_kids().count()
    ));
    for path in &prepared.adopted_keys {
        report.checked.push(format!(
            "RSA public key {} (key-folder rule)",
            path.display()
        ));
    }
    let principals = prepared.directory().certificate_principals();
    report.checked.push(format!(
        "directory: {} principals may authenticate by certificate",
        principals.len()
    ));
    for name in principals {
        let files = ClientFiles::new(&certs_dir, &name);
        if files.cert.exists() {
            expiry_warnings(
                &files.cert,
                &format!("certificate of {name}"),
                &reissue_fix(&certs_dir, &name, &files),
                now,
                &mut report,
            )?;
        } else {
            // `init` makes what is missing for every directory entry (a certificate for a kept
            // key too, which `issue` refuses), so the fixes of several entries do not collide.
            let fix = if has_dev_ca(&certs_dir) {
                init_command(&certs_dir, config)
            } else {
                issue_elsewhere(&certs_dir, &files)
            };
            report.warnings.push(format!(
                "directory entry {name:?} has no certificate ({} not found); fix: {fix}",
                files.cert.display()
            ));
        }
    }
    Ok(report)
}

/// Whether `dir` holds the dev CA (its key beside its certificate), which `certs` commands
/// issue from.
fn has_dev_ca(dir: &Path) -> bool {
    dir.join(crate::pki::CA_CERT).exists() && dir.join("ca-key.pem").exists()
}

/// `sessionauth certs init` for the dev PKI in `dir`, with the configured directory file.
fn init_command(dir: &Path, config: &Config) -> String {
    let mut command = format!("sessionauth certs init --dir {}", quoted(dir));
    if let DirectorySource::File(file) = &config.directory {
        command.push_str(&format!(" --directory {}", quoted(file)));
    }
    command
}

/// How to replace the server certificate: from the dev CA when it is the dev PKI's, else from
/// whichever CA issued it.
fn server_fix(config: &Config) -> String {
    let cert = &config.tls.cert_chain;
    let dir = cert.parent().unwrap_or(Path::new("."));
    if cert
        .file_name()
        .is_some_and(|n| n == crate::pki::SERVER_CERT)
        && has_dev_ca(dir)
    {
        // init re-issues a certificate missing beside its kept key.
        format!(
            "rm {} && {} && kill -HUP <pid>",
            quoted(cert),
            init_command(dir, config)
        )
    } else {
        format!(
            "renew {} (for the key {}) from the CA that issued it, then kill -HUP <pid>",
            quoted(cert),
            quoted(&config.tls.key)
        )
    }
}

/// How to replace a client CA: a new dev PKI (every certificate issued again), or the CA's
/// operator renews it.
fn ca_fix(config: &Config, ca: &Path) -> String {
    let dir = ca.parent().unwrap_or(Path::new("."));
    if has_dev_ca(dir) {
        format!(
            "mv {d} {old} && {init} (a new CA: clients must trust the new ca.pem), then \
             restart the server",
            d = quoted(dir),
            old = quoted(&PathBuf::from(format!("{}.old", dir.display()))),
            init = init_command(dir, config)
        )
    } else {
        format!(
            "put the renewed CA certificate in {}, then kill -HUP <pid>",
            quoted(ca)
        )
    }
}

/// How to give `name` a new certificate in place of an expiring or expired one.
fn reissue_fix(dir: &Path, name: &str, files: &ClientFiles) -> String {
    if !has_dev_ca(dir) {
        return issue_elsewhere(dir, files);
    }
    let old: Vec<String> = [&files.cert, &files.key, &files.bundle, &files.p12]
        .into_iter()
        .filter(|p| p.exists())
        .map(|p| quoted(p))
        .collect();
    format!(
        "rm {} && sessionauth certs issue --cn {} --dir {}",
        old.join(" "),
        quoted(Path::new(name)),
        quoted(dir)
    )
}

/// The fix for a client certificate when `dir` has no dev CA to issue from.
fn issue_elsewhere(dir: &Path, files: &ClientFiles) -> String {
    format!(
        "issue it from the CA of {} (scripts/openssl-pki.sh shows how with openssl) and write \
         it to {}",
        quoted(&dir.join(crate::pki::CA_CERT)),
        quoted(&files.cert)
    )
}

/// `path` as one shell word: as it is when that is safe, else single-quoted.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-@:+=,".contains(&b));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn expiry_warnings(
    path: &Path,
    what: &str,
    fix: &str,
    now: Millis,
    report: &mut CheckReport,
) -> Result<(), crate::tls::TlsError> {
    for der in crate::tls::read_certs(path)? {
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            report.warnings.push(format!(
                "{what} in {} cannot be parsed; fix: replace it with a PEM certificate",
                path.display()
            ));
            continue;
        };
        let not_after = Millis::from_epoch_secs(cert.validity().not_after.timestamp());
        let subject = cert.subject().to_string();
        if not_after <= now {
            report.warnings.push(format!(
                "{what} {subject:?} in {} has EXPIRED ({}); fix: {fix}",
                path.display(),
                cert.validity().not_after
            ));
        } else if not_after < now.saturating_add(EXPIRY_WARNING) {
            report.warnings.push(format!(
                "{what} {subject:?} in {} expires within 30 days ({}); fix: {fix}",
                path.display(),
                cert.validity().not_after
            ));
        }
    }
    Ok(())
}
