//! How the Redis store reaches the primary: one configured server, the primary that Sentinel
//! names now (found again after a failover), or a Redis Cluster (whose client follows `MOVED`
//! and failovers by itself).
//!
//! A [`Link`] hands out a connection with the generation it belongs to; an operation that fails
//! in a way that says "this is no longer the primary" (the connection broke or timed out, or the
//! server answered `READONLY`, `MASTERDOWN`, `MOVED`, …, or too few replicas acknowledged a
//! write) reports it with [`Link::forget`], and
//! the next operation asks Sentinel again. Nothing is retried here: the failed operation answers
//! 503 and the client retries, so that a write is never applied twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, TlsMode, Value};
use parking_lot::Mutex;

use super::url::{SentinelTarget, Target};
use super::{redis_error, RedisUrl, DISCOVERY_TIMEOUT, IO_TIMEOUT};
use crate::store::{OpenError, StoreError};

/// The way to the primary.
pub(super) enum Link {
    /// One server; the connection manager reconnects to it by itself.
    Server {
        client: Client,
        config: ConnectionManagerConfig,
        /// Made on first use, inside the runtime.
        conn: Mutex<Option<ConnectionManager>>,
    },
    /// The primary Sentinel names.
    Sentinel(SentinelLink),
    /// A Redis Cluster.
    Cluster {
        client: ClusterClient,
        /// Made on first use (one attempt at a time); it follows the cluster by itself after.
        conn: tokio::sync::Mutex<Option<ClusterConnection>>,
    },
}

/// A connection to the primary: to one server, or to a cluster (which routes each command to
/// its key's primary).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Finds the primary through Sentinel, and keeps one connection to it until an operation says
/// it is no longer the primary.
pub(super) struct SentinelLink {
    service: String,
    node: SentinelNodeConnectionInfo,
    config: ConnectionManagerConfig,
    /// One discovery at a time: concurrent operations that find no primary wait for the one
    /// lookup instead of each asking every Sentinel. An async mutex, held across the lookup on
    /// purpose; [`SentinelLink::current`] is never held across an await.
    sentinel: tokio::sync::Mutex<Sentinel>,
    current: Mutex<Option<(u64, ConnectionManager)>>,
    generations: AtomicU64,
}

impl Link {
    /// Sets up the way to what `url` names, each answer awaited at most `response_timeout`;
    /// connects nothing.
    pub(super) fn open(url: &RedisUrl, response_timeout: Duration) -> Result<Self, OpenError> {
        match url.target() {
            Target::Server => Ok(Self::Server {
                client: Client::open(url.expose()).map_err(OpenError::Redis)?,
                config: config(response_timeout),
                conn: Mutex::new(None),
            }),
            Target::Sentinel(target) => Ok(Self::Sentinel(SentinelLink::open(
                target,
                config(response_timeout),
            )?)),
            Target::Cluster(nodes) => Ok(Self::Cluster {
                client: ClusterClient::builder(nodes.clone())
                    .connection_timeout(IO_TIMEOUT)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .build()
                    .map_err(OpenError::Redis)?,
                conn: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// A connection to the primary and its generation; for Sentinel, found first when none is
    /// known (bounded by [`DISCOVERY_TIMEOUT`]; no primary known is `Unavailable`).
    pub(super) async fn connection(&self) -> Result<(Conn, u64), StoreError> {
        match self {
            Self::Server {
                client,
                config,
                conn,
            } => {
                let mut slot = conn.lock();
                if let Some(conn) = &*slot {
                    return Ok((Conn::Single(conn.clone()), 0));
                }
                let made = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                    .map_err(redis_error)?;
                *slot = Some(made.clone());
                Ok((Conn::Single(made), 0))
            }
            Self::Sentinel(link) => {
                let (conn, generation) = link.connection().await?;
                Ok((Conn::Single(conn), generation))
            }
            Self::Cluster { client, conn } => {
                // An async mutex, held across the first connection on purpose: one attempt at
                // a time.
                let mut slot = conn.lock().await;
                if let Some(conn) = &*slot {
                    return Ok((Conn::Cluster(conn.clone()), 0));
                }
                let made = tokio::time::timeout(DISCOVERY_TIMEOUT, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(format!(
                            "the Redis Cluster did not answer within {}ms",
                            DISCOVERY_TIMEOUT.as_millis()
                        ))
                    })?
                    .map_err(redis_error)?;
                *slot = Some(made.clone());
                Ok((Conn::Cluster(made), 0))
            }
        }
    }

    /// Reports that an operation on generation `generation` failed: when the failure says the
    /// server is (or may be) no longer the primary, the next operation looks again.
    pub(super) fn forget(&self, generation: u64, why: Lost<'_>) {
        if let Self::Sentinel(link) = self {
            if !matches!(why, Lost::Error(e) if !primary_lost(e)) {
                link.forget(generation, why);
            }
        }
    }
}

/// How an operation failed, as far as the way to the primary goes.
#[derive(Clone, Copy)]
pub(super) enum Lost<'a> {
    /// Redis (or the connection) said this.
    Error(&'a RedisError),
    /// No answer in time.
    Silent,
    /// Fewer replicas acknowledged a write than required: an old primary cut off from its
    /// replicas looks exactly like this.
    Replicas,
}

impl std::fmt::Display for Lost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(e) => write!(f, "{e}"),
            Self::Silent => f.write_str("no answer in time"),
            Self::Replicas => f.write_str("too few replicas acknowledged a write"),
        }
    }
}

