//! Three real server processes sharing one Redis (or one PostgreSQL), and one node riding out an
//! outage of it. (`tests/sentinel.rs` runs three on a Sentinel set through a failover.)
//!
//! They need the test Redis (`SESSIONAUTH_TEST_REDIS_URL`) or the test PostgreSQL
//! (`SESSIONAUTH_TEST_POSTGRES_URL`, see `support`): they are ignored unless the ignored tests
//! are included, and then fail without their server. The nodes write under a random key or
//! table prefix that is deleted afterwards.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use parking_lot::Mutex;
use support::node::{self, Node};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A keep-alive connection to `node`, presenting `cn`'s certificate from `site`'s CA.
async fn open(site: &Site, node: &Node, cn: &str) -> Conn {
    let id = site.pki().client(cn);
    let tls = client_config(site.pki().ca.cert_pem(), Some(&id), ClientTls::Default).unwrap();
    Conn::open(node.addr, tls).await.unwrap()
}

/// On Redis, a session made on one of three nodes is valid on the others; a logout on a second
/// is a 401 on the first and the third at once; an app's OBO session crosses nodes too, and so
/// does the cascade of its app session's logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SESSIONAUTH_TEST_REDIS_URL"]
async fn three_nodes_share_sessions_and_logouts() {
    nodes_share(Backend::Redis).await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SESSIONAUTH_TEST_POSTGRES_URL"]
async fn three_nodes_share_sessions_and_logouts_on_postgres() {
    nodes_share(Backend::Postgres).await;
}

/// When Redis stops answering, requests that need it fail closed with 503 and a JSON body,
/// within a few seconds; when it is back, the same node succeeds again without a restart. Also
/// a node started while Redis is down starts at once, answers 503, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SESSIONAUTH_TEST_REDIS_URL"]
async fn a_node_fails_closed_during_a_redis_outage_and_recovers() {
    outage(Backend::Redis).await;
}

/// The same with PostgreSQL: down at start, refusing, and silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs SESSIONAUTH_TEST_POSTGRES_URL"]
async fn a_node_fails_closed_during_a_postgres_outage_and_recovers() {
    outage(Backend::Postgres).await;
}

async fn nodes_share(backend: Backend) {
    let site = Site::new(backend);
    let a = Node::start(&site.write_config_as("a.toml", &Options::default(), "127.0.0.1:0")).await;
    let b = Node::start(&site.write_config_as("b.toml", &Options::default(), "127.0.0.1:0")).await;
    let c = Node::start(&site.write_config_as("c.toml", &Options::default(), "127.0.0.1:0")).await;
    let mut on_a = open(&site, &a, "bot.user").await;
    let mut on_b = open(&site, &b, "bot.user").await;
    let mut on_c = open(&site, &c, "bot.user").await;

    let token = token_of(&on_a.send(Req::post(AUTH)).await.unwrap());
    for conn in [&mut on_b, &mut on_c] {
        let info = conn
            .send(Req::get(SESSIONINFO).token(&token))
            .await
            .unwrap();
        info.assert_status(StatusCode::OK);
        assert_eq!(info.json()["username"], "bot.user");
    }

    let out = on_b.send(Req::post(LOGOUT).token(&token)).await.unwrap();
    out.assert_status(StatusCode::OK);
    for conn in [&mut on_a, &mut on_c] {
        let after = conn
            .send(Req::get(SESSIONINFO).token(&token))
            .await
            .unwrap();
        assert_eq!(
            after.assert_error(StatusCode::UNAUTHORIZED),
            "Invalid session"
        );
    }
    let again = on_c.send(Req::post(LOGOUT).token(&token)).await.unwrap();
    again.assert_status(StatusCode::UNAUTHORIZED);

    // An app authenticates on B, gets an OBO session on A, and the user's session works on B.
    let mut app_b = open(&site, &b, "demo-app").await;
    let mut app_a = open(&site, &a, "demo-app").await;
    let app_token = token_of(&app_b.send(Req::post(APP_AUTH)).await.unwrap());
    let obo = app_a
        .send(Req::post(&obo_by_id("2001")).token(&app_token))
        .await
        .unwrap();
    let obo_token = token_of(&obo);
    let info = on_b
        .send(Req::get(SESSIONINFO).token(&obo_token))
        .await
        .unwrap();
    info.assert_status(StatusCode::OK);
    assert_eq!(info.json()["username"], "alice");
    // The app's logout on C ends the OBO session it minted on A, for B too (the cascade).
    let mut app_c = open(&site, &c, "demo-app").await;
    app_c
        .send(Req::post(LOGOUT).token(&app_token))
        .await
        .unwrap()
        .assert_status(StatusCode::OK);
    let info = on_b
        .send(Req::get(SESSIONINFO).token(&obo_token))
        .await
        .unwrap();
    info.assert_status(StatusCode::UNAUTHORIZED);
}

/// Runs a node through its store's proxy: down at start, then refused and black-holed, each
/// time answering 503 and recovering without a restart.
async fn outage(backend: Backend) {
    let site = Site::new(backend);
    let (url, prefix_key, prefix) = match backend {
        Backend::Redis => {
            let redis = site.redis().unwrap();
            (redis.url.clone(), "redis_prefix", redis.prefix.clone())
        }
        Backend::Postgres => {
            let db = site.postgres().unwrap();
            (db.url.clone(), "postgres_table_prefix", db.prefix.clone())
        }
        other => unreachable!("{other:?} has no server to lose"),
    };
    assert!(
        !url.starts_with("rediss://") && !url.contains("sslmode=require"),
        "the outage test proxies plain TCP only"
    );
    let (upstream, _) = through_proxy(&url, 0);
    let proxy = Proxy::start(upstream).await;
    let (_, via_proxy) = through_proxy(&url, proxy.port);
    let store = format!(
        "store = {}\n{prefix_key} = {}\n",
        support::redis::toml_string(&via_proxy),
        support::redis::toml_string(&prefix)
    );
    let config = site.write_config_as(
        "node.toml",
        &Options::default().store(&store),
        "127.0.0.1:0",
    );

    // Started while Redis is unreachable: no waiting at start-up, 503 until it is back.
    proxy.set(Mode::Refuse);
    let started = Instant::now();
    let node = Node::start(&config).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start-up waited for Redis"
    );
    let mut conn = open(&site, &node, "bot.user").await;
    expect_503(&mut conn, None).await;
    proxy.set(Mode::Up);
    let token = recover(&mut conn).await;

    for outage in [Mode::Refuse, Mode::Blackhole] {
        proxy.set(outage);
        expect_503(&mut conn, Some(&token)).await;
        proxy.set(Mode::Up);
        recover(&mut conn).await;
        let info = conn
            .send(Req::get(SESSIONINFO).token(&token))
            .await
            .unwrap();
        assert_eq!(info.status, StatusCode::OK, "{outage:?}: {}", info.text());
    }
    drop(node);
}

