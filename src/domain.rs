//! Domain types shared by the HTTP layer, the order lifecycle, the Redis scripts, the reaper
//! and the writer: product ids, order references, order states, the record of an order, the
//! snapshot of a product, and the outcomes of the operations on them.
//!
//! Expected business conditions ("sold out", "limit reached", "already processed") are
//! variants of the outcome enums here; `Err` carries a [`Failure`], which is kept for broken
//! infrastructure. The HTTP layer maps both to responses in one place (`http::response`).

use std::fmt;

/// The most units a product's stock may hold (at creation, and after any restock): every
/// count stays far below 2^53, where Lua's numbers (doubles) would start losing units.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

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
    /// The buyer gave the order back (`POST /api/orders/{order_reference}/cancel`).
    Buyer,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::PaymentFailed => "payment_failed",
            CancelReason::Expired => "expired",
            CancelReason::Buyer => "buyer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "payment_failed" => Some(CancelReason::PaymentFailed),
            "expired" => Some(CancelReason::Expired),
            "buyer" => Some(CancelReason::Buyer),
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
            OrderState::Cancelled(CancelReason::Buyer) => "buyer_cancelled",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "pending" => Some(OrderState::Pending),
            "paid" => Some(OrderState::Paid),
            "payment_failed" => Some(OrderState::Cancelled(CancelReason::PaymentFailed)),
            "expired" => Some(OrderState::Cancelled(CancelReason::Expired)),
            "buyer_cancelled" => Some(OrderState::Cancelled(CancelReason::Buyer)),
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

/// A validated reservation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub product_id: ProductId,
    pub qty: i64,
    /// The buyer, when the request named one.
    pub user_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A product as PostgreSQL holds it, read to install it into Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSnapshot {
    pub id: ProductId,
    pub name: String,
    pub price_cents: i64,
    /// `products.stock`: units not yet sold.
    pub pg_stock: i64,
    pub max_per_order: i32,
    pub per_user_limit: Option<i32>,
    pub created_at: String,
    pub updated_at: String,
    /// Orders still pending: their units are not reservable, and Redis needs their records.
    pub pending: Vec<OrderRecord>,
    /// Units pending or paid per user (limited products only).
    pub user_units: Vec<(String, i64)>,
    /// The sale window (Unix ms; `None`: open since ever, or never ending).
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    /// `products.attrs_rev`: which revision of the sold attributes this is.
    pub attrs_rev: i64,
    /// Op ids of the restocks `products.stock` includes (those still journaled in Redis and
    /// not among them are added by `load.lua`).
    pub applied_restocks: Vec<String>,
}

/// The sold attributes of a product (what an admin change or an SQL edit changes), as
/// PostgreSQL holds them: copied into Redis when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductAttrs {
    pub id: ProductId,
    pub name: String,
    pub price_cents: i64,
    pub max_per_order: i32,
    pub per_user_limit: Option<i32>,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    /// `products.attrs_rev`: strictly increasing per product, in commit order.
    pub rev: i64,
    /// `products.attrs_changed_at` in Unix ms: where the sync loop's next look starts.
    pub changed_at_ms: i64,
    /// `products.updated_at`, RFC 3339.
    pub updated_at: String,
}

/// A product the admin API creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
    pub max_per_order: i32,
    pub per_user_limit: Option<i32>,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
}

/// A change of a product's sold attributes: `None` leaves one as it is; for the nullable
/// ones `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub max_per_order: Option<i32>,
    pub per_user_limit: Option<Option<i32>>,
    pub sale_starts_at_ms: Option<Option<i64>>,
    pub sale_ends_at_ms: Option<Option<i64>>,
}

/// What an admin change did in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminChange {
    /// The product as it is now.
    Product(ProductAttrs),
    /// The late payment as it is now.
    LatePayment(LatePayment),
    /// No such product or late payment.
    NotFound,
    /// The sale window would end before it starts.
    InvalidWindow,
    /// An event endpoint as it is now (with its secret when it was just made).
    Endpoint(EventEndpoint),
    /// Deleted.
    Deleted,
    /// A delivery put back at the start of its schedule.
    Redelivered,
}

/// An endpoint the order events are delivered to (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEndpoint {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Shown only when the endpoint is made.
    pub secret: Option<String>,
    pub created_at_ms: i64,
}

/// A change of an event endpoint: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// One delivery of an event to an endpoint (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    /// The cursor after it (the event's row id).
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at_ms: Option<i64>,
    pub delivered_at_ms: Option<i64>,
}

/// `GET /admin/event-endpoints/{id}/deliveries`: which, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub endpoint_id: i64,
    pub status: Option<&'static str>,
    pub after: i64,
    pub limit: i64,
}

/// A new event endpoint, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
}

