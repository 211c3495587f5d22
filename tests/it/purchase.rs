//! The purchase half of the API: products, reservations, order lookup, the errors of the
//! conventions, idempotency, per-user limits, lazy loading, concurrency, pipelining, and the
//! durability of a 202 across SIGKILL and SIGTERM.

use crate::common::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn is_rfc3339_utc(s: &str) -> bool {
    s.len() >= 20
        && s.ends_with('Z')
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && humantime_like(s)
}

fn humantime_like(s: &str) -> bool {
    s[..19].bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    })
}

#[test]
fn product_contract_and_not_found_shapes() {
    let env = Env::new();
    let pid = env.product(1000, 20000);
    let srv = Server::start(&env);
    let mut c = srv.client();

    let r = c.get(&format!("/api/products/{pid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["id"], pid);
    assert_eq!(v["name"], "Test item");
    assert_eq!(v["price_cents"], 20000);
    assert_eq!(v["stock"], 1000);
    assert_eq!(v["max_per_order"], 10);
    assert!(v["per_user_limit"].is_null());
    assert!(is_rfc3339_utc(v["created_at"].as_str().unwrap()), "{v}");
    assert!(is_rfc3339_utc(v["updated_at"].as_str().unwrap()), "{v}");

    for path in [
        "/api/products/999999",
        "/api/products/abc",
        "/api/products/-1",
        "/api/products/0",
        "/api/products/99999999999999999999",
        "/api/products/1.5",
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.json(),
            json!({"message": "Product not found", "code": "product_not_found"}),
            "{path}"
        );
    }
    let r = c.get("/api/nothing/here");
    assert_eq!((r.status, r.code()), (404, "not_found".to_string()));
    let r = c.request("POST", &format!("/api/products/{pid}"), &[], b"{}");
    assert_eq!(
        (r.status, r.code()),
        (405, "method_not_allowed".to_string())
    );
    assert_eq!(r.header("allow"), Some("GET"));
    let r = c.get("/api/orders");
    assert_eq!(
        (r.status, r.code()),
        (405, "method_not_allowed".to_string())
    );
    let r = c.get("/health");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = c.get("/ready");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_reservation_answers_202_is_readable_at_once_and_becomes_a_row() {
    let env = Env::new();
    let pid = env.product(50, 1999);
    let srv = Server::start(&env);
    let mut c = srv.client();

    let r = c.post_json(
        "/api/orders",
        &json!({"product_id": pid, "qty": 3, "user_id": "alice"}),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(
        v["message"],
        "Reservation Successful! Order is being processed."
    );
    assert_eq!(v["product_id"], pid);
    assert_eq!(v["qty"], 3);
    assert_eq!(v["amount_cents"], 3 * 1999);
    assert_eq!(v["status"], "pending");
    assert!(is_rfc3339_utc(v["expires_at"].as_str().unwrap()));
    let reference = v["order_reference"].as_str().unwrap().to_string();
    assert!(!reference.is_empty() && reference.len() <= 64);

    // Readable at once, whether or not the row is written yet.
    let o = c.get(&format!("/api/orders/{reference}"));
    assert_eq!(o.status, 200);
    let o = o.json();
    assert_eq!(o["order_reference"], reference.as_str());
    assert_eq!(o["user_id"], "alice");
    assert_eq!(o["qty"], 3);
    assert_eq!(o["amount_cents"], 3 * 1999);
    assert_eq!(o["status"], "pending");
    assert!(o["cancel_reason"].is_null());
    assert_eq!(o["expires_at"], v["expires_at"]);
    assert!(is_rfc3339_utc(o["created_at"].as_str().unwrap()));

    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 47);
    env.wait_rows(std::slice::from_ref(&reference));
    let row = env
        .pg()
        .query_one(
            "SELECT product_id, user_id, qty, amount_cents, status, cancel_reason FROM orders WHERE order_reference = $1",
            &[&reference],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), pid);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("alice"));
    assert_eq!(row.get::<_, i32>(2), 3);
    assert_eq!(row.get::<_, i64>(3), 3 * 1999);
    assert_eq!(row.get::<_, String>(4), "pending");
    assert_eq!(row.get::<_, Option<String>>(5), None);

    let r = c.get("/api/orders/no-such-order");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"message": "Order not found", "code": "order_not_found"})
    );
    env.assert_conserved(pid, 50);
}

