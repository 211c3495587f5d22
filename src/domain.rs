//! Domain types shared by the HTTP layer, the Redis scripts, the reaper and the writer:
//! product ids, order references, order states and the record of an order.
//!
//! Expected business conditions ("sold out", "limit reached", "already processed") are
//! variants of the outcome enums next to the code that produces them; `Err` is kept for broken
//! infrastructure.

use std::fmt;

/// A product id: a positive 64-bit integer, as in `products.id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(i64);

impl ProductId {
    pub fn new(v: i64) -> Option<Self> {
        (v > 0).then_some(ProductId(v))
    }

    /// Parses a path segment or reference prefix: ASCII digits only (no sign, no spaces),
    /// within i64, above zero. Anything else is "no such product", never an error.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<i64>().ok().and_then(ProductId::new)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest order reference the API allows (and the `orders` CHECK constraint enforces).
pub const MAX_REFERENCE_LEN: usize = 64;

/// Order references this service makes: `<product id>-<ULID>`. The product id lets a webhook
/// that knows only the reference find the product's Redis keys without a lookup; the ULID is
/// time-ordered, which keeps inserts into the unique index cheap.
pub fn new_reference(product: ProductId, ulid: u128) -> String {
    let mut buf = [0u8; ulid::ULID_LEN];
    let id = ulid::Ulid(ulid);
    let text = id.array_to_str(&mut buf);
    let mut s = String::with_capacity(20 + 1 + ulid::ULID_LEN);
    s.push_str(itoa::Buffer::new().format(product.get()));
    s.push('-');
    s.push_str(text);
    s
}

/// The product a reference of ours names; `None` for references made elsewhere (an order
/// inserted with SQL may carry any reference), which are then looked up in PostgreSQL.
pub fn product_of_reference(reference: &str) -> Option<ProductId> {
    let (pid, rest) = reference.split_once('-')?;
    if rest.len() != ulid::ULID_LEN {
        return None;
    }
    ProductId::parse(pid)
}

/// Where an order is in its life. `Pending` moves to exactly one final state, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderState {
    Pending,
    Paid,
    Cancelled(CancelReason),
}

/// Why an order was cancelled (`orders.cancel_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    PaymentFailed,
    Expired,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::PaymentFailed => "payment_failed",
            CancelReason::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "payment_failed" => Some(CancelReason::PaymentFailed),
            "expired" => Some(CancelReason::Expired),
            _ => None,
        }
    }
}

impl OrderState {
    /// The `orders.status` value.
    pub fn status(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Paid => "paid",
            OrderState::Cancelled(_) => "cancelled",
        }
    }

    /// The `orders.cancel_reason` value.
    pub fn cancel_reason(self) -> Option<&'static str> {
        match self {
            OrderState::Cancelled(r) => Some(r.as_str()),
            _ => None,
        }
    }

    /// Rebuilds a state from the two columns (or the two fields of the Redis record).
    pub fn from_parts(status: &str, reason: Option<&str>) -> Option<Self> {
        match status {
            "pending" => Some(OrderState::Pending),
            "paid" => Some(OrderState::Paid),
            // An operator may cancel by SQL without a reason; treat it as a failed payment.
            "cancelled" => Some(OrderState::Cancelled(
                reason
                    .and_then(CancelReason::parse)
                    .unwrap_or(CancelReason::PaymentFailed),
            )),
            _ => None,
        }
    }

    /// The one-word form kept in the Redis record and in journal entries (`lua/lib.lua`).
    pub fn code(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Paid => "paid",
            OrderState::Cancelled(CancelReason::PaymentFailed) => "payment_failed",
            OrderState::Cancelled(CancelReason::Expired) => "expired",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "pending" => Some(OrderState::Pending),
            "paid" => Some(OrderState::Paid),
            "payment_failed" => Some(OrderState::Cancelled(CancelReason::PaymentFailed)),
            "expired" => Some(OrderState::Cancelled(CancelReason::Expired)),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, OrderState::Pending)
    }
}

/// Everything known about one order; the unit of the Redis record, the handoff and the
/// `orders` row. Times are Unix milliseconds from Redis's clock, so that every instance
/// sharing one Redis agrees on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRecord {
    /// `orders.order_reference`: unique, at most 64 characters.
    pub reference: String,
    pub product_id: ProductId,
    /// The buyer, when the client named one (needed for per-user limits).
    pub user_id: Option<String>,
    pub qty: i32,
    /// `price_cents × qty` at the moment of the reservation.
    pub amount_cents: i64,
    pub state: OrderState,
    /// When an unpaid reservation gives its units back.
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_are_positive_plain_integers() {
        assert_eq!(ProductId::parse("1").map(ProductId::get), Some(1));
        assert_eq!(ProductId::parse("0042").map(ProductId::get), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1.5",
            " 1",
            "99999999999999999999",
            "9223372036854775808",
        ] {
            assert_eq!(ProductId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            ProductId::parse("9223372036854775807").map(ProductId::get),
            Some(i64::MAX)
        );
    }

    #[test]
    fn references_carry_their_product() {
        let r = new_reference(ProductId::new(77).unwrap(), ulid::Ulid::generate().0);
        assert!(r.len() <= MAX_REFERENCE_LEN);
        assert_eq!(product_of_reference(&r), ProductId::new(77));
        assert_eq!(product_of_reference("ORD-123"), None);
        assert_eq!(product_of_reference("nonsense"), None);
    }

    #[test]
    fn states_round_trip() {
        for s in [
            OrderState::Pending,
            OrderState::Paid,
            OrderState::Cancelled(CancelReason::PaymentFailed),
            OrderState::Cancelled(CancelReason::Expired),
        ] {
            assert_eq!(OrderState::from_code(s.code()), Some(s));
            assert_eq!(
                OrderState::from_parts(s.status(), s.cancel_reason()),
                Some(s)
            );
        }
    }
}
