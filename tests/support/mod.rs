//! The one integration-test harness. Every test file starts with `mod support;` and uses:
//!
//! | file | what |
//! |---|---|
//! | `pki.rs` | the test PKI, made at test time with rcgen (no vendored keys): a trusted CA, a foreign CA nobody trusts, a second trusted CA for odd subjects |
//! | `client.rs` | the one TLS + HTTP/1.1 client (tokio-rustls + hyper), bounded on connect, handshake, send and read; raw-stream helpers; response assertions |
//! | `server.rs` | [`Site`] (a folder with the PKI, the configuration and a session store) and [`TestServer`] (the real server in-process on `127.0.0.1:0`, `sessionauth::server::run` with a `ManualClock`) |
//! | `node.rs` | the built `sessionauth` binary: run to completion, or serve as a [`node::Node`] that can be SIGTERMed or SIGKILLed |
//! | `redis.rs` | the Redis the tests may use ([`redis::TestRedis`]), one server, behind Sentinel, or a cluster: its URL, a random key prefix per test, cleaned up afterwards |
//! | `sentinel.rs` | a primary, two replicas and three Sentinels started by the test on free loopback ports ([`sentinel::SentinelSet`]), killed when it drops |
//! | `redis_cluster.rs` | a six-node Redis Cluster (three primaries, a replica each) started by the test on free loopback ports ([`redis_cluster::RedisCluster`]); a node can be killed and started again; all killed when it drops |
//! | `postgres.rs` | the PostgreSQL the tests may use ([`postgres::TestPostgres`]): its URL, a random table prefix per test, its tables dropped afterwards |
//! | `rsa.rs` | RSA keys made at test time, JWTs signed with *ring*, the RSA test directory |
//!
//! The store is chosen through the configuration text only (`store = "memory"`, `store =
//! "embedded"` with `data_dir`, `store = "redis://…"`, `"redis+sentinel://…"` or
//! `"redis+cluster://…"` with `redis_prefix`, `store = "postgres://…"` with
//! `postgres_table_prefix`), see [`Backend`].
//! An embedded store keeps its data on tmpfs (`/dev/shm`) where there is one: a fresh database
//! costs about a hundred fsyncs, which on a busy disk made the embedded suites several times
//! slower than the others; `crash.rs`, which is about what the files hold, keeps its data on
//! disk.
//! [`route_tests!`] runs a suite of `async fn case(backend: Backend)` once per backend, the way
//! tower-sessions runs its route tests.
//!
//! Nothing here sleeps: time is moved with the server's `ManualClock`, and every network wait is
//! bounded by [`WAIT`].
//!
//! # Redis
//!
//! The Redis tests (the `redis::` variants made by [`route_tests!`], the Redis cases of
//! `store_conformance.rs`, and `cluster.rs`) are marked `#[ignore = "needs
//! SESSIONAUTH_TEST_REDIS_URL"]`, so a plain `cargo test` on a machine without Redis passes and
//! reports them as *ignored*, never as passed. To run them, name a Redis and include the
//! ignored tests:
//!
//! ```text
//! SESSIONAUTH_TEST_REDIS_URL=redis://127.0.0.1:6379/15 cargo test -- --include-ignored
//! ```
//!
//! which is what `.ci/run` runs. A Redis test that runs without the variable, or cannot reach
//! the Redis it names, fails (under CI, `CI=true`, and elsewhere alike): it never passes without
//! having talked to Redis. Each test writes under its own random key prefix
//! (`sessionauth-test:<random>:`) and deletes its keys when it ends, failed or not.
//!
//! # Redis behind Sentinel, Redis Cluster
//!
//! The `sentinel::` and `cluster::` variants made by [`route_tests!`] run every HTTP case on a
//! server whose store is `redis+sentinel://…` or `redis+cluster://…`. Starting a topology per
//! case would cost seconds each, so they use long-running ones that the variables name:
//!
//! | variable | names | ignore reason |
//! |---|---|---|
//! | `SESSIONAUTH_TEST_SENTINEL_URL` | Sentinels and the service they monitor: `redis+sentinel://host:port[,host:port…]/service[/db]` (a primary with replicas) | `needs SESSIONAUTH_TEST_SENTINEL_URL` |
//! | `SESSIONAUTH_TEST_REDIS_CLUSTER_URL` | seed nodes: `redis+cluster://host:port[,host:port…]` (a replica per primary) | `needs SESSIONAUTH_TEST_REDIS_CLUSTER_URL` |
//!
//! Neither takes a password. Every write waits for one replica (up to 5 s), so each primary
//! needs a replica that is up. `.ci/run` starts a Sentinel set (a primary, two replicas, three
//! Sentinels) and a six-node cluster on free loopback ports with `scripts/lib/redis-sets.sh`,
//! exports both variables, and stops the topologies when it exits; by hand:
//!
//! ```text
//! source scripts/lib/redis-sets.sh; trap rs_stop EXIT
//! dir=$(mktemp -d); rs_start_sentinel_set "$dir"; rs_start_cluster "$dir"
//! SESSIONAUTH_TEST_SENTINEL_URL=$RS_SENTINEL_URL SESSIONAUTH_TEST_REDIS_CLUSTER_URL=$RS_CLUSTER_URL \
//!   cargo test -- --include-ignored
//! ```
//!
//! As with Redis, a variant that runs without its variable, or whose Sentinels name no primary
//! that answers as one, or whose cluster is not `ok`, fails. Each test writes under its own
//! random key prefix (in a cluster a hash tag, `{sessionauth-test:<random>}:`, so that its keys
//! share a slot) and deletes its keys when it ends. The Sentinel and Cluster cases of
//! `store_conformance.rs`, and the failover tests `sentinel.rs` and `redis_cluster.rs`, start
//! topologies of their own instead (`sentinel.rs`, `redis_cluster.rs` here).
//!
//! # PostgreSQL
//!
//! The same, with `SESSIONAUTH_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`) and `#[ignore = "needs
//! SESSIONAUTH_TEST_POSTGRES_URL"]`: the `postgres::` variants made by [`route_tests!`], the
//! PostgreSQL cases of `store_conformance.rs` and `store_model.rs`, and those of `cluster.rs`.
//! Each test makes its tables under its own random prefix (`sessionauth_test_<random>_`) and
//! drops them when it ends; one that runs without the variable, or cannot reach the database,
//! fails.

