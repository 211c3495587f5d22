//! Integration tests: the real binary against real PostgreSQL and Redis. One test binary,
//! one module per area of API.md.

mod common;
mod purchase;
mod chaos;
mod hostile;
mod lifecycle;
