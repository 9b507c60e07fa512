//! The embedded store under SIGKILL: the real binary is killed in the middle of concurrent
//! authenticate, on-behalf-of and logout traffic, restarted on the same files, and every
//! acknowledged fact must hold: a session whose authenticate got a 200 is valid, a session whose
//! logout got a 200 is a 401, and so is every on-behalf-of (OBO) session minted with an app
//! session whose logout got a 200 (the cascade commits with the logout). Requests cut off by the
//! kill acknowledged nothing; an app logout cut off may have happened or not, but wholly: the app
//! session and its OBO sessions are then all alive or all dead.

// A failed expectation in a test is a panic, in helpers too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use parking_lot::Mutex;
use support::node::{self, Node};
use support::*;

/// How many kill-and-restart cycles one run makes.
const CYCLES: usize = 4;
/// Client connections driving bot load at once.
const WORKERS: usize = 16;
/// Client connections driving app load (app sessions, OBO sessions, app logouts) at once.
const APP_WORKERS: usize = 8;
/// OBO sessions an app worker mints with each fresh app session.
const OBO_PER_APP: usize = 3;
/// The app of the sample directory that may act on behalf of users.
const APP: &str = "demo-app";
/// A user of the sample directory who installed [`APP`] (alice).
const OBO_USER: &str = "2001";
/// Connections a verification spreads its requests over.
const PROBES: usize = 8;

/// What the clients were told, across every cycle.
#[derive(Default)]
struct Ledger {
    /// Authenticated (200) and not since logged out.
    live: HashSet<String>,
    /// Logged out with a 200.
    ended: HashSet<String>,
    /// A logout was sent but its answer was cut off: either outcome is correct.
    unknown: HashSet<String>,
    /// App sessions (by token) whose authenticate got a 200, and what became of them.
    apps: HashMap<String, AppSession>,
    /// Live app sessions made before the last restart that no worker has taken yet: the app
    /// workers mint with them and log them out, so cascades also reach OBO sessions minted
    /// by an earlier run of the process.
    carried: Vec<String>,
    /// OBO mints acknowledged, over every cycle.
    obo_minted: usize,
    /// App logouts acknowledged, over every cycle.
    apps_ended: usize,
}

/// One app session in the [`Ledger`].
struct AppSession {
    /// The OBO sessions minted with it whose mint got a 200.
    obo: Vec<String>,
    fate: Fate,
}

/// What the clients know of an app session's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not logged out.
    Live,
    /// Logged out with a 200: it and its OBO sessions are dead.
    Ended,
    /// A logout was sent and its answer cut off: it and its OBO sessions are all alive or all
    /// dead, and the next verification finds out which.
    Unknown,
}

