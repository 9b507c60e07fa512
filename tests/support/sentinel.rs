//! A replicated Redis behind Sentinel, started by the test itself: one primary and two replicas
//! (`redis-server --replicaof`) and three Sentinels (`redis-server <conf> --sentinel`, quorum 2),
//! each on a free loopback port, in a temporary folder. Dropping the [`SentinelSet`] kills every
//! process it started (a failed test unwinds through the drop too).
//!
//! `redis-server` must be on the `PATH`: a test that asks for a set and cannot start one fails.
//! These tests are `#[ignore]`d like the other Redis tests (`.ci/run` includes them and installs
//! `redis-server`).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The name the Sentinels monitor the primary under.
pub const SERVICE: &str = "sessionauth-test";
/// `down-after-milliseconds`: how long the primary may be silent before a Sentinel calls it
/// down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// `failover-timeout`.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long the set may take to start (servers up, replicas synced, Sentinels aware of each
/// other and of both replicas).
const START_WAIT: Duration = Duration::from_secs(30);

/// An ACL user the data nodes require instead of the default user (which is turned off), and
/// with which the replicas and the Sentinels log in to them.
#[derive(Clone, Copy)]
pub struct Acl {
    /// The user name.
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
}

/// Three Redis servers and three Sentinels on loopback; see the module documentation.
pub struct SentinelSet {
    /// The port of the server that started as the primary.
    pub primary: u16,
    /// The ports of the two servers that started as replicas.
    pub replicas: [u16; 2],
    /// The Sentinels' ports.
    pub sentinels: [u16; 3],
    acl: Option<Acl>,
    procs: Mutex<Vec<(u16, Child)>>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the set and waits (bounded) until it is ready. Panics when `redis-server` is
    /// missing or the set does not come up.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// [`SentinelSet::start`], the data nodes requiring `acl`'s user when given.
    pub async fn start_with(acl: Option<Acl>) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let ports = free_ports(6);
        let (primary, replicas, sentinels) = (
            ports[0],
            [ports[1], ports[2]],
            [ports[3], ports[4], ports[5]],
        );
        let mut procs = Vec::new();
        procs.push((
            primary,
            spawn_server(dir.path(), port_args(primary, None, acl)),
        ));
        for port in replicas {
            procs.push((
                port,
                spawn_server(dir.path(), port_args(port, Some(primary), acl)),
            ));
        }
        let sentinel_auth = acl.map_or_else(String::new, |acl| {
            format!(
                "sentinel auth-user {SERVICE} {}\nsentinel auth-pass {SERVICE} {}\n",
                acl.user, acl.password
            )
        });
        for port in sentinels {
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SERVICE} {down}\n\
                     sentinel failover-timeout {SERVICE} {failover}\n\
                     sentinel parallel-syncs {SERVICE} 2\n{sentinel_auth}",
                    dir = dir.path().display(),
                    down = DOWN_AFTER.as_millis(),
                    failover = FAILOVER_TIMEOUT.as_millis(),
                ),
            )
            .expect("write the Sentinel configuration");
            let log = dir.path().join(format!("sentinel-{port}.log"));
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(log_file(&log))
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel: {e}"));
            procs.push((port, child));
        }
        let set = Self {
            primary,
            replicas,
            sentinels,
            acl,
            procs: Mutex::new(procs),
            _dir: dir,
        };
        set.wait_ready().await;
        set
    }

    /// `redis+sentinel://127.0.0.1:<s1>,…/<service>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// Kills the process on `port` with SIGKILL (no shutdown, no save).
    pub fn kill(&self, port: u16) {
        let mut procs = self.procs.lock();
        if let Some((_, child)) = procs.iter_mut().find(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The primary's port as the first answering Sentinel names it now.
    pub fn primary_now(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|&port| {
            let addr: Vec<String> = query(
                port,
                None,
                &["SENTINEL", "get-master-addr-by-name", SERVICE],
            )?;
            addr.get(1)?.parse().ok()
        })
    }

    /// Waits until every server answers, both replicas are synced, and every Sentinel knows
    /// both replicas and the two other Sentinels.
    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.is_ready() {
                return;
            }
            assert!(
                started.elapsed() < START_WAIT,
                "the Sentinel set did not come up within {START_WAIT:?} (logs in the temporary \
                 folder)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn is_ready(&self) -> bool {
        let synced = self.replicas.iter().all(|&port| {
            query::<String>(port, self.acl, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        synced
            && self.sentinels.iter().all(|&port| {
                let Some(master) =
                    query::<HashMap<String, String>>(port, None, &["SENTINEL", "MASTER", SERVICE])
                else {
                    return false;
                };
                master.get("num-slaves").map(String::as_str) == Some("2")
                    && master.get("num-other-sentinels").map(String::as_str) == Some("2")
            })
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (_, child) in self.procs.lock().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One command to the server on `port`, bounded; `None` when it fails.
fn query<T: ::redis::FromRedisValue>(port: u16, acl: Option<Acl>, args: &[&str]) -> Option<T> {
    let login = acl.map_or_else(String::new, |a| format!("{}:{}@", a.user, a.password));
    let client = ::redis::Client::open(format!("redis://{login}127.0.0.1:{port}")).ok()?;
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

/// The arguments of a Redis server on `port`: a replica of `primary` when given, requiring
/// `acl`'s user (the default user off) when given.
fn port_args(port: u16, primary: Option<u16>, acl: Option<Acl>) -> (u16, Vec<String>) {
    let mut args = Vec::new();
    if let Some(primary) = primary {
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
    }
    if let Some(acl) = acl {
        // Each word its own argument: redis-server joins them into the config line.
        args.extend([
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
            acl.user.into(),
            "on".into(),
            format!(">{}", acl.password),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
            "--masteruser".into(),
            acl.user.into(),
            "--masterauth".into(),
            acl.password.into(),
        ]);
    }
    (port, args)
}

/// A Redis server on a port with extra arguments ([`port_args`]): nothing saved to disk, and a
/// replica synced at once (no diskless-sync delay).
fn spawn_server(dir: &Path, (port, extra): (u16, Vec<String>)) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .args(&extra);
    cmd.stdout(log_file(&dir.join(format!("redis-{port}.log"))))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"))
}

fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// `n` distinct loopback ports nothing listens on now (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}
