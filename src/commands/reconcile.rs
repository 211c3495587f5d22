//! `flashsale reconcile`: checks the conservation law for every product,
//! `Redis reservable stock + units of pending orders = PostgreSQL products.stock`,
//! and exits 1 when any product drifts. It can run while the sale goes on: what Redis has
//! done and PostgreSQL not yet (the journal) is counted, so neither buyers reserving nor a
//! restock in progress shows as a drift.
//!
//! For each product it reads Redis in one atomic step (`audit.lua`: stock, journal, and the
//! quantities the journal names), then PostgreSQL (stock, pending units, and which journaled
//! orders and restocks it has), then Redis again; the reading counts only if Redis did not
//! change in between, so that PostgreSQL was read while the journal described exactly what
//! it may lack. Then, of the journal:
//! - a reservation PostgreSQL has no row for holds units Redis took: + its quantity;
//! - an expiry or failed payment whose row PostgreSQL does not show cancelled returned units
//!   Redis counts already: − its quantity (a payment changes nothing until it lands, since
//!   PostgreSQL still counts the order as pending and its units as stock);
//! - a restock PostgreSQL has not applied: − its delta.
//!
//! A product whose reading keeps changing (a sale at full speed) is reported as busy, and the
//! command exits 3.

use crate::config::Config;
use crate::domain::{OrderState, ProductId};
use crate::redis::journal::{JournalEntry, parse_journal_member};
use crate::redis::keys::Keys;
use crate::redis::scripts::admin::{Audit, audit_call, decode_audit};
use crate::writer::redis::WriterRedis;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;

/// Readings tried per product before it is reported as busy.
const ATTEMPTS: usize = 200;

/// One product's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product: ProductId,
    pub pg_stock: i64,
    /// `None` when the product is not loaded into Redis (nothing to compare yet).
    pub redis_stock: Option<i64>,
    pub pending_units: i64,
    /// Journal members: changes Redis made that PostgreSQL may not have yet.
    pub journal: usize,
    /// Units the journal accounts for (reserved + restocked − released, not yet in
    /// PostgreSQL).
    pub in_flight: i64,
    /// `None` when no stable reading was had (the product kept changing).
    pub drift: Option<i64>,
    pub busy: bool,
}

/// What PostgreSQL says of one product and of the journal's entries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PgView {
    pub stock: i64,
    pub pending_units: i64,
    /// The journaled references PostgreSQL has a row for, with the row's state.
    pub rows: HashMap<String, OrderState>,
    /// The journaled restock op ids PostgreSQL has applied.
    pub applied: HashSet<String>,
}

/// The units the journal accounts for, given what PostgreSQL has: positive when Redis holds
/// fewer reservable units than PostgreSQL's counts alone imply.
pub fn in_flight(audit: &Audit, pg: &PgView) -> i64 {
    let mut units = 0;
    let qty = |r: &str| audit.qty.get(r).copied().flatten().unwrap_or(0);
    for m in &audit.members {
        match parse_journal_member(m) {
            Some(JournalEntry::Orders {
                references,
                state: OrderState::Pending,
            }) => {
                for r in references {
                    if !pg.rows.contains_key(r) {
                        units += qty(r);
                    }
                }
            }
            Some(JournalEntry::Orders {
                references,
                state: OrderState::Cancelled(_),
            }) => {
                for r in references {
                    if !matches!(pg.rows.get(r), Some(OrderState::Cancelled(_))) {
                        units -= qty(r);
                    }
                }
            }
            Some(JournalEntry::Restock { op_id, delta }) => {
                if !pg.applied.contains(op_id) {
                    units -= delta;
                }
            }
            Some(JournalEntry::Orders { .. }) | None => {}
        }
    }
    units
}

pub async fn lines(cfg: &Config, pg: &Client) -> anyhow::Result<Vec<Line>> {
    let ids: Vec<i64> = pg
        .query("SELECT id FROM products ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let keys = Keys::new(&cfg.redis_prefix);
    let mut redis = WriterRedis::new(cfg);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(pid) = ProductId::new(id) else {
            continue;
        };
        out.push(line(pg, &mut redis, &keys, pid).await?);
    }
    Ok(out)
}

async fn audit(redis: &mut WriterRedis, keys: &Keys, pid: ProductId) -> anyhow::Result<Audit> {
    let v = redis
        .eval(&audit_call(keys, pid))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read Redis at REDIS_URL: {e}"))?;
    Ok(decode_audit(v)?)
}

