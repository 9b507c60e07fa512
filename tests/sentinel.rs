//! Redis behind Sentinel: a server rides out the loss of its primary.
//!
//! The test starts its own Redis servers and Sentinels on free loopback ports
//! (`support::sentinel`), so it needs `redis-server` on the `PATH`. It is ignored unless the
//! ignored tests are included (as `.ci/run` does), and then fails without `redis-server`. The
//! store conformance suite runs on Sentinel too (`store_conformance.rs`, `sentinel::every_case`).

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use parking_lot::Mutex;
use sessionauth::clock::{Clock, SystemClock};
use sessionauth::directory::UserId;
use sessionauth::session::{Session, SessionId, SessionKind};
use sessionauth::store::{RedisStore, RedisUrl, SessionStore, StoreError};
use sessionauth::token::SessionToken;
use support::node::Node;
use support::redis::toml_string;
use support::sentinel::{Acl, SentinelSet, DOWN_AFTER, FAILOVER_TIMEOUT};
use support::*;

/// Concurrent clients driving the load.
const CLIENTS: usize = 6;
/// Sessions acknowledged before the primary is killed.
const BEFORE_KILL: usize = 200;
/// Sessions acknowledged after service is back, before the load stops.
const AFTER_RECOVERY: usize = 200;
/// How long a client waits after a 503 before it tries again (as a real client backs off).
const BACKOFF: Duration = Duration::from_millis(20);

/// What the clients saw: what they were told succeeded, and when.
#[derive(Default)]
struct Ledger {
    /// Tokens whose authenticate answered 200, not logged out since.
    live: Vec<String>,
    /// Tokens whose logout answered 200.
    logged_out: Vec<String>,
    /// Tokens whose logout answered 503: their fate is unknown, so nothing is asserted.
    uncertain: Vec<String>,
    /// When each request that answered 200 was sent.
    successes: Vec<Instant>,
    /// When each request that answered 503 was sent.
    unavailable: Vec<Instant>,
    /// Anything other than 200 and 503 (and 401 nowhere): the test fails on any.
    unexpected: Vec<String>,
}