/// How an admin operation ended, besides `Err(Failure)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome<T> {
    Done(T),
    /// No such product or late payment.
    NotFound,
    /// The sale window would end before it starts.
    InvalidWindow,
    /// A negative restock asked for more units than are reservable.
    Insufficient {
        reservable: i64,
    },
    /// A positive restock would take the stock past [`MAX_STOCK`].
    OverCap {
        reservable: i64,
    },
}

/// A success that came after its order was cancelled: to be refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatePayment {
    pub order_reference: String,
    pub amount_cents: i64,
    pub created_at_ms: i64,
    pub refunded_at_ms: Option<i64>,
}

/// A product's sale in numbers (`GET /admin/products/{id}/stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductStats {
    /// `products.stock`: units not sold.
    pub stock: i64,
    pub pending_units: i64,
    pub paid_units: i64,
    pub cancelled_units: i64,
    pub revenue_cents: i64,
    pub late_payments: i64,
}

/// Which orders an admin listing wants, and the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFilter {
    pub product_id: Option<ProductId>,
    /// `pending`, `paid` or `cancelled`.
    pub status: Option<&'static str>,
    pub user_id: Option<String>,
    /// 1 to 1000.
    pub limit: i64,
    /// Orders after this id (the cursor of the previous page); 0 for the first page.
    pub after: i64,
}

/// `GET /admin/events`: which events, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// After this position of the feed: (transaction id, event row id); (0, 0) from the start.
    pub after: (u64, i64),
    /// 1 to 1000.
    pub limit: i64,
    pub event_type: Option<&'static str>,
    pub order_reference: Option<String>,
}

/// One event of the outbox, as the feed shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// Its position in the feed (the cursor after it).
    pub position: (u64, i64),
    pub event_id: String,
    pub event_type: String,
    pub created_at_ms: i64,
    /// The order as `GET /api/orders` shows it, with `sequence` (JSON text).
    pub data: String,
}

/// The event types (`order_events.type`).
pub const EVENT_TYPES: [&str; 5] = [
    "order.reserved",
    "order.paid",
    "order.cancelled",
    "order.late_payment",
    "late_payment.refunded",
];

/// Where a product's sale stands, by Redis's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleState {
    Upcoming,
    Live,
    Ended,
    SoldOut,
}

impl SaleState {
    /// The state at `now_ms` of a sale with this window and `stock` reservable units.
    pub fn at(now_ms: i64, starts: Option<i64>, ends: Option<i64>, stock: i64) -> SaleState {
        if starts.is_some_and(|s| now_ms < s) {
            SaleState::Upcoming
        } else if ends.is_some_and(|e| now_ms >= e) {
            SaleState::Ended
        } else if stock <= 0 {
            SaleState::SoldOut
        } else {
            SaleState::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SaleState::Upcoming => "upcoming",
            SaleState::Live => "live",
            SaleState::Ended => "ended",
            SaleState::SoldOut => "sold_out",
        }
    }
}

impl ProductSnapshot {
    /// Reservable stock: PostgreSQL stock minus the units of pending orders, never below zero.
    pub fn reservable(&self) -> i64 {
        let held: i64 = self.pending.iter().map(|o| i64::from(o.qty)).sum();
        (self.pg_stock - held).max(0)
    }
}

/// Why the service cannot take a request now; each says who is at fault, and a retry helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Redis cannot be reached or did not answer.
    Redis,
    /// The queue to PostgreSQL is full: PostgreSQL is behind or down.
    QueueFull,
    /// PostgreSQL could not answer or commit.
    Database,
    /// SIGTERM: the server is draining.
    ShuttingDown,
    /// A connection cap is reached (in all or for this client address).
    TooManyConnections,
    /// The read path to PostgreSQL has more lookups waiting than it takes.
    ReadQueueFull,
}

/// Broken infrastructure, as opposed to a business outcome: the operation did nothing that a
/// client could rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A dependency is down or overloaded; a retry later can succeed.
    Unavailable(Unavailable),
    /// A bug: a reply of the wrong shape. Logged where it was found.
    Internal,
    /// PostgreSQL refused a value of the request as data (SQLSTATE class 22): the client's
    /// input, not an outage.
    BadInput,
}

/// What became of a reservation request that reached the lifecycle (it was valid HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Reserved now: the new order, already handed to the writer.
    Reserved(OrderRecord),
    /// The same Idempotency-Key and body reserved before: that order, nothing reserved now.
    Replayed {
        reference: String,
        product_id: ProductId,
        qty: i64,
        amount_cents: i64,
        expires_at_ms: i64,
    },
    InsufficientStock,
    /// The buyer's units (pending and paid) would pass the product's `per_user_limit`.
    LimitReached,
    /// The product has a per-user limit and the request named no buyer.
    UserRequired,
    /// `qty` is above the product's `max_per_order`.
    QtyTooLarge {
        max: i64,
    },
    /// The key was used before by this buyer for this product with another `qty`.
    IdempotencyKeyReused,
    ProductNotFound,
    /// Before the product's `sale_starts_at` (by Redis's clock).
    SaleNotStarted {
        starts_at_ms: i64,
        /// Whole seconds to the start, at least 1.
        retry_after_secs: u32,
    },
    /// At or after the product's `sale_ends_at`.
    SaleEnded,
}

