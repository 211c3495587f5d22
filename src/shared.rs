//! State shared by every thread of `serve`, read-mostly: the configuration, the metrics, the
//! health flags the writer sets and `/ready` reads, and the handle that closes the handoff.
//! A leaf: the workers, the writer and the server read it; it imports none of them.

use crate::config::Config;
use crate::handoff::Closer;
use crate::limits::admin::AdminFailures;
use crate::limits::connections::ConnectionLimits;
use crate::limits::rate::RateLimits;
use crate::metrics::Metrics;
use crate::metrics::PanicPlace;
use crate::sync::{AtomicBool, Ordering};
use std::sync::OnceLock;

pub struct Shared {
    pub cfg: Config,
    /// This PostgreSQL database's identity (migration 0004): Redis data recorded for another
    /// one is never used.
    pub database_id: String,
    pub metrics: Metrics,
    /// Set by the writer: its last contact with PostgreSQL succeeded (for `/ready`).
    pub postgres_up: AtomicBool,
    /// Set on SIGTERM/SIGINT: the writer stops retrying an unreachable PostgreSQL after the
    /// grace period instead of forever.
    pub shutting_down: AtomicBool,
    /// Reads the handoff's depth and closes it at the end of shutdown.
    pub closer: Closer,
    /// Connection caps, in all and per client address, across the workers.
    pub connections: std::sync::Arc<ConnectionLimits>,
    /// Rate limits per client address and per buyer, across the workers.
    pub rate_limits: RateLimits,
    /// Wrong admin tokens per client address, across the workers.
    pub admin_failures: AdminFailures,
    /// Set when a thread died of a panic (`panics`): the process is going down and `/ready`
    /// says so. Holds the first thread that died.
    pub fatal: OnceLock<PanicPlace>,
}

impl Shared {
    pub fn postgres_up(&self) -> bool {
        self.postgres_up.load(Ordering::Relaxed)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn handoff_depth(&self) -> usize {
        self.closer.depth()
    }

    /// A thread died of a panic: counts it, marks the process fatal and asks the main thread
    /// to shut down (a SIGTERM to ourselves, which its signal loop is waiting for).
    pub fn fatal(&self, place: PanicPlace) {
        self.metrics.panicked(place);
        let first = self.fatal.set(place).is_ok();
        tracing::error!(
            thread = place.label(),
            "a thread died of a panic: the process shuts down and exits 70 so that a supervisor restarts it"
        );
        if first && let Err(e) = signal_hook::low_level::raise(signal_hook::consts::SIGTERM) {
            tracing::error!(error = %e, "cannot signal the main thread; exiting now");
            std::process::exit(70);
        }
    }

    /// The thread whose death is taking the process down, if any.
    pub fn dying(&self) -> Option<PanicPlace> {
        self.fatal.get().copied()
    }
}
