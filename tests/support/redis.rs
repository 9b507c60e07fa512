//! The Redis the tests may use, in one of three topologies ([`Topology`]):
//!
//! | variable | what | example |
//! |---|---|---|
//! | `SESSIONAUTH_TEST_REDIS_URL` | one server | `redis://127.0.0.1:6379/15` |
//! | `SESSIONAUTH_TEST_SENTINEL_URL` | Sentinels that monitor a primary with replicas | `redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/mymaster` |
//! | `SESSIONAUTH_TEST_REDIS_CLUSTER_URL` | seed nodes of a Redis Cluster with a replica per primary | `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002` |
//!
//! Every test gets its own random key prefix, whose keys are deleted when the test ends, failed
//! or not; in a cluster the prefix is a hash tag (`{sessionauth-test:<random>}:`), so that every
//! key of the test lives in one slot, as the store needs. The Sentinel and Cluster URLs name
//! long-running topologies (`.ci/run` starts one of each with `scripts/lib/redis-sets.sh`); the
//! harness takes them without passwords.
//!
//! A test that asks for Redis and does not get it fails: the tests that need Redis are
//! `#[ignore]`d instead, so that a plain `cargo test` without Redis reports them as ignored (see
//! the `support` module documentation).

use std::time::Duration;

/// The environment variable that names the Redis server for tests.
pub const REDIS_ENV: &str = "SESSIONAUTH_TEST_REDIS_URL";
/// The environment variable that names the Sentinels (and the service) for tests.
pub const SENTINEL_ENV: &str = "SESSIONAUTH_TEST_SENTINEL_URL";
/// The environment variable that names the seed nodes of the Redis Cluster for tests.
pub const CLUSTER_ENV: &str = "SESSIONAUTH_TEST_REDIS_CLUSTER_URL";

/// How long the reachability check may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// How the test Redis is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server ([`REDIS_ENV`]).
    Server,
    /// A primary found through Sentinel ([`SENTINEL_ENV`]).
    Sentinel,
    /// A Redis Cluster ([`CLUSTER_ENV`]).
    Cluster,
}

impl Topology {
    /// The variable that names it.
    pub fn env(self) -> &'static str {
        match self {
            Self::Server => REDIS_ENV,
            Self::Sentinel => SENTINEL_ENV,
            Self::Cluster => CLUSTER_ENV,
        }
    }

    /// What the variable names, for messages.
    fn what(self) -> &'static str {
        match self {
            Self::Server => "Redis",
            Self::Sentinel => "Redis Sentinel set",
            Self::Cluster => "Redis Cluster",
        }
    }

    /// An example value, for messages.
    fn example(self) -> &'static str {
        match self {
            Self::Server => "redis://127.0.0.1:6379/15",
            Self::Sentinel => "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster",
            Self::Cluster => "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
        }
    }
}

/// The test Redis and this test's key prefix; dropping it deletes the prefix's keys.
pub struct TestRedis {
    /// The URL, from the topology's variable ([`Topology::env`]).
    pub url: String,
    /// `sessionauth-test:<random>:`; in a cluster `{sessionauth-test:<random>}:`.
    pub prefix: String,
    /// How it is deployed.
    pub topology: Topology,
}

impl TestRedis {
    /// The Redis named by [`REDIS_ENV`] with a fresh key prefix. Panics when the variable is
    /// unset or Redis does not answer a `PING`: a Redis test never passes without Redis.
    pub fn new() -> Self {
        Self::on(Topology::Server)
    }

    /// The Redis of `topology`, named by its variable, with a fresh key prefix. Panics when the
    /// variable is unset or the topology does not answer (a Sentinel that names no primary
    /// that answers as one, a cluster whose state is not `ok`): a test never passes without
    /// having talked to the Redis it asked for.
    pub fn on(topology: Topology) -> Self {
        let env = topology.env();
        let what = topology.what();
        let url = std::env::var(env).unwrap_or_else(|_| {
            let why = if std::env::var_os("CI").is_some() {
                format!("CI is set, and the {what} tests must run there")
            } else {
                format!("run without --include-ignored to skip the {what} tests")
            };
            panic!(
                "{env} is not set ({why}); set it, e.g. to {}",
                topology.example()
            )
        });
        let tag = format!("sessionauth-test:{}", random_hex(6));
        let prefix = match topology {
            Topology::Cluster => format!("{{{tag}}}:"),
            Topology::Server | Topology::Sentinel => format!("{tag}:"),
        };
        let redis = Self {
            url,
            prefix,
            topology,
        };
        if let Err(e) = redis.answers() {
            panic!("the {what} that {env} names does not answer: {e}");
        }
        redis
    }

    /// One server answers `PING`; a Sentinel names a primary that answers as one, and a
    /// cluster is `ok`, each primary with a replica online (every write waits for one).
    fn answers(&self) -> Result<(), String> {
        if self.topology == Topology::Server {
            return ping(&self.url);
        }
        for node in self.data_nodes()? {
            let info: String = query(&node, ::redis::cmd("INFO").arg("replication"))?;
            if !info.contains("state=online") {
                return Err(format!(
                    "the primary {node} has no replica online, and every write waits for one"
                ));
            }
        }
        Ok(())
    }

