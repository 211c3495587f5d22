//! Metrics: what `/metrics` exposes in the Prometheus text format.
//!
//! Workers count into their own cache-padded block of plain atomics (a relaxed add on a line
//! no other core writes: no shared lock, no contended cache line on the request path); a
//! scrape sums the blocks and encodes them with `prometheus-client`. Latency histograms are
//! kept the same way (`Latency`: a relaxed add on a bucket, and one on the sum); prometheus-client's
//! own `Histogram` takes a lock per observation, fine for the writer's one per batch but not for
//! every request. The writer thread owns the histograms of batch size and commit latency.

use crate::domain::Unavailable;
use crate::limits::connections::Over;
use crate::limits::rate::LimitedBy;
use crate::sync::Arc;
use crossbeam_utils::CachePadded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The endpoints, as the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    ProductGet,
    OrderCreate,
    OrderGet,
    OrderCancel,
    Webhook,
    Health,
    Ready,
    Metrics,
    AdminProductCreate,
    AdminProductPatch,
    AdminProductStock,
    AdminProductClose,
    AdminProductStats,
    AdminOrders,
    AdminLatePayments,
    AdminRefund,
    AdminEvents,
    AdminEndpointCreate,
    AdminEndpointList,
    AdminEndpointDelete,
    AdminEndpointPatch,
    AdminEndpointRotate,
    AdminDeliveries,
    AdminRedeliver,
    Unknown,
}

impl Route {
    pub const ALL: [Route; 25] = [
        Route::ProductGet,
        Route::OrderCreate,
        Route::OrderGet,
        Route::OrderCancel,
        Route::Webhook,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::AdminProductCreate,
        Route::AdminProductPatch,
        Route::AdminProductStock,
        Route::AdminProductClose,
        Route::AdminProductStats,
        Route::AdminOrders,
        Route::AdminLatePayments,
        Route::AdminRefund,
        Route::AdminEvents,
        Route::AdminEndpointCreate,
        Route::AdminEndpointList,
        Route::AdminEndpointDelete,
        Route::AdminEndpointPatch,
        Route::AdminEndpointRotate,
        Route::AdminDeliveries,
        Route::AdminRedeliver,
        Route::Unknown,
    ];

    pub fn is_admin(self) -> bool {
        self.label().contains(" /admin/")
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::ProductGet => "GET /api/products/{id}",
            Route::OrderCreate => "POST /api/orders",
            Route::OrderGet => "GET /api/orders/{order_reference}",
            Route::OrderCancel => "POST /api/orders/{order_reference}/cancel",
            Route::Webhook => "POST /api/payments/webhook",
            Route::Health => "GET /health",
            Route::Ready => "GET /ready",
            Route::Metrics => "GET /metrics",
            Route::AdminProductCreate => "POST /admin/products",
            Route::AdminProductPatch => "PATCH /admin/products/{id}",
            Route::AdminProductStock => "POST /admin/products/{id}/stock",
            Route::AdminProductClose => "POST /admin/products/{id}/close",
            Route::AdminProductStats => "GET /admin/products/{id}/stats",
            Route::AdminOrders => "GET /admin/orders",
            Route::AdminLatePayments => "GET /admin/late-payments",
            Route::AdminRefund => "POST /admin/late-payments/{order_reference}/refund",
            Route::AdminEvents => "GET /admin/events",
            Route::AdminEndpointCreate => "POST /admin/event-endpoints",
            Route::AdminEndpointList => "GET /admin/event-endpoints",
            Route::AdminEndpointDelete => "DELETE /admin/event-endpoints/{id}",
            Route::AdminEndpointPatch => "PATCH /admin/event-endpoints/{id}",
            Route::AdminEndpointRotate => "POST /admin/event-endpoints/{id}/rotate-secret",
            Route::AdminDeliveries => "GET /admin/event-endpoints/{id}/deliveries",
            Route::AdminRedeliver => {
                "POST /admin/event-endpoints/{id}/deliveries/{event_id}/redeliver"
            }
            Route::Unknown => "other",
        }
    }
}

const STATUSES: [u16; 16] = [
    200, 201, 202, 400, 401, 404, 405, 408, 409, 413, 422, 429, 431, 500, 503, 0,
];

fn status_index(s: u16) -> usize {
    STATUSES
        .iter()
        .position(|x| *x == s)
        .unwrap_or(STATUSES.len() - 1)
}

