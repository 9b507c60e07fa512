//! The server: everything read and checked before a port is bound ([`Prepared`]), then the
//! accept loop ([`run`]) with a connection limit, handshake and header time limits, backoff on
//! accept errors, and graceful shutdown, which closes the session lifecycle (and its purge).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::admission::{PerAddress, Throttled};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Limits};
use crate::crl::CrlSet;
use crate::directory::Directory;
use crate::http::{access_log, AccessLine, Api, ConnInfo};
use crate::identity::PeerIdentity;
use crate::pki::PkiError;
use crate::rsakey::RsaKeyError;
use crate::session::Sessions;
use crate::signing::{SigningError, SigningKeys};
use crate::store::{OpenError, SessionStore};
use crate::trust::{ReloadHandle, ReloadRequests, Reloader, TrustError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The directory, the CRLs or the TLS material did not load.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The dev PKI could not be made.
    #[error("dev PKI")]
    Pki(#[from] PkiError),
    /// The dev RSA key pairs could not be made.
    #[error("dev RSA keys")]
    RsaKeys(#[from] RsaKeyError),
    /// The signing key could not be loaded or made.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// The session store could not be opened.
    #[error("session store")]
    Store(#[from] OpenError),
    /// The listen address is taken.
    #[error(
        "address {addr} is in use: another sessionauth or service is listening; pass --listen \
         {free} (any free port) or stop it",
        free = SocketAddr::new(.addr.ip(), 0)
    )]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A configuration whose every file has been read and checked: ready to serve.
pub struct Prepared {
    config: Config,
    tls: Arc<ServerConfig>,
    crls: CrlSet,
    directory: Arc<Directory>,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    signing: Arc<SigningKeys>,
    /// What the dev PKI step did, when it ran.
    pub pki_report: Option<crate::pki::Report>,
    /// The public key files the key-folder rule gave to directory entries.
    pub adopted_keys: Vec<std::path::PathBuf>,
    reload: (ReloadHandle, ReloadRequests),
    /// The plain-HTTP listener for `/metrics` and health, once bound ([`Prepared::bind_metrics`]).
    metrics_listener: Option<TcpListener>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Loads the directory, makes the dev PKI (certificates and RSA key pairs) when
    /// configured, applies the key-folder rule, builds the TLS configuration, opens the
    /// configured session store, and loads (or makes) the signing key. The embedded store opens
    /// its file here (and fails here when it cannot); the Redis and PostgreSQL stores only set
    /// up their client and connect on first use, so a database that is down does not hold up
    /// start-up.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let pki_report = match &config.dev_pki {
            Some(dir) => {
                // The dev PKI issues certificates for the directory's principals, before the
                // key-folder rule looks for their keys.
                let (directory, _) = crate::trust::load_directory(&Config {
                    public_key_dir: None,
                    ..config.clone()
                })?;
                let principals = directory.certificate_principals();
                let mut report =
                    crate::pki::init(dir, &principals, &crate::pki::P12Password::default())?;
                crate::rsakey::init_pairs(dir, &principals, &mut report)?;
                Some(report)
            }
            None => None,
        };
        let (directory, adopted_keys) = crate::trust::load_directory(&config)?;
        let crls = crate::trust::load_crls_blocking(&config)?;
        let tls = crate::tls::server_config(&config.tls, &crls).map_err(TrustError::from)?;
        let store = crate::store::open(&config.store)?;
        // Last, so that a start refused for anything else writes no signing key.
        let signing = SigningKeys::load(&config.signing)?;
        Ok(Self {
            config,
            tls,
            crls,
            directory: Arc::new(directory),
            store,
            clock: Arc::new(SystemClock),
            signing: Arc::new(signing),
            pki_report,
            adopted_keys,
            reload: crate::trust::reload_channel(),
            metrics_listener: None,
        })
    }

    /// A handle that reloads the running server's directory, certificates and CRLs, as SIGHUP
    /// does.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.0.clone()
    }

    /// The CRLs loaded.
    pub fn crls(&self) -> &CrlSet {
        &self.crls
    }

    /// Replaces the clock (tests move time forward instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the session store.
    pub fn with_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = store;
        self
    }

    /// The configuration this was prepared from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The loaded directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The signing key and its published predecessors.
    pub fn signing(&self) -> &Arc<SigningKeys> {
        &self.signing
    }

    /// Binds `metrics_listen`, when configured: [`run`] then serves `/metrics` and the health
    /// endpoints there in plain HTTP. Returns the bound address.
    pub async fn bind_metrics(&mut self) -> Result<Option<SocketAddr>, StartError> {
        let Some(addr) = self.config.metrics_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local = listener.local_addr().ok();
        self.metrics_listener = Some(listener);
        Ok(local)
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let addr = self.config.listen;
        TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                StartError::AddrInUse { addr }
            } else {
                StartError::Bind { addr, source }
            }
        })
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The session store can no longer write in this process (see
    /// [`SessionStore::failed`]): the caller should exit non-zero so that a supervisor
    /// restarts the server once the cause (a full disk, say) is fixed.
    StoreFailed(String),
}

