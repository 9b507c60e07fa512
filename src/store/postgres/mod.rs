//! The PostgreSQL backend: sessions shared by every node that names the same database, for
//! teams whose database of record is PostgreSQL.
//!
//! # Tables (under the configured prefix `P`, `sessionauth_` by default)
//!
//! | table | what |
//! |---|---|
//! | `P meta` | `key`, `value`: the schema version (`schema_version` = [`SCHEMA_VERSION`]) |
//! | `P sessions` | one row per session: `token` (the token hash, `bytea`, primary key), `id` (the public session id, unique), `kind` (`u`, `k`, `a`, `o`), `owner` (the per-principal cap's owner tag, `<kind>:<user id>:<app id>`), `user_id`, `app_id`, `parent` (an on-behalf-of session's app session id), `credentials` (`bytea[]`: the credential and chain ids revocation looks up), `created` and `expires` (epoch ms), `record` (the session as JSON, as the other networked backends write it) |
//! | `P notes` | `name`, `value`: the records the server keeps beside the sessions (`applied-directory`) |
//!
//! Indexes: owner with creation time (the cap), user, app, parent (cascades), expiry with token
//! (the purge), and a GIN index on `credentials` (revocation).
//!
//! The tables are created on first use with `CREATE TABLE IF NOT EXISTS` (under an advisory
//! lock, so nodes starting together do not race each other), and a database that holds another
//! schema version is refused.
//!
//! # Guarantees
//!
//! Sessions expire in SQL: every read asks `expires > now`, and the purge deletes the rows
//! with `expires <= now`, oldest first, a bounded batch per call. An insert is one statement,
//! refused as [`StoreError::Duplicate`] by the unique token and id; an on-behalf-of insert
//! locks its app session's row (`FOR KEY SHARE`) in the same statement, and inserts nothing when
//! that row is gone ([`StoreError::ParentEnded`]). A removal deletes with `RETURNING` (of two
//! nodes ending one session at the same moment, PostgreSQL's row lock lets exactly one get
//! the row back), then, in the same transaction but a later statement, the live on-behalf-of
//! sessions of every app session it ended: that later statement sees every on-behalf-of
//! session whose insert had locked the app session, because the delete waited for it. The
//! per-principal cap takes a transaction-scoped advisory lock on the owner, so concurrent
//! mints for one owner count each other; the purge takes one of its own, so that purges (on
//! every node) take turns. Every acknowledged change is committed, so it is as
//! durable as the server's `synchronous_commit`.
//!
//! # Failures
//!
//! Connections come from a `deadpool-postgres` pool, made on first use and re-made after a
//! failure: start-up never waits for PostgreSQL. Every operation is bounded by [`OP_TIMEOUT`];
//! while the database is unreachable calls fail with [`StoreError::Unavailable`] (503), never
//! with a success, and succeed again once it is back, without a restart. A transaction that
//! PostgreSQL aborts for a deadlock (a revocation ending many sessions while a mint past the cap
//! evicts some of them, say) or a serialization failure is rolled back whole and tried once
//! more; a second abort answers 503.
//!
//! TLS to PostgreSQL is not supported yet: URLs with `sslmode=require` are refused when the
//! configuration is read (see [`PostgresUrl`]).

mod url;

pub use url::{InvalidPostgresUrl, PostgresUrl};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{Census, KindCounts, OpenError, Owner, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::{AppId, UserId};
use crate::session::{Session, SessionId, SessionKind};
use crate::token::TokenHash;

/// The longest a store operation may take before it fails with 503.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most connections one node holds open.
pub const POOL_SIZE: usize = 16;
/// The schema this build reads and writes.
pub const SCHEMA_VERSION: &str = "1";
/// The default table prefix.
pub const DEFAULT_TABLE_PREFIX: &str = "sessionauth_";
/// The longest table prefix: PostgreSQL names are at most 63 bytes, and the longest name made
/// from the prefix adds 21.
pub const MAX_TABLE_PREFIX: usize = 40;

/// A table prefix: lowercase ASCII letters, digits and `_`, starting with a letter or `_`, at
/// most [`MAX_TABLE_PREFIX`] bytes. It is pasted into SQL text, so nothing else can be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrefix(String);

/// A text that cannot be a table prefix.
#[derive(Debug, thiserror::Error)]
#[error(
    "postgres_table_prefix must be 1 to {MAX_TABLE_PREFIX} characters of a-z, 0-9 and _, \
     not starting with a digit"
)]
pub struct InvalidTablePrefix;

