//! The `sessionauth` binary: start-up errors stop it with a one-line error before any port is
//! bound; `check` validates and warns; `certs init` and `certs issue` make the dev PKI without
//! ever overwriting a key; a valid configuration serves and stops on SIGTERM.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use hyper::StatusCode;
use rustls::pki_types::pem::PemObject as _;
use support::node::{self, Node, Run};
use support::*;

/// The binary's tests write their configuration on the server's default store.
const BACKEND: Backend = Backend::Embedded;

/// Runs the binary in `cwd` to completion.
async fn sessionauth(args: &[&str], cwd: &Path) -> Run {
    node::run(args, cwd).await
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a configuration listening on `port` into the site's folder and returns its path.
fn write_config(site: &Site, options: &Options, port: u16) -> std::path::PathBuf {
    site.write_config(options, &format!("127.0.0.1:{port}"))
}

/// Asserts the run failed with exactly one line on stderr, `error: ...`, containing every
/// needle, and that nothing listens on `port`.
fn assert_one_line_error(run: &Run, needles: &[&str], port: u16) {
    assert!(!run.status.success(), "exit status {:?}", run.status);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
}

/// `serve` and `check` both refuse the configuration with the same one-line error.
async fn assert_refused(site: &Site, config: &Path, needles: &[&str], port: u16) {
    let config = config.to_str().unwrap();
    let serve = sessionauth(&["serve", "--config", config], site.path()).await;
    assert_one_line_error(&serve, needles, port);
    let check = sessionauth(&["check", "--config", config], site.path()).await;
    assert_one_line_error(&check, needles, port);
}

/// One request to a server at `addr` trusting `ca_pem`.
async fn request_at(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    id: Option<&Identity>,
    req: Req,
) -> Resp {
    let stream = tls_connect(addr, ca_pem, id, ClientTls::Default)
        .await
        .expect("TLS");
    Conn::over(stream).await.unwrap().send(req).await.unwrap()
}

/// The mode bits of a file.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// --- start-up errors ---------------------------------------------------------------------------

/// A valid configuration serves (a bot authenticates), and SIGTERM stops it with exit 0; this is
/// the positive twin of every refusal below.
#[tokio::test]
async fn valid_configuration_serves_and_stops_on_sigterm() {
    let site = Site::new(BACKEND);
    let pki = site.pki();
    let config = write_config(&site, &Options::default(), 0);
    let serving = Node::start(&config).await;
    let bot = pki.client("bot.user");
    let resp = request_at(serving.addr, pki.ca.cert_pem(), Some(&bot), Req::post(AUTH)).await;
    resp.assert_status(StatusCode::OK);
    assert_token_shape(resp.json()["token"].as_str().unwrap());
    let addr = serving.addr;
    let status = serving.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// An unknown key (top level or in a table) is refused, naming the key.
#[tokio::test]
async fn unknown_key_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("surprise = 1\n{text}")).unwrap();
    assert_refused(&site, &config, &["surprise", "sessionauth.toml"], port).await;
    std::fs::write(
        &config,
        text.replace("[tls]\n", "[tls]\nciphers = \"all\"\n"),
    )
    .unwrap();
    assert_refused(&site, &config, &["ciphers"], port).await;
}

/// A missing configuration file is refused, naming it.
#[tokio::test]
async fn missing_config_file_is_refused() {
    let site = Site::new(BACKEND);
    let missing = site.path().join("nope.toml");
    assert_refused(&site, &missing, &["nope.toml"], free_port()).await;
}

/// A missing certificate file named by the configuration is refused, naming it.
#[tokio::test]
async fn missing_certificate_file_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    std::fs::remove_file(site.path().join(SERVER_CERT_FILE)).unwrap();
    assert_refused(&site, &config, &[SERVER_CERT_FILE], port).await;
}

