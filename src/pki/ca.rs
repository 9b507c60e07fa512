//! A certificate authority in memory, and the certificates it issues (tests use it to make their
//! PKI at run time). Keys are ECDSA P-256.

use std::fmt;
use std::time::Duration;

use crate::crypto::rand::SecureRandom as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::PkiError;

/// How long the dev CA is valid.
const CA_DAYS: u32 = 3650;
/// Certificates start slightly in the past so that a client whose clock is a little behind
/// still accepts them.
const BACKDATE: Duration = Duration::from_secs(300);

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

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        Self::self_signed_for(name, KeyPair::generate()?)
    }

    /// A self-signed CA named `name` for an existing key (one another process wrote while this
    /// one made its own).
    pub(super) fn self_signed_for(name: &str, key: KeyPair) -> Result<Self, PkiError> {
        let mut params = base_params(name, Validity::days_from_now(CA_DAYS))?;
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

    /// The CA certificate, PEM: the trust store for servers and clients alike.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses, as SANs).
    pub fn issue_server(&self, names: &[&str], validity: Validity) -> Result<Issued, PkiError> {
        self.issue_server_for(KeyPair::generate()?, names, validity)
    }

    /// A client certificate whose subject is exactly `CN=<cn>`.
    pub fn issue_client(&self, cn: &str, validity: Validity) -> Result<Issued, PkiError> {
        self.issue_client_for(KeyPair::generate()?, cn, validity)
    }

    /// A CA from its certificate and key, PEM.
    pub(super) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA's private key, PEM. A secret: write it with mode 0600.
    pub(super) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate for `names` with the given key.
    pub(super) fn issue_server_for(
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

    /// A client certificate `CN=<cn>` with the given key.
    pub(super) fn issue_client_for(
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

impl Issued {
    /// The private key, PEM (PKCS#8). A secret: write it with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// An issued certificate for a key that exists already.
    pub(super) fn existing(cert_pem: String, key_pem: String) -> Self {
        Self { cert_pem, key_pem }
    }

    /// The certificate followed by its key: the single file the Python BDK takes.
    pub(super) fn bundle_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
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
    pub(super) fn checked_days_from_now(days: u32) -> Option<Self> {
        let now = OffsetDateTime::now_utc();
        Some(Self {
            not_before: now - BACKDATE,
            not_after: now.checked_add(time::Duration::days(i64::from(days)))?,
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
    crate::crypto::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| PkiError::Random)?;
    serial[0] &= 0x7f; // positive, as RFC 5280 requires
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output of a CA or an issued certificate never shows a key.
    #[test]
    fn debug_hides_keys() {
        let ca = Ca::generate("t").unwrap();
        let issued = ca.issue_client("c", Validity::days_from_now(1)).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
        assert!(issued.bundle_pem().contains("PRIVATE KEY"));
    }

    /// A CA read back from its PEM files issues certificates as the original does.
    #[test]
    fn ca_reads_back_from_pem() {
        let ca = Ca::generate("t").unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        again
            .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(1))
            .unwrap();
    }
}
