//! Request framing: where a request ends, what its body is, whether the connection stays
//! open, and every reason to refuse it before any handler runs.
//!
//! Rules (each tested below):
//! - the head, every chunk-size line with its extensions, and the trailers together must fit
//!   in `MAX_HEAD_BYTES` (one budget per request, else 431), and the head must parse (else
//!   400);
//! - lines end with CRLF: a bare LF (or a bare CR) anywhere in the head, a chunk line or a
//!   trailer is refused (400), because another parser could split the lines differently;
//! - `Content-Length` must be plain digits and appear once; with `Transfer-Encoding` as well,
//!   or `Transfer-Encoding` other than `chunked`, the request is refused (400) and the
//!   connection closed, because two parsers could disagree on where the next request starts;
//! - a body larger than `MAX_BODY_BYTES` is refused with 413 before it is read;
//! - HTTP/1.0 closes after the response unless it asks for keep-alive; `Connection: close`
//!   closes in both versions.
//!
//! Cost: a [`Framer`] is fed the bytes of one request as they arrive and never looks at a byte
//! twice: it remembers how far it searched for the end of the head and where it stands in a
//! chunked body. So a client trickling an endless chunk extension or endless trailers costs a
//! few nanoseconds per byte up to the budget, then gets 431, and the connection's buffer never
//! holds more than one request's limits.

use crate::config::{MAX_BODY_BYTES, MAX_HEAD_BYTES};
use std::borrow::Cow;
use std::ops::Range;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A complete request, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
    /// The query string after `?` (empty when there is none), still percent-encoded.
    pub query: &'a str,
    pub body: Cow<'a, [u8]>,
    /// Keep the connection open after the response.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: keep-alive must then be confirmed with `Connection: keep-alive`
    /// (`ab -k` keeps a connection only when the response says so).
    pub http10: bool,
    pub idempotency_key: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
    /// `Authorization` (a bearer token in `jwt` mode).
    pub authorization: Option<&'a [u8]>,
    /// Every `X-Forwarded-For` value, in the order received (read only behind trusted
    /// proxies).
    pub forwarded_for: Vec<&'a [u8]>,
}

/// Why a request is refused before routing. Every one of them closes the connection, since
/// the position of the next request in the stream is no longer known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unparseable head, or ambiguous framing (smuggling shapes).
    BadRequest(&'static str),
    /// The head is larger than `MAX_HEAD_BYTES`, or has too many fields.
    HeadTooLarge,
    /// The body is larger than `MAX_BODY_BYTES`.
    PayloadTooLarge,
}

/// The result of looking at the bytes received so far.
#[derive(Debug)]
pub enum Framing<'a> {
    /// One request and the number of bytes it took.
    Complete(Request<'a>, usize),
    /// More bytes are needed; `send_continue` when the client waits for `100 Continue`.
    Partial {
        send_continue: bool,
    },
    Refused(Refusal),
}

/// Frames the request at the start of `buf` in one go (tests, benchmarks, the fuzzer).
pub fn frame(buf: &[u8]) -> Framing<'_> {
    Framer::default().frame(buf)
}

/// The most bytes one request can take on the wire: its head, chunk lines and trailers
/// within one budget, and its body. A connection's buffer never needs more than this plus
/// one read.
pub const MAX_REQUEST_BYTES: usize = MAX_HEAD_BYTES + MAX_BODY_BYTES;

/// The incremental framer of one connection: fed the bytes of the request at the start of
/// the buffer each time more arrive, it resumes where it stopped. [`Framer::reset`] after
/// each complete or refused request.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the head already searched for its end, without finding it.
    head_scanned: usize,
    /// Set once the head is complete: what it says (parsed once) and where the body stands.
    body: Option<(HeadInfo, BodyState)>,
}

#[derive(Debug)]
struct BodyState {
    head_len: usize,
    /// Position (from the start of the request) up to which the body has been decoded.
    pos: usize,
    /// Budget left for chunk lines and trailers.
    budget: usize,
    step: Chunk,
    /// The decoded body of a chunked request.
    decoded: Vec<u8>,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Not chunked: `Content-Length` bytes follow the head.
    Length(usize),
    /// Reading a chunk-size line; `scanned` bytes of it have no line end.
    Size { scanned: usize },
    /// Reading chunk data: this many bytes left.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Reading trailer lines after the last chunk; `scanned` as for `Size`.
    Trailer { scanned: usize },
}

