//! One suite of session-store behaviour, run against every backend: memory, embedded (a journal
//! database in a temporary folder), Redis, Redis behind Sentinel, Redis Cluster and PostgreSQL.
//!
//! The Redis cases use the test Redis (`SESSIONAUTH_TEST_REDIS_URL`, see `support`), the
//! PostgreSQL cases the test database (`SESSIONAUTH_TEST_POSTGRES_URL`), the Sentinel cases a
//! set of Redis servers and Sentinels the test starts itself, the Cluster cases a six-node
//! cluster it starts itself (`redis-server` and `redis-cli` on the `PATH`):
//! they are ignored unless the ignored tests are included, and then fail without their server. Each case writes under
//! its own random key or table prefix and deletes what it wrote afterwards.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sessionauth::clock::{Clock, Millis, SystemClock};
use sessionauth::directory::{AppId, UserId};
use sessionauth::session::{CredentialId, Fingerprint, Session, SessionId, SessionKind};
use sessionauth::store::{
    Census, EmbeddedStore, KindCounts, MemoryStore, PostgresStore, PostgresUrl, RedisStore,
    RedisUrl, ReplicaWait, Selector, SessionStore, StoreError, TablePrefix,
};

use sessionauth::token::{SessionToken, TokenHash};
use support::postgres::TestPostgres;
use support::redis::TestRedis;
use support::redis_cluster::RedisCluster;
use support::sentinel::SentinelSet;

/// A backend under test: the server's trait plus the count the checks read.
trait Backend: SessionStore + Census {}
impl<T: SessionStore + Census> Backend for T {}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

/// A stored session reads back as stored; an unknown key reads as absent; count sees it.
async fn insert_then_get(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (key, s) = new_session(user(1001), now, HOUR);
    store.insert(key, s.clone()).await.unwrap();
    assert_eq!(store.get(&key, now).await.unwrap(), Some(s));
    assert_eq!(store.get(&token(), now).await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 1);
}

/// A second insert under the same token, or with the same public id, is refused and changes
/// nothing.
async fn duplicate_insert_is_refused(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (key, s) = new_session(user(1001), now, HOUR);
    store.insert(key, s.clone()).await.unwrap();
    let (_, other) = new_session(user(1003), now, HOUR);
    let same_key = store.insert(key, other.clone()).await;
    assert!(
        matches!(same_key, Err(StoreError::Duplicate)),
        "{same_key:?}"
    );
    let same_id = Session { id: s.id, ..other };
    let same_id = store.insert(token(), same_id).await;
    assert!(matches!(same_id, Err(StoreError::Duplicate)), "{same_id:?}");
    assert_eq!(store.get(&key, now).await.unwrap(), Some(s));
    assert_eq!(store.count().await.unwrap(), 1);
}

/// A session past its end reads as absent; the purge removes exactly the expired ones, in
/// batches of the size asked for, and returns them.
async fn expiry_and_purge(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (short_key, short) = new_session(user(1001), now, Duration::from_secs(1));
    let (long_key, long) = new_session(user(1001), now, HOUR);
    store.insert(short_key, short.clone()).await.unwrap();
    store.insert(long_key, long.clone()).await.unwrap();
    let later = now.saturating_add(Duration::from_secs(2));
    assert_eq!(
        store.get(&short_key, now).await.unwrap(),
        Some(short.clone())
    );
    assert_eq!(store.get(&short_key, later).await.unwrap(), None);
    // The end itself counts as expired.
    assert_eq!(store.get(&short_key, short.expires).await.unwrap(), None);
    assert_eq!(
        store.get(&long_key, later).await.unwrap(),
        Some(long.clone())
    );

    assert!(store.purge_expired(now, 10).await.unwrap().ended.is_empty());
    let purged = store.purge_expired(later, 10).await.unwrap().ended;
    assert_eq!(purged, vec![short]);
    assert_eq!(store.count().await.unwrap(), 1);
    assert!(store
        .purge_expired(later, 10)
        .await
        .unwrap()
        .ended
        .is_empty());

    for _ in 0..5 {
        let (k, s) = new_session(user(1003), now, Duration::from_secs(1));
        store.insert(k, s).await.unwrap();
    }
    let sizes = [
        store.purge_expired(later, 2).await.unwrap().ended.len(),
        store.purge_expired(later, 2).await.unwrap().ended.len(),
        store.purge_expired(later, 2).await.unwrap().ended.len(),
    ];
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.get(&long_key, later).await.unwrap(), Some(long));
}

