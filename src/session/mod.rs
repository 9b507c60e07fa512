//! The session lifecycle: what a session is, how one is made and resolved from its token, who
//! may end which session, the events that record both, and the purge that ends expired ones.
//!
//! Handlers, the admin API and the purge go through [`Sessions`]; none of them builds a session
//! or an event by hand.
//!
//! | file | what |
//! |---|---|
//! | `record.rs` | [`Session`], [`SessionKind`], [`SessionId`], [`TokenFamily`] |
//! | `lifecycle.rs` | [`Sessions`]: mint, resolve, end; the rule of who may end which session |
//! | `events.rs` | [`EndReason`] and the `created` / `ended` events (never with a token) |
//! | `revocation.rs` | what a directory change (or start-up) ends: deactivations, removals, renames, uninstalls |
//! | `purge.rs` | the task that ends expired sessions; owned by [`Sessions`], stops with it |

mod events;
mod lifecycle;
mod purge;
mod record;
pub mod revocation;

pub use events::EndReason;
pub use lifecycle::{Origin, SessionError, Sessions};
pub use record::{
    Credential, CredentialId, Fingerprint, InvalidCredentialId, Session, SessionId, SessionKind,
    TokenFamily,
};
