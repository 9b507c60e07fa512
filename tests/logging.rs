//! What the server logs: one access-log line per request carrying the client's X-Trace-Id, and
//! never a token, whether issued, presented, or garbage.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use hyper::StatusCode;
use parking_lot::Mutex;
use support::*;

/// What is logged does not depend on the store; these run on the server's default store, the
/// embedded one.
const BACKEND: Backend = Backend::Embedded;

/// Everything the server logs while the guard lives (debug level, this thread: the test runtime
/// is single-threaded, so the server's tasks log here too).
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Captured {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || Writer(sink.clone()))
        .finish();
    Captured {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock()).into_owned()
    }
}

/// Each request's access-log line carries its X-Trace-Id, its status and the certificate's CN.
#[tokio::test(flavor = "current_thread")]
async fn access_log_carries_the_trace_id() {
    let log = capture();
    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    server
        .request(Some(&bot), Req::post(AUTH).header("X-Trace-Id", "Tr4ce1"))
        .await
        .assert_status(StatusCode::OK);
    server
        .request(None, Req::get("/nope").header("X-Trace-Id", "Tr4ce2"))
        .await
        .assert_status(StatusCode::NOT_FOUND);
    let text = log.text();
    let line = |id: &str| {
        text.lines()
            .find(|l| l.contains(id) && l.contains("status="))
            .unwrap_or_else(|| panic!("no access-log line with {id}:\n{text}"))
            .to_owned()
    };
    let first = line("Tr4ce1");
    assert!(first.contains("status=200"), "{first}");
    assert!(first.contains("bot.user"), "{first}");
    assert!(first.contains(AUTH), "{first}");
    let second = line("Tr4ce2");
    assert!(second.contains("status=404"), "{second}");
}