#[test]
fn bad_input_gets_the_documented_error_and_changes_nothing() {
    let env = Env::new();
    let pid = env.product(20, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 20);

    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2]", 400, "malformed_json"),
        (b"\"text\"", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"{\"product_id\": \"\xff\"}", 400, "malformed_json"),
        (b"{}", 422, "validation_failed"),
        (
            b"{\"product_id\": 1.5, \"qty\": 1}",
            422,
            "validation_failed",
        ),
        (b"{\"product_id\": 0, \"qty\": 1}", 422, "validation_failed"),
        (
            b"{\"product_id\": 99999999999999999999999, \"qty\": 1}",
            422,
            "validation_failed",
        ),
        (b"{\"product_id\": 1, \"qty\": 0}", 422, "validation_failed"),
        (
            b"{\"product_id\": 1, \"qty\": -2}",
            422,
            "validation_failed",
        ),
        (
            b"{\"product_id\": 1, \"qty\": \"two\"}",
            422,
            "validation_failed",
        ),
        (
            b"{\"product_id\": 1, \"qty\": 1, \"user_id\": 7}",
            422,
            "validation_failed",
        ),
        (
            b"{\"product_id\": 1, \"qty\": 1, \"user_id\": \"\"}",
            422,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let body = String::from_utf8_lossy(body)
            .replace("\"product_id\": 1,", &format!("\"product_id\": {pid},"));
        let raw = if body.contains('\u{fffd}') {
            let mut v = format!(
                "POST /api/orders HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                18
            )
            .into_bytes();
            v.extend_from_slice(b"{\"product_id\": \"\xff\"}");
            v.truncate(v.len() - 2);
            v.extend_from_slice(b"}");
            v
        } else {
            format!(
                "POST /api/orders HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let r = c.raw(&raw);
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_string()),
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        if status == 422 {
            assert!(r.json()["errors"].is_object(), "{body}");
        }
    }

    // Every field error at once.
    let r = c.post_json(
        "/api/orders",
        &json!({"product_id": "x", "qty": 0, "user_id": 5}),
    );
    let errs = r.json()["errors"].as_object().unwrap().clone();
    assert!(
        errs.contains_key("product_id") && errs.contains_key("qty") && errs.contains_key("user_id"),
        "{errs:?}"
    );

    // Above max_per_order: a field error that names the maximum.
    let r = c.order(pid, 11);
    assert_eq!((r.status, r.code()), (422, "validation_failed".to_string()));
    assert!(
        r.json()["errors"]["qty"][0]
            .as_str()
            .unwrap()
            .contains("10")
    );

    // Unknown product: 404 from the body too.
    let r = c.order(987_654, 1);
    assert_eq!((r.status, r.code()), (404, "product_not_found".to_string()));

    // Bad idempotency key.
    let r = c.order_with(&json!({"product_id": pid, "qty": 1}), Some("has space"));
    assert_eq!((r.status, r.code()), (422, "validation_failed".to_string()));

    // 16 KiB + 1: 413 before the body is read.
    let big = format!(
        "{{\"product_id\": {pid}, \"qty\": 1, \"pad\": \"{}\"}}",
        "x".repeat(16 * 1024)
    );
    let r = c.post_json("/api/orders", &serde_json::from_str(&big).unwrap());
    assert_eq!((r.status, r.code()), (413, "payload_too_large".to_string()));

    // Numeric strings are accepted (and this one succeeds).
    let r = c.post_json(
        "/api/orders",
        &json!({"product_id": pid.to_string(), "qty": "2"}),
    );
    assert_eq!(r.status, 202);

    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 18);
    let n: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    wait_until("the one order is written", || {
        (env.journal_len(pid) == 0).then_some(())
    });
    let n2: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    assert!(n <= 1 && n2 == 1, "only the valid order exists");
    env.assert_conserved(pid, 20);
}

#[test]
fn insufficient_stock_is_409_and_never_negative() {
    let env = Env::new();
    let pid = env.product(5, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    assert_eq!(c.order(pid, 4).status, 202);
    let r = c.order(pid, 2);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"message": "Insufficient stock", "code": "insufficient_stock"})
    );
    assert_eq!(c.order(pid, 1).status, 202);
    assert_eq!(c.order(pid, 1).code(), "insufficient_stock");
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 0);
    env.assert_conserved(pid, 5);
}

