//! A networked store that cannot be reached fails closed: the server starts anyway, and every
//! request that needs the store answers 503 JSON (never another 5xx, never a success, never a
//! panic). These tests need no database: the store points at a port nothing listens on.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use hyper::StatusCode;
use sessionauth::clock::{Clock, SystemClock};
use sessionauth::directory::UserId;
use sessionauth::store::{
    Census, PostgresStore, PostgresUrl, RedisStore, RedisUrl, Selector, SessionStore, StoreError,
    TablePrefix,
};
use sessionauth::token::TokenHash;
use support::*;

/// A loopback port that nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Every operation of a PostgreSQL store whose server refuses connections fails with
/// `Unavailable`, quickly.
#[tokio::test]
async fn postgres_store_on_a_closed_port_is_unavailable() {
    let port = closed_port().await;
    let url = PostgresUrl::parse(&format!("postgres://postgres@127.0.0.1:{port}/test")).unwrap();
    let store = PostgresStore::open(&url, &TablePrefix::default()).unwrap();
    let now = SystemClock.now();
    let key = TokenHash::from_bytes([7; 32]);
    let started = Instant::now();
    let results: Vec<(&str, Result<(), StoreError>)> = vec![
        ("get", store.get(&key, now).await.map(drop)),
        ("remove", store.remove(&key, now).await.map(drop)),
        ("list_user", store.list_user(UserId(1), now).await.map(drop)),
        (
            "remove_matching",
            store
                .remove_matching(&Selector::User(UserId(1)), now)
                .await
                .map(drop),
        ),
        ("purge", store.purge_expired(now, 10).await.map(drop)),
        ("read_note", store.read_note("n").await.map(drop)),
        ("write_note", store.write_note("n", vec![1]).await),
        ("count", store.count().await.map(drop)),
    ];
    for (op, result) in results {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{op}: {result:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// A Sentinel store whose Sentinels all refuse connections knows no primary: every operation,
/// the probe included, fails with `Unavailable`, quickly, and none succeeds.
#[tokio::test]
async fn sentinel_store_without_sentinels_is_unavailable() {
    let (a, b) = (closed_port().await, closed_port().await);
    let url = RedisUrl::parse(&format!(
        "redis+sentinel://app:pw@127.0.0.1:{a},127.0.0.1:{b}/svc"
    ))
    .unwrap();
    let store = RedisStore::open(&url, "t:").unwrap();
    let now = SystemClock.now();
    let key = TokenHash::from_bytes([7; 32]);
    let started = Instant::now();
    let results: Vec<(&str, Result<(), StoreError>)> = vec![
        ("get", store.get(&key, now).await.map(drop)),
        ("remove", store.remove(&key, now).await.map(drop)),
        ("list_user", store.list_user(UserId(1), now).await.map(drop)),
        ("purge", store.purge_expired(now, 10).await.map(drop)),
        ("write_note", store.write_note("n", vec![1]).await),
        ("probe", store.probe().await),
        ("count", store.count().await.map(drop)),
    ];
    for (op, result) in results {
        match result {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("primary"), "{op}: {why}"),
            other => panic!("{op}: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// A Cluster store whose seed nodes all refuse connections fails every operation, the probe
/// included, with `Unavailable`, quickly; none succeeds.
#[tokio::test]
async fn cluster_store_without_nodes_is_unavailable() {
    let (a, b) = (closed_port().await, closed_port().await);
    let url = RedisUrl::parse(&format!("redis+cluster://127.0.0.1:{a},127.0.0.1:{b}")).unwrap();
    let store = RedisStore::open(&url, "t:").unwrap();
    let now = SystemClock.now();
    let key = TokenHash::from_bytes([7; 32]);
    let started = Instant::now();
    let results: Vec<(&str, Result<(), StoreError>)> = vec![
        ("get", store.get(&key, now).await.map(drop)),
        ("remove", store.remove(&key, now).await.map(drop)),
        ("write_note", store.write_note("n", vec![1]).await),
        ("probe", store.probe().await),
        ("count", store.count().await.map(drop)),
    ];
    for (op, result) in results {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{op}: {result:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// A server whose PostgreSQL is down starts at once, and answers 503 JSON to authenticate,
/// app authenticate, session info and logout; the certificate checks still come first.
#[tokio::test]
async fn server_on_an_unreachable_postgres_answers_503() {
    let port = closed_port().await;
    let store = format!("store = \"postgres://postgres@127.0.0.1:{port}/test\"\n");
    let started = Instant::now();
    let server = Site::new(Backend::Memory)
        .start(&Options::default().store(&store))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start-up waited"
    );
    let bot = server.pki.client("bot.user");
    let app = server.pki.client("demo-app");
    // Well-formed, so that it reaches the store.
    let token = "A".repeat(43);
    for (id, path, token) in [
        (&bot, AUTH, None),
        (&app, APP_AUTH, None),
        (&bot, LOGOUT, Some(token.as_str())),
    ] {
        let r = server.post(Some(id), path, token).await;
        let message = r.assert_error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(!message.is_empty(), "{path}");
    }
    let r = server.session_info(Some(&token)).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE);
    // A client mistake is still a client mistake: an unknown CN is refused before the store.
    let stranger = server.pki.client("nobody");
    let r = server.post(Some(&stranger), AUTH, None).await;
    r.assert_status(StatusCode::FORBIDDEN);
    let mut server = server;
    assert!(server.shutdown().await, "the server did not stop");
}
