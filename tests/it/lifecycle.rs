//! The order lifecycle: payment webhooks, expiry, late payments, early webhooks,
//! orders that exist only in PostgreSQL, Redis losing its data, reconcile, metrics and
//! configuration. After every scenario the conservation law holds.

use crate::common::*;
use serde_json::json;

fn reserve(c: &mut Client, pid: i64, qty: i64) -> String {
    let r = c.order(pid, qty);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["order_reference"].as_str().unwrap().to_string()
}

fn stock(c: &mut Client, pid: i64) -> i64 {
    c.get(&format!("/api/products/{pid}")).json()["stock"]
        .as_i64()
        .unwrap()
}

fn webhook_row(env: &Env, reference: &str) -> Option<(String, i32)> {
    env.pg()
        .query_opt(
            "SELECT status, attempts FROM webhooks WHERE order_reference = $1",
            &[&reference],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

#[test]
fn paid_flow_sells_once_even_when_the_webhook_repeats() {
    let env = Env::new();
    let pid = env.product(10, 700);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 2);

    let r = c.webhook(&reference, "success");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"message": "Payment successful, order marked as paid", "order_reference": reference, "order_status": "paid"})
    );
    // The answer came after the commit: PostgreSQL already shows it, no waiting.
    assert_eq!(env.order_row(&reference), Some(("paid".into(), None, 2)));
    assert_eq!(env.pg_stock(pid), 8);
    assert_eq!(webhook_row(&env, &reference).unwrap().0, "processed");

    for _ in 0..3 {
        let r = c.webhook(&reference, "success");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["message"], "Webhook already processed");
        assert_eq!(r.json()["order_status"], "paid");
    }
    assert_eq!(env.pg_stock(pid), 8, "stock went down once");
    assert_eq!(webhook_row(&env, &reference), Some(("processed".into(), 4)));
    assert_eq!(stock(&mut c, pid), 8);
    let o = c.get(&format!("/api/orders/{reference}")).json();
    assert_eq!(
        (o["status"].as_str(), o["cancel_reason"].is_null()),
        (Some("paid"), true)
    );

    // A failure after the payment changes nothing.
    let r = c.webhook(&reference, "failure");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["message"], "Order already in final state");
    assert_eq!(r.json()["order_status"], "paid");
    assert_eq!(env.pg_stock(pid), 8);
    env.assert_conserved(pid, 10);
}

#[test]
fn failed_flow_gives_units_back_exactly_once() {
    let env = Env::new();
    let pid = env.product(10, 700);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 3);
    assert_eq!(stock(&mut c, pid), 7);

    let r = c.webhook(&reference, "failure");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"message": "Payment failed, order cancelled and stock released", "order_reference": reference, "order_status": "cancelled"})
    );
    assert_eq!(
        env.order_row(&reference),
        Some(("cancelled".into(), Some("payment_failed".into()), 3))
    );
    assert_eq!(stock(&mut c, pid), 10);
    for _ in 0..3 {
        let r = c.webhook(&reference, "failure");
        assert_eq!(r.json()["message"], "Webhook already processed");
    }
    assert_eq!(stock(&mut c, pid), 10, "units came back once");
    assert_eq!(env.pg_stock(pid), 10, "nothing was sold");
    let o = c.get(&format!("/api/orders/{reference}")).json();
    assert_eq!(
        (o["status"].as_str(), o["cancel_reason"].as_str()),
        (Some("cancelled"), Some("payment_failed"))
    );

    // A success after the failure: money taken for a cancelled order.
    let r = c.webhook(&reference, "success");
    assert_eq!(r.json()["message"], "Order already in final state");
    assert_eq!(r.json()["refund_required"], true);
    assert_eq!(env.pg_stock(pid), 10);
    env.assert_conserved(pid, 10);
}

