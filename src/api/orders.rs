//! `POST /api/orders`: reserve stock.
//!
//! the buyer (in `jwt` mode a bearer token's `sub`: 401 without one) → parse the body and the
//! `Idempotency-Key` (400/422) → the buyer's rate limit (429) → `lifecycle::reserve` (503 when
//! the writer's queue is full, before anything is touched) → 202, or the 404/409/422 its
//! outcome calls for. A replay of the same Idempotency-Key and body answers the first 202 again and
//! reserves nothing.

use crate::api::json;
use crate::domain::{NewOrder, ProductId, ReserveOutcome};
use crate::http::request::Request;
use crate::http::response::{ApiError, FieldErrors, Response};
use crate::lifecycle::reserve::reserve;
use crate::limits::rate::LimitedBy;
use crate::local::Local;
use crate::metrics::ReservationLabel;
use crate::time::rfc3339_ms;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::net::IpAddr;
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

pub async fn create(
    w: &Rc<Local>,
    req: &Request<'_>,
    client: IpAddr,
) -> Result<Response, ApiError> {
    let result = reserve_for_buyer(w, req, client).await;
    w.metrics().reservation(metric(&result));
    result.and_then(respond)
}

/// Who the buyer is (the token's `sub` in `jwt` mode, else the body's `user_id`), the
/// buyer's rate limit, then the reservation.
async fn reserve_for_buyer(
    w: &Rc<Local>,
    req: &Request<'_>,
    client: IpAddr,
) -> Result<ReserveOutcome, ApiError> {
    let buyer = w
        .buyers
        .of_request(req.authorization)
        .map_err(ApiError::Unauthorized)?;
    let mut order = parse(&req.body, req.idempotency_key)?;
    if let Some(b) = buyer {
        if order.user_id.as_deref().is_some_and(|u| u != &*b.sub) {
            return Err(ApiError::field(
                "user_id",
                "The user id must be the buyer the bearer token names (its sub), or absent.",
            ));
        }
        order.user_id = Some(b.sub.to_string());
    }
    if let Some(buyer) = order.user_id.as_deref()
        && let Err(secs) = w.shared.rate_limits.buyer(buyer)
    {
        w.metrics().rate_limited(LimitedBy::Buyer);
        return Err(ApiError::RateLimited(secs));
    }
    reserve(w, order, client).await.map_err(ApiError::from)
}

/// The metrics label of a reservation request's end.
fn metric(result: &Result<ReserveOutcome, ApiError>) -> ReservationLabel {
    match result {
        Ok(ReserveOutcome::Reserved(_)) => ReservationLabel::Accepted,
        Ok(ReserveOutcome::Replayed { .. }) => ReservationLabel::Replayed,
        Ok(ReserveOutcome::InsufficientStock) => ReservationLabel::InsufficientStock,
        Ok(ReserveOutcome::LimitReached) => ReservationLabel::PurchaseLimitReached,
        Ok(ReserveOutcome::SaleNotStarted { .. }) => ReservationLabel::SaleNotStarted,
        Ok(ReserveOutcome::SaleEnded) => ReservationLabel::SaleEnded,
        Ok(_) => ReservationLabel::Invalid,
        Err(ApiError::Unavailable(_)) | Err(ApiError::Internal) => ReservationLabel::Unavailable,
        Err(ApiError::Unauthorized(_)) => ReservationLabel::Unauthorized,
        Err(ApiError::RateLimited(_)) => ReservationLabel::RateLimited,
        Err(_) => ReservationLabel::Invalid,
    }
}

/// The answer to each outcome.
fn respond(outcome: ReserveOutcome) -> Result<Response, ApiError> {
    match outcome {
        ReserveOutcome::Reserved(o) => Ok(accepted(
            &o.reference,
            o.product_id,
            i64::from(o.qty),
            o.amount_cents,
            o.expires_at_ms,
        )),
        ReserveOutcome::Replayed {
            reference,
            product_id,
            qty,
            amount_cents,
            expires_at_ms,
        } => {
            let mut resp = accepted(&reference, product_id, qty, amount_cents, expires_at_ms);
            resp.replayed = true;
            Ok(resp)
        }
        ReserveOutcome::InsufficientStock => Err(ApiError::InsufficientStock),
        ReserveOutcome::LimitReached => Err(ApiError::PurchaseLimitReached),
        ReserveOutcome::UserRequired => Err(ApiError::field(
            "user_id",
            "The user id field is required for this product.",
        )),
        ReserveOutcome::QtyTooLarge { max } => Err(ApiError::field(
            "qty",
            format!("The qty must not be greater than {max}."),
        )),
        ReserveOutcome::IdempotencyKeyReused => Err(ApiError::IdempotencyKeyReused),
        ReserveOutcome::SaleNotStarted {
            starts_at_ms,
            retry_after_secs,
        } => Err(ApiError::SaleNotStarted {
            starts_at_ms,
            retry_after_secs,
        }),
        ReserveOutcome::SaleEnded => Err(ApiError::SaleEnded),
        ReserveOutcome::ProductNotFound => Err(ApiError::ProductNotFound),
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
