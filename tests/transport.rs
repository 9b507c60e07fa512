//! Transport and HTTP behaviour: routing errors, body and header limits, malformed input,
//! handshake and header time limits, keep-alive, the connection limit and graceful shutdown.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use support::*;

/// Transport does not depend on the store; these run on the server's default store, the
/// embedded one (the route suites run on every store).
const BACKEND: Backend = Backend::Embedded;

/// Sends raw bytes on a fresh TLS connection (with `id`) and reads until the server closes.
async fn raw_exchange(server: &TestServer, id: Option<&Identity>, request: &[u8]) -> Vec<u8> {
    let mut stream = server.tls(id).await.expect("TLS");
    write_raw(&mut stream, request).await;
    read_to_end_within(&mut stream, WAIT)
        .await
        .expect("the server closes the connection")
}

/// The server still answers a fresh request.
async fn assert_still_serving(server: &TestServer) {
    server
        .request(None, Req::get("/health"))
        .await
        .assert_status(StatusCode::OK);
}

/// An unknown path is 404 in the error shape; a known one is not.
#[tokio::test]
async fn unknown_path_is_404_json() {
    let server = TestServer::start(BACKEND).await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/sessionauth/v2/authenticate"),
        (Method::POST, "/sessionauth/v1/authenticate/extra"),
        (Method::POST, "/sessionauth/v1/app/user/2001"),
        (Method::GET, "/pod/v1/sessioninfo"),
        (Method::GET, "/HEALTH"),
    ] {
        server
            .request(None, Req::new(method, path))
            .await
            .assert_error(StatusCode::NOT_FOUND);
    }
    assert_still_serving(&server).await;
}

/// A known path with the wrong method is 405 in the error shape, with `Allow`.
#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let server = TestServer::start(BACKEND).await;
    for (method, path, allow) in [
        (Method::GET, AUTH, "POST"),
        (Method::GET, KEYAUTH, "POST"),
        (Method::PUT, APP_AUTH, "POST"),
        (Method::DELETE, LOGOUT, "POST"),
        (Method::GET, obo_by_id("2001").as_str(), "POST"),
        (Method::POST, SESSIONINFO, "GET"),
        (Method::POST, "/health", "GET"),
    ] {
        let resp = server.request(None, Req::new(method.clone(), path)).await;
        resp.assert_error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            resp.headers.get(ALLOW).map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
    }
}

/// A body over limits.max_body_bytes is 413 JSON; one at the limit is accepted.
#[tokio::test]
async fn body_over_the_limit_is_413() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_body_bytes = 100")).await;
    let bot = server.pki.client("bot.user");
    let resp = server
        .request(Some(&bot), Req::post(AUTH).body(vec![b'x'; 101]))
        .await;
    let message = resp.assert_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("100"), "{message}");
    server
        .request(Some(&bot), Req::post(AUTH).body(vec![b'x'; 100]))
        .await
        .assert_status(StatusCode::OK);
}

/// A chunked body (no Content-Length) that grows past the limit is 413 too.
#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_body_bytes = 100")).await;
    let bot = server.pki.client("bot.user");
    let chunk = "x".repeat(60);
    let request = format!(
        "POST {AUTH} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n3c\r\n{chunk}\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
    );
    let response = raw_exchange(&server, Some(&bot), request.as_bytes()).await;
    assert_eq!(
        raw_status(&response),
        Some(413),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let request = format!(
        "POST {AUTH} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n3c\r\n{chunk}\r\n0\r\n\r\n"
    );
    let response = raw_exchange(&server, Some(&bot), request.as_bytes()).await;
    assert_eq!(raw_status(&response), Some(200));
}

/// An empty body is accepted with `Content-Type: application/json` and without it (the BDKs
/// send the header with `Content-Length: 0`).
#[tokio::test]
async fn empty_body_with_and_without_json_content_type() {
    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    let app = server.pki.client("demo-app");
    for with_type in [true, false] {
        let req = |path: &str| {
            let r = Req::post(path).header("Content-Length", "0");
            if with_type {
                r.header("Content-Type", "application/json")
            } else {
                r
            }
        };
        server
            .request(Some(&bot), req(AUTH))
            .await
            .assert_status(StatusCode::OK);
        server
            .request(Some(&bot), req(KEYAUTH))
            .await
            .assert_status(StatusCode::OK);
        let app_session = server.request(Some(&app), req(APP_AUTH)).await;
        app_session.assert_status(StatusCode::OK);
        let app_session = app_session.json()["token"].as_str().unwrap().to_owned();
        server
            .request(Some(&app), req(&obo_by_id("2001")).token(&app_session))
            .await
            .assert_status(StatusCode::OK);
        server
            .request(Some(&app), req(LOGOUT).token(&app_session))
            .await
            .assert_status(StatusCode::OK);
    }
}

