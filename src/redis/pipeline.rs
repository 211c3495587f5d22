//! One pipelined connection of a worker to one Redis server (the single Redis, or one master
//! of a cluster: `redis::client` routes between them).
//!
//! The connection is owned by one task; callers hand it encoded commands over a
//! same-core channel and await a same-core oneshot. Everything queued while the previous
//! write was in flight goes out in one `write`, so concurrent requests on one core share round
//! trips (the model is mini-redis's buffered client). Replies come back in order and are
//! matched to callers FIFO; they are decoded with redis-async's `RespCodec`.
//!
//! redis-async's own client needs a tokio runtime (it panics inside monoio), hence this loop
//! over monoio's `TcpStream`.
//!
//! Failure model: while disconnected, calls fail at once with [`RedisError::Unavailable`]
//! (the API answers 503 and `/ready` reports Redis) instead of queueing without bound. When a
//! connection dies, or a reply is overdue by [`REPLY_TIMEOUT`], every caller still waiting
//! gets `Unavailable`: whether its command ran is unknown, which is safe because every script
//! leaves a journal or pending entry that the writer and the reaper pick up. Outages are
//! logged once when they start and once when they end.

use crate::config::RedisTarget;
use crate::redis::check;
use crate::redis::cmd::command;
use crate::redis::conn::{REPLY_TIMEOUT, connect};
use crate::redis::keys::Keys;
use crate::redis::reply::RedisError;
use crate::redis::scripts::{ScriptCall, is_noscript};
use bytes::BytesMut;
use local_sync::{mpsc::unbounded, oneshot};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use redis_async::resp::{RespCodec, RespValue};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// Writes are capped so one huge burst does not delay the first callers' replies.
const MAX_WRITE: usize = 256 * 1024;
/// The reply buffer's usual room, and the size past which an emptied buffer is replaced.
const READ_BUF: usize = 64 * 1024;
const READ_BUF_MAX: usize = 256 * 1024;

struct Request {
    bytes: Vec<u8>,
    /// The bytes start with an `ASKING` whose `+OK` is not the caller's reply.
    asking: bool,
    reply: oneshot::Sender<Result<RespValue, RedisError>>,
}

struct Inner {
    /// Present while connected; taking it away makes new calls fail fast.
    tx: RefCell<Option<unbounded::Tx<Request>>>,
    target: RedisTarget,
    /// Key names, for the checks every new connection runs before it is used.
    keys: Keys,
    /// This PostgreSQL database's identity, which the Redis data must belong to.
    database: String,
    /// For logs: which worker this connection serves (and in a cluster, which node).
    name: String,
    /// A master of a cluster (its restart markers are its own; see `check`).
    cluster_node: bool,
    /// No longer a master of the cluster: no new connection is made once this one ends.
    retired: Cell<bool>,
    /// Connected (and checked) at least once: a connection that is down now fails calls at
    /// once, while a new one is worth waiting for (see [`Pipeline::ready`]).
    connected_once: Cell<bool>,
    /// Commands sent since start (metrics).
    sent: Cell<u64>,
    /// Writes performed: `sent / writes` is the mean pipeline depth (metrics).
    writes: Cell<u64>,
}

/// A cheap, clonable handle; all clones share the one connection.
#[derive(Clone)]
pub struct Pipeline {
    inner: Rc<Inner>,
}

impl Pipeline {
    /// Starts the connection task on the current monoio runtime.
    pub fn start(
        target: RedisTarget,
        keys: Keys,
        database: String,
        name: String,
        cluster_node: bool,
    ) -> Self {
        let inner = Rc::new(Inner {
            tx: RefCell::new(None),
            target,
            keys,
            database,
            name,
            cluster_node,
            retired: Cell::new(false),
            connected_once: Cell::new(false),
            sent: Cell::new(0),
            writes: Cell::new(0),
        });
        monoio::spawn(supervise(inner.clone()));
        Pipeline { inner }
    }

    /// Stops taking requests; those in flight still get their replies, then the connection
    /// closes and is not made again.
    pub fn retire(&self) {
        self.inner.retired.set(true);
        self.inner.tx.borrow_mut().take();
    }

    pub fn is_connected(&self) -> bool {
        self.inner.tx.borrow().is_some()
    }