/// Authenticate, session info and logout answer 503 JSON, quickly, while the store is
/// unreachable.
async fn expect_503(conn: &mut Conn, token: Option<&str>) {
    let started = Instant::now();
    let r = conn.send(Req::post(AUTH)).await.unwrap();
    let message = r.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(!message.is_empty());
    if let Some(token) = token {
        let r = conn.send(Req::get(SESSIONINFO).token(token)).await.unwrap();
        r.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        let r = conn.send(Req::post(LOGOUT).token(token)).await.unwrap();
        r.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503s took {:?}",
        started.elapsed()
    );
    say(&format!(
        "store outage: 503s answered in {:?}",
        started.elapsed()
    ));
}

/// Waits (up to 20 s) for authenticate to succeed again; returns the new token.
async fn recover(conn: &mut Conn) -> String {
    let started = Instant::now();
    let conn = Arc::new(tokio::sync::Mutex::new(conn));
    let token = node::eventually(Duration::from_secs(20), "store recovery", || {
        let conn = conn.clone();
        async move {
            let r = conn.lock().await.send(Req::post(AUTH)).await.unwrap();
            (r.status == StatusCode::OK).then(|| token_of(&r))
        }
    })
    .await;
    say(&format!(
        "store outage: recovered in {:?}",
        started.elapsed()
    ));
    token
}

/// Splits a `scheme://[userinfo@]host:port[/db]` URL (Redis or PostgreSQL) into the upstream
/// address and the same URL pointed at `127.0.0.1:<port>`.
fn through_proxy(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let default_port = if scheme == "redis" { 6379 } else { 5432 };
    let (auth, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), auth),
    };
    let upstream = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    (
        upstream,
        format!("{scheme}://{userinfo}127.0.0.1:{port}{tail}"),
    )
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards to the store.
    Up,
    /// Closes every connection at once (a dead server).
    Refuse,
    /// Keeps connections open and answers nothing (a hung server or a network partition).
    Blackhole,
}

/// A TCP proxy in front of Redis or PostgreSQL that the test can break and mend.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
}

struct ProxyState {
    mode: Mode,
    /// Forwarding tasks, aborted when the mode changes.
    pipes: Vec<JoinHandle<()>>,
    /// Connections held silent while black-holed.
    held: Vec<TcpStream>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState {
            mode: Mode::Up,
            pipes: Vec::new(),
            held: Vec::new(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = shared.lock().mode;
                match mode {
                    Mode::Refuse => drop(client),
                    Mode::Blackhole => shared.lock().held.push(client),
                    Mode::Up => {
                        let upstream = upstream.clone();
                        let pipe = tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        });
                        shared.lock().pipes.push(pipe);
                    }
                }
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// Switches mode; open connections are cut (`Refuse`, `Up`) or silenced (`Blackhole`).
    fn set(&self, mode: Mode) {
        let mut s = self.state.lock();
        s.mode = mode;
        for pipe in s.pipes.drain(..) {
            pipe.abort();
        }
        s.held.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Refuse);
        self.accept.abort();
    }
}
