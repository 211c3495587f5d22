//! Limits that keep one client from hurting everyone else, shared by all workers of the
//! process: connection caps (`connections`), rate limits (`rate`), wrong admin tokens
//! (`admin`) and who the client is behind trusted proxies (`client`). They are checked before anything is touched.

pub mod admin;
pub mod client;
pub mod connections;
pub mod rate;