/// Acknowledged sessions survive SIGKILL, acknowledged logouts stay logged out, and an
/// acknowledged app logout has also ended every OBO session minted with it, over several
/// kill-and-restart cycles of the real binary on one data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sessions_and_logouts_survive_sigkill() {
    let site = Site::with_data_on_disk(Backend::Embedded);
    // Every cycle adds sessions of one bot: no cap, so that none is evicted (the cap has tests
    // of its own, and an eviction would read as a lost session here).
    let options = Options::default().limit("max_sessions_per_user = 0");
    let config = site.write_config(&options, "127.0.0.1:0");
    let ca = site.pki().ca.cert_pem();
    let bot = client_config(ca, Some(&site.pki().client("bot.user")), ClientTls::Default).unwrap();
    let app = client_config(ca, Some(&site.pki().client(APP)), ClientTls::Default).unwrap();
    let anonymous = client_config(ca, None, ClientTls::Default).unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for cycle in 0..CYCLES {
        let node = Node::start(&config).await;
        verify(&node, &anonymous, &ledger, cycle).await;

        // Load: each bot worker authenticates, and logs out every third session it got; each
        // app worker makes app sessions, mints OBO sessions with them, and logs some out.
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (addr, bot, ledger) = (node.addr, bot.clone(), ledger.clone());
                tokio::spawn(async move { drive(addr, bot, ledger, w).await })
            })
            .chain((0..APP_WORKERS).map(|w| {
                let (addr, app, ledger) = (node.addr, app.clone(), ledger.clone());
                tokio::spawn(async move { drive_app(addr, app, ledger, w).await })
            }))
            .collect();
        // Kill at a different point of the load in each cycle, once some work was acknowledged:
        // bot sessions, OBO mints and app logouts.
        let before = {
            let l = ledger.lock();
            (l.live.len(), l.obo_minted, l.apps_ended)
        };
        let wait = Duration::from_millis(150 + 200 * u64::try_from(cycle).unwrap());
        tokio::time::sleep(wait).await;
        node::eventually(Duration::from_secs(20), "acknowledged sessions", || {
            let grown = {
                let l = ledger.lock();
                l.live.len() > before.0 && l.obo_minted > before.1 && l.apps_ended > before.2
            };
            async move { grown.then_some(()) }
        })
        .await;
        node.kill().await;
        for w in workers {
            w.await.unwrap();
        }
        let l = ledger.lock();
        let count = |fate| l.apps.values().filter(|a| a.fate == fate).count();
        say(&format!(
            "crash cycle {cycle}: killed with {} live, {} logged out, {} logouts unanswered; \
             app sessions: {} live, {} logged out, {} logouts unanswered; {} OBO sessions",
            l.live.len(),
            l.ended.len(),
            l.unknown.len(),
            count(Fate::Live),
            count(Fate::Ended),
            count(Fate::Unknown),
            l.obo_minted,
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

/// One app connection's load until the server dies under it, in rounds of three: a fresh app
/// session with [`OBO_PER_APP`] OBO sessions that stays live; another that is then logged out;
/// and an app session [carried](Ledger::carried) over a restart (a fresh one when there is
/// none), with one more OBO session, logged out. Each app session is used by one worker only,
/// one request at a time, so a mint never races the logout of its app session.
async fn drive_app(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    ledger: Arc<Mutex<Ledger>>,
    worker: usize,
) {
    let Ok(mut conn) = Conn::open(addr, tls).await else {
        return;
    };
    for round in 0usize.. {
        let carried = if round % 3 == 2 {
            ledger.lock().carried.pop()
        } else {
            None
        };
        let (session, mints) = match carried {
            Some(session) => (session, 1),
            None => match conn.send(Req::post(APP_AUTH)).await {
                Ok(r) => {
                    let session = token_of(&r);
                    let fresh = AppSession {
                        obo: Vec::new(),
                        fate: Fate::Live,
                    };
                    ledger.lock().apps.insert(session.clone(), fresh);
                    (session, OBO_PER_APP)
                }
                Err(_) => return,
            },
        };
        for _ in 0..mints {
            match conn
                .send(Req::post(&obo_by_id(OBO_USER)).token(&session))
                .await
            {
                Ok(r) => {
                    assert_eq!(
                        r.status,
                        StatusCode::OK,
                        "app worker {worker}: {}",
                        r.text()
                    );
                    let obo = token_of(&r);
                    let mut l = ledger.lock();
                    l.obo_minted += 1;
                    l.apps.get_mut(&session).unwrap().obo.push(obo);
                }
                Err(_) => return,
            }
        }
        if round % 3 == 0 {
            continue;
        }
        // Until the answer arrives, the outcome is unknown.
        ledger.lock().apps.get_mut(&session).unwrap().fate = Fate::Unknown;
        match conn.send(Req::post(LOGOUT).token(&session)).await {
            Ok(r) => {
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "app worker {worker}: {}",
                    r.text()
                );
                let mut l = ledger.lock();
                l.apps_ended += 1;
                l.apps.get_mut(&session).unwrap().fate = Fate::Ended;
            }
            Err(_) => return,
        }
    }
}

/// What a token is, which says how `GET /pod/v2/sessioninfo` shows that it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A session that acts as a user (a bot's, or OBO): 200 while alive.
    User,
    /// An app's own session: 403 while alive (it resolves, but has no user).
    App,
}

impl Kind {
    /// The answer a session of this kind gives while alive, or once ended (401).
    fn status(self, alive: bool) -> StatusCode {
        match (self, alive) {
            (_, false) => StatusCode::UNAUTHORIZED,
            (Self::User, true) => StatusCode::OK,
            (Self::App, true) => StatusCode::FORBIDDEN,
        }
    }
}

/// What a verification expects of one token.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Alive (`true`) or ended; the text says what the clients were told.
    Is(bool, &'static str),
    /// Either: the app session of an unanswered logout.
    Either,
    /// As alive as the token at this index (its app session, [`Expect::Either`]).
    SameAs(usize),
}

