//! The Redis backend: sessions shared by every node that names the same Redis.
//!
//! # Keys (under the configured prefix `P`, `sessionauth:` by default)
//!
//! | key | type | what |
//! |---|---|---|
//! | `P s:<hex token hash>` | string | the session: a one-line header `<id> <expires ms> <user id or nothing> <kind u/k/a/o> <parent session id or -> <credential hexes, comma-separated, or -> <app id length>`, the app id, then the session as JSON (as the embedded store writes it) |
//! | `P i:<session id>` | string | the token hash (the by-id index; also makes ids unique) |
//! | `P u:<user id>` | set | token hashes of the user's sessions (own, key-manager, on-behalf-of) |
//! | `P a:<app id>` | set | token hashes of the app's sessions and the on-behalf-of sessions it minted |
//! | `P p:<session id>` | set | token hashes of the on-behalf-of sessions an app session minted: ending it ends them |
//! | `P o:<kind>:<user id>:<app id>` | sorted set | token hashes of one owner's sessions (a user's own, its key-manager tokens, an app's own, an app's for one user) by creation time: what the per-principal cap evicts |
//! | `P n:<name>` | string | a note the server keeps beside the sessions (`applied-directory`: the directory last applied, for revocation) |
//! | `P c:<credential hex>` | set | token hashes of the sessions minted with a certificate or RSA key: revoking it ends them |
//! | `P k` | hash | how many sessions of each kind (`u`, `k`, `a`, `o`) are stored, kept by the scripts that add and remove them: the `sessionauth_sessions_live` gauge |
//! | `P x` | sorted set | token hashes scored by expiry (ms): what the purge sweeps |
//! | `P probe` | string | `1`, written by the readiness probe, expiring after 60 s |
//!
//! The header lets the scripts find a session's index entries without decoding its JSON.
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
//! The connection is made on first use and re-made after a failure; start-up never waits for
//! Redis. Every operation is bounded by [`OP_TIMEOUT`]: when Redis is unreachable, calls fail
//! fast with [`StoreError::Unavailable`] (503), never with a success, and succeed again once
//! Redis is back, without a restart.
//!
//! With a `redis+sentinel://` URL the primary is the one the Sentinels name
//! (`SENTINEL MASTERS`, then `ROLE` on the node to check that it is a master; `link.rs`). When
//! an operation finds the connection broken or silent, or the server answers as a replica
//! (`READONLY`) or as a node that lost its primary (`MASTERDOWN`, `MOVED`, …), it fails with 503
//! and the next operation asks the Sentinels again: a failover is ridden out without a restart,
//! and while no primary is known every operation answers 503.
//!
//! # Replicas
//!
//! With a [`ReplicaWait`] (the default for Sentinel and Cluster: one replica, 500 ms), every write
//! is followed by `WAIT <replicas> <timeout>` on the same connection, and succeeds only when that
//! many replicas acknowledged it: a session is handed out, or a logout confirmed, only once a
//! replica that Sentinel may promote holds it. When fewer acknowledge in time the operation fails
//! with 503 (the write may still reach them: a session nobody was given, or a logout the client
//! will retry). `WAIT` does not make Redis strongly consistent: Sentinel promotes the replica with
//! the most data, which holds every acknowledged write unless the replicas that acknowledged it
//! fail too; `redis_wait_replicas` set to the number of replicas closes that gap at the price of
//! failing writes while any replica is down.
//!
//! # Redis Cluster
//!
//! With a `redis+cluster://` URL the prefix is made a hash tag (`sessionauth:` becomes
//! `{sessionauth:}`; a prefix that holds a `{…}` tag is kept), so every key of the deployment
//! hashes to one slot. Each script declares one key, `<prefix>x`, by which the cluster client
//! routes it to that slot's primary; the other keys a script touches are built from the prefix
//! (a session's index entries are only known once its header is read), and, sharing the tag,
//! live on the same node, where a script may use them. `WAIT` goes to the same primary. The
//! cost: one shard holds every session; a cluster buys automatic failover, not write scaling.

mod link;
mod url;

