//! Reading RESP replies: the accessors every decoder uses, the error of a request
//! ([`RedisError`]: no answer, or an error reply) and the error of a reply that does not have
//! the documented shape ([`ReplyError`]: a bug or a foreign script under our name).

use redis_async::resp::RespValue;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError(pub String);

impl std::error::Error for ReplyError {}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected Redis reply: {}", self.0)
    }
}

pub fn bad(what: &str, v: &RespValue) -> ReplyError {
    ReplyError(format!("{what}: {v:?}"))
}

pub fn as_int(v: &RespValue) -> Result<i64, ReplyError> {
    match v {
        RespValue::Integer(i) => Ok(*i),
        RespValue::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("integer", v)),
        _ => Err(bad("integer", v)),
    }
}

pub fn as_string(v: RespValue) -> Result<String, ReplyError> {
    match v {
        RespValue::BulkString(b) => {
            String::from_utf8(b).map_err(|e| ReplyError(format!("utf-8: {e}")))
        }
        RespValue::SimpleString(s) => Ok(s),
        other => Err(bad("string", &other)),
    }
}

pub fn array(v: RespValue, what: &str) -> Result<Vec<RespValue>, ReplyError> {
    match v {
        RespValue::Array(a) => Ok(a),
        other => Err(bad(what, &other)),
    }
}

/// Reply values for the decoders' unit tests.
#[cfg(test)]
pub mod fake {
    use redis_async::resp::RespValue;

    pub fn bulk(s: &str) -> RespValue {
        RespValue::BulkString(s.as_bytes().to_vec())
    }

    pub fn int(i: i64) -> RespValue {
        RespValue::Integer(i)
    }
}
