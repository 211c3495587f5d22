//! What a worker does to an order beyond reserving it: asking the writer, lazy loading,
//! adopting PostgreSQL-only orders, applying payments, expiring. Shared by the API handlers,
//! the reaper and the deferred webhooks, so each rule exists once.
//!
//! The order of every step is the safety argument:
//! - a handoff permit is taken *before* a script that changes Redis runs, so the change can
//!   always be handed to the writer (a full queue refuses first, having changed nothing);
//! - a product is loaded only after a writer barrier (the `LoadProduct` message is processed
//!   after everything queued before it is committed), so PostgreSQL's pending orders include
//!   every reservation handed over so far;
//! - a webhook's answer waits for the writer's commit.

use crate::domain::{OrderRecord, OrderState, ProductId, product_of_reference};
use crate::handoff::{Permit, Refused};
use crate::http::response::{ApiError, Unavailable};
use crate::reaper::Expiring;
use crate::redis::pipeline::RedisError;
use crate::redis::scripts::{
    AdoptReply, ExpireReply, ReplyError, ScriptId, TransitionReply, adopt_call, decode_adopt,
    decode_expire, decode_load, decode_transition, expire_call, load_call, member_orders,
    transition_call,
};
use crate::worker::Worker;
use crate::writer::msg::{Reply, WebhookNote, WriteError, WriterMsg};

/// Maps Redis trouble to a 503, logging protocol surprises (which are bugs) once here.
pub fn redis_error(e: RedisError) -> ApiError {
    if !matches!(e, RedisError::Unavailable) {
        tracing::error!(error = %e, "Redis call failed");
    }
    ApiError::Unavailable(Unavailable::Redis)
}

pub fn reply_error(e: ReplyError) -> ApiError {
    tracing::error!(error = %e, "Redis script reply not understood");
    ApiError::Internal
}

fn write_error(e: WriteError) -> ApiError {
    if let WriteError::Rejected(why) = &e {
        tracing::error!(error = %why, "PostgreSQL rejected a write");
    }
    ApiError::Unavailable(Unavailable::Database)
}

/// A place in the writer's queue for a new order, or the 503 that says why there is none.
///
/// New orders leave the last eighth of the queue to the changes of existing orders (payments,
/// failures, expiries), and on top of it as many places as this worker has expiries waiting
/// for room: under overload the sale refuses new buyers before it stops releasing expired
/// units, so held reservations (and the memory they take) cannot pile up without bound.
pub fn order_permit(w: &Worker) -> Result<Permit<'_, WriterMsg>, ApiError> {
    let cap = w.handoff.capacity();
    let headroom = cap / 8 + w.expiry_backlog.get().min(cap / 2);
    refused(w.handoff.try_reserve_leaving(headroom))
}

/// A place in the writer's queue, or the 503 that says why there is none.
pub fn permit(w: &Worker) -> Result<Permit<'_, WriterMsg>, ApiError> {
    refused(w.handoff.try_reserve())
}

