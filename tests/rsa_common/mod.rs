//! The harness of the RSA and access-token tests: an in-process server on `127.0.0.1:0` with a
//! PKI made at test time (rcgen), RSA keys made at test time (the `rsa` crate, once per test
//! binary), JWTs signed with *ring*, and a real TLS client with or without a client certificate.

// Test support: a failed setup step should panic with its cause.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use sessionauth::clock::ManualClock;
use sessionauth::config::Config;
use sessionauth::pki::{Ca, Validity};
use sessionauth::server::{self, Prepared};
use tokio::sync::oneshot;

/// An RSA key pair made for the tests.
pub struct TestKey {
    pub private_pem: String,
    pub public_pem: String,
    pair: ring::signature::RsaKeyPair,
}

impl TestKey {
    fn generate(bits: usize) -> Self {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).unwrap();
        let private_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap();
        Self {
            private_pem,
            public_pem,
            pair,
        }
    }

    /// A JWT with this exact header and claims, signed with `alg` (RS256/384/512).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let alg = header["alg"].as_str().unwrap_or("RS512");
        let params: &'static dyn ring::signature::RsaEncoding = match alg {
            "RS256" => &ring::signature::RSA_PKCS1_SHA256,
            "RS384" => &ring::signature::RSA_PKCS1_SHA384,
            _ => &ring::signature::RSA_PKCS1_SHA512,
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                params,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// What a Symphony BDK sends: RS512, `{sub, exp}` with exp `ahead` seconds from now.
    pub fn jwt(&self, sub: &str, ahead: i64) -> String {
        self.sign(
            &json!({ "alg": "RS512", "typ": "JWT" }),
            &json!({ "sub": sub, "exp": now_secs() + ahead }),
        )
    }
}

/// Keys shared by every test of one binary (generating RSA keys is slow).
pub struct KeyPool {
    pub bot: TestKey,
    pub bot_previous: TestKey,
    pub stranger: TestKey,
    pub retired: TestKey,
    pub demo_app: TestKey,
    pub no_obo_app: TestKey,
    pub other_app: TestKey,
    pub signing_a: TestKey,
    pub signing_b: TestKey,
}

