//! The admin API (`/admin/...`), for running a sale: products (create, patch, restock,
//! close, stats), orders, late payments and refunds. Each handler is `parse → apply
//! (lifecycle::admin) → respond`. Disabled (every path 404) unless `FLASHSALE_ADMIN_TOKEN`
//! is set; then each request needs `Authorization: Bearer <that token>`, compared in constant
//! time (401 otherwise). The router checks both before any handler runs.

use crate::api::json;
use crate::api::order_status::body as order_body;
use crate::api::products::respond_with;
use crate::domain::{
    AdminOutcome, EVENT_TYPES, EventFilter, LatePayment, MAX_STOCK, NewProduct, OrderEvent,
    OrderFilter, ProductId, ProductPatch,
};
use crate::http::request::Request;
use crate::http::response::{ApiError, FieldErrors, Response};
use crate::lifecycle::admin;
use crate::local::Local;
use crate::redis::scripts::product::ProductView;
use crate::time::rfc3339_ms;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

/// Bounds of the sold attributes (the `products` CHECK constraints, and what Redis's Lua
/// computes exactly: price × qty stays below 2^53).
const MAX_PRICE_CENTS: i64 = 10_000_000_000;
const MAX_PER_ORDER: i64 = 100_000;
const MAX_PER_USER: i64 = 1_000_000_000;
const MAX_NAME_CHARS: usize = 255;
/// Orders per page: at most, and when `limit` is not given.
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 100;

/// Whether a request carries the admin token. Constant time in the token's bytes, so a
/// client cannot learn it a byte at a time from response times.
pub fn authorized(token: &str, authorization: Option<&[u8]>) -> bool {
    let Some(presented) = authorization
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return false;
    };
    presented.as_bytes().ct_eq(token.as_bytes()).into()
}

#[derive(Deserialize)]
struct ProductBody<'a> {
    // `present` everywhere: a `null` is a value (refused where the field is not nullable),
    // never the same as leaving the field out.
    #[serde(default, borrow, deserialize_with = "json::present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    price_cents: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    stock: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    max_per_order: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    per_user_limit: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    sale_starts_at: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    sale_ends_at: Option<&'a RawValue>,
}

fn name(errors: &mut FieldErrors, v: Option<&RawValue>) -> Option<String> {
    let n = json::string(errors, "name", v, 1, MAX_NAME_CHARS);
    if n.is_none() && v.is_none_or(|r| r.get() == "null") && !errors.contains_key("name") {
        errors
            .entry("name")
            .or_default()
            .push("The name field is required.".into());
    }
    n
}

fn window_errors(errors: &mut FieldErrors, starts: Option<i64>, ends: Option<i64>) {
    if let (Some(s), Some(e)) = (starts, ends)
        && s >= e
    {
        window_error(errors);
    }
}

fn window_error(errors: &mut FieldErrors) {
    errors
        .entry("sale_ends_at")
        .or_default()
        .push("The sale must end after it starts.".into());
}

/// `POST /admin/products`.
pub fn parse_new_product(body: &[u8]) -> Result<NewProduct, ApiError> {
    let b: ProductBody<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    let name = name(&mut e, b.name);
    let price = json::int_in(&mut e, "price_cents", b.price_cents, 0, MAX_PRICE_CENTS);
    let stock = json::int_in(&mut e, "stock", b.stock, 0, MAX_STOCK);
    let max = match b.max_per_order.filter(|r| r.get() != "null") {
        None => Some(10),
        v => json::int_in(&mut e, "max_per_order", v, 1, MAX_PER_ORDER),
    };
    let limit = json::nullable(b.per_user_limit, |v| {
        json::int_in(&mut e, "per_user_limit", v, 1, MAX_PER_USER)
    });
    let starts = json::timestamp(&mut e, "sale_starts_at", b.sale_starts_at);
    let ends = json::timestamp(&mut e, "sale_ends_at", b.sale_ends_at);
    window_errors(&mut e, starts, ends);
    match (name, price, stock, max) {
        (Some(name), Some(price_cents), Some(stock), Some(max)) if e.is_empty() => Ok(NewProduct {
            name,
            price_cents,
            stock,
            max_per_order: max as i32,
            per_user_limit: limit.flatten().map(|l| l as i32),
            sale_starts_at_ms: starts,
            sale_ends_at_ms: ends,
        }),
        _ => Err(ApiError::Validation(e)),
    }
}

