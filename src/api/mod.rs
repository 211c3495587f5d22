//! The HTTP API: routing, and one file per endpoint, each shaped `parse → apply → respond`.
//!
//! | route                               | file              |
//! |-------------------------------------|-------------------|
//! | `GET /api/products/{id}`            | `products.rs`     |
//! | `POST /api/orders`                  | `orders.rs`       |
//! | `GET /api/orders/{order_reference}` | `order_status.rs` |
//! | `POST /api/payments/webhook`        | `webhook.rs`      |
//! | `GET /health`, `/ready`, `/metrics` | `ops.rs`          |

pub mod json;
pub mod ops;
pub mod order_status;
pub mod orders;
pub mod products;
pub mod webhook;

use crate::http::request::Request;
use crate::http::response::{ApiError, Response};
use crate::metrics::Route;
use crate::worker::ctx::Worker;
use std::net::IpAddr;
use std::rc::Rc;

/// Handles one request from the client at `peer`; every outcome, error or not, becomes a
/// response here.
pub async fn handle(w: &Rc<Worker>, req: &Request<'_>, peer: IpAddr) -> Response {
    let (route, result) = dispatch(w, req, peer).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if let ApiError::Unavailable(u) = &e {
                w.metrics().unavailable(*u);
            }
            e.into_response()
        }
    };
    w.metrics().request(route, resp.status);
    resp
}

async fn dispatch(
    w: &Rc<Worker>,
    req: &Request<'_>,
    client: IpAddr,
) -> (Route, Result<Response, ApiError>) {
    let path = req.path.strip_prefix('/').unwrap_or(req.path);
    let mut parts = path.split('/');
    let segs = (parts.next(), parts.next(), parts.next(), parts.next());
    let get = req.method == "GET";
    let post = req.method == "POST";
    match segs {
        (Some("api"), Some("products"), Some(id), None) => (
            Route::ProductGet,
            if get {
                products::get(w, id).await
            } else {
                Err(ApiError::MethodNotAllowed("GET"))
            },
        ),
        (Some("api"), Some("orders"), None, None) => (
            Route::OrderCreate,
            if post {
                orders::create(w, req, client).await
            } else {
                Err(ApiError::MethodNotAllowed("POST"))
            },
        ),
        (Some("api"), Some("orders"), Some(reference), None) => (
            Route::OrderGet,
            if get {
                order_status::get(w, reference).await
            } else {
                Err(ApiError::MethodNotAllowed("GET"))
            },
        ),
        (Some("api"), Some("payments"), Some("webhook"), None) => (
            Route::Webhook,
            if post {
                webhook::handle(w, req).await
            } else {
                Err(ApiError::MethodNotAllowed("POST"))
            },
        ),
        (Some("health"), None, None, None) => (
            Route::Health,
            if get {
                Ok(ops::health())
            } else {
                Err(ApiError::MethodNotAllowed("GET"))
            },
        ),
        (Some("ready"), None, None, None) => (
            Route::Ready,
            if get {
                Ok(ops::ready(w).await)
            } else {
                Err(ApiError::MethodNotAllowed("GET"))
            },
        ),
        (Some("metrics"), None, None, None) => (
            Route::Metrics,
            if get {
                Ok(ops::metrics(w))
            } else {
                Err(ApiError::MethodNotAllowed("GET"))
            },
        ),
        _ => (Route::Unknown, Err(ApiError::NotFound)),
    }
}
