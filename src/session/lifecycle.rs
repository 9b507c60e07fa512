//! [`Sessions`]: the one place where sessions are made, resolved from their tokens and ended,
//! with the rule of who may end which session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::events::{self, EndReason};
use super::purge::Purge;
use super::record::{Credential, Session, SessionId, SessionKind, TokenFamily};
use super::revocation::{Ending, Roster};
use crate::clock::{Clock, Millis};
use crate::directory::{Directory, Principal, UserId};
use crate::store::{Owner, Selector, SessionStore, StoreError};
use crate::token::{RandomError, SessionToken, TokenHash};

/// The longest `User-Agent` kept with a session, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// The store note holding the directory roster last applied.
const ROSTER_NOTE: &str = "applied-directory";
/// The form of that note this build writes and reads.
const ROSTER_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct RosterNote {
    version: u32,
    roster: Roster,
}

/// Why a session operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The token is malformed, unknown, expired, ended, of the wrong family, or its principal is
    /// no longer active.
    #[error("Invalid session")]
    Invalid,
    /// The credential the session would be made with has already expired.
    #[error("The client certificate has expired")]
    CredentialExpired,
    /// The session belongs to another user or app.
    #[error("The session belongs to another user or app")]
    NotYours,
    /// The store failed: the session's fate is unknown.
    #[error("session store failure")]
    Store(#[source] StoreError),
    /// No randomness for a new token.
    #[error("no randomness for a new token")]
    Random(#[source] RandomError),
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            // The app session presented as the credential ended while the mint ran.
            StoreError::ParentEnded => Self::Invalid,
            e => Self::Store(e),
        }
    }
}

/// Where a request that mints a session comes from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The raw `User-Agent` header, if any.
    pub user_agent: Option<&'a str>,
    /// The request's trace id, for the log.
    pub trace_id: &'a str,
}

