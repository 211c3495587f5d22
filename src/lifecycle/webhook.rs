//! Applying a payment provider's verdict to an order, wherever the order is: in Redis (the
//! usual case), only in PostgreSQL (Redis lost it, or another tool inserted it: it is
//! adopted into Redis first, or answered from PostgreSQL when already final), or nowhere yet
//! (recorded as pending and applied when the order appears). Returns after PostgreSQL has
//! committed the effect.

use crate::domain::{
    Failure, OrderRecord, ProductId, Unavailable, WebhookOutcome, product_of_reference,
};
use crate::handoff::Permit;
use crate::lifecycle::load::{adopt, ensure_loaded, find_order};
use crate::lifecycle::{redis_failure, reply_failure};
use crate::local::Local;
use crate::local::queue::commit;
use crate::redis::scripts::transition::{
    Settlement, Transition, TransitionReply, decode_transition, transition_call,
};
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
    let mut attempts = 0;
    let (transition, record) = loop {
        attempts += 1;
        if attempts > 4 {
            tracing::error!(
                reference,
                "order keeps vanishing from Redis while applying a webhook"
            );
            return Err(Failure::Unavailable(Unavailable::Redis));
        }
        let v = w
            .redis
            .eval(&transition_call(verdict, &w.keys, pid, reference))
            .await
            .map_err(redis_failure)?;
        match decode_transition(v, pid, reference).map_err(reply_failure)? {
            // Whether this call changed the order does not matter here: the writer is sent the
            // record either way (a repeat may follow a crash before the first commit).
            TransitionReply::Done {
                transition, record, ..
            } => break (transition, record),
            TransitionReply::NotLoaded => {
                if !ensure_loaded(w, pid).await? {
                    drop(p);
                    return record_early(w, reference, payload).await;
                }
            }
            TransitionReply::NotFound => {
                let found = match from_pg.take() {
                    Some(found) => found,
                    None => find_order(w, reference).await?,
                };
                let Some(order) = found else {
                    drop(p);
                    return record_early(w, reference, payload).await;
                };
                // Never look again: a second miss means the order keeps vanishing.
                from_pg = Some(None);
                if order.state.is_final() {
                    // Redis let go of a finished order; PostgreSQL has its final state.
                    return finish(p, order, Transition::OtherFinal, success, payload).await;
                }
                adopt(w, &order).await?;
            }
        }
    };
    finish(p, record, transition, success, payload).await
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
