//! Redis Cluster: the store rides out the loss of the primary that holds its slot.
//!
//! The test starts its own six-node cluster on free loopback ports (`support::redis_cluster`),
//! so it needs `redis-server` and `redis-cli` on the `PATH`. It is ignored unless the ignored
//! tests are included (as `.ci/run` does), and then fails without them. The store conformance
//! suite runs on a cluster too (`store_conformance.rs`, `cluster::every_case`).

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sessionauth::clock::{Clock, SystemClock};
use sessionauth::directory::UserId;
use sessionauth::session::{Session, SessionId, SessionKind};
use sessionauth::store::{RedisStore, RedisUrl, ReplicaWait, SessionStore, StoreError};
use sessionauth::token::{SessionToken, TokenHash};
use support::redis_cluster::RedisCluster;
use support::say;

/// The key prefix: its hash tag names the slot every key lives in.
const PREFIX: &str = "{failover}:";
/// Concurrent writers.
const TASKS: usize = 6;

/// What the writers were told succeeded.
#[derive(Default)]
struct Ledger {
    /// Inserted (acknowledged) and not removed since.
    live: Vec<TokenHash>,
    /// Removed (acknowledged).
    removed: Vec<TokenHash>,
    /// When each acknowledged operation completed.
    successes: Vec<Instant>,
    /// When each failed operation completed.
    failures: Vec<Instant>,
    /// Failures that were not `Unavailable`.
    unexpected: Vec<String>,
}

/// Killing (SIGKILL) the primary that serves the store's slot, under insert and remove load,
/// loses no acknowledged insert or removal. The cluster promotes the slot's one replica, which
/// then has no replica of its own: writes, which wait for one, fail with `Unavailable` (503),
/// never with a success, until the killed node is started again and rejoins as its replica;
/// then service resumes without a new store, every acknowledged session reads back and every
/// acknowledged removal stays removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server and redis-cli (the test starts its own cluster)"]
async fn a_killed_cluster_primary_loses_no_acknowledged_write() {
    let mut cluster = RedisCluster::start().await;
    let url = RedisUrl::parse(&cluster.url()).unwrap();
    let store = Arc::new(
        RedisStore::open_with(&url, PREFIX, ReplicaWait::new(1, Duration::from_secs(2))).unwrap(),
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(writer(store.clone(), ledger.clone(), stop.clone())))
        .collect();

    let started = Instant::now();
    while ledger.lock().successes.len() < 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ports = cluster.ports.clone();
    let victim = cluster
        .primary_of(&format!("{PREFIX}x"), &ports)
        .expect("a primary for the slot");
    let killed_at = Instant::now();
    cluster.kill(victim);
    let others: Vec<u16> = ports.iter().copied().filter(|p| *p != victim).collect();
    let promoted_by = Duration::from_secs(20);
    let promoted = loop {
        // Until the others mark it failed, they still name the killed node.
        match cluster.primary_of(&format!("{PREFIX}x"), &others) {
            Some(p) if p != victim => break p,
            _ => {}
        }
        assert!(
            killed_at.elapsed() < promoted_by,
            "the cluster promoted no replica within {promoted_by:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted_after = killed_at.elapsed();
    cluster.restart(victim);

    // Back: the first of 200 successes that completed after the first failure that followed the
    // kill.
    let bound = Duration::from_secs(30);
    let back_at = loop {
        let back = {
            let l = ledger.lock();
            let outage = l
                .failures
                .iter()
                .filter(|t| **t >= killed_at)
                .min()
                .copied();
            outage.and_then(|outage| {
                let after: Vec<Instant> = l
                    .successes
                    .iter()
                    .filter(|t| **t > outage)
                    .copied()
                    .collect();
                (after.len() >= 200)
                    .then(|| after.iter().min().copied())
                    .flatten()
            })
        };
        if let Some(back) = back {
            break back;
        }
        assert!(
            killed_at.elapsed() < bound,
            "the store did not come back within {bound:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_ne!(promoted, victim);
    say(&format!(
        "cluster failover: replica promoted {promoted_after:?} after the slot's primary was \
         killed, store back {:?} after the kill (the killed node restarted at the promotion)",
        back_at.saturating_duration_since(killed_at)
    ));

    let ledger = std::mem::take(&mut *ledger.lock());
    assert!(ledger.unexpected.is_empty(), "{:?}", ledger.unexpected);
    assert!(
        ledger.failures.iter().any(|t| *t >= killed_at),
        "the kill caused no failure at all"
    );
    let now = SystemClock.now();
    let mut lost = 0;
    for key in &ledger.live {
        if store.get(key, now).await.unwrap().is_none() {
            lost += 1;
        }
    }
    for key in &ledger.removed {
        if store.get(key, now).await.unwrap().is_some() {
            lost += 1;
        }
    }
    say(&format!(
        "cluster failover: {} live and {} removed sessions checked",
        ledger.live.len(),
        ledger.removed.len()
    ));
    assert_eq!(lost, 0, "acknowledged writes lost");
}

/// Inserts sessions, and removes every third one it made, until told to stop.
async fn writer(store: Arc<RedisStore>, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let mut mine: Vec<TokenHash> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let now = SystemClock.now();
        let remove = n.is_multiple_of(3) && !mine.is_empty();
        let result = if remove {
            let key = *mine.last().unwrap();
            store.remove(&key, now).await.map(|_| key)
        } else {
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
            store.insert(key, session).await.map(|()| key)
        };
        let done = Instant::now();
        let failed = {
            let mut l = ledger.lock();
            match result {
                Ok(key) if remove => {
                    mine.pop();
                    l.live.retain(|k| *k != key);
                    l.removed.push(key);
                    l.successes.push(done);
                    false
                }
                Ok(key) => {
                    mine.push(key);
                    l.live.push(key);
                    l.successes.push(done);
                    false
                }
                Err(e) => {
                    if !matches!(e, StoreError::Unavailable(_)) {
                        l.unexpected.push(format!("{e:?}"));
                    }
                    if remove {
                        // Its fate is unknown: assert nothing about it.
                        let key = mine.pop().unwrap();
                        l.live.retain(|k| *k != key);
                    }
                    l.failures.push(done);
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
