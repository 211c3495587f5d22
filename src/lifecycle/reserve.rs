//! Reserving stock: a place in the writer's queue first, then `reserve.lua` (loading the
//! product if Redis does not have it), then the new order goes to the writer and the reaper is
//! armed.
//!
//! Micro-batching: requests for the same product that become ready while the worker's
//! previous call for that product is in flight share the next `reserve.lua` call. Redis runs
//! scripts one at a time, so its per-call cost (parsing EVALSHA, finding the script, setting up
//! the Lua call) bounds the reservations per second of one product. The first request for a
//! product queues itself and spawns a flush task; the flush task yields once, so every
//! connection task already runnable in this turn can queue its request too, then sends them
//! all in one call (several calls of at most [`MAX_BATCH`], pipelined, when more came), and
//! when it returns sends whatever queued meanwhile, until nothing waits: one call in flight per
//! product and worker, like a group commit. Under light load a batch is one request and the
//! cost is one task switch. Each call's reservations get one timer-wheel entry at their common
//! expiry, the score of the one pending-set member the script wrote for them.
//!
//! Order within a batch is arrival order; the script decides each request in turn, so the
//! outcome is exactly what sequential calls would give.

use crate::domain::{
    Failure, NewOrder, OrderRecord, OrderState, ProductId, ReserveOutcome, Unavailable,
    new_reference,
};
use crate::lifecycle::load::ensure_loaded;
use crate::lifecycle::{redis_failure, reply_failure};
use crate::local::Local;
use crate::local::batches::{CallResult, Queued, ReserveArgs};
use crate::local::queue::hand_over;
use crate::redis::scripts::reserve::{ReserveReply, ReserveRequest, decode_reserve, reserve_call};
use crate::writer::msg::{JournalBatch, WriterMsg};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};

/// Most reservations in one script call: Redis runs nothing else while a script runs, so
/// this bounds the latency one batch adds to other clients (~64 × a few µs).
pub const MAX_BATCH: usize = 64;

/// Reserves `order.qty` units of `order.product_id` for a new order from `client`.
///
/// An Idempotency-Key belongs to its buyer and product: the buyer is the order's `user_id`,
/// or, for an anonymous order, the client address, so that two anonymous clients sending the
/// same key never see each other's order.
pub async fn reserve(
    w: &Rc<Local>,
    order: NewOrder,
    client: IpAddr,
) -> Result<ReserveOutcome, Failure> {
    let pid = order.product_id;
    let reference = new_reference(pid, ulid::Ulid::generate().0);
    // The place in the queue comes first: a full queue must refuse before stock is touched.
    let p = w.queue.order_permit()?;
    let idem_key = order.idempotency_key.as_deref().map(|key| {
        let scope = match &order.user_id {
            Some(u) => format!("user:{u}"),
            None => format!("addr:{client}"),
        };
        w.keys.idem(pid, &scope, key)
    });
    let request = ReserveArgs {
        reference: reference.clone(),
        qty: order.qty,
        user: order.user_id.clone().unwrap_or_default(),
        idem_key,
    };
    let mut reply = None;
    for _ in 0..2 {
        match queue(w, pid, request.clone()).await? {
            Some(r) => {
                reply = Some(r);
                break;
            }
            None => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(ReserveOutcome::ProductNotFound);
                }
            }
        }
    }
    // Loaded, then gone again before the call: Redis is being flushed under us.
    let Some((reply, journal)) = reply else {
        return Err(Failure::Unavailable(Unavailable::Redis));
    };
    Ok(match reply {
        ReserveReply::Reserved {
            amount_cents,
            expires_at_ms,
            created_at_ms,
        } => {
            let record = OrderRecord {
                reference,
                product_id: pid,
                user_id: order.user_id,
                qty: order.qty as i32,
                amount_cents,
                state: OrderState::Pending,
                expires_at_ms,
                created_at_ms,
            };
            hand_over(
                p,
                WriterMsg::Order {
                    record: record.clone(),
                    webhook: None,
                    done: None,
                    journal,
                },
            );
            ReserveOutcome::Reserved(record)
        }
        ReserveReply::Not(outcome) => outcome,
    })
}

/// Queues a reservation for its product's next call and waits for its reply.
async fn queue(w: &Rc<Local>, pid: ProductId, req: ReserveArgs) -> CallResult {
    let (tx, rx) = local_sync::oneshot::channel();
    if w.batches.push(pid, Queued { req, reply: tx }) {
        monoio::spawn(flush(w.clone(), pid));
    }
    rx.await.unwrap_or(Err(Failure::Internal))
}

/// Sends the product's waiting requests, then whatever queued up while that call was in
/// flight, until none wait: one call in flight per product and worker, so the requests that
/// arrive during a round trip share the next call.
async fn flush(w: Rc<Local>, pid: ProductId) {
    YieldOnce(false).await;
    while let Some(mut batch) = w.batches.take(pid) {
        let mut calls = Vec::new();
        while batch.len() > MAX_BATCH {
            let rest = batch.split_off(MAX_BATCH);
            calls.push(monoio::spawn(call(
                w.clone(),
                pid,
                std::mem::replace(&mut batch, rest),
            )));
        }
        call(w.clone(), pid, batch).await;
        for c in calls {
            c.await;
        }
    }
}

/// One `reserve.lua` call for `batch`; every request gets its own reply.
async fn call(w: Rc<Local>, pid: ProductId, batch: Vec<Queued>) {
    crate::failpoint!("reserve_call");
    let keys = w.product_keys.product(pid);
    let script = {
        let reqs: Vec<ReserveRequest<'_>> = batch
            .iter()
            .map(|q| ReserveRequest {
                reference: &q.req.reference,
                qty: q.req.qty,
                user: &q.req.user,
                idem_key: q.req.idem_key.as_deref(),
            })
            .collect();
        let ttl = w.cfg().idempotency_ttl.as_secs();
        reserve_call(&w.keys, &keys, pid, w.hold_ms, ttl, &reqs)
    };
    w.metrics().reserve_call();
    let outcome = match w.redis.eval(&script).await {
        Ok(v) => decode_reserve(v, pid, batch.len()).map_err(reply_failure),
        Err(e) => Err(redis_failure(e)),
    };
    match outcome {
        Ok(Some(done)) => {
            let reserved = done
                .replies
                .iter()
                .filter(|r| matches!(r, ReserveReply::Reserved { .. }))
                .count();
            // One wheel entry for the call's reservations: they share one expiry, the score of
            // the one pending-set member `reserve.lua` wrote for them.
            if let Some(at) = done.replies.iter().find_map(|r| match r {
                ReserveReply::Reserved { expires_at_ms, .. } => Some(*expires_at_ms),
                _ => None,
            }) {
                w.expiries.arm(pid, at);
            }
            let journal = done.journal.map(|member| {
                Arc::new(JournalBatch {
                    product: pid,
                    member,
                    remaining: AtomicUsize::new(reserved),
                })
            });
            for (q, r) in batch.into_iter().zip(done.replies) {
                let j = matches!(r, ReserveReply::Reserved { .. })
                    .then(|| journal.clone())
                    .flatten();
                let _ = q.reply.send(Ok(Some((r, j))));
            }
        }
        Ok(None) => {
            for q in batch {
                let _ = q.reply.send(Ok(None));
            }
        }
        Err(e) => {
            for q in batch {
                let _ = q.reply.send(Err(e));
            }
        }
    }
}

/// Returns `Pending` once after waking itself: the task goes to the back of the run queue.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