/// A request head over limits.max_header_bytes is 431 (hyper's own answer, no JSON body); one
/// under the limit is served.
#[tokio::test]
async fn request_head_too_large_is_431() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_header_bytes = 2048")).await;
    let big = "a".repeat(4096);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let response = raw_exchange(&server, None, request.as_bytes()).await;
    assert_eq!(
        raw_status(&response),
        Some(431),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let small = "a".repeat(1024);
    server
        .request(None, Req::get("/health").header("X-Big", &small))
        .await
        .assert_status(StatusCode::OK);
    assert_still_serving(&server).await;
}

/// The default head limit (16 KiB) is in force without configuration.
#[tokio::test]
async fn default_head_limit_is_enforced() {
    let server = TestServer::start(BACKEND).await;
    let big = "a".repeat(20 * 1024);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let response = raw_exchange(&server, None, request.as_bytes()).await;
    assert_eq!(raw_status(&response), Some(431));
    assert_still_serving(&server).await;
}

/// A malformed request line gets a 4xx or a closed connection, never a 2xx or 5xx, and the
/// server keeps serving afterwards.
#[tokio::test]
async fn malformed_request_line_is_refused() {
    let server = TestServer::start(BACKEND).await;
    for request in [
        &b"NOT A REQUEST\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"POST /sessionauth/v1/authenticate HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /sessionauth/v1/authenticate HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ] {
        let response = raw_exchange(&server, None, request).await;
        if !response.is_empty() {
            let status = raw_status(&response)
                .unwrap_or_else(|| panic!("not HTTP: {}", String::from_utf8_lossy(&response)));
            assert!(
                (400..500).contains(&status),
                "{:?} got {status}",
                String::from_utf8_lossy(request)
            );
        }
    }
    assert_still_serving(&server).await;
}

/// Plain HTTP (no TLS) on the TLS port gets a readable 400 in the JSON error shape, the way
/// nginx answers it, and the connection is closed; the server keeps serving.
#[tokio::test]
async fn plaintext_http_gets_a_readable_400() {
    let server = TestServer::start(BACKEND).await;
    let mut tcp = server.tcp().await.unwrap();
    write_raw(&mut tcp, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let response = read_to_end_within(&mut tcp, WAIT)
        .await
        .expect("the server closes the connection");
    let text = String::from_utf8_lossy(&response);
    assert_eq!(raw_status(&response), Some(400), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(text.contains("This port speaks HTTPS"), "{text}");
    assert_still_serving(&server).await;
}

/// Bytes that are neither TLS nor HTTP are dropped without an answer.
#[tokio::test]
async fn garbage_on_the_tls_port_is_dropped() {
    let server = TestServer::start(BACKEND).await;
    let mut tcp = server.tcp().await.unwrap();
    write_raw(&mut tcp, b"\x00\x01\x02garbage\r\n\r\n").await;
    let response = read_to_end_within(&mut tcp, WAIT)
        .await
        .expect("the server closes the connection");
    assert!(raw_status(&response).is_none(), "{response:?}");
    assert_still_serving(&server).await;
}

/// A client that connects and never sends a ClientHello is dropped after
/// tls.handshake_timeout; one that completes its handshake is served.
#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default().tls("handshake_timeout = \"300ms\""),
    )
    .await;
    let mut tcp = server.tcp().await.unwrap();
    // Well under the 10 s default, so that this only passes because of the configured limit.
    let received = read_to_end_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the server drops the silent client");
    assert!(received.is_empty(), "{received:?}");
    assert_still_serving(&server).await;
}

/// A client that completes the handshake but sends its request head too slowly is dropped
/// after limits.header_read_timeout; a prompt request on another connection is served.
#[tokio::test]
async fn slow_request_head_is_dropped_after_header_read_timeout() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default().limit("header_read_timeout = \"300ms\""),
    )
    .await;
    let mut stream = server.tls(None).await.unwrap();
    write_raw(&mut stream, b"GET /health HTTP/1.1\r\nHost: loc").await;
    // Well under the 10 s default, so that this only passes because of the configured limit.
    let received = read_to_end_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server drops the slow client");
    // hyper answers nothing to a head that does not arrive in time: it closes the connection.
    assert!(
        received.is_empty(),
        "an answer to a request head that never completed: {}",
        String::from_utf8_lossy(&received)
    );
    assert_still_serving(&server).await;
}

