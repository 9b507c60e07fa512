//! The peer's identity, read once from its verified client certificate right after the TLS
//! handshake.
//!
//! The HTTP layer only ever sees a [`PeerIdentity`]; it never touches certificates. rustls has
//! already checked the chain against the configured client CAs by the time this runs, so all
//! that is left is to read the leaf's subject CN (exactly one, as UTF-8) and its `notAfter`.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::clock::Millis;
use crate::session::{Credential, CredentialId, Fingerprint};

/// What the client proved about itself at the TLS layer.
#[derive(Debug, Clone)]
pub enum PeerIdentity {
    /// No client certificate was presented (allowed: `/pod` and `/login` do not need one).
    Anonymous,
    /// A verified client certificate with exactly one common name.
    Certificate(CertIdentity),
    /// A verified certificate that cannot name a principal (no CN, several CNs, not UTF-8).
    Unusable(IdentityError),
}

/// The identity in a verified client certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CertIdentity {
    cn: String,
    not_after: Millis,
    credential: Credential,
}

impl CertIdentity {
    /// The subject's common name: a service user's username or an app's id.
    pub(crate) fn common_name(&self) -> &str {
        &self.cn
    }

    /// When the certificate expires; no session made with it outlives this.
    pub(crate) fn not_after(&self) -> Millis {
        self.not_after
    }

    /// The certificate's issuer and serial number as a [`CredentialId`] (what a CRL entry
    /// names), the same for each intermediate certificate presented with it, and its
    /// fingerprint: recorded with every session the certificate mints.
    pub(crate) fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The certificate's id, then its intermediates': revoking any of them revokes it.
    pub(crate) fn revocation_ids(&self) -> impl Iterator<Item = &CredentialId> {
        std::iter::once(&self.credential.id).chain(&self.credential.chain)
    }
}

impl fmt::Debug for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertIdentity")
            .field("cn", &self.cn)
            .field("not_after", &self.not_after)
            .field("credential", &self.credential)
            .finish()
    }
}

/// Why a verified certificate names no principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate could not be parsed (rustls accepted it, so this should not happen).
    #[error("the client certificate could not be parsed")]
    Unparsable,
    /// The subject has no common name.
    #[error("the client certificate's subject has no common name (CN)")]
    NoCommonName,
    /// The subject has more than one common name: which one is meant would be a guess.
    #[error("the client certificate's subject has more than one common name (CN)")]
    SeveralCommonNames,
    /// The common name is not a UTF-8 string.
    #[error("the client certificate's common name (CN) is not a text string")]
    BadCommonName,
}

impl PeerIdentity {
    /// Reads the identity from the chain rustls verified (`None`: no certificate presented).
    pub(crate) fn from_verified_chain(chain: Option<&[CertificateDer<'_>]>) -> Self {
        match chain.and_then(|c| c.first()) {
            None => Self::Anonymous,
            Some(leaf) => match CertIdentity::from_der(leaf.as_ref(), chain_ids(chain)) {
                Ok(id) => Self::Certificate(id),
                Err(e) => Self::Unusable(e),
            },
        }
    }

    /// The common name, when there is a usable certificate (for the access log).
    pub(crate) fn common_name(&self) -> Option<&str> {
        match self {
            Self::Certificate(c) => Some(c.common_name()),
            _ => None,
        }
    }
}

/// How many certificates after the leaf are recorded.
const MAX_CHAIN: usize = 8;

/// The ids of the certificates presented after the leaf (rustls verified a path through them).
fn chain_ids(chain: Option<&[CertificateDer<'_>]>) -> Vec<CredentialId> {
    let rest = chain.and_then(|c| c.get(1..)).unwrap_or_default();
    // rustls refuses longer paths; extra certificates a client sends are no one's business.
    rest.iter()
        .take(MAX_CHAIN)
        .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok())
        .map(|(_, c)| CredentialId::certificate(c.issuer().as_raw(), c.raw_serial()))
        .collect()
}

impl CertIdentity {
    fn from_der(der: &[u8], chain: Vec<CredentialId>) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
        let mut cns = cert.subject().iter_common_name();
        let first = cns.next().ok_or(IdentityError::NoCommonName)?;
        if cns.next().is_some() {
            return Err(IdentityError::SeveralCommonNames);
        }
        let cn = first.as_str().map_err(|_| IdentityError::BadCommonName)?;
        if cn.is_empty() {
            return Err(IdentityError::NoCommonName);
        }
        let not_after = Millis::from_epoch_secs(cert.validity().not_after.timestamp());
        let credential = Credential {
            id: CredentialId::certificate(cert.issuer().as_raw(), cert.raw_serial()),
            chain,
            fingerprint: Fingerprint::certificate(der),
        };
        Ok(Self {
            cn: cn.to_owned(),
            not_after,
            credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert_with(dn: DistinguishedName) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// A certificate with one CN yields that CN and its expiry.
    #[test]
    fn one_common_name_is_read() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example");
        dn.push(DnType::CommonName, "bot.user");
        let der = cert_with(dn);
        let id = PeerIdentity::from_verified_chain(Some(&[der]));
        assert_eq!(id.common_name(), Some("bot.user"));
    }

    /// No certificate is anonymous; no CN or two CNs are unusable, never a guess.
    #[test]
    fn missing_or_ambiguous_common_name_is_unusable() {
        assert!(matches!(
            PeerIdentity::from_verified_chain(None),
            PeerIdentity::Anonymous
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example");
        let id = PeerIdentity::from_verified_chain(Some(&[cert_with(dn)]));
        assert!(matches!(
            id,
            PeerIdentity::Unusable(IdentityError::NoCommonName)
        ));

        // rcgen's DistinguishedName keeps one value per type, so build a two-CN subject by
        // generating a certificate whose subject is a custom-encoded RDN sequence.
        let two = two_cn_cert();
        let id = PeerIdentity::from_verified_chain(Some(&[two]));
        assert!(
            matches!(
                id,
                PeerIdentity::Unusable(IdentityError::SeveralCommonNames)
            ),
            "{id:?}"
        );
    }

    /// A self-signed certificate whose subject carries the CN attribute twice.
    fn two_cn_cert() -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "first");
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "second");
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }
}
