//! `sessionauth check`: the start-up validation without serving, plus warnings about
//! certificates that expire within 30 days and directory entries with no certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::{Clock, Millis, SystemClock};
use crate::config::{Config, SigningKeySource, StoreConfig};
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
                "signing key {} does not exist yet: serve makes it on first start",
                path.display()
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
        now,
        &mut report,
    )?;
    for ca in &config.tls.client_cas {
        report
            .checked
            .push(format!("client CA bundle {}", ca.display()));
        expiry_warnings(ca, "client CA", now, &mut report)?;
    }
    // Each CRL: who issued it, until when it is current, how many certificates it revokes.
    for line in prepared.crls().summary() {
        report.checked.push(format!("CRL {line}"));
    }
    for crl in prepared.crls().stale(now) {
        report.warnings.push(format!(
            "CRL {crl} is past its nextUpdate: with tls.crl_stale = \"deny\" (the default) \
             certificates of its issuer are refused until a current CRL is loaded"
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
                now,
                &mut report,
            )?;
        } else {
            report.warnings.push(format!(
                "directory entry {name:?} has no certificate ({} not found)",
                files.cert.display()
            ));
        }
    }
    Ok(report)
}

fn expiry_warnings(
    path: &Path,
    what: &str,
    now: Millis,
    report: &mut CheckReport,
) -> Result<(), crate::tls::TlsError> {
    for der in crate::tls::read_certs(path)? {
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
            report
                .warnings
                .push(format!("{what} in {} cannot be parsed", path.display()));
            continue;
        };
        let not_after = Millis::from_epoch_secs(cert.validity().not_after.timestamp());
        let subject = cert.subject().to_string();
        if not_after <= now {
            report.warnings.push(format!(
                "{what} {subject:?} in {} has EXPIRED ({})",
                path.display(),
                cert.validity().not_after
            ));
        } else if not_after < now.saturating_add(EXPIRY_WARNING) {
            report.warnings.push(format!(
                "{what} {subject:?} in {} expires within 30 days ({})",
                path.display(),
                cert.validity().not_after
            ));
        }
    }
    Ok(())
}
