//! `flashsale reconcile`: checks the conservation law for every product,
//! `Redis reservable stock + units of pending orders = PostgreSQL products.stock`,
//! and exits 1 when any product drifts. Meaningful once the service is idle and every write
//! has landed (the `journal` column shows changes not yet in PostgreSQL).

use crate::config::Config;
use crate::domain::ProductId;
use crate::redis::cmd::command;
use crate::redis::keys::Keys;
use crate::redis::reply::as_int;
use crate::writer::redis::WriterRedis;
use redis_async::resp::RespValue;
use tokio_postgres::Client;

/// One product's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product: ProductId,
    pub pg_stock: i64,
    /// `None` when the product is not loaded into Redis (nothing to compare yet).
    pub redis_stock: Option<i64>,
    pub pending_units: i64,
    /// References in the Redis journal: changes not yet acknowledged by PostgreSQL.
    pub journal: i64,
}

impl Line {
    pub fn drift(&self) -> Option<i64> {
        self.redis_stock
            .map(|r| r + self.pending_units - self.pg_stock)
    }
}

pub async fn lines(cfg: &Config, pg: &Client) -> anyhow::Result<Vec<Line>> {
    let rows = pg
        .query(
            "SELECT p.id, p.stock,
                    COALESCE((SELECT sum(qty) FROM orders o WHERE o.product_id = p.id AND o.status = 'pending'), 0)::int8
             FROM products p ORDER BY p.id",
            &[],
        )
        .await?;
    let keys = Keys::new(&cfg.redis_prefix);
    let mut redis = WriterRedis::new(cfg.redis.clone());
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(pid) = ProductId::new(r.get(0)) else {
            continue;
        };
        let pk = keys.product_keys(pid);
        let stock = match redis.request(&command(&["GET", &pk.stock])).await {
            Ok(RespValue::Nil) => None,
            Ok(v) => Some(as_int(&v)?),
            Err(e) => anyhow::bail!("cannot read Redis at REDIS_URL: {e}"),
        };
        let journal = as_int(
            &redis
                .request(&command(&["ZCARD", &pk.journal]))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
        out.push(Line {
            product: pid,
            pg_stock: r.get(1),
            redis_stock: stock,
            pending_units: r.get(2),
            journal,
        });
    }
    Ok(out)
}

/// Prints the table; returns whether any product drifts.
pub fn print(lines: &[Line]) -> bool {
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "product", "pg_stock", "redis_stock", "pending", "journal", "drift"
    );
    let mut drifted = false;
    for l in lines {
        let drift = l.drift();
        drifted |= drift.is_some_and(|d| d != 0);
        println!(
            "{:>10} {:>12} {:>12} {:>12} {:>8} {:>8}",
            l.product,
            l.pg_stock,
            l.redis_stock
                .map_or("not loaded".to_string(), |s| s.to_string()),
            l.pending_units,
            l.journal,
            drift.map_or("-".to_string(), |d| d.to_string()),
        );
    }
    if drifted {
        println!("DRIFT: Redis reservable stock + pending units differs from PostgreSQL stock");
    } else {
        println!("ok: no drift");
    }
    drifted
}