/// The per-kind counts follow inserts, removals, the cascade, the cap's evictions and the
/// purge, and refused inserts leave them as they were.
async fn live_by_kind_follows_every_write(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let counts = |session, key_manager, app, obo| KindCounts {
        session,
        key_manager,
        app,
        obo,
    };
    assert_eq!(store.live_by_kind(now).await.unwrap(), counts(0, 0, 0, 0));
    let mut users = Vec::new();
    for _ in 0..2 {
        let (k, s) = new_session(user(1001), now, HOUR);
        store.insert(k, s.clone()).await.unwrap();
        users.push((k, s));
    }
    // A duplicate is refused and not counted.
    assert!(store.insert(users[0].0, users[0].1.clone()).await.is_err());
    let (km_key, km) = new_session(
        SessionKind::KeyManager {
            user: user_id(1001),
        },
        now,
        HOUR,
    );
    store.insert(km_key, km).await.unwrap();
    let (app_key, app_session) = new_session(app("demo-app"), now, HOUR);
    store.insert(app_key, app_session.clone()).await.unwrap();
    for uid in [2001, 2002] {
        let (k, s) = new_session(obo_of("demo-app", uid, app_session.id), now, HOUR);
        store.insert(k, s).await.unwrap();
    }
    assert_eq!(store.live_by_kind(now).await.unwrap(), counts(2, 1, 1, 2));

    assert_eq!(store.remove(&app_key, now).await.unwrap().len(), 3);
    assert_eq!(store.live_by_kind(now).await.unwrap(), counts(2, 1, 0, 0));
    assert_eq!(store.remove(&users[0].0, now).await.unwrap().len(), 1);
    assert_eq!(store.live_by_kind(now).await.unwrap(), counts(1, 1, 0, 0));

    // The cap evicts one of the user's sessions for the new one: still one.
    let (k, s) = new_session(user(1001), now, HOUR);
    assert_eq!(store.insert_capped(k, s, 1).await.unwrap().len(), 1);
    assert_eq!(store.live_by_kind(now).await.unwrap(), counts(1, 1, 0, 0));

    // Purged sessions leave the counts.
    for _ in 0..3 {
        let (k, s) = new_session(user(1003), now, Duration::from_secs(1));
        store.insert(k, s).await.unwrap();
    }
    let later = now.saturating_add(Duration::from_secs(2));
    assert_eq!(store.purge_expired(later, 10).await.unwrap().ended.len(), 3);
    assert_eq!(store.live_by_kind(later).await.unwrap(), counts(1, 1, 0, 0));
}

/// A session is removed once: the second removal finds nothing, and so does a read.
async fn remove_once(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (key, s) = new_session(user(1001), now, HOUR);
    store.insert(key, s.clone()).await.unwrap();
    assert_eq!(store.remove(&key, now).await.unwrap(), vec![s]);
    assert_eq!(store.remove(&key, now).await.unwrap(), vec![]);
    assert_eq!(store.get(&key, now).await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 0);
    // An expired session is not ended by a removal (the caller answers 401): it is left for the
    // purge, which records its end as an expiry, so that every end is recorded exactly once.
    let (key, s) = new_session(user(1001), now, Duration::from_secs(1));
    store.insert(key, s.clone()).await.unwrap();
    let later = now.saturating_add(Duration::from_secs(2));
    assert_eq!(store.remove(&key, later).await.unwrap(), vec![]);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.purge_expired(later, 10).await.unwrap().ended, vec![s]);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// Of many concurrent removals of one session, exactly one gets it.
async fn concurrent_removes_have_one_winner(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    for _ in 0..5 {
        let (key, s) = new_session(user(1001), now, HOUR);
        store.insert(key, s).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.remove(&key, now).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            if !t.await.unwrap().is_empty() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }
    assert_eq!(store.count().await.unwrap(), 0);
}

/// A user's sessions are its own, its key-manager tokens and the on-behalf-of sessions apps
/// hold for it; nothing else, and nothing expired.
async fn list_user_lists_what_acts_as_the_user(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let mine = fixture(&store, now).await;
    let listed = ids(&store.list_user(user_id(1001), now).await.unwrap());
    assert_eq!(listed, ids(&mine.user_1001));
    assert!(store
        .list_user(user_id(9999), now)
        .await
        .unwrap()
        .is_empty());
    let later = now.saturating_add(Duration::from_secs(2 * 3600));
    assert!(store
        .list_user(user_id(1001), later)
        .await
        .unwrap()
        .is_empty());
}

