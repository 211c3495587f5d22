//! A short-lived per-core memory of what PostgreSQL said does not exist (unknown products and
//! order references), so that a client asking again and again for the same missing thing is
//! answered without a query. Bounded: entries live [`MISS_TTL`], and at [`MAX_MISSES`] the
//! expired ones go, or all of them.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a miss is believed: a product inserted with SQL is sellable after at most this.
pub const MISS_TTL: Duration = Duration::from_secs(1);
/// Misses remembered per core at most.
pub const MAX_MISSES: usize = 4096;

pub struct Misses<K> {
    seen: RefCell<HashMap<K, Instant>>,
}

impl<K> Default for Misses<K> {
    fn default() -> Self {
        Misses {
            seen: RefCell::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Misses<K> {
    /// True when `k` was found missing less than [`MISS_TTL`] before `now`.
    pub fn recent<Q>(&self, k: &Q, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.seen
            .borrow()
            .get(k)
            .is_some_and(|at| now.duration_since(*at) < MISS_TTL)
    }

    pub fn remember(&self, k: K, now: Instant) {
        let mut seen = self.seen.borrow_mut();
        if seen.len() >= MAX_MISSES {
            seen.retain(|_, at| now.duration_since(*at) < MISS_TTL);
            if seen.len() >= MAX_MISSES {
                seen.clear();
            }
        }
        seen.insert(k, now);
    }

    /// Forgets `k` (it exists now).
    pub fn forget(&self, k: &K) {
        self.seen.borrow_mut().remove(k);
    }

    pub fn len(&self) -> usize {
        self.seen.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_expire_and_stay_bounded() {
        let m: Misses<u64> = Misses::default();
        let t0 = Instant::now();
        m.remember(1, t0);
        assert!(m.recent(&1, t0 + Duration::from_millis(500)));
        assert!(!m.recent(&1, t0 + MISS_TTL));
        assert!(!m.recent(&2, t0));
        for k in 0..(3 * MAX_MISSES as u64) {
            m.remember(k, t0);
        }
        assert!(m.len() <= MAX_MISSES);
        m.forget(&(3 * MAX_MISSES as u64 - 1));
        assert!(!m.recent(&(3 * MAX_MISSES as u64 - 1), t0));
    }
}