/// A client that sends its headers but stalls in the middle of its body gets a JSON 408 after
/// limits.body_read_timeout and its connection is closed, so stalled bodies cannot hold every
/// connection slot; a prompt request on another connection is served meanwhile.
#[tokio::test]
async fn stalled_body_is_408_after_body_read_timeout() {
    let server = TestServer::start_with(
        BACKEND,
        Options::default().limit("body_read_timeout = \"300ms\"\nmax_connections = 2"),
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = server.tls(None).await.unwrap();
        write_raw(
            &mut stream,
            b"POST /login/pubkey/authenticate HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await;
        stalled.push(stream);
    }
    for mut stream in stalled {
        // Well under the 10 s default, so that this only passes because of the configured limit.
        let received = read_to_end_within(&mut stream, Duration::from_secs(5))
            .await
            .expect("the server answers and closes the stalled connection");
        let text = String::from_utf8_lossy(&received);
        assert_eq!(raw_status(&received), Some(408), "{text}");
        assert!(text.contains("application/json"), "{text}");
        assert!(text.contains(r#""code":408"#), "{text}");
    }
    // Both slots are free again.
    assert_still_serving(&server).await;
}

/// Keep-alive: several requests, including refusals, on one connection.
#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    let mut conn = server.connect(Some(&bot)).await.unwrap();
    let token = conn.send(Req::post(AUTH)).await.unwrap();
    token.assert_status(StatusCode::OK);
    let token = token.json()["token"].as_str().unwrap().to_owned();
    conn.send(Req::get("/nope"))
        .await
        .unwrap()
        .assert_error(StatusCode::NOT_FOUND);
    conn.send(Req::get(SESSIONINFO).token("garbage"))
        .await
        .unwrap()
        .assert_error(StatusCode::UNAUTHORIZED);
    conn.send(Req::get(AUTH))
        .await
        .unwrap()
        .assert_error(StatusCode::METHOD_NOT_ALLOWED);
    conn.send(Req::post(APP_AUTH))
        .await
        .unwrap()
        .assert_error(StatusCode::FORBIDDEN);
    conn.send(Req::get(SESSIONINFO).token(&token))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    conn.send(Req::get("/health?probe=1"))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    conn.send(Req::post(LOGOUT).token(&token))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    conn.send(Req::get(SESSIONINFO).token(&token))
        .await
        .unwrap()
        .assert_error(StatusCode::UNAUTHORIZED);
    assert!(!conn.is_closed());
}

/// Pipelined requests written in one go are all answered, in order.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(BACKEND).await;
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n\
        GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n\
        GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(&server, None, request).await;
    let text = String::from_utf8_lossy(&response);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{text}");
}

/// Every response, success or refusal, is `Content-Type: application/json`.
#[tokio::test]
async fn every_response_is_json() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_body_bytes = 10")).await;
    let bot = server.pki.client("bot.user");
    for (id, req) in [
        (None, Req::get("/health")),
        (Some(&bot), Req::post(AUTH)),
        (None, Req::post(AUTH)),
        (None, Req::get("/nope")),
        (None, Req::get(AUTH)),
        (Some(&bot), Req::post(AUTH).body(vec![0u8; 11])),
        (None, Req::get(SESSIONINFO)),
        (Some(&bot), Req::post(LOGOUT)),
    ] {
        let resp = server.request(id, req).await;
        resp.assert_json_content_type();
        let _ = resp.json();
        assert!(resp.headers.get(CONTENT_TYPE).is_some());
    }
}

/// With max_connections = 1, a second client's request waits while the first connection is
/// open (its handshake is done: handshakes are counted apart), and is served once it closes.
#[tokio::test]
async fn connection_limit_queues_further_connections() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_connections = 1")).await;
    let mut first = server.connect(None).await.unwrap();
    first
        .send(Req::get("/health"))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);

    let mut second_conn = server.connect(None).await.unwrap();
    let second = second_conn.send(Req::get("/health"));
    tokio::pin!(second);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "the second connection was served while the first held the only slot"
    );
    drop(first);
    second
        .await
        .expect("the second connection is served once the first closes")
        .assert_status(StatusCode::OK);
}