impl Framer {
    /// Forgets the request just framed; the next bytes start a new one.
    pub fn reset(&mut self) {
        *self = Framer::default();
    }

    /// Frames the request at the start of `buf`, which holds every byte of it received so
    /// far (the same bytes as the previous call, and possibly more).
    pub fn frame<'a>(&mut self, buf: &'a [u8]) -> Framing<'a> {
        if self.body.is_none() {
            // The end of the head: search only the bytes not searched before (the last three
            // again, in case the terminator straddles two reads).
            let from = self.head_scanned.saturating_sub(3);
            let found = match head_end(buf, from, MAX_HEAD_BYTES + 1) {
                Ok(found) => found,
                Err(r) => return Framing::Refused(r),
            };
            match found {
                None if buf.len() > MAX_HEAD_BYTES => {
                    return Framing::Refused(Refusal::HeadTooLarge);
                }
                None => {
                    self.head_scanned = buf.len();
                    return Framing::Partial {
                        send_continue: false,
                    };
                }
                Some(n) if n > MAX_HEAD_BYTES => return Framing::Refused(Refusal::HeadTooLarge),
                Some(_) => {}
            }
        }
        if self.body.is_none() {
            let head = match parse_head(buf) {
                Ok(h) => h,
                Err(r) => return Framing::Refused(r),
            };
            let state = BodyState {
                head_len: head.len,
                pos: head.len,
                budget: MAX_HEAD_BYTES - head.len,
                step: match head.body {
                    BodyKind::Length(n) => Chunk::Length(n),
                    BodyKind::Chunked => Chunk::Size { scanned: 0 },
                },
                decoded: Vec::new(),
            };
            self.body = Some((head, state));
        }
        let (head, state) = self.body.as_mut().expect("set just above");
        match state.advance(buf) {
            Progress::Done(used) => {
                let body = match state.step {
                    Chunk::Length(n) => Cow::Borrowed(&buf[state.head_len..state.head_len + n]),
                    _ => Cow::Owned(std::mem::take(&mut state.decoded)),
                };
                Framing::Complete(head.request(buf, body), used)
            }
            Progress::More => Framing::Partial {
                send_continue: head.expect_continue
                    && buf.len() == state.head_len
                    && !matches!(state.step, Chunk::Length(0)),
            },
            Progress::Refused(r) => Framing::Refused(r),
        }
    }
}

enum Progress {
    /// The request ends after this many bytes.
    Done(usize),
    More,
    Refused(Refusal),
}

