//! Registered keys: the RSA public keys a service user or app signs its JWTs with, and the
//! key-folder rule.
//!
//! An entry registers `publicKey` (PEM inline) or `publicKeyPath` (a file, relative to the
//! directory file's folder), and `previousPublicKey` / `previousPublicKeyPath` during a key
//! rotation. A key that does not parse, or is shorter than 2048 bits, is a load error naming the
//! entry. Entries without a configured key can also take one from a key folder: see
//! [`Directory::use_key_folder`].

use std::path::{Path, PathBuf};

use super::{Directory, DirectoryError};
use crate::rsakey::{PublicKeyError, RsaPublicKey};

/// The RSA public keys a service user or app authenticates with: the current one and, during a
/// rotation, the previous one. A JWT verifying with either is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisteredKeys {
    /// The current key.
    pub(crate) current: RsaPublicKey,
    /// The key being rotated out, still accepted.
    pub(crate) previous: Option<RsaPublicKey>,
}

impl RegisteredKeys {
    /// The current key, then the previous one.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RsaPublicKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
}

impl Directory {
    /// The key-folder rule: every service user and app with no configured key takes
    /// `<folder>/<name>-rsa.pub.pem` as its key when that file exists (the dev PKI writes these
    /// files). A file that exists but holds no usable key is a load error naming the entry.
    /// Returns the files taken.
    pub(crate) fn use_key_folder(&mut self, folder: &Path) -> Result<Vec<PathBuf>, DirectoryError> {
        let mut taken = Vec::new();
        for name in self.certificate_principals() {
            if self.keys.contains_key(&name) {
                continue;
            }
            let path = crate::pki::KeyPairFiles::new(folder, &name).public;
            if !path.exists() {
                continue;
            }
            let at = EntryOrigin {
                origin: &format!("key folder {}", folder.display()),
                entry: self.entry_name(&name),
                base: folder,
            };
            let current = read_key(&path)
                .map_err(|source| at.key_error(format!("key file {}", path.display()), source))?;
            self.keys.insert(
                name,
                RegisteredKeys {
                    current,
                    previous: None,
                },
            );
            taken.push(path);
        }
        Ok(taken)
    }
}

/// Why a registered key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// The key file could not be read.
    #[error("cannot read the file")]
    Read(#[source] std::io::Error),
    /// The key is not usable.
    #[error(transparent)]
    Key(#[from] PublicKeyError),
}

/// One entry's key fields as the file has them, each pair `(inline PEM, file)`.
pub(super) struct KeySources {
    /// `publicKey`, `publicKeyPath`.
    pub(super) current: (Option<String>, Option<PathBuf>),
    /// `previousPublicKey`, `previousPublicKeyPath`.
    pub(super) previous: (Option<String>, Option<PathBuf>),
}

/// Which entry keys belong to, for errors, and the folder relative key paths start from.
pub(super) struct EntryOrigin<'a> {
    /// The file, "(embedded sample)", or the key folder.
    pub(super) origin: &'a str,
    /// For example `user "bot.user"`.
    pub(super) entry: String,
    /// The folder relative key paths start from.
    pub(super) base: &'a Path,
}

impl KeySources {
    /// Reads the keys, or `None` when the entry registers none.
    pub(super) fn load(
        &self,
        at: &EntryOrigin<'_>,
    ) -> Result<Option<RegisteredKeys>, DirectoryError> {
        let current = at.one(&self.current, ("publicKey", "publicKeyPath"))?;
        let previous = at.one(
            &self.previous,
            ("previousPublicKey", "previousPublicKeyPath"),
        )?;
        match (current, previous) {
            (Some(current), previous) => Ok(Some(RegisteredKeys { current, previous })),
            (None, Some(_)) => Err(at.inconsistent(
                "has a previous public key but no current one (publicKey or publicKeyPath)",
            )),
            (None, None) => Ok(None),
        }
    }
}

impl EntryOrigin<'_> {
    /// One key from its inline and its file field (`names`), at most one of them set.
    fn one(
        &self,
        (inline, path): &(Option<String>, Option<PathBuf>),
        names: (&str, &str),
    ) -> Result<Option<RsaPublicKey>, DirectoryError> {
        match (inline, path) {
            (Some(_), Some(_)) => {
                Err(self.inconsistent(&format!("sets both {} and {}: use one", names.0, names.1)))
            }
            (Some(pem), None) => RsaPublicKey::from_pem(pem)
                .map(Some)
                .map_err(|e| self.key_error(names.0.to_owned(), e.into())),
            (None, Some(path)) => {
                let path = self.base.join(path);
                read_key(&path)
                    .map(Some)
                    .map_err(|e| self.key_error(format!("{} {}", names.1, path.display()), e))
            }
            (None, None) => Ok(None),
        }
    }

    fn inconsistent(&self, message: &str) -> DirectoryError {
        DirectoryError::Inconsistent {
            origin: self.origin.to_owned(),
            message: format!("{} {message}", self.entry),
        }
    }

    fn key_error(&self, field: String, source: KeyLoadError) -> DirectoryError {
        DirectoryError::Key {
            origin: self.origin.to_owned(),
            entry: self.entry.clone(),
            field,
            source,
        }
    }
}

