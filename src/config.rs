//! Configuration: the TOML file, the embedded defaults, and validation of both.
//!
//! A [`Config`] is only ever built whole: every key is known, every duration parses, every path
//! is resolved. Files it names are read and checked later, by [`crate::server::Prepared`], still
//! before any port is bound.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::crl::{CrlSource, CrlStale};
use crate::store::{PostgresUrl, RedisUrl, ReplicaWait, TablePrefix};

mod overrides;

pub use overrides::Overrides;

/// The default listen address: loopback only, the port the Symphony BDK examples use.
const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Where the dev PKI lives when no configuration file is given.
const DEFAULT_CERTS_DIR: &str = "certs";
/// Where the embedded store keeps its file by default (next to `certs/`).
const DEFAULT_DATA_DIR: &str = "data";
/// The default prefix of every Redis key sessionauth writes.
const DEFAULT_REDIS_PREFIX: &str = "sessionauth:";
/// How often CRLs named by URL are fetched again when `tls.crl_refresh` is not set.
const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(3600);

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address the HTTPS listener binds.
    pub(crate) listen: SocketAddr,
    /// Whether Prometheus metrics are recorded and served (`GET /metrics`).
    pub(crate) metrics: bool,
    /// A plain-HTTP listener for `/metrics` and the health endpoints, so that scrapers and
    /// probes need no client certificate. `None`: only the HTTPS listener serves them.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// TLS material and settings.
    pub tls: TlsSettings,
    /// Where the directory of users and apps comes from.
    pub directory: DirectorySource,
    /// How long a new session lives (before the client certificate's own expiry caps it).
    pub(crate) session_lifetime: Duration,
    /// Limits that protect the server from slow or oversized clients.
    pub(crate) limits: Limits,
    /// Where sessions live.
    pub(crate) store: StoreConfig,
    /// When set, the dev PKI in this folder is created (or completed) before start-up.
    pub dev_pki: Option<PathBuf>,
    /// The key-folder rule: service users and apps with no configured RSA key take
    /// `<folder>/<name>-rsa.pub.pem` when it exists (see `Directory::use_key_folder`).
    pub public_key_dir: Option<PathBuf>,
    /// The server's signing key and the access tokens it signs.
    pub(crate) signing: SigningSettings,
}

/// The server's signing key (access tokens, JWKS, the pod certificate) and the access tokens.
#[derive(Debug, Clone)]
pub(crate) struct SigningSettings {
    /// Where the current signing key comes from.
    pub(crate) key: SigningKeySource,
    /// Keys rotated out: still published in the JWKS so that tokens they signed keep verifying
    /// until they expire. Private (PKCS#8 or PKCS#1) or public PEM files.
    pub(crate) previous_keys: Vec<PathBuf>,
    /// How long an access token lives (never past its session's expiry).
    pub(crate) access_token_lifetime: Duration,
    /// The `iss` claim of access tokens.
    pub(crate) issuer: String,
}

/// Where the current signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigningKeySource {
    /// A configured RSA private key file (PKCS#8 or PKCS#1 PEM) that must exist.
    File(PathBuf),
    /// Not configured: this file, made (2048-bit, mode 0600) on first start when missing.
    Default(PathBuf),
    /// A key made in memory at start-up and never written (for `check` and tests): access
    /// tokens stop verifying when the process ends.
    Ephemeral,
}

/// The default file name of the signing key, beside the TLS key.
const DEFAULT_SIGNING_KEY: &str = "signing-key.pem";
/// The default access token lifetime.
const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The default `iss` of access tokens.
const DEFAULT_ISSUER: &str = "sessionauth";

impl SigningSettings {
    /// The defaults: the key at `default_key` (made on first start), no previous keys,
    /// 5-minute access tokens, issuer `sessionauth`.
    fn with_default_key(default_key: PathBuf) -> Self {
        Self {
            key: SigningKeySource::Default(default_key),
            previous_keys: Vec::new(),
            access_token_lifetime: DEFAULT_ACCESS_TOKEN_LIFETIME,
            issuer: DEFAULT_ISSUER.to_owned(),
        }
    }
}

/// TLS material and settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert_chain: PathBuf,
    /// PEM file with the server's private key.
    pub key: PathBuf,
    /// PEM bundles of the CAs that client certificates must chain to.
    pub client_cas: Vec<PathBuf>,
    /// Whether TLS session resumption (tickets and the session cache) is offered.
    pub(crate) resumption: bool,
    /// How long a client may take to complete the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// The CRLs client certificates are checked against: files (PEM or DER) and `http://`
    /// URLs.
    pub(crate) crl: Vec<CrlSource>,
    /// How often the CRLs are loaded again (`None`: only at start and on reload).
    pub(crate) crl_refresh: Option<Duration>,
    /// What a CRL past its `nextUpdate` means.
    pub(crate) crl_stale: CrlStale,
}

