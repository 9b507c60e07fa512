//! Certificate revocation lists: read from files or fetched over plain HTTP, parsed, and held as
//! one immutable [`CrlSet`] that feeds the client-certificate verifier.
//!
//! A set is built whole from every configured [`CrlSource`]: if any source fails, the load fails
//! and names it, so that the caller keeps its last good set (a new set replaces the old one, it
//! never merges into it). A CRL is accepted only if the webpki that rustls verifies with accepts
//! it, so a set that loads is a set the TLS configuration can use.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{self, HeaderValue};
use hyper::http::uri::{InvalidUri, PathAndQuery};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::server::ClientCertVerifierBuilder;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::CertificateRevocationListDer;
use tokio::io::AsyncReadExt as _;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT;
use x509_parser::prelude::{ASN1Time, FromDer as _};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::clock::Millis;

/// The largest CRL file or HTTP body read by default: 16 MiB.
pub const MAX_CRL_BYTES: u64 = 16 * 1024 * 1024;

/// How long fetching one CRL URL may take by default, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one CRL (or a PEM bundle of them) comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum CrlSource {
    /// A file holding one DER CRL, or PEM with one or more `X509 CRL` blocks.
    File(PathBuf),
    /// A plain-HTTP CRL distribution point.
    Url(CrlUrl),
}

impl CrlSource {
    /// Parses a configured source: a URL if it has a scheme (`scheme://`), a file path otherwise.
    ///
    /// Only `http://` URLs are accepted: CRL distribution points are plain HTTP by convention
    /// (RFC 5280 §4.2.1.13), and a CRL is signed, so TLS would add nothing to its integrity.
    pub fn parse(text: &str) -> Result<Self, CrlError> {
        if text.is_empty() {
            return Err(CrlError::EmptySource);
        }
        if text.contains("://") {
            CrlUrl::parse(text).map(Self::Url)
        } else {
            Ok(Self::File(PathBuf::from(text)))
        }
    }
}

impl FromStr for CrlSource {
    type Err = CrlError;

    fn from_str(text: &str) -> Result<Self, CrlError> {
        Self::parse(text)
    }
}

impl TryFrom<String> for CrlSource {
    type Error = CrlError;

    fn try_from(text: String) -> Result<Self, CrlError> {
        Self::parse(&text)
    }
}

impl fmt::Display for CrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// An `http://` URL, parsed: it has a host, no user credentials, and a request target. Cheap to
/// clone (errors carry it).
#[derive(Clone)]
pub struct CrlUrl(Arc<ParsedUrl>);

struct ParsedUrl {
    text: String,
    host: String,
    port: u16,
    host_header: HeaderValue,
    target: Uri,
}

impl CrlUrl {
    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    fn parse(text: &str) -> Result<Self, CrlError> {
        let unsupported = |reason| CrlError::UnsupportedUrl {
            url: text.to_owned(),
            reason,
        };
        let bad = |source| CrlError::BadUrl {
            url: text.to_owned(),
            source,
        };
        // The scheme is judged before the rest, so that `https://` and `file:///` are refused
        // as unsupported rather than as malformed.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(unsupported(
                "only http:// is supported: CRL distribution points are plain HTTP \
                 (RFC 5280 §4.2.1.13) and a CRL is signed",
            ));
        }
        let uri = text.parse::<Uri>().map_err(bad)?;
        let authority = uri
            .authority()
            .ok_or_else(|| unsupported("it names no host"))?;
        if authority.as_str().contains('@') {
            return Err(unsupported("user credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(unsupported("it names no host"));
        }
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| unsupported("its host is not a valid Host header"))?;
        let target = uri
            .path_and_query()
            .map_or("/", PathAndQuery::as_str)
            .parse::<Uri>()
            .map_err(bad)?;
        Ok(Self(Arc::new(ParsedUrl {
            text: text.to_owned(),
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(80),
            host_header,
            target,
        })))
    }
}

impl PartialEq for CrlUrl {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for CrlUrl {}

impl fmt::Display for CrlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for CrlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrlUrl({:?})", self.0.text)
    }
}

/// Bounds on loading: the size of one file or HTTP body, and the time one fetch may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlLimits {
    /// The largest file or HTTP body read, in bytes.
    pub max_bytes: u64,
    /// How long one URL fetch may take, from connecting to the last body byte.
    pub timeout: Duration,
}

impl Default for CrlLimits {
    fn default() -> Self {
        Self {
            max_bytes: MAX_CRL_BYTES,
            timeout: FETCH_TIMEOUT,
        }
    }
}

/// What to do with a CRL past its `nextUpdate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlStale {
    /// Refuse every certificate the stale CRL's issuer signed until a fresh CRL is loaded
    /// (fail closed). The default.
    #[default]
    Deny,
    /// Keep consulting the stale CRL: what it revokes stays revoked, the rest passes.
    Allow,
}

