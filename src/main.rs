//! The `flashsale` binary: `serve`, `migrate`, `seed`, `reconcile`. See `lib.rs` for the map.
//!
//! Arguments are parsed by clap: `--help` on the binary and on every command prints usage and
//! exits 0 without doing anything; an unknown command or flag exits 2 with usage.
//! Configuration is by environment variables (docs/configuration.md).

use clap::{Parser, Subcommand};
use flashsale::{commands, config::Config, server, telemetry};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A flash-sale backend: sells limited stock to a stampede of buyers without overselling or
/// losing an accepted order. Configuration is by environment variables (see docs/configuration.md).
#[derive(Parser)]
#[command(name = "flashsale", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve HTTP until SIGTERM/SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Insert the demo products (ids 1 and 2) if absent.
    Seed,
    /// Compare Redis and PostgreSQL stock per product (also while the sale runs); exit 1 on
    /// drift, 3 when a product kept changing during every reading.
    Reconcile,
}

fn main() -> ExitCode {
    // clap prints usage and exits 0 for --help, 2 for misuse.
    let cli = Cli::parse();
    telemetry::init();
    flashsale::panics::install_hook();
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flashsale: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let (name, result) = match cli.command {
        Command::Serve => ("serve", server::serve(cfg)),
        Command::Migrate => (
            "migrate",
            run(|| async {
                let mut c = commands::connect(&cfg.database_url).await?;
                let applied = commands::migrate::run(&mut c).await?;
                println!(
                    "migrations applied: {}",
                    if applied.is_empty() {
                        "none pending".to_string()
                    } else {
                        applied.join(", ")
                    }
                );
                Ok(0)
            }),
        ),
        Command::Seed => (
            "seed",
            run(|| async {
                let mut c = commands::connect(&cfg.database_url).await?;
                commands::migrate::run(&mut c).await?;
                let n = commands::seed::run(&c).await?;
                println!("demo products inserted: {n} (existing ones are left as they are)");
                Ok(0)
            }),
        ),
        Command::Reconcile => (
            "reconcile",
            run(|| async {
                let c = commands::connect(&cfg.database_url).await?;
                let lines = commands::reconcile::lines(&cfg, &c).await?;
                Ok(commands::reconcile::print(&lines).exit_code())
            }),
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("flashsale {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run<F, Fut>(f: F) -> anyhow::Result<i32>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    commands::runtime()?.block_on(f())
}