/// `PATCH /admin/products/{id}`: any of the sold attributes; `null` clears a nullable one.
pub fn parse_patch(body: &[u8]) -> Result<ProductPatch, ApiError> {
    let b: ProductBody<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    if b.stock.is_some() {
        e.entry("stock")
            .or_default()
            .push("Stock changes by a delta: POST /admin/products/{id}/stock.".into());
    }
    let patch = ProductPatch {
        name: b.name.and_then(|v| name(&mut e, Some(v))),
        price_cents: b
            .price_cents
            .and_then(|v| json::int_in(&mut e, "price_cents", Some(v), 0, MAX_PRICE_CENTS)),
        max_per_order: b
            .max_per_order
            .and_then(|v| json::int_in(&mut e, "max_per_order", Some(v), 1, MAX_PER_ORDER))
            .map(|m| m as i32),
        per_user_limit: json::nullable(b.per_user_limit, |v| {
            json::int_in(&mut e, "per_user_limit", v, 1, MAX_PER_USER)
        })
        .map(|l| l.map(|l| l as i32)),
        sale_starts_at_ms: json::nullable(b.sale_starts_at, |v| {
            json::timestamp(&mut e, "sale_starts_at", v)
        }),
        sale_ends_at_ms: json::nullable(b.sale_ends_at, |v| {
            json::timestamp(&mut e, "sale_ends_at", v)
        }),
    };
    if let (Some(Some(s)), Some(Some(end))) = (patch.sale_starts_at_ms, patch.sale_ends_at_ms) {
        window_errors(&mut e, Some(s), Some(end));
    }
    if e.is_empty() {
        Ok(patch)
    } else {
        Err(ApiError::Validation(e))
    }
}

#[derive(Deserialize)]
struct StockBody<'a> {
    #[serde(borrow)]
    delta: Option<&'a RawValue>,
}

/// `POST /admin/products/{id}/stock`: `{"delta": <non-zero integer>}`.
pub fn parse_delta(body: &[u8]) -> Result<i64, ApiError> {
    let b: StockBody<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    match json::int_in(&mut e, "delta", b.delta, -MAX_STOCK, MAX_STOCK) {
        Some(0) => Err(ApiError::field("delta", "The delta must not be zero.")),
        Some(d) => Ok(d),
        None => Err(ApiError::Validation(e)),
    }
}

fn product_id(id: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(id).ok_or(ApiError::ProductNotFound)
}

/// The answer to a product change.
fn product_answer(status: u16, o: AdminOutcome<ProductView>) -> Result<Response, ApiError> {
    match o {
        AdminOutcome::Done(v) => Ok(respond_with(status, &v)),
        AdminOutcome::NotFound => Err(ApiError::ProductNotFound),
        AdminOutcome::InvalidWindow => {
            let mut e = FieldErrors::new();
            window_error(&mut e);
            Err(ApiError::Validation(e))
        }
        AdminOutcome::Insufficient { .. } => Err(ApiError::InsufficientStock),
        AdminOutcome::OverCap { reservable } => Err(ApiError::field(
            "delta",
            format!(
                "The stock would pass {MAX_STOCK} units: at most {} can be added now.",
                MAX_STOCK.saturating_sub(reservable).max(0)
            ),
        )),
    }
}

pub async fn create_product(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let p = parse_new_product(&req.body)?;
    product_answer(201, admin::create(w, p).await?)
}

pub async fn patch_product(w: &Local, req: &Request<'_>, id: &str) -> Result<Response, ApiError> {
    let pid = product_id(id)?;
    let patch = parse_patch(&req.body)?;
    product_answer(200, admin::patch(w, pid, patch).await?)
}

pub async fn restock(w: &Local, req: &Request<'_>, id: &str) -> Result<Response, ApiError> {
    let pid = product_id(id)?;
    let delta = parse_delta(&req.body)?;
    product_answer(200, admin::restock(w, pid, delta).await?)
}

pub async fn close(w: &Local, id: &str) -> Result<Response, ApiError> {
    product_answer(200, admin::close(w, product_id(id)?).await?)
}

