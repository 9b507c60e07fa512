//! Settings given on the command line or in the environment (`--listen`, `SESSIONAUTH_LISTEN`,
//! …), which win over the configuration file: flag > environment > file > default. clap
//! settles flag against environment; [`Overrides`] is what it found, applied onto the file's
//! values (or the embedded defaults) before they are validated, so an override is checked
//! exactly as the file's key would be.
//!
//! Relative paths in an override are relative to the working directory (the file's own paths
//! stay relative to the file's folder).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{
    is_redis_url, resolve_store, Config, ConfigError, DirectorySource, RawConfig, RawRedis,
    DEFAULT_CERTS_DIR, DEFAULT_DATA_DIR,
};
use crate::pki::{CA_CERT, SERVER_CERT, SERVER_KEY};

/// Command-line and environment settings that replace the configuration's.
#[derive(Clone, Default)]
pub struct Overrides {
    /// `--listen`: replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// `--directory`: replaces `directory`.
    pub directory: Option<PathBuf>,
    /// `--data-dir`: replaces `data_dir` (the embedded store's folder).
    pub data_dir: Option<PathBuf>,
    /// `--certs`: the folder of `server.pem`, `server-key.pem` and `ca.pem` (the dev PKI's
    /// layout). Without a file it is where the dev PKI is made and the key folder; with one it
    /// replaces `tls.cert`, `tls.key` and `tls.client_ca`.
    pub certs: Option<PathBuf>,
    /// `--store`: replaces `store` (it may hold a Redis password: never shown).
    pub store: Option<String>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("directory", &self.directory)
            .field("data_dir", &self.data_dir)
            .field("certs", &self.certs)
            .field("store", &self.store.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The flag and variable that set `data_dir`, for errors about it.
const DATA_DIR_NAMES: &str = "--data-dir (SESSIONAUTH_DATA_DIR)";
/// The flag and variable that set `store`.
const STORE_NAMES: &str = "--store (SESSIONAUTH_STORE)";

impl Config {
    /// The configuration `file` describes (the embedded defaults without one), with
    /// `overrides` applied before validation.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let overrides = overrides.absolute()?;
        match file {
            Some(path) => {
                let raw = overrides.apply_to_file(RawConfig::read(path)?)?;
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                raw.resolve(base).map_err(|e| e.at(path))
            }
            None => overrides.apply_to_defaults(),
        }
    }
}

impl Overrides {
    /// The same overrides with every relative path made absolute against the working
    /// directory.
    fn absolute(&self) -> Result<Self, ConfigError> {
        let abs = |p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            p.as_deref()
                .map(|p| {
                    std::path::absolute(p).map_err(|source| ConfigError::Read {
                        path: p.to_owned(),
                        source,
                    })
                })
                .transpose()
        };
        Ok(Self {
            listen: self.listen,
            directory: abs(&self.directory)?,
            data_dir: abs(&self.data_dir)?,
            certs: abs(&self.certs)?,
            store: self.store.clone(),
        })
    }

    /// Replaces the file's keys with the overrides. A `--store` of another kind drops the
    /// file's keys that only applied to the store it replaces (`data_dir`, `redis_prefix`); a
    /// `--data-dir` for a store that is not embedded is refused.
    fn apply_to_file(self, mut raw: RawConfig) -> Result<RawConfig, ConfigError> {
        if let Some(addr) = self.listen {
            raw.listen = Some(addr.to_string());
        }
        if let Some(directory) = self.directory {
            raw.directory = Some(directory);
        }
        if let Some(store) = self.store {
            match store_kind(&store) {
                StoreKind::Embedded => raw.drop_redis_keys(),
                StoreKind::Redis => raw.data_dir = None,
                StoreKind::Other => {
                    raw.data_dir = None;
                    raw.drop_redis_keys();
                }
            }
            raw.store = Some(store);
        }
        if let Some(data_dir) = self.data_dir {
            if store_kind(raw.store.as_deref().unwrap_or("embedded")) != StoreKind::Embedded {
                return Err(override_error(
                    DATA_DIR_NAMES,
                    "applies only to store = \"embedded\"",
                ));
            }
            raw.data_dir = Some(data_dir);
        }
        if let Some(certs) = self.certs {
            raw.tls.cert = certs.join(SERVER_CERT);
            raw.tls.key = certs.join(SERVER_KEY);
            raw.tls.client_ca = vec![certs.join(CA_CERT)];
        }
        Ok(raw)
    }