fn read_key(path: &Path) -> Result<RsaPublicKey, KeyLoadError> {
    let pem = crate::files::read_text_capped(path, crate::files::MAX_PEM_BYTES)
        .map_err(KeyLoadError::Read)?;
    Ok(RsaPublicKey::from_pem(&pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(bits: usize) -> String {
        use rsa::pkcs8::EncodePublicKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
        key.to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    }

    fn bot(extra: &str) -> String {
        format!("[[user]]\nid=1\nusername=\"bot\"\naccountType=\"SYSTEM\"\n{extra}\n")
    }

    /// Keys load inline and by path (relative to the directory file), current and previous.
    #[test]
    fn keys_load_inline_and_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pem(2048), pem(2048));
        std::fs::write(dir.path().join("app.pub.pem"), &b).unwrap();
        let text = format!(
            "{}[[app]]\nappId=\"app\"\npublicKeyPath=\"app.pub.pem\"\npreviousPublicKey='''{a}'''\n",
            bot(&format!("publicKey='''{a}'''"))
        );
        let file = dir.path().join("directory.toml");
        std::fs::write(&file, text).unwrap();
        let d = Directory::from_file(&file).unwrap();
        assert_eq!(d.public_keys("bot").unwrap().iter().count(), 1);
        let app = d.public_keys("app").unwrap();
        assert_eq!(app.current, RsaPublicKey::from_pem(&b).unwrap());
        assert_eq!(app.previous, Some(RsaPublicKey::from_pem(&a).unwrap()));
        assert_eq!(app.iter().count(), 2);
        assert!(d.public_keys("nobody").is_none());
    }

    /// A short key, garbage, a missing file, both forms at once, a previous key alone and a key
    /// on an end user are load errors naming the entry; the reason is the error's source.
    #[test]
    fn bad_keys_are_load_errors_naming_the_entry() {
        let short = pem(1024);
        let good = pem(2048);
        let cases = [
            (bot(&format!("publicKey='''{short}'''")), "at least 2048"),
            (bot("publicKey=\"garbage\""), "not a PEM public key"),
            (bot("publicKeyPath=\"/nonexistent/k.pem\""), "cannot read"),
            (
                bot(&format!("publicKey='''{good}'''\npublicKeyPath=\"x\"")),
                "both publicKey and publicKeyPath",
            ),
            (
                bot(&format!("previousPublicKey='''{good}'''")),
                "no current one",
            ),
            (
                format!(
                    "[[user]]\nid=2\nusername=\"bot\"\naccountType=\"NORMAL\"\npublicKey='''{good}'''\n"
                ),
                "only service users",
            ),
        ];
        for (text, expected) in cases {
            let e = Directory::from_toml(&text).unwrap_err();
            let source = std::error::Error::source(&e).map(ToString::to_string);
            let chain = format!("{e}: {}", source.unwrap_or_default());
            assert!(chain.contains("\"bot\""), "{chain}");
            assert!(chain.contains(expected), "{expected}: {chain}");
            if let Some(source) = std::error::Error::source(&e) {
                assert!(!e.to_string().contains(&source.to_string()), "{e}");
            }
        }
    }

    /// The key-folder rule gives `<name>-rsa.pub.pem` to service users and apps without a
    /// configured key, leaves end users alone, and refuses a bad file naming the entry.
    #[test]
    fn key_folder_rule() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Directory::embedded_sample().unwrap();
        for name in ["bot.user", "demo-app", "alice"] {
            std::fs::write(dir.path().join(format!("{name}-rsa.pub.pem")), pem(2048)).unwrap();
        }
        let taken = d.use_key_folder(dir.path()).unwrap();
        assert_eq!(taken.len(), 2);
        assert!(d.public_keys("bot.user").is_some() && d.public_keys("demo-app").is_some());
        assert!(d.public_keys("alice").is_none() && d.public_keys("admin.bot").is_none());
        std::fs::write(dir.path().join("admin.bot-rsa.pub.pem"), "junk").unwrap();
        let e = d.use_key_folder(dir.path()).unwrap_err();
        assert!(e.to_string().contains("user \"admin.bot\""), "{e}");
    }
}