/// Every configured source's CRLs: immutable, built whole, replaced whole.
#[derive(Debug, Default)]
pub struct CrlSet {
    crls: Vec<Crl>,
}

impl CrlSet {
    /// Loads every source in order (files are read, URLs fetched). Any failure fails the whole
    /// load, naming the source; so does a second CRL for an issuer that already has one unless
    /// both are partitioned (carry an issuingDistributionPoint), since rustls would consult only
    /// the first.
    pub async fn load(sources: &[CrlSource], limits: &CrlLimits) -> Result<Self, CrlError> {
        let mut crls = Vec::new();
        for source in sources {
            let bytes = match source {
                CrlSource::File(path) => read_file(path, source, limits.max_bytes).await?,
                CrlSource::Url(url) => fetch(url, source, limits).await?,
            };
            crls.extend(Crl::parse_all(source, bytes)?);
        }
        let mut seen: HashMap<&[u8], &Crl> = HashMap::new();
        for crl in &crls {
            if let Some(first) = seen.insert(&crl.issuer_der, crl) {
                if !(first.partitioned && crl.partitioned) {
                    return Err(CrlError::DuplicateIssuer {
                        issuer: crl.issuer.clone(),
                        first: first.source.clone(),
                        second: crl.source.clone(),
                    });
                }
            }
        }
        Ok(Self { crls })
    }

    /// The set's CRLs, in the order of their sources.
    pub fn crls(&self) -> &[Crl] {
        &self.crls
    }

    /// Whether the set holds no CRL (revocation is then not checked at all).
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty()
    }

    /// The CRLs in DER, for `ClientCertVerifierBuilder::with_crls`.
    pub fn ders(&self) -> impl Iterator<Item = CertificateRevocationListDer<'static>> + '_ {
        self.crls.iter().map(|crl| crl.der.clone())
    }

    /// The credential id of every revoked certificate (an id listed by two CRLs appears twice).
    pub fn revoked(&self) -> impl Iterator<Item = &[u8; 32]> + '_ {
        self.crls.iter().flat_map(|crl| crl.revoked.iter())
    }

    /// Whether some CRL in the set revokes the certificate with this credential id.
    pub fn is_revoked(&self, id: &[u8; 32]) -> bool {
        self.crls.iter().any(|crl| crl.is_revoked(id))
    }

    /// Whether some CRL in the set was issued by the CA with this subject (its DER name): for
    /// `check` to warn about client CAs whose certificates cannot be revoked.
    pub fn has_issuer(&self, subject_der: &[u8]) -> bool {
        self.crls.iter().any(|crl| crl.issuer_der == subject_der)
    }

    /// The CRLs past their `nextUpdate` at `now`.
    pub fn stale(&self, now: Millis) -> impl Iterator<Item = &Crl> + '_ {
        self.crls.iter().filter(move |crl| crl.is_stale(now))
    }

    /// One line per CRL for `sessionauth check`: issuer, entries, nextUpdate and source.
    pub fn summary(&self) -> Vec<String> {
        self.crls.iter().map(Crl::to_string).collect()
    }

    /// Adds the set's CRLs to a client-certificate verifier under the `stale` policy; an empty
    /// set leaves the builder as it is.
    ///
    /// Every certificate of the presented chain is checked, intermediates included (the
    /// builder's default; `only_check_end_entity_revocation` is deliberately not used). A
    /// certificate whose issuer has no CRL in the set passes
    /// (`allow_unknown_revocation_status`): listing a CRL for one client CA must not lock out
    /// the clients of another CA that publishes none. The price is that a CA without a
    /// configured CRL cannot revoke anything. Under [`CrlStale::Deny`] a CRL past its
    /// `nextUpdate` refuses every certificate its issuer signed
    /// (`enforce_revocation_expiration`).
    pub fn apply_to(
        &self,
        builder: ClientCertVerifierBuilder,
        stale: CrlStale,
    ) -> ClientCertVerifierBuilder {
        if self.is_empty() {
            return builder;
        }
        let builder = builder
            .with_crls(self.ders())
            .allow_unknown_revocation_status();
        match stale {
            CrlStale::Deny => builder.enforce_revocation_expiration(),
            CrlStale::Allow => builder,
        }
    }
}

/// One parsed CRL.
pub struct Crl {
    source: CrlSource,
    der: CertificateRevocationListDer<'static>,
    issuer: String,
    issuer_der: Vec<u8>,
    this_update: Millis,
    next_update: Millis,
    /// Sorted, for binary search.
    revoked: Vec<[u8; 32]>,
    partitioned: bool,
}

impl Crl {
    /// Where the CRL came from.
    pub fn source(&self) -> &CrlSource {
        &self.source
    }

