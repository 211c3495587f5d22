//! The writer's SQL on its own: idempotent batches, and the COPY fast path falling back when a
//! row exists already.

use crate::common::*;
use flashsale::db::PgError;
use flashsale::domain::{CancelReason, OrderRecord, OrderState, ProductId};
use flashsale::writer::pg::{OrderWrite, Pg};

fn record(pid: i64, i: usize, state: OrderState) -> OrderRecord {
    OrderRecord {
        reference: format!("{pid}-W{i:024}"),
        product_id: ProductId::new(pid).unwrap(),
        user_id: i.is_multiple_of(2).then(|| format!("u{i}")),
        qty: 1 + (i % 3) as i32,
        amount_cents: 100,
        state,
        expires_at_ms: 1_900_000_000_000,
        created_at_ms: 1_800_000_000_000,
    }
}

fn writes(records: &[OrderRecord]) -> Vec<OrderWrite<'_>> {
    records
        .iter()
        .map(|r| OrderWrite {
            record: r,
            webhook: None,
        })
        .collect()
}

#[test]
fn batches_are_idempotent_and_copy_falls_back_on_a_duplicate() {
    let env = Env::new();
    let pid = env.product(1_000, 100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut pg = Pg::connect(&env.db_url).await.unwrap();
        let fresh: Vec<OrderRecord> = (0..100)
            .map(|i| record(pid, i, OrderState::Pending))
            .collect();
        pg.write(&writes(&fresh), &[], true).await.unwrap();
        // The same rows again through COPY: refused as a whole, nothing written twice.
        assert!(matches!(
            pg.write(&writes(&fresh), &[], true).await,
            Err(PgError::Duplicate)
        ));
        // Through INSERT … ON CONFLICT: accepted, still nothing written twice.
        pg.write(&writes(&fresh), &[], false).await.unwrap();
        // Final states, twice: stock goes down once per paid order.
        let finals: Vec<OrderRecord> = (0..100)
            .map(|i| {
                let s = if i % 2 == 0 {
                    OrderState::Paid
                } else {
                    OrderState::Cancelled(CancelReason::Expired)
                };
                record(pid, i, s)
            })
            .collect();
        pg.write(&writes(&finals), &[], true).await.unwrap();
        pg.write(&writes(&finals), &[], false).await.unwrap();
    });
    let mut c = env.pg();
    let n: i64 = c
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
    let paid_units: i64 = (0..100usize)
        .filter(|i| i % 2 == 0)
        .map(|i| 1 + (i % 3) as i64)
        .sum();
    assert_eq!(env.paid_units(pid), paid_units);
    assert_eq!(env.pg_stock(pid), 1_000 - paid_units);
    let expired: i64 = c
        .query_one(
            "SELECT count(*) FROM orders WHERE status = 'cancelled' AND cancel_reason = 'expired'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(expired, 50);
}