fn refused(r: Result<Permit<'_, WriterMsg>, Refused>) -> Result<Permit<'_, WriterMsg>, ApiError> {
    r.map_err(|r| {
        ApiError::Unavailable(match r {
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

/// Sends a question to the writer and waits for its answer.
pub async fn ask_writer<T>(
    w: &Worker,
    make: impl FnOnce(Reply<T>) -> WriterMsg,
) -> Result<T, ApiError> {
    commit(permit(w)?, make).await
}

/// Hands over a message carrying a reply sender (a `Done` or a `Reply`) and waits until the
/// writer answers it, which it does after the commit.
pub async fn commit<T>(
    permit: Permit<'_, WriterMsg>,
    make: impl FnOnce(Reply<T>) -> WriterMsg,
) -> Result<T, ApiError> {
    let (tx, rx) = futures_channel::oneshot::channel();
    hand_over(permit, make(tx));
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(write_error(e)),
        Err(_) => Err(ApiError::Unavailable(Unavailable::Database)),
    }
}

/// Makes sure product `pid` is in Redis; `false` when PostgreSQL has no such product.
/// Concurrent callers on this worker share one load.
pub async fn ensure_loaded(w: &Worker, pid: ProductId) -> Result<bool, ApiError> {
    let waiter = {
        let mut loads = w.loads.borrow_mut();
        match loads.get_mut(&pid) {
            Some(waiters) => {
                let (tx, rx) = local_sync::oneshot::channel();
                waiters.push(tx);
                Some(rx)
            }
            None => {
                loads.insert(pid, Vec::new());
                None
            }
        }
    };
    if let Some(rx) = waiter {
        return rx
            .await
            .unwrap_or(Err(ApiError::Unavailable(Unavailable::Redis)));
    }
    // Whatever ends this load (even the caller being dropped mid-way), its waiters are
    // answered and the next request may start another.
    let mut guard = LoadGuard {
        w,
        pid,
        result: None,
    };
    let result = load(w, pid).await;
    guard.result = Some(result.clone());
    result
}

struct LoadGuard<'a> {
    w: &'a Worker,
    pid: ProductId,
    result: Option<Result<bool, ApiError>>,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        let waiters = self
            .w
            .loads
            .borrow_mut()
            .remove(&self.pid)
            .unwrap_or_default();
        let result = self
            .result
            .take()
            .unwrap_or(Err(ApiError::Unavailable(Unavailable::Redis)));
        for tx in waiters {
            let _ = tx.send(result.clone());
        }
    }
}

async fn load(w: &Worker, pid: ProductId) -> Result<bool, ApiError> {
    let snapshot = ask_writer(w, |reply| WriterMsg::LoadProduct {
        product_id: pid,
        reply,
    })
    .await?;
    let Some(snapshot) = snapshot else {
        return Ok(false);
    };
    let installed = decode_load(
        w.redis
            .eval(&load_call(&w.keys, &snapshot))
            .await
            .map_err(redis_error)?,
    )
    .map_err(reply_error)?;
    if let Some(stock) = installed {
        tracing::info!(worker = w.id, product = %pid, stock, pending = snapshot.pending.len(),
            "product loaded into Redis from PostgreSQL");
        let mut wheel = w.wheel.borrow_mut();
        for o in &snapshot.pending {
            wheel.insert(o.expires_at_ms, Expiring::new(pid, o.expires_at_ms));
        }
    }
    w.known_products.borrow_mut().insert(pid);
    Ok(true)
}

/// Reads an order from PostgreSQL (after everything queued before is committed).
pub async fn find_order(w: &Worker, reference: &str) -> Result<Option<OrderRecord>, ApiError> {
    ask_writer(w, |reply| WriterMsg::FindOrder {
        reference: reference.to_string(),
        reply,
    })
    .await
}

/// How a webhook ended, for the response and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// This webhook made the transition it asked for.
    Applied(OrderState),
    /// The same transition had been made before.
    AlreadyProcessed(OrderState),
    /// The order is in another final state; `refund_required` for a success on a cancelled
    /// order (the money was taken for units that went back to the stock).
    FinalState {
        state: OrderState,
        refund_required: bool,
    },
    /// Unknown reference: stored as pending until its order appears.
    RecordedEarly,
}

/// Applies a payment provider's verdict to an order, wherever the order is (Redis, only
/// PostgreSQL, or nowhere yet), and returns after PostgreSQL has committed the effect.
pub async fn apply_webhook(
    w: &Worker,
    reference: &str,
    success: bool,
    payload: String,
) -> Result<WebhookOutcome, ApiError> {
    let script = if success {
        ScriptId::Pay
    } else {
        ScriptId::Fail
    };
    // The product's keys are found from the reference when it is one of ours, else through
    // PostgreSQL (an order inserted by another tool may carry any reference).
    let mut from_pg: Option<Option<OrderRecord>> = None;
    let pid = match product_of_reference(reference) {
        Some(pid) => pid,
        None => {
            let found = find_order(w, reference).await?;
            match &found {
                Some(o) => {
                    let pid = o.product_id;
                    from_pg = Some(found);
                    pid
                }
                None => return record_early(w, reference, payload).await,
            }
        }
    };

    let p = permit(w)?;
    let mut attempts = 0;
    let (code, record) = loop {
        attempts += 1;
        if attempts > 4 {
            tracing::error!(
                reference,
                "order keeps vanishing from Redis while applying a webhook"
            );
            return Err(ApiError::Unavailable(Unavailable::Redis));
        }
        let v = w
            .redis
            .eval(&transition_call(script, &w.keys, pid, reference))
            .await
            .map_err(redis_error)?;
        match decode_transition(v, pid, reference).map_err(reply_error)? {
            // Whether this call changed the order does not matter here: the writer is sent the
            // record either way (a repeat may follow a crash before the first commit).
            TransitionReply::Done { code, record, .. } => break (code, record),
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
                    return finish(p, order, 3, success, payload).await;
                }
                match decode_adopt(
                    w.redis
                        .eval(&adopt_call(&w.keys, &order))
                        .await
                        .map_err(redis_error)?,
                )
                .map_err(reply_error)?
                {
                    AdoptReply::NotLoaded => {
                        ensure_loaded(w, pid).await?;
                    }
                    AdoptReply::AlreadyThere => {}
                    AdoptReply::Adopted { shortfall } => {
                        if shortfall > 0 {
                            tracing::warn!(
                                reference,
                                shortfall,
                                "adopted an order for more units than were left; stock stopped at zero"
                            );
                        }
                        w.wheel
                            .borrow_mut()
                            .insert(order.expires_at_ms, Expiring::new(pid, order.expires_at_ms));
                        w.known_products.borrow_mut().insert(pid);
                    }
                }
            }
        }
    };
    finish(p, record, code, success, payload).await
}

