//! Two real server processes sharing one Redis, and one node riding out a Redis outage.
//!
//! Both read the Redis URL from `SESSIONAUTH_TEST_REDIS_URL` (for example
//! `redis://127.0.0.1:6379/15`) and write under a random key prefix that is deleted afterwards.
//! Without the variable they print a `SKIPPED` line and pass.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod nodes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use nodes::{token_of, Conn, Node, Site};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A session made on one node is valid on the other; a logout on the second is a 401 on the
/// first at once; an app's OBO session crosses nodes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_sessions_and_logouts() {
    let Some(url) = nodes::redis_url("two_nodes_share_sessions_and_logouts") else {
        return;
    };
    let keys = Prefix::new(&url);
    let site = Site::new();
    let store = format!("store = \"{url}\"\nredis_prefix = \"{}\"", keys.prefix);
    let a = Node::start(&site.config("a.toml", &store));
    let b = Node::start(&site.config("b.toml", &store));
    let bot = site.client(Some("bot.user"));
    let mut on_a = Conn::open(a.addr, bot.clone()).await.unwrap();
    let mut on_b = Conn::open(b.addr, bot).await.unwrap();

    let token = token_of(&on_a.authenticate().await.unwrap());
    let info = on_b.session_info(&token).await.unwrap();
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.json);
    assert_eq!(info.json["username"], "bot.user");

    let out = on_b.logout(&token).await.unwrap();
    assert_eq!(out.status, StatusCode::OK, "{:?}", out.json);
    let after = on_a.session_info(&token).await.unwrap();
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{:?}", after.json);
    assert_eq!(after.json["message"], "Invalid session");
    let again = on_a.logout(&token).await.unwrap();
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);

    // An app authenticates on B, gets an OBO session on A, and the user's session works on B.
    let app = site.client(Some("demo-app"));
    let mut app_b = Conn::open(b.addr, app.clone()).await.unwrap();
    let mut app_a = Conn::open(a.addr, app).await.unwrap();
    let app_token = token_of(
        &app_b
            .call(
                hyper::Method::POST,
                "/sessionauth/v1/app/authenticate",
                None,
            )
            .await
            .unwrap(),
    );
    let obo = app_a
        .call(
            hyper::Method::POST,
            "/sessionauth/v1/app/user/2001/authenticate",
            Some(&app_token),
        )
        .await
        .unwrap();
    let obo_token = token_of(&obo);
    let info = on_b.session_info(&obo_token).await.unwrap();
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.json);
    assert_eq!(info.json["username"], "alice");
}

/// When Redis stops answering, requests that need it fail closed with 503 and a JSON body,
/// within a few seconds; when it is back, the same node succeeds again without a restart. Also
/// a node started while Redis is down starts at once, answers 503, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_fails_closed_during_a_redis_outage_and_recovers() {
    let Some(url) = nodes::redis_url("a_node_fails_closed_during_a_redis_outage_and_recovers")
    else {
        return;
    };
    if url.starts_with("rediss://") {
        nodes::say("SKIPPED: the Redis outage test proxies plain redis:// only");
        return;
    }
    let keys = Prefix::new(&url);
    let (upstream, _) = through_proxy(&url, 0);
    let proxy = Proxy::start(upstream).await;
    let (_, via_proxy) = through_proxy(&url, proxy.port);
    let site = Site::new();
    let store = format!(
        "store = \"{via_proxy}\"\nredis_prefix = \"{}\"",
        keys.prefix
    );

    // Started while Redis is unreachable: no waiting at start-up, 503 until it is back.
    proxy.set(Mode::Refuse);
    let started = Instant::now();
    let node = Node::start(&site.config("node.toml", &store));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start-up waited for Redis"
    );
    let bot = site.client(Some("bot.user"));
    let mut conn = Conn::open(node.addr, bot.clone()).await.unwrap();
    expect_503(&mut conn, None).await;
    proxy.set(Mode::Up);
    let token = recover(&mut conn).await;

    for outage in [Mode::Refuse, Mode::Blackhole] {
        proxy.set(outage);
        expect_503(&mut conn, Some(&token)).await;
        proxy.set(Mode::Up);
        recover(&mut conn).await;
        let info = conn.session_info(&token).await.unwrap();
        assert_eq!(info.status, StatusCode::OK, "{outage:?}: {:?}", info.json);
    }
    drop(node);
}

/// Both authenticate and session info answer 503 JSON, quickly, while Redis is unreachable.
async fn expect_503(conn: &mut Conn, token: Option<&str>) {
    let started = Instant::now();
    let r = conn.authenticate().await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
    assert_eq!(r.json["code"], 503);
    assert!(r.json["message"].as_str().is_some_and(|m| !m.is_empty()));
    if let Some(token) = token {
        let r = conn.session_info(token).await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
        let r = conn.logout(token).await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503s took {:?}",
        started.elapsed()
    );
    nodes::say(&format!(
        "redis outage: 503s answered in {:?}",
        started.elapsed()
    ));
}

/// Waits (up to 20 s) for authenticate to succeed again; returns the new token.
async fn recover(conn: &mut Conn) -> String {
    let started = Instant::now();
    let conn = Arc::new(tokio::sync::Mutex::new(conn));
    let token = nodes::eventually(Duration::from_secs(20), "Redis recovery", || {
        let conn = conn.clone();
        async move {
            let r = conn.lock().await.authenticate().await.unwrap();
            (r.status == StatusCode::OK).then(|| token_of(&r))
        }
    })
    .await;
    nodes::say(&format!(
        "redis outage: recovered in {:?}",
        started.elapsed()
    ));
    token
}

/// Splits a `redis://[userinfo@]host:port[/db]` URL into the upstream address and the same URL
/// pointed at `127.0.0.1:<port>`.
fn through_proxy(url: &str, port: u16) -> (String, String) {
    let rest = url.strip_prefix("redis://").expect("redis:// URL");
    let (auth, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (userinfo, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), auth),
    };
    let upstream = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    (
        upstream,
        format!("redis://{userinfo}127.0.0.1:{port}{tail}"),
    )
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards to Redis.
    Up,
    /// Closes every connection at once (a dead Redis).
    Refuse,
    /// Keeps connections open and answers nothing (a hung Redis or a network partition).
    Blackhole,
}

/// A TCP proxy in front of Redis that the test can break and mend.
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

/// A random key prefix on the test Redis, whose keys are deleted when dropped.
struct Prefix {
    url: String,
    prefix: String,
}

impl Prefix {
    fn new(url: &str) -> Self {
        let random = sessionauth::token::SessionToken::generate().unwrap();
        Self {
            url: url.to_owned(),
            prefix: format!("sessionauth-test:{}:", &random.expose()[..12]),
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
