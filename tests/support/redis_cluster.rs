//! A six-node Redis Cluster started by the test itself (three primaries, one replica each:
//! `redis-server --cluster-enabled yes` ×6, then `redis-cli --cluster create … --cluster-replicas
//! 1 --cluster-yes`), every node and cluster-bus port a free loopback port, in a temporary
//! folder. Dropping the [`RedisCluster`] kills every node (a failed test unwinds through the
//! drop too).
//!
//! `redis-server` and `redis-cli` must be on the `PATH`: a test that asks for a cluster and
//! cannot start one fails. Like the other Redis tests these are `#[ignore]`d (`.ci/run`
//! includes them and installs both).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sentinel::free_ports;

/// How long the cluster may take to form (every node `cluster_state:ok`, every replica synced).
const START_WAIT: Duration = Duration::from_secs(30);

/// Six loopback nodes forming one cluster; see the module documentation.
pub struct RedisCluster {
    /// The nodes' client ports.
    pub ports: Vec<u16>,
    procs: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits (bounded) until it serves. Panics when
    /// `redis-server` or `redis-cli` is missing or the cluster does not form.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let all = free_ports(12);
        let (ports, bus) = all.split_at(6);
        let mut procs = Vec::new();
        for (port, bus) in ports.iter().zip(bus) {
            let log = std::fs::File::create(dir.path().join(format!("redis-{port}.log")))
                .map_or_else(|_| Stdio::null(), Stdio::from);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
            procs.push(child);
        }
        let cluster = Self {
            ports: ports.to_vec(),
            procs,
            _dir: dir,
        };
        cluster
            .wait_for(|c| {
                c.ports
                    .iter()
                    .all(|p| query::<String>(*p, &["PING"]).is_some())
            })
            .await;
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output();
        let created = tokio::time::timeout(START_WAIT, created)
            .await
            .expect("redis-cli --cluster create did not finish")
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it installed?): {e}"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_for(Self::is_ready).await;
        cluster
    }

    /// `redis+cluster://127.0.0.1:<p1>,…`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    async fn wait_for(&self, ready: impl Fn(&Self) -> bool) {
        let started = Instant::now();
        while !ready(self) {
            assert!(
                started.elapsed() < START_WAIT,
                "the Redis Cluster did not come up within {START_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node sees the cluster as `ok`, and each of the three primaries has its replica
    /// online (a replica synced, not only assigned).
    fn is_ready(&self) -> bool {
        let mut primaries_with_replica = 0;
        for &port in &self.ports {
            let ok = query::<String>(port, &["CLUSTER", "INFO"])
                .is_some_and(|info| info.contains("cluster_state:ok"));
            let Some(replication) = query::<String>(port, &["INFO", "replication"]) else {
                return false;
            };
            if !ok {
                return false;
            }
            if replication.contains("role:master")
                && replication.contains("connected_slaves:1")
                && replication.contains("state=online")
            {
                primaries_with_replica += 1;
            }
        }
        primaries_with_replica == 3
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One command to the node on `port`, bounded; `None` when it fails.
fn query<T: ::redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut cmd = ::redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).ok()
}