#[derive(Serialize)]
struct Stats {
    product_id: i64,
    stock: i64,
    reservable: i64,
    pending_units: i64,
    paid_units: i64,
    cancelled_units: i64,
    revenue_cents: i64,
    late_payments: i64,
}

pub async fn stats(w: &Local, id: &str) -> Result<Response, ApiError> {
    let pid = product_id(id)?;
    match admin::stats(w, pid).await? {
        AdminOutcome::Done((s, reservable)) => Ok(Response::json(
            200,
            &Stats {
                product_id: pid.get(),
                stock: s.stock,
                reservable,
                pending_units: s.pending_units,
                paid_units: s.paid_units,
                cancelled_units: s.cancelled_units,
                revenue_cents: s.revenue_cents,
                late_payments: s.late_payments,
            },
        )),
        _ => Err(ApiError::ProductNotFound),
    }
}

/// The value of `key` in a query string, percent-decoded (`+` is a space); `Err` when it is
/// not valid UTF-8 once decoded.
fn query_param(query: &str, key: &str) -> Result<Option<String>, ()> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 2;
            }
            b'%' => return Err(()),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ())
}

/// The values of the query parameters `keys`, percent-decoded. An empty value (`?after=`) is
/// refused like any other bad value: the published schema gives no filter an empty form.
pub fn filters<const N: usize>(
    query: &str,
    keys: [&'static str; N],
    e: &mut FieldErrors,
) -> [Option<String>; N] {
    keys.map(|key| match query_param(query, key) {
        Ok(Some(v)) if v.is_empty() => {
            e.entry(key).or_default().push(format!(
                "The {key} filter must not be empty; leave it out instead."
            ));
            None
        }
        Ok(v) => v,
        Err(()) => {
            e.entry(key)
                .or_default()
                .push(format!("The {key} is not valid percent-encoded UTF-8."));
            None
        }
    })
}

/// `GET /admin/orders?product_id=&status=&user_id=&limit=&after=`.
pub fn parse_filter(query: &str) -> Result<OrderFilter, ApiError> {
    let mut e = FieldErrors::new();
    let [product, status, user, limit, after] = filters(
        query,
        ["product_id", "status", "user_id", "limit", "after"],
        &mut e,
    );
    let product_id = product.and_then(|p| {
        let id = ProductId::parse(&p);
        if id.is_none() {
            e.entry("product_id")
                .or_default()
                .push("The product id must be a positive integer.".into());
        }
        id
    });
    let status = match status.as_deref() {
        None => None,
        Some("pending") => Some("pending"),
        Some("paid") => Some("paid"),
        Some("cancelled") => Some("cancelled"),
        Some(_) => {
            e.entry("status")
                .or_default()
                .push("The status must be pending, paid or cancelled.".into());
            None
        }
    };
    if user.as_ref().is_some_and(|u| u.chars().count() > 64) {
        e.entry("user_id")
            .or_default()
            .push("The user id must be between 1 and 64 characters.".into());
    } else if user
        .as_ref()
        .is_some_and(|u| u.chars().any(char::is_control))
    {
        // As for orders: no order can have such a buyer (PostgreSQL cannot even compare a NUL).
        e.entry("user_id")
            .or_default()
            .push("The user id must not contain control characters.".into());
    }
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                e.entry("limit")
                    .or_default()
                    .push(format!("The limit must be between 1 and {MAX_PAGE}."));
                DEFAULT_PAGE
            }
        },
    };
    let after = match after {
        None => 0,
        Some(a) => match a.parse::<i64>() {
            Ok(n) if n >= 0 && a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                e.entry("after")
                    .or_default()
                    .push("The after cursor must be the next of a previous page.".into());
                0
            }
        },
    };
    if !e.is_empty() {
        return Err(ApiError::Validation(e));
    }
    Ok(OrderFilter {
        product_id,
        status,
        user_id: user,
        limit,
        after,
    })
}

#[derive(Serialize)]
struct OrdersPage<'a> {
    orders: Vec<crate::api::order_status::OrderBody<'a>>,
    next: Option<String>,
}

pub async fn orders(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let filter = parse_filter(req.query)?;
    let limit = filter.limit as usize;
    let page = admin::orders(w, filter).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|(id, _)| id.to_string()))
        .flatten();
    Ok(Response::json(
        200,
        &OrdersPage {
            orders: page.iter().map(|(_, o)| order_body(o)).collect(),
            next,
        },
    ))
}

