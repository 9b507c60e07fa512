//! The session store: one trait, several backends.
//!
//! The session lifecycle ([`crate::session`]) talks to `dyn SessionStore` only, so a backend
//! can be swapped by configuration. Every backend keys sessions by [`TokenHash`] (never the
//! token), treats a session past its expiry as absent, and makes every removal atomic: of two
//! concurrent removals of one session, exactly one gets it back, and removing an app session
//! removes the on-behalf-of sessions minted with it in the same step. The conformance suite in
//! `tests/store_conformance.rs` runs against each backend; `docs/stores.md` compares them.
//!
//! | backend | file | durability |
//! |---|---|---|
//! | [`MemoryStore`] | `memory.rs` | none: gone at exit |
//! | [`EmbeddedStore`] (the default) | `embedded/` | sessions in memory, every change appended to a journal and fsynced before it is acknowledged, with periodic snapshots |
//! | [`RedisStore`] | `redis/` | shared by every node; as durable as the Redis server is configured; behind Sentinel, every write waits for a replica |
//! | [`PostgresStore`] | `postgres/` | shared by every node; every change committed before it is acknowledged |

pub mod embedded;
mod memory;
mod metered;
pub mod postgres;
pub mod redis;
mod table;

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
pub use postgres::{PostgresStore, PostgresUrl, TablePrefix};
pub use redis::{RedisStore, RedisUrl, ReplicaWait};

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::StoreConfig;
use crate::directory::{AppId, UserId};
use crate::session::{CredentialId, Session, SessionId, SessionKind};
use crate::token::TokenHash;

