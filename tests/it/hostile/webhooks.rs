//! Forged and malformed webhooks, and webhooks with strings PostgreSQL cannot store.

use super::*;

// ---------------------------------------------------------------------------------------
// Forged and malformed webhooks.

#[test]
fn webhook_abuse_is_refused_and_changes_nothing() {
    let (env, pid, srv) = setup(&[]);
    let mut c = Client::connect(srv.addr);
    let order = c.order(pid, 2);
    assert_eq!(order.status, 202);
    let reference = order.json()["order_reference"]
        .as_str()
        .unwrap()
        .to_string();
    let before = state(&env, &srv, pid);
    let hook = "/api/payments/webhook";

    let good = json!({"order_reference": reference, "status": "success"}).to_string();
    let right = sign(good.as_bytes());
    let wrong_key = {
        let mut s = right.clone().into_bytes();
        s[10] = if s[10] == b'0' { b'1' } else { b'0' };
        String::from_utf8(s).unwrap()
    };
    let signed_other = sign(b"{}");
    let not_hex = "z".repeat(64);
    let too_long = "0".repeat(128);
    let prefixed = format!("sha256={right}");
    let bodies: [&[u8]; 4] = [good.as_bytes(), b"{not json", b"\xff\xfe", b""];
    let signatures: [Option<&str>; 9] = [
        None,
        Some(""),
        Some(&wrong_key),
        Some(&signed_other),
        Some(&right[..63]), // odd length
        Some(&right[..62]), // even length, too short
        Some(&not_hex),
        Some(&too_long),
        Some(&prefixed),
    ];
    // Missing or wrong signatures are refused before the body is looked at, whatever it is.
    for body in bodies {
        for sig in signatures {
            let headers: Vec<(&str, &str)> = sig
                .map(|s| ("X-Payment-Signature", s))
                .into_iter()
                .collect();
            let r = post_raw(&mut c, hook, &headers, body);
            assert_eq!(r.status, 401, "sig {sig:?} body {}", show(body));
            assert_eq!(
                r.json(),
                json!({"message": "Invalid signature", "code": "invalid_signature"})
            );
        }
    }
    // The right signature with a few bytes changed after signing.
    let tampered = good.replace("success", "failure");
    let r = post_raw(
        &mut c,
        hook,
        &[("X-Payment-Signature", &right)],
        tampered.as_bytes(),
    );
    assert_eq!(r.status, 401);
    // Two signature headers: ambiguous, refused at the framing level.
    let two = request(
        "POST",
        hook,
        &format!("X-Payment-Signature: {right}\r\nX-Payment-Signature: {wrong_key}\r\n"),
        good.as_bytes(),
    );
    hostile(srv.addr, &two, Want::Closing(400, "bad_request"));

    // Correctly signed but invalid: `processed` is not a status; malformed JSON; deep nesting.
    for status in ["processed", "SUCCESS", "paid", ""] {
        let body = json!({"order_reference": reference, "status": status}).to_string();
        let r = post_raw(
            &mut c,
            hook,
            &[("X-Payment-Signature", &sign(body.as_bytes()))],
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            422,
            "{body}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert_error_body(&r, "validation_failed", &body);
        assert!(r.json()["errors"]["status"].is_array(), "{}", r.json());
    }
    for body in [
        b"{not json".to_vec(),
        b"\xff\xfe".to_vec(),
        b"[]".to_vec(),
        nested_arrays(5_000, "").into_bytes(),
    ] {
        let r = post_raw(
            &mut c,
            hook,
            &[("X-Payment-Signature", &sign(&body))],
            &body,
        );
        assert_eq!(r.status, 400, "{}", show(&body));
        assert_error_body(&r, "malformed_json", &show(&body));
    }
    let deep = format!(
        r#"{{"order_reference": "{reference}", "status": {}}}"#,
        nested_arrays(5_000, "\"success\"")
    );
    let r = post_raw(
        &mut c,
        hook,
        &[("X-Payment-Signature", &sign(deep.as_bytes()))],
        deep.as_bytes(),
    );
    assert!(matches!(r.status, 400 | 422), "{}", r.status);

    // The order is still pending and untouched.
    let o = c.get(&format!("/api/orders/{reference}"));
    assert_eq!(
        (o.status, o.json()["status"].as_str()),
        (200, Some("pending"))
    );
    assert_unharmed(&env, &srv, pid, &before);
}

// ---------------------------------------------------------------------------------------
// Strings JSON allows but PostgreSQL does not store: `\u0000` (text and jsonb refuse NUL) and
// lone surrogates (jsonb refuses them).

#[test]
fn webhooks_with_strings_postgresql_cannot_store_get_no_5xx() {
    let (env, pid, srv) = setup(&[]);
    let mut c = Client::connect(srv.addr);
    let order = c.order(pid, 1);
    assert_eq!(order.status, 202);
    let reference = order.json()["order_reference"]
        .as_str()
        .unwrap()
        .to_string();
    let bodies = [
        // Unknown references: recorded for later (202) or refused (4xx).
        r#"{"order_reference": "nul\u0000ref", "status": "success"}"#.to_string(),
        r#"{"order_reference": "unknown-1", "status": "success", "note": "\u0000"}"#.to_string(),
        r#"{"order_reference": "unknown-2", "status": "failure", "note": "\udead"}"#.to_string(),
        // A known order: applied (200) or refused (4xx).
        format!(r#"{{"order_reference": "{reference}", "status": "success", "note": "\u0000"}}"#),
    ];
    let mut wrong = Vec::new();
    // Each sent twice, as a provider retries anything but a 2xx.
    for (attempt, body) in bodies.iter().flat_map(|b| [(1, b), (2, b)]) {
        let sig = sign(body.as_bytes());
        let r = Client::connect(srv.addr).request(
            "POST",
            "/api/payments/webhook",
            &[("X-Payment-Signature", &sig)],
            body.as_bytes(),
        );
        let outcome = format!(
            "{body} (attempt {attempt}) -> {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        eprintln!("{outcome}");
        if !matches!(r.status, 200 | 202 | 400 | 422) {
            wrong.push(outcome);
        }
    }
    let api_status = |c: &mut Client| {
        let v = c.get(&format!("/api/orders/{reference}")).json();
        v["status"].as_str().unwrap_or_default().to_string()
    };
    let known = format!(
        "the known order afterwards: API {}, PostgreSQL {:?}",
        api_status(&mut c),
        env.order_row(&reference)
    );
    assert!(
        wrong.is_empty(),
        "bad input answered 5xx:\n{}\n{known}",
        wrong.join("\n")
    );
    // Whatever the answer, the API and PostgreSQL agree on the known order once settled.
    wait_until("the API and PostgreSQL agree on the known order", || {
        let row = env.order_row(&reference)?;
        (row.0 == api_status(&mut c)).then_some(())
    });
    env.assert_conserved(pid, 100);
    assert_healthy(&srv);
}

#[test]
fn unmatched_webhooks_are_deleted_after_the_configured_days() {
    let env = Env::new();
    let pid = env.product(10, 100);
    // A misconfigured provider's webhooks for references nobody has: some 8 days old, some
    // fresh, as the server records them (status pending).
    let mut pg = env.pg();
    for (age_days, n) in [(8, 300), (0, 5)] {
        pg.execute(
            "INSERT INTO webhooks (order_reference, payload, status, created_at, updated_at)
             SELECT 'unknown-' || $1::int || '-' || i, '{\"status\": \"success\"}', 'pending',
                    now() - make_interval(days => $1), now() - make_interval(days => $1)
             FROM generate_series(1, $2) AS i",
            &[&age_days, &n],
        )
        .unwrap();
    }
    let srv = Server::start_with(&env, &[("FLASHSALE_UNMATCHED_WEBHOOK_DAYS", "7")]);
    let pending = |pg: &mut postgres::Client, like: &str| -> i64 {
        pg.query_one(
            "SELECT count(*) FROM webhooks WHERE status = 'pending' AND order_reference LIKE $1",
            &[&like],
        )
        .unwrap()
        .get(0)
    };
    wait_until("unmatched webhooks older than 7 days are deleted", || {
        (pending(&mut pg, "unknown-8-%") == 0).then_some(())
    });
    assert_eq!(pending(&mut pg, "unknown-0-%"), 5, "younger ones are kept");
    // One of the young ones finds its order when another tool inserts it.
    pg.execute(
        "INSERT INTO orders (order_reference, product_id, qty, amount_cents, status, expires_at)
         VALUES ('unknown-0-3', $1, 1, 100, 'pending', now() + interval '1 hour')",
        &[&pid],
    )
    .unwrap();
    wait_until("the webhook is applied once its order appears", || {
        (env.order_row("unknown-0-3").map(|o| o.0) == Some("paid".into())).then_some(())
    });
    assert_eq!(pending(&mut pg, "unknown-0-%"), 4);
    env.assert_conserved(pid, 10);
    assert_healthy(&srv);
}