/// Where the directory of users and apps comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySource {
    /// The sample directory compiled into the binary (`examples/directory.toml`).
    Embedded,
    /// A TOML file.
    File(PathBuf),
}

/// Where sessions live (the `store` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreConfig {
    /// `"memory"`: in process memory, gone at exit.
    Memory,
    /// `"embedded"` (the default): sessions in memory, journalled in `data_dir`, fsynced before
    /// every answer.
    Embedded {
        /// The folder that holds the database file.
        data_dir: PathBuf,
    },
    /// `"redis://…"`, `"rediss://…"`, `"redis+sentinel://…"` or `"rediss+sentinel://…"`:
    /// shared by every node that names the same Redis.
    Redis {
        /// The server's (or the Sentinels') URL (it may carry a password: never printed).
        url: RedisUrl,
        /// The prefix of every key written.
        prefix: String,
        /// The replicas every write waits for (`redis_wait_replicas`, `redis_wait_timeout`).
        wait: Option<ReplicaWait>,
    },
    /// `"postgres://…"` or `"postgresql://…"`: shared by every node that names the same
    /// database.
    Postgres {
        /// The server's URL (it may carry a password: never printed).
        url: PostgresUrl,
        /// The prefix of every table's name.
        prefix: TablePrefix,
    },
}

/// The default of `limits.max_sessions_per_user`: far above what an honest bot holds (one or a
/// few sessions, renewed on expiry), far below what fills a disk.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 1000;

/// Limits that protect the server from slow or oversized clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub(crate) header_read_timeout: Duration,
    /// How long a client may take to send a request's body, once its headers are in.
    pub(crate) body_read_timeout: Duration,
    /// The largest request body accepted, in bytes.
    pub(crate) max_body_bytes: usize,
    /// The largest request head (request line and headers) accepted, in bytes.
    pub(crate) max_header_bytes: usize,
    /// Connections served at once (TLS handshake done); further ones wait in the kernel's
    /// accept queue.
    pub(crate) max_connections: usize,
    /// TLS handshakes in progress at once, counted apart from established connections, so that
    /// sockets that never finish a handshake cannot take the connection pool.
    pub(crate) max_handshakes: usize,
    /// Connections (handshaking or established) one client address may hold; further ones are
    /// closed at accept. IPv6 addresses count per /64. `None`: no cap (behind a load balancer
    /// that is the only client).
    pub(crate) max_connections_per_ip: Option<usize>,
    /// How long a write to a client may stay blocked (a client that sends requests and never
    /// reads the answers) before its connection is closed.
    pub(crate) write_timeout: Duration,
    /// The largest amount of a connection's input buffered while its earlier requests are
    /// answered (pipelined requests): past it, the server stops reading and TCP pushes back.
    pub(crate) max_pipelined_bytes: usize,
    /// Failed authentications one client address may make per minute (a token bucket with
    /// this burst); past it they are answered 429. `None`: no throttle.
    pub(crate) failed_logins_per_ip: Option<u32>,
    /// Failed authentications per minute for one claimed identity (a certificate's CN, a JWT's
    /// subject), from any address. `None`: no throttle.
    pub(crate) failed_logins_per_identity: Option<u32>,
    /// How long in-flight requests get to finish after a shutdown signal.
    pub(crate) shutdown_grace: Duration,
    /// Live sessions one owner may hold (a user's own sessions, its key-manager tokens, an
    /// app's own sessions, an app's sessions for one user: each apart); a new one past it ends
    /// the oldest (reason `evicted`). `None`: no cap.
    pub(crate) max_sessions_per_user: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            max_handshakes: 256,
            max_connections_per_ip: Some(128),
            write_timeout: Duration::from_secs(10),
            max_pipelined_bytes: 64 * 1024,
            failed_logins_per_ip: Some(120),
            failed_logins_per_identity: Some(60),
            shutdown_grace: Duration::from_secs(30),
            max_sessions_per_user: Some(DEFAULT_MAX_SESSIONS_PER_USER),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, one line.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid configuration file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command-line flag or environment variable is not acceptable.
    #[error("invalid {names}: {message}")]
    Override {
        /// The flag and the variable.
        names: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The embedded defaults: the dev PKI in `certs/` (made on first start), the sample
    /// directory, `127.0.0.1:8443`, 24-hour sessions, the embedded store in `data/` (both
    /// folders relative to the working directory).
    pub fn embedded_defaults() -> Self {
        Self::embedded_defaults_in(PathBuf::from(DEFAULT_CERTS_DIR))
    }

    /// The folder of the TLS material: the dev PKI's, or the server certificate's.
    pub fn certs_dir(&self) -> PathBuf {
        match &self.dev_pki {
            Some(dir) => dir.clone(),
            None => self
                .tls
                .cert_chain
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
        }
    }

    /// The session store in one word, for the start banner: `embedded`, `memory`, or the Redis
    /// URL without its password.
    pub fn store_name(&self) -> String {
        match &self.store {
            StoreConfig::Memory => "memory".to_owned(),
            StoreConfig::Embedded { .. } => "embedded".to_owned(),
            StoreConfig::Redis { url, .. } => url.to_string(),
            StoreConfig::Postgres { url, .. } => url.to_string(),
        }
    }

    /// The embedded store's data directory; `None` for the other stores.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.store {
            StoreConfig::Embedded { data_dir } => Some(data_dir),
            StoreConfig::Memory | StoreConfig::Redis { .. } | StoreConfig::Postgres { .. } => None,
        }
    }

    /// The embedded defaults with the dev PKI (and the key folder) in `certs`.
    fn embedded_defaults_in(certs: PathBuf) -> Self {
        Self {
            metrics: true,
            metrics_listen: None,
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443))),
            tls: TlsSettings {
                cert_chain: certs.join(crate::pki::SERVER_CERT),
                key: certs.join(crate::pki::SERVER_KEY),
                client_cas: vec![certs.join(crate::pki::CA_CERT)],
                resumption: true,
                handshake_timeout: Duration::from_secs(10),
                crl: Vec::new(),
                crl_refresh: None,
                crl_stale: CrlStale::Deny,
            },
            directory: DirectorySource::Embedded,
            session_lifetime: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            public_key_dir: Some(certs.clone()),
            signing: SigningSettings::with_default_key(certs.join(DEFAULT_SIGNING_KEY)),
            store: StoreConfig::Embedded {
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            },
            dev_pki: Some(certs),
        }
    }

    /// Reads and validates a configuration file. Relative paths inside it are resolved against
    /// the folder that holds the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load(Some(path), &Overrides::default())
    }

    /// Parses configuration text; `base` is the folder relative paths are resolved against.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        RawConfig::parse(text)?.resolve(base)
    }
}

