//! Reading and writing the dev PKI's files: a file is only ever created new (an existing one is
//! never replaced, so a key is never overwritten), a secret with mode 0600 from the moment it
//! exists, and synced to disk before the write counts as done.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use super::PkiError;

/// Reads a text file.
pub(crate) fn read(path: &Path) -> Result<String, PkiError> {
    crate::files::read_text_capped(path, crate::files::MAX_PEM_BYTES)
        .map_err(|source| io(path, source))
}

/// Writes a new file that holds a secret: mode 0600 from the moment it exists, never replacing
/// an existing file.
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_new(path, contents, 0o600)
}

/// Writes a new file anyone may read (mode 0644), never replacing an existing file.
pub(crate) fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_new(path, contents, 0o644)
}

/// Creates a folder and its parents, when missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| io(dir, source))
}

/// Removes a file that is about to be made again (a certificate or public key whose private key
/// is gone).
pub(crate) fn remove(path: &Path) -> Result<(), PkiError> {
    fs::remove_file(path).map_err(|source| io(path, source))
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::KeyExists(path.to_owned())
        } else {
            io(path, e)
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret is written 0600 and a public file 0644; neither replaces an existing file.
    #[test]
    fn files_are_new_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
        };
        let (secret, public) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
        write_secret(&secret, "s").unwrap();
        write_public(&public, "p").unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(mode(&public) & 0o600, 0o600);
        assert!(matches!(
            write_secret(&secret, "other"),
            Err(PkiError::KeyExists(_))
        ));
        assert!(matches!(
            write_public(&public, "other"),
            Err(PkiError::KeyExists(_))
        ));
        assert_eq!(read(&secret).unwrap(), "s");
        assert!(matches!(
            read(&dir.path().join("absent")),
            Err(PkiError::Io { .. })
        ));
    }
}