/// The upper bounds of the latency histograms' buckets, in nanoseconds: from 50 µs (an
/// answer that needed no Redis call) to 10 s (a hold on PostgreSQL), about ×2 apart.
const LATENCY_BOUNDS_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// A latency histogram one thread writes: a count per bucket (not cumulative; the last is
/// +Inf) and the sum in nanoseconds.
#[derive(Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS.partition_point(|b| *b < ns);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }
}

/// The `outcome` label of the request histogram: the status class.
const OUTCOMES: [&str; 4] = ["2xx", "4xx", "5xx", "other"];

fn outcome_index(status: u16) -> usize {
    match status {
        200..=299 => 0,
        400..=499 => 1,
        500..=599 => 2,
        _ => 3,
    }
}

/// Where a panic happened (`place` label of `flashsale_panics_total`): a request's is
/// contained to its connection, the others take the process down (see `panics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicPlace {
    Request,
    Worker,
    Writer,
    Reader,
    Dispatcher,
}

impl PanicPlace {
    pub fn label(self) -> &'static str {
        match self {
            PanicPlace::Request => "request",
            PanicPlace::Worker => "worker",
            PanicPlace::Writer => "writer",
            PanicPlace::Dispatcher => "dispatcher",
            PanicPlace::Reader => "reader",
        }
    }
}

/// What became of a reservation request (`outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationLabel {
    Accepted,
    Replayed,
    InsufficientStock,
    PurchaseLimitReached,
    /// 400/404/422: bad input or unknown product.
    Invalid,
    /// 503: Redis down, queue full or shutting down.
    Unavailable,
    /// 401: no valid bearer token (`jwt` mode).
    Unauthorized,
    /// 429: over the client address's or the buyer's rate limit.
    RateLimited,
    /// 409: before the product's sale window.
    SaleNotStarted,
    /// 409: after the product's sale window.
    SaleEnded,
}

impl ReservationLabel {
    const ALL: [ReservationLabel; 10] = [
        ReservationLabel::Accepted,
        ReservationLabel::Replayed,
        ReservationLabel::InsufficientStock,
        ReservationLabel::PurchaseLimitReached,
        ReservationLabel::Invalid,
        ReservationLabel::Unavailable,
        ReservationLabel::Unauthorized,
        ReservationLabel::RateLimited,
        ReservationLabel::SaleNotStarted,
        ReservationLabel::SaleEnded,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ReservationLabel::Accepted => "accepted",
            ReservationLabel::Replayed => "replayed",
            ReservationLabel::InsufficientStock => "insufficient_stock",
            ReservationLabel::PurchaseLimitReached => "purchase_limit_reached",
            ReservationLabel::Invalid => "invalid",
            ReservationLabel::Unavailable => "unavailable",
            ReservationLabel::Unauthorized => "unauthorized",
            ReservationLabel::RateLimited => "rate_limited",
            ReservationLabel::SaleNotStarted => "sale_not_started",
            ReservationLabel::SaleEnded => "sale_ended",
        }
    }
}

/// What became of a webhook (`outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Paid,
    Failed,
    AlreadyProcessed,
    /// A success after the order was cancelled: to be refunded.
    RefundRequired,
    /// Another final state (a failure after a payment).
    FinalState,
    RecordedEarly,
    InvalidSignature,
    Invalid,
    Unavailable,
}

impl Webhook {
    const ALL: [Webhook; 9] = [
        Webhook::Paid,
        Webhook::Failed,
        Webhook::AlreadyProcessed,
        Webhook::RefundRequired,
        Webhook::FinalState,
        Webhook::RecordedEarly,
        Webhook::InvalidSignature,
        Webhook::Invalid,
        Webhook::Unavailable,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Webhook::Paid => "paid",
            Webhook::Failed => "failed",
            Webhook::AlreadyProcessed => "already_processed",
            Webhook::RefundRequired => "refund_required",
            Webhook::FinalState => "final_state",
            Webhook::RecordedEarly => "recorded_early",
            Webhook::InvalidSignature => "invalid_signature",
            Webhook::Invalid => "invalid",
            Webhook::Unavailable => "unavailable",
        }
    }
}

/// Why a 503 was sent (`reason` label), indexed by `domain::Unavailable`.
const UNAVAILABLE_REASONS: [&str; 6] = [
    "redis",
    "queue_full",
    "database",
    "shutting_down",
    "too_many_connections",
    "read_queue_full",
];

