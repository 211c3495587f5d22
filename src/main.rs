//! The `flashsale` binary: `serve`, `migrate`, `seed`, `reconcile`. See `lib.rs` for the map.

use flashsale::{commands, config::Config, server, telemetry};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: flashsale <command>

commands:
  serve       apply pending migrations, then serve HTTP until SIGTERM/SIGINT
  migrate     apply pending migrations and exit
  seed        insert the demo products (ids 1 and 2) if absent
  reconcile   compare Redis and PostgreSQL stock per product; exit 1 on drift

configuration is by environment variables; see README.md";

fn main() -> ExitCode {
    telemetry::init();
    let cmd = std::env::args().nth(1).unwrap_or_default();
    if matches!(cmd.as_str(), "" | "-h" | "--help" | "help") {
        println!("{USAGE}");
        return if cmd.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flashsale: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "serve" => server::serve(cfg),
        "migrate" => run(|| async {
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
        "seed" => run(|| async {
            let mut c = commands::connect(&cfg.database_url).await?;
            commands::migrate::run(&mut c).await?;
            let n = commands::seed::run(&c).await?;
            println!("demo products inserted: {n} (existing ones are left as they are)");
            Ok(0)
        }),
        "reconcile" => run(|| async {
            let c = commands::connect(&cfg.database_url).await?;
            let lines = commands::reconcile::lines(&cfg, &c).await?;
            Ok(if commands::reconcile::print(&lines) {
                1
            } else {
                0
            })
        }),
        other => {
            eprintln!("flashsale: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("flashsale {cmd}: {e:#}");
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
