//! Responses, and the one mapping from API errors (and infrastructure failures) to status,
//! code and body.
//!
//! Every error body is `{"message": ..., "code": ...}` (plus `errors` for validation) and
//! carries no internal detail; infrastructure errors are logged where they are handled, once.

use crate::auth::Rejected;
use crate::domain::{Failure, Unavailable};
use crate::time::rfc3339_ms;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Json,
    /// Prometheus text exposition format 0.0.4.
    Prometheus,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: ContentType,
    /// `Retry-After` seconds (503).
    pub retry_after: Option<u32>,
    /// `Idempotent-Replayed: true`.
    pub replayed: bool,
    /// `Allow` (405).
    pub allow: Option<&'static str>,
    /// `WWW-Authenticate: Bearer` (401 of a request that needs a bearer token).
    pub bearer_challenge: bool,
    /// Close the connection after this response whatever the client asked.
    pub close: bool,
}

impl Response {
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response {
            status,
            body,
            content_type: ContentType::Json,
            retry_after: None,
            replayed: false,
            allow: None,
            bearer_challenge: false,
            close: false,
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Response {
        let mut r = Response::json(204, &());
        r.body.clear();
        r
    }

    pub fn text(status: u16, body: String, content_type: ContentType) -> Response {
        Response {
            status,
            body: body.into_bytes(),
            content_type,
            retry_after: None,
            replayed: false,
            allow: None,
            bearer_challenge: false,
            close: false,
        }
    }

    /// Appends the response to `out`. Says `Connection: close` when the connection will close,
    /// and `Connection: keep-alive` to an HTTP/1.0 client whose connection stays open.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        // A 204 has no content, and no Content-Length either (RFC 9110, 8.6).
        if self.status != 204 {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(match self.content_type {
                ContentType::Json => b"application/json",
                ContentType::Prometheus => b"text/plain; version=0.0.4; charset=utf-8",
            });
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        }
        crate::http::date::with_date(|d| {
            out.extend_from_slice(b"\r\nDate: ");
            out.extend_from_slice(d.as_bytes());
        });
        if let Some(s) = self.retry_after {
            out.extend_from_slice(b"\r\nRetry-After: ");
            out.extend_from_slice(itoa::Buffer::new().format(s).as_bytes());
        }
        if self.replayed {
            out.extend_from_slice(b"\r\nIdempotent-Replayed: true");
        }
        if let Some(a) = self.allow {
            out.extend_from_slice(b"\r\nAllow: ");
            out.extend_from_slice(a.as_bytes());
        }
        if self.bearer_challenge {
            out.extend_from_slice(b"\r\nWWW-Authenticate: Bearer");
        }
        if !keep_alive || self.close {
            out.extend_from_slice(b"\r\nConnection: close");
        } else if http10 {
            out.extend_from_slice(b"\r\nConnection: keep-alive");
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Validation errors by field, in a stable order.
pub type FieldErrors = BTreeMap<&'static str, Vec<String>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// HTTP framing refused (also smuggling shapes).
    BadRequest(&'static str),
    MalformedJson,
    InvalidSignature,
    /// No valid bearer token where one is required.
    Unauthorized(Rejected),
    /// Over a rate limit: retry after this many seconds.
    RateLimited(u32),
    NotFound,
    ProductNotFound,
    OrderNotFound,
    LatePaymentNotFound,
    MethodNotAllowed(&'static str),
    RequestTimeout,
    InsufficientStock,
    PurchaseLimitReached,
    /// Before the sale window: when it opens, and the seconds until then.
    SaleNotStarted {
        starts_at_ms: i64,
        retry_after_secs: u32,
    },
    SaleEnded,
    /// A cancellation of an order that is paid or cancelled for another reason: its status.
    OrderNotCancellable(&'static str),
    PayloadTooLarge,
    Validation(FieldErrors),
    IdempotencyKeyReused,
    HeadTooLarge,
    Unavailable(Unavailable),
    /// A bug: a reply of the wrong shape. Logged where it happens.
    Internal,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a FieldErrors>,
    /// When the sale opens (`sale_not_started`).
    #[serde(skip_serializing_if = "Option::is_none")]
    sale_starts_at: Option<String>,
    /// The order's status (`order_not_cancellable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    order_status: Option<&'static str>,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::MalformedJson => 400,
            ApiError::InvalidSignature | ApiError::Unauthorized(_) => 401,
            ApiError::NotFound
            | ApiError::ProductNotFound
            | ApiError::OrderNotFound
            | ApiError::LatePaymentNotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::RequestTimeout => 408,
            ApiError::InsufficientStock
            | ApiError::PurchaseLimitReached
            | ApiError::SaleNotStarted { .. }
            | ApiError::SaleEnded
            | ApiError::OrderNotCancellable(_) => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => 422,
            ApiError::RateLimited(_) => 429,
            ApiError::HeadTooLarge => 431,
            ApiError::Internal => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::MalformedJson => "malformed_json",
            ApiError::InvalidSignature => "invalid_signature",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::NotFound => "not_found",
            ApiError::ProductNotFound => "product_not_found",
            ApiError::OrderNotFound => "order_not_found",
            ApiError::LatePaymentNotFound => "late_payment_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::InsufficientStock => "insufficient_stock",
            ApiError::PurchaseLimitReached => "purchase_limit_reached",
            ApiError::SaleNotStarted { .. } => "sale_not_started",
            ApiError::SaleEnded => "sale_ended",
            ApiError::OrderNotCancellable(_) => "order_not_cancellable",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Validation(_) => "validation_failed",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::HeadTooLarge => "header_too_large",
            ApiError::Internal => "internal_error",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            ApiError::BadRequest(m) => m,
            ApiError::MalformedJson => "The request body must be a JSON object",
            ApiError::InvalidSignature => "Invalid signature",
            ApiError::Unauthorized(Rejected::Missing) => {
                "A bearer token is required (Authorization: Bearer <token>)"
            }
            ApiError::Unauthorized(Rejected::Expired) => "The bearer token has expired",
            ApiError::Unauthorized(Rejected::Invalid) => "The bearer token is not valid",
            ApiError::RateLimited(_) => "Too many requests; retry after the time in Retry-After",
            ApiError::NotFound => "Not found",
            ApiError::ProductNotFound => "Product not found",
            ApiError::OrderNotFound => "Order not found",
            ApiError::LatePaymentNotFound => "No late payment for this order reference",
            ApiError::MethodNotAllowed(_) => "Method not allowed",
            ApiError::RequestTimeout => "The request was not received in time",
            ApiError::InsufficientStock => "Insufficient stock",
            ApiError::PurchaseLimitReached => "Purchase limit reached",
            ApiError::SaleNotStarted { .. } => "The sale has not started yet",
            ApiError::SaleEnded => "The sale has ended",
            ApiError::OrderNotCancellable(_) => {
                "This order can no longer be cancelled: it is paid or already cancelled"
            }
            ApiError::PayloadTooLarge => "The request body is larger than 16 KiB",
            ApiError::Validation(_) => "The given data was invalid",
            ApiError::IdempotencyKeyReused => {
                "This Idempotency-Key was already used with a different request body"
            }
            ApiError::HeadTooLarge => "The request headers are too large",
            ApiError::Internal => "Internal error",
            ApiError::Unavailable(Unavailable::Redis) => {
                "The service is temporarily unavailable (stock store unreachable); retry shortly"
            }
            ApiError::Unavailable(Unavailable::QueueFull) => {
                "The service is busy recording orders; retry shortly"
            }
            ApiError::Unavailable(Unavailable::Database) => {
                "The service is temporarily unavailable (database unreachable); retry shortly"
            }
            ApiError::Unavailable(Unavailable::ShuttingDown) => {
                "The service is restarting; retry shortly"
            }
            ApiError::Unavailable(Unavailable::TooManyConnections) => {
                "Too many open connections; retry shortly"
            }
            ApiError::Unavailable(Unavailable::ReadQueueFull) => {
                "The service is busy looking up orders and products; retry shortly"
            }
        }
    }

    pub fn into_response(self) -> Response {
        let errors = match &self {
            ApiError::Validation(e) => Some(e),
            _ => None,
        };
        let sale_starts_at = match &self {
            ApiError::SaleNotStarted { starts_at_ms, .. } => Some(rfc3339_ms(*starts_at_ms)),
            _ => None,
        };
        let mut r = Response::json(
            self.status(),
            &ErrorBody {
                message: self.message(),
                code: self.code(),
                errors,
                sale_starts_at,
                order_status: match &self {
                    ApiError::OrderNotCancellable(s) => Some(*s),
                    _ => None,
                },
            },
        );
        match self {
            ApiError::Unavailable(u) => {
                r.retry_after = Some(1);
                r.close = matches!(
                    u,
                    Unavailable::ShuttingDown | Unavailable::TooManyConnections
                );
            }
            ApiError::MethodNotAllowed(allow) => r.allow = Some(allow),
            ApiError::Unauthorized(_) => r.bearer_challenge = true,
            ApiError::RateLimited(secs) => r.retry_after = Some(secs),
            ApiError::SaleNotStarted {
                retry_after_secs, ..
            } => r.retry_after = Some(retry_after_secs),
            ApiError::BadRequest(_)
            | ApiError::HeadTooLarge
            | ApiError::PayloadTooLarge
            | ApiError::RequestTimeout => r.close = true,
            _ => {}
        }
        r
    }

    /// One validation error.
    pub fn field(field: &'static str, text: impl Into<String>) -> ApiError {
        let mut e = FieldErrors::new();
        e.insert(field, vec![text.into()]);
        ApiError::Validation(e)
    }
}

/// What a failed dependency means for the client: 503 (retry) or 500 (a bug).
impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        match f {
            Failure::Unavailable(u) => ApiError::Unavailable(u),
            Failure::Internal => ApiError::Internal,
            Failure::BadInput => {
                ApiError::BadRequest("A value in the request is not one the database can take")
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// One error of every kind. The match below has no wildcard, so a new kind fails to
    /// compile until it is listed here (and then the OpenAPI test checks its code).
    pub fn one_of_each() -> Vec<ApiError> {
        let all = vec![
            ApiError::BadRequest("x"),
            ApiError::MalformedJson,
            ApiError::InvalidSignature,
            ApiError::Unauthorized(Rejected::Missing),
            ApiError::RateLimited(1),
            ApiError::NotFound,
            ApiError::ProductNotFound,
            ApiError::OrderNotFound,
            ApiError::LatePaymentNotFound,
            ApiError::MethodNotAllowed("GET"),
            ApiError::RequestTimeout,
            ApiError::InsufficientStock,
            ApiError::PurchaseLimitReached,
            ApiError::SaleNotStarted {
                starts_at_ms: 0,
                retry_after_secs: 1,
            },
            ApiError::SaleEnded,
            ApiError::OrderNotCancellable("paid"),
            ApiError::PayloadTooLarge,
            ApiError::Validation(FieldErrors::new()),
            ApiError::IdempotencyKeyReused,
            ApiError::HeadTooLarge,
            ApiError::Unavailable(Unavailable::Redis),
            ApiError::Internal,
        ];
        for e in &all {
            match e {
                ApiError::BadRequest(_)
                | ApiError::MalformedJson
                | ApiError::InvalidSignature
                | ApiError::Unauthorized(_)
                | ApiError::RateLimited(_)
                | ApiError::NotFound
                | ApiError::ProductNotFound
                | ApiError::OrderNotFound
                | ApiError::LatePaymentNotFound
                | ApiError::MethodNotAllowed(_)
                | ApiError::RequestTimeout
                | ApiError::InsufficientStock
                | ApiError::PurchaseLimitReached
                | ApiError::SaleNotStarted { .. }
                | ApiError::SaleEnded
                | ApiError::OrderNotCancellable(_)
                | ApiError::PayloadTooLarge
                | ApiError::Validation(_)
                | ApiError::IdempotencyKeyReused
                | ApiError::HeadTooLarge
                | ApiError::Unavailable(_)
                | ApiError::Internal => {}
            }
        }
        all
    }

    fn text(r: &Response, keep_alive: bool) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v, keep_alive, false);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn errors_have_the_contract_body_and_headers() {
        let r = ApiError::ProductNotFound.into_response();
        let t = text(&r, true);
        assert!(t.starts_with("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"));
        assert!(t.ends_with(
            "\r\n\r\n{\"message\":\"Product not found\",\"code\":\"product_not_found\"}"
        ));
        assert!(t.contains("\r\nDate: "));
        assert!(!t.contains("Connection: close"));

        let t = text(
            &ApiError::Unavailable(Unavailable::QueueFull).into_response(),
            true,
        );
        assert!(t.starts_with("HTTP/1.1 503 "));
        assert!(t.contains("\r\nRetry-After: 1\r\n"));
        assert!(t.contains("\"code\":\"unavailable\""));

        let t = text(&ApiError::PayloadTooLarge.into_response(), true);
        assert!(t.contains("Connection: close"));

        let t = text(&ApiError::MethodNotAllowed("GET").into_response(), false);
        assert!(t.contains("\r\nAllow: GET\r\n"));
        assert!(t.contains("Connection: close"));
    }

    #[test]
    fn validation_errors_list_fields() {
        let r = ApiError::field("qty", "The qty must be at least 1.").into_response();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], "validation_failed");
        assert_eq!(v["errors"]["qty"][0], "The qty must be at least 1.");
        assert_eq!(r.status, 422);
    }
}