    /// The embedded defaults, with the dev PKI (and key folder) in `--certs` and the embedded
    /// store in `--data-dir` when given, and the other overrides applied.
    fn apply_to_defaults(self) -> Result<Config, ConfigError> {
        let certs = self.certs.unwrap_or_else(|| DEFAULT_CERTS_DIR.into());
        let mut config = Config::embedded_defaults_in(certs);
        if let Some(addr) = self.listen {
            config.listen = addr;
        }
        if let Some(directory) = self.directory {
            config.directory = DirectorySource::File(directory);
        }
        if self.store.is_some() || self.data_dir.is_some() {
            if let Some(store) = &self.store {
                if store_kind(store) != StoreKind::Embedded && self.data_dir.is_some() {
                    return Err(override_error(
                        DATA_DIR_NAMES,
                        "applies only to store = \"embedded\"",
                    ));
                }
            }
            config.store = resolve_store(
                self.store,
                self.data_dir,
                PathBuf::from(DEFAULT_DATA_DIR),
                RawRedis::default(),
                None,
            )
            .map_err(|message| override_error(STORE_NAMES, &message))?;
        }
        Ok(config)
    }
}

/// Which kind of store a `store` value names, as far as the keys that apply to it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Embedded,
    Redis,
    /// `memory`, or a value that validation refuses.
    Other,
}

fn store_kind(store: &str) -> StoreKind {
    if store == "embedded" {
        StoreKind::Embedded
    } else if is_redis_url(store) {
        StoreKind::Redis
    } else {
        StoreKind::Other
    }
}

fn override_error(names: &'static str, message: &str) -> ConfigError {
    ConfigError::Override {
        names,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreConfig;
    use super::*;

    const FILE: &str = r#"
        listen = "127.0.0.1:9000"
        store = "embedded"
        data_dir = "state"
        [tls]
        cert = "server.pem"
        key = "server-key.pem"
        client_ca = ["ca.pem"]
    "#;

    fn write_file(dir: &Path) -> PathBuf {
        let path = dir.join("sessionauth.toml");
        std::fs::write(&path, FILE).unwrap();
        path
    }

    /// No overrides: exactly the file.
    #[test]
    fn no_overrides_is_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path());
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(
            c.store,
            StoreConfig::Embedded {
                data_dir: dir.path().join("state")
            }
        );
    }

    /// Each override replaces the file's key; paths are absolute, relative ones taken from the
    /// working directory; IPv6 addresses are accepted.
    #[test]
    fn overrides_replace_the_files_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path());
        let cwd = std::env::current_dir().unwrap();
        let overrides = Overrides {
            listen: Some("[::1]:8443".parse().unwrap()),
            directory: Some("dir.toml".into()),
            data_dir: Some("/var/lib/sa".into()),
            certs: Some("pki".into()),
            store: None,
        };
        let c = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(c.listen.to_string(), "[::1]:8443");
        assert_eq!(c.directory, DirectorySource::File(cwd.join("dir.toml")));
        assert_eq!(
            c.store,
            StoreConfig::Embedded {
                data_dir: "/var/lib/sa".into()
            }
        );
        assert_eq!(c.tls.cert_chain, cwd.join("pki").join(SERVER_CERT));
        assert_eq!(c.tls.key, cwd.join("pki").join(SERVER_KEY));
        assert_eq!(c.tls.client_cas, vec![cwd.join("pki").join(CA_CERT)]);
    }

    /// A `--store` of another kind drops the file's `data_dir`; `--data-dir` with a store that
    /// is not embedded is refused, naming the flag; a bad `--store` never echoes its value.
    #[test]
    fn store_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path());
        let memory = Overrides {
            store: Some("memory".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &memory).unwrap();
        assert_eq!(c.store, StoreConfig::Memory);
        let clash = Overrides {
            data_dir: Some("d".into()),
            ..memory
        };
        let e = Config::load(Some(&path), &clash).unwrap_err().to_string();
        assert!(e.contains("--data-dir"), "{e}");
        let e = Config::load(None, &clash).unwrap_err().to_string();
        assert!(e.contains("--data-dir"), "{e}");
        let bad = Overrides {
            store: Some("mongodb://u:hunter2@db".into()),
            ..Overrides::default()
        };
        let e = Config::load(None, &bad).unwrap_err().to_string();
        assert!(e.contains("--store") && !e.contains("hunter2"), "{e}");
        assert!(!format!("{bad:?}").contains("hunter2"));
    }

    /// Without a file, `--certs` moves the dev PKI and the key folder, `--data-dir` the store.
    #[test]
    fn overrides_on_the_embedded_defaults() {
        let overrides = Overrides {
            certs: Some("/srv/pki".into()),
            data_dir: Some("/srv/data".into()),
            ..Overrides::default()
        };
        let c = Config::load(None, &overrides).unwrap();
        assert_eq!(c.dev_pki, Some(PathBuf::from("/srv/pki")));
        assert_eq!(c.public_key_dir, Some(PathBuf::from("/srv/pki")));
        assert_eq!(c.tls.cert_chain, Path::new("/srv/pki").join(SERVER_CERT));
        assert_eq!(
            c.store,
            StoreConfig::Embedded {
                data_dir: "/srv/data".into()
            }
        );
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.dev_pki, Some(PathBuf::from("certs")));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
    }
}