/// Every live session answers as alive and every ended one 401, OBO sessions included (those
/// of app sessions logged out with a 200 are ended); an app session whose logout went
/// unanswered is as alive as each of its OBO sessions, and the ledger then records which way it
/// went. Checked over several connections.
async fn verify(
    node: &Node,
    tls: &Arc<rustls::ClientConfig>,
    ledger: &Arc<Mutex<Ledger>>,
    cycle: usize,
) {
    const LIVE: &str = "live";
    const LOGGED_OUT: &str = "logged out";
    const APP_LIVE: &str = "a live app session";
    const APP_ENDED: &str = "an app session logged out";
    const OBO_LIVE: &str = "an OBO session of a live app session";
    const OBO_ENDED: &str = "an OBO session of an app session logged out";
    let mut checks: Vec<(String, Kind, Expect)> = Vec::new();
    // The app sessions whose logout went unanswered, by the index of their check.
    let mut undecided: Vec<(usize, String)> = Vec::new();
    {
        let l = ledger.lock();
        let user = |t: &String, e| (t.clone(), Kind::User, e);
        checks.extend(l.live.iter().map(|t| user(t, Expect::Is(true, LIVE))));
        checks.extend(
            l.ended
                .iter()
                .map(|t| user(t, Expect::Is(false, LOGGED_OUT))),
        );
        for (token, app) in &l.apps {
            let (own, of_obo) = match app.fate {
                Fate::Live => (Expect::Is(true, APP_LIVE), Expect::Is(true, OBO_LIVE)),
                Fate::Ended => (Expect::Is(false, APP_ENDED), Expect::Is(false, OBO_ENDED)),
                Fate::Unknown => {
                    undecided.push((checks.len(), token.clone()));
                    (Expect::Either, Expect::SameAs(checks.len()))
                }
            };
            checks.push((token.clone(), Kind::App, own));
            checks.extend(app.obo.iter().map(|t| user(t, of_obo)));
        }
    }
    let total = checks.len();
    let tokens: Vec<String> = checks.iter().map(|(t, ..)| t.clone()).collect();
    let answers = probe(node, tls, tokens).await;
    let alive = |i: usize| answers[i].0 == checks[i].1.status(true);
    for (i, ((_, kind, expect), (status, text))) in checks.iter().zip(&answers).enumerate() {
        match *expect {
            Expect::Is(live, what) => assert_eq!(
                *status,
                kind.status(live),
                "after restart {cycle}: a token acknowledged as {what} answers {status} {text}"
            ),
            Expect::Either => assert!(
                *status == kind.status(true) || *status == kind.status(false),
                "after restart {cycle}: an app session whose logout went unanswered answers \
                 {status} {text}"
            ),
            Expect::SameAs(app) => assert_eq!(
                alive(i),
                alive(app),
                "after restart {cycle}: an app session whose logout went unanswered answers {}, \
                 one of its OBO sessions {status} {text}: the cascade was not atomic",
                answers[app].0
            ),
        }
    }
    // What was undecided is now known, and must stay so.
    let mut l = ledger.lock();
    let (mut kept, mut ended) = (0, 0);
    for (index, token) in undecided {
        l.apps.get_mut(&token).unwrap().fate = if alive(index) {
            kept += 1;
            Fate::Live
        } else {
            ended += 1;
            Fate::Ended
        };
    }
    l.carried = l
        .apps
        .iter()
        .filter(|(_, a)| a.fate == Fate::Live)
        .map(|(t, _)| t.clone())
        .collect();
    say(&format!(
        "crash cycle {cycle}: after restart, {total} acknowledged facts hold \
         ({} app sessions, {} OBO sessions; of the unanswered app logouts, {ended} ended their \
         app session and its OBO sessions whole, {kept} left them all alive)",
        l.apps.len(),
        l.obo_minted,
    ));
}

/// The status and body of `GET /pod/v2/sessioninfo` for each of `tokens`, in order, asked over
/// [`PROBES`] connections at once.
async fn probe(
    node: &Node,
    tls: &Arc<rustls::ClientConfig>,
    tokens: Vec<String>,
) -> Vec<(StatusCode, String)> {
    let chunks: Vec<Vec<String>> = tokens
        .chunks(tokens.len().div_ceil(PROBES).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (addr, tls) = (node.addr, tls.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr, tls).await.unwrap();
                let mut answers = Vec::with_capacity(chunk.len());
                for token in chunk {
                    let r = conn
                        .send(Req::get(SESSIONINFO).token(&token))
                        .await
                        .unwrap();
                    answers.push((r.status, r.text()));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tokens.len());
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers
}