    /// The CRL in DER.
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.der
    }

    /// The issuer's name as text (RFC 4514 style), for logs and `check`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's name exactly as encoded (DER), as a certificate's issuer field holds it.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// When the CRL was issued (`thisUpdate`).
    pub fn this_update(&self) -> Millis {
        self.this_update
    }

    /// When the next CRL is due (`nextUpdate`; rustls refuses CRLs without one, so every loaded
    /// CRL has it).
    pub fn next_update(&self) -> Millis {
        self.next_update
    }

    /// How many certificates the CRL revokes.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// The credential ids of the revoked certificates, sorted: SHA-256 over the issuer's DER name
    /// and each serial number, as a session records the certificate it was made with.
    pub fn revoked(&self) -> &[[u8; 32]] {
        &self.revoked
    }

    /// Whether this CRL revokes the certificate with this credential id.
    pub fn is_revoked(&self, id: &[u8; 32]) -> bool {
        self.revoked.binary_search(id).is_ok()
    }

    /// Whether the CRL is past its `nextUpdate` at `now` (as rustls counts it: at or after).
    pub fn is_stale(&self, now: Millis) -> bool {
        now >= self.next_update
    }

    /// Parses a file's or body's bytes: PEM if they hold a `-----BEGIN` line, DER otherwise.
    fn parse_all(source: &CrlSource, bytes: Vec<u8>) -> Result<Vec<Self>, CrlError> {
        let ders = if bytes.windows(PEM_BEGIN.len()).any(|w| w == PEM_BEGIN) {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CrlError::BadPem {
                    origin: source.clone(),
                    source: e,
                })?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        if ders.is_empty() {
            return Err(CrlError::NoCrl {
                origin: source.clone(),
            });
        }
        ders.into_iter()
            .enumerate()
            .map(|(i, der)| Self::parse(source, i + 1, der))
            .collect()
    }

    fn parse(
        source: &CrlSource,
        index: usize,
        der: CertificateRevocationListDer<'static>,
    ) -> Result<Self, CrlError> {
        webpki::BorrowedCertRevocationList::from_der(der.as_ref()).map_err(|e| {
            CrlError::Refused {
                origin: source.clone(),
                index,
                source: e,
            }
        })?;
        let (_, crl) =
            CertificateRevocationList::from_der(der.as_ref()).map_err(|e| CrlError::Parse {
                origin: source.clone(),
                index,
                source: X509Error::from(e),
            })?;
        let issuer_der = crl.issuer().as_raw().to_vec();
        let next_update = crl.next_update().ok_or_else(|| CrlError::NoNextUpdate {
            origin: source.clone(),
            index,
        })?;
        let mut revoked: Vec<[u8; 32]> = crl
            .iter_revoked_certificates()
            .map(|entry| credential_id(&issuer_der, entry.raw_serial()))
            .collect();
        revoked.sort_unstable();
        let partitioned = crl
            .extensions()
            .iter()
            .any(|ext| ext.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT);
        Ok(Self {
            source: source.clone(),
            issuer: crl.issuer().to_string(),
            this_update: millis(crl.last_update()),
            next_update: millis(next_update),
            issuer_der,
            revoked,
            partitioned,
            der,
        })
    }
}

impl fmt::Display for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let next = UNIX_EPOCH + Duration::from_millis(self.next_update.as_epoch_millis());
        write!(
            f,
            "CRL of {}: {} revoked, next update {}, from {}",
            self.issuer,
            self.revoked.len(),
            humantime::format_rfc3339_seconds(next),
            self.source
        )
    }
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("source", &self.source)
            .field("issuer", &self.issuer)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

/// The credential id of the certificate `issuer` (its DER-encoded name) issued with `serial`
/// (the serial number's big-endian bytes): SHA-256 over `b"cert\0"`, the issuer's length as a
/// big-endian u32, the issuer, and the serial without its DER sign padding. A certificate's
/// `issuer().as_raw()` and `raw_serial()` give the same id as the CRL entry that revokes it.
fn credential_id(issuer: &[u8], serial: &[u8]) -> [u8; 32] {
    *crate::session::CredentialId::certificate(issuer, serial).as_bytes()
}

