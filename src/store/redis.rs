//! The Redis backend: sessions shared by every node that names the same Redis.
//!
//! # Keys (under the configured prefix `P`, `sessionauth:` by default)
//!
//! | key | type | what |
//! |---|---|---|
//! | `P s:<hex token hash>` | hash | `v` the session (JSON, as the embedded store writes it), `exp`, `id`, `user`, `app` |
//! | `P i:<session id>` | string | the token hash (the by-id index; also makes ids unique) |
//! | `P u:<user id>` | set | token hashes of the user's sessions (own, key-manager, on-behalf-of) |
//! | `P a:<app id>` | set | token hashes of the app's sessions and the on-behalf-of sessions it minted |
//! | `P x` | sorted set | token hashes scored by expiry (ms): what the purge sweeps |
//!
//! # Guarantees
//!
//! Every change is one Lua script, so Redis applies it atomically with its index entries: an
//! insert is all-or-nothing (and refuses a duplicate token or id), and a removal reads and
//! deletes in one step, so of two nodes logging out one session at the same moment exactly one
//! succeeds, and from then on the token is absent for every node. Session keys carry a Redis-side
//! expiry ([`EXPIRY_GRACE`] past the session's own end, so that the purge can still read and log
//! what it ends; reads check the session's end themselves). Durability is the Redis server's
//! (AOF with `appendfsync always` for fsync-per-write).
//!
//! # Failures
//!
//! The connection is made on first use and re-made in the background after a failure
//! (`redis::aio::ConnectionManager`); start-up never waits for Redis. Every operation is bounded
//! by [`OP_TIMEOUT`]: when Redis is unreachable, calls fail fast with
//! [`StoreError::Unavailable`] (503), never with a success, and succeed again once Redis is back,
//! without a restart.
//!
//! The scripts build key names from the prefix, so the keys of one deployment must live on one
//! Redis primary (standalone or replicated; not Redis Cluster).

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use async_trait::async_trait;
use parking_lot::Mutex;

use super::{OpenError, SessionStore, StoreError};
use crate::clock::Millis;
use crate::config::RedisUrl;
use crate::directory::{AppId, UserId};
use crate::session::{Session, SessionId};
use crate::token::TokenHash;

/// The longest a store operation may take before it fails with 503.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one connection attempt, or one command's answer, may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis keeps a session past its end, for the purge to record it.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(600);

/// Removes one session and its index entries; returns its JSON, or false when absent.
const DROP_FN: &str = r"
local p = ARGV[1]
local function drop(h)
  local k = p .. 's:' .. h
  redis.call('ZREM', p .. 'x', h)
  local f = redis.call('HMGET', k, 'v', 'user', 'app', 'id')
  if not f[1] then return false end
  redis.call('DEL', k)
  if f[2] then redis.call('SREM', p .. 'u:' .. f[2], h) end
  if f[3] then redis.call('SREM', p .. 'a:' .. f[3], h) end
  if f[4] then redis.call('DEL', p .. 'i:' .. f[4]) end
  return f[1]
end
";