/// One worker's counters. Only that worker writes them.
#[derive(Default)]
pub struct WorkerMetrics {
    http: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    reservations: [AtomicU64; ReservationLabel::ALL.len()],
    webhooks: [AtomicU64; Webhook::ALL.len()],
    unavailable: [AtomicU64; UNAVAILABLE_REASONS.len()],
    /// Connections closed at accept, by the cap they were over (`limits::connections::Over`).
    connections_refused: [AtomicU64; 2],
    /// Requests answered 429, by the limit (`limits::rate::LimitedBy`).
    rate_limited: [AtomicU64; 3],
    expiries: AtomicU64,
    /// `reserve.lua` calls: reservation requests ÷ calls is the mean batch.
    reserve_calls: AtomicU64,
    /// Entries this worker's timer wheel holds (a gauge): one per reserve call or restored order.
    wheel_len: AtomicU64,
    /// Connections this worker has open (a gauge, updated every reaper tick).
    open_connections: AtomicU64,
    redis_commands: AtomicU64,
    redis_writes: AtomicU64,
    /// Redis Cluster redirections followed: MOVED, ASK, TRYAGAIN or CLUSTERDOWN.
    redis_redirects: [AtomicU64; 3],
    /// Time from a parsed request to its answer, by route and outcome.
    request_latency: [[Latency; OUTCOMES.len()]; Route::ALL.len()],
    /// Time from a Redis command's send to its reply (waiting in the pipeline included).
    pub redis_latency: Latency,
}

impl WorkerMetrics {
    pub fn request(&self, route: Route, status: u16) {
        self.http[route as usize][status_index(status)].fetch_add(1, Relaxed);
    }
    /// How long a request took from parsed to answered.
    pub fn request_took(&self, route: Route, status: u16, d: std::time::Duration) {
        self.request_latency[route as usize][outcome_index(status)].observe(d);
    }
    pub fn reservation(&self, o: ReservationLabel) {
        self.reservations[o as usize].fetch_add(1, Relaxed);
    }
    pub fn webhook(&self, o: Webhook) {
        self.webhooks[o as usize].fetch_add(1, Relaxed);
    }
    pub fn unavailable(&self, u: Unavailable) {
        self.unavailable[u as usize].fetch_add(1, Relaxed);
    }
    /// A connection closed at accept for being over a cap (its 503 is counted here, not as
    /// a request).
    pub fn connection_refused(&self, over: Over) {
        self.unavailable[Unavailable::TooManyConnections as usize].fetch_add(1, Relaxed);
        self.connections_refused[over as usize].fetch_add(1, Relaxed);
    }
    pub fn rate_limited(&self, which: LimitedBy) {
        self.rate_limited[which as usize].fetch_add(1, Relaxed);
    }
    pub fn reserve_call(&self) {
        self.reserve_calls.fetch_add(1, Relaxed);
    }

    pub fn expired(&self) {
        self.expiries.fetch_add(1, Relaxed);
    }
    pub fn set_open_connections(&self, n: usize) {
        self.open_connections.store(n as u64, Relaxed);
    }
    pub fn set_wheel_len(&self, n: usize) {
        self.wheel_len.store(n as u64, Relaxed);
    }
    pub fn set_redis_pipeline(&self, commands: u64, writes: u64) {
        self.redis_commands.store(commands, Relaxed);
        self.redis_writes.store(writes, Relaxed);
    }
    pub fn set_redis_redirects(&self, (moved, ask, retry): (u64, u64, u64)) {
        for (i, v) in [moved, ask, retry].into_iter().enumerate() {
            self.redis_redirects[i].store(v, Relaxed);
        }
    }
}

/// The writer thread's metrics.
pub struct WriterMetrics {
    pub batch_rows: Histogram,
    pub commit_seconds: Histogram,
    pub rows: Counter,
    pub retries: Counter,
    pub journal_replayed: Counter,
    pub late_payments: Counter,
    pub postgres_up: Gauge,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            batch_rows: Histogram::new([1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]),
            commit_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            rows: Counter::default(),
            retries: Counter::default(),
            journal_replayed: Counter::default(),
            late_payments: Counter::default(),
            postgres_up: Gauge::default(),
        }
    }
}

