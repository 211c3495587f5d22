//! A buyer giving a pending order back (`POST /api/orders/{order_reference}/cancel`):
//! `lua/cancel.lua` decides it in one atomic step, so a cancellation racing a payment, a
//! failure or the order's expiry has exactly one winner; the answer comes after PostgreSQL
//! committed the change. The order is found where the webhook path finds it: in Redis, else
//! in PostgreSQL (adopted into Redis when still pending, answered from there when final).

use crate::domain::{CancelReason, Failure, OrderRecord, OrderState};
use crate::domain::{ProductId, product_of_reference};
use crate::lifecycle::load::{Settled, find_order, settle};
use crate::local::Local;
use crate::local::queue::commit;
use crate::redis::scripts::transition::{Transition, cancel_call};
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
    let call = || cancel_call(&w.keys, pid, reference, buyer);
    let (transition, record) = match settle(w, pid, reference, call, owned, from_pg).await? {
        Settled::Done(transition, record) => (transition, record),
        Settled::FinalInPostgres(order) => return Ok(outcome(order)),
        Settled::Missing => return Ok(CancelOutcome::NotFound),
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
