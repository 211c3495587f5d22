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
