//! The trust the server runs on: the directory, the CRLs and the TLS configuration (server
//! certificate and key, client CAs, CRLs), each loaded and validated whole, and replaced
//! atomically on reload ([`Reloader`]).
//!
//! A reload (SIGHUP, or [`ReloadHandle::reload`] in tests) reads every file again. When anything
//! is invalid, nothing changes: the error names the file and the server keeps serving on what it
//! had. Otherwise the new TLS configuration serves the handshakes that start from then on, the
//! new directory the requests that start from then on (requests and connections in flight
//! finish with what they started with), and the sessions the change revokes are ended once
//! ([`crate::session::revocation`]): those of principals deactivated, removed or renamed, the
//! on-behalf-of sessions an uninstall or a withdrawn permission concerns, and those minted with
//! a certificate the new CRLs revoke.
//!
//! CRLs named by URL are fetched again every `tls.crl_refresh`. A refresh that fails keeps the
//! last good set and says so in the log; a good one replaces the set whole.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::{mpsc, oneshot};

use crate::chain::Chain;
use crate::config::{Config, DirectorySource};
use crate::crl::{CrlError, CrlLimits, CrlSet};
use crate::directory::{Directory, DirectoryError};
use crate::http::Api;
use crate::session::revocation::{self, Ending, Roster};
use crate::session::{CredentialId, EndReason};
use crate::store::Selector;
use crate::tls::TlsError;

/// Why new trust could not be loaded; the server keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The directory did not load.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// A CRL did not load.
    #[error(transparent)]
    Crl(#[from] CrlError),
    /// The TLS material did not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Loads the configured directory and applies the key-folder rule; returns it with the key
/// files the rule adopted.
pub(crate) fn load_directory(config: &Config) -> Result<(Directory, Vec<PathBuf>), TrustError> {
    let mut directory = match &config.directory {
        DirectorySource::Embedded => Directory::embedded_sample()?,
        DirectorySource::File(path) => Directory::from_file(path)?,
    };
    let adopted = match &config.public_key_dir {
        Some(dir) => directory.use_key_folder(dir)?,
        None => Vec::new(),
    };
    Ok((directory, adopted))
}

/// Loads the configured CRLs, from a thread of its own (URLs are fetched with a runtime of its
/// own), so that start-up can load them before any port is bound, inside a runtime or not.
pub(crate) fn load_crls_blocking(config: &Config) -> Result<CrlSet, TrustError> {
    if config.tls.crl.is_empty() {
        return Ok(CrlSet::default());
    }
    let sources = config.tls.crl.clone();
    let loaded = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CrlError::Runtime(Arc::new(e)))?;
                runtime.block_on(CrlSet::load(&sources, &CrlLimits::default()))
            })
            .join()
    });
    match loaded {
        Ok(result) => Ok(result?),
        // The loader panicked: let the panic continue here, as if it had run on this thread.
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Users and apps in the new directory.
    pub principals: usize,
    /// The revocations the change made (one per principal or credential concerned).
    pub endings: usize,
    /// Sessions ended.
    pub ended: usize,
    /// CRLs loaded, and the certificates they revoke.
    pub crls: usize,
    /// Revoked certificates named by the CRLs.
    pub revoked: usize,
    /// How long the swap and the endings took.
    pub took: Duration,
}

/// Asks the running server to reload its trust.
#[derive(Debug, Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<Result<ReloadReport, Arc<TrustError>>>>);

impl ReloadHandle {
    /// Reloads and waits for the outcome. `Err` carries why nothing changed (or, when the server
    /// has stopped, a closed channel is reported as that).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadFailed> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.map_err(|_| ReloadFailed::Stopped)?;
        match rx.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => Err(ReloadFailed::Invalid(e)),
            Err(_) => Err(ReloadFailed::Stopped),
        }
    }
}

/// Why a reload asked for through [`ReloadHandle`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadFailed {
    /// Something in the new files is invalid.
    #[error("reload refused")]
    Invalid(#[source] Arc<TrustError>),
    /// The server is not running.
    #[error("the server has stopped")]
    Stopped,
}

/// The receiving end of [`ReloadHandle`]s, taken by the server when it runs.
pub(crate) type ReloadRequests =
    mpsc::Receiver<oneshot::Sender<Result<ReloadReport, Arc<TrustError>>>>;

/// A handle and the requests it sends.
pub(crate) fn reload_channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadHandle(tx), rx)
}