/// Killing the primary (SIGKILL) under authenticate and logout load loses no acknowledged
/// session and no acknowledged logout; while no primary is known requests answer 503 (never
/// another status); service comes back, through the primary Sentinel promotes, within a bound
/// derived from the Sentinel timeouts, without a restart; the readiness probe follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server (the test starts its own servers and Sentinels)"]
async fn a_killed_primary_loses_no_acknowledged_session_or_logout() {
    let set = SentinelSet::start().await;
    let store = store_lines(&set, "failover:");
    let server = Arc::new(
        Site::new(Backend::Memory)
            .start(
                &Options::default()
                    .store(&store)
                    .limit("max_sessions_per_user = 0"),
            )
            .await,
    );
    server
        .request(None, Req::get("/health/ready"))
        .await
        .assert_status(StatusCode::OK);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(server.clone(), ledger.clone(), stop.clone())))
        .collect();

    let acked = |ledger: &Mutex<Ledger>| {
        let l = ledger.lock();
        l.live.len() + l.logged_out.len() + l.uncertain.len()
    };
    let started = Instant::now();
    while acked(&ledger) < BEFORE_KILL {
        assert!(started.elapsed() < WAIT, "no load before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let old = set.primary;
    let killed_at = Instant::now();
    set.kill(old);

    // Back within the bound: the first success of a request sent after the outage began (the
    // first 503 after the kill; requests in flight at the kill may still succeed), and then
    // some load served by the new primary.
    let bound = DOWN_AFTER + 2 * FAILOVER_TIMEOUT + Duration::from_secs(10);
    let (back_at, after) = loop {
        let (first, count) = {
            let l = ledger.lock();
            let outage = l
                .unavailable
                .iter()
                .filter(|t| **t >= killed_at)
                .min()
                .copied();
            let after: Vec<Instant> = match outage {
                Some(outage) => l
                    .successes
                    .iter()
                    .filter(|t| **t > outage)
                    .copied()
                    .collect(),
                None => Vec::new(),
            };
            (after.iter().min().copied(), after.len())
        };
        if let (Some(first), true) = (first, count >= AFTER_RECOVERY) {
            break (first, count);
        }
        assert!(
            killed_at.elapsed() < bound + Duration::from_secs(5),
            "service did not come back within {bound:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let recovered = back_at.saturating_duration_since(killed_at);
    say(&format!(
        "sentinel failover: service back {recovered:?} after the primary was killed \
         ({after} successes after it)"
    ));
    assert!(
        recovered < bound,
        "back after {recovered:?}, bound {bound:?}"
    );
    let new = set.primary_now().expect("a Sentinel names a primary");
    assert_ne!(new, old, "Sentinel still names the killed primary");

    let ledger = std::mem::take(&mut *ledger.lock());
    assert!(
        ledger.unexpected.is_empty(),
        "statuses other than 200 and 503: {:?}",
        &ledger.unexpected[..ledger.unexpected.len().min(10)]
    );
    let last_503 = ledger.unavailable.iter().max().copied();
    assert!(last_503.is_some(), "the kill caused no 503 at all");

    // Every acknowledged session is valid, every acknowledged logout logged out, on the new
    // primary, through the same server (no restart).
    let mut conn = server.connect(None).await.unwrap();
    let mut lost = Vec::new();
    for token in &ledger.live {
        let r = conn.send(Req::get(SESSIONINFO).token(token)).await.unwrap();
        if r.status != StatusCode::OK {
            lost.push(format!("session {}: {}", &token[..8], r.status));
        }
    }
    for token in &ledger.logged_out {
        let r = conn.send(Req::get(SESSIONINFO).token(token)).await.unwrap();
        if r.status != StatusCode::UNAUTHORIZED {
            lost.push(format!("logout {}: {}", &token[..8], r.status));
        }
    }
    say(&format!(
        "sentinel failover: {} live sessions and {} logouts checked, {} logouts uncertain, \
         {} 503s, the last sent {:?} after the kill",
        ledger.live.len(),
        ledger.logged_out.len(),
        ledger.uncertain.len(),
        ledger.unavailable.len(),
        last_503.map(|t| t.saturating_duration_since(killed_at)),
    ));
    assert!(lost.is_empty(), "acknowledged changes lost: {lost:?}");
    assert!(!ledger.logged_out.is_empty(), "no logout was acknowledged");
    server
        .request(None, Req::get("/health/ready"))
        .await
        .assert_status(StatusCode::OK);
}

/// Three server processes on one Sentinel set share sessions and logouts; after the primary is
/// killed each finds the promoted replica by itself (no restart), and what any acknowledged
/// before holds on all: the kept session valid, the logged-out one a 401, and a session made
/// on one after the failover valid on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server (the test starts its own servers and Sentinels)"]
async fn three_nodes_share_sessions_across_a_failover() {
    let set = SentinelSet::start().await;
    let site = Site::new(Backend::Memory);
    let store = store_lines(&set, "nodes:");
    let options = Options::default().store(&store);
    let a = Node::start(&site.write_config_as("a.toml", &options, "127.0.0.1:0")).await;
    let b = Node::start(&site.write_config_as("b.toml", &options, "127.0.0.1:0")).await;
    let c = Node::start(&site.write_config_as("c.toml", &options, "127.0.0.1:0")).await;
    let mut on_a = open(&site, &a, "bot.user").await;
    let mut on_b = open(&site, &b, "bot.user").await;
    let mut on_c = open(&site, &c, "bot.user").await;

    let kept = token_of(&on_a.send(Req::post(AUTH)).await.unwrap());
    let ended = token_of(&on_b.send(Req::post(AUTH)).await.unwrap());
    let out = on_a.send(Req::post(LOGOUT).token(&ended)).await.unwrap();
    out.assert_status(StatusCode::OK);
    let info = on_b.send(Req::get(SESSIONINFO).token(&kept)).await.unwrap();
    info.assert_status(StatusCode::OK);

    set.kill(set.primary);
    let bound = DOWN_AFTER + 2 * FAILOVER_TIMEOUT + Duration::from_secs(10);
    let after = authenticate_until_ok(&mut on_b, bound).await;
    authenticate_until_ok(&mut on_a, bound).await;
    authenticate_until_ok(&mut on_c, bound).await;
    for conn in [&mut on_a, &mut on_b, &mut on_c] {
        for token in [&kept, &after] {
            let info = conn.send(Req::get(SESSIONINFO).token(token)).await.unwrap();
            info.assert_status(StatusCode::OK);
        }
        let info = conn
            .send(Req::get(SESSIONINFO).token(&ended))
            .await
            .unwrap();
        info.assert_status(StatusCode::UNAUTHORIZED);
    }
    drop((a, b, c));
}

/// The data nodes require an ACL user (their default user is off): the URL's user name reaches
/// them, through Sentinel's lookup and the `ROLE` check, and the store works; the same password
/// without the user name (the default user) is refused, and that is `Unavailable`, never a
/// success.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server (the test starts its own servers and Sentinels)"]
async fn the_urls_acl_user_reaches_the_data_nodes() {
    let acl = Acl {
        user: "sessionauth",
        password: "s3cret",
    };
    let set = SentinelSet::start_with(Some(acl)).await;
    let hosts = set.url();
    let hosts = hosts.strip_prefix("redis+sentinel://").unwrap();
    let with_user =
        RedisUrl::parse(&format!("redis+sentinel://sessionauth:s3cret@{hosts}")).unwrap();
    let store = RedisStore::open(&with_user, "acl:").unwrap();
    let now = SystemClock.now();
    let key = SessionToken::generate().unwrap().hash();
    let session = Session {
        id: SessionId::generate().unwrap(),
        kind: SessionKind::User { user: UserId(1001) },
        created: now,
        expires: now.saturating_add(Duration::from_secs(3600)),
        client_ip: None,
        user_agent: None,
        credential: None,
        chain: Box::default(),
        fingerprint: None,
    };
    store.insert(key, session.clone()).await.unwrap();
    assert_eq!(store.get(&key, now).await.unwrap(), Some(session));
    store.probe().await.unwrap();

    let without_user = RedisUrl::parse(&format!("redis+sentinel://:s3cret@{hosts}")).unwrap();
    let refused = RedisStore::open(&without_user, "acl:").unwrap();
    match refused.get(&key, now).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("the default user got {other:?}"),
    }
    assert!(refused.probe().await.is_err());
}

/// The store lines for `set` under `prefix`: every write waits for one replica, as by default,
/// but within 2 s rather than 500 ms, so that a machine busy with the rest of the suite does not
/// turn a slow acknowledgement into a 503 where the test expects a success.
fn store_lines(set: &SentinelSet, prefix: &str) -> String {
    format!(
        "store = {}\nredis_prefix = {}\nredis_wait_timeout = \"2s\"\n",
        toml_string(&set.url()),
        toml_string(prefix)
    )
}

/// A keep-alive connection to `node`, presenting `cn`'s certificate from `site`'s CA.
async fn open(site: &Site, node: &Node, cn: &str) -> Conn {
    let id = site.pki().client(cn);
    let tls = client_config(site.pki().ca.cert_pem(), Some(&id), ClientTls::Default).unwrap();
    Conn::open(node.addr, tls).await.unwrap()
}

/// Authenticates until it succeeds (every failure meanwhile a 503), at most `bound`; returns
/// the token.
async fn authenticate_until_ok(conn: &mut Conn, bound: Duration) -> String {
    let started = Instant::now();
    loop {
        let r = conn.send(Req::post(AUTH)).await.unwrap();
        if r.status == StatusCode::OK {
            return token_of(&r);
        }
        r.assert_error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < bound,
            "no success within {bound:?} of the kill"
        );
        tokio::time::sleep(BACKOFF).await;
    }
}

/// One client: authenticates, and every fourth request logs out the last session it made, on one keep-alive
/// connection (made again when it breaks), until told to stop.
async fn client(server: Arc<TestServer>, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let bot = server.pki.client("bot.user");
    let mut conn = None;
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if conn.is_none() {
            conn = server.connect(Some(&bot)).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let logout = n.is_multiple_of(4) && !mine.is_empty();
        let req = match (logout, mine.last()) {
            (true, Some(token)) => Req::post(LOGOUT).token(token),
            _ => Req::post(AUTH),
        };
        let sent = Instant::now();
        let Ok(resp) = c.send(req).await else {
            conn = None;
            continue;
        };
        let unavailable = {
            let mut l = ledger.lock();
            match (resp.status, logout) {
                (StatusCode::OK, false) => {
                    let token = token_of(&resp);
                    mine.push(token.clone());
                    l.live.push(token);
                    l.successes.push(sent);
                    false
                }
                (StatusCode::OK, true) => {
                    let token = mine.pop().unwrap();
                    l.live.retain(|t| *t != token);
                    l.logged_out.push(token);
                    l.successes.push(sent);
                    false
                }
                (StatusCode::SERVICE_UNAVAILABLE, logout) => {
                    resp.assert_json_content_type();
                    l.unavailable.push(sent);
                    if logout {
                        let token = mine.pop().unwrap();
                        l.live.retain(|t| *t != token);
                        l.uncertain.push(token);
                    }
                    true
                }
                (status, _) => {
                    l.unexpected.push(format!("{status}: {}", resp.text()));
                    false
                }
            }
        };
        if unavailable {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}
