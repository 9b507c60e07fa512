//! The clock that session creation and expiry are measured against.
//!
//! Production uses [`SystemClock`]; tests use [`ManualClock`] so that expiry is tested by moving
//! time forward rather than by sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch (the unit of Symphony's wire format).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Millis(u64);

impl Millis {
    /// Wraps a count of milliseconds since the Unix epoch.
    pub const fn from_epoch_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Converts a count of seconds since the Unix epoch (an X.509 time); times before the
    /// epoch become the epoch itself.
    pub(crate) fn from_epoch_secs(secs: i64) -> Self {
        Self(u64::try_from(secs).unwrap_or(0).saturating_mul(1000))
    }

    /// Converts a [`SystemTime`]; times before the epoch become the epoch itself.
    pub(crate) fn from_system_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_epoch_millis(self) -> u64 {
        self.0
    }

    /// This instant moved forward by `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(add))
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later.
    pub(crate) fn saturating_since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Millis;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        Millis::from_system_time(SystemTime::now())
    }
}

/// A clock that only moves when told to: for tests of expiry.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A manual clock starting at the current wall-clock time.
    pub fn starting_now() -> Self {
        Self(AtomicU64::new(SystemClock.now().as_epoch_millis()))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(add, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        Millis(self.0.load(Ordering::SeqCst))
    }
}
