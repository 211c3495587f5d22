//! Request framing: where a request ends, what its body is, whether the connection stays
//! open, and every reason to refuse it before any handler runs.
//!
//! Rules (each tested below):
//! - the head must be complete within `MAX_HEAD_BYTES` (else 431) and parse (else 400);
//! - `Content-Length` must be plain digits and appear once; with `Transfer-Encoding` as well,
//!   or `Transfer-Encoding` other than `chunked`, the request is refused (400) and the
//!   connection closed, because two parsers could disagree on where the next request starts;
//! - a body larger than `MAX_BODY_BYTES` is refused with 413 before it is read;
//! - HTTP/1.0 closes after the response unless it asks for keep-alive; `Connection: close`
//!   closes in both versions.

use crate::config::{MAX_BODY_BYTES, MAX_HEAD_BYTES};
use std::borrow::Cow;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A complete request, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
    pub body: Cow<'a, [u8]>,
    /// Keep the connection open after the response.
    pub keep_alive: bool,
    /// An HTTP/1.0 request: keep-alive must then be confirmed with `Connection: keep-alive`
    /// (`ab -k` keeps a connection only when the response says so).
    pub http10: bool,
    pub idempotency_key: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
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

enum BodyKind {
    Length(usize),
    Chunked,
}

/// Frames the request at the start of `buf`.
pub fn frame(buf: &[u8]) -> Framing<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Framing::Refused(Refusal::HeadTooLarge)
            } else {
                Framing::Partial {
                    send_continue: false,
                }
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Framing::Refused(Refusal::HeadTooLarge),
        Err(_) => return Framing::Refused(Refusal::BadRequest("Malformed HTTP request")),
    };
    if head_len > MAX_HEAD_BYTES {
        return Framing::Refused(Refusal::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Framing::Refused(Refusal::BadRequest("Malformed HTTP request"));
    };

    let mut content_length: Option<usize> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut idempotency_key = None;
    let mut signature = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Framing::Refused(Refusal::BadRequest("Duplicate Content-Length header"));
            }
            let v = h.value;
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Framing::Refused(Refusal::BadRequest("Invalid Content-Length header"));
            }
            // Digits only and at most 19 of them: fits in u64; saturate on 32-bit targets.
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            content_length = Some(usize::try_from(n).unwrap_or(usize::MAX));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding {
                return Framing::Refused(Refusal::BadRequest("Duplicate Transfer-Encoding header"));
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
                return Framing::Refused(Refusal::BadRequest("Duplicate Idempotency-Key header"));
            }
            idempotency_key = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-payment-signature") {
            if signature.is_some() {
                return Framing::Refused(Refusal::BadRequest(
                    "Duplicate X-Payment-Signature header",
                ));
            }
            signature = Some(h.value);
        }
    }

    let body_kind = match (content_length, transfer_encoding) {
        (Some(_), true) => {
            return Framing::Refused(Refusal::BadRequest(
                "Content-Length and Transfer-Encoding together are not accepted",
            ));
        }
        (_, true) if !chunked || version == 0 => {
            return Framing::Refused(Refusal::BadRequest("Unsupported Transfer-Encoding"));
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
    let path = target.split_once('?').map_or(target, |(p, _)| p);

    let rest = &buf[head_len..];
    let (body, used) = match body_kind {
        BodyKind::Length(n) if n > MAX_BODY_BYTES => {
            return Framing::Refused(Refusal::PayloadTooLarge);
        }
        BodyKind::Length(n) if rest.len() < n => {
            return Framing::Partial {
                send_continue: expect_continue && rest.is_empty() && n > 0,
            };
        }
        BodyKind::Length(n) => (Cow::Borrowed(&rest[..n]), head_len + n),
        BodyKind::Chunked => match dechunk(rest) {
            Dechunked::Complete(body, n) => (Cow::Owned(body), head_len + n),
            Dechunked::Partial => {
                return Framing::Partial {
                    send_continue: expect_continue && rest.is_empty(),
                };
            }
            Dechunked::Refused(r) => return Framing::Refused(r),
        },
    };

    Framing::Complete(
        Request {
            method,
            path,
            body,
            keep_alive,
            http10: version == 0,
            idempotency_key,
            signature,
        },
        used,
    )
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

enum Dechunked {
    Complete(Vec<u8>, usize),
    Partial,
    Refused(Refusal),
}

/// Decodes a chunked body (RFC 9112 §7.1), refusing it once it passes the body limit.
fn dechunk(buf: &[u8]) -> Dechunked {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (start, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Dechunked::Partial,
            Err(_) => return Dechunked::Refused(Refusal::BadRequest("Malformed chunked body")),
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > MAX_BODY_BYTES || body.len() + size > MAX_BODY_BYTES {
            return Dechunked::Refused(Refusal::PayloadTooLarge);
        }
        pos += start;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return if buf.len() - pos > MAX_HEAD_BYTES {
                        Dechunked::Refused(Refusal::HeadTooLarge)
                    } else {
                        Dechunked::Partial
                    };
                };
                pos += eol + 2;
                if eol == 0 {
                    return Dechunked::Complete(body, pos);
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Dechunked::Partial;
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Dechunked::Refused(Refusal::BadRequest("Malformed chunked body"));
        }
        pos += size + 2;
    }
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
}
