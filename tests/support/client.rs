//! The one TLS + HTTP/1.1 client (tokio-rustls + hyper): every step is bounded, connect and
//! TLS handshake, sending a request until its response head arrives, and reading the body, each
//! by [`WAIT`]; raw-stream helpers for what a well-behaved client would never send; and the
//! assertions the suites make on responses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pki::Identity;
use super::WAIT;

/// What a failed client step returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy)]
pub enum ClientTls {
    /// TLS 1.3 and 1.2.
    Default,
    /// TLS 1.2 only: client-certificate refusals surface during the handshake.
    Tls12Only,
}

/// A client TLS configuration trusting the CA in `ca_pem`, presenting `id` when given. Reusing
/// one configuration for several connections lets them resume TLS sessions.
pub fn client_config(
    ca_pem: &str,
    id: Option<&Identity>,
    version: ClientTls,
) -> Result<Arc<ClientConfig>, BoxError> {
    let provider = rustls::crypto::ring::default_provider();
    client_config_on(provider, ca_pem, id, version)
}

/// As [`client_config`], on the given crypto provider (its cipher suites and key exchange
/// groups are what the client offers).
pub fn client_config_on(
    provider: rustls::crypto::CryptoProvider,
    ca_pem: &str,
    id: Option<&Identity>,
    version: ClientTls,
) -> Result<Arc<ClientConfig>, BoxError> {
    let provider = Arc::new(provider);
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

/// A TCP connection to `addr`, within [`WAIT`].
pub async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))??;
    // Small request/response exchanges: do not wait to coalesce packets.
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A TLS connection to `addr` (server name `localhost`) with a given client configuration; the
/// connect and the handshake are each bounded by [`WAIT`].
pub async fn tls_connect_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let tcp = tcp_connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    let tls = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out")??;
    Ok(tls)
}

/// A TLS connection to `addr` trusting the CA in `ca_pem`, presenting `id` when given.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    id: Option<&Identity>,
    version: ClientTls,
) -> Result<TlsStream<TcpStream>, BoxError> {
    tls_connect_with(addr, client_config(ca_pem, id, version)?).await
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Req {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    /// `method path`, no headers, empty body.
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path`.
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

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Resp {
    /// The body as text (lossy).
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

    /// Asserts an error in the contract's shape whose message contains `part`.
    pub fn assert_error_containing(&self, status: StatusCode, part: &str) {
        let message = self.assert_error(status);
        assert!(message.contains(part), "expected {part:?} in {message:?}");
    }

    /// The string member `name` of a JSON body; panics (showing the body) when there is none.
    pub fn string(&self, name: &str) -> String {
        self.json()[name]
            .as_str()
            .unwrap_or_else(|| panic!("no string {name:?} in {}", self.text()))
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

    /// Connects to `addr` over TLS with `config` and starts HTTP/1.1.
    pub async fn open(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Self, BoxError> {
        Self::over(tls_connect_with(addr, config).await?).await
    }

    /// Sends one request and reads the whole response: until the response head arrives within
    /// [`WAIT`], then the body within [`WAIT`].
    pub async fn send(&mut self, req: Req) -> Result<Resp, BoxError> {
        let mut builder = Request::builder()
            .method(req.method)
            .uri(req.path)
            .header("host", "localhost");
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(Full::new(req.body))?;
        let head = async {
            self.sender.ready().await?;
            Ok::<_, BoxError>(self.sender.send_request(request).await?)
        };
        let response = tokio::time::timeout(WAIT, head)
            .await
            .map_err(|_| "no response within the wait")??;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(WAIT, body.collect())
            .await
            .map_err(|_| "the response body did not arrive within the wait")??
            .to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
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

/// Reads exactly `n` bytes within [`WAIT`].
pub async fn read_exactly<S>(stream: &mut S, n: usize) -> Vec<u8>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read");
    buf
}

/// Writes raw bytes on an established stream, within [`WAIT`].
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

/// A token is 43 characters of base64url without padding.
pub fn assert_token_shape(token: &str) {
    assert!(is_token_shaped(token), "not a token's shape: {token:?}");
}

/// Whether `s` has a token's shape: 43 characters of base64url without padding.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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

/// The token of a 200 authenticate answer: `token` (the certificate and RSA shapes) or
/// `sessionToken` (the certificate OBO shape).
pub fn token_of(resp: &Resp) -> String {
    resp.assert_status(StatusCode::OK);
    let body = resp.json();
    body["token"]
        .as_str()
        .or_else(|| body["sessionToken"].as_str())
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned()
}
