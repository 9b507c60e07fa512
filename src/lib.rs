//! sessionauth: a Symphony-compatible, certificate-authenticated session authenticator.
//!
//! # Layout
//!
//! | concept | module |
//! |---|---|
//! | configuration (TOML, defaults, flag and environment overrides, validation) | [`config`] |
//! | TLS server setup and client-certificate verification | [`tls`] |
//! | certificate revocation lists: read, fetched over HTTP, held as one immutable set | [`crl`] |
//! | the peer identity read from a verified client certificate | [`identity`] |
//! | the directory of service users, apps and installs | [`directory`] |
//! | opaque session tokens and their hashes | [`token`] |
//! | the session lifecycle: records, minting, resolving, who may end which session, events, revocation rules, purge | [`session`] |
//! | the session store trait (`store::open`) and its backends (`memory.rs`, `embedded/`, `redis/`, `postgres/`) | [`store`] |
//! | the trust the server runs on (directory, CRLs, TLS) and its reload on SIGHUP | [`trust`] |
//! | the HTTP layer: routing, one file per API family, errors, JSON | [`http`] |
//! | the accept loop, connection limits and graceful shutdown | [`server`] |
//! | the dev PKI generator: CA, file writing, PKCS#12 keystores, dev RSA key pairs | [`pki`] |
//! | registered RSA public keys and their signature checks | [`rsakey`] |
//! | signed JWTs presented to `/login` and `/relay`: claim rules and signature check | [`jwt`] |
//! | the server's signing key: access tokens, JWKS, the pod certificate | [`signing`] |
//! | the clock that session expiry is measured against | [`clock`] |
//! | `sessionauth check`: validation and expiry warnings, each with the command that fixes it | [`check`] |
//! | what `sessionauth certs issue` advises: the directory entry, reload, first authenticate | [`onboarding`] |
//! | logging: the filter and text or JSON lines | [`logging`] |
//! | an error shown with its sources | [`chain`] |
//!
//! # How a request flows
//!
//! accept ([`server`]) → TLS handshake with an optional, verified client certificate ([`tls`]) →
//! the certificate's CN read once into a [`identity::PeerIdentity`] that travels with the
//! connection → route ([`http`]) → handler (for example [`http`]'s certificate authenticator) →
//! session lifecycle ([`session::Sessions`]) → store ([`store::SessionStore`]) → JSON response.
//! Handlers never see raw certificates, and never build a session or an event themselves. A
//! reload ([`trust`]) swaps the directory, CRLs and TLS configuration whole and asks the
//! lifecycle to end what the change revokes.

mod admission;
pub mod chain;
pub mod check;
pub mod clock;
pub mod config;
pub mod crl;
pub mod crypto;
pub mod directory;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod keyperms;
pub mod logging;
pub mod metrics;
pub mod onboarding;
pub mod pki;
pub mod rsakey;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod tls;
pub mod token;
pub mod trust;
