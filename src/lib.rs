//! flashsale: a flash-sale backend that sells limited stock to a stampede of buyers without
//! overselling, without losing an accepted order.
//!
//! # Threads and data flow
//!
//! ```text
//!  clients ──HTTP/1.1──▶ fs-worker-0 … N-1   one monoio runtime per core, own SO_REUSEPORT listener
//!                          │  worker::conn → http::request (framing) → api::* (one file per endpoint)
//!                          │  lifecycle::*: the order's steps, on the core's parts (local::*)
//!                          │  redis::client: EVALSHA lua/*.lua
//!                          │  reaper: timer wheel of this core's pending reservations
//!                          ▼
//!                   handoff (bounded crossbeam channel, permits taken before Redis changes)
//!                          ▼
//!                     pg-writer  (writer::thread: tokio current-thread, tokio-postgres)
//!                          │  batches: one transaction, idempotent SQL keyed on order_reference
//!                          │  after commit: drop the entries from the Redis journal, wake waiters
//!                          ▼
//!                      PostgreSQL
//! ```
//!
//! # One reservation, from accept to row
//!
//! The path goes down once, each layer calling only the layers below it, and climbs back only
//! to answer:
//! 1. [`worker`] (the thread, the top) accepts the connection and spawns [`worker::conn`],
//!    which reads bytes and frames a request with [`http::request`];
//! 2. [`api`] routes `POST /api/orders` to [`api::orders`], which parses the body (and, in
//!    `jwt` mode, asks [`auth::Buyers`] who the buyer is);
//! 3. [`lifecycle::reserve`] takes a place in the writer's queue ([`local::queue`]) and queues
//!    the request for its product's next `reserve.lua` call ([`local::batches`]); the product's
//!    flush task sends the call, encoded by [`redis::scripts::reserve`], through
//!    [`redis::client`] (one [`redis::pipeline`] to the Redis, or to the product's master in a
//!    cluster), and arms the reaper's wheel for the call's reservations ([`local::expiries`]);
//! 4. the new order is handed to the writer as a [`writer::msg::WriterMsg`] ([`handoff`]), and
//!    [`api::orders`] answers 202 through [`http::response`];
//! 5. [`writer::thread`] collects a batch ([`writer::batch`]), writes it with
//!    [`writer::pg`] (binary COPY), and acknowledges it in the Redis journal
//!    ([`redis::journal`]) through [`writer::redis`].
//!
//! # Layers
//! `worker` → `api` → `lifecycle` → `local` → `redis`, `handoff`, `writer::msg`, `reader`;
//! `reaper` sits beside `api` (a worker's loop that calls `lifecycle`). No folder imports one
//! that imports it back.
//!
//! # Where to find things
//! - `serve`: [`server`] (threads, shutdown); the other commands: [`commands`]
//! - a worker's per-core parts, as handles: [`local`]; state of all threads: [`shared`]
//! - the endpoints: [`api`] (router) and `api/*.rs`; outcomes and errors → HTTP:
//!   [`http::response`]; request framing (keep-alive, pipelining, limits, smuggling shapes):
//!   [`http::request`]
//! - the order's life and its safety argument: [`lifecycle`]; its outcomes: [`domain`]
//! - the atomic operations: `lua/*.lua`, called through [`redis::scripts`]; key names:
//!   [`redis::keys`]; a restarted Redis: [`redis::check`]; Redis Cluster routing:
//!   [`redis::cluster`]
//! - back-pressure and shutdown of the queue: [`handoff`] (model-checked in `loom-tests/`
//!   through [`sync`])
//! - expiry: [`reaper`], with the wheel in [`local::expiries`] (pure: [`local::wheel`])
//! - configuration: [`config`]; metrics: [`metrics`]; logs: [`telemetry`]; clocks: [`time`]
//!
//! # Rooms for what comes next
//! - **Buyer cancellation** (built): `lua/cancel.lua`, its wrapper in
//!   [`redis::scripts::transition`], the step in [`lifecycle::cancel`], the endpoint in
//!   [`api::cancel`].
//! - **Order events**: the outbox rows are written by the writer's own statements in the
//!   transaction of each change ([`writer::pg`], table `order_events`), the feed is read by the
//!   [`reader`] (`GET /admin/events`, [`api::admin`]); endpoints in [`api::event_endpoints`];
//!   the dispatcher thread in [`events`] (claim due deliveries, sign, send, record).
//! - **The waiting room**: a Lua family (`lua/queue_*.lua`, wrappers in
//!   `redis/scripts/queue.rs`), the steps in `lifecycle/queue.rs`, the endpoints in
//!   `api/queue.rs`; the pure parts are in [`waiting_room`] (the admission schedule, the
//!   signed tickets and admission tokens, verified without Redis, and the draw key).

/// A failpoint named `$name` (the `fail` crate, feature `failpoints`: the tests of the panic
/// policy make threads panic on demand with `FAILPOINTS=name=panic`); nothing otherwise.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}

pub mod handoff;
pub mod sync;
pub mod writer;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod events;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod local;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod panics;
#[cfg(feature = "server")]
pub mod reader;
#[cfg(feature = "server")]
pub mod reaper;
#[cfg(feature = "server")]
pub mod redis;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod shared;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod time;
#[cfg(feature = "server")]
pub mod waiting_room;
#[cfg(feature = "server")]
pub mod worker;
