//! When each place of a waiting room is admitted: a pure function of the time and the room's
//! settings, so no process has to admit anyone and every worker of every instance answers the
//! same (given the same clock: callers pass Redis's).
//!
//! Places 1 to `rate` are admitted at the sale's start, the next `rate` one second later, and
//! so on. The rate may change during the sale: a change starts a new [`Segment`] at the moment
//! it takes effect, keeping everything already admitted admitted, and the next batch comes one
//! second after the change. The admitted horizon `H(t)` (how many places are admitted at `t`)
//! never decreases.

/// One stretch of the schedule with one rate: from `from_ms` on, `H(t) = base + rate *
/// (whole seconds since from_ms + 1)`, until the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub from_ms: i64,
    /// What `H` would be one second before `from_ms` on this segment's line (may be negative:
    /// the first batch of a segment that starts at the sale's start is `rate` places).
    pub base: i64,
    /// Places admitted per second, at least 1.
    pub rate: i64,
}

impl Segment {
    fn horizon(&self, t_ms: i64) -> i64 {
        let secs = (t_ms - self.from_ms).div_euclid(1000);
        self.base
            .saturating_add(self.rate.saturating_mul(secs.saturating_add(1)))
    }
}

/// A room's admission schedule: segments in time order, the first starting at the sale's
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    segments: Vec<Segment>,
}

impl Schedule {
    /// The schedule of a sale starting at `starts_ms` at `rate` places a second.
    pub fn new(starts_ms: i64, rate: i64) -> Schedule {
        Schedule {
            segments: vec![Segment {
                from_ms: starts_ms,
                base: 0,
                rate: rate.max(1),
            }],
        }
    }

    /// Rebuilds a schedule from its segments (as stored); `None` when they are not a schedule
    /// (empty, out of order, a rate below 1).
    pub fn from_segments(segments: Vec<Segment>) -> Option<Schedule> {
        let ordered = segments.windows(2).all(|w| w[0].from_ms < w[1].from_ms);
        (!segments.is_empty() && ordered && segments.iter().all(|s| s.rate >= 1))
            .then_some(Schedule { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn starts_ms(&self) -> i64 {
        self.segments[0].from_ms
    }

    pub fn rate(&self) -> i64 {
        self.segments[self.segments.len() - 1].rate
    }

    /// Places admitted at `t_ms`: 0 before the start.
    pub fn horizon(&self, t_ms: i64) -> i64 {
        match self.segments.iter().rev().find(|s| s.from_ms <= t_ms) {
            Some(s) => s.horizon(t_ms).max(0),
            None => 0,
        }
    }

    /// The rate becomes `rate` at `at_ms`: before the start it replaces the first segment's;
    /// after, a new segment begins at `at_ms` whose next batch comes one second later.
    pub fn change_rate(&mut self, at_ms: i64, rate: i64) {
        let rate = rate.max(1);
        if at_ms <= self.starts_ms() {
            self.segments.truncate(1);
            self.segments[0].rate = rate;
            return;
        }
        let h = self.horizon(at_ms);
        // Segments after `at_ms` cannot exist (changes come in time order), but a clock that
        // went back must not break the order.
        self.segments.retain(|s| s.from_ms < at_ms);
        self.segments.push(Segment {
            from_ms: at_ms,
            base: h - rate,
            rate,
        });
    }

    /// When place `p` (from 1) is admitted.
    pub fn admitted_at(&self, p: i64) -> i64 {
        for (i, s) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).map(|n| n.from_ms);
            // The first second `k` with base + rate*(k+1) >= p.
            let k = (p - s.base + s.rate - 1).div_euclid(s.rate) - 1;
            let at = s.from_ms + k.max(0) * 1000;
            if end.is_none_or(|e| at < e) && s.horizon(at) >= p {
                return at;
            }
        }
        // Unreachable for p >= 1: the last segment grows without bound.
        i64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_places_at_the_start_then_rate_each_second() {
        let s = Schedule::new(10_000, 3);
        assert_eq!(s.horizon(9_999), 0);
        assert_eq!(s.horizon(10_000), 3);
        assert_eq!(s.horizon(10_999), 3);
        assert_eq!(s.horizon(11_000), 6);
        for p in 1..=3 {
            assert_eq!(s.admitted_at(p), 10_000);
        }
        assert_eq!(s.admitted_at(4), 11_000);
        assert_eq!(s.admitted_at(7), 12_000);
    }

    #[test]
    fn a_rate_change_keeps_the_admitted_and_goes_on_a_second_later() {
        let mut s = Schedule::new(0, 10);
        // At 2.5 s: 30 admitted.
        s.change_rate(2_500, 100);
        assert_eq!(s.horizon(2_500), 30);
        assert_eq!(s.horizon(3_499), 30);
        assert_eq!(s.horizon(3_500), 130);
        assert_eq!(s.admitted_at(25), 2_000, "admitted under the old rate");
        assert_eq!(s.admitted_at(31), 3_500);
        assert_eq!(s.admitted_at(131), 4_500);
        // Before the start a change only sets the rate.
        let mut s = Schedule::new(5_000, 1);
        s.change_rate(1_000, 50);
        assert_eq!(s.segments().len(), 1);
        assert_eq!(s.horizon(5_000), 50);
    }

    #[test]
    fn the_horizon_never_decreases_and_matches_admitted_at() {
        let mut s = Schedule::new(1_000, 7);
        s.change_rate(3_200, 2);
        s.change_rate(9_900, 40);
        let mut last = 0;
        for t in (0..20_000).step_by(50) {
            let h = s.horizon(t);
            assert!(h >= last, "at {t}");
            last = h;
        }
        for p in 1..=400 {
            let at = s.admitted_at(p);
            assert!(s.horizon(at) >= p, "place {p} at {at}");
            assert!(s.horizon(at - 1) < p, "place {p} not admitted before {at}");
        }
    }

    #[test]
    fn stored_segments_are_checked() {
        let seg = |from_ms, rate| Segment {
            from_ms,
            base: 0,
            rate,
        };
        assert!(Schedule::from_segments(vec![]).is_none());
        assert!(Schedule::from_segments(vec![seg(5, 1), seg(5, 2)]).is_none());
        assert!(Schedule::from_segments(vec![seg(5, 0)]).is_none());
        assert!(Schedule::from_segments(vec![seg(5, 1), seg(6, 2)]).is_some());
    }
}
