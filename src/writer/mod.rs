//! The PostgreSQL side: the `pg-writer` thread (`thread`) that consumes the handoff, its
//! batching policy (`batch`, pure: also built without the `server` feature for the loom
//! models), the messages it receives (`msg`), its SQL (`pg`) and its Redis client for the
//! journal (`redis`).

pub mod batch;
#[cfg(feature = "server")]
pub mod msg;
#[cfg(feature = "server")]
pub mod pg;
#[cfg(feature = "server")]
pub mod redis;
#[cfg(feature = "server")]
pub mod thread;