impl TablePrefix {
    /// Accepts `[a-z_][a-z0-9_]*`, at most [`MAX_TABLE_PREFIX`] bytes.
    pub fn parse(text: &str) -> Result<Self, InvalidTablePrefix> {
        let mut chars = text.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && text.len() <= MAX_TABLE_PREFIX {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidTablePrefix)
        }
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TablePrefix {
    fn default() -> Self {
        Self(DEFAULT_TABLE_PREFIX.to_owned())
    }
}

impl std::fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sessions in PostgreSQL; see the module documentation for what is guaranteed.
pub struct PostgresStore {
    pool: Pool,
    prefix: TablePrefix,
    sql: Sql,
    /// Set once the tables exist (or were found) in the expected version.
    schema: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Sets up the pool for `url`, with tables named from `prefix`. Does not connect: the first
    /// operation connects and creates the tables, so a database that is down at start-up delays
    /// nothing (requests answer 503 until it is reachable).
    pub fn open(url: &PostgresUrl, prefix: &TablePrefix) -> Result<Self, OpenError> {
        let mut config = url.config();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sessionauth");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(OP_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_millis(500)))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| OpenError::Postgres(Box::new(e)))?;
        Ok(Self {
            pool,
            sql: Sql::new(prefix),
            prefix: prefix.clone(),
            schema: tokio::sync::OnceCell::new(),
        })
    }

    /// A pooled connection, the tables made on first use.
    async fn client(&self) -> Result<Object, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        self.schema
            .get_or_try_init(|| create_schema(&client, &self.sql))
            .await?;
        Ok(client)
    }

