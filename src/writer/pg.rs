//! The writer's SQL: one transaction per batch, every statement idempotent and keyed on
//! `order_reference`, so replaying a batch (after a crash, a retry or a journal replay) can
//! never count anything twice.
//!
//! Per batch, in order:
//! 1. `INSERT … SELECT FROM UNNEST … ON CONFLICT (order_reference) DO NOTHING`: every order
//!    of the batch exists, as pending if it is new.
//! 2. One `UPDATE … FROM UNNEST` moves orders that are still `pending` in PostgreSQL to their
//!    final state, and in the same statement lowers `products.stock` by the units of those
//!    that became `paid` (`stock = stock - qty`, never read-modify-write). A row already
//!    final is not matched, so a repeat changes nothing.
//! 3. Webhook rows (`processed`, or `pending` for unknown references) and late payments.
//!
//! Fast path: a batch made only of new reservations (the common case under load) is written
//! with binary `COPY` instead of step 1, which PostgreSQL ingests faster than any INSERT. COPY
//! has no `ON CONFLICT`, so if one of the rows exists already (a replay raced a live message)
//! the whole transaction fails with a unique violation, and the caller writes the batch again
//! the idempotent way.

use crate::domain::{OrderRecord, OrderState, ProductId, ProductSnapshot};
use crate::time::{from_system_time, rfc3339, to_system_time};
use std::collections::HashMap;
use std::time::SystemTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

/// How a PostgreSQL failure should be handled.
#[derive(Debug)]
pub enum PgError {
    /// Connection lost, server shutting down, deadlock, out of resources: retrying helps.
    Transient(String),
    /// The data was refused (a constraint): retrying the same rows cannot help.
    Rejected(String),
    /// The COPY fast path met a row that exists already: write the batch with INSERT instead.
    Duplicate,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Transient(e) => write!(f, "{e}"),
            PgError::Rejected(e) => write!(f, "rejected: {e}"),
            PgError::Duplicate => f.write_str("duplicate order reference in COPY"),
        }
    }
}

fn classify(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) if db.code().code() == "23505" => PgError::Duplicate,
        Some(db) => {
            let code = db.code().code();
            // 08 connection, 40 transaction rollback (deadlock, serialization), 53 resources,
            // 57 operator intervention (shutdown), 58 system error.
            if ["08", "40", "53", "57", "58"]
                .iter()
                .any(|c| code.starts_with(c))
            {
                PgError::Transient(format!("{code}: {}", db.message()))
            } else {
                PgError::Rejected(format!("{code}: {}", db.message()))
            }
        }
        None => PgError::Transient(e.to_string()),
    }
}

/// One order change of a batch, with what a webhook adds to it.
pub struct OrderWrite<'a> {
    pub record: &'a OrderRecord,
    /// `(payload, refund_required)` when a webhook caused or repeated this change.
    pub webhook: Option<(&'a str, bool)>,
}

/// A webhook for a reference not known yet.
pub struct EarlyWrite<'a> {
    pub reference: &'a str,
    pub payload: &'a str,
}

struct Statements {
    insert_orders: Statement,
    transition: Statement,
    webhooks_processed: Statement,
    webhooks_early: Statement,
    late_payments: Statement,
}

pub struct Pg {
    client: Client,
    st: Statements,
}

const INSERT_ORDERS: &str = "
INSERT INTO orders (order_reference, product_id, user_id, qty, amount_cents, status, expires_at, created_at, updated_at)
SELECT r, p, u, q, a, 'pending', e, c, now()
FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int4[], $5::int8[], $6::timestamptz[], $7::timestamptz[])
     AS t(r, p, u, q, a, e, c)
ON CONFLICT (order_reference) DO NOTHING";

/// Below this many rows the INSERT is as fast and needs no fallback.
const COPY_MIN_ROWS: usize = 32;

const COPY_ORDERS: &str = "COPY orders (order_reference, product_id, user_id, qty, amount_cents, status, \
     expires_at, created_at, updated_at) FROM STDIN BINARY";

const TRANSITION: &str = "
WITH t AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(r, s, reason)
), moved AS (
    UPDATE orders o SET status = t.s, cancel_reason = t.reason, updated_at = now()
    FROM t
    WHERE o.order_reference = t.r AND o.status = 'pending'
    RETURNING o.product_id, o.qty, o.status
), sold AS (
    SELECT product_id, sum(qty) AS q FROM moved WHERE status = 'paid' GROUP BY product_id
)
UPDATE products p SET stock = p.stock - sold.q, updated_at = now()
FROM sold WHERE p.id = sold.product_id";

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