// Each test file compiles this module on its own and uses only part of it; `pub` here means
// "for the test files". A failed setup step panics with its cause: that is a test failure.
#![allow(
    dead_code,
    unused_imports,
    unused_macros,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod client;
pub mod node;
pub mod pki;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
pub mod rsa;
pub mod sentinel;
pub mod server;

use std::time::Duration;

pub use client::*;
pub use pki::*;
pub use server::*;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The session store a server under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `store = "memory"`.
    Memory,
    /// `store = "embedded"`, `data_dir` in the test's temporary folder.
    Embedded,
    /// `store = "<SESSIONAUTH_TEST_REDIS_URL>"`, `redis_prefix` random per test.
    Redis,
    /// `store = "<SESSIONAUTH_TEST_SENTINEL_URL>"` (`redis+sentinel://…`), `redis_prefix`
    /// random per test, every write waiting for a replica.
    Sentinel,
    /// `store = "<SESSIONAUTH_TEST_REDIS_CLUSTER_URL>"` (`redis+cluster://…`), `redis_prefix` a
    /// random hash tag per test, every write waiting for the slot's replica.
    Cluster,
    /// `store = "<SESSIONAUTH_TEST_POSTGRES_URL>"`, `postgres_table_prefix` random per test.
    Postgres,
}

/// One backend's module of a suite: `mod $module` holding one `#[tokio::test] async fn case()`
/// per named case, each running `super::case(Backend::$backend)`; with `ignore = "..."`, ignored
/// unless the ignored tests are included.
macro_rules! backend_suite {
    ($module:ident, $backend:ident, $on:literal, ignore = $why:literal, $($case:ident),*) => {
        #[doc = concat!("The suite against ", $on, ".")]
        mod $module {
            $(
                #[doc = concat!("`", stringify!($case), "` on ", $on, ".")]
                #[tokio::test]
                #[ignore = $why]
                async fn $case() {
                    super::$case($crate::support::Backend::$backend).await;
                }
            )*
        }
    };
    ($module:ident, $backend:ident, $on:literal, $($case:ident),*) => {
        #[doc = concat!("The suite against ", $on, ".")]
        mod $module {
            $(
                #[doc = concat!("`", stringify!($case), "` on ", $on, ".")]
                #[tokio::test]
                async fn $case() {
                    super::$case($crate::support::Backend::$backend).await;
                }
            )*
        }
    };
}
pub(crate) use backend_suite;