    /// Runs `op` on a pooled connection, bounded by [`OP_TIMEOUT`] (connecting included). An
    /// operation PostgreSQL aborted for a deadlock or a serialization failure (rolled back
    /// whole) is tried once more.
    async fn bounded<'a, T, F>(&'a self, op: impl Fn(Object) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>> + 'a,
    {
        let run = async {
            let mut retried = false;
            loop {
                let client = self.client().await?;
                match op(client).await {
                    Err(e) if !retried && is_conflict(&e) => retried = true,
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {}s",
                OP_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The rows one statement returns, on a fresh pooled connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.bounded(|client| async move {
            let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
            client.query(&statement, params).await.map_err(pg_error)
        })
        .await
    }

    /// In one transaction: runs `first` (a `DELETE … RETURNING id, kind, record`), then ends
    /// the live on-behalf-of sessions of every app session it removed. Returns each removed
    /// session followed by what it minted.
    async fn remove_with_cascade(
        &self,
        first: &str,
        params: &[&(dyn ToSql + Sync)],
        now: i64,
    ) -> Result<Vec<Session>, StoreError> {
        self.bounded(|mut client| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            let statement = tx.prepare_cached(first).await.map_err(pg_error)?;
            let removed = tx.query(&statement, params).await.map_err(pg_error)?;
            let removed = removed_rows(&removed)?;
            let out = cascade(&tx, &self.sql, removed, now).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let record = serde_json::to_string(&session).map_err(|e| backend(Arc::new(e)))?;
        let row = InsertRow::new(&key, &session, record);
        let now = millis(session.created);
        if keep == usize::MAX {
            let row = &row;
            return self
                .bounded(|client| async move {
                    let statement = client
                        .prepare_cached(&self.sql.insert)
                        .await
                        .map_err(pg_error)?;
                    let inserted = client
                        .execute(&statement, &row.params())
                        .await
                        .map_err(pg_error)?;
                    if inserted == 1 {
                        Ok(Vec::new())
                    } else {
                        Err(refusal(&**client, &self.sql, row).await)
                    }
                })
                .await;
        }
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        let lock_key = format!("{}{}", self.prefix, row.owner);
        let (row, lock_key) = (&row, &lock_key);
        self.bounded(|mut client| async move {
            let tx = client.transaction().await.map_err(pg_error)?;
            let lock = tx.prepare_cached(&self.sql.lock).await.map_err(pg_error)?;
            tx.execute(&lock, &[lock_key]).await.map_err(pg_error)?;
            let insert = tx
                .prepare_cached(&self.sql.insert)
                .await
                .map_err(pg_error)?;
            if tx.execute(&insert, &row.params()).await.map_err(pg_error)? != 1 {
                return Err(refusal(&*tx, &self.sql, row).await);
            }
            let evict = tx.prepare_cached(&self.sql.evict).await.map_err(pg_error)?;
            let evicted = tx
                .query(&evict, &[&row.owner, &row.token, &keep])
                .await
                .map_err(pg_error)?;
            let out = cascade(&tx, &self.sql, removed_rows(&evicted)?, now).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(out)
        })
        .await
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let token = key.as_bytes().as_slice();
        let rows = self.query(&self.sql.get, &[&token, &millis(now)]).await?;
        rows.first().map(record).transpose()
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        let token = key.as_bytes().as_slice();
        let now = millis(now);
        self.remove_with_cascade(&self.sql.remove, &[&token, &now], now)
            .await
    }

    async fn live_by_kind(&self, now: Millis) -> Result<KindCounts, StoreError> {
        let rows = self.query(&self.sql.live_by_kind, &[&millis(now)]).await?;
        let mut counts = KindCounts::default();
        for row in &rows {
            let kind: &str = row.try_get(0).map_err(pg_error)?;
            let n: i64 = row.try_get(1).map_err(pg_error)?;
            counts.add(
                kind.as_bytes().first().copied().unwrap_or(0),
                u64::try_from(n).unwrap_or(0),
            );
        }
        Ok(counts)
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let rows = self
            .query(&self.sql.list_user, &[&user.0, &millis(now)])
            .await?;
        rows.iter().map(record).collect()
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let now = millis(now);
        match selector {
            Selector::User(user) => {
                self.remove_with_cascade(&self.sql.remove_user, &[&now, &user.0], now)
                    .await
            }
            Selector::App(app) => {
                self.remove_with_cascade(&self.sql.remove_app, &[&now, &app.as_str()], now)
                    .await
            }
            Selector::OnBehalfOf { app, user } => {
                let user = user.map(|u| u.0);
                self.remove_with_cascade(&self.sql.remove_obo, &[&now, &app.as_str(), &user], now)
                    .await
            }
            Selector::Credential(id) => {
                let id = id.as_bytes().as_slice();
                self.remove_with_cascade(&self.sql.remove_credential, &[&now, &id], now)
                    .await
            }
        }
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let rows = self
            .query(&self.sql.remove_by_id, &[&id.0, &user.0, &millis(now)])
            .await?;
        rows.first().map(record).transpose()
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Purges take turns, on every node (a transaction-scoped advisory lock no owner tag can
        // share: those start with a kind and `:`), so that each sweeps the oldest of what the
        // one before it left, as one purge after another would; without the turn, two at once
        // each skipped the rows the other had locked and split one batch between them.
        let lock_key = format!("{}purge", self.prefix);
        let (now, lock_key) = (millis(now), &lock_key);
        let rows = self
            .bounded(|mut client| async move {
                let tx = client.transaction().await.map_err(pg_error)?;
                let lock = tx.prepare_cached(&self.sql.lock).await.map_err(pg_error)?;
                tx.execute(&lock, &[lock_key]).await.map_err(pg_error)?;
                let purge = tx.prepare_cached(&self.sql.purge).await.map_err(pg_error)?;
                let rows = tx.query(&purge, &[&now, &limit]).await.map_err(pg_error)?;
                tx.commit().await.map_err(pg_error)?;
                Ok(rows)
            })
            .await?;
        let mut ended: Vec<Session> = rows.iter().map(record).collect::<Result<_, _>>()?;
        // Oldest first, as the other backends sweep.
        ended.sort_by_key(|s| s.expires);
        Ok(Purged {
            swept: ended.len(),
            ended,
        })
    }

    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.query(&self.sql.read_note, &[&name]).await?;
        rows.first()
            .map(|row| row.try_get::<_, Vec<u8>>(0).map_err(pg_error))
            .transpose()
    }

    /// A write of the probe note: fails when the database is unreachable or refuses writes.
    async fn probe(&self) -> Result<(), StoreError> {
        self.write_note("probe", Vec::new()).await
    }

    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.query(&self.sql.write_note, &[&name, &value])
            .await
            .map(drop)
    }

    async fn close(&self) {
        self.pool.close();
    }
}

#[async_trait]
impl Census for PostgresStore {
    async fn count(&self) -> Result<usize, StoreError> {
        let rows = self.query(&self.sql.count, &[]).await?;
        let n: i64 = rows
            .first()
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(pg_error)?
            .unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// The SQL text of every statement, with the table names pasted in from the validated prefix.
struct Sql {
    schema: String,
    version: String,
    insert: String,
    taken: String,
    lock: String,
    evict: String,
    cascade: String,
    get: String,
    remove: String,
    list_user: String,
    remove_user: String,
    remove_app: String,
    remove_obo: String,
    remove_credential: String,
    remove_by_id: String,
    purge: String,
    count: String,
    live_by_kind: String,
    read_note: String,
    write_note: String,
}

impl Sql {
    fn new(prefix: &TablePrefix) -> Self {
        let p = prefix.as_str();
        let s = format!("{p}sessions");
        let removing = |condition: &str| {
            format!("DELETE FROM {s} WHERE {condition} AND expires > $1 RETURNING id, kind, record")
        };
        Self {
            schema: format!(
                "SELECT pg_advisory_xact_lock(hashtextextended('sessionauth schema {p}', 0));
                 CREATE TABLE IF NOT EXISTS {p}meta (key text PRIMARY KEY, value text NOT NULL);
                 INSERT INTO {p}meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
                     ON CONFLICT (key) DO NOTHING;
                 CREATE TABLE IF NOT EXISTS {s} (
                     token bytea PRIMARY KEY,
                     id bigint NOT NULL UNIQUE,
                     kind text NOT NULL,
                     owner text NOT NULL,
                     user_id bigint,
                     app_id text,
                     parent bigint,
                     credentials bytea[] NOT NULL,
                     created bigint NOT NULL,
                     expires bigint NOT NULL,
                     record text NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS {s}_owner ON {s} (owner, created, token);
                 CREATE INDEX IF NOT EXISTS {s}_user ON {s} (user_id) WHERE user_id IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS {s}_app ON {s} (app_id) WHERE app_id IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS {s}_parent ON {s} (parent) WHERE parent IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS {s}_expires ON {s} (expires, token);
                 CREATE INDEX IF NOT EXISTS {s}_credentials ON {s} USING gin (credentials);
                 CREATE TABLE IF NOT EXISTS {p}notes (name text PRIMARY KEY, value bytea NOT NULL);"
            ),
            version: format!("SELECT value FROM {p}meta WHERE key = 'schema_version'"),
            // An on-behalf-of session only while its app session's row is there, locked
            // against a concurrent delete until this statement commits.
            insert: format!(
                "INSERT INTO {s} (token, id, kind, owner, user_id, app_id, parent, credentials,
                                  created, expires, record)
                 SELECT $1::bytea, $2::bigint, $3::text, $4::text, $5::bigint, $6::text,
                        $7::bigint, $8::bytea[], $9::bigint, $10::bigint, $11::text
                 WHERE $7::bigint IS NULL
                    OR EXISTS (SELECT 1 FROM {s} WHERE id = $7::bigint FOR KEY SHARE)"
            ),
            taken: format!("SELECT 1 FROM {s} WHERE token = $1 OR id = $2 LIMIT 1"),
            lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".to_owned(),
            // The owner's oldest beyond the newest `keep`, never the session just stored
            // (another may share its creation time). Expired ones count and go too.
            evict: format!(
                "DELETE FROM {s} WHERE token IN (
                     SELECT token FROM {s} WHERE owner = $1 AND token <> $2
                     ORDER BY created, token
                     LIMIT greatest((SELECT count(*) FROM {s} WHERE owner = $1) - $3::bigint, 0)
                 ) RETURNING id, kind, record"
            ),
            cascade: format!(
                "DELETE FROM {s} WHERE parent = ANY($1) AND expires > $2 RETURNING parent, record"
            ),
            get: format!("SELECT record FROM {s} WHERE token = $1 AND expires > $2"),
            remove: format!(
                "DELETE FROM {s} WHERE token = $1 AND expires > $2 RETURNING id, kind, record"
            ),
            list_user: format!("SELECT record FROM {s} WHERE user_id = $1 AND expires > $2"),
            remove_user: removing("user_id = $2"),
            remove_app: removing("app_id = $2"),
            remove_obo: removing(
                "app_id = $2 AND kind = 'o' AND ($3::bigint IS NULL OR user_id = $3::bigint)",
            ),
            remove_credential: removing("credentials @> ARRAY[$2::bytea]"),
            remove_by_id: format!(
                "DELETE FROM {s} WHERE id = $1 AND user_id = $2 AND expires > $3 RETURNING record"
            ),
            // Run under the purge's advisory lock, so purges take turns. Rows a removal or an
            // eviction has locked are skipped (that one ends them); an insert's lock on its app
            // session (KEY SHARE) does not hide that one.
            purge: format!(
                "DELETE FROM {s} WHERE token IN (
                     SELECT token FROM {s} WHERE expires <= $1 ORDER BY expires, token LIMIT $2
                     FOR NO KEY UPDATE SKIP LOCKED
                 ) RETURNING record"
            ),
            count: format!("SELECT count(*) FROM {s}"),
            live_by_kind: format!(
                "SELECT kind, count(*) FROM {s} WHERE expires > $1 GROUP BY kind"
            ),
            read_note: format!("SELECT value FROM {p}notes WHERE name = $1"),
            write_note: format!(
                "INSERT INTO {p}notes (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
            ),
        }
    }
}

/// Creates the tables when they are missing, and checks the schema version.
async fn create_schema(client: &Object, sql: &Sql) -> Result<(), StoreError> {
    // One simple query: PostgreSQL runs its statements in one implicit transaction, and the
    // advisory lock first keeps nodes that start together from racing on `CREATE`.
    client.batch_execute(&sql.schema).await.map_err(pg_error)?;
    let rows = client.query(&sql.version, &[]).await.map_err(pg_error)?;
    let found: Option<String> = rows
        .first()
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(pg_error)?;
    match found.as_deref() {
        Some(SCHEMA_VERSION) => Ok(()),
        other => Err(backend(Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the session tables have schema version {}; this build reads {SCHEMA_VERSION}",
                other.unwrap_or("(none)")
            ),
        )))),
    }
}