pub static KEYS: LazyLock<KeyPool> = LazyLock::new(|| {
    let mut keys: Vec<TestKey> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..9)
            .map(|_| s.spawn(|| TestKey::generate(2048)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut next = || keys.remove(0);
    KeyPool {
        bot: next(),
        bot_previous: next(),
        stranger: next(),
        retired: next(),
        demo_app: next(),
        no_obo_app: next(),
        other_app: next(),
        signing_a: next(),
        signing_b: next(),
    }
});

pub fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The test directory: the sample's principals, with RSA keys by path.
pub fn directory_toml() -> String {
    r#"
[[user]]
id = 1001
username = "bot.user"
accountType = "SYSTEM"
scopes = ["at2", "read", "write"]
publicKeyPath = "keys/bot.user.pub.pem"
previousPublicKeyPath = "keys/bot.user.previous.pub.pem"

[[user]]
id = 1002
username = "retired.bot"
accountType = "SYSTEM"
active = false
publicKeyPath = "keys/retired.bot.pub.pem"

[[user]]
id = 1003
username = "admin.bot"
accountType = "SYSTEM"

[[user]]
id = 2001
username = "alice"
accountType = "NORMAL"
installedApps = ["demo-app", "no-obo-app"]

[[user]]
id = 2002
username = "bob"
accountType = "NORMAL"

[[user]]
id = 2003
username = "carol"
accountType = "NORMAL"
active = false
installedApps = ["demo-app"]

[[app]]
appId = "demo-app"
allowOnBehalfOf = true
publicKeyPath = "keys/demo-app.pub.pem"

[[app]]
appId = "no-obo-app"
allowOnBehalfOf = false
publicKeyPath = "keys/no-obo-app.pub.pem"

[[app]]
appId = "other-app"
allowOnBehalfOf = true
publicKeyPath = "keys/other-app.pub.pem"
"#
    .to_owned()
}

/// A folder with a PKI, keys, a directory and a configuration.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    /// Extra top-level TOML (before `[tls]`).
    pub top: String,
    /// Extra TOML after the `[tls]` table (for example a `[signing]` table).
    pub tail: String,
    /// Whether the directory file is used (false: the embedded sample).
    pub use_directory: bool,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("rsa test CA").unwrap();
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(2))
            .unwrap();
        write(&dir.path().join("ca.pem"), ca.cert_pem());
        write(&dir.path().join("server.pem"), &server.cert_pem);
        write(&dir.path().join("server-key.pem"), server.key_pem());
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let k = &*KEYS;
        for (name, key) in [
            ("bot.user", &k.bot),
            ("bot.user.previous", &k.bot_previous),
            ("retired.bot", &k.retired),
            ("demo-app", &k.demo_app),
            ("no-obo-app", &k.no_obo_app),
            ("other-app", &k.other_app),
        ] {
            write(&keys.join(format!("{name}.pub.pem")), &key.public_pem);
        }
        write(&keys.join("signing-a.pem"), &k.signing_a.private_pem);
        write(&keys.join("signing-b.pem"), &k.signing_b.private_pem);
        write(&dir.path().join("directory.toml"), &directory_toml());
        Self {
            dir,
            ca,
            top: String::new(),
            // A pool key, so that no test waits for a signing key to be generated.
            tail: "[signing]\nkey = \"keys/signing-a.pem\"\n".to_owned(),
            use_directory: true,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file's text.
    pub fn config_toml(&self) -> String {
        let directory = if self.use_directory {
            "directory = \"directory.toml\"\n"
        } else {
            ""
        };
        format!(
            "listen = \"127.0.0.1:0\"\n{directory}{}\n[tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = [\"ca.pem\"]\n{}\n",
            self.top, self.tail
        )
    }

    pub fn config(&self) -> Config {
        let path = self.dir.path().join("sessionauth.toml");
        write(&path, &self.config_toml());
        Config::from_file(&path).unwrap()
    }

    /// Starts a server with this setup and a manual clock.
    pub async fn start(&self) -> Server {
        Server::start(self.config(), self.ca.cert_pem().to_owned(), &self.ca).await
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A running in-process server.
pub struct Server {
    pub port: u16,
    pub clock: Arc<ManualClock>,
    trust: String,
    client_certs: Vec<(String, String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts `config`; the client trusts `trust_pem`; client certificates come from `ca`.
    pub async fn start(config: Config, trust_pem: String, ca: &Ca) -> Self {
        let clock = Arc::new(ManualClock::starting_now());
        let prepared = Prepared::new(config).unwrap().with_clock(clock.clone());
        Self::run(prepared, trust_pem, ca, clock).await
    }

    pub async fn run(
        prepared: Prepared,
        trust_pem: String,
        ca: &Ca,
        clock: Arc<ManualClock>,
    ) -> Self {
        let listener = prepared.bind().await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, prepared, async {
            let _ = rx.await;
        }));
        let client_certs = [
            "bot.user",
            "demo-app",
            "no-obo-app",
            "other-app",
            "retired.bot",
        ]
        .iter()
        .map(|name| {
            let issued = ca.issue_client(name, Validity::days_from_now(1)).unwrap();
            (
                (*name).to_owned(),
                issued.cert_pem.clone(),
                issued.key_pem().to_owned(),
            )
        })
        .collect();
        Self {
            port,
            clock,
            trust: trust_pem,
            client_certs,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// A request without a client certificate.
    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            method,
            path: path.to_owned(),
            cert: None,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    /// A session token from a JWT on `path` (asserts 200).
    pub async fn token_from(&self, path: &str, jwt: &str) -> String {
        let r = self.post(path).json(&json!({ "token": jwt })).send().await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// bot.user's session by RSA.
    pub async fn bot_session(&self) -> String {
        self.token_from("/login/pubkey/authenticate", &KEYS.bot.jwt("bot.user", 290))
            .await
    }

    /// An app's session by RSA.
    pub async fn app_session(&self, app: &str, key: &TestKey) -> String {
        self.token_from("/login/pubkey/app/authenticate", &key.jwt(app, 290))
            .await
    }
}

/// One request being built.
pub struct Call<'s> {
    server: &'s Server,
    method: Method,
    path: String,
    cert: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// A response: status, headers, JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error message of a JSON error body.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

impl Call<'_> {
    /// Present the client certificate of `name`.
    pub fn cert(mut self, name: &str) -> Self {
        self.cert = Some(name.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn session(self, token: &str) -> Self {
        self.header("sessionToken", token)
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(&body.to_string())
    }

    pub async fn send(self) -> Reply {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.server.trust.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match &self.cert {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let (_, cert, key) = self
                    .server
                    .client_certs
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .unwrap();
                let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.server.port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(self.method)
            .uri(&self.path)
            .header("host", "localhost");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let body = Full::new(Bytes::from(self.body.unwrap_or_default()));
        let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A path inside the setup folder, as text for TOML.
pub fn toml_path(p: &Path) -> String {
    p.display().to_string()
}

pub fn keys_dir(setup: &Setup) -> PathBuf {
    setup.path().join("keys")
}
