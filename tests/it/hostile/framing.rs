//! Framing: oversized heads, request smuggling shapes, chunked bodies, and bytes that are
//! not HTTP at all.

use super::*;

// ---------------------------------------------------------------------------------------
// Oversized heads.

#[test]
fn oversized_heads_are_refused() {
    let (env, pid, srv) = setup(&[]);
    let before = state(&env, &srv, pid);
    let order = order_body(pid, 1);

    // One header value of 17 KiB: the head passes 16 KiB.
    let big = format!("X-Big: {}\r\n", "a".repeat(17 * 1024));
    hostile(
        srv.addr,
        &request("POST", "/api/orders", &big, order.as_bytes()),
        Want::FourXxOrClose(&[431]),
    );
    // Many ordinary lines adding up to more than 16 KiB.
    let lines: String = (0..400)
        .map(|i| format!("X-Line-{i}: {}\r\n", "b".repeat(40)))
        .collect();
    hostile(
        srv.addr,
        &request("POST", "/api/orders", &lines, order.as_bytes()),
        Want::FourXxOrClose(&[431]),
    );
    // A head that never ends.
    let mut endless = b"GET /health HTTP/1.1\r\n".to_vec();
    endless.extend("X-More: cccccccccccccccc\r\n".repeat(1000).as_bytes());
    hostile(srv.addr, &endless, Want::FourXxOrClose(&[431]));
    // A request line alone longer than 16 KiB.
    let long_path = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(17 * 1024));
    hostile(srv.addr, long_path.as_bytes(), Want::FourXxOrClose(&[431]));

    // More than 64 header lines, the head itself small: a clear 431.
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    hostile(
        srv.addr,
        &request("POST", "/api/orders", &many, order.as_bytes()),
        Want::Closing(431, "header_too_large"),
    );
    // The limit itself is fine: 64 lines in all (Host, 62 more, Content-Length).
    let at_limit: String = (0..62).map(|i| format!("X-{i}: v\r\n")).collect();
    let r = Client::connect(srv.addr).raw(&request("GET", "/health", &at_limit, b""));
    assert_eq!(r.status, 200, "64 header lines are allowed");

    assert_unharmed(&env, &srv, pid, &before);
}

// ---------------------------------------------------------------------------------------
// Request smuggling: ambiguous framing is refused and the connection closed, so bytes that
// a different parser would take as a second request are never run.

/// Each shape carries a complete, valid order where some parser could see a second request.
fn smuggling_shapes(inner: &str) -> Vec<(&'static str, String)> {
    let n = inner.len();
    let start = "POST /api/orders HTTP/1.1\r\nHost: test\r\n";
    vec![
        (
            "CL then TE",
            format!(
                "{start}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
                n + 5
            ),
        ),
        (
            "TE then CL",
            format!(
                "{start}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{inner}"
            ),
        ),
        (
            "two equal CL",
            format!("{start}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}{inner}"),
        ),
        (
            "two different CL",
            format!(
                "{start}Content-Length: 2\r\nContent-Length: {}\r\n\r\n{{}}{inner}",
                n + 2
            ),
        ),
        (
            "CL list",
            format!("{start}Content-Length: 2, 2\r\n\r\n{{}}{inner}"),
        ),
        (
            "CL with a plus sign",
            format!("{start}Content-Length: +2\r\n\r\n{{}}{inner}"),
        ),
        (
            "CL negative",
            format!("{start}Content-Length: -2\r\n\r\n{{}}{inner}"),
        ),
        (
            "CL in hex",
            format!("{start}Content-Length: 0x2\r\n\r\n{{}}{inner}"),
        ),
        (
            "TE gzip, chunked",
            format!("{start}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{inner}"),
        ),
        (
            "TE identity",
            format!("{start}Transfer-Encoding: identity\r\n\r\n{inner}"),
        ),
        (
            "TE twice",
            format!(
                "{start}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}"
            ),
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST /api/orders HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}"
            ),
        ),
        (
            "space before the colon",
            format!("{start}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{inner}"),
        ),
        (
            "folded TE",
            format!("{start}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{inner}"),
        ),
        (
            "chunk size with junk",
            format!("{start}Transfer-Encoding: chunked\r\n\r\n2g\r\n{{}}\r\n0\r\n\r\n{inner}"),
        ),
        (
            "chunk data longer than its size",
            format!("{start}Transfer-Encoding: chunked\r\n\r\n1\r\n{{}}\r\n0\r\n\r\n{inner}"),
        ),
    ]
}

