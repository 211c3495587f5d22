//! Running a sale as an operator: the admin API (products, windows, restocks, closing, stats,
//! orders, late payments), changes made with SQL, and the commands.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ADMIN: &str = "admin-test-token-0123456789abcdef-0123456789";

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

fn rfc3339_in(secs: f64) -> String {
    let t = SystemTime::now() + Duration::from_secs_f64(secs);
    humantime_like(t)
}

/// `2026-11-27T10:00:00.000Z` without a date library: seconds since the epoch by hand.
fn humantime_like(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let (secs, ms) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn reconcile_code(env: &Env) -> (i32, String) {
    let out = env.command("reconcile").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_whole_sale_runs_through_the_admin_api() {
    let env = Env::new();
    let srv = admin_server(&env, &[("FLASHSALE_HOLD_SECS", "3")]);
    let mut c = srv.client();

    // The admin API needs its token.
    let r = c.post_json(
        "/admin/products",
        &json!({"name": "x", "price_cents": 1, "stock": 1}),
    );
    assert_eq!((r.status, r.code()), (401, "unauthorized".to_string()));

    // A product whose sale opens in 4 seconds.
    let r = admin(
        &mut c,
        "POST",
        "/admin/products",
        Some(
            &json!({"name": "Drop", "price_cents": 1000, "stock": 100, "max_per_order": 5,
                     "sale_starts_at": rfc3339_in(4.0)}),
        ),
    );
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let p = r.json();
    assert_eq!(
        (p["state"].as_str(), p["stock"].as_i64()),
        (Some("upcoming"), Some(100))
    );
    let pid = p["id"].as_i64().unwrap();
    let r = c.order(pid, 1);
    assert_eq!((r.status, r.code()), (409, "sale_not_started".to_string()));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.json()["sale_starts_at"], p["sale_starts_at"]);

    // It opens on every connection (so on both workers) at the same moment.
    wait_until("the sale opens", || {
        (c.order(pid, 1).status == 202).then_some(())
    });
    for _ in 0..8 {
        assert_eq!(Client::connect(srv.addr).order(pid, 1).status, 202);
    }
    assert_eq!(
        c.get(&format!("/api/products/{pid}")).json()["state"],
        "live"
    );

    // Buyers keep reserving while the stock moves up and down; reconcile agrees throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop) = (srv.addr, stop.clone());
            std::thread::spawn(move || {
                let mut b = Client::connect(addr);
                let mut refs = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = b.order(pid, 1);
                    if r.status == 202 {
                        refs.push(r.json()["order_reference"].as_str().unwrap().to_string());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                refs
            })
        })
        .collect();
    for delta in [50, -20, 30, -10] {
        let r = admin(
            &mut c,
            "POST",
            &format!("/admin/products/{pid}/stock"),
            Some(&json!({"delta": delta})),
        );
        assert_eq!(
            r.status,
            200,
            "{delta}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let (code, out) = reconcile_code(&env);
        assert_eq!(code, 0, "reconcile during the sale:\n{out}");
    }
    // More than is reservable: refused, nothing changed (never a 503).
    let r = admin(
        &mut c,
        "POST",
        &format!("/admin/products/{pid}/stock"),
        Some(&json!({"delta": -100_000})),
    );
    assert_eq!(
        (r.status, r.code()),
        (409, "insufficient_stock".to_string())
    );

    // The buyers stop before the price changes, so every order they placed was priced before it.
    stop.store(true, Ordering::Relaxed);
    let mut refs: Vec<String> = buyers.into_iter().flat_map(|b| b.join().unwrap()).collect();

    // A price change applies to new orders only.
    let r = admin(
        &mut c,
        "PATCH",
        &format!("/admin/products/{pid}"),
        Some(&json!({"price_cents": 2500})),
    );
    assert_eq!(
        (r.status, r.json()["price_cents"].as_i64()),
        (200, Some(2500))
    );
    let r = c.order(pid, 2);
    assert_eq!(
        (r.status, r.json()["amount_cents"].as_i64()),
        (202, Some(5000))
    );
    let held = r.json()["order_reference"].as_str().unwrap().to_string();

    refs.push(held.clone());
    env.wait_rows(&refs);
    let early: Vec<i64> = env
        .pg()
        .query(
            "SELECT amount_cents FROM orders WHERE order_reference = ANY($1) AND order_reference <> $2",
            &[&refs, &held],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(early.iter().all(|a| *a == 1000), "orders keep their amount");

    // Closing: new orders get 409 sale_ended; a pending order can still be paid.
    let r = admin(
        &mut c,
        "POST",
        &format!("/admin/products/{pid}/close"),
        None,
    );
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("ended")));
    let r = c.order(pid, 1);
    assert_eq!((r.status, r.code()), (409, "sale_ended".to_string()));
    assert_eq!(c.webhook(&held, "success").status, 200);

    // Everything else expires (3 s hold); the units come back and are not sold again.
    let pending_left = || env.pending_units(pid);
    wait_until("every other reservation expired", || {
        (pending_left() == 0).then_some(())
    });
    assert_eq!(c.order(pid, 1).status, 409);

    // Stats agree with PostgreSQL.
    let s = admin(&mut c, "GET", &format!("/admin/products/{pid}/stats"), None).json();
    let total: i64 = 100 + 50 - 20 + 30 - 10;
    assert_eq!(s["paid_units"], 2);
    assert_eq!(s["revenue_cents"], 5000);
    assert_eq!(s["pending_units"], 0);
    assert_eq!(s["stock"].as_i64(), Some(total - 2));
    assert_eq!(s["reservable"].as_i64(), Some(total - 2));
    assert_eq!(
        s["cancelled_units"].as_i64(),
        Some(refs.len() as i64 + 9 - 1)
    );

    // Orders, page by page, are PostgreSQL's, oldest first.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/orders?product_id={pid}&limit=7&after={a}"),
            None => format!("/admin/orders?product_id={pid}&limit=7"),
        };
        let page = admin(&mut c, "GET", &path, None).json();
        for o in page["orders"].as_array().unwrap() {
            listed.push(o["order_reference"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let in_pg: Vec<String> = env
        .pg()
        .query(
            "SELECT order_reference FROM orders WHERE product_id = $1 ORDER BY id",
            &[&pid],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed, in_pg);
    let paid = admin(
        &mut c,
        "GET",
        &format!("/admin/orders?product_id={pid}&status=paid"),
        None,
    )
    .json();
    assert_eq!(paid["orders"].as_array().unwrap().len(), 1);
    assert_eq!(paid["orders"][0]["order_reference"], held.as_str());
    let total_stock = total;
    env.assert_conserved(pid, total_stock);
}

#[test]
fn a_late_payment_is_listed_and_refunded_once() {
    let env = Env::new();
    let pid = env.product(10, 700);
    let srv = admin_server(&env, &[("FLASHSALE_HOLD_SECS", "1")]);
    let mut c = srv.client();
    let r = c.order(pid, 2);
    let reference = r.json()["order_reference"].as_str().unwrap().to_string();
    wait_until("expired", || {
        (env.order_row(&reference).map(|o| o.0) == Some("cancelled".into())).then_some(())
    });
    let r = c.webhook(&reference, "success");
    assert_eq!(r.json()["refund_required"], true);
    let list = admin(&mut c, "GET", "/admin/late-payments?refunded=false", None).json();
    let late = list["late_payments"].as_array().unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["order_reference"], reference.as_str());
    assert_eq!(late[0]["amount_cents"], 1400);
    assert!(late[0]["refunded_at"].is_null());
    let path = format!("/admin/late-payments/{reference}/refund");
    let first = admin(&mut c, "POST", &path, None);
    assert_eq!(first.status, 200);
    assert!(first.json()["refunded_at"].is_string());
    let again = admin(&mut c, "POST", &path, None);
    assert_eq!(again.json(), first.json(), "a repeat changes nothing");
    let refunded = admin(&mut c, "GET", "/admin/late-payments?refunded=true", None).json();
    assert_eq!(refunded["late_payments"].as_array().unwrap().len(), 1);
    let open = admin(&mut c, "GET", "/admin/late-payments?refunded=false", None).json();
    assert!(open["late_payments"].as_array().unwrap().is_empty());
    let r = admin(&mut c, "POST", "/admin/late-payments/nobody/refund", None);
    assert_eq!(
        (r.status, r.code()),
        (404, "late_payment_not_found".to_string())
    );
    let s = admin(&mut c, "GET", &format!("/admin/products/{pid}/stats"), None).json();
    assert_eq!(s["late_payments"], 1);
}

#[test]
fn without_a_token_the_admin_api_does_not_exist() {
    let env = Env::new();
    let srv = Server::start(&env);
    let mut c = srv.client();
    for (method, path) in [
        ("POST", "/admin/products"),
        ("GET", "/admin/orders"),
        ("DELETE", "/admin/products/1"),
        ("GET", "/admin/anything/at/all"),
    ] {
        let r = c.request(method, path, &[("Authorization", "Bearer x")], b"{}");
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found".to_string()),
            "{method} {path}"
        );
    }
}

