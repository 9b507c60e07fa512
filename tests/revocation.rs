//! Revocation that reaches everything: a reload (what SIGHUP does) of the directory and the
//! CRLs ends exactly the sessions the change revokes, refuses new authentications where it
//! should, changes nothing when anything is invalid, and leaves open connections serving; and a
//! server that starts on a directory with inactive principals ends their sessions.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use parking_lot::Mutex;
use sessionauth::trust::{ReloadFailed, ReloadReport, TrustError};
use support::*;
use time::OffsetDateTime;

route_tests!(
    deactivated_bot_loses_its_sessions_for_good,
    removed_user_loses_its_sessions,
    renamed_user_loses_its_old_sessions,
    uninstall_ends_only_that_users_obo_sessions_of_that_app,
    withdrawn_obo_permission_ends_every_obo_session_of_the_app,
    deactivated_rsa_bot_loses_its_sessions,
    invalid_directory_reload_changes_nothing,
    missing_crl_file_reload_changes_nothing,
    kept_alive_connection_keeps_working_across_a_reload,
    crl_file_revokes_a_certificate_on_reload,
    revoked_intermediate_ends_the_sessions_minted_under_it,
    crl_url_revokes_on_reload_and_a_failed_fetch_keeps_the_last_good_set,
    stale_crl_refuses_its_issuers_certificates_unless_allowed,
);

/// The start-up sweep needs a store that outlives the server: the embedded store, Redis (one
/// server, behind Sentinel, a cluster) and PostgreSQL.
mod startup {
    use super::support::durable_route_tests;
    use super::{
        changes_made_while_down_end_their_sessions_at_start,
        inactive_principals_lose_their_sessions_at_start,
    };

    durable_route_tests!(
        inactive_principals_lose_their_sessions_at_start,
        changes_made_while_down_end_their_sessions_at_start,
    );
}

/// The sample directory, as shipped.
const SAMPLE: &str = include_str!("../examples/directory.toml");

/// The directory these tests start from: the sample, where bob (2002) has also installed
/// demo-app and other-app, so that an app holds on-behalf-of sessions for two users and two
/// apps hold one for bob.
fn base() -> String {
    set(
        SAMPLE,
        "id = 2002",
        "installedApps",
        r#"["demo-app", "other-app"]"#,
    )
}

/// `toml` with the one `[[user]]`/`[[app]]` entry that has the line `marker` (e.g. `id = 1001`,
/// `appId = "demo-app"`) replaced by what `edit` makes of it.
fn edit_entry(toml: &str, marker: &str, edit: impl FnOnce(&str) -> String) -> String {
    let starts: Vec<usize> = toml
        .match_indices("[[")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || toml.as_bytes()[i - 1] == b'\n')
        .collect();
    let mut bounds = vec![0];
    bounds.extend(&starts);
    bounds.push(toml.len());
    let mut out = String::new();
    let mut edit = Some(edit);
    for pair in bounds.windows(2) {
        let entry = &toml[pair[0]..pair[1]];
        let is_target = entry.starts_with("[[") && entry.lines().any(|l| l.trim() == marker);
        match (is_target, edit.take()) {
            (true, Some(edit)) => out.push_str(&edit(entry)),
            (_, e) => {
                edit = e;
                out.push_str(entry);
            }
        }
    }
    assert!(edit.is_none(), "no entry with {marker:?}");
    out
}

/// `toml` with `key = value` in the entry that has the line `marker` (any earlier `key` line
/// of that entry dropped).
fn set(toml: &str, marker: &str, key: &str, value: &str) -> String {
    edit_entry(toml, marker, |entry| {
        let mut lines = entry.lines();
        let header = lines.next().unwrap();
        let mut out = format!("{header}\n{key} = {value}\n");
        for line in lines.filter(|l| !l.trim_start().starts_with(&format!("{key} ="))) {
            out.push_str(line);
            out.push('\n');
        }
        out
    })
}

/// `toml` without the entry that has the line `marker`.
fn remove(toml: &str, marker: &str) -> String {
    edit_entry(toml, marker, |_| String::new())
}

/// A service user the sample does not have.
const NEW_BOT: &str = "\n[[user]]\nid = 1004\nusername = \"new.bot\"\naccountType = \"SYSTEM\"\n";

const BOT: &str = "id = 1001";
const ADMIN: &str = "id = 1003";
const ALICE: &str = "id = 2001";
const DEMO_APP: &str = "appId = \"demo-app\"";

