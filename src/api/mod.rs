//! The HTTP API: routing, and one file per endpoint, each shaped `parse → apply → respond`.
//!
//! | route                               | file              |
//! |-------------------------------------|-------------------|
//! | `GET /api/products/{id}`            | `products.rs`     |
//! | `POST /api/orders`                  | `orders.rs`       |
//! | `GET /api/orders/{order_reference}` | `order_status.rs` |
//! | `POST /api/orders/{order_reference}/cancel` | `cancel.rs` |
//! | `POST /api/payments/webhook`        | `webhook.rs`      |
//! | `GET /health`, `/ready`, `/metrics` | `ops.rs`          |
//! | `/admin/...` (products, orders, late payments) | `admin.rs` |

pub mod admin;
pub mod cancel;
pub mod event_endpoints;
pub mod json;
pub mod ops;
pub mod order_status;
pub mod orders;
pub mod products;
pub mod webhook;

use crate::auth::Rejected;
use crate::http::request::Request;
use crate::http::response::{ApiError, Response};
use crate::limits::client::client_address;
use crate::limits::rate::LimitedBy;
use crate::local::Local;
use crate::metrics::Route;
use std::net::IpAddr;
use std::rc::Rc;

/// An endpoint a request resolved to, with what its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ProductGet(&'a str),
    OrderCreate,
    OrderGet(&'a str),
    OrderCancel(&'a str),
    Webhook,
    Health,
    Ready,
    Metrics,
    AdminProductCreate,
    AdminProductPatch(&'a str),
    AdminProductStock(&'a str),
    AdminProductClose(&'a str),
    AdminProductStats(&'a str),
    AdminOrders,
    AdminLatePayments,
    AdminRefund(&'a str),
    AdminEvents,
    AdminEndpointCreate,
    AdminEndpointList,
    AdminEndpointDelete(&'a str),
    AdminEndpointPatch(&'a str),
    AdminEndpointRotate(&'a str),
    AdminDeliveries(&'a str),
    AdminRedeliver(&'a str, &'a str),
}

impl Endpoint<'_> {
    pub fn route(self) -> Route {
        match self {
            Endpoint::ProductGet(_) => Route::ProductGet,
            Endpoint::OrderCreate => Route::OrderCreate,
            Endpoint::OrderGet(_) => Route::OrderGet,
            Endpoint::OrderCancel(_) => Route::OrderCancel,
            Endpoint::Webhook => Route::Webhook,
            Endpoint::Health => Route::Health,
            Endpoint::Ready => Route::Ready,
            Endpoint::Metrics => Route::Metrics,
            Endpoint::AdminProductCreate => Route::AdminProductCreate,
            Endpoint::AdminProductPatch(_) => Route::AdminProductPatch,
            Endpoint::AdminProductStock(_) => Route::AdminProductStock,
            Endpoint::AdminProductClose(_) => Route::AdminProductClose,
            Endpoint::AdminProductStats(_) => Route::AdminProductStats,
            Endpoint::AdminOrders => Route::AdminOrders,
            Endpoint::AdminLatePayments => Route::AdminLatePayments,
            Endpoint::AdminRefund(_) => Route::AdminRefund,
            Endpoint::AdminEvents => Route::AdminEvents,
            Endpoint::AdminEndpointCreate => Route::AdminEndpointCreate,
            Endpoint::AdminEndpointList => Route::AdminEndpointList,
            Endpoint::AdminEndpointDelete(_) => Route::AdminEndpointDelete,
            Endpoint::AdminEndpointPatch(_) => Route::AdminEndpointPatch,
            Endpoint::AdminEndpointRotate(_) => Route::AdminEndpointRotate,
            Endpoint::AdminDeliveries(_) => Route::AdminDeliveries,
            Endpoint::AdminRedeliver(..) => Route::AdminRedeliver,
        }
    }

    /// Probes and scrapes, which rate limits never refuse.
    fn is_operations(self) -> bool {
        matches!(self, Endpoint::Health | Endpoint::Ready | Endpoint::Metrics)
    }

    /// The admin API: its token, not the client address, decides.
    fn is_admin(self) -> bool {
        self.route().is_admin()
    }
}

/// The endpoint of a method and path, or why there is none (404, or 405 with `Allow`).
/// Without an admin token every `/admin/...` path is 404, whatever the method.
pub fn resolve<'a>(method: &str, path: &'a str, admin: bool) -> Result<Endpoint<'a>, ApiError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut parts = path.split('/');
    let segs = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    if parts.next().is_some() || (!admin && segs.0 == Some("admin")) {
        return Err(ApiError::NotFound);
    }
    let (endpoint, allowed) = match segs {
        (Some("api"), Some("products"), Some(id), None, None, None) => {
            (Endpoint::ProductGet(id), "GET")
        }
        (Some("api"), Some("orders"), None, None, None, None) => (Endpoint::OrderCreate, "POST"),
        (Some("api"), Some("orders"), Some(r), None, None, None) => (Endpoint::OrderGet(r), "GET"),
        (Some("api"), Some("orders"), Some(r), Some("cancel"), None, None) => {
            (Endpoint::OrderCancel(r), "POST")
        }
        (Some("api"), Some("payments"), Some("webhook"), None, None, None) => {
            (Endpoint::Webhook, "POST")
        }
        (Some("health"), None, None, None, None, None) => (Endpoint::Health, "GET"),
        (Some("ready"), None, None, None, None, None) => (Endpoint::Ready, "GET"),
        (Some("metrics"), None, None, None, None, None) => (Endpoint::Metrics, "GET"),
        (Some("admin"), Some("products"), None, None, None, None) => {
            (Endpoint::AdminProductCreate, "POST")
        }
        (Some("admin"), Some("products"), Some(id), None, None, None) => {
            (Endpoint::AdminProductPatch(id), "PATCH")
        }
        (Some("admin"), Some("products"), Some(id), Some("stock"), None, None) => {
            (Endpoint::AdminProductStock(id), "POST")
        }
        (Some("admin"), Some("products"), Some(id), Some("close"), None, None) => {
            (Endpoint::AdminProductClose(id), "POST")
        }
        (Some("admin"), Some("products"), Some(id), Some("stats"), None, None) => {
            (Endpoint::AdminProductStats(id), "GET")
        }
        (Some("admin"), Some("orders"), None, None, None, None) => (Endpoint::AdminOrders, "GET"),
        (Some("admin"), Some("late-payments"), None, None, None, None) => {
            (Endpoint::AdminLatePayments, "GET")
        }
        (Some("admin"), Some("events"), None, None, None, None) => (Endpoint::AdminEvents, "GET"),
        // One path, two methods: the endpoint is picked by the method, `Allow` names both.
        (Some("admin"), Some("event-endpoints"), None, None, None, None) => match method {
            "GET" => (Endpoint::AdminEndpointList, "GET, POST"),
            _ => (Endpoint::AdminEndpointCreate, "GET, POST"),
        },
        (Some("admin"), Some("event-endpoints"), Some(id), None, None, None) => match method {
            "PATCH" => (Endpoint::AdminEndpointPatch(id), "DELETE, PATCH"),
            _ => (Endpoint::AdminEndpointDelete(id), "DELETE, PATCH"),
        },
        (Some("admin"), Some("event-endpoints"), Some(id), Some("rotate-secret"), None, None) => {
            (Endpoint::AdminEndpointRotate(id), "POST")
        }
        (Some("admin"), Some("event-endpoints"), Some(id), Some("deliveries"), None, None) => {
            (Endpoint::AdminDeliveries(id), "GET")
        }
        (
            Some("admin"),
            Some("event-endpoints"),
            Some(id),
            Some("deliveries"),
            Some(event),
            Some("redeliver"),
        ) => (Endpoint::AdminRedeliver(id, event), "POST"),
        (Some("admin"), Some("late-payments"), Some(r), Some("refund"), None, None) => {
            (Endpoint::AdminRefund(r), "POST")
        }
        _ => return Err(ApiError::NotFound),
    };
    if allowed.split(", ").any(|m| m == method) {
        Ok(endpoint)
    } else {
        Err(ApiError::MethodNotAllowed(allowed))
    }
}

/// Handles one request from the TCP peer `peer`; every outcome, error or not, becomes a
/// response here. Requests that name no endpoint (404, 405) are counted under `other`.
pub async fn handle(w: &Rc<Local>, req: &Request<'_>, peer: IpAddr) -> Response {
    let started = std::time::Instant::now();
    let admin = w.cfg().admin_token.is_some();
    let (route, result) = match resolve(req.method, req.path, admin) {
        Ok(endpoint) => (endpoint.route(), call(w, req, peer, endpoint).await),
        Err(e) => (Route::Unknown, Err(e)),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if let ApiError::Unavailable(u) = &e {
                w.metrics().unavailable(*u);
            }
            e.into_response()
        }
    };
    let m = w.metrics();
    m.request(route, resp.status);
    m.request_took(route, resp.status, started.elapsed());
    resp
}

/// Runs an endpoint for the client behind `peer`, after its address's rate limit.
async fn call(
    w: &Rc<Local>,
    req: &Request<'_>,
    peer: IpAddr,
    endpoint: Endpoint<'_>,
) -> Result<Response, ApiError> {
    let trusted = &w.cfg().trusted_proxies;
    let client = if trusted.is_empty() {
        peer
    } else {
        client_address(peer, &req.forwarded_for, trusted)
    };
    if endpoint.is_admin() {
        let now = std::time::Instant::now();
        let failures = &w.shared.admin_failures;
        if let Err(secs) = failures.check(client, now) {
            w.metrics().rate_limited(LimitedBy::AdminFailures);
            return Err(ApiError::RateLimited(secs));
        }
        let token = w.cfg().admin_token.as_ref().map_or("", |t| t.expose());
        if !admin::authorized(token, req.authorization) {
            if failures.failed(client, now) {
                tracing::warn!(%client, "too many wrong admin tokens from this address: 429 for the rest of the minute");
            }
            return Err(ApiError::Unauthorized(Rejected::Invalid));
        }
    } else if !endpoint.is_operations()
        && let Err(secs) = w.shared.rate_limits.address(client)
    {
        w.metrics().rate_limited(LimitedBy::Address);
        return Err(ApiError::RateLimited(secs));
    }
    match endpoint {
        Endpoint::ProductGet(id) => products::get(w, id).await,
        Endpoint::OrderCreate => orders::create(w, req, client).await,
        Endpoint::OrderGet(reference) => order_status::get(w, req, reference).await,
        Endpoint::OrderCancel(reference) => cancel::post(w, req, reference).await,
        Endpoint::Webhook => webhook::handle(w, req).await,
        Endpoint::Health => Ok(ops::health()),
        Endpoint::Ready => Ok(ops::ready(w).await),
        Endpoint::Metrics => Ok(ops::metrics(w)),
        Endpoint::AdminProductCreate => admin::create_product(w, req).await,
        Endpoint::AdminProductPatch(id) => admin::patch_product(w, req, id).await,
        Endpoint::AdminProductStock(id) => admin::restock(w, req, id).await,
        Endpoint::AdminProductClose(id) => admin::close(w, id).await,
        Endpoint::AdminProductStats(id) => admin::stats(w, id).await,
        Endpoint::AdminOrders => admin::orders(w, req).await,
        Endpoint::AdminLatePayments => admin::late_payments(w, req).await,
        Endpoint::AdminRefund(r) => admin::refund(w, r).await,
        Endpoint::AdminEvents => admin::events(w, req).await,
        Endpoint::AdminEndpointCreate => event_endpoints::create(w, req).await,
        Endpoint::AdminEndpointList => event_endpoints::list(w).await,
        Endpoint::AdminEndpointDelete(id) => event_endpoints::delete(w, id).await,
        Endpoint::AdminEndpointPatch(id) => event_endpoints::patch(w, req, id).await,
        Endpoint::AdminEndpointRotate(id) => event_endpoints::rotate(w, id).await,
        Endpoint::AdminDeliveries(id) => event_endpoints::deliveries(w, req, id).await,
        Endpoint::AdminRedeliver(id, event) => event_endpoints::redeliver(w, id, event).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's OpenAPI document.
    fn openapi() -> serde_json::Value {
        serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON")
    }

    /// A concrete path for a documented one (`{id}` → `7`, `{order_reference}` → `7-X`).
    fn concrete(path: &str) -> String {
        path.replace("{id}", "7")
            .replace("{order_reference}", "7-X")
            .replace("{event_id}", "evt_x")
    }

    #[test]
    fn every_endpoint_is_documented_and_every_documented_one_exists() {
        let doc = openapi();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = 0;
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                documented += 1;
                let m = method.to_ascii_uppercase();
                let here = concrete(path);
                let endpoint = resolve(&m, &here, true)
                    .unwrap_or_else(|e| panic!("{m} {path} is documented but not served: {e:?}"));
                assert_eq!(endpoint.route().label(), format!("{m} {path}"));
                if !path.starts_with("/admin") {
                    continue;
                }
                assert_eq!(
                    resolve(&m, &concrete(path), false).err(),
                    Some(ApiError::NotFound),
                    "without a token {m} {path} does not exist"
                );
            }
        }
        let routes: Vec<Route> = Route::ALL
            .into_iter()
            .filter(|r| *r != Route::Unknown)
            .collect();
        assert_eq!(documented, routes.len(), "every route is documented once");
        for r in routes {
            let (method, path) = r.label().split_once(' ').unwrap();
            assert!(
                doc["paths"][path][method.to_ascii_lowercase()].is_object(),
                "{} is served but not documented",
                r.label()
            );
        }
    }

    #[test]
    fn every_error_code_is_documented() {
        let doc = openapi();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
        let codes: Vec<&str> = codes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for e in crate::http::response::tests::one_of_each() {
            assert!(codes.contains(&e.code()), "{} is not documented", e.code());
        }
    }
}
