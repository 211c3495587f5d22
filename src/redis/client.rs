//! A worker's Redis client: one pipelined connection to a single Redis (`pipeline`), or to
//! each master of a Redis Cluster with every call routed by its key (`cluster::router`).
//! Callers name the key a command is about; scans go to every server in turn.

use crate::config::Config;
use crate::metrics::WorkerBlock;
use crate::redis::cluster::router::Router;
use crate::redis::keys::Keys;
use crate::redis::pipeline::Pipeline;
use crate::redis::reply::RedisError;
use crate::redis::scripts::ScriptCall;
use redis_async::resp::RespValue;
use std::rc::Rc;

#[derive(Clone)]
pub struct RedisClient {
    to: To,
    /// Where each call's duration is recorded (`redis_call_duration_seconds`).
    metrics: WorkerBlock,
}

#[derive(Clone)]
enum To {
    Single(Pipeline),
    Cluster(Rc<Router>),
}

impl RedisClient {
    /// Starts the connection(s) on the current monoio runtime.
    pub fn start(cfg: &Config, database: String, name: String, metrics: WorkerBlock) -> Self {
        let keys = Keys::new(&cfg.redis_prefix);
        let to = match &cfg.redis_cluster {
            None => To::Single(Pipeline::start(
                cfg.redis.clone(),
                keys,
                database,
                name,
                false,
            )),
            Some(seeds) => To::Cluster(Router::start(seeds.clone(), keys, database, name)),
        };
        RedisClient { to, metrics }
    }

    /// Sends a command about `key` (to the master of its slot, in a cluster).
    pub async fn request(&self, key: &str, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        let started = std::time::Instant::now();
        let r = match &self.to {
            To::Single(p) => p.request(bytes).await,
            To::Cluster(r) => r.request(key.as_bytes(), bytes).await,
        };
        self.metrics.redis_latency.observe(started.elapsed());
        r
    }

    /// Runs a script (on the master of its product, in a cluster).
    pub async fn eval(&self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        let started = std::time::Instant::now();
        let r = match &self.to {
            To::Single(p) => p.eval(call).await,
            To::Cluster(r) => r.eval(call).await,
        };
        self.metrics.redis_latency.observe(started.elapsed());
        r
    }

    /// One connection per server holding keys: the Redis, or every master (for SCAN).
    pub fn servers(&self) -> Vec<Pipeline> {
        match &self.to {
            To::Single(p) => vec![p.clone()],
            To::Cluster(r) => r.masters(),
        }
    }

    pub fn is_connected(&self) -> bool {
        match &self.to {
            To::Single(p) => p.is_connected(),
            To::Cluster(r) => r.is_connected(),
        }
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        match &self.to {
            To::Single(p) => p.ping().await,
            To::Cluster(r) => r.ping().await,
        }
    }

    /// (commands sent, writes) since start.
    pub fn pipeline_stats(&self) -> (u64, u64) {
        match &self.to {
            To::Single(p) => p.pipeline_stats(),
            To::Cluster(r) => r.pipeline_stats(),
        }
    }

    /// Cluster redirections followed since start: (MOVED, ASK, TRYAGAIN or CLUSTERDOWN).
    pub fn redirects(&self) -> (u64, u64, u64) {
        match &self.to {
            To::Single(_) => (0, 0, 0),
            To::Cluster(r) => (
                r.redirects.moved.get(),
                r.redirects.ask.get(),
                r.redirects.retry.get(),
            ),
        }
    }
}
