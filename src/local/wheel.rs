//! A hashed timer wheel: the reaper's index of this worker's pending reservations.
//!
//! Pure data structure: time is passed in (Unix milliseconds), nothing here reads a clock or
//! does IO, so it is unit-tested and benchmarked directly.
//!
//! `slots` buckets of `tick_ms` each; an entry lives in the bucket of its deadline's tick, and
//! a bucket is scanned when the wheel passes it, firing entries that are due and keeping those
//! a whole rotation (or more) away. Insert is O(1); advancing costs the entries in the buckets
//! passed. Precision is one tick: an entry fires on the first `advance` at or after its
//! deadline's tick.

use crate::domain::ProductId;

/// A deadline and the value to hand back when it passes.
struct Entry<T> {
    deadline_ms: i64,
    item: T,
}

pub struct TimerWheel<T> {
    /// `slots.len()` buckets, indexed by absolute tick modulo the length.
    slots: Vec<Vec<Entry<T>>>,
    /// Width of one bucket.
    tick_ms: i64,
    /// The first tick the next `advance` scans. It is the tick of the last `advance`, whose
    /// bucket may still hold entries due later within that tick.
    next_tick: i64,
    /// Entries held, for metrics and tests.
    len: usize,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` buckets of `tick_ms`, starting at `now_ms`.
    pub fn new(tick_ms: u32, slots: usize, now_ms: i64) -> Self {
        let tick_ms = i64::from(tick_ms.max(1));
        let slots = slots.max(1);
        TimerWheel {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            tick_ms,
            next_tick: now_ms.div_euclid(tick_ms),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an entry. A deadline already passed fires on the next `advance`.
    pub fn insert(&mut self, deadline_ms: i64, item: T) {
        let tick = deadline_ms.div_euclid(self.tick_ms).max(self.next_tick);
        let slot = tick.rem_euclid(self.slots.len() as i64) as usize;
        self.slots[slot].push(Entry { deadline_ms, item });
        self.len += 1;
    }

    /// Moves the wheel to `now_ms` and appends every entry due by then to `fired`.
    pub fn advance(&mut self, now_ms: i64, fired: &mut Vec<T>) {
        let now_tick = now_ms.div_euclid(self.tick_ms);
        if now_tick < self.next_tick {
            return;
        }
        let n = self.slots.len() as i64;
        // After a long pause every bucket is visited once; visiting more would change nothing.
        let ticks = (now_tick - self.next_tick + 1).min(n);
        for t in 0..ticks {
            let slot = (self.next_tick + t).rem_euclid(n) as usize;
            let bucket = &mut self.slots[slot];
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].deadline_ms <= now_ms {
                    fired.push(bucket.swap_remove(i).item);
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            // Every bucket gives back what its contents no longer need, an emptied one all of
            // it: spare room kept per bucket would let resident memory creep up for minutes,
            // as the expiry waves meet bucket after bucket at a new high-water mark (1024
            // buckets per worker). Reallocating a bucket as it refills costs a few allocations
            // per tick.
            if bucket.len() < bucket.capacity() / 4 {
                bucket.shrink_to(bucket.len() * 2);
            }
        }
        self.next_tick = now_tick;
    }
}

/// What the reaper keeps in its wheel: a time at which reservations of a product come due,
/// the score of their pending-set members (their `expires_at`). One entry (16 bytes) per
/// reserve call or restored order; the references stay in Redis's pending set and are read
/// from it when the entry fires, so the server's memory does not grow with every held
/// reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    pub product: ProductId,
    pub due_ms: i64,
}

impl Expiring {
    pub fn new(product: ProductId, due_ms: i64) -> Expiring {
        Expiring { product, due_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(w: &mut TimerWheel<u32>, now: i64) -> Vec<u32> {
        let mut v = Vec::new();
        w.advance(now, &mut v);
        v.sort_unstable();
        v
    }

    #[test]
    fn fires_each_entry_once_at_its_tick() {
        let mut w = TimerWheel::new(100, 8, 1_000);
        w.insert(1_150, 1);
        w.insert(1_250, 2);
        w.insert(1_250, 3);
        assert_eq!(fire(&mut w, 1_099), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 1_149), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 1_150), vec![1]);
        assert_eq!(fire(&mut w, 1_300), vec![2, 3]);
        assert_eq!(fire(&mut w, 5_000), Vec::<u32>::new());
        assert!(w.is_empty());
    }

    #[test]
    fn keeps_entries_more_than_a_rotation_away() {
        // 8 buckets of 100 ms: one rotation is 800 ms.
        let mut w = TimerWheel::new(100, 8, 0);
        w.insert(2_550, 7);
        for now in (0..2_500).step_by(100) {
            assert_eq!(fire(&mut w, now), Vec::<u32>::new(), "at {now}");
        }
        assert_eq!(w.len(), 1);
        assert_eq!(fire(&mut w, 2_549), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 2_600), vec![7]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(100, 8, 10_000);
        w.insert(50, 1);
        w.insert(9_999, 2);
        assert_eq!(fire(&mut w, 10_000), vec![1, 2]);
    }

    #[test]
    fn a_long_pause_fires_everything_due_and_nothing_else() {
        let mut w = TimerWheel::new(100, 4, 0);
        for i in 0..20u32 {
            w.insert(i64::from(i) * 100, i);
        }
        w.insert(100_000, 99);
        let fired = fire(&mut w, 50_000);
        assert_eq!(fired, (0..20).collect::<Vec<_>>());
        assert_eq!(w.len(), 1);
        assert_eq!(fire(&mut w, 100_000), vec![99]);
    }

    #[test]
    fn buckets_give_memory_back_after_a_crowd() {
        let mut w = TimerWheel::new(100, 8, 0);
        for i in 0..10_000u32 {
            w.insert(50, i);
        }
        // Every bucket a modest crowd too: what each keeps adds up over a wheel's buckets.
        for i in 0..8 * 40u32 {
            w.insert(200 + i64::from(i % 8) * 100, i);
        }
        let mut out = Vec::new();
        w.advance(1_000, &mut out);
        assert_eq!(out.len(), 10_000 + 8 * 40);
        assert!(
            w.slots.iter().all(|b| b.capacity() == 0),
            "emptied buckets keep no allocation"
        );
        // A bucket still holding a few entries keeps room for about twice as many.
        for i in 0..1_000u32 {
            w.insert(1_150, i);
        }
        w.insert(1_190, 7);
        w.advance(1_150, &mut out);
        assert_eq!(w.len(), 1);
        assert!(w.slots.iter().all(|b| b.capacity() <= 2));
    }

    #[test]
    fn time_going_backwards_fires_nothing() {
        let mut w = TimerWheel::new(100, 8, 1_000);
        w.insert(1_100, 1);
        assert_eq!(fire(&mut w, 900), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 1_100), vec![1]);
    }
}