/// A request hyper refuses before the router sees it (a header line without a colon, a head
/// over the size cap) still gets its access-log line, with hyper's status.
#[tokio::test(flavor = "current_thread")]
async fn requests_hyper_refuses_are_logged() {
    let log = capture();
    let server = TestServer::start(BACKEND).await;
    let mut stream = server.tls(None).await.unwrap();
    write_raw(
        &mut stream,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
    )
    .await;
    let received = read_to_end_within(&mut stream, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(raw_status(&received), Some(400));
    let mut stream = server.tls(None).await.unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    write_raw(&mut stream, big.as_bytes()).await;
    let received = read_to_end_within(&mut stream, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(raw_status(&received), Some(431));
    let text = log.text();
    for status in ["status=400", "status=431"] {
        assert!(
            text.lines()
                .any(|l| l.contains("sessionauth::access") && l.contains(status)),
            "no access-log line with {status}:\n{text}"
        );
    }
}

/// No token reaches the log: not the ones issued (session, key-manager, app, OBO), not the
/// ones presented (valid, logged out, or garbage of a token's shape), at any level.
#[tokio::test(flavor = "current_thread")]
async fn tokens_never_reach_the_log() {
    let log = capture();
    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    let app = server.pki.client("demo-app");
    let session = server.session_token(&bot).await;
    let km = server.token(&bot, KEYAUTH).await;
    let app_session = server.app_token(&app).await;
    let obo = server
        .obo_token(&app, &app_session, &obo_by_id("2001"))
        .await;
    let garbage = "G".repeat(43);
    for token in [&session, &obo, &garbage] {
        let _ = server.session_info(Some(token)).await;
    }
    let _ = server
        .post(Some(&app), &obo_by_id("2001"), Some(&garbage))
        .await;
    let _ = server.post(Some(&bot), LOGOUT, Some(&session)).await;
    let _ = server.post(Some(&bot), LOGOUT, Some(&session)).await;
    let _ = server.post(Some(&bot), KEY_LOGOUT, Some(&km)).await;
    let _ = server.post(Some(&app), LOGOUT, Some(&obo)).await;
    let _ = server.session_info(Some(&session)).await;

    let text = log.text();
    // The capture works: the session events were logged.
    assert!(
        text.contains("event=\"created\"") || text.contains("event=created"),
        "{text}"
    );
    for token in [&session, &km, &app_session, &obo, &garbage] {
        assert!(
            !text.contains(token.as_str()),
            "a token is in the log:\n{text}"
        );
        // Not even a long prefix of it.
        assert!(
            !text.contains(&token[..16]),
            "a token prefix is in the log:\n{text}"
        );
    }
}

/// A session the per-owner cap ends is logged once with `reason="evicted"`, naming its user;
/// the new session is logged as created.
#[tokio::test(flavor = "current_thread")]
async fn an_evicted_session_is_logged_with_its_reason() {
    let log = capture();
    let server = TestServer::start_with(
        BACKEND,
        Options::default().limit("max_sessions_per_user = 1"),
    )
    .await;
    let bot = server.pki.client("bot.user");
    let first = server.session_token(&bot).await;
    server.advance(std::time::Duration::from_millis(5));
    let _second = server.session_token(&bot).await;
    server.assert_dead(&first).await;
    let text = log.text();
    let evicted: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("event=\"ended\"") && l.contains("reason=\"evicted\""))
        .collect();
    assert_eq!(evicted.len(), 1, "{text}");
    assert!(evicted[0].contains("user=1001"), "{}", evicted[0]);
}

/// Every refusal is logged once at INFO with a stable reason code, the CN and the trace id;
/// the client's message stays the contract's generic one.
#[tokio::test(flavor = "current_thread")]
async fn refusals_are_logged_with_their_reason_code() {
    let log = capture();
    let server = TestServer::start(BACKEND).await;
    let cases = [
        ("nobody.here", AUTH, "unknown_cn"),
        ("retired.bot", AUTH, "inactive"),
        ("alice", AUTH, "not_service_user"),
        ("demo-app", AUTH, "app_on_user_path"),
        ("bot.user", APP_AUTH, "user_on_app_path"),
    ];
    for (i, (cn, path, _)) in cases.iter().enumerate() {
        let resp = server
            .request(
                Some(&server.pki.client(cn)),
                Req::post(path).header("X-Trace-Id", &format!("trace-{i}")),
            )
            .await;
        resp.assert_status(hyper::StatusCode::FORBIDDEN);
        assert!(!resp.text().contains("unknown_cn"), "{}", resp.text());
    }
    server
        .request(None, Req::post(AUTH).header("X-Trace-Id", "trace-anon"))
        .await
        .assert_status(hyper::StatusCode::UNAUTHORIZED);
    server
        .request(
            None,
            Req::get(SESSIONINFO)
                .token("garbage")
                .header("X-Trace-Id", "trace-garbage"),
        )
        .await
        .assert_status(hyper::StatusCode::UNAUTHORIZED);
    let text = log.text();
    let refused = |trace: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(" INFO ") && l.contains("refused") && l.contains(trace))
            .map(str::to_owned)
            .collect()
    };
    for (i, (cn, _, reason)) in cases.iter().enumerate() {
        let lines = refused(&format!("trace_id=\"trace-{i}\""));
        assert_eq!(lines.len(), 1, "{cn}: {text}");
        assert!(
            lines[0].contains(&format!("reason=\"{reason}\"")),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(&format!("cn=Some(\"{cn}\")")),
            "{}",
            lines[0]
        );
    }
    let anon = refused("trace-anon");
    assert_eq!(anon.len(), 1, "{text}");
    assert!(anon[0].contains("reason=\"no_certificate\""), "{}", anon[0]);
    let garbage = refused("trace-garbage");
    assert_eq!(garbage.len(), 1, "{text}");
    assert!(
        garbage[0].contains("reason=\"invalid_session\""),
        "{}",
        garbage[0]
    );
}

/// A failed TLS handshake is logged at INFO with its reason and the client's address: a
/// certificate from an unknown CA, and plain HTTP on the HTTPS port.
#[tokio::test(flavor = "current_thread")]
async fn handshake_failures_are_logged_with_their_reason() {
    let log = capture();
    let server = TestServer::start(BACKEND).await;
    let foreign = server.pki.foreign_client("bot.user");
    assert!(server
        .try_request(Some(&foreign), Req::get("/health"))
        .await
        .is_err());
    let has = |reason: &str| {
        log.text().lines().any(|l| {
            l.contains(" INFO ") && l.contains("TLS handshake failed") && l.contains(reason)
        })
    };
    node::eventually(WAIT, "the unknown-CA line", || async {
        has("reason=\"unknown_ca\"").then_some(())
    })
    .await;
    // The handshake log is rate-limited to a line a second: the next failure waits its turn.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut tcp = server.tcp().await.unwrap();
    write_raw(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let _ = read_to_end_within(&mut tcp, WAIT).await;
    node::eventually(WAIT, "the plain-HTTP line", || async {
        has("reason=\"plain_http\"").then_some(())
    })
    .await;
}
