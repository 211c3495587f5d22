//! Buyer identity (`FLASHSALE_BUYER_AUTH=jwt`), rate limits per client address and per buyer,
//! and client addresses behind trusted proxies. Keys: `tests/it/keys/` (throwaway).

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::io::Write;

const HS_SECRET: &str = "test-hs256-secret";
const ISSUER: &str = "shop";
const AUDIENCE: &str = "sale";

fn keys_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/keys")
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims of a good token for `sub`.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 3600, "iss": ISSUER, "aud": AUDIENCE})
}

/// A token signed with `alg` by the key for it (HS256: the configured secret), with `kid`.
fn token(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(HS_SECRET.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&key_file("ed25519.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&key_file("p256.pem")).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key_file("rsa.pem")).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(Into::into);
    encode(&h, claims, &key).unwrap()
}

fn jwt_server(env: &Env, extra: &[(&str, &str)]) -> Server {
    let jwks = keys_dir().join("jwks.json");
    let mut vars = vec![
        ("FLASHSALE_BUYER_AUTH", "jwt"),
        ("FLASHSALE_JWT_HS256_SECRET", HS_SECRET),
        ("FLASHSALE_JWT_PUBLIC_KEYS", jwks.to_str().unwrap()),
        ("FLASHSALE_JWT_ISSUER", ISSUER),
        ("FLASHSALE_JWT_AUDIENCE", AUDIENCE),
    ];
    vars.extend_from_slice(extra);
    Server::start_with(env, &vars)
}

/// `POST /api/orders` with a bearer token (or none).
fn order_as(c: &mut Client, token: Option<&str>, body: &Value, key: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    c.request("POST", "/api/orders", &headers, body.to_string().as_bytes())
}

fn get_as(c: &mut Client, token: Option<&str>, path: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    c.request("GET", path, &headers, b"")
}

fn assert_unauthorized(r: &Resp, what: &str) {
    assert_eq!(
        r.status,
        401,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.code(), "unauthorized", "{what}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
}

#[test]
fn only_valid_tokens_reserve_and_a_refused_one_changes_nothing() {
    let env = Env::new();
    let pid = env.product(100, 250);
    let srv = jwt_server(&env, &[]);
    let mut c = srv.client();
    let body = json!({"product_id": pid, "qty": 1});
    let c0 = claims("alice");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = c0.clone();
        f(&mut c);
        c
    };
    let header_payload = |t: &str| {
        let mut p = t.splitn(3, '.');
        (p.next().unwrap().to_string(), p.next().unwrap().to_string())
    };
    let (_, payload) = header_payload(&token(Algorithm::HS256, None, &c0));
    // {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    // Algorithm confusion: HS256 keyed with the RSA public key's PEM, naming the RSA kid.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let confused = encode(&h, &c0, &EncodingKey::from_secret(&key_file("rsa.pub.pem"))).unwrap();
    let bad_signature = encode(
        &Header::new(Algorithm::HS256),
        &c0,
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("bad signature", Some(bad_signature)),
        (
            "expired",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| c["exp"] = json!(now() - 3600)),
            )),
        ),
        ("alg none", Some(alg_none)),
        ("a public key used as an HMAC secret", Some(confused)),
        (
            "unknown kid",
            Some(token(Algorithm::EdDSA, Some("ed-2"), &c0)),
        ),
        ("no kid", Some(token(Algorithm::EdDSA, None, &c0))),
        (
            "an RSA signature under an Ed25519 kid",
            Some(token(Algorithm::RS256, Some("ed-1"), &c0)),
        ),
        (
            "an ES256 signature under the RSA kid",
            Some(token(Algorithm::ES256, Some("rsa-1"), &c0)),
        ),
        (
            "wrong issuer",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| c["iss"] = json!("other")),
            )),
        ),
        (
            "no issuer",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
            )),
        ),
        (
            "wrong audience",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| c["aud"] = json!("other")),
            )),
        ),
        (
            "not yet valid",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| c["nbf"] = json!(now() + 3600)),
            )),
        ),
        (
            "no exp",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            )),
        ),
        (
            "no sub",
            Some(token(
                Algorithm::HS256,
                None,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            )),
        ),
        ("garbage", Some("abc.def.ghi".into())),
    ];
    for (what, t) in &refused {
        let r = order_as(&mut c, t.as_deref(), &body, None);
        assert_unauthorized(&r, what);
        // Also without a Bearer scheme.
    }
    let r = c.request(
        "POST",
        "/api/orders",
        &[("Authorization", "Basic YWxpY2U6cHc=")],
        body.to_string().as_bytes(),
    );
    assert_unauthorized(&r, "basic auth");
    assert_eq!(
        env.order_row_count(),
        0,
        "a refused token reserved something"
    );
    assert_eq!(c.get(&format!("/api/products/{pid}")).json()["stock"], 100);

    // Every key type verifies its own tokens.
    for (alg, kid) in [
        (Algorithm::HS256, None),
        (Algorithm::EdDSA, Some("ed-1")),
        (Algorithm::ES256, Some("ec-1")),
        (Algorithm::RS256, Some("rsa-1")),
    ] {
        let r = order_as(&mut c, Some(&token(alg, kid, &c0)), &body, None);
        assert_eq!(
            r.status,
            202,
            "{alg:?}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    env.assert_conserved(pid, 100);
}

#[test]
fn the_buyer_is_the_tokens_sub_whatever_the_body_says() {
    let env = Env::new();
    // A scalper's product: 2 per buyer.
    let pid = env.product_with(100, 250, 10, Some(2));
    let srv = jwt_server(&env, &[]);
    let mut c = srv.client();
    let alice = token(Algorithm::EdDSA, Some("ed-1"), &claims("alice"));
    let bob = token(Algorithm::HS256, None, &claims("bob"));
    // A user_id other than the token's sub: 422 on the field, nothing reserved.
    for other in ["alice+1", "Alice", "alice ", "ａｌｉｃｅ", "bob"] {
        let r = order_as(
            &mut c,
            Some(&alice),
            &json!({"product_id": pid, "qty": 1, "user_id": other}),
            None,
        );
        assert_eq!(r.status, 422, "{other}");
        assert!(r.json()["errors"]["user_id"].is_array(), "{other}");
    }
    // The same sub, with or without user_id, counts against one limit.
    let r = order_as(
        &mut c,
        Some(&alice),
        &json!({"product_id": pid, "qty": 1, "user_id": "alice"}),
        None,
    );
    assert_eq!(r.status, 202);
    let alices = r.json()["order_reference"].as_str().unwrap().to_string();
    let r = order_as(
        &mut c,
        Some(&alice),
        &json!({"product_id": pid, "qty": 1}),
        None,
    );
    assert_eq!(r.status, 202);
    let r = order_as(
        &mut c,
        Some(&alice),
        &json!({"product_id": pid, "qty": 1}),
        None,
    );
    assert_eq!(
        (r.status, r.code()),
        (409, "purchase_limit_reached".to_string())
    );

    // Orders are their buyer's: another buyer, or no token, learns nothing.
    let path = format!("/api/orders/{alices}");
    let mine = get_as(&mut c, Some(&alice), &path);
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json()["user_id"], "alice");
    let theirs = get_as(&mut c, Some(&bob), &path);
    assert_eq!(
        (theirs.status, theirs.code()),
        (404, "order_not_found".to_string())
    );
    assert_unauthorized(&get_as(&mut c, None, &path), "a lookup without a token");

    // Idempotency keys are per buyer: bob's "k" is not alice's "k".
    let a = order_as(
        &mut c,
        Some(&bob),
        &json!({"product_id": pid, "qty": 1}),
        Some("k"),
    );
    let b = order_as(
        &mut c,
        Some(&token(Algorithm::HS256, None, &claims("carol"))),
        &json!({"product_id": pid, "qty": 1}),
        Some("k"),
    );
    assert_eq!((a.status, b.status), (202, 202));
    assert_ne!(a.json()["order_reference"], b.json()["order_reference"]);
    assert_eq!(b.header("idempotent-replayed"), None);
    env.assert_conserved(pid, 100);
}