/// Serves HTTPS on `listener` until `shutdown` completes (or the session store fails for
/// good), then stops accepting, lets in-flight requests finish (up to the configured grace
/// period) and returns why it stopped.
pub async fn run(
    listener: TcpListener,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let Prepared {
        config,
        tls,
        crls,
        directory,
        store,
        clock,
        signing,
        reload: (_, mut reload_requests),
        metrics_listener,
        ..
    } = prepared;
    crate::metrics::set_enabled(config.metrics);
    let limits = config.limits.clone();
    let handshake_timeout = config.tls.handshake_timeout;
    let store_failed = {
        let store = store.clone();
        async move { store.failed().await }
    };
    tokio::pin!(store_failed);
    let mut stopped = Stopped::Shutdown;
    let sessions = Sessions::start(
        store,
        clock,
        config.session_lifetime,
        config.limits.max_sessions_per_user,
    );
    let api = Arc::new(Api::new(directory, sessions, &limits, signing));
    api.replace_crls(Arc::new(crls));
    let trust = Arc::new(Reloader::new(config, api.clone(), tls));
    trust.at_start().await;
    let refresh = tokio::spawn(trust.clone().refresh_loop());
    // Reload requests are served by a task of their own: the accept loop spends its idle time
    // waiting in `accept`, where a request it polled only between connections would wait for
    // the next client.
    let reloads = tokio::spawn({
        let trust = trust.clone();
        async move {
            while let Some(reply) = reload_requests.recv().await {
                let _ = reply.send(trust.reload().await);
            }
        }
    });
    let plain = metrics_listener.map(|listener| tokio::spawn(serve_plain(listener, api.clone())));
    // The login throttle forgets the addresses and identities whose buckets have refilled.
    let pruning = tokio::spawn({
        let api = api.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                api.prune_throttle();
            }
        }
    });
    // Established connections and handshakes in progress are counted apart, so that sockets
    // that never finish a handshake cannot take the connection pool; and no address may hold
    // more than its share of either.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let per_address = PerAddress::new(limits.max_connections_per_ip);
    let refused_log = Arc::new(Throttled::new(Duration::from_secs(10)));
    let failed_handshake_log = Arc::new(Throttled::new(Duration::from_secs(1)));
    let graceful = GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up: shutdown waits for requests in
    // flight, not for clients that have not even said hello.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);

    tokio::pin!(shutdown);
    loop {
        let handshake = tokio::select! {
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
            reason = &mut store_failed => {
                stopped = Stopped::StoreFailed(reason);
                break;
            }
        };
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
            reason = &mut store_failed => {
                stopped = Stopped::StoreFailed(reason);
                break;
            }
        };
        let Some(admitted) = per_address.admit(remote.ip()) else {
            // Closed before any TLS work: the cheapest answer to a flood from one address.
            drop(stream);
            crate::metrics::connection_refused("per_address_cap");
            refused_log.event(|held_back| {
                tracing::warn!(
                    client = %remote.ip(),
                    limit = limits.max_connections_per_ip,
                    held_back,
                    "connection refused: the address holds limits.max_connections_per_ip \
                     connections (one line per 10 s; held_back = refusals not logged since)"
                );
            });
            continue;
        };
        let watcher = graceful.watcher();
        // The configuration now: a reload changes what later handshakes see.
        let acceptor = TlsAcceptor::from(trust.tls());
        let api = api.clone();
        let limits = limits.clone();
        let connections = connections.clone();
        let failed_handshake_log = failed_handshake_log.clone();
        let mut stopping = stopping_rx.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            // The handshake and the wait for a connection slot share one deadline; the
            // handshake permit is held until a connection slot is had.
            let deadline = tokio::time::Instant::now() + handshake_timeout;
            let handshake_and_slot = async {
                let mut stream = stream;
                if speaks_plain_http(&stream).await? {
                    answer_plain_http(&mut stream).await;
                    return Err(std::io::Error::other(PlainHttp));
                }
                let tls = acceptor.accept(stream).await?;
                let slot = connections
                    .acquire_owned()
                    .await
                    .map_err(|_| std::io::Error::other("the server is stopping"))?;
                Ok::<_, std::io::Error>((tls, slot))
            };
            let outcome = tokio::select! {
                r = tokio::time::timeout_at(deadline, handshake_and_slot) => r,
                _ = stopping.wait_for(|s| *s) => return,
            };
            drop(handshake);
            let (tls, _slot) = match outcome {
                Ok(Ok(established)) => established,
                Ok(Err(e)) => {
                    let reason = handshake_failure(&e);
                    crate::metrics::handshake_failure(reason);
                    failed_handshake_log.event(|held_back| {
                        tracing::info!(
                            reason,
                            client = %remote,
                            error = %e,
                            held_back,
                            "TLS handshake failed (at most one line a second; held_back = \
                             failures not logged since)"
                        );
                    });
                    return;
                }
                Err(_) => {
                    crate::metrics::handshake_failure("handshake_timeout");
                    failed_handshake_log.event(|held_back| {
                        tracing::info!(
                            reason = "handshake_timeout",
                            client = %remote,
                            held_back,
                            "TLS handshake timed out (at most one line a second)"
                        );
                    });
                    return;
                }
            };
            serve_connection(tls, remote, &limits, api, watcher).await;
        });
    }
    drop(listener);
    refresh.abort();
    reloads.abort();
    pruning.abort();
    if let Some(plain) = plain {
        plain.abort();
    }
    let _ = stopping_tx.send(true);
    match &stopped {
        Stopped::Shutdown => {
            tracing::info!("shutting down: no new connections; waiting for in-flight requests");
        }
        Stopped::StoreFailed(reason) => tracing::error!(
            error = %reason,
            "the session store cannot write any more (a full disk or an I/O error): stopping, \
             so that a supervisor restarts the server once the cause is fixed"
        ),
    }
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "in-flight requests did not finish within the grace period"
        );
    }
    api.sessions().close().await;
    stopped
}

