//! Who gets a connection: the per-address cap on connections, and a log that cannot be flooded.
//!
//! The accept loop admits a connection only while its address holds fewer than
//! `limits.max_connections_per_ip` (handshaking and established alike), so that one address
//! cannot take the handshake or the connection pool; the rest are closed at accept, before any
//! TLS work. IPv6 addresses count per /64 (one host usually owns a whole /64), IPv4-mapped IPv6
//! addresses as the IPv4 address they carry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The connections each client address holds, against a cap.
#[derive(Debug)]
pub(crate) struct PerAddress {
    max: Option<usize>,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection: gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    gate: Arc<PerAddress>,
    key: Option<IpAddr>,
}

impl PerAddress {
    /// A gate that admits at most `max` connections per address (`None`: any number).
    pub(crate) fn new(max: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one more connection from `ip`, or `None` when the address is at its cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let Some(max) = self.max else {
            return Some(Admitted {
                gate: self.clone(),
                key: None,
            });
        };
        let key = address_key(ip);
        let mut held = self.held.lock();
        let count = held.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Admitted {
            gate: self.clone(),
            key: Some(key),
        })
    }

    /// How many connections `ip` holds now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.held.lock().get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut held = self.gate.held.lock();
        if let Some(count) = held.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

/// What an address counts as: IPv4 as is, IPv4-mapped IPv6 as its IPv4, other IPv6 per /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A warning logged at most once per interval, with the count of those held back: a flood of
/// refusals makes one log line per interval, not one per refusal.
#[derive(Debug)]
pub(crate) struct Throttled {
    started: Instant,
    interval: Duration,
    /// Milliseconds since `started` of the last line written (`u64::MAX`: none yet).
    last: AtomicU64,
    held_back: AtomicU64,
}

impl Throttled {
    /// A log that writes at most once per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            started: Instant::now(),
            interval,
            last: AtomicU64::new(u64::MAX),
            held_back: AtomicU64::new(0),
        }
    }

    /// Calls `write` with the number of events held back since the last line when a line is
    /// due; otherwise counts this event as held back.
    pub(crate) fn event(&self, write: impl FnOnce(u64)) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.event_at(now, write);
    }

    /// [`Throttled::event`] at `now` milliseconds after the log was made.
    fn event_at(&self, now: u64, write: impl FnOnce(u64)) {
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= interval;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            write(self.held_back.swap(0, Ordering::Relaxed));
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address is admitted up to its cap, and again once a connection ends; another
    /// address is unaffected; no cap admits everything.
    #[test]
    fn per_address_cap() {
        let gate = PerAddress::new(Some(2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none());
        let _other = gate.admit(b).unwrap();
        drop(first);
        assert_eq!(gate.held(a), 1);
        let _again = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none());
        let open = PerAddress::new(None);
        let all: Vec<_> = (0..1000).map(|_| open.admit(a).unwrap()).collect();
        assert_eq!(all.len(), 1000);
    }

    /// IPv6 addresses of one /64 share a count; a mapped IPv4 counts as the IPv4.
    #[test]
    fn ipv6_counts_per_64() {
        let gate = PerAddress::new(Some(1));
        let _one = gate.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(gate
            .admit("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(gate.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = gate.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(gate.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
    }

    /// The first event writes; those within the interval are held back and counted in the
    /// next line.
    #[test]
    fn throttled_log() {
        let log = Throttled::new(Duration::from_millis(50));
        let mut lines = Vec::new();
        log.event_at(1000, |n| lines.push(n));
        for t in 1001..1006 {
            log.event_at(t, |n| lines.push(n));
        }
        assert_eq!(lines, [0]);
        log.event_at(1050, |n| lines.push(n));
        assert_eq!(lines, [0, 5]);
        log.event_at(1060, |n| lines.push(n));
        assert_eq!(lines, [0, 5]);
    }
}