impl ConfigError {
    fn at(self, file: &Path) -> Self {
        match self {
            Self::Parse { message, .. } => Self::Parse {
                path: file.to_owned(),
                message,
            },
            Self::Invalid { message, .. } => Self::Invalid {
                path: file.to_owned(),
                message,
            },
            other @ (Self::Read { .. } | Self::Override { .. }) => other,
        }
    }
}

/// One line that says where a TOML error is and what it is: `line 3 (max_body_bytes = "x"):
/// invalid type: string "x", expected usize`.
pub(crate) fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let line: String = line.chars().take(80).collect();
    if line.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("line {line_no} ({line}): {message}")
    }
}

/// The file's shape, exactly as written; every table refuses unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    metrics: Option<bool>,
    metrics_listen: Option<String>,
    session_lifetime: Option<HumanDuration>,
    directory: Option<PathBuf>,
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    public_key_dir: Option<PathBuf>,
    #[serde(default)]
    signing: RawSigning,
    store: Option<String>,
    data_dir: Option<PathBuf>,
    redis_prefix: Option<String>,
    redis_wait_replicas: Option<u32>,
    redis_wait_timeout: Option<HumanDuration>,
    postgres_table_prefix: Option<String>,
}

/// The keys that apply to a Redis store only.
#[derive(Default)]
pub(crate) struct RawRedis {
    prefix: Option<String>,
    wait_replicas: Option<u32>,
    wait_timeout: Option<Duration>,
}

