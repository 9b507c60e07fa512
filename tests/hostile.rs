//! Hostile load: slow readers, floods of idle sockets from one address, floods of failed
//! logins, and the small gaps (a duplicated `sessionToken` header, an endless file). Each is
//! bounded in count and time, on loopback; clients "from another address" use 127.0.0.2, which
//! Linux routes to loopback like 127.0.0.1.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rustls_pki_types::ServerName;
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

// The login throttle and the sessionToken header rule answer at the HTTP level: on every store.
route_tests!(
    failed_logins_are_throttled_per_address,
    failed_logins_are_throttled_per_identity,
    failed_rsa_logins_are_throttled_by_claimed_subject,
    a_duplicated_session_token_header_is_400,
);

/// The connection limits do not depend on the store: the embedded one, the server's default.
const BACKEND: Backend = Backend::Embedded;

/// The address the flooding clients come from.
const FLOODER: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `server` from `from` (port chosen by the kernel).
async fn tcp_from(server: &TestServer, from: [u8; 4]) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((IpAddr::from(from), 0)))?;
    tokio::time::timeout(WAIT, socket.connect(server.addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// An HTTP/1.1 connection over TLS from `from`, presenting `id` when given.
async fn connect_from(server: &TestServer, from: [u8; 4], id: Option<&Identity>) -> Conn {
    let tcp = tcp_from(server, from).await.unwrap();
    let config = server.client_config(id, ClientTls::Default).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the handshake finishes in time")
        .expect("the handshake succeeds");
    Conn::over(tls).await.unwrap()
}

/// A client that pipelines requests and never reads the answers is cut off once the server's
/// writes have been stuck for `limits.write_timeout`; meanwhile, and after, another client is
/// served.
#[tokio::test]
async fn a_slow_reader_is_cut_off_and_others_are_served() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default().limit("write_timeout = \"500ms\""),
    )
    .await;
    let tls = server.tls(None).await.unwrap();
    // Only the write half is used: the answers pile up unread.
    let (_unread, mut write) = tokio::io::split(tls);
    let request = b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n".repeat(200);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        loop {
            if write.write_all(&request).await.is_err() || write.flush().await.is_err() {
                return sent;
            }
            sent += 200;
            if sent > 2_000_000 {
                return sent;
            }
        }
    });
    // While the slow reader is stuck, another client is served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .request(None, Req::get("/health"))
        .await
        .assert_status(StatusCode::OK);
    let sent = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the server closes the slow reader's connection")
        .unwrap();
    assert!(
        sent < 2_000_000,
        "the server read {sent} requests without closing the connection"
    );
    say(&format!(
        "slow reader cut off after {sent} pipelined requests, {:?}",
        started.elapsed()
    ));
    server
        .request(None, Req::get("/health"))
        .await
        .assert_status(StatusCode::OK);
}

/// With `max_connections_per_ip = 4`, idle sockets from one address (never starting TLS) beyond
/// the fourth are closed at once, while a client from another address is served; the
/// handshake pool (8 here) is never full of one address's sockets.
#[tokio::test]
async fn an_idle_flood_from_one_address_leaves_other_addresses_served() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default()
            .limit("max_connections_per_ip = 4")
            .limit("max_handshakes = 8"),
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(tcp_from(&server, FLOODER).await.unwrap());
    }
    // Give the server time to take the four in (each holds a handshake slot now).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for _ in 0..20 {
        let mut extra = tcp_from(&server, FLOODER).await.unwrap();
        let received = read_to_end_within(&mut extra, WAIT)
            .await
            .expect("a connection over the per-address cap is closed at once");
        assert!(received.is_empty(), "{received:?}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    // Another address is served, several times over.
    for _ in 0..3 {
        server
            .request(None, Req::get("/health"))
            .await
            .assert_status(StatusCode::OK);
    }
    // The flooding address gets its places back when its sockets close.
    drop(flood);
    let ok = node::eventually(WAIT, "the flooding address is served again", || async {
        let mut conn = connect_from(&server, FLOODER, None).await;
        conn.send(Req::get("/health"))
            .await
            .ok()
            .filter(|r| r.status == StatusCode::OK)
    })
    .await;
    ok.assert_status(StatusCode::OK);
}