/// A server key that does not belong to the server certificate is refused, naming both.
#[tokio::test]
async fn key_not_matching_certificate_is_refused() {
    let site = Site::new(BACKEND);
    let pki = site.pki();
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    let other = pki
        .ca
        .issue_server(&["localhost"], Validity::days_from_now(30));
    std::fs::write(site.path().join(SERVER_KEY_FILE), other.key_pem()).unwrap();
    assert_refused(
        &site,
        &config,
        &["does not match", SERVER_KEY_FILE, SERVER_CERT_FILE],
        port,
    )
    .await;
}

/// An empty client CA bundle is refused, naming it.
#[tokio::test]
async fn empty_ca_bundle_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    std::fs::write(site.path().join(CA_FILE), "").unwrap();
    assert_refused(&site, &config, &["empty", CA_FILE], port).await;
}

/// An empty list of client CAs is refused, naming the key.
#[tokio::test]
async fn empty_client_ca_list_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &format!("client_ca = [\"{CA_FILE}\", \"{ODD_CA_FILE}\"]"),
        "client_ca = []",
    );
    std::fs::write(&config, text).unwrap();
    assert_refused(&site, &config, &["client_ca"], port).await;
}

/// A bad duration is refused, naming the value.
#[tokio::test]
async fn bad_duration_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default().session_lifetime("soon"), port);
    assert_refused(&site, &config, &["soon"], port).await;
}

/// A directory file that does not load is refused before binding.
#[tokio::test]
async fn bad_directory_file_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let options = Options::default().directory("[[user]]\nid = 1\nusername = \"x\"\n");
    let config = write_config(&site, &options, port);
    std::fs::write(
        site.path().join("directory.toml"),
        "[[user]]\nid = 1\nusername = \"x\"\naccountType = \"SYSTEM\"\nshoeSize = 9\n",
    )
    .unwrap();
    assert_refused(&site, &config, &["directory.toml"], port).await;
}

/// The error line of a failed run: its last line on stderr, which must start with `error: `.
fn error_line(run: &Run) -> String {
    assert!(!run.status.success(), "exit status {:?}", run.status);
    let stderr = run.stderr.trim_end();
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    last.to_owned()
}

/// The port being taken is a one-line error that names the address, the likely cause and the
/// fix.
#[tokio::test]
async fn port_in_use_is_refused() {
    let site = Site::new(BACKEND);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(&site, &Options::default(), port);
    let run = sessionauth(
        &["serve", "--config", config.to_str().unwrap()],
        site.path(),
    )
    .await;
    let line = error_line(&run);
    for needle in [
        format!("address 127.0.0.1:{port} is in use"),
        "another sessionauth or service is listening".to_owned(),
        "--listen 127.0.0.1:0".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle:?} not in: {line}");
    }
}

/// A second server on the data directory a running one holds is refused with a one-line error
/// that says the database is locked by another sessionauth and how to give it its own.
#[tokio::test]
async fn locked_database_is_explained() {
    let site = Site::new(Backend::Embedded);
    let config = write_config(&site, &Options::default(), 0);
    let serving = Node::start(&config).await;
    let run = sessionauth(
        &["serve", "--config", config.to_str().unwrap()],
        site.path(),
    )
    .await;
    let line = error_line(&run);
    for needle in ["sessions.db is locked", "another sessionauth", "--data-dir"] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    assert!(serving.terminate().await.success());
}

