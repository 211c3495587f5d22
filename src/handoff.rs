//! The handoff: the bounded queue from the workers to the writer thread.
//!
//! Owns the back-pressure rule and the shutdown rule; the messages themselves are the
//! writer's business (`M` is generic so the loom models in `loom-tests/` drive this very
//! code with small messages).
//!
//! Invariants:
//! - **Refuse before touching anything.** A producer takes a [`Permit`] *before* it changes
//!   Redis; the permit guarantees that the later [`Permit::send`] finds room, so an order whose
//!   stock was reserved can always be handed over. When no permit is left the caller answers
//!   503 and has changed nothing.
//! - **Nothing after close.** Once [`Closer::close`] has run, every `try_reserve` is refused;
//!   permits taken before it may still send, and the receiver sees every one of those messages
//!   exactly once, because it only stops when no message can come any more: every sender is
//!   dropped and the queue is empty, or the queue is closed and no permit is outstanding. (The
//!   second way matters because monoio does not drop tasks still parked on io_uring operations
//!   when a runtime is dropped, so a worker's sender clone may never be dropped.)
//! - The gate is one word: the count of permits handed out plus messages still queued, and a
//!   `CLOSED` bit. A reservation is a compare-and-swap that never takes the count past
//!   `capacity` and never succeeds once `CLOSED` is set, so the channel (of the same capacity)
//!   can never be full for a holder of a permit, a refusal changes nothing (not even for a
//!   moment), and a close wins over a full queue. Because the close, the reservations and the
//!   receiver's "closed and nothing outstanding" check all act on this one location, their
//!   order is that location's modification order: no reasoning across two atomics (which loom,
//!   modelling `SeqCst` accesses as `AcqRel`, could not check).
//!
//! Performance: a permit is one load and one compare-and-swap on a shared cache line (retried
//! only when another worker changed the count in between); the send is a crossbeam
//! `try_send`. Workers never block here.

use crate::sync::channel::{self, RecvTimeoutError, TryRecvError, TrySendError};
use crate::sync::{Arc, AtomicUsize, Ordering};

/// Why a permit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `capacity` messages or permits: PostgreSQL is behind.
    Full,
    /// Shutdown has begun: no new work is accepted.
    Closed,
}

struct Gate {
    /// Permits handed out plus messages not yet received (bounded by `capacity`), with the
    /// `CLOSED` bit set once shutdown has begun.
    state: AtomicUsize,
    /// The bound of the queue, from `FLASHSALE_QUEUE_CAPACITY`.
    capacity: usize,
}

/// The top bit of `Gate::state`: set once by shutdown; producers refuse from then on.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Creates a handoff of `capacity` messages.
pub fn handoff<M>(capacity: usize) -> (HandoffTx<M>, HandoffRx<M>) {
    let capacity = capacity.clamp(1, CLOSED - 1);
    let (tx, rx) = channel::bounded(capacity);
    let gate = Arc::new(Gate {
        state: AtomicUsize::new(0),
        capacity,
    });
    (
        HandoffTx {
            tx,
            gate: gate.clone(),
        },
        HandoffRx { rx, gate },
    )
}

/// The producer end; each worker owns a clone. Dropping every clone ends the writer.
pub struct HandoffTx<M> {
    /// The crossbeam sender; sized like the gate so a permit holder never finds it full.
    tx: channel::Sender<M>,
    /// Shared accounting of permits and the closed flag.
    gate: Arc<Gate>,
}

