//! A worker: one thread, one monoio runtime, one SO_REUSEPORT listener, one Redis pipeline,
//! one timer wheel. Nothing in here is shared with other workers except the handoff sender
//! and the metrics block this worker alone writes.
//!
//! Per-core state lives in `Rc`/`RefCell`; no borrow is held across an `.await` (clippy's
//! `await_holding_refcell_ref` is denied crate-wide).

pub mod batcher;
pub mod conn;

use crate::config::Config;
use crate::domain::ProductId;
use crate::handoff::{Closer, HandoffTx};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::reaper::{Expiring, wheel::TimerWheel};
use crate::redis::pipeline::RedisClient;
use crate::redis::{Keys, ProductKeys};
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::writer::msg::{DeferredWebhook, WriterMsg};
use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// State shared by all threads, read-mostly.
pub struct Shared {
    pub cfg: Config,
    pub metrics: Metrics,
    /// Set by the writer: its last contact with PostgreSQL succeeded (for `/ready`).
    pub postgres_up: AtomicBool,
    /// Set on SIGTERM/SIGINT: the writer stops retrying an unreachable PostgreSQL after the
    /// grace period instead of forever.
    pub shutting_down: AtomicBool,
    /// Reads the handoff's depth and closes it at the end of shutdown.
    pub closer: Closer,
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
}

/// A request waiting for a load another request on this worker started.
pub type LoadWaiter = local_sync::oneshot::Sender<Result<bool, crate::http::response::ApiError>>;

/// Everything one worker owns; connection tasks share it through an `Rc`.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub redis: RedisClient,
    pub keys: Keys,
    /// The producer end of the queue to the writer.
    pub handoff: HandoffTx<WriterMsg>,
    /// Pending reservations this worker created or adopted, by expiry.
    pub wheel: RefCell<TimerWheel<Expiring>>,
    /// Products this worker has seen: the reaper's sweep looks at their pending sets.
    pub known_products: RefCell<HashSet<ProductId>>,
    /// Loads in progress on this worker, so concurrent requests for an unloaded product ask
    /// the writer once (their callers wait on the first one's result).
    pub loads: RefCell<HashMap<ProductId, Vec<LoadWaiter>>>,
    /// The webhook HMAC, keyed once; cloned per request.
    pub mac: Hmac<Sha256>,
    /// Reservation hold in milliseconds.
    pub hold_ms: i64,
    /// Webhooks whose order appeared after they were recorded, sent by the writer.
    pub inbox: crossbeam_channel::Receiver<DeferredWebhook>,
    /// Reservations waiting for their product's next `reserve.lua` call; a product has an entry
    /// exactly while its flush task runs (see `batcher`).
    pub reserve_queues: RefCell<HashMap<ProductId, Vec<batcher::Queued>>>,
    /// Key names per product, built once instead of per request.
    key_cache: RefCell<HashMap<ProductId, Rc<ProductKeys>>>,
    /// Expiries that found no room in the writer's queue at the last reaper tick: new orders
    /// leave that many more places free (see `lifecycle::order_permit`).
    pub expiry_backlog: Cell<usize>,
    /// Open connections, for the shutdown drain.
    pub connections: Cell<usize>,
    /// Set on shutdown: idle connections close, busy ones close after their response.
    pub drain: Drain,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        handoff: HandoffTx<WriterMsg>,
        inbox: crossbeam_channel::Receiver<DeferredWebhook>,
        redis: RedisClient,
        now_ms: i64,
    ) -> Worker {
        let cfg = &shared.cfg;
        let secret = cfg
            .webhook_secret
            .as_ref()
            .map(|s| s.expose())
            .unwrap_or("");
        Worker {
            id,
            redis,
            keys: Keys::new(&cfg.redis_prefix),
            handoff,
            // 100 ms ticks keep expiries well inside the one-second promise; 1024 buckets cover
            // ~100 s per rotation, so a 10-minute hold is looked at ~6 times before it fires.
            wheel: RefCell::new(TimerWheel::new(100, 1024, now_ms)),
            known_products: RefCell::new(HashSet::new()),
            loads: RefCell::new(HashMap::new()),
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length"),
            hold_ms: cfg.hold.as_millis() as i64,
            inbox,
            reserve_queues: RefCell::new(HashMap::new()),
            key_cache: RefCell::new(HashMap::new()),
            expiry_backlog: Cell::new(0),
            connections: Cell::new(0),
            drain: Drain::default(),
            shared,
        }
    }

    pub fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.id)
    }

    pub fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    /// The fixed key names of a product, cached (bounded, so requests naming random products
    /// cannot grow it without limit).
    pub fn product_keys(&self, pid: ProductId) -> Rc<ProductKeys> {
        if let Some(k) = self.key_cache.borrow().get(&pid) {
            return k.clone();
        }
        let k = Rc::new(self.keys.product_keys(pid));
        let mut cache = self.key_cache.borrow_mut();
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(pid, k.clone());
        k
    }
}

