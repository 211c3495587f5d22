//! One worker's end of the writer's queue: places in it, handing messages over, and waiting
//! for the writer's answers.
//!
//! Every change to an order takes a place (a [`Permit`]) before it touches Redis, so the
//! change can always be handed over (a full queue refuses first, having changed nothing). New
//! orders take theirs with [`Queue::order_permit`], which leaves the last places to the changes
//! of existing orders; everything else uses [`Queue::permit`].
//!
//! Rule (headroom): new orders leave free the last eighth of the queue, plus one place per
//! expiry of this worker that found no room at the reaper's last tick (at most half the queue):
//! under overload the sale refuses new buyers before it stops releasing expired units, so
//! held reservations (and the memory they take) cannot pile up without bound.

use crate::domain::{Failure, Unavailable};
use crate::handoff::{HandoffTx, Permit, Refused};
use crate::writer::msg::{Reply, WriteError, WriterMsg};
use std::cell::Cell;

pub struct Queue {
    /// The producer end of the queue to the writer.
    handoff: HandoffTx<WriterMsg>,
    /// Expiries that found no room in the queue at the last reaper tick: new orders leave
    /// that many more places free.
    expiry_backlog: Cell<usize>,
}

impl Queue {
    pub fn new(handoff: HandoffTx<WriterMsg>) -> Queue {
        Queue {
            handoff,
            expiry_backlog: Cell::new(0),
        }
    }

    /// Places a new order must leave free (see the module's headroom rule).
    fn headroom(&self) -> usize {
        let cap = self.handoff.capacity();
        cap / 8 + self.expiry_backlog.get().min(cap / 2)
    }

    /// A place in the writer's queue for a new order.
    pub fn order_permit(&self) -> Result<Permit<'_, WriterMsg>, Failure> {
        refused(self.handoff.try_reserve_leaving(self.headroom()))
    }

    /// A place in the writer's queue for a change of an existing order (or a barrier).
    pub fn permit(&self) -> Result<Permit<'_, WriterMsg>, Failure> {
        refused(self.handoff.try_reserve())
    }

    /// Records how many expiries waited for room at this reaper tick.
    pub fn set_expiry_backlog(&self, n: usize) {
        self.expiry_backlog.set(n);
    }

    /// Waits until everything handed to the writer before is committed.
    pub async fn barrier(&self) -> Result<(), Failure> {
        commit(self.permit()?, WriterMsg::Barrier).await
    }
}

fn refused(r: Result<Permit<'_, WriterMsg>, Refused>) -> Result<Permit<'_, WriterMsg>, Failure> {
    r.map_err(|r| {
        Failure::Unavailable(match r {
            Refused::Full => Unavailable::QueueFull,
            Refused::Closed => Unavailable::ShuttingDown,
        })
    })
}

/// Hands a message over. Only a dead writer thread makes this fail; what the message
/// described is still in the Redis journal, which the next start replays.
pub fn hand_over(permit: Permit<'_, WriterMsg>, msg: WriterMsg) {
    if let Err(m) = permit.send(msg) {
        tracing::error!(message = ?m, "writer thread is gone; the Redis journal keeps this change for the next start");
    }
}

/// Hands over a message carrying a reply sender (a `Done`, or an admin change's) and waits
/// until the writer answers it, which it does after the commit.
pub async fn commit<T>(
    permit: Permit<'_, WriterMsg>,
    make: impl FnOnce(Reply<T>) -> WriterMsg,
) -> Result<T, Failure> {
    let (tx, rx) = futures_channel::oneshot::channel();
    hand_over(permit, make(tx));
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(write_failure(e)),
        Err(_) => Err(Failure::Unavailable(Unavailable::Database)),
    }
}

fn write_failure(e: WriteError) -> Failure {
    match e {
        WriteError::Rejected(why) => {
            tracing::error!(error = %why, "PostgreSQL rejected a write");
            Failure::Unavailable(Unavailable::Database)
        }
        WriteError::BadInput(why) => {
            tracing::info!(error = %why, "PostgreSQL refused a value of an admin change");
            Failure::BadInput
        }
        WriteError::Unavailable => Failure::Unavailable(Unavailable::Database),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::handoff;

    fn fill(q: &Queue) -> usize {
        let mut held = Vec::new();
        while let Ok(p) = q.order_permit() {
            held.push(p);
        }
        held.len()
    }

    #[test]
    fn new_orders_leave_an_eighth_of_the_queue_to_existing_ones() {
        let (tx, _rx) = handoff::<WriterMsg>(64);
        let q = Queue::new(tx);
        let mut held = Vec::new();
        while let Ok(p) = q.order_permit() {
            held.push(p);
        }
        assert_eq!(held.len(), 56, "64 places less 8 of headroom");
        assert_eq!(
            q.order_permit().err(),
            Some(Failure::Unavailable(Unavailable::QueueFull))
        );
        for _ in 0..8 {
            held.push(
                q.permit()
                    .expect("changes of existing orders take the headroom"),
            );
        }
        assert!(q.permit().is_err(), "and then the queue is full");
    }

    #[test]
    fn waiting_expiries_widen_the_headroom_up_to_half_the_queue() {
        let (tx, _rx) = handoff::<WriterMsg>(64);
        let q = Queue::new(tx);
        q.set_expiry_backlog(10);
        assert_eq!(fill(&q), 64 - 8 - 10);
        q.set_expiry_backlog(1_000);
        assert_eq!(fill(&q), 64 - 8 - 32, "never more than half the queue");
        q.set_expiry_backlog(0);
        assert_eq!(fill(&q), 56, "and back once the expiries ran");
    }
}