/// `GET /admin/events?after=&limit=&type=&order_reference=`.
pub fn parse_event_filter(query: &str) -> Result<EventFilter, ApiError> {
    let mut e = FieldErrors::new();
    let [after, limit, kind, reference] =
        filters(query, ["after", "limit", "type", "order_reference"], &mut e);
    let after = match after {
        None => (0, 0),
        Some(a) => match parse_event_cursor(&a) {
            Some(c) => c,
            None => {
                e.entry("after")
                    .or_default()
                    .push("The after cursor must be the next of a previous page.".into());
                (0, 0)
            }
        },
    };
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) && l.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                e.entry("limit")
                    .or_default()
                    .push(format!("The limit must be between 1 and {MAX_PAGE}."));
                DEFAULT_PAGE
            }
        },
    };
    let event_type = match kind {
        None => None,
        Some(k) => match EVENT_TYPES.iter().find(|t| **t == k) {
            Some(t) => Some(*t),
            None => {
                e.entry("type").or_default().push(format!(
                    "The type must be one of {}.",
                    EVENT_TYPES.join(", ")
                ));
                None
            }
        },
    };
    if reference
        .as_ref()
        .is_some_and(|r| r.chars().count() > 64 || r.chars().any(char::is_control))
    {
        e.entry("order_reference").or_default().push(
            "The order reference must be at most 64 characters without control characters.".into(),
        );
    }
    if !e.is_empty() {
        return Err(ApiError::Validation(e));
    }
    Ok(EventFilter {
        after,
        limit,
        event_type,
        order_reference: reference,
    })
}

/// A feed cursor, `<transaction id>-<row id>` (1 to 18 digits each, as the feed writes it and
/// the published schema says).
fn parse_event_cursor(c: &str) -> Option<(u64, i64)> {
    let (tx, id) = c.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(tx) || !digits(id) {
        return None;
    }
    Some((tx.parse().ok()?, id.parse().ok()?))
}

#[derive(Serialize)]
struct EventBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: String,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct EventsPage<'a> {
    events: Vec<EventBody<'a>>,
    next: Option<String>,
}

/// The event feed: every committed event once, in the order of the transactions that wrote
/// them; `next` is the position after the last event of the page (null for an empty page:
/// ask again with the same cursor).
pub async fn events(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let filter = parse_event_filter(req.query)?;
    let page = admin::events(w, filter).await?;
    let data: Vec<Box<RawValue>> = page
        .iter()
        .map(|e: &OrderEvent| RawValue::from_string(e.data.clone()))
        .collect::<Result<_, _>>()
        .map_err(|err| {
            tracing::error!(error = %err, "an event's data is not JSON");
            ApiError::Internal
        })?;
    let next = page
        .last()
        .map(|e| format!("{}-{}", e.position.0, e.position.1));
    Ok(Response::json(
        200,
        &EventsPage {
            events: page
                .iter()
                .zip(&data)
                .map(|(e, d)| EventBody {
                    id: &e.event_id,
                    event_type: &e.event_type,
                    created_at: rfc3339_ms(e.created_at_ms),
                    data: d,
                })
                .collect(),
            next,
        },
    ))
}

#[derive(Serialize)]
struct LatePaymentBody<'a> {
    order_reference: &'a str,
    amount_cents: i64,
    created_at: String,
    refunded_at: Option<String>,
}

fn late_payment_body(l: &LatePayment) -> LatePaymentBody<'_> {
    LatePaymentBody {
        order_reference: &l.order_reference,
        amount_cents: l.amount_cents,
        created_at: rfc3339_ms(l.created_at_ms),
        refunded_at: l.refunded_at_ms.map(rfc3339_ms),
    }
}

#[derive(Serialize)]
struct LatePayments<'a> {
    late_payments: Vec<LatePaymentBody<'a>>,
}

