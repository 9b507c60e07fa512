//! Helpers for tests that run the real `sessionauth` binary: a PKI and a configuration in a
//! temporary folder, server processes (started, SIGKILLed, restarted), and an mTLS HTTP/1.1
//! client over keep-alive connections.
//!
//! A node listens on `127.0.0.1:0`; its address is read from the line it logs once bound
//! ("sessionauth listening (https)" with `addr=`), so tests never guess a free port.

// Each test crate uses its own subset of these helpers, and `pub` here means "for the test
// files", which is what `unreachable_pub` objects to.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The environment variable that names the Redis server for tests.
pub const REDIS_ENV: &str = "SESSIONAUTH_TEST_REDIS_URL";

/// The Redis URL for tests, or `None` after printing a `SKIPPED` line (on the real stderr, so a
/// plain `cargo test` shows it).
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            say(&format!(
                "SKIPPED: {test}: set {REDIS_ENV} (e.g. redis://127.0.0.1:6379/15) to run it"
            ));
            None
        }
    }
}

/// Writes a line to the process's stderr, past the test harness's capture.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A temporary folder holding `certs/` (a dev PKI made now) and configuration files.
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// Makes the PKI: CA, server certificate, and client certificates for a bot and two apps.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let principals: Vec<String> = ["bot.user", "admin.bot", "demo-app", "other-app"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        sessionauth::pki::init(&dir.path().join("certs"), &principals).expect("dev PKI");
        Self { dir }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` with `listen = "127.0.0.1:0"`, the TLS settings, and `store_lines` (TOML
    /// top-level keys such as `store = "embedded"`).
    pub fn config(&self, name: &str, store_lines: &str) -> PathBuf {
        let text = format!(
            "listen = \"127.0.0.1:0\"\n{store_lines}\n\n[tls]\ncert = \"certs/server.pem\"\n\
             key = \"certs/server-key.pem\"\nclient_ca = [\"certs/ca.pem\"]\n"
        );
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A client identity: the CA to trust and, for `Some(cn)`, that principal's certificate.
    pub fn client(&self, cn: Option<&str>) -> Arc<rustls::ClientConfig> {
        let certs = self.path().join("certs");
        let mut roots = rustls::RootCertStore::empty();
        for ca in sessionauth::tls::read_certs(&certs.join("ca.pem")).expect("ca.pem") {
            roots.add(ca).expect("CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(sessionauth::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match cn {
            Some(cn) => {
                let chain = sessionauth::tls::read_certs(&certs.join(format!("{cn}.pem")))
                    .expect("client cert");
                let key = sessionauth::tls::read_key(&certs.join(format!("{cn}-key.pem")))
                    .expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// A running `sessionauth serve` process. Dropping it kills it.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts the binary on `config` and waits (up to 30 s) for its "listening" line.
    pub fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessionauth"))
            .args(["serve", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .env(
                "SESSIONAUTH_LOG",
                "info,sessionauth::access=warn,sessionauth::session=warn",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessionauth");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let keep = log.clone();
        // Drains stderr for the life of the process (a full pipe would stall the server).
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("sessionauth listening (https)") {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(parse_addr(&line));
                    }
                }
                let mut log = keep.lock();
                if log.len() < 10_000 {
                    log.push(line);
                }
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => addr,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sessionauth did not report its address ({other:?}); its log:\n{}",
                    log.lock().join("\n")
                );
            }
        };
        Self { child, addr, log }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("addr=")? + "addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// One keep-alive HTTP/1.1 connection over TLS.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

/// A response: the status and the JSON body (`Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub json: serde_json::Value,
}

impl Conn {
    /// Connects to `addr` with `tls` (see [`Site::client`]).
    pub async fn open(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request with an empty body and an optional `sessionToken` header.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        if let Some(token) = token {
            req = req.header("sessionToken", token);
        }
        self.sender.ready().await?;
        let res = self
            .sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok(Reply { status, json })
    }

    /// `POST /sessionauth/v1/authenticate`; the token on 200.
    pub async fn authenticate(
        &mut self,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        self.call(Method::POST, "/sessionauth/v1/authenticate", None)
            .await
    }

    /// `POST /sessionauth/v1/logout` for `token`.
    pub async fn logout(
        &mut self,
        token: &str,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        self.call(Method::POST, "/sessionauth/v1/logout", Some(token))
            .await
    }

    /// `GET /pod/v2/sessioninfo` for `token`.
    pub async fn session_info(
        &mut self,
        token: &str,
    ) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        self.call(Method::GET, "/pod/v2/sessioninfo", Some(token))
            .await
    }
}

/// The token of a 200 authenticate reply.
pub fn token_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    reply.json["token"]
        .as_str()
        .or_else(|| reply.json["sessionToken"].as_str())
        .expect("a token in the reply")
        .to_owned()
}

/// Calls `f` until it returns `Some` or `limit` passes; the test fails with `what` on timeout.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