impl RawRedis {
    /// The first of the keys that is set, by name.
    fn first_set(&self) -> Option<&'static str> {
        [
            (self.prefix.is_some(), "redis_prefix"),
            (self.wait_replicas.is_some(), "redis_wait_replicas"),
            (self.wait_timeout.is_some(), "redis_wait_timeout"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    key: Option<PathBuf>,
    #[serde(default)]
    previous_keys: Vec<PathBuf>,
    access_token_lifetime: Option<HumanDuration>,
    issuer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Vec<PathBuf>,
    resumption: Option<bool>,
    handshake_timeout: Option<HumanDuration>,
    #[serde(default)]
    crl: Vec<String>,
    crl_refresh: Option<HumanDuration>,
    crl_stale: Option<CrlStale>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_read_timeout: Option<HumanDuration>,
    body_read_timeout: Option<HumanDuration>,
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_connections_per_ip: Option<usize>,
    write_timeout: Option<HumanDuration>,
    max_pipelined_bytes: Option<usize>,
    failed_logins_per_ip: Option<u32>,
    failed_logins_per_identity: Option<u32>,
    shutdown_grace: Option<HumanDuration>,
    max_sessions_per_user: Option<usize>,
}

/// A count where `0` means "no limit": absent is the default, `0` is `None`.
fn zero_is_none<T: PartialEq + Default>(value: Option<T>, default: Option<T>) -> Option<T> {
    match value {
        None => default,
        Some(v) if v == T::default() => None,
        Some(v) => Some(v),
    }
}

/// A duration written the human way: `"30s"`, `"5m"`, `"24h"`, `"1h 30m"`.
#[derive(Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\" or \"24h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|e| E::custom(format!("bad duration {v:?}: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

impl RawConfig {
    /// Forgets the keys that apply to a Redis store only (a `--store` of another kind).
    fn drop_redis_keys(&mut self) {
        self.redis_prefix = None;
        self.redis_wait_replicas = None;
        self.redis_wait_timeout = None;
    }

    /// Reads and parses the file at `path`, without validating it.
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::files::read_text_capped(path, crate::files::MAX_TOML_BYTES).map_err(
            |source| ConfigError::Read {
                path: path.to_owned(),
                source,
            },
        )?;
        Self::parse(&text).map_err(|e| e.at(path))
    }

    /// Parses configuration text, without validating it.
    fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: toml_error_line(text, &e),
        })
    }

    fn resolve(self, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        };
        let at = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let listen = match self.listen {
            None => Config::embedded_defaults().listen,
            Some(s) => s.parse().map_err(|_| {
                invalid(format!(
                    "listen: {s:?} is not an address such as \"127.0.0.1:8443\""
                ))
            })?,
        };
        let metrics_listen = match self.metrics_listen {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                invalid(format!(
                    "metrics_listen: {s:?} is not an address such as \"127.0.0.1:9090\""
                ))
            })?),
        };
        let session_lifetime = self
            .session_lifetime
            .map_or(Duration::from_secs(24 * 3600), |d| d.0);
        if session_lifetime < Duration::from_secs(1) {
            return Err(invalid("session_lifetime must be at least 1s".into()));
        }
        if self.tls.client_ca.is_empty() {
            return Err(invalid(
                "tls.client_ca must name at least one CA bundle".into(),
            ));
        }
        let defaults = Limits::default();
        let limits = Limits {
            header_read_timeout: self
                .limits
                .header_read_timeout
                .map_or(defaults.header_read_timeout, |d| d.0),
            body_read_timeout: self
                .limits
                .body_read_timeout
                .map_or(defaults.body_read_timeout, |d| d.0),
            max_body_bytes: self
                .limits
                .max_body_bytes
                .unwrap_or(defaults.max_body_bytes),
            max_header_bytes: self
                .limits
                .max_header_bytes
                .unwrap_or(defaults.max_header_bytes),
            max_connections: self
                .limits
                .max_connections
                .unwrap_or(defaults.max_connections),
            max_handshakes: self
                .limits
                .max_handshakes
                .unwrap_or(defaults.max_handshakes),
            // 0: no cap, for each of these.
            max_connections_per_ip: zero_is_none(
                self.limits.max_connections_per_ip,
                defaults.max_connections_per_ip,
            ),
            write_timeout: self
                .limits
                .write_timeout
                .map_or(defaults.write_timeout, |d| d.0),
            max_pipelined_bytes: self
                .limits
                .max_pipelined_bytes
                .unwrap_or(defaults.max_pipelined_bytes),
            failed_logins_per_ip: zero_is_none(
                self.limits.failed_logins_per_ip,
                defaults.failed_logins_per_ip,
            ),
            failed_logins_per_identity: zero_is_none(
                self.limits.failed_logins_per_identity,
                defaults.failed_logins_per_identity,
            ),
            shutdown_grace: self
                .limits
                .shutdown_grace
                .map_or(defaults.shutdown_grace, |d| d.0),
            max_sessions_per_user: zero_is_none(
                self.limits.max_sessions_per_user,
                defaults.max_sessions_per_user,
            ),
        };
        if limits.max_connections == 0 {
            return Err(invalid("limits.max_connections must be at least 1".into()));
        }
        if limits.max_handshakes == 0 {
            return Err(invalid("limits.max_handshakes must be at least 1".into()));
        }
        if limits.write_timeout.is_zero() {
            return Err(invalid("limits.write_timeout must be above zero".into()));
        }
        if limits.max_pipelined_bytes < 8192 {
            return Err(invalid(
                "limits.max_pipelined_bytes must be at least 8192".into(),
            ));
        }
        if limits.max_header_bytes < 1024 {
            return Err(invalid(
                "limits.max_header_bytes must be at least 1024".into(),
            ));
        }
        if limits.header_read_timeout.is_zero() {
            return Err(invalid(
                "limits.header_read_timeout must be above zero".into(),
            ));
        }
        if limits.body_read_timeout.is_zero() {
            return Err(invalid(
                "limits.body_read_timeout must be above zero".into(),
            ));
        }
        let handshake_timeout = self
            .tls
            .handshake_timeout
            .map_or(Duration::from_secs(10), |d| d.0);
        if handshake_timeout.is_zero() {
            return Err(invalid("tls.handshake_timeout must be above zero".into()));
        }
        let store = resolve_store(
            self.store,
            self.data_dir.map(at),
            at(DEFAULT_DATA_DIR.into()),
            RawRedis {
                prefix: self.redis_prefix,
                wait_replicas: self.redis_wait_replicas,
                wait_timeout: self.redis_wait_timeout.map(|d| d.0),
            },
            self.postgres_table_prefix,
        )
        .map_err(invalid)?;
        let signing = self.signing.resolve(&at(self.tls.key.clone()), &at)?;
        let crl = self
            .tls
            .crl
            .iter()
            .map(|text| match CrlSource::parse(text) {
                Ok(CrlSource::File(path)) => Ok(CrlSource::File(at(path))),
                Ok(url) => Ok(url),
                Err(e) => Err(invalid(format!("tls.crl: {}", crate::chain::Chain(&e)))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let crl_refresh = match self.tls.crl_refresh {
            Some(d) if d.0.is_zero() => {
                return Err(invalid("tls.crl_refresh must be above zero".into()));
            }
            Some(d) => Some(d.0),
            // URLs change without anyone telling us: fetch them hourly unless told otherwise.
            None if crl.iter().any(|c| matches!(c, CrlSource::Url(_))) => Some(DEFAULT_CRL_REFRESH),
            None => None,
        };
        Ok(Config {
            listen,
            metrics: self.metrics.unwrap_or(true),
            metrics_listen,
            tls: TlsSettings {
                cert_chain: at(self.tls.cert),
                key: at(self.tls.key),
                client_cas: self.tls.client_ca.into_iter().map(at).collect(),
                resumption: self.tls.resumption.unwrap_or(true),
                handshake_timeout,
                crl,
                crl_refresh,
                crl_stale: self.tls.crl_stale.unwrap_or_default(),
            },
            directory: self
                .directory
                .map_or(DirectorySource::Embedded, |p| DirectorySource::File(at(p))),
            session_lifetime,
            limits,
            store,
            dev_pki: None,
            public_key_dir: self.public_key_dir.map(at),
            signing,
        })
    }
}

impl RawSigning {
    fn resolve(
        self,
        tls_key: &Path,
        at: &impl Fn(PathBuf) -> PathBuf,
    ) -> Result<SigningSettings, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            path: PathBuf::new(),
            message: message.to_owned(),
        };
        let key = match self.key {
            Some(path) => SigningKeySource::File(at(path)),
            None => SigningKeySource::Default(
                tls_key
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join(DEFAULT_SIGNING_KEY),
            ),
        };
        let access_token_lifetime = self
            .access_token_lifetime
            .map_or(DEFAULT_ACCESS_TOKEN_LIFETIME, |d| d.0);
        if access_token_lifetime < Duration::from_secs(1)
            || access_token_lifetime > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "signing.access_token_lifetime must be between 1s and 24h",
            ));
        }
        let issuer = self.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        if issuer.trim().is_empty() {
            return Err(invalid("signing.issuer must not be empty"));
        }
        Ok(SigningSettings {
            key,
            previous_keys: self.previous_keys.into_iter().map(at).collect(),
            access_token_lifetime,
            issuer,
        })
    }
}