/// Without the per-address cap, the same flood fills the handshake pool and a client from
/// another address waits: the cap above is what serves it (a negative test of the cap).
#[tokio::test]
async fn without_the_cap_an_idle_flood_holds_the_handshake_pool() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default()
            .limit("max_connections_per_ip = 0")
            .limit("max_handshakes = 4")
            .tls("handshake_timeout = \"3s\""),
    )
    .await;
    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(tcp_from(&server, FLOODER).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = server.request(None, Req::get("/health"));
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a client was served while idle sockets held every handshake slot"
    );
    // The idle sockets time out (tls.handshake_timeout), and the waiting client is served.
    waiting.await.assert_status(StatusCode::OK);
    drop(flood);
}

/// Handshakes are counted apart from established connections: with one connection slot, idle
/// sockets in their handshake do not hold it, and an established client is served.
#[tokio::test]
async fn idle_sockets_do_not_take_the_connection_pool() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default()
            .limit("max_connections = 1")
            .limit("max_connections_per_ip = 0"),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(tcp_from(&server, FLOODER).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .request(None, Req::get("/health"))
        .await
        .assert_status(StatusCode::OK);
    drop(idle);
}

/// After `failed_logins_per_ip` failures, an address's further failures are 429 with
/// `Retry-After` and a JSON body; a principal that authenticates from the same address is not
/// slowed; another address is unaffected.
async fn failed_logins_are_throttled_per_address(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        Options::default()
            .limit("failed_logins_per_ip = 3")
            .limit("failed_logins_per_identity = 0"),
    )
    .await;
    let stranger = server.pki.client("nobody.here");
    for _ in 0..3 {
        server
            .post(Some(&stranger), AUTH, None)
            .await
            .assert_error(StatusCode::FORBIDDEN);
    }
    let throttled = server.post(Some(&stranger), AUTH, None).await;
    let message = throttled.assert_error(StatusCode::TOO_MANY_REQUESTS);
    assert!(message.contains("retry after"), "{message}");
    let retry: u64 = throttled
        .headers
        .get(hyper::header::RETRY_AFTER)
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // An honest bot on the same address is served at once.
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    server.assert_live(&token).await;
    // Another address still gets the ordinary refusal.
    let mut conn = connect_from(&server, FLOODER, Some(&stranger)).await;
    conn.send(Req::post(AUTH))
        .await
        .unwrap()
        .assert_error(StatusCode::FORBIDDEN);
}

/// Failures claiming one identity are throttled from every address; another identity is not.
async fn failed_logins_are_throttled_per_identity(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        Options::default()
            .limit("failed_logins_per_ip = 0")
            .limit("failed_logins_per_identity = 2"),
    )
    .await;
    let target = server.pki.client("nobody.here");
    server
        .post(Some(&target), AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
    let mut conn = connect_from(&server, FLOODER, Some(&target)).await;
    conn.send(Req::post(AUTH))
        .await
        .unwrap()
        .assert_error(StatusCode::FORBIDDEN);
    server
        .post(Some(&target), AUTH, None)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
    let other = server.pki.client("somebody.else");
    server
        .post(Some(&other), AUTH, None)
        .await
        .assert_error(StatusCode::FORBIDDEN);
}

/// RSA logins with a bad signature are charged to the subject they claim.
async fn failed_rsa_logins_are_throttled_by_claimed_subject(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        Options::rsa()
            .limit("failed_logins_per_ip = 0")
            .limit("failed_logins_per_identity = 2"),
    )
    .await;
    let forged = support::rsa::KEYS.stranger.jwt("bot.user", 60);
    for _ in 0..2 {
        server
            .rsa_login(RSA_LOGIN, &forged)
            .await
            .assert_error(StatusCode::UNAUTHORIZED);
    }
    server
        .rsa_login(RSA_LOGIN, &forged)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS);
}

/// Two `sessionToken` headers are a 400, on every endpoint that reads one.
async fn a_duplicated_session_token_header_is_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bot = server.pki.client("bot.user");
    let token = server.session_token(&bot).await;
    for req in [
        Req::get(SESSIONINFO),
        Req::post(LOGOUT),
        Req::post("/login/idm/tokens"),
    ] {
        let path = req.path.clone();
        let resp = server
            .request(Some(&bot), req.token(&token).token(&token))
            .await;
        let message = resp.assert_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("sessionToken"), "{path}: {message}");
    }
    // Nothing was logged out by the refused logout, and one header is served.
    server.assert_live(&token).await;
    server
        .request(Some(&bot), Req::get(SESSIONINFO).token(&token))
        .await
        .assert_status(StatusCode::OK);
}