/// PostgreSQL's side of a line, read in one snapshot: read statement by statement, a batch
/// the writer commits between the pending units and the journaled rows is counted by neither
/// (its rows exist, so the journal does not count them; its units were not pending yet) and
/// shows as a drift that is not there (seen in the operator test during a sale).
async fn pg_view(pg: &Client, pid: ProductId, audit: &Audit) -> anyhow::Result<PgView> {
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let view = pg_view_in(pg, pid, audit).await;
    pg.batch_execute(if view.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await?;
    view
}

async fn pg_view_in(pg: &Client, pid: ProductId, audit: &Audit) -> anyhow::Result<PgView> {
    let refs: Vec<&str> = audit.qty.keys().map(String::as_str).collect();
    let ops: Vec<&str> = audit
        .members
        .iter()
        .filter_map(|m| match parse_journal_member(m) {
            Some(JournalEntry::Restock { op_id, .. }) => Some(op_id),
            _ => None,
        })
        .collect();
    let row = pg
        .query_one(
            "SELECT p.stock,
                    COALESCE((SELECT sum(qty) FROM orders o
                              WHERE o.product_id = p.id AND o.status = 'pending'), 0)::int8
             FROM products p WHERE p.id = $1",
            &[&pid.get()],
        )
        .await?;
    let mut rows = HashMap::new();
    if !refs.is_empty() {
        for r in pg
            .query(
                "SELECT order_reference, status, cancel_reason FROM orders
                 WHERE order_reference = ANY($1)",
                &[&refs],
            )
            .await?
        {
            let status: String = r.get(1);
            let reason: Option<String> = r.get(2);
            if let Some(s) = OrderState::from_parts(&status, reason.as_deref()) {
                rows.insert(r.get(0), s);
            }
        }
    }
    let mut applied = HashSet::new();
    if !ops.is_empty() {
        for r in pg
            .query("SELECT op_id FROM stock_ops WHERE op_id = ANY($1)", &[&ops])
            .await?
        {
            applied.insert(r.get(0));
        }
    }
    Ok(PgView {
        stock: row.get(0),
        pending_units: row.get(1),
        rows,
        applied,
    })
}

async fn line(
    pg: &Client,
    redis: &mut WriterRedis,
    keys: &Keys,
    pid: ProductId,
) -> anyhow::Result<Line> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let before = audit(redis, keys, pid).await?;
        let view = pg_view(pg, pid, &before).await?;
        let after = audit(redis, keys, pid).await?;
        let stable = before == after;
        let flight = in_flight(&before, &view);
        let line = Line {
            product: pid,
            pg_stock: view.stock,
            redis_stock: before.stock,
            pending_units: view.pending_units,
            journal: before.members.len(),
            in_flight: flight,
            drift: before
                .stock
                .map(|s| s + view.pending_units + flight - view.stock),
            busy: !stable,
        };
        if stable {
            return Ok(line);
        }
        last = Some(line);
        // Let the sale move on a little before the next reading.
        tokio::time::sleep(std::time::Duration::from_millis(2 + attempt as u64 % 8)).await;
    }
    let mut line = last.expect("at least one attempt");
    line.drift = None;
    Ok(line)
}

/// What the lines add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileOutcome {
    Clean,
    Drift,
    /// Some product kept changing: no stable reading.
    Busy,
}

impl ReconcileOutcome {
    /// The command's exit code: 0 clean, 1 drift, 3 busy.
    pub fn exit_code(self) -> i32 {
        match self {
            ReconcileOutcome::Clean => 0,
            ReconcileOutcome::Drift => 1,
            ReconcileOutcome::Busy => 3,
        }
    }
}

/// Prints the table; returns the verdict.
pub fn print(lines: &[Line]) -> ReconcileOutcome {
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "product", "pg_stock", "redis_stock", "pending", "journal", "in_flight", "drift"
    );
    let mut drifted = false;
    let mut busy = false;
    for l in lines {
        drifted |= l.drift.is_some_and(|d| d != 0);
        busy |= l.busy && l.redis_stock.is_some();
        println!(
            "{:>10} {:>12} {:>12} {:>12} {:>8} {:>10} {:>8}",
            l.product,
            l.pg_stock,
            l.redis_stock
                .map_or("not loaded".to_string(), |s| s.to_string()),
            l.pending_units,
            l.journal,
            l.in_flight,
            match (l.drift, l.busy) {
                (_, true) if l.redis_stock.is_some() => "busy".to_string(),
                (Some(d), _) => d.to_string(),
                (None, _) => "-".to_string(),
            },
        );
    }
    if drifted {
        println!("DRIFT: Redis reservable stock + pending units differs from PostgreSQL stock");
        ReconcileOutcome::Drift
    } else if busy {
        println!("BUSY: some products changed during every reading; run again");
        ReconcileOutcome::Busy
    } else {
        println!("ok: no drift");
        ReconcileOutcome::Clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CancelReason;

    fn audit(members: &[&str], qty: &[(&str, i64)]) -> Audit {
        Audit {
            stock: Some(10),
            members: members.iter().map(|m| m.to_string()).collect(),
            qty: qty.iter().map(|(r, q)| (r.to_string(), Some(*q))).collect(),
        }
    }

    #[test]
    fn the_journal_accounts_for_what_postgresql_lacks() {
        let op = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let a = audit(
            &["1-A,1-B|pending", "1-C|expired", &format!("restock|{op}|5")],
            &[("1-A", 2), ("1-B", 3), ("1-C", 4)],
        );
        let mut pg = PgView::default();
        // Nothing landed: A and B hold units, C returned some, the restock added 5.
        assert_eq!(in_flight(&a, &pg), 2 + 3 - 4 - 5);
        // A landed (pending), C landed as cancelled, the restock applied.
        pg.rows.insert("1-A".into(), OrderState::Pending);
        pg.rows
            .insert("1-C".into(), OrderState::Cancelled(CancelReason::Expired));
        pg.applied.insert(op.into());
        assert_eq!(in_flight(&a, &pg), 3);
        // A payment changes nothing until it lands.
        let paid = audit(&["1-D|paid"], &[("1-D", 7)]);
        assert_eq!(in_flight(&paid, &PgView::default()), 0);
    }
}
