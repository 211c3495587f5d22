//! What the admin API changes and reads. Every change is ordered like an order's:
//! - product attributes (create, patch, close) are written by the writer, then copied into
//!   Redis at once (`sync.lua`; the writer's sync loop copies any change it did not see
//!   copied within a second, and changes made with SQL too);
//! - a restock takes a place in the writer's queue, then runs `restock.lua`, which moves the
//!   counter and journals the delta in one step, then waits for the writer to apply it to
//!   `products.stock` once per op id: the conservation law holds at every instant (`reconcile`
//!   counts journaled deltas) and a crash between the two steps replays the delta;
//! - reads (stats, orders, late payments) go to the reader.

use crate::domain::{
    AdminChange, AdminOutcome, DeliveryFilter, DeliveryView, EndpointPatch, EventEndpoint,
    EventFilter, Failure, LatePayment, NewEndpoint, NewProduct, OrderEvent, OrderFilter,
    OrderRecord, ProductAttrs, ProductId, ProductPatch, ProductStats, Unavailable,
};
use crate::lifecycle::load::{ensure_loaded, product, read_failure};
use crate::lifecycle::{redis_failure, reply_failure};
use crate::local::Local;
use crate::local::queue::commit;
use crate::reader::ReadMsg;
use crate::redis::scripts::admin::{
    CloseReply, RestockReply, SyncReply, close_call, decode_close, decode_restock, decode_sync,
    restock_call, sync_call,
};
use crate::redis::scripts::load::invalidate_call;
use crate::redis::scripts::product::ProductView;
use crate::writer::msg::{AdminOp, WriterMsg};

/// Creates a product; answers it as `GET /api/products/{id}` shows it (loaded into Redis).
pub async fn create(w: &Local, p: NewProduct) -> Result<AdminOutcome<ProductView>, Failure> {
    change(w, AdminOp::Create(p)).await
}

/// Changes a product's sold attributes.
pub async fn patch(
    w: &Local,
    pid: ProductId,
    patch: ProductPatch,
) -> Result<AdminOutcome<ProductView>, Failure> {
    change(w, AdminOp::Patch(pid, patch)).await
}

/// Ends a product's sale now: reservations get 409 `sale_ended`; pending orders can still be
/// paid until they expire, and the units they release are not sold again.
///
/// Redis closes first (`close.lua`, by its clock, which also decides every reservation), then
/// PostgreSQL stores that same end: no order can be created after the stored end.
pub async fn close(w: &Local, pid: ProductId) -> Result<AdminOutcome<ProductView>, Failure> {
    for _ in 0..2 {
        let v = w
            .redis
            .eval(&close_call(&w.keys, pid))
            .await
            .map_err(redis_failure)?;
        match decode_close(v).map_err(reply_failure)? {
            CloseReply::NotLoaded => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(AdminOutcome::NotFound);
                }
            }
            CloseReply::Closed { ends_ms } | CloseReply::AlreadyEnded { ends_ms } => {
                return change(w, AdminOp::Close(pid, ends_ms)).await;
            }
        }
    }
    // Loaded, then gone again before the script ran: Redis is being flushed under us.
    Err(Failure::Unavailable(Unavailable::Redis))
}

/// A product change by the writer, copied into Redis, answered with the product.
async fn change(w: &Local, op: AdminOp) -> Result<AdminOutcome<ProductView>, Failure> {
    let changed = commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await?;
    let attrs = match changed {
        AdminChange::Product(a) => a,
        AdminChange::NotFound
        | AdminChange::LatePayment(_)
        | AdminChange::Endpoint(_)
        | AdminChange::Deleted
        | AdminChange::Redelivered => {
            return Ok(AdminOutcome::NotFound);
        }
        AdminChange::InvalidWindow => return Ok(AdminOutcome::InvalidWindow),
    };
    w.loads.forget_missing_product(attrs.id);
    sync(w, &attrs).await?;
    view(w, attrs.id).await
}

/// Copies changed attributes into Redis if the product is loaded there (see `sync.lua`).
async fn sync(w: &Local, attrs: &ProductAttrs) -> Result<(), Failure> {
    let v = w
        .redis
        .eval(&sync_call(&w.keys, attrs))
        .await
        .map_err(redis_failure)?;
    if decode_sync(v).map_err(reply_failure)? == SyncReply::Invalidate {
        w.redis
            .eval(&invalidate_call(&w.keys, attrs.id))
            .await
            .map_err(redis_failure)?;
    }
    Ok(())
}

/// The product as `GET /api/products/{id}` shows it, loading it if needed.
async fn view(w: &Local, pid: ProductId) -> Result<AdminOutcome<ProductView>, Failure> {
    Ok(match product(w, pid).await? {
        Some(v) => AdminOutcome::Done(v),
        None => AdminOutcome::NotFound,
    })
}