/// `GET /admin/late-payments?refunded=true|false`.
pub async fn late_payments(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let refunded = match query_param(req.query, "refunded") {
        Ok(None) => None,
        Ok(Some(v)) if v == "true" => Some(true),
        Ok(Some(v)) if v == "false" => Some(false),
        _ => {
            return Err(ApiError::field(
                "refunded",
                "The refunded filter must be true or false.",
            ));
        }
    };
    let list = admin::late_payments(w, refunded).await?;
    Ok(Response::json(
        200,
        &LatePayments {
            late_payments: list.iter().map(late_payment_body).collect(),
        },
    ))
}

/// `POST /admin/late-payments/{order_reference}/refund`.
pub async fn refund(w: &Local, reference: &str) -> Result<Response, ApiError> {
    if reference.is_empty() || reference.len() > crate::domain::MAX_REFERENCE_LEN {
        return Err(ApiError::NotFound);
    }
    let reference = percent_decode(reference).map_err(|_| ApiError::NotFound)?;
    if reference.chars().any(char::is_control) {
        // No order has such a reference (PostgreSQL cannot even compare a NUL).
        return Err(ApiError::LatePaymentNotFound);
    }
    match admin::refund(w, &reference).await? {
        AdminOutcome::Done(l) => Ok(Response::json(200, &late_payment_body(&l))),
        _ => Err(ApiError::LatePaymentNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_a_bearer_token() {
        assert!(authorized("s3cret", Some(b"Bearer s3cret")));
        assert!(authorized("s3cret", Some(b"bearer   s3cret ")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cre")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cretx")));
        assert!(!authorized("s3cret", Some(b"Basic s3cret")));
        assert!(!authorized("s3cret", None));
    }

    #[test]
    fn products_parse_with_defaults_and_field_errors() {
        // `null` is not "left out" where a field cannot be null.
        for bad in [
            r#"{"price_cents": null}"#,
            r#"{"name": null}"#,
            r#"{"max_per_order": null}"#,
            r#"{"stock": null}"#,
        ] {
            assert!(parse_patch(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse_new_product(br#"{"name": null, "price_cents": 5, "stock": 1}"#).is_err());
        let p = parse_new_product(br#"{"name": "Tee", "price_cents": 500, "stock": 10}"#).unwrap();
        assert_eq!((p.max_per_order, p.per_user_limit), (10, None));
        let e = match parse_new_product(
            br#"{"name": "", "price_cents": -1, "stock": 1, "sale_starts_at": "2026-11-27T10:00:00Z",
                 "sale_ends_at": "2026-11-27T09:00:00Z"}"#,
        ) {
            Err(ApiError::Validation(e)) => e,
            other => panic!("{other:?}"),
        };
        assert!(e.contains_key("name") && e.contains_key("price_cents"));
        assert!(e.contains_key("sale_ends_at"));
        let patch = parse_patch(br#"{"per_user_limit": null, "price_cents": 700}"#).unwrap();
        assert_eq!(patch.per_user_limit, Some(None));
        assert_eq!(patch.price_cents, Some(700));
        assert_eq!(patch.name, None);
        assert!(parse_patch(br#"{"stock": 5}"#).is_err());
        assert_eq!(parse_delta(br#"{"delta": -3}"#), Ok(-3));
        assert!(parse_delta(br#"{"delta": 0}"#).is_err());
        assert!(parse_delta(br#"{"delta": 1.5}"#).is_err());
    }

    #[test]
    fn order_filters_and_percent_decoding() {
        let f =
            parse_filter("product_id=3&status=paid&user_id=a%20b%2Bc&limit=2&after=17").unwrap();
        assert_eq!(f.product_id, ProductId::new(3));
        assert_eq!(
            (f.status, f.user_id.as_deref()),
            (Some("paid"), Some("a b+c"))
        );
        assert_eq!((f.limit, f.after), (2, 17));
        assert_eq!(
            parse_filter("after=999999999999999999").unwrap().after,
            999_999_999_999_999_999
        );
        let d = parse_filter("").unwrap();
        assert_eq!((d.limit, d.after, d.product_id), (DEFAULT_PAGE, 0, None));
        for bad in [
            "limit=0",
            "limit=1001",
            "status=gone",
            "after=-1",
            "product_id=x",
            "user_id=%zz",
            "user_id=%",
            // Empty values and cursors longer than any `next` (the published schema's forms).
            "after=",
            "limit=",
            "status=",
            "user_id=",
            "product_id=",
            "after=0000000000000000001",
            "after=1234567890123456789012345678901234567890123456",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
