//! RESP command encoding into one reusable buffer.
//!
//! Written by hand (ten lines) rather than through redis-async's `RespValue` encoder, which
//! needs an owned `Vec<u8>` per argument: a reservation has a dozen arguments and this runs
//! once per request. Replies are decoded with redis-async's `RespCodec`.

/// A command being encoded: `*<argc>\r\n` then `$<len>\r\n<bytes>\r\n` per argument.
pub struct Cmd {
    buf: Vec<u8>,
    declared: usize,
    written: usize,
}

impl Cmd {
    /// Starts a command of exactly `argc` arguments (checked in debug builds).
    pub fn new(argc: usize) -> Self {
        let mut buf = Vec::with_capacity(64 + argc * 24);
        buf.push(b'*');
        buf.extend_from_slice(itoa::Buffer::new().format(argc).as_bytes());
        buf.extend_from_slice(b"\r\n");
        Cmd {
            buf,
            declared: argc,
            written: 0,
        }
    }

    pub fn arg(&mut self, a: impl AsRef<[u8]>) -> &mut Self {
        push_bulk(&mut self.buf, a.as_ref());
        self.written += 1;
        self
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        let mut b = itoa::Buffer::new();
        let s = b.format(n);
        self.arg(s.as_bytes())
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        debug_assert_eq!(self.declared, self.written, "argument count mismatch");
        self.buf
    }
}

/// Appends one RESP bulk string.
pub fn push_bulk(buf: &mut Vec<u8>, a: &[u8]) {
    buf.push(b'$');
    buf.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(a);
    buf.extend_from_slice(b"\r\n");
}

/// A whole command from its arguments.
pub fn command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut c = Cmd::new(args.len());
    for a in args {
        c.arg(a);
    }
    c.finish()
}

/// `ZRANGEBYSCORE <key> -inf <max> LIMIT 0 <limit>`: the oldest members of a sorted set
/// scored up to `max` (`+inf` for all), at most `limit` of them.
pub fn oldest_members(key: &str, max: &str, limit: usize) -> Vec<u8> {
    let limit = itoa::Buffer::new().format(limit).to_string();
    command(&["ZRANGEBYSCORE", key, "-inf", max, "LIMIT", "0", &limit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_resp_arrays_of_bulk_strings() {
        assert_eq!(
            command(&["SET", "x", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$0\r\n\r\n"
        );
        let mut c = Cmd::new(2);
        c.arg("INCRBY").int(-12);
        assert_eq!(c.finish(), b"*2\r\n$6\r\nINCRBY\r\n$3\r\n-12\r\n");
    }
}