#[test]
fn admin_input_is_validated_and_changes_nothing_when_bad() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = admin_server(&env, &[]);
    let mut c = srv.client();
    for body in [
        json!({"price_cents": 1, "stock": 1}),
        json!({"name": "x", "price_cents": -1, "stock": 1}),
        json!({"name": "x", "price_cents": 1, "stock": 1, "max_per_order": 0}),
        json!({"name": "x", "price_cents": 1, "stock": 1, "sale_starts_at": "tomorrow"}),
        json!({"name": "x", "price_cents": 1, "stock": 1,
               "sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"}),
    ] {
        let r = admin(&mut c, "POST", "/admin/products", Some(&body));
        assert_eq!(
            (r.status, r.code()),
            (422, "validation_failed".to_string()),
            "{body}"
        );
    }
    // A window that ends before the start already stored.
    let r = admin(
        &mut c,
        "PATCH",
        &format!("/admin/products/{pid}"),
        Some(&json!({"sale_starts_at": "2030-01-02T00:00:00Z"})),
    );
    assert_eq!(r.status, 200);
    let r = admin(
        &mut c,
        "PATCH",
        &format!("/admin/products/{pid}"),
        Some(&json!({"sale_ends_at": "2030-01-01T00:00:00Z"})),
    );
    assert_eq!((r.status, r.code()), (422, "validation_failed".to_string()));
    for (path, body) in [
        (format!("/admin/products/{pid}/stock"), json!({"delta": 0})),
        (
            format!("/admin/products/{pid}/stock"),
            json!({"delta": "x"}),
        ),
        (
            "/admin/products/999999/stock".to_string(),
            json!({"delta": 1}),
        ),
    ] {
        let r = admin(&mut c, "POST", &path, Some(&body));
        assert!(matches!(r.status, 404 | 422), "{path} {body}: {}", r.status);
    }
    assert_eq!(
        admin(&mut c, "GET", "/admin/orders?limit=0", None).status,
        422
    );
    let count: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM products", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "nothing was created");
    assert_eq!(env.pg_stock(pid), 10);
}