/// Ending a user's sessions ends exactly the ones listed for it, and returns them.
async fn remove_user_ends_exactly_the_users_sessions(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let f = fixture(&store, now).await;
    let ended = store
        .remove_matching(&Selector::User(user_id(1001)), now)
        .await
        .unwrap();
    assert_eq!(ids(&ended), ids(&f.user_1001));
    for (key, _) in &f.keyed_1001 {
        assert_eq!(store.get(key, now).await.unwrap(), None);
    }
    for (key, s) in &f.others {
        assert_eq!(store.get(key, now).await.unwrap().as_ref(), Some(s));
    }
    assert!(store
        .remove_matching(&Selector::User(user_id(1001)), now)
        .await
        .unwrap()
        .is_empty());
    // The fixture's two expired sessions acting as user 1001 were left for the purge.
    assert_eq!(store.purge_expired(now, 10).await.unwrap().ended.len(), 2);
}

/// A session is ended by its public id only for the user it acts as; a wrong user, an unknown
/// id or an expired session is `None` and changes nothing.
async fn remove_by_id_checks_the_user(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (key, s) = new_session(user(1001), now, HOUR);
    store.insert(key, s.clone()).await.unwrap();
    assert_eq!(
        store.remove_by_id(user_id(1003), s.id, now).await.unwrap(),
        None
    );
    assert_eq!(store.get(&key, now).await.unwrap(), Some(s.clone()));
    assert_eq!(
        store
            .remove_by_id(user_id(1001), SessionId(42), now)
            .await
            .unwrap(),
        None
    );
    let later = now.saturating_add(Duration::from_secs(2 * 3600));
    assert_eq!(
        store
            .remove_by_id(user_id(1001), s.id, later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.remove_by_id(user_id(1001), s.id, now).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(store.get(&key, now).await.unwrap(), None);
    assert_eq!(
        store.remove_by_id(user_id(1001), s.id, now).await.unwrap(),
        None
    );
    // An app's own session acts as no user: no user can end it by id.
    let (key, app_session) = new_session(app("demo-app"), now, HOUR);
    store.insert(key, app_session.clone()).await.unwrap();
    assert_eq!(
        store
            .remove_by_id(user_id(1001), app_session.id, now)
            .await
            .unwrap(),
        None
    );
}

/// Ending an app's sessions ends its app sessions and every on-behalf-of session it minted,
/// and nothing of other apps or of bots.
async fn remove_app_ends_the_apps_and_its_obo_sessions(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let f = fixture(&store, now).await;
    let ended = store
        .remove_matching(&Selector::App(AppId::new("demo-app")), now)
        .await
        .unwrap();
    assert_eq!(ids(&ended), ids(&f.demo_app));
    for s in &f.demo_app {
        assert!(
            matches!(&s.kind, SessionKind::App { app } | SessionKind::OnBehalfOf { app, .. } if app.as_str() == "demo-app")
        );
    }
    let remaining: Vec<Session> = f
        .all()
        .into_iter()
        .filter(|s| !ids(&f.demo_app).contains(&s.id.0))
        .collect();
    // The expired sessions (user 1001's, and demo-app's on-behalf-of one) are still held: the
    // purge ends and records them.
    assert_eq!(store.count().await.unwrap(), remaining.len() + 2);
    assert!(store
        .remove_matching(&Selector::App(AppId::new("demo-app")), now)
        .await
        .unwrap()
        .is_empty());
    let other = store
        .remove_matching(&Selector::App(AppId::new("other-app")), now)
        .await
        .unwrap();
    assert_eq!(other.len(), 2);
}

/// Ending an app session ends, in the same step, every live on-behalf-of session minted with
/// it, and nothing else: not those minted with another session of the same app, not the
/// app's other sessions. Ending an on-behalf-of session ends only that one.
async fn removing_an_app_session_cascades_to_what_it_minted(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (app_key, app_session) = new_session(app("demo-app"), now, HOUR);
    let (other_key, other_app_session) = new_session(app("demo-app"), now, HOUR);
    store.insert(app_key, app_session.clone()).await.unwrap();
    store
        .insert(other_key, other_app_session.clone())
        .await
        .unwrap();
    let mut minted = Vec::new();
    for uid in [1001, 2001, 2001] {
        let (k, s) = new_session(obo_of("demo-app", uid, app_session.id), now, HOUR);
        store.insert(k, s.clone()).await.unwrap();
        minted.push((k, s));
    }
    let (sibling_key, sibling) =
        new_session(obo_of("demo-app", 1001, other_app_session.id), now, HOUR);
    store.insert(sibling_key, sibling.clone()).await.unwrap();
    // An expired one minted with it is left for the purge.
    let (dead_key, dead) = new_session(
        obo_of("demo-app", 1001, app_session.id),
        now,
        Duration::ZERO,
    );
    store.insert(dead_key, dead).await.unwrap();

    // Ending one on-behalf-of session ends only it.
    let (one_key, one) = minted.pop().unwrap();
    assert_eq!(store.remove(&one_key, now).await.unwrap(), vec![one]);
    assert!(store.get(&app_key, now).await.unwrap().is_some());

    let ended = store.remove(&app_key, now).await.unwrap();
    assert_eq!(ended[0], app_session, "the named session comes first");
    let mut expected = vec![app_session.id.0];
    expected.extend(minted.iter().map(|(_, s)| s.id.0));
    assert_eq!(ids(&ended), expected.into_iter().collect());
    for (k, _) in &minted {
        assert_eq!(store.get(k, now).await.unwrap(), None);
    }
    assert_eq!(store.get(&sibling_key, now).await.unwrap(), Some(sibling));
    assert_eq!(
        store.get(&other_key, now).await.unwrap(),
        Some(other_app_session)
    );
}

/// An on-behalf-of session is not stored once its app session has ended (a logout that raced
/// the mint), nor for an app session that never existed.
async fn no_obo_session_outlives_its_app_session(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (app_key, app_session) = new_session(app("demo-app"), now, HOUR);
    store.insert(app_key, app_session.clone()).await.unwrap();
    let (k, s) = new_session(obo_of("demo-app", 1001, app_session.id), now, HOUR);
    store.insert(k, s).await.unwrap();
    assert_eq!(store.remove(&app_key, now).await.unwrap().len(), 2);
    let (late_key, late) = new_session(obo_of("demo-app", 1001, app_session.id), now, HOUR);
    assert!(matches!(
        store.insert(late_key, late).await,
        Err(StoreError::ParentEnded)
    ));
    assert_eq!(store.get(&late_key, now).await.unwrap(), None);
    let (k, s) = new_session(obo_of("demo-app", 1001, SessionId(424_242)), now, HOUR);
    assert!(matches!(
        store.insert(k, s).await,
        Err(StoreError::ParentEnded)
    ));
    assert_eq!(store.count().await.unwrap(), 0);
}

/// An app session that a selector ends takes what it minted along (ending by credential, by
/// app); the on-behalf-of selectors end exactly the app's sessions for one user or for all,
/// never the app's own sessions.
async fn selectors_end_what_they_name_and_cascade(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let cert = CredentialId::certificate(b"issuer", &[7]);
    let (app_key, mut app_session) = new_session(app("demo-app"), now, HOUR);
    app_session.credential = Some(cert);
    store.insert(app_key, app_session.clone()).await.unwrap();
    let intermediate = CredentialId::certificate(b"root", &[2]);
    let (bot_key, mut bot) = new_session(user(1003), now, HOUR);
    bot.credential = Some(CredentialId::certificate(b"issuer", &[8]));
    bot.chain = vec![intermediate].into();
    bot.fingerprint = Some(Fingerprint::certificate(b"bot certificate"));
    store.insert(bot_key, bot.clone()).await.unwrap();
    let mut obo = Vec::new();
    for uid in [1001, 2001] {
        let (k, s) = new_session(obo_of("demo-app", uid, app_session.id), now, HOUR);
        store.insert(k, s.clone()).await.unwrap();
        obo.push((k, s));
    }

    // One user's on-behalf-of sessions of demo-app.
    let ended = store
        .remove_matching(
            &Selector::OnBehalfOf {
                app: AppId::new("demo-app"),
                user: Some(user_id(1001)),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(ended, vec![obo[0].1.clone()]);
    assert!(store.get(&obo[1].0, now).await.unwrap().is_some());
    assert!(store.get(&app_key, now).await.unwrap().is_some());

    // Revoking the app's certificate ends its session and, by cascade, the rest it minted.
    let ended = store
        .remove_matching(&Selector::Credential(cert), now)
        .await
        .unwrap();
    assert_eq!(ids(&ended), ids(&[app_session, obo[1].1.clone()]));
    assert_eq!(store.get(&bot_key, now).await.unwrap(), Some(bot.clone()));

    // Revoking an intermediate the bot's certificate was presented with ends the bot's session,
    // and its every index entry goes with it.
    let ended = store
        .remove_matching(&Selector::Credential(intermediate), now)
        .await
        .unwrap();
    assert_eq!(ended, vec![bot.clone()]);
    assert!(store.get(&bot_key, now).await.unwrap().is_none());
    assert!(store
        .remove_matching(&Selector::Credential(intermediate), now)
        .await
        .unwrap()
        .is_empty());

    // Every on-behalf-of session of an app, and none of its own sessions.
    let (app_key, app_session) = new_session(app("demo-app"), now, HOUR);
    store.insert(app_key, app_session.clone()).await.unwrap();
    let (k, s) = new_session(obo_of("demo-app", 2001, app_session.id), now, HOUR);
    store.insert(k, s.clone()).await.unwrap();
    let ended = store
        .remove_matching(
            &Selector::OnBehalfOf {
                app: AppId::new("demo-app"),
                user: None,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(ended, vec![s]);
    assert_eq!(store.get(&app_key, now).await.unwrap(), Some(app_session));
    assert!(store
        .remove_matching(
            &Selector::Credential(CredentialId::certificate(b"x", &[1])),
            now
        )
        .await
        .unwrap()
        .is_empty());
}

/// Many tasks inserting at once all succeed, and every session reads back.
async fn concurrent_inserts_all_land(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut keys = Vec::new();
                for _ in 0..25 {
                    let (key, s) = new_session(user(1001), now, HOUR);
                    store.insert(key, s).await.unwrap();
                    keys.push(key);
                }
                keys
            })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.extend(t.await.unwrap());
    }
    assert_eq!(store.count().await.unwrap(), 32 * 25);
    for key in &keys {
        assert!(store.get(key, now).await.unwrap().is_some());
    }
    assert_eq!(
        store.list_user(user_id(1001), now).await.unwrap().len(),
        32 * 25
    );
}

/// Purges issued at once take turns, as one after another would: each sweeps the oldest (by
/// expiry, then token hash) of what the one before it left, so together they end every expired
/// session exactly once, in batches that follow one another. (PostgreSQL's once skipped the
/// rows another had locked and split a batch between two of them.) Twenty rounds, since the
/// purges overlap only when they reach the store together.
async fn concurrent_purges_take_turns(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let later = now.saturating_add(Duration::from_secs(1));
    for _ in 0..20 {
        let mut expired = Vec::new();
        for i in 0..60u64 {
            // Ten expiries, six sessions each: the ties are ordered by token hash.
            let (key, s) = new_session(user(1001), now, Duration::from_millis(1 + i % 10));
            store.insert(key, s.clone()).await.unwrap();
            expired.push((s.expires, *key.as_bytes(), s.id.0));
        }
        expired.sort();
        let batches: BTreeSet<BTreeSet<i64>> = expired
            .chunks(25)
            .map(|chunk| chunk.iter().map(|&(_, _, id)| id).collect())
            .collect();
        let purges = [(); 3].map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.purge_expired(later, 25).await.unwrap() })
        });
        let mut swept = BTreeSet::new();
        for purge in purges {
            swept.insert(purge.await.unwrap().ended.iter().map(|s| s.id.0).collect());
        }
        assert_eq!(swept, batches);
        assert_eq!(store.count().await.unwrap(), 0);
    }
}

