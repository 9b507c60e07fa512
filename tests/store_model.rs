//! A model-based test of the session stores: random sequences of operations run against a
//! backend and against [`MemoryStore`], the model, and every result must agree.
//!
//! A case is up to 40 steps: `insert`, `get`, `remove` (which cascades from an app session to
//! the on-behalf-of sessions minted with it), `list_user`, `remove_matching` with every kind of
//! selector (user, app, an app's on-behalf-of sessions for one user or all, credential),
//! `remove_by_id`, `purge_expired` and `count`, time moving forward, and concurrent groups.
//! Values come from small pools (three users, three apps, ten tokens, eight session ids, two
//! credentials) so that they collide: duplicate tokens and ids, removals by id in the name of
//! another user, on-behalf-of sessions reached by user, by app and by the app session that
//! minted them (whose id is drawn from the same pool), sessions used after their end. A concurrent group issues two to four operations at once (sometimes one removal several
//! times over); the store's results must be those of some serial order of the group applied to
//! the model, and a group without inserts never ends one session twice. Each case ends by
//! reading every token and user, then purging everything, after which both stores are empty.
//!
//! Sessions are compared by value, lists sorted by session id. A purge is compared exactly
//! (which sessions, how many entries swept): every backend sweeps in the model's order, expiry
//! then token hash, and a purge of fewer than all expired sessions must take the same ones.
//!
//! 64 cases per backend; `PROPTEST_CASES` sets another number. A failure shows proptest's shrunk
//! (minimal) sequence and the store's and the model's answers, and its seed is saved in
//! `tests/store_model.proptest-regressions`, which later runs try first.
//!
//! Redis: the cases use the server named by `SESSIONAUTH_TEST_REDIS_URL` (for example
//! `redis://127.0.0.1:6379/15`), each under a random key prefix of its own whose keys are
//! deleted afterwards. As every Redis test, it is `#[ignore]`d: run it with `--include-ignored`
//! (as `.ci/run` does), where a missing Redis is a failure (see `tests/support/redis.rs`).
//! PostgreSQL likewise: `SESSIONAUTH_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`), a random table prefix per case, its tables
//! dropped afterwards (see `tests/support/postgres.rs`).

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::time::Duration;

mod support;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use sessionauth::clock::Millis;
use sessionauth::directory::{AppId, UserId};
use sessionauth::session::{CredentialId, Fingerprint, Session, SessionId, SessionKind};
use sessionauth::store::{
    Census, EmbeddedStore, MemoryStore, PostgresStore, PostgresUrl, RedisStore, RedisUrl, Selector,
    SessionStore, StoreError, TablePrefix,
};
use sessionauth::token::TokenHash;
use support::postgres::TestPostgres;
use support::redis::TestRedis;

/// Cases per backend unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 64;
/// The most steps in one case (a concurrent group is one step).
const MAX_STEPS: usize = 40;

// The pools values are drawn from: small, so that they collide.
const USERS: [i64; 3] = [1001, 1002, -7];
const APPS: [&str; 3] = ["demo-app", "demo", "odd app\n\u{e9}"];
const TOKENS: u8 = 10;
const CREDENTIALS: u8 = 2;
const IDS: [i64; 8] = [1, 2, 3, 4, 5, 6, 7, i64::MAX];
const LIFETIMES_MS: [u64; 5] = [0, 1, 10, 50, 3_600_000];
const ADVANCES_MS: [u64; 3] = [1, 10, 50];
const LIMITS: [usize; 4] = [1, 2, 3, 1000];
/// When every case starts.
const START: Millis = Millis::from_epoch_millis(1_700_000_000_000);

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// The embedded store (its journal in a temporary folder) answers every sequence of
/// operations, concurrent groups included, as the memory model does.
#[test]
fn embedded_store_agrees_with_the_model() {
    check(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data")).unwrap();
        (Arc::new(store) as Arc<dyn Backend>, dir)
    });
}

/// The Redis store answers every sequence of operations, concurrent groups included, as the
/// memory model does.
#[test]
#[ignore = "needs SESSIONAUTH_TEST_REDIS_URL"]
fn redis_store_agrees_with_the_model() {
    check(|| {
        let redis = TestRedis::new();
        let url = RedisUrl::parse(&redis.url).expect("SESSIONAUTH_TEST_REDIS_URL is a Redis URL");
        let store = RedisStore::open(&url, &redis.prefix).unwrap();
        (Arc::new(store) as Arc<dyn Backend>, redis)
    });
}

