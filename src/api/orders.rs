//! `POST /api/orders`: reserve stock.
//!
//! parse (400/422) → take a place in the writer's queue (503 when full, before anything is
//! touched) → `reserve.lua` (loading the product first if Redis does not have it) → hand the
//! new order to the writer and arm the reaper → 202. A replay of the same Idempotency-Key and
//! body answers the first 202 again and reserves nothing.

use crate::api::json;
use crate::domain::{OrderRecord, OrderState, ProductId, new_reference};
use crate::http::request::Request;
use crate::http::response::{ApiError, FieldErrors, Response, Unavailable};
use crate::lifecycle::{ensure_loaded, hand_over, order_permit};
use crate::metrics::Reservation;
use crate::redis::scripts::ReserveReply;
use crate::time::rfc3339_ms;
use crate::worker::{Worker, batcher};
use crate::writer::msg::WriterMsg;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::rc::Rc;

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    product_id: Option<&'a RawValue>,
    #[serde(borrow)]
    qty: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
}

/// A validated reservation request.
#[derive(Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub product_id: ProductId,
    pub qty: i64,
    pub user_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Parses and validates the body and the `Idempotency-Key` header.
pub fn parse(body: &[u8], idempotency_key: Option<&[u8]>) -> Result<NewOrder, ApiError> {
    let b: Body<'_> = json::object(body)?;
    let mut errors = FieldErrors::new();
    let product_id = json::positive_int(&mut errors, "product_id", b.product_id);
    let qty = json::positive_int(&mut errors, "qty", b.qty);
    let user_id = json::string(&mut errors, "user_id", b.user_id, 1, 64);
    let key = match idempotency_key {
        None => None,
        Some(k)
            if !k.is_empty() && k.len() <= 255 && k.iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            // Visible ASCII only, checked just above.
            Some(String::from_utf8_lossy(k).into_owned())
        }
        Some(_) => {
            errors.entry("idempotency_key").or_default().push(
                "The Idempotency-Key header must be 1 to 255 visible ASCII characters.".to_string(),
            );
            None
        }
    };
    let product_id = product_id.and_then(|p| {
        let id = ProductId::new(p);
        if id.is_none() {
            errors
                .entry("product_id")
                .or_default()
                .push("The product id must be at least 1.".into());
        }
        id
    });
    match (product_id, qty) {
        (Some(product_id), Some(qty)) if errors.is_empty() => Ok(NewOrder {
            product_id,
            qty,
            user_id,
            idempotency_key: key,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

#[derive(Serialize)]
struct Accepted<'a> {
    message: &'static str,
    order_reference: &'a str,
    product_id: i64,
    qty: i64,
    amount_cents: i64,
    status: &'static str,
    expires_at: String,
}

/// The 202 of a reservation (also sent again, with `Idempotent-Replayed`, for a replay).
pub fn accepted(
    reference: &str,
    pid: ProductId,
    qty: i64,
    amount_cents: i64,
    expires_at_ms: i64,
) -> Response {
    Response::json(
        202,
        &Accepted {
            message: "Reservation Successful! Order is being processed.",
            order_reference: reference,
            product_id: pid.get(),
            qty,
            amount_cents,
            status: "pending",
            expires_at: rfc3339_ms(expires_at_ms),
        },
    )
}

pub async fn create(w: &Rc<Worker>, req: &Request<'_>) -> Result<Response, ApiError> {
    let result = reserve(w, req).await;
    let outcome = match &result {
        Ok(r) if r.replayed => Reservation::Replayed,
        Ok(_) => Reservation::Accepted,
        Err(ApiError::InsufficientStock) => Reservation::InsufficientStock,
        Err(ApiError::PurchaseLimitReached) => Reservation::PurchaseLimitReached,
        Err(ApiError::Unavailable(_)) | Err(ApiError::Internal) => Reservation::Unavailable,
        Err(_) => Reservation::Invalid,
    };
    w.metrics().reservation(outcome);
    result
}

async fn reserve(w: &Rc<Worker>, req: &Request<'_>) -> Result<Response, ApiError> {
    let order = parse(&req.body, req.idempotency_key)?;
    let pid = order.product_id;
    let reference = new_reference(pid, ulid::Ulid::generate().0);
    // The place in the queue comes first: a full queue must refuse before stock is touched.
    let p = order_permit(w)?;
    let request = batcher::Reservation {
        reference: reference.clone(),
        qty: order.qty,
        user: order.user_id.clone().unwrap_or_default(),
        idempotency_key: order.idempotency_key.clone(),
    };
    let mut reply = None;
    for _ in 0..2 {
        match batcher::reserve(w, pid, request.clone()).await? {
            Some(r) => {
                reply = Some(r);
                break;
            }
            None => {
                if !ensure_loaded(w, pid).await? {
                    return Err(ApiError::ProductNotFound);
                }
            }
        }
    }
    let Some((reply, journal)) = reply else {
        return Err(ApiError::Unavailable(Unavailable::Redis));
    };
    match reply {
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
            let resp = accepted(
                &record.reference,
                pid,
                order.qty,
                amount_cents,
                expires_at_ms,
            );
            hand_over(
                p,
                WriterMsg::Order {
                    record,
                    webhook: None,
                    done: None,
                    journal,
                },
            );
            Ok(resp)
        }
        ReserveReply::Replayed {
            reference,
            qty,
            amount_cents,
            expires_at_ms,
            ..
        } => {
            let mut resp = accepted(&reference, pid, qty, amount_cents, expires_at_ms);
            resp.replayed = true;
            Ok(resp)
        }
        ReserveReply::InsufficientStock => Err(ApiError::InsufficientStock),
        ReserveReply::LimitReached => Err(ApiError::PurchaseLimitReached),
        ReserveReply::UserRequired => Err(ApiError::field(
            "user_id",
            "The user id field is required for this product.",
        )),
        ReserveReply::QtyTooLarge { max } => Err(ApiError::field(
            "qty",
            format!("The qty must not be greater than {max}."),
        )),
        ReserveReply::IdempotencyKeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(body: &str) -> FieldErrors {
        match parse(body.as_bytes(), None) {
            Err(ApiError::Validation(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_orders() {
        let o = parse(
            br#"{"product_id": 1, "qty": "2", "user_id": "u-1"}"#,
            Some(b"key-1"),
        )
        .unwrap();
        assert_eq!(
            o,
            NewOrder {
                product_id: ProductId::new(1).unwrap(),
                qty: 2,
                user_id: Some("u-1".into()),
                idempotency_key: Some("key-1".into())
            }
        );
        let o = parse(
            br#"{"product_id": "3", "qty": 1, "user_id": null, "extra": [1]}"#,
            None,
        )
        .unwrap();
        assert_eq!(o.user_id, None);
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let e = errs(r#"{"product_id": "abc", "qty": 0, "user_id": 5}"#);
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errs(r#"{}"#);
        assert_eq!(e["product_id"][0], "The product id field is required.");
        assert_eq!(e["qty"][0], "The qty field is required.");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        let body = br#"{"product_id": 1, "qty": 1}"#;
        for bad in [&b""[..], b"has space", b"\x7f", &[b'a'; 256]] {
            assert!(
                matches!(parse(body, Some(bad)), Err(ApiError::Validation(e)) if e.contains_key("idempotency_key"))
            );
        }
        assert!(parse(body, Some(&[b'a'; 255])).is_ok());
    }

    #[test]
    fn not_objects_are_malformed() {
        assert_eq!(parse(b"[1]", None), Err(ApiError::MalformedJson));
        assert_eq!(parse(b"{bad", None), Err(ApiError::MalformedJson));
    }
}