/// A server on `backend` reading [`base`] from its directory file.
async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, Options::default().directory(&base())).await
}

/// Writes `toml` as the directory file and reloads; panics when the reload is refused.
async fn apply(server: &TestServer, toml: &str) -> ReloadReport {
    server.write_directory(toml);
    server.reload().await.expect("the reload applies")
}

/// The reload was refused because of the directory (nothing changed).
fn assert_refused_for_directory(outcome: Result<ReloadReport, ReloadFailed>) {
    match outcome {
        Err(ReloadFailed::Invalid(e)) if matches!(*e, TrustError::Directory(_)) => {}
        other => panic!("expected a reload refused for the directory, got {other:?}"),
    }
}

/// The reload was refused because of a CRL (nothing changed).
fn assert_refused_for_crl(outcome: Result<ReloadReport, ReloadFailed>) {
    match outcome {
        Err(ReloadFailed::Invalid(e)) if matches!(*e, TrustError::Crl(_)) => {}
        other => panic!("expected a reload refused for a CRL, got {other:?}"),
    }
}

/// Certificate authentication as `id` is refused with Symphony's 403.
async fn assert_cert_refused(server: &TestServer, id: &Identity) {
    let message = server
        .post(Some(id), AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    assert_eq!(message, CERT_NOT_ALLOWED);
}

/// The app session is live: sessioninfo answers 403 (an app session has no user), not 401.
async fn assert_app_session_live(server: &TestServer, app_session: &str) {
    server
        .session_info(Some(app_session))
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// No request with `id` gets an answer: the handshake (TLS 1.3: the first request) fails.
async fn assert_handshake_fails(server: &TestServer, id: &Identity) {
    if let Ok(resp) = server.try_request(Some(id), Req::post(AUTH)).await {
        panic!("the certificate got an answer: {resp:?}");
    }
}

/// Deactivating a bot and reloading ends its sessions (401) and refuses it (403); reactivating
/// it brings no old session back, while a new authentication works.
async fn deactivated_bot_loses_its_sessions_for_good(backend: Backend) {
    let server = start(backend).await;
    let bot = server.pki.client("bot.user");
    let admin = server.pki.client("admin.bot");
    let first = server.session_token(&bot).await;
    let second = server.token(&bot, AUTH_ALIAS).await;
    let other = server.session_token(&admin).await;

    let report = apply(&server, &set(&base(), BOT, "active", "false")).await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&first).await;
    server.assert_dead(&second).await;
    assert_cert_refused(&server, &bot).await;
    server.assert_live(&other).await;

    apply(&server, &base()).await;
    server.assert_dead(&first).await;
    server.assert_dead(&second).await;
    let fresh = server.session_token(&bot).await;
    server.assert_live(&fresh).await;
    server.assert_live(&other).await;
}

/// Removing a user from the directory ends its sessions and refuses its certificate; the
/// other users' sessions stay.
async fn removed_user_loses_its_sessions(backend: Backend) {
    let server = start(backend).await;
    let bot = server.pki.client("bot.user");
    let admin = server.pki.client("admin.bot");
    let token = server.session_token(&bot).await;
    let other = server.session_token(&admin).await;

    let report = apply(&server, &remove(&base(), BOT)).await;
    assert_eq!(report.ended, 1, "{report:?}");
    server.assert_dead(&token).await;
    assert_cert_refused(&server, &bot).await;
    server.assert_live(&other).await;
    server.session_token(&admin).await;
}

/// A rename (same id, another username) ends the old sessions, of a bot and the on-behalf-of
/// sessions of a user; the old name is refused, the new one authenticates, the rest stays.
async fn renamed_user_loses_its_old_sessions(backend: Backend) {
    let server = start(backend).await;
    let admin = server.pki.client("admin.bot");
    let bot = server.pki.client("bot.user");
    let admin_token = server.session_token(&admin).await;
    let bot_token = server.session_token(&bot).await;
    let (app, app_session, alice_obo) = server.demo_app_with_obo().await;
    let bob_obo = server
        .obo_token(&app, &app_session, &obo_by_id("2002"))
        .await;

    let renamed = set(&base(), ADMIN, "username", "\"admin.bot2\"");
    let renamed = set(&renamed, ALICE, "username", "\"alice2\"");
    let report = apply(&server, &renamed).await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&admin_token).await;
    server.assert_dead(&alice_obo).await;
    assert_cert_refused(&server, &admin).await;
    let new_name = server.pki.client("admin.bot2");
    let fresh = server.session_token(&new_name).await;
    let user = server.session_info(Some(&fresh)).await;
    user.assert_status(StatusCode::OK);
    assert_eq!(user.json()["username"], "admin.bot2");
    server.assert_live(&bot_token).await;
    server.assert_live(&bob_obo).await;
    assert_app_session_live(&server, &app_session).await;
    let alice_again = server
        .obo_token(&app, &app_session, &obo_by_name("alice2"))
        .await;
    server.assert_live(&alice_again).await;
}

