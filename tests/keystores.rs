//! The dev PKI's PKCS#12 keystores: `certs init` and `certs issue` write `<name>.p12`
//! (certificate, key and CA chain, mode 0600) and `truststore.p12` (the CA as a trusted entry);
//! they open with their password and not with another, hold what the PEM files hold, and
//! authenticate against the real server, in Rust (rustls) and with curl `--cert-type P12`;
//! OpenSSL reads them.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hyper::StatusCode;
use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::node::{self, Node};
use support::*;

/// The service users and apps of the embedded sample: the principals `certs init` makes
/// keystores for.
const PRINCIPALS: [&str; 6] = [
    "bot.user",
    "retired.bot",
    "admin.bot",
    "demo-app",
    "no-obo-app",
    "other-app",
];

/// The mode bits of a file.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The first certificate of a PEM file, DER.
fn cert_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The PKCS#8 DER of a PEM key file.
fn key_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    match PrivateKeyDer::from_pem_slice(&pem).unwrap() {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        other => panic!("not PKCS#8: {other:?}"),
    }
}

/// Opens a keystore file with `password`.
fn open(path: &Path, password: &str) -> Result<KeyStore, p12_keystore::error::Error> {
    KeyStore::from_pkcs12(
        &std::fs::read(path).unwrap(),
        password,
        Pkcs12ImportPolicy::Relaxed,
    )
}

/// Asserts `dir/<name>.p12` opens with `password` (and not with another), is mode 0600, and
/// holds, under the alias `name`, the key of `<name>-key.pem` with `<name>.pem` then `ca.pem`.
fn assert_client_keystore(dir: &Path, name: &str, password: &str) {
    let path = dir.join(format!("{name}.p12"));
    assert_eq!(mode(&path), 0o600, "{name}.p12");
    assert!(open(&path, "not-the-password").is_err(), "{name}.p12");
    let store = open(&path, password).unwrap();
    let (alias, chain) = store.private_key_chain().expect("a key entry");
    assert_eq!(alias, name);
    let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
    assert_eq!(
        certs,
        vec![
            cert_der(&dir.join(format!("{name}.pem"))).as_slice(),
            cert_der(&dir.join("ca.pem")).as_slice(),
        ],
        "{name}.p12's chain"
    );
    assert_eq!(
        chain.key().as_der(),
        key_der(&dir.join(format!("{name}-key.pem"))).as_slice(),
        "{name}.p12's key"
    );
}

/// The identity (chain and key) a keystore holds, for the test client.
fn identity_of(path: &Path, password: &str) -> Identity {
    let store = open(path, password).unwrap();
    let (_, chain) = store.private_key_chain().unwrap();
    Identity::from_der(
        chain.certs().iter().map(|c| c.as_der().to_vec()).collect(),
        chain.key().as_der().to_vec(),
    )
}

/// Makes the dev PKI in `tmp/certs` and a configuration serving it on `127.0.0.1:0`.
async fn init_and_config(tmp: &Path, args: &[&str]) -> std::path::PathBuf {
    let mut full = vec!["certs", "init", "--dir", "certs"];
    full.extend_from_slice(args);
    let run = node::run(&full, tmp).await;
    assert!(run.status.success(), "{}", run.stderr);
    let config = tmp.join("sessionauth.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\n[tls]\ncert = \"certs/server.pem\"\n\
         key = \"certs/server-key.pem\"\nclient_ca = [\"certs/ca.pem\"]\n",
    )
    .unwrap();
    config
}

