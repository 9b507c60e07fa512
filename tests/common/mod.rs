//! The integration-test harness: a PKI made at test time, the real server started in-process on
//! `127.0.0.1:0` with a [`ManualClock`], and a real TLS client (tokio-rustls + hyper) that can
//! present a client certificate.
//!
//! Nothing here sleeps: time-based behaviour is driven by moving the [`ManualClock`], and every
//! network wait is bounded by [`WAIT`].

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use sessionauth::clock::ManualClock;
use sessionauth::config::Config;
use sessionauth::pki::{Ca, Issued, Validity};
use sessionauth::server::{self, Prepared};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The 403 message Symphony sends for a certificate that names no one allowed.
pub const CERT_NOT_ALLOWED: &str =
    "Forbidden: Certificate authentication is not allowed for the requested user.";

/// Paths of the certificate authenticator.
pub const AUTH: &str = "/sessionauth/v1/authenticate";
pub const AUTH_ALIAS: &str = "/session/authenticate";
pub const KEYAUTH: &str = "/keyauth/v1/authenticate";
pub const APP_AUTH: &str = "/sessionauth/v1/app/authenticate";
pub const LOGOUT: &str = "/sessionauth/v1/logout";
pub const KEY_LOGOUT: &str = "/keyauth/v1/logout";
pub const SESSIONINFO: &str = "/pod/v2/sessioninfo";

/// The on-behalf-of path by user id.
pub fn obo_by_id(uid: &str) -> String {
    format!("/sessionauth/v1/app/user/{uid}/authenticate")
}

/// The on-behalf-of path by username.
pub fn obo_by_name(username: &str) -> String {
    format!("/sessionauth/v1/app/username/{username}/authenticate")
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// A client certificate chain and key, ready for rustls.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// From a certificate PEM (leaf first) and a key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
        Self { chain, key }
    }

    /// From one PEM holding the certificate and its key (the BDK's bundle file).
    pub fn from_bundle(pem: &str) -> Self {
        Self::from_pem(pem, pem)
    }

    fn from_issued(issued: &Issued) -> Self {
        Self::from_pem(&issued.cert_pem, issued.key_pem())
    }
}

/// The test PKI, made fresh for every server: the trusted CA (from `sessionauth::pki`), a
/// foreign CA nobody trusts, and a second trusted CA made with rcgen directly for the subjects
/// `sessionauth::pki` cannot express (no CN, two CNs). The files live in a temporary folder.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub foreign: Ca,
    odd: Issuer<'static, KeyPair>,
}

/// File names in the PKI folder.
pub const CA_FILE: &str = "ca.pem";
pub const ODD_CA_FILE: &str = "odd-ca.pem";
pub const SERVER_CERT_FILE: &str = "server.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";

impl Pki {
    /// A fresh PKI with a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::generate("sessionauth test CA").expect("CA");
        let foreign = Ca::generate("foreign CA").expect("foreign CA");
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(365))
            .expect("server certificate");
        std::fs::write(dir.path().join(CA_FILE), ca.cert_pem()).expect("write");
        std::fs::write(dir.path().join(SERVER_CERT_FILE), &server.cert_pem).expect("write");
        std::fs::write(dir.path().join(SERVER_KEY_FILE), server.key_pem()).expect("write");

        let odd_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "odd-subject test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let odd_cert = params.self_signed(&odd_key).expect("odd CA");
        std::fs::write(dir.path().join(ODD_CA_FILE), odd_cert.pem()).expect("write");
        let odd = Issuer::new(params, odd_key);
        Self {
            dir,
            ca,
            foreign,
            odd,
        }
    }

    /// The folder holding the files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate `CN=<cn>` from the trusted CA, valid for a year.
    pub fn client(&self, cn: &str) -> Identity {
        self.client_valid(cn, Validity::days_from_now(365))
    }

    /// A client certificate `CN=<cn>` from the trusted CA with the given validity.
    pub fn client_valid(&self, cn: &str, validity: Validity) -> Identity {
        Identity::from_issued(&self.ca.issue_client(cn, validity).expect("client cert"))
    }

    /// A client certificate `CN=<cn>` from the foreign CA.
    pub fn foreign_client(&self, cn: &str) -> Identity {
        Identity::from_issued(
            &self
                .foreign
                .issue_client(cn, Validity::days_from_now(365))
                .expect("foreign client cert"),
        )
    }

    /// A client certificate with exactly `subject`, from the second trusted CA.
    pub fn client_with_subject(&self, subject: DistinguishedName) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(300);
        params.not_after = now + Duration::from_secs(365 * 86_400);
        let cert = params.signed_by(&key, &self.odd).expect("odd client cert");
        Identity::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// A client certificate whose subject has no CN at all (only `O=`).
    pub fn client_without_cn(&self) -> Identity {
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Example");
        self.client_with_subject(dn)
    }

    /// A client certificate whose subject has two CNs (`bot.user` and `admin.bot`).
    pub fn client_with_two_cns(&self) -> Identity {
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "bot.user");
        // rcgen keeps one value per attribute type; a custom type with CN's OID adds a second.
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "admin.bot");
        self.client_with_subject(dn)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Per-test changes to the configuration file.
