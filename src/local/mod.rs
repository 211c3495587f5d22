//! The per-core parts of one worker, as named handles: the bottom layer that the endpoints
//! (`api`), the order's steps (`lifecycle`), the reaper and the accept loop (`worker`) use, and
//! that uses none of them.
//!
//! [`Local`] is a bag of handles, in the spirit of mini-redis's `Db`: each field is a part with
//! its own private state and its own rules, and a step takes the parts it needs from it. No
//! part calls back into another or into the layers above. Same-core only (`Rc`, `RefCell`,
//! `Cell`): nothing in here is shared with other workers except the handoff sender, the
//! [`Shared`] block and this worker's metrics block. No `RefCell` borrow is held across an
//! `.await` (clippy's `await_holding_refcell_ref` is denied crate-wide): every method borrows
//! and releases inside itself.
//!
//! | handle                  | file                         | owns                                  |
//! |-------------------------|------------------------------|---------------------------------------|
//! | `queue`                 | `queue.rs`                   | places in the writer's queue, headroom, waiting for commits |
//! | `expiries`              | `expiries.rs` (`wheel.rs`)   | the timer wheel, the products seen    |
//! | `loads`                 | `loads.rs` (`flight.rs`, `misses.rs`) | one load per product, recent misses |
//! | `batches`               | `batches.rs`                 | reservations waiting for their product's call |
//! | `connections`           | `connections.rs`             | the open-connection count, the drain signal |
//! | `keys`                  | `redis::keys::KeyCache`      | key names, built once per product     |
//! | `buyers`                | `auth::Buyers`               | bearer-token verification and its cache |

pub mod batches;
pub mod connections;
pub mod expiries;
pub mod flight;
pub mod loads;
pub mod misses;
pub mod queue;
pub mod wheel;

use crate::auth::{Buyers, Verifier};
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::reader::ReaderTx;
use crate::redis::client::RedisClient;
use crate::redis::keys::{KeyCache, Keys};
use crate::shared::Shared;
use crate::sync::Arc;
use crate::writer::msg::{DeferredWebhook, WriterMsg};
use batches::ReserveBatches;
use connections::Connections;
use expiries::Expiries;
use hmac::{Hmac, KeyInit};
use loads::Loads;
use queue::Queue;
use sha2::Sha256;

/// What connects a worker to the other threads.
pub struct Links {
    /// The queue to the writer.
    pub handoff: crate::handoff::HandoffTx<WriterMsg>,
    /// The read path to PostgreSQL.
    pub reader: ReaderTx,
    /// Webhooks the writer found applicable, for this worker to apply.
    pub inbox: crossbeam_channel::Receiver<DeferredWebhook>,
    /// Verifies buyers' bearer tokens (`jwt` mode); `None` in `none` mode.
    pub verifier: Option<Arc<Verifier>>,
}

/// Everything one worker owns.
pub struct Local {
    /// This worker's index: its metrics block, its share of the products at re-arm, logs.
    pub id: usize,
    /// Configuration, metrics and health flags of the whole process.
    pub shared: Arc<Shared>,
    /// This core's pipelined Redis connection (one per master in a cluster).
    pub redis: RedisClient,
    /// Key names under the configured prefix.
    pub keys: Keys,
    /// Each product's fixed key names, built once.
    pub product_keys: KeyCache,
    /// This worker's end of the writer's queue.
    pub queue: Queue,
    /// The read path to PostgreSQL (lookups and snapshots), apart from the writer.
    pub reader: ReaderTx,
    /// Loads of products into Redis in progress, and what PostgreSQL said does not exist.
    pub loads: Loads,
    /// Pending reservations this worker created, loaded or adopted, by expiry.
    pub expiries: Expiries,
    /// Reservations waiting for their product's next `reserve.lua` call.
    pub batches: ReserveBatches,
    /// Bearer tokens this worker verified (`jwt` mode).
    pub buyers: Buyers,
    /// The payment webhook's HMAC, keyed once; cloned per request.
    pub webhook_mac: Hmac<Sha256>,
    /// Reservation hold in milliseconds.
    pub hold_ms: i64,
    /// Webhooks whose order appeared after they were recorded, sent by the writer.
    pub deferred: crossbeam_channel::Receiver<DeferredWebhook>,
    /// Open connections and the shutdown signal.
    pub connections: Connections,
}

impl Local {
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        links: Links,
        redis: RedisClient,
        now_ms: i64,
    ) -> Local {
        let Links {
            handoff,
            reader,
            inbox,
            verifier,
        } = links;
        let cfg = &shared.cfg;
        let secret = cfg
            .webhook_secret
            .as_ref()
            .map(|s| s.expose())
            .unwrap_or("");
        let keys = Keys::new(&cfg.redis_prefix);
        Local {
            id,
            redis,
            product_keys: KeyCache::new(keys.clone()),
            keys,
            queue: Queue::new(handoff),
            reader,
            loads: Loads::default(),
            expiries: Expiries::new(now_ms),
            batches: ReserveBatches::default(),
            buyers: Buyers::new(verifier),
            webhook_mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length"),
            hold_ms: cfg.hold.as_millis() as i64,
            deferred: inbox,
            connections: Connections::default(),
            shared,
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    /// This worker's own metrics block.
    pub fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.id)
    }
}