#[test]
fn idempotent_replays_reserve_once() {
    let env = Env::new();
    let pid = env.product(100, 250);
    let other = env.product(100, 250);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let body = json!({"product_id": pid, "qty": 2, "user_id": "bob"});

    let first = c.order_with(&body, Some("retry-123"));
    assert_eq!(first.status, 202);
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..3 {
        let again = c.order_with(&body, Some("retry-123"));
        assert_eq!(again.status, 202);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), first.json(), "same body");
    }
    assert_eq!(
        c.get(&format!("/api/products/{pid}")).json()["stock"],
        98,
        "reserved once"
    );

    // Same key, other body: refused, nothing reserved.
    let r = c.order_with(
        &json!({"product_id": pid, "qty": 3, "user_id": "bob"}),
        Some("retry-123"),
    );
    assert_eq!(
        (r.status, r.code()),
        (422, "idempotency_key_reused".to_string())
    );
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 98);

    // A key is scoped to its buyer: the same key from another buyer is another key, and
    // never reveals bob's order.
    let eve = c.order_with(
        &json!({"product_id": pid, "qty": 2, "user_id": "eve"}),
        Some("retry-123"),
    );
    assert_eq!(eve.status, 202);
    assert_eq!(eve.header("idempotent-replayed"), None);
    assert_ne!(
        eve.json()["order_reference"],
        first.json()["order_reference"]
    );
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 96);

    // A key is scoped to its product.
    let r = c.order_with(
        &json!({"product_id": other, "qty": 2, "user_id": "bob"}),
        Some("retry-123"),
    );
    assert_eq!(r.status, 202);
    assert_ne!(r.json()["order_reference"], first.json()["order_reference"]);

    // Requests that did not reserve are not remembered.
    let r = c.order_with(
        &json!({"product_id": pid, "qty": 50, "user_id": "x"}),
        Some("k-fail"),
    );
    assert_eq!(r.status, 422);
    let r = c.order_with(
        &json!({"product_id": pid, "qty": 1, "user_id": "x"}),
        Some("k-fail"),
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("idempotent-replayed"), None);

    let n: i64 = {
        wait_until("written", || (env.journal_len(pid) == 0).then_some(()));
        env.pg()
            .query_one("SELECT count(*) FROM orders WHERE product_id = $1", &[&pid])
            .unwrap()
            .get(0)
    };
    assert_eq!(n, 3);
    env.assert_conserved(pid, 100);
}

#[test]
fn per_user_limits_count_pending_units_and_require_a_user() {
    let env = Env::new();
    let pid = env.product_with(100, 500, 10, Some(3));
    let srv = Server::start(&env);
    let mut c = srv.client();
    assert_eq!(
        c.get(&format!("/api/products/{pid}")).json()["per_user_limit"],
        3
    );

    let r = c.order(pid, 1);
    assert_eq!((r.status, r.code()), (422, "validation_failed".to_string()));
    assert!(r.json()["errors"]["user_id"].is_array());

    let buy = |c: &mut Client, user: &str, qty: i64| {
        c.post_json(
            "/api/orders",
            &json!({"product_id": pid, "qty": qty, "user_id": user}),
        )
    };
    assert_eq!(buy(&mut c, "ann", 2).status, 202);
    let r = buy(&mut c, "ann", 2);
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        json!({"message": "Purchase limit reached", "code": "purchase_limit_reached"})
    );
    assert_eq!(buy(&mut c, "ann", 1).status, 202);
    assert_eq!(buy(&mut c, "ann", 1).code(), "purchase_limit_reached");
    assert_eq!(buy(&mut c, "ben", 3).status, 202);
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 94);
    env.assert_conserved(pid, 100);
}