/// Why a CRL source could not be parsed or loaded; each names its file or URL.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// No runtime could be started to fetch the CRLs at start-up.
    #[error("cannot start a runtime to load the CRLs")]
    Runtime(#[source] Arc<std::io::Error>),
    /// An empty string was given as a source.
    #[error("a CRL source is empty: give a file path or an http:// URL")]
    EmptySource,
    /// A URL that is not plain HTTP, or has no host, or carries credentials.
    #[error("CRL URL {url} is not usable: {reason}")]
    UnsupportedUrl {
        /// The URL as configured.
        url: String,
        /// Why not.
        reason: &'static str,
    },
    /// A URL that does not parse.
    #[error("CRL URL {url} is not a valid URL")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What the parser said.
        #[source]
        source: InvalidUri,
    },
    /// A CRL file could not be read.
    #[error("cannot read CRL file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or HTTP body is larger than the limit.
    #[error("CRL {origin} is larger than {max} bytes")]
    TooLarge {
        /// The file or URL.
        origin: CrlSource,
        /// The limit.
        max: u64,
    },
    /// The CRL server could not be reached.
    #[error("cannot connect to {url} to fetch its CRL")]
    Connect {
        /// The URL.
        url: CrlUrl,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("fetching the CRL at {url} failed")]
    Fetch {
        /// The URL.
        url: CrlUrl,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// The server answered something other than 200 (redirects are not followed).
    #[error("{url} answered {status} instead of 200 OK with a CRL (redirects are not followed)")]
    Status {
        /// The URL.
        url: CrlUrl,
        /// The status it answered.
        status: StatusCode,
    },
    /// The fetch took longer than the limit.
    #[error("fetching the CRL at {url} took longer than {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The URL.
        url: CrlUrl,
        /// The limit.
        timeout: Duration,
    },
    /// PEM that does not decode.
    #[error("CRL {origin} is not valid PEM")]
    BadPem {
        /// The file or URL.
        origin: CrlSource,
        /// What the PEM parser said.
        #[source]
        source: pem::Error,
    },
    /// PEM without a single `X509 CRL` block.
    #[error("{origin} holds no X509 CRL")]
    NoCrl {
        /// The file or URL.
        origin: CrlSource,
    },
    /// A CRL that webpki (which rustls verifies with) refuses.
    #[error("CRL #{index} in {origin} is not one rustls can use")]
    Refused {
        /// The file or URL.
        origin: CrlSource,
        /// The CRL's position in its source, from 1.
        index: usize,
        /// What webpki said.
        #[source]
        source: webpki::Error,
    },
    /// A CRL that x509-parser cannot read.
    #[error("CRL #{index} in {origin} cannot be parsed")]
    Parse {
        /// The file or URL.
        origin: CrlSource,
        /// The CRL's position in its source, from 1.
        index: usize,
        /// What x509-parser said.
        #[source]
        source: X509Error,
    },
    /// A CRL without `nextUpdate` (RFC 5280 requires it).
    #[error("CRL #{index} in {origin} has no nextUpdate")]
    NoNextUpdate {
        /// The file or URL.
        origin: CrlSource,
        /// The CRL's position in its source, from 1.
        index: usize,
    },
    /// Two CRLs of one issuer: rustls would consult only the first.
    #[error("two CRLs of {issuer}: from {first} and from {second}")]
    DuplicateIssuer {
        /// The issuer, as text.
        issuer: String,
        /// Where the first came from.
        first: CrlSource,
        /// Where the second came from.
        second: CrlSource,
    },
}

const PEM_BEGIN: &[u8] = b"-----BEGIN";

