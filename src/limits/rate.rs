//! Rate limits per client address (`FLASHSALE_RATE_LIMIT_IP`) and per buyer
//! (`FLASHSALE_RATE_LIMIT_BUYER`), shared by every worker of the process, so that one limit
//! holds however the kernel spreads a client's connections over the cores.
//!
//! Each limit is a GCRA (governor's keyed limiter): one atomic word per key in a lock-striped
//! map, so a check is a shard read lock and a compare-and-swap, and no worker ever waits for
//! another's request. Memory: a key whose bucket is full again (it has been quiet for
//! `burst / rate` seconds) is indistinguishable from a new one and is dropped by
//! [`RateLimits::housekeeping`], which runs once a second, and at once when a limiter holds
//! more than [`MAX_KEYS`]. So the map holds the keys seen in the last few seconds, however
//! many addresses or buyers appear over a sale.

use crate::config::RateLimit;
use crate::limits::client::address_key;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keys a limiter holds before it drops the idle ones at once instead of at the next second.
pub const MAX_KEYS: usize = 200_000;

/// One keyed limit.
struct Limit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(l: RateLimit) -> Limit<K> {
        let per_second = NonZeroU32::new(l.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(l.burst).unwrap_or(per_second);
        Limit {
            limiter: DefaultKeyedRateLimiter::dashmap(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok`, or the whole seconds (at least 1) until `key` may send again.
    fn check(&self, key: &K) -> Result<(), u32> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).clamp(1, u64::from(u32::MAX))
                as u32
        })
    }

    fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The process's rate limits (each off unless configured).
pub struct RateLimits {
    ip: Option<Limit<IpAddr>>,
    buyer: Option<Limit<String>>,
    /// IPv6 addresses count under their first this many bits (`limits::client::address_key`).
    v6_prefix: u8,
    /// Milliseconds since `started` of the last housekeeping.
    tidied_ms: AtomicU64,
    started: Instant,
}

/// The limit that refused a request: per client address or per buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedBy {
    Address,
    Buyer,
    /// Too many wrong admin tokens from one address (`limits::admin`).
    AdminFailures,
}

impl RateLimits {
    pub fn new(ip: Option<RateLimit>, buyer: Option<RateLimit>, v6_prefix: u8) -> RateLimits {
        RateLimits {
            v6_prefix,
            ip: ip.map(Limit::new),
            buyer: buyer.map(Limit::new),
            tidied_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub fn by_address_enabled(&self) -> bool {
        self.ip.is_some()
    }

    /// One request from `addr`: `Err(seconds to wait)` when over its limit.
    pub fn address(&self, addr: IpAddr) -> Result<(), u32> {
        let Some(l) = &self.ip else { return Ok(()) };
        let r = l.check(&address_key(addr, self.v6_prefix));
        if l.limiter.len() > MAX_KEYS {
            self.housekeeping(Duration::from_millis(100));
        }
        r
    }

    /// One reservation by `buyer`: `Err(seconds to wait)` when over its limit.
    pub fn buyer(&self, buyer: &str) -> Result<(), u32> {
        let Some(l) = &self.buyer else { return Ok(()) };
        let r = l.check(&buyer.to_string());
        if l.limiter.len() > MAX_KEYS {
            self.housekeeping(Duration::from_millis(100));
        }
        r
    }

    /// Drops the keys whose buckets are full again, unless that was done less than `every`
    /// ago (by any worker).
    pub fn housekeeping(&self, every: Duration) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.tidied_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < every.as_millis() as u64
            || self
                .tidied_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Some(l) = &self.ip {
            l.tidy();
        }
        if let Some(l) = &self.buyer {
            l.tidy();
        }
    }

    /// Keys held by the two limiters (for tests and metrics).
    pub fn keys(&self) -> (usize, usize) {
        (
            self.ip.as_ref().map_or(0, |l| l.limiter.len()),
            self.buyer.as_ref().map_or(0, |l| l.limiter.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_retry_after() {
        let l = RateLimits::new(
            Some(RateLimit {
                per_second: 1,
                burst: 3,
            }),
            None,
            64,
        );
        let a: IpAddr = "10.1.1.1".parse().unwrap();
        let b: IpAddr = "10.1.1.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.address(a), Ok(()));
        }
        let wait = l.address(a).unwrap_err();
        assert!((1..=2).contains(&wait), "retry after {wait}");
        assert_eq!(l.address(b), Ok(()), "another address has its own bucket");
        assert_eq!(l.buyer("anyone"), Ok(()), "no buyer limit configured");
        // One /64 is one client: its addresses share a bucket.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..3 {
            assert_eq!(l.address(v6(&format!("2001:db8::{i}"))), Ok(()));
        }
        assert!(l.address(v6("2001:db8::ffff:1")).is_err());
        assert_eq!(
            l.address(v6("2001:db8:0:1::1")),
            Ok(()),
            "the next /64 is another"
        );
    }

    #[test]
    fn idle_keys_are_dropped() {
        let l = RateLimits::new(
            None,
            Some(RateLimit {
                per_second: 1_000_000,
                burst: 1,
            }),
            64,
        );
        for i in 0..10_000 {
            assert!(l.buyer(&format!("buyer-{i}")).is_ok());
        }
        assert_eq!(l.keys().1, 10_000);
        // A million a second refills a bucket in a microsecond: polled, not slept.
        let deadline = Instant::now() + Duration::from_secs(30);
        while l.keys().1 > 0 && Instant::now() < deadline {
            l.housekeeping(Duration::ZERO);
        }
        assert_eq!(l.keys().1, 0);
    }
}
