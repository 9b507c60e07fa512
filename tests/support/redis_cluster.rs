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
    bus: Vec<u16>,
    procs: Vec<(u16, Child)>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits (bounded) until it serves. Panics when
    /// `redis-server` or `redis-cli` is missing or the cluster does not form.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let all = free_ports(12);
        let (ports, bus) = all.split_at(6);
        let procs = ports
            .iter()
            .zip(bus)
            .map(|(port, bus)| (*port, spawn(dir.path(), *port, *bus)))
            .collect();
        let cluster = Self {
            ports: ports.to_vec(),
            bus: bus.to_vec(),
            procs,
            dir,
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

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.procs.iter_mut().find(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node on `port` again (after [`RedisCluster::kill`]), with its cluster
    /// configuration file: it rejoins, as a replica when its slots were failed over.
    pub fn restart(&mut self, port: u16) {
        let Some(i) = self.ports.iter().position(|p| *p == port) else {
            return;
        };
        let dir = self.dir.path().to_owned();
        let bus = self.bus[i];
        if let Some(slot) = self.procs.iter_mut().find(|(p, _)| *p == port) {
            // The old child was killed and waited for by `kill`; the new one is waited for at
            // drop.
            slot.1 = spawn(&dir, port, bus);
        }
    }

    /// The port of the primary that serves `key`'s slot now, as the first node that answers
    /// among `ports` says (`CLUSTER KEYSLOT`, `CLUSTER NODES`).
    pub fn primary_of(&self, key: &str, ports: &[u16]) -> Option<u16> {
        ports.iter().find_map(|&port| {
            let slot: u16 = query(port, &["CLUSTER", "KEYSLOT", key])?;
            let nodes: String = query(port, &["CLUSTER", "NODES"])?;
            nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let serves = fields.iter().skip(8).any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(s), Ok(e)) if s <= slot && slot <= e)
                });
                let addr = fields.get(1)?.split('@').next()?;
                serves.then(|| addr.rsplit(':').next()?.parse().ok())?
            })
        })
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
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster node on `port` (cluster bus on `bus`), its files in `dir`.
fn spawn(dir: &std::path::Path, port: u16, bus: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("redis-{port}.log")))
        .map_or_else(|_| Stdio::null(), Stdio::from);
    Command::new("redis-server")
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
        .arg(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"))
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
