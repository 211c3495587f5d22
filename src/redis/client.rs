//! A worker's Redis client: one pipelined connection to a single Redis (`pipeline`), or to
//! each master of a Redis Cluster with every call routed by its key (`cluster::router`).
//! Callers name the key a command is about; scans go to every server in turn.

use crate::config::Config;
use crate::redis::cluster::router::Router;
use crate::redis::keys::Keys;
use crate::redis::pipeline::Pipeline;
use crate::redis::reply::RedisError;
use crate::redis::scripts::ScriptCall;
use redis_async::resp::RespValue;
use std::rc::Rc;

#[derive(Clone)]
pub enum RedisClient {
    Single(Pipeline),
    Cluster(Rc<Router>),
}

impl RedisClient {
    /// Starts the connection(s) on the current monoio runtime.
    pub fn start(cfg: &Config, database: String, name: String) -> Self {
        let keys = Keys::new(&cfg.redis_prefix);
        match &cfg.redis_cluster {
            None => RedisClient::Single(Pipeline::start(
                cfg.redis.clone(),
                keys,
                database,
                name,
                false,
            )),
            Some(seeds) => RedisClient::Cluster(Router::start(seeds.clone(), keys, database, name)),
        }
    }

    /// Sends a command about `key` (to the master of its slot, in a cluster).
    pub async fn request(&self, key: &str, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        match self {
            RedisClient::Single(p) => p.request(bytes).await,
            RedisClient::Cluster(r) => r.request(key.as_bytes(), bytes).await,
        }
    }

    /// Runs a script (on the master of its product, in a cluster).
    pub async fn eval(&self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        match self {
            RedisClient::Single(p) => p.eval(call).await,
            RedisClient::Cluster(r) => r.eval(call).await,
        }
    }

    /// One connection per server holding keys: the Redis, or every master (for SCAN).
    pub fn servers(&self) -> Vec<Pipeline> {
        match self {
            RedisClient::Single(p) => vec![p.clone()],
            RedisClient::Cluster(r) => r.masters(),
        }
    }

    pub fn is_connected(&self) -> bool {
        match self {
            RedisClient::Single(p) => p.is_connected(),
            RedisClient::Cluster(r) => r.is_connected(),
        }
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        match self {
            RedisClient::Single(p) => p.ping().await,
            RedisClient::Cluster(r) => r.ping().await,
        }
    }

    /// (commands sent, writes) since start.
    pub fn pipeline_stats(&self) -> (u64, u64) {
        match self {
            RedisClient::Single(p) => p.pipeline_stats(),
            RedisClient::Cluster(r) => r.pipeline_stats(),
        }
    }

    /// Cluster redirections followed since start: (MOVED, ASK, TRYAGAIN or CLUSTERDOWN).
    pub fn redirects(&self) -> (u64, u64, u64) {
        match self {
            RedisClient::Single(_) => (0, 0, 0),
            RedisClient::Cluster(r) => (
                r.redirects.moved.get(),
                r.redirects.ask.get(),
                r.redirects.retry.get(),
            ),
        }
    }
}
