//! `flashsale serve`: starts the threads and runs the shutdown sequence.
//!
//! Threads: `fs-worker-0 … N-1` (one monoio runtime and one SO_REUSEPORT listener each) and
//! `pg-writer`. The main thread binds the listeners (so port 0 resolves once and a bind error
//! stops start-up), then waits for SIGTERM/SIGINT.
//!
//! Shutdown, in order: workers stop accepting and finish in-flight requests (idle keep-alive
//! connections close at once) within `FLASHSALE_SHUTDOWN_GRACE_SECS`; then the handoff is
//! closed, the last sender drops with the last worker, and the writer drains the queue,
//! commits it and stops. Exit code 0 when everything accepted was committed. A second signal
//! exits at once (the Redis journal still holds whatever was not committed).

use crate::auth::Verifier;
use crate::commands;
use crate::config::{BuyerAuth, Config, FD_RESERVE};
use crate::handoff::handoff;
use crate::limits::admin::AdminFailures;
use crate::limits::connections::ConnectionLimits;
use crate::limits::rate::RateLimits;
use crate::local::Links;
use crate::metrics::{Metrics, PanicPlace};
use crate::panics;
use crate::reader;
use crate::redis::check;
use crate::redis::cmd::command;
use crate::redis::reply::as_string;
use crate::shared::Shared;
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::worker;
use crate::writer::msg::WriterMsg;
use crate::writer::redis::WriterRedis;
use crate::writer::thread as writer;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::SocketAddr;
use std::time::Duration;

/// Binds one listener with SO_REUSEPORT (each worker gets its own; the kernel spreads
/// connections across them).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// How long a taken address is given to become free before `serve` refuses it: a process
/// that just died (SIGKILL, a crash) leaves its io_uring listeners to the kernel's teardown
/// of its rings, which takes a moment after the exit.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Refuses an address another process listens on. The workers' listeners use SO_REUSEPORT,
/// which would let a second server share the port with the first and the kernel split
/// requests between two sales; a plain bind first finds such a listener. A listener still
/// being torn down looks the same to bind (and it even completes TCP handshakes), so the
/// address is tried again for [`PORT_RELEASE_WAIT`] before the answer is "taken".
fn refuse_if_taken(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "FLASHSALE_LISTEN={addr}: another process already listens on this address"
                    );
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => anyhow::bail!("cannot listen on FLASHSALE_LISTEN={addr}: {e}"),
        }
    }
}

/// Waits until `t` has finished, or until `bound` (no bound: until it finishes); whether it
/// finished.
fn join_by<T>(t: &std::thread::JoinHandle<T>, bound: Option<std::time::Instant>) -> bool {
    while !t.is_finished() {
        match bound {
            Some(b) if std::time::Instant::now() >= b => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
            None => return true,
        }
    }
    true
}

/// Applies migrations, retrying while PostgreSQL is starting (a fresh machine); returns the
/// database's identity.
fn migrate(cfg: &Config) -> anyhow::Result<String> {
    let rt = commands::runtime()?;
    rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match commands::connect(&cfg.database_url).await {
                Ok(mut client) => {
                    let applied = commands::migrate::run(&mut client).await?;
                    if !applied.is_empty() {
                        tracing::info!(?applied, "migrations applied");
                    }
                    return commands::migrate::identity(&client).await;
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "waiting for PostgreSQL");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// Refuses a Redis that could evict our keys, when Redis answers at start (when it does not,
/// every worker connection makes the same check before it is used, and requests get 503).
fn check_redis(cfg: &Config) -> anyhow::Result<()> {
    let rt = commands::runtime()?;
    rt.block_on(async {
        let mut redis = WriterRedis::new(cfg);
        let Ok(servers) = redis.servers().await else {
            tracing::warn!("Redis does not answer yet; it is checked again before use");
            return Ok(());
        };
        for server in servers {
            let Ok(info) = redis.request_on(&server, &command(&["INFO", "memory"])).await else {
                tracing::warn!(%server, "Redis does not answer yet; it is checked again before use");
                continue;
            };
            let info = as_string(info)?;
            if let Some(p) = check::parse_policy(&info).filter(|p| check::evicts_persistent_keys(p)) {
                anyhow::bail!(
                    "the Redis at {server} has maxmemory-policy {p}: it may evict stock \
                     counters, which could oversell; set maxmemory-policy noeviction (or a \
                     volatile-* policy)"
                );
            }
        }
        Ok(())
    })
}

/// Raises the open-file limit to its hard maximum: every connection is a descriptor, and the
/// usual soft limit of 1024 would refuse connections long before memory runs out. Returns
/// the limit in force.
fn raise_fd_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim = wanted;
            } else {
                tracing::warn!("could not raise the open-file limit");
            }
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
}

