//! A worker thread: one monoio runtime, one SO_REUSEPORT listener, the accept loop and the
//! drain at shutdown. It builds the per-core parts ([`crate::local`]), starts the Redis
//! pipeline and the reaper, and spawns one task per connection (`conn`). Only `server` runs
//! it. The top of the house: nothing below imports it.

pub mod conn;

use crate::local::{Links, Local};
use crate::panics;
use crate::reaper;
use crate::redis::client::RedisClient;
use crate::shared::Shared;
use crate::sync::Arc;
use crate::time::now_ms;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Which I/O driver a runtime got, for the start-up log.
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "legacy (epoll)"
    }
}

/// Stops listening when dropped, also while a panic unwinds the worker. On io_uring an accept
/// still queued in the ring keeps the socket listening after its descriptor is closed, until
/// the kernel tears the ring down, which it does only after the process exited: connections
/// would queue on a listener nobody accepts on, and a server started right then would find
/// the port taken. `shutdown` moves the socket out of the listening state now and completes
/// the queued accept with an error.
struct StopListening(std::os::fd::RawFd);

impl Drop for StopListening {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on a descriptor the listener declared before this guard
        // owns; the guard drops first, so the descriptor is still open.
        if unsafe { libc::shutdown(self.0, libc::SHUT_RDWR) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "shutdown of the listener");
        }
    }
}

/// Runs worker `id` on the current thread until `stop` fires and its connections are done.
pub fn run(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    links: Links,
    stop: futures_channel::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<usize>,
) -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build()?;
    tracing::info!(worker = id, driver = driver_name(), "worker started");
    rt.block_on(async move {
        let redis = RedisClient::start(
            &shared.cfg,
            shared.database_id.clone(),
            format!("worker-{id}"),
            shared.metrics.worker_block(id),
        );
        let grace = shared.cfg.shutdown_grace;
        let w = Rc::new(Local::new(id, shared, links, redis, now_ms()));
        monoio::spawn(reaper::run(w.clone()));

        // Serve once Redis answers, so the first requests do not get 503 for a connection
        // still being set up. A Redis that stays down does not keep the server from starting
        // (`/ready` says why requests fail).
        let started = std::time::Instant::now();
        while !w.redis.is_connected() && started.elapsed() < Duration::from_secs(3) {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let stop_listening = StopListening(std::os::fd::AsRawFd::as_raw_fd(&listener));
        let _ = ready.send(id);
        let mut stop = stop;
        let mut accept_errors_logged = false;
        loop {
            monoio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        accept_errors_logged = false;
                        let accepted = Instant::now();
                        match w.shared.connections.admit(peer.ip()) {
                            Ok(slot) => {
                                let _ = stream.set_nodelay(true);
                                let serve = conn::serve(w.clone(), stream, slot, peer.ip(), accepted);
                                let w = w.clone();
                                monoio::spawn(async move { panics::contain(&w.shared, serve).await });
                            }
                            Err(over) => {
                                w.metrics().connection_refused(over);
                                monoio::spawn(conn::refuse(stream));
                            }
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning; log once per streak.
                        if !accept_errors_logged {
                            tracing::warn!(worker = id, error = %e, "accept failed");
                            accept_errors_logged = true;
                        }
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = &mut stop => break,
            }
        }
        drop(stop_listening);
        drop(listener);
        w.connections.drain().start();
        let deadline = std::time::Instant::now() + grace;
        while w.connections.count() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        if w.connections.count() > 0 {
            tracing::warn!(
                worker = id,
                open = w.connections.count(),
                "shutdown grace over; closing connections"
            );
        }
        Ok::<(), std::io::Error>(())
    })?;
    // Dropping the runtime drops every task, and with them this worker's handoff sender.
    drop(rt);
    tracing::info!(worker = id, "worker stopped");
    Ok(())
}
