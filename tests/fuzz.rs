//! Property tests of the code that reads what clients send, before any IO: request framing
//! (`http::request::frame`), order bodies (`api::orders::parse`), webhook bodies
//! (`api::webhook::parse`) and webhook signatures (`api::webhook::verify`).
//!
//! Inputs are arbitrary bytes, a soup of HTTP-ish tokens (which reaches far deeper into the
//! framing code than random bytes), well-formed requests built from parts, and mutations of
//! those. Properties: nothing panics; `frame` never reports a body over 16 KiB nor a length
//! beyond its input; a well-formed request frames to exactly what was built, whatever
//! follows it and however it is cut; ambiguous framing is refused; the parsers agree with a
//! small model of the rules of the API. No services needed; the whole file runs in seconds.

use flashsale::api::{orders, webhook};
use flashsale::config::{MAX_BODY_BYTES, MAX_HEAD_BYTES};
use flashsale::domain::MAX_REFERENCE_LEN;
use flashsale::http::request::{Framer, Framing, Refusal, frame};
use flashsale::http::response::ApiError;
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use proptest::sample::Index;
use sha2::Sha256;

/// `cases` runs of each property; nothing written to disk on failure (the shrunk input is
/// in the failure message).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Framing: invariants that hold for any input.

/// What a `Framing::Complete` says, owned, so that two framings can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framed {
    method: String,
    path: String,
    body: Vec<u8>,
    keep_alive: bool,
    http10: bool,
    idempotency_key: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    used: usize,
}

/// Frames `buf` and checks what must hold for every input: a complete request took at least
/// one byte and no more than there were, and its body is within the limit.
fn frame_checked(buf: &[u8]) -> Result<Option<Framed>, Refusal> {
    checked(buf, frame(buf))
}

/// Feeds `buf` to one incremental framer in the pieces `cuts` make, as a connection receives
/// it, and returns the first answer that is not "more bytes needed" (or the last one).
fn frame_fed(buf: &[u8], cuts: &[Index]) -> Result<Option<Framed>, Refusal> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(buf.len() + 1)).collect();
    ends.push(buf.len());
    ends.sort_unstable();
    let mut f = Framer::default();
    for end in ends {
        match checked(&buf[..end], f.frame(&buf[..end])) {
            Ok(None) if end < buf.len() => continue,
            other => return other,
        }
    }
    Ok(None)
}

fn checked(buf: &[u8], framing: Framing<'_>) -> Result<Option<Framed>, Refusal> {
    match framing {
        Framing::Complete(req, used) => {
            assert!(used > 0, "a request of no bytes");
            assert!(used <= buf.len(), "consumed {used} of {} bytes", buf.len());
            assert!(
                req.body.len() <= MAX_BODY_BYTES,
                "a body of {} bytes",
                req.body.len()
            );
            assert!(req.body.len() <= used);
            Ok(Some(Framed {
                method: req.method.to_string(),
                path: req.path.to_string(),
                body: req.body.to_vec(),
                keep_alive: req.keep_alive,
                http10: req.http10,
                idempotency_key: req.idempotency_key.map(<[u8]>::to_vec),
                signature: req.signature.map(<[u8]>::to_vec),
                used,
            }))
        }
        Framing::Partial { .. } => Ok(None),
        Framing::Refused(r) => Err(r),
    }
}

/// Frames every request in `buf` one after the other, as a connection does.
fn frame_all(buf: &[u8]) {
    let mut at = 0;
    while at < buf.len() {
        match frame_checked(&buf[at..]) {
            Ok(Some(f)) => at += f.used,
            Ok(None) | Err(_) => return,
        }
    }
}

/// Pieces of HTTP: random sequences of them reach states random bytes never do.
const TOKENS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PRI",
    b" ",
    b"  ",
    b"/",
    b"/api/orders",
    b"?a=b",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b":",
    b": ",
    b"Content-Length",
    b"content-length",
    b"Transfer-Encoding",
    b"transfer-encoding",
    b"chunked",
    b"gzip, chunked",
    b"Connection",
    b"close",
    b"keep-alive",
    b"Expect",
    b"100-continue",
    b"Idempotency-Key",
    b"X-Payment-Signature",
    b"Host",
    b"0",
    b"1",
    b"5",
    b"10",
    b"ff",
    b"FFFF",
    b"4000",
    b"4001",
    b"16384",
    b"16385",
    b"99999999999999999999",
    b"18446744073709551615",
    b"+",
    b"-",
    b",",
    b";",
    b";ext=1",
    b"\t",
    b"\0",
    b"\x7f",
    b"\xff",
    b"\xc3\x28",
    b"{",
    b"}",
    b"{\"product_id\":1,\"qty\":1}",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
];

