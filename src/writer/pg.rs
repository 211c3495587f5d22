//! The writer's SQL: one transaction per batch, every statement idempotent and keyed on
//! `order_reference`, so replaying a batch (after a crash, a retry or a journal replay) can
//! never count anything twice.
//!
//! Per batch, in order:
//! 1. `INSERT … SELECT FROM UNNEST … ON CONFLICT (order_reference) DO NOTHING`: every order
//!    of the batch exists, as pending if it is new.
//! 2. One `UPDATE … FROM UNNEST` moves orders that are still `pending` in PostgreSQL to their
//!    final state, and in the same statement lowers `products.stock` by the units of those
//!    that became `paid` (`stock = stock - qty`, never read-modify-write), keeping the
//!    product's `paid_units`, `revenue_cents` and `cancelled_units` in step. A row already
//!    final is not matched, so a repeat changes nothing.
//! 3. Webhook rows (`processed`, or `pending` for unknown references), restocks (once per op
//!    id, recorded in `stock_ops`) and late payments.
//!
//! The outbox: the statements that change an order's state (2., a late payment, a refund)
//! insert its event into `order_events` in the same statement, from the rows they actually
//! changed, with the order's next `event_seq`: a repeat changes no row and records no event,
//! and no event exists for a change that did not commit.
//!
//! Fast path: a batch made only of new reservations (the common case under load) is written
//! with binary `COPY` instead of step 1, which PostgreSQL ingests faster than any INSERT. COPY
//! has no `ON CONFLICT`, so if one of the rows exists already (a replay raced a live message)
//! the whole transaction fails with a unique violation, and the caller writes the batch again
//! the idempotent way.
//!
//! Webhooks recorded for unknown references ("unmatched") are found through indexes only:
//! by the references of a batch just written (`UNMATCHED_FOR`), by a walk over the pending
//! ones in id order with an index lookup of their orders (`UNMATCHED_AFTER`,
//! `EXISTING_ORDERS`), and deleted by age (`EXPIRE_UNMATCHED`).

use crate::db::{PgError, classify, late_payment};
use crate::domain::{AdminChange, OrderRecord, ProductAttrs, ProductId};
use crate::time::{from_system_time, rfc3339, to_system_time};
use crate::writer::msg::AdminOp;
use std::collections::HashMap;
use std::time::SystemTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

/// One order change of a batch, with what a webhook adds to it.
pub struct OrderWrite<'a> {
    pub record: &'a OrderRecord,
    /// `(payload, refund_required)` when a webhook caused or repeated this change.
    pub webhook: Option<(&'a str, bool)>,
}

/// A row of a batch besides order changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideWrite {
    /// A webhook for a reference not known yet: stored as pending.
    EarlyWebhook { reference: String, payload: String },
    /// A restock: `products.stock += delta`, once per `op_id`.
    Restock {
        product: ProductId,
        op_id: String,
        delta: i64,
    },
}

impl std::fmt::Display for SideWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SideWrite::EarlyWebhook { reference, .. } => write!(f, "webhook for {reference}"),
            SideWrite::Restock {
                product,
                op_id,
                delta,
            } => write!(f, "restock {op_id} of product {product} by {delta}"),
        }
    }
}

struct Statements {
    insert_orders: Statement,
    insert_orders_with_events: Statement,
    transition: Statement,
    webhooks_processed: Statement,
    webhooks_early: Statement,
    restock: Statement,
    late_payments: Statement,
    unmatched_for: Statement,
    unmatched_after: Statement,
    existing_orders: Statement,
    expire_unmatched: Statement,
    changed_products: Statement,
}

/// A webhook recorded for a reference no order had yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmatched {
    pub id: i64,
    pub reference: String,
    /// `status` was `success` (else `failure`).
    pub success: bool,
    pub payload: String,
}

pub struct Pg {
    client: Client,
    st: Statements,
    /// An enabled endpoint subscribes to `order.reserved`: inserted orders record that event
    /// (and the COPY path, which cannot, is not taken). Refreshed by the housekeeping every
    /// second and at connection, so a new subscription holds from within a second.
    reserved_events: bool,
}

