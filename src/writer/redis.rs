//! The Redis client of the writer thread (journal acknowledgements and replays, attribute
//! sync), of `serve`'s start-up check and of `reconcile`: a single server, or a Redis Cluster
//! with every command sent to the master of its key's slot.
//!
//! Each connection ([`Conn`]) is a sequential request/response client over tokio's
//! `TcpStream`, using redis-async's `RespCodec` for replies. redis-async's own
//! `PairedConnection` would fit a tokio thread, but it cannot select a database and
//! reconnects silently to database 0, which would make the writer acknowledge journal
//! entries of another deployment's keyspace; this client makes the same handshake as the
//! workers' connections (`redis::conn`) on every connection. The writer's Redis traffic is
//! one call per product per batch, so a pipeline would buy nothing here.
//!
//! On a cluster, redirections are followed as the workers' router does (`MOVED`: read the
//! slot map again and go where told; `ASK`: `ASKING` there, once; `TRYAGAIN` and
//! `CLUSTERDOWN`: wait and retry), for at most `PATIENCE`.

use crate::config::{Config, RedisTarget};
use crate::redis::cluster::slot::{Node, Redirect, SlotMap, key_slot, marker_tag};
use crate::redis::cmd::command;
use crate::redis::conn::handshake;
use crate::redis::keys::Keys;
use crate::redis::reply::{RedisError, as_string};
use crate::redis::scripts::{ScriptCall, is_noscript};

use bytes::BytesMut;
use redis_async::resp::{RespCodec, RespValue};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may be redirected or told to wait before it fails.
const PATIENCE: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The writer's client: one server, or the masters of a cluster.
pub enum WriterRedis {
    Single(Conn),
    Cluster(Cluster),
}

pub struct Cluster {
    seeds: Vec<RedisTarget>,
    /// `None` after a `MOVED` or a failed connection: read again before the next command.
    map: Option<SlotMap>,
    conns: HashMap<Node, Conn>,
}

impl WriterRedis {
    pub fn new(cfg: &Config) -> Self {
        match &cfg.redis_cluster {
            None => WriterRedis::Single(Conn::new(cfg.redis.clone())),
            Some(seeds) => WriterRedis::Cluster(Cluster {
                seeds: seeds.clone(),
                map: None,
                conns: HashMap::new(),
            }),
        }
    }

    /// One command about `key`.
    pub async fn request(&mut self, key: &str, cmd: &[u8]) -> Result<RespValue, RedisError> {
        let mut r = self.routed(key_slot(key.as_bytes()), cmd, 1).await?;
        r.pop().ok_or(RedisError::Unavailable)
    }

    /// Several commands about keys of one slot (`key`'s), in one write; replies in order.
    pub async fn pipeline(
        &mut self,
        key: &str,
        cmds: &[Vec<u8>],
    ) -> Result<Vec<RespValue>, RedisError> {
        self.routed(key_slot(key.as_bytes()), &cmds.concat(), cmds.len())
            .await
    }

    /// Runs a script: EVALSHA, and EVAL when the server does not hold the script.
    pub async fn eval(&mut self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        let slot = call.slot();
        let run = |r: Result<Vec<RespValue>, RedisError>| {
            r.and_then(|mut v| v.pop().ok_or(RedisError::Unavailable))
        };
        match run(self.routed(slot, &call.encode(false), 1).await) {
            Err(RedisError::Reply(e)) if is_noscript(&e) => {
                run(self.routed(slot, &call.encode(true), 1).await)
            }
            r => r,
        }
    }

    /// The servers holding keys: the one Redis, or every master (for SCAN and the checks
    /// made on each).
    pub async fn servers(&mut self) -> Result<Vec<Node>, RedisError> {
        match self {
            WriterRedis::Single(c) => Ok(vec![Node::of(&c.target)]),
            WriterRedis::Cluster(c) => Ok(c.map().await?.masters().to_vec()),
        }
    }

    /// One command to one server of [`WriterRedis::servers`].
    pub async fn request_on(&mut self, server: &Node, cmd: &[u8]) -> Result<RespValue, RedisError> {
        let conn = match self {
            WriterRedis::Single(c) => c,
            WriterRedis::Cluster(c) => c.conn(server),
        };
        conn.request(cmd).await
    }

    /// The database marker of one server (see `redis::check`): `None` for a master that
    /// serves no slot.
    pub async fn database_marker(
        &mut self,
        server: &Node,
        keys: &Keys,
    ) -> Result<Option<String>, RedisError> {
        if let WriterRedis::Single(_) = self {
            return Ok(Some(keys.database_marker()));
        }
        let nodes = self
            .request_on(server, &command(&["CLUSTER", "NODES"]))
            .await
            .and_then(|v| as_string(v).map_err(|e| RedisError::Protocol(e.to_string())))?;
        Ok(marker_tag(&nodes).map(|t| keys.node_markers(&t).0))
    }