/// When alice uninstalls demo-app, exactly her on-behalf-of sessions of demo-app end: demo-app's
/// app session, its sessions for bob, and other-app's session for bob stay; minting for alice is
/// then 403 while minting for bob works.
async fn uninstall_ends_only_that_users_obo_sessions_of_that_app(backend: Backend) {
    let server = start(backend).await;
    let (app, app_session, alice_by_id) = server.demo_app_with_obo().await;
    let alice_by_name = server
        .obo_token(&app, &app_session, &obo_by_name("alice"))
        .await;
    let bob_obo = server
        .obo_token(&app, &app_session, &obo_by_id("2002"))
        .await;
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    let other_bob = server
        .obo_token(&other, &other_session, &obo_by_id("2002"))
        .await;

    let report = apply(
        &server,
        &set(&base(), ALICE, "installedApps", r#"["no-obo-app"]"#),
    )
    .await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&alice_by_id).await;
    server.assert_dead(&alice_by_name).await;
    server.assert_live(&bob_obo).await;
    server.assert_live(&other_bob).await;
    assert_app_session_live(&server, &app_session).await;
    assert_app_session_live(&server, &other_session).await;
    server
        .post(Some(&app), &obo_by_id("2001"), Some(&app_session))
        .await
        .assert_error_containing(StatusCode::FORBIDDEN, "not installed");
    server
        .obo_token(&app, &app_session, &obo_by_id("2002"))
        .await;
}

/// Switching demo-app's `allowOnBehalfOf` off ends every on-behalf-of session it minted, keeps
/// its own app session live, and refuses new on-behalf-of mints (403); another app's
/// on-behalf-of session stays.
async fn withdrawn_obo_permission_ends_every_obo_session_of_the_app(backend: Backend) {
    let server = start(backend).await;
    let (app, app_session, alice_obo) = server.demo_app_with_obo().await;
    let bob_obo = server
        .obo_token(&app, &app_session, &obo_by_id("2002"))
        .await;
    let other = server.pki.client("other-app");
    let other_session = server.app_token(&other).await;
    let other_bob = server
        .obo_token(&other, &other_session, &obo_by_id("2002"))
        .await;

    let report = apply(&server, &set(&base(), DEMO_APP, "allowOnBehalfOf", "false")).await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&alice_obo).await;
    server.assert_dead(&bob_obo).await;
    assert_app_session_live(&server, &app_session).await;
    server
        .post(Some(&app), &obo_by_id("2002"), Some(&app_session))
        .await
        .assert_error_containing(StatusCode::FORBIDDEN, "not allowed");
    server.assert_live(&other_bob).await;
    server
        .obo_token(&other, &other_session, &obo_by_id("2002"))
        .await;
}

/// An RSA bot deactivated by a reload loses its sessions and its JWT login is refused; an RSA
/// app session stays.
async fn deactivated_rsa_bot_loses_its_sessions(backend: Backend) {
    let server = TestServer::start_with(backend, Options::rsa()).await;
    let first = server.bot_session().await;
    let second = server.bot_session().await;
    let app_session = server.app_session("demo-app", &rsa::KEYS.demo_app).await;

    let report = apply(&server, &set(rsa::DIRECTORY, BOT, "active", "false")).await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&first).await;
    server.assert_dead(&second).await;
    server
        .rsa_login(RSA_LOGIN, &rsa::KEYS.bot.jwt("bot.user", 290))
        .await
        .assert_error(StatusCode::UNAUTHORIZED);
    assert_app_session_live(&server, &app_session).await;

    apply(&server, rsa::DIRECTORY).await;
    server.assert_dead(&first).await;
    let fresh = server.bot_session().await;
    server.assert_live(&fresh).await;
}

