//! Client text in Redis keys: idempotency keys and user ids shaped like key structure,
//! idempotency keys of other buyers, and what a reservation costs Redis.

use super::*;

/// Strings that look like the structure of key names: a hash-tag end and a key kind
/// (`}:pending`, `}:journal`, `}:stock`), another product's tag, glob characters.
const SHAPED_LIKE_KEYS: &[&str] = &[
    "ax}:pending",
    "x}:journal",
    "z}:stock",
    "{p:1}",
    "*",
    "a:{p:2}:order:x}:pending",
    "]}:users[",
];

#[test]
fn text_shaped_like_keys_never_stops_expiry_after_a_restart() {
    let env = Env::new();
    let limited = env.product_with(100, 500, 10, Some(5));
    let plain = env.product(100, 500);
    let hold = [("FLASHSALE_HOLD_SECS", "4")];
    let mut srv = Server::start_with(&env, &hold);
    let mut c = srv.client();
    let mut refs = Vec::new();
    for (i, text) in SHAPED_LIKE_KEYS.iter().enumerate() {
        // As an idempotency key and as a buyer on a limited product (a field of its users
        // hash), and as an idempotency key of an anonymous order.
        let r = c.order_with(
            &json!({"product_id": limited, "qty": 1, "user_id": text}),
            Some(text),
        );
        assert_eq!(
            r.status,
            202,
            "{text}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        refs.push(r.json()["order_reference"].as_str().unwrap().to_string());
        let r = c.order_with(&json!({"product_id": plain, "qty": 1}), Some(text));
        assert_eq!(r.status, 202, "{text}");
        refs.push(r.json()["order_reference"].as_str().unwrap().to_string());
        // A replay finds its own order, and only it.
        let again = c.order_with(&json!({"product_id": plain, "qty": 1}), Some(text));
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{text}");
        assert_eq!(again.json()["order_reference"], refs[2 * i + 1].as_str());
        // Shaped like one of our references: not found, and no key is read but an order's.
        let lookup = format!("/api/orders/{plain}-{text:->26}");
        assert_eq!(c.get(&lookup).status, 404, "{lookup}");
    }
    env.wait_rows(&refs);
    // The restart re-arms the reaper from the pending sets: a scan over key names.
    srv.kill9();
    let srv = Server::start_with(&env, &hold);
    let mut c = srv.client();
    for r in &refs {
        wait_until("every reservation expires after the restart", || {
            (env.order_row(r).map(|o| o.0) == Some("cancelled".into())).then_some(())
        });
    }
    for pid in [limited, plain] {
        assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 100);
        env.assert_conserved(pid, 100);
    }
    let users: i64 = redis::cmd("HLEN")
        .arg(env.key(limited, "users"))
        .query(&mut env.redis())
        .unwrap();
    assert_eq!(users, 0, "buyers holding nothing are forgotten");
    assert_healthy(&srv);
}

#[test]
fn an_idempotency_key_never_answers_with_another_buyers_order() {
    let env = Env::new();
    let pid = env.product(100, 500);
    let srv = Server::start(&env);
    let body = order_body(pid, 2);
    let send = |s: TcpStream| {
        let mut c = std::io::BufReader::new(s);
        c.get_mut()
            .write_all(&request(
                "POST",
                "/api/orders",
                "Idempotency-Key: same-key\r\n",
                body.as_bytes(),
            ))
            .unwrap();
        read_response(&mut c).expect("an answer")
    };
    // Two anonymous clients at two addresses send the same key and body.
    let a = send(connect_from("127.0.0.1", srv.addr).unwrap());
    let b = send(connect_from("127.0.0.2", srv.addr).unwrap());
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(b.header("idempotent-replayed"), None, "b got a's order");
    assert_ne!(a.json()["order_reference"], b.json()["order_reference"]);
    // Each one's retry finds its own.
    let a2 = send(connect_from("127.0.0.1", srv.addr).unwrap());
    assert_eq!(a2.header("idempotent-replayed"), Some("true"));
    assert_eq!(a2.json()["order_reference"], a.json()["order_reference"]);
    // Two named buyers with the same key and body, from one address.
    let mut c = srv.client();
    let bob = c.order_with(
        &json!({"product_id": pid, "qty": 1, "user_id": "bob"}),
        Some("k"),
    );
    let eve = c.order_with(
        &json!({"product_id": pid, "qty": 1, "user_id": "eve"}),
        Some("k"),
    );
    assert_eq!((bob.status, eve.status), (202, 202));
    assert_ne!(bob.json()["order_reference"], eve.json()["order_reference"]);
    assert_eq!(
        c.get(&format!("/api/products/{pid}")).json()["stock"],
        100 - 4 - 2
    );
    env.assert_conserved(pid, 100);
}

/// `MEMORY USAGE` of a key, in bytes (0 when absent).
fn memory_usage(env: &Env, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query::<Option<i64>>(&mut env.redis())
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn a_reservation_costs_redis_a_bounded_number_of_bytes() {
    let env = Env::new();
    let pid = env.product_with(1000, 500, 10, Some(5));
    let srv = Server::start_with(&env, &[("FLASHSALE_IDEMPOTENCY_TTL_SECS", "120")]);
    let mut c = srv.client();
    let long_key = "k".repeat(255);
    let user = "u".repeat(64);
    let r = c.order_with(
        &json!({"product_id": pid, "qty": 1, "user_id": user}),
        Some(&long_key),
    );
    assert_eq!(r.status, 202);
    let reference = r.json()["order_reference"].as_str().unwrap().to_string();
    env.wait_rows(std::slice::from_ref(&reference));
    let mut redis = env.redis();
    let idem: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{p:{pid}}}:idem:*", env.prefix))
        .query(&mut redis)
        .unwrap();
    assert_eq!(idem.len(), 1, "{idem:?}");
    assert!(
        !idem[0].contains(&long_key),
        "the client's key is in the key name: {}",
        idem[0]
    );
    let ttl: i64 = redis::cmd("TTL").arg(&idem[0]).query(&mut redis).unwrap();
    assert!((1..=120).contains(&ttl), "idempotency TTL {ttl}");
    let record = memory_usage(&env, &env.key(pid, &format!("order:{reference}")));
    let key = memory_usage(&env, &idem[0]);
    eprintln!("Redis bytes: order record {record}, idempotency entry {key}");
    assert!(record > 0 && record <= 256, "order record {record} B");
    assert!(key > 0 && key <= 256, "idempotency entry {key} B");
    // A buyer whose order is cancelled holds nothing, and is forgotten.
    assert_eq!(c.webhook(&reference, "failure").status, 200);
    let held: Option<i64> = redis::cmd("HGET")
        .arg(env.key(pid, "users"))
        .arg(&user)
        .query(&mut redis)
        .unwrap();
    assert_eq!(held, None, "a per-user counter left at {held:?}");
    env.assert_conserved(pid, 1000);
}