/// Runs each named `async fn case(backend: Backend)` once per backend: generates `mod memory`
/// and the modules of [`durable_route_tests!`], each with one `#[tokio::test] async fn case()`.
/// The Redis, Sentinel, Cluster and PostgreSQL variants are ignored unless the ignored tests are
/// included (see the module documentation).
macro_rules! route_tests {
    ($($case:ident),* $(,)?) => {
        $crate::support::backend_suite!(memory, Memory, "the in-memory store", $($case),*);
        $crate::support::durable_route_tests!($($case),*);
    };
}
pub(crate) use route_tests;

/// [`route_tests!`] without the memory store, for cases that need a store that outlives the
/// server: `mod embedded` (a data directory in the test's folder), `mod redis`
/// (`SESSIONAUTH_TEST_REDIS_URL`), `mod sentinel` (`SESSIONAUTH_TEST_SENTINEL_URL`), `mod cluster`
/// (`SESSIONAUTH_TEST_REDIS_CLUSTER_URL`) and `mod postgres` (`SESSIONAUTH_TEST_POSTGRES_URL`),
/// each with a random key or table prefix.
macro_rules! durable_route_tests {
    ($($case:ident),* $(,)?) => {
        $crate::support::backend_suite!(embedded, Embedded, "the embedded store", $($case),*);
        $crate::support::backend_suite!(
            redis, Redis, "Redis", ignore = "needs SESSIONAUTH_TEST_REDIS_URL", $($case),*
        );
        $crate::support::backend_suite!(
            sentinel, Sentinel, "Redis behind Sentinel",
            ignore = "needs SESSIONAUTH_TEST_SENTINEL_URL", $($case),*
        );
        $crate::support::backend_suite!(
            cluster, Cluster, "a Redis Cluster",
            ignore = "needs SESSIONAUTH_TEST_REDIS_CLUSTER_URL", $($case),*
        );
        $crate::support::backend_suite!(
            postgres, Postgres, "PostgreSQL", ignore = "needs SESSIONAUTH_TEST_POSTGRES_URL",
            $($case),*
        );
    };
}
pub(crate) use durable_route_tests;

/// The 403 message Symphony sends for a certificate that names no one allowed.
pub const CERT_NOT_ALLOWED: &str =
    "Forbidden: Certificate authentication is not allowed for the requested user.";

/// `POST`: a service user's session by certificate.
pub const AUTH: &str = "/sessionauth/v1/authenticate";
/// `POST`: the same, on the older alias path.
pub const AUTH_ALIAS: &str = "/session/authenticate";
/// `POST`: a key-manager token by certificate.
pub const KEYAUTH: &str = "/keyauth/v1/authenticate";
/// `POST`: an app session by certificate.
pub const APP_AUTH: &str = "/sessionauth/v1/app/authenticate";
/// `POST`: ends a session.
pub const LOGOUT: &str = "/sessionauth/v1/logout";
/// `POST`: ends a key-manager token.
pub const KEY_LOGOUT: &str = "/keyauth/v1/logout";
/// `GET`: the session owner's UserV2.
pub const SESSIONINFO: &str = "/pod/v2/sessioninfo";
/// `POST`: a service user's session by RSA JWT.
pub const RSA_LOGIN: &str = "/login/pubkey/authenticate";
/// `POST`: a key-manager token by RSA JWT.
pub const RSA_RELAY: &str = "/relay/pubkey/authenticate";
/// `POST`: an app session by RSA JWT.
pub const RSA_APP: &str = "/login/pubkey/app/authenticate";

/// The on-behalf-of path by user id.
pub fn obo_by_id(uid: &str) -> String {
    format!("/sessionauth/v1/app/user/{uid}/authenticate")
}

/// The on-behalf-of path by username.
pub fn obo_by_name(username: &str) -> String {
    format!("/sessionauth/v1/app/username/{username}/authenticate")
}

/// Writes a line to the process's stderr, past the test harness's capture, so that a plain
/// `cargo test` shows it.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
