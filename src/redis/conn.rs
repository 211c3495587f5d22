//! Opening a Redis connection: the handshake every connection makes (AUTH when the URL has a
//! password, then SELECT of the configured database), shared by the workers' monoio pipeline
//! and the writer's tokio client, and a plain request/reply on a fresh monoio connection for
//! the checks that run before pipelining starts.

use crate::config::RedisTarget;
use crate::redis::cmd::command;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use redis_async::resp::{RespCodec, RespValue};
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// A reply later than this means Redis is stuck (or stopped): the connection is dropped so
/// callers get an answer (503) instead of hanging.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The commands a new connection sends before any other: AUTH when the URL carries a
/// password, and always SELECT, also of database 0, so that a Redis whose default database
/// was changed still gives us ours (and a reconnect never lands in another deployment's).
pub fn handshake(t: &RedisTarget) -> Vec<Vec<u8>> {
    let mut cmds = Vec::with_capacity(2);
    if let Some(pw) = &t.password {
        cmds.push(match &t.username {
            Some(u) => command(&["AUTH", u.as_str(), pw.expose()]),
            None => command(&["AUTH", pw.expose()]),
        });
    }
    cmds.push(command(&["SELECT", &t.db.to_string()]));
    cmds
}

/// Connects on the current monoio runtime and makes the handshake.
pub async fn connect(t: &RedisTarget) -> Result<TcpStream, String> {
    let mut stream = monoio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    for cmd in handshake(t) {
        roundtrip(&mut stream, cmd).await?;
    }
    Ok(stream)
}

/// One command and its reply on a connection that is not pipelining yet. An error reply is an
/// `Err`.
pub async fn roundtrip(stream: &mut TcpStream, cmd: Vec<u8>) -> Result<RespValue, String> {
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