/// The session lifecycle over one store: minting, resolving, ending, and the purge task, which
/// stops when [`Sessions::close`] is awaited or the value is dropped.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    lifetime: Duration,
    /// How many live sessions one [`Owner`] may hold; a new one past it evicts the oldest.
    max_per_owner: Option<usize>,
    /// The last `User-Agent` stored with a session, shared by the sessions that repeat it:
    /// read without a lock on every mint (`arc-swap` keeps `Arc<str>` behind a thin `Arc`).
    last_user_agent: arc_swap::ArcSwapOption<Arc<str>>,
    purge: parking_lot::Mutex<Option<Purge>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The lifecycle over `store`, with sessions that live for `lifetime` at most, and its purge
    /// task started. Needs a tokio runtime.
    pub fn start(
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
        lifetime: Duration,
        max_per_owner: Option<usize>,
    ) -> Self {
        let purge = Purge::start(store.clone(), clock.clone());
        Self {
            store,
            clock,
            lifetime,
            max_per_owner,
            last_user_agent: arc_swap::ArcSwapOption::empty(),
            purge: parking_lot::Mutex::new(Some(purge)),
        }
    }

    /// Stops the purge (after its current step), waits for it, then closes the store.
    pub async fn close(&self) {
        let purge = self.purge.lock().take();
        if let Some(purge) = purge {
            purge.stop().await;
        }
        self.store.close().await;
    }

    /// The longest a session lives.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The time sessions are measured against.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Makes and stores a session of `kind`. It ends after the configured lifetime or at `cap`
    /// (the client certificate's `notAfter`, the minting app session's end; `None` when only the
    /// lifetime applies), whichever comes first.
    pub async fn mint(
        &self,
        kind: SessionKind,
        credential: Option<Credential>,
        cap: Option<Millis>,
        now: Millis,
        origin: Origin<'_>,
    ) -> Result<SessionToken, SessionError> {
        let lifetime_end = now.saturating_add(self.lifetime);
        let expires = cap.map_or(lifetime_end, |cap| lifetime_end.min(cap));
        if expires <= now {
            return Err(SessionError::CredentialExpired);
        }
        let (token, id) = SessionToken::generate_with::<8>().map_err(SessionError::Random)?;
        let session = Session {
            id: SessionId::from_random(id),
            kind,
            created: now,
            expires,
            client_ip: Some(origin.client.ip()),
            user_agent: origin.user_agent.and_then(|ua| self.user_agent(ua)),
            credential: None,
            chain: Box::default(),
            fingerprint: None,
        }
        .with_credential(credential);
        let owner = Owner::of(&session.kind);
        let keep = self.max_per_owner.unwrap_or(usize::MAX);
        // What the event needs, so that the session itself moves into the store uncloned.
        let (id, kind) = (session.id, session.kind.clone());
        let evicted = self
            .store
            .insert_capped(token.hash(), session, keep)
            .await?;
        events::created(&kind, id, expires, origin.trace_id, origin.client);
        record(evicted, origin.trace_id, |s| {
            if s.is_expired(now) {
                EndReason::Expired
            } else if Owner::of(&s.kind) == owner {
                EndReason::Evicted
            } else {
                EndReason::Cascade
            }
        });
        Ok(token)
    }

    /// The live session a presented token names in `family`. A session whose user or app is no
    /// longer active in `directory` is invalid too.
    pub async fn resolve(
        &self,
        directory: &Directory,
        raw: &str,
        family: TokenFamily,
        now: Millis,
    ) -> Result<(TokenHash, Session), SessionError> {
        let token = SessionToken::parse(raw).ok_or(SessionError::Invalid)?;
        let key = token.hash();
        let session = self
            .store
            .get(&key, now)
            .await?
            .ok_or(SessionError::Invalid)?;
        if !family.includes(&session.kind) || !principals_active(directory, &session.kind) {
            return Err(SessionError::Invalid);
        }
        Ok((key, session))
    }

    /// Logs out the session a presented token names, on behalf of `caller` (the principal the
    /// client certificate names), when [`may_end`] allows it. Returns every session ended: the
    /// named one first, then, for an app session, the on-behalf-of sessions minted with it.
    pub(crate) async fn logout(
        &self,
        directory: &Directory,
        caller: &Principal,
        raw: &str,
        family: TokenFamily,
        now: Millis,
        trace_id: &str,
    ) -> Result<Vec<Session>, SessionError> {
        let (key, session) = self.resolve(directory, raw, family, now).await?;
        if !may_end(caller, &session.kind) {
            return Err(SessionError::NotYours);
        }
        let ended = self.store.remove(&key, now).await?;
        if ended.is_empty() {
            // Another request ended it between our read and our removal.
            return Err(SessionError::Invalid);
        }
        Ok(record(ended, trace_id, |s| {
            if s.id == session.id {
                EndReason::Logout
            } else {
                EndReason::Cascade
            }
        }))
    }

    /// The live sessions that act as `user`, oldest first.
    pub async fn list_user(&self, user: UserId, now: Millis) -> Result<Vec<Session>, SessionError> {
        let mut sessions = self.store.list_user(user, now).await?;
        sessions.sort_by_key(|s| (s.created, s.id.0));
        Ok(sessions)
    }

    /// Ends every live session `selector` names (for `reason`), and the on-behalf-of sessions
    /// minted with the app sessions among them (reason `cascade`); returns them all.
    pub async fn end(
        &self,
        selector: &Selector,
        reason: EndReason,
        now: Millis,
        trace_id: &str,
    ) -> Result<Vec<Session>, SessionError> {
        let ended = self.store.remove_matching(selector, now).await?;
        Ok(record(ended, trace_id, |s| {
            if selector.matches(s) {
                reason
            } else {
                EndReason::Cascade
            }
        }))
    }

    /// Ends what each of `endings` names (see [`revocation`](super::revocation)); returns how
    /// many sessions ended. Every ending is tried even when one fails; the first failure is
    /// returned after the others ran.
    pub async fn apply(
        &self,
        endings: &[Ending],
        now: Millis,
        trace_id: &str,
    ) -> Result<usize, SessionError> {
        let mut count = 0;
        let mut first_error = None;
        for ending in endings {
            match self
                .end(&ending.selector, ending.reason, now, trace_id)
                .await
            {
                Ok(ended) => count += ended.len(),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(count), Err)
    }

    /// How many sessions the store holds per kind ([`SessionStore::live_by_kind`]).
    pub async fn live_by_kind(&self) -> Result<crate::store::KindCounts, StoreError> {
        self.store.live_by_kind(self.now()).await
    }

    /// Whether the store answers and takes a write now ([`SessionStore::probe`]).
    pub async fn probe_store(&self) -> Result<(), StoreError> {
        self.store.probe().await
    }

    /// The directory roster last recorded with [`Sessions::record_roster`] in this store:
    /// what a new directory is compared with, so that what changed while no server ran (or on
    /// another node sharing the store) is ended once. `None` when there is none, or it cannot be
    /// read (logged; the caller falls back on what it has in memory).
    pub async fn applied_roster(&self) -> Option<Roster> {
        let bytes = match self.store.read_note(ROSTER_NOTE).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(error = %crate::chain::Chain(&e), "cannot read the directory last applied");
                return None;
            }
        };
        match serde_json::from_slice::<RosterNote>(&bytes) {
            Ok(note) if note.version == ROSTER_VERSION => Some(note.roster),
            Ok(note) => {
                tracing::warn!(
                    version = note.version,
                    "ignoring a recorded directory of another version"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable recorded directory");
                None
            }
        }
    }

    /// Records `roster` as the directory applied, once every ending it called for is done (a
    /// failure is logged: the next start or reload compares with the previous one again).
    pub async fn record_roster(&self, roster: Roster) {
        let note = RosterNote {
            version: ROSTER_VERSION,
            roster,
        };
        let written = match serde_json::to_vec(&note) {
            Ok(bytes) => self.store.write_note(ROSTER_NOTE, bytes).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the directory applied");
                return;
            }
        };
        if let Err(e) = written {
            tracing::warn!(error = %crate::chain::Chain(&e), "cannot record the directory applied");
        }
    }

    /// Ends the live session with public id `id` when it acts as `user`; returns the sessions
    /// ended (none when there is no such session).
    pub async fn end_by_id(
        &self,
        user: UserId,
        id: SessionId,
        reason: EndReason,
        now: Millis,
        trace_id: &str,
    ) -> Result<Vec<Session>, SessionError> {
        let ended = self.store.remove_by_id(user, id, now).await?;
        Ok(record(ended.into_iter().collect(), trace_id, |_| reason))
    }

    /// The client's `User-Agent`, without control characters, at most
    /// [`MAX_USER_AGENT_CHARS`]. Sessions from the same client share one copy: the last value
    /// seen is reused when it matches.
    fn user_agent(&self, raw: &str) -> Option<Arc<str>> {
        if let Some(ua) = self.last_user_agent.load().as_ref() {
            if ***ua == *raw {
                return Some(Arc::clone(&**ua));
            }
        }
        let clean: String = raw
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT_CHARS)
            .collect();
        if clean.is_empty() {
            return None;
        }
        let ua: Arc<str> = Arc::from(clean);
        if *ua == *raw {
            self.last_user_agent.store(Some(Arc::new(Arc::clone(&ua))));
        }
        Some(ua)
    }
}