/// Why an on-behalf-of insert stored nothing: its token or id is taken (checked first, as
/// every backend does), or else its app session is gone.
async fn refusal(
    client: &impl tokio_postgres::GenericClient,
    sql: &Sql,
    row: &InsertRow<'_>,
) -> StoreError {
    match client.query(&sql.taken, &[&row.token, &row.id]).await {
        Ok(rows) if rows.is_empty() => StoreError::ParentEnded,
        Ok(_) => StoreError::Duplicate,
        Err(e) => pg_error(e),
    }
}

/// One session's row, borrowed for the insert's parameters.
struct InsertRow<'a> {
    token: &'a [u8],
    id: i64,
    kind: &'static str,
    owner: String,
    user: Option<i64>,
    app: Option<&'a str>,
    parent: Option<i64>,
    credentials: Vec<&'a [u8]>,
    created: i64,
    expires: i64,
    record: String,
}

impl<'a> InsertRow<'a> {
    fn new(key: &'a TokenHash, session: &'a Session, record: String) -> Self {
        Self {
            token: key.as_bytes().as_slice(),
            id: session.id.0,
            kind: kind_tag(&session.kind),
            owner: owner_tag(&session.kind),
            user: session.kind.user().map(|u| u.0),
            app: session.kind.app().map(AppId::as_str),
            parent: session.kind.parent().map(|p| p.0),
            credentials: session
                .credential_ids()
                .map(|c| c.as_bytes().as_slice())
                .collect(),
            created: millis(session.created),
            expires: millis(session.expires),
            record,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.token,
            &self.id,
            &self.kind,
            &self.owner,
            &self.user,
            &self.app,
            &self.parent,
            &self.credentials,
            &self.created,
            &self.expires,
            &self.record,
        ]
    }
}

