//! TLS: the rustls server configuration and the client-certificate policy.
//!
//! The crypto provider is chosen explicitly ([`crate::crypto`]), so that a second provider enabled by some
//! dependency can never make the process default ambiguous. Client certificates are requested
//! but optional on the shared listener: `/pod` and `/login` callers do not present one. A
//! certificate that *is* presented must chain to one of the configured client CAs, or the
//! handshake fails. TLS 1.2 and 1.3 are offered; ALPN offers HTTP/1.1 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSettings;
use crate::crl::CrlSet;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A client CA bundle holds no certificate.
    #[error("client CA bundle {path} is empty: it holds no PEM certificate")]
    EmptyCaBundle {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file could not be parsed.
    #[error("{path} is not valid PEM")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key file holds no private key.
    #[error("{path} holds no PEM private key")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a type or format the provider cannot use.
    #[error("{path}: unsupported private key")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The certificate's key file does not exist.
    #[error(
        "certificate {cert} has no private key: {key} is missing; put the certificate's key \
         there, or point tls.key (or --certs) at the folder that has it"
    )]
    MissingKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file that is not there.
        key: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA certificate was refused by the trust store.
    #[error("client CA bundle {path}: a certificate is not a usable trust anchor")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What webpki said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the assembled configuration.
    #[error("TLS configuration refused")]
    Rustls(#[source] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier refused")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// Makes [`provider`] rustls's process-wide default, for TLS clients that build their
/// configuration from it (the Redis client's `rediss://` connections). The binary calls it once,
/// in `main`; an error means a default is installed already, which is left as it is.
pub fn install_process_default() {
    let _ = CryptoProvider::install_default(provider().as_ref().clone());
}

/// The crypto provider sessionauth uses everywhere: the one [`crate::crypto`] chooses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crate::crypto::tls_provider())
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            path: path.to_owned(),
            source,
        })
}

/// Reads the first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::BadPem {
            path: path.to_owned(),
            source,
        },
    })
}

/// Builds the server's TLS configuration from the settings: reads the chain, the key and every
/// client CA bundle, checks that the key matches the certificate, and has client certificates
/// checked against `crls` (the whole chain, with the configured policy for stale CRLs).
pub(crate) fn server_config(
    settings: &TlsSettings,
    crls: &CrlSet,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = read_certs(&settings.cert_chain)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: settings.cert_chain.clone(),
        });
    }
    let key = read_key(&settings.key).map_err(|e| match e {
        TlsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            TlsError::MissingKey {
                cert: settings.cert_chain.clone(),
                key: settings.key.clone(),
            }
        }
        e => e,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: settings.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    if certified.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            cert: settings.cert_chain.clone(),
            key: settings.key.clone(),
        });
    }

    let mut roots = RootCertStore::empty();
    for path in &settings.client_cas {
        let cas = read_certs(path)?;
        if cas.is_empty() {
            return Err(TlsError::EmptyCaBundle { path: path.clone() });
        }
        for ca in cas {
            roots.add(ca).map_err(|source| TlsError::BadCa {
                path: path.clone(),
                source,
            })?;
        }
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated();
    let verifier = crls
        .apply_to(builder, settings.crl_stale)
        .build()
        .map_err(TlsError::Verifier)?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCert(Arc::new(certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !settings.resumption {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_capped(path, crate::files::MAX_PEM_BYTES).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Always presents the one configured certificate.
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
