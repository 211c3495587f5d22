//! The operator commands besides `serve`: `migrate`, `seed`, `reconcile`. Each runs on a
//! short-lived tokio runtime in the main thread.

pub mod migrate;
pub mod reconcile;
pub mod seed;

use tokio_postgres::{Client, NoTls};

/// Connects to PostgreSQL, creating the database named in the URL when it does not exist
/// (a fresh server has only `postgres`), so that `migrate` works on a new machine.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    match try_connect(url).await {
        Ok(c) => Ok(c),
        Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "3D000") => {
            let cfg: tokio_postgres::Config = url.parse()?;
            let name = cfg.get_dbname().unwrap_or("postgres").to_string();
            let mut admin = cfg.clone();
            admin.dbname("postgres");
            let (client, conn) = admin.connect(NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match client
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .await
            {
                Ok(()) => tracing::info!(database = %name, "created the database"),
                // Another process created it meanwhile.
                Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42P04") => {}
                Err(e) => return Err(e.into()),
            }
            Ok(try_connect(url).await?)
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot connect to PostgreSQL at DATABASE_URL: {e}"
        )),
    }
}

async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A current-thread runtime for a command.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