const INSERT_ORDERS: &str = "
INSERT INTO orders (order_reference, product_id, user_id, qty, amount_cents, status, expires_at, created_at, updated_at)
SELECT r, p, u, q, a, 'pending', e, c, now()
FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::int8[], $6::timestamptz[], $7::timestamptz[])
     AS t(r, p, u, q, a, e, c)
ON CONFLICT (order_reference) DO NOTHING";

/// The same, recording an `order.reserved` event for each order it inserted (while an
/// endpoint subscribes to them: they are as many as reservations).
const INSERT_ORDERS_WITH_EVENTS: &str = "
WITH inserted AS (
    INSERT INTO orders (order_reference, product_id, user_id, qty, amount_cents, status, expires_at, created_at, updated_at)
    SELECT r, p, u, q, a, 'pending', e, c, now()
    FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::int8[], $6::timestamptz[], $7::timestamptz[])
         AS t(r, p, u, q, a, e, c)
    ON CONFLICT (order_reference) DO NOTHING
    RETURNING order_reference, order_event_data(orders, 1) AS data
)
INSERT INTO order_events (type, order_reference, sequence, data)
SELECT 'order.reserved', order_reference, 1, data FROM inserted";

/// Whether an enabled endpoint subscribes to `order.reserved`.
const RESERVED_SUBSCRIBED: &str = "SELECT EXISTS (SELECT 1 FROM event_endpoints WHERE enabled AND 'order.reserved' = ANY (events))";

/// Below this many rows the INSERT is as fast and needs no fallback.
const COPY_MIN_ROWS: usize = 32;

const COPY_ORDERS: &str = "COPY orders (order_reference, product_id, user_id, qty, amount_cents, status, \
     expires_at, created_at, updated_at) FROM STDIN BINARY";

const TRANSITION: &str = "
WITH t AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(r, s, reason)
), moved AS (
    UPDATE orders o SET status = t.s, cancel_reason = t.reason, updated_at = now(),
                        event_seq = o.event_seq + 1
    FROM t
    WHERE o.order_reference = t.r AND o.status = 'pending'
    RETURNING o.product_id, o.qty, o.amount_cents, o.status, o.order_reference, o.event_seq,
              order_event_data(o, o.event_seq) AS data
), events AS (
    INSERT INTO order_events (type, order_reference, sequence, data)
    SELECT CASE WHEN m.status = 'paid' THEN 'order.paid' ELSE 'order.cancelled' END,
           m.order_reference, m.event_seq, m.data
    FROM moved m
), settled AS (
    SELECT product_id,
           COALESCE(sum(qty) FILTER (WHERE status = 'paid'), 0) AS paid,
           COALESCE(sum(amount_cents) FILTER (WHERE status = 'paid'), 0) AS revenue,
           COALESCE(sum(qty) FILTER (WHERE status = 'cancelled'), 0) AS cancelled
    FROM moved GROUP BY product_id
)
UPDATE products p
SET stock = p.stock - s.paid, paid_units = p.paid_units + s.paid,
    revenue_cents = p.revenue_cents + s.revenue, cancelled_units = p.cancelled_units + s.cancelled,
    updated_at = CASE WHEN s.paid > 0 THEN now() ELSE p.updated_at END
FROM settled s WHERE p.id = s.product_id";

/// A product's sold attributes (`product_attrs` reads them).
const PRODUCT_ATTRS: &str = "
SELECT id, name, price_cents, max_per_order, per_user_limit, sale_starts_at, sale_ends_at,
       attrs_changed_at, updated_at, attrs_rev
FROM products";

/// After `PRODUCT_ATTRS`: the products whose sold attributes changed after `$1` (index
/// `products_by_attrs_changed`).
const CHANGED_PRODUCTS: &str = " WHERE attrs_changed_at > $1 ORDER BY attrs_changed_at";

/// A restock, once per op id: the INSERT finds a conflict on a replay and moves nothing.
const RESTOCK: &str = "
WITH op AS (
    INSERT INTO stock_ops (op_id, product_id, delta) VALUES ($1, $2, $3)
    ON CONFLICT (op_id) DO NOTHING RETURNING product_id, delta
)
UPDATE products p SET stock = p.stock + op.delta, updated_at = now()
FROM op WHERE p.id = op.product_id";

