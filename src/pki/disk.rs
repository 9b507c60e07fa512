//! Reading and writing the dev PKI's files: a file is only ever created new (an existing one is
//! never replaced, so a key is never overwritten), a secret with mode 0600 from the moment it
//! exists, and synced to disk before the write counts as done.
//!
//! Creation is race-free, so that several nodes started at once on one shared key folder agree
//! on one key: the whole file is written to a temporary file beside it and synced, then
//! hard-linked to its name. The link either appears complete or fails with `AlreadyExists`
//! (another process won), atomically; whoever loses reads the winner's file, which is complete
//! because it was linked only after it was written and synced.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rsa::pkcs8::der::zeroize::Zeroizing;

use super::PkiError;

/// What [`create_secret_or_read`] and [`create_public_or_read`] found.
pub(crate) enum Outcome {
    /// The file is the one just written.
    Created,
    /// Another writer got there first: its contents.
    Existing(Zeroizing<String>),
}

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

/// Writes a new secret file (0600) as [`write_secret`] does, or, when the file exists already
/// (another process made it first, maybe at this very moment), reads what it holds.
pub(crate) fn create_secret_or_read(path: &Path, contents: &str) -> Result<Outcome, PkiError> {
    create_or_read(path, contents, 0o600)
}

/// Writes a new public file (0644), or reads the one that exists already.
pub(crate) fn create_public_or_read(path: &Path, contents: &str) -> Result<Outcome, PkiError> {
    create_or_read(path, contents, 0o644)
}

/// Writes a new binary file (a PKCS#12 keystore): mode 0600 when `secret`, else 0644, never
/// replacing an existing file (that is [`PkiError::KeyExists`]).
pub(crate) fn write_new_bytes(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    if create_bytes(path, contents, secret)? {
        Ok(())
    } else {
        Err(PkiError::KeyExists(path.to_owned()))
    }
}

/// Writes a new binary file as [`write_new_bytes`] does; `false` when the file existed already
/// (it is kept as it is).
pub(crate) fn create_bytes(path: &Path, contents: &[u8], secret: bool) -> Result<bool, PkiError> {
    let mode = if secret { 0o600 } else { 0o644 };
    publish(path, contents, mode).map_err(|e| io(path, e))
}

/// Creates a folder and its parents, when missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| io(dir, source))
}

/// Removes a file that is about to be made again (a certificate or public key whose private key
/// is gone). One already gone is fine: a process racing this one removed it.
pub(crate) fn remove(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    match publish(path, contents.as_bytes(), mode) {
        Ok(true) => Ok(()),
        Ok(false) => Err(PkiError::KeyExists(path.to_owned())),
        Err(e) => Err(io(path, e)),
    }
}

fn create_or_read(path: &Path, contents: &str, mode: u32) -> Result<Outcome, PkiError> {
    if publish(path, contents.as_bytes(), mode).map_err(|e| io(path, e))? {
        Ok(Outcome::Created)
    } else {
        Ok(Outcome::Existing(Zeroizing::new(read(path)?)))
    }
}

/// Writes `contents` to a fresh temporary file beside `path` (with `mode`), syncs it, and
/// hard-links it to `path`. `Ok(true)`: `path` is the new file; `Ok(false)`: `path` existed, and
/// is untouched. The temporary file is removed either way.
fn publish(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_name(dir, path)?;
    let written =
        write_synced(&tmp, contents, mode).and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        });
    let _ = fs::remove_file(&tmp);
    if let Ok(true) = written {
        // The new name is durable once its folder is synced; a folder that cannot be opened
        // for that (some platforms) still holds the complete file.
        if let Ok(folder) = fs::File::open(dir) {
            let _ = folder.sync_all();
        }
    }
    written
}

/// `.<name>.<pid>.<random>.tmp` in `dir`: unique to this process and call.
fn temp_name(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut random = [0u8; 8];
    crate::crypto::rand::SecureRandom::fill(&crate::crypto::rand::SystemRandom::new(), &mut random)
        .map_err(|_| std::io::Error::other("no randomness for a temporary file name"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        u64::from_le_bytes(random)
    ));
    Ok(dir.join(tmp))
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents).and_then(|()| file.sync_all())
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
        let (p12, trust) = (dir.path().join("k.p12"), dir.path().join("t.p12"));
        write_new_bytes(&p12, b"\x30\x00", true).unwrap();
        assert_eq!(mode(&p12), 0o600);
        assert!(matches!(
            write_new_bytes(&p12, b"other", true),
            Err(PkiError::KeyExists(_))
        ));
        assert!(create_bytes(&trust, b"t", false).unwrap());
        assert!(!create_bytes(&trust, b"other", false).unwrap());
        assert_eq!(mode(&trust) & 0o600, 0o600);
        assert_eq!(fs::read(&trust).unwrap(), b"t");
        assert!(matches!(
            read(&dir.path().join("absent")),
            Err(PkiError::Io { .. })
        ));
        assert!(matches!(
            create_secret_or_read(&secret, "other").unwrap(),
            Outcome::Existing(s) if s.as_str() == "s"
        ));
        let fresh = dir.path().join("new.pem");
        assert!(matches!(
            create_secret_or_read(&fresh, "n").unwrap(),
            Outcome::Created
        ));
        assert_eq!(mode(&fresh), 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }

    /// Many threads creating one file at once: exactly one creates it, every other reads that
    /// one's complete contents.
    #[test]
    fn concurrent_creators_agree_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let barrier = std::sync::Barrier::new(8);
        let seen: Vec<(bool, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (path, barrier) = (&path, &barrier);
                    s.spawn(move || {
                        let mine = format!("{i}").repeat(10_000);
                        barrier.wait();
                        match create_secret_or_read(path, &mine).unwrap() {
                            Outcome::Created => (true, mine),
                            Outcome::Existing(theirs) => (false, theirs.to_string()),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(seen.iter().filter(|(created, _)| *created).count(), 1);
        let on_disk = read(&path).unwrap();
        assert!(seen.iter().all(|(_, text)| *text == on_disk));
    }
}
