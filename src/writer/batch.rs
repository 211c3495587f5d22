//! The batching policy of the writer: which queued messages go into one transaction.
//!
//! Pure of SQL and of any runtime: it only reads the handoff, so it is unit-tested with a real
//! queue and model-checked by `loom-tests/`.
//!
//! Rules: a batch starts with the first message to arrive (waiting at most `idle` for it, so
//! the writer's periodic work still runs on a quiet system), then takes whatever is queued
//! until it holds `max_rows` rows, or the queue is empty and either someone waits on the batch
//! (a webhook, a barrier: they want their commit now) or `linger` has passed since the first
//! message. A closed, drained queue ends the writer.
//!
//! Under load the queue is never empty while a commit runs, so batches fill to `max_rows` on
//! their own; `linger` only matters when traffic is light, where it trades a little latency
//! for fewer transactions.

use crate::handoff::{HandoffRx, Recv};
use std::time::{Duration, Instant};

/// What the collector needs to know of a message.
pub trait Batched {
    /// Rows the message writes (0 for a barrier).
    fn rows(&self) -> usize;
    /// True when a caller waits for this message's commit: flush as soon as the queue is
    /// drained instead of lingering.
    fn urgent(&self) -> bool;
}

/// The knobs of the policy (from `FLASHSALE_BATCH_ROWS` and `FLASHSALE_BATCH_LINGER_MS`).
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most rows in one transaction; bounds the writer's memory while PostgreSQL is down.
    pub max_rows: usize,
    /// Longest wait for more messages after the first one of a batch.
    pub linger: Duration,
    /// Longest wait for a first message before returning `Idle` for periodic work.
    pub idle: Duration,
}

/// The outcome of one `collect` call.
#[derive(Debug, PartialEq, Eq)]
pub enum Collected {
    /// `out` holds a batch to write.
    Batch,
    /// Nothing arrived within `idle`.
    Idle,
    /// Every producer is gone and the queue is empty.
    Closed,
}

/// The running state of one batch: pure, so the stopping rule is testable without a queue.
#[derive(Debug, Default)]
pub struct BatchState {
    rows: usize,
    urgent: bool,
}

impl BatchState {
    pub fn push<M: Batched>(&mut self, m: &M) {
        self.rows += m.rows();
        self.urgent |= m.urgent();
    }

    /// Full: stop taking messages even if more are queued.
    pub fn full(&self, policy: &BatchPolicy) -> bool {
        self.rows >= policy.max_rows
    }

    /// The queue is empty: stop now, or wait until `deadline` for more?
    pub fn stop_when_empty(&self, now: Instant, deadline: Instant) -> bool {
        self.urgent || now >= deadline
    }
}

