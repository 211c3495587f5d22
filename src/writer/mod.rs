//! The PostgreSQL side, by job: the `pg-writer` thread and its loop (`thread`), the writer's
//! state and its core job (`commit`: write a batch, acknowledge it in the journal, answer who
//! waits), the journal replay (`replay`), the housekeeping between batches (`housekeeping`:
//! attribute sync, unmatched webhooks), each periodic job paced by one `Every` (`every`);
//! the batching policy (`batch`, pure: also built without the `server` feature for the loom
//! models), the messages it receives (`msg`), its SQL (`pg`) and its Redis client for the
//! journal (`redis`).
//!
//! Room for order events: the outbox rows are inserted by `pg` inside the same transactions
//! as the changes they describe; the dispatcher that delivers them is a thread of its own
//! (`src/events/`), never this one.

pub mod batch;
#[cfg(feature = "server")]
mod commit;
#[cfg(feature = "server")]
mod every;
#[cfg(feature = "server")]
mod housekeeping;
#[cfg(feature = "server")]
pub mod msg;
#[cfg(feature = "server")]
pub mod pg;
#[cfg(feature = "server")]
pub mod redis;
#[cfg(feature = "server")]
mod replay;
#[cfg(feature = "server")]
pub mod thread;
