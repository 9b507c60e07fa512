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
    /// its file here (and fails here when it cannot); the Redis store only parses its URL and
    /// connects on first use, so a Redis that is down does not hold up start-up.
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
                let mut report = crate::pki::init(dir, &principals)?;
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

/// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (up to the configured grace period) and returns.
pub async fn run(listener: TcpListener, prepared: Prepared, shutdown: impl Future<Output = ()>) {
    let Prepared {
        config,
        tls,
        crls,
        directory,
        store,
        clock,
        signing,
        reload: (_, mut reload_requests),
        ..
    } = prepared;
    let limits = config.limits.clone();
    let handshake_timeout = config.tls.handshake_timeout;
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
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up: shutdown waits for requests in
    // flight, not for clients that have not even said hello.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let watcher = graceful.watcher();
        // The configuration now: a reload changes what later handshakes see.
        let acceptor = TlsAcceptor::from(trust.tls());
        let api = api.clone();
        let limits = limits.clone();
        let mut stopping = stopping_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
            let tls = tokio::select! {
                r = handshake => r,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let tls = match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(tls, remote, &limits, api, watcher).await;
        });
    }
    drop(listener);
    refresh.abort();
    reloads.abort();
    let _ = stopping_tx.send(true);
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
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
    let service = service_fn(move |req| {
        let api = api.clone();
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(api.handle(req, &conn).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
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
