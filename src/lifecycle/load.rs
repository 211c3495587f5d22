//! What Redis lacks, read from PostgreSQL: products loaded into Redis on first use (after a
//! writer barrier, so every reservation handed over so far is counted), and orders that only
//! PostgreSQL has. Also the two reads of the API, which look in Redis first: a product with
//! its live stock, and an order.

use crate::domain::{Failure, OrderRecord, ProductId, Unavailable, product_of_reference};
use crate::lifecycle::queue::ask_writer;
use crate::lifecycle::{redis_failure, reply_failure};
use crate::redis::record::{decode_record, record_cmd};
use crate::redis::scripts::load::{decode_load, load_call};
use crate::redis::scripts::product::{ProductView, decode_product, product_call};
use crate::worker::ctx::Worker;
use crate::worker::flight::Joined;
use crate::writer::msg::WriterMsg;

/// Makes sure product `pid` is in Redis; `false` when PostgreSQL has no such product.
/// Concurrent callers on this worker share one load.
pub async fn ensure_loaded(w: &Worker, pid: ProductId) -> Result<bool, Failure> {
    match w.join_load(pid) {
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

async fn load(w: &Worker, pid: ProductId) -> Result<bool, Failure> {
    let snapshot = ask_writer(w, |reply| WriterMsg::LoadProduct {
        product_id: pid,
        reply,
    })
    .await?;
    let Some(snapshot) = snapshot else {
        return Ok(false);
    };
    let installed = decode_load(
        w.redis()
            .eval(&load_call(w.keys(), &snapshot))
            .await
            .map_err(redis_failure)?,
    )
    .map_err(reply_failure)?;
    if let Some(stock) = installed {
        tracing::info!(worker = w.id(), product = %pid, stock, pending = snapshot.pending.len(),
            "product loaded into Redis from PostgreSQL");
        for o in &snapshot.pending {
            w.arm(pid, o.expires_at_ms);
        }
    }
    w.remember(pid);
    Ok(true)
}

/// Reads an order from PostgreSQL (after everything queued before is committed).
pub async fn find_order(w: &Worker, reference: &str) -> Result<Option<OrderRecord>, Failure> {
    ask_writer(w, |reply| WriterMsg::FindOrder {
        reference: reference.to_string(),
        reply,
    })
    .await
}

/// A product with its live reservable stock, loading it first if Redis does not have it;
/// `None` when PostgreSQL has no such product.
pub async fn product(w: &Worker, pid: ProductId) -> Result<Option<ProductView>, Failure> {
    for _ in 0..2 {
        let v = w
            .redis()
            .eval(&product_call(w.keys(), pid))
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
pub async fn order(w: &Worker, reference: &str) -> Result<Option<OrderRecord>, Failure> {
    if let Some(pid) = product_of_reference(reference) {
        let v = w
            .redis()
            .request(record_cmd(&w.keys().order(pid, reference)))
            .await
            .map_err(redis_failure)?;
        if let Some(o) = decode_record(v, pid, reference).map_err(reply_failure)? {
            return Ok(Some(o));
        }
    }
    find_order(w, reference).await
}