/// Sends `n` order requests for `body`, the i-th with the extra header lines `headers(i)`,
/// over 8 new connections from `from`, round robin (so that the kernel spreads them over the
/// workers); returns the answers.
fn burst(
    srv: &Server,
    from: &str,
    headers: impl Fn(usize) -> String,
    body: &Value,
    n: usize,
) -> Vec<Resp> {
    let mut conns: Vec<std::io::BufReader<std::net::TcpStream>> = (0..8)
        .map(|_| std::io::BufReader::new(connect_from(from, srv.addr).unwrap()))
        .collect();
    let body = body.to_string();
    (0..n)
        .map(|i| {
            let raw = format!(
                "POST /api/orders HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                headers(i)
            );
            let c = &mut conns[i % 8];
            c.get_mut().write_all(raw.as_bytes()).unwrap();
            read_response(c).expect("an answer")
        })
        .collect()
}

fn count(rs: &[Resp], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

#[test]
fn a_buyers_flood_gets_429_across_workers_while_other_buyers_keep_their_rate() {
    let env = Env::new();
    let pid = env.product(10_000, 100);
    // 1 a second after a burst of 20, per buyer, in the whole process (2 workers).
    let srv = Server::start_with(
        &env,
        &[
            ("FLASHSALE_RATE_LIMIT_BUYER", "1"),
            ("FLASHSALE_RATE_LIMIT_BUYER_BURST", "20"),
        ],
    );
    let started = std::time::Instant::now();
    let flood = burst(
        &srv,
        "127.0.0.1",
        |_| String::new(),
        &json!({"product_id": pid, "qty": 1, "user_id": "scalper"}),
        80,
    );
    let elapsed = started.elapsed().as_secs() as usize;
    let accepted = count(&flood, 202);
    assert!(
        (20..=20 + elapsed + 1).contains(&accepted),
        "{accepted} of 80 accepted in {elapsed} s: the limit is 20 at once, then 1 a second, \
         across both workers"
    );
    let limited: Vec<&Resp> = flood.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 80 - accepted);
    for r in &limited {
        assert_eq!(r.code(), "rate_limited");
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(after >= 1);
    }
    // Another buyer keeps its whole allowance.
    let other = burst(
        &srv,
        "127.0.0.1",
        |_| String::new(),
        &json!({"product_id": pid, "qty": 1, "user_id": "buyer-2"}),
        20,
    );
    assert_eq!(count(&other, 202), 20);
    let m = String::from_utf8_lossy(&srv.client().get("/metrics").body).into_owned();
    assert!(
        m.contains("flashsale_rate_limited_total{limit=\"buyer\"}"),
        "{m}"
    );
    env.assert_conserved(pid, 10_000);
}

