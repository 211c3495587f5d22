//! Limits that keep one client from hurting everyone else, shared by all workers of the
//! process: connection caps (`connections`). They are checked before anything is touched.

pub mod connections;
