//! RSA keys made at test time (the `rsa` crate, once per test binary), JWTs signed with *ring*,
//! the RSA test directory, and the RSA authenticator's calls on a [`TestServer`].

use std::path::Path;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ::rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::client::{Req, Resp};
use super::server::TestServer;
use super::{RSA_APP, RSA_LOGIN};

/// An RSA key pair made for the tests.
pub struct TestKey {
    /// The private key, PKCS#8 PEM.
    pub private_pem: String,
    /// The public key, SPKI PEM.
    pub public_pem: String,
    pair: ring::signature::RsaKeyPair,
}

impl TestKey {
    fn generate() -> Self {
        let key = ::rsa::RsaPrivateKey::new(&mut ::rsa::rand_core::OsRng, 2048).expect("RSA key");
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
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let params: &'static dyn ring::signature::RsaEncoding =
            match header["alg"].as_str().unwrap_or("RS512") {
                "RS256" => &ring::signature::RSA_PKCS1_SHA256,
                "RS384" => &ring::signature::RSA_PKCS1_SHA384,
                _ => &ring::signature::RSA_PKCS1_SHA512,
            };
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

/// The signing key every test server gets unless a test says otherwise
/// (`keys/signing-a.pem`): made once per test binary, so that no server start waits for an RSA
/// key to be generated.
pub static SIGNING_KEY: LazyLock<TestKey> = LazyLock::new(TestKey::generate);

/// Keys shared by every RSA test of one binary (generating RSA keys is slow).
pub struct KeyPool {
    /// bot.user's registered key.
    pub bot: TestKey,
    /// bot.user's previous key (during a rotation).
    pub bot_previous: TestKey,
    /// Registered for nobody.
    pub stranger: TestKey,
    /// retired.bot's (an inactive user).
    pub retired: TestKey,
    /// demo-app's.
    pub demo_app: TestKey,
    /// no-obo-app's.
    pub no_obo_app: TestKey,
    /// other-app's.
    pub other_app: TestKey,
    /// A second signing key (`keys/signing-b.pem`), for rotations.
    pub signing_b: TestKey,
}

/// The pool, made on first use, its keys in parallel.
pub static KEYS: LazyLock<KeyPool> = LazyLock::new(|| {
    let mut keys: Vec<TestKey> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(TestKey::generate)).collect();
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
        signing_b: next(),
    }
});

/// Seconds since the epoch, on the wall clock (JWTs are checked against it).
pub fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Writes the default signing key as `keys/signing-a.pem` under `dir`.
pub(crate) fn write_signing_key(dir: &Path) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("signing-a.pem"), &SIGNING_KEY.private_pem).unwrap();
}

/// Writes the RSA test directory (`directory.toml`) and the public keys it names (`keys/`), and
/// `keys/signing-b.pem`, under `dir`.
pub(crate) fn write_directory(dir: &Path) {
    let keys = dir.join("keys");
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
        std::fs::write(keys.join(format!("{name}.pub.pem")), &key.public_pem).unwrap();
    }
    std::fs::write(keys.join("signing-b.pem"), &k.signing_b.private_pem).unwrap();
    std::fs::write(dir.join("directory.toml"), DIRECTORY).unwrap();
}

/// The RSA test directory: the embedded sample's principals, with RSA keys by path.
pub const DIRECTORY: &str = r#"
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
"#;

/// The RSA authenticator's calls (no client certificate).
impl TestServer {
    /// `POST path` with `{"token": jwt}`.
    pub async fn rsa_login(&self, path: &str, jwt: &str) -> Resp {
        self.request(None, Req::post(path).json(&json!({ "token": jwt })))
            .await
    }

    /// A session token from a JWT on `path` (asserts 200).
    pub async fn token_from(&self, path: &str, jwt: &str) -> String {
        let resp = self.rsa_login(path, jwt).await;
        resp.assert_status(StatusCode::OK);
        resp.string("token")
    }

    /// bot.user's session by RSA.
    pub async fn bot_session(&self) -> String {
        self.token_from(RSA_LOGIN, &KEYS.bot.jwt("bot.user", 290))
            .await
    }

    /// An app's session by RSA.
    pub async fn app_session(&self, app: &str, key: &TestKey) -> String {
        self.token_from(RSA_APP, &key.jwt(app, 290)).await
    }

    /// The UserV2 that sessioninfo answers for `token` (asserts 200).
    pub async fn session_user(&self, token: &str) -> Value {
        let resp = self.session_info(Some(token)).await;
        resp.assert_status(StatusCode::OK);
        resp.json()
    }
}
