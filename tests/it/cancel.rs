//! Buyer cancellation (`POST /api/orders/{order_reference}/cancel`): units and allowance back
//! once, repeats, final states refused, a late payment after it, and races with payments
//! where exactly one side wins. Owner-only in `jwt` mode is in `auth.rs`.

use crate::common::*;
use serde_json::json;

fn reserve_for(c: &mut Client, pid: i64, qty: i64, user: Option<&str>) -> String {
    let mut body = json!({"product_id": pid, "qty": qty});
    if let Some(u) = user {
        body["user_id"] = json!(u);
    }
    let r = c.order_with(&body, None);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["order_reference"].as_str().unwrap().to_string()
}

fn cancel(c: &mut Client, reference: &str) -> Resp {
    c.request("POST", &format!("/api/orders/{reference}/cancel"), &[], b"")
}

fn stock(c: &mut Client, pid: i64) -> i64 {
    c.get(&format!("/api/products/{pid}")).json()["stock"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_cancelled_order_gives_its_units_and_allowance_back_once() {
    let env = Env::new();
    let pid = env.product_with(5, 700, 10, Some(2));
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve_for(&mut c, pid, 2, Some("ann"));
    assert_eq!(
        c.order_with(
            &json!({"product_id": pid, "qty": 1, "user_id": "ann"}),
            None
        )
        .status,
        409
    );
    assert_eq!(stock(&mut c, pid), 3);

    let r = cancel(&mut c, &reference);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let o = r.json();
    assert_eq!(o["order_reference"], reference.as_str());
    assert_eq!(
        (o["status"].as_str(), o["cancel_reason"].as_str()),
        (Some("cancelled"), Some("buyer"))
    );
    assert_eq!(o["qty"], 2);
    // The answer came after the commit: PostgreSQL has it now.
    assert_eq!(
        env.order_row(&reference),
        Some(("cancelled".into(), Some("buyer".into()), 2))
    );
    assert_eq!(stock(&mut c, pid), 5, "units back at once");

    // A repeat: the same order, nothing changes.
    let again = cancel(&mut c, &reference);
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), o);
    assert_eq!(stock(&mut c, pid), 5, "units came back once");

    // Ann's allowance is free again: she may reserve her two units anew.
    reserve_for(&mut c, pid, 2, Some("ann"));
    assert_eq!(c.get(&format!("/api/orders/{reference}")).json(), o);
    env.assert_conserved(pid, 5);
}

#[test]
fn paid_and_failed_orders_are_not_cancellable() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let paid = reserve_for(&mut c, pid, 1, None);
    assert_eq!(c.webhook(&paid, "success").status, 200);
    let failed = reserve_for(&mut c, pid, 1, None);
    assert_eq!(c.webhook(&failed, "failure").status, 200);
    for (reference, status) in [(&paid, "paid"), (&failed, "cancelled")] {
        let r = cancel(&mut c, reference);
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["code"], "order_not_cancellable");
        assert_eq!(r.json()["order_status"], status);
    }
    assert_eq!(env.order_row(&paid), Some(("paid".into(), None, 1)));
    assert_eq!(
        env.order_row(&failed),
        Some(("cancelled".into(), Some("payment_failed".into()), 1))
    );
    assert_eq!(stock(&mut c, pid), 9);
    // Unknown references, ours or not.
    for unknown in [
        format!("{pid}-01JD8Y3V6Q2W5N1R7C4T9X0ZKA"),
        "nobody".to_string(),
    ] {
        let r = cancel(&mut c, &unknown);
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["code"], "order_not_found");
    }
    // GET is not a cancellation.
    assert_eq!(c.get(&format!("/api/orders/{paid}/cancel")).status, 405);
    env.assert_conserved(pid, 10);
}

#[test]
fn a_payment_after_a_cancellation_is_a_late_payment() {
    let env = Env::new();
    let pid = env.product(4, 1234);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let reference = reserve_for(&mut c, pid, 1, None);
    assert_eq!(cancel(&mut c, &reference).status, 200);
    let r = c.webhook(&reference, "success");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"message": "Order already in final state", "order_reference": reference, "order_status": "cancelled", "refund_required": true})
    );
    let late: i64 = env
        .pg()
        .query_one(
            "SELECT amount_cents FROM late_payments WHERE order_reference = $1",
            &[&reference],
        )
        .unwrap()
        .get(0);
    assert_eq!(late, 1234);
    assert_eq!(
        env.order_row(&reference),
        Some(("cancelled".into(), Some("buyer".into()), 1))
    );
    env.assert_conserved(pid, 4);
}