impl BodyState {
    fn advance(&mut self, buf: &[u8]) -> Progress {
        loop {
            match self.step {
                Chunk::Length(n) => {
                    if n > MAX_BODY_BYTES {
                        return Progress::Refused(Refusal::PayloadTooLarge);
                    }
                    let end = self.head_len + n;
                    return if buf.len() >= end {
                        Progress::Done(end)
                    } else {
                        Progress::More
                    };
                }
                Chunk::Size { scanned } | Chunk::Trailer { scanned } => {
                    let line = &buf[self.pos..];
                    let from = scanned.saturating_sub(1);
                    let eol = match line_end(line, from, self.budget + 1) {
                        Ok(Some(lf)) => lf - 1,
                        Ok(None) => {
                            if line.len() > self.budget {
                                return Progress::Refused(Refusal::HeadTooLarge);
                            }
                            self.set_scanned(line.len());
                            return Progress::More;
                        }
                        Err(r) => return Progress::Refused(r),
                    };
                    if eol + 2 > self.budget {
                        return Progress::Refused(Refusal::HeadTooLarge);
                    }
                    let text = &line[..eol];
                    self.budget -= eol + 2;
                    self.pos += eol + 2;
                    if matches!(self.step, Chunk::Trailer { .. }) {
                        if text.is_empty() {
                            return Progress::Done(self.pos);
                        }
                        if !is_field_line(text) {
                            return Progress::Refused(Refusal::BadRequest("Malformed trailer"));
                        }
                        self.step = Chunk::Trailer { scanned: 0 };
                        continue;
                    }
                    let size = match chunk_size(text) {
                        Ok(s) => s,
                        Err(r) => return Progress::Refused(r),
                    };
                    if size > MAX_BODY_BYTES - self.decoded.len() {
                        return Progress::Refused(Refusal::PayloadTooLarge);
                    }
                    self.step = if size == 0 {
                        Chunk::Trailer { scanned: 0 }
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let avail = buf.len() - self.pos;
                    let take = avail.min(left);
                    self.decoded
                        .extend_from_slice(&buf[self.pos..self.pos + take]);
                    self.pos += take;
                    if take < left {
                        self.step = Chunk::Data(left - take);
                        return Progress::More;
                    }
                    self.step = Chunk::DataEnd;
                }
                Chunk::DataEnd => {
                    if buf.len() < self.pos + 2 {
                        return Progress::More;
                    }
                    if &buf[self.pos..self.pos + 2] != b"\r\n" {
                        return Progress::Refused(Refusal::BadRequest("Malformed chunked body"));
                    }
                    if self.budget < 2 {
                        return Progress::Refused(Refusal::HeadTooLarge);
                    }
                    self.budget -= 2;
                    self.pos += 2;
                    self.step = Chunk::Size { scanned: 0 };
                }
            }
        }
    }

    fn set_scanned(&mut self, n: usize) {
        match &mut self.step {
            Chunk::Size { scanned } | Chunk::Trailer { scanned } => *scanned = n,
            _ => {}
        }
    }
}

/// Looks at the line ends of `buf` (which starts at a line boundary) from `from`, at most up
/// to `limit`, and returns the position just after the first `\r\n\r\n` (the end of a head),
/// or refuses a bare LF (not after CR). A bare CR is refused by httparse in the head, and by
/// the chunk-line and trailer rules after it. One pass over the line feeds (`memchr`).
fn head_end(buf: &[u8], from: usize, limit: usize) -> Result<Option<usize>, Refusal> {
    let end = buf.len().min(limit);
    for i in memchr::memchr_iter(b'\n', &buf[from.min(end)..end]).map(|i| from + i) {
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(Refusal::BadRequest("Lines must end with CRLF"));
        }
        if i >= 3 && &buf[i - 3..i - 1] == b"\r\n" {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

/// Like [`head_end`] for one line: the position of the LF of the first CRLF from `from`.
fn line_end(buf: &[u8], from: usize, limit: usize) -> Result<Option<usize>, Refusal> {
    let end = buf.len().min(limit);
    match memchr::memchr(b'\n', &buf[from.min(end)..end]).map(|i| from + i) {
        Some(i) if i == 0 || buf[i - 1] != b'\r' => {
            Err(Refusal::BadRequest("Lines must end with CRLF"))
        }
        found => Ok(found),
    }
}

/// The size of a chunk-size line (`hex[;ext...]`, RFC 9112 §7.1.1).
fn chunk_size(line: &[u8]) -> Result<usize, Refusal> {
    let bad = Refusal::BadRequest("Malformed chunked body");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad);
    }
    let rest = &line[digits..];
    let ext_ok = rest.is_empty()
        || (matches!(rest[0], b';' | b' ' | b'\t')
            && rest
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)));
    if !ext_ok {
        return Err(bad);
    }
    // Leading zeros are fine; more than 16 significant digits cannot be a size we accept.
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > 8 {
        return Err(Refusal::PayloadTooLarge);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| bad)?;
    usize::from_str_radix(text, 16).map_err(|_| Refusal::PayloadTooLarge)
}

/// A trailer field line: `name: value`, a token name and visible value bytes.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || b >= b' ' && b != 0x7f)
}

#[derive(Debug)]
enum BodyKind {
    Length(usize),
    Chunked,
}

/// What a parsed head says, as positions in the request's bytes, so that it is parsed once
/// however many reads its body takes.
#[derive(Debug)]
struct HeadInfo {
    len: usize,
    method: Range<usize>,
    path: Range<usize>,
    query: Range<usize>,
    keep_alive: bool,
    http10: bool,
    idempotency_key: Option<Range<usize>>,
    signature: Option<Range<usize>>,
    authorization: Option<Range<usize>>,
    forwarded_for: Vec<Range<usize>>,
    body: BodyKind,
    expect_continue: bool,
}

