//! The embedded store under SIGKILL: the real binary is killed in the middle of concurrent
//! authenticate and logout traffic, restarted on the same files, and every acknowledged fact
//! must hold: a session whose authenticate got a 200 is valid, a session whose logout got a 200
//! is a 401. Requests cut off by the kill acknowledged nothing and are not checked.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use parking_lot::Mutex;
use support::node::{self, Node};
use support::*;

/// How many kill-and-restart cycles one run makes.
const CYCLES: usize = 4;
/// Client connections driving load at once.
const WORKERS: usize = 16;

/// What the clients were told, across every cycle.
#[derive(Default)]
struct Ledger {
    /// Authenticated (200) and not since logged out.
    live: HashSet<String>,
    /// Logged out with a 200.
    ended: HashSet<String>,
    /// A logout was sent but its answer was cut off: either outcome is correct.
    unknown: HashSet<String>,
}

/// Acknowledged sessions survive SIGKILL, and acknowledged logouts stay logged out, over
/// several kill-and-restart cycles of the real binary on one data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sessions_and_logouts_survive_sigkill() {
    let site = Site::with_data_on_disk(Backend::Embedded);
    let config = site.write_config(&Options::default(), "127.0.0.1:0");
    let ca = site.pki().ca.cert_pem();
    let bot = client_config(ca, Some(&site.pki().client("bot.user")), ClientTls::Default).unwrap();
    let anonymous = client_config(ca, None, ClientTls::Default).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for cycle in 0..CYCLES {
        let node = Node::start(&config).await;
        verify(&node, &anonymous, &ledger, cycle).await;

        // Load: each worker authenticates, and logs out every third session it got.
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (addr, bot, ledger) = (node.addr, bot.clone(), ledger.clone());
                tokio::spawn(async move { drive(addr, bot, ledger, w).await })
            })
            .collect();
        // Kill at a different point of the load in each cycle, once some work was acknowledged.
        let before = ledger.lock().live.len();
        let wait = Duration::from_millis(150 + 200 * u64::try_from(cycle).unwrap());
        tokio::time::sleep(wait).await;
        node::eventually(Duration::from_secs(20), "acknowledged sessions", || {
            let grown = ledger.lock().live.len() > before;
            async move { grown.then_some(()) }
        })
        .await;
        node.kill().await;
        for w in workers {
            w.await.unwrap();
        }
        let l = ledger.lock();
        say(&format!(
            "crash cycle {cycle}: killed with {} live, {} logged out, {} logouts unanswered",
            l.live.len(),
            l.ended.len(),
            l.unknown.len()
        ));
    }
    let node = Node::start(&config).await;
    verify(&node, &anonymous, &ledger, CYCLES).await;
}

/// One client connection's load until the server dies under it.
async fn drive(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    ledger: Arc<Mutex<Ledger>>,
    worker: usize,
) {
    let Ok(mut conn) = Conn::open(addr, tls).await else {
        return;
    };
    let mut mine: Vec<String> = Vec::new();
    for i in 0usize.. {
        if i % 3 == 2 {
            if let Some(token) = mine.pop() {
                // Until the answer arrives, the outcome is unknown.
                {
                    let mut l = ledger.lock();
                    l.live.remove(&token);
                    l.unknown.insert(token.clone());
                }
                match conn.send(Req::post(LOGOUT).token(&token)).await {
                    Ok(r) => {
                        assert_eq!(r.status, StatusCode::OK, "worker {worker}: {}", r.text());
                        let mut l = ledger.lock();
                        l.unknown.remove(&token);
                        l.ended.insert(token);
                    }
                    Err(_) => return,
                }
                continue;
            }
        }
        match conn.send(Req::post(AUTH)).await {
            Ok(r) => {
                let token = token_of(&r);
                ledger.lock().live.insert(token.clone());
                mine.push(token);
            }
            Err(_) => return,
        }
    }
}

/// Every live session answers 200 and every ended one 401, checked over several connections.
async fn verify(
    node: &Node,
    tls: &Arc<rustls::ClientConfig>,
    ledger: &Arc<Mutex<Ledger>>,
    cycle: usize,
) {
    let (live, ended): (Vec<String>, Vec<String>) = {
        let l = ledger.lock();
        (
            l.live.iter().cloned().collect(),
            l.ended.iter().cloned().collect(),
        )
    };
    let checks: Vec<(String, StatusCode)> = live
        .into_iter()
        .map(|t| (t, StatusCode::OK))
        .chain(ended.into_iter().map(|t| (t, StatusCode::UNAUTHORIZED)))
        .collect();
    let total = checks.len();
    let chunks: Vec<Vec<(String, StatusCode)>> = checks
        .chunks(total.div_ceil(8).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (addr, tls) = (node.addr, tls.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr, tls).await.unwrap();
                for (token, want) in chunk {
                    let r = conn
                        .send(Req::get(SESSIONINFO).token(&token))
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status,
                        want,
                        "after restart {cycle}: a token acknowledged as {} answers {} {}",
                        if want == StatusCode::OK {
                            "live"
                        } else {
                            "logged out"
                        },
                        r.status,
                        r.text()
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    say(&format!(
        "crash cycle {cycle}: after restart, {total} acknowledged facts hold"
    ));
}
