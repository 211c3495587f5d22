//! `GET /api/products/{id}`: the product with its live reservable stock from Redis, loaded
//! from PostgreSQL on first use.

use crate::domain::ProductId;
use crate::http::response::{ApiError, Response, Unavailable};
use crate::lifecycle::{ensure_loaded, redis_error, reply_error};
use crate::redis::scripts::{ProductView, decode_product, product_call};
use crate::worker::Worker;
use serde::Serialize;

#[derive(Serialize)]
struct Body<'a> {
    id: i64,
    name: &'a str,
    price_cents: i64,
    stock: i64,
    max_per_order: i64,
    per_user_limit: Option<i64>,
    created_at: &'a str,
    updated_at: &'a str,
}

pub async fn get(w: &Worker, id: &str) -> Result<Response, ApiError> {
    let pid = ProductId::parse(id).ok_or(ApiError::ProductNotFound)?;
    for _ in 0..2 {
        let v = w
            .redis
            .eval(&product_call(&w.keys, pid))
            .await
            .map_err(redis_error)?;
        match decode_product(v, pid).map_err(reply_error)? {
            Some(p) => return Ok(respond(&p)),
            None => {
                if !ensure_loaded(w, pid).await? {
                    return Err(ApiError::ProductNotFound);
                }
            }
        }
    }
    // Loaded, then gone again before we could read it: Redis is being flushed under us.
    Err(ApiError::Unavailable(Unavailable::Redis))
}

fn respond(p: &ProductView) -> Response {
    Response::json(
        200,
        &Body {
            id: p.id.get(),
            name: &p.name,
            price_cents: p.price_cents,
            stock: p.stock,
            max_per_order: p.max_per_order,
            per_user_limit: p.per_user_limit,
            created_at: &p.created_at,
            updated_at: &p.updated_at,
        },
    )
}