impl<M> Clone for HandoffTx<M> {
    fn clone(&self) -> Self {
        HandoffTx {
            tx: self.tx.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<M> HandoffTx<M> {
    /// Takes a place in the queue, or says why there is none. Call it before changing
    /// anything that the message will describe.
    pub fn try_reserve(&self) -> Result<Permit<'_, M>, Refused> {
        self.reserve_below(self.gate.capacity)
    }

    /// Like `try_reserve`, but refuses once the queue is filled to `capacity - headroom`: new
    /// orders use this, so the last places stay for the changes that must get through even
    /// under overload (expiries, payments), which use `try_reserve`.
    pub fn try_reserve_leaving(&self, headroom: usize) -> Result<Permit<'_, M>, Refused> {
        self.reserve_below(self.gate.capacity.saturating_sub(headroom).max(1))
    }

    fn reserve_below(&self, limit: usize) -> Result<Permit<'_, M>, Refused> {
        let mut s = self.gate.state.load(Ordering::SeqCst);
        loop {
            if s & CLOSED != 0 {
                return Err(Refused::Closed);
            }
            if s >= limit {
                return Err(Refused::Full);
            }
            match self.gate.state.compare_exchange_weak(
                s,
                s + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        Ok(Permit {
            owner: self,
            armed: true,
        })
    }

    /// A handle that can close the queue from any thread (the shutdown path keeps one).
    pub fn closer(&self) -> Closer {
        Closer {
            gate: self.gate.clone(),
        }
    }

    /// Messages queued or promised: the queue depth reported by `/metrics`.
    pub fn depth(&self) -> usize {
        self.gate.state.load(Ordering::Relaxed) & !CLOSED
    }

    /// The configured bound.
    pub fn capacity(&self) -> usize {
        self.gate.capacity
    }
}

/// A place in the queue. Dropped unused, it gives the place back.
#[must_use = "a permit holds a place in the queue until it is sent or dropped"]
pub struct Permit<'a, M> {
    owner: &'a HandoffTx<M>,
    /// True until the place has been used by `send` (then the receiver releases it).
    armed: bool,
}

impl<M> Permit<'_, M> {
    /// Hands the message over. Fails only when the writer thread is gone (it panicked): the
    /// message comes back so the caller can log what was not handed over.
    pub fn send(mut self, msg: M) -> Result<(), M> {
        match self.owner.tx.try_send(msg) {
            Ok(()) => {
                // From now on the receiver owns the place and releases it on receipt.
                self.armed = false;
                Ok(())
            }
            Err(TrySendError::Full(m)) => {
                // Cannot happen while the invariant holds; never block a worker over it.
                debug_assert!(false, "handoff full for a permit holder");
                Err(m)
            }
            Err(TrySendError::Disconnected(m)) => Err(m),
        }
    }
}

impl<M> Drop for Permit<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            self.owner.gate.state.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Closes the queue to new permits (shutdown). Idempotent.
#[derive(Clone)]
pub struct Closer {
    gate: Arc<Gate>,
}

impl Closer {
    pub fn close(&self) {
        self.gate.state.fetch_or(CLOSED, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.gate.state.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Messages queued or promised.
    pub fn depth(&self) -> usize {
        self.gate.state.load(Ordering::Relaxed) & !CLOSED
    }
}

/// What a bounded wait on the queue gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<M> {
    Msg(M),
    /// Nothing arrived before the deadline.
    Timeout,
    /// Every sender is gone and the queue is drained: the writer may stop.
    Closed,
}

/// The consumer end, owned by the writer thread.
pub struct HandoffRx<M> {
    rx: channel::Receiver<M>,
    gate: Arc<Gate>,
}

impl<M> HandoffRx<M> {
    fn received(&self, m: M) -> M {
        self.gate.state.fetch_sub(1, Ordering::SeqCst);
        m
    }

    /// Closed and nothing outstanding: no permit exists and none can be granted, so no message
    /// can arrive any more.
    fn finished(&self) -> bool {
        self.gate.state.load(Ordering::SeqCst) == CLOSED
    }

    /// Blocks until a message arrives; `None` once every sender is gone and the queue is
    /// empty. (Only the disconnection ends it: use `recv_deadline` to also notice a close.)
    pub fn recv(&self) -> Option<M> {
        self.rx.recv().ok().map(|m| self.received(m))
    }

