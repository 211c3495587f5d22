//! The `pg-reader` thread: the road of reads, apart from the road of writes.
//!
//! Lookups (an order Redis does not hold, whether a product exists) and the snapshots that
//! lazy loading installs into Redis are answered here, on connections of their own with their
//! statements prepared once, so that a flood of lookups for unknown orders or products never
//! waits in the writer's queue, never takes its places, and never holds up the commits that
//! payments and expiries wait for. Requests come over a bounded channel; a full channel
//! answers 503 at once.
//!
//! Shape: a tokio current-thread runtime; each request is a task on one of [`CONNECTIONS`]
//! connections (tokio-postgres pipelines the queries of concurrent tasks on a connection).
//! A connection that fails is dropped and opened again by the next request that needs it.
//! The thread ends when every worker's sender is gone, or with the process.

use crate::db::{PgError, classify, late_payment};
use crate::domain::{
    DeliveryFilter, DeliveryView, EventEndpoint, EventFilter, LatePayment, OrderEvent, OrderFilter,
    OrderRecord, OrderState, ProductId, ProductSnapshot, ProductStats,
};
use crate::metrics::PanicPlace;
use crate::panics;
use crate::shared::Shared;
use crate::sync::Arc;
use crate::time::{from_system_time, rfc3339};
use futures_channel::oneshot;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls, Statement};

/// Connections of the read path: reads are short index lookups, and two connections keep one
/// slow query from holding up the others.
pub const CONNECTIONS: usize = 2;
/// Requests waiting for the reader at most; more are refused with 503 at once.
pub const QUEUE: usize = 4096;
/// A read that takes longer than this is answered 503 (PostgreSQL is stuck or gone).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a read could not be answered. The caller answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The reader's queue is full.
    Busy,
    /// PostgreSQL could not answer in time.
    Unavailable,
    /// PostgreSQL refused a value of the request as data (SQLSTATE class 22).
    BadInput,
}

type Reply<T> = oneshot::Sender<Result<T, ReadError>>;

/// What a worker asks the reader.
pub enum ReadMsg {
    /// Does `products` have this id?
    ProductExists {
        product_id: ProductId,
        reply: Reply<bool>,
    },
    /// The product with its pending orders and (limited products) units per user, in one
    /// consistent snapshot: what `load.lua` installs.
    Snapshot {
        product_id: ProductId,
        reply: Reply<Option<ProductSnapshot>>,
    },
    /// An order by reference.
    Order {
        reference: String,
        reply: Reply<Option<OrderRecord>>,
    },
    /// A product's sale in numbers (admin).
    Stats {
        product_id: ProductId,
        reply: Reply<Option<ProductStats>>,
    },
    /// A page of orders, by id, with their ids (admin).
    Orders {
        filter: OrderFilter,
        reply: Reply<Vec<(i64, OrderRecord)>>,
    },
    /// A page of an endpoint's deliveries (admin).
    Deliveries {
        filter: DeliveryFilter,
        /// `None` when there is no such endpoint.
        reply: Reply<Option<Vec<DeliveryView>>>,
    },
    /// The event endpoints, without secrets (admin).
    Endpoints { reply: Reply<Vec<EventEndpoint>> },
    /// A page of the event feed (admin).
    Events {
        filter: EventFilter,
        reply: Reply<Vec<OrderEvent>>,
    },
    /// Late payments, refunded or not or both (admin).
    LatePayments {
        refunded: Option<bool>,
        reply: Reply<Vec<LatePayment>>,
    },
}

/// A worker's handle on the reader.
#[derive(Clone)]
pub struct ReaderTx {
    tx: mpsc::Sender<ReadMsg>,
}

impl ReaderTx {
    /// Sends a request and waits for its answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> ReadMsg) -> Result<T, ReadError> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReadError::Busy,
            mpsc::error::TrySendError::Closed(_) => ReadError::Unavailable,
        })?;
        rx.await.unwrap_or(Err(ReadError::Unavailable))
    }
}

