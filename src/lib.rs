//! sessionauth: a Symphony-compatible, certificate-authenticated session authenticator.
//!
//! # Layout
//!
//! | concept | module |
//! |---|---|
//! | configuration (TOML, defaults, validation) | [`config`] |
//! | TLS server setup and client-certificate verification | [`tls`] |
//! | certificate revocation lists: read, fetched over HTTP, held as one immutable set | [`crl`] |
//! | the peer identity read from a verified client certificate | [`identity`] |
//! | the directory of service users, apps and installs | [`directory`] |
//! | opaque session tokens and their hashes | [`token`] |
//! | session records | [`session`] |
//! | the session store trait and its backends | [`store`] |
//! | the HTTP layer: routing, one file per API family, errors, JSON | [`http`] |
//! | the accept loop, connection limits and graceful shutdown | [`server`] |
//! | the dev PKI generator | [`pki`] |
//! | RSA public keys (registered by principals) and dev RSA key pairs | [`rsakey`] |
//! | signed JWTs presented to `/login` and `/relay`: claim rules and signature check | [`jwt`] |
//! | the server's signing key: access tokens, JWKS, the pod certificate | [`signing`] |
//! | the clock that session expiry is measured against | [`clock`] |
//! | `sessionauth check`: validation and expiry warnings | [`check`] |
//! | an error shown with its sources | [`chain`] |
//!
//! # How a request flows
//!
//! accept ([`server`]) → TLS handshake with an optional, verified client certificate ([`tls`]) →
//! the certificate's CN read once into a [`identity::PeerIdentity`] that travels with the
//! connection → route ([`http`]) → handler (for example [`http`]'s certificate authenticator) →
//! store ([`store::SessionStore`]) → JSON response. Handlers never see raw certificates.

pub mod chain;
pub mod check;
pub mod clock;
pub mod config;
pub mod crl;
pub mod directory;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod pki;
pub mod rsakey;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod tls;
pub mod token;
pub mod trust;
