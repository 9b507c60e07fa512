//! The crypto provider, chosen in this one place: AWS-LC (the default build) or *ring*
//! (`cargo build --no-default-features --features ring`). Everything that hashes, signs,
//! verifies or draws random bytes for a key uses [`digest`], [`signature`] and [`rand`] from
//! here, and TLS uses [`tls_provider`], so the two builds differ in nothing else. The two
//! libraries share one API for these modules (AWS-LC's Rust binding was made to be a drop-in for
//! *ring*).
//!
//! Why AWS-LC by default, measured side by side in one run (`scripts/bench-providers.sh`, figures
//! in `docs/benchmarks.md`, "The crypto provider: AWS-LC by default"): its TLS provider offers
//! and accepts the post-quantum hybrid key exchange X25519MLKEM768 (which current curl, OpenSSL
//! 3.5, browsers and Go negotiate; *ring* has no ML-KEM), it signs RSA about twice as fast
//! (`POST /login/idm/tokens`), and it has a FIPS build. The cost: a C compiler, about 20 s more
//! of a cold release build on two cores, and a full handshake about a tenth slower when ML-KEM
//! is used. When both features are on, AWS-LC is used.

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("sessionauth needs a crypto provider: enable the `ring` or the `aws-lc-rs` feature");

#[cfg(feature = "aws-lc-rs")]
pub(crate) use aws_lc_rs::{digest, rand, signature};
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub(crate) use ring::{digest, rand, signature};

/// The provider's name, as the start-up log and `/metrics` (`sessionauth_build_info`) say it.
#[cfg(feature = "aws-lc-rs")]
pub const NAME: &str = "aws-lc-rs";
/// The provider's name, as the start-up log and `/metrics` (`sessionauth_build_info`) say it.
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub const NAME: &str = "ring";

/// rustls's provider on the same library, with its default cipher suites and key exchange
/// groups (AWS-LC's include the post-quantum hybrid X25519MLKEM768, first).
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return rustls::crypto::ring::default_provider();
}
