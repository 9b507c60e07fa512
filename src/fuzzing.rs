//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from the docs, and free to
//! change). Each takes arbitrary bytes and drives one parser the way the server does; none
//! may panic, hang or allocate without bound, whatever the input.

use std::path::Path;

use rustls_pki_types::CertificateDer;

use crate::clock::Millis;

/// A fixed "now" (seconds) for the time rules, so that runs are reproducible.
const NOW_SECS: i64 = 1_800_000_000;

fn text(data: &[u8]) -> &str {
    // Invalid UTF-8 is cut at the first bad byte: the HTTP layer hands the parsers `&str`.
    match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// The JWT parser and its time rules (the signature is not checked: no key is registered), and
/// the throttle's unverified subject reader.
pub fn jwt(data: &[u8]) {
    let token = text(data);
    let _ = crate::jwt::Assertion::parse(token, Millis::from_epoch_secs(NOW_SECS));
    let _ = crate::jwt::claimed_subject(token);
}

/// The router and path decoding, and the `scope` query parser. The first byte picks the
/// method; the rest is split at the first `?` into path and query.
pub fn request(data: &[u8]) {
    let (method, rest) = match data.split_first() {
        Some((m, rest)) => (
            if m % 2 == 0 {
                &b"GET"[..]
            } else {
                &b"POST"[..]
            },
            rest,
        ),
        None => (&b"GET"[..], data),
    };
    let target = text(rest);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    crate::http::fuzz_request(method, path, query);
}

/// The Redis store's record decoder (the header line and the JSON session after it).
pub fn redis_record(data: &[u8]) {
    let _ = crate::store::redis::decode(data);
}

/// The certificate identity reader: a DER leaf (then the rest as one more certificate of the
/// chain, split at a fixed point), as the TLS layer hands it over after verification.
pub fn identity(data: &[u8]) {
    let split = data.len() / 2;
    let chain = [
        CertificateDer::from(data.to_vec()),
        CertificateDer::from(data[split..].to_vec()),
    ];
    let peer = crate::identity::PeerIdentity::from_verified_chain(Some(&chain[..1]));
    let _ = peer.common_name();
    let _ = crate::identity::PeerIdentity::from_verified_chain(Some(&chain));
}

/// The directory parser (key paths resolve under a folder that does not exist, so no file is
/// read).
pub fn directory(data: &[u8]) {
    let _ = crate::directory::Directory::parse(
        text(data),
        "fuzz",
        Path::new("/nonexistent-sessionauth-fuzz"),
    );
}

/// The configuration parser and validation.
pub fn config(data: &[u8]) {
    let _ =
        crate::config::Config::from_toml(text(data), Path::new("/nonexistent-sessionauth-fuzz"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry point takes empty, short, non-UTF-8 and plausible input without panicking.
    #[test]
    fn entry_points_take_anything() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"a.b.c",
            b"\x01/sessionauth/v1/app/username/%zz/authenticate?scope=a%20b",
            b"{\"v\":1}\n",
            b"[[user]]\nid = 1\nusername = \"x\"\n",
        ];
        for data in inputs {
            jwt(data);
            request(data);
            redis_record(data);
            identity(data);
            directory(data);
            config(data);
        }
    }
}