/// ARGV: prefix, hash, json, expires ms, id, ttl ms, has user, user, has app, app.
const INSERT: &str = r"
local p, h, ttl = ARGV[1], ARGV[2], tonumber(ARGV[6])
local k, ik = p .. 's:' .. h, p .. 'i:' .. ARGV[5]
if redis.call('EXISTS', k, ik) > 0 then return 0 end
local fields = {'v', ARGV[3], 'exp', ARGV[4], 'id', ARGV[5]}
if ARGV[7] == '1' then fields[#fields + 1] = 'user'; fields[#fields + 1] = ARGV[8] end
if ARGV[9] == '1' then fields[#fields + 1] = 'app'; fields[#fields + 1] = ARGV[10] end
redis.call('HSET', k, unpack(fields))
redis.call('PEXPIRE', k, ttl)
-- An index set lives as long as its longest-lived member.
local function index(set)
  redis.call('SADD', set, h)
  if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
end
if ARGV[7] == '1' then index(p .. 'u:' .. ARGV[8]) end
if ARGV[9] == '1' then index(p .. 'a:' .. ARGV[10]) end
redis.call('SET', ik, h, 'PX', ttl)
redis.call('ZADD', p .. 'x', ARGV[4], h)
return 1
";

/// ARGV: prefix, hash.
const REMOVE: &str = "return drop(ARGV[2])";

/// ARGV: prefix, set suffix (`u:<id>` or `a:<id>`). Returns the JSON of every session removed.
const REMOVE_SET: &str = r"
local set = p .. ARGV[2]
local out = {}
for _, h in ipairs(redis.call('SMEMBERS', set)) do
  local v = drop(h)
  if v then out[#out + 1] = v else redis.call('SREM', set, h) end
end
return out
";

/// ARGV: prefix, session id, user id, now ms.
const REMOVE_BY_ID: &str = r"
local h = redis.call('GET', p .. 'i:' .. ARGV[2])
if not h then return false end
local f = redis.call('HMGET', p .. 's:' .. h, 'user', 'exp')
if f[1] ~= ARGV[3] or not f[2] or tonumber(f[2]) <= tonumber(ARGV[4]) then return false end
return drop(h)
";

/// ARGV: prefix, now ms, limit. Returns {entries swept, {JSON of sessions removed}}.
const PURGE: &str = r"
local hs = redis.call('ZRANGEBYSCORE', p .. 'x', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, h in ipairs(hs) do
  local v = drop(h)
  if v then out[#out + 1] = v end
end
return {#hs, out}
";

/// ARGV: prefix, user id. Returns the JSON of the user's sessions.
const LIST_USER: &str = r"
local p = ARGV[1]
local out = {}
for _, h in ipairs(redis.call('SMEMBERS', p .. 'u:' .. ARGV[2])) do
  local v = redis.call('HGET', p .. 's:' .. h, 'v')
  if v then out[#out + 1] = v end
end
return out
";

/// Sessions in Redis; see the module documentation for what is guaranteed.
pub struct RedisStore {
    client: Client,
    prefix: String,
    /// Made on first use, inside the runtime; it reconnects by itself afterwards.
    conn: Mutex<Option<ConnectionManager>>,
    scripts: Scripts,
}

struct Scripts {
    insert: Script,
    remove: Script,
    remove_set: Script,
    remove_by_id: Script,
    purge: Script,
    list_user: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets up the client for `url`, writing keys under `prefix`. Does not connect: the
    /// connection is made on first use, so a Redis that is down at start-up delays nothing
    /// (requests answer 503 until it is reachable).
    pub fn open(url: &RedisUrl, prefix: &str) -> Result<Self, OpenError> {
        if url.is_tls() {
            // The redis client builds its TLS configuration from rustls's process-wide default
            // provider; make that ours (ring), so that it never depends on which providers other
            // dependencies enable. An error means one is installed already, which is fine.
            let _ = rustls::crypto::CryptoProvider::install_default(
                crate::tls::provider().as_ref().clone(),
            );
        }
        let client = Client::open(url.expose()).map_err(OpenError::Redis)?;
        let with_drop = |body: &str| Script::new(&format!("{DROP_FN}\n{body}"));
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            conn: Mutex::new(None),
            scripts: Scripts {
                insert: Script::new(INSERT),
                remove: with_drop(REMOVE),
                remove_set: with_drop(REMOVE_SET),
                remove_by_id: with_drop(REMOVE_BY_ID),
                purge: with_drop(PURGE),
                list_user: Script::new(LIST_USER),
            },
        })
    }

    /// The shared, self-reconnecting connection, made on first use.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.conn.lock();
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(redis_error)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `script` with the prefix as the first argument, bounded by [`OP_TIMEOUT`].
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut conn = self.connection()?;
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix);
        for arg in args {
            invocation.arg(arg);
        }
        match tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async(&mut conn)).await {
            Ok(result) => result.map_err(redis_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer within {}s",
                OP_TIMEOUT.as_secs()
            ))),
        }
    }

    fn session_key(&self, key: &TokenHash) -> String {
        format!("{}s:{}", self.prefix, hex(key))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, key: TokenHash, session: Session) -> Result<(), StoreError> {
        let json = encode(&session)?;
        let ttl_ms = session
            .expires
            .saturating_since(session.created)
            .saturating_add(EXPIRY_GRACE)
            .as_millis()
            .max(1);
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(u64::MAX);
        let (has_user, user) = match session.kind.user() {
            Some(u) => ("1", u.0.to_string()),
            None => ("0", String::new()),
        };
        let (has_app, app) = match session.kind.app() {
            Some(a) => ("1", a.as_str().to_owned()),
            None => ("0", String::new()),
        };
        let args = [
            hex(&key),
            json,
            session.expires.as_epoch_millis().to_string(),
            session.id.0.to_string(),
            ttl_ms.to_string(),
            has_user.to_owned(),
            user,
            has_app.to_owned(),
            app,
        ];
        let inserted: i64 = self.run(&self.scripts.insert, &args).await?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::Duplicate)
        }
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let mut conn = self.connection()?;
        let cmd = ::redis::cmd("HGET")
            .arg(self.session_key(key))
            .arg("v")
            .clone();
        let value: Option<Vec<u8>> =
            match tokio::time::timeout(OP_TIMEOUT, cmd.query_async(&mut conn)).await {
                Ok(result) => result.map_err(redis_error)?,
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "Redis did not answer within {}s",
                        OP_TIMEOUT.as_secs()
                    )))
                }
            };
        live(value.as_deref().map(decode).transpose()?, now)
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let value: Option<Vec<u8>> = self.run(&self.scripts.remove, &[hex(key)]).await?;
        live(value.as_deref().map(decode).transpose()?, now)
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let values: Vec<Vec<u8>> = self
            .run(&self.scripts.list_user, &[user.0.to_string()])
            .await?;
        decode_live(&values, now)
    }

    async fn remove_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let set = format!("u:{}", user.0);
        let values: Vec<Vec<u8>> = self.run(&self.scripts.remove_set, &[set]).await?;
        decode_live(&values, now)
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let value: Option<Vec<u8>> = self
            .run(
                &self.scripts.remove_by_id,
                &[
                    id.0.to_string(),
                    user.0.to_string(),
                    now.as_epoch_millis().to_string(),
                ],
            )
            .await?;
        live(value.as_deref().map(decode).transpose()?, now)
    }

    async fn remove_app(&self, app: &AppId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let set = format!("a:{}", app.as_str());
        let values: Vec<Vec<u8>> = self.run(&self.scripts.remove_set, &[set]).await?;
        decode_live(&values, now)
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Vec<Session>, StoreError> {
        let (_swept, values): (usize, Vec<Vec<u8>>) = self
            .run(
                &self.scripts.purge,
                &[now.as_epoch_millis().to_string(), limit.to_string()],
            )
            .await?;
        values.iter().map(|v| decode(v)).collect()
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let mut conn = self.connection()?;
        let cmd = ::redis::cmd("ZCARD")
            .arg(format!("{}x", self.prefix))
            .clone();
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(result) => result.map_err(redis_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis did not answer within {}s",
                OP_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn live(session: Option<Session>, now: Millis) -> Result<Option<Session>, StoreError> {
    Ok(session.filter(|s| !s.is_expired(now)))
}

fn decode_live(values: &[Vec<u8>], now: Millis) -> Result<Vec<Session>, StoreError> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let s = decode(v)?;
        if !s.is_expired(now) {
            out.push(s);
        }
    }
    Ok(out)
}

fn hex(key: &TokenHash) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for b in key.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn encode(s: &Session) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| StoreError::Backend {
        backend: "redis",
        source: Arc::new(e),
    })
}

fn decode(bytes: &[u8]) -> Result<Session, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend {
        backend: "redis",
        source: Arc::new(e),
    })
}

/// Connection failures are "unavailable" (503 with that word); anything else Redis says is
/// a backend error (also 503), its text kept for the log.
fn redis_error(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(format!("Redis is unreachable: {e}"))
    } else {
        StoreError::Backend {
            backend: "redis",
            source: Arc::new(e),
        }
    }
}