const WEBHOOKS_PROCESSED: &str = "
INSERT INTO webhooks (order_reference, payload, status, attempts)
SELECT r, p::json, 'processed', n FROM UNNEST($1::text[], $2::text[], $3::int4[]) AS t(r, p, n)
ON CONFLICT (order_reference) DO UPDATE
SET payload = EXCLUDED.payload, status = 'processed', attempts = webhooks.attempts + EXCLUDED.attempts,
    updated_at = now()";

const WEBHOOKS_EARLY: &str = "
INSERT INTO webhooks (order_reference, payload, status, attempts)
SELECT r, p::json, 'pending', n FROM UNNEST($1::text[], $2::text[], $3::int4[]) AS t(r, p, n)
ON CONFLICT (order_reference) DO UPDATE
SET payload = CASE WHEN webhooks.status = 'pending' THEN EXCLUDED.payload ELSE webhooks.payload END,
    attempts = webhooks.attempts + EXCLUDED.attempts, updated_at = now()";

/// Uses the partial index `webhooks_pending` (order_reference).
const UNMATCHED_FOR: &str = "
SELECT id, order_reference, payload->>'status', payload::text FROM webhooks
WHERE status = 'pending' AND order_reference = ANY($1)";

/// Uses the partial index `webhooks_pending_by_id`.
const UNMATCHED_AFTER: &str = "
SELECT id, order_reference, payload->>'status', payload::text FROM webhooks
WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2";

/// Index lookups in the unique index of `order_reference`.
const EXISTING_ORDERS: &str = "SELECT order_reference FROM orders WHERE order_reference = ANY($1)";

/// Uses the partial index `webhooks_pending_by_age`.
const EXPIRE_UNMATCHED: &str = "
DELETE FROM webhooks WHERE id IN (
    SELECT id FROM webhooks
    WHERE status = 'pending' AND created_at < now() - make_interval(days => $1)
    ORDER BY created_at LIMIT $2)";

const LATE_PAYMENTS: &str = "
WITH recorded AS (
    INSERT INTO late_payments (order_reference, amount_cents, payload)
    SELECT r, a, p::json FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS t(r, a, p)
    ON CONFLICT (order_reference) DO NOTHING
    RETURNING order_reference
), bumped AS (
    UPDATE orders o SET event_seq = o.event_seq + 1
    FROM recorded WHERE o.order_reference = recorded.order_reference
    RETURNING o.order_reference, o.event_seq, order_event_data(o, o.event_seq) AS data
)
INSERT INTO order_events (type, order_reference, sequence, data)
SELECT 'order.late_payment', b.order_reference, b.event_seq, b.data FROM bumped b";

