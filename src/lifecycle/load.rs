//! What Redis lacks, read from PostgreSQL through the reader (never through the writer's
//! queue): products loaded into Redis on first use, and orders that only PostgreSQL has. Also
//! the two reads of the API, which look in Redis first: a product with its live stock, and an
//! order.
//!
//! A load reads its snapshot after a writer barrier, so every reservation handed over so far
//! is counted; it asks the reader first whether the product exists at all, so that requests
//! for unknown products never reach the writer. What PostgreSQL says does not exist is
//! remembered on this core for a second (`local::loads`).

use crate::domain::{Failure, OrderRecord, ProductId, Unavailable, product_of_reference};
use crate::lifecycle::{redis_failure, reply_failure};
use crate::local::Local;
use crate::local::flight::Joined;
use crate::reader::{ReadError, ReadMsg};
use crate::redis::record::{decode_record, record_cmd};
use crate::redis::scripts::ScriptCall;
use crate::redis::scripts::load::{AdoptReply, adopt_call, decode_adopt, decode_load, load_call};
use crate::redis::scripts::product::{ProductView, decode_product, product_call};
use crate::redis::scripts::transition::{Transition, TransitionReply, decode_transition};
use std::time::Instant;

/// Makes sure product `pid` is in Redis; `false` when PostgreSQL has no such product.
/// Concurrent callers on this worker share one load.
pub async fn ensure_loaded(w: &Local, pid: ProductId) -> Result<bool, Failure> {
    match w.loads.join(pid) {
        Joined::Follow(rx) => rx
            .await
            .unwrap_or(Err(Failure::Unavailable(Unavailable::Redis))),
        Joined::Lead(lead) => {
            // Whatever ends this load (even the caller being dropped mid-way), its waiters are
            // answered and the next request may start another.
            let result = load(w, pid).await;
            lead.finish(result);
            result
        }
    }
}

async fn load(w: &Local, pid: ProductId) -> Result<bool, Failure> {
    let now = Instant::now();
    if w.loads.product_missing(pid, now) {
        return Ok(false);
    }
    let exists = w
        .reader
        .ask(|reply| ReadMsg::ProductExists {
            product_id: pid,
            reply,
        })
        .await
        .map_err(read_failure)?;
    if !exists {
        w.loads.remember_missing_product(pid, now);
        return Ok(false);
    }
    w.queue.barrier().await?;
    let snapshot = w
        .reader
        .ask(|reply| ReadMsg::Snapshot {
            product_id: pid,
            reply,
        })
        .await
        .map_err(read_failure)?;
    let Some(snapshot) = snapshot else {
        return Ok(false);
    };
    let installed = decode_load(
        w.redis
            .eval(&load_call(&w.keys, &snapshot))
            .await
            .map_err(redis_failure)?,
    )
    .map_err(reply_failure)?;
    if let Some(stock) = installed {
        tracing::info!(worker = w.id, product = %pid, stock, pending = snapshot.pending.len(),
            "product loaded into Redis from PostgreSQL");
        for o in &snapshot.pending {
            w.expiries.arm(pid, o.expires_at_ms);
        }
    }
    w.expiries.remember(pid);
    Ok(true)
}

/// Reads an order from PostgreSQL.
pub async fn find_order(w: &Local, reference: &str) -> Result<Option<OrderRecord>, Failure> {
    let now = Instant::now();
    let reference = reference.to_string();
    if w.loads.order_missing(&reference, now) {
        return Ok(None);
    }
    let found = w
        .reader
        .ask(|reply| ReadMsg::Order {
            reference: reference.clone(),
            reply,
        })
        .await
        .map_err(read_failure)?;
    if found.is_none() {
        w.loads.remember_missing_order(reference, now);
    }
    Ok(found)
}

/// Takes a pending order that only PostgreSQL has into Redis (or loads its product, which
/// counts it), so the next transition call finds it.
/// Where an order transition (pay, fail, cancel) ended, wherever the order was.
pub enum Settled {
    /// The script ran on the order in Redis (which it may have loaded or adopted first).
    Done(Transition, OrderRecord),
    /// Only PostgreSQL has the order, in a final state: Redis let go of it.
    FinalInPostgres(OrderRecord),
    /// No such product or order, or not one `owned` accepts.
    Missing,
}