/// Who may end which session: a service user its own sessions and key-manager tokens; an app its
/// own app sessions and the on-behalf-of sessions it minted. Nobody else.
pub(crate) fn may_end(caller: &Principal, kind: &SessionKind) -> bool {
    match (caller, kind) {
        (Principal::User(u), SessionKind::User { user } | SessionKind::KeyManager { user }) => {
            u.id == *user
        }
        (Principal::App(a), SessionKind::App { app } | SessionKind::OnBehalfOf { app, .. }) => {
            a.app_id == *app
        }
        _ => false,
    }
}

/// Whether the user and app a session involves are still active.
fn principals_active(directory: &Directory, kind: &SessionKind) -> bool {
    let user_ok = kind
        .user()
        .is_none_or(|u| directory.user(u).is_some_and(|u| u.active));
    let app_ok = kind
        .app()
        .is_none_or(|a| directory.app(a).is_some_and(|a| a.active));
    user_ok && app_ok
}

/// Writes one `ended` event per session, with the reason `reason_of` gives it, and hands them
/// back.
fn record(
    ended: Vec<Session>,
    trace_id: &str,
    reason_of: impl Fn(&Session) -> EndReason,
) -> Vec<Session> {
    for session in &ended {
        events::ended(session, reason_of(session), trace_id);
    }
    ended
}
