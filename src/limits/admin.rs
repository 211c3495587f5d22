//! Wrong admin tokens, counted per client address: after `FLASHSALE_ADMIN_FAILURES_PER_MINUTE`
//! of them in a minute, every admin request from that address gets 429 until the minute is
//! over, before its token is even compared (so a locked-out guesser learns nothing, not even
//! from a right guess). Correct tokens are never counted. The admin API is not on the hot path:
//! one mutex over one bounded map is enough.

use crate::limits::client::address_key;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most. Past it the finished windows go, then (a flood from more
/// addresses than this within one minute) everything: the map never grows without bound.
const MAX_ADDRESSES: usize = 65_536;

pub struct AdminFailures {
    per_window: u32,
    v6_prefix: u8,
    /// By address key: when its window started and the failures in it.
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AdminFailures {
    pub fn new(per_minute: u32, v6_prefix: u8) -> AdminFailures {
        AdminFailures {
            per_window: per_minute.max(1),
            v6_prefix,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when `addr` spent its failures for this minute.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u32> {
        let key = address_key(addr, self.v6_prefix);
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&key) {
            Some((start, n)) if *n >= self.per_window && now < *start + WINDOW => {
                let left = (*start + WINDOW).saturating_duration_since(now);
                Err(u32::try_from(left.as_secs()).unwrap_or(u32::MAX).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token from `addr`; `true` when this one used up the minute's budget
    /// (the moment to log the lockout, once).
    pub fn failed(&self, addr: IpAddr, now: Instant) -> bool {
        let key = address_key(addr, self.v6_prefix);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(&key) {
            seen.retain(|_, (start, _)| now < *start + WINDOW);
            if seen.len() >= MAX_ADDRESSES {
                seen.clear();
            }
        }
        let e = seen.entry(key).or_insert((now, 0));
        if now >= e.0 + WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 == self.per_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_for_the_rest_of_its_minute() {
        let f = AdminFailures::new(3, 64);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!f.failed(a, t0));
        assert!(!f.failed(a, t0));
        assert_eq!(f.check(a, t0), Ok(()));
        assert!(f.failed(a, t0), "the third failure locks the address");
        assert_eq!(f.check(a, t0 + Duration::from_secs(1)), Err(59));
        assert_eq!(f.check(b, t0), Ok(()), "another address is not affected");
        assert_eq!(f.check(a, t0 + WINDOW), Ok(()), "a new minute");
        assert!(!f.failed(a, t0 + WINDOW), "counted afresh");
    }

    #[test]
    fn one_ipv6_prefix_is_one_address_and_the_map_stays_bounded() {
        let f = AdminFailures::new(2, 64);
        let t0 = Instant::now();
        f.failed("2001:db8::1".parse().unwrap(), t0);
        f.failed("2001:db8::2".parse().unwrap(), t0);
        assert!(f.check("2001:db8::3".parse().unwrap(), t0).is_err());
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            f.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(f.seen.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
