//! Warnings about private keys that others may read, and key folders anyone may write: what
//! `check` prints and `serve` logs at start. A key readable by group or others is one
//! `chmod 600` from being safe; a world-writable key folder lets anyone swap the keys.
//!
//! The folders looked at are those that hold a key the server uses (the TLS key, the signing
//! key) and the dev PKI folder; in them, every file that holds a PEM private key is checked,
//! whatever its name (a `.bundle.pem` carries its key too).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{Config, SigningKeySource};

/// How much of a file is read to see whether it holds a private key.
const SNIFF_BYTES: u64 = 64 * 1024;

/// The warnings for `config`'s key files and folders, one line each, with the command that
/// fixes it. Empty on platforms without Unix permissions.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut folders = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut add_key = |path: &Path| {
        keys.insert(path.to_owned());
        if let Some(parent) = path.parent() {
            folders.insert(folder(parent));
        }
    };
    add_key(&config.tls.key);
    match &config.signing.key {
        SigningKeySource::File(path) | SigningKeySource::Default(path) => add_key(path),
        SigningKeySource::Ephemeral => {}
    }
    if let Some(dir) = &config.dev_pki {
        folders.insert(folder(dir));
    }
    let mut out = Vec::new();
    for dir in &folders {
        if let Some(line) = world_writable(dir) {
            out.push(line);
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file() && holds_private_key(&path) {
                    keys.insert(path);
                }
            }
        }
    }
    out.extend(keys.iter().filter_map(|path| readable_by_others(path)));
    out
}

/// An empty parent (a bare file name) is the current folder.
fn folder(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_owned()
    }
}

fn holds_private_key(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES).read_to_end(&mut head))
        .is_ok()
        && head
            .windows(b"PRIVATE KEY-----".len())
            .any(|w| w == b"PRIVATE KEY-----")
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} has mode {:03o}: group or others may read it; fix: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

#[cfg(unix)]
fn world_writable(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir).ok()?.permissions().mode();
    (mode & 0o002 != 0).then(|| {
        format!(
            "key folder {} has mode {:03o}: anyone may replace the keys in it; fix: chmod o-w {}",
            dir.display(),
            mode & 0o7777,
            dir.display()
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> Option<String> {
    None
}

#[cfg(not(unix))]
fn world_writable(_: &Path) -> Option<String> {
    None
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A key readable by others and a world-writable folder are warned about, each with its
    /// fix; a 0600 key in a 0700 folder, and a certificate, are not.
    #[test]
    fn loose_keys_and_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        chmod(&certs, 0o700);
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
        for name in ["server-key.pem", "bot.bundle.pem", "other-key.pem"] {
            std::fs::write(certs.join(name), key).unwrap();
            chmod(&certs.join(name), 0o600);
        }
        std::fs::write(certs.join("server.pem"), b"-----BEGIN CERTIFICATE-----\n").unwrap();
        chmod(&certs.join("server.pem"), 0o644);
        let mut config = Config::embedded_defaults();
        config.tls.key = certs.join("server-key.pem");
        config.dev_pki = Some(certs.clone());
        assert_eq!(warnings(&config), Vec::<String>::new());

        chmod(&certs.join("bot.bundle.pem"), 0o644);
        chmod(&certs.join("server-key.pem"), 0o640);
        let found = warnings(&config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .any(|w| w.contains("bot.bundle.pem has mode 644") && w.contains("chmod 600")));
        assert!(found
            .iter()
            .any(|w| w.contains("server-key.pem has mode 640")));

        chmod(&certs, 0o777);
        let found = warnings(&config);
        assert!(
            found
                .iter()
                .any(|w| w.contains("key folder") && w.contains("chmod o-w")),
            "{found:?}"
        );
        chmod(&certs, 0o700);
    }
}
