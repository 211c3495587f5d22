//! `Every`: the writer's periodic jobs (journal scan and replay, attribute sync, the
//! unmatched-webhook walk and its expiry) each run at most once per period, checked between
//! batches. One type instead of a `last_*: Instant` per job, so a new job (the outbox's
//! housekeeping) is one field and one `due` call.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Every {
    period: Duration,
    last: Instant,
}

impl Every {
    /// First due one period after `now`.
    pub fn new(period: Duration, now: Instant) -> Every {
        Every { period, last: now }
    }

    /// Due at once, then once per period: for jobs that must run at start-up.
    pub fn due_now(period: Duration, now: Instant) -> Every {
        Every {
            period,
            last: now.checked_sub(period).unwrap_or(now),
        }
    }

    /// Whether the job is due at `now`; when it is, the next period starts at `now`.
    pub fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) >= self.period {
            self.last = now;
            true
        } else {
            false
        }
    }
}

/// The writer's periodic jobs, each paced by its own `Every`.
pub struct Jobs {
    pub scan_step: Every,
    pub replay: Every,
    pub unmatched_walk: Every,
    pub sync: Every,
    pub expire_unmatched: Every,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_secs(1);

    #[test]
    fn due_once_per_period() {
        let t0 = Instant::now();
        let mut e = Every::new(P, t0);
        assert!(!e.due(t0));
        assert!(!e.due(t0 + P / 2));
        assert!(e.due(t0 + P));
        assert!(
            !e.due(t0 + P + P / 2),
            "the period restarts when it was due"
        );
        assert!(e.due(t0 + P * 2));
    }

    #[test]
    fn due_now_fires_first() {
        let t0 = Instant::now() + P;
        let mut e = Every::due_now(P, t0);
        assert!(e.due(t0));
        assert!(!e.due(t0));
    }

    #[test]
    fn a_clock_before_the_last_run_is_not_due() {
        let t0 = Instant::now() + P;
        let mut e = Every::new(P, t0);
        assert!(!e.due(t0 - P / 2));
    }
}
