//! Reservations waiting for their product's next `reserve.lua` call: the per-core state of the
//! micro-batching in `lifecycle::reserve`. Pure bookkeeping, no IO.
//!
//! Rule: a product has a batch exactly while its flush task runs. [`ReserveBatches::push`]
//! says when a batch was created (start the task); [`ReserveBatches::take`] removes an empty
//! batch and says so (the task ends), so no request can be queued with nobody to send it.

use crate::domain::{Failure, ProductId};
use crate::redis::scripts::reserve::ReserveReply;
use crate::writer::msg::JournalBatch;
use local_sync::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// One reservation request, owned while it waits.
#[derive(Clone, Debug)]
pub struct ReserveArgs {
    pub reference: String,
    pub qty: i64,
    /// `""` when no user was named.
    pub user: String,
    /// The key remembering its Idempotency-Key (`Keys::idem`), if it has one.
    pub idem_key: Option<String>,
}

/// A reservation's reply, with the journal entry of its call when it reserved.
pub type Reply = (ReserveReply, Option<Arc<JournalBatch>>);

/// `Ok(None)`: the product is not loaded into Redis.
pub type CallResult = Result<Option<Reply>, Failure>;

/// A request waiting for its call, and where its answer goes.
pub struct Queued {
    pub req: ReserveArgs,
    pub reply: oneshot::Sender<CallResult>,
}

#[derive(Default)]
pub struct ReserveBatches {
    by_product: RefCell<HashMap<ProductId, Vec<Queued>>>,
}

impl ReserveBatches {
    /// Queues `q`; `true` when the product had no queue: the caller starts its flush task.
    pub fn push(&self, pid: ProductId, q: Queued) -> bool {
        let mut queues = self.by_product.borrow_mut();
        let start = !queues.contains_key(&pid);
        queues.entry(pid).or_default().push(q);
        start
    }

    /// Everything waiting for `pid`; `None` when nothing waits, and the queue is then gone.
    pub fn take(&self, pid: ProductId) -> Option<Vec<Queued>> {
        let mut queues = self.by_product.borrow_mut();
        let queue = queues.get_mut(&pid)?;
        if queue.is_empty() {
            queues.remove(&pid);
            return None;
        }
        Some(std::mem::take(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> Queued {
        Queued {
            req: ReserveArgs {
                reference: "1-A".into(),
                qty: 1,
                user: String::new(),
                idem_key: None,
            },
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_queue_lives_exactly_while_its_flush_runs() {
        let q = ReserveBatches::default();
        let p = ProductId::new(1).unwrap();
        assert!(q.push(p, queued()), "the first request starts the flush");
        assert!(!q.push(p, queued()), "later ones join it");
        assert_eq!(q.take(p).map(|v| v.len()), Some(2));
        assert!(
            !q.push(p, queued()),
            "queued during the call: the running flush sends it"
        );
        assert_eq!(q.take(p).map(|v| v.len()), Some(1));
        assert!(q.take(p).is_none(), "nothing left: the flush ends");
        assert!(q.push(p, queued()), "and the next request starts a new one");
    }
}
