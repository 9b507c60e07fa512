//! Load tools for `scripts/bench-stores.sh`.
//!
//! - `store_bench http`: keep-alive load at a running server over mTLS. Logout needs a fresh
//!   token per request, which a generic load generator (oha) cannot send, so this tool first
//!   authenticates for `--duration` seconds on `--connections` connections (collecting every
//!   token, and reporting that rate too), then logs every token out on the same connections and
//!   reports that rate. Any answer other than 200 is counted and makes the exit status 1.
//! - `store_bench fill`: writes `--sessions` live sessions straight into an embedded store's
//!   data directory (through [`EmbeddedStore`], so with the same group commit), to measure
//!   start-up time and memory with a large store.
//!
//! - `store_bench redis`: the store API straight at a Redis URL of any form (`redis://`,
//!   `redis+sentinel://`, `redis+cluster://`), no HTTP: `--tasks` concurrent inserts for
//!   `--duration` seconds, then every session removed, each write waiting for
//!   `--wait-replicas` replicas (the URL's default when absent): what a replica wait or a
//!   cluster costs a store operation. Keys go under a random prefix, removed by the run.
//!
//! Output ends with one `RESULT key=value ...` line for scripts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sessionauth::clock::{Clock as _, SystemClock};
use sessionauth::directory::UserId;
use sessionauth::session::{Session, SessionId, SessionKind};
use sessionauth::store::{
    Census as _, EmbeddedStore, RedisStore, RedisUrl, ReplicaWait, SessionStore as _,
};
use sessionauth::token::SessionToken;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Authenticate for a while on keep-alive connections, then log every token out.
    Http {
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
        /// The dev PKI folder (ca.pem, <cn>.pem, <cn>-key.pem).
        #[arg(long)]
        certs: PathBuf,
        /// The client certificate's CN (a service user).
        #[arg(long, default_value = "bot.user")]
        cn: String,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds of authenticate load (the logout phase then takes what it takes).
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Insert, then remove, sessions straight through a Redis store.
    Redis {
        /// The store URL (redis://, redis+sentinel://, redis+cluster://).
        #[arg(long)]
        url: String,
        /// Concurrent operations.
        #[arg(long, default_value_t = 32)]
        tasks: usize,
        /// Seconds of inserts (the removal phase then takes what it takes).
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Replicas each write waits for (0: none); the URL's default when absent.
        #[arg(long)]
        wait_replicas: Option<u32>,
    },
    /// Fill an embedded store with live sessions.
    Fill {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// How many sessions.
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
    },
    /// Open an embedded store (its snapshot read and its journal replayed), say how long that
    /// took and how many sessions it holds, and close it.
    Open {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::Http {
                addr,
                certs,
                cn,
                connections,
                duration,
            } => {
                http(
                    addr,
                    &certs,
                    &cn,
                    connections,
                    Duration::from_secs(duration),
                )
                .await
            }
            Cmd::Fill { data_dir, sessions } => fill(&data_dir, sessions).await,
            Cmd::Open { data_dir } => open(&data_dir).await,
            Cmd::Redis {
                url,
                tasks,
                duration,
                wait_replicas,
            } => redis(&url, tasks, Duration::from_secs(duration), wait_replicas).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn http(
    addr: SocketAddr,
    certs: &Path,
    cn: &str,
    connections: usize,
    duration: Duration,
) -> Result<bool, BoxError> {
    let tls = client_config(certs, cn)?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr, tls.clone()).await?);
    }

    // Phase 1: authenticate until the deadline; keep every token.
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    match conn
                        .call(Method::POST, "/sessionauth/v1/authenticate", None)
                        .await
                    {
                        Ok((StatusCode::OK, body)) => {
                            let v: serde_json::Value = serde_json::from_slice(&body)?;
                            match v["token"].as_str() {
                                Some(t) => tokens.push(t.to_owned()),
                                None => errors += 1,
                            }
                        }
                        Ok(_) => errors += 1,
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, BoxError>((conn, tokens, errors))
            })
        })
        .collect();
    let mut conns = Vec::new();
    let mut tokens = Vec::new();
    let mut auth_errors = 0;
    for t in tasks {
        let (conn, mine, errors) = t.await??;
        conns.push(conn);
        tokens.push(mine);
        auth_errors += errors;
    }
    let auth_elapsed = started.elapsed();
    let authenticated: usize = tokens.iter().map(Vec::len).sum();
    let auth_rps = per_second(authenticated + auth_errors, auth_elapsed);
    println!(
        "authenticate: {authenticated} ok, {auth_errors} errors in {:.2}s = {auth_rps:.0} req/s",
        auth_elapsed.as_secs_f64()
    );

    // Phase 2: log every token out, each on the connection that made it.
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(tokens)
        .map(|(mut conn, tokens)| {
            tokio::spawn(async move {
                let mut errors = 0usize;
                for token in &tokens {
                    match conn
                        .call(Method::POST, "/sessionauth/v1/logout", Some(token))
                        .await?
                    {
                        (StatusCode::OK, _) => {}
                        _ => errors += 1,
                    }
                }
                Ok::<_, BoxError>(errors)
            })
        })
        .collect();
    let mut logout_errors = 0;
    for t in tasks {
        logout_errors += t.await??;
    }
    let logout_elapsed = started.elapsed();
    let logout_rps = per_second(authenticated, logout_elapsed);
    println!(
        "logout: {authenticated} requests, {logout_errors} errors in {:.2}s = {logout_rps:.0} req/s",
        logout_elapsed.as_secs_f64()
    );
    println!(
        "RESULT authenticate_rps={auth_rps:.0} logout_rps={logout_rps:.0} requests={authenticated} errors={}",
        auth_errors + logout_errors
    );
    Ok(auth_errors + logout_errors == 0)
}