impl SentinelLink {
    fn open(target: &SentinelTarget, config: ConnectionManagerConfig) -> Result<Self, OpenError> {
        let sentinel = Sentinel::build(target.sentinels.clone()).map_err(OpenError::Redis)?;
        let mut node =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(target.node.clone());
        if target.tls {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        Ok(Self {
            service: target.service.clone(),
            node,
            config,
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new(None),
            generations: AtomicU64::new(1),
        })
    }

    async fn connection(&self) -> Result<(ConnectionManager, u64), StoreError> {
        if let Some((generation, conn)) = &*self.current.lock() {
            return Ok((conn.clone(), *generation));
        }
        let found = tokio::time::timeout(DISCOVERY_TIMEOUT, self.discover()).await;
        match found {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no Redis primary for {:?}: Sentinel did not name a reachable one within {}ms",
                self.service,
                DISCOVERY_TIMEOUT.as_millis()
            ))),
        }
    }

    /// Asks the Sentinels for the primary (the crate checks that the node it names answers
    /// `ROLE` as a master), and connects to it.
    async fn discover(&self) -> Result<(ConnectionManager, u64), StoreError> {
        let mut sentinel = self.sentinel.lock().await;
        // Another operation may have found it while this one waited.
        if let Some((generation, conn)) = &*self.current.lock() {
            return Ok((conn.clone(), *generation));
        }
        let unavailable = |e: RedisError| {
            StoreError::Unavailable(format!(
                "no Redis primary known for {:?} through Sentinel: {e}",
                self.service
            ))
        };
        let client = sentinel
            .async_master_for(&self.service, Some(&self.node))
            .await
            .map_err(unavailable)?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_with_config(client, self.config.clone())
            .await
            .map_err(unavailable)?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.current.lock() = Some((generation, conn.clone()));
        tracing::info!(service = %self.service, primary = %addr, "redis: primary found through Sentinel");
        Ok((conn, generation))
    }

    fn forget(&self, generation: u64, why: Lost<'_>) {
        let mut current = self.current.lock();
        if matches!(&*current, Some((g, _)) if *g == generation) {
            *current = None;
            drop(current);
            tracing::warn!(service = %self.service, reason = %why, "redis: the primary failed; asking Sentinel again");
        }
    }
}

/// The connection manager's settings: every attempt bounded by [`IO_TIMEOUT`], every answer by
/// `response_timeout`.
fn config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// Whether `e` says the server may no longer be the primary: the connection is gone or silent,
/// or the server refuses as a replica, a node that lost its primary, or a cluster node would.
pub(super) fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some(
                "READONLY"
                    | "MASTERDOWN"
                    | "MOVED"
                    | "ASK"
                    | "CLUSTERDOWN"
                    | "LOADING"
                    | "TRYAGAIN"
                    | "NOREPLICAS"
            )
        )
}