/// Reads `store`, `data_dir` (already resolved; `default_data_dir` when absent), the `redis_…`
/// keys and `postgres_table_prefix` together: a key that does not apply to the chosen store is
/// refused rather than silently ignored.
fn resolve_store(
    store: Option<String>,
    data_dir: Option<PathBuf>,
    default_data_dir: PathBuf,
    redis: RawRedis,
    postgres_table_prefix: Option<String>,
) -> Result<StoreConfig, String> {
    let store = store.as_deref().unwrap_or("embedded");
    let config = match store {
        "memory" => StoreConfig::Memory,
        "embedded" => StoreConfig::Embedded {
            data_dir: data_dir.clone().unwrap_or(default_data_dir),
        },
        url if is_redis_url(url) => {
            let url = RedisUrl::parse(url).map_err(|e| format!("store: {e}"))?;
            let prefix = redis
                .prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into());
            if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("redis_prefix must be non-empty, without spaces".into());
            }
            let replicas = redis
                .wait_replicas
                .unwrap_or(ReplicaWait::default_for(&url).map_or(0, |w| w.replicas()));
            let timeout = redis
                .wait_timeout
                .unwrap_or(ReplicaWait::FAILOVER_DEFAULT.timeout());
            let wait = match replicas {
                0 if redis.wait_timeout.is_some() => {
                    return Err("redis_wait_timeout needs redis_wait_replicas of 1 or more".into())
                }
                0 => None,
                n => Some(ReplicaWait::new(n, timeout).ok_or_else(|| {
                    format!(
                        "redis_wait_timeout must be above zero and at most {}",
                        humantime::format_duration(ReplicaWait::MAX_TIMEOUT)
                    )
                })?),
            };
            StoreConfig::Redis { url, prefix, wait }
        }
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let url = PostgresUrl::parse(url).map_err(|e| format!("store: {e}"))?;
            let prefix = match &postgres_table_prefix {
                Some(text) => TablePrefix::parse(text).map_err(|e| e.to_string())?,
                None => TablePrefix::default(),
            };
            StoreConfig::Postgres { url, prefix }
        }
        // The value is not echoed: a mistyped URL may hold a password.
        _ => {
            return Err(
                "store must be \"memory\", \"embedded\", a redis://, rediss://, \
                 redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster:// \
                 URL, or a postgres:// or postgresql:// URL"
                    .into(),
            )
        }
    };
    if data_dir.is_some() && !matches!(config, StoreConfig::Embedded { .. }) {
        return Err("data_dir applies only to store = \"embedded\"".into());
    }
    if let Some(key) = redis.first_set() {
        if !matches!(config, StoreConfig::Redis { .. }) {
            return Err(format!(
                "{key} applies only to a redis://, redis+sentinel:// or redis+cluster:// store"
            ));
        }
    }
    if postgres_table_prefix.is_some() && !matches!(config, StoreConfig::Postgres { .. }) {
        return Err(
            "postgres_table_prefix applies only to a postgres:// or postgresql:// store".into(),
        );
    }
    Ok(config)
}