/// The PostgreSQL store answers every sequence of operations, concurrent groups included, as
/// the memory model does.
#[test]
#[ignore = "needs SESSIONAUTH_TEST_POSTGRES_URL"]
fn postgres_store_agrees_with_the_model() {
    check(|| {
        let db = TestPostgres::new();
        let url =
            PostgresUrl::parse(&db.url).expect("SESSIONAUTH_TEST_POSTGRES_URL is a PostgreSQL URL");
        let prefix = TablePrefix::parse(&db.prefix).unwrap();
        let store = PostgresStore::open(&url, &prefix).unwrap();
        (Arc::new(store) as Arc<dyn Backend>, db)
    });
}

/// The memory store run concurrently answers as the same store run serially: its operations
/// are atomic.
#[test]
fn memory_store_agrees_with_the_model() {
    check(|| (Arc::new(MemoryStore::new()) as Arc<dyn Backend>, ()));
}

/// On the embedded store, two purges that share a group commit sweep distinct expiry entries:
/// the second sees what the first took (it once swept the same entries again, counting them as
/// stale, and left the next expired session alone). The case runs twenty times, since the two
/// purges share a commit only when they reach the writer together.
#[test]
fn embedded_concurrent_purges_sweep_each_entry_once() {
    let expired = |token, id| {
        Step::Do(Op::Insert {
            token,
            id,
            kind: SessionKind::User { user: UserId(1001) },
            lifetime_ms: 0,
            extras: false,
            credential: None,
            chain: None,
            keep: None,
        })
    };
    let steps = [
        expired(0, 1),
        expired(1, 2),
        Step::Together(vec![Op::Purge { limit: 1 }, Op::Purge { limit: 1 }]),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Backend> =
            Arc::new(EmbeddedStore::open(&dir.path().join("data")).unwrap());
        if let Err(e) = runtime.block_on(run_case(&store, &steps)) {
            panic!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations and their outcomes
// ---------------------------------------------------------------------------------------------

/// A backend under test: the server's trait plus the count the checks read.
trait Backend: SessionStore + Census {}
impl<T: SessionStore + Census> Backend for T {}

/// One step of a case.
#[derive(Debug, Clone)]
enum Step {
    /// One operation, checked against the model on its own.
    Do(Op),
    /// Time moves forward by this many milliseconds.
    Advance(u64),
    /// Operations issued at once; the results must match some serial order of them.
    Together(Vec<Op>),
}

/// One store operation. Tokens are numbers (see [`token_hash`]); the rest are the real values.
#[derive(Debug, Clone)]
enum Op {
    Insert {
        token: u8,
        id: i64,
        kind: SessionKind,
        lifetime_ms: u64,
        /// Whether the session records a client address and user agent.
        extras: bool,
        /// The credential it records, by number.
        credential: Option<u8>,
        /// The intermediate it records, from the same numbers (so that revoking one number
        /// hits leaves and intermediates alike).
        chain: Option<u8>,
        /// The per-owner cap it is stored under, if any.
        keep: Option<usize>,
    },
    Get {
        token: u8,
    },
    Remove {
        token: u8,
    },
    ListUser {
        user: i64,
    },
    RemoveMatching {
        selector: Selector,
    },
    RemoveById {
        user: i64,
        id: i64,
    },
    Purge {
        limit: usize,
    },
    Count,
}

/// What an operation answered, in a form that compares by value.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Inserted,
    Duplicate,
    One(Option<Session>),
    /// What a removal ended: the named session first, then what it cascaded to, in the order the
    /// store found them (compared as a set beyond the first).
    Ended(Vec<Session>),
    /// Sorted by session id.
    Many(Vec<Session>),
    /// `ended` sorted by session id.
    Purged {
        ended: Vec<Session>,
        swept: usize,
    },
    Count(usize),
    /// A capped insert stored the session and ended these (sorted by session id).
    Evicted(Vec<Session>),
    /// Any other store error (the model never fails).
    Failed(String),
}

/// Runs `op` at `now` against `store`.
async fn apply(store: &dyn Backend, op: &Op, now: Millis) -> Outcome {
    let result = match op {
        Op::Insert {
            token,
            id,
            kind,
            lifetime_ms,
            extras,
            credential,
            chain,
            keep,
        } => {
            let session = Session {
                id: SessionId(*id),
                kind: kind.clone(),
                created: now,
                expires: now.saturating_add(Duration::from_millis(*lifetime_ms)),
                client_ip: extras.then(|| std::net::IpAddr::from([127, 0, 0, 1])),
                user_agent: extras.then(|| "store-model \u{e9}".into()),
                credential: credential.map(credential_id),
                chain: chain.map(credential_id).into_iter().collect(),
                fingerprint: credential.map(|c| Fingerprint::certificate(&[c])),
            };
            match keep {
                None => store
                    .insert(token_hash(*token), session)
                    .await
                    .map(|()| Outcome::Inserted),
                Some(keep) => store
                    .insert_capped(token_hash(*token), session, *keep)
                    .await
                    .map(|evicted| {
                        let mut evicted = evicted;
                        evicted.sort_by_key(|s| s.id.0);
                        Outcome::Evicted(evicted)
                    }),
            }
        }
        Op::Get { token } => store.get(&token_hash(*token), now).await.map(Outcome::One),
        Op::Remove { token } => store
            .remove(&token_hash(*token), now)
            .await
            .map(|v| Outcome::Ended(named_first(v))),
        Op::ListUser { user } => store
            .list_user(UserId(*user), now)
            .await
            .map(|v| Outcome::Many(by_id(v))),
        Op::RemoveMatching { selector } => store
            .remove_matching(selector, now)
            .await
            .map(|v| Outcome::Many(by_id(v))),
        Op::RemoveById { user, id } => store
            .remove_by_id(UserId(*user), SessionId(*id), now)
            .await
            .map(Outcome::One),
        Op::Purge { limit } => store
            .purge_expired(now, *limit)
            .await
            .map(|p| Outcome::Purged {
                ended: by_id(p.ended),
                swept: p.swept,
            }),
        Op::Count => store.count().await.map(Outcome::Count),
    };
    result.unwrap_or_else(|e| match e {
        StoreError::Duplicate => Outcome::Duplicate,
        other => Outcome::Failed(other.to_string()),
    })
}

/// The sessions `op` ended, according to its outcome.
fn ended<'a>(op: &Op, outcome: &'a Outcome) -> &'a [Session] {
    match (op, outcome) {
        (Op::RemoveById { .. }, Outcome::One(Some(s))) => std::slice::from_ref(s),
        (Op::Remove { .. }, Outcome::Ended(v))
        | (Op::RemoveMatching { .. }, Outcome::Many(v))
        | (Op::Purge { .. }, Outcome::Purged { ended: v, .. }) => v,
        _ => &[],
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// Runs proptest's cases, each against a fresh store from `fresh` (the store, and what must
/// outlive it: its folder, or its Redis keys' clean-up). Panics with the shrunk case on a
/// failure.
///
/// Opening and closing an embedded store costs a few fsyncs, most of an embedded case's time, so
/// stores are made ahead of use on threads of their own and dropped on another.
fn check<G: Send>(fresh: impl Fn() -> (Arc<dyn Backend>, G) + Sync) {
    const MAKERS: usize = 2;
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        source_file: Some(file!()),
        // `tests/store_model.proptest-regressions`.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        // Each shrinking step reruns a case (with an fsync per write on the embedded store).
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = std::thread::scope(|scope| {
        let (ready, fresh_stores) = mpsc::sync_channel(1);
        for _ in 0..MAKERS {
            let (ready, fresh) = (ready.clone(), &fresh);
            scope.spawn(move || while ready.send(fresh()).is_ok() {});
        }
        drop(ready);
        let (done, used_stores) = mpsc::channel();
        scope.spawn(move || used_stores.into_iter().for_each(drop));
        let result = runner.run(&proptest::collection::vec(step(), 1..=MAX_STEPS), |steps| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (store, keep) = fresh_stores.recv().expect("every store maker failed");
            let verdict = runtime.block_on(run_case(&store, &steps));
            let _ = done.send((store, keep));
            verdict.map_err(TestCaseError::fail)
        });
        // The makers stop at their next store, the dropper once it has dropped every store.
        drop(fresh_stores);
        drop(done);
        result
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Runs `steps` against `store` and the model; the first disagreement is the error.
async fn run_case(store: &Arc<dyn Backend>, steps: &[Step]) -> Result<(), String> {
    let mut run = Run {
        model: MemoryStore::new(),
        history: Vec::new(),
        now: START,
    };
    for (i, step) in steps.iter().enumerate() {
        let at = run.now;
        run.step(store, step)
            .await
            .map_err(|e| format!("step {i} at {at:?}, {step:?}: {e}"))?;
    }
    run.finish(store).await
}

/// The model's state, and what brought it there.
struct Run {
    model: MemoryStore,
    /// Every operation applied to the model, in order, with its time: replayed to copy it.
    history: Vec<(Op, Millis)>,
    now: Millis,
}

impl Run {
    async fn step(&mut self, store: &Arc<dyn Backend>, step: &Step) -> Result<(), String> {
        match step {
            Step::Advance(ms) => {
                self.now = self.now.saturating_add(Duration::from_millis(*ms));
                Ok(())
            }
            Step::Do(op) => self.serial(store, op).await,
            Step::Together(ops) => self.together(store, ops).await,
        }
    }

    /// One operation on each side; the outcomes must be equal.
    async fn serial(&mut self, store: &Arc<dyn Backend>, op: &Op) -> Result<(), String> {
        let expected = apply(&self.model, op, self.now).await;
        let got = apply(store.as_ref(), op, self.now).await;
        self.history.push((op.clone(), self.now));
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "the store answered {got:?}, the model {expected:?}"
            ))
        }
    }

    /// `ops` issued at once to the store (each its own task); some serial order of them on the
    /// model must give the same outcomes, and the model moves on in that order.
    async fn together(&mut self, store: &Arc<dyn Backend>, ops: &[Op]) -> Result<(), String> {
        let now = self.now;
        let tasks: Vec<_> = ops
            .iter()
            .map(|op| {
                let (store, op) = (store.clone(), op.clone());
                tokio::spawn(async move { apply(store.as_ref(), &op, now).await })
            })
            .collect();
        let mut got = Vec::with_capacity(tasks.len());
        for task in tasks {
            got.push(
                task.await
                    .map_err(|e| format!("an operation panicked: {e}"))?,
            );
        }
        // Without inserts no session can come back, so none may be ended twice (of concurrent
        // removals of one session, exactly one wins).
        if !ops.iter().any(|op| matches!(op, Op::Insert { .. })) {
            let mut seen = HashSet::new();
            for (op, outcome) in ops.iter().zip(&got) {
                for s in ended(op, outcome) {
                    if !seen.insert(s.id) {
                        return Err(format!("session {:?} was ended twice: {got:?}", s.id));
                    }
                }
            }
        }
        let mut issued_order = None;
        for order in permutations(ops.len()) {
            let (model, expected) = self.fork_with(ops, &order).await;
            if expected == got {
                self.model = model;
                self.history
                    .extend(order.iter().map(|&i| (ops[i].clone(), now)));
                return Ok(());
            }
            issued_order.get_or_insert(expected);
        }
        Err(format!(
            "no serial order of the group explains the store's answers {got:?}; in the order \
             issued the model answers {issued_order:?}"
        ))
    }

    /// A copy of the model with `ops` applied in `order`, and their outcomes (in `ops`' order).
    async fn fork_with(&self, ops: &[Op], order: &[usize]) -> (MemoryStore, Vec<Outcome>) {
        let model = MemoryStore::new();
        for (op, at) in &self.history {
            apply(&model, op, *at).await;
        }
        let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
        for &i in order {
            outcomes[i] = Some(apply(&model, &ops[i], self.now).await);
        }
        (model, outcomes.into_iter().map(Option::unwrap).collect())
    }

    /// Reads every token and user and the count; then, past every session's end, purges
    /// everything and checks that both stores are empty.
    async fn finish(&mut self, store: &Arc<dyn Backend>) -> Result<(), String> {
        let mut checks: Vec<Op> = (0..TOKENS).map(|token| Op::Get { token }).collect();
        checks.extend(USERS.map(|user| Op::ListUser { user }));
        checks.push(Op::Count);
        for op in &checks {
            self.serial(store, op)
                .await
                .map_err(|e| format!("final check at {:?}, {op:?}: {e}", self.now))?;
        }
        let longest = LIFETIMES_MS.iter().max().copied().unwrap_or(0);
        self.now = self.now.saturating_add(Duration::from_millis(longest));
        for op in [Op::Purge { limit: 1000 }, Op::Count] {
            self.serial(store, &op)
                .await
                .map_err(|e| format!("final purge at {:?}, {op:?}: {e}", self.now))?;
        }
        match apply(&self.model, &Op::Count, self.now).await {
            Outcome::Count(0) => Ok(()),
            other => Err(format!("the final purge left {other:?} in both stores")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => op().prop_map(Step::Do),
        2 => select(ADVANCES_MS.to_vec()).prop_map(Step::Advance),
        2 => proptest::collection::vec(prop_oneof![2 => op(), 1 => removal()], 2..=4)
            .prop_map(Step::Together),
        // One removal, several times at once: exactly one may win.
        1 => (removal(), 2..=4usize)
            .prop_map(|(op, n)| vec![op; n])
            .prop_map(Step::Together),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            token(),
            id(),
            kind(),
            select(LIFETIMES_MS.to_vec()),
            any::<bool>(),
            proptest::option::of(0..CREDENTIALS),
            proptest::option::of(0..CREDENTIALS),
            proptest::option::of(1usize..3),
        )
            .prop_map(
            |(token, id, kind, lifetime_ms, extras, credential, chain, keep)| Op::Insert {
                token,
                id,
                kind,
                lifetime_ms,
                extras,
                credential,
                chain,
                keep,
            }
        ),
        2 => token().prop_map(|token| Op::Get { token }),
        1 => user().prop_map(|user| Op::ListUser { user }),
        1 => Just(Op::Count),
        4 => removal(),
    ]
}

fn removal() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => token().prop_map(|token| Op::Remove { token }),
        2 => (user(), id()).prop_map(|(user, id)| Op::RemoveById { user, id }),
        2 => selector().prop_map(|selector| Op::RemoveMatching { selector }),
        1 => select(LIMITS.to_vec()).prop_map(|limit| Op::Purge { limit }),
    ]
}