    /// Waits until `deadline` at most. `Closed` once no message can arrive any more.
    pub fn recv_deadline(&self, deadline: std::time::Instant) -> Recv<M> {
        if self.finished() {
            return self.try_recv();
        }
        match self.rx.recv_deadline(deadline) {
            Ok(m) => Recv::Msg(self.received(m)),
            Err(RecvTimeoutError::Timeout) if self.finished() => self.try_recv(),
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
            Err(RecvTimeoutError::Disconnected) => Recv::Closed,
        }
    }

    /// Takes a message if one is queued. `Closed` once no message can arrive any more.
    pub fn try_recv(&self) -> Recv<M> {
        match self.rx.try_recv() {
            Ok(m) => Recv::Msg(self.received(m)),
            Err(TryRecvError::Empty) if self.finished() => Recv::Closed,
            Err(TryRecvError::Empty) => Recv::Timeout,
            Err(TryRecvError::Disconnected) => Recv::Closed,
        }
    }

    /// Messages queued or promised.
    pub fn depth(&self) -> usize {
        self.gate.state.load(Ordering::Relaxed) & !CLOSED
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_full_and_frees_on_receive() {
        let (tx, rx) = handoff::<u32>(2);
        let a = tx.try_reserve().unwrap();
        let b = tx.try_reserve().unwrap();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Full));
        a.send(1).unwrap();
        drop(b); // unused permit gives its place back
        assert_eq!(tx.depth(), 1);
        tx.try_reserve().unwrap().send(2).unwrap();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Full));
        assert_eq!(rx.recv(), Some(1));
        tx.try_reserve().unwrap().send(3).unwrap();
        assert_eq!(rx.recv(), Some(2));
        assert_eq!(rx.recv(), Some(3));
        assert_eq!(rx.depth(), 0);
    }

    #[test]
    fn headroom_keeps_the_last_places_for_priority_messages() {
        let (tx, rx) = handoff::<u32>(4);
        let a = tx.try_reserve_leaving(2).unwrap();
        let b = tx.try_reserve_leaving(2).unwrap();
        assert_eq!(tx.try_reserve_leaving(2).err(), Some(Refused::Full));
        let c = tx.try_reserve().unwrap();
        let d = tx.try_reserve().unwrap();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Full));
        for (p, m) in [(a, 1), (b, 2), (c, 3), (d, 4)] {
            p.send(m).unwrap();
        }
        assert_eq!(rx.recv(), Some(1));
        assert_eq!(
            tx.try_reserve_leaving(2).err(),
            Some(Refused::Full),
            "3 of 4 still taken"
        );
        assert!(tx.try_reserve().is_ok());
    }

    #[test]
    fn a_closed_queue_ends_without_its_senders_being_dropped() {
        let (tx, rx) = handoff::<u32>(4);
        let early = tx.try_reserve().unwrap();
        tx.closer().close();
        let deadline = std::time::Instant::now();
        assert_eq!(
            rx.recv_deadline(deadline),
            Recv::Timeout,
            "a permit is outstanding"
        );
        early.send(1).unwrap();
        assert_eq!(rx.recv_deadline(deadline), Recv::Msg(1));
        assert_eq!(rx.recv_deadline(deadline), Recv::Closed);
        assert_eq!(rx.try_recv(), Recv::Closed);
        drop(tx);
    }

    #[test]
    fn a_close_wins_over_a_full_queue() {
        let (tx, rx) = handoff::<u32>(1);
        let held = tx.try_reserve().unwrap();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Full));
        tx.closer().close();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
        held.send(1).unwrap();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
        assert_eq!(rx.try_recv(), Recv::Msg(1));
        assert_eq!(rx.try_recv(), Recv::Closed);
        assert_eq!(rx.depth(), 0);
    }

    #[test]
    fn close_refuses_new_permits_but_drains_old_ones() {
        let (tx, rx) = handoff::<u32>(4);
        let early = tx.try_reserve().unwrap();
        tx.closer().close();
        assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
        early.send(7).unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Some(7));
        assert_eq!(rx.recv(), None);
    }
}