#[test]
fn smuggling_shapes_get_400_and_a_closed_connection() {
    let (env, pid, srv) = setup(&[]);
    let before = state(&env, &srv, pid);
    for (name, raw) in smuggling_shapes(&smuggled_order(pid)) {
        eprintln!("smuggling shape: {name}");
        hostile(srv.addr, raw.as_bytes(), Want::Closing(400, "bad_request"));
    }
    // After a good request on the same connection too: the good one is answered, the
    // ambiguous one refused, and nothing behind it runs.
    let (_, cl_te) = &smuggling_shapes(&smuggled_order(pid))[0];
    let mut c = Conn::open(srv.addr);
    c.send(&[&request("GET", "/health", "", b"")[..], cl_te.as_bytes()].concat());
    assert_eq!(c.response().map(|r| r.status), Some(200));
    let r = c.response().expect("the refusal");
    assert_eq!(r.status, 400);
    assert!(c.closed());

    assert_unharmed(&env, &srv, pid, &before);
}

#[test]
fn a_valid_chunked_order_is_accepted() {
    let (env, pid, srv) = setup(&[]);
    let before = state(&env, &srv, pid);
    let body = json!({"product_id": pid, "qty": 2, "user_id": "chunky"}).to_string();
    let mut raw =
        b"POST /api/orders HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunked(body.as_bytes(), 7));
    // Pipelined behind it: framing must end exactly where the chunked body ends.
    raw.extend(format!("GET /api/products/{pid} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    let mut c = Conn::open(srv.addr);
    c.send(&raw);
    let r = c.response().expect("an answer to the chunked order");
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(
        (v["qty"].as_i64(), v["amount_cents"].as_i64()),
        (Some(2), Some(1000))
    );
    let p = c.response().expect("the pipelined GET");
    assert_eq!(p.json()["stock"], before.stock - 2);

    // The same with `Expect: 100-continue`: the head first, then the chunks.
    let mut c = Conn::open(srv.addr);
    c.send(b"POST /api/orders HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    c.expect_continue();
    c.send(&chunked(order_body(pid, 1).as_bytes(), 5));
    assert_eq!(c.response().map(|r| r.status), Some(202));

    assert_eq!(
        state(&env, &srv, pid),
        State {
            stock: before.stock - 3,
            orders: before.orders + 2,
            webhooks: 0
        }
    );
    env.assert_conserved(pid, 100);
    assert_healthy(&srv);
}

// ---------------------------------------------------------------------------------------
// Not HTTP at all.

/// A TLS 1.2 ClientHello for `localhost`, as a browser sends to an `https://` URL.
fn tls_client_hello() -> Vec<u8> {
    let sni = b"localhost";
    let mut ext = vec![0x00, 0x00]; // server_name
    ext.extend(((sni.len() + 5) as u16).to_be_bytes());
    ext.extend(((sni.len() + 3) as u16).to_be_bytes());
    ext.push(0x00);
    ext.extend((sni.len() as u16).to_be_bytes());
    ext.extend(sni);
    let mut hello = vec![0x03, 0x03];
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    hello.push(0x00); // no session id
    hello.extend([0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // two cipher suites
    hello.extend([0x01, 0x00]); // null compression
    hello.extend((ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// Deterministic noise.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn garbage_and_tls_on_the_plain_port_are_refused() {
    let (env, pid, srv) = setup(&[("FLASHSALE_HEADER_TIMEOUT_SECS", "2")]);
    let before = state(&env, &srv, pid);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("TLS ClientHello", tls_client_hello()),
        ("noise", noise(1_000, 0x9e37_79b9_7f4a_7c15)),
        ("more noise", noise(40_000, 42)),
        ("NUL bytes", vec![0; 100]),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("unknown version", b"GET /health HTTP/9.9\r\n\r\n".to_vec()),
        ("no version", b"GET /health\r\n\r\n".to_vec()),
        ("empty lines only", b"\r\n\r\n\r\n\r\n".to_vec()),
        ("a huge method", vec![b'A'; 20_000]),
    ];
    for (name, bytes) in inputs {
        eprintln!("garbage: {name}");
        hostile(srv.addr, &bytes, Want::FourXxOrClose(&[400, 408, 431]));
    }
    assert_unharmed(&env, &srv, pid, &before);
}

// ---------------------------------------------------------------------------------------
// Framing that never ends, and lines that do not end with CRLF.

/// Sends `head`, then `filler` over and over (up to `limit` bytes), until the server stops
/// taking bytes (it closed the connection). Returns how many filler bytes went out.
fn flood(addr: SocketAddr, head: &[u8], filler: &[u8], limit: usize) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    if s.write_all(head).is_err() {
        return 0;
    }
    let mut sent = 0;
    while sent < limit {
        if s.write_all(filler).is_err() {
            break;
        }
        sent += filler.len();
    }
    sent
}

#[test]
fn endless_chunk_extensions_and_trailers_are_cut_off_at_the_budget() {
    // Each attacker offers 32 MiB; the server must close each after its 16 KiB budget. What
    // the kernel's socket buffers take before the close is reported is well under the limit.
    const OFFERED: usize = 32 << 20;
    let (env, pid, srv) = setup(&[]);
    let before = state(&env, &srv, pid);
    let rss_before = rss_kib(srv.pid());
    let head = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let ext = [&head[..], b"1;ext="].concat();
    let trailers = [&head[..], b"0\r\n"].concat();
    let attackers: Vec<_> = [
        (ext.clone(), b"a".repeat(4096)),
        (ext, b"b".repeat(4096)),
        (
            trailers.clone(),
            b"X-Trailer: vvvvvvvvvvvvvvvvvvvv\r\n".repeat(100),
        ),
        (
            trailers,
            b"X-Other: wwwwwwwwwwwwwwwwwwwwwwwww\r\n".repeat(100),
        ),
    ]
    .into_iter()
    .map(|(h, f)| {
        let addr = srv.addr;
        std::thread::spawn(move || flood(addr, &h, &f, OFFERED))
    })
    .collect();
    // A buyer is served while they flood.
    let mut buyer = Client::connect(srv.addr);
    let r = buyer.order(pid, 1);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    for a in attackers {
        let sent = a.join().unwrap();
        assert!(
            sent < OFFERED / 4,
            "the server kept reading an endless chunk line or trailer section ({sent} bytes)"
        );
    }
    let rss_after = rss_kib(srv.pid());
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB during the flood"
    );
    // One more, small enough to be read whole: its answer is a 431 and a close.
    hostile(
        srv.addr,
        &ext_request(16 * 1024 + 10),
        Want::Closing(431, "header_too_large"),
    );
    assert_eq!(
        state(&env, &srv, pid),
        State {
            stock: before.stock - 1,
            orders: before.orders + 1,
            webhooks: before.webhooks,
        }
    );
    assert_healthy(&srv);
}

/// A chunked order whose first chunk-size line carries an extension of `n` bytes.
fn ext_request(n: usize) -> Vec<u8> {
    let mut r =
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;e=".to_vec();
    r.extend(std::iter::repeat_n(b'a', n));
    r
}

#[test]
fn bare_line_feeds_get_400_and_a_closed_connection() {
    let (env, pid, srv) = setup(&[]);
    let before = state(&env, &srv, pid);
    let body = order_body(pid, 1);
    for raw in [
        format!(
            "POST /api/orders HTTP/1.1\nHost: x\nContent-Length: {}\n\n{body}",
            body.len()
        ),
        format!(
            "POST /api/orders HTTP/1.1\r\nHost: x\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x};a\nb\r\n{body}\r\n0\r\n\r\n",
            body.len()
        ),
        format!(
            "POST /api/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\nX: y\n\r\n",
            body.len()
        ),
    ] {
        hostile(srv.addr, raw.as_bytes(), Want::Closing(400, "bad_request"));
    }
    assert_unharmed(&env, &srv, pid, &before);
}