/// Starts the reader thread; it stops once every [`ReaderTx`] is dropped.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<(ReaderTx, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let database_url = shared.cfg.database_url.to_string();
    let handle = std::thread::Builder::new()
        .name("pg-reader".into())
        .spawn(move || {
            panics::guard(&shared, PanicPlace::Reader, || serve(database_url, rx));
        })?;
    Ok((ReaderTx { tx }, handle))
}

/// The reader thread's body: its runtime and its loop.
fn serve(database_url: String, rx: mpsc::Receiver<ReadMsg>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the reader's runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(database_url, rx));
}

async fn run(url: String, mut rx: mpsc::Receiver<ReadMsg>) {
    let pool = Rc::new(Pool {
        url,
        conns: (0..CONNECTIONS).map(|_| RefCell::new(None)).collect(),
        next: RefCell::new(0),
    });
    while let Some(msg) = rx.recv().await {
        crate::failpoint!("reader_message");
        let pool = pool.clone();
        tokio::task::spawn_local(async move { answer(&pool, msg).await });
    }
}

async fn answer(pool: &Pool, msg: ReadMsg) {
    match msg {
        ReadMsg::ProductExists { product_id, reply } => {
            let r = pool
                .with(|c| async move {
                    let row = c
                        .client
                        .query_opt(&c.product_exists, &[&product_id.get()])
                        .await
                        .map_err(classify)?;
                    Ok(row.is_some())
                })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Snapshot { product_id, reply } => {
            let r = pool
                .with(|c| async move { c.snapshot(product_id).await })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Order { reference, reply } => {
            let r = pool
                .with(|c| async move { c.order(&reference).await })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Stats { product_id, reply } => {
            let r = pool
                .with(|c| async move { c.stats(product_id).await })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Orders { filter, reply } => {
            let r = pool.with(|c| async move { c.orders(&filter).await }).await;
            let _ = reply.send(r);
        }
        ReadMsg::Deliveries { filter, reply } => {
            let r = pool
                .with(|c| async move {
                    let exists: bool = c
                        .client
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM event_endpoints WHERE id = $1)",
                            &[&filter.endpoint_id],
                        )
                        .await
                        .map_err(classify)?
                        .get(0);
                    if !exists {
                        return Ok(None);
                    }
                    let rows = c
                        .client
                        .query(
                            "SELECT d.event_row, ev.event_id, ev.type, d.status, d.attempts,
                                    d.last_status_code, d.last_error,
                                    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END,
                                    d.delivered_at
                             FROM event_deliveries d JOIN order_events ev ON ev.id = d.event_row
                             WHERE d.endpoint_id = $1 AND d.event_row > $2
                               AND ($3::text IS NULL OR d.status = $3)
                             ORDER BY d.event_row LIMIT $4",
                            &[
                                &filter.endpoint_id,
                                &filter.after,
                                &filter.status,
                                &filter.limit,
                            ],
                        )
                        .await
                        .map_err(classify)?;
                    Ok(Some(
                        rows.iter()
                            .map(|r| DeliveryView {
                                position: r.get(0),
                                event_id: r.get(1),
                                event_type: r.get(2),
                                status: r.get(3),
                                attempts: r.get(4),
                                last_status_code: r.get(5),
                                last_error: r.get(6),
                                next_attempt_at_ms: r
                                    .get::<_, Option<SystemTime>>(7)
                                    .map(from_system_time),
                                delivered_at_ms: r
                                    .get::<_, Option<SystemTime>>(8)
                                    .map(from_system_time),
                            })
                            .collect(),
                    ))
                })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Endpoints { reply } => {
            let r = pool
                .with(|c| async move {
                    let rows = c
                        .client
                        .query(
                            "SELECT id, url, events, description, enabled, created_at
                             FROM event_endpoints ORDER BY id LIMIT 1000",
                            &[],
                        )
                        .await
                        .map_err(classify)?;
                    Ok(rows
                        .iter()
                        .map(|r| EventEndpoint {
                            id: r.get(0),
                            url: r.get(1),
                            events: r.get(2),
                            description: r.get(3),
                            enabled: r.get(4),
                            secret: None,
                            created_at_ms: from_system_time(r.get(5)),
                        })
                        .collect())
                })
                .await;
            let _ = reply.send(r);
        }
        ReadMsg::Events { filter, reply } => {
            let r = pool.with(|c| async move { c.events(&filter).await }).await;
            let _ = reply.send(r);
        }
        ReadMsg::LatePayments { refunded, reply } => {
            let r = pool
                .with(|c| async move {
                    let rows = c
                        .client
                        .query(&c.late_payments, &[&refunded])
                        .await
                        .map_err(classify)?;
                    Ok(rows.iter().map(late_payment).collect())
                })
                .await;
            let _ = reply.send(r);
        }
    }
}

/// The reader's connections, opened on first use and again after a failure.
struct Pool {
    url: String,
    conns: Vec<RefCell<Option<Rc<Conn>>>>,
    next: RefCell<usize>,
}

impl Pool {
    /// Runs `f` on the next connection, within [`READ_TIMEOUT`].
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, ReadError>
    where
        F: FnOnce(Rc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgError>>,
    {
        let slot = {
            let mut next = self.next.borrow_mut();
            *next = (*next + 1) % self.conns.len();
            &self.conns[*next]
        };
        let work = async {
            let existing = slot.borrow().clone().filter(|c| !c.client.is_closed());
            let conn = match existing {
                Some(c) => c,
                None => {
                    let c = Rc::new(Conn::connect(&self.url).await?);
                    *slot.borrow_mut() = Some(c.clone());
                    c
                }
            };
            f(conn).await
        };
        match tokio::time::timeout(READ_TIMEOUT, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(PgError::Data(why))) => {
                tracing::info!(error = %why, "PostgreSQL refused a value of a request");
                Err(ReadError::BadInput)
            }
            Ok(Err(e)) => {
                if matches!(e, PgError::Transient(_)) {
                    slot.borrow_mut().take();
                }
                tracing::warn!(error = %e, "PostgreSQL read failed");
                Err(ReadError::Unavailable)
            }
            Err(_) => {
                slot.borrow_mut().take();
                Err(ReadError::Unavailable)
            }
        }
    }
}

const PRODUCT_EXISTS: &str = "SELECT 1 FROM products WHERE id = $1";

/// One statement, so one consistent snapshot without a transaction (a transaction would need
/// the connection to itself, while concurrent reads share it).
const SNAPSHOT: &str = "
SELECT p.name, p.price_cents, p.stock, p.max_per_order, p.per_user_limit, p.created_at, p.updated_at,
       p.sale_starts_at, p.sale_ends_at, p.attrs_rev,
       o.refs, o.users, o.qtys, o.amounts, o.expires, o.created, u.users, u.units,
       (SELECT array_agg(op_id) FROM stock_ops WHERE product_id = p.id)
FROM products p
LEFT JOIN LATERAL (
    SELECT array_agg(order_reference) AS refs, array_agg(user_id) AS users, array_agg(qty) AS qtys,
           array_agg(amount_cents) AS amounts, array_agg(expires_at) AS expires,
           array_agg(created_at) AS created
    FROM orders WHERE product_id = p.id AND status = 'pending'
) o ON true
LEFT JOIN LATERAL (
    SELECT array_agg(g.user_id) AS users, array_agg(g.n) AS units
    FROM (SELECT user_id, sum(qty)::int8 AS n FROM orders
          WHERE product_id = p.id AND user_id IS NOT NULL AND status IN ('pending', 'paid')
          GROUP BY user_id) g
    WHERE p.per_user_limit IS NOT NULL
) u ON true
WHERE p.id = $1";

const ORDER: &str = "
SELECT product_id, user_id, qty, amount_cents, status, cancel_reason, expires_at, created_at
FROM orders WHERE order_reference = $1";

/// Counters kept in `products` by the writer; pending units by the partial index; late
/// payments through the unique index of their orders.
const STATS: &str = "
SELECT p.stock, p.paid_units, p.cancelled_units, p.revenue_cents,
       (SELECT COALESCE(sum(qty), 0)::int8 FROM orders
        WHERE product_id = p.id AND status = 'pending'),
       (SELECT count(*) FROM late_payments l JOIN orders o USING (order_reference)
        WHERE o.product_id = p.id)
FROM products p WHERE p.id = $1";

/// A page of orders in id order (the primary key), filters applied on the way.
const ORDERS: &str = "
SELECT id, order_reference, product_id, user_id, qty, amount_cents, status, cancel_reason,
       expires_at, created_at
FROM orders
WHERE id > $1 AND ($2::int8 IS NULL OR product_id = $2) AND ($3::text IS NULL OR status = $3)
      AND ($4::text IS NULL OR user_id = $4)
ORDER BY id LIMIT $5";

/// Late payments, oldest first; at most 10,000 (each needs a real order and a provider's
/// signature, so there are few).
const LATE_PAYMENTS: &str = "
SELECT order_reference, amount_cents, created_at, refunded_at FROM late_payments
WHERE $1::bool IS NULL OR (refunded_at IS NOT NULL) = $1
ORDER BY created_at, order_reference LIMIT 10000";

/// A page of the event feed: after a (transaction id, row id) position, only events of
/// transactions older than every one still running, so an event that commits late under a
/// smaller row id is never skipped by a reader following the cursor.
const EVENTS: &str = "
SELECT txid::text, id, event_id, type, created_at, data::text FROM order_events
WHERE (txid, id) > ($1::text::xid8, $2::int8)
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
  AND ($3::text IS NULL OR type = $3)
  AND ($4::text IS NULL OR order_reference = $4)
ORDER BY txid, id LIMIT $5";

/// One connection with its statements.
struct Conn {
    client: Client,
    product_exists: Statement,
    snapshot: Statement,
    order: Statement,
    stats: Statement,
    orders: Statement,
    late_payments: Statement,
    events: Statement,
}

impl Conn {
    async fn connect(url: &str) -> Result<Conn, PgError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(classify)?;
        tokio::task::spawn_local(async move {
            // Ends when the connection drops; the next read then reconnects.
            let _ = conn.await;
        });
        Ok(Conn {
            product_exists: client.prepare(PRODUCT_EXISTS).await.map_err(classify)?,
            snapshot: client.prepare(SNAPSHOT).await.map_err(classify)?,
            order: client.prepare(ORDER).await.map_err(classify)?,
            stats: client.prepare(STATS).await.map_err(classify)?,
            orders: client.prepare(ORDERS).await.map_err(classify)?,
            late_payments: client.prepare(LATE_PAYMENTS).await.map_err(classify)?,
            events: client.prepare(EVENTS).await.map_err(classify)?,
            client,
        })
    }

    async fn snapshot(&self, pid: ProductId) -> Result<Option<ProductSnapshot>, PgError> {
        let Some(row) = self
            .client
            .query_opt(&self.snapshot, &[&pid.get()])
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let refs: Vec<String> = row.get::<_, Option<_>>(10).unwrap_or_default();
        let users: Vec<Option<String>> = row.get::<_, Option<_>>(11).unwrap_or_default();
        let qtys: Vec<i32> = row.get::<_, Option<_>>(12).unwrap_or_default();
        let amounts: Vec<i64> = row.get::<_, Option<_>>(13).unwrap_or_default();
        let expires: Vec<SystemTime> = row.get::<_, Option<_>>(14).unwrap_or_default();
        let created: Vec<SystemTime> = row.get::<_, Option<_>>(15).unwrap_or_default();
        let pending = refs
            .into_iter()
            .zip(users)
            .zip(qtys)
            .zip(amounts)
            .zip(expires)
            .zip(created)
            .map(
                |(((((reference, user_id), qty), amount_cents), e), c)| OrderRecord {
                    reference,
                    product_id: pid,
                    user_id,
                    qty,
                    amount_cents,
                    state: OrderState::Pending,
                    expires_at_ms: from_system_time(e),
                    created_at_ms: from_system_time(c),
                },
            )
            .collect();
        let unit_users: Vec<String> = row.get::<_, Option<_>>(16).unwrap_or_default();
        let units: Vec<i64> = row.get::<_, Option<_>>(17).unwrap_or_default();
        Ok(Some(ProductSnapshot {
            id: pid,
            name: row.get(0),
            price_cents: row.get(1),
            pg_stock: row.get(2),
            max_per_order: row.get(3),
            per_user_limit: row.get(4),
            created_at: rfc3339(row.get::<_, SystemTime>(5)),
            updated_at: rfc3339(row.get::<_, SystemTime>(6)),
            pending,
            user_units: unit_users.into_iter().zip(units).collect(),
            sale_starts_at_ms: row.get::<_, Option<SystemTime>>(7).map(from_system_time),
            sale_ends_at_ms: row.get::<_, Option<SystemTime>>(8).map(from_system_time),
            attrs_rev: row.get(9),
            applied_restocks: row.get::<_, Option<_>>(18).unwrap_or_default(),
        }))
    }

    async fn order(&self, reference: &str) -> Result<Option<OrderRecord>, PgError> {
        let row = self
            .client
            .query_opt(&self.order, &[&reference])
            .await
            .map_err(classify)?;
        row.map(|r| order_record(reference.to_string(), &r, 0))
            .transpose()
    }

    async fn stats(&self, pid: ProductId) -> Result<Option<ProductStats>, PgError> {
        let row = self
            .client
            .query_opt(&self.stats, &[&pid.get()])
            .await
            .map_err(classify)?;
        Ok(row.map(|r| ProductStats {
            stock: r.get(0),
            paid_units: r.get(1),
            cancelled_units: r.get(2),
            revenue_cents: r.get(3),
            pending_units: r.get(4),
            late_payments: r.get(5),
        }))
    }

    async fn events(&self, f: &EventFilter) -> Result<Vec<OrderEvent>, PgError> {
        let rows = self
            .client
            .query(
                &self.events,
                &[
                    &f.after.0.to_string(),
                    &f.after.1,
                    &f.event_type,
                    &f.order_reference,
                    &f.limit,
                ],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let txid: String = r.get(0);
                let txid = txid
                    .parse::<u64>()
                    .map_err(|_| PgError::Rejected(format!("event with txid {txid:?}")))?;
                Ok(OrderEvent {
                    position: (txid, r.get(1)),
                    event_id: r.get(2),
                    event_type: r.get(3),
                    created_at_ms: from_system_time(r.get(4)),
                    data: r.get(5),
                })
            })
            .collect()
    }

    async fn orders(&self, f: &OrderFilter) -> Result<Vec<(i64, OrderRecord)>, PgError> {
        let rows = self
            .client
            .query(
                &self.orders,
                &[
                    &f.after,
                    &f.product_id.map(ProductId::get),
                    &f.status,
                    &f.user_id,
                    &f.limit,
                ],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| Ok((r.get(0), order_record(r.get(1), r, 2)?)))
            .collect()
    }
}

/// An order from a row holding, from column `at` on: product_id, user_id, qty, amount_cents,
/// status, cancel_reason, expires_at, created_at.
fn order_record(
    reference: String,
    r: &tokio_postgres::Row,
    at: usize,
) -> Result<OrderRecord, PgError> {
    let status: String = r.get(at + 4);
    let reason: Option<String> = r.get(at + 5);
    let Some(state) = OrderState::from_parts(&status, reason.as_deref()) else {
        return Err(PgError::Rejected(format!(
            "order {reference} has status {status:?}"
        )));
    };
    let Some(product_id) = ProductId::new(r.get(at)) else {
        return Err(PgError::Rejected(format!(
            "order {reference} has a non-positive product id"
        )));
    };
    Ok(OrderRecord {
        reference,
        product_id,
        user_id: r.get(at + 1),
        qty: r.get(at + 2),
        amount_cents: r.get(at + 3),
        state,
        expires_at_ms: from_system_time(r.get(at + 6)),
        created_at_ms: from_system_time(r.get(at + 7)),
    })
}
