//! The per-core pipelined Redis client of a worker.
//!
//! One connection per worker, owned by one task; callers hand it encoded commands over a
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
use crate::redis::Keys;
use crate::redis::cmd::command;
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

/// A reply later than this means Redis is stuck (or stopped): the connection is dropped so
/// callers get an answer (503) instead of hanging.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Writes are capped so one huge burst does not delay the first callers' replies.
const MAX_WRITE: usize = 256 * 1024;
/// The reply buffer's usual room, and the size past which an emptied buffer is replaced.
const READ_BUF: usize = 64 * 1024;
const READ_BUF_MAX: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected, or the connection died or stalled before the reply. Retry later.
    Unavailable,
    /// Redis answered with an error (script error, OOM, LOADING...).
    Reply(String),
    /// A reply we could not read.
    Protocol(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Unavailable => f.write_str("Redis unavailable"),
            RedisError::Reply(e) => write!(f, "Redis error: {e}"),
            RedisError::Protocol(e) => write!(f, "Redis protocol error: {e}"),
        }
    }
}

struct Request {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<RespValue, RedisError>>,
}

struct Inner {
    /// Present while connected; taking it away makes new calls fail fast.
    tx: RefCell<Option<unbounded::Tx<Request>>>,
    target: RedisTarget,
    /// Key names, for the restart check every new connection runs before it is used.
    keys: Keys,
    /// For logs: which worker this connection serves.
    name: String,
    /// Commands sent since start (metrics).
    sent: Cell<u64>,
    /// Writes performed: `sent / writes` is the mean pipeline depth (metrics).
    writes: Cell<u64>,
}

/// A cheap, clonable handle; all clones share the one connection of this core.
#[derive(Clone)]
pub struct RedisClient {
    inner: Rc<Inner>,
}

impl RedisClient {
    /// Starts the connection task on the current monoio runtime.
    pub fn start(target: RedisTarget, keys: Keys, name: String) -> Self {
        let inner = Rc::new(Inner {
            tx: RefCell::new(None),
            target,
            keys,
            name,
            sent: Cell::new(0),
            writes: Cell::new(0),
        });
        monoio::spawn(supervise(inner.clone()));
        RedisClient { inner }
    }

    pub fn is_connected(&self) -> bool {
        self.inner.tx.borrow().is_some()
    }

    /// (commands sent, writes) since start.
    pub fn pipeline_stats(&self) -> (u64, u64) {
        (self.inner.sent.get(), self.inner.writes.get())
    }

    /// Sends one encoded command and waits for its reply. An error reply is `Err(Reply)`.
    pub async fn request(&self, bytes: Vec<u8>) -> Result<RespValue, RedisError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.inner.tx.borrow();
            let sender = guard.as_ref().ok_or(RedisError::Unavailable)?;
            sender
                .send(Request { bytes, reply: tx })
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
    loop {
        let connected = match connect(&inner.target).await {
            Ok(mut stream) => {
                match crate::redis::restart::verify(&mut stream, &inner.keys, &inner.name).await {
                    Ok(()) => Ok(stream),
                    Err(e) => Err(format!("checking for a Redis restart: {e}")),
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
                *inner.tx.borrow_mut() = Some(tx);
                let why = run(stream, rx, &inner).await;
                inner.tx.borrow_mut().take();
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

async fn connect(t: &RedisTarget) -> Result<TcpStream, String> {
    let stream = monoio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream = stream;
    if let Some(pw) = &t.password {
        let cmd = match &t.username {
            Some(u) => command(&["AUTH", u.as_str(), pw.expose()]),
            None => command(&["AUTH", pw.expose()]),
        };
        roundtrip(&mut stream, cmd).await?;
    }
    // Always SELECT, also db 0: a Redis whose default database was changed still gives us ours.
    roundtrip(&mut stream, command(&["SELECT", &t.db.to_string()])).await?;
    Ok(stream)
}

/// One command and its reply on a fresh connection, before pipelining starts. An error reply
/// is an `Err`.
pub(crate) async fn roundtrip(stream: &mut TcpStream, cmd: Vec<u8>) -> Result<RespValue, String> {
    let (res, _) = stream.write_all(cmd).await;
    res.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(512);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        if let Some(v) = RespCodec.decode(&mut buf).map_err(|e| format!("{e:?}"))? {
            return match v {
                RespValue::Error(e) => Err(e),
                v => Ok(v),
            };
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let slice = buf.slice_mut(len..cap);
        let (res, slice) = monoio::time::timeout_at(deadline.into(), stream.read(slice))
            .await
            .map_err(|_| "no reply in time".to_string())?;
        buf = slice.into_inner();
        if res.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during handshake".into());
        }
    }
}

type Waiting = RefCell<VecDeque<(Instant, oneshot::Sender<Result<RespValue, RedisError>>)>>;

/// Runs one connection until it fails; then fails every caller still waiting.
async fn run(stream: TcpStream, mut rx: unbounded::Rx<Request>, inner: &Inner) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let waiting: Waiting = RefCell::new(VecDeque::with_capacity(256));

    let writer = async {
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            let Some(first) = rx.recv().await else {
                return "client dropped".to_string();
            };
            buf.clear();
            let now = Instant::now();
            let mut n = 0u64;
            {
                let mut w = waiting.borrow_mut();
                let mut next = Some(first);
                while let Some(r) = next {
                    buf.extend_from_slice(&r.bytes);
                    w.push_back((now, r.reply));
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
                    Ok(Some(v)) => match waiting.borrow_mut().pop_front() {
                        Some((_, tx)) => {
                            let _ = tx.send(Ok(v));
                        }
                        None => return format!("unexpected reply {v:?}"),
                    },
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
                .is_some_and(|(sent, _)| sent.elapsed() > REPLY_TIMEOUT);
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
    for (_, tx) in waiting.borrow_mut().drain(..) {
        let _ = tx.send(Err(RedisError::Unavailable));
    }
    why
}
