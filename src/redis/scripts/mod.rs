//! The Lua scripts of `lua/`: their identities, their text and SHA-1, and one invocation
//! encoded once. One file per script family beside it builds the calls and decodes the
//! replies (`reserve`, `transition` for pay and fail, `expire`, `load` for load, adopt and
//! invalidate, `product`, `admin` for restock, close and sync).
//!
//! Each script is sent as EVALSHA with its SHA-1 computed here; a Redis that does not know it
//! (restarted, or `SCRIPT FLUSH`) answers NOSCRIPT and the caller resends the same call as
//! EVAL, which also caches it. `lib.lua` is prepended to the scripts that use its helpers.
//!
//! Decoding is pure and unit-tested: a reply that does not have the documented shape is a
//! [`ReplyError`](crate::redis::reply::ReplyError) (a bug or a foreign script under our
//! name), never a panic.

pub mod admin;
pub mod expire;
pub mod load;
pub mod product;
pub mod reserve;
pub mod transition;

use crate::redis::cmd::push_bulk;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptId {
    Reserve,
    Pay,
    Fail,
    Cancel,
    Expire,
    Load,
    Adopt,
    Product,
    Invalidate,
    Restock,
    Sync,
    Audit,
    Close,
}

const LIB: &str = include_str!("../../../lua/lib.lua");

impl ScriptId {
    pub const ALL: [ScriptId; 13] = [
        ScriptId::Reserve,
        ScriptId::Pay,
        ScriptId::Fail,
        ScriptId::Cancel,
        ScriptId::Expire,
        ScriptId::Load,
        ScriptId::Adopt,
        ScriptId::Product,
        ScriptId::Invalidate,
        ScriptId::Restock,
        ScriptId::Sync,
        ScriptId::Audit,
        ScriptId::Close,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScriptId::Reserve => "reserve",
            ScriptId::Pay => "pay",
            ScriptId::Fail => "fail",
            ScriptId::Cancel => "cancel",
            ScriptId::Expire => "expire",
            ScriptId::Load => "load",
            ScriptId::Adopt => "adopt",
            ScriptId::Product => "product",
            ScriptId::Invalidate => "invalidate",
            ScriptId::Restock => "restock",
            ScriptId::Sync => "sync",
            ScriptId::Audit => "audit",
            ScriptId::Close => "close",
        }
    }

    fn source(self) -> (&'static str, bool) {
        match self {
            ScriptId::Reserve => (include_str!("../../../lua/reserve.lua"), true),
            ScriptId::Pay => (include_str!("../../../lua/pay.lua"), true),
            ScriptId::Fail => (include_str!("../../../lua/fail.lua"), true),
            ScriptId::Cancel => (include_str!("../../../lua/cancel.lua"), true),
            ScriptId::Expire => (include_str!("../../../lua/expire.lua"), true),
            ScriptId::Load => (include_str!("../../../lua/load.lua"), true),
            ScriptId::Adopt => (include_str!("../../../lua/adopt.lua"), true),
            ScriptId::Product => (include_str!("../../../lua/product.lua"), false),
            ScriptId::Invalidate => (include_str!("../../../lua/invalidate.lua"), true),
            ScriptId::Restock => (include_str!("../../../lua/restock.lua"), true),
            ScriptId::Sync => (include_str!("../../../lua/sync.lua"), false),
            ScriptId::Audit => (include_str!("../../../lua/audit.lua"), true),
            ScriptId::Close => (include_str!("../../../lua/close.lua"), false),
        }
    }

    /// The text sent to Redis.
    pub fn body(self) -> &'static str {
        &compiled()[self as usize].0
    }

    /// The SHA-1 of `body`, for EVALSHA.
    pub fn sha(self) -> &'static str {
        &compiled()[self as usize].1
    }
}

fn compiled() -> &'static [(String, String)] {
    static C: OnceLock<Vec<(String, String)>> = OnceLock::new();
    C.get_or_init(|| {
        ScriptId::ALL
            .iter()
            .map(|s| {
                let (src, with_lib) = s.source();
                let body = if with_lib {
                    format!("{LIB}\n{src}")
                } else {
                    src.to_string()
                };
                let sha = sha1_smol::Sha1::from(body.as_bytes()).digest().to_string();
                (body, sha)
            })
            .collect()
    })
}