/// `check` in a fresh folder, before any dev PKI exists, says so and how to make one, rather
/// than failing on the first missing file; it writes nothing.
#[tokio::test]
async fn check_in_a_fresh_folder_explains_the_missing_pki() {
    let dir = tempfile::tempdir().unwrap();
    let run = sessionauth(&["check"], dir.path()).await;
    let line = error_line(&run);
    for needle in [
        "no dev PKI in certs yet",
        "sessionauth certs init",
        "--config",
    ] {
        assert!(line.contains(needle), "{needle:?} not in: {line}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A server certificate whose key file is missing is refused naming both and the fix.
#[tokio::test]
async fn certificate_without_its_key_is_refused() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(&site, &Options::default(), port);
    std::fs::remove_file(site.path().join(SERVER_KEY_FILE)).unwrap();
    assert_refused(
        &site,
        &config,
        &[
            SERVER_CERT_FILE,
            "has no private key",
            SERVER_KEY_FILE,
            "tls.key",
        ],
        port,
    )
    .await;
}

// --- check -----------------------------------------------------------------------------------

/// `check` passes a valid configuration and warns about a server certificate expiring within
/// 30 days, and about a client certificate beside the CA expiring within 30 days; a year-long
/// certificate draws no such warning.
#[tokio::test]
async fn check_warns_about_certificates_expiring_soon() {
    let site = Site::new(BACKEND);
    let pki = site.pki();
    let config = write_config(&site, &Options::default(), free_port());
    let config = config.to_str().unwrap();

    let run = sessionauth(&["check", "--config", config], site.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.contains("configuration is valid"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("expires within"), "{}", run.stdout);

    let soon = pki
        .ca
        .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(10));
    std::fs::write(site.path().join(SERVER_CERT_FILE), &soon.cert_pem).unwrap();
    std::fs::write(site.path().join(SERVER_KEY_FILE), soon.key_pem()).unwrap();
    let bot = pki.ca.issue_client("bot.user", Validity::days_from_now(5));
    std::fs::write(site.path().join("bot.user.pem"), &bot.cert_pem).unwrap();
    let admin = pki
        .ca
        .issue_client("admin.bot", Validity::days_from_now(365));
    std::fs::write(site.path().join("admin.bot.pem"), &admin.cert_pem).unwrap();

    let run = sessionauth(&["check", "--config", config], site.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("expires within 30 days"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.starts_with("warning: server certificate")),
        "{}",
        run.stdout
    );
    assert!(
        warnings.iter().any(|l| l.contains("bot.user")),
        "{}",
        run.stdout
    );
    assert!(
        !warnings.iter().any(|l| l.contains("admin.bot")),
        "{}",
        run.stdout
    );
    assert_eq!(warnings.len(), 2, "{}", run.stdout);
}

/// `check` warns about an expired client certificate beside the CA.
#[tokio::test]
async fn check_warns_about_expired_certificates() {
    let site = Site::new(BACKEND);
    let pki = site.pki();
    let config = write_config(&site, &Options::default(), free_port());
    let expired = pki.ca.issue_client("bot.user", Validity::expired());
    std::fs::write(site.path().join("bot.user.pem"), &expired.cert_pem).unwrap();
    let run = sessionauth(
        &["check", "--config", config.to_str().unwrap()],
        site.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("bot.user") && l.contains("EXPIRED")),
        "{}",
        run.stdout
    );
}

// --- certs -----------------------------------------------------------------------------------

/// Every file `certs init` makes for the embedded sample, with whether it is secret.
fn init_files() -> Vec<(String, bool)> {
    let mut files = vec![
        ("ca.pem".to_owned(), false),
        ("ca-key.pem".to_owned(), true),
        ("server.pem".to_owned(), false),
        ("server-key.pem".to_owned(), true),
        ("truststore.p12".to_owned(), false),
    ];
    for name in [
        "bot.user",
        "retired.bot",
        "admin.bot",
        "demo-app",
        "no-obo-app",
        "other-app",
    ] {
        files.push((format!("{name}.pem"), false));
        files.push((format!("{name}-key.pem"), true));
        files.push((format!("{name}.bundle.pem"), true));
        files.push((format!("{name}.p12"), true));
    }
    files
}

/// `certs init` makes the CA, the server certificate and a certificate for every SYSTEM user
/// and app, keys and bundles mode 0600; a second run overwrites nothing.
#[tokio::test]
async fn certs_init_makes_files_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");
    let mut before = Vec::new();
    for (name, secret) in init_files() {
        let path = dir.join(&name);
        assert!(path.exists(), "{name} missing; stdout: {}", run.stdout);
        if secret {
            assert_eq!(mode(&path), 0o600, "{name}");
        } else {
            assert!(mode(&path) & 0o400 != 0, "{name} unreadable");
        }
        before.push((name, std::fs::read(&path).unwrap()));
    }
    // NORMAL users get no certificate.
    assert!(!dir.join("alice.pem").exists());
    assert!(!dir.join("alice-key.pem").exists());

    let again = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(again.status.success(), "{}", again.stderr);
    assert!(!again.stdout.contains("created"), "{}", again.stdout);
    assert!(again.stdout.contains("kept"), "{}", again.stdout);
    for (name, bytes) in before {
        assert_eq!(
            std::fs::read(dir.join(&name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
}

/// A removed certificate is re-issued for its existing key; the key itself is kept.
#[tokio::test]
async fn certs_init_completes_a_missing_certificate_with_the_kept_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "d"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("d");
    let key = std::fs::read(dir.join("bot.user-key.pem")).unwrap();
    std::fs::remove_file(dir.join("bot.user.pem")).unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "d"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(dir.join("bot.user.pem").exists());
    assert_eq!(std::fs::read(dir.join("bot.user-key.pem")).unwrap(), key);
}

/// `certs init --directory FILE` makes certificates for that file's principals only.
#[tokio::test]
async fn certs_init_follows_a_directory_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("dir.toml"),
        "[[user]]\nid = 1\nusername = \"svc\"\naccountType = \"SYSTEM\"\n\n\
         [[user]]\nid = 2\nusername = \"human\"\naccountType = \"NORMAL\"\n\n\
         [[app]]\nappId = \"an-app\"\n",
    )
    .unwrap();
    let run = sessionauth(
        &["certs", "init", "--dir", "c", "--directory", "dir.toml"],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("c");
    assert!(dir.join("svc.bundle.pem").exists());
    assert!(dir.join("an-app.bundle.pem").exists());
    assert!(!dir.join("human.pem").exists());
    assert!(!dir.join("bot.user.pem").exists());
}

/// The PKI `certs init` makes works end to end: the server serves with it and a bot
/// authenticates with its bundle, as the Python BDK would.
#[tokio::test]
async fn certs_init_pki_serves_bots() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let config = tmp.path().join("sessionauth.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"certs/server.pem\"\n\
         key = \"certs/server-key.pem\"\nclient_ca = [\"certs/ca.pem\"]\n",
    )
    .unwrap();
    let serving = Node::start(&config).await;
    let ca = std::fs::read_to_string(tmp.path().join("certs/ca.pem")).unwrap();
    let bundle = std::fs::read_to_string(tmp.path().join("certs/bot.user.bundle.pem")).unwrap();
    let bot = Identity::from_bundle(&bundle);
    let resp = request_at(serving.addr, &ca, Some(&bot), Req::post(AUTH)).await;
    resp.assert_status(StatusCode::OK);
    let app = Identity::from_bundle(
        &std::fs::read_to_string(tmp.path().join("certs/demo-app.bundle.pem")).unwrap(),
    );
    request_at(serving.addr, &ca, Some(&app), Req::post(APP_AUTH))
        .await
        .assert_status(StatusCode::OK);
    // A certificate from a CA other than the one init made is refused.
    let foreign = Pki::new().client("bot.user");
    let refused = async {
        let stream = tls_connect(serving.addr, &ca, Some(&foreign), ClientTls::Default).await?;
        Conn::over(stream).await?.send(Req::post(AUTH)).await
    };
    assert!(refused.await.is_err());
    assert!(serving.terminate().await.success());
}

/// `certs issue` makes a client certificate (key 0600) valid for --days; a second issue for the
/// same CN, or for a CN `certs init` already made, is refused and keeps the existing key.
#[tokio::test]
async fn certs_issue_refuses_an_existing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");

    let run = sessionauth(
        &[
            "certs", "issue", "--cn", "new.bot", "--days", "10", "--dir", "certs",
        ],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    for (name, secret) in [
        ("new.bot.pem", false),
        ("new.bot-key.pem", true),
        ("new.bot.bundle.pem", true),
    ] {
        let path = dir.join(name);
        assert!(path.exists(), "{name}");
        if secret {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    let pem = std::fs::read(dir.join("new.bot.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
        '_,
        x509_parser::error::X509Error,
    >>::from_der(der.as_ref())
    .unwrap();
    let days = (cert.validity().not_after.timestamp()
        - time::OffsetDateTime::now_utc().unix_timestamp())
        / 86_400;
    assert!((9..=10).contains(&days), "valid for {days} days");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "new.bot"
    );

    for cn in ["new.bot", "bot.user"] {
        let key = std::fs::read(dir.join(format!("{cn}-key.pem"))).unwrap();
        let run = sessionauth(
            &["certs", "issue", "--cn", cn, "--dir", "certs"],
            tmp.path(),
        )
        .await;
        assert!(!run.status.success(), "{cn}: second issue succeeded");
        let stderr = run.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("already exists"), "{stderr}");
        assert_eq!(
            std::fs::read(dir.join(format!("{cn}-key.pem"))).unwrap(),
            key
        );
    }
}

/// `certs issue` without a CA, with zero days, or with a name that is not a safe file name is
/// refused with a one-line error and writes nothing.
#[tokio::test]
async fn certs_issue_refuses_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let run = sessionauth(
        &["certs", "issue", "--cn", "x", "--dir", "empty"],
        tmp.path(),
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("no dev CA"), "{}", run.stderr);
    assert!(!tmp.path().join("empty/x-key.pem").exists());

    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let run = sessionauth(
        &[
            "certs", "issue", "--cn", "x", "--days", "0", "--dir", "certs",
        ],
        tmp.path(),
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("--days"), "{}", run.stderr);
    assert!(!tmp.path().join("certs/x-key.pem").exists());

    for cn in ["../evil", "a/b", ".hidden", ""] {
        let run = sessionauth(
            &["certs", "issue", "--cn", cn, "--dir", "certs"],
            tmp.path(),
        )
        .await;
        assert!(!run.status.success(), "{cn:?} accepted");
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    }
    assert!(!tmp.path().join("evil-key.pem").exists());
    assert!(!tmp.path().join("evil.pem").exists());
}

/// A value of the wrong type, or a bad duration, is refused naming the key it belongs to, so
/// that the operator knows which line to fix.
#[tokio::test]
async fn bad_value_error_names_the_key() {
    let site = Site::new(BACKEND);
    let port = free_port();
    let config = write_config(
        &site,
        &Options::default().limit("max_body_bytes = \"x\""),
        port,
    );
    assert_refused(&site, &config, &["max_body_bytes"], port).await;
    let config = write_config(&site, &Options::default().session_lifetime("soon"), port);
    assert_refused(&site, &config, &["session_lifetime"], port).await;
}

// --- logging ---------------------------------------------------------------------------------

/// `--log-format json` writes one JSON object per line, with level, target, message and the
/// event's fields at the top level (the listening line's `addr` among them);
/// `SESSIONAUTH_LOG_FORMAT=json` does the same.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let site = Site::new(BACKEND);
    let config = write_config(&site, &Options::default(), 0);
    for (args, env) in [
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("SESSIONAUTH_LOG_FORMAT", "json")][..]),
    ] {
        let serving = Node::start_with(&config, args, env).await;
        let log = serving.log();
        assert!(serving.terminate().await.success());
        let mut listening = 0;
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v.get(key).is_some(), "no {key}: {line}");
            }
            if v["message"] == "sessionauth listening (https)" {
                listening += 1;
                assert_eq!(v["addr"], serving_addr(&v), "{line}");
            }
        }
        assert_eq!(listening, 1, "{log}");
    }
}

