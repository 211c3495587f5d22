//! Redis Cluster: addressing (`slot`: the slot of a key, the slot map, redirections) and the
//! workers' routing client (`router`: one pipelined connection per master, every call sent to
//! its product's master, redirections followed). The writer's client routes the same way on
//! its tokio runtime (`writer::redis`).

pub mod router;
pub mod slot;