impl Pg {
    pub async fn connect(url: &str) -> Result<Pg, PgError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(classify)?;
        tokio::spawn(async move {
            // Ends when the connection drops; the next statement then fails and we reconnect.
            let _ = conn.await;
        });
        let st = Statements {
            insert_orders: client.prepare(INSERT_ORDERS).await.map_err(classify)?,
            insert_orders_with_events: client
                .prepare(INSERT_ORDERS_WITH_EVENTS)
                .await
                .map_err(classify)?,
            transition: client.prepare(TRANSITION).await.map_err(classify)?,
            webhooks_processed: client.prepare(WEBHOOKS_PROCESSED).await.map_err(classify)?,
            webhooks_early: client.prepare(WEBHOOKS_EARLY).await.map_err(classify)?,
            restock: client.prepare(RESTOCK).await.map_err(classify)?,
            late_payments: client.prepare(LATE_PAYMENTS).await.map_err(classify)?,
            unmatched_for: client.prepare(UNMATCHED_FOR).await.map_err(classify)?,
            unmatched_after: client.prepare(UNMATCHED_AFTER).await.map_err(classify)?,
            existing_orders: client.prepare(EXISTING_ORDERS).await.map_err(classify)?,
            expire_unmatched: client.prepare(EXPIRE_UNMATCHED).await.map_err(classify)?,
            changed_products: client
                .prepare(&format!("{PRODUCT_ATTRS}{CHANGED_PRODUCTS}"))
                .await
                .map_err(classify)?,
        };
        let mut pg = Pg {
            client,
            st,
            reserved_events: false,
        };
        pg.refresh_subscriptions().await?;
        Ok(pg)
    }

    /// Reads whether an enabled endpoint subscribes to `order.reserved`.
    pub async fn refresh_subscriptions(&mut self) -> Result<(), PgError> {
        self.reserved_events = self
            .client
            .query_one(RESERVED_SUBSCRIBED, &[])
            .await
            .map_err(classify)?
            .get(0);
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub async fn ping(&self) -> Result<(), PgError> {
        self.client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// Writes one batch in one transaction. `copy` allows the COPY fast path, which is taken
    /// when the batch holds only new reservations and enough of them to be worth it.
    pub async fn write(
        &mut self,
        orders: &[OrderWrite<'_>],
        side: &[&SideWrite],
        copy: bool,
    ) -> Result<(), PgError> {
        // The latest record per reference (a batch may hold a reservation and its payment).
        let mut latest: HashMap<&str, &OrderRecord> = HashMap::with_capacity(orders.len());
        for o in orders {
            let r = o.record;
            latest
                .entry(r.reference.as_str())
                .and_modify(|prev| {
                    if r.state.is_final() {
                        *prev = r;
                    }
                })
                .or_insert(r);
        }
        let n = latest.len();
        let (mut refs, mut pids, mut users, mut qtys, mut amounts, mut exps, mut cts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut t_refs, mut t_states, mut t_reasons) = (Vec::new(), Vec::new(), Vec::new());
        for r in latest.values() {
            refs.push(r.reference.as_str());
            pids.push(r.product_id.get());
            users.push(r.user_id.as_deref());
            qtys.push(r.qty);
            amounts.push(r.amount_cents);
            exps.push(to_system_time(r.expires_at_ms));
            cts.push(to_system_time(r.created_at_ms));
            if r.state.is_final() {
                t_refs.push(r.reference.as_str());
                t_states.push(r.state.status());
                t_reasons.push(r.state.cancel_reason());
            }
        }

        // Webhook rows, merged per reference (one statement may not touch a row twice).
        let mut processed: HashMap<&str, (&str, i32)> = HashMap::new();
        let mut late: HashMap<&str, (i64, &str)> = HashMap::new();
        for o in orders {
            if let Some((payload, refund)) = o.webhook {
                let e = processed
                    .entry(o.record.reference.as_str())
                    .or_insert((payload, 0));
                e.0 = payload;
                e.1 += 1;
                if refund {
                    late.insert(
                        o.record.reference.as_str(),
                        (o.record.amount_cents, payload),
                    );
                }
            }
        }
        let mut pending_hooks: HashMap<&str, (&str, i32)> = HashMap::new();
        let mut restocks = Vec::new();
        for w in side {
            match w {
                SideWrite::EarlyWebhook { reference, payload } => {
                    let v = pending_hooks.entry(reference).or_insert((payload, 0));
                    v.0 = payload;
                    v.1 += 1;
                }
                SideWrite::Restock {
                    product,
                    op_id,
                    delta,
                } => restocks.push((op_id, product.get(), *delta)),
            }
        }

        let copy = copy
            && !self.reserved_events
            && refs.len() >= COPY_MIN_ROWS
            && t_refs.is_empty()
            && side.is_empty()
            && orders.iter().all(|o| o.webhook.is_none());
        let tx = self.client.transaction().await.map_err(classify)?;
        if copy {
            let sink = tx.copy_in(COPY_ORDERS).await.map_err(classify)?;
            let writer = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::TEXT,
                    Type::INT8,
                    Type::TEXT,
                    Type::INT4,
                    Type::INT8,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                ],
            );
            let mut writer = std::pin::pin!(writer);
            let now = SystemTime::now();
            for i in 0..refs.len() {
                writer
                    .as_mut()
                    .write(&[
                        &refs[i],
                        &pids[i],
                        &users[i],
                        &qtys[i],
                        &amounts[i],
                        &"pending",
                        &exps[i],
                        &cts[i],
                        &now,
                    ])
                    .await
                    .map_err(classify)?;
            }
            writer.as_mut().finish().await.map_err(classify)?;
        } else if !refs.is_empty() {
            tx.execute(
                if self.reserved_events {
                    &self.st.insert_orders_with_events
                } else {
                    &self.st.insert_orders
                },
                &[&refs, &pids, &users, &qtys, &amounts, &exps, &cts],
            )
            .await
            .map_err(classify)?;
        }
        if !t_refs.is_empty() {
            tx.execute(&self.st.transition, &[&t_refs, &t_states, &t_reasons])
                .await
                .map_err(classify)?;
        }
        if !pending_hooks.is_empty() {
            let (r, p, n) = split3(&pending_hooks);
            tx.execute(&self.st.webhooks_early, &[&r, &p, &n])
                .await
                .map_err(classify)?;
        }
        if !processed.is_empty() {
            let (r, p, n) = split3(&processed);
            tx.execute(&self.st.webhooks_processed, &[&r, &p, &n])
                .await
                .map_err(classify)?;
        }
        for (op_id, product, delta) in &restocks {
            tx.execute(&self.st.restock, &[op_id, product, delta])
                .await
                .map_err(classify)?;
        }
        if !late.is_empty() {
            let r: Vec<&str> = late.keys().copied().collect();
            let a: Vec<i64> = late.values().map(|v| v.0).collect();
            let p: Vec<&str> = late.values().map(|v| v.1).collect();
            tx.execute(&self.st.late_payments, &[&r, &a, &p])
                .await
                .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    /// The unmatched webhooks recorded for any of `references` (orders just written).
    pub async fn unmatched_for(&self, references: &[&str]) -> Result<Vec<Unmatched>, PgError> {
        let rows = self
            .client
            .query(&self.st.unmatched_for, &[&references])
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(unmatched).collect())
    }

    /// The next `limit` unmatched webhooks after id `after`, in id order, and which of them
    /// have an order now (one written by another tool, say).
    pub async fn unmatched_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<Unmatched>, Vec<Unmatched>), PgError> {
        let rows = self
            .client
            .query(&self.st.unmatched_after, &[&after, &limit])
            .await
            .map_err(classify)?;
        let seen: Vec<Unmatched> = rows.iter().map(unmatched).collect();
        if seen.is_empty() {
            return Ok((seen, Vec::new()));
        }
        let refs: Vec<&str> = seen.iter().map(|u| u.reference.as_str()).collect();
        let existing: std::collections::HashSet<String> = self
            .client
            .query(&self.st.existing_orders, &[&refs])
            .await
            .map_err(classify)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let found = seen
            .iter()
            .filter(|u| existing.contains(&u.reference))
            .cloned()
            .collect();
        Ok((seen, found))
    }

    /// Applies an admin change; each is its own transaction.
    pub async fn admin(&mut self, op: AdminOp) -> Result<AdminChange, PgError> {
        let tx = self.client.transaction().await.map_err(classify)?;
        let change = match op {
            AdminOp::Create(p) => {
                let row = tx
                    .query_one(
                        "INSERT INTO products (name, price_cents, stock, max_per_order, per_user_limit,
                                               sale_starts_at, sale_ends_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         RETURNING id",
                        &[
                            &p.name,
                            &p.price_cents,
                            &p.stock,
                            &p.max_per_order,
                            &p.per_user_limit,
                            &p.sale_starts_at_ms.map(to_system_time),
                            &p.sale_ends_at_ms.map(to_system_time),
                        ],
                    )
                    .await
                    .map_err(classify)?;
                attrs_of(&tx, row.get(0)).await?
            }
            AdminOp::Patch(pid, patch) => {
                let Some(row) = tx
                    .query_opt(
                        "SELECT sale_starts_at, sale_ends_at FROM products WHERE id = $1 FOR UPDATE",
                        &[&pid.get()],
                    )
                    .await
                    .map_err(classify)?
                else {
                    return Ok(AdminChange::NotFound);
                };
                let starts = patch
                    .sale_starts_at_ms
                    .unwrap_or_else(|| row.get::<_, Option<SystemTime>>(0).map(from_system_time));
                let ends = patch
                    .sale_ends_at_ms
                    .unwrap_or_else(|| row.get::<_, Option<SystemTime>>(1).map(from_system_time));
                if let (Some(s), Some(e)) = (starts, ends)
                    && s >= e
                {
                    return Ok(AdminChange::InvalidWindow);
                }
                tx.execute(
                    "UPDATE products SET
                         name = COALESCE($2, name),
                         price_cents = COALESCE($3, price_cents),
                         max_per_order = COALESCE($4, max_per_order),
                         per_user_limit = CASE WHEN $5 THEN $6 ELSE per_user_limit END,
                         sale_starts_at = $7, sale_ends_at = $8
                     WHERE id = $1",
                    &[
                        &pid.get(),
                        &patch.name,
                        &patch.price_cents,
                        &patch.max_per_order,
                        &patch.per_user_limit.is_some(),
                        &patch.per_user_limit.flatten(),
                        &starts.map(to_system_time),
                        &ends.map(to_system_time),
                    ],
                )
                .await
                .map_err(classify)?;
                attrs_of(&tx, pid.get()).await?
            }
            AdminOp::Close(pid, at_ms) => {
                // The end is Redis's time (close.lua), the clock reservations are decided by.
                // An upcoming sale closed before it opened ends then and never opens.
                tx.execute(
                    "UPDATE products SET
                             sale_starts_at = CASE WHEN sale_starts_at >= $2 THEN NULL
                                                   ELSE sale_starts_at END,
                             sale_ends_at = $2
                         WHERE id = $1 AND (sale_ends_at IS NULL OR sale_ends_at > $2)",
                    &[&pid.get(), &to_system_time(at_ms)],
                )
                .await
                .map_err(classify)?;
                attrs_of(&tx, pid.get()).await?
            }
            AdminOp::Refund(reference) => {
                // The refund and its event in one statement: a repeat refunds nothing and
                // records nothing.
                tx.execute(
                    "WITH refunded AS (
                         UPDATE late_payments SET refunded_at = now()
                         WHERE order_reference = $1 AND refunded_at IS NULL
                         RETURNING order_reference, refunded_at
                     ), bumped AS (
                         UPDATE orders o SET event_seq = o.event_seq + 1
                         FROM refunded WHERE o.order_reference = refunded.order_reference
                         RETURNING o.order_reference, o.event_seq,
                                   order_event_data(o, o.event_seq) || jsonb_build_object(
                                       'refunded_at',
                                       to_char(refunded.refunded_at AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) AS data
                     )
                     INSERT INTO order_events (type, order_reference, sequence, data)
                     SELECT 'late_payment.refunded', b.order_reference, b.event_seq, b.data
                     FROM bumped b",
                    &[&reference],
                )
                .await
                .map_err(classify)?;
                match tx
                    .query_opt(
                        "SELECT order_reference, amount_cents, created_at, refunded_at
                         FROM late_payments WHERE order_reference = $1",
                        &[&reference],
                    )
                    .await
                    .map_err(classify)?
                {
                    Some(r) => AdminChange::LatePayment(late_payment(&r)),
                    None => AdminChange::NotFound,
                }
            }
            AdminOp::CreateEndpoint(e) => {
                // 32 bytes from two random UUIDs (PostgreSQL's strong random source).
                let r = tx
                    .query_one(
                        "INSERT INTO event_endpoints (url, events, description, secret)
                         VALUES ($1, $2, $3, 'whsec_' || encode(uuid_send(gen_random_uuid())
                                 || uuid_send(gen_random_uuid()), 'base64'))
                         RETURNING id, url, events, description, enabled, secret, created_at",
                        &[&e.url, &e.events, &e.description],
                    )
                    .await
                    .map_err(classify)?;
                AdminChange::Endpoint(endpoint(&r))
            }
            AdminOp::PatchEndpoint(id, p) => {
                let r = tx
                    .query_opt(
                        "UPDATE event_endpoints SET url = COALESCE($2, url),
                             events = COALESCE($3, events),
                             description = COALESCE($4, description),
                             enabled = COALESCE($5, enabled)
                         WHERE id = $1
                         RETURNING id, url, events, description, enabled, NULL::text, created_at",
                        &[&id, &p.url, &p.events, &p.description, &p.enabled],
                    )
                    .await
                    .map_err(classify)?;
                r.map_or(AdminChange::NotFound, |r| {
                    AdminChange::Endpoint(endpoint(&r))
                })
            }
            AdminOp::RotateSecret(id) => {
                let r = tx
                    .query_opt(
                        "UPDATE event_endpoints SET previous_secret = secret,
                             previous_until = now() + interval '24 hours',
                             secret = 'whsec_' || encode(uuid_send(gen_random_uuid())
                                      || uuid_send(gen_random_uuid()), 'base64')
                         WHERE id = $1
                         RETURNING id, url, events, description, enabled, secret, created_at",
                        &[&id],
                    )
                    .await
                    .map_err(classify)?;
                r.map_or(AdminChange::NotFound, |r| {
                    AdminChange::Endpoint(endpoint(&r))
                })
            }
            AdminOp::Redeliver(endpoint_id, event_id) => {
                let n = tx
                    .execute(
                        "UPDATE event_deliveries d SET status = 'pending', attempts = 0,
                             next_attempt_at = now(), last_error = NULL, delivered_at = NULL
                         FROM order_events ev
                         WHERE d.endpoint_id = $1 AND ev.event_id = $2 AND d.event_row = ev.id",
                        &[&endpoint_id, &event_id],
                    )
                    .await
                    .map_err(classify)?;
                if n == 0 {
                    AdminChange::NotFound
                } else {
                    AdminChange::Redelivered
                }
            }
            AdminOp::DeleteEndpoint(id) => {
                let n = tx
                    .execute("DELETE FROM event_endpoints WHERE id = $1", &[&id])
                    .await
                    .map_err(classify)?;
                if n == 0 {
                    AdminChange::NotFound
                } else {
                    AdminChange::Deleted
                }
            }
        };
        tx.commit().await.map_err(classify)?;
        Ok(change)
    }

    /// Products whose sold attributes changed after `since`.
    pub async fn changed_products(&self, since: SystemTime) -> Result<Vec<ProductAttrs>, PgError> {
        let rows = self
            .client
            .query(&self.st.changed_products, &[&since])
            .await
            .map_err(classify)?;
        Ok(rows.iter().filter_map(product_attrs).collect())
    }

    /// Deletes up to `limit` unmatched webhooks older than `days`; returns how many.
    pub async fn expire_unmatched(&self, days: i32, limit: i64) -> Result<u64, PgError> {
        self.client
            .execute(&self.st.expire_unmatched, &[&days, &limit])
            .await
            .map_err(classify)
    }
}