/// How a payment webhook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// This webhook made the transition it asked for.
    Applied(OrderState),
    /// The same transition had been made before.
    AlreadyProcessed(OrderState),
    /// The order is in another final state; `refund_required` for a success on a cancelled
    /// order (the money was taken for units that went back to the stock).
    FinalState {
        state: OrderState,
        refund_required: bool,
    },
    /// Unknown reference: stored as pending until its order appears.
    RecordedEarly,
}

impl WebhookOutcome {
    /// The outcome of a webhook (`success` or failure) that found the order in `state`;
    /// `applied` when this webhook's own call made the transition.
    pub fn of(applied: bool, success: bool, state: OrderState) -> WebhookOutcome {
        match (applied, success, state) {
            (true, _, s) => WebhookOutcome::Applied(s),
            (_, true, OrderState::Paid) => WebhookOutcome::AlreadyProcessed(state),
            (_, false, OrderState::Cancelled(CancelReason::PaymentFailed)) => {
                WebhookOutcome::AlreadyProcessed(state)
            }
            (_, true, OrderState::Cancelled(_)) => WebhookOutcome::FinalState {
                state,
                refund_required: true,
            },
            (_, _, s) => WebhookOutcome::FinalState {
                state: s,
                refund_required: false,
            },
        }
    }

    /// A success that came after the order was cancelled: to be refunded.
    pub fn refund_required(&self) -> bool {
        matches!(
            self,
            WebhookOutcome::FinalState {
                refund_required: true,
                ..
            }
        )
    }
}

/// What one expiry attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireOutcome {
    /// Everything the entry named is settled: expired now, or paid or failed before.
    Done,
    /// Try again at this time (Unix ms): orders not due by Redis's clock, or Redis unavailable.
    /// Orders that were due are expired already.
    RetryAt(i64),
    /// The writer's queue is full: try again at this time, and hold new orders back meanwhile.
    NoRoom(i64),
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

    #[test]
    fn reservable_stock_subtracts_pending_units() {
        let pid = ProductId::new(3).unwrap();
        let o = |qty| OrderRecord {
            reference: "r".into(),
            product_id: pid,
            user_id: None,
            qty,
            amount_cents: 0,
            state: OrderState::Pending,
            expires_at_ms: 0,
            created_at_ms: 0,
        };
        let mut s = ProductSnapshot {
            id: pid,
            name: "x".into(),
            price_cents: 1,
            pg_stock: 10,
            max_per_order: 10,
            per_user_limit: None,
            created_at: String::new(),
            updated_at: String::new(),
            pending: vec![o(3), o(4)],
            user_units: vec![],
            sale_starts_at_ms: None,
            sale_ends_at_ms: None,
            attrs_rev: 0,
            applied_restocks: vec![],
        };
        assert_eq!(s.reservable(), 3);
        s.pending.push(o(9));
        assert_eq!(s.reservable(), 0);
    }

    #[test]
    fn sale_states_by_the_clock() {
        use SaleState::*;
        assert_eq!(SaleState::at(5, None, None, 1), Live);
        assert_eq!(SaleState::at(5, Some(6), None, 1), Upcoming);
        assert_eq!(SaleState::at(6, Some(6), Some(9), 1), Live);
        assert_eq!(SaleState::at(9, Some(6), Some(9), 1), Ended);
        assert_eq!(SaleState::at(7, Some(6), Some(9), 0), SoldOut);
        assert_eq!(
            SaleState::at(10, None, Some(9), 0),
            Ended,
            "ended wins over sold out"
        );
    }

    #[test]
    fn webhook_outcomes_follow_the_state_found() {
        use CancelReason::*;
        use OrderState::*;
        assert_eq!(
            WebhookOutcome::of(true, true, Paid),
            WebhookOutcome::Applied(Paid)
        );
        assert_eq!(
            WebhookOutcome::of(false, true, Paid),
            WebhookOutcome::AlreadyProcessed(Paid)
        );
        assert_eq!(
            WebhookOutcome::of(false, false, Cancelled(PaymentFailed)),
            WebhookOutcome::AlreadyProcessed(Cancelled(PaymentFailed))
        );
        assert!(WebhookOutcome::of(false, true, Cancelled(Expired)).refund_required());
        assert!(WebhookOutcome::of(false, true, Cancelled(PaymentFailed)).refund_required());
        assert_eq!(
            WebhookOutcome::of(false, false, Paid),
            WebhookOutcome::FinalState {
                state: Paid,
                refund_required: false
            }
        );
    }
}
