//! The expiries of one worker: the timer wheel of the pending reservations it created, loaded
//! or adopted, and the products it has seen (whose pending sets the reaper's sweep reads).
//!
//! Rules:
//! - arming a reservation also remembers its product, so the sweep looks at every product this
//!   worker ever armed, even after its wheel entries fired;
//! - an entry whose expiry could not run now is put back (`rearm`) for a later time and fires
//!   again then, once: re-arming never duplicates what is already in the wheel.

use crate::domain::ProductId;
use crate::local::wheel::{Expiring, TimerWheel};
use std::cell::RefCell;
use std::collections::HashSet;

/// Width of a timer-wheel bucket: expiries fire within one tick of their time, well inside
/// the one-second promise.
pub const WHEEL_TICK_MS: u32 = 100;
/// Buckets of the wheel: 1024 × 100 ms is ~100 s per rotation, so a 10-minute hold is looked
/// at ~6 times before it fires.
pub const WHEEL_SLOTS: usize = 1024;

pub struct Expiries {
    /// Pending reservations by expiry: one entry per reserve call or restored order.
    wheel: RefCell<TimerWheel<Expiring>>,
    /// Products seen on this worker: the sweep reads their pending sets for orphans.
    known: RefCell<HashSet<ProductId>>,
}

impl Expiries {
    pub fn new(now_ms: i64) -> Expiries {
        Expiries {
            wheel: RefCell::new(TimerWheel::new(WHEEL_TICK_MS, WHEEL_SLOTS, now_ms)),
            known: RefCell::new(HashSet::new()),
        }
    }

    /// Arms the reaper for reservations of `pid` due at `at_ms`, and remembers the product
    /// for the sweep.
    pub fn arm(&self, pid: ProductId, at_ms: i64) {
        self.wheel
            .borrow_mut()
            .insert(at_ms, Expiring::new(pid, at_ms));
        self.remember(pid);
    }

    /// Remembers a product for the sweep without arming anything.
    pub fn remember(&self, pid: ProductId) {
        self.known.borrow_mut().insert(pid);
    }

    /// Products this worker has seen.
    pub fn known_products(&self) -> Vec<ProductId> {
        self.known.borrow().iter().copied().collect()
    }

    /// Moves the wheel to `now_ms`, appending the entries that came due to `fired`.
    pub fn advance(&self, now_ms: i64, fired: &mut Vec<Expiring>) {
        self.wheel.borrow_mut().advance(now_ms, fired);
    }

    /// Puts an entry back: its expiry could not run now and is tried again at `at_ms`.
    pub fn rearm(&self, at_ms: i64, e: Expiring) {
        self.wheel.borrow_mut().insert(at_ms, e);
    }

    /// Entries in the wheel.
    pub fn len(&self) -> usize {
        self.wheel.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i64) -> ProductId {
        ProductId::new(n).unwrap()
    }

    fn fired(x: &Expiries, now: i64) -> Vec<Expiring> {
        let mut v = Vec::new();
        x.advance(now, &mut v);
        v
    }

    #[test]
    fn arming_remembers_the_product_for_the_sweep() {
        let x = Expiries::new(0);
        x.arm(pid(3), 1_000);
        x.remember(pid(4));
        let mut known = x.known_products();
        known.sort();
        assert_eq!(known, vec![pid(3), pid(4)]);
        assert_eq!(x.len(), 1, "remembering arms nothing");
        assert_eq!(fired(&x, 1_000), vec![Expiring::new(pid(3), 1_000)]);
        assert!(x.is_empty());
        let mut after = x.known_products();
        after.sort();
        assert_eq!(after, known, "a fired product stays known");
    }

    #[test]
    fn a_rearmed_entry_fires_again_once_at_its_new_time() {
        let x = Expiries::new(0);
        x.arm(pid(1), 500);
        let due = fired(&x, 500);
        assert_eq!(due.len(), 1);
        // The queue had no room: try again a second later, keeping the entry's own due time.
        x.rearm(1_500, due[0]);
        assert_eq!(fired(&x, 1_400), vec![]);
        assert_eq!(
            fired(&x, 1_500),
            vec![Expiring::new(pid(1), 500)],
            "the entry keeps the score of its pending-set member"
        );
        assert_eq!(fired(&x, 10_000), vec![], "and fires only once");
    }
}