pub use url::{InvalidRedisUrl, RedisUrl};

use std::sync::Arc;
use std::time::Duration;

use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Cmd, RedisError, RedisResult, Script};
use async_trait::async_trait;

use link::{Conn, Link, Lost};

use super::{Census, KindCounts, OpenError, Purged, Selector, SessionStore, StoreError};
use crate::clock::Millis;
use crate::directory::{AppId, UserId};
use crate::session::{Session, SessionId, SessionKind};
use crate::token::TokenHash;

/// The longest a store operation may take before it fails with 503.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one connection attempt, or one command's answer, may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis keeps a session past its end, for the purge to record it.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(600);
/// The longest a lookup of the primary through Sentinel may take.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many replicas must acknowledge each write (`WAIT`), and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// At least one.
    replicas: u32,
    /// Above zero, at most [`ReplicaWait::MAX_TIMEOUT`].
    timeout: Duration,
}

impl ReplicaWait {
    /// The longest wait accepted: a request waits this long at most for its replicas.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
    /// What a Sentinel or Cluster URL gets unless configured otherwise: one replica, 500 ms.
    pub const FAILOVER_DEFAULT: Self = Self {
        replicas: 1,
        timeout: Duration::from_millis(500),
    };

    /// `replicas` (at least 1) within `timeout` (above zero, at most
    /// [`ReplicaWait::MAX_TIMEOUT`]); `None` otherwise.
    pub fn new(replicas: u32, timeout: Duration) -> Option<Self> {
        let fits = replicas >= 1 && !timeout.is_zero() && timeout <= Self::MAX_TIMEOUT;
        fits.then_some(Self { replicas, timeout })
    }

    /// How many replicas.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// How long.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The default for `url`: [`ReplicaWait::FAILOVER_DEFAULT`] for Sentinel and Cluster,
    /// whose replicas are promoted when a primary fails; none for one server (whose replicas,
    /// if any, nobody promotes automatically).
    pub fn default_for(url: &RedisUrl) -> Option<Self> {
        (url.is_sentinel() || url.is_cluster()).then_some(Self::FAILOVER_DEFAULT)
    }
}

/// Reads a stored session's header; removes a session read as `v` with its index entries and,
/// for an app session, the live on-behalf-of sessions minted with it (`drop_read`, appending
/// what it removed to `out`), or reads and removes one expired session without cascading
/// (`drop`, for the purge: what an app session minted ends no later than it does).
const DROP_FN: &str = r"
local p = ARGV[1]
local function header(v)
  local id, exp, user, kind, parent, cred, n, rest =
    string.match(v, '^(%d+) (%d+) (%-?%d*) (%a) ([%d%-]+) ([%x,%-]+) (%d+)\n(.*)$')
  local app = nil
  if n ~= '0' then app = string.sub(rest, 1, tonumber(n)) end
  return id, exp, user, app, kind, parent, cred
end
local function unindex(h, v)
  redis.call('ZREM', p .. 'x', h)
  redis.call('DEL', p .. 's:' .. h)
  local id, _, user, app, kind, parent, cred = header(v)
  if user ~= '' then redis.call('SREM', p .. 'u:' .. user, h) end
  if app then redis.call('SREM', p .. 'a:' .. app, h) end
  if parent ~= '-' then redis.call('SREM', p .. 'p:' .. parent, h) end
  if cred ~= '-' then
    for c in string.gmatch(cred, '%x+') do redis.call('SREM', p .. 'c:' .. c, h) end
  end
  redis.call('ZREM', p .. 'o:' .. kind .. ':' .. user .. ':' .. (app or ''), h)
  redis.call('DEL', p .. 'i:' .. id)
  if redis.call('HINCRBY', p .. 'k', kind, -1) < 0 then redis.call('HSET', p .. 'k', kind, 0) end
  return id, kind