/// A store failure: the session's fate is unknown, so callers answer 503 and never succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or refused the operation.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A key collision on insert: the token (or session id) already exists.
    #[error("a session with this token already exists")]
    Duplicate,
    /// An on-behalf-of session's app session has ended (a logout that raced the mint won):
    /// nothing was stored.
    #[error("the app session this session would be minted with has ended")]
    ParentEnded,
    /// The backend reported an error; the detail is in the source.
    #[error("session store failure ({backend})")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said. Shared, so that one failed group commit can answer every waiter.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a configured store could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened (or created).
    #[error("cannot open the session database {path}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What the database said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process (or another open store in this one) has the database open.
    #[error(
        "the session database {path} is locked: another sessionauth has it open; stop that one, \
         or give this one a data directory of its own (--data-dir)"
    )]
    Locked {
        /// The database folder.
        path: PathBuf,
    },
    /// The embedded store's folder holds the fjall database of an earlier release, which this
    /// one does not read.
    #[error(
        "the session database {path} is in the layout of an earlier release (a fjall database), \
         which this release does not read; stop sessionauth, move that folder away (or delete \
         it) and start again: sessions are short-lived, and an empty store only makes every \
         client authenticate again"
    )]
    OldLayout {
        /// The folder.
        path: PathBuf,
    },
    /// The database file was written by an incompatible version.
    #[error("the session database {path} has layout version {found}; this build reads {expected}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build writes.
        expected: u32,
    },
    /// The Redis client could not be set up (the URL is not shown: it may hold a password).
    #[error("cannot set up the Redis client")]
    Redis(#[source] ::redis::RedisError),
    /// The PostgreSQL connection pool could not be set up (the URL is not shown).
    #[error("cannot set up the PostgreSQL connection pool")]
    Postgres(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Opens the configured backend. The embedded store opens its database here (and fails here
/// when it cannot); the Redis and PostgreSQL stores only set up their client and connect on
/// first use, so a database that is down does not hold up start-up.
pub(crate) fn open(config: &StoreConfig) -> Result<Arc<dyn SessionStore>, OpenError> {
    let backend: Arc<dyn SessionStore> = match config {
        StoreConfig::Memory => Arc::new(MemoryStore::new()),
        StoreConfig::Embedded { data_dir } => {
            let store = EmbeddedStore::open(data_dir)?;
            tracing::info!(file = %store.path().display(), "session store: embedded");
            Arc::new(store)
        }
        StoreConfig::Redis { url, prefix, wait } => {
            let replicas = wait.map_or(0, |w| w.replicas());
            tracing::info!(%url, %prefix, wait_replicas = replicas, "session store: redis (connects on first use)");
            Arc::new(RedisStore::open_with(url, prefix, *wait)?)
        }
        StoreConfig::Postgres { url, prefix } => {
            tracing::info!(%url, %prefix, "session store: postgres (connects on first use)");
            Arc::new(PostgresStore::open(url, prefix)?)
        }
    };
    Ok(Arc::new(metered::Metered(backend)))
}

/// Where sessions live.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session. When this returns `Ok`, the session is as durable as the backend
    /// promises. An on-behalf-of session is stored only while the app session that mints it is
    /// still stored, checked in the same atomic step ([`StoreError::ParentEnded`] otherwise), so
    /// that a logout racing the mint cannot leave it behind.
    async fn insert(&self, key: TokenHash, session: Session) -> Result<(), StoreError> {
        self.insert_capped(key, session, usize::MAX)
            .await
            .map(|_| ())
    }

    /// Stores a new session as [`SessionStore::insert`] does and, in the same atomic step, ends
    /// the oldest sessions of its [`Owner`] beyond the newest `keep` (oldest by creation time,
    /// then by token hash; an app session evicted takes the live on-behalf-of sessions it
    /// minted along). Returns what it ended: each evicted session followed by its cascade. An
    /// evicted session may have expired already, when the purge has not swept it yet: the
    /// caller records that one as expired.
    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError>;

    /// The live session for this key, or `None` when there is none or it expired by `now`.
    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError>;

    /// Ends one live session and, when it is an app session, every live on-behalf-of session
    /// minted with it, in one atomic step. Returns them, the named session first; empty when it
    /// was absent or already expired. An expired session is left in place for
    /// [`SessionStore::purge_expired`], which records its end as an expiry: every session ends
    /// exactly once, and is recorded once.
    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError>;

    /// The live sessions that act as `user`: its own, its key-manager tokens, and on-behalf-of
    /// sessions apps hold for it.
    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError>;

    /// Ends every live session `selector` names and, for each app session among them, every
    /// live on-behalf-of session minted with it, in one atomic step; returns them. Expired ones
    /// are left for the purge.
    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError>;

    /// Ends the live session with public id `id` when it acts as `user`; returns it. (Sessions
    /// that act as a user are never app sessions, so nothing cascades.)
    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError>;

    /// Sweeps at most `limit` entries of the expiry index up to `now`: drops the sessions they
    /// name and returns them, so that the caller can record each end, together with how many
    /// entries were swept (a stale entry without its session counts too). A sweep of fewer than
    /// `limit` entries means none are left for now. Each call is short, so a caller that loops
    /// over batches never holds up requests for long.
    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError>;

    /// The small record the server keeps beside the sessions under `name` (the directory it
    /// last applied, say), or `None` when there is none. Backends whose sessions do not outlive
    /// the process keep this default: they have nothing to remember.
    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = name;
        Ok(None)
    }

    /// Replaces the record `name`, as durably as the sessions are kept.
    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let _ = (name, value);
        Ok(())
    }

    /// Completes, with what failed, when the backend can no longer write in this process and
    /// only a restart can bring it back: the embedded store after a failed commit (a full disk,
    /// an I/O error), after which its engine refuses every write. The server then stops and
    /// exits non-zero, for its supervisor to restart it once the cause is fixed. Backends that
    /// recover by themselves (a network store reconnects) keep this default, which never
    /// completes.
    async fn failed(&self) -> String {
        std::future::pending().await
    }

    /// Whether the store answers and takes a write now, for the readiness probe
    /// (`GET /health/ready`): cheap enough to run every second, and failing when requests that
    /// write would fail. Backends that cannot fail keep this default.
    async fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many sessions the store holds, per kind, for the `sessionauth_sessions_live` gauge.
    /// Cheap: read from counts the backend keeps as it writes (or, for PostgreSQL, one
    /// aggregate query), never a scan of the sessions, so the server can ask every few
    /// seconds. Counts what is stored: a session that has expired counts until the purge
    /// removes it (PostgreSQL's query counts only live ones).
    async fn live_by_kind(&self, now: Millis) -> Result<KindCounts, StoreError>;

    /// Finishes what is queued and releases the backend (the embedded store lets its engine's
    /// flushes finish and closes its files); later calls fail with `Unavailable`. The server
    /// awaits it at shutdown. Backends with nothing to release keep this default.
    async fn close(&self) {}
}

/// Sessions per kind, as [`SessionStore::live_by_kind`] counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// A service user's own sessions.
    pub session: u64,
    /// Key-manager tokens.
    pub key_manager: u64,
    /// Apps' own sessions.
    pub app: u64,
    /// On-behalf-of sessions.
    pub obo: u64,
}