/// A product's sold attributes, read in `tx`.
/// An endpoint from `id, url, events, description, enabled, secret (or NULL), created_at`.
fn endpoint(r: &tokio_postgres::Row) -> crate::domain::EventEndpoint {
    crate::domain::EventEndpoint {
        id: r.get(0),
        url: r.get(1),
        events: r.get(2),
        description: r.get(3),
        enabled: r.get(4),
        secret: r.get(5),
        created_at_ms: from_system_time(r.get(6)),
    }
}

async fn attrs_of(tx: &tokio_postgres::Transaction<'_>, id: i64) -> Result<AdminChange, PgError> {
    let row = tx
        .query_opt(&format!("{PRODUCT_ATTRS} WHERE id = $1"), &[&id])
        .await
        .map_err(classify)?;
    Ok(row
        .as_ref()
        .and_then(product_attrs)
        .map_or(AdminChange::NotFound, AdminChange::Product))
}

fn product_attrs(r: &tokio_postgres::Row) -> Option<ProductAttrs> {
    Some(ProductAttrs {
        id: ProductId::new(r.get(0))?,
        name: r.get(1),
        price_cents: r.get(2),
        max_per_order: r.get(3),
        per_user_limit: r.get(4),
        sale_starts_at_ms: r.get::<_, Option<SystemTime>>(5).map(from_system_time),
        sale_ends_at_ms: r.get::<_, Option<SystemTime>>(6).map(from_system_time),
        rev: r.get(9),
        changed_at_ms: from_system_time(r.get(7)),
        updated_at: rfc3339(r.get(8)),
    })
}

fn unmatched(r: &tokio_postgres::Row) -> Unmatched {
    let status: Option<String> = r.get(2);
    Unmatched {
        id: r.get(0),
        reference: r.get(1),
        success: status.as_deref() == Some("success"),
        payload: r.get(3),
    }
}

fn split3<'a>(m: &HashMap<&'a str, (&'a str, i32)>) -> (Vec<&'a str>, Vec<&'a str>, Vec<i32>) {
    let mut r = Vec::with_capacity(m.len());
    let mut p = Vec::with_capacity(m.len());
    let mut n = Vec::with_capacity(m.len());
    for (k, (payload, count)) in m {
        r.push(*k);
        p.push(*payload);
        n.push(*count);
    }
    (r, p, n)
}
