//! A worker's client of a Redis Cluster: one pipelined connection ([`Pipeline`]) per master,
//! every call sent to the master of its key's slot.
//!
//! Redirections: `MOVED` (the slot has another master) sends the call to the node named and
//! asks for a new slot map; `ASK` (the slot is migrating and this key has left) sends
//! `ASKING` and the call to the node named, once, and keeps the map; `TRYAGAIN` (a
//! multi-key call while a product's keys are split between the two nodes of a migration) and
//! `CLUSTERDOWN` wait `RETRY_PAUSE` and try again. A node that answers with a redirection
//! did not run the call, so resending is safe; after `PATIENCE` of redirections the caller
//! gets `Unavailable` (a 503), as for a Redis that is down. A call whose connection fails is
//! not resent (it may have run; see `lifecycle` for why that is safe) and asks for a new map,
//! since a failed master may have been replaced.
//!
//! The slot map is read with `CLUSTER SLOTS` from a known master or a seed node, when asked
//! for and every `REFRESH_EVERY` otherwise. A node that stops being a master has its
//! connection retired (calls in flight still get their replies).

use crate::config::RedisTarget;
use crate::redis::cluster::slot::{Node, Redirect, SlotMap, key_slot};
use crate::redis::cmd::command;
use crate::redis::conn::{CONNECT_TIMEOUT, connect, roundtrip};
use crate::redis::keys::Keys;
use crate::redis::pipeline::Pipeline;
use crate::redis::reply::RedisError;
use crate::redis::scripts::{ScriptCall, is_noscript};
use redis_async::resp::RespValue;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// How long a call may be redirected or told to wait before it fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// The pause before a call answered `TRYAGAIN` or `CLUSTERDOWN` is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// The slot map is read again this often even when nothing asked for it.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often the refresher looks whether a call asked for a new map.
const REFRESH_TICK: Duration = Duration::from_millis(50);

/// Redirections seen since start (metrics).
#[derive(Default)]
pub struct Redirects {
    pub moved: Cell<u64>,
    pub ask: Cell<u64>,
    pub retry: Cell<u64>,
}

pub struct Router {
    seeds: Vec<RedisTarget>,
    keys: Keys,
    database: String,
    name: String,
    map: RefCell<Option<Rc<SlotMap>>>,
    nodes: RefCell<HashMap<Node, Pipeline>>,
    refresh_wanted: Cell<bool>,
    /// Commands and writes of connections retired, so the totals never go down.
    retired_stats: Cell<(u64, u64)>,
    pub redirects: Redirects,
}

impl Router {
    /// Starts the router and its refresher on the current monoio runtime.
    pub fn start(seeds: Vec<RedisTarget>, keys: Keys, database: String, name: String) -> Rc<Self> {
        let r = Rc::new(Router {
            seeds,
            keys,
            database,
            name,
            map: RefCell::new(None),
            nodes: RefCell::new(HashMap::new()),
            refresh_wanted: Cell::new(true),
            retired_stats: Cell::new((0, 0)),
            redirects: Redirects::default(),
        });
        monoio::spawn(refresher(Rc::downgrade(&r)));
        r
    }

    /// Sends a command to the master of `key`'s slot.
    pub async fn request(&self, key: &[u8], bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        self.routed(key_slot(key), bytes).await
    }

    /// Runs a script on the master of its product: EVALSHA, and EVAL when that master does
    /// not hold the script (each master learns it on first use).
    pub async fn eval(&self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        let slot = call.slot();
        match self.routed(slot, call.encode(false)).await {
            Err(RedisError::Reply(e)) if is_noscript(&e) => {
                self.routed(slot, call.encode(true)).await
            }
            r => r,
        }
    }

    async fn routed(&self, slot: u16, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        let deadline = Instant::now() + PATIENCE;
        // Where a redirection said to go, and whether with ASKING.
        let mut redirected: Option<(Node, bool)> = None;
        loop {
            let (pipe, asking) = match redirected.take() {
                Some((node, asking)) => (self.pipeline(&node), asking),
                None => (self.master_of(slot)?, false),
            };
            if !pipe
                .ready(deadline.min(Instant::now() + CONNECT_TIMEOUT))
                .await
            {
                self.refresh_wanted.set(true);
                return Err(RedisError::Unavailable);
            }
            let r = if asking {
                pipe.request_asking(bytes.clone()).await
            } else {
                pipe.request(bytes.clone()).await
            };
            let e = match r {
                Err(RedisError::Reply(e)) => e,
                Err(RedisError::Unavailable) => {
                    self.refresh_wanted.set(true);
                    return Err(RedisError::Unavailable);
                }
                r => return r,
            };
            let Some(redirect) = Redirect::of(&e) else {
                return Err(RedisError::Reply(e));
            };
            if redirect.map_is_stale() {
                self.refresh_wanted.set(true);
            }
            let redirects = &self.redirects;
            match redirect {
                Redirect::Moved(_, node) => {
                    redirects.moved.set(redirects.moved.get() + 1);
                    redirected = Some((node, false));
                }
                Redirect::Ask(_, node) => {
                    redirects.ask.set(redirects.ask.get() + 1);
                    redirected = Some((node, true));
                }
                Redirect::Retry { .. } => {
                    redirects.retry.set(redirects.retry.get() + 1);
                    monoio::time::sleep(RETRY_PAUSE).await;
                }
            }
            if Instant::now() >= deadline {
                tracing::debug!(worker = %self.name, slot, error = %e, "a call was redirected for too long");
                return Err(RedisError::Unavailable);
            }
        }
    }

