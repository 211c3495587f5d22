//! The writer thread's Redis connection: journal acknowledgements and replays.
//!
//! A sequential request/response client over tokio's `TcpStream`, using redis-async's
//! `RespCodec` for replies. redis-async's own `PairedConnection` would fit a tokio thread, but
//! it cannot select a database and reconnects silently to database 0, which would make the
//! writer acknowledge journal entries of another deployment's keyspace; this client makes the
//! same handshake as the workers' connections (`redis::conn`) on every connection. The writer's Redis traffic is one call per product per batch, so a
//! pipeline would buy nothing here.

use crate::config::RedisTarget;
use crate::redis::conn::handshake;
use crate::redis::reply::RedisError;
use crate::redis::scripts::{ScriptCall, is_noscript};

use bytes::BytesMut;
use redis_async::resp::{RespCodec, RespValue};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct WriterRedis {
    target: RedisTarget,
    conn: Option<TcpStream>,
    buf: BytesMut,
}

impl WriterRedis {
    pub fn new(target: RedisTarget) -> Self {
        WriterRedis {
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

    /// Runs a script: EVALSHA, and EVAL when Redis does not hold the script.
    pub async fn eval(&mut self, call: &ScriptCall) -> Result<RespValue, RedisError> {
        match self.request(&call.encode(false)).await {
            Err(RedisError::Reply(e)) if is_noscript(&e) => self.request(&call.encode(true)).await,
            r => r,
        }
    }

    /// Several commands in one write; their replies in order.
    pub async fn pipeline(&mut self, cmds: &[Vec<u8>]) -> Result<Vec<RespValue>, RedisError> {
        self.pipeline_bytes(&cmds.concat(), cmds.len()).await
    }

    /// Sends on the current connection; if that connection turns out dead (Redis restarted
    /// since it was opened), reconnects and sends once more. Every command the writer sends
    /// is idempotent (ZREM, EXPIRE, GET, SCAN), so the second attempt is safe.
    async fn pipeline_bytes(
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
