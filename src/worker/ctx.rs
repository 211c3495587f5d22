//! The per-core state of one worker, shared by its connection tasks, its reaper and its flush
//! tasks through an `Rc`. Fields are private; what other modules may do to the state is the
//! methods below.
//!
//! Nothing in here is shared with other workers except the handoff sender, the [`Shared`]
//! block and the metrics block this worker alone writes. No `RefCell` borrow is held across an
//! `.await` (clippy's `await_holding_refcell_ref` is denied crate-wide): every method borrows
//! and releases inside itself.

use crate::auth::{Buyer, Rejected, TokenCache, bearer};
use crate::config::Config;
use crate::domain::{Failure, ProductId};
use crate::handoff::HandoffTx;
use crate::metrics::WorkerMetrics;
use crate::reader::ReaderTx;
use crate::reaper::wheel::{Expiring, TimerWheel};
use crate::redis::client::RedisClient;
use crate::redis::keys::{Keys, ProductKeys};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::worker::drain::Drain;
use crate::worker::flight::{Flights, Joined};
use crate::worker::misses::Misses;
use crate::worker::reserve_queues::{Queued, ReserveQueues};
use crate::writer::msg::{DeferredWebhook, WriterMsg};
use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Width of a timer-wheel bucket: expiries fire within one tick of their time, well inside
/// the one-second promise.
const WHEEL_TICK_MS: u32 = 100;
/// Buckets of the wheel: 1024 × 100 ms is ~100 s per rotation, so a 10-minute hold is looked
/// at ~6 times before it fires.
const WHEEL_SLOTS: usize = 1024;
/// Products whose key names are cached; past this the cache starts over, so requests naming
/// random products cannot grow it without bound.
const KEY_CACHE_MAX: usize = 4096;

/// What connects a worker to the other threads.
pub struct Links {
    /// The queue to the writer.
    pub handoff: HandoffTx<WriterMsg>,
    /// The read path to PostgreSQL.
    pub reader: ReaderTx,
    /// Webhooks the writer found applicable, for this worker to apply.
    pub inbox: crossbeam_channel::Receiver<DeferredWebhook>,
}

/// Everything one worker owns.
pub struct Worker {
    /// This worker's index: its metrics block, its share of the products at re-arm, logs.
    id: usize,
    /// Configuration, metrics and health flags of the whole process.
    shared: Arc<Shared>,
    /// This core's pipelined Redis connection.
    redis: RedisClient,
    /// Key names under the configured prefix.
    keys: Keys,
    /// The producer end of the queue to the writer.
    handoff: HandoffTx<WriterMsg>,
    /// The read path to PostgreSQL (lookups and snapshots), apart from the writer.
    reader: ReaderTx,
    /// Products PostgreSQL recently said it does not have.
    missing_products: Misses<ProductId>,
    /// Order references PostgreSQL recently said it does not have.
    missing_orders: Misses<String>,
    /// Pending reservations this worker created, loaded or adopted, by expiry.
    wheel: RefCell<TimerWheel<Expiring>>,
    /// Products this worker has seen: the reaper's sweep looks at their pending sets.
    known_products: RefCell<HashSet<ProductId>>,
    /// Loads in progress, so concurrent requests for an unloaded product ask the writer once.
    loads: Flights<ProductId, Result<bool, Failure>>,
    /// Reservations waiting for their product's next `reserve.lua` call.
    reserve_queues: ReserveQueues,
    /// Bearer tokens this worker verified (`jwt` mode).
    tokens: TokenCache,
    /// The webhook HMAC, keyed once; cloned per request.
    mac: Hmac<Sha256>,
    /// Reservation hold in milliseconds.
    hold_ms: i64,
    /// Webhooks whose order appeared after they were recorded, sent by the writer.
    inbox: crossbeam_channel::Receiver<DeferredWebhook>,
    /// Key names per product, built once instead of per request.
    key_cache: RefCell<HashMap<ProductId, Rc<ProductKeys>>>,
    /// Expiries that found no room in the writer's queue at the last reaper tick: new orders
    /// leave that many more places free (see `lifecycle::queue::order_permit`).
    expiry_backlog: Cell<usize>,
    /// Open connections, for the shutdown drain.
    connections: Cell<usize>,
    /// Set on shutdown: idle connections close, busy ones close after their response.
    drain: Drain,
}