    /// Whether the connection can take a call: waits until `deadline` for one being made for
    /// the first time; one that was up and is down now answers `false` at once.
    pub async fn ready(&self, deadline: Instant) -> bool {
        while !self.is_connected() {
            if self.inner.connected_once.get() || Instant::now() >= deadline {
                return false;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// (commands sent, writes) since start.
    pub fn pipeline_stats(&self) -> (u64, u64) {
        (self.inner.sent.get(), self.inner.writes.get())
    }

    /// Sends one encoded command and waits for its reply. An error reply is `Err(Reply)`.
    pub async fn request(&self, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        self.send(bytes, false).await
    }

    /// Sends `ASKING` and then the command, back to back (a cluster's `ASK` redirection).
    pub async fn request_asking(&self, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        let mut with = command(&["ASKING"]);
        with.extend_from_slice(&bytes);
        self.send(with, true).await
    }

    async fn send(&self, bytes: Vec<u8>, asking: bool) -> Result<RespValue, RedisError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.inner.tx.borrow();
            let sender = guard.as_ref().ok_or(RedisError::Unavailable)?;
            sender
                .send(Request {
                    bytes,
                    asking,
                    reply: tx,
                })
                .map_err(|_| RedisError::Unavailable)?;
        }
        match rx.await {
            Ok(Ok(RespValue::Error(e))) => Err(RedisError::Reply(e)),
            Ok(r) => r,
            Err(_) => Err(RedisError::Unavailable),
        }
    }

    /// Runs a script: EVALSHA, and EVAL when Redis does not hold the script.
    pub async fn eval(&self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        match self.request(call.encode(false)).await {
            Err(RedisError::Reply(e)) if is_noscript(&e) => self.request(call.encode(true)).await,
            r => r,
        }
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        match self.request(command(&["PING"])).await? {
            RespValue::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(RedisError::Protocol(format!("PING answered {other:?}"))),
        }
    }
}

async fn supervise(inner: Rc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    let mut down_since: Option<Instant> = None;
    while !inner.retired.get() {
        let connected = match connect(&inner.target).await {
            Ok(mut stream) => {
                let verified = check::verify(
                    &mut stream,
                    &inner.keys,
                    &inner.database,
                    &inner.name,
                    inner.cluster_node,
                )
                .await;
                match verified {
                    Ok(()) => Ok(stream),
                    Err(e) => Err(format!("checking the Redis before use: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok(stream) => {
                if let Some(t) = down_since.take() {
                    tracing::info!(worker = %inner.name, after_ms = t.elapsed().as_millis() as u64, "Redis reachable again");
                }
                backoff = Duration::from_millis(50);
                let (tx, rx) = unbounded::channel();
                if inner.retired.get() {
                    return;
                }
                *inner.tx.borrow_mut() = Some(tx);
                inner.connected_once.set(true);
                let why = run(stream, rx, &inner).await;
                inner.tx.borrow_mut().take();
                if inner.retired.get() {
                    tracing::debug!(worker = %inner.name, "connection to a former master closed");
                    return;
                }
                tracing::warn!(worker = %inner.name, error = %why, "Redis connection lost; requests needing Redis get 503 until it is back");
                down_since = Some(Instant::now());
            }
            Err(e) => {
                if down_since.is_none() {
                    tracing::warn!(worker = %inner.name, error = %e, host = %inner.target.host, port = inner.target.port,
                        "cannot connect to Redis; retrying");
                    down_since = Some(Instant::now());
                }
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Per command written: when, whether an `ASKING` reply comes first, and its caller.
type Waiting = RefCell<
    VecDeque<(
        Instant,
        bool,
        oneshot::Sender<Result<RespValue, RedisError>>,
    )>,
>;

/// Runs one connection until it fails; then fails every caller still waiting.
async fn run(stream: TcpStream, mut rx: unbounded::Rx<Request>, inner: &Inner) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let waiting: Waiting = RefCell::new(VecDeque::with_capacity(256));

    let writer = async {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            let Some(first) = rx.recv().await else {
                // Retired: the replies still owed arrive before the connection closes.
                while !waiting.borrow().is_empty() {
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
                return "retired".to_string();
            };
            buf.clear();
            let now = Instant::now();
            let mut n = 0u64;
            {
                let mut w = waiting.borrow_mut();
                let mut next = Some(first);
                while let Some(r) = next {
                    buf.extend_from_slice(&r.bytes);
                    w.push_back((now, r.asking, r.reply));
                    n += 1;
                    next = if buf.len() < MAX_WRITE {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
            }
            inner.sent.set(inner.sent.get() + n);
            inner.writes.set(inner.writes.get() + 1);
            let (res, b) = wr.write_all(buf).await;
            buf = b;
            if let Err(e) = res {
                return format!("write: {e}");
            }
        }
    };

    let reader = async {
        let mut buf = BytesMut::with_capacity(READ_BUF);
        loop {
            loop {
                match RespCodec.decode(&mut buf) {
                    Ok(Some(v)) => {
                        let mut w = waiting.borrow_mut();
                        match w.front_mut() {
                            // The reply to ASKING: the command's own comes next.
                            Some((_, asking @ true, _)) => *asking = false,
                            Some(_) => {
                                let (_, _, tx) = w.pop_front().expect("front exists");
                                let _ = tx.send(Ok(v));
                            }
                            None => return format!("unexpected reply {v:?}"),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("protocol: {e:?}"),
                }
            }
            if buf.is_empty() && buf.capacity() > READ_BUF_MAX {
                // A large reply (a sweep's or a re-arm's) grew the buffer; do not keep that
                // room for the life of the connection.
                buf = BytesMut::with_capacity(READ_BUF);
            } else if buf.capacity() - buf.len() < 4096 {
                buf.reserve(READ_BUF);
            }
            let (len, cap) = (buf.len(), buf.capacity());
            let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return "closed by Redis".to_string(),
                Ok(_) => {}
                Err(e) => return format!("read: {e}"),
            }
        }
    };

    let watchdog = async {
        loop {
            monoio::time::sleep(Duration::from_millis(250)).await;
            let overdue = waiting
                .borrow()
                .front()
                .is_some_and(|(sent, _, _)| sent.elapsed() > REPLY_TIMEOUT);
            if overdue {
                return format!("no reply within {REPLY_TIMEOUT:?}");
            }
        }
    };

    let why = monoio::select! {
        w = writer => w,
        r = reader => r,
        d = watchdog => d,
    };
    // Callers queued but not yet written, and those written but unanswered, all learn now.
    rx.close();
    while let Ok(r) = rx.try_recv() {
        let _ = r.reply.send(Err(RedisError::Unavailable));
    }
    for (_, _, tx) in waiting.borrow_mut().drain(..) {
        let _ = tx.send(Err(RedisError::Unavailable));
    }
    why
}
