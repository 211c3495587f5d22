//! `GET /api/products/{id}`: the product with its live reservable stock from Redis, loaded
//! from PostgreSQL on first use, and its sale's window and state (by Redis's clock). The
//! admin API answers with the same body.

use crate::domain::ProductId;
use crate::http::response::{ApiError, Response};
use crate::lifecycle::load::product;
use crate::local::Local;
use crate::redis::scripts::product::ProductView;
use crate::time::rfc3339_ms;
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
    sale_starts_at: Option<String>,
    sale_ends_at: Option<String>,
    state: &'static str,
}

pub async fn get(w: &Local, id: &str) -> Result<Response, ApiError> {
    let pid = ProductId::parse(id).ok_or(ApiError::ProductNotFound)?;
    crate::failpoint!("product_get");
    match product(w, pid).await? {
        Some(p) => Ok(respond_with(200, &p)),
        None => Err(ApiError::ProductNotFound),
    }
}

/// The product body with `status` (200 for a read, 201 for a creation).
pub fn respond_with(status: u16, p: &ProductView) -> Response {
    Response::json(
        status,
        &Body {
            id: p.id.get(),
            name: &p.name,
            price_cents: p.price_cents,
            stock: p.stock,
            max_per_order: p.max_per_order,
            per_user_limit: p.per_user_limit,
            created_at: &p.created_at,
            updated_at: &p.updated_at,
            sale_starts_at: p.sale_starts_at_ms.map(rfc3339_ms),
            sale_ends_at: p.sale_ends_at_ms.map(rfc3339_ms),
            state: p.state.as_str(),
        },
    )
}