/// A directory file that is not valid TOML is refused (`Invalid`) and changes nothing: the
/// bot it would deactivate keeps its session, the user it would add stays unknown, the server
/// keeps serving; the same change in a valid file then applies.
async fn invalid_directory_reload_changes_nothing(backend: Backend) {
    let server = start(backend).await;
    let bot = server.pki.client("bot.user");
    let newcomer = server.pki.client("new.bot");
    let token = server.session_token(&bot).await;
    let changed = set(&base(), BOT, "active", "false") + NEW_BOT;

    server.write_directory(&format!("{changed}\n[[user\n"));
    assert_refused_for_directory(server.reload().await);
    server.assert_live(&token).await;
    assert_cert_refused(&server, &newcomer).await;
    server.session_token(&bot).await;

    let report = apply(&server, &changed).await;
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&token).await;
    server.session_token(&newcomer).await;
    assert_cert_refused(&server, &bot).await;
}

/// A CRL file that has gone missing refuses the reload (`Invalid`): the directory change made
/// with it does not apply and the server keeps serving; once the file is back, it applies.
async fn missing_crl_file_reload_changes_nothing(backend: Backend) {
    let site = Site::new(backend);
    let crl = site.write_file("ca.crl", site.pki().ca.fresh_crl(&[]));
    let options = Options::default()
        .directory(&base())
        .tls("crl = [\"ca.crl\"]");
    let server = site.start(&options).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;

    std::fs::remove_file(&crl).unwrap();
    server.write_directory(&set(&base(), BOT, "active", "false"));
    assert_refused_for_crl(server.reload().await);
    server.assert_live(&token).await;
    server.session_token(&bot).await;

    server.write_file("ca.crl", server.pki.ca.fresh_crl(&[]));
    let report = server.reload().await.expect("the reload applies");
    assert_eq!(report.crls, 1, "{report:?}");
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&token).await;
    assert_cert_refused(&server, &bot).await;
}

/// A connection opened before a reload keeps serving after it, under the new directory: the
/// bot's kept-alive connection still authenticates and reads sessioninfo, while a kept-alive
/// connection of the bot the reload deactivated is refused (403).
async fn kept_alive_connection_keeps_working_across_a_reload(backend: Backend) {
    let server = start(backend).await;
    let bot = server.pki.client("bot.user");
    let admin = server.pki.client("admin.bot");
    let mut bot_conn = server.connect(Some(&bot)).await.unwrap();
    let mut admin_conn = server.connect(Some(&admin)).await.unwrap();
    let before = token_of(&bot_conn.send(Req::post(AUTH)).await.unwrap());
    token_of(&admin_conn.send(Req::post(AUTH)).await.unwrap());

    apply(&server, &set(&base(), ADMIN, "active", "false")).await;
    let after = token_of(&bot_conn.send(Req::post(AUTH)).await.unwrap());
    for token in [&before, &after] {
        bot_conn
            .send(Req::get(SESSIONINFO).token(token))
            .await
            .unwrap()
            .assert_status(StatusCode::OK);
    }
    let message = admin_conn
        .send(Req::post(AUTH))
        .await
        .unwrap()
        .assert_error(StatusCode::FORBIDDEN);
    assert_eq!(message, CERT_NOT_ALLOWED);
    assert!(!bot_conn.is_closed());
}

/// A CRL file rewritten to revoke a certificate, then reloaded: the sessions minted with that
/// certificate end (401), a new handshake with it fails, a connection made with it before now
/// gets 401 on authenticate, and another certificate of the same bot keeps its session and
/// authenticates.
async fn crl_file_revokes_a_certificate_on_reload(backend: Backend) {
    let site = Site::new(backend);
    site.write_file("ca.crl", site.pki().ca.fresh_crl(&[]));
    let server = site
        .start(&Options::default().tls("crl = [\"ca.crl\"]"))
        .await;
    let (revoked, serial) = server.pki.client_with_serial("bot.user");
    let kept = server.pki.client("bot.user");
    let mut open = server.connect(Some(&revoked)).await.unwrap();
    let doomed = token_of(&open.send(Req::post(AUTH)).await.unwrap());
    let also_doomed = server.session_token(&revoked).await;
    let survivor = server.session_token(&kept).await;

    server.write_file("ca.crl", server.pki.ca.fresh_crl(&[&serial]));
    let report = server.reload().await.expect("the reload applies");
    assert_eq!((report.crls, report.revoked), (1, 1), "{report:?}");
    assert_eq!(report.ended, 2, "{report:?}");
    server.assert_dead(&doomed).await;
    server.assert_dead(&also_doomed).await;
    assert_handshake_fails(&server, &revoked).await;
    open.send(Req::post(AUTH))
        .await
        .unwrap()
        .assert_error_containing(StatusCode::UNAUTHORIZED, "revoked");
    server.assert_live(&survivor).await;
    server.session_token(&kept).await;
}

