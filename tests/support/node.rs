//! The built `sessionauth` binary: [`run`] to completion, or [`Node::start`] serving (then
//! SIGTERMed or SIGKILLed). A node listens where its configuration says, usually
//! `127.0.0.1:0`; its address is read from the line it logs once bound ("sessionauth listening
//! (https)" with `addr=`, or `"addr":` in JSON), so tests never guess a free port. Every wait is
//! bounded. The binary sees none of the `SESSIONAUTH_*` variables of the tests' environment,
//! only those a test passes.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long one run of the binary may take (start-up included) before the test fails.
pub const RUN_WAIT: Duration = Duration::from_secs(30);

/// How a finished run of the binary ended.
pub struct Run {
    /// The exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Every environment variable the binary reads: the tests' own environment never reaches it;
/// a test that means to set one passes it.
pub const ENV_VARS: [&str; 9] = [
    "SESSIONAUTH_CONFIG",
    "SESSIONAUTH_LISTEN",
    "SESSIONAUTH_DIRECTORY",
    "SESSIONAUTH_DATA_DIR",
    "SESSIONAUTH_CERTS",
    "SESSIONAUTH_STORE",
    "SESSIONAUTH_LOG",
    "SESSIONAUTH_LOG_FORMAT",
    "SESSIONAUTH_P12_PASSWORD",
];

fn command(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionauth"));
    cmd.args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for var in ENV_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `sessionauth <args>` in `cwd` to completion with the default log filter (bounded; the
/// child is killed when it does not exit).
pub async fn run(args: &[&str], cwd: &Path) -> Run {
    run_with_env(args, cwd, &[]).await
}

/// Runs `sessionauth <args>` in `cwd` to completion with these environment variables set.
pub async fn run_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = command(args, cwd);
    cmd.envs(env.iter().copied());
    let output = tokio::time::timeout(RUN_WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("sessionauth {args:?} did not exit"))
        .expect("run sessionauth");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `sessionauth serve` process. Dropping it kills it.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `sessionauth serve --config <config>` in the config's folder and waits (bounded)
    /// for its "listening" line. The access log and session events are left out of its log.
    pub async fn start(config: &Path) -> Self {
        Self::start_with(config, &[], &[]).await
    }

    /// Starts `sessionauth serve --config <config> <args>` in the config's folder with these
    /// environment variables (`SESSIONAUTH_LOG` defaults to leaving the access log and session
    /// events out) and waits (bounded) for its "listening" line, in text or JSON.
    pub async fn start_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let cwd = config.parent().unwrap_or_else(|| Path::new("."));
        let mut child = command(&["serve", "--config"], cwd)
            .arg(config)
            .args(args)
            .env(
                "SESSIONAUTH_LOG",
                "info,sessionauth::access=warn,sessionauth::session=warn",
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessionauth");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let keep = log.clone();
        // Drains stderr for the life of the process (a full pipe would stall the server).
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("sessionauth listening (https)") {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(parse_addr(&line));
                    }
                }
                let mut log = keep.lock();
                if log.len() < 10_000 {
                    log.push(line);
                }
            }
        });
        match tokio::time::timeout(RUN_WAIT, addr_rx).await {
            Ok(Ok(Some(addr))) => Self { child, addr, log },
            other => {
                let _ = child.kill().await;
                panic!(
                    "sessionauth did not report its address ({other:?}); its log:\n{}",
                    log.lock().join("\n")
                );
            }
        }
    }

    /// SIGKILL: no shutdown code runs. Returns once the process is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM to this child (by its own pid) and waits (bounded) for it to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success());
        tokio::time::timeout(RUN_WAIT, self.child.wait())
            .await
            .expect("sessionauth exits after SIGTERM")
            .expect("wait for sessionauth")
    }

    /// Waits (bounded by `limit`) for the process to exit on its own; its status, or `None`
    /// when it is still running.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for sessionauth"))
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().join("\n")
    }
}

/// The `addr` field of the "listening" line: `addr=…` in text, `"addr":"…"` in JSON.
fn parse_addr(line: &str) -> Option<SocketAddr> {
    if let Some(at) = line.find("\"addr\":\"") {
        let rest = &line[at + "\"addr\":\"".len()..];
        return rest[..rest.find('"')?].parse().ok();
    }
    let at = line.find("addr=")? + "addr=".len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Calls `f` until it returns `Some` or `limit` passes, 100 ms apart; the test fails with `what`
/// on timeout. For waiting on another process, which cannot be told to hurry.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