#[test]
fn exhausted_stock_freed_by_a_failure_can_be_bought_again() {
    let env = Env::new();
    let pid = env.product(1, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let first = reserve(&mut c, pid, 1);
    assert_eq!(c.order(pid, 1).code(), "insufficient_stock");
    assert_eq!(c.webhook(&first, "failure").status, 200);
    let second = reserve(&mut c, pid, 1);
    assert_eq!(c.order(pid, 1).code(), "insufficient_stock");
    assert_eq!(c.webhook(&second, "success").json()["order_status"], "paid");
    assert_eq!(env.pg_stock(pid), 0);
    env.assert_conserved(pid, 1);
}

#[test]
fn bad_signatures_are_401_and_change_nothing() {
    let env = Env::new();
    let pid = env.product(5, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 1);
    let body = json!({"order_reference": reference, "status": "success"}).to_string();
    let wrong = {
        let mut s = sign(body.as_bytes()).into_bytes();
        s[0] = if s[0] == b'a' { b'b' } else { b'a' };
        String::from_utf8(s).unwrap()
    };
    let over_other_body = sign(br#"{"order_reference":"x","status":"success"}"#);
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case<'_>> = vec![
        (vec![], body.as_bytes()),
        (vec![("X-Payment-Signature", "")], body.as_bytes()),
        (
            vec![("X-Payment-Signature", wrong.as_str())],
            body.as_bytes(),
        ),
        (vec![("X-Payment-Signature", "zz-not-hex")], body.as_bytes()),
        (
            vec![("X-Payment-Signature", over_other_body.as_str())],
            body.as_bytes(),
        ),
        (vec![], b"{ malformed"),
        (vec![("X-Payment-Signature", "abc")], b"{ malformed"),
    ];
    for (headers, b) in cases {
        let r = c.request("POST", "/api/payments/webhook", &headers, b);
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(
            r.json(),
            json!({"message": "Invalid signature", "code": "invalid_signature"})
        );
    }
    assert_eq!(
        c.get(&format!("/api/orders/{reference}")).json()["status"],
        "pending"
    );
    assert_eq!(webhook_row(&env, &reference), None);
    env.assert_conserved(pid, 5);
}

#[test]
fn webhook_validation_is_422_and_malformed_signed_bodies_are_400() {
    let env = Env::new();
    let pid = env.product(5, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 1);
    for body in [
        json!({"order_reference": reference, "status": "processed"}),
        json!({"order_reference": reference, "status": "SUCCESS"}),
        json!({"order_reference": reference}),
        json!({"status": "success"}),
        json!({"order_reference": 12, "status": "success"}),
    ] {
        let b = body.to_string();
        let r = c.request(
            "POST",
            "/api/payments/webhook",
            &[("X-Payment-Signature", &sign(b.as_bytes()))],
            b.as_bytes(),
        );
        assert_eq!(
            (r.status, r.code()),
            (422, "validation_failed".to_string()),
            "{b}"
        );
        assert!(r.json()["errors"].is_object());
    }
    let b = b"[\"not an object\"]";
    let r = c.request(
        "POST",
        "/api/payments/webhook",
        &[("X-Payment-Signature", &sign(b))],
        b,
    );
    assert_eq!((r.status, r.code()), (400, "malformed_json".to_string()));
    assert_eq!(
        c.get(&format!("/api/orders/{reference}")).json()["status"],
        "pending"
    );
    env.assert_conserved(pid, 5);
}

#[test]
fn reservations_expire_and_give_their_units_back() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "1")]);
    let mut c = srv.client();
    let refs: Vec<String> = (0..5).map(|_| reserve(&mut c, pid, 2)).collect();
    assert_eq!(stock(&mut c, pid), 0);
    for r in &refs {
        wait_until("expired in PostgreSQL", || {
            (env.order_row(r) == Some(("cancelled".into(), Some("expired".into()), 2)))
                .then_some(())
        });
        let o = c.get(&format!("/api/orders/{r}")).json();
        assert_eq!(
            (o["status"].as_str(), o["cancel_reason"].as_str()),
            (Some("cancelled"), Some("expired"))
        );
    }
    assert_eq!(stock(&mut c, pid), 10);
    let m = c.get("/metrics");
    assert!(
        String::from_utf8_lossy(&m.body).contains("flashsale_expiries_total 5"),
        "{}",
        String::from_utf8_lossy(&m.body)
    );
    env.assert_conserved(pid, 10);
}

