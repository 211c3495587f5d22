//! `GET /api/orders/{order_reference}`: from Redis while the order is live there (so it
//! answers from the moment of the 202, before the row reaches PostgreSQL), else from
//! PostgreSQL (`lifecycle::load::order`). In `jwt` mode only the order's buyer sees it.

use crate::domain::{MAX_REFERENCE_LEN, OrderRecord};
use crate::http::request::Request;
use crate::http::response::{ApiError, Response};
use crate::lifecycle::load::order;
use crate::local::Local;
use crate::time::rfc3339_ms;
use serde::Serialize;

#[derive(Serialize)]
pub struct OrderBody<'a> {
    order_reference: &'a str,
    product_id: i64,
    user_id: Option<&'a str>,
    qty: i32,
    amount_cents: i64,
    status: &'static str,
    cancel_reason: Option<&'static str>,
    expires_at: String,
    created_at: String,
}

pub fn body(o: &OrderRecord) -> OrderBody<'_> {
    OrderBody {
        order_reference: &o.reference,
        product_id: o.product_id.get(),
        user_id: o.user_id.as_deref(),
        qty: o.qty,
        amount_cents: o.amount_cents,
        status: o.state.status(),
        cancel_reason: o.state.cancel_reason(),
        expires_at: rfc3339_ms(o.expires_at_ms),
        created_at: rfc3339_ms(o.created_at_ms),
    }
}

/// Whether a path segment could name an order at all (1 to 64 visible ASCII characters);
/// anything else is "no such order" without a lookup.
pub fn could_be_reference(reference: &str) -> bool {
    !reference.is_empty()
        && reference.len() <= MAX_REFERENCE_LEN
        && reference.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn get(w: &Local, req: &Request<'_>, reference: &str) -> Result<Response, ApiError> {
    // In `jwt` mode an order is its buyer's alone: anyone else is told it does not exist.
    let buyer = w
        .buyers
        .of_request(req.authorization)
        .map_err(ApiError::Unauthorized)?;
    if !could_be_reference(reference) {
        return Err(ApiError::OrderNotFound);
    }
    match order(w, reference).await? {
        Some(o) if buyer.is_none_or(|b| o.user_id.as_deref() == Some(&*b.sub)) => {
            Ok(Response::json(200, &body(&o)))
        }
        _ => Err(ApiError::OrderNotFound),
    }
}