/// The event dispatcher's metrics.
pub struct EventMetrics {
    /// Events recorded in the outbox, by type (counted by the dispatcher as they appear).
    pub created: Family<Vec<(&'static str, String)>, Counter>,
    /// Delivery attempts by outcome: delivered, retried, failed (for good), gone (410).
    pub attempts: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Deliveries waiting (pending), all endpoints.
    pub backlog: Gauge,
    /// From an event's commit to its delivery.
    pub delivery_seconds: Histogram,
}

impl Default for EventMetrics {
    fn default() -> Self {
        EventMetrics {
            created: Family::default(),
            attempts: Family::default(),
            backlog: Gauge::default(),
            delivery_seconds: Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
        }
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    workers: Arc<[CachePadded<WorkerMetrics>]>,
    pub writer: WriterMetrics,
    pub events: EventMetrics,
    /// Panics by place; rare by definition, so one shared family is cheap enough.
    panics: Family<Vec<(&'static str, &'static str)>, Counter>,
    registry: Registry,
}

impl Metrics {
    /// `depth` and `capacity` read the handoff queue at scrape time.
    pub fn new(
        workers: usize,
        depth: impl Fn() -> usize + Send + Sync + 'static,
        capacity: usize,
    ) -> Metrics {
        let blocks: Arc<[CachePadded<WorkerMetrics>]> = (0..workers)
            .map(|_| CachePadded::new(WorkerMetrics::default()))
            .collect();
        let writer = WriterMetrics::default();
        let mut registry = Registry::with_prefix("flashsale");
        registry.register_collector(Box::new(Sums {
            workers: blocks.clone(),
            depth: Box::new(depth),
            capacity,
        }));
        registry.register(
            "writer_batch_rows",
            "Rows per writer transaction",
            writer.batch_rows.clone(),
        );
        registry.register(
            "writer_commit_seconds",
            "Time to write and commit one batch",
            writer.commit_seconds.clone(),
        );
        registry.register(
            "writer_rows",
            "Rows written to PostgreSQL",
            writer.rows.clone(),
        );
        registry.register(
            "writer_retries",
            "Batches retried after a PostgreSQL error",
            writer.retries.clone(),
        );
        registry.register(
            "writer_journal_replayed",
            "Orders replayed from the Redis journal (after a crash, or stuck)",
            writer.journal_replayed.clone(),
        );
        registry.register(
            "late_payments",
            "Successful payments for cancelled orders, recorded for refund",
            writer.late_payments.clone(),
        );
        registry.register(
            "postgres_up",
            "1 when the writer's last PostgreSQL contact succeeded",
            writer.postgres_up.clone(),
        );
        let events = EventMetrics::default();
        registry.register(
            "events_created",
            "Order events recorded in the outbox, by type",
            events.created.clone(),
        );
        registry.register(
            "event_delivery_attempts",
            "Event delivery attempts by outcome (delivered, retried, failed, gone)",
            events.attempts.clone(),
        );
        registry.register(
            "event_backlog",
            "Event deliveries pending, all endpoints",
            events.backlog.clone(),
        );
        registry.register(
            "event_delivery_seconds",
            "Time from an event's commit to its delivery",
            events.delivery_seconds.clone(),
        );
        let panics = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "panics",
            "Panics by place: a request's is contained to its connection, any other takes the process down",
            panics.clone(),
        );
        Metrics {
            workers: blocks,
            writer,
            events,
            panics,
            registry,
        }
    }

    pub fn panicked(&self, place: PanicPlace) {
        self.panics
            .get_or_create(&vec![("place", place.label())])
            .inc();
    }

    pub fn worker(&self, i: usize) -> &WorkerMetrics {
        &self.workers[i]
    }