#[test]
fn a_payment_after_expiry_is_refused_and_recorded_for_refund() {
    let env = Env::new();
    let pid = env.product(3, 1234);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "1")]);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 1);
    wait_until("expired", || {
        (c.get(&format!("/api/orders/{reference}")).json()["status"] == "cancelled").then_some(())
    });
    let r = c.webhook(&reference, "success");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"message": "Order already in final state", "order_reference": reference, "order_status": "cancelled", "refund_required": true})
    );
    assert_eq!(
        env.order_row(&reference),
        Some(("cancelled".into(), Some("expired".into()), 1))
    );
    assert_eq!(env.pg_stock(pid), 3, "nothing sold");
    let late: i64 = env
        .pg()
        .query_one(
            "SELECT amount_cents FROM late_payments WHERE order_reference = $1",
            &[&reference],
        )
        .unwrap()
        .get(0);
    assert_eq!(late, 1234);
    // Repeating it does not record it twice.
    assert_eq!(
        c.webhook(&reference, "success").json()["refund_required"],
        true
    );
    let n: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM late_payments", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    env.assert_conserved(pid, 3);
}

/// Payments and failures sent at the moment of expiry: exactly one outcome per order, and
/// every unit counted once.
#[test]
fn expiry_racing_payments_counts_every_unit_once() {
    let env = Env::new();
    let pid = env.product(60, 100);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "1")]);
    let mut c = srv.client();
    let orders: Vec<(String, String)> = (0..30)
        .map(|_| {
            let r = c.order(pid, 2);
            assert_eq!(r.status, 202);
            let v = r.json();
            (
                v["order_reference"].as_str().unwrap().to_string(),
                v["expires_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Aim the webhooks at the expiry: wait until the first order is due, then fire.
    let first = orders[0].0.clone();
    wait_until("first hold about to end", || {
        let row = env.pg().query_opt("SELECT 1 FROM orders WHERE order_reference = $1 AND expires_at <= now() + interval '50 milliseconds'", &[&first]).unwrap();
        row.map(|_| ())
    });
    let answers: Vec<(String, serde_json::Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = orders
            .iter()
            .enumerate()
            .map(|(i, (reference, _))| {
                let addr = srv.addr;
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    let status = if i % 3 == 0 { "failure" } else { "success" };
                    let r = c.webhook(reference, status);
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    (status.to_string(), r.json())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut paid_units = 0;
    for ((reference, _), (sent, answer)) in orders.iter().zip(&answers) {
        let row = wait_until("row final", || {
            env.order_row(reference).filter(|r| r.0 != "pending")
        });
        match (sent.as_str(), answer["message"].as_str().unwrap()) {
            ("success", "Payment successful, order marked as paid") => {
                assert_eq!(row, ("paid".into(), None, 2));
                paid_units += 2;
            }
            ("success", "Order already in final state") => {
                assert_eq!(row, ("cancelled".into(), Some("expired".into()), 2));
                assert_eq!(answer["refund_required"], true);
            }
            ("failure", "Payment failed, order cancelled and stock released") => {
                assert_eq!(row, ("cancelled".into(), Some("payment_failed".into()), 2));
            }
            ("failure", "Order already in final state") => {
                assert_eq!(row, ("cancelled".into(), Some("expired".into()), 2));
            }
            other => panic!("unexpected outcome {other:?} for {reference}"),
        }
        let api = c.get(&format!("/api/orders/{reference}")).json();
        assert_eq!(api["status"].as_str(), Some(row.0.as_str()));
    }
    // The reaper's later attempts find every order final and change nothing.
    wait_until("nothing pending", || {
        (env.pending_units(pid) == 0).then_some(())
    });
    assert_eq!(env.paid_units(pid), paid_units);
    assert_eq!(stock(&mut c, pid), 60 - paid_units);
    env.assert_conserved(pid, 60);
}

#[test]
fn an_unknown_reference_is_recorded_and_applied_when_its_order_appears() {
    let env = Env::new();
    let pid = env.product(10, 500);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let r = c.webhook("ext-order-1", "success");
    assert_eq!(r.status, 202);
    assert_eq!(
        r.json(),
        json!({"message": "Order not found, webhook recorded for later processing", "order_reference": "ext-order-1"})
    );
    assert_eq!(
        webhook_row(&env, "ext-order-1"),
        Some(("pending".into(), 1))
    );
    // Repeats are recorded, still pending.
    assert_eq!(c.webhook("ext-order-1", "success").status, 202);
    assert_eq!(
        webhook_row(&env, "ext-order-1"),
        Some(("pending".into(), 2))
    );

    // Another tool writes the order: the recorded webhook is applied.
    env.pg()
        .batch_execute(&format!(
            "INSERT INTO orders (order_reference, product_id, qty, amount_cents, status, expires_at)
             VALUES ('ext-order-1', {pid}, 3, 1500, 'pending', now() + interval '1 hour')"
        ))
        .unwrap();
    wait_until("recorded webhook applied", || {
        (env.order_row("ext-order-1").map(|r| r.0) == Some("paid".into())).then_some(())
    });
    wait_until("webhook processed", || {
        (webhook_row(&env, "ext-order-1").map(|w| w.0) == Some("processed".into())).then_some(())
    });
    assert_eq!(env.pg_stock(pid), 7);
    assert_eq!(c.get("/api/orders/ext-order-1").json()["status"], "paid");
    assert_eq!(
        c.webhook("ext-order-1", "success").json()["message"],
        "Webhook already processed"
    );
    env.assert_conserved(pid, 10);
}

#[test]
fn orders_that_exist_only_in_postgresql_are_paid_and_failed_like_any_other() {
    let env = Env::new();
    let loaded = env.product(20, 100);
    let cold = env.product(20, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    assert_eq!(stock(&mut c, loaded), 20);
    env.pg()
        .batch_execute(&format!(
            "INSERT INTO orders (order_reference, product_id, qty, amount_cents, status, expires_at) VALUES
               ('pg-1', {loaded}, 2, 200, 'pending', now() + interval '1 hour'),
               ('pg-2', {loaded}, 3, 300, 'pending', now() + interval '1 hour'),
               ('pg-3', {cold}, 4, 400, 'pending', now() + interval '1 hour'),
               ('pg-4', {cold}, 5, 500, 'pending', now() + interval '1 hour')"
        ))
        .unwrap();
    assert_eq!(c.get("/api/orders/pg-1").json()["status"], "pending");

    // Product already live in Redis: the order is adopted (its units taken), then paid.
    assert_eq!(c.webhook("pg-1", "success").json()["order_status"], "paid");
    assert_eq!(env.pg_stock(loaded), 18);
    assert_eq!(
        c.webhook("pg-2", "failure").json()["order_status"],
        "cancelled"
    );
    assert_eq!(stock(&mut c, loaded), 18);
    // Product not loaded yet: the load counts the pending orders.
    assert_eq!(c.webhook("pg-3", "success").json()["order_status"], "paid");
    assert_eq!(env.pg_stock(cold), 16);
    assert_eq!(stock(&mut c, cold), 11, "16 unsold minus pg-4's 5 pending");
    assert_eq!(
        c.webhook("pg-4", "failure").json()["order_status"],
        "cancelled"
    );
    assert_eq!(stock(&mut c, cold), 16);
    assert_eq!(
        c.webhook("pg-3", "success").json()["message"],
        "Webhook already processed"
    );
    env.assert_conserved(loaded, 20);
    env.assert_conserved(cold, 20);
}

#[test]
fn deleted_redis_keys_are_rebuilt_from_postgresql_with_pending_orders_intact() {
    let env = Env::new();
    let pid = env.product(30, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let paid = reserve(&mut c, pid, 2);
    let pending1 = reserve(&mut c, pid, 3);
    let _pending2 = reserve(&mut c, pid, 4);
    let failed_later = reserve(&mut c, pid, 5);
    assert_eq!(c.webhook(&paid, "success").status, 200);
    wait_until("written", || (env.journal_len(pid) == 0).then_some(()));

    // Redis loses every key of the product.
    let mut r = env.redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{p:{pid}}}:*", env.prefix))
        .query(&mut r)
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut r).unwrap();

    // Rebuilt on next use: 28 unsold - (3 + 4 + 5) pending.
    assert_eq!(stock(&mut c, pid), 16);
    assert_eq!(
        c.get(&format!("/api/orders/{pending1}")).json()["status"],
        "pending"
    );
    assert_eq!(
        c.webhook(&pending1, "success").json()["order_status"],
        "paid"
    );
    assert_eq!(
        c.webhook(&failed_later, "failure").json()["order_status"],
        "cancelled"
    );
    assert_eq!(stock(&mut c, pid), 21);
    assert_eq!(
        c.webhook(&paid, "success").json()["message"],
        "Webhook already processed"
    );
    assert_eq!(env.pg_stock(pid), 25);
    env.assert_conserved(pid, 30);
}

#[test]
fn a_restarted_redis_without_persistence_is_rebuilt_and_expiry_still_works() {
    let mut redis = OwnRedis::start(&["--appendonly", "no"]);
    let env = Env::with_redis(redis.url());
    let pid = env.product(40, 100);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "3")]);
    let mut c = srv.client();
    let paid = reserve(&mut c, pid, 2);
    let pending = reserve(&mut c, pid, 3);
    assert_eq!(c.webhook(&paid, "success").status, 200);
    wait_until("written", || (env.journal_len(pid) == 0).then_some(()));

    redis.kill9();
    wait_until("server notices", || {
        (c.get("/ready").status == 503).then_some(())
    });
    let r = c.get("/ready");
    assert_eq!(r.json()["redis"], "unavailable");
    let r = c.order(pid, 1);
    assert_eq!((r.status, r.code()), (503, "unavailable".to_string()));
    assert!(r.header("retry-after").is_some());

    redis.restart();
    wait_until("ready again", || {
        (c.get("/ready").status == 200).then_some(())
    });
    // Everything is gone from Redis; the product comes back from PostgreSQL.
    assert_eq!(stock(&mut c, pid), 35);
    // The pending order's expiry still happens after the rebuild.
    wait_until("expired after the rebuild", || {
        (env.order_row(&pending).map(|r| r.1) == Some(Some("expired".into()))).then_some(())
    });
    assert_eq!(stock(&mut c, pid), 38);
    env.assert_conserved(pid, 40);
}

#[test]
fn reconcile_reports_drift_and_exits_1() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    reserve(&mut c, pid, 2);
    env.assert_conserved(pid, 10);
    let out = env.command("reconcile").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: no drift"), "{text}");
    let _: () = redis::cmd("INCRBY")
        .arg(env.key(pid, "stock"))
        .arg(3)
        .query(&mut env.redis())
        .unwrap();
    let out = env.command("reconcile").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DRIFT"), "{text}");
}

#[test]
fn metrics_expose_the_counters_of_the_contract() {
    let env = Env::new();
    let pid = env.product(1, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 1);
    assert_eq!(c.order(pid, 1).status, 409);
    assert_eq!(c.webhook(&reference, "success").status, 200);
    let m = c.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let t = String::from_utf8_lossy(&m.body);
    for needle in [
        "flashsale_http_requests_total{route=\"POST /api/orders\",status=\"202\"} 1",
        "flashsale_http_requests_total{route=\"POST /api/orders\",status=\"409\"} 1",
        "flashsale_reservations_total{outcome=\"accepted\"} 1",
        "flashsale_reservations_total{outcome=\"insufficient_stock\"} 1",
        "flashsale_webhooks_total{outcome=\"paid\"} 1",
        "flashsale_handoff_queue_depth ",
        "flashsale_writer_batch_rows_bucket",
        "flashsale_writer_commit_seconds_bucket",
        "flashsale_expiries_total 0",
        // The first order found the product not loaded (a call), loaded it and called again;
        // the second order made one more.
        "flashsale_reserve_calls_total 3",
        "flashsale_postgres_up 1",
        "# TYPE flashsale_reservations_total counter",
        // Latency: one 202 and one 409 timed, and every Redis call.
        "# TYPE flashsale_http_request_duration_seconds histogram",
        "flashsale_http_request_duration_seconds_count{route=\"POST /api/orders\",outcome=\"2xx\"} 1",
        "flashsale_http_request_duration_seconds_count{route=\"POST /api/orders\",outcome=\"4xx\"} 1",
        "flashsale_http_request_duration_seconds_bucket{route=\"POST /api/payments/webhook\",outcome=\"2xx\",le=\"+Inf\"} 1",
        "# TYPE flashsale_redis_call_duration_seconds histogram",
        "flashsale_redis_call_duration_seconds_bucket{le=\"5e-05\"}",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
}

#[test]
fn serve_refuses_to_start_without_a_secret_or_with_bad_settings() {
    let env = Env::new();
    let out = env
        .command("serve")
        .env_remove("PAYMENT_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAYMENT_WEBHOOK_SECRET"));
    let out = env
        .command("serve")
        .env("PAYMENT_WEBHOOK_SECRET", "")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an empty key is no key");
    for (k, v) in [
        ("FLASHSALE_HOLD_SECS", "ten"),
        ("FLASHSALE_WORKERS", "0"),
        ("REDIS_URL", "localhost:6379"),
    ] {
        let out = env.command("serve").env(k, v).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(k), "{k}");
    }
}

#[test]
fn pending_orders_still_expire_after_redis_loses_everything_with_no_further_traffic() {
    let mut redis = OwnRedis::start(&["--appendonly", "no"]);
    let env = Env::with_redis(redis.url());
    let pid = env.product(10, 100);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "2")]);
    let mut c = srv.client();
    let reference = reserve(&mut c, pid, 4);
    wait_until("written", || (env.journal_len(pid) == 0).then_some(()));
    redis.kill9();
    redis.restart();
    wait_until("ready again", || {
        (c.get("/ready").status == 200).then_some(())
    });
    // Nobody asks for the product: the reaper itself rebuilds it to expire the order.
    wait_until("expired", || {
        (env.order_row(&reference).map(|r| r.1) == Some(Some("expired".into()))).then_some(())
    });
    env.assert_conserved(pid, 10);
    assert_eq!(env.redis_stock(pid), Some(10));
}