/// A same-core shutdown signal that any number of tasks can wait on.
///
/// Every idle connection waits on it between requests, so a waiter must leave no trace when
/// its wait ends the other way (a request arrived): each wait owns one slot, reused on
/// re-polls and freed on drop.
#[derive(Default)]
pub struct Drain {
    on: Cell<bool>,
    /// Wakers by slot; `None` slots are free and listed in `free`.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    pub fn start(&self) {
        self.on.set(true);
        for w in self.slots.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Waiters currently registered (for tests: it must not grow with requests).
    pub fn waiting(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }

    /// Completes once `start` has been called.
    pub async fn wait(&self) {
        let mut slot = SlotGuard {
            drain: self,
            slot: None,
        };
        poll_fn(|cx| {
            if self.on.get() {
                return Poll::Ready(());
            }
            let mut slots = self.slots.borrow_mut();
            let i = *slot
                .slot
                .get_or_insert_with(|| match self.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                });
            slots[i] = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Frees a wait's slot when the wait ends, however it ends.
struct SlotGuard<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(s) = self.drain.slots.borrow_mut().get_mut(i) {
                *s = None;
            }
            self.drain.free.borrow_mut().push(i);
        }
    }
}

/// Which I/O driver a runtime got, for the start-up log.
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "legacy (epoll)"
    }
}

/// Runs worker `id` on the current thread until `stop` fires and its connections are done.
pub fn run(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    handoff: HandoffTx<WriterMsg>,
    inbox: crossbeam_channel::Receiver<DeferredWebhook>,
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
            shared.cfg.redis.clone(),
            Keys::new(&shared.cfg.redis_prefix),
            format!("worker-{id}"),
        );
        let grace = shared.cfg.shutdown_grace;
        let w = Rc::new(Worker::new(
            id,
            shared,
            handoff,
            inbox,
            redis,
            crate::time::now_ms(),
        ));
        monoio::spawn(crate::reaper::run(w.clone()));

        // Serve once Redis answers, so the first requests do not get 503 for a connection
        // still being set up. A Redis that stays down does not keep the server from starting
        // (`/ready` says why requests fail).
        let started = std::time::Instant::now();
        while !w.redis.is_connected() && started.elapsed() < Duration::from_secs(3) {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let _ = ready.send(id);
        let mut stop = stop;
        let mut accept_errors_logged = false;
        loop {
            monoio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        accept_errors_logged = false;
                        let _ = stream.set_nodelay(true);
                        monoio::spawn(conn::serve(w.clone(), stream));
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
        drop(listener);
        w.drain.start();
        let deadline = std::time::Instant::now() + grace;
        while w.connections.get() > 0 && std::time::Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        if w.connections.get() > 0 {
            tracing::warn!(
                worker = id,
                open = w.connections.get(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Context;

    #[test]
    fn drain_waits_leave_nothing_behind() {
        let d = Drain::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut f = std::pin::pin!(d.wait());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert_eq!(d.waiting(), 1);
        }
        assert_eq!(d.waiting(), 0);
        assert_eq!(d.slots.borrow().len(), 1, "slots are reused");
        let mut a = Box::pin(d.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        d.start();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(std::pin::pin!(d.wait()).poll(&mut cx).is_ready());
    }
}