/// A CRL from the root revoking an intermediate CA: every session minted with a certificate
/// the intermediate issued ends on reload, and a new handshake through it fails; a certificate
/// issued straight by the root keeps its session.
async fn revoked_intermediate_ends_the_sessions_minted_under_it(backend: Backend) {
    let site = Site::new(backend);
    let (intermediate, serial) = site.pki().ca.issue_intermediate("Test Issuing CA");
    // The intermediate's own (empty) CRL: with its issuer's CRL listed, status is known for
    // every certificate of the chain.
    site.write_file("ca.crl", site.pki().ca.fresh_crl(&[]));
    site.write_file("issuing.crl", intermediate.fresh_crl(&[]));
    let server = site
        .start(&Options::default().tls("crl = [\"ca.crl\", \"issuing.crl\"]"))
        .await;
    let chained = intermediate.client_with_chain("bot.user");
    let doomed = server.session_token(&chained).await;
    let app = intermediate.client_with_chain("demo-app");
    let doomed_app = server.app_token(&app).await;
    let doomed_obo = server
        .obo_token(&app, &doomed_app, &obo_by_name("alice"))
        .await;
    let survivor = server.session_token(&server.pki.client("bot.user")).await;

    server.write_file("ca.crl", server.pki.ca.fresh_crl(&[&serial]));
    let report = server.reload().await.expect("the reload applies");
    assert_eq!((report.crls, report.revoked), (2, 1), "{report:?}");
    assert_eq!(report.ended, 3, "{report:?}");
    server.assert_dead(&doomed).await;
    server.assert_dead(&doomed_app).await;
    server.assert_dead(&doomed_obo).await;
    assert_handshake_fails(&server, &chained).await;
    server.assert_live(&survivor).await;
}

/// A CRL distribution point served over HTTP from the test, answering what it is told.
struct CrlServer {
    addr: SocketAddr,
    /// The status and body every request gets.
    answer: Arc<Mutex<(u16, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
}

impl CrlServer {
    /// Serves `crl` with 200 from a thread of its own: the server under test fetches it at
    /// start-up from a blocking thread, which the test's runtime could not answer.
    fn start(crl: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((200, crl)));
        let stop = Arc::new(AtomicBool::new(false));
        let (answer2, stop2) = (answer.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let (status, body) = answer2.lock().clone();
                let _ = answer_one(&mut stream, status, &body);
            }
        });
        Self { addr, answer, stop }
    }

    /// The URL to configure.
    fn url(&self) -> String {
        format!("http://{}/ca.crl", self.addr)
    }

    /// Answers `status` with `body` from now on.
    fn answer(&self, status: u16, body: Vec<u8>) {
        *self.answer.lock() = (status, body);
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads one request head (bounded) and writes the answer.
fn answer_one(stream: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(WAIT))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let reason = if status == 200 { "OK" } else { "Error" };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

/// A CRL named by URL: after the served CRL changes, a reload revokes the certificate (its
/// session ends, its handshake fails) while another works; when the URL then answers 500 the
/// reload is refused and the last good set stays (still revoked, the other still works); a
/// good CRL that revokes nothing then applies.
async fn crl_url_revokes_on_reload_and_a_failed_fetch_keeps_the_last_good_set(backend: Backend) {
    let site = Site::new(backend);
    let ca = &site.pki().ca;
    let crl_server = CrlServer::start(ca.fresh_crl(&[]));
    let options = Options::default().tls(&format!("crl = [\"{}\"]", crl_server.url()));
    let server = site.start(&options).await;
    let (revoked, serial) = server.pki.client_with_serial("bot.user");
    let kept = server.pki.client("bot.user");
    let doomed = server.session_token(&revoked).await;
    let survivor = server.session_token(&kept).await;

    crl_server.answer(200, ca.fresh_crl(&[&serial]));
    let report = server.reload().await.expect("the reload applies");
    assert_eq!((report.revoked, report.ended), (1, 1), "{report:?}");
    server.assert_dead(&doomed).await;
    assert_handshake_fails(&server, &revoked).await;
    server.assert_live(&survivor).await;

    crl_server.answer(500, Vec::new());
    assert_refused_for_crl(server.reload().await);
    assert_handshake_fails(&server, &revoked).await;
    server.assert_live(&survivor).await;
    server.session_token(&kept).await;

    crl_server.answer(200, ca.fresh_crl(&[]));
    let report = server.reload().await.expect("the reload applies");
    assert_eq!((report.revoked, report.ended), (0, 0), "{report:?}");
    server.session_token(&revoked).await;
    server.assert_dead(&doomed).await;
}

/// A CRL past its nextUpdate: under `crl_stale = "deny"` (the default) the handshake of a
/// certificate from its CA fails while a certificate from a CA without a CRL passes; under
/// `"allow"` the certificate from its CA works.
async fn stale_crl_refuses_its_issuers_certificates_unless_allowed(backend: Backend) {
    let past = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let site = Site::new(backend);
    site.write_file("ca.crl", site.pki().ca.crl(&[], past));
    let bot = site.pki().client("bot.user");

    let server = site
        .start(&Options::default().tls("crl = [\"ca.crl\"]"))
        .await;
    assert_handshake_fails(&server, &bot).await;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "bot.user");
    let other_ca = server.pki.client_with_subject(subject);
    server.session_token(&other_ca).await;
    server.stop().await;

    let explicit = Options::default().tls("crl = [\"ca.crl\"]\ncrl_stale = \"deny\"");
    let server = site.start(&explicit).await;
    assert_handshake_fails(&server, &bot).await;
    server.stop().await;

    let allow = Options::default().tls("crl = [\"ca.crl\"]\ncrl_stale = \"allow\"");
    let server = site.start(&allow).await;
    server.session_token(&bot).await;
}

