//! The server under test: a [`Site`] (a temporary folder with the PKI, a session store chosen by
//! [`Backend`], and configuration files written from [`Options`]) and a [`TestServer`] (the real
//! server running in-process on `127.0.0.1:0` with a `ManualClock`).
//!
//! The store is named in the configuration text only, as an operator would, so that the harness
//! depends on no store API of the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use sessionauth::clock::ManualClock;
use sessionauth::config::Config;
use sessionauth::server::{self, Prepared};
use sessionauth::trust::{ReloadFailed, ReloadHandle, ReloadReport};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::client::{
    assert_token_shape, client_config, client_config_on, tcp_connect, tls_connect_with, BoxError,
    ClientTls, Conn, Req, Resp,
};
use super::pki::{Identity, Pki, CA_FILE, ODD_CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE};
use super::postgres::TestPostgres;
use super::redis::{toml_string, TestRedis, Topology};
use super::{Backend, APP_AUTH, AUTH, SESSIONINFO, WAIT};

/// The configuration file a [`Site`] writes unless told another name.
pub const CONFIG_FILE: &str = "sessionauth.toml";

/// Which directory the server loads.
#[derive(Debug, Clone)]
enum Directory {
    /// The embedded sample (no `directory` key).
    Sample,
    /// The RSA test directory with its key files (see `rsa.rs`).
    Rsa,
    /// This TOML text, as `directory.toml`.
    Text(String),
}

/// Per-test changes to the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    session_lifetime: Option<String>,
    top: Vec<String>,
    tls: Vec<String>,
    limits: Vec<String>,
    directory: Directory,
    /// The lines of `[signing]`; `None`: no table, the server makes its own key.
    signing: Option<Vec<String>>,
    /// Store lines that replace the site's.
    store: Option<String>,
}

impl Default for Options {
    /// The embedded sample directory, the pooled signing key (`keys/signing-a.pem`), the site's
    /// store, and the server's defaults for everything else.
    fn default() -> Self {
        Self {
            session_lifetime: None,
            top: Vec::new(),
            tls: Vec::new(),
            limits: Vec::new(),
            directory: Directory::Sample,
            signing: Some(vec!["key = \"keys/signing-a.pem\"".to_owned()]),
            store: None,
        }
    }
}

impl Options {
    /// The RSA test directory (the sample's principals with RSA keys, see `rsa.rs`).
    pub fn rsa() -> Self {
        Self {
            directory: Directory::Rsa,
            ..Self::default()
        }
    }

    /// `session_lifetime = "<d>"`.
    pub fn session_lifetime(mut self, d: &str) -> Self {
        self.session_lifetime = Some(d.to_owned());
        self
    }

    /// An extra top-level line, e.g. `public_key_dir = "folder"`.
    pub fn top(mut self, line: &str) -> Self {
        self.top.push(line.to_owned());
        self
    }

    /// An extra line in `[tls]`, e.g. `handshake_timeout = "300ms"`.
    pub fn tls(mut self, line: &str) -> Self {
        self.tls.push(line.to_owned());
        self
    }

    /// An extra line in `[limits]`, e.g. `max_body_bytes = 100`.
    pub fn limit(mut self, line: &str) -> Self {
        self.limits.push(line.to_owned());
        self
    }

    /// A directory file (TOML text) instead of the embedded sample.
    pub fn directory(mut self, toml: &str) -> Self {
        self.directory = Directory::Text(toml.to_owned());
        self
    }

    /// The embedded sample directory (no `directory` key).
    pub fn sample_directory(mut self) -> Self {
        self.directory = Directory::Sample;
        self
    }

    /// An extra line in `[signing]`, e.g. `access_token_lifetime = "90s"`.
    pub fn signing(mut self, line: &str) -> Self {
        self.signing
            .get_or_insert_with(Vec::new)
            .push(line.to_owned());
        self
    }

    /// `[signing]` with `key` and `previous_keys` (paths relative to the site).
    pub fn signing_keys(mut self, key: &str, previous: &[&str]) -> Self {
        let mut lines = vec![format!("key = {}", toml_string(key))];
        if !previous.is_empty() {
            let list: Vec<String> = previous.iter().map(|p| toml_string(p)).collect();
            lines.push(format!("previous_keys = [{}]", list.join(", ")));
        }
        self.signing = Some(lines);
        self
    }

    /// No `[signing]` table: the server makes (or reuses) `signing-key.pem` beside its TLS key.
    pub fn unconfigured_signing(mut self) -> Self {
        self.signing = None;
        self
    }

    /// These store lines instead of the site's (e.g. a Redis URL through a proxy).
    pub fn store(mut self, lines: &str) -> Self {
        self.store = Some(lines.to_owned());
        self
    }

