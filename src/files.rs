//! Reading the files the operator names, with a size cap: a path that points at an endless file
//! (`/dev/zero`, a FIFO someone keeps writing) or a huge one by mistake fails at the cap with a
//! clear error instead of reading until memory runs out.

use std::io::Read as _;
use std::path::Path;

/// The cap for a configuration or directory file.
pub const MAX_TOML_BYTES: u64 = 16 * 1024 * 1024;
/// The cap for a PEM file (a certificate chain, a CA bundle, a key).
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// Reads at most `max` bytes of `path`; a longer file is an `InvalidData` error that names the
/// cap. Only `max + 1` bytes are ever read.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > max) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than the {max}-byte limit for this kind of file (is it the right file?)"
            ),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`], as UTF-8 text.
pub fn read_text_capped(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_capped(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file at the cap reads; one byte more is refused; an endless file stops at the cap.
    #[test]
    fn caps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(read_capped(&path, 4).unwrap(), b"abcd");
        let e = read_capped(&path, 3).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("3-byte limit"), "{e}");
        let e = read_text_capped(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("1024-byte limit"), "{e}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_text_capped(&path, 4).is_err());
    }
}