/// `certs init` writes a keystore per service user and app (0600, password `changeit`, the
/// certificate, key and CA chain of the PEM files) and `truststore.p12` holding the CA alone as
/// a trusted certificate entry; its output states the password and the files; a second run
/// keeps every keystore.
#[tokio::test]
async fn certs_init_writes_keystores_with_the_default_password() {
    let tmp = tempfile::tempdir().unwrap();
    let run = node::run(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");
    for name in PRINCIPALS {
        assert_client_keystore(&dir, name, "changeit");
        assert!(
            run.stdout.contains(&format!("created certs/{name}.p12")),
            "{}",
            run.stdout
        );
    }
    assert!(
        !dir.join("alice.p12").exists(),
        "a NORMAL user got a keystore"
    );
    assert!(run.stdout.contains("\"changeit\""), "{}", run.stdout);

    let trust = dir.join("truststore.p12");
    assert!(run.stdout.contains("created certs/truststore.p12"));
    assert!(open(&trust, "wrong").is_err());
    let store = open(&trust, "changeit").unwrap();
    assert_eq!(store.entries_len(), 1);
    let (_, entry) = store.entries().next().unwrap();
    let KeyStoreEntry::Certificate(ca) = entry else {
        panic!("the truststore's entry is not a trusted certificate: {entry:?}");
    };
    assert_eq!(ca.as_der(), cert_der(&dir.join("ca.pem")).as_slice());

    let before = std::fs::read(dir.join("bot.user.p12")).unwrap();
    let again = node::run(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(again.status.success(), "{}", again.stderr);
    assert!(again.stdout.contains("kept    certs/bot.user.p12"));
    assert!(again.stdout.contains("kept    certs/truststore.p12"));
    assert_eq!(std::fs::read(dir.join("bot.user.p12")).unwrap(), before);
}

/// `--p12-password` (or `SESSIONAUTH_P12_PASSWORD`) sets the keystores' password, which the
/// output never shows; the flag wins over the variable; an empty password is refused.
#[tokio::test]
async fn the_keystore_password_can_be_chosen() {
    let tmp = tempfile::tempdir().unwrap();
    let run = node::run_with_env(
        &["certs", "init", "--dir", "certs"],
        tmp.path(),
        &[("SESSIONAUTH_P12_PASSWORD", "from-the-env")],
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");
    assert_client_keystore(&dir, "bot.user", "from-the-env");
    assert!(open(&dir.join("truststore.p12"), "from-the-env").is_ok());
    assert!(!run.stdout.contains("from-the-env") && !run.stderr.contains("from-the-env"));

    let run = node::run_with_env(
        &[
            "certs",
            "issue",
            "--cn",
            "bot.two",
            "--dir",
            "certs",
            "--p12-password",
            "from-the-flag",
        ],
        tmp.path(),
        &[("SESSIONAUTH_P12_PASSWORD", "from-the-env")],
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_client_keystore(&dir, "bot.two", "from-the-flag");
    assert!(
        run.stdout.contains("created certs/bot.two.p12"),
        "{}",
        run.stdout
    );
    for secret in ["from-the-flag", "from-the-env"] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }

    let run = node::run(
        &[
            "certs",
            "issue",
            "--cn",
            "bot.three",
            "--dir",
            "certs",
            "--p12-password",
            "",
        ],
        tmp.path(),
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("--p12-password"), "{}", run.stderr);
    assert!(!dir.join("bot.three-key.pem").exists());
}

/// `certs issue` writes the keystore 0600 beside the PEM files, and refuses to replace one: a
/// keystore left from an earlier certificate is kept, and nothing is issued.
#[tokio::test]
async fn certs_issue_writes_a_keystore_and_never_replaces_one() {
    let tmp = tempfile::tempdir().unwrap();
    let run = node::run(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");
    let run = node::run(
        &["certs", "issue", "--cn", "new.bot", "--dir", "certs"],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_client_keystore(&dir, "new.bot", "changeit");

    std::fs::write(dir.join("old.bot.p12"), b"an earlier keystore").unwrap();
    let run = node::run(
        &["certs", "issue", "--cn", "old.bot", "--dir", "certs"],
        tmp.path(),
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(dir.join("old.bot.p12")).unwrap(),
        b"an earlier keystore"
    );
    assert!(!dir.join("old.bot-key.pem").exists());
}

/// A keystore's certificate and key, as a Java client would take them from it, authenticate
/// against the server the dev PKI serves: the bot gets a session and the app an app session;
/// a keystore issued for a CN the directory does not know is refused with 403.
#[tokio::test]
async fn keystores_authenticate_against_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let config = init_and_config(tmp.path(), &[]).await;
    let run = node::run(
        &["certs", "issue", "--cn", "stranger", "--dir", "certs"],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let serving = Node::start(&config).await;
    let dir = tmp.path().join("certs");
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let request = |id: Identity, path: &'static str| {
        let ca = ca.clone();
        async move {
            let stream = tls_connect(serving.addr, &ca, Some(&id), ClientTls::Default)
                .await
                .expect("TLS");
            Conn::over(stream)
                .await
                .unwrap()
                .send(Req::post(path))
                .await
                .unwrap()
        }
    };
    let resp = request(identity_of(&dir.join("bot.user.p12"), "changeit"), AUTH).await;
    resp.assert_status(StatusCode::OK);
    assert_token_shape(resp.json()["token"].as_str().unwrap());
    request(identity_of(&dir.join("demo-app.p12"), "changeit"), APP_AUTH)
        .await
        .assert_status(StatusCode::OK);
    request(identity_of(&dir.join("stranger.p12"), "changeit"), AUTH)
        .await
        .assert_error_containing(StatusCode::FORBIDDEN, "not allowed");
    assert!(serving.terminate().await.success());
}

/// Runs an external tool; a missing tool fails the test (it is never skipped).
fn tool(program: &str, args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed by this test and could not run: {e}"))
}

/// curl authenticates with the keystore alone (`--cert-type P12 --cert FILE:changeit`), and
/// the wrong password makes curl fail before any request.
#[tokio::test]
async fn curl_authenticates_with_the_keystore() {
    let tmp = tempfile::tempdir().unwrap();
    let config = init_and_config(tmp.path(), &[]).await;
    let serving = Node::start(&config).await;
    let url = format!("https://127.0.0.1:{}{AUTH}", serving.addr.port());
    let curl = |password: &str| {
        let cert = format!("certs/bot.user.p12:{password}");
        let args = [
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "certs/ca.pem",
            "--cert-type",
            "P12",
            "--cert",
            &cert,
            "-X",
            "POST",
            &url,
        ];
        tool("curl", &args, tmp.path())
    };
    let ok = curl("changeit");
    let body = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{body} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["name"], "sessionToken");
    assert_token_shape(json["token"].as_str().unwrap());
    let wrong = curl("wrong");
    assert!(
        !wrong.status.success(),
        "curl took a wrong keystore password"
    );
    assert!(serving.terminate().await.success());
}

/// The system's OpenSSL reads both keystores with the password (and refuses another): the
/// client keystore with its key and two certificates, the truststore with the CA.
#[tokio::test]
async fn openssl_reads_the_keystores() {
    let tmp = tempfile::tempdir().unwrap();
    let run = node::run(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let read = |file: &str, password: &str| {
        let pass = format!("pass:{password}");
        tool(
            "openssl",
            &["pkcs12", "-in", file, "-passin", &pass, "-nodes"],
            tmp.path(),
        )
    };
    let out = read("certs/bot.user.p12", "changeit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8_lossy(&out.stdout);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
    assert_eq!(pem.matches("BEGIN PRIVATE KEY").count(), 1);
    assert!(pem.contains("friendlyName: bot.user"), "{pem}");
    assert!(!read("certs/bot.user.p12", "wrong").status.success());

    let out = read("certs/truststore.p12", "changeit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8_lossy(&out.stdout);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1, "{pem}");
    assert!(!pem.contains("PRIVATE KEY"));
}
