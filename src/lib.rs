//! flashsale: a flash-sale backend that sells limited stock to a stampede of buyers without
//! overselling, without losing an accepted order.
//!
//! # Threads and data flow
//!
//! ```text
//!  clients ──HTTP/1.1──▶ fs-worker-0 … N-1   one monoio runtime per core, own SO_REUSEPORT listener
//!                          │  worker::conn → http::request (framing) → api::* (one file per endpoint)
//!                          │  lifecycle::*: the order's steps; redis::client: EVALSHA lua/*.lua
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
//! Each module is touched once, in one direction:
//! 1. [`worker`] (the thread) accepts the connection and spawns [`worker::conn`], which reads
//!    bytes and frames a request with [`http::request`];
//! 2. [`api`] routes `POST /api/orders` to [`api::orders`], which parses the body;
//! 3. [`lifecycle::reserve`] takes a place in the writer's queue ([`lifecycle::queue`],
//!    [`handoff`]), queues the request for its product's next `reserve.lua` call (state in
//!    [`worker::ctx`]), and its flush task sends the call through [`redis::client`] (one
//!    [`redis::pipeline`] to the Redis, or to the product's master in a cluster)
//!    (encoded by [`redis::scripts::reserve`]); the call's reservations arm the reaper's
//!    wheel ([`reaper::wheel`]);
//! 4. the new order is handed to the writer as a [`writer::msg::WriterMsg`], and
//!    [`api::orders`] answers 202 through [`http::response`];
//! 5. [`writer::thread`] collects a batch ([`writer::batch`]), writes it with
//!    [`writer::pg`] (binary COPY), and acknowledges it in the Redis journal
//!    ([`redis::journal`]) through [`writer::redis`].
//!
//! # Where to find things
//! - `serve`: [`server`] (threads, shutdown); the other commands: [`commands`]
//! - per-core state and its methods: [`worker::ctx`]; state of all threads: [`shared`]
//! - the endpoints: [`api`] (router) and `api/*.rs`; outcomes and errors → HTTP:
//!   [`http::response`]; request framing (keep-alive, pipelining, limits, smuggling shapes):
//!   [`http::request`]
//! - the order's life and its safety argument: [`lifecycle`]; its outcomes: [`domain`]
//! - the atomic operations: `lua/*.lua`, called through [`redis::scripts`]; key names:
//!   [`redis::keys`]; a restarted Redis: [`redis::check`]; Redis Cluster routing:
//!   [`redis::cluster`]
//! - back-pressure and shutdown of the queue: [`handoff`] (model-checked in `loom-tests/`
//!   through [`sync`])
//! - expiry: [`reaper`] and its pure [`reaper::wheel`]
//! - configuration: [`config`]; metrics: [`metrics`]; logs: [`telemetry`]; clocks: [`time`]

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
pub mod http;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
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
pub mod worker;