    async fn routed(
        &mut self,
        slot: u16,
        bytes: &[u8],
        n: usize,
    ) -> Result<Vec<RespValue>, RedisError> {
        let c = match self {
            WriterRedis::Single(c) => return c.pipeline_bytes(bytes, n).await,
            WriterRedis::Cluster(c) => c,
        };
        let deadline = Instant::now() + PATIENCE;
        let mut redirected: Option<(Node, bool)> = None;
        loop {
            let (node, asking) = match redirected.take() {
                Some(r) => r,
                None => {
                    let map = c.map().await?;
                    (
                        map.master_of(slot)
                            .cloned()
                            .ok_or(RedisError::Unavailable)?,
                        false,
                    )
                }
            };
            let r = if asking {
                let mut with = command(&["ASKING"]);
                with.extend_from_slice(bytes);
                c.conn(&node)
                    .pipeline_bytes(&with, n + 1)
                    .await
                    .map(|mut v| v.split_off(1))
            } else {
                c.conn(&node).pipeline_bytes(bytes, n).await
            };
            let e = match r {
                Err(RedisError::Reply(e)) => e,
                Err(RedisError::Unavailable) => {
                    c.map = None;
                    return Err(RedisError::Unavailable);
                }
                r => return r,
            };
            let Some(redirect) = Redirect::of(&e) else {
                return Err(RedisError::Reply(e));
            };
            if redirect.map_is_stale() {
                c.map = None;
            }
            match redirect {
                Redirect::Moved(_, node) => redirected = Some((node, false)),
                Redirect::Ask(_, node) => redirected = Some((node, true)),
                Redirect::Retry { .. } => tokio::time::sleep(RETRY_PAUSE).await,
            }
            if Instant::now() >= deadline {
                return Err(RedisError::Unavailable);
            }
        }
    }
}

impl Cluster {
    fn conn(&mut self, node: &Node) -> &mut Conn {
        let seed = &self.seeds[0];
        self.conns
            .entry(node.clone())
            .or_insert_with(|| Conn::new(node.target(seed)))
    }

    /// The slot map, read (from a known master, else a seed) when there is none.
    async fn map(&mut self) -> Result<&SlotMap, RedisError> {
        if self.map.is_none() {
            let mut candidates: Vec<Node> = self.conns.keys().cloned().collect();
            candidates.extend(self.seeds.iter().map(Node::of));
            for node in candidates {
                let Ok(v) = self
                    .conn(&node)
                    .request(&command(&["CLUSTER", "SLOTS"]))
                    .await
                else {
                    continue;
                };
                if let Ok(map) = SlotMap::parse(v, &node) {
                    // Connections to nodes that are not masters any more are dropped.
                    self.conns
                        .retain(|n, _| map.masters().binary_search(n).is_ok());
                    self.map = Some(map);
                    break;
                }
            }
        }
        self.map.as_ref().ok_or(RedisError::Unavailable)
    }
}

/// One connection to one server.
pub struct Conn {
    target: RedisTarget,
    conn: Option<TcpStream>,
    buf: BytesMut,
}

impl Conn {
    pub fn new(target: RedisTarget) -> Self {
        Conn {
            target,
            conn: None,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    async fn connect(&mut self) -> Result<(), RedisError> {
        let t = &self.target;
        let s = tokio::time::timeout(TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| RedisError::Unavailable)?
            .map_err(|_| RedisError::Unavailable)?;
        let _ = s.set_nodelay(true);
        self.conn = Some(s);
        self.buf.clear();
        for cmd in handshake(&self.target) {
            self.roundtrip(&cmd).await?;
        }
        Ok(())
    }

    /// Writes `bytes` (holding `n` commands) and reads `n` replies. An error reply of any of
    /// them is an `Err`; a broken or silent connection is dropped (the next call reconnects).
    async fn exchange(&mut self, bytes: &[u8], n: usize) -> Result<Vec<RespValue>, RedisError> {
        let conn = self.conn.as_mut().ok_or(RedisError::Unavailable)?;
        let buf = &mut self.buf;
        let io = async {
            conn.write_all(bytes).await?;
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                match RespCodec
                    .decode(buf)
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?
                {
                    Some(v) => out.push(v),
                    None => {
                        if conn.read_buf(buf).await? == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                }
            }
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(TIMEOUT, io).await {
            Ok(Ok(replies)) => {
                for r in &replies {
                    if let RespValue::Error(e) = r {
                        return Err(RedisError::Reply(e.clone()));
                    }
                }
                Ok(replies)
            }
            Ok(Err(_)) | Err(_) => {
                self.conn = None;
                Err(RedisError::Unavailable)
            }
        }
    }

    async fn roundtrip(&mut self, cmd: &[u8]) -> Result<RespValue, RedisError> {
        let mut r = self.exchange(cmd, 1).await?;
        r.pop().ok_or(RedisError::Unavailable)
    }

    /// One command; connects first if needed.
    pub async fn request(&mut self, cmd: &[u8]) -> Result<RespValue, RedisError> {
        let mut r = self.pipeline_bytes(cmd, 1).await?;
        r.pop().ok_or(RedisError::Unavailable)
    }

    /// Sends on the current connection; if that connection turns out dead (Redis restarted
    /// since it was opened), reconnects and sends once more. Every command the writer sends
    /// is idempotent (ZREM, EXPIRE, GET, SCAN), so the second attempt is safe.
    pub async fn pipeline_bytes(
        &mut self,
        bytes: &[u8],
        n: usize,
    ) -> Result<Vec<RespValue>, RedisError> {
        let fresh = self.conn.is_none();
        if fresh {
            self.connect().await?;
        }
        match self.exchange(bytes, n).await {
            Err(RedisError::Unavailable) if !fresh => {
                self.connect().await?;
                self.exchange(bytes, n).await
            }
            r => r,
        }
    }
}
