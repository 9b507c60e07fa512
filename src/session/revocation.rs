//! What a change of trust ends: the sessions of principals that a new directory deactivates,
//! removes or renames, the on-behalf-of sessions an uninstall or a withdrawn on-behalf-of
//! permission concerns, and the sessions minted with revoked certificates.
//!
//! Each rule yields a [`Selector`] with its [`EndReason`]; [`Sessions::apply`] ends them. Ending
//! is idempotent (an ended session is gone), so several nodes that compute the same endings
//! from the same files, or one node that computes them twice, end each session once.
//!
//! [`Sessions::apply`]: super::Sessions::apply

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::events::EndReason;
use crate::directory::{AppId, Directory, UserId};
use crate::store::Selector;

/// One rule's verdict: end what `selector` names, for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// What to end.
    pub selector: Selector,
    /// Why.
    pub reason: EndReason,
}

impl Ending {
    fn new(selector: Selector, reason: EndReason) -> Self {
        Self { selector, reason }
    }
}

/// The part of a directory that revocation compares: each user's username, whether it is
/// active and which apps it has installed; each app's state and whether it may act on behalf of
/// users. The lifecycle keeps the last one applied in the store (see
/// [`Sessions::applied_roster`](super::Sessions::applied_roster)), so that a change made while
/// the server was down (a rename, a removal, an uninstall) is found when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    users: BTreeMap<UserId, RosterUser>,
    apps: BTreeMap<AppId, RosterApp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RosterUser {
    username: String,
    active: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    installed: Vec<AppId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RosterApp {
    active: bool,
    on_behalf_of: bool,
}

impl Roster {
    /// The roster of `directory`.
    pub fn of(directory: &Directory) -> Self {
        let users = directory
            .users()
            .map(|u| {
                let user = RosterUser {
                    username: u.username.clone(),
                    active: u.active,
                    installed: u.installed_apps.clone(),
                };
                (u.id, user)
            })
            .collect();
        let apps = directory
            .apps()
            .map(|a| {
                let app = RosterApp {
                    active: a.active,
                    on_behalf_of: a.allow_on_behalf_of,
                };
                (a.app_id.clone(), app)
            })
            .collect();
        Self { users, apps }
    }
}

/// What replacing `old` with `new` ends:
/// - a user or app that is gone, or a user id that now names another username: all its
///   sessions (`removed`);
/// - a user or app that is inactive in `new`: all its sessions (`deactivated`);
/// - an app a user no longer has installed: that app's on-behalf-of sessions for that user
///   (`uninstalled`);
/// - an app no longer allowed to act on behalf of users: all its on-behalf-of sessions
///   (`obo_disallowed`).
pub fn roster_change(old: &Roster, new: &Roster) -> Vec<Ending> {
    let mut out = Vec::new();
    for (&id, user) in &old.users {
        match new.users.get(&id) {
            None => out.push(Ending::new(Selector::User(id), EndReason::Removed)),
            Some(now) if now.username != user.username => {
                out.push(Ending::new(Selector::User(id), EndReason::Removed));
            }
            Some(now) if !now.active => {
                if user.active {
                    out.push(Ending::new(Selector::User(id), EndReason::Deactivated));
                }
            }
            Some(now) => {
                for app in user.installed.iter().filter(|a| !now.installed.contains(a)) {
                    out.push(Ending::new(
                        Selector::OnBehalfOf {
                            app: app.clone(),
                            user: Some(id),
                        },
                        EndReason::Uninstalled,
                    ));
                }
            }
        }
    }
    for (id, app) in &old.apps {
        match new.apps.get(id) {
            None => out.push(Ending::new(Selector::App(id.clone()), EndReason::Removed)),
            Some(now) if !now.active => {
                if app.active {
                    out.push(Ending::new(
                        Selector::App(id.clone()),
                        EndReason::Deactivated,
                    ));
                }
            }
            Some(now) if app.on_behalf_of && !now.on_behalf_of => {
                out.push(Ending::new(
                    Selector::OnBehalfOf {
                        app: id.clone(),
                        user: None,
                    },
                    EndReason::OnBehalfOfDisallowed,
                ));
            }
            Some(_) => {}
        }
    }
    out
}

/// What a directory ends on its own, as the server starts with it: every session of an inactive
/// user or app, and every on-behalf-of session of an app not allowed to act on behalf of users.
/// So a principal deactivated while the server was down finds its sessions ended, and
/// reactivating it later brings none of them back.
pub fn directory_at_start(directory: &Directory) -> Vec<Ending> {
    let users = directory
        .users()
        .filter(|u| !u.active)
        .map(|u| Ending::new(Selector::User(u.id), EndReason::Deactivated));
    let apps = directory.apps().filter_map(|a| {
        if !a.active {
            Some(Ending::new(
                Selector::App(a.app_id.clone()),
                EndReason::Deactivated,
            ))
        } else if !a.allow_on_behalf_of {
            Some(Ending::new(
                Selector::OnBehalfOf {
                    app: a.app_id.clone(),
                    user: None,
                },
                EndReason::OnBehalfOfDisallowed,
            ))
        } else {
            None
        }
    });
    users.chain(apps).collect()
}