/// Adds `delta` units to the reservable stock (and `products.stock`), or removes them when
/// negative, never more than are reservable.
pub async fn restock(
    w: &Local,
    pid: ProductId,
    delta: i64,
) -> Result<AdminOutcome<ProductView>, Failure> {
    let op_id = ulid::Ulid::generate().to_string();
    let p = w.queue.permit()?;
    for _ in 0..2 {
        let v = w
            .redis
            .eval(&restock_call(&w.keys, pid, &op_id, delta))
            .await
            .map_err(redis_failure)?;
        match decode_restock(v).map_err(reply_failure)? {
            RestockReply::NotLoaded => {
                if !ensure_loaded(w, pid).await? {
                    return Ok(AdminOutcome::NotFound);
                }
            }
            RestockReply::Insufficient { reservable } => {
                return Ok(AdminOutcome::Insufficient { reservable });
            }
            RestockReply::OverCap { reservable } => {
                return Ok(AdminOutcome::OverCap { reservable });
            }
            RestockReply::Done { .. } => {
                commit(p, |done| WriterMsg::Restock {
                    product: pid,
                    op_id,
                    delta,
                    done,
                })
                .await?;
                w.expiries.remember(pid);
                return view(w, pid).await;
            }
        }
    }
    // Loaded, then gone again before the script ran: Redis is being flushed under us.
    Err(Failure::Unavailable(Unavailable::Redis))
}

/// A product's numbers, with its live reservable stock.
pub async fn stats(
    w: &Local,
    pid: ProductId,
) -> Result<AdminOutcome<(ProductStats, i64)>, Failure> {
    let Some(view) = product(w, pid).await? else {
        return Ok(AdminOutcome::NotFound);
    };
    let stats = w
        .reader
        .ask(|reply| ReadMsg::Stats {
            product_id: pid,
            reply,
        })
        .await
        .map_err(read_failure)?;
    Ok(match stats {
        Some(s) => AdminOutcome::Done((s, view.stock)),
        None => AdminOutcome::NotFound,
    })
}

/// A page of orders as PostgreSQL has them, with their ids (the cursor).
pub async fn orders(w: &Local, filter: OrderFilter) -> Result<Vec<(i64, OrderRecord)>, Failure> {
    w.reader
        .ask(|reply| ReadMsg::Orders { filter, reply })
        .await
        .map_err(read_failure)
}

/// A page of the event feed.
pub async fn events(w: &Local, filter: EventFilter) -> Result<Vec<OrderEvent>, Failure> {
    w.reader
        .ask(|reply| ReadMsg::Events { filter, reply })
        .await
        .map_err(read_failure)
}

pub async fn late_payments(w: &Local, refunded: Option<bool>) -> Result<Vec<LatePayment>, Failure> {
    w.reader
        .ask(|reply| ReadMsg::LatePayments { refunded, reply })
        .await
        .map_err(read_failure)
}

/// Makes an event endpoint; its secret is in the answer, and nowhere else afterwards.
pub async fn create_endpoint(w: &Local, e: NewEndpoint) -> Result<EventEndpoint, Failure> {
    let op = AdminOp::CreateEndpoint(e);
    match commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await? {
        AdminChange::Endpoint(e) => Ok(e),
        other => {
            tracing::error!(
                ?other,
                "the writer answered an endpoint's creation with something else"
            );
            Err(Failure::Internal)
        }
    }
}

/// Deletes an event endpoint with its deliveries; `false` when there was none.
pub async fn delete_endpoint(w: &Local, id: i64) -> Result<bool, Failure> {
    let op = AdminOp::DeleteEndpoint(id);
    Ok(matches!(
        commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await?,
        AdminChange::Deleted
    ))
}

/// Changes an event endpoint (`Ok(None)`: no such endpoint).
pub async fn patch_endpoint(
    w: &Local,
    id: i64,
    p: EndpointPatch,
) -> Result<Option<EventEndpoint>, Failure> {
    endpoint_change(w, AdminOp::PatchEndpoint(id, p)).await
}

/// Gives an endpoint a new secret, shown in the answer (`Ok(None)`: no such endpoint).
pub async fn rotate_secret(w: &Local, id: i64) -> Result<Option<EventEndpoint>, Failure> {
    endpoint_change(w, AdminOp::RotateSecret(id)).await
}

async fn endpoint_change(w: &Local, op: AdminOp) -> Result<Option<EventEndpoint>, Failure> {
    match commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await? {
        AdminChange::Endpoint(e) => Ok(Some(e)),
        _ => Ok(None),
    }
}

/// Puts a delivery back at the start of its schedule; `false` when there is none.
pub async fn redeliver(w: &Local, endpoint_id: i64, event_id: &str) -> Result<bool, Failure> {
    let op = AdminOp::Redeliver(endpoint_id, event_id.to_string());
    Ok(matches!(
        commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await?,
        AdminChange::Redelivered
    ))
}

/// A page of an endpoint's deliveries (`None`: no such endpoint).
pub async fn deliveries(
    w: &Local,
    filter: DeliveryFilter,
) -> Result<Option<Vec<DeliveryView>>, Failure> {
    w.reader
        .ask(|reply| ReadMsg::Deliveries { filter, reply })
        .await
        .map_err(read_failure)
}

/// The event endpoints, without their secrets.
pub async fn endpoints(w: &Local) -> Result<Vec<EventEndpoint>, Failure> {
    w.reader
        .ask(|reply| ReadMsg::Endpoints { reply })
        .await
        .map_err(read_failure)
}

/// Marks a late payment refunded (repeats answer the same and change nothing).
pub async fn refund(w: &Local, reference: &str) -> Result<AdminOutcome<LatePayment>, Failure> {
    let op = AdminOp::Refund(reference.to_string());
    Ok(
        match commit(w.queue.permit()?, |reply| WriterMsg::Admin { op, reply }).await? {
            AdminChange::LatePayment(l) => AdminOutcome::Done(l),
            _ => AdminOutcome::NotFound,
        },
    )
}
