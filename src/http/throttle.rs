//! The login throttle: failed authentications are counted per client address and per claimed
//! identity (a certificate's CN, a JWT's subject) in token buckets (`governor`); past either
//! bucket, a failure is answered 429 with `Retry-After` instead of 401 or 403.
//!
//! Only failures are charged, so an honest client that authenticates is never slowed, and the
//! principals of other clients are not either; a client that keeps failing learns when to try
//! again. The identity bucket is charged only while the address bucket has room, so the
//! identities an address can make the server remember are bounded by that address's quota.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The longest claimed identity remembered: a longer one is cut (it names no one anyway).
const MAX_IDENTITY_LEN: usize = 256;

/// The per-address and per-identity buckets of failed authentications.
pub(crate) struct LoginThrottle {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_identity: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("per_ip", &self.per_ip.as_ref().map(|l| l.len()))
            .field("per_identity", &self.per_identity.as_ref().map(|l| l.len()))
            .finish()
    }
}

fn per_minute(n: Option<u32>) -> Option<Quota> {
    n.and_then(NonZeroU32::new).map(Quota::per_minute)
}

impl LoginThrottle {
    /// Buckets of `per_ip` and `per_identity` failures a minute (that many at once, then one
    /// every minute / n); `None` turns one off.
    pub(crate) fn new(per_ip: Option<u32>, per_identity: Option<u32>) -> Self {
        Self {
            per_ip: per_minute(per_ip).map(RateLimiter::keyed),
            per_identity: per_minute(per_identity).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// Charges one failed authentication from `ip`, claiming `identity`. `Err` holds how long
    /// the client should wait before trying again, when a bucket is empty.
    pub(crate) fn failed(&self, ip: IpAddr, identity: Option<&str>) -> Result<(), Duration> {
        if let Some(limiter) = &self.per_ip {
            limiter
                .check_key(&ip)
                .map_err(|e| e.wait_time_from(self.clock.now()))?;
        }
        if let (Some(limiter), Some(identity)) = (&self.per_identity, identity) {
            let key: String = identity.chars().take(MAX_IDENTITY_LEN).collect();
            limiter
                .check_key(&key)
                .map_err(|e| e.wait_time_from(self.clock.now()))?;
        }
        Ok(())
    }

    /// Forgets the buckets that have refilled: called now and then, so that the addresses and
    /// identities remembered are only those that failed lately.
    pub(crate) fn prune(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_identity {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address gets its burst of failures, then waits; another address is unaffected.
    #[test]
    fn per_address_bucket() {
        let throttle = LoginThrottle::new(Some(3), None);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..3 {
            throttle.failed(a, Some("bot")).unwrap();
        }
        let wait = throttle.failed(a, Some("bot")).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        throttle.failed(b, Some("bot")).unwrap();
    }

    /// An identity is throttled from every address; other identities are not; `None` turns
    /// both buckets off.
    #[test]
    fn per_identity_bucket() {
        let throttle = LoginThrottle::new(None, Some(2));
        for i in 0..2u8 {
            throttle
                .failed(IpAddr::from([10, 0, 0, i]), Some("target"))
                .unwrap();
        }
        assert!(throttle
            .failed(IpAddr::from([10, 0, 0, 9]), Some("target"))
            .is_err());
        throttle
            .failed(IpAddr::from([10, 0, 0, 9]), Some("other"))
            .unwrap();
        throttle.failed(IpAddr::from([10, 0, 0, 9]), None).unwrap();
        let off = LoginThrottle::new(None, None);
        for _ in 0..1000 {
            off.failed(IpAddr::from([10, 0, 0, 1]), Some("x")).unwrap();
        }
        off.prune();
    }
}
