//! The findings of an independent audit (at 0561e5f), one test each: admin changes never lost,
//! out-of-range rows never stop a thread, admin guessing limited, NUL inputs refused as input,
//! secrets never echoed, restocks capped, high-S signatures refused. Each failed on 0561e5f.

use crate::common::*;
use serde_json::{Value, json};
use std::io::{BufReader, Write};

const ADMIN: &str = "audit-admin-token-0123456789abcdef-0123456789";

fn admin_server(env: &Env, extra: &[(&str, &str)]) -> Server {
    let mut vars = vec![("FLASHSALE_ADMIN_TOKEN", ADMIN)];
    vars.extend_from_slice(extra);
    Server::start_with(env, &vars)
}

fn admin(c: &mut Client, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    c.request(method, path, &[("Authorization", &auth)], body.as_bytes())
}

/// One admin request with `token` from the local address `from`.
fn admin_from(from: &str, s: &Server, token: &str) -> Resp {
    let mut stream = connect_from(from, s.addr).unwrap();
    let req = format!(
        "GET /admin/late-payments HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream)).expect("a response")
}

/// Runs `serve` with `vars`, expecting it to refuse to start: its exit code and standard
/// error. A server that starts instead is killed after the deadline (the test then fails).
fn refused_start(env: &Env, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = env.command("serve");
    c.env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn wrong_admin_tokens_are_limited_per_address() {
    let env = Env::new();
    let s = admin_server(&env, &[("FLASHSALE_ADMIN_FAILURES_PER_MINUTE", "5")]);
    for i in 0..5 {
        let r = admin_from("127.0.0.1", &s, &format!("guess-{i}"));
        assert_eq!(r.status, 401, "guess {i}");
    }
    let r = admin_from("127.0.0.1", &s, "guess-5");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.code(), "rate_limited");
    // Locked out: even the right token learns nothing from this address for the minute.
    assert_eq!(admin_from("127.0.0.1", &s, ADMIN).status, 429);
    // Another address is not.
    assert_eq!(admin_from("127.0.0.2", &s, ADMIN).status, 200);
    assert_eq!(admin_from("127.0.0.2", &s, "wrong").status, 401);
    let metrics = String::from_utf8(s.client().get("/metrics").body).unwrap();
    assert!(
        metrics.contains("flashsale_rate_limited_total{limit=\"admin_failures\"} 2"),
        "{metrics}"
    );
    assert!(s.logs().contains("too many wrong admin tokens"));
}

#[test]
fn a_short_admin_token_is_refused_at_start_without_showing_it() {
    let env = Env::new();
    let (code, err) = refused_start(&env, &[("FLASHSALE_ADMIN_TOKEN", "admin-secret")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("FLASHSALE_ADMIN_TOKEN"), "{err}");
    assert!(err.contains("32"), "{err}");
    assert!(
        !err.contains("admin-secret"),
        "the token is not echoed: {err}"
    );
}

/// Client text that PostgreSQL cannot store or compare (a NUL) is the client's error: 4xx,
/// nothing changed, and never "database unreachable" or an outage in `/metrics`.
#[test]
fn nul_bytes_in_input_are_refused_as_input() {
    let env = Env::new();
    let product = env.product(100, 100);
    let s = admin_server(&env, &[]);
    let mut c = s.client();
    let r = c.order_with(
        &json!({"product_id": product, "qty": 1, "user_id": "a\u{0}b"}),
        None,
    );
    assert_eq!(r.status, 422, "{r:?}");
    let r = c.webhook("a\u{0}b", "success");
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = admin(&mut c, "GET", "/admin/orders?user_id=a%00b", None);
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = admin(&mut c, "POST", "/admin/late-payments/a%00b/refund", None);
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = admin(
        &mut c,
        "POST",
        "/admin/products",
        Some(&json!({"name": "a\u{0}b", "price_cents": 1, "stock": 1})),
    );
    assert_eq!(r.status, 422, "{r:?}");
    let r = admin(
        &mut c,
        "PATCH",
        &format!("/admin/products/{product}"),
        Some(&json!({"name": "x\u{0}"})),
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(c.get(&format!("/api/orders/{product}-a%00b")).status, 404);
    // Nothing changed, nothing counted as an outage, and the writer still writes.
    assert_eq!(c.order(product, 1).status, 202);
    env.wait_rows(&[]);
    let metrics = String::from_utf8(c.get("/metrics").body).unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("flashsale_unavailable_responses_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_eq!(c.get("/ready").status, 200);
    env.assert_conserved(product, 100);
}

/// A restock cannot take the stock past what a product may be created with (10^12): every
/// count stays far below 2^53, where Redis's Lua numbers would start losing units.
#[test]
fn restocks_cannot_pass_the_create_cap() {
    let env = Env::new();
    let s = admin_server(&env, &[]);
    let mut c = s.client();
    let r = admin(
        &mut c,
        "POST",
        "/admin/products",
        Some(&json!({"name": "big", "price_cents": 1, "stock": 999_999_999_990i64})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["id"].as_i64().unwrap();
    let path = format!("/admin/products/{id}/stock");
    let r = admin(&mut c, "POST", &path, Some(&json!({"delta": 11})));
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.json()["errors"]["delta"].is_array());
    // Nothing changed, and the last units up to the cap can still be added.
    assert_eq!(env.pg_stock(id), 999_999_999_990);
    let r = admin(&mut c, "POST", &path, Some(&json!({"delta": 10})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["stock"], 1_000_000_000_000i64);
    wait_until("the restock in PostgreSQL", || {
        (env.pg_stock(id) == 1_000_000_000_000).then_some(())
    });
    let r = admin(&mut c, "POST", &path, Some(&json!({"delta": 1})));
    assert_eq!(r.status, 422, "{r:?}");
    env.assert_conserved(id, 1_000_000_000_000);
}

/// A PATCH and a close of one product sent together: the close is never lost (it used to
/// be, when both committed in one millisecond and their revisions tied), and its answer shows
/// the sale ended.
#[test]
fn a_patch_and_a_close_sent_together_never_lose_the_close() {
    let env = Env::new();
    let s = admin_server(&env, &[]);
    for round in 0..40 {
        let id = env.product(100, 100);
        // Loaded into Redis, as during a sale.
        assert_eq!(s.client().get(&format!("/api/products/{id}")).status, 200);
        // Both connections open first, both requests sent at one instant.
        let (mut pc, mut cc) = (s.client(), s.client());
        assert_eq!(pc.get("/health").status, 200);
        assert_eq!(cc.get("/health").status, 200);
        let go = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|t| {
            let patch = t.spawn(|| {
                go.wait();
                admin(
                    &mut pc,
                    "PATCH",
                    &format!("/admin/products/{id}"),
                    Some(&json!({"price_cents": 200 + round})),
                )
            });
            let close = t.spawn(|| {
                go.wait();
                admin(
                    &mut cc,
                    "POST",
                    &format!("/admin/products/{id}/close"),
                    None,
                )
            });
            (patch.join().unwrap(), close.join().unwrap())
        });
        assert_eq!(a.status, 200, "round {round}: {a:?}");
        assert_eq!(b.status, 200, "round {round}: {b:?}");
        assert_eq!(
            b.json()["state"],
            "ended",
            "round {round}: the close's answer"
        );
        let mut c = s.client();
        for _ in 0..3 {
            let r = c.order(id, 1);
            assert_eq!(r.code(), "sale_ended", "round {round}: {r:?}");
            assert_eq!(
                c.get(&format!("/api/products/{id}")).json()["price_cents"],
                200 + round
            );
        }
    }
}

/// Two PATCHes of one product at once: whatever order they commit in, Redis ends up with
/// what PostgreSQL has, as soon as both answered.
#[test]
fn concurrent_patches_leave_redis_equal_to_postgresql() {
    let env = Env::new();
    let s = admin_server(&env, &[]);
    let id = env.product(100, 100);
    assert_eq!(s.client().get(&format!("/api/products/{id}")).status, 200);
    let s = &s;
    for pair in 0..120 {
        let go = std::sync::Barrier::new(2);
        let go = &go;
        std::thread::scope(|t| {
            for max in [3 + pair % 5, 20 + pair % 7] {
                let mut c = s.client();
                assert_eq!(c.get("/health").status, 200);
                t.spawn(move || {
                    go.wait();
                    let r = admin(
                        &mut c,
                        "PATCH",
                        &format!("/admin/products/{id}"),
                        Some(&json!({"max_per_order": max})),
                    );
                    assert_eq!(r.status, 200, "{r:?}");
                });
            }
        });
        let pg: i32 = env
            .pg()
            .query_one("SELECT max_per_order FROM products WHERE id = $1", &[&id])
            .unwrap()
            .get(0);
        let shown = s.client().get(&format!("/api/products/{id}")).json()["max_per_order"].clone();
        assert_eq!(shown, json!(pg), "pair {pair}");
    }
}

/// The end a close stores is Redis's time, the clock that decides reservations: no order is
/// created after it, even with buyers ordering while it happens.
#[test]
fn no_order_is_created_after_the_stored_end_of_a_close() {
    let env = Env::new();
    let s = admin_server(&env, &[]);
    let products: Vec<i64> = (0..5).map(|_| env.product(1_000_000, 1)).collect();
    for &id in &products {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|t| {
            for _ in 0..3 {
                t.spawn(|| {
                    let mut c = s.client();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = c.order(id, 1);
                        assert!(r.status == 202 || r.code() == "sale_ended", "{r:?}");
                    }
                });
            }
            wait_until("orders before the close", || {
                (env.order_row_count() > 50).then_some(())
            });
            let r = admin(
                &mut s.client(),
                "POST",
                &format!("/admin/products/{id}/close"),
                None,
            );
            assert_eq!(r.status, 200, "{r:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        env.wait_rows(&[]);
        wait_until("every order written", || {
            (env.journal_len(id) == 0).then_some(())
        });
        let late: i64 = env
            .pg()
            .query_one(
                "SELECT count(*) FROM orders o JOIN products p ON p.id = o.product_id
                 WHERE p.id = $1 AND o.created_at >= p.sale_ends_at",
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            late, 0,
            "product {id}: orders created at or after the stored end"
        );
    }
}

/// Two changes of a product committed in one millisecond (two transactions in one message
/// to PostgreSQL) get two revisions, the later one greater: the sync can tell them apart.
#[test]
fn attribute_revisions_never_tie() {
    let env = Env::new();
    let id = env.product(10, 10);
    // Migrations run with the first server start.
    drop(Server::start(&env));
    let mut pg = env.pg();
    for round in 0..20 {
        pg.batch_execute(&format!(
            "BEGIN; UPDATE products SET max_per_order = 3 WHERE id = {id}; COMMIT;
             CREATE TEMP TABLE IF NOT EXISTS revs (rev bigint, at timestamptz);
             INSERT INTO revs SELECT attrs_rev, attrs_changed_at FROM products WHERE id = {id};
             BEGIN; UPDATE products SET max_per_order = 4 WHERE id = {id}; COMMIT;
             INSERT INTO revs SELECT attrs_rev, attrs_changed_at FROM products WHERE id = {id};"
        ))
        .unwrap();
        let rows = pg
            .query("SELECT rev FROM revs ORDER BY at DESC LIMIT 2", &[])
            .unwrap();
        let (later, earlier): (i64, i64) = (rows[0].get(0), rows[1].get(0));
        assert!(later > earlier, "round {round}: {earlier} then {later}");
        pg.batch_execute("TRUNCATE revs").unwrap();
    }
}

/// Times PostgreSQL accepts but the API used to fail on (before 1970: a panic that killed a
/// worker, or the writer): answered and written like any other; times that have no RFC 3339
/// form ('infinity', five-digit years) are refused where they are written.
#[test]
fn out_of_range_times_never_stop_a_thread() {
    let env = Env::new();
    let id = env.product(100, 100);
    let s = Server::start(&env);
    let mut pg = env.pg();
    // A window that opened in 1960, and an updated_at of 1960, written with SQL.
    pg.execute(
        "UPDATE products SET sale_starts_at = '1960-01-01T00:00:00Z' WHERE id = $1",
        &[&id],
    )
    .unwrap();
    pg.execute(
        "UPDATE products SET updated_at = '1960-06-01T00:00:00Z' WHERE id = $1",
        &[&id],
    )
    .unwrap();
    let mut c = s.client();
    wait_until("the window in Redis", || {
        let p = c.get(&format!("/api/products/{id}")).json();
        (p["sale_starts_at"] == "1960-01-01T00:00:00.000Z").then_some(p)
    });
    // Both workers answer, orders are taken and written.
    let mut refs = Vec::new();
    for _ in 0..8 {
        let mut c = s.client();
        assert_eq!(c.get("/health").status, 200);
        let r = c.order(id, 1);
        assert_eq!(r.status, 202, "{r:?}");
        refs.push(r.json()["order_reference"].as_str().unwrap().to_string());
    }
    env.wait_rows(&refs);
    assert_eq!(c.get("/ready").status, 200);
    for bad in ["infinity", "-infinity", "10000-01-01T00:00:00Z"] {
        let r = pg.execute(
            &format!("UPDATE products SET sale_ends_at = '{bad}' WHERE id = $1"),
            &[&id],
        );
        assert!(r.is_err(), "{bad} was accepted");
    }
    env.assert_conserved(id, 100);
}