/// One script invocation, encoded once and sendable as EVALSHA or, after NOSCRIPT, as EVAL.
#[derive(Debug, Clone)]
pub struct ScriptCall {
    pub script: ScriptId,
    nkeys: usize,
    nargs: usize,
    /// Keys then arguments, already as RESP bulk strings.
    tail: Vec<u8>,
}

impl ScriptCall {
    pub fn new(script: ScriptId) -> Self {
        ScriptCall {
            script,
            nkeys: 0,
            nargs: 0,
            tail: Vec::with_capacity(256),
        }
    }

    /// Adds a key; every key comes before the first argument.
    pub fn key(&mut self, k: &str) -> &mut Self {
        debug_assert_eq!(self.nargs, 0, "keys must precede arguments");
        push_bulk(&mut self.tail, k.as_bytes());
        self.nkeys += 1;
        self
    }

    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Self {
        push_bulk(&mut self.tail, a.as_ref());
        self.nargs += 1;
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        self.arg(itoa::Buffer::new().format(n).as_bytes())
    }

    /// The cluster slot of the call: its first key's (every key of a call is one product's).
    pub fn slot(&self) -> u16 {
        // `tail` starts with the first key as `$<len>\r\n<bytes>\r\n`.
        let first = (self.nkeys > 0)
            .then(|| {
                let eol = memchr::memchr(b'\r', &self.tail)?;
                let len: usize = std::str::from_utf8(&self.tail[1..eol]).ok()?.parse().ok()?;
                self.tail.get(eol + 2..eol + 2 + len)
            })
            .flatten();
        crate::redis::cluster::slot::key_slot(first.unwrap_or_default())
    }

    /// The RESP bytes: EVALSHA, or EVAL with the whole script when `with_body`.
    pub fn encode(&self, with_body: bool) -> Vec<u8> {
        let (verb, what) = if with_body {
            ("EVAL", self.script.body())
        } else {
            ("EVALSHA", self.script.sha())
        };
        let mut out = Vec::with_capacity(self.tail.len() + what.len() + 48);
        out.push(b'*');
        out.extend_from_slice(
            itoa::Buffer::new()
                .format(3 + self.nkeys + self.nargs)
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        push_bulk(&mut out, verb.as_bytes());
        push_bulk(&mut out, what.as_bytes());
        push_bulk(&mut out, itoa::Buffer::new().format(self.nkeys).as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

/// True for the error Redis gives an EVALSHA of a script it does not hold.
pub fn is_noscript(e: &str) -> bool {
    e.starts_with("NOSCRIPT")
}

/// Reply codes shared by the scripts (see their headers): the product's stock counter is
/// absent, so the product must be loaded from PostgreSQL first.
pub const NOT_LOADED: i64 = 7;
/// The order record is absent from Redis.
pub const NOT_FOUND: i64 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_have_stable_shas_and_include_the_library() {
        for s in ScriptId::ALL {
            assert_eq!(s.sha().len(), 40, "{}", s.name());
        }
        assert!(ScriptId::Pay.body().contains("local function cancel"));
        assert!(!ScriptId::Product.body().contains("local function cancel"));
    }

    #[test]
    fn evalsha_and_eval_carry_the_same_keys_and_arguments() {
        let mut c = ScriptCall::new(ScriptId::Product);
        c.key("k").arg("a").int(5);
        let sha = String::from_utf8(c.encode(false)).unwrap();
        assert!(sha.starts_with("*6\r\n$7\r\nEVALSHA\r\n$40\r\n"));
        assert!(sha.ends_with("$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n5\r\n"));
        let eval = String::from_utf8(c.encode(true)).unwrap();
        assert!(eval.starts_with("*6\r\n$4\r\nEVAL\r\n"));
        assert!(eval.ends_with("$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\n5\r\n"));
        assert!(is_noscript("NOSCRIPT No matching script. Please use EVAL."));
        assert_eq!(c.slot(), crate::redis::cluster::slot::key_slot(b"k"));
        let mut c = ScriptCall::new(ScriptId::Product);
        c.key("fs:{p:12}:stock").key("other");
        assert_eq!(c.slot(), crate::redis::cluster::slot::key_slot(b"p:12"));
    }
}