impl KindCounts {
    /// Adds `n` to the kind of one-letter tag `tag` (`u`, `k`, `a`, `o`, the tags the backends
    /// store); other tags are ignored.
    pub fn add(&mut self, tag: u8, n: u64) {
        match tag {
            b'u' => self.session += n,
            b'k' => self.key_manager += n,
            b'a' => self.app += n,
            b'o' => self.obo += n,
            _ => {}
        }
    }

    /// Takes `n` from the kind of tag `tag`, never below zero.
    pub fn sub(&mut self, tag: u8, n: u64) {
        let slot = match tag {
            b'u' => &mut self.session,
            b'k' => &mut self.key_manager,
            b'a' => &mut self.app,
            b'o' => &mut self.obo,
            _ => return,
        };
        *slot = slot.saturating_sub(n);
    }

    /// The one-letter tag of a session kind.
    pub fn tag_of(kind: &crate::session::SessionKind) -> u8 {
        use crate::session::SessionKind;
        match kind {
            SessionKind::User { .. } => b'u',
            SessionKind::KeyManager { .. } => b'k',
            SessionKind::App { .. } => b'a',
            SessionKind::OnBehalfOf { .. } => b'o',
        }
    }

    /// Each kind with its label (the labels of `sessionauth_sessions_created_total`).
    pub fn labelled(&self) -> [(&'static str, u64); 4] {
        [
            ("session", self.session),
            ("key_manager", self.key_manager),
            ("app", self.app),
            ("obo", self.obo),
        ]
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.session + self.key_manager + self.app + self.obo
    }
}

/// Whose a session is, for the per-principal cap: a user's own sessions, its key-manager
/// tokens, an app's own sessions, and an app's on-behalf-of sessions for one user are each
/// counted apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A service user's own sessions.
    User(UserId),
    /// A user's key-manager tokens.
    KeyManager(UserId),
    /// An app's own sessions.
    App(AppId),
    /// The sessions an app holds on behalf of one user.
    OnBehalfOf(AppId, UserId),
}

impl Owner {
    /// The owner of a session of `kind`.
    pub fn of(kind: &SessionKind) -> Self {
        match kind {
            SessionKind::User { user } => Self::User(*user),
            SessionKind::KeyManager { user } => Self::KeyManager(*user),
            SessionKind::App { app } => Self::App(app.clone()),
            SessionKind::OnBehalfOf { app, user, .. } => Self::OnBehalfOf(app.clone(), *user),
        }
    }
}

/// A set of sessions named by whose they are, or what they were minted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every session that acts as the user: its own, its key-manager tokens, and the
    /// on-behalf-of sessions apps hold for it.
    User(UserId),
    /// Every session the app holds: its own app sessions and the on-behalf-of sessions it
    /// minted.
    App(AppId),
    /// The on-behalf-of sessions the app minted: for one user, or for every user (`None`).
    OnBehalfOf {
        /// The app.
        app: AppId,
        /// The user, or every user.
        user: Option<UserId>,
    },
    /// The sessions minted with this credential (a certificate or an RSA key).
    Credential(CredentialId),
}

impl Selector {
    /// Whether `session` is one the selector names (not counting cascades).
    pub fn matches(&self, session: &Session) -> bool {
        match self {
            Self::User(user) => session.kind.user() == Some(*user),
            Self::App(app) => session.kind.app() == Some(app),
            Self::OnBehalfOf { app, user } => match &session.kind {
                SessionKind::OnBehalfOf {
                    app: a, user: u, ..
                } => a == app && user.is_none_or(|user| user == *u),
                _ => false,
            },
            Self::Credential(id) => session.credential_ids().any(|c| c == id),
        }
    }
}

/// What one purge step did: see [`SessionStore::purge_expired`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The sessions that ended by expiry in this step.
    pub ended: Vec<Session>,
    /// How many expiry-index entries the step swept, ended sessions and stale entries alike.
    pub swept: usize,
}

impl Purged {
    /// Whether the sweep stopped short of its limit, so that nothing is left to purge for now.
    pub fn is_last(&self, limit: usize) -> bool {
        self.swept < limit
    }
}

/// How many sessions a backend holds (live or not yet purged): for tests and benchmarks, which
/// check that nothing is left behind. Not part of [`SessionStore`], which the server uses.
#[async_trait]
pub trait Census {
    /// The number of stored sessions.
    async fn count(&self) -> Result<usize, StoreError>;
}