/// Fills `out` (which must be empty) with the next batch.
pub fn collect<M: Batched>(
    rx: &HandoffRx<M>,
    policy: &BatchPolicy,
    out: &mut Vec<M>,
    now: impl Fn() -> Instant,
) -> Collected {
    debug_assert!(out.is_empty());
    let first = match rx.recv_deadline(now() + policy.idle) {
        Recv::Msg(m) => m,
        Recv::Timeout => return Collected::Idle,
        Recv::Closed => return Collected::Closed,
    };
    let deadline = now() + policy.linger;
    let mut state = BatchState::default();
    state.push(&first);
    out.push(first);
    while !state.full(policy) {
        let next = match rx.try_recv() {
            Recv::Msg(m) => m,
            Recv::Closed => break,
            Recv::Timeout => {
                if state.stop_when_empty(now(), deadline) {
                    break;
                }
                match rx.recv_deadline(deadline) {
                    Recv::Msg(m) => m,
                    Recv::Timeout | Recv::Closed => break,
                }
            }
        };
        state.push(&next);
        out.push(next);
    }
    Collected::Batch
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::handoff::handoff;

    #[derive(Debug, PartialEq)]
    enum Msg {
        Row(u32),
        Wait,
    }
    impl Batched for Msg {
        fn rows(&self) -> usize {
            matches!(self, Msg::Row(_)) as usize
        }
        fn urgent(&self) -> bool {
            matches!(self, Msg::Wait)
        }
    }

    fn policy(max_rows: usize, linger_ms: u64) -> BatchPolicy {
        BatchPolicy {
            max_rows,
            linger: Duration::from_millis(linger_ms),
            idle: Duration::from_millis(1),
        }
    }

    #[test]
    fn stops_at_max_rows_and_keeps_the_rest_in_order() {
        let (tx, rx) = handoff(16);
        for i in 0..5 {
            tx.try_reserve().unwrap().send(Msg::Row(i)).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(
            collect(&rx, &policy(3, 0), &mut out, Instant::now),
            Collected::Batch
        );
        assert_eq!(out, vec![Msg::Row(0), Msg::Row(1), Msg::Row(2)]);
        out.clear();
        assert_eq!(
            collect(&rx, &policy(3, 0), &mut out, Instant::now),
            Collected::Batch
        );
        assert_eq!(out, vec![Msg::Row(3), Msg::Row(4)]);
    }

    #[test]
    fn a_waiter_flushes_once_the_queue_is_drained_without_lingering() {
        let (tx, rx) = handoff(16);
        tx.try_reserve().unwrap().send(Msg::Row(1)).unwrap();
        tx.try_reserve().unwrap().send(Msg::Wait).unwrap();
        let mut out = Vec::new();
        // A linger of an hour: only the waiter can end this batch before the sender closes.
        assert_eq!(
            collect(&rx, &policy(100, 3_600_000), &mut out, Instant::now),
            Collected::Batch
        );
        assert_eq!(out, vec![Msg::Row(1), Msg::Wait]);
        drop(tx);
    }

    #[test]
    fn linger_expiry_ends_a_batch_on_an_empty_queue() {
        let (tx, rx) = handoff(16);
        tx.try_reserve().unwrap().send(Msg::Row(1)).unwrap();
        let mut out = Vec::new();
        // The clock jumps past the deadline at once: the empty queue ends the batch.
        let start = Instant::now();
        let calls = std::cell::Cell::new(0u32);
        let clock = || {
            calls.set(calls.get() + 1);
            start + Duration::from_secs(calls.get() as u64 * 10)
        };
        assert_eq!(
            collect(&rx, &policy(100, 5_000), &mut out, clock),
            Collected::Batch
        );
        assert_eq!(out, vec![Msg::Row(1)]);
        drop(tx);
    }

    #[test]
    fn idle_then_closed_after_the_last_sender_is_gone() {
        let (tx, rx) = handoff::<Msg>(4);
        let mut out = Vec::new();
        assert_eq!(
            collect(&rx, &policy(10, 0), &mut out, Instant::now),
            Collected::Idle
        );
        tx.try_reserve().unwrap().send(Msg::Row(9)).unwrap();
        drop(tx);
        assert_eq!(
            collect(&rx, &policy(10, 0), &mut out, Instant::now),
            Collected::Batch
        );
        assert_eq!(out, vec![Msg::Row(9)]);
        out.clear();
        assert_eq!(
            collect(&rx, &policy(10, 0), &mut out, Instant::now),
            Collected::Closed
        );
    }

    #[test]
    fn state_rules() {
        let p = policy(2, 0);
        let mut s = BatchState::default();
        let t = Instant::now();
        assert!(!s.stop_when_empty(t, t + Duration::from_secs(1)));
        assert!(s.stop_when_empty(t + Duration::from_secs(1), t + Duration::from_secs(1)));
        s.push(&Msg::Row(1));
        assert!(!s.full(&p));
        s.push(&Msg::Wait);
        assert!(!s.full(&p));
        assert!(s.stop_when_empty(t, t + Duration::from_secs(1)));
        s.push(&Msg::Row(2));
        assert!(s.full(&p));
    }
}