/// Graceful shutdown with an idle keep-alive connection open: `server::run` returns, the open
/// connection is closed, and new connections are refused.
#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_and_stops_listening() {
    let mut server = TestServer::start(BACKEND).await;
    let mut conn = server.connect(None).await.unwrap();
    conn.send(Req::get("/health"))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);

    assert!(server.shutdown().await, "server::run did not complete");
    assert!(
        conn.closed_within(WAIT).await,
        "the idle connection stayed open"
    );
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "still accepting after shutdown");
}

/// A request in flight when shutdown is signalled is completed (its response is delivered),
/// then `server::run` returns.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    let mut stream = server.tls(Some(&bot)).await.unwrap();
    // `Expect: 100-continue`: the "100 Continue" proves the handler is running and waiting for
    // the body, i.e. the request is in flight.
    write_raw(
        &mut stream,
        format!(
            "POST {AUTH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let continue_line = read_exactly(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n".len()).await;
    assert_eq!(raw_status(&continue_line), Some(100));

    // Shutdown begins while the handler waits for the body: once the listener is closed, the
    // server has told every connection to finish.
    server.signal_shutdown();
    assert!(
        server.listener_closed().await,
        "still accepting after shutdown"
    );
    write_raw(&mut stream, b"{}").await;
    let response = read_to_end_within(&mut stream, WAIT)
        .await
        .expect("the connection ends after the response");
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert_eq!(raw_status(&response), Some(200), "{text}");
    assert!(text.contains("\"sessiontoken\""), "{text}");
    // The response itself announces the end of the connection: shutdown reached it in flight.
    assert!(text.contains("connection: close"), "{text}");
    assert!(server.stopped().await, "server::run did not complete");
}

/// A request that never finishes does not hold shutdown past limits.shutdown_grace.
#[tokio::test]
async fn shutdown_grace_bounds_a_stuck_request() {
    let mut server = TestServer::start_with(
        BACKEND,
        Options::default().limit("shutdown_grace = \"300ms\""),
    )
    .await;
    let bot = server.pki.client("bot.user");
    let mut stream = server.tls(Some(&bot)).await.unwrap();
    write_raw(
        &mut stream,
        format!(
            "POST {AUTH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let continue_line = read_exactly(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n".len()).await;
    assert_eq!(raw_status(&continue_line), Some(100));
    // The body never comes.
    assert!(server.shutdown().await, "server::run did not complete");
}

/// One request over a fresh connection made with `config`; also says whether the TLS session
/// was resumed.
async fn request_with(
    server: &TestServer,
    config: &std::sync::Arc<rustls::ClientConfig>,
    req: Req,
) -> (Resp, bool) {
    let stream = tls_connect_with(server.addr, config.clone()).await.unwrap();
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let resp = Conn::over(stream).await.unwrap().send(req).await.unwrap();
    (resp, resumed)
}

/// A resumed TLS session keeps its client certificate: the bot is still recognised (TLS 1.3
/// and 1.2), and a resumed anonymous session is still anonymous (401).
#[tokio::test]
async fn resumed_sessions_keep_the_client_identity() {
    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    for version in [ClientTls::Default, ClientTls::Tls12Only] {
        let config = server.client_config(Some(&bot), version).unwrap();
        let (first, resumed) = request_with(&server, &config, Req::post(AUTH)).await;
        first.assert_status(StatusCode::OK);
        assert!(!resumed);
        let (second, resumed) = request_with(&server, &config, Req::post(AUTH)).await;
        assert!(resumed, "{version:?}: the second connection did not resume");
        second.assert_status(StatusCode::OK);
        let (third, _) = request_with(&server, &config, Req::post(APP_AUTH)).await;
        third.assert_error(StatusCode::FORBIDDEN);

        let anonymous = server.client_config(None, version).unwrap();
        let _ = request_with(&server, &anonymous, Req::get("/health")).await;
        let (resp, resumed) = request_with(&server, &anonymous, Req::post(AUTH)).await;
        assert!(
            resumed,
            "{version:?}: the anonymous connection did not resume"
        );
        resp.assert_error(StatusCode::UNAUTHORIZED);
    }
}

/// The default build (AWS-LC) accepts the post-quantum hybrid key exchange X25519MLKEM768: a
/// client that offers only that group, or offers it first, completes the handshake on it and
/// authenticates; a client that offers only X25519, or prefers it, gets in on X25519.
#[cfg(feature = "aws-lc-rs")]
#[tokio::test]
async fn post_quantum_key_exchange_is_accepted() {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    use rustls::NamedGroup;

    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    let (pq, classic) = (kx_group::X25519MLKEM768, kx_group::X25519);
    for (offered, named) in [
        (vec![pq], NamedGroup::X25519MLKEM768),
        (vec![pq, classic], NamedGroup::X25519MLKEM768),
        (vec![classic], NamedGroup::X25519),
        (vec![classic, pq], NamedGroup::X25519),
    ] {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: offered,
            ..default_provider()
        };
        let config = server
            .client_config_on(provider, Some(&bot), ClientTls::Default)
            .unwrap();
        let stream = tls_connect_with(server.addr, config).await.unwrap();
        let agreed = stream.get_ref().1.negotiated_key_exchange_group();
        assert_eq!(agreed.map(|g| g.name()), Some(named));
        let resp = Conn::over(stream)
            .await
            .unwrap()
            .send(Req::post(AUTH))
            .await
            .unwrap();
        resp.assert_status(StatusCode::OK);
        assert!(!resp.string("token").is_empty());
    }
}

