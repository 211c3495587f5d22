//! Applying a payment provider's verdict to an order, wherever the order is: in Redis (the
//! usual case), only in PostgreSQL (Redis lost it, or another tool inserted it: it is
//! adopted into Redis first, or answered from PostgreSQL when already final), or nowhere yet
//! (recorded as pending and applied when the order appears). Returns after PostgreSQL has
//! committed the effect.

use crate::domain::{Failure, OrderRecord, ProductId, WebhookOutcome, product_of_reference};
use crate::handoff::Permit;
use crate::lifecycle::load::{Settled, find_order, settle};
use crate::local::Local;
use crate::local::queue::commit;
use crate::redis::scripts::transition::{Settlement, Transition, transition_call};
use crate::writer::msg::{WebhookNote, WriterMsg};

/// Applies `success` (else failure) to the order `reference`.
pub async fn apply(
    w: &Local,
    reference: &str,
    success: bool,
    payload: String,
) -> Result<WebhookOutcome, Failure> {
    let verdict = if success {
        Settlement::Success
    } else {
        Settlement::Failure
    };
    // The product's keys are found from the reference when it is one of ours, else through
    // PostgreSQL (an order inserted by another tool may carry any reference).
    let mut from_pg: Option<Option<OrderRecord>> = None;
    let pid: ProductId = match product_of_reference(reference) {
        Some(pid) => pid,
        None => match find_order(w, reference).await? {
            Some(o) => {
                let pid = o.product_id;
                from_pg = Some(Some(o));
                pid
            }
            None => return record_early(w, reference, payload).await,
        },
    };

    let p = w.queue.permit()?;
    let call = || transition_call(verdict, &w.keys, pid, reference);
    match settle(w, pid, reference, call, |_| true, from_pg).await? {
        Settled::Done(transition, record) => finish(p, record, transition, success, payload).await,
        Settled::FinalInPostgres(order) => {
            finish(p, order, Transition::OtherFinal, success, payload).await
        }
        Settled::Missing => {
            drop(p);
            record_early(w, reference, payload).await
        }
    }
}

/// Records the webhook with the order's state and waits for the commit.
async fn finish(
    p: Permit<'_, WriterMsg>,
    record: OrderRecord,
    transition: Transition,
    success: bool,
    payload: String,
) -> Result<WebhookOutcome, Failure> {
    let outcome = WebhookOutcome::of(transition == Transition::Applied, success, record.state);
    let refund_required = outcome.refund_required();
    commit(p, |done| WriterMsg::Order {
        record,
        webhook: Some(WebhookNote {
            payload,
            refund_required,
        }),
        done: Some(done),
        journal: None,
    })
    .await?;
    Ok(outcome)
}

async fn record_early(
    w: &Local,
    reference: &str,
    payload: String,
) -> Result<WebhookOutcome, Failure> {
    let p = w.queue.permit()?;
    commit(p, |done| WriterMsg::EarlyWebhook {
        reference: reference.to_string(),
        payload,
        done,
    })
    .await?;
    Ok(WebhookOutcome::RecordedEarly)
}
