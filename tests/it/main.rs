//! Integration tests: the real binary against real PostgreSQL and Redis. One test binary,
//! one module per area of the API.

mod audit;
mod auth;
mod cancel;
mod chaos;
mod cluster;
mod common;
mod events;
mod hostile;
mod lifecycle;
mod load;
mod operator;
mod process;
mod purchase;
mod writer;