/// A client that offers only key exchange groups the server does not (pure ML-KEM, or
/// P-256 with ML-KEM) is refused at the handshake, and the server serves on.
#[cfg(feature = "aws-lc-rs")]
#[tokio::test]
async fn unoffered_key_exchange_groups_are_refused() {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};

    let server = TestServer::start(BACKEND).await;
    let bot = server.pki.client("bot.user");
    for group in [kx_group::MLKEM768, kx_group::SECP256R1MLKEM768] {
        let provider = rustls::crypto::CryptoProvider {
            kx_groups: vec![group],
            ..default_provider()
        };
        let config = server
            .client_config_on(provider, Some(&bot), ClientTls::Default)
            .unwrap();
        let refused = tls_connect_with(server.addr, config).await;
        assert!(refused.is_err(), "{:?} was accepted", group.name());
    }
    assert_still_serving(&server).await;
}

/// With `[tls] resumption = false` every connection makes a full handshake, and still works.
#[tokio::test]
async fn resumption_can_be_turned_off() {
    let server =
        TestServer::start_with(BACKEND, Options::default().tls("resumption = false")).await;
    let bot = server.pki.client("bot.user");
    for version in [ClientTls::Default, ClientTls::Tls12Only] {
        let config = server.client_config(Some(&bot), version).unwrap();
        for _ in 0..2 {
            let (resp, resumed) = request_with(&server, &config, Req::post(AUTH)).await;
            resp.assert_status(StatusCode::OK);
            assert!(!resumed, "{version:?}: resumed although resumption is off");
        }
    }
}

/// A client stuck in the TLS handshake does not hold up graceful shutdown until its
/// handshake timeout (10 s by default).
#[tokio::test]
async fn shutdown_does_not_wait_for_a_silent_client() {
    let mut server = TestServer::start(BACKEND).await;
    let _silent = server.tcp().await.unwrap();
    // Make sure the server has accepted it (a TLS client after it is served).
    assert_still_serving(&server).await;
    server.signal_shutdown();
    let stopped = tokio::time::timeout(Duration::from_secs(3), server.stopped()).await;
    assert!(
        matches!(stopped, Ok(true)),
        "server::run still waiting for a client that never sent a ClientHello"
    );
}

/// A refused oversized body is never read as a next request: bytes inside it that look like a
/// request are not answered (no request smuggling through a 413).
#[tokio::test]
async fn refused_body_is_not_parsed_as_a_request() {
    let server =
        TestServer::start_with(BACKEND, Options::default().limit("max_body_bytes = 100")).await;
    let bot = server.pki.client("bot.user");
    let smuggled = "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let body = format!("{smuggled}{}", "x".repeat(200 - smuggled.len()));
    let request = format!(
        "POST {AUTH} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = server.tls(Some(&bot)).await.unwrap();
    write_raw(&mut stream, request.as_bytes()).await;
    // Then a legitimate request on the same connection, if the server kept it open.
    write_raw(
        &mut stream,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let response = read_to_end_within(&mut stream, WAIT)
        .await
        .expect("the connection ends");
    let text = String::from_utf8_lossy(&response);
    assert_eq!(raw_status(&response), Some(413), "{text}");
    assert!(
        !text.contains(" 404 "),
        "the body was served as a request: {text}"
    );
}
