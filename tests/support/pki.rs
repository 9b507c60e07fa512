//! The test PKI, made at test time with rcgen (no vendored keys, and nothing from the crate
//! under test): a trusted CA, a foreign CA nobody trusts, and a second trusted CA for the
//! subjects a plain `CN=` cannot express (no CN, two CNs). The files live in a temporary folder.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use time::OffsetDateTime;

/// File names in the PKI folder.
pub const CA_FILE: &str = "ca.pem";
/// The second trusted CA (odd subjects).
pub const ODD_CA_FILE: &str = "odd-ca.pem";
/// The server certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The server certificate's key.
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// How far back certificates start, so that a clock a little behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(300);

/// From when to when a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start.
    pub not_before: OffsetDateTime,
    /// End.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago until `days` from now.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - BACKDATE,
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }

    /// From a few minutes ago until `ahead` from now.
    pub fn for_the_next(ahead: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - BACKDATE,
            not_after: now + ahead,
        }
    }

    /// Ended a day ago (started two days ago).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::from_secs(2 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        }
    }
}

/// A certificate and its key, as PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    key_pem: String,
    /// The certificate's serial number (what a CRL names).
    pub serial: SerialNumber,
}

impl Issued {
    /// The private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// A certificate authority.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed CA `CN=<name>`, valid for ten years.
    pub fn generate(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = params(subject(name), Validity::days_from_now(3650));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA `CN=<name>` signed by this CA, and its serial (what this CA's CRL
    /// names to revoke it).
    pub fn issue_intermediate(&self, name: &str) -> (Self, SerialNumber) {
        let key = KeyPair::generate().expect("intermediate key");
        let mut params = params(subject(name), Validity::days_from_now(365));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let serial = params
            .serial_number
            .clone()
            .expect("params() sets a serial");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate certificate");
        let ca = Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        };
        (ca, serial)
    }

    /// A client certificate for `cn` signed by this (intermediate) CA, presented with this
    /// CA's certificate after it.
    pub fn client_with_chain(&self, cn: &str) -> Identity {
        let leaf = self.issue_client(cn, Validity::days_from_now(30));
        Identity::from_pem(
            &format!("{}{}", leaf.cert_pem, self.cert_pem),
            leaf.key_pem(),
        )
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is the CN).
    pub fn issue_server(&self, names: &[&str], validity: Validity) -> Issued {
        let mut params = params(
            subject(names.first().copied().unwrap_or("localhost")),
            validity,
        );
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose subject is exactly `CN=<cn>`.
    pub fn issue_client(&self, cn: &str, validity: Validity) -> Issued {
        self.issue_client_with_subject(subject(cn), validity)
    }

    /// A client certificate whose subject is exactly `subject`.
    pub fn issue_client_with_subject(&self, subject: DistinguishedName, v: Validity) -> Issued {
        let mut params = params(subject, v);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A CRL signed by this CA revoking `serials` (none: an empty CRL), DER. Its `thisUpdate`
    /// is a day before `next_update` or now, whichever is earlier; a `next_update` in the past
    /// makes a stale CRL.
    pub fn crl(&self, serials: &[&SerialNumber], next_update: OffsetDateTime) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now.min(next_update) - Duration::from_secs(86_400),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: (*serial).clone(),
                    revocation_time: now - Duration::from_secs(60),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("CRL").der().to_vec()
    }

    /// A CRL revoking `serials`, due a week from now.
    pub fn fresh_crl(&self, serials: &[&SerialNumber]) -> Vec<u8> {
        self.crl(
            serials,
            OffsetDateTime::now_utc() + Duration::from_secs(7 * 86_400),
        )
    }

    fn sign(&self, mut params: CertificateParams) -> Issued {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = params
            .serial_number
            .clone()
            .expect("params() sets a serial");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn params(subject: DistinguishedName, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .expect("random serial");
    serial[0] &= 0x7f; // positive, as RFC 5280 requires
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

/// A client certificate chain and key, ready for rustls.
pub struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Identity {
    /// From a certificate PEM (leaf first) and a key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        Self { chain, key }
    }

    /// From DER: the certificate chain (leaf first) and a PKCS#8 key (what a PKCS#12
    /// keystore holds).
    pub fn from_der(chain: Vec<Vec<u8>>, pkcs8_key: Vec<u8>) -> Self {
        Self {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(pkcs8_key.into()),
        }
    }

    /// From one PEM holding the certificate and its key (the BDK's bundle file).
    pub fn from_bundle(pem: &str) -> Self {
        Self::from_pem(pem, pem)
    }

    fn from_issued(issued: &Issued) -> Self {
        Self::from_pem(&issued.cert_pem, issued.key_pem())
    }
}

/// The test PKI and the folder holding its files (`ca.pem`, `odd-ca.pem`, `server.pem`,
/// `server-key.pem`).
pub struct Pki {
    dir: TempDir,
    /// The trusted CA; it signed the server certificate.
    pub ca: Ca,
    /// A CA nobody trusts.
    pub foreign: Ca,
    odd: Ca,
}

impl Pki {
    /// A fresh PKI with a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::generate("sessionauth test CA");
        let foreign = Ca::generate("foreign CA");
        let odd = Ca::generate("odd-subject test CA");
        let server = ca.issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(365));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).expect("write PKI file");
        };
        write(CA_FILE, ca.cert_pem());
        write(ODD_CA_FILE, odd.cert_pem());
        write(SERVER_CERT_FILE, &server.cert_pem);
        write(SERVER_KEY_FILE, server.key_pem());
        Self {
            dir,
            ca,
            foreign,
            odd,
        }
    }

    /// The folder holding the files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate `CN=<cn>` from the trusted CA, valid for a year.
    pub fn client(&self, cn: &str) -> Identity {
        self.client_valid(cn, Validity::days_from_now(365))
    }

    /// A client certificate `CN=<cn>` from the trusted CA, valid for a year, and its serial
    /// number (for a CRL to revoke).
    pub fn client_with_serial(&self, cn: &str) -> (Identity, SerialNumber) {
        let issued = self.ca.issue_client(cn, Validity::days_from_now(365));
        (Identity::from_issued(&issued), issued.serial)
    }

    /// A client certificate `CN=<cn>` from the trusted CA with the given validity.
    pub fn client_valid(&self, cn: &str, validity: Validity) -> Identity {
        Identity::from_issued(&self.ca.issue_client(cn, validity))
    }

    /// A client certificate `CN=<cn>` from the foreign CA.
    pub fn foreign_client(&self, cn: &str) -> Identity {
        Identity::from_issued(&self.foreign.issue_client(cn, Validity::days_from_now(365)))
    }

    /// A client certificate with exactly `subject`, from the second trusted CA.
    pub fn client_with_subject(&self, subject: DistinguishedName) -> Identity {
        Identity::from_issued(
            &self
                .odd
                .issue_client_with_subject(subject, Validity::days_from_now(365)),
        )
    }

    /// A client certificate whose subject has no CN at all (only `O=`).
    pub fn client_without_cn(&self) -> Identity {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example");
        self.client_with_subject(dn)
    }

    /// A client certificate whose subject has two CNs (`bot.user` and `admin.bot`).
    pub fn client_with_two_cns(&self) -> Identity {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "bot.user");
        // rcgen keeps one value per attribute type; a custom type with CN's OID adds a second.
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "admin.bot");
        self.client_with_subject(dn)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