/// The listening line's `addr` field, which must be a socket address.
fn serving_addr(v: &serde_json::Value) -> serde_json::Value {
    let addr: std::net::SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    serde_json::Value::String(addr.to_string())
}

// --- flags and environment -------------------------------------------------------------------

/// The value of `field=` on a text log line (up to the next space).
fn field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    line[at..].split_whitespace().next()
}

/// The "listening" line of a node's log.
fn listening_line(node: &Node) -> String {
    node.log()
        .lines()
        .find(|l| l.contains("sessionauth listening (https)"))
        .expect("a listening line")
        .to_owned()
}

/// Precedence is flag > environment > file: the listen address (three loopback addresses tell
/// which won) and the store; a relative `--data-dir` is taken from the working directory and
/// the banner shows it, and the certificates' folder, absolute.
#[tokio::test]
async fn flag_beats_environment_beats_file() {
    let site = Site::new(BACKEND);
    let config = write_config(&site, &Options::default(), 0);
    let env_listen = ("SESSIONAUTH_LISTEN", "127.0.0.2:0");
    let env_store = ("SESSIONAUTH_STORE", "memory");
    for (args, env, ip, store) in [
        (&[][..], &[][..], "127.0.0.1", "embedded"),
        (&[][..], &[env_listen, env_store][..], "127.0.0.2", "memory"),
        (
            &[
                "--listen",
                "127.0.0.3:0",
                "--store",
                "embedded",
                "--data-dir",
                "flag-data",
            ][..],
            &[env_listen, env_store][..],
            "127.0.0.3",
            "embedded",
        ),
    ] {
        let serving = Node::start_with(&config, args, env).await;
        assert_eq!(serving.addr.ip().to_string(), ip, "{args:?} {env:?}");
        let line = listening_line(&serving);
        assert_eq!(field(&line, "store"), Some(store), "{line}");
        let certs = std::fs::canonicalize(site.path()).unwrap();
        assert_eq!(
            field(&line, "certs"),
            Some(certs.to_str().unwrap()),
            "{line}"
        );
        if args.contains(&"flag-data") {
            let data = certs.join("flag-data");
            assert!(data.join("sessions.db").is_dir());
            assert_eq!(field(&line, "data"), Some(data.to_str().unwrap()), "{line}");
        }
        let bot = site.pki().client("bot.user");
        let resp = request_at(
            serving.addr,
            site.pki().ca.cert_pem(),
            Some(&bot),
            Req::post(AUTH),
        )
        .await;
        resp.assert_status(StatusCode::OK);
        assert!(serving.terminate().await.success());
    }
}

