//! The order events outbox and its feed (`GET /admin/events`): each committed change of an
//! order has exactly one event, written in the change's own transaction, numbered per order;
//! repeats record nothing; the feed shows every event once to a reader following `next`, also
//! while events are being written.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashSet;

const ADMIN: &str = "events-test-token-0123456789abcdef-0123456789";

fn admin_server(env: &Env, extra: &[(&str, &str)]) -> Server {
    let mut vars = vec![("FLASHSALE_ADMIN_TOKEN", ADMIN)];
    vars.extend_from_slice(extra);
    Server::start_with(env, &vars)
}

fn admin(c: &mut Client, method: &str, path: &str) -> Resp {
    let auth = format!("Bearer {ADMIN}");
    c.request(method, path, &[("Authorization", &auth)], b"")
}

fn reserve(c: &mut Client, pid: i64) -> String {
    let r = c.order(pid, 1);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["order_reference"].as_str().unwrap().to_string()
}

/// Every event of the feed, following `next` pages of `limit` from the start.
fn feed(c: &mut Client, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/admin/events?limit={limit}{query}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let r = admin(c, "GET", &path);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let page = r.json();
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            assert_eq!(page["next"], Value::Null);
            return out;
        }
        out.extend(events);
        after = Some(page["next"].as_str().unwrap().to_string());
    }
}

#[test]
fn every_change_has_one_event_in_sequence_and_repeats_record_none() {
    let env = Env::new();
    let pid = env.product(10, 250);
    let srv = admin_server(&env, &[]);
    let mut c = srv.client();
    let paid = reserve(&mut c, pid);
    let failed = reserve(&mut c, pid);
    let cancelled = reserve(&mut c, pid);
    let late = reserve(&mut c, pid);
    for _ in 0..2 {
        assert_eq!(c.webhook(&paid, "success").status, 200);
        assert_eq!(c.webhook(&failed, "failure").status, 200);
    }
    for _ in 0..2 {
        let r = c.request("POST", &format!("/api/orders/{cancelled}/cancel"), &[], b"");
        assert_eq!(r.status, 200);
    }
    let r = c.request("POST", &format!("/api/orders/{late}/cancel"), &[], b"");
    assert_eq!(r.status, 200);
    for _ in 0..2 {
        assert_eq!(c.webhook(&late, "success").json()["refund_required"], true);
    }
    for _ in 0..2 {
        let r = admin(
            &mut c,
            "POST",
            &format!("/admin/late-payments/{late}/refund"),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    let events = feed(&mut c, "", 2);
    let got: Vec<(String, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["data"]["order_reference"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["data"]["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (paid.clone(), "order.paid".into(), 2),
            (failed.clone(), "order.cancelled".into(), 2),
            (cancelled.clone(), "order.cancelled".into(), 2),
            (late.clone(), "order.cancelled".into(), 2),
            (late.clone(), "order.late_payment".into(), 3),
            (late.clone(), "late_payment.refunded".into(), 4),
        ],
        "no order.reserved without a subscriber; one event per change, none for a repeat"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    // The data is the order as GET /api/orders shows it, with the sequence.
    let mut shown = c.get(&format!("/api/orders/{paid}")).json();
    shown["sequence"] = json!(2);
    assert_eq!(events[0]["data"], shown);
    assert_eq!(events[1]["data"]["cancel_reason"], "payment_failed");
    assert_eq!(events[2]["data"]["cancel_reason"], "buyer");
    assert!(events[5]["data"]["refunded_at"].is_string());
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));

    // Filters.
    let only = feed(&mut c, "&type=order.cancelled", 100);
    assert_eq!(only.len(), 3);
    let one = feed(&mut c, &format!("&order_reference={late}"), 1);
    assert_eq!(one.len(), 3);
    for bad in [
        "after=",
        "after=1",
        "after=x-1",
        "limit=0",
        "type=order.shipped",
        "limit=1001",
    ] {
        let r = admin(&mut c, "GET", &format!("/admin/events?{bad}"));
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
}

/// A reader following the cursor while payments commit concurrently sees every event
/// exactly once: the feed shows only transactions older than every running one, so an event
/// committing late under a smaller id is not skipped.
#[test]
fn a_reader_following_the_feed_during_writes_sees_every_event_once() {
    const ORDERS: usize = 300;
    let env = Env::new();
    let pid = env.product(ORDERS as i64, 100);
    let srv = admin_server(&env, &[]);
    let mut c = srv.client();
    let refs: Vec<String> = (0..ORDERS).map(|_| reserve(&mut c, pid)).collect();
    let addr = srv.addr;
    let payers: Vec<_> = refs
        .chunks(ORDERS / 3)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for (i, r) in chunk.iter().enumerate() {
                    let status = if i % 2 == 0 { "success" } else { "failure" };
                    assert_eq!(c.webhook(r, status).status, 200);
                }
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut reader = Client::connect(addr);
    wait_until("every event read through the feed", || {
        let mut path = "/admin/events?limit=7".to_string();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = admin(&mut reader, "GET", &path).json();
        for e in page["events"].as_array().unwrap() {
            seen.push(e["data"]["order_reference"].as_str().unwrap().to_string());
        }
        if let Some(n) = page["next"].as_str() {
            after = Some(n.to_string());
        }
        (seen.len() >= ORDERS).then_some(())
    });
    for p in payers {
        p.join().unwrap();
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), ORDERS, "no event twice");
    assert_eq!(distinct.len(), ORDERS);
    let want: HashSet<&String> = refs.iter().collect();
    assert_eq!(distinct, want, "every order's event");
    let n: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM order_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, ORDERS as i64);
}