impl HeadInfo {
    fn request<'a>(&self, buf: &'a [u8], body: Cow<'a, [u8]>) -> Request<'a> {
        // The ranges came from httparse's `&str`s over these very bytes.
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or_default();
        Request {
            method: text(&self.method),
            path: text(&self.path),
            query: text(&self.query),
            body,
            keep_alive: self.keep_alive,
            http10: self.http10,
            idempotency_key: self.idempotency_key.clone().map(|r| &buf[r]),
            signature: self.signature.clone().map(|r| &buf[r]),
            authorization: self.authorization.clone().map(|r| &buf[r]),
            forwarded_for: self.forwarded_for.iter().map(|r| &buf[r.clone()]).collect(),
        }
    }
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parses the complete head at the start of `buf` (its end was found already).
fn parse_head(buf: &[u8]) -> Result<HeadInfo, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(Refusal::BadRequest("Malformed HTTP request"));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::BadRequest("Malformed HTTP request")),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(Refusal::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::BadRequest("Malformed HTTP request"));
    };
    let mut content_length: Option<usize> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut idempotency_key = None;
    let mut signature = None;
    let mut authorization = None;
    let mut forwarded_for = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(Refusal::BadRequest("Duplicate Content-Length header"));
            }
            let v = h.value;
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadRequest("Invalid Content-Length header"));
            }
            // Digits only and at most 19 of them: fits in u64; saturate on 32-bit targets.
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding {
                return Err(Refusal::BadRequest("Duplicate Transfer-Encoding header"));
            }
            transfer_encoding = true;
            chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let t = trim(token);
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            if idempotency_key.is_some() {
                return Err(Refusal::BadRequest("Duplicate Idempotency-Key header"));
            }
            idempotency_key = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-payment-signature") {
            if signature.is_some() {
                return Err(Refusal::BadRequest("Duplicate X-Payment-Signature header"));
            }
            signature = Some(h.value);
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(Refusal::BadRequest("Duplicate Authorization header"));
            }
            authorization = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(range_in(buf, h.value));
        }
    }

    let body_kind = match (content_length, transfer_encoding) {
        (Some(_), true) => {
            return Err(Refusal::BadRequest(
                "Content-Length and Transfer-Encoding together are not accepted",
            ));
        }
        (_, true) if !chunked || version == 0 => {
            return Err(Refusal::BadRequest("Unsupported Transfer-Encoding"));
        }
        (_, true) => BodyKind::Chunked,
        (Some(n), false) => BodyKind::Length(n),
        (None, false) => BodyKind::Length(0),
    };

    let keep_alive = if version == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    // The empty query is a slice of the target too: positions are taken from `buf`.
    let (path, query) = target
        .split_once('?')
        .unwrap_or((target, &target[target.len()..]));

    Ok(HeadInfo {
        len: head_len,
        method: range_in(buf, method.as_bytes()),
        path: range_in(buf, path.as_bytes()),
        query: range_in(buf, query.as_bytes()),
        keep_alive,
        http10: version == 0,
        idempotency_key: idempotency_key.map(|k| range_in(buf, k)),
        signature: signature.map(|v| range_in(buf, v)),
        authorization: authorization.map(|v| range_in(buf, v)),
        forwarded_for,
        body: body_kind,
        expect_continue,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (Request<'_>, usize) {
        match frame(raw) {
            Framing::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    fn refused(raw: &[u8]) -> Refusal {
        match frame(raw) {
            Framing::Refused(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_get_keeps_alive() {
        let raw = b"GET /api/products/1?x=y HTTP/1.1\r\nHost: a\r\n\r\nGET /health";
        let (r, n) = complete(raw);
        assert_eq!(r.query, "x=y");
        assert_eq!(complete(b"GET /a HTTP/1.1\r\n\r\n").0.query, "");
        assert_eq!(
            (r.method, r.path, r.keep_alive),
            ("GET", "/api/products/1", true)
        );
        assert_eq!(&raw[n..], b"GET /health");
    }

    #[test]
    fn post_with_body_and_headers() {
        let raw = b"POST /api/orders HTTP/1.1\r\ncontent-length: 2\r\nIdempotency-Key: k1\r\nX-Payment-Signature: ab\r\n\r\n{}";
        let (r, n) = complete(raw);
        assert_eq!(&*r.body, b"{}");
        assert_eq!(n, raw.len());
        assert_eq!(r.idempotency_key, Some(&b"k1"[..]));
        assert_eq!(r.signature, Some(&b"ab"[..]));
    }

    #[test]
    fn http10_closes_unless_asked_and_connection_close_closes() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn partial_head_and_body_wait_for_more() {
        assert!(matches!(
            frame(b"GET / HTTP/1.1\r\nHo"),
            Framing::Partial {
                send_continue: false
            }
        ));
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"),
            Framing::Partial {
                send_continue: false
            }
        ));
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
            Framing::Partial {
                send_continue: true
            }
        ));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(refused(raw), Refusal::BadRequest(_)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn garbage_and_bad_bytes_are_bad_requests() {
        assert!(matches!(
            refused(b"\x00\x01\x02 HTTP/1.1\r\n\r\n"),
            Refusal::BadRequest(_)
        ));
        assert!(matches!(
            refused(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Refusal::BadRequest(_)
        ));
    }

    #[test]
    fn oversized_heads_and_bodies() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        assert_eq!(refused(&big), Refusal::HeadTooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(refused(&many), Refusal::HeadTooLarge);
        let raw = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(refused(raw.as_bytes()), Refusal::PayloadTooLarge);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Refusal::BadRequest("Invalid Content-Length header")
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_and_limited() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3;ext=1\r\na\":\r\n2\r\n1}\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (r, n) = complete(raw);
        assert_eq!(&*r.body, b"{\"a\":1}");
        assert_eq!(&raw[n..], b"NEXT");
        assert!(matches!(
            frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{"),
            Framing::Partial { .. }
        ));
        let big = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(refused(big.as_bytes()), Refusal::PayloadTooLarge);
        assert!(matches!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"),
            Refusal::BadRequest(_)
        ));
    }

    #[test]
    fn bare_line_feeds_and_carriage_returns_are_refused() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\n{}\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nT: x\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a\rb\r\n{}\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r{}\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nT: x\ry\r\n\r\n",
        ] {
            assert!(
                matches!(refused(raw), Refusal::BadRequest(_)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// Feeds `raw` in pieces of `step` bytes to one framer, as a connection would.
    fn fed(raw: &[u8], step: usize) -> String {
        let mut f = Framer::default();
        let mut n = 0;
        loop {
            n = (n + step).min(raw.len());
            match f.frame(&raw[..n]) {
                Framing::Partial { .. } if n < raw.len() => continue,
                other => return format!("{other:?}"),
            }
        }
    }

    #[test]
    fn endless_chunk_extensions_and_trailers_stop_at_the_budget() {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut ext = head.to_vec();
        ext.extend(b"1;x=");
        ext.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        let mut trailers = head.to_vec();
        trailers.extend(b"0\r\n");
        for i in 0..2000 {
            trailers.extend(format!("X-{i}: {}\r\n", "v".repeat(8)).as_bytes());
        }
        for raw in [ext, trailers] {
            assert_eq!(refused(&raw), Refusal::HeadTooLarge);
            // Fed a few bytes at a time, the same answer, once the budget is spent.
            assert_eq!(
                fed(&raw, 7),
                format!("{:?}", Framing::Refused(Refusal::HeadTooLarge))
            );
        }
        // Many small chunks: their lines count against the same budget.
        let mut many = head.to_vec();
        for _ in 0..(MAX_HEAD_BYTES / 4) {
            many.extend(b"1\r\na\r\n");
        }
        many.extend(b"0\r\n\r\n");
        assert_eq!(refused(&many), Refusal::HeadTooLarge);
    }

    #[test]
    fn feeding_byte_by_byte_frames_like_all_at_once() {
        for raw in [
            &b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nNEXT"[..],
            b"POST /api/orders HTTP/1.1\r\nContent-Length: 2\r\nIdempotency-Key: k\r\n\r\n{}",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3;ext=1\r\na\":\r\n2\r\n1}\r\n0\r\nTrailer: x\r\n\r\nNEXT",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        ] {
            let whole = format!("{:?}", frame(raw));
            for step in [1, 2, 3, 5, 64] {
                assert_eq!(fed(raw, step), whole, "step {step}");
            }
        }
    }
}