/// `check` reads the same flags and environment: `--store memory` and `SESSIONAUTH_STORE`
/// change what it describes; a `--certs` folder without the files is refused naming them, and
/// `SESSIONAUTH_CONFIG` names the file as `--config` does.
#[tokio::test]
async fn check_takes_the_same_flags_and_environment() {
    let site = Site::new(BACKEND);
    let config = write_config(&site, &Options::default(), 0);
    let config = config.to_str().unwrap();
    let run = sessionauth(&["check", "--config", config], site.path()).await;
    assert!(
        run.stdout.contains("session store: embedded"),
        "{}",
        run.stdout
    );
    let run = sessionauth(
        &["check", "--config", config, "--store", "memory"],
        site.path(),
    )
    .await;
    assert!(
        run.stdout.contains("session store: memory"),
        "{}",
        run.stdout
    );
    let run = node::run_with_env(
        &["check"],
        site.path(),
        &[
            ("SESSIONAUTH_CONFIG", config),
            ("SESSIONAUTH_STORE", "memory"),
        ],
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.contains("session store: memory"),
        "{}",
        run.stdout
    );
    std::fs::create_dir(site.path().join("empty")).unwrap();
    let run = sessionauth(
        &["check", "--config", config, "--certs", "empty"],
        site.path(),
    )
    .await;
    let line = error_line(&run);
    assert!(line.contains("empty/server.pem"), "{line}");
    let run = sessionauth(
        &["check", "--config", config, "--listen", "nowhere"],
        site.path(),
    )
    .await;
    assert!(!run.status.success());
    assert!(run.stderr.contains("--listen"), "{}", run.stderr);
}

