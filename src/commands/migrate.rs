//! `flashsale migrate`: applies the SQL files of `migrations/` in order, each once, recorded
//! in `schema_migrations`. An advisory lock makes concurrent starts (several `serve`
//! instances) apply each migration once.

use tokio_postgres::Client;

/// The migrations, in order. The file name (without `.sql`) is the version recorded.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_orders_id_cache",
        include_str!("../../migrations/0002_orders_id_cache.sql"),
    ),
    (
        "0003_unmatched_webhooks",
        include_str!("../../migrations/0003_unmatched_webhooks.sql"),
    ),
    (
        "0004_database_identity",
        include_str!("../../migrations/0004_database_identity.sql"),
    ),
    (
        "0005_sale_windows_and_admin",
        include_str!("../../migrations/0005_sale_windows_and_admin.sql"),
    ),
    (
        "0006_revisions_and_ranges",
        include_str!("../../migrations/0006_revisions_and_ranges.sql"),
    ),
    (
        "0007_buyer_cancellation",
        include_str!("../../migrations/0007_buyer_cancellation.sql"),
    ),
    (
        "0008_order_events",
        include_str!("../../migrations/0008_order_events.sql"),
    ),
    (
        "0009_event_endpoints",
        include_str!("../../migrations/0009_event_endpoints.sql"),
    ),
];

/// This database's identity (migration 0004), which the server records in Redis.
pub async fn identity(client: &Client) -> anyhow::Result<String> {
    Ok(client
        .query_one("SELECT id::text FROM database_identity", &[])
        .await?
        .get(0))
}

/// Any constant: the key of the advisory lock that serialises migrations.
const LOCK_KEY: i64 = 0x666c_6173_6873_616c;

/// Applies what is pending; returns the versions applied now.
pub async fn run(client: &mut Client) -> anyhow::Result<Vec<&'static str>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .or_else(|e| {
            // Two processes creating it at once: one wins, the other sees a unique violation.
            if e.as_db_error().is_some_and(|d| d.code().code() == "23505") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} failed: {e}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