    /// The configuration lines that put a server on this Redis, under this prefix. On Sentinel
    /// and Cluster every write waits for one replica, as by default, but for up to 5 s rather
    /// than 500 ms, so that a machine busy with the rest of the suite does not turn a slow
    /// acknowledgement into a failed case (as in `store_conformance.rs`).
    pub fn store_lines(&self) -> String {
        let mut lines = format!(
            "store = {}\nredis_prefix = {}\n",
            toml_string(&self.url),
            toml_string(&self.prefix)
        );
        if self.topology != Topology::Server {
            lines.push_str("redis_wait_replicas = 1\nredis_wait_timeout = \"5s\"\n");
        }
        lines
    }

    /// The servers that may hold this test's keys: the one server, the primary the Sentinels
    /// name now, or the cluster's primaries.
    fn data_nodes(&self) -> Result<Vec<String>, String> {
        match self.topology {
            Topology::Server => Ok(vec![self.url.clone()]),
            Topology::Sentinel => Sentinels::parse(&self.url)?.primary().map(|p| vec![p]),
            Topology::Cluster => cluster_primaries(&self.url),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(nodes) = self.data_nodes() else {
            return;
        };
        for node in nodes {
            let Ok(client) = ::redis::Client::open(node.as_str()) else {
                continue;
            };
            let Ok(mut conn) = client.get_connection_with_timeout(CONNECT_WAIT) else {
                continue;
            };
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                // In a cluster they share the prefix's hash tag: one slot, one DEL.
                let _: ::redis::RedisResult<()> = ::redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

/// The parts of a `redis+sentinel://host:port[,host:port…]/service[/db]` URL.
struct Sentinels {
    hosts: Vec<String>,
    service: String,
    db: String,
}

impl Sentinels {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis+sentinel://")
            .ok_or_else(|| format!("{url} is not a redis+sentinel:// URL"))?;
        if rest.contains(['@', '?']) {
            return Err("the test harness takes a Sentinel URL without credentials".into());
        }
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url} names no service"))?;
        let (service, db) = path.split_once('/').unwrap_or((path, "0"));
        if service.is_empty() {
            return Err(format!("{url} names no service"));
        }
        Ok(Self {
            hosts: hosts.split(',').map(str::to_owned).collect(),
            service: service.to_owned(),
            db: db.to_owned(),
        })
    }

    /// `redis://<primary>/<db>`: the primary the first Sentinel that answers names, checked to
    /// answer `ROLE` as a master.
    fn primary(&self) -> Result<String, String> {
        let mut why = String::from("no Sentinel listed");
        for host in &self.hosts {
            let addr: Result<(String, u16), String> = query(
                &format!("redis://{host}"),
                ::redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.service),
            );
            let (ip, port) = match addr {
                Ok(addr) => addr,
                Err(e) => {
                    why = format!("Sentinel {host}: {e}");
                    continue;
                }
            };
            let primary = format!("redis://{ip}:{port}/{}", self.db);
            let role: Vec<::redis::Value> = query(&primary, &::redis::cmd("ROLE"))
                .map_err(|e| format!("the primary {ip}:{port} that Sentinel {host} names: {e}"))?;
            return match role.first() {
                Some(::redis::Value::BulkString(b)) if b.as_slice() == b"master" => Ok(primary),
                _ => Err(format!(
                    "{ip}:{port}, which Sentinel {host} names, is not a master"
                )),
            };
        }
        Err(why)
    }
}

/// `redis://<ip>:<port>` of every primary of the cluster the URL's seeds belong to, as the
/// first seed that answers with `cluster_state:ok` lists them (`CLUSTER NODES`).
fn cluster_primaries(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("redis+cluster://")
        .ok_or_else(|| format!("{url} is not a redis+cluster:// URL"))?;
    if rest.contains(['@', '?']) {
        return Err("the test harness takes a Cluster URL without credentials".into());
    }
    let mut why = String::from("no seed node listed");
    for seed in rest.trim_end_matches('/').split(',') {
        let seed_url = format!("redis://{seed}");
        let state = query::<String>(&seed_url, ::redis::cmd("CLUSTER").arg("INFO"));
        match state {
            Ok(info) if info.contains("cluster_state:ok") => {}
            Ok(_) => {
                why = format!("the seed {seed} does not say cluster_state:ok");
                continue;
            }
            Err(e) => {
                why = format!("the seed {seed}: {e}");
                continue;
            }
        }
        let nodes: String = query(&seed_url, ::redis::cmd("CLUSTER").arg("NODES"))
            .map_err(|e| format!("CLUSTER NODES on {seed}: {e}"))?;
        return Ok(nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                let primary = flags.contains("master") && !flags.contains("fail");
                let addr = fields.get(1)?.split('@').next()?;
                primary.then(|| format!("redis://{addr}"))
            })
            .collect());
    }
    Err(why)
}

/// One command to the server at `url`, bounded.
fn query<T: ::redis::FromRedisValue>(url: &str, cmd: &::redis::Cmd) -> Result<T, String> {
    let client = ::redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(CONNECT_WAIT)
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(CONNECT_WAIT))
        .map_err(|e| e.to_string())?;
    cmd.query(&mut conn).map_err(|e| e.to_string())
}

fn ping(url: &str) -> Result<(), String> {
    query::<String>(url, &::redis::cmd("PING")).map(drop)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` as a TOML basic string.
pub fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