/// `--listen [::1]:0` serves on the IPv6 loopback. A machine without `::1` fails this test with
/// a message that says so, rather than passing it.
#[tokio::test]
async fn listens_on_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!("this machine has no IPv6 loopback (::1): {e}; the IPv6 test cannot run here");
    }
    let site = Site::new(BACKEND);
    let config = write_config(&site, &Options::default(), 0);
    let serving = Node::start_with(&config, &["--listen", "[::1]:0"], &[]).await;
    assert!(
        serving.addr.is_ipv6() && serving.addr.ip().is_loopback(),
        "{}",
        serving.addr
    );
    let bot = site.pki().client("bot.user");
    let resp = request_at(
        serving.addr,
        site.pki().ca.cert_pem(),
        Some(&bot),
        Req::post(AUTH),
    )
    .await;
    resp.assert_status(StatusCode::OK);
    assert!(serving.terminate().await.success());
}

// --- onboarding: certs issue's warning and next steps, check's fixes ---------------------------

/// The lines of a run's stderr that are warnings.
fn warning_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("warning:")).collect()
}

/// `certs issue` for a CN the server's directory does not have succeeds, warns on stderr in one
/// line (saying when no directory is configured), and walks through the next steps on stdout:
/// the directory entry, the reload, the first authenticate with the files just written. A CN the
/// directory has as an active service user draws no warning and nothing to add; a NORMAL user
/// is warned about.
#[tokio::test]
async fn certs_issue_warns_about_a_cn_the_directory_lacks_and_shows_the_next_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let certs = std::fs::canonicalize(tmp.path().join("certs")).unwrap();

    // No directory configured: the embedded sample, which has no newbot.
    let run = sessionauth(&["certs", "issue", "--cn", "newbot"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("warning: \"newbot\" is not in the directory"),
        "{stderr}"
    );
    assert!(stderr.contains("no directory is configured"), "{stderr}");
    for needle in [
        "Next steps:",
        "[[user]]",
        "id = 2004",
        "username = \"newbot\"",
        "accountType = \"SYSTEM\"",
        "[[app]]",
        "--directory directory.toml",
        &format!(
            "curl --cacert {c}/ca.pem --cert {c}/newbot.pem --key {c}/newbot-key.pem -X POST \
             https://localhost:8443/sessionauth/v1/authenticate",
            c = certs.display()
        ),
        &format!(
            "--cert-type P12 --cert {}/newbot.p12:changeit",
            certs.display()
        ),
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            run.stdout
        );
    }

    // A directory file (given as a flag, or through the configuration) that lacks the CN.
    std::fs::write(
        tmp.path().join("dir.toml"),
        "[[user]]\nid = 7\nusername = \"svc\"\naccountType = \"SYSTEM\"\n\n\
         [[user]]\nid = 9\nusername = \"human\"\naccountType = \"NORMAL\"\n",
    )
    .unwrap();
    let run = sessionauth(
        &[
            "certs",
            "issue",
            "--cn",
            "bot.two",
            "--directory",
            "dir.toml",
        ],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let warnings = warning_lines(&run.stderr);
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("dir.toml"), "{}", warnings[0]);
    assert!(!warnings[0].contains("no directory is configured"));
    for needle in ["id = 10", "username = \"bot.two\"", "kill -HUP <pid>"] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            run.stdout
        );
    }
    std::fs::write(
        tmp.path().join("sessionauth.toml"),
        "listen = \"127.0.0.1:9443\"\ndirectory = \"dir.toml\"\n[tls]\ncert = \"certs/server.pem\"\n\
         key = \"certs/server-key.pem\"\nclient_ca = [\"certs/ca.pem\"]\n",
    )
    .unwrap();

    // The CN is an active service user: no warning, nothing to add, the curl on its port.
    let run = sessionauth(
        &[
            "certs",
            "issue",
            "--cn",
            "svc",
            "--config",
            "sessionauth.toml",
        ],
        tmp.path(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stderr.trim(), "", "{}", run.stderr);
    assert!(run.stdout.contains("nothing to add"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("https://localhost:9443/sessionauth/v1/authenticate"));

    // A NORMAL user cannot authenticate by certificate: warned, with the fix.
    let run = node::run_with_env(
        &["certs", "issue", "--cn", "human"],
        tmp.path(),
        &[("SESSIONAUTH_CONFIG", "sessionauth.toml")],
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let warnings = warning_lines(&run.stderr);
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(warnings[0].contains("NORMAL"), "{}", warnings[0]);
    assert!(
        run.stdout.contains("accountType = \"SYSTEM\""),
        "{}",
        run.stdout
    );
}

/// Every warning `check` prints ends with the command that fixes it, and those commands do fix
/// them: run in a shell (the ones that need no running server), a second `check` has no
/// warnings left. The warnings: a key others may read, a directory entry without a certificate
/// (with and without its key), a certificate expiring within 30 days, a signing key not made
/// yet.
#[tokio::test]
async fn check_prints_the_command_that_fixes_each_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sessionauth(&["certs", "init", "--dir", "certs"], tmp.path()).await;
    assert!(run.status.success(), "{}", run.stderr);
    let dir = tmp.path().join("certs");
    std::fs::write(
        tmp.path().join("sessionauth.toml"),
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\n[tls]\ncert = \"certs/server.pem\"\n\
         key = \"certs/server-key.pem\"\nclient_ca = [\"certs/ca.pem\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("bot.user-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(dir.join("admin.bot.pem")).unwrap();
    for suffix in [".pem", "-key.pem", ".bundle.pem", ".p12"] {
        std::fs::remove_file(dir.join(format!("retired.bot{suffix}"))).unwrap();
    }
    let soon = Pki::new()
        .ca
        .issue_client("demo-app", Validity::days_from_now(5));
    std::fs::write(dir.join("demo-app.pem"), &soon.cert_pem).unwrap();

    let check = || sessionauth(&["check", "--config", "sessionauth.toml"], tmp.path());
    let run = check().await;
    assert!(run.status.success(), "{}", run.stderr);
    let warnings = warning_lines(&run.stdout);
    for (about, fix) in [
        ("bot.user-key.pem has mode 644", "chmod 600 "),
        (
            "\"admin.bot\" has no certificate",
            "sessionauth certs init --dir ",
        ),
        (
            "\"retired.bot\" has no certificate",
            "sessionauth certs init --dir ",
        ),
        ("demo-app", "sessionauth certs issue --cn demo-app --dir "),
        ("signing key", "openssl genpkey"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(about) && w.contains(fix)),
            "no warning about {about:?} with {fix:?}:\n{}",
            run.stdout
        );
    }
    assert_eq!(warnings.len(), 5, "{}", run.stdout);
    // The binary under test is `sessionauth` on the PATH the fixes run with.
    let bin = Path::new(env!("CARGO_BIN_EXE_sessionauth"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for warning in &warnings {
        let (_, fix) = warning.split_once("; fix: ").expect("a fix");
        assert!(!fix.contains("<pid>"), "{fix}");
        let out = std::process::Command::new("sh")
            .args(["-c", fix])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{fix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = check().await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.contains("configuration is valid (0 warnings)"),
        "{}",
        run.stdout
    );
}