/// A session removed by a `… RETURNING id, kind, record`.
struct Removed {
    id: i64,
    is_app: bool,
    session: Session,
}

fn removed_rows(rows: &[Row]) -> Result<Vec<Removed>, StoreError> {
    rows.iter()
        .map(|row| {
            let kind: &str = row.try_get(1).map_err(pg_error)?;
            Ok(Removed {
                id: row.try_get(0).map_err(pg_error)?,
                is_app: kind == "a",
                session: record_at(row, 2)?,
            })
        })
        .collect()
}

/// Ends the live on-behalf-of sessions minted with the app sessions among `removed`; returns
/// each removed session followed by what it minted.
async fn cascade(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &Sql,
    mut removed: Vec<Removed>,
    now: i64,
) -> Result<Vec<Session>, StoreError> {
    removed.sort_by_key(|r| (r.session.created, r.id));
    let apps: Vec<i64> = removed.iter().filter(|r| r.is_app).map(|r| r.id).collect();
    let mut minted: HashMap<i64, Vec<Session>> = HashMap::new();
    if !apps.is_empty() {
        let statement = tx.prepare_cached(&sql.cascade).await.map_err(pg_error)?;
        for row in tx
            .query(&statement, &[&apps, &now])
            .await
            .map_err(pg_error)?
        {
            let parent: i64 = row.try_get(0).map_err(pg_error)?;
            minted.entry(parent).or_default().push(record_at(&row, 1)?);
        }
    }
    let mut out = Vec::with_capacity(removed.len());
    for r in removed {
        out.push(r.session);
        out.extend(minted.remove(&r.id).unwrap_or_default());
    }
    Ok(out)
}