const LATE_PAYMENTS: &str = "
INSERT INTO late_payments (order_reference, amount_cents, payload)
SELECT r, a, p::json FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS t(r, a, p)
ON CONFLICT (order_reference) DO NOTHING";

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
            transition: client.prepare(TRANSITION).await.map_err(classify)?,
            webhooks_processed: client.prepare(WEBHOOKS_PROCESSED).await.map_err(classify)?,
            webhooks_early: client.prepare(WEBHOOKS_EARLY).await.map_err(classify)?,
            late_payments: client.prepare(LATE_PAYMENTS).await.map_err(classify)?,
        };
        Ok(Pg { client, st })
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
        early: &[EarlyWrite<'_>],
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
        for e in early {
            let v = pending_hooks.entry(e.reference).or_insert((e.payload, 0));
            v.0 = e.payload;
            v.1 += 1;
        }

        let copy = copy
            && refs.len() >= COPY_MIN_ROWS
            && t_refs.is_empty()
            && early.is_empty()
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
                &self.st.insert_orders,
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

    /// Reads a product, its pending orders and (for limited products) units per user, in one
    /// consistent snapshot.
    pub async fn load_product(
        &mut self,
        pid: ProductId,
    ) -> Result<Option<ProductSnapshot>, PgError> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(classify)?;
        let Some(row) = tx
            .query_opt(
                "SELECT name, price_cents, stock, max_per_order, per_user_limit, created_at, updated_at
                 FROM products WHERE id = $1",
                &[&pid.get()],
            )
            .await
            .map_err(classify)?
        else {
            tx.commit().await.map_err(classify)?;
            return Ok(None);
        };
        let per_user_limit: Option<i32> = row.get(4);
        let pending = tx
            .query(
                "SELECT order_reference, user_id, qty, amount_cents, expires_at, created_at
                 FROM orders WHERE product_id = $1 AND status = 'pending'",
                &[&pid.get()],
            )
            .await
            .map_err(classify)?
            .into_iter()
            .map(|r| OrderRecord {
                reference: r.get(0),
                product_id: pid,
                user_id: r.get(1),
                qty: r.get(2),
                amount_cents: r.get(3),
                state: OrderState::Pending,
                expires_at_ms: from_system_time(r.get(4)),
                created_at_ms: from_system_time(r.get(5)),
            })
            .collect();
        let user_units = if per_user_limit.is_some() {
            tx.query(
                "SELECT user_id, sum(qty)::int8 FROM orders
                 WHERE product_id = $1 AND user_id IS NOT NULL AND status IN ('pending', 'paid')
                 GROUP BY user_id",
                &[&pid.get()],
            )
            .await
            .map_err(classify)?
            .into_iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect()
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(classify)?;
        Ok(Some(ProductSnapshot {
            id: pid,
            name: row.get(0),
            price_cents: row.get(1),
            pg_stock: row.get(2),
            max_per_order: row.get(3),
            per_user_limit,
            created_at: rfc3339(row.get::<_, SystemTime>(5)),
            updated_at: rfc3339(row.get::<_, SystemTime>(6)),
            pending,
            user_units,
        }))
    }

    pub async fn find_order(&self, reference: &str) -> Result<Option<OrderRecord>, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT product_id, user_id, qty, amount_cents, status, cancel_reason, expires_at, created_at
                 FROM orders WHERE order_reference = $1",
                &[&reference],
            )
            .await
            .map_err(classify)?;
        let Some(r) = row else { return Ok(None) };
        let status: String = r.get(4);
        let reason: Option<String> = r.get(5);
        let Some(state) = OrderState::from_parts(&status, reason.as_deref()) else {
            return Err(PgError::Rejected(format!(
                "order {reference} has status {status:?}"
            )));
        };
        let Some(product_id) = ProductId::new(r.get(0)) else {
            return Err(PgError::Rejected(format!(
                "order {reference} has a non-positive product id"
            )));
        };
        Ok(Some(OrderRecord {
            reference: reference.to_string(),
            product_id,
            user_id: r.get(1),
            qty: r.get(2),
            amount_cents: r.get(3),
            state,
            expires_at_ms: from_system_time(r.get(6)),
            created_at_ms: from_system_time(r.get(7)),
        }))
    }

    /// Webhooks recorded as pending whose order now exists: (reference, success, payload).
    pub async fn applicable_webhooks(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, bool, String)>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT w.order_reference, w.payload->>'status', w.payload::text
                 FROM webhooks w JOIN orders o ON o.order_reference = w.order_reference
                 WHERE w.status = 'pending' LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let status: Option<String> = r.get(1);
                (r.get(0), status.as_deref() == Some("success"), r.get(2))
            })
            .collect())
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
