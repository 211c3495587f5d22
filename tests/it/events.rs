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

    // The feed shows a transaction's events once every older transaction in the PostgreSQL
    // cluster has ended (other tests' included): ask until all six are there.
    let events = wait_until("every event in the feed", || {
        let e = feed(&mut c, "", 2);
        (e.len() >= 6).then_some(e)
    });
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

/// A receiver of event deliveries on a free loopback port: it answers each request with the
/// next status of `statuses` (the last one once they run out) and records what it got.
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
}

#[derive(Clone, Debug)]
struct Delivery {
    headers: std::collections::HashMap<String, String>,
    body: String,
    answered: u16,
}

impl Receiver {
    fn start(statuses: Vec<u16>) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Delivery>::new()));
        let statuses = std::sync::Arc::new(statuses);
        let record = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (got, statuses) = (record.clone(), statuses.clone());
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut headers = std::collections::HashMap::new();
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let n: usize = headers
                            .get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; n];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let answered = {
                            let mut g = got.lock().unwrap();
                            let s = *statuses.get(g.len()).or(statuses.last()).unwrap();
                            g.push(Delivery {
                                headers,
                                body: String::from_utf8(body).unwrap(),
                                answered: s,
                            });
                            s
                        };
                        let _ = write!(w, "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\n\r\n");
                    }
                });
            }
        });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }
}