/// The readiness probe succeeds on a working store, concurrently too, and leaves no session
/// behind; the store serves as before.
async fn probe_succeeds_and_stores_no_session(store: Arc<dyn Backend>) {
    store.probe().await.unwrap();
    let (a, b) = tokio::join!(store.probe(), store.probe());
    a.unwrap();
    b.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
    let now = SystemClock.now();
    let (key, s) = new_session(user(1001), now, HOUR);
    store.insert(key, s).await.unwrap();
    store.probe().await.unwrap();
    assert!(store.get(&key, now).await.unwrap().is_some());
    assert_eq!(store.count().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// The backends
// ---------------------------------------------------------------------------------------------

/// Runs every case against one backend, each case on a fresh store.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(std::sync::Arc::new(super::MemoryStore::new())).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::EmbeddedStore::open(&dir.path().join("data")).unwrap();
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs SESSIONAUTH_TEST_REDIS_URL"]
                async fn $case() {
                    let redis = super::TestRedis::new();
                    let url = super::RedisUrl::parse(&redis.url)
                        .expect("SESSIONAUTH_TEST_REDIS_URL is not a Redis URL");
                    let store = super::RedisStore::open(&url, &redis.prefix).unwrap();
                    super::$case(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod sentinel {
            /// Every case in turn on one set of Redis servers and Sentinels that the test
            /// starts (`support::sentinel`), each case under its own key prefix, every write
            /// waiting for a replica (the Sentinel default).
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs redis-server (the test starts its own servers and Sentinels)"]
            async fn every_case() {
                let set = super::SentinelSet::start().await;
                let url = super::RedisUrl::parse(&set.url()).unwrap();
                assert!(url.is_sentinel());
                $(
                    let prefix = concat!(stringify!($case), ":");
                    let store = super::RedisStore::open_with(&url, prefix, super::slow_wait())
                        .unwrap();
                    super::$case(std::sync::Arc::new(store)).await;
                )*
            }
        }
        mod cluster {
            /// Every case in turn on one six-node Redis Cluster that the test starts
            /// (`support::redis_cluster`), each case under its own key prefix (made a hash tag,
            /// so that its keys share a slot), every write waiting for the slot's replica
            /// (`slow_wait`).
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs redis-server and redis-cli (the test starts its own cluster)"]
            async fn every_case() {
                let cluster = super::RedisCluster::start().await;
                let url = super::RedisUrl::parse(&cluster.url()).unwrap();
                assert!(url.is_cluster());
                $(
                    let prefix = concat!(stringify!($case), ":");
                    let store = super::RedisStore::open_with(&url, prefix, super::slow_wait())
                        .unwrap();
                    super::$case(std::sync::Arc::new(store)).await;
                )*
            }
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs SESSIONAUTH_TEST_POSTGRES_URL"]
                async fn $case() {
                    let db = super::TestPostgres::new();
                    super::$case(std::sync::Arc::new(super::postgres_store(&db))).await;
                }
            )*
        }
    };
}

/// The replica wait of the Sentinel and Cluster cases: one replica, as by default, but within
/// 5 s rather than 500 ms, so that a machine busy with the rest of the suite does not turn a
/// slow acknowledgement into a failed case (the cases are about behaviour, not speed).
fn slow_wait() -> Option<ReplicaWait> {
    ReplicaWait::new(1, Duration::from_secs(5))
}

/// A PostgreSQL store on the test database, under the test's table prefix.
fn postgres_store(db: &TestPostgres) -> PostgresStore {
    let url =
        PostgresUrl::parse(&db.url).expect("SESSIONAUTH_TEST_POSTGRES_URL is a PostgreSQL URL");
    let prefix = TablePrefix::parse(&db.prefix).unwrap();
    PostgresStore::open(&url, &prefix).unwrap()
}

conformance!(
    insert_then_get,
    duplicate_insert_is_refused,
    expiry_and_purge,
    remove_once,
    concurrent_removes_have_one_winner,
    list_user_lists_what_acts_as_the_user,
    remove_user_ends_exactly_the_users_sessions,
    remove_by_id_checks_the_user,
    remove_app_ends_the_apps_and_its_obo_sessions,
    removing_an_app_session_cascades_to_what_it_minted,
    selectors_end_what_they_name_and_cascade,
    no_obo_session_outlives_its_app_session,
    concurrent_inserts_all_land,
    concurrent_purges_take_turns,
    cap_evicts_the_oldest_of_the_same_owner,
    cap_evicts_an_app_session_with_what_it_minted,
    probe_succeeds_and_stores_no_session,
    live_by_kind_follows_every_write,
);

/// The embedded store's probe fails once the store is closed (its writer gone), as writes do.
#[tokio::test]
async fn embedded_probe_fails_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
    store.probe().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.probe().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The embedded store keeps sessions (and removals) and the server's notes across a close and
/// reopen; a note rewritten reads back as its last value.
#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = SystemClock.now();
    let (kept_key, kept) = new_session(user(1001), now, HOUR);
    let (gone_key, gone) = new_session(user(1001), now, HOUR);
    {
        let store = EmbeddedStore::open(&data).unwrap();
        store.insert(kept_key, kept.clone()).await.unwrap();
        store.insert(gone_key, gone).await.unwrap();
        assert!(!store.remove(&gone_key, now).await.unwrap().is_empty());
        assert_eq!(store.read_note("applied-directory").await.unwrap(), None);
        store
            .write_note("applied-directory", b"one".to_vec())
            .await
            .unwrap();
        store
            .write_note("applied-directory", b"two".to_vec())
            .await
            .unwrap();
        store.close().await;
    }
    let store = EmbeddedStore::open(&data).unwrap();
    assert_eq!(
        store
            .read_note("applied-directory")
            .await
            .unwrap()
            .as_deref(),
        Some(b"two".as_slice())
    );
    assert_eq!(store.get(&kept_key, now).await.unwrap(), Some(kept));
    assert_eq!(store.get(&gone_key, now).await.unwrap(), None);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.list_user(user_id(1001), now).await.unwrap().len(), 1);
}