#[derive(Default, Clone)]
pub struct Options {
    session_lifetime: Option<String>,
    tls: Vec<String>,
    limits: Vec<String>,
    directory: Option<String>,
}

impl Options {
    /// `session_lifetime = "<d>"`.
    pub fn session_lifetime(mut self, d: &str) -> Self {
        self.session_lifetime = Some(d.to_owned());
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
        self.directory = Some(toml.to_owned());
        self
    }

    /// The configuration file's text; the PKI files are in the same folder.
    pub fn config_text(&self, listen: &str) -> String {
        let mut text = format!("listen = \"{listen}\"\n");
        if let Some(d) = &self.session_lifetime {
            text.push_str(&format!("session_lifetime = \"{d}\"\n"));
        }
        if self.directory.is_some() {
            text.push_str("directory = \"directory.toml\"\n");
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
        text
    }
}

/// The real server, running in-process on an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub pki: Pki,
    shutdown: Option<oneshot::Sender<()>>,
    run: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with the default test configuration and the embedded sample directory.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server with per-test configuration.
    pub async fn start_with(options: Options) -> Self {
        let pki = Pki::new();
        if let Some(dir) = &options.directory {
            std::fs::write(pki.path().join("directory.toml"), dir).expect("write directory");
        }
        let text = options.config_text("127.0.0.1:0");
        let config = Config::from_toml(&text, pki.path()).expect("test configuration");
        let clock = Arc::new(ManualClock::starting_now());
        let prepared = Prepared::new(config)
            .expect("server prepares")
            .with_clock(clock.clone());
        let listener = prepared.bind().await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(server::run(listener, prepared, async move {
            // Completes on send and when the sender is dropped with the TestServer.
            let _ = rx.await;
        }));
        Self {
            addr,
            clock,
            pki,
            shutdown: Some(tx),
            run: Some(run),
        }
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
    pub async fn tcp(&self) -> std::io::Result<TcpStream> {
        tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))?
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
        tls_connect(self.addr, self.pki.ca.cert_pem(), id, version).await
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

    /// Authenticates on `path` with `id` and returns the token, asserting the 200 shape.
    pub async fn token(&self, id: &Identity, path: &str) -> String {
        let resp = self.post(Some(id), path, None).await;
        resp.assert_status(StatusCode::OK);
        let token = resp.json()["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {}", resp.text()))
            .to_owned();
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
        let token = resp.json()["sessionToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionToken in {}", resp.text()))
            .to_owned();
        assert_token_shape(&token);
        token
    }
}

/// A TLS connection to `addr` (server name `localhost`) trusting the CA in `ca_pem`,
/// presenting `id` when given.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    id: Option<&Identity>,
    version: ClientTls,
) -> Result<TlsStream<TcpStream>, BoxError> {
    tls_connect_with(addr, client_config(ca_pem, id, version)?).await
}

