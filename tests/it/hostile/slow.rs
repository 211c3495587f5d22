//! Slow senders, crowds of idle connections, and clients that never read their answers.

use super::*;

// ---------------------------------------------------------------------------------------
// Slow clients.

/// True once the server has sent something or closed (peeks without consuming).
fn server_spoke(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    !matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// A slow client: sends `fast` at once, then `slow` one byte per `pace`, stopping as soon as
/// the server answers or closes. Waits at `started` after its first slow byte. Returns how
/// many slow bytes went out and the answer, if any.
fn trickle(
    addr: SocketAddr,
    fast: &[u8],
    slow: &[u8],
    pace: Duration,
    started: &Barrier,
) -> (usize, Option<Resp>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(fast).unwrap();
    let mut sent = 0;
    for b in slow {
        if server_spoke(&s) || s.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        sent += 1;
        if sent == 1 {
            started.wait();
        }
        std::thread::sleep(pace);
    }
    if sent == 0 {
        started.wait();
    }
    s.set_read_timeout(Some(PROMPT)).unwrap();
    (sent, read_response(&mut std::io::BufReader::new(s)))
}

#[test]
fn slow_clients_time_out_while_others_are_served() {
    let (env, pid, srv) = setup(&[("FLASHSALE_HEADER_TIMEOUT_SECS", "1")]);
    let before = state(&env, &srv, pid);
    let pace = Duration::from_millis(200);
    // ~60 bytes at 200 ms each: 12 s if the server waited for all of them.
    let head =
        b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec();
    // A valid order whose body trickles: it would reserve if the server waited for it.
    let body = order_body(pid, 1);
    let order_head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: slow\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let clients: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![], head.clone()),
        (vec![], head.clone()),
        (order_head.clone().into_bytes(), body.clone().into_bytes()),
        (order_head.into_bytes(), body.into_bytes()),
    ];
    // More slow clients than workers: a server that blocked a worker per connection would
    // stop serving the others.
    let started = Arc::new(Barrier::new(clients.len() + 1));
    let addr = srv.addr;
    let handles: Vec<_> = clients
        .into_iter()
        .map(|(fast, slow)| {
            let started = started.clone();
            std::thread::spawn(move || {
                let (sent, r) = trickle(addr, &fast, &slow, pace, &started);
                (sent, slow.len(), r)
            })
        })
        .collect();
    started.wait();

    // Every slow client is mid-request now; others are served meanwhile.
    for _ in 0..3 {
        let mut c = Client::connect(addr);
        assert_eq!(c.get("/health").status, 200);
        assert_eq!(c.get(&format!("/api/products/{pid}")).status, 200);
    }
    assert!(
        handles.iter().all(|h| !h.is_finished()),
        "the others were served only after the slow clients were dealt with"
    );

    for h in handles {
        let (sent, total, r) = h.join().unwrap();
        assert!(
            sent < total,
            "the slow request completed ({sent}/{total} bytes) instead of timing out: {r:?}"
        );
        let outcome = match r {
            Some(r) => {
                assert_eq!(r.status, 408, "{:?}", String::from_utf8_lossy(&r.body));
                assert_error_body(&r, "request_timeout", "slow client");
                assert_eq!(r.header("connection"), Some("close"));
                "408"
            }
            None => "closed",
        };
        eprintln!("slow client: {outcome} after {sent}/{total} bytes");
    }
    assert_unharmed(&env, &srv, pid, &before);
}

// ---------------------------------------------------------------------------------------
// Many idle connections.