/// An order only PostgreSQL has (Redis lost it) is adopted, then cancelled; one already
/// final there is answered from there.
#[test]
fn orders_redis_lost_are_cancelled_from_postgresql() {
    let env = Env::new();
    let pid = env.product(6, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let pending = reserve_for(&mut c, pid, 2, None);
    let paid = reserve_for(&mut c, pid, 1, None);
    assert_eq!(c.webhook(&paid, "success").status, 200);
    env.wait_rows(&[pending.clone(), paid.clone()]);
    wait_until("journal drained", || {
        (env.journal_len(pid) == 0).then_some(())
    });
    let mut r = env.redis();
    let _: () = redis::cmd("DEL")
        .arg(env.key(pid, &format!("order:{pending}")))
        .arg(env.key(pid, &format!("order:{paid}")))
        .query(&mut r)
        .unwrap();
    let got = cancel(&mut c, &pending);
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["cancel_reason"], "buyer");
    assert_eq!(
        env.order_row(&pending),
        Some(("cancelled".into(), Some("buyer".into()), 2))
    );
    let r = cancel(&mut c, &paid);
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["order_status"], "paid");
}

/// Cancellations racing success webhooks, order by order: exactly one side wins each, the
/// loser is told so (a cancellation 409 `paid`; a success a late payment to refund), and
/// nothing is sold twice or lost.
#[test]
fn cancellations_racing_payments_have_one_winner_each() {
    const ORDERS: usize = 120;
    let env = Env::new();
    let pid = env.product(ORDERS as i64, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let refs: Vec<String> = (0..ORDERS)
        .map(|_| reserve_for(&mut c, pid, 1, None))
        .collect();
    let addr = srv.addr;
    let canceller = {
        let refs = refs.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            refs.iter()
                .map(|r| cancel(&mut c, r))
                .map(|r| (r.status, r.json()))
                .collect::<Vec<_>>()
        })
    };
    let payer = {
        let refs = refs.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            refs.iter()
                .map(|r| c.webhook(r, "success").json())
                .collect::<Vec<_>>()
        })
    };
    let cancels = canceller.join().unwrap();
    let payments = payer.join().unwrap();
    let (mut cancelled, mut paid) = (0, 0);
    for ((reference, (status, cancel)), payment) in refs.iter().zip(&cancels).zip(&payments) {
        match status {
            200 => {
                cancelled += 1;
                assert_eq!(payment["refund_required"], true, "{reference}: {payment}");
                assert_eq!(
                    env.order_row(reference),
                    Some(("cancelled".into(), Some("buyer".into()), 1))
                );
            }
            409 => {
                paid += 1;
                assert_eq!(cancel["order_status"], "paid", "{reference}: {cancel}");
                assert_eq!(
                    payment["message"], "Payment successful, order marked as paid",
                    "{reference}: {payment}"
                );
                assert_eq!(env.order_row(reference), Some(("paid".into(), None, 1)));
            }
            other => panic!("{reference}: cancellation answered {other}: {cancel}"),
        }
    }
    assert_eq!(cancelled + paid, ORDERS);
    let late: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM late_payments", &[])
        .unwrap()
        .get(0);
    assert_eq!(late, cancelled as i64, "one late payment per lost race");
    assert_eq!(env.paid_units(pid), paid as i64);
    env.assert_conserved(pid, ORDERS as i64);
}

/// The window between an order's expiry and the reaper's tick (the reaper paused by a
/// failpoint): a success, a failure and a cancellation arriving then each find the order
/// past its time and expire it themselves; none of them wins over the expiry.
#[cfg(feature = "failpoints")]
#[test]
fn past_its_expiry_an_order_is_expired_by_whichever_call_finds_it() {
    let env = Env::new();
    let pid = env.product(3, 500);
    let srv = Server::start_with(
        &env,
        &[
            ("FLASHSALE_HOLD_SECS", "1"),
            ("FAILPOINTS", "reaper_pause=return"),
        ],
    );
    let mut c = srv.client();
    let refs: Vec<String> = (0..3).map(|_| reserve_for(&mut c, pid, 1, None)).collect();
    env.wait_rows(&refs);
    let mut pg = env.pg();
    wait_until("the holds to pass", || {
        let passed: bool = pg
            .query_one(
                "SELECT bool_and(expires_at < clock_timestamp() - interval '50 milliseconds')
                 FROM orders WHERE product_id = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
        passed.then_some(())
    });
    // Nothing expired them: the reaper is paused.
    for r in &refs {
        assert_eq!(env.order_row(r).unwrap().0, "pending", "{r}");
    }
    let paid = c.webhook(&refs[0], "success");
    assert_eq!(paid.json()["order_status"], "cancelled", "{}", paid.json());
    assert_eq!(paid.json()["refund_required"], true);
    let failed = c.webhook(&refs[1], "failure");
    assert_eq!(
        failed.json()["order_status"],
        "cancelled",
        "{}",
        failed.json()
    );
    let cancelled = cancel(&mut c, &refs[2]);
    assert_eq!(cancelled.status, 409, "{}", cancelled.json());
    assert_eq!(cancelled.json()["order_status"], "cancelled");
    for r in &refs {
        assert_eq!(
            env.order_row(r),
            Some(("cancelled".into(), Some("expired".into()), 1)),
            "{r}"
        );
    }
    assert_eq!(stock(&mut c, pid), 3, "every unit back, once");
    env.assert_conserved(pid, 3);
}