/// A client TLS configuration trusting the CA in `ca_pem`, presenting `id` when given. Reusing
/// one configuration for several connections lets them resume TLS sessions.
pub fn client_config(
    ca_pem: &str,
    id: Option<&Identity>,
    version: ClientTls,
) -> Result<Arc<ClientConfig>, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        ClientTls::Default => rustls::DEFAULT_VERSIONS,
        ClientTls::Tls12Only => &[&rustls::version::TLS12],
    };
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(der?)?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
    let mut config = match id {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection to `addr` (server name `localhost`) with a given client configuration.
pub async fn tls_connect_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let connector = TlsConnector::from(config);
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out")??;
    let name = ServerName::try_from("localhost")?;
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out")??;
    Ok(tls)
}

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy)]
pub enum ClientTls {
    /// TLS 1.3 and 1.2.
    Default,
    /// TLS 1.2 only: client-certificate refusals surface during the handshake.
    Tls12Only,
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A request to send.
pub struct Req {
    pub method: Method,
    pub path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }

    /// Adds `sessionToken: <t>`.
    pub fn token(self, t: &str) -> Self {
        self.header("sessionToken", t)
    }

    /// Adds `sessionToken` when given.
    pub fn token_opt(self, t: Option<&str>) -> Self {
        match t {
            Some(t) => self.token(t),
            None => self,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts the status, showing the body when it differs.
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
    }

    /// Asserts `Content-Type: application/json`.
    pub fn assert_json_content_type(&self) {
        assert_eq!(
            self.headers.get(CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/json")),
            "Content-Type of a {} response",
            self.status
        );
    }

    /// Asserts an error in the contract's shape: the status, JSON, exactly
    /// `{"code": <status>, "message": "<text>"}`. Returns the message.
    pub fn assert_error(&self, status: StatusCode) -> String {
        self.assert_status(status);
        self.assert_json_content_type();
        let body = self.json();
        assert_keys(&body, &["code", "message"]);
        assert_eq!(body["code"], u64::from(status.as_u16()), "{body}");
        body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("message is not a string: {body}"))
            .to_owned()
    }
}

/// An HTTP/1.1 client connection (keep-alive: several requests may be sent).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<Result<(), hyper::Error>>,
}

impl Conn {
    /// Starts HTTP/1.1 over an established stream.
    pub async fn over<S>(stream: S) -> Result<Self, BoxError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);
        Ok(Self { sender, driver })
    }

    /// Sends one request and reads the whole response, within [`WAIT`].
    pub async fn send(&mut self, req: Req) -> Result<Resp, BoxError> {
        let mut builder = Request::builder()
            .method(req.method)
            .uri(req.path)
            .header("host", "localhost");
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(Full::new(req.body))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .map_err(|_| "request timed out")?
    }

    /// Whether the connection has been closed (by either side).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Waits (bounded) for the connection to end; true when it did.
    pub async fn closed_within(self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.driver).await.is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw streams
// ---------------------------------------------------------------------------------------------

/// Reads until EOF (or error) within `wait`; `None` when the peer kept the connection open.
/// An error after some bytes (for example a TLS close without `close_notify`) counts as the end.
pub async fn read_to_end_within<S>(stream: &mut S, wait: Duration) -> Option<Vec<u8>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().map(|()| out)
}

/// Writes raw bytes on an established stream.
pub async fn write_raw<S>(stream: &mut S, bytes: &[u8])
where
    S: tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .expect("write timed out")
    .expect("write");
}

/// The status code of a raw HTTP/1.1 response (`HTTP/1.1 431 ...`).
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(response).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// A token is 43 characters of base64url without padding.
pub fn assert_token_shape(token: &str) {
    assert_eq!(token.len(), 43, "token length: {token:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "token is not URL-safe base64: {token:?}"
    );
}

/// The JSON value is an object with exactly `keys`.
pub fn assert_keys(value: &Value, keys: &[&str]) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"));
    let mut got: Vec<&str> = object.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "keys of {value}");
}

/// No `null` anywhere in the value.
pub fn assert_no_nulls(value: &Value) {
    match value {
        Value::Null => panic!("null in response"),
        Value::Array(items) => items.iter().for_each(assert_no_nulls),
        Value::Object(map) => {
            for (k, v) in map {
                assert!(!v.is_null(), "field {k:?} is null");
                assert_no_nulls(v);
            }
        }
        _ => {}
    }
}

/// A path under the PKI folder.
pub fn in_dir(pki: &Pki, name: &str) -> PathBuf {
    pki.path().join(name)
}