fn kind() -> impl Strategy<Value = SessionKind> {
    let app = || select(APPS.to_vec()).prop_map(AppId::new);
    let user = || user().prop_map(UserId);
    prop_oneof![
        user().prop_map(|user| SessionKind::User { user }),
        user().prop_map(|user| SessionKind::KeyManager { user }),
        app().prop_map(|app| SessionKind::App { app }),
        (app(), user(), id()).prop_map(|(app, user, parent)| SessionKind::OnBehalfOf {
            app,
            user,
            parent: SessionId(parent),
        }),
    ]
}

fn selector() -> impl Strategy<Value = Selector> {
    let app = || select(APPS.to_vec()).prop_map(AppId::new);
    prop_oneof![
        user().prop_map(|u| Selector::User(UserId(u))),
        app().prop_map(Selector::App),
        (app(), proptest::option::of(user())).prop_map(|(app, user)| Selector::OnBehalfOf {
            app,
            user: user.map(UserId),
        }),
        (0..CREDENTIALS).prop_map(|c| Selector::Credential(credential_id(c))),
    ]
}

/// Credential number `n`.
fn credential_id(n: u8) -> CredentialId {
    CredentialId::certificate(b"model issuer", &[n + 1])
}

fn token() -> impl Strategy<Value = u8> {
    0..TOKENS
}

fn id() -> impl Strategy<Value = i64> {
    select(IDS.to_vec())
}

fn user() -> impl Strategy<Value = i64> {
    select(USERS.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Token number `n`'s hash. The first byte is spread out, so that the order of the hashes (by
/// which the purge breaks ties) is not the order of the numbers.
fn token_hash(n: u8) -> TokenHash {
    let mut bytes = [n; 32];
    bytes[0] = n.wrapping_mul(0x9d) ^ 0x5a;
    TokenHash::from_bytes(bytes)
}

/// The named session first, the cascaded ones after it sorted by session id.
fn named_first(mut sessions: Vec<Session>) -> Vec<Session> {
    if let Some(rest) = sessions.get_mut(1..) {
        rest.sort_by_key(|s| s.id.0);
    }
    sessions
}

fn by_id(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by_key(|s| s.id.0);
    sessions
}

/// Every order of `0..n`, the identity first.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for k in 0..n {
        out = out
            .into_iter()
            .flat_map(|p: Vec<usize>| {
                (0..=p.len()).rev().map(move |at| {
                    let mut q = p.clone();
                    q.insert(at, k);
                    q
                })
            })
            .collect();
    }
    out
}