/// Reads at most `max + 1` bytes, so that an endless file (`/dev/zero`) fails at the limit.
async fn read_file(path: &Path, source: &CrlSource, max: u64) -> Result<Vec<u8>, CrlError> {
    let read = |source| CrlError::Read {
        path: path.to_owned(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(read)?;
    check_size(bytes.len(), source, max)?;
    Ok(bytes)
}

fn check_size(len: usize, source: &CrlSource, max: u64) -> Result<(), CrlError> {
    if u64::try_from(len).map_or(true, |len| len > max) {
        return Err(CrlError::TooLarge {
            origin: source.clone(),
            max,
        });
    }
    Ok(())
}

/// One plain-HTTP GET, bounded by `limits`: no redirects, 200 only.
async fn fetch(url: &CrlUrl, source: &CrlSource, limits: &CrlLimits) -> Result<Vec<u8>, CrlError> {
    tokio::time::timeout(limits.timeout, exchange(url, source, limits.max_bytes))
        .await
        .map_err(|_| CrlError::Timeout {
            url: url.clone(),
            timeout: limits.timeout,
        })?
}

async fn exchange(url: &CrlUrl, source: &CrlSource, max: u64) -> Result<Vec<u8>, CrlError> {
    let failed = |e| CrlError::Fetch {
        url: url.clone(),
        source: e,
    };
    let stream = tokio::net::TcpStream::connect((url.0.host.as_str(), url.0.port))
        .await
        .map_err(|e| CrlError::Connect {
            url: url.clone(),
            source: e,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = url.0.target.clone();
    let headers = request.headers_mut();
    headers.insert(header::HOST, url.0.host_header.clone());
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/pkix-crl"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let response = async {
        let response = sender.send_request(request).await.map_err(failed)?;
        if response.status() != StatusCode::OK {
            return Err(CrlError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(failed)?.into_data() {
                check_size(bytes.len().saturating_add(data.len()), source, max)?;
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes)
    };
    // The connection is driven only while the exchange runs, and is dropped (closed) with it.
    tokio::pin!(conn, response);
    tokio::select! {
        result = &mut response => result,
        Err(e) = &mut conn => Err(failed(e)),
    }
}

fn millis(t: ASN1Time) -> Millis {
    Millis::from_epoch_secs(t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevocationReason, RevokedCertParams, SerialNumber,
    };
    use rustls::server::danger::ClientCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use rustls_pki_types::{CertificateDer, UnixTime};
    use time::OffsetDateTime;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;
    use x509_parser::prelude::X509Certificate;

    /// A CA made at test time: its certificate and what signs with its key.
    struct Ca {
        cert: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn root(name: &str) -> Self {
            let key = KeyPair::generate().unwrap();
            let params = ca_params(name, None);
            let cert = params.self_signed(&key).unwrap().der().clone();
            Self {
                cert,
                issuer: Issuer::new(params, key),
            }
        }

        fn intermediate(&self, name: &str, serial: &[u8]) -> Self {
            let key = KeyPair::generate().unwrap();
            let params = ca_params(name, Some(serial));
            let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
            Self {
                cert,
                issuer: Issuer::new(params, key),
            }
        }

        /// A client certificate with this serial (a leading byte ≥ 0x80 makes DER pad it).
        fn leaf(&self, name: &str, serial: &[u8]) -> CertificateDer<'static> {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.serial_number = Some(SerialNumber::from_slice(serial));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.signed_by(&key, &self.issuer).unwrap().der().clone()
        }

        /// A CRL revoking `serials`, due `next_update` from now (negative: already stale).
        fn crl(
            &self,
            serials: &[&[u8]],
            next_update: time::Duration,
        ) -> CertificateRevocationListDer<'static> {
            let now = OffsetDateTime::now_utc();
            let params = CertificateRevocationListParams {
                this_update: now.min(now + next_update) - time::Duration::days(1),
                next_update: now + next_update,
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|serial| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(serial),
                        revocation_time: now - time::Duration::hours(1),
                        reason_code: Some(RevocationReason::KeyCompromise),
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            params.signed_by(&self.issuer).unwrap().der().clone()
        }
    }

    fn ca_params(name: &str, serial: Option<&[u8]>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = serial.map(SerialNumber::from_slice);
        params
    }

    const FRESH: time::Duration = time::Duration::days(7);

    /// Loads a set from CRLs written to files (DER), as a configuration would list them.
    async fn set_of(crls: &[&CertificateRevocationListDer<'static>]) -> CrlSet {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = Vec::new();
        for (i, crl) in crls.iter().enumerate() {
            let path = dir.path().join(format!("{i}.crl"));
            std::fs::write(&path, crl.as_ref()).unwrap();
            sources.push(CrlSource::File(path));
        }
        CrlSet::load(&sources, &CrlLimits::default()).await.unwrap()
    }

    fn verifier(cas: &[&Ca], crls: &CrlSet, stale: CrlStale) -> Arc<dyn ClientCertVerifier> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca.cert.clone()).unwrap();
        }
        let provider = Arc::new(crate::crypto::tls_provider());
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        crls.apply_to(builder, stale).build().unwrap()
    }

    fn verify(
        verifier: &dyn ClientCertVerifier,
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        verifier
            .verify_client_cert(leaf, chain, UnixTime::now())
            .map(drop)
    }

    fn is_revoked(result: Result<(), rustls::Error>) -> bool {
        matches!(
            result,
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        )
    }

    /// A CRL entry and the certificate it revokes give the same credential id.
    #[tokio::test]
    async fn crl_entry_and_certificate_give_the_same_id() {
        let ca = Ca::root("Test CA");
        let serial: &[u8] = &[0x80, 0x01, 0x02];
        let leaf = ca.leaf("bot.user", serial);
        let set = set_of(&[&ca.crl(&[serial], FRESH)]).await;

        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).unwrap();
        assert_eq!(
            cert.raw_serial().first(),
            Some(&0),
            "the serial is DER-padded"
        );
        let id = credential_id(cert.issuer().as_raw(), cert.raw_serial());
        assert_eq!(set.revoked().collect::<Vec<_>>(), [&id]);
        assert!(set.is_revoked(&id));
        let other = ca.leaf("other.user", &[0x01, 0x02]);
        let (_, other) = X509Certificate::from_der(other.as_ref()).unwrap();
        assert!(!set.is_revoked(&credential_id(other.issuer().as_raw(), other.raw_serial())));
    }

    /// One leading zero byte (DER sign padding) is not part of a serial's id; a lone zero is.
    #[test]
    fn sign_padding_is_not_part_of_the_id() {
        let issuer = b"issuer";
        assert_eq!(
            credential_id(issuer, &[0x00, 0x80]),
            credential_id(issuer, &[0x80])
        );
        assert_ne!(credential_id(issuer, &[0x00]), credential_id(issuer, &[]));
        assert_ne!(
            credential_id(issuer, &[0x01]),
            credential_id(b"other", &[0x01])
        );
    }

    /// rustls refuses a revoked client certificate and accepts an unrevoked one of the same CA.
    #[tokio::test]
    async fn revoked_certificate_is_refused_and_unrevoked_passes() {
        let ca = Ca::root("Test CA");
        let revoked = ca.leaf("revoked.user", &[0x81]);
        let good = ca.leaf("good.user", &[0x02]);
        let set = set_of(&[&ca.crl(&[&[0x81]], FRESH)]).await;
        let verifier = verifier(&[&ca], &set, CrlStale::Deny);
        assert!(is_revoked(verify(verifier.as_ref(), &revoked, &[])));
        assert_eq!(verify(verifier.as_ref(), &good, &[]), Ok(()));
    }

    /// The whole chain is checked: a revoked intermediate refuses the leaves it signed.
    #[tokio::test]
    async fn revoked_intermediate_refuses_its_leaves() {
        let root = Ca::root("Root CA");
        let intermediate = root.intermediate("Issuing CA", &[0x10]);
        let leaf = intermediate.leaf("bot.user", &[0x20]);
        let chain = [intermediate.cert.clone()];

        let clean = set_of(&[&root.crl(&[], FRESH)]).await;
        let verifier_ok = verifier(&[&root], &clean, CrlStale::Deny);
        assert_eq!(verify(verifier_ok.as_ref(), &leaf, &chain), Ok(()));

        let revoking = set_of(&[&root.crl(&[&[0x10]], FRESH)]).await;
        let verifier_revoked = verifier(&[&root], &revoking, CrlStale::Deny);
        assert!(is_revoked(verify(verifier_revoked.as_ref(), &leaf, &chain)));
    }

    /// A client CA with no configured CRL is not locked out by another CA's CRL.
    #[tokio::test]
    async fn issuer_without_a_crl_is_not_locked_out() {
        let with_crl = Ca::root("CA with a CRL");
        let without = Ca::root("CA without a CRL");
        let set = set_of(&[&with_crl.crl(&[&[0x05]], FRESH)]).await;
        let subject = |ca: &Ca| {
            let (_, cert) = X509Certificate::from_der(ca.cert.as_ref()).unwrap();
            cert.subject().as_raw().to_vec()
        };
        assert!(set.has_issuer(&subject(&with_crl)));
        assert!(!set.has_issuer(&subject(&without)));
        let verifier = verifier(&[&with_crl, &without], &set, CrlStale::Deny);
        assert_eq!(
            verify(verifier.as_ref(), &without.leaf("b.user", &[0x05]), &[]),
            Ok(())
        );
        assert!(is_revoked(verify(
            verifier.as_ref(),
            &with_crl.leaf("a.user", &[0x05]),
            &[]
        )));
    }

    /// A CRL past its nextUpdate refuses its issuer's certificates under Deny, not under Allow.
    #[tokio::test]
    async fn stale_crl_refuses_under_deny_and_passes_under_allow() {
        let ca = Ca::root("Test CA");
        let leaf = ca.leaf("bot.user", &[0x02]);
        let set = set_of(&[&ca.crl(&[&[0x09]], -time::Duration::hours(1))]).await;
        let now = Millis::from_system_time(std::time::SystemTime::now());
        assert_eq!(set.stale(now).count(), 1);

        let deny = verifier(&[&ca], &set, CrlStale::Deny);
        let refused = verify(deny.as_ref(), &leaf, &[]);
        assert!(
            matches!(refused, Err(rustls::Error::InvalidCertificate(_))),
            "{refused:?}"
        );
        let allow = verifier(&[&ca], &set, CrlStale::Allow);
        assert_eq!(verify(allow.as_ref(), &leaf, &[]), Ok(()));
    }

    /// A PEM bundle of several CRLs and a DER file load into one set, summarised per CRL.
    #[tokio::test]
    async fn pem_bundle_and_der_file_load() {
        let (a, b, c) = (Ca::root("CA A"), Ca::root("CA B"), Ca::root("CA C"));
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("bundle.pem");
        let mut pem = String::from("two CRLs, with text around them\n");
        for crl in [a.crl(&[&[1], &[2]], FRESH), b.crl(&[], FRESH)] {
            pem += &to_pem(&crl);
        }
        std::fs::write(&pem_path, pem).unwrap();
        let der_path = dir.path().join("c.crl");
        std::fs::write(&der_path, c.crl(&[&[3]], FRESH).as_ref()).unwrap();
        let sources = [CrlSource::File(pem_path), CrlSource::File(der_path.clone())];

        let set = CrlSet::load(&sources, &CrlLimits::default()).await.unwrap();
        let counts: Vec<_> = set.crls().iter().map(Crl::revoked_count).collect();
        assert_eq!(counts, [2, 0, 1]);
        assert_eq!(set.crls()[2].source(), &CrlSource::File(der_path));
        assert_eq!(set.ders().count(), 3);
        let summary = set.summary();
        assert!(summary[0].starts_with("CRL of CN=CA A: 2 revoked, next update "));
        assert!(summary[2].ends_with("c.crl"), "{}", summary[2]);
        let now = Millis::from_system_time(std::time::SystemTime::now());
        assert_eq!(set.stale(now).count(), 0);
    }

    fn to_pem(crl: &CertificateRevocationListDer<'_>) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(crl.as_ref());
        let mut pem = String::from("-----BEGIN X509 CRL-----\n");
        for line in text.as_bytes().chunks(64) {
            pem += std::str::from_utf8(line).unwrap();
            pem += "\n";
        }
        pem + "-----END X509 CRL-----\n"
    }

    /// An endless file fails at the size cap instead of being read to exhaustion.
    #[tokio::test]
    async fn endless_file_fails_at_the_cap() {
        let source = CrlSource::parse("/dev/zero").unwrap();
        let err = CrlSet::load(&[source], &CrlLimits::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CrlError::TooLarge {
                    max: MAX_CRL_BYTES,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/dev/zero"), "{err}");
    }

    /// Missing files, garbage and PEM without a CRL each fail, naming the file.
    #[tokio::test]
    async fn bad_files_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.crl");
        std::fs::write(&garbage, b"\x30\x03\x02\x01\x01").unwrap();
        let cert_only = dir.path().join("cert.pem");
        std::fs::write(&cert_only, Ca::root("CA").issuer.key().serialize_pem()).unwrap();
        let missing = dir.path().join("missing.crl");
        for (path, check) in [
            (
                &missing,
                (|e| matches!(e, &CrlError::Read { .. })) as fn(&CrlError) -> bool,
            ),
            (&garbage, |e| {
                matches!(e, &CrlError::Refused { index: 1, .. })
            }),
            (&cert_only, |e| matches!(e, &CrlError::NoCrl { .. })),
        ] {
            let err = CrlSet::load(&[CrlSource::File(path.clone())], &CrlLimits::default())
                .await
                .unwrap_err();
            assert!(check(&err), "{err:?}");
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
    }

    /// One failing source fails the whole load; the error names that source.
    #[tokio::test]
    async fn one_failing_source_fails_the_whole_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.crl");
        std::fs::write(&good, Ca::root("CA").crl(&[], FRESH).as_ref()).unwrap();
        let missing = dir.path().join("missing.crl");
        let sources = [CrlSource::File(good), CrlSource::File(missing.clone())];
        let err = CrlSet::load(&sources, &CrlLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(&err, CrlError::Read { path, .. } if path == &missing));
    }

    /// Two CRLs of one issuer are refused: rustls would silently consult only the first.
    #[tokio::test]
    async fn two_crls_of_one_issuer_are_refused() {
        let ca = Ca::root("CA");
        let dir = tempfile::tempdir().unwrap();
        let mut sources = Vec::new();
        for name in ["old.crl", "new.crl"] {
            let path = dir.path().join(name);
            std::fs::write(&path, ca.crl(&[], FRESH).as_ref()).unwrap();
            sources.push(CrlSource::File(path));
        }
        let err = CrlSet::load(&sources, &CrlLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, CrlError::DuplicateIssuer { .. }), "{err:?}");
        assert!(err.to_string().contains("new.crl"), "{err}");
    }

    /// Paths are files, `http://` URLs are URLs, and every other URL is refused at parse time.
    #[test]
    fn sources_parse() {
        assert_eq!(
            CrlSource::parse("crl/ca.crl").unwrap(),
            CrlSource::File("crl/ca.crl".into())
        );
        let CrlSource::Url(url) = CrlSource::parse("http://crl.example:8080/ca.crl?x=1").unwrap()
        else {
            panic!("not a URL");
        };
        assert_eq!((url.0.host.as_str(), url.0.port), ("crl.example", 8080));
        assert_eq!(url.0.target.to_string(), "/ca.crl?x=1");
        let CrlSource::Url(url) = CrlSource::parse("http://[::1]").unwrap() else {
            panic!("not a URL");
        };
        assert_eq!((url.0.host.as_str(), url.0.port), ("::1", 80));
        assert_eq!(url.0.target.to_string(), "/");

        for text in [
            "https://crl.example/ca.crl",
            "ftp://crl.example/ca.crl",
            "file:///etc/ca.crl",
            "http://user:pw@crl.example/ca.crl",
        ] {
            let err = CrlSource::parse(text).unwrap_err();
            assert!(matches!(err, CrlError::UnsupportedUrl { .. }), "{err:?}");
            assert!(err.to_string().contains(text), "{err}");
        }
        assert!(matches!(
            CrlSource::parse("http://bad host/"),
            Err(CrlError::BadUrl { .. })
        ));
        assert!(matches!(CrlSource::parse(""), Err(CrlError::EmptySource)));
    }

    /// Sources and the stale policy read from configuration text; the policy defaults to Deny.
    #[test]
    fn configuration_values_deserialize() {
        let sources: Vec<CrlSource> =
            serde_json::from_str(r#"["ca.crl", "http://crl.example/ca.crl"]"#).unwrap();
        assert!(matches!(sources[1], CrlSource::Url(_)));
        assert!(serde_json::from_str::<CrlSource>(r#""https://crl.example/""#).is_err());
        assert_eq!(
            serde_json::from_str::<CrlStale>(r#""allow""#).unwrap(),
            CrlStale::Allow
        );
        assert_eq!(
            serde_json::from_str::<CrlStale>(r#""deny""#).unwrap(),
            CrlStale::Deny
        );
        assert!(serde_json::from_str::<CrlStale>(r#""maybe""#).is_err());
        assert_eq!(CrlStale::default(), CrlStale::Deny);
    }

    /// Serves one connection: reads the request head, then writes `response`, or stays silent
    /// until the client hangs up when there is none. Yields the URL and the head it read.
    async fn serve_once(response: Option<Vec<u8>>) -> (CrlSource, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            match response {
                // The client may hang up early (over the cap): a failed write is expected then.
                Some(bytes) => drop(stream.write_all(&bytes).await),
                None => drop(stream.read(&mut [0u8; 1]).await),
            }
            String::from_utf8(head).unwrap()
        });
        let url = format!("http://{addr}/crl/ca.crl");
        (CrlSource::parse(&url).unwrap(), task)
    }

    fn http_response(status: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!("HTTP/1.1 {status}\r\nConnection: close\r\n\r\n").into_bytes();
        response.extend_from_slice(body);
        response
    }

    /// A small cap, and the default timeout so that a loaded machine cannot make a test flaky.
    fn small_cap() -> CrlLimits {
        CrlLimits {
            max_bytes: 4096,
            ..CrlLimits::default()
        }
    }

    /// A CRL is fetched with a plain GET of the URL's path, Host header included.
    #[tokio::test]
    async fn fetches_a_crl_over_http() {
        let crl = Ca::root("CA").crl(&[&[7]], FRESH);
        let (source, server) = serve_once(Some(http_response("200 OK", crl.as_ref()))).await;
        let set = CrlSet::load(std::slice::from_ref(&source), &small_cap())
            .await
            .unwrap();
        assert_eq!(set.crls()[0].der(), &crl);
        assert_eq!(set.crls()[0].source(), &source);
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /crl/ca.crl HTTP/1.1\r\n"), "{head}");
        let host = source
            .to_string()
            .replace("http://", "")
            .replace("/crl/ca.crl", "");
        assert!(
            head.to_lowercase().contains(&format!("host: {host}\r\n")),
            "{head}"
        );
    }

    /// Any answer but 200 is an error, redirects included.
    #[tokio::test]
    async fn non_200_answers_are_errors() {
        for (status, code) in [
            (
                "500 Internal Server Error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "302 Found\r\nLocation: http://127.0.0.1:1/",
                StatusCode::FOUND,
            ),
        ] {
            let (source, _server) = serve_once(Some(http_response(status, b"no"))).await;
            let err = CrlSet::load(std::slice::from_ref(&source), &small_cap())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, CrlError::Status { status, .. } if *status == code),
                "{err:?}"
            );
            assert!(err.to_string().contains(&source.to_string()), "{err}");
        }
    }

    /// A server that never answers makes the fetch time out.
    #[tokio::test]
    async fn silent_server_times_out() {
        let (source, _server) = serve_once(None).await;
        let limits = CrlLimits {
            timeout: Duration::from_millis(200),
            ..small_cap()
        };
        let err = CrlSet::load(&[source], &limits).await.unwrap_err();
        assert!(matches!(err, CrlError::Timeout { .. }), "{err:?}");
    }

    /// A body larger than the cap fails at the cap.
    #[tokio::test]
    async fn oversized_body_fails_at_the_cap() {
        let (source, _server) = serve_once(Some(http_response("200 OK", &[0x30; 64 * 1024]))).await;
        let err = CrlSet::load(&[source], &small_cap()).await.unwrap_err();
        assert!(
            matches!(err, CrlError::TooLarge { max: 4096, .. }),
            "{err:?}"
        );
    }

    /// A port nobody listens on is a connection error naming the URL.
    #[tokio::test]
    async fn unreachable_server_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
        drop(listener);
        let err = CrlSet::load(&[CrlSource::parse(&url).unwrap()], &small_cap())
            .await
            .unwrap_err();
        assert!(matches!(err, CrlError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }
}