#[test]
fn changes_made_with_sql_reach_the_sale_within_seconds() {
    let env = Env::new();
    let pid = env.product(100, 500);
    let srv = Server::start(&env);
    let mut c = srv.client();
    assert_eq!(c.order(pid, 1).json()["amount_cents"], 500);
    env.pg()
        .execute(
            "UPDATE products SET price_cents = 800, max_per_order = 2 WHERE id = $1",
            &[&pid],
        )
        .unwrap();
    wait_until("the new price is sold", || {
        let r = c.order(pid, 1);
        (r.json()["amount_cents"] == 800).then_some(())
    });
    let r = c.order(pid, 3);
    assert_eq!(r.status, 422, "the new max_per_order holds too");
    // A per-user limit switched on with SQL counts what buyers already hold.
    let r = c.order_with(&json!({"product_id": pid, "qty": 2, "user_id": "u"}), None);
    assert_eq!(r.status, 202);
    env.pg()
        .execute(
            "UPDATE products SET per_user_limit = 3 WHERE id = $1",
            &[&pid],
        )
        .unwrap();
    wait_until("the limit applies", || {
        let r = c.order_with(&json!({"product_id": pid, "qty": 2, "user_id": "u"}), None);
        (r.status == 409).then_some(())
    });
    env.assert_conserved(pid, 100);
}

#[test]
fn commands_print_help_and_refuse_misuse() {
    let env = Env::new();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["reconcile", "--help"],
        vec!["migrate", "-h"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
            .args(&args)
            .env("PAYMENT_WEBHOOK_SECRET", "x")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    for args in [vec!["bogus"], vec!["serve", "--nope"], vec![]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let _ = env;
}

#[test]
fn a_second_server_on_the_same_address_is_refused() {
    let env = Env::new();
    let first = Server::start(&env);
    let out = env
        .command("serve")
        .env("FLASHSALE_LISTEN", first.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&first.addr.to_string()) && err.contains("already listens"),
        "{err}"
    );
    assert_eq!(first.client().get("/health").status, 200);
}