async fn redis(
    url: &str,
    tasks: usize,
    duration: Duration,
    wait_replicas: Option<u32>,
) -> Result<bool, BoxError> {
    let url = RedisUrl::parse(url)?;
    let wait = match wait_replicas {
        None => ReplicaWait::default_for(&url),
        Some(0) => None,
        Some(n) => ReplicaWait::new(n, Duration::from_millis(500)),
    };
    let prefix = format!("store-bench:{}:", SessionId::generate()?.0);
    let store = Arc::new(RedisStore::open_with(&url, &prefix, wait)?);
    let now = SystemClock.now();
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut keys = Vec::new();
                while started.elapsed() < duration {
                    let session = Session {
                        id: SessionId::generate()?,
                        kind: SessionKind::User { user: UserId(1001) },
                        created: now,
                        expires: now.saturating_add(Duration::from_secs(3600)),
                        client_ip: None,
                        user_agent: Some("store_bench redis".into()),
                        credential: None,
                        chain: Box::default(),
                        fingerprint: None,
                    };
                    let key = SessionToken::generate()?.hash();
                    store.insert(key, session).await?;
                    keys.push(key);
                }
                Ok::<_, BoxError>(keys)
            })
        })
        .collect();
    let mut per_task = Vec::new();
    for w in workers {
        per_task.push(w.await??);
    }
    let inserted: usize = per_task.iter().map(Vec::len).sum();
    let insert_rps = inserted as f64 / started.elapsed().as_secs_f64();
    let removing = Instant::now();
    let workers: Vec<_> = per_task
        .into_iter()
        .map(|keys| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ended = 0usize;
                for key in keys {
                    ended += store.remove(&key, now).await?.len();
                }
                Ok::<_, BoxError>(ended)
            })
        })
        .collect();
    let mut removed = 0;
    for w in workers {
        removed += w.await??;
    }
    let remove_rps = removed as f64 / removing.elapsed().as_secs_f64();
    let left = store.count().await?;
    println!(
        "{url}: {inserted} inserts at {insert_rps:.0}/s, {removed} removals at {remove_rps:.0}/s, \
         {tasks} tasks, replica wait {:?}, {left} left",
        wait.map(|w| w.replicas())
    );
    println!(
        "RESULT insert_rps={insert_rps:.0} remove_rps={remove_rps:.0} inserted={inserted} \
         removed={removed}"
    );
    Ok(removed == inserted && left == 0)
}

async fn fill(data_dir: &Path, sessions: usize) -> Result<bool, BoxError> {
    let store = Arc::new(EmbeddedStore::open(data_dir)?);
    let now = SystemClock.now();
    let started = Instant::now();
    // Many inserts in flight at once: each group commit carries thousands.
    let workers = 4096.min(sessions.max(1));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = w;
                while i < sessions {
                    let user = UserId(1_000_000 + i64::try_from(i % 10_000).unwrap_or(0));
                    let session = Session {
                        id: SessionId::generate()?,
                        kind: SessionKind::User { user },
                        created: now,
                        expires: now.saturating_add(Duration::from_secs(24 * 3600)),
                        client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
                        user_agent: Some("store_bench fill".into()),
                        credential: None,
                        chain: Box::default(),
                        fingerprint: None,
                    };
                    store
                        .insert(SessionToken::generate()?.hash(), session)
                        .await?;
                    i += workers;
                }
                Ok::<_, BoxError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let count = store.count().await?;
    let elapsed = started.elapsed();
    println!(
        "filled {} with {sessions} sessions in {:.1}s ({:.0}/s); it holds {count}",
        store.path().display(),
        elapsed.as_secs_f64(),
        per_second(sessions, elapsed)
    );
    println!("RESULT sessions={count}");
    Ok(count >= sessions)
}

async fn open(data_dir: &Path) -> Result<bool, BoxError> {
    // The store's own start-up line (how long reading and indexing took) goes to stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let rss_before = rss_kib();
    let started = Instant::now();
    let store = EmbeddedStore::open(data_dir)?;
    let elapsed = started.elapsed();
    let count = store.count().await?;
    let grew = rss_kib().saturating_sub(rss_before) * 1024;
    let per_session = grew.checked_div(count).unwrap_or(0);
    store.close().await;
    println!(
        "opened {} in {} ms; it holds {count} sessions; resident memory grew {} MiB ({per_session} bytes a session)",
        store.path().display(),
        elapsed.as_millis(),
        grew >> 20
    );
    println!(
        "RESULT open_ms={} sessions={count} rss_bytes_per_session={per_session}",
        elapsed.as_millis()
    );
    Ok(true)
}

/// This process's resident memory (Linux `/proc/self/status`; 0 where unreadable).
fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn per_second(n: usize, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)] // a rate to print
    let n = n as f64;
    n / d.as_secs_f64().max(1e-9)
}

fn client_config(certs: &Path, cn: &str) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in sessionauth::tls::read_certs(&certs.join("ca.pem"))? {
        roots.add(ca)?;
    }
    let chain = sessionauth::tls::read_certs(&certs.join(format!("{cn}.pem")))?;
    let key = sessionauth::tls::read_key(&certs.join(format!("{cn}-key.pem")))?;
    let config = rustls::ClientConfig::builder_with_provider(sessionauth::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// One keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Self, BoxError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        if let Some(token) = token {
            req = req.header("sessionToken", token);
        }
        self.sender.ready().await?;
        let res = self
            .sender
            .send_request(req.body(Full::new(Bytes::new()))?)
            .await?;
        let status = res.status();
        Ok((status, res.into_body().collect().await?.to_bytes()))
    }
}