/// `0..max` arbitrary bytes, cheap to generate: a length and a seed (shrinking shortens them).
/// `prop::collection::vec(any::<u8>(), ..)` builds a shrinker per byte, which costs more than
/// the code under test.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..max, any::<u64>()).prop_map(|(len, seed)| {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|ts| ts.concat())
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn frame_survives_arbitrary_bytes(buf in prop::collection::vec(any::<u8>(), 0..2_048)) {
        frame_checked(&buf).ok();
        frame_all(&buf);
    }

    #[test]
    fn frame_survives_token_soup(buf in token_soup()) {
        frame_checked(&buf).ok();
        frame_all(&buf);
    }

    #[test]
    fn frame_survives_a_valid_head_before_soup(soup in token_soup(), chunked in any::<bool>()) {
        let head: &[u8] = if chunked {
            b"POST /api/orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            b"POST /api/orders HTTP/1.1\r\nContent-Length: 24\r\n\r\n"
        };
        let buf = [head, &soup[..]].concat();
        frame_checked(&buf).ok();
        frame_all(&buf);
    }
}

// ---------------------------------------------------------------------------------------
// Framing: well-formed requests built from parts.

#[derive(Debug, Clone)]
enum Body {
    /// `Content-Length`.
    Length(Vec<u8>),
    /// `Transfer-Encoding: chunked`: the chunks (each non-empty), whether they carry an
    /// extension, and trailer fields.
    Chunked(Vec<Vec<u8>>, bool, Vec<(String, String)>),
}

#[derive(Debug, Clone)]
struct Built {
    method: &'static str,
    path: String,
    query: String,
    http10: bool,
    /// Header fields that do not change framing.
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
    signature: Option<String>,
    /// `Connection:` value, if sent.
    connection: Option<&'static str>,
    expect_continue: bool,
    body: Body,
}

impl Built {
    fn render(&self) -> Vec<u8> {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut out = format!(
            "{} {}{} HTTP/{version}\r\n",
            self.method, self.path, self.query
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(k) = &self.idempotency_key {
            out.push_str(&format!("Idempotency-Key: {k}\r\n"));
        }
        if let Some(s) = &self.signature {
            out.push_str(&format!("x-payment-signature: {s}\r\n"));
        }
        if let Some(c) = self.connection {
            out.push_str(&format!("Connection: {c}\r\n"));
        }
        if self.expect_continue {
            out.push_str("Expect: 100-continue\r\n");
        }
        let mut out = out.into_bytes();
        match &self.body {
            Body::Length(b) => {
                out.extend(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend(b);
            }
            Body::Chunked(chunks, ext, trailers) => {
                out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks {
                    let e = if *ext { ";a=b;c" } else { "" };
                    out.extend(format!("{:x}{e}\r\n", c.len()).as_bytes());
                    out.extend(c);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n");
                for (k, v) in trailers {
                    out.extend(format!("{k}: {v}\r\n").as_bytes());
                }
                out.extend(b"\r\n");
            }
        }
        out
    }

    /// What `frame` must report for the rendered request.
    fn expected(&self) -> Framed {
        let close = self.connection == Some("close");
        let keep_alive = if self.http10 {
            self.connection == Some("keep-alive")
        } else {
            !close
        };
        let body = match &self.body {
            Body::Length(b) => b.clone(),
            Body::Chunked(chunks, _, _) => chunks.concat(),
        };
        Framed {
            method: self.method.to_string(),
            path: self.path.clone(),
            body,
            keep_alive,
            http10: self.http10,
            idempotency_key: self.idempotency_key.clone().map(String::into_bytes),
            signature: self.signature.clone().map(String::into_bytes),
            used: self.render().len(),
        }
    }
}

fn header_field() -> impl Strategy<Value = (String, String)> {
    // Values are visible ASCII with inner spaces; leading/trailing blanks are not part of a
    // value, so none are generated.
    ("X-[A-Za-z0-9-]{1,20}", "[!-~]([ -~]{0,40}[!-~])?")
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => bytes(600).prop_map(Body::Length),
        // Near the limit, both sides of it are covered by other properties.
        1 => (MAX_BODY_BYTES - 64..=MAX_BODY_BYTES, any::<u8>())
            .prop_map(|(n, b)| Body::Length(vec![b; n])),
        3 => (
            prop::collection::vec(bytes(300).prop_filter("a chunk is not empty", |c| !c.is_empty()), 0..8),
            any::<bool>(),
            prop::collection::vec(header_field(), 0..3),
        )
            .prop_map(|(c, e, t)| Body::Chunked(c, e, t)),
    ]
}

fn built() -> impl Strategy<Value = Built> {
    (
        prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH"][..]),
        "/[A-Za-z0-9/_.~%-]{0,60}",
        prop::option::of("[A-Za-z0-9=&]{0,20}"),
        any::<bool>(),
        prop::collection::vec(header_field(), 0..12),
        prop::option::of("[!-~]{1,255}"),
        prop::option::of("[0-9a-f]{64}"),
        prop::sample::select(&[None, Some("close"), Some("keep-alive")][..]),
        any::<bool>(),
        body(),
    )
        .prop_map(
            |(method, path, query, http10, headers, key, sig, connection, expect, body)| {
                // Chunked framing is HTTP/1.1 only: an HTTP/1.0 request gets a length.
                let body = match (http10, body) {
                    (true, Body::Chunked(c, _, _)) => Body::Length(c.concat()),
                    (_, b) => b,
                };
                Built {
                    method,
                    path,
                    query: query.map(|q| format!("?{q}")).unwrap_or_default(),
                    http10,
                    headers,
                    idempotency_key: key,
                    signature: sig,
                    connection,
                    expect_continue: expect,
                    body,
                }
            },
        )
}

/// A header line that makes the framing of `b` ambiguous.
fn ambiguity() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "Content-Length: 0\r\n",
            "Content-Length: 7\r\n",
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: identity\r\n",
        ][..],
    )
}