    fn master_of(&self, slot: u16) -> Result<Pipeline, RedisError> {
        let node = self
            .map
            .borrow()
            .as_ref()
            .and_then(|m| m.master_of(slot).cloned());
        match node {
            Some(node) => Ok(self.pipeline(&node)),
            None => {
                self.refresh_wanted.set(true);
                Err(RedisError::Unavailable)
            }
        }
    }

    /// The connection to `node`, made on first use.
    fn pipeline(&self, node: &Node) -> Pipeline {
        if let Some(p) = self.nodes.borrow().get(node) {
            return p.clone();
        }
        let p = Pipeline::start(
            node.target(&self.seeds[0]),
            self.keys.clone(),
            self.database.clone(),
            format!("{}@{node}", self.name),
            true,
        );
        self.nodes.borrow_mut().insert(node.clone(), p.clone());
        p
    }

    /// The connections to the masters of the current map (for what runs on every master:
    /// scans, pings).
    pub fn masters(&self) -> Vec<Pipeline> {
        let map = self.map.borrow().clone();
        map.map_or_else(Vec::new, |m| {
            m.masters().iter().map(|n| self.pipeline(n)).collect()
        })
    }

    /// A map covering every slot, and every master connected.
    pub fn is_connected(&self) -> bool {
        let complete = self.map.borrow().as_ref().is_some_and(|m| m.is_complete());
        complete && self.masters().iter().all(Pipeline::is_connected)
    }

    /// Every master answers PING.
    pub async fn ping(&self) -> Result<(), RedisError> {
        if !self.is_connected() {
            return Err(RedisError::Unavailable);
        }
        for p in self.masters() {
            p.ping().await?;
        }
        Ok(())
    }

    /// (commands sent, writes) since start, over every connection this router made.
    pub fn pipeline_stats(&self) -> (u64, u64) {
        let (mut sent, mut writes) = self.retired_stats.get();
        for p in self.nodes.borrow().values() {
            let (s, w) = p.pipeline_stats();
            sent += s;
            writes += w;
        }
        (sent, writes)
    }

    /// Takes a new map: connects to new masters, retires connections to nodes that are not
    /// masters any more.
    fn apply(&self, map: SlotMap) {
        let mut nodes = self.nodes.borrow_mut();
        let gone: Vec<Node> = nodes
            .keys()
            .filter(|n| map.masters().binary_search(n).is_err())
            .cloned()
            .collect();
        for n in gone {
            if let Some(p) = nodes.remove(&n) {
                let (s, w) = p.pipeline_stats();
                let (rs, rw) = self.retired_stats.get();
                self.retired_stats.set((rs + s, rw + w));
                p.retire();
            }
        }
        drop(nodes);
        for n in map.masters() {
            self.pipeline(n);
        }
        *self.map.borrow_mut() = Some(Rc::new(map));
    }

    /// Where to read the map from: the masters known, then the seeds.
    fn candidates(&self) -> Vec<RedisTarget> {
        let mut out: Vec<RedisTarget> = Vec::new();
        if let Some(m) = self.map.borrow().as_ref() {
            out.extend(m.masters().iter().map(|n| n.target(&self.seeds[0])));
        }
        out.extend(self.seeds.iter().cloned());
        out
    }
}

/// Reads the slot map from the first candidate that answers.
pub async fn read_map(candidates: &[RedisTarget]) -> Result<SlotMap, String> {
    let mut last = "no seed nodes".to_string();
    for t in candidates {
        let asked = Node::of(t);
        let got = async {
            let mut s = connect(t).await?;
            let v = roundtrip(&mut s, command(&["CLUSTER", "SLOTS"])).await?;
            SlotMap::parse(v, &asked).map_err(|e| e.to_string())
        }
        .await;
        match got {
            Ok(m) => return Ok(m),
            Err(e) => last = format!("{asked}: {e}"),
        }
    }
    Err(last)
}

/// Keeps the map fresh for as long as the router lives.
async fn refresher(router: Weak<Router>) {
    let mut last: Option<Instant> = None;
    let mut failing = false;
    loop {
        let (candidates, name) = {
            let Some(r) = router.upgrade() else { return };
            let due = r.refresh_wanted.get() || last.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
            if due {
                r.refresh_wanted.set(false);
                (Some(r.candidates()), r.name.clone())
            } else {
                (None, String::new())
            }
        };
        if let Some(candidates) = candidates {
            last = Some(Instant::now());
            let got = read_map(&candidates).await;
            let Some(r) = router.upgrade() else { return };
            match got {
                Ok(map) => {
                    if failing {
                        tracing::info!(worker = %name, "Redis Cluster slot map read again");
                        failing = false;
                    }
                    if !map.is_complete() {
                        // A failover in progress: look again soon.
                        r.refresh_wanted.set(true);
                    }
                    r.apply(map);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(worker = %name, error = %e, "cannot read the Redis Cluster slot map; retrying");
                        failing = true;
                    }
                    r.refresh_wanted.set(true);
                }
            }
        }
        monoio::time::sleep(if failing {
            Duration::from_millis(250)
        } else {
            REFRESH_TICK
        })
        .await;
    }
}