#[test]
fn lazy_load_subtracts_pending_orders_and_never_overwrites_a_live_counter() {
    let env = Env::new();
    let srv = Server::start(&env);
    let mut c = srv.client();

    // Inserted with SQL while the server runs, with pending orders of its own.
    let pid = env.product_with(40, 300, 10, Some(5));
    env.pg()
        .batch_execute(&format!(
            "INSERT INTO orders (order_reference, product_id, user_id, qty, amount_cents, status, expires_at) VALUES
               ('sql-a', {pid}, 'zed', 4, 1200, 'pending', now() + interval '1 hour'),
               ('sql-b', {pid}, NULL, 3, 900, 'pending', now() + interval '1 hour'),
               ('sql-c', {pid}, 'zed', 1, 300, 'paid', now() + interval '1 hour')"
        ))
        .unwrap();
    // 40 in PostgreSQL (the paid unit was already taken off by whoever wrote it), 7 pending.
    let v = c.get(&format!("/api/products/{pid}")).json();
    assert_eq!(v["stock"], 33);
    // zed holds 4 pending + 1 paid = 5 = the limit.
    let r = c.post_json(
        "/api/orders",
        &json!({"product_id": pid, "qty": 1, "user_id": "zed"}),
    );
    assert_eq!(r.code(), "purchase_limit_reached");
    // The pending SQL orders are readable through the API too.
    assert_eq!(c.get("/api/orders/sql-a").json()["status"], "pending");

    // Live counter: later SQL changes to products.stock do not reset it.
    let r = c.post_json(
        "/api/orders",
        &json!({"product_id": pid, "qty": 3, "user_id": "amy"}),
    );
    assert_eq!(r.status, 202);
    env.pg()
        .batch_execute(&format!(
            "UPDATE products SET stock = 1000 WHERE id = {pid}"
        ))
        .unwrap();
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 30);
    env.pg()
        .batch_execute(&format!("UPDATE products SET stock = 40 WHERE id = {pid}"))
        .unwrap();

    // A second server (another instance) loading concurrently does not overwrite it either.
    let srv2 = Server::start(&env);
    assert_eq!(
        srv2.client().get(&format!("/api/products/{pid}")).json()["stock"],
        30
    );
    // pending: 4 + 3 (SQL) + 3 (ours); paid units were subtracted from 40 before we started.
    wait_until("written", || (env.journal_len(pid) == 0).then_some(()));
    assert_eq!(
        env.redis_stock(pid).unwrap() + env.pending_units(pid),
        env.pg_stock(pid)
    );
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = Server::start(&env);
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = format!("{{\"product_id\": {pid}, \"qty\": 1}}");
    let mut batch = String::new();
    batch.push_str(&format!(
        "GET /api/products/{pid} HTTP/1.1\r\nHost: t\r\n\r\n"
    ));
    for _ in 0..3 {
        batch.push_str(&format!(
            "POST /api/orders HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    batch.push_str("GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    use std::io::Write;
    s.write_all(batch.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let statuses: Vec<u16> = (0..6)
        .map(|_| read_response(&mut r).unwrap().status)
        .collect();
    assert_eq!(statuses, vec![200, 202, 202, 202, 404, 200]);
    env.assert_conserved(pid, 10);
}

#[test]
fn http10_clients_like_ab_get_answers_and_keep_alive_only_when_asked() {
    let env = Env::new();
    let srv = Server::start(&env);
    use std::io::{Read, Write};
    // Plain HTTP/1.0: one response, then the server closes.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"));
    // ab -k: HTTP/1.0 with Keep-Alive; the answer must say keep-alive and the connection stays.
    let s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut r = std::io::BufReader::new(s);
    for _ in 0..3 {
        r.get_mut()
            .write_all(b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("keep-alive")
        );
    }
    // Connection: close on HTTP/1.1 is honoured.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
}

/// Buys with `clients` threads until the product is sold out; returns the 202 references and
/// their quantities.
fn stampede(
    srv: &Server,
    pid: i64,
    clients: usize,
    qty: impl Fn(usize, usize) -> i64 + Sync,
) -> Vec<(String, i64)> {
    let accepted = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..clients {
            let accepted = &accepted;
            let qty = &qty;
            s.spawn(move || {
                let mut c = srv.client();
                let mut misses = 0;
                for i in 0.. {
                    let q = qty(t, i);
                    let r = c.order(pid, q);
                    match r.status {
                        202 => {
                            let v = r.json();
                            assert_eq!(v["qty"], q);
                            accepted
                                .lock()
                                .unwrap()
                                .push((v["order_reference"].as_str().unwrap().to_string(), q));
                        }
                        409 => {
                            assert_eq!(r.code(), "insufficient_stock");
                            misses += 1;
                            if misses > 3 {
                                return;
                            }
                        }
                        other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
                    }
                }
            });
        }
    });
    accepted.into_inner().unwrap()
}

#[test]
fn a_stampede_of_48_clients_sells_exactly_the_stock() {
    let env = Env::new();
    let pid = env.product(300, 100);
    let srv = Server::start(&env);
    let sold = stampede(&srv, pid, 48, |t, i| ((t + i) % 3 + 1) as i64);
    assert_sold_out(&env, &mut srv.client(), pid, 300, &sold);
    env.assert_conserved(pid, 300);
}

/// After a stampede of orders of 1 to 3 units: the units sold and the few left make the
/// initial stock, references are unique, and PostgreSQL holds exactly one row per 202.
fn assert_sold_out(env: &Env, c: &mut Client, pid: i64, stock: i64, sold: &[(String, i64)]) {
    let units: i64 = sold.iter().map(|(_, q)| q).sum();
    let left = c.get(&format!("/api/products/{pid}")).json()["stock"]
        .as_i64()
        .unwrap();
    assert!((0..3).contains(&left), "left {left}");
    assert_eq!(units + left, stock, "sold {units}, left {left}");
    let refs: Vec<String> = sold.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(
        refs.iter().collect::<HashSet<_>>().len(),
        refs.len(),
        "references are unique"
    );
    env.wait_rows(&refs);
    let rows: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM orders WHERE product_id = $1", &[&pid])
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, refs.len(), "one row per 202, no more");
}