/// Inserts `line` right after the request line.
fn with_header_line(raw: &[u8], line: &str) -> Vec<u8> {
    let at = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    [&raw[..at], line.as_bytes(), &raw[at..]].concat()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    DuplicateLine(Index),
    Splice(Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Truncate),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), token_soup()).prop_map(|(i, s)| Mutation::Splice(i, s)),
    ]
}

fn mutate(mut raw: Vec<u8>, m: &Mutation) -> Vec<u8> {
    if raw.is_empty() {
        return raw;
    }
    match m {
        Mutation::Flip(i, x) => {
            let i = i.index(raw.len());
            raw[i] ^= x;
        }
        Mutation::Insert(i, b) => raw.insert(i.index(raw.len() + 1), *b),
        Mutation::Delete(i) => {
            raw.remove(i.index(raw.len()));
        }
        Mutation::Truncate(i) => raw.truncate(i.index(raw.len())),
        Mutation::DuplicateLine(i) => {
            // Repeat the line around a random position (a header, most of the time).
            let at = i.index(raw.len());
            let start = raw[..at]
                .windows(2)
                .rposition(|w| w == b"\r\n")
                .map_or(0, |p| p + 2);
            let end = raw[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(raw.len(), |p| at + p + 2);
            let line = raw[start..end].to_vec();
            raw.splice(end..end, line);
        }
        Mutation::Splice(i, s) => {
            let at = i.index(raw.len() + 1);
            raw.splice(at..at, s.iter().copied());
        }
    }
    raw
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn a_well_formed_request_frames_to_what_was_built(b in built()) {
        let raw = b.render();
        prop_assume!(raw.len() - b.expected().body.len() <= MAX_HEAD_BYTES);
        prop_assert_eq!(frame_checked(&raw), Ok(Some(b.expected())));
    }

    #[test]
    fn what_follows_a_request_does_not_change_how_it_frames(
        b in built(),
        tail in prop_oneof![
            bytes(1_000),
            token_soup(),
            built().prop_map(|n| n.render()),
        ],
    ) {
        let raw = b.render();
        let alone = frame_checked(&raw);
        let followed = frame_checked(&[&raw[..], &tail[..]].concat());
        prop_assert_eq!(&followed, &alone);
        prop_assert_eq!(followed, Ok(Some(b.expected())));
    }

    #[test]
    fn two_pipelined_requests_frame_one_after_the_other(a in built(), b in built()) {
        let buf = [a.render(), b.render()].concat();
        let first = frame_checked(&buf).unwrap().unwrap();
        prop_assert_eq!(&first, &a.expected());
        prop_assert_eq!(frame_checked(&buf[first.used..]), Ok(Some(b.expected())));
    }

    #[test]
    fn bytes_fed_in_pieces_frame_as_all_at_once(
        buf in prop_oneof![
            built().prop_map(|b| b.render()),
            (built(), token_soup()).prop_map(|(b, t)| [b.render(), t].concat()),
            token_soup(),
        ],
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        prop_assert_eq!(frame_fed(&buf, &cuts), frame_checked(&buf));
    }

    #[test]
    fn every_cut_of_a_request_waits_for_more(b in built(), cut in any::<Index>()) {
        let raw = b.render();
        let n = cut.index(raw.len());
        prop_assert_eq!(frame_checked(&raw[..n]), Ok(None), "cut at {} of {}", n, raw.len());
    }

    #[test]
    fn ambiguous_framing_is_refused(b in built(), line in ambiguity()) {
        let raw = with_header_line(&b.render(), line);
        let r = frame_checked(&raw);
        prop_assert!(
            matches!(r, Err(Refusal::BadRequest(_))),
            "{:?} for {:?}", r, String::from_utf8_lossy(&raw[..raw.len().min(300)])
        );
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_arrives(
        b in built(),
        len in (MAX_BODY_BYTES as u64 + 1)..=9_999_999_999_999_999_999u64,
    ) {
        let mut b = b;
        b.body = Body::Length(Vec::new());
        let raw = b.render();
        let head = String::from_utf8(raw).unwrap()
            .replace("Content-Length: 0\r\n", &format!("Content-Length: {len}\r\n"));
        prop_assert_eq!(frame_checked(head.as_bytes()), Err(Refusal::PayloadTooLarge));
    }

    #[test]
    fn mutated_requests_never_break_the_invariants(
        b in built(),
        ms in prop::collection::vec(mutation(), 1..4),
    ) {
        let raw = ms.iter().fold(b.render(), mutate);
        frame_checked(&raw).ok();
        frame_all(&raw);
    }
}

// ---------------------------------------------------------------------------------------
// Order bodies: a model of the rules (product_id an integer >= 1, qty an integer >= 1
// — its upper bound, max_per_order, is checked later against the product — numeric strings
// accepted, user_id an optional string of 1..=64 characters, Idempotency-Key 1..=255 visible
// ASCII characters).

/// A JSON value for a field, with what the model makes of it.
#[derive(Debug, Clone)]
enum Field {
    Absent,
    /// JSON text and, for an integer field, the value a correct parser finds (None: invalid).
    Json(String, Option<i64>),
}

/// A JSON value given as text, and the positive integer it stands for, if any.
fn int_field() -> impl Strategy<Value = Field> {
    let int = any::<i128>().prop_map(|n| {
        let n = n >> (n as u8 % 127); // every magnitude, small ones most
        Field::Json(n.to_string(), positive(n))
    });
    let small = (-3i64..20).prop_map(|n| Field::Json(n.to_string(), positive(n.into())));
    // Whole floats are integers (JSON Schema's rule); between 2^53 and 10^18 the text Rust
    // prints is not the float's exact value, so the model leaves those out.
    let float = any::<f64>()
        .prop_filter("finite, exact", |f| {
            f.is_finite()
                && (f.fract() != 0.0 || f.abs() < 9_007_199_254_740_992.0 || f.abs() >= 1e18)
        })
        .prop_map(|f| {
            let v = if f.fract() == 0.0 && f.abs() < 1e18 {
                positive(f as i128)
            } else {
                None
            };
            Field::Json(format!("{f:?}"), v)
        });
    let exponent = ("-?(0|[1-9][0-9]{0,2})(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}").prop_map(|s| {
        let v = exponent_value(&s);
        Field::Json(s, v)
    });
    let numeric_string = "[ ]{0,1}-?[0-9]{1,25}[ ]{0,1}".prop_map(|s| {
        let v = numeric_string_value(&s);
        Field::Json(serde_json::to_string(&s).unwrap(), v)
    });
    let any_string = any::<String>().prop_map(|s| {
        let v = numeric_string_value(&s);
        Field::Json(serde_json::to_string(&s).unwrap(), v)
    });
    let other = prop::sample::select(
        &[
            "true",
            "false",
            "null",
            "[]",
            "[1]",
            "{}",
            "{\"a\":1}",
            "\"\"",
            "\"+1\"",
            "\"1.0\"",
            "\"1e3\"",
            "\"0x10\"",
            "-0",
        ][..],
    )
    .prop_map(|s| Field::Json(s.to_string(), None));
    prop_oneof![
        1 => Just(Field::Absent),
        4 => int,
        4 => small,
        1 => float,
        1 => exponent,
        2 => numeric_string,
        1 => any_string,
        2 => other,
    ]
}

/// The published schema's range: 1 to 10^18 - 1.
fn positive(n: i128) -> Option<i64> {
    i64::try_from(n)
        .ok()
        .filter(|n| (1..=999_999_999_999_999_999).contains(n))
}

/// The model of a numeric string: ASCII digits only (no blanks, no sign).
fn numeric_string_value(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i128>().ok().and_then(positive)
}

/// The model of `-?M(.F)?eX` with at most 3 digits in each part: whole when the exponent
/// shifts every non-zero fractional digit left of the point.
fn exponent_value(s: &str) -> Option<i64> {
    let (mantissa, exp) = s.split_once(['e', 'E'])?;
    let exp: i32 = exp.parse().ok()?;
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let m: i128 = format!("{int}{frac}").parse().ok()?;
    let shift = exp - frac.len() as i32;
    let v = if shift >= 0 {
        if m != 0 && shift > 20 {
            return None; // far beyond the range
        }
        m * 10i128.pow(shift.unsigned_abs().min(20))
    } else {
        let d = 10i128.checked_pow(shift.unsigned_abs())?;
        if m % d != 0 {
            return None;
        }
        m / d
    };
    positive(if negative { -v } else { v })
}

/// `user_id`: JSON text and the valid value, `Ok(None)` when absent or null.
#[derive(Debug, Clone)]
enum UserId {
    Absent,
    Json(String, Result<Option<String>, ()>),
}

fn user_id_field() -> impl Strategy<Value = UserId> {
    let string = any::<String>().prop_map(|s| {
        let n = s.chars().count();
        let v = if (1..=64).contains(&n) {
            Ok(Some(s.clone()))
        } else {
            Err(())
        };
        UserId::Json(serde_json::to_string(&s).unwrap(), v)
    });
    let sized = (0usize..70, any::<char>()).prop_map(|(n, c)| {
        let s: String = std::iter::repeat_n(c, n).collect();
        let v = if (1..=64).contains(&n) {
            Ok(Some(s.clone()))
        } else {
            Err(())
        };
        UserId::Json(serde_json::to_string(&s).unwrap(), v)
    });
    prop_oneof![
        2 => Just(UserId::Absent),
        1 => Just(UserId::Json("null".into(), Ok(None))),
        3 => string,
        3 => sized,
        1 => prop::sample::select(&["1", "true", "[]", "{}"][..])
            .prop_map(|s| UserId::Json(s.to_string(), Err(()))),
    ]
}

fn idempotency_key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        "[!-~]{1,255}".prop_map(String::into_bytes),
        bytes(300),
    ])
}

