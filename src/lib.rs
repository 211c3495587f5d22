//! flashsale: a flash-sale backend that sells limited stock to a stampede of buyers without
//! overselling, without losing an accepted order.
//!
//! # Threads and data flow
//!
//! ```text
//!  clients ──HTTP/1.1──▶ fs-worker-0 … N-1   one monoio runtime per core, own SO_REUSEPORT listener
//!                          │  http::request (framing) → api::* (one file per endpoint)
//!                          │  redis::pipeline: EVALSHA lua/*.lua, pipelined per core
//!                          │  reaper: timer wheel of this core's pending reservations
//!                          ▼
//!                   handoff (bounded crossbeam channel, permits taken before Redis changes)
//!                          ▼
//!                     pg-writer  (writer::*: tokio current-thread, tokio-postgres)
//!                          │  batches: one transaction, idempotent SQL keyed on order_reference
//!                          │  after commit: drop the entries from the Redis journal, wake waiters
//!                          ▼
//!                      PostgreSQL
//! ```
//!
//! # Where to find things
//! - the endpoints: [`api`] (router) and `api/*.rs`; errors → HTTP in [`http::response`]
//! - HTTP framing (keep-alive, pipelining, limits, smuggling shapes): [`http::request`]
//! - the atomic operations: `lua/*.lua`, called through [`redis::scripts`]
//! - durability and recovery rules: [`lifecycle`] (worker side), [`writer`] (PostgreSQL side)
//! - back-pressure and shutdown: [`handoff`] (model-checked in `loom-tests/` via [`sync`])
//! - expiry: [`reaper`] and its pure [`reaper::wheel`]
//! - configuration: [`config`]; metrics: [`metrics`]; commands: [`commands`], [`server`]

pub mod handoff;
pub mod sync;
/// The writer's batching policy, also in builds without the `server` feature (loom).
#[cfg(not(feature = "server"))]
#[path = "writer/batch.rs"]
pub mod writer_batch;
#[cfg(feature = "server")]
pub use writer::batch as writer_batch;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod commands;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod lifecycle;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod reaper;
#[cfg(feature = "server")]
pub mod redis;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod time;
#[cfg(feature = "server")]
pub mod worker;
#[cfg(feature = "server")]
pub mod writer;