impl Worker {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        links: Links,
        redis: RedisClient,
        now_ms: i64,
    ) -> Worker {
        let Links {
            handoff,
            reader,
            inbox,
        } = links;
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
            reader,
            missing_products: Misses::default(),
            missing_orders: Misses::default(),
            wheel: RefCell::new(TimerWheel::new(WHEEL_TICK_MS, WHEEL_SLOTS, now_ms)),
            known_products: RefCell::new(HashSet::new()),
            loads: Flights::default(),
            reserve_queues: ReserveQueues::default(),
            tokens: TokenCache::default(),
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length"),
            hold_ms: cfg.hold.as_millis() as i64,
            inbox,
            key_cache: RefCell::new(HashMap::new()),
            expiry_backlog: Cell::new(0),
            connections: Cell::new(0),
            drain: Drain::default(),
            shared,
        }
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    pub fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.id)
    }

    pub fn redis(&self) -> &RedisClient {
        &self.redis
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn handoff(&self) -> &HandoffTx<WriterMsg> {
        &self.handoff
    }

    /// The buyer a request's `Authorization` header names (`jwt` mode), verified once per
    /// token on this worker.
    pub fn buyer(&self, authorization: Option<&[u8]>) -> Result<Buyer, Rejected> {
        let Some(verifier) = &self.shared.verifier else {
            return Err(Rejected::Invalid);
        };
        let token = bearer(authorization)?;
        let now = crate::time::now_ms().max(0) as u64 / 1000;
        self.tokens.buyer(verifier, token, now)
    }

    pub fn reader(&self) -> &ReaderTx {
        &self.reader
    }

    /// What PostgreSQL recently said about products that do not exist.
    pub fn missing_products(&self) -> &Misses<ProductId> {
        &self.missing_products
    }

    /// What PostgreSQL recently said about order references that do not exist.
    pub fn missing_orders(&self) -> &Misses<String> {
        &self.missing_orders
    }

    pub fn mac(&self) -> &Hmac<Sha256> {
        &self.mac
    }

    pub fn hold_ms(&self) -> i64 {
        self.hold_ms
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// The fixed key names of a product, cached.
    pub fn product_keys(&self, pid: ProductId) -> Rc<ProductKeys> {
        if let Some(k) = self.key_cache.borrow().get(&pid) {
            return k.clone();
        }
        let k = Rc::new(self.keys.product_keys(pid));
        let mut cache = self.key_cache.borrow_mut();
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(pid, k.clone());
        k
    }

    /// Arms the reaper for reservations of `pid` due at `at_ms`, and remembers the product
    /// for the sweep.
    pub fn arm(&self, pid: ProductId, at_ms: i64) {
        self.wheel
            .borrow_mut()
            .insert(at_ms, Expiring::new(pid, at_ms));
        self.remember(pid);
    }

    /// Remembers a product for the reaper's sweep without arming anything.
    pub fn remember(&self, pid: ProductId) {
        self.known_products.borrow_mut().insert(pid);
    }

    /// Products this worker has seen.
    pub fn known_products(&self) -> Vec<ProductId> {
        self.known_products.borrow().iter().copied().collect()
    }

    /// Moves the wheel to `now_ms`, appending the entries that came due to `fired`.
    pub fn advance_wheel(&self, now_ms: i64, fired: &mut Vec<Expiring>) {
        self.wheel.borrow_mut().advance(now_ms, fired);
    }

    /// Puts an entry back into the wheel (its expiry could not run now).
    pub fn rearm(&self, at_ms: i64, e: Expiring) {
        self.wheel.borrow_mut().insert(at_ms, e);
    }

    pub fn wheel_len(&self) -> usize {
        self.wheel.borrow().len()
    }

    /// Joins the load of `pid` in progress on this worker, or leads a new one.
    pub fn join_load(&self, pid: ProductId) -> Joined<'_, ProductId, Result<bool, Failure>> {
        self.loads.join(pid)
    }

    /// Queues a reservation for its product's next call; `true` when the caller must start
    /// the product's flush task (see `reserve_queues`).
    pub fn queue_reservation(&self, pid: ProductId, q: Queued) -> bool {
        self.reserve_queues.push(pid, q)
    }

    /// The reservations waiting for `pid`; `None` ends the product's flush task.
    pub fn take_reservations(&self, pid: ProductId) -> Option<Vec<Queued>> {
        self.reserve_queues.take(pid)
    }

    /// The next webhook the writer found applicable, if any.
    pub fn next_deferred(&self) -> Option<DeferredWebhook> {
        self.inbox.try_recv().ok()
    }

    pub fn expiry_backlog(&self) -> usize {
        self.expiry_backlog.get()
    }

    pub fn set_expiry_backlog(&self, n: usize) {
        self.expiry_backlog.set(n);
    }

    /// Counts a connection open until the guard drops.
    pub fn open_connection(&self) -> ConnectionGuard<'_> {
        self.connections.set(self.connections.get() + 1);
        ConnectionGuard(self)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.get()
    }
}

/// One open connection; dropping it counts the connection closed.
pub struct ConnectionGuard<'a>(&'a Worker);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}