    /// Worker `i`'s block, owned: for parts that outlive a borrow of `Metrics` (its Redis
    /// client).
    pub fn worker_block(&self, i: usize) -> WorkerBlock {
        WorkerBlock {
            blocks: self.workers.clone(),
            i,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// One worker's block of counters, held by a part of the worker that has no `Metrics` at hand.
#[derive(Clone)]
pub struct WorkerBlock {
    blocks: Arc<[CachePadded<WorkerMetrics>]>,
    i: usize,
}

impl std::ops::Deref for WorkerBlock {
    type Target = WorkerMetrics;
    fn deref(&self) -> &WorkerMetrics {
        &self.blocks[self.i]
    }
}

/// Sums the per-worker blocks at scrape time.
struct Sums {
    workers: Arc<[CachePadded<WorkerMetrics>]>,
    depth: Box<dyn Fn() -> usize + Send + Sync>,
    capacity: usize,
}

impl std::fmt::Debug for Sums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sums")
    }
}

impl Sums {
    fn sum(&self, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// The workers' histograms picked by `f`, summed: (sum in seconds, count, buckets as
    /// prometheus-client takes them: bound and count of that bucket alone).
    fn latency(&self, f: impl Fn(&WorkerMetrics) -> &Latency) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
            .iter()
            .map(|b| (*b as f64 / 1e9, 0))
            .chain(std::iter::once((f64::INFINITY, 0)))
            .collect();
        let mut sum_ns = 0u64;
        for w in self.workers.iter() {
            let h = f(w);
            for (i, b) in h.buckets.iter().enumerate() {
                buckets[i].1 += b.load(Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(h.sum_ns.load(Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum_ns as f64 / 1e9, count, buckets)
    }
}

impl Collector for Sums {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(0u64);
        {
            let mut m = enc.encode_descriptor(
                "http_requests",
                "HTTP requests by route and status",
                None,
                c.metric_type(),
            )?;
            for (ri, route) in Route::ALL.iter().enumerate() {
                for (si, status) in STATUSES.iter().enumerate() {
                    let v = self.sum(|w| &w.http[ri][si]);
                    if v == 0 {
                        continue;
                    }
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    let labels = [("route", route.label().to_string()), ("status", status)];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "reservations",
                "Reservation requests by outcome",
                None,
                c.metric_type(),
            )?;
            for (i, o) in ReservationLabel::ALL.iter().enumerate() {
                let v = self.sum(|w| &w.reservations[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("outcome", o.label())])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "webhooks",
                "Payment webhooks by outcome",
                None,
                c.metric_type(),
            )?;
            for (i, o) in Webhook::ALL.iter().enumerate() {
                let v = self.sum(|w| &w.webhooks[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("outcome", o.label())])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "unavailable_responses",
                "503 answers by cause",
                None,
                c.metric_type(),
            )?;
            for (i, r) in UNAVAILABLE_REASONS.iter().enumerate() {
                let v = self.sum(|w| &w.unavailable[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("reason", *r)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "connections_refused",
                "Connections closed at accept (with a 503) for being over a cap, by cap",
                None,
                c.metric_type(),
            )?;
            for (i, cap) in ["total", "per_ip"].iter().enumerate() {
                let v = self.sum(|w| &w.connections_refused[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("cap", *cap)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "redis_redirects",
                "Redis Cluster answers that sent a call elsewhere or made it wait, by kind (moved, ask, tryagain: TRYAGAIN or CLUSTERDOWN)",
                None,
                c.metric_type(),
            )?;
            for (i, kind) in ["moved", "ask", "tryagain"].iter().enumerate() {
                let v = self.sum(|w| &w.redis_redirects[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("kind", *kind)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "rate_limited",
                "Requests answered 429, by the limit that refused them",
                None,
                c.metric_type(),
            )?;
            for (i, limit) in ["address", "buyer", "admin_failures"].iter().enumerate() {
                let v = self.sum(|w| &w.rate_limited[i]);
                ConstCounter::new(v).encode(m.encode_family(&[("limit", *limit)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "http_request_duration_seconds",
                "Time from a parsed request to its answer, by route and outcome (status class)",
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            for (ri, route) in Route::ALL.iter().enumerate() {
                for (oi, outcome) in OUTCOMES.iter().enumerate() {
                    let (sum, count, buckets) = self.latency(|w| &w.request_latency[ri][oi]);
                    if count == 0 {
                        continue;
                    }
                    let labels = [("route", route.label()), ("outcome", *outcome)];
                    m.encode_family(&labels)?
                        .encode_histogram::<Vec<(&str, &str)>>(sum, count, &buckets, None)?;
                }
            }
        }
        {
            let (sum, count, buckets) = self.latency(|w| &w.redis_latency);
            let mut m = enc.encode_descriptor(
                "redis_call_duration_seconds",
                "Time from a worker's Redis command or script call to its reply, waiting in the pipeline included",
                None,
                prometheus_client::metrics::MetricType::Histogram,
            )?;
            m.encode_histogram::<Vec<(&str, &str)>>(sum, count, &buckets, None)?;
        }
        let counters: [(&str, &str, u64); 4] = [
            (
                "expiries",
                "Reservations cancelled because their hold passed",
                self.sum(|w| &w.expiries),
            ),
            (
                "reserve_calls",
                "Calls of reserve.lua; reservation requests that reached Redis ÷ calls = the mean micro-batch",
                self.sum(|w| &w.reserve_calls),
            ),
            (
                "redis_commands_sent",
                "Commands sent on the workers' Redis pipelines",
                self.sum(|w| &w.redis_commands),
            ),
            (
                "redis_writes",
                "Socket writes carrying them (commands / writes = pipeline depth)",
                self.sum(|w| &w.redis_writes),
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, i64); 4] = [
            (
                "handoff_queue_depth",
                "Messages queued or promised to the PostgreSQL writer",
                (self.depth)() as i64,
            ),
            (
                "handoff_queue_capacity",
                "Bound of the queue to the PostgreSQL writer",
                self.capacity as i64,
            ),
            (
                "reaper_pending",
                "Timer-wheel entries waiting to expire: one per reserve call (a batch of reservations) or per order restored from PostgreSQL",
                self.sum(|w| &w.wheel_len) as i64,
            ),
            (
                "open_connections",
                "HTTP connections open now",
                self.sum(|w| &w.open_connections) as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Unavailable;

    #[test]
    fn renders_sums_across_workers() {
        let m = Metrics::new(2, || 3, 10);
        m.worker(0).request(Route::OrderCreate, 202);
        m.worker(1).request(Route::OrderCreate, 202);
        m.worker(1).request(Route::Unknown, 418);
        m.worker(0).reservation(ReservationLabel::Accepted);
        m.worker(1).unavailable(Unavailable::QueueFull);
        m.writer.batch_rows.observe(12.0);
        let t = m.render();
        assert!(
            t.contains(
                "flashsale_http_requests_total{route=\"POST /api/orders\",status=\"202\"} 2"
            ),
            "{t}"
        );
        assert!(t.contains("flashsale_http_requests_total{route=\"other\",status=\"other\"} 1"));
        assert!(t.contains("flashsale_reservations_total{outcome=\"accepted\"} 1"));
        assert!(t.contains("flashsale_unavailable_responses_total{reason=\"queue_full\"} 1"));
        assert!(t.contains("flashsale_handoff_queue_depth 3"));
        assert!(t.contains("flashsale_writer_batch_rows_count 1"));
    }

    #[test]
    fn latency_buckets_are_cumulative_across_workers() {
        use std::time::Duration;
        let m = Metrics::new(2, || 0, 10);
        m.worker(0)
            .request_took(Route::OrderCreate, 202, Duration::from_micros(40));
        m.worker(1)
            .request_took(Route::OrderCreate, 202, Duration::from_micros(100));
        m.worker(1)
            .request_took(Route::OrderCreate, 202, Duration::from_millis(3));
        m.worker(1)
            .request_took(Route::OrderCreate, 503, Duration::from_secs(60));
        m.worker_block(0)
            .redis_latency
            .observe(Duration::from_micros(300));
        let t = m.render();
        let series = |s: &str| {
            t.lines()
                .find(|l| l.starts_with(s))
                .unwrap_or_else(|| panic!("no {s} in {t}"))
                .rsplit(' ')
                .next()
                .map(str::to_string)
        };
        let create = "flashsale_http_request_duration_seconds_bucket{route=\"POST /api/orders\",outcome=\"2xx\"";
        // `le` is inclusive: 100 µs is in the 0.0001 bucket.
        assert_eq!(
            series(&format!("{create},le=\"5e-05\"}}")),
            Some("1".into()),
            "{t}"
        );
        assert_eq!(
            series(&format!("{create},le=\"0.0001\"}}")),
            Some("2".into())
        );
        assert_eq!(
            series(&format!("{create},le=\"0.005\"}}")),
            Some("3".into())
        );
        assert_eq!(series(&format!("{create},le=\"+Inf\"}}")), Some("3".into()));
        let failed = "flashsale_http_request_duration_seconds_bucket{route=\"POST /api/orders\",outcome=\"5xx\"";
        assert_eq!(series(&format!("{failed},le=\"10\"}}")), Some("0".into()));
        assert_eq!(series(&format!("{failed},le=\"+Inf\"}}")), Some("1".into()));
        assert!(
            t.contains("flashsale_redis_call_duration_seconds_count 1"),
            "{t}"
        );
        assert!(
            !t.contains("route=\"GET /health\",outcome"),
            "unused series are left out"
        );
    }
}