/// A second process (or store) cannot open a data directory that is in use.
#[test]
fn embedded_store_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = EmbeddedStore::open(&data).unwrap();
    let second = EmbeddedStore::open(&data).unwrap_err().to_string();
    assert!(second.contains("sessions.db"), "{second}");
}

/// Past the cap, an insert ends the owner's oldest sessions (never the new one, even when they
/// share its creation time) and returns them; other owners (the same user's key-manager tokens,
/// another user) are not touched; an oldest session already expired is evicted and returned too.
async fn cap_evicts_the_oldest_of_the_same_owner(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let at = |ms: u64| now.saturating_add(Duration::from_millis(ms));
    let mut made = Vec::new();
    for i in 0..3 {
        let (k, mut s) = new_session(user(1001), at(i), HOUR);
        s.created = at(i);
        assert!(store
            .insert_capped(k, s.clone(), 3)
            .await
            .unwrap()
            .is_empty());
        made.push((k, s));
    }
    let (km_key, km) = new_session(
        SessionKind::KeyManager {
            user: user_id(1001),
        },
        now,
        HOUR,
    );
    store.insert_capped(km_key, km.clone(), 1).await.unwrap();
    let (other_key, other) = new_session(user(1003), now, HOUR);
    store
        .insert_capped(other_key, other.clone(), 1)
        .await
        .unwrap();

    let (k4, mut s4) = new_session(user(1001), at(10), HOUR);
    s4.created = at(10);
    let evicted = store.insert_capped(k4, s4.clone(), 2).await.unwrap();
    assert_eq!(ids(&evicted), ids(&[made[0].1.clone(), made[1].1.clone()]));
    assert_eq!(store.get(&made[0].0, at(10)).await.unwrap(), None);
    assert_eq!(store.get(&made[1].0, at(10)).await.unwrap(), None);
    assert!(store.get(&made[2].0, at(10)).await.unwrap().is_some());
    assert!(store.get(&k4, at(10)).await.unwrap().is_some());
    assert_eq!(store.get(&km_key, at(10)).await.unwrap(), Some(km));
    assert_eq!(store.get(&other_key, at(10)).await.unwrap(), Some(other));

    // Two sessions made in the same millisecond: the cap of one keeps the new one.
    let (a_key, mut a) = new_session(user(2001), now, HOUR);
    a.created = at(20);
    store.insert(a_key, a.clone()).await.unwrap();
    let (b_key, mut b) = new_session(user(2001), now, HOUR);
    b.created = at(20);
    let evicted = store.insert_capped(b_key, b.clone(), 1).await.unwrap();
    assert_eq!(evicted, vec![a]);
    assert!(store.get(&b_key, at(20)).await.unwrap().is_some());

    // An oldest session past its end (not yet purged) goes the same way.
    let (old_key, mut old) = new_session(user(2002), now, Duration::from_millis(5));
    old.created = at(0);
    store.insert(old_key, old.clone()).await.unwrap();
    let (new_key, mut new) = new_session(user(2002), now, HOUR);
    new.created = at(30);
    let evicted = store.insert_capped(new_key, new, 1).await.unwrap();
    assert_eq!(evicted, vec![old]);
    assert_eq!(
        store
            .remove_matching(&Selector::User(user_id(2002)), at(30))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// An app session evicted by the cap takes the live on-behalf-of sessions it minted along.
async fn cap_evicts_an_app_session_with_what_it_minted(store: Arc<dyn Backend>) {
    let now = SystemClock.now();
    let (first_key, mut first) = new_session(app("demo-app"), now, HOUR);
    first.created = now;
    store.insert(first_key, first.clone()).await.unwrap();
    let (obo_key, obo) = new_session(obo_of("demo-app", 2001, first.id), now, HOUR);
    store.insert(obo_key, obo.clone()).await.unwrap();
    let (second_key, mut second) = new_session(app("demo-app"), now, HOUR);
    second.created = now.saturating_add(Duration::from_millis(1));
    let evicted = store.insert_capped(second_key, second, 1).await.unwrap();
    assert_eq!(evicted.first(), Some(&first));
    assert_eq!(ids(&evicted), ids(&[first, obo]));
    assert_eq!(store.get(&obo_key, now).await.unwrap(), None);
    assert!(store.get(&second_key, now).await.unwrap().is_some());
    assert_eq!(store.count().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const HOUR: Duration = Duration::from_secs(3600);

fn token() -> TokenHash {
    SessionToken::generate().unwrap().hash()
}

fn user_id(id: i64) -> UserId {
    UserId(id)
}

fn user(id: i64) -> SessionKind {
    SessionKind::User { user: UserId(id) }
}

fn app(id: &str) -> SessionKind {
    SessionKind::App {
        app: AppId::new(id),
    }
}

fn obo_of(app: &str, user: i64, parent: SessionId) -> SessionKind {
    SessionKind::OnBehalfOf {
        app: AppId::new(app),
        user: UserId(user),
        parent,
    }
}

fn new_session(kind: SessionKind, now: Millis, lifetime: Duration) -> (TokenHash, Session) {
    let s = Session {
        id: SessionId::generate().unwrap(),
        kind,
        created: now,
        expires: now.saturating_add(lifetime),
        client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        user_agent: Some("store-conformance".into()),
        credential: None,
        chain: Box::default(),
        fingerprint: None,
    };
    (token(), s)
}

fn ids(sessions: &[Session]) -> BTreeSet<i64> {
    sessions.iter().map(|s| s.id.0).collect()
}

/// Sessions of several kinds, users and apps, all live for an hour.
struct Fixture {
    /// What acts as user 1001: a session, a key-manager token, OBO by demo-app and other-app.
    user_1001: Vec<Session>,
    keyed_1001: Vec<(TokenHash, Session)>,
    /// demo-app's app session and the OBO sessions it minted (for 1001 and 2001).
    demo_app: Vec<Session>,
    /// Everything not acting as user 1001.
    others: Vec<(TokenHash, Session)>,
}

impl Fixture {
    fn all(&self) -> Vec<Session> {
        let mut all: Vec<Session> = self.keyed_1001.iter().map(|(_, s)| s.clone()).collect();
        all.extend(self.others.iter().map(|(_, s)| s.clone()));
        all
    }
}

async fn fixture(store: &Arc<dyn Backend>, now: Millis) -> Fixture {
    let mut f = Fixture {
        user_1001: Vec::new(),
        keyed_1001: Vec::new(),
        demo_app: Vec::new(),
        others: Vec::new(),
    };
    // The app sessions first: an on-behalf-of session is stored only with its app session.
    let mut app_session = std::collections::HashMap::new();
    for kind in [user(1003), app("demo-app"), app("other-app")] {
        let (k, s) = new_session(kind, now, HOUR);
        store.insert(k, s.clone()).await.unwrap();
        if let Some(a) = s.kind.app() {
            app_session.insert(a.as_str().to_owned(), s.id);
        }
        f.others.push((k, s));
    }
    let obo = |a: &str, u: i64| obo_of(a, u, app_session[a]);
    let kinds_1001 = [
        user(1001),
        SessionKind::KeyManager { user: UserId(1001) },
        obo("demo-app", 1001),
        obo("other-app", 1001),
    ];
    for kind in kinds_1001 {
        let (k, s) = new_session(kind, now, HOUR);
        store.insert(k, s.clone()).await.unwrap();
        f.user_1001.push(s.clone());
        f.keyed_1001.push((k, s));
    }
    let (k, s) = new_session(obo("demo-app", 2001), now, HOUR);
    store.insert(k, s.clone()).await.unwrap();
    f.others.push((k, s));
    // One expired session of user 1001 and of demo-app: never listed, never returned.
    for kind in [user(1001), obo("demo-app", 1001)] {
        let (k, s) = new_session(kind, now.saturating_add(Duration::ZERO), Duration::ZERO);
        store.insert(k, s).await.unwrap();
    }
    f.demo_app = f
        .all()
        .into_iter()
        .filter(|s| s.kind.app().is_some_and(|a| a.as_str() == "demo-app"))
        .collect();
    f
}