/// Records the webhook with the order's state and waits for the commit.
/// `code`: 0 applied now, 1 applied before, 2 other final state, 3 final state found in
/// PostgreSQL only.
async fn finish(
    p: Permit<'_, WriterMsg>,
    record: OrderRecord,
    code: u8,
    success: bool,
    payload: String,
) -> Result<WebhookOutcome, ApiError> {
    let state = record.state;
    let outcome = match (code, success, state) {
        (0, _, s) => WebhookOutcome::Applied(s),
        (_, true, OrderState::Paid) => WebhookOutcome::AlreadyProcessed(state),
        (_, false, OrderState::Cancelled(crate::domain::CancelReason::PaymentFailed)) => {
            WebhookOutcome::AlreadyProcessed(state)
        }
        (_, true, OrderState::Cancelled(_)) => WebhookOutcome::FinalState {
            state,
            refund_required: true,
        },
        (_, _, s) => WebhookOutcome::FinalState {
            state: s,
            refund_required: false,
        },
    };
    let refund_required = matches!(
        outcome,
        WebhookOutcome::FinalState {
            refund_required: true,
            ..
        }
    );
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
    w: &Worker,
    reference: &str,
    payload: String,
) -> Result<WebhookOutcome, ApiError> {
    let p = permit(w)?;
    commit(p, |done| WriterMsg::EarlyWebhook {
        reference: reference.to_string(),
        payload,
        done,
    })
    .await?;
    Ok(WebhookOutcome::RecordedEarly)
}

/// What one expiry attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireOutcome {
    /// Everything the entry named is settled: expired now, or paid or failed before.
    Done,
    /// Try again at this time (Unix ms): orders not due by Redis's clock, or Redis unavailable.
    /// Orders that were due are expired already.
    RetryAt(i64),
    /// The writer's queue is full: try again at this time, and hold new orders back meanwhile.
    NoRoom(i64),
}

/// Expires the reservations of one pending-set member of product `pid` that are still
/// pending and due.
pub async fn expire(w: &Worker, pid: ProductId, member: &str, now_ms: i64) -> ExpireOutcome {
    // A place in the queue for every order the member may expire, before Redis changes.
    let orders = member_orders(member);
    let mut permits = Vec::with_capacity(orders);
    for _ in 0..orders {
        match w.handoff.try_reserve() {
            Ok(p) => permits.push(p),
            Err(_) => return ExpireOutcome::NoRoom(now_ms + 1_000),
        }
    }
    let call = expire_call(&w.keys, pid, member);
    let v = match w.redis.eval(&call).await {
        Ok(v) => v,
        Err(err) => {
            if !matches!(err, RedisError::Unavailable) {
                tracing::error!(error = %err, "expire failed");
            }
            return ExpireOutcome::RetryAt(now_ms + 1_000);
        }
    };
    match decode_expire(v, pid) {
        Ok(ExpireReply::Done {
            expired,
            retry_at_ms,
        }) => {
            for (record, p) in expired.into_iter().zip(permits) {
                hand_over(
                    p,
                    WriterMsg::Order {
                        record,
                        webhook: None,
                        done: None,
                        journal: None,
                    },
                );
                w.metrics().expired();
            }
            retry_at_ms.map_or(ExpireOutcome::Done, ExpireOutcome::RetryAt)
        }
        // Redis lost the product (or it was invalidated after a restart): rebuild it now, as a
        // request would, so expiries do not wait for the product's next buyer. The load
        // re-arms its pending orders, these included.
        Ok(ExpireReply::NotLoaded) => {
            drop(permits);
            match ensure_loaded(w, pid).await {
                Ok(_) => ExpireOutcome::Done,
                Err(_) => ExpireOutcome::RetryAt(now_ms + 1_000),
            }
        }
        Err(err) => {
            reply_error(err);
            ExpireOutcome::Done
        }
    }
}