/// Reservations that share one `reserve.lua` call share one pending-set member and one expiry
/// timer. Within such a batch one order is paid and one fails; the rest expire together, each
/// exactly once, and the member leaves the pending set when nothing in it is pending.
#[test]
fn reservations_batched_into_one_call_expire_together_except_those_settled_first() {
    let env = Env::new();
    let pid = env.product(10_000, 100);
    let srv = Server::start_with(&env, &[("FLASHSALE_HOLD_SECS", "10")]);
    let mut all: Vec<String> = Vec::new();
    // Rounds of eight simultaneous orders until two of them went in one call: its member then
    // names several references, joined by NUL.
    let batch: Vec<String> = wait_until("a reserve call carrying several reservations", || {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let round: Vec<String> = (0..8)
            .map(|_| {
                let (b, addr) = (barrier.clone(), srv.addr);
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    b.wait();
                    reserve(&mut c, pid, 1)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        all.extend(round.iter().cloned());
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(env.key(pid, "pending"))
            .arg(0)
            .arg(-1)
            .query(&mut env.redis())
            .unwrap();
        members.iter().find_map(|m| {
            let refs: Vec<String> = m
                .split(|b| *b == 0)
                .map(|r| String::from_utf8(r.to_vec()).unwrap())
                .collect();
            (refs.len() > 1 && refs.iter().all(|r| round.contains(r))).then_some(refs)
        })
    });
    let mut c = srv.client();
    let paid = c.webhook(&batch[0], "success");
    assert_eq!(paid.json()["order_status"], "paid", "{:?}", paid.json());
    let failed = c.webhook(&batch[1], "failure");
    assert_eq!(
        failed.json()["order_status"],
        "cancelled",
        "{:?}",
        failed.json()
    );
    wait_until("every reservation settled in PostgreSQL", || {
        (env.pending_units(pid) == 0 && env.order_row_count() == all.len()).then_some(())
    });
    for r in &all {
        let want = if *r == batch[0] {
            ("paid".to_string(), None)
        } else if *r == batch[1] {
            ("cancelled".to_string(), Some("payment_failed".to_string()))
        } else {
            ("cancelled".to_string(), Some("expired".to_string()))
        };
        let row = env.order_row(r).expect("a row");
        assert_eq!((row.0, row.1), want, "{r}");
    }
    wait_until("no member left in the pending set", || {
        let n: i64 = redis::cmd("ZCARD")
            .arg(env.key(pid, "pending"))
            .query(&mut env.redis())
            .unwrap();
        (n == 0).then_some(())
    });
    env.assert_conserved(pid, 10_000);
    assert_eq!(env.redis_stock(pid), Some(10_000 - 1));
}
