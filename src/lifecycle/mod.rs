//! The life of an order on a worker, one file per step: `reserve` (micro-batched
//! `reserve.lua` calls), `webhook` (pay or fail, wherever the order is), `cancel` (the buyer
//! gives a pending order back, found the same way), `expire` (the
//! reaper's step), `load` (products and orders read from PostgreSQL when Redis lacks them),
//! and `queue` (the places in the writer's queue and the answers from the writer). The API
//! handlers, the reaper and the deferred webhooks all go through these, so each rule exists
//! once.
//!
//! The order of the steps is the safety argument:
//! - a handoff permit is taken *before* a script that changes Redis runs, so the change can
//!   always be handed to the writer (a full queue refuses first, having changed nothing);
//! - every script that changes an order also journals the change in Redis, in the same atomic
//!   step, and the writer removes the journal entry only after PostgreSQL committed it: a crash
//!   between the two is replayed, never lost;
//! - a product's snapshot is read (by the reader, not the writer) only after a writer barrier
//!   (a `Barrier` message completes after everything queued before it is committed), so
//!   PostgreSQL's pending orders include every reservation handed over so far, and `load.lua`
//!   installs the stock only if no live counter exists;
//! - lookups (orders, whether a product exists) go to the reader and never wait in, or take a
//!   place of, the writer's queue, which is kept for changes;
//! - a webhook's answer waits for the writer's commit, so a 2xx means the effect is durable.
//!
//! Results are [`crate::domain`] outcomes; `Err` is a [`Failure`] (infrastructure). The two
//! helpers below turn Redis trouble into failures and log what is a bug, once, where it is
//! found.

pub mod admin;
pub mod cancel;
pub mod expire;
pub mod load;
pub mod reserve;
pub mod webhook;

use crate::domain::{Failure, Unavailable};
use crate::redis::reply::{RedisError, ReplyError};

/// Redis could not answer: 503. Protocol surprises are bugs and are logged.
pub fn redis_failure(e: RedisError) -> Failure {
    if !matches!(e, RedisError::Unavailable) {
        tracing::error!(error = %e, "Redis call failed");
    }
    Failure::Unavailable(Unavailable::Redis)
}

/// A script reply of the wrong shape: a bug, logged.
pub fn reply_failure(e: ReplyError) -> Failure {
    tracing::error!(error = %e, "Redis script reply not understood");
    Failure::Internal
}
