//! The messages that cross from the workers to the writer thread.

use crate::domain::{
    AdminChange, EndpointPatch, NewEndpoint, NewProduct, OrderRecord, ProductId, ProductPatch,
};
use crate::writer::batch::Batched;
use futures_channel::oneshot;

/// Why the writer could not do what a message asked. The caller answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// PostgreSQL refused this message's rows (a constraint); it stays in the Redis journal.
    Rejected(String),
    /// PostgreSQL refused a value of an admin change as data (SQLSTATE class 22): the
    /// client's input, answered 400.
    BadInput(String),
    /// PostgreSQL is unreachable or the writer is shutting down without it.
    Unavailable,
}

/// Answers a message after its effect is committed (or cannot be).
pub type Reply<T> = oneshot::Sender<Result<T, WriteError>>;
/// Completes when the message's effect is committed (or cannot be).
pub type Done = Reply<()>;

/// The journal entry shared by the reservations of one `reserve.lua` call: the writer removes
/// it when the last of them is committed.
#[derive(Debug)]
pub struct JournalBatch {
    pub product: ProductId,
    /// `<ref>,<ref>,...|pending`, exactly as `reserve.lua` wrote it.
    pub member: String,
    /// Reservations of the call not yet committed.
    pub remaining: std::sync::atomic::AtomicUsize,
}

impl JournalBatch {
    /// Counts one reservation committed; true for the last one.
    pub fn committed_one(&self) -> bool {
        self.remaining
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
    }
}

/// What a webhook adds to an order change.
#[derive(Debug)]
pub struct WebhookNote {
    /// The raw request body, stored in `webhooks.payload`.
    pub payload: String,
    /// A success that came after the order was cancelled: record it for an operator to refund.
    pub refund_required: bool,
}

#[derive(Debug)]
pub enum WriterMsg {
    /// Make PostgreSQL's copy of the order match `record`: insert it if absent (as pending),
    /// then move it to `record.state` if that is final and the row is still pending.
    Order {
        record: OrderRecord,
        webhook: Option<WebhookNote>,
        done: Option<Done>,
        /// For a new reservation: the journal entry it shares with its batch.
        journal: Option<std::sync::Arc<JournalBatch>>,
    },
    /// A webhook for a reference nobody knows yet: store it as pending in `webhooks`.
    EarlyWebhook {
        reference: String,
        payload: String,
        done: Done,
    },
    /// A restock journaled in Redis (`restock.lua`): `products.stock += delta` once per op id;
    /// `done` completes after the commit.
    Restock {
        product: ProductId,
        op_id: String,
        delta: i64,
        done: Done,
    },
    /// An admin change of products or late payments, committed in order after everything
    /// queued before it.
    Admin {
        op: AdminOp,
        reply: Reply<AdminChange>,
    },
    /// Commit everything queued before, then complete: a load reads its snapshot after it,
    /// so that every reservation handed over before is in PostgreSQL.
    Barrier(Done),
}

impl Batched for WriterMsg {
    fn rows(&self) -> usize {
        match self {
            WriterMsg::Order { .. }
            | WriterMsg::EarlyWebhook { .. }
            | WriterMsg::Restock { .. } => 1,
            _ => 0,
        }
    }

    fn urgent(&self) -> bool {
        match self {
            WriterMsg::Order { done, .. } => done.is_some(),
            _ => true,
        }
    }
}

/// What an admin change is.
#[derive(Debug)]
pub enum AdminOp {
    Create(NewProduct),
    Patch(ProductId, ProductPatch),
    /// Ends the sale at this time (Unix ms), which `close.lua` took from Redis's clock.
    Close(ProductId, i64),
    /// Marks a late payment refunded (once; repeats change nothing).
    Refund(String),
    /// Makes an event endpoint with a new secret.
    CreateEndpoint(NewEndpoint),
    /// Deletes an event endpoint and its deliveries.
    DeleteEndpoint(i64),
    /// Changes an event endpoint.
    PatchEndpoint(i64, EndpointPatch),
    /// A new secret; the old one keeps signing for 24 hours.
    RotateSecret(i64),
    /// Sends a delivery again from the start of its schedule: (endpoint id, event id).
    Redeliver(i64, String),
}

/// A pending webhook whose order has appeared: the writer hands it to a worker, which applies
/// it exactly like a live one.
#[derive(Debug, Clone)]
pub struct DeferredWebhook {
    pub reference: String,
    /// `status` was `success` (else `failure`).
    pub success: bool,
    pub payload: String,
}