pub fn serve(cfg: Config) -> anyhow::Result<i32> {
    cfg.require_secret()?;
    refuse_if_taken(cfg.listen)?;
    let fd_limit = raise_fd_limit();
    let database_id = migrate(&cfg)?;
    check_redis(&cfg)?;
    // Connections may take every descriptor but those the server needs itself, so the accept
    // loop refuses with a 503 instead of failing with EMFILE.
    let max_connections = cfg
        .max_connections
        .unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE).max(1));
    let connections =
        ConnectionLimits::new(max_connections, cfg.max_connections_per_ip, cfg.ipv6_prefix);
    let verifier = match &cfg.buyer_auth {
        BuyerAuth::None => None,
        BuyerAuth::Jwt(jwt) => Some(Arc::new(
            Verifier::from_config(jwt).map_err(anyhow::Error::msg)?,
        )),
    };
    let rate_limits = RateLimits::new(cfg.rate_limit_ip, cfg.rate_limit_buyer, cfg.ipv6_prefix);

    let workers = cfg.workers;
    let (tx, rx) = handoff::<WriterMsg>(cfg.queue_capacity);
    let closer = tx.closer();
    let depth = closer.clone();
    let shared = Arc::new(Shared {
        metrics: Metrics::new(workers, move || depth.depth(), cfg.queue_capacity),
        postgres_up: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
        closer: closer.clone(),
        connections,
        database_id,
        rate_limits,
        admin_failures: AdminFailures::new(cfg.admin_failures_per_minute, cfg.ipv6_prefix),
        fatal: std::sync::OnceLock::new(),
        cfg,
    });

    let first = bind(shared.cfg.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on FLASHSALE_LISTEN={}: {e}",
            shared.cfg.listen
        )
    })?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(addr)?);
    }

    let (inbox_tx, inbox_rx): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| crossbeam_channel::bounded(1024))
        .unzip();
    // Registered before any thread starts: a thread that dies at once raises SIGTERM
    // (`Shared::fatal`), which must reach this handler, not the default action (killed by the
    // signal, no exit 70, nothing flushed).
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let writer = writer::spawn(shared.clone(), rx, inbox_tx)?;
    let (reader_tx, reader) = reader::spawn(shared.clone())?;
    // Not joined: it holds nothing that must be flushed (a delivery cut short is sent again).
    let _dispatcher = crate::events::spawn(shared.clone())?;
    let links = |inbox| Links {
        handoff: tx.clone(),
        reader: reader_tx.clone(),
        inbox,
        verifier: verifier.clone(),
    };

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut stops = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (id, (listener, inbox)) in listeners.into_iter().zip(inbox_rx).enumerate() {
        let (stop_tx, stop_rx) = futures_channel::oneshot::channel();
        stops.push(stop_tx);
        let shared = shared.clone();
        let links = links(inbox);
        let ready = ready_tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("fs-worker-{id}"))
                .spawn(move || {
                    let run = || worker::run(id, shared.clone(), listener, links, stop_rx, ready);
                    if let Some(Err(e)) = panics::guard(&shared, PanicPlace::Worker, run) {
                        tracing::error!(worker = id, error = %e, "worker failed");
                    }
                })?,
        );
    }
    drop(tx);
    drop(reader_tx);
    drop(ready_tx);
    for _ in 0..workers {
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            break;
        }
    }

    tracing::info!(%addr, workers, hold_secs = shared.cfg.hold.as_secs(), max_connections,
        max_connections_per_ip = shared.cfg.max_connections_per_ip, "flashsale serving");
    println!("flashsale listening on http://{addr}");

    let sig = signals.forever().next();
    match shared.dying() {
        Some(place) => tracing::error!(
            thread = place.label(),
            "shutting down after a thread died: finishing in-flight requests, then flushing what the writer can"
        ),
        None => {
            tracing::info!(signal = ?sig, "shutting down: finishing in-flight requests, then flushing to PostgreSQL")
        }
    }
    shared.shutting_down.store(true, Ordering::SeqCst);
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            tracing::warn!(
                "second signal: exiting now; the Redis journal keeps what was not written"
            );
            std::process::exit(130);
        }
    });
    for s in stops {
        let _ = s.send(());
    }
    // After a thread died, the shutdown is bounded: what the dead thread held (a place in the
    // writer's queue, a connection) is never given back, so waiting for it could last forever.
    let bound = shared
        .dying()
        .map(|_| std::time::Instant::now() + 2 * shared.cfg.shutdown_grace);
    for t in threads {
        if !join_by(&t, bound) {
            continue;
        }
        if t.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    closer.close();
    let clean = join_by(&writer, bound) && writer.join().unwrap_or(false);
    // The reader is not joined: it holds nothing that must be flushed, and a worker's sender
    // may outlive its runtime (monoio does not drop tasks parked on io_uring), so it may never
    // see its channel close. The process exit ends it.
    drop(reader);
    if let Some(place) = shared.dying() {
        tracing::error!(
            thread = place.label(),
            clean,
            "exiting 70: a thread died of a panic; the Redis journal keeps what was not written"
        );
        return Ok(70);
    }
    if clean {
        tracing::info!("shutdown complete: everything accepted is in PostgreSQL");
        Ok(0)
    } else {
        tracing::error!(
            "shutdown incomplete: some changes stay in the Redis journal for the next start"
        );
        Ok(1)
    }
}