    /// The configuration file's text, given the store lines; the PKI files are in the same
    /// folder.
    fn config_text(&self, listen: &str, store: &str) -> String {
        let mut text = format!("listen = \"{listen}\"\n");
        text.push_str(self.store.as_deref().unwrap_or(store));
        text.push('\n');
        if let Some(d) = &self.session_lifetime {
            text.push_str(&format!("session_lifetime = \"{d}\"\n"));
        }
        if !matches!(self.directory, Directory::Sample) {
            text.push_str("directory = \"directory.toml\"\n");
        }
        for line in &self.top {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!(
            "[tls]\ncert = \"{SERVER_CERT_FILE}\"\nkey = \"{SERVER_KEY_FILE}\"\n\
             client_ca = [\"{CA_FILE}\", \"{ODD_CA_FILE}\"]\n"
        ));
        for line in &self.tls {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("[limits]\n");
        for line in &self.limits {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(lines) = &self.signing {
            text.push_str("[signing]\n");
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// A temporary folder with a fresh [`Pki`] and one session store, from which servers (in
/// process, or the binary) are started with configuration files written from [`Options`].
/// Servers started from one site share its store: a restart finds the sessions of the last
/// run (embedded, Redis, PostgreSQL). Cheap to clone; the folders and the Redis keys go with the last clone.
#[derive(Clone)]
pub struct Site {
    inner: Arc<SiteInner>,
}

struct SiteInner {
    pki: Arc<Pki>,
    backend: Backend,
    /// The embedded store's `data_dir`.
    data: Option<TempDir>,
    redis: Option<TestRedis>,
    postgres: Option<TestPostgres>,
}

/// Where [`Site::new`] puts an embedded store's data: a RAM-backed folder when the machine has
/// one. Making a fresh database costs about a hundred fsyncs, a tenth of a second on an idle
/// disk and seconds on a busy one; on tmpfs they cost nothing, and the store runs the same code.
const FAST_DATA_ROOT: &str = "/dev/shm";

impl Site {
    /// A fresh site on `backend`; an embedded store keeps its data in RAM (see
    /// [`FAST_DATA_ROOT`]). Panics for [`Backend::Redis`], [`Backend::Sentinel`],
    /// [`Backend::Cluster`] and [`Backend::Postgres`] when their server is not configured or
    /// not reachable.
    pub fn new(backend: Backend) -> Self {
        let root = Path::new(FAST_DATA_ROOT);
        Self::with_data_root(backend, root.is_dir().then_some(root))
    }

    /// A fresh site whose embedded store keeps its data on disk, in the site's folder: for
    /// tests about what reaches the disk.
    pub fn with_data_on_disk(backend: Backend) -> Self {
        Self::with_data_root(backend, None)
    }

    fn with_data_root(backend: Backend, root: Option<&Path>) -> Self {
        let pki = Arc::new(Pki::new());
        let data = (backend == Backend::Embedded).then(|| {
            tempfile::Builder::new()
                .prefix("sessionauth-test-data")
                .tempdir_in(root.unwrap_or(pki.path()))
                .expect("data folder")
        });
        let redis = match backend {
            Backend::Redis => Some(TestRedis::on(Topology::Server)),
            Backend::Sentinel => Some(TestRedis::on(Topology::Sentinel)),
            Backend::Cluster => Some(TestRedis::on(Topology::Cluster)),
            Backend::Memory | Backend::Embedded | Backend::Postgres => None,
        };
        let postgres = (backend == Backend::Postgres).then(TestPostgres::new);
        Self {
            inner: Arc::new(SiteInner {
                pki,
                backend,
                data,
                redis,
                postgres,
            }),
        }
    }

    /// The PKI; its folder is the site's.
    pub fn pki(&self) -> &Arc<Pki> {
        &self.inner.pki
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.inner.pki.path()
    }

    /// The store this site's servers use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The test Redis and this site's key prefix, on [`Backend::Redis`], [`Backend::Sentinel`]
    /// and [`Backend::Cluster`].
    pub fn redis(&self) -> Option<&TestRedis> {
        self.inner.redis.as_ref()
    }

    /// The test PostgreSQL and this site's table prefix, on [`Backend::Postgres`].
    pub fn postgres(&self) -> Option<&TestPostgres> {
        self.inner.postgres.as_ref()
    }

    /// Writes `contents` as the file `name` in the site's folder (a CRL, say); returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write site file");
        path
    }

    /// The configuration lines that choose this site's store.
    pub fn store_lines(&self) -> String {
        let inner = &self.inner;
        match (inner.backend, &inner.data, &inner.redis) {
            (Backend::Memory, _, _) => "store = \"memory\"\n".to_owned(),
            (Backend::Embedded, Some(data), _) => format!(
                "store = \"embedded\"\ndata_dir = {}\n",
                toml_string(&data.path().display().to_string())
            ),
            (Backend::Redis | Backend::Sentinel | Backend::Cluster, _, Some(redis)) => {
                redis.store_lines()
            }
            (Backend::Postgres, _, _) => match &inner.postgres {
                Some(postgres) => postgres.store_lines(),
                None => unreachable!("a PostgreSQL site holds its database"),
            },
            _ => unreachable!("a site holds the store it was made for"),
        }
    }

    /// Writes [`CONFIG_FILE`] (listening on `listen`) and the files `options` names; returns
    /// its path.
    pub fn write_config(&self, options: &Options, listen: &str) -> PathBuf {
        self.write_config_as(CONFIG_FILE, options, listen)
    }

    /// Writes the configuration file `name` (listening on `listen`) and the files `options`
    /// names (directory, keys); returns its path.
    pub fn write_config_as(&self, name: &str, options: &Options, listen: &str) -> PathBuf {
        let dir = self.path();
        if options.signing.is_some() {
            super::rsa::write_signing_key(dir);
        }
        match &options.directory {
            Directory::Sample => {}
            Directory::Rsa => super::rsa::write_directory(dir),
            Directory::Text(text) => {
                std::fs::write(dir.join("directory.toml"), text).expect("write directory");
            }
        }
        let path = dir.join(name);
        let text = options.config_text(listen, &self.store_lines());
        std::fs::write(&path, text).expect("write configuration");
        path
    }

    /// The configuration `options` makes, read back as the server reads it.
    pub fn config(&self, options: &Options) -> Config {
        let path = self.write_config(options, "127.0.0.1:0");
        Config::from_file(&path).expect("test configuration")
    }

    /// Starts a server in-process with `options` and a manual clock.
    pub async fn start(&self, options: &Options) -> TestServer {
        let config = self.config(options);
        let clock = Arc::new(ManualClock::starting_now());
        let prepared = Prepared::new(config)
            .expect("server prepares")
            .with_clock(clock.clone());
        let trust = self.pki().ca.cert_pem().to_owned();
        TestServer::serve(self, prepared, clock, trust).await
    }
}

/// The real server, running in-process on an ephemeral port; dropping it signals shutdown.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// Its site's PKI.
    pub pki: Arc<Pki>,
    /// Its site (folder and store).
    pub site: Site,
    /// The CA the client trusts.
    trust: String,
    /// Reloads the running server's trust, as SIGHUP does.
    reload: ReloadHandle,
    shutdown: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server on `backend` with the default test configuration and the embedded sample
    /// directory.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    /// A server on `backend` with per-test configuration.
    pub async fn start_with(backend: Backend, options: Options) -> Self {
        Site::new(backend).start(&options).await
    }

    /// Serves `prepared` (whose clock is `clock`); the client trusts `trust_pem`.
    pub async fn serve(
        site: &Site,
        prepared: Prepared,
        clock: Arc<ManualClock>,
        trust_pem: String,
    ) -> Self {
        let listener = prepared.bind().await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let reload = prepared.reload_handle();
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(async move {
            let stopped = server::run(listener, prepared, async move {
                // Completes on send and when the sender is dropped with the TestServer.
                let _ = rx.await;
            })
            .await;
            assert_eq!(
                stopped,
                server::Stopped::Shutdown,
                "the server stopped on its own"
            );
        });
        Self {
            addr,
            clock,
            pki: site.pki().clone(),
            site: site.clone(),
            trust: trust_pem,
            reload,
            shutdown: Some(tx),
            run: Some(run),
        }
    }

    /// Reloads the directory, certificates and CRLs, as SIGHUP does, and waits (bounded) for the
    /// outcome.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadFailed> {
        tokio::time::timeout(WAIT, self.reload.reload())
            .await
            .expect("reload answered in time")
    }

    /// Replaces the directory file the server reads (`directory.toml`, the file
    /// [`Options::directory`] and [`Options::rsa`] write) with `toml`; a [`reload`] applies it.
    ///
    /// [`reload`]: Self::reload
    pub fn write_directory(&self, toml: &str) {
        self.site.write_file("directory.toml", toml);
    }

    /// Writes `contents` as the file `name` in the site's folder (a CRL, say).
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        self.site.write_file(name, contents)
    }

    /// Moves the server's clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Signals shutdown and waits (bounded) for `server::run` to return. True when it did.
    pub async fn shutdown(&mut self) -> bool {
        self.signal_shutdown();
        self.stopped().await
    }

    /// Stops the server, asserting that `server::run` returns in time.
    pub async fn stop(mut self) {
        assert!(self.shutdown().await, "server::run did not complete");
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (bounded) until new connections are refused: the listener is closed.
    pub async fn listener_closed(&self) -> bool {
        let poll = async {
            while TcpStream::connect(self.addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(WAIT, poll).await.is_ok()
    }

    /// Waits (bounded) for `server::run` to return. True when it did.
    pub async fn stopped(&mut self) -> bool {
        match self.run.take() {
            Some(run) => matches!(tokio::time::timeout(WAIT, run).await, Ok(Ok(()))),
            None => true,
        }
    }

    /// A plain TCP connection to the server.
    pub async fn tcp(&self) -> Result<TcpStream, BoxError> {
        tcp_connect(self.addr).await
    }

    /// A TLS connection (server name `localhost`), presenting `id` when given.
    pub async fn tls(&self, id: Option<&Identity>) -> Result<TlsStream<TcpStream>, BoxError> {
        self.tls_with(id, ClientTls::Default).await
    }

    /// A TLS connection with a chosen protocol version.
    pub async fn tls_with(
        &self,
        id: Option<&Identity>,
        version: ClientTls,
    ) -> Result<TlsStream<TcpStream>, BoxError> {
        tls_connect_with(self.addr, self.client_config(id, version)?).await
    }

    /// A client TLS configuration trusting this server, presenting `id` when given.
    pub fn client_config(
        &self,
        id: Option<&Identity>,
        version: ClientTls,
    ) -> Result<Arc<rustls::ClientConfig>, BoxError> {
        client_config(&self.trust, id, version)
    }

    /// As [`TestServer::client_config`], on the given crypto provider.
    pub fn client_config_on(
        &self,
        provider: rustls::crypto::CryptoProvider,
        id: Option<&Identity>,
        version: ClientTls,
    ) -> Result<Arc<rustls::ClientConfig>, BoxError> {
        client_config_on(provider, &self.trust, id, version)
    }

    /// An HTTP/1.1 connection over TLS, presenting `id` when given.
    pub async fn connect(&self, id: Option<&Identity>) -> Result<Conn, BoxError> {
        Conn::over(self.tls(id).await?).await
    }

    /// One request on a fresh connection; `Err` when the connection or the exchange fails.
    pub async fn try_request(&self, id: Option<&Identity>, req: Req) -> Result<Resp, BoxError> {
        let mut conn = self.connect(id).await?;
        conn.send(req).await
    }

    /// One request on a fresh connection; panics when the exchange fails.
    pub async fn request(&self, id: Option<&Identity>, req: Req) -> Resp {
        let what = format!("{} {}", req.method, req.path);
        match self.try_request(id, req).await {
            Ok(resp) => resp,
            Err(e) => panic!("{what} failed: {e}"),
        }
    }

    /// `POST path` with an optional certificate and `sessionToken`.
    pub async fn post(&self, id: Option<&Identity>, path: &str, token: Option<&str>) -> Resp {
        self.request(id, Req::post(path).token_opt(token)).await
    }

    /// `GET /pod/v2/sessioninfo` without a certificate.
    pub async fn session_info(&self, token: Option<&str>) -> Resp {
        self.request(None, Req::get(SESSIONINFO).token_opt(token))
            .await
    }

    /// demo-app's certificate, a fresh app session of it, and an on-behalf-of session it
    /// minted with that for alice (2001).
    pub async fn demo_app_with_obo(&self) -> (Identity, String, String) {
        let app = self.pki.client("demo-app");
        let app_session = self.app_token(&app).await;
        let obo = self
            .obo_token(&app, &app_session, &super::obo_by_id("2001"))
            .await;
        (app, app_session, obo)
    }

    /// The session token is live: sessioninfo answers 200.
    pub async fn assert_live(&self, token: &str) {
        self.session_info(Some(token))
            .await
            .assert_status(StatusCode::OK);
    }

    /// The session token is dead: sessioninfo answers 401 "Invalid session".
    pub async fn assert_dead(&self, token: &str) {
        let message = self
            .session_info(Some(token))
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
        assert_eq!(message, "Invalid session");
    }

    /// Authenticates on `path` with `id` and returns the token, asserting the 200 shape.
    pub async fn token(&self, id: &Identity, path: &str) -> String {
        let resp = self.post(Some(id), path, None).await;
        resp.assert_status(StatusCode::OK);
        let token = resp.string("token");
        assert_token_shape(&token);
        token
    }

    /// A bot's session token (`/sessionauth/v1/authenticate`).
    pub async fn session_token(&self, id: &Identity) -> String {
        self.token(id, AUTH).await
    }

    /// An app's own session token.
    pub async fn app_token(&self, id: &Identity) -> String {
        self.token(id, APP_AUTH).await
    }

    /// An on-behalf-of session minted by the app `id` (holding `app_token`) for `path`.
    pub async fn obo_token(&self, id: &Identity, app_token: &str, path: &str) -> String {
        let resp = self.post(Some(id), path, Some(app_token)).await;
        resp.assert_status(StatusCode::OK);
        let token = resp.string("sessionToken");
        assert_token_shape(&token);
        token
    }
}
