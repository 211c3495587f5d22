//! The panic policy: a panic in a request is contained to its connection; a panic anywhere
//! else takes the process down, promptly and with a non-zero exit, so a supervisor restarts it.
//!
//! Why two rules: a request's panic leaves nothing behind but its own connection (a worker's
//! parts release their `RefCell` borrows and their single-flight leads while unwinding), so
//! the core goes on serving everyone else. A thread whose loop panicked (a worker's reaper or
//! Redis pipeline, the writer, the reader) cannot be restarted in place without losing what it
//! held, and a process that lives on without it is half alive: a listener nobody accepts on, or
//! 202s that never reach PostgreSQL while `/ready` says ready. So such a thread marks the
//! process fatal ([`Shared::fatal`]): `/ready` answers 503 at once, the main thread runs the
//! ordinary shutdown (stop accepting, finish in-flight requests, flush what the writer can)
//! within the grace period and exits 70. Whatever was accepted and not yet written stays in
//! the Redis journal, which the next start replays.
//!
//! Every panic is logged once, by the hook installed here, with its thread and location;
//! `flashsale_panics_total{place}` counts them.

use crate::metrics::PanicPlace;
use crate::shared::Shared;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Logs every panic once, as an error, naming the thread and where it happened.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            message,
            "panic"
        );
    }));
}

/// Runs a connection's task; a panic inside it ends that connection only, and is counted.
pub async fn contain(shared: &Shared, task: impl Future<Output = ()>) {
    if AssertUnwindSafe(task).catch_unwind().await.is_err() {
        shared.metrics.panicked(PanicPlace::Request);
    }
}

/// Runs a thread's body; a panic that escapes it makes the process fatal (see the module
/// header). `None` when it panicked.
pub fn guard<T>(shared: &Shared, place: PanicPlace, body: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => Some(v),
        Err(_) => {
            shared.fatal(place);
            None
        }
    }
}
