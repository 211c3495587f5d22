//! Places in the writer's queue, and waiting for the writer's answers.
//!
//! Every change to an order takes a place (a [`Permit`]) before it touches Redis. New orders
//! take theirs with [`order_permit`], which leaves the last places to the changes of existing
//! orders; everything else uses [`permit`].

use crate::domain::{Failure, Unavailable};
use crate::handoff::{Permit, Refused};
use crate::worker::ctx::Worker;
use crate::writer::msg::{Reply, WriteError, WriterMsg};

/// A place in the writer's queue for a new order.
///
/// New orders leave the last eighth of the queue to the changes of existing orders (payments,
/// failures, expiries), and on top of it as many places as this worker has expiries waiting
/// for room: under overload the sale refuses new buyers before it stops releasing expired
/// units, so held reservations (and the memory they take) cannot pile up without bound.
pub fn order_permit(w: &Worker) -> Result<Permit<'_, WriterMsg>, Failure> {
    let cap = w.handoff().capacity();
    let headroom = cap / 8 + w.expiry_backlog().min(cap / 2);
    refused(w.handoff().try_reserve_leaving(headroom))
}

/// A place in the writer's queue.
pub fn permit(w: &Worker) -> Result<Permit<'_, WriterMsg>, Failure> {
    refused(w.handoff().try_reserve())
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

/// Waits until everything handed to the writer before is committed.
pub async fn barrier(w: &Worker) -> Result<(), Failure> {
    commit(permit(w)?, WriterMsg::Barrier).await
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
    if let WriteError::Rejected(why) = &e {
        tracing::error!(error = %why, "PostgreSQL rejected a write");
    }
    Failure::Unavailable(Unavailable::Database)
}
