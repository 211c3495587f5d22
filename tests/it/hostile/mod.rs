//! Hostile clients against the real server, one file per theme: `slow` (slow senders,
//! crowds of idle connections, clients that never read), `framing` (oversized heads, request
//! smuggling shapes, chunked bodies, not HTTP at all), `bodies` (bad bytes, absurd JSON,
//! numbers, sizes, strings PostgreSQL cannot store) and `webhooks` (forged and malformed
//! webhooks). Each must get a clear 4xx or a closed connection — never a 5xx, never a panic —
//! and change nothing: afterwards the product's stock (GET), the number of rows in `orders`
//! and `webhooks` are what they were, no 5xx was ever counted in `/metrics`, the log has no
//! panic, and a new connection is served. This file holds what they share.

mod bodies;
mod framing;
mod keys;
mod lookups;
mod setup;
mod slow;
mod webhooks;

use crate::common::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// How long a test waits for an answer or a close that should come promptly (longer than
/// any header timeout used here). Only a failing test ever waits this long.
const PROMPT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// A raw connection whose fate (answered, closed, left open) the test observes.

struct Conn(std::io::BufReader<TcpStream>);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(PROMPT)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn(std::io::BufReader::new(s))
    }

    /// Writes `bytes`; a server that refuses early may close before all of them went out,
    /// which is fine, so a write error is not a failure.
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.0.get_mut().write_all(bytes);
    }

    /// The next response, `None` when the connection ended first.
    fn response(&mut self) -> Option<Resp> {
        read_response(&mut self.0)
    }

    /// Reads the interim `100 Continue` (`read_response` would skip it).
    fn expect_continue(&mut self) {
        use std::io::BufRead;
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("HTTP/1.1 100"),
            "wanted 100 Continue, got {line:?}"
        );
        line.clear();
        self.0.read_line(&mut line).unwrap();
        assert_eq!(line, "\r\n", "100 Continue has no headers");
    }

    /// True when the server closed the connection (EOF or reset), false when it is still
    /// open after `PROMPT`; bytes other than a close are a failure.
    fn closed(&mut self) -> bool {
        assert!(
            self.0.buffer().is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(self.0.buffer())
        );
        peer_closed(self.0.get_mut())
    }
}

/// True when the peer closed `s` (EOF or reset), false when it is still open after `PROMPT`;
/// bytes are a failure.
fn peer_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PROMPT)).unwrap();
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// The start of `bytes`, printable, for assertion messages.
fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(100)]);
    format!("{s:?}")
}

/// An error body as the API shapes every one: JSON with `message` and `code`.
fn assert_error_body(r: &Resp, code: &str, what: &str) {
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let v = r.json();
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert_eq!(v["code"], code, "{what}: {v}");
}

/// What a hostile request may get.
enum Want<'a> {
    /// Exactly this status and code, then the server closes the connection.
    Closing(u16, &'a str),
    /// One of these 4xx statuses and then a close, or a close without an answer.
    FourXxOrClose(&'a [u16]),
}

/// Sends `bytes` on a new connection and checks the refusal.
fn hostile(addr: SocketAddr, bytes: &[u8], want: Want<'_>) {
    let what = show(bytes);
    let mut c = Conn::open(addr);
    c.send(bytes);
    match (want, c.response()) {
        (Want::Closing(status, code), Some(r)) => {
            assert_eq!(
                r.status,
                status,
                "{what}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            assert_error_body(&r, code, &what);
            assert_eq!(r.header("connection"), Some("close"), "{what}");
        }
        (Want::Closing(status, _), None) => panic!("{what}: closed without the {status}"),
        (Want::FourXxOrClose(statuses), Some(r)) => {
            assert!(
                statuses.contains(&r.status),
                "{what}: got {} {:?}, wanted one of {statuses:?} or a close",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.header("connection"), Some("close"), "{what}");
            eprintln!("{what}: {} {}", r.status, r.code());
        }
        (Want::FourXxOrClose(_), None) => eprintln!("{what}: closed without an answer"),
    }
    assert!(c.closed(), "{what}: the connection was left open");
}

// ---------------------------------------------------------------------------------------
// Requests.

fn order_body(pid: i64, qty: i64) -> String {
    json!({"product_id": pid, "qty": qty}).to_string()
}

/// A complete request with a `Content-Length` body and extra header lines.
fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A valid `POST /api/orders` for one unit: the payload smuggling tries to slip through.
fn smuggled_order(pid: i64) -> String {
    String::from_utf8(request(
        "POST",
        "/api/orders",
        "",
        order_body(pid, 1).as_bytes(),
    ))
    .unwrap()
}

/// A body encoded as `Transfer-Encoding: chunked`, in chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in body.chunks(size).enumerate() {
        // Upper-case hex and a chunk extension on every other chunk: both are legal.
        let ext = if i % 2 == 1 { ";note=x" } else { "" };
        out.extend(format!("{:X}{ext}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

/// A POST of raw body bytes on a keep-alive connection.
fn post_raw(c: &mut Client, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    c.request("POST", path, headers, body)
}

// ---------------------------------------------------------------------------------------
// The state that must not change, and the health that must remain.

#[derive(Debug, PartialEq, Eq)]
struct State {
    stock: i64,
    orders: i64,
    webhooks: i64,
}

fn stock_via_get(addr: SocketAddr, pid: i64) -> i64 {
    let r = Client::connect(addr).get(&format!("/api/products/{pid}"));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["stock"].as_i64().expect("integer stock")
}

fn count(env: &Env, table: &str) -> i64 {
    env.pg()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// Stock as clients see it and row counts, once every write reached PostgreSQL.
fn state(env: &Env, srv: &Server, pid: i64) -> State {
    wait_until("journal drained", || {
        (env.journal_len(pid) == 0).then_some(())
    });
    State {
        stock: stock_via_get(srv.addr, pid),
        orders: count(env, "orders"),
        webhooks: count(env, "webhooks"),
    }
}

/// The server answers `/health` on a new connection, never answered a 5xx and never
/// panicked.
fn assert_healthy(srv: &Server) {
    let mut c = Client::connect(srv.addr);
    let r = c.get("/health");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let metrics = String::from_utf8_lossy(&c.get("/metrics").body).into_owned();
    let fives: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("flashsale_http_requests_total") && l.contains("status=\"5"))
        .collect();
    assert!(fives.is_empty(), "the server answered 5xx: {fives:?}");
    let logs = srv.logs();
    assert!(
        !logs.contains("panicked"),
        "panic in the server log:\n{logs}"
    );
}

/// After the hostile part of a test: nothing changed and the server is fine.
fn assert_unharmed(env: &Env, srv: &Server, pid: i64, before: &State) {
    assert_eq!(
        &state(env, srv, pid),
        before,
        "a hostile request changed state"
    );
    assert_healthy(srv);
}

/// A database, a product of 100 units at 5.00 and a server (with extra variables).
fn setup(vars: &[(&str, &str)]) -> (Env, i64, Server) {
    let env = Env::new();
    let pid = env.product(100, 500);
    let srv = Server::start_with(&env, vars);
    (env, pid, srv)
}

// ---------------------------------------------------------------------------------------
// The server process seen from outside.

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Raises this process's open-file limit to the hard limit; returns the new soft limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

// ---------------------------------------------------------------------------------------
// Deeply nested JSON (bodies and webhooks).

fn nested_arrays(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "{\"\":".repeat(depth), "}".repeat(depth))
}
