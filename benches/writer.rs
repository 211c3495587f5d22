//! Writer throughput against a real PostgreSQL: the same batches of new reservations written
//! with binary COPY (the writer's fast path) and with `INSERT … SELECT FROM UNNEST … ON
//! CONFLICT DO NOTHING` (its idempotent path), at several batch sizes. Not criterion: what is
//! measured is PostgreSQL, so the bench reports rows per second, median of rounds that
//! alternate the two paths (the machine is noisy; compare within one run).
//!
//! `cargo bench --bench writer` (uses `DATABASE_URL`'s server, default 127.0.0.1:5432, and a
//! database `flashsale_writer_bench` that it drops and recreates).

use flashsale::domain::{OrderRecord, OrderState, ProductId};
use flashsale::writer::pg::{OrderWrite, Pg};
use std::time::Instant;

const ROWS_PER_ROUND: usize = 60_000;
const ROUNDS: usize = 3;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to check.
        return;
    }
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/flashsale".into());
    let (head, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let url = format!("{head}/flashsale_writer_bench");
    let admin = format!("{head}/postgres");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("PostgreSQL reachable");
        tokio::spawn(conn);
        c.batch_execute("DROP DATABASE IF EXISTS flashsale_writer_bench WITH (FORCE)").await.unwrap();
        let mut db = flashsale::commands::connect(&url).await.unwrap();
        flashsale::commands::migrate::run(&mut db).await.unwrap();
        db.batch_execute("INSERT INTO products (id, name, price_cents, stock) VALUES (1, 'bench', 100, 1000000000)")
            .await
            .unwrap();
        let mut pg = Pg::connect(&url).await.unwrap();
        let pid = ProductId::new(1).unwrap();
        let mut next = 0u64;
        println!("| batch rows | COPY rows/s | INSERT … UNNEST rows/s | COPY / INSERT |");
        println!("|---:|---:|---:|---:|");
        for batch in [100usize, 500, 1000] {
            let mut results: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..ROUNDS {
                for (i, copy) in [true, false].into_iter().enumerate() {
                    let started = Instant::now();
                    for _ in 0..ROWS_PER_ROUND / batch {
                        let records: Vec<OrderRecord> = (0..batch)
                            .map(|_| {
                                next += 1;
                                OrderRecord {
                                    reference: format!("1-B{next:024}"),
                                    product_id: pid,
                                    user_id: None,
                                    qty: 1,
                                    amount_cents: 100,
                                    state: OrderState::Pending,
                                    expires_at_ms: 1_900_000_000_000,
                                    created_at_ms: 1_800_000_000_000,
                                }
                            })
                            .collect();
                        let writes: Vec<OrderWrite<'_>> =
                            records.iter().map(|r| OrderWrite { record: r, webhook: None }).collect();
                        pg.write(&writes, &[], copy).await.unwrap();
                    }
                    results[i].push(ROWS_PER_ROUND as f64 / started.elapsed().as_secs_f64());
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (copy, insert) = (median(&mut results[0]), median(&mut results[1]));
            println!("| {batch} | {copy:.0} | {insert:.0} | {:.2}x |", copy / insert);
        }
        c.batch_execute("DROP DATABASE IF EXISTS flashsale_writer_bench WITH (FORCE)").await.unwrap();
    });
}