fn create_endpoint(c: &mut Client, body: &Value) -> Value {
    let auth = format!("Bearer {ADMIN}");
    let r = c.request(
        "POST",
        "/admin/event-endpoints",
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The Standard Webhooks check a receiver runs: HMAC-SHA256 over "id.timestamp.body" with
/// the base64-decoded secret, compared with each `v1,` signature.
fn verified(secret: &str, d: &Delivery) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    let signed = format!(
        "{}.{}.{}",
        d.headers["webhook-id"], d.headers["webhook-timestamp"], d.body
    );
    mac.update(signed.as_bytes());
    let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    d.headers["webhook-signature"].split(' ').any(|s| s == want)
}

#[test]
fn events_are_delivered_signed_in_order_and_retried() {
    let env = Env::new();
    let pid = env.product(10, 990);
    let srv = admin_server(
        &env,
        &[
            ("FLASHSALE_EVENT_RETRY_SECS", "1,1"),
            ("FLASHSALE_EVENT_TIMEOUT_SECS", "2"),
        ],
    );
    let mut c = srv.client();
    let rx = Receiver::start(vec![500, 200]);
    let ep = create_endpoint(&mut c, &json!({"url": rx.url, "description": "shop"}));
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(ep["enabled"], true);
    assert_eq!(
        ep["events"],
        json!([
            "order.paid",
            "order.cancelled",
            "order.late_payment",
            "late_payment.refunded"
        ])
    );
    // The list never shows the secret.
    let list = admin(&mut c, "GET", "/admin/event-endpoints").json();
    assert_eq!(list["endpoints"][0]["url"], rx.url.as_str());
    assert!(list["endpoints"][0].get("secret").is_none());

    let reference = reserve(&mut c, pid);
    let r = c.request("POST", &format!("/api/orders/{reference}/cancel"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        c.webhook(&reference, "success").json()["refund_required"],
        true
    );

    let got = wait_until("both events delivered", || {
        let g = rx.got();
        (g.iter().filter(|d| d.answered == 200).count() >= 2).then_some(g)
    });
    for d in &got {
        assert!(verified(&secret, d), "signature of {d:?}");
        assert_eq!(d.headers["content-type"], "application/json");
    }
    let seq = |d: &Delivery| -> (String, i64) {
        let v: Value = serde_json::from_str(&d.body).unwrap();
        (
            v["type"].as_str().unwrap().to_string(),
            v["data"]["sequence"].as_i64().unwrap(),
        )
    };
    // The cancellation failed once (500), was retried, and the late payment waited for it.
    assert_eq!(
        got.iter().map(|d| (seq(d), d.answered)).collect::<Vec<_>>(),
        vec![
            (("order.cancelled".into(), 2), 500),
            (("order.cancelled".into(), 2), 200),
            (("order.late_payment".into(), 3), 200),
        ]
    );
    assert_eq!(
        got[0].headers["webhook-id"], got[1].headers["webhook-id"],
        "a retry is the same event"
    );
    let body: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(body["data"]["cancel_reason"], "buyer");
    assert_eq!(body["data"]["order_reference"], reference.as_str());
    // The dispatcher records each answer after it comes back.
    let mut pg = env.pg();
    wait_until("both deliveries recorded", || {
        let rows: Vec<(String, i32)> = pg
            .query(
                "SELECT status, attempts FROM event_deliveries ORDER BY sequence",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (rows == vec![("delivered".to_string(), 2), ("delivered".to_string(), 1)]).then_some(())
    });
    let m = String::from_utf8(c.get("/metrics").body).unwrap();
    for line in [
        "flashsale_event_delivery_attempts_total{outcome=\"delivered\"} 2",
        "flashsale_event_delivery_attempts_total{outcome=\"retried\"} 1",
        "flashsale_event_delivery_seconds_count 2",
        "# TYPE flashsale_event_backlog gauge",
    ] {
        assert!(m.contains(line), "no {line:?} in\n{m}");
    }
}

#[test]
fn a_410_disables_the_endpoint_and_the_last_retry_fails_the_delivery() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = admin_server(&env, &[("FLASHSALE_EVENT_RETRY_SECS", "1")]);
    let mut c = srv.client();
    let gone = Receiver::start(vec![410]);
    let down = Receiver::start(vec![503]);
    let gone_ep = create_endpoint(
        &mut c,
        &json!({"url": gone.url, "events": ["order.cancelled"]}),
    );
    create_endpoint(
        &mut c,
        &json!({"url": down.url, "events": ["order.cancelled"]}),
    );
    let first = reserve(&mut c, pid);
    assert_eq!(c.webhook(&first, "failure").status, 200);
    let mut pg = env.pg();
    wait_until("both deliveries failed", || {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM event_deliveries WHERE status = 'failed'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    assert_eq!(gone.got().len(), 1, "a 410 is not retried");
    assert_eq!(down.got().len(), 2, "one retry (one delay), then failed");
    let list = admin(&mut c, "GET", "/admin/event-endpoints").json();
    let enabled: Vec<bool> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["enabled"].as_bool().unwrap())
        .collect();
    assert_eq!(enabled, vec![false, true]);
    // A disabled endpoint is queued nothing.
    let second = reserve(&mut c, pid);
    assert_eq!(c.webhook(&second, "failure").status, 200);
    wait_until("the second event recorded", || {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM order_events", &[])
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    let queued: i64 = pg
        .query_one(
            "SELECT count(*) FROM event_deliveries WHERE endpoint_id = $1",
            &[&gone_ep["id"].as_i64().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 1);
    // Deleting an endpoint: 204, then 404.
    let path = format!("/admin/event-endpoints/{}", gone_ep["id"]);
    assert_eq!(admin(&mut c, "DELETE", &path).status, 204);
    assert_eq!(admin(&mut c, "DELETE", &path).status, 404);
    for bad in [
        json!({"url": "ftp://x/"}),
        json!({"url": "http://user:pw@x/"}),
        json!({"url": "not a url"}),
        json!({}),
        json!({"url": "http://x/", "events": []}),
        json!({"url": "http://x/", "events": ["order.shipped"]}),
        json!({"url": "http://x/", "events": ["order.paid", "order.paid"]}),
    ] {
        let auth = format!("Bearer {ADMIN}");
        let r = c.request(
            "POST",
            "/admin/event-endpoints",
            &[("Authorization", &auth)],
            bad.to_string().as_bytes(),
        );
        assert_eq!(r.status, 422, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
}

/// `order.reserved` is recorded while an enabled endpoint subscribes to it (from within a
/// second of the subscription), numbered 1, and delivered before the order's next event.
#[test]
fn reservations_are_recorded_while_an_endpoint_subscribes_to_them() {
    let env = Env::new();
    let pid = env.product(1_000_000, 100);
    let srv = admin_server(&env, &[]);
    let mut c = srv.client();
    let mut pg = env.pg();
    let mut events_of = |r: &str| -> i64 {
        pg.query_one(
            "SELECT count(*) FROM order_events WHERE order_reference = $1",
            &[&r],
        )
        .unwrap()
        .get(0)
    };
    let before = reserve(&mut c, pid);
    let rx = Receiver::start(vec![200]);
    create_endpoint(
        &mut c,
        &json!({"url": rx.url, "events": ["order.reserved", "order.paid"]}),
    );
    // The writer notices the subscription within a second: reserve until it does. (Read from
    // the table: the feed may lag behind other transactions of the cluster.)
    let reference = wait_until("order.reserved recorded", || {
        let r = reserve(&mut c, pid);
        env.wait_rows(std::slice::from_ref(&r));
        (events_of(&r) == 1).then_some(r)
    });
    assert_eq!(c.webhook(&reference, "success").status, 200);
    let got = wait_until("reserved and paid delivered", || {
        let g: Vec<Value> = rx
            .got()
            .iter()
            .map(|d| serde_json::from_str::<Value>(&d.body).unwrap())
            .filter(|v| v["data"]["order_reference"] == reference.as_str())
            .collect();
        (g.len() >= 2).then_some(g)
    });
    assert_eq!(got[0]["type"], "order.reserved");
    assert_eq!(got[0]["data"]["sequence"], 1);
    assert_eq!(got[0]["data"]["status"], "pending");
    assert_eq!(got[1]["type"], "order.paid");
    assert_eq!(got[1]["data"]["sequence"], 2);
    // Before the subscription nothing was recorded for it.
    assert_eq!(events_of(&before), 0);
}

/// Rotation signs with both secrets for a day; the deliveries list shows each attempt's
/// outcome by status; a redelivery sends an event again from the start of its schedule; a
/// disabled endpoint (PATCH) is sent nothing until enabled again.
#[test]
fn rotation_deliveries_redelivery_and_disabling() {
    let env = Env::new();
    let pid = env.product(10, 100);
    let srv = admin_server(&env, &[("FLASHSALE_EVENT_RETRY_SECS", "1")]);
    let mut c = srv.client();
    let rx = Receiver::start(vec![500, 500, 200]);
    let ep = create_endpoint(
        &mut c,
        &json!({"url": rx.url, "events": ["order.cancelled"]}),
    );
    let id = ep["id"].as_i64().unwrap();
    let old = ep["secret"].as_str().unwrap().to_string();
    let auth = format!("Bearer {ADMIN}");
    let rotated = c.request(
        "POST",
        &format!("/admin/event-endpoints/{id}/rotate-secret"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(rotated.status, 200);
    let new = rotated.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);

    let reference = reserve(&mut c, pid);
    assert_eq!(c.webhook(&reference, "failure").status, 200);
    let deliveries = |c: &mut Client, q: &str| {
        admin(
            c,
            "GET",
            &format!("/admin/event-endpoints/{id}/deliveries{q}"),
        )
        .json()
    };
    // Two attempts (500, 500) then failed.
    wait_until("the delivery failed", || {
        let d = deliveries(&mut c, "?status=failed");
        (d["deliveries"].as_array().unwrap().len() == 1).then_some(())
    });
    let failed = deliveries(&mut c, "?status=failed")["deliveries"][0].clone();
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_status_code"], 500);
    assert_eq!(failed["event_type"], "order.cancelled");
    for d in rx.got() {
        assert!(
            verified(&new, &d) && verified(&old, &d),
            "both secrets sign during a rotation"
        );
    }
    // Redeliver: sent again, delivered (200).
    let event_id = failed["event_id"].as_str().unwrap().to_string();
    let r = c.request(
        "POST",
        &format!("/admin/event-endpoints/{id}/deliveries/{event_id}/redeliver"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    wait_until("delivered after the redelivery", || {
        let d = deliveries(&mut c, "?status=delivered");
        (d["deliveries"].as_array().unwrap().len() == 1).then_some(())
    });
    assert_eq!(rx.got().len(), 3);
    let unknown = c.request(
        "POST",
        &format!("/admin/event-endpoints/{id}/deliveries/evt_nope/redeliver"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(unknown.status, 404);

    // Disabled: a new event is queued for nobody and sent nothing.
    let r = c.request(
        "PATCH",
        &format!("/admin/event-endpoints/{id}"),
        &[("Authorization", &auth)],
        br#"{"enabled": false, "description": "paused"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.json()["enabled"].clone(), r.json()["description"].clone()),
        (json!(false), json!("paused"))
    );
    assert!(r.json().get("secret").is_none());
    let other = reserve(&mut c, pid);
    assert_eq!(c.webhook(&other, "failure").status, 200);
    let mut pg = env.pg();
    wait_until("the second event recorded", || {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM order_events", &[])
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    assert_eq!(
        deliveries(&mut c, "")["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(rx.got().len(), 3);
    for bad in [
        r#"{"enabled": "yes"}"#,
        r#"{"url": "ftp://x"}"#,
        r#"{"events": []}"#,
    ] {
        let r = c.request(
            "PATCH",
            &format!("/admin/event-endpoints/{id}"),
            &[("Authorization", &auth)],
            bad.as_bytes(),
        );
        assert_eq!(r.status, 422, "{bad}");
    }
    let r = admin(
        &mut c,
        "GET",
        &format!("/admin/event-endpoints/{id}/deliveries?status=sent"),
    );
    assert_eq!(r.status, 422);
}

/// Events are kept `FLASHSALE_EVENT_RETENTION_DAYS` after their last delivery, then deleted;
/// an event with a delivery still pending is kept whatever its age.
#[test]
fn events_past_their_retention_are_deleted() {
    let env = Env::new();
    env.product(1, 1);
    let mut pg = env.pg();
    pg.batch_execute(
        "INSERT INTO event_endpoints (url, events, secret) VALUES ('http://127.0.0.1:9/', '{order.paid}', 'whsec_AAAA');
         ALTER TABLE order_events DISABLE TRIGGER order_events_fan_out;
         INSERT INTO order_events (id, type, order_reference, sequence, data, created_at) VALUES
             (1, 'order.paid', 'old', 2, '{}', now() - interval '3 days'),
             (2, 'order.paid', 'old-pending', 2, '{}', now() - interval '3 days'),
             (3, 'order.paid', 'recent', 2, '{}', now() - interval '1 hour');
         INSERT INTO event_deliveries (endpoint_id, event_row, order_reference, sequence, status, delivered_at, next_attempt_at)
         SELECT id, 1, 'old', 2, 'delivered', now() - interval '3 days', now() - interval '3 days' FROM event_endpoints;
         INSERT INTO event_deliveries (endpoint_id, event_row, order_reference, sequence, status, next_attempt_at)
         SELECT id, 2, 'old-pending', 2, 'pending', now() - interval '3 days' FROM event_endpoints;
         UPDATE event_endpoints SET enabled = false;
         ALTER TABLE order_events ENABLE TRIGGER order_events_fan_out;",
    )
    .unwrap();
    let _srv = admin_server(&env, &[("FLASHSALE_EVENT_RETENTION_DAYS", "2")]);
    wait_until("the old event deleted", || {
        let ids: Vec<i64> = pg
            .query("SELECT id FROM order_events ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (ids == vec![2, 3]).then_some(())
    });
}
