//! `POST /api/payments/webhook`: the payment provider's verdict on an order.
//!
//! verify the HMAC-SHA256 of the raw body in constant time (401 before anything is parsed) →
//! parse and validate (400/422) → apply (`lifecycle::webhook`: Redis first, then the writer)
//! → answer once PostgreSQL has committed the effect.

use crate::api::json;
use crate::domain::{MAX_REFERENCE_LEN, OrderState, WebhookOutcome};
use crate::http::request::Request;
use crate::http::response::{ApiError, FieldErrors, Response};
use crate::lifecycle::webhook::apply;
use crate::local::Local;
use crate::metrics::Webhook;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    order_reference: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
}

/// Checks `X-Payment-Signature` against the body. `verify_slice` compares in constant time.
pub fn verify(mac: &hmac::Hmac<sha2::Sha256>, signature: Option<&[u8]>, body: &[u8]) -> bool {
    let Some(sig) = signature else { return false };
    let sig = sig.trim_ascii();
    let mut expected = [0u8; 32];
    if sig.len() != 64 || hex::decode_to_slice(sig, &mut expected).is_err() {
        return false;
    }
    let mut m = mac.clone();
    m.update(body);
    m.verify_slice(&expected).is_ok()
}

/// A validated webhook.
#[derive(Debug, PartialEq, Eq)]
pub struct PaymentNotice {
    pub reference: String,
    pub success: bool,
}

pub fn parse(body: &[u8]) -> Result<PaymentNotice, ApiError> {
    let b: Body<'_> = json::object(body)?;
    let mut errors = FieldErrors::new();
    let reference = json::string(
        &mut errors,
        "order_reference",
        b.order_reference,
        1,
        MAX_REFERENCE_LEN,
    );
    if reference.is_none() && !errors.contains_key("order_reference") {
        errors
            .entry("order_reference")
            .or_default()
            .push("The order reference field is required.".into());
    }
    let status = json::string(&mut errors, "status", b.status, 1, 64);
    let success = match status.as_deref() {
        Some("success") => Some(true),
        Some("failure") => Some(false),
        Some(_) => {
            errors
                .entry("status")
                .or_default()
                .push("The selected status is invalid: use success or failure.".into());
            None
        }
        None => {
            if !errors.contains_key("status") {
                errors
                    .entry("status")
                    .or_default()
                    .push("The status field is required.".into());
            }
            None
        }
    };
    match (reference, success) {
        (Some(reference), Some(success)) if errors.is_empty() => {
            Ok(PaymentNotice { reference, success })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    message: &'static str,
    order_reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_required: Option<bool>,
}

pub async fn handle(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let result = run(w, req).await;
    let m = match &result {
        Ok((_, o)) => match o {
            WebhookOutcome::Applied(OrderState::Paid) => Webhook::Paid,
            WebhookOutcome::Applied(_) => Webhook::Failed,
            WebhookOutcome::AlreadyProcessed(_) => Webhook::AlreadyProcessed,
            WebhookOutcome::FinalState {
                refund_required: true,
                ..
            } => Webhook::RefundRequired,
            WebhookOutcome::FinalState { .. } => Webhook::FinalState,
            WebhookOutcome::RecordedEarly => Webhook::RecordedEarly,
        },
        Err(ApiError::InvalidSignature) => Webhook::InvalidSignature,
        Err(ApiError::Unavailable(_)) | Err(ApiError::Internal) => Webhook::Unavailable,
        Err(_) => Webhook::Invalid,
    };
    w.metrics().webhook(m);
    result.map(|(r, _)| r)
}

async fn run(w: &Local, req: &Request<'_>) -> Result<(Response, WebhookOutcome), ApiError> {
    if !verify(&w.webhook_mac, req.signature, &req.body) {
        return Err(ApiError::InvalidSignature);
    }
    let v = parse(&req.body)?;
    // The body parsed as JSON, so it is UTF-8.
    let payload = String::from_utf8_lossy(&req.body).into_owned();
    let outcome = apply(w, &v.reference, v.success, payload).await?;
    Ok((respond(&v.reference, &outcome), outcome))
}

pub fn respond(reference: &str, outcome: &WebhookOutcome) -> Response {
    let (status, message, order_status, refund_required) = match outcome {
        WebhookOutcome::Applied(OrderState::Paid) => (
            200,
            "Payment successful, order marked as paid",
            Some("paid"),
            None,
        ),
        WebhookOutcome::Applied(s) => (
            200,
            "Payment failed, order cancelled and stock released",
            Some(s.status()),
            None,
        ),
        WebhookOutcome::AlreadyProcessed(s) => {
            (200, "Webhook already processed", Some(s.status()), None)
        }
        WebhookOutcome::FinalState {
            state,
            refund_required,
        } => (
            200,
            "Order already in final state",
            Some(state.status()),
            Some(*refund_required),
        ),
        WebhookOutcome::RecordedEarly => (
            202,
            "Order not found, webhook recorded for later processing",
            None,
            None,
        ),
    };
    Response::json(
        status,
        &Answer {
            message,
            order_reference: reference,
            order_status,
            refund_required,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::KeyInit;

    fn sign(key: &[u8], body: &[u8]) -> String {
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn signatures() {
        let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"secret").unwrap();
        let body = br#"{"order_reference":"1-X","status":"success"}"#;
        let good = sign(b"secret", body);
        assert!(verify(&mac, Some(good.as_bytes()), body));
        assert!(verify(&mac, Some(good.to_uppercase().as_bytes()), body));
        assert!(!verify(&mac, None, body));
        assert!(!verify(&mac, Some(b""), body));
        assert!(!verify(&mac, Some(b"zz"), body));
        assert!(!verify(&mac, Some(sign(b"other", body).as_bytes()), body));
        assert!(!verify(&mac, Some(good.as_bytes()), b"{}"));
        assert!(!verify(&mac, Some(&good.as_bytes()[..63]), body));
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            parse(br#"{"order_reference":"1-X","status":"failure"}"#).unwrap(),
            PaymentNotice {
                reference: "1-X".into(),
                success: false
            }
        );
        for bad in [
            r#"{"order_reference":"1-X","status":"processed"}"#,
            r#"{"order_reference":"1-X"}"#,
            r#"{"status":"success"}"#,
            r#"{"order_reference":5,"status":"success"}"#,
            r#"{"order_reference":"","status":"success"}"#,
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(ApiError::Validation(_))),
                "{bad}"
            );
        }
        assert_eq!(parse(b"nope"), Err(ApiError::MalformedJson));
    }
}