/// Whether `store` names a Redis store (one server, or Sentinel).
pub(crate) fn is_redis_url(store: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+sentinel://",
        "rediss+sentinel://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|scheme| store.starts_with(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [tls]
        cert = "server.pem"
        key = "server-key.pem"
        client_ca = ["ca.pem"]
    "#;

    /// A minimal file gets the documented defaults and paths relative to the file's folder.
    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/sa")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.session_lifetime, Duration::from_secs(86400));
        assert_eq!(c.tls.cert_chain, Path::new("/etc/sa/server.pem"));
        assert_eq!(c.directory, DirectorySource::Embedded);
        assert!(c.tls.resumption);
    }

    /// An unknown key anywhere is an error that names it.
    #[test]
    fn unknown_key_is_refused() {
        let text = format!("{MINIMAL}\nsurprise = 1\n");
        let e = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprise"), "{e}");
        let text = MINIMAL.replace("[tls]", "[tls]\nciphers = \"all\"");
        let e = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ciphers"), "{e}");
    }

    /// Durations are read the human way, and garbage is refused.
    #[test]
    fn durations_parse() {
        let text = format!("session_lifetime = \"1h 30m\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(c.session_lifetime, Duration::from_secs(5400));
        let text = format!("session_lifetime = \"soon\"\n{MINIMAL}");
        assert!(Config::from_toml(&text, Path::new(".")).is_err());
    }

    /// Time limits default to 10 s, read from `[limits]`, and must be above zero.
    #[test]
    fn time_limits() {
        let c = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.limits.body_read_timeout, Duration::from_secs(10));
        let text = format!("{MINIMAL}\n[limits]\nbody_read_timeout = \"2s\"\n");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(c.limits.body_read_timeout, Duration::from_secs(2));
        for key in ["header_read_timeout", "body_read_timeout", "write_timeout"] {
            let text = format!("{MINIMAL}\n[limits]\n{key} = \"0s\"\n");
            let e = Config::from_toml(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    /// The connection and login limits: defaults, values, `0` as "no limit" where that is
    /// allowed, and refusals where it is not.
    #[test]
    fn connection_and_login_limits() {
        let c = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.limits.max_handshakes, 256);
        assert_eq!(c.limits.max_connections_per_ip, Some(128));
        assert_eq!(c.limits.write_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.failed_logins_per_ip, Some(120));
        assert_eq!(c.limits.failed_logins_per_identity, Some(60));
        let text = format!(
            "{MINIMAL}\n[limits]\nmax_connections_per_ip = 0\nfailed_logins_per_ip = 0\n\
             failed_logins_per_identity = 5\nmax_handshakes = 8\nwrite_timeout = \"3s\"\n"
        );
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(c.limits.max_connections_per_ip, None);
        assert_eq!(c.limits.failed_logins_per_ip, None);
        assert_eq!(c.limits.failed_logins_per_identity, Some(5));
        assert_eq!(c.limits.max_handshakes, 8);
        assert_eq!(c.limits.write_timeout, Duration::from_secs(3));
        for (line, key) in [
            ("max_handshakes = 0", "max_handshakes"),
            ("max_pipelined_bytes = 100", "max_pipelined_bytes"),
        ] {
            let text = format!("{MINIMAL}\n[limits]\n{line}\n");
            let e = Config::from_toml(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    /// An empty CA list is refused before anything is read.
    #[test]
    fn empty_client_ca_list_is_refused() {
        let text = MINIMAL.replace("[\"ca.pem\"]", "[]");
        let e = Config::from_toml(&text, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_ca"), "{e}");
    }

    /// `public_key_dir` is resolved against the file's folder; without it there is no key folder.
    #[test]
    fn public_key_dir_is_resolved() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/sa")).unwrap();
        assert_eq!(c.public_key_dir, None);
        let text = format!("public_key_dir = \"keys\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new("/etc/sa")).unwrap();
        assert_eq!(c.public_key_dir, Some(PathBuf::from("/etc/sa/keys")));
    }

    /// Without `[signing]`, the signing key defaults to `signing-key.pem` beside the TLS key,
    /// made on first start; a configured one is read from its path; lifetimes are checked.
    #[test]
    fn signing_settings() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/sa")).unwrap();
        assert_eq!(
            c.signing.key,
            SigningKeySource::Default("/etc/sa/signing-key.pem".into())
        );
        assert_eq!(c.signing.access_token_lifetime, Duration::from_secs(300));
        assert_eq!(c.signing.issuer, "sessionauth");
        let text = format!(
            "{MINIMAL}\n[signing]\nkey = \"k.pem\"\nprevious_keys = [\"old.pem\"]\naccess_token_lifetime = \"2m\"\nissuer = \"https://sa.example\"\n"
        );
        let c = Config::from_toml(&text, Path::new("/etc/sa")).unwrap();
        assert_eq!(
            c.signing.key,
            SigningKeySource::File("/etc/sa/k.pem".into())
        );
        assert_eq!(
            c.signing.previous_keys,
            vec![PathBuf::from("/etc/sa/old.pem")]
        );
        assert_eq!(c.signing.access_token_lifetime, Duration::from_secs(120));
        assert_eq!(c.signing.issuer, "https://sa.example");
        for bad in [
            "access_token_lifetime = \"0s\"",
            "access_token_lifetime = \"2d\"",
            "issuer = \"\"",
            "surprise = 1",
        ] {
            let text = format!("{MINIMAL}\n[signing]\n{bad}\n");
            assert!(Config::from_toml(&text, Path::new(".")).is_err(), "{bad}");
        }
    }

    /// A bad listen address is refused.
    #[test]
    fn bad_listen_is_refused() {
        let text = format!("listen = \"localhost\"\n{MINIMAL}");
        assert!(Config::from_toml(&text, Path::new(".")).is_err());
    }

    /// The store defaults to the embedded one in `data/` next to the file; each kind parses.
    #[test]
    fn store_kinds_parse() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/sa")).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Embedded {
                data_dir: "/etc/sa/data".into()
            }
        );
        let text = format!("store = \"embedded\"\ndata_dir = \"/var/lib/sa\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new("/etc/sa")).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Embedded {
                data_dir: "/var/lib/sa".into()
            }
        );
        let text = format!("store = \"memory\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(c.store, StoreConfig::Memory);
        let text =
            format!("store = \"redis://127.0.0.1:6379/2\"\nredis_prefix = \"sa1:\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        let StoreConfig::Redis { url, prefix, .. } = c.store else {
            panic!("not redis: {:?}", c.store);
        };
        assert_eq!(url.expose(), "redis://127.0.0.1:6379/2");
        assert_eq!(prefix, "sa1:");
        let text = format!("store = \"rediss://redis.example:6380\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert!(
            matches!(c.store, StoreConfig::Redis { ref url, ref prefix, .. } if url.is_tls() && prefix == DEFAULT_REDIS_PREFIX)
        );
        let text = format!(
            "store = \"postgres://postgres@127.0.0.1:5432/test\"\n\
             postgres_table_prefix = \"sa1_\"\n{MINIMAL}"
        );
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        let StoreConfig::Postgres { url, prefix } = c.store else {
            panic!("not postgres: {:?}", c.store);
        };
        assert_eq!(url.to_string(), "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(prefix.as_str(), "sa1_");
        let text = format!("store = \"postgresql://db.example/sessions\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert!(
            matches!(c.store, StoreConfig::Postgres { ref prefix, .. } if *prefix == TablePrefix::default())
        );
    }

    /// A Sentinel URL waits for one replica within 500 ms unless told otherwise; a plain Redis
    /// URL waits for none unless told; `redis_wait_replicas = 0` turns the wait off.
    #[test]
    fn redis_replica_wait_defaults_and_settings() {
        let wait_of = |lines: &str| {
            let text = format!("{lines}\n{MINIMAL}");
            match Config::from_toml(&text, Path::new(".")).unwrap().store {
                StoreConfig::Redis { wait, .. } => wait,
                other => panic!("not redis: {other:?}"),
            }
        };
        let sentinel = "store = \"redis+sentinel://u:p@10.0.0.1:26379,10.0.0.2/svc/2\"";
        assert_eq!(wait_of(sentinel), Some(ReplicaWait::FAILOVER_DEFAULT));
        assert_eq!(wait_of("store = \"redis://h\""), None);
        assert_eq!(
            wait_of(&format!(
                "{sentinel}\nredis_wait_replicas = 2\nredis_wait_timeout = \"2s\""
            )),
            ReplicaWait::new(2, Duration::from_secs(2))
        );
        assert_eq!(
            wait_of(&format!("{sentinel}\nredis_wait_replicas = 0")),
            None
        );
        assert_eq!(
            wait_of("store = \"redis://h\"\nredis_wait_replicas = 1"),
            Some(ReplicaWait::FAILOVER_DEFAULT)
        );
        assert_eq!(
            wait_of("store = \"redis+cluster://h:7000,h:7001\""),
            Some(ReplicaWait::FAILOVER_DEFAULT)
        );
    }

    /// An unknown store, or a key that does not apply to the chosen store, is refused; the
    /// error never repeats a value that may hold a password.
    #[test]
    fn bad_store_settings_are_refused() {
        for (line, needle) in [
            ("store = \"mysql://u:hunter2@db\"", "store must be"),
            (
                "store = \"postgres://u:hunter2@db:notaport/x\"",
                "not a valid PostgreSQL URL",
            ),
            (
                "store = \"postgres://u:hunter2@db/x?sslmode=require\"",
                "TLS to PostgreSQL is not supported yet",
            ),
            (
                "store = \"postgres://db/x\"\npostgres_table_prefix = \"x; DROP TABLE y\"",
                "postgres_table_prefix must be",
            ),
            (
                "store = \"postgres://db/x\"\npostgres_table_prefix = \"\"",
                "postgres_table_prefix must be",
            ),
            (
                "store = \"redis://h\"\npostgres_table_prefix = \"x_\"",
                "postgres_table_prefix applies only",
            ),
            (
                "store = \"postgres://db/x\"\nredis_prefix = \"x:\"",
                "redis_prefix applies only",
            ),
            (
                "store = \"redis://u:hunter2@host:notaport\"",
                "not a valid Redis URL",
            ),
            ("store = \"memory\"\ndata_dir = \"d\"", "data_dir"),
            (
                "store = \"embedded\"\nredis_prefix = \"x:\"",
                "redis_prefix",
            ),
            ("store = \"redis://h\"\nredis_prefix = \"\"", "redis_prefix"),
            (
                "store = \"memory\"\nredis_wait_replicas = 1",
                "redis_wait_replicas applies only",
            ),
            (
                "store = \"redis+sentinel://u:hunter2@h:1/svc\"\nredis_wait_timeout = \"0s\"",
                "redis_wait_timeout must be above zero",
            ),
            (
                "store = \"redis+sentinel://u:hunter2@h:1/svc\"\nredis_wait_timeout = \"1m\"",
                "redis_wait_timeout must be above zero",
            ),
            (
                "store = \"redis://u:hunter2@h\"\nredis_wait_timeout = \"1s\"",
                "needs redis_wait_replicas",
            ),
            (
                "store = \"redis+sentinel://u:hunter2@h:1\"",
                "not a valid Redis URL",
            ),
        ] {
            let text = format!("{line}\n{MINIMAL}");
            let e = Config::from_toml(&text, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{line}: {e}");
            assert!(!e.contains("hunter2"), "{line}: {e}");
        }
    }

    /// A Redis store's password never shows in the configuration's Debug.
    #[test]
    fn redis_url_is_redacted() {
        let text = format!("store = \"redis://u:hunter2@h/1\"\n{MINIMAL}");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A PostgreSQL store's password never shows in the configuration's Debug.
    #[test]
    fn postgres_url_is_redacted() {
        for url in [
            "postgres://u:hunter2@h/1",
            "postgresql://u:hunter2@h:5433/sa?application_name=x",
            "postgres://h/sa?user=u&password=hunter2",
        ] {
            let text = format!("store = \"{url}\"\n{MINIMAL}");
            let c = Config::from_toml(&text, Path::new(".")).unwrap();
            assert!(!format!("{c:?}").contains("hunter2"), "{url}");
        }
    }
}