#[test]
fn thousands_of_idle_connections_cost_little_and_block_nothing() {
    const WANTED: usize = 10_000;
    const RSS_BOUND_KIB: u64 = 200 * 1024;
    // Each idle connection is a descriptor in this process too: raise its limit, and settle
    // for fewer connections only where the machine's hard limit does not allow 10 000.
    let limit = raise_fd_limit();
    let idle_count = WANTED.min(limit.saturating_sub(1_000) as usize);
    if idle_count < WANTED {
        eprintln!(
            "open-file limit {limit}: testing {idle_count} idle connections instead of {WANTED}"
        );
    }
    // Within the caps and before their header deadline, so that only their cost is measured.
    let (env, pid, srv) = setup(&[
        ("FLASHSALE_MAX_CONNECTIONS_PER_IP", "100000"),
        ("FLASHSALE_HEADER_TIMEOUT_SECS", "600"),
    ]);
    let spid = srv.pid();
    let before = state(&env, &srv, pid);
    let sockets_before = open_sockets(spid);
    let rss_before = rss_kib(spid);

    let mut idle: Vec<TcpStream> = (0..idle_count)
        .map(|i| {
            TcpStream::connect(srv.addr).unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // Every idle connection accepted by the server (one socket each).
    wait_until("the server accepted every idle connection", || {
        (open_sockets(spid) >= sockets_before + idle_count).then_some(())
    });
    let rss_with = rss_kib(spid);
    eprintln!(
        "RSS: {rss_before} KiB before, {rss_with} KiB with {idle_count} idle connections \
         (+{} KiB, {:.1} KiB per connection)",
        rss_with.saturating_sub(rss_before),
        rss_with.saturating_sub(rss_before) as f64 / idle_count as f64
    );
    assert!(
        rss_with < RSS_BOUND_KIB,
        "RSS {rss_with} KiB with {idle_count} idle connections"
    );

    // A fresh connection is served at once, reads and writes alike.
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.get("/health").status, 200);
    let r = c.order(pid, 1);
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        state(&env, &srv, pid),
        State {
            stock: before.stock - 1,
            orders: before.orders + 1,
            webhooks: before.webhooks
        }
    );

    // The idle connections were kept, not dropped to make room: the first and the last
    // still answer.
    for i in [0, idle_count - 1] {
        let s = &mut idle[i];
        s.set_read_timeout(Some(PROMPT)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n")
            .unwrap();
        let r = read_response(&mut std::io::BufReader::new(s.try_clone().unwrap()))
            .expect("idle connection alive");
        assert_eq!(r.status, 200);
    }
    drop(idle);
    env.assert_conserved(pid, 100);
    assert_healthy(&srv);
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let (env, pid, srv) = setup(&[("FLASHSALE_IDLE_TIMEOUT_SECS", "1")]);
    let spid = srv.pid();
    let before = state(&env, &srv, pid);
    let sockets_before = open_sockets(spid);
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    // One that was used once and then left idle (keep-alive).
    let mut used = Conn::open(srv.addr);
    used.send(&request("GET", "/health", "", b""));
    assert_eq!(used.response().map(|r| r.status), Some(200));
    wait_until("the server closes idle connections", || {
        (open_sockets(spid) <= sockets_before).then_some(())
    });
    assert!(
        used.closed(),
        "a kept-alive connection outlived the idle timeout"
    );
    assert!(idle.iter_mut().all(peer_closed));
    assert_unharmed(&env, &srv, pid, &before);
}

// ---------------------------------------------------------------------------------------
// Clients that send pipelined requests and never read the answers.

/// Writes `request` over and over on a new connection until the kernel buffers on both sides
/// are full (the server is then blocked writing answers nobody reads). Returns the connection
/// and how many bytes went out.
fn flood_without_reading(addr: SocketAddr, request: &[u8]) -> (TcpStream, usize) {
    let burst = request.repeat(100);
    let s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut sent = 0;
    while (&s).write_all(&burst).is_ok() {
        sent += burst.len();
    }
    (s, sent)
}

#[test]
fn clients_that_never_read_are_disconnected() {
    const CLIENTS: usize = 20;
    let (env, pid, srv) = setup(&[
        ("FLASHSALE_HEADER_TIMEOUT_SECS", "1"),
        ("FLASHSALE_IDLE_TIMEOUT_SECS", "1"),
    ]);
    let spid = srv.pid();
    let before = state(&env, &srv, pid);
    let sockets_before = open_sockets(spid);
    let rss_before = rss_kib(spid);
    // `/metrics` answers ~5 KB to a 34-byte request: the amplification a hostile client uses.
    let floods: Vec<(TcpStream, usize)> = (0..CLIENTS)
        .map(|_| flood_without_reading(srv.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    let rss_with = rss_kib(spid);
    eprintln!(
        "{CLIENTS} clients that never read ({} KiB of requests each): RSS {rss_before} -> \
         {rss_with} KiB (+{} KiB per client)",
        floods[0].1 / 1024,
        rss_with.saturating_sub(rss_before) / CLIENTS as u64
    );
    // Others are still served meanwhile.
    assert_eq!(Client::connect(srv.addr).get("/health").status, 200);
    // Within the header/idle timeouts (1 s here) plus a generous margin, the server gives
    // up on answers nobody reads and frees what they hold.
    wait_until("the server drops clients that never read", || {
        (open_sockets(spid) <= sockets_before).then_some(())
    });
    drop(floods);
    assert_unharmed(&env, &srv, pid, &before);
}

#[test]
fn an_idle_connection_flood_from_one_address_leaves_room_for_everyone_else() {
    const CAP: usize = 50;
    let (env, pid, srv) = setup(&[
        ("FLASHSALE_MAX_CONNECTIONS_PER_IP", "50"),
        ("FLASHSALE_HEADER_TIMEOUT_SECS", "3"),
    ]);
    let spid = srv.pid();
    let before = state(&env, &srv, pid);
    let sockets_before = open_sockets(spid);
    // The attacker, at another address, opens four times the cap and sends nothing.
    let mut attack: Vec<TcpStream> = (0..4 * CAP)
        .map(|_| connect_from("127.0.0.2", srv.addr).expect("connect"))
        .collect();
    wait_until(
        "the server holds at most the cap of the attacker's connections",
        || {
            let held = open_sockets(spid).saturating_sub(sockets_before);
            (held <= CAP + 2 && answered_or_closed(&attack) >= 3 * CAP - 2).then_some(())
        },
    );
    // Those over the cap were told why.
    let mut told = 0;
    for s in attack.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        if let Some(resp) = read_response(&mut r) {
            assert_eq!(resp.status, 503);
            assert_error_body(&resp, "unavailable", "over the per-address cap");
            told += 1;
        }
    }
    assert!(told >= 3 * CAP - 2, "{told} refusals answered with a 503");
    // Everyone else is served meanwhile.
    let mut buyer = Client::connect(srv.addr);
    assert_eq!(buyer.order(pid, 1).status, 202);
    // Connections that never sent a head are closed at the header deadline from the accept.
    wait_until("the attacker's silent connections are closed", || {
        (open_sockets(spid) <= sockets_before + 1).then_some(())
    });
    drop(attack);
    let m = String::from_utf8_lossy(&buyer.get("/metrics").body).into_owned();
    assert!(
        m.contains("flashsale_connections_refused_total{cap=\"per_ip\"}"),
        "{m}"
    );
    assert_eq!(
        state(&env, &srv, pid),
        State {
            stock: before.stock - 1,
            orders: before.orders + 1,
            webhooks: before.webhooks
        }
    );
    assert_healthy(&srv);
}

/// How many of `conns` the server has answered or closed (seen without blocking).
fn answered_or_closed(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let closed = match s.peek(&mut b) {
                Ok(0) => true,
                Ok(_) => true,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            closed
        })
        .count()
}