/// The server's replaceable trust: the TLS configuration new handshakes use, and the directory
/// and CRLs (held by the [`Api`], which requests read them from).
pub(crate) struct Reloader {
    config: Config,
    api: Arc<Api>,
    tls: ArcSwap<ServerConfig>,
    /// One reload or refresh at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// The trust the server started with.
    pub(crate) fn new(config: Config, api: Arc<Api>, tls: Arc<ServerConfig>) -> Self {
        Self {
            config,
            api,
            tls: ArcSwap::new(tls),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The TLS configuration a handshake starting now uses.
    pub(crate) fn tls(&self) -> Arc<ServerConfig> {
        self.tls.load_full()
    }

    /// Ends what the directory and CRLs the server starts with revoke: sessions of inactive
    /// principals, what changed since the directory last applied to this store (a user
    /// removed or renamed, an app uninstalled while the server was down), and sessions minted
    /// with a revoked certificate. Once all of it is done, the directory is recorded as applied.
    pub(crate) async fn at_start(&self) {
        let started = Instant::now();
        let sessions = self.api.sessions();
        let directory = self.api.directory();
        let roster = Roster::of(&directory);
        let mut endings = revocation::directory_at_start(&directory);
        let applied = sessions.applied_roster().await;
        if let Some(applied) = &applied {
            endings.extend(revocation::roster_change(applied, &roster));
        }
        endings.extend(revoked_endings(&self.api.crls(), &CrlSet::default()));
        if let Some(ended) = self.end(&endings).await {
            if applied.as_ref() != Some(&roster) {
                sessions.record_roster(roster).await;
            }
            if ended > 0 {
                tracing::info!(
                    ended,
                    took_ms = started.elapsed().as_millis(),
                    "ended the sessions that the directory and CRLs revoke at start"
                );
            }
        }
    }

    /// Loads every file again and, when all is valid, swaps it in and ends what the change
    /// revokes. On failure nothing changes; the error is logged and returned.
    pub(crate) async fn reload(&self) -> Result<ReloadReport, Arc<TrustError>> {
        let _busy = self.busy.lock().await;
        let started = Instant::now();
        let loaded = async {
            let (directory, _) = load_directory(&self.config)?;
            let crls = CrlSet::load(&self.config.tls.crl, &CrlLimits::default()).await?;
            let tls = crate::tls::server_config(&self.config.tls, &crls)?;
            Ok::<_, TrustError>((directory, crls, tls))
        }
        .await;
        let (directory, crls, tls) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "reload refused: keeping the current directory, certificates and CRLs");
                return Err(Arc::new(e));
            }
        };
        let principals = directory.users().count() + directory.apps().count();
        let (crl_count, revoked) = (crls.crls().len(), crls.revoked().count());
        self.tls.store(tls);
        let old_crls = self.api.replace_crls(Arc::new(crls));
        let old_directory = self.api.replace_directory(Arc::new(directory));
        let new_directory = self.api.directory();
        // Compared with what was last applied to the store (by this node or another sharing
        // it), so that each change is ended once; with nothing recorded, with what this node
        // served until now.
        let sessions = self.api.sessions();
        let old = match sessions.applied_roster().await {
            Some(applied) => applied,
            None => Roster::of(&old_directory),
        };
        let roster = Roster::of(&new_directory);
        let mut endings = revocation::roster_change(&old, &roster);
        endings.extend(revoked_endings(&self.api.crls(), &old_crls));
        let ended = self.end(&endings).await;
        if ended.is_some() && old != roster {
            sessions.record_roster(roster).await;
        }
        let ended = ended.unwrap_or(0);
        let report = ReloadReport {
            principals,
            endings: endings.len(),
            ended,
            crls: crl_count,
            revoked,
            took: started.elapsed(),
        };
        tracing::info!(
            users = new_directory.users().count(),
            apps = new_directory.apps().count(),
            client_cas = self.config.tls.client_cas.len(),
            crls = crl_count,
            revoked_certificates = revoked,
            revocations = report.endings,
            sessions_ended = ended,
            took_ms = report.took.as_millis(),
            "reloaded the directory, certificates and CRLs"
        );
        Ok(report)
    }

    /// Fetches the CRLs again; a good set replaces the current one (and the TLS configuration
    /// built on it), and the sessions of newly revoked certificates end. A failed refresh keeps
    /// the last good set.
    pub(crate) async fn refresh_crls(&self) {
        let _busy = self.busy.lock().await;
        let refreshed = async {
            let crls = CrlSet::load(&self.config.tls.crl, &CrlLimits::default()).await?;
            let tls = crate::tls::server_config(&self.config.tls, &crls)?;
            Ok::<_, TrustError>((crls, tls))
        }
        .await;
        match refreshed {
            Ok((crls, tls)) => {
                self.tls.store(tls);
                let old = self.api.replace_crls(Arc::new(crls));
                let now = self.api.crls();
                let endings = revoked_endings(&now, &old);
                let ended = self.end(&endings).await.unwrap_or(0);
                tracing::info!(
                    crls = now.crls().len(),
                    revoked_certificates = now.revoked().count(),
                    newly_revoked = endings.len(),
                    sessions_ended = ended,
                    "CRLs refreshed"
                );
            }
            Err(e) => tracing::warn!(
                error = %Chain(&e),
                "CRL refresh failed: keeping the last good CRLs"
            ),
        }
    }

    /// Refreshes the CRLs every `tls.crl_refresh` until the returned future is dropped.
    pub(crate) async fn refresh_loop(self: Arc<Self>) {
        let Some(every) = self.config.tls.crl_refresh else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: the set was just loaded
        loop {
            tick.tick().await;
            self.refresh_crls().await;
        }
    }

    /// Applies `endings`; the count of sessions ended, or `None` (logged) when the store failed
    /// for some of them (those are tried again at the next reload or start).
    async fn end(&self, endings: &[Ending]) -> Option<usize> {
        if endings.is_empty() {
            return Some(0);
        }
        let sessions = self.api.sessions();
        match sessions.apply(endings, sessions.now(), "-").await {
            Ok(ended) => Some(ended),
            Err(e) => {
                tracing::error!(error = %Chain(&e), "ending revoked sessions failed for some of them");
                None
            }
        }
    }
}

/// One ending per certificate that `new` revokes and `old` did not.
fn revoked_endings(new: &CrlSet, old: &CrlSet) -> Vec<Ending> {
    let before: HashSet<&[u8; 32]> = old.revoked().collect();
    new.revoked()
        .filter(|id| !before.contains(id))
        .map(|id| Ending {
            selector: Selector::Credential(CredentialId::from_bytes(*id)),
            reason: EndReason::Revoked,
        })
        .collect()
}