fn record(row: &Row) -> Result<Session, StoreError> {
    record_at(row, 0)
}

fn record_at(row: &Row, column: usize) -> Result<Session, StoreError> {
    let text: &str = row.try_get(column).map_err(pg_error)?;
    serde_json::from_str(text).map_err(|e| backend(Arc::new(e)))
}

/// A time as the `bigint` the tables hold.
fn millis(t: Millis) -> i64 {
    i64::try_from(t.as_epoch_millis()).unwrap_or(i64::MAX)
}

/// The one-letter kind in the `kind` column.
fn kind_tag(kind: &SessionKind) -> &'static str {
    match kind {
        SessionKind::User { .. } => "u",
        SessionKind::KeyManager { .. } => "k",
        SessionKind::App { .. } => "a",
        SessionKind::OnBehalfOf { .. } => "o",
    }
}

/// The `owner` column: `<kind>:<user id or nothing>:<app id or nothing>`, one value per
/// [`Owner`] (the user id is digits, so the app id after the second `:` is unambiguous).
fn owner_tag(kind: &SessionKind) -> String {
    let (user, app) = match Owner::of(kind) {
        Owner::User(u) | Owner::KeyManager(u) => (Some(u), None),
        Owner::App(a) => (None, Some(a)),
        Owner::OnBehalfOf(a, u) => (Some(u), Some(a)),
    };
    format!(
        "{}:{}:{}",
        kind_tag(kind),
        user.map(|u| u.0.to_string()).unwrap_or_default(),
        app.as_ref().map(AppId::as_str).unwrap_or_default()
    )
}

fn backend(source: Arc<dyn std::error::Error + Send + Sync>) -> StoreError {
    StoreError::Backend {
        backend: "postgres",
        source,
    }
}

/// A unique violation is a duplicate; a lost or refused connection, or a server shutting
/// down, is "unavailable"; anything else PostgreSQL says is a backend error (also 503), its
/// text kept for the log.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let unavailable = match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => return StoreError::Duplicate,
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        None => {
            e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    if unavailable {
        StoreError::Unavailable(format!("PostgreSQL is unreachable: {e}"))
    } else {
        backend(Arc::new(e))
    }
}

/// Whether PostgreSQL aborted the transaction for a deadlock or a serialization failure: it
/// was rolled back whole, and may be tried again.
fn is_conflict(e: &StoreError) -> bool {
    let StoreError::Backend { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => match pg_error(e) {
            StoreError::Backend { source, .. } => {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL: {source}"))
            }
            other => other,
        },
        PoolError::Timeout(_) => {
            StoreError::Unavailable("PostgreSQL did not accept a connection in time".into())
        }
        PoolError::Closed => StoreError::Unavailable("the session store is closed".into()),
        other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a plain lowercase identifier can be a table prefix: it is pasted into SQL.
    #[test]
    fn table_prefix_is_strict() {
        for good in ["sessionauth_", "_x", "a1_b2", &"a".repeat(MAX_TABLE_PREFIX)] {
            assert!(TablePrefix::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Sessions",
            "a-b",
            "a b",
            "x; DROP TABLE y; --",
            "a\"b",
            "é",
            &"a".repeat(MAX_TABLE_PREFIX + 1),
        ] {
            assert!(TablePrefix::parse(bad).is_err(), "{bad}");
        }
    }

    /// The owner tags of distinct owners differ, even when an app id holds `:`.
    #[test]
    fn owner_tags_are_distinct() {
        let tags = [
            owner_tag(&SessionKind::User { user: UserId(1) }),
            owner_tag(&SessionKind::KeyManager { user: UserId(1) }),
            owner_tag(&SessionKind::App {
                app: AppId::new("1:x"),
            }),
            owner_tag(&SessionKind::OnBehalfOf {
                app: AppId::new("x"),
                user: UserId(1),
                parent: SessionId(9),
            }),
            owner_tag(&SessionKind::OnBehalfOf {
                app: AppId::new("x"),
                user: UserId(2),
                parent: SessionId(9),
            }),
        ];
        let unique: std::collections::BTreeSet<_> = tags.iter().collect();
        assert_eq!(unique.len(), tags.len(), "{tags:?}");
    }
}