end
local function drop_read(h, v, now, out)
  local id, kind = unindex(h, v)
  out[#out + 1] = v
  if kind == 'a' then
    local set = p .. 'p:' .. id
    for _, c in ipairs(redis.call('SMEMBERS', set)) do
      local cv = redis.call('GET', p .. 's:' .. c)
      if not cv then
        redis.call('SREM', set, c)
      else
        local _, cexp = header(cv)
        if tonumber(cexp) > now then drop_read(c, cv, now, out) end
      end
    end
  end
end
local function drop(h)
  local v = redis.call('GET', p .. 's:' .. h)
  if not v then
    redis.call('ZREM', p .. 'x', h)
    return false
  end
  unindex(h, v)
  return v
end
";

/// Every script: KEYS[1] is `<prefix>x` (for routing; see the module documentation).
///
/// ARGV: prefix, hash, value, expires ms, id, ttl ms, user id or empty, app id or empty, parent
/// session id or empty, credential hexes (comma-separated) or empty, owner tag (`<kind>:<user
/// id or nothing>:<app id or nothing>`), created ms, how many of the owner's sessions to keep
/// (empty: no cap). Returns {status, {sessions evicted}}: status 1 stored, 0 duplicate, -1 the
/// app session is gone.
const INSERT: &str = r"
local h, ttl = ARGV[2], tonumber(ARGV[6])
local ik, sk = p .. 'i:' .. ARGV[5], p .. 's:' .. h
if redis.call('EXISTS', sk) == 1 or redis.call('EXISTS', ik) == 1 then return {0, {}} end
-- An on-behalf-of session only while its app session is stored.
if ARGV[9] ~= '' and redis.call('EXISTS', p .. 'i:' .. ARGV[9]) == 0 then return {-1, {}} end
redis.call('SET', ik, h, 'PX', ttl)
redis.call('SET', sk, ARGV[3], 'PX', ttl)
-- An index lives as long as its longest-lived member.
local function keep_alive(set)
  if redis.call('PEXPIRE', set, ttl, 'GT') == 0 and redis.call('PTTL', set) == -1 then
    redis.call('PEXPIRE', set, ttl)
  end
end
local function index(set)
  redis.call('SADD', set, h)
  keep_alive(set)
end
if ARGV[7] ~= '' then index(p .. 'u:' .. ARGV[7]) end
if ARGV[8] ~= '' then index(p .. 'a:' .. ARGV[8]) end
if ARGV[9] ~= '' then index(p .. 'p:' .. ARGV[9]) end
for c in string.gmatch(ARGV[10], '%x+') do index(p .. 'c:' .. c) end
redis.call('ZADD', p .. 'x', ARGV[4], h)
redis.call('HINCRBY', p .. 'k', string.sub(ARGV[11], 1, 1), 1)
local owner = p .. 'o:' .. ARGV[11]
redis.call('ZADD', owner, ARGV[12], h)
keep_alive(owner)
local out = {}
local keep = tonumber(ARGV[13])
if keep then
  keep = math.max(keep, 1)
  local now = tonumber(ARGV[12])
  while redis.call('ZCARD', owner) > keep do
    -- The oldest, never the session just stored (another may share its creation time).
    local two = redis.call('ZRANGE', owner, 0, 1)
    local victim = two[1]
    if victim == h then victim = two[2] end
    if not victim then break end
    local v = redis.call('GET', p .. 's:' .. victim)
    if v then
      drop_read(victim, v, now, out)
    else
      redis.call('ZREM', owner, victim)
    end
  end
end
return {1, out}
";

/// ARGV: prefix, hash, now ms. An expired session is left for the purge, which records it.
const REMOVE: &str = r"
local now = tonumber(ARGV[3])
local v = redis.call('GET', p .. 's:' .. ARGV[2])
if not v then return {} end
local _, exp = header(v)
if tonumber(exp) <= now then return {} end
local out = {}
drop_read(ARGV[2], v, now, out)
return out
";

/// ARGV: prefix, set suffix (`u:<id>`, `a:<id>`, `c:<credential>`), now ms, the kind wanted
/// (`o` or empty for any), the user wanted (or empty for any). Returns every session removed;
/// expired ones are left for the purge, members whose session is gone are dropped.
const REMOVE_SET: &str = r"
local set = p .. ARGV[2]
local now = tonumber(ARGV[3])
local want_kind, want_user = ARGV[4], ARGV[5]
local out = {}
for _, h in ipairs(redis.call('SMEMBERS', set)) do
  local v = redis.call('GET', p .. 's:' .. h)
  if not v then
    redis.call('SREM', set, h)
  else
    local _, exp, user, _, kind = header(v)
    local wanted = (want_kind == '' or kind == want_kind) and (want_user == '' or user == want_user)
    -- A cascade earlier in this loop may have removed it already.
    if wanted and tonumber(exp) > now and redis.call('EXISTS', p .. 's:' .. h) == 1 then
      drop_read(h, v, now, out)
    end
  end
end
return out
";

/// ARGV: prefix, session id, user id, now ms.
const REMOVE_BY_ID: &str = r"
local now = tonumber(ARGV[4])
local h = redis.call('GET', p .. 'i:' .. ARGV[2])
if not h then return {} end
local v = redis.call('GET', p .. 's:' .. h)
if not v then return {} end
local _, exp, user = header(v)
if user ~= ARGV[3] or tonumber(exp) <= now then return {} end
local out = {}
drop_read(h, v, now, out)
return out
";

/// ARGV: prefix, now ms, limit. Returns {entries swept, {sessions removed}}.
const PURGE: &str = r"
local hs = redis.call('ZRANGEBYSCORE', p .. 'x', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, h in ipairs(hs) do
  local v = drop(h)
  if v then out[#out + 1] = v end
end
return {#hs, out}
";

/// ARGV: prefix, user id. Returns the user's sessions.
const LIST_USER: &str = r"
local p = ARGV[1]
local out = {}
for _, h in ipairs(redis.call('SMEMBERS', p .. 'u:' .. ARGV[2])) do
  local v = redis.call('GET', p .. 's:' .. h)
  if v then out[#out + 1] = v end
end
return out
";

/// Sessions in Redis; see the module documentation for what is guaranteed.
pub struct RedisStore {
    link: Link,
    prefix: String,
    /// The cluster hash slot of the prefix, where every key lives in a cluster (where `WAIT`
    /// is sent); unused outside one.
    slot: u16,
    wait: Option<ReplicaWait>,
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
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets up the client for `url`, writing keys under `prefix`, waiting for replicas as
    /// [`ReplicaWait::default_for`] the URL says. Does not connect: the connection is made on
    /// first use, so a Redis that is down at start-up delays nothing (requests answer 503 until
    /// it is reachable).
    pub fn open(url: &RedisUrl, prefix: &str) -> Result<Self, OpenError> {
        Self::open_with(url, prefix, ReplicaWait::default_for(url))
    }

    /// [`RedisStore::open`], every write waiting for `wait`'s replicas (or for none). An answer
    /// is awaited [`IO_TIMEOUT`], or the replica wait and a quarter second when that is longer.
    pub fn open_with(
        url: &RedisUrl,
        prefix: &str,
        wait: Option<ReplicaWait>,
    ) -> Result<Self, OpenError> {
        // A `rediss://` client builds its TLS configuration from rustls's process-wide default
        // provider, which the binary makes ours once, in `main`
        // (`tls::install_process_default`); this constructor changes no process-wide state.
        let response_timeout = wait.map_or(IO_TIMEOUT, |w| {
            IO_TIMEOUT.max(w.timeout + Duration::from_millis(250))
        });
        let link = Link::open(url, response_timeout)?;
        let with_drop = |body: &str| Script::new(&format!("{DROP_FN}\n{body}"));
        let prefix = if url.is_cluster() {
            cluster_prefix(prefix)
        } else {
            prefix.to_owned()
        };
        Ok(Self {
            link,
            slot: key_slot(prefix.as_bytes()),
            prefix,
            wait,
            scripts: Scripts {
                insert: with_drop(INSERT),
                remove: with_drop(REMOVE),
                remove_set: with_drop(REMOVE_SET),
                remove_by_id: with_drop(REMOVE_BY_ID),
                purge: with_drop(PURGE),
                list_user: Script::new(LIST_USER),
            },
        })
    }

    /// Runs `op` on the primary, bounded by [`OP_TIMEOUT`]. A failure that says the primary may
    /// be gone makes the next operation look for it again (Sentinel).
    async fn on_primary<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let (conn, generation) = self.link.connection().await?;
        self.settle(generation, tokio::time::timeout(OP_TIMEOUT, op(conn)).await)
    }

    /// [`RedisStore::on_primary`] for an operation that writes: then, with a [`ReplicaWait`],
    /// `WAIT` on the same connection, failing (503) when too few replicas acknowledge in time.
    async fn write<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let (conn, generation) = self.link.connection().await?;
        let value = self.settle(
            generation,
            tokio::time::timeout(OP_TIMEOUT, op(conn.clone())).await,
        )?;
        let Some(wait) = self.wait else {
            return Ok(value);
        };
        let timeout_ms = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = ::redis::cmd("WAIT");
        cmd.arg(wait.replicas).arg(timeout_ms);
        let acked: u32 = self.settle(
            generation,
            tokio::time::timeout(wait.timeout + IO_TIMEOUT, acked(conn, cmd, self.slot)).await,
        )?;
        if acked < wait.replicas {
            // An isolated old primary looks exactly like this: ask Sentinel again.
            self.link.forget(generation, Lost::Replicas);
            return Err(StoreError::Unavailable(format!(
                "{acked} of {} Redis replicas acknowledged the write within {timeout_ms} ms",
                wait.replicas
            )));
        }
        Ok(value)
    }

    /// An operation's outcome as the store reports it; a failure that may mean the primary is
    /// gone is reported to the link.
    fn settle<T>(
        &self,
        generation: u64,
        outcome: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.link.forget(generation, Lost::Error(&e));
                Err(redis_error(e))
            }
            Err(_) => {
                self.link.forget(generation, Lost::Silent);
                Err(StoreError::Unavailable(format!(
                    "Redis did not answer within {}s",
                    OP_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// A script invocation with its one declared key, `<prefix>x` (the expiry index, which
    /// every script that writes touches; in a cluster it routes the script to the slot of every
    /// key it touches), and the prefix as the first argument.
    fn prepare<'a>(&self, script: &'a Script) -> ::redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(format!("{}x", self.prefix))
            .arg(&self.prefix);
        invocation
    }

    /// Runs `script` (a write) with the prefix as the first argument.
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = self.prepare(script);
        for arg in args {
            invocation.arg(arg);
        }
        self.invoke(&invocation).await
    }

    /// Runs a prepared script invocation that writes.
    async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.write(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Runs a prepared script invocation that only reads: no `WAIT`.
    async fn invoke_read<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.on_primary(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    fn session_key(&self, key: &TokenHash) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 2 + 64);
        out.push_str(&self.prefix);
        out.push_str("s:");
        push_hex(&mut out, key);
        out
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn read_note(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(format!("{}n:{name}", self.prefix));
        let cmd = &cmd;
        self.on_primary(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn write_note(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(format!("{}n:{name}", self.prefix)).arg(value);
        let cmd = &cmd;
        self.write(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// A one-key write that expires by itself (`<prefix>probe`, 60 s), waited for as every
    /// write is: fails when Redis is unreachable, when it takes no writes (a replica, a full
    /// `maxmemory` with `noeviction`), when no primary is known, and when too few replicas
    /// acknowledge. (No `PING` first: in a cluster it goes to every primary, and readiness
    /// would follow shards that hold no session.)
    async fn probe(&self) -> Result<(), StoreError> {
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(format!("{}probe", self.prefix))
            .arg("1")
            .arg("PX")
            .arg(60_000);
        let cmd = &cmd;
        self.write(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    async fn insert_capped(
        &self,
        key: TokenHash,
        session: Session,
        keep: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let value = encode(&session)?;
        let ttl_ms = session
            .expires
            .saturating_since(session.created)
            .saturating_add(EXPIRY_GRACE)
            .as_millis()
            .max(1);
        let ttl_ms = u64::try_from(ttl_ms).unwrap_or(u64::MAX);
        let user = session
            .kind
            .user()
            .map(|u| u.0.to_string())
            .unwrap_or_default();
        let app = session.kind.app().map(AppId::as_str).unwrap_or_default();
        let parent = session
            .kind
            .parent()
            .map(|p| p.0.to_string())
            .unwrap_or_default();
        let credential = credential_list(&session);
        let mut invocation = self.prepare(&self.scripts.insert);
        invocation
            .arg(hex(&key).as_str())
            .arg(value)
            .arg(session.expires.as_epoch_millis())
            .arg(session.id.0)
            .arg(ttl_ms)
            .arg(user)
            .arg(app)
            .arg(parent)
            .arg(credential)
            .arg(owner_tag(&session.kind))
            .arg(session.created.as_epoch_millis())
            .arg(if keep == usize::MAX {
                String::new()
            } else {
                keep.to_string()
            });
        let (inserted, evicted): (i64, Vec<Vec<u8>>) = self.invoke(&invocation).await?;
        match inserted {
            1 => decode_all(&evicted),
            -1 => Err(StoreError::ParentEnded),
            _ => Err(StoreError::Duplicate),
        }
    }

    async fn get(&self, key: &TokenHash, now: Millis) -> Result<Option<Session>, StoreError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.session_key(key));
        let cmd = &cmd;
        let value: Option<Vec<u8>> = self
            .on_primary(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await?;
        live(value.as_deref().map(decode).transpose()?, now)
    }

    async fn remove(&self, key: &TokenHash, now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut invocation = self.prepare(&self.scripts.remove);
        invocation.arg(hex(key).as_str()).arg(now.as_epoch_millis());
        let values: Vec<Vec<u8>> = self.invoke(&invocation).await?;
        decode_all(&values)
    }

    async fn live_by_kind(&self, _now: Millis) -> Result<KindCounts, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(format!("{}k", self.prefix));
        let cmd = &cmd;
        let fields: Vec<(String, i64)> = self
            .on_primary(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await?;
        let mut counts = KindCounts::default();
        for (kind, n) in fields {
            counts.add(
                kind.as_bytes().first().copied().unwrap_or(0),
                u64::try_from(n).unwrap_or(0),
            );
        }
        Ok(counts)
    }

    async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, StoreError> {
        let mut invocation = self.prepare(&self.scripts.list_user);
        invocation.arg(user.0);
        let values: Vec<Vec<u8>> = self.invoke_read(&invocation).await?;
        decode_live(&values, now)
    }

    async fn remove_matching(
        &self,
        selector: &Selector,
        now: Millis,
    ) -> Result<Vec<Session>, StoreError> {
        let (set, kind, user) = match selector {
            Selector::User(user) => (format!("u:{}", user.0), "", String::new()),
            Selector::App(app) => (format!("a:{}", app.as_str()), "", String::new()),
            Selector::OnBehalfOf { app, user } => (
                format!("a:{}", app.as_str()),
                "o",
                user.map(|u| u.0.to_string()).unwrap_or_default(),
            ),
            Selector::Credential(id) => (format!("c:{id}"), "", String::new()),
        };
        let now_ms = now.as_epoch_millis().to_string();
        let values: Vec<Vec<u8>> = self
            .run(&self.scripts.remove_set, &[set, now_ms, kind.into(), user])
            .await?;
        decode_all(&values)
    }

    async fn remove_by_id(
        &self,
        user: UserId,
        id: SessionId,
        now: Millis,
    ) -> Result<Option<Session>, StoreError> {
        let values: Vec<Vec<u8>> = self
            .run(
                &self.scripts.remove_by_id,
                &[
                    id.0.to_string(),
                    user.0.to_string(),
                    now.as_epoch_millis().to_string(),
                ],
            )
            .await?;
        Ok(decode_all(&values)?.into_iter().next())
    }

    async fn purge_expired(&self, now: Millis, limit: usize) -> Result<Purged, StoreError> {
        let (swept, values): (usize, Vec<Vec<u8>>) = self
            .run(
                &self.scripts.purge,
                &[now.as_epoch_millis().to_string(), limit.to_string()],
            )
            .await?;
        Ok(Purged {
            ended: decode_all(&values)?,
            swept,
        })
    }
}

#[async_trait]
impl Census for RedisStore {
    async fn count(&self) -> Result<usize, StoreError> {
        let mut cmd = ::redis::cmd("ZCARD");
        cmd.arg(format!("{}x", self.prefix));
        let cmd = &cmd;
        self.on_primary(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }
}

/// The number of replicas that acknowledged, from `WAIT` on the connection the write went
/// through: in a cluster, on the primary of the keys' slot.
async fn acked(mut conn: Conn, cmd: Cmd, slot: u16) -> RedisResult<u32> {
    match &mut conn {
        Conn::Cluster(cluster) => {
            let to = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
            let value = cluster
                .route_command(cmd, RoutingInfo::SingleNode(to))
                .await?;
            Ok(::redis::from_redis_value(value)?)
        }
        Conn::Single(_) => cmd.query_async(&mut conn).await,
    }
}

/// The key prefix in a cluster: `prefix` itself when it holds a hash tag (`{…}`), else the
/// whole prefix made the tag (`sessionauth:` → `{sessionauth:}`), so that every key of the
/// deployment hashes to one slot and each script's keys live together.
fn cluster_prefix(prefix: &str) -> String {
    if hash_tag(prefix.as_bytes()).is_some() {
        prefix.to_owned()
    } else {
        format!("{{{prefix}}}")
    }
}

/// The part of `key` Redis Cluster hashes: between the first `{` and the next `}`, when that is
/// not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let rest = key.get(open + 1..)?;
    let close = rest.iter().position(|b| *b == b'}')?;
    rest.get(..close).filter(|tag| !tag.is_empty())
}

/// Redis Cluster's hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of all of it, modulo
/// 16384.
fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in hashed {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

fn live(session: Option<Session>, now: Millis) -> Result<Option<Session>, StoreError> {
    Ok(session.filter(|s| !s.is_expired(now)))
}

fn decode_all(values: &[Vec<u8>]) -> Result<Vec<Session>, StoreError> {
    values.iter().map(|v| decode(v)).collect()
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
    let mut out = String::with_capacity(64);
    push_hex(&mut out, key);
    out
}

fn push_hex(out: &mut String, key: &TokenHash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in key.as_bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// The stored form: the header the scripts read (id, expiry, user, app), then the JSON.
fn encode(s: &Session) -> Result<Vec<u8>, StoreError> {
    let app = s.kind.app().map(AppId::as_str).unwrap_or_default();
    let user = s.kind.user().map(|u| u.0.to_string()).unwrap_or_default();
    let kind = kind_letter(&s.kind);
    let parent = s
        .kind
        .parent()
        .map_or_else(|| "-".to_owned(), |p| p.0.to_string());
    let credential = match credential_list(s) {
        list if list.is_empty() => "-".to_owned(),
        list => list,
    };
    let header = format!(
        "{} {} {user} {kind} {parent} {credential} {}\n{app}",
        s.id.0,
        s.expires.as_epoch_millis(),
        app.len()
    );
    let mut out = header.into_bytes();
    serde_json::to_writer(&mut out, s).map_err(|e| backend(Arc::new(e)))?;
    Ok(out)
}

/// The owner tag of a session of `kind` (its key is `o:<tag>`), as the scripts build it from a
/// stored header: `<kind letter>:<user id or nothing>:<app id or nothing>`.
fn owner_tag(kind: &SessionKind) -> String {
    let user = kind.user().map(|u| u.0.to_string()).unwrap_or_default();
    let app = kind.app().map(AppId::as_str).unwrap_or_default();
    format!("{}:{user}:{app}", kind_letter(kind))
}

/// The one-letter kind in a stored header.
fn kind_letter(kind: &SessionKind) -> char {
    match kind {
        SessionKind::User { .. } => 'u',
        SessionKind::KeyManager { .. } => 'k',
        SessionKind::App { .. } => 'a',
        SessionKind::OnBehalfOf { .. } => 'o',
    }
}

/// The session's credential ids, comma-separated (empty when it has none).
fn credential_list(s: &Session) -> String {
    let ids: Vec<String> = s.credential_ids().map(ToString::to_string).collect();
    ids.join(",")
}

/// Reads the stored form back: skips the header line and the app id it announces.
pub(crate) fn decode(bytes: &[u8]) -> Result<Session, StoreError> {
    let bad = || {
        backend(Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a stored session without its header",
        )))
    };
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let header = std::str::from_utf8(bytes.get(..newline).ok_or_else(bad)?).map_err(|_| bad())?;
    let app_len: usize = header
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    // The announced length is data from outside: added with a check (found by fuzzing).
    let start = (newline + 1).checked_add(app_len).ok_or_else(bad)?;
    let json = bytes.get(start..).ok_or_else(bad)?;
    serde_json::from_slice(json).map_err(|e| backend(Arc::new(e)))
}

fn backend(source: Arc<dyn std::error::Error + Send + Sync>) -> StoreError {
    StoreError::Backend {
        backend: "redis",
        source,
    }
}

/// Connection failures, and answers that say this is not (or no longer) a primary, are
/// "unavailable" (503 with that word); anything else Redis says is a backend error (also 503),
/// its text kept for the log.
fn redis_error(e: RedisError) -> StoreError {
    if link::primary_lost(&e) {
        StoreError::Unavailable(format!("Redis is unreachable: {e}"))
    } else {
        StoreError::Backend {
            backend: "redis",
            source: Arc::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::CredentialId;

    /// Cluster slots as Redis computes them (`CLUSTER KEYSLOT`), hash tags included; a prefix
    /// without a tag is made one.
    #[test]
    fn cluster_slots_and_prefixes() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(cluster_prefix("sessionauth:"), "{sessionauth:}");
        assert_eq!(cluster_prefix("{sa}:"), "{sa}:");
        assert_eq!(cluster_prefix("a{}b"), "{a{}b}");
        let p = cluster_prefix("sessionauth:");
        assert_eq!(
            key_slot(format!("{p}s:00ff").as_bytes()),
            key_slot(format!("{p}x").as_bytes())
        );
    }

    /// A header that announces an app id longer than anything (found by fuzzing: the length
    /// overflowed the offset) is an error, not a panic.
    #[test]
    fn an_absurd_app_length_is_refused() {
        let mut record = b"00000000000000184467440737095516".to_vec();
        record.extend_from_slice(b"15\n\xff\xff\xf8\"}");
        assert!(decode(&record).is_err());
        assert!(decode(b"1 2 3 u - - 18446744073709551615\n{}").is_err());
        assert!(decode(b"1 2 3 u - - 99\n{}").is_err());
    }

    /// The stored form reads back, whatever the app id holds (spaces, newlines, non-ASCII).
    #[test]
    fn stored_form_round_trips() {
        let now = Millis::from_epoch_millis(1_700_000_000_000);
        for kind in [
            SessionKind::User { user: UserId(-5) },
            SessionKind::App {
                app: AppId::new("odd app\nid é"),
            },
            SessionKind::OnBehalfOf {
                app: AppId::new("demo-app"),
                user: UserId(2001),
                parent: SessionId(7),
            },
        ] {
            let s = Session {
                id: SessionId(42),
                kind,
                created: now,
                expires: now.saturating_add(std::time::Duration::from_secs(60)),
                client_ip: None,
                user_agent: Some("ua".into()),
                credential: Some(CredentialId::from_bytes([0xab; 32])),
                chain: vec![
                    CredentialId::from_bytes([0xcd; 32]),
                    CredentialId::from_bytes([0xef; 32]),
                ]
                .into(),
                fingerprint: None,
            };
            let stored = encode(&s).unwrap();
            assert_eq!(decode(&stored).unwrap(), s);
        }
        assert!(decode(b"no header").is_err());
        assert!(decode(b"1 2 3 u - - 99\nshort").is_err());
    }
}