/// A directory path that points at an endless file fails at the size cap, with a clear error,
/// for `check` and `serve` alike; nothing is read past the cap.
#[tokio::test]
async fn an_endless_directory_file_is_refused_at_the_cap() {
    let site = Site::new(BACKEND);
    let config = site.write_config(
        &Options::default().top("directory = \"/dev/zero\""),
        "127.0.0.1:0",
    );
    let config = config.to_str().unwrap();
    for command in ["check", "serve"] {
        let run = node::run(&[command, "--config", config], site.path()).await;
        assert!(!run.status.success(), "{command}: {:?}", run.status);
        assert!(
            run.stderr.contains("/dev/zero") && run.stderr.contains("byte limit"),
            "{command}: {}",
            run.stderr
        );
    }
}

/// `check` warns about a private key that group or others may read, naming the fix, and
/// `serve` logs the same warning at start; with mode 0600 the warning is gone.
#[cfg(unix)]
#[tokio::test]
async fn loose_key_permissions_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let site = Site::new(BACKEND);
    let config = site.write_config(&Options::default(), "127.0.0.1:0");
    let key = site.path().join(SERVER_KEY_FILE);
    let chmod = |mode| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let warning = format!("chmod 600 {}", key.display());
    let config_arg = config.to_str().unwrap();

    chmod(0o644);
    let check = node::run(&["check", "--config", config_arg], site.path()).await;
    assert!(check.status.success(), "{}", check.stderr);
    assert!(
        check.stdout.contains("has mode 644") && check.stdout.contains(&warning),
        "{}",
        check.stdout
    );
    let node = node::Node::start(&config).await;
    assert!(node.log().contains(&warning), "{}", node.log());
    node.kill().await;

    chmod(0o600);
    let check = node::run(&["check", "--config", config_arg], site.path()).await;
    assert!(check.status.success(), "{}", check.stderr);
    assert!(!check.stdout.contains(&warning), "{}", check.stdout);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. "16m") at `path`: needs root, and fails the test loudly
    /// without it.
    fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root; run it as .ci/run does"
        );
        Self { path }
    }

    /// Fills the disk: writes until the file system says it is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                break;
            }
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// When the embedded store's disk fills up, writes fail closed (503, never a success that is
/// not on disk); the engine refuses writes from then on, so the server exits non-zero for its
/// supervisor to restart it; once space is back, a restart serves again, with every session
/// acknowledged before the disk filled.
#[tokio::test]
#[ignore = "needs root to mount a small tmpfs; .ci/run runs it"]
async fn a_full_disk_stops_the_server_and_a_restart_recovers() {
    let site = Site::new(BACKEND);
    let disk = SmallDisk::mount(site.path().join("disk"), "32m");
    let options = Options::default()
        .store(&format!(
            "store = \"embedded\"\ndata_dir = \"{}\"",
            disk.path.join("data").display()
        ))
        .limit("shutdown_grace = \"2s\"")
        .limit("max_sessions_per_user = 0");
    let config = site.write_config(&options, "127.0.0.1:0");
    let open = |node: &node::Node| {
        let tls = client_config(
            site.pki().ca.cert_pem(),
            Some(&site.pki().client("bot.user")),
            ClientTls::Default,
        )
        .unwrap();
        Conn::open(node.addr, tls)
    };
    let mut node = node::Node::start(&config).await;
    let mut conn = open(&node).await.unwrap();
    let kept = token_of(&conn.send(Req::post(AUTH)).await.unwrap());

    let filler = disk.fill();
    // The journal segment was allocated ahead (as much of its 64 MiB as the disk had room
    // for), so writes go on succeeding, durably, until that space is used up and the next
    // segment finds no room.
    let mut refused = None;
    for _ in 0..400_000 {
        match conn.send(Req::post(AUTH)).await {
            Ok(resp) if resp.status == StatusCode::OK => {}
            Ok(resp) => {
                refused = Some(resp);
                break;
            }
            // The server stopped while the request was in flight.
            Err(_) => break,
        }
    }
    if let Some(resp) = refused {
        resp.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    }
    let status = node
        .exited_within(Duration::from_secs(30))
        .await
        .expect("the server exits once its store cannot write");
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        node.log()
            .contains("the session store cannot write any more"),
        "{}",
        node.log()
    );

    std::fs::remove_file(filler).unwrap();
    let node = node::Node::start(&config).await;
    let mut conn = open(&node).await.unwrap();
    conn.send(Req::get(SESSIONINFO).token(&kept))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    conn.send(Req::post(AUTH))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    node.kill().await;
    drop(disk);
}
