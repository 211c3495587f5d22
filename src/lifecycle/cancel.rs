//! A buyer giving a pending order back (`POST /api/orders/{order_reference}/cancel`):
//! `lua/cancel.lua` decides it in one atomic step, so a cancellation racing a payment, a
//! failure or the order's expiry has exactly one winner; the answer comes after PostgreSQL
//! committed the change. The order is found where the webhook path finds it: in Redis, else
//! in PostgreSQL (adopted into Redis when still pending, answered from there when final).

use crate::domain::{CancelReason, Failure, OrderRecord, OrderState, Unavailable};
use crate::domain::{ProductId, product_of_reference};
use crate::lifecycle::load::{adopt, ensure_loaded, find_order};
use crate::lifecycle::{redis_failure, reply_failure};
use crate::local::Local;
use crate::local::queue::commit;
use crate::redis::scripts::transition::{
    Transition, TransitionReply, cancel_call, decode_transition,
};
use crate::writer::msg::WriterMsg;

/// What became of a cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled by its buyer, now or by an earlier request (a repeat changes nothing).
    Cancelled(OrderRecord),
    /// Paid, or cancelled for another reason (a failed payment, its expiry): nothing changed.
    NotCancellable(OrderRecord),
    /// No such order, or (in `jwt` mode) another buyer's.
    NotFound,
}

/// Cancels the order `reference` for `buyer` (`None`: whoever holds the reference may).
pub async fn cancel(
    w: &Local,
    reference: &str,
    buyer: Option<&str>,
) -> Result<CancelOutcome, Failure> {
    let owned = |o: &OrderRecord| buyer.is_none_or(|b| o.user_id.as_deref() == Some(b));
    let mut from_pg: Option<Option<OrderRecord>> = None;
    let pid: ProductId = match product_of_reference(reference) {
        Some(pid) => pid,
        None => match find_order(w, reference).await? {
            Some(o) if owned(&o) => {
                let pid = o.product_id;
                from_pg = Some(Some(o));
                pid
            }
            _ => return Ok(CancelOutcome::NotFound),
        },
    };
    let p = w.queue.permit()?;
    let mut attempts = 0;
    let (transition, record) = loop {
        attempts += 1;
        if attempts > 4 {
            tracing::error!(
                reference,
                "order keeps vanishing from Redis while cancelling it"
            );
            return Err(Failure::Unavailable(Unavailable::Redis));
        }
        let v = w
            .redis
            .eval(&cancel_call(&w.keys, pid, reference, buyer))
            .await
            .map_err(redis_failure)?;
        match decode_transition(v, pid, reference).map_err(reply_failure)? {
            // The writer is sent the record whether or not this call changed it: a repeat may
            // follow a crash before the first commit, and the answer waits for the commit.
            TransitionReply::Done {
                transition, record, ..
            } => break (transition, record),
            TransitionReply::NotLoaded => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(CancelOutcome::NotFound);
                }
            }
            TransitionReply::NotFound => {
                let found = match from_pg.take() {
                    Some(found) => found,
                    None => find_order(w, reference).await?,
                };
                let Some(order) = found.filter(owned) else {
                    return Ok(CancelOutcome::NotFound);
                };
                // Never look again: a second miss means the order keeps vanishing.
                from_pg = Some(None);
                if order.state.is_final() {
                    // Redis let go of a finished order; PostgreSQL has its final state.
                    return Ok(outcome(order));
                }
                adopt(w, &order).await?;
            }
        }
    };
    let answer = match transition {
        Transition::Applied | Transition::Repeated => CancelOutcome::Cancelled(record.clone()),
        Transition::OtherFinal => CancelOutcome::NotCancellable(record.clone()),
    };
    commit(p, |done| WriterMsg::Order {
        record,
        webhook: None,
        done: Some(done),
        journal: None,
    })
    .await?;
    Ok(answer)
}

/// The answer for an order already in a final state.
fn outcome(order: OrderRecord) -> CancelOutcome {
    if order.state == OrderState::Cancelled(CancelReason::Buyer) {
        CancelOutcome::Cancelled(order)
    } else {
        CancelOutcome::NotCancellable(order)
    }
}