/// A bot deactivated in the directory file while the server is stopped finds its session
/// ended when the server starts again (401, and 403 for its certificate), and reactivating it
/// for the next start brings that session back neither; the other bot's session survives both
/// restarts.
async fn inactive_principals_lose_their_sessions_at_start(backend: Backend) {
    let site = Site::new(backend);
    let options = |toml: &str| Options::default().directory(toml);
    let server = site.start(&options(&base())).await;
    let bot = server.pki.client("bot.user");
    let admin = server.pki.client("admin.bot");
    let old = server.session_token(&bot).await;
    let other = server.session_token(&admin).await;
    server.assert_live(&old).await;
    server.stop().await;

    let server = site
        .start(&options(&set(&base(), BOT, "active", "false")))
        .await;
    server.assert_dead(&old).await;
    assert_cert_refused(&server, &bot).await;
    server.assert_live(&other).await;
    server.stop().await;

    let server = site.start(&options(&base())).await;
    server.assert_dead(&old).await;
    server.assert_live(&other).await;
    let fresh = server.session_token(&bot).await;
    server.assert_live(&fresh).await;
    server.stop().await;
}

/// Changes made while the server was down (a rename, a removal, an uninstall) end the sessions
/// they concern when it starts again: it compares the directory with the one it last applied,
/// which the store keeps. The rest stays, and a second start with the same files ends nothing.
async fn changes_made_while_down_end_their_sessions_at_start(backend: Backend) {
    let site = Site::new(backend);
    let options = |toml: &str| Options::default().directory(toml);
    let server = site.start(&options(&base())).await;
    let admin_token = server.session_token(&server.pki.client("admin.bot")).await;
    let bot_token = server.session_token(&server.pki.client("bot.user")).await;
    let (app, app_session, alice_obo) = server.demo_app_with_obo().await;
    let bob_obo = server
        .obo_token(&app, &app_session, &obo_by_id("2002"))
        .await;
    server.stop().await;

    let changed = set(&base(), ADMIN, "username", "\"admin.bot2\"");
    let changed = set(&changed, ALICE, "installedApps", r#"["no-obo-app"]"#);
    let changed = remove(&changed, BOT);
    let server = site.start(&options(&changed)).await;
    server.assert_dead(&admin_token).await;
    server.assert_dead(&bot_token).await;
    server.assert_dead(&alice_obo).await;
    server.assert_live(&bob_obo).await;
    assert_app_session_live(&server, &app_session).await;
    let fresh = server.session_token(&server.pki.client("admin.bot2")).await;
    server.stop().await;

    let server = site.start(&options(&changed)).await;
    server.assert_live(&fresh).await;
    server.assert_live(&bob_obo).await;
    assert_app_session_live(&server, &app_session).await;
    server.stop().await;
}
