//! PKCS#12 keystores of the dev PKI, the forms Symphony's Java BDK and legacy SDKs take:
//! `<name>.p12` holds a client certificate, its key and the CA chain (friendly name: the CN),
//! and `truststore.p12` holds the CA certificate as a trusted certificate entry (what Java's
//! `KeyStore.getInstance("PKCS12")` reads as a truststore).
//!
//! Both are encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and carry an HMAC-SHA256
//! MAC: what OpenSSL 3, Java 11 and later, and Python's `cryptography` read.

use std::fmt;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rcgen::KeyPair;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

use super::PkiError;

/// The keystore password when none is given: Java's own default, which the Java BDK's
/// examples use too.
pub const DEFAULT_P12_PASSWORD: &str = "changeit";
/// The truststore's file name.
pub(crate) const TRUSTSTORE: &str = "truststore.p12";
/// The truststore's one entry.
const TRUSTSTORE_ALIAS: &str = "sessionauth dev ca";
/// PBKDF2 iterations, for the encryption and for the MAC (OpenSSL 3 uses 2048).
const ITERATIONS: u32 = 10_000;

/// The password that protects the dev PKI's PKCS#12 files. Never shown by `Debug`.
#[derive(Clone)]
pub struct P12Password(Zeroizing<String>);

impl P12Password {
    /// A password given by the user; `None` when it is empty (Java refuses an empty keystore
    /// password).
    pub fn new(password: String) -> Option<Self> {
        (!password.is_empty()).then(|| Self(Zeroizing::new(password)))
    }

    /// Whether this is [`DEFAULT_P12_PASSWORD`], which may be shown.
    pub fn is_default(&self) -> bool {
        self.0.as_str() == DEFAULT_P12_PASSWORD
    }

    /// The password itself: for the keystore codec, never for a log line.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for P12Password {
    fn default() -> Self {
        Self(Zeroizing::new(DEFAULT_P12_PASSWORD.to_owned()))
    }
}

impl fmt::Debug for P12Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P12Password(<redacted>)")
    }
}

/// `<name>.p12`: the private key of `key_pem` with the certificate chain `cert_pem` then
/// `ca_pem`, under the alias (friendly name) `alias`.
pub(crate) fn client_keystore(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    alias: &str,
    password: &P12Password,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let leaf = first_cert(cert_pem, "client certificate")?;
    let ca = first_cert(ca_pem, "CA certificate")?;
    let key_der = Zeroizing::new(KeyPair::from_pem(key_pem)?.serialize_der());
    let key = PrivateKey::from_der(&key_der)?;
    // The local key id links the key to its certificate: the certificate's SHA-256.
    let key_id = crate::crypto::digest::digest(&crate::crypto::digest::SHA256, leaf.as_der());
    let chain = PrivateKeyChain::new(key_id.as_ref(), key, [leaf, ca]);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    write(&store, password).map(Zeroizing::new)
}

/// `truststore.p12`: the CA certificate `ca_pem` as a trusted certificate entry.
pub(crate) fn truststore(ca_pem: &str, password: &P12Password) -> Result<Vec<u8>, PkiError> {
    let mut store = KeyStore::new();
    store.add_entry(
        TRUSTSTORE_ALIAS,
        KeyStoreEntry::Certificate(first_cert(ca_pem, "CA certificate")?),
    );
    write(&store, password)
}

fn write(store: &KeyStore, password: &P12Password) -> Result<Vec<u8>, PkiError> {
    Ok(store
        .writer(password.expose())
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()?)
}

/// The first certificate of a PEM text.
fn first_cert(pem: &str, what: &'static str) -> Result<Certificate, PkiError> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or(PkiError::NoPemCertificate(what))?;
    Ok(Certificate::from_der(der.as_ref())?)
}

#[cfg(test)]
mod tests {
    use p12_keystore::Pkcs12ImportPolicy;

    use super::*;
    use crate::pki::{Ca, Validity};

    /// A client keystore opens with its password, not with another, and holds the key under
    /// the CN with the leaf then the CA; the truststore holds the CA alone; `Debug` hides the
    /// password.
    #[test]
    fn keystores_hold_what_they_should() {
        let ca = Ca::generate("test CA").unwrap();
        let bot = ca
            .issue_client("bot.user", Validity::days_from_now(1))
            .unwrap();
        let password = P12Password::new("s3cret".to_owned()).unwrap();
        let p12 = client_keystore(
            &bot.cert_pem,
            bot.key_pem(),
            ca.cert_pem(),
            "bot.user",
            &password,
        )
        .unwrap();
        assert!(KeyStore::from_pkcs12(&p12, "wrong", Pkcs12ImportPolicy::Relaxed).is_err());
        let store = KeyStore::from_pkcs12(&p12, "s3cret", Pkcs12ImportPolicy::Relaxed).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "bot.user");
        assert_eq!(chain.certs().len(), 2);
        assert!(chain.certs()[0].subject().contains("bot.user"));
        assert!(chain.certs()[1].subject().contains("test CA"));
        let key = KeyPair::from_pem(bot.key_pem()).unwrap();
        assert_eq!(chain.key().as_der(), key.serialize_der().as_slice());

        let trust = truststore(ca.cert_pem(), &password).unwrap();
        let store = KeyStore::from_pkcs12(&trust, "s3cret", Pkcs12ImportPolicy::Relaxed).unwrap();
        assert_eq!(store.entries_len(), 1);
        assert!(matches!(
            store.entry(TRUSTSTORE_ALIAS),
            Some(KeyStoreEntry::Certificate(c)) if c.subject().contains("test CA")
        ));

        assert!(!format!("{password:?}").contains("s3cret"));
        assert!(P12Password::new(String::new()).is_none());
        assert!(P12Password::default().is_default() && !password.is_default());
    }
}