/// Runs the transition script `call` on the order `reference` of product `pid`: loads the
/// product into Redis when it is not there, and adopts a pending order only PostgreSQL has
/// (found by the reader unless `from_pg` already holds it), then runs the script again.
/// Whether the script changed the order does not matter to the callers: they hand the
/// record to the writer either way (a repeat may follow a crash before the first commit).
pub async fn settle(
    w: &Local,
    pid: ProductId,
    reference: &str,
    call: impl Fn() -> ScriptCall,
    owned: impl Fn(&OrderRecord) -> bool,
    mut from_pg: Option<Option<OrderRecord>>,
) -> Result<Settled, Failure> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts > 4 {
            tracing::error!(
                reference,
                "order keeps vanishing from Redis during a transition"
            );
            return Err(Failure::Unavailable(Unavailable::Redis));
        }
        let v = w.redis.eval(&call()).await.map_err(redis_failure)?;
        match decode_transition(v, pid, reference).map_err(reply_failure)? {
            TransitionReply::Done {
                transition, record, ..
            } => return Ok(Settled::Done(transition, record)),
            TransitionReply::NotLoaded => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(Settled::Missing);
                }
            }
            TransitionReply::NotFound => {
                let found = match from_pg.take() {
                    Some(found) => found,
                    None => find_order(w, reference).await?,
                };
                let Some(order) = found.filter(|o| owned(o)) else {
                    return Ok(Settled::Missing);
                };
                // Never look again: a second miss means the order keeps vanishing.
                from_pg = Some(None);
                if order.state.is_final() {
                    return Ok(Settled::FinalInPostgres(order));
                }
                adopt(w, &order).await?;
            }
        }
    }
}

pub async fn adopt(w: &Local, order: &OrderRecord) -> Result<(), Failure> {
    let pid = order.product_id;
    let reply = decode_adopt(
        w.redis
            .eval(&adopt_call(&w.keys, order))
            .await
            .map_err(redis_failure)?,
    )
    .map_err(reply_failure)?;
    match reply {
        AdoptReply::NotLoaded => {
            ensure_loaded(w, pid).await?;
        }
        AdoptReply::AlreadyThere => {}
        AdoptReply::Adopted { shortfall } => {
            if shortfall > 0 {
                tracing::warn!(
                    reference = %order.reference,
                    shortfall,
                    "adopted an order for more units than were left; stock stopped at zero"
                );
            }
            w.expiries.arm(pid, order.expires_at_ms);
        }
    }
    Ok(())
}

pub fn read_failure(e: ReadError) -> Failure {
    match e {
        ReadError::Busy => Failure::Unavailable(Unavailable::ReadQueueFull),
        ReadError::Unavailable => Failure::Unavailable(Unavailable::Database),
        ReadError::BadInput => Failure::BadInput,
    }
}

/// A product with its live reservable stock, loading it first if Redis does not have it;
/// `None` when PostgreSQL has no such product.
pub async fn product(w: &Local, pid: ProductId) -> Result<Option<ProductView>, Failure> {
    for _ in 0..2 {
        let v = w
            .redis
            .eval(&product_call(&w.keys, pid))
            .await
            .map_err(redis_failure)?;
        match decode_product(v, pid).map_err(reply_failure)? {
            Some(p) => return Ok(Some(p)),
            None => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(None);
                }
            }
        }
    }
    // Loaded, then gone again before we could read it: Redis is being flushed under us.
    Err(Failure::Unavailable(Unavailable::Redis))
}

/// An order: from Redis while it is live there (so it is found from the moment of its 202,
/// before its row reaches PostgreSQL), else from PostgreSQL.
pub async fn order(w: &Local, reference: &str) -> Result<Option<OrderRecord>, Failure> {
    if let Some(pid) = product_of_reference(reference) {
        let key = w.keys.order(pid, reference);
        let v = w
            .redis
            .request(&key, record_cmd(&key))
            .await
            .map_err(redis_failure)?;
        if let Some(o) = decode_record(v, pid, reference).map_err(reply_failure)? {
            return Ok(Some(o));
        }
    }
    find_order(w, reference).await
}