fn key_valid(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= 255 && k.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A JSON object with the three fields (in any order) and unknown ones.
fn order_json(
    pid: &Field,
    qty: &Field,
    user: &UserId,
    extra: &[(String, String)],
    order: &[usize],
) -> String {
    let mut members: Vec<String> = Vec::new();
    if let Field::Json(t, _) = pid {
        members.push(format!("\"product_id\": {t}"));
    }
    if let Field::Json(t, _) = qty {
        members.push(format!("\"qty\":{t}"));
    }
    if let UserId::Json(t, _) = user {
        members.push(format!("\"user_id\" : {t}"));
    }
    for (k, v) in extra {
        members.push(format!("{}: {v}", serde_json::to_string(k).unwrap()));
    }
    let mut shuffled: Vec<String> = Vec::with_capacity(members.len());
    let mut rest = members;
    for i in order {
        if rest.is_empty() {
            break;
        }
        shuffled.push(rest.remove(i % rest.len()));
    }
    shuffled.extend(rest);
    format!("{{{}}}", shuffled.join(","))
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("x_[a-z]{1,5}", inner), 0..4).prop_map(|v| {
                let m: std::collections::BTreeMap<_, _> = v.into_iter().collect();
                let members: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

fn extra_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("x_[a-z_]{1,8}", json_value(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(config(1_500))]

    #[test]
    fn order_parse_survives_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..512),
        key in idempotency_key(),
    ) {
        check_order(&body, key.as_deref());
    }

    #[test]
    fn order_parse_survives_mutated_json(
        pid in int_field(),
        qty in int_field(),
        ms in prop::collection::vec(mutation(), 1..3),
    ) {
        let body = order_json(&pid, &qty, &UserId::Absent, &[], &[]);
        check_order(&ms.iter().fold(body.into_bytes(), mutate), None);
    }

    #[test]
    fn order_parse_agrees_with_the_model(
        pid in int_field(),
        qty in int_field(),
        user in user_id_field(),
        extra in extra_fields(),
        order in prop::collection::vec(any::<usize>(), 0..6),
        key in idempotency_key(),
    ) {
        let body = order_json(&pid, &qty, &user, &extra, &order);
        let got = orders::parse(body.as_bytes(), key.as_deref());
        let want_pid = match &pid { Field::Json(_, v) => *v, Field::Absent => None };
        let want_qty = match &qty { Field::Json(_, v) => *v, Field::Absent => None };
        let want_user = match &user { UserId::Json(_, v) => v.clone(), UserId::Absent => Ok(None) };
        let want_key = key.as_deref().map(|k| key_valid(k).then(|| String::from_utf8(k.to_vec()).unwrap()));
        match (want_pid, want_qty, want_user, want_key) {
            // Control characters are valid JSON but not in an id (PostgreSQL text cannot even hold
            // NUL): refusing them is right too.
            (Some(_), Some(_), Ok(Some(u)), None | Some(Some(_)))
                if u.chars().any(char::is_control)
                    && matches!(&got, Err(ApiError::Validation(e)) if e.contains_key("user_id")) => {}
            (Some(p), Some(q), Ok(u), None | Some(Some(_))) => {
                let o = got.unwrap_or_else(|e| panic!("{body}: {e:?}"));
                prop_assert_eq!(o.product_id.get(), p);
                prop_assert_eq!(o.qty, q);
                prop_assert_eq!(o.user_id, u);
                prop_assert_eq!(o.idempotency_key.map(String::into_bytes), key);
            }
            _ => prop_assert!(
                matches!(got, Err(ApiError::Validation(ref e)) if !e.is_empty()),
                "{}: {:?}", body, got
            ),
        }
    }
}

/// `orders::parse` on any input: no panic, and an accepted order is within the rules.
fn check_order(body: &[u8], key: Option<&[u8]>) {
    match orders::parse(body, key) {
        Ok(o) => {
            assert!(o.product_id.get() >= 1);
            assert!(o.qty >= 1);
            if let Some(u) = &o.user_id {
                assert!((1..=64).contains(&u.chars().count()));
            }
            if let Some(k) = &o.idempotency_key {
                assert!(key_valid(k.as_bytes()));
            }
        }
        Err(ApiError::MalformedJson) => {}
        Err(ApiError::Validation(e)) => assert!(!e.is_empty()),
        Err(e) => panic!("unexpected {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks.

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap()
}

fn sign(key: &[u8], body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn status_field() -> impl Strategy<Value = (Option<String>, Option<bool>)> {
    prop_oneof![
        Just((None, None)),
        Just((Some("\"success\"".to_string()), Some(true))),
        Just((Some("\"failure\"".to_string()), Some(false))),
        prop::sample::select(
            &[
                "\"processed\"",
                "\"SUCCESS\"",
                "\" success\"",
                "\"\"",
                "null",
                "true",
                "1",
                "[\"success\"]",
            ][..]
        )
        .prop_map(|s| (Some(s.to_string()), None)),
        any::<String>().prop_map(|s| {
            let v = match s.as_str() {
                "success" => Some(true),
                "failure" => Some(false),
                _ => None,
            };
            (Some(serde_json::to_string(&s).unwrap()), v)
        }),
    ]
}

fn reference_field() -> impl Strategy<Value = (Option<String>, Option<String>)> {
    let string = any::<String>().prop_map(|s| {
        let ok = (1..=MAX_REFERENCE_LEN).contains(&s.chars().count());
        (Some(serde_json::to_string(&s).unwrap()), ok.then_some(s))
    });
    let ours = "[0-9]{1,5}-[0-9A-Z]{26}".prop_map(|s| (Some(format!("\"{s}\"")), Some(s)));
    prop_oneof![
        1 => Just((None, None)),
        3 => string,
        3 => ours,
        1 => prop::sample::select(&["null", "5", "{}", "\"\""][..])
            .prop_map(|s| (Some(s.to_string()), None)),
    ]
}

proptest! {
    #![proptest_config(config(700))]

    #[test]
    fn webhook_parse_survives_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        match webhook::parse(&body) {
            Ok(v) => {
                prop_assert!((1..=MAX_REFERENCE_LEN).contains(&v.reference.chars().count()));
            }
            Err(ApiError::MalformedJson) => {}
            Err(ApiError::Validation(e)) => prop_assert!(!e.is_empty()),
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn webhook_parse_agrees_with_the_model(
        (ref_json, ref_ok) in reference_field(),
        (status_json, success) in status_field(),
        extra in extra_fields(),
        swap in any::<bool>(),
    ) {
        let mut members = Vec::new();
        if let Some(r) = &ref_json {
            members.push(format!("\"order_reference\":{r}"));
        }
        if let Some(s) = &status_json {
            members.push(format!("\"status\": {s}"));
        }
        if swap {
            members.reverse();
        }
        members.extend(extra.iter().map(|(k, v)| format!("\"{k}\":{v}")));
        let body = format!("{{{}}}", members.join(","));
        let got = webhook::parse(body.as_bytes());
        match (ref_ok, success) {
            // Control characters are valid JSON but not in an id (PostgreSQL text cannot even hold
            // NUL): refusing them is right too.
            (Some(reference), Some(_))
                if reference.chars().any(char::is_control)
                    && matches!(&got, Err(ApiError::Validation(e)) if e.contains_key("order_reference")) => {}
            (Some(reference), Some(success)) => {
                prop_assert_eq!(got, Ok(webhook::PaymentNotice { reference, success }))
            }
            _ => prop_assert!(matches!(got, Err(ApiError::Validation(_))), "{}: {:?}", body, got),
        }
    }

}

proptest! {
    // HMAC-SHA256 is slow in a debug build: fewer cases.
    #![proptest_config(config(400))]

    #[test]
    fn verify_never_panics_and_accepts_only_the_right_signature(
        key in bytes(80),
        body in bytes(300),
        junk in prop_oneof![
            bytes(130),
            "[0-9a-fA-F]{0,130}".prop_map(String::into_bytes),
        ],
        at in any::<Index>(),
        blank in prop::sample::select(&["", " ", "\t", "  "][..]),
    ) {
        let m = mac(&key);
        let right = sign(&key, &body);
        prop_assert!(webhook::verify(&m, Some(right.as_bytes()), &body));
        // Blanks around the value are not part of it (httparse trims them anyway).
        let padded = format!("{blank}{right}{blank}");
        prop_assert!(webhook::verify(&m, Some(padded.as_bytes()), &body));
        prop_assert!(!webhook::verify(&m, None, &body));
        // Any other value: random bytes, random hex of any length.
        if junk != right.as_bytes() && junk.trim_ascii().to_ascii_lowercase() != right.as_bytes() {
            prop_assert!(!webhook::verify(&m, Some(&junk), &body));
        }
        // One hex digit changed to another value.
        let mut wrong = right.clone().into_bytes();
        let i = at.index(wrong.len());
        wrong[i] = if wrong[i] == b'0' { b'7' } else { b'0' };
        prop_assert!(!webhook::verify(&m, Some(&wrong), &body));
        // Cut short, or one byte longer.
        prop_assert!(!webhook::verify(&m, Some(&right.as_bytes()[..i]), &body));
        let longer = format!("{right}0");
        prop_assert!(!webhook::verify(&m, Some(longer.as_bytes()), &body));
        // The right signature for another body.
        let mut other = body.clone();
        other.push(b' ');
        prop_assert!(!webhook::verify(&m, Some(right.as_bytes()), &other));
    }
}