#[test]
fn an_address_flood_gets_429_and_forwarded_addresses_count_only_behind_trusted_proxies() {
    let env = Env::new();
    let pid = env.product(10_000, 100);
    let srv = Server::start_with(
        &env,
        &[
            ("FLASHSALE_RATE_LIMIT_IP", "1"),
            ("FLASHSALE_RATE_LIMIT_IP_BURST", "10"),
            ("FLASHSALE_TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    );
    let body = json!({"product_id": pid, "qty": 1});
    // 10 at once, then 1 a second: what a burst that took `secs` may get through.
    let allowed = |secs: u64| 10..=10 + secs as usize + 1;
    // An untrusted peer: its X-Forwarded-For is ignored, whatever it claims (here a new
    // address in every request).
    let started = std::time::Instant::now();
    let from_2 = burst(
        &srv,
        "127.0.0.2",
        |i| format!("X-Forwarded-For: 198.51.100.{i}\r\n"),
        &body,
        40,
    );
    let accepted = count(&from_2, 202);
    let secs = started.elapsed().as_secs();
    assert!(
        allowed(secs).contains(&accepted),
        "{accepted} of 40 from 127.0.0.2 in {secs} s"
    );
    assert_eq!(count(&from_2, 429), 40 - accepted);
    // Probes are never limited.
    let mut probe = std::io::BufReader::new(connect_from("127.0.0.2", srv.addr).unwrap());
    probe
        .get_mut()
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut probe).unwrap().status, 200);
    // Behind the trusted proxy (127.0.0.1), each forwarded client has its own allowance,
    // and a hop the client wrote itself does not count.
    for client in ["203.0.113.5", "203.0.113.6"] {
        let started = std::time::Instant::now();
        let rs = burst(
            &srv,
            "127.0.0.1",
            |i| format!("X-Forwarded-For: 10.9.{i}.9, {client}\r\n"),
            &body,
            20,
        );
        let ok = count(&rs, 202);
        let secs = started.elapsed().as_secs();
        assert!(
            allowed(secs).contains(&ok),
            "{ok} of 20 for {client} in {secs} s"
        );
    }
    let m = String::from_utf8_lossy(&srv.client().get("/metrics").body).into_owned();
    assert!(
        m.contains("flashsale_rate_limited_total{limit=\"address\"}"),
        "{m}"
    );
    env.assert_conserved(pid, 10_000);
}

#[test]
fn serve_refuses_jwt_mode_without_keys_or_with_a_bad_key_file() {
    let env = Env::new();
    let out = env
        .command("serve")
        .env("FLASHSALE_BUYER_AUTH", "jwt")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLASHSALE_JWT_PUBLIC_KEYS"));
    let out = env
        .command("serve")
        .env("FLASHSALE_BUYER_AUTH", "jwt")
        .env("FLASHSALE_JWT_PUBLIC_KEYS", keys_dir().join("rsa.pem"))
        .env("FLASHSALE_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a JWKS document"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n - s` for a big-endian 32-byte `s` and P-256's order `n`: the other valid signature.
fn twin_s(s: &[u8]) -> Vec<u8> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// ECDSA signatures are malleable: `(r, n - s)` verifies too, and mainstream P-256 signers
/// (OpenSSL, Go, Java, WebCrypto, RustCrypto's p256 behind jsonwebtoken) emit the high-S form
/// half the time, so both forms are valid tokens. The twin grants nothing the original does
/// not: it names the same buyer, whose limits count both as one. And an `exp` at the end of
/// u64 neither wraps nor panics.
#[test]
fn es256_twins_are_one_buyer_and_a_huge_exp_does_not_wrap() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let env = Env::new();
    let pid = env.product(100, 100);
    let limited = env.product_with(100, 100, 10, Some(1));
    let srv = jwt_server(&env, &[]);
    let mut c = srv.client();
    let body = json!({"product_id": pid, "qty": 1});
    for i in 0..8 {
        let t = token(
            Algorithm::ES256,
            Some("ec-1"),
            &claims(&format!("ec-buyer-{i}")),
        );
        let (head, sig) = t.rsplit_once('.').unwrap();
        let raw = b64.decode(sig).unwrap();
        let mut twin = raw[..32].to_vec();
        twin.extend(twin_s(&raw[32..]));
        let twin = format!("{head}.{}", b64.encode(&twin));
        assert_ne!(twin, t);
        for form in [&t, &twin] {
            let r = order_as(&mut c, Some(form), &body, None);
            assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
        }
        // One buyer: a per-user limit of 1 is reached by either form.
        let one = json!({"product_id": limited, "qty": 1});
        assert_eq!(order_as(&mut c, Some(&t), &one, None).status, 202);
        let r = order_as(&mut c, Some(&twin), &one, None);
        assert_eq!(
            (r.status, r.code()),
            (409, "purchase_limit_reached".to_string())
        );
    }
    let forever = json!({"sub": "forever", "exp": u64::MAX, "iss": ISSUER, "aud": AUDIENCE});
    let t = token(Algorithm::HS256, None, &forever);
    for _ in 0..3 {
        let r = order_as(&mut c, Some(&t), &body, None);
        assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(c.get("/health").status, 200);
    env.assert_conserved(pid, 100);
}

/// `POST /api/orders/{ref}/cancel` in `jwt` mode: only the order's buyer cancels it; another
/// buyer is told it does not exist and no token is 401, both changing nothing.
#[test]
fn only_the_buyer_cancels_an_order() {
    let env = Env::new();
    let pid = env.product_with(5, 100, 10, Some(1));
    let srv = jwt_server(&env, &[]);
    let mut c = srv.client();
    let alice = token(Algorithm::HS256, None, &claims("alice"));
    let bob = token(Algorithm::HS256, None, &claims("bob"));
    let r = order_as(
        &mut c,
        Some(&alice),
        &json!({"product_id": pid, "qty": 1}),
        None,
    );
    assert_eq!(r.status, 202);
    let reference = r.json()["order_reference"].as_str().unwrap().to_string();
    let cancel_as = |c: &mut Client, t: Option<&str>| {
        let auth = t.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        c.request(
            "POST",
            &format!("/api/orders/{reference}/cancel"),
            &headers,
            b"",
        )
    };
    let theirs = cancel_as(&mut c, Some(&bob));
    assert_eq!(
        (theirs.status, theirs.code()),
        (404, "order_not_found".to_string())
    );
    assert_unauthorized(&cancel_as(&mut c, None), "a cancellation without a token");
    let still = get_as(&mut c, Some(&alice), &format!("/api/orders/{reference}"));
    assert_eq!(still.json()["status"], "pending", "nothing changed");
    let mine = cancel_as(&mut c, Some(&alice));
    assert_eq!(mine.status, 200, "{}", String::from_utf8_lossy(&mine.body));
    assert_eq!(mine.json()["cancel_reason"], "buyer");
    // Her per-user limit of 1 is free again.
    let r = order_as(
        &mut c,
        Some(&alice),
        &json!({"product_id": pid, "qty": 1}),
        None,
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    env.assert_conserved(pid, 5);
}