/// Serves the plain-HTTP listener (`metrics_listen`): `/metrics` and the health endpoints only,
/// no client certificate, small limits. Runs until aborted at shutdown.
async fn serve_plain(listener: TcpListener, api: Arc<Api>) {
    let open = Arc::new(Semaphore::new(64));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = accept(&listener).await;
        let api = api.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle_plain(&req).await) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 * 1024);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The error a plain-HTTP client's connection ends with (after its 400).
#[derive(Debug, thiserror::Error)]
#[error("plain HTTP on the HTTPS port")]
struct PlainHttp;

/// Whether the client's first byte says plain HTTP (a request line starts with a letter; a TLS
/// record with 0x16). Waits for that byte.
async fn speaks_plain_http(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0].is_ascii_uppercase())
}

/// Answers a plain-HTTP request on the HTTPS port the way nginx does, with a readable 400 (in
/// our JSON error shape), then closes. The request head is read first (bounded), so that the
/// close does not reset the connection before the client reads the answer.
async fn answer_plain_http(stream: &mut TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_head).await;
    let body = r#"{"code":400,"message":"This port speaks HTTPS: a plain HTTP request was sent to it; use https://"}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The stable reason code of a failed TLS handshake, for the log.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    if e.get_ref().is_some_and(|inner| inner.is::<PlainHttp>()) {
        return "plain_http";
    }
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "connection_error";
    };
    match tls {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "cert_expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "cert_not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::BadEncoding => "cert_unparseable",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "cert_wrong_purpose"
            }
            other => {
                // webpki refuses a version-1 certificate (what textbook `openssl x509 -req`
                // makes without an extensions file) as an unsupported version.
                if format!("{other:?}").contains("UnsupportedCertVersion") {
                    "cert_v1"
                } else {
                    "bad_certificate"
                }
            }
        },
        Error::NoCertificatesPresented => "no_certificate",
        Error::PeerIncompatible(_) => "incompatible_client",
        Error::InvalidMessage(_) => "not_tls",
        Error::AlertReceived(_) => "client_alert",
        _ => "handshake_error",
    }
}

/// Accepts one connection, backing off (1 ms doubling to 1 s) while accept fails, as it does
/// when the process runs out of file descriptors.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(1);
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                // Small request/response exchanges: do not wait to coalesce packets.
                let _ = stream.set_nodelay(true);
                return (stream, remote);
            }
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    remote: SocketAddr,
    limits: &Limits,
    api: Arc<Api>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    // The identity is read once, here, and travels with the connection.
    let peer = PeerIdentity::from_verified_chain(tls.get_ref().1.peer_certificates());
    let cn = peer.common_name().map(str::to_owned);
    let conn = Arc::new(ConnInfo { peer, remote });
    // A client that sends requests and never reads the answers is cut off once a write has
    // been stuck for `write_timeout`: without it, a slow reader holds its connection forever.
    let mut io = tokio_io_timeout::TimeoutStream::new(tls);
    io.set_write_timeout(Some(limits.write_timeout));
    let io = Box::pin(io);
    let service = service_fn(move |req| {
        let api = api.clone();
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(api.handle(req, &conn).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // What is buffered of pipelined requests while earlier ones are answered: past it,
        // hyper stops reading and TCP pushes back on the client.
        .max_buf_size(limits.max_pipelined_bytes.max(limits.max_header_bytes));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        match answered_by_hyper(&e) {
            // hyper answered a request it could not parse itself (no body, then it closed the
            // connection): that request gets its access-log line too.
            Some(status) => access_log(&AccessLine {
                method: "-",
                path: "-",
                status,
                cn: cn.as_deref(),
                trace_id: "-",
                client: remote,
                duration: None,
                error: Some(&e),
            }),
            None => tracing::debug!(%remote, error = %e, "connection ended with an error"),
        }
    }
}

/// The status hyper itself answered with, for the connection errors where it answers: a
/// request it could not parse (400), a head over the size limit (431), a head that did not
/// arrive in time (408).
fn answered_by_hyper(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        Some(431)
    } else if e.is_parse() || e.is_parse_status() {
        Some(400)
    } else if e.is_timeout() {
        Some(408)
    } else {
        None
    }
}