/// Two instances share one Redis prefix and one database, as a deployment behind a load
/// balancer would: stampedes on both sell exactly the stock, every 202 is one row, and a
/// webhook is applied by whichever instance receives it, whoever took the order.
#[test]
fn two_instances_sharing_redis_and_postgresql_sell_exactly_the_stock() {
    let env = Env::new();
    let pid = env.product(300, 100);
    let a = Server::start(&env);
    let b = Server::start(&env);
    let qty = |t: usize, i: usize| ((t + i) % 3 + 1) as i64;
    let sold: Vec<(String, i64)> = std::thread::scope(|s| {
        let on_a = s.spawn(|| stampede(&a, pid, 16, qty));
        let on_b = s.spawn(|| stampede(&b, pid, 16, qty));
        let mut all = on_a.join().unwrap();
        all.extend(on_b.join().unwrap());
        all
    });
    let (mut ca, mut cb) = (a.client(), b.client());
    assert_sold_out(&env, &mut ca, pid, 300, &sold);
    // Webhooks cross instances: paid through one, failed through the other.
    for (i, (r, _)) in sold.iter().take(10).enumerate() {
        let (c, status, want) = if i % 2 == 0 {
            (&mut cb, "success", "paid")
        } else {
            (&mut ca, "failure", "cancelled")
        };
        let resp = c.webhook(r, status);
        assert_eq!(resp.json()["order_status"], want, "{:?}", resp.json());
    }
    env.assert_conserved(pid, 300);
    let paid: i64 = sold.iter().step_by(2).take(5).map(|(_, q)| q).sum();
    assert_eq!(env.paid_units(pid), paid);
}

/// Orders from `clients` threads until `stop`; returns every 202 reference.
fn load_until(
    srv_addr: std::net::SocketAddr,
    pid: i64,
    clients: usize,
    stop: &AtomicBool,
    count: &AtomicUsize,
) -> Vec<String> {
    let accepted = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let mut c = Client::connect(srv_addr);
                while !stop.load(Ordering::SeqCst) {
                    match c.try_order(pid, 1) {
                        Some(r) if r.status == 202 => {
                            let reference =
                                r.json()["order_reference"].as_str().unwrap().to_string();
                            accepted.lock().unwrap().push(reference);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(r) => assert!(r.status == 503, "unexpected {}", r.status),
                        None => {
                            // The server is gone: stop this client.
                            return;
                        }
                    }
                }
            });
        }
    });
    accepted.into_inner().unwrap()
}

#[test]
fn sigkill_under_load_loses_no_accepted_order() {
    let env = Env::new();
    let pid = env.product(1_000_000, 100);
    let mut srv = Server::start(&env);
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let accepted = std::thread::scope(|s| {
        let h = s.spawn(|| load_until(addr, pid, 16, &stop, &count));
        wait_until("load is running", || {
            (count.load(Ordering::SeqCst) >= 2_000).then_some(())
        });
        srv.kill9();
        stop.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    assert!(accepted.len() >= 2_000);
    let _srv = Server::start(&env);
    env.wait_rows(&accepted);
    env.assert_conserved(pid, 1_000_000);
}

#[test]
fn sigterm_flushes_everything_and_exits_zero() {
    let env = Env::new();
    let pid = env.product(1_000_000, 100);
    let mut srv = Server::start(&env);
    let addr = srv.addr;
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let (accepted, status) = std::thread::scope(|s| {
        let h = s.spawn(|| load_until(addr, pid, 8, &stop, &count));
        wait_until("load is running", || {
            (count.load(Ordering::SeqCst) >= 1_000).then_some(())
        });
        let status = srv.terminate();
        stop.store(true, Ordering::SeqCst);
        (h.join().unwrap(), status)
    });
    assert!(status.success(), "exit status {status:?}");
    // No restart: the process itself wrote everything before exiting.
    let want: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let n: i64 = env
        .pg()
        .query_one(
            "SELECT count(*) FROM orders WHERE order_reference = ANY($1)",
            &[&want],
        )
        .unwrap()
        .get(0);
    assert_eq!(n as usize, accepted.len());
    assert_eq!(
        env.journal_len(pid),
        0,
        "journal empty after a clean shutdown"
    );
    env.assert_conserved(pid, 1_000_000);
}
