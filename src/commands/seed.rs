//! `flashsale seed`: the two demo products (ids 1 and 2, see the README), inserted if absent
//! (never overwritten).

use tokio_postgres::Client;

pub async fn run(client: &Client) -> anyhow::Result<u64> {
    let n = client
        .execute(
            "INSERT INTO products (id, name, price_cents, stock) VALUES
                 (1, 'Flash Sale Item 1', 20000, 1000),
                 (2, 'Flash Sale Item 2', 100, 500)
             ON CONFLICT (id) DO NOTHING",
            &[],
        )
        .await?;
    // Explicit ids do not advance the identity: move it past them so plain inserts work.
    client
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('products', 'id'),
                           GREATEST((SELECT max(id) FROM products), 1))",
        )
        .await?;
    Ok(n)
}
