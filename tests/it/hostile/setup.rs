//! What the server finds when it starts: a Redis that could evict its keys, and a Redis
//! prefix written for another database.

use super::*;

/// A child process killed when dropped, so a test that fails does not leave it running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_refuses_a_redis_that_may_evict_keys() {
    let redis = OwnRedis::start(&["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"]);
    let env = Env::with_redis(redis.url());
    let mut child = Killed(
        env.command("serve")
            .env("FLASHSALE_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_until("serve refuses to start", || child.0.try_wait().unwrap());
    assert!(!status.success());
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("maxmemory-policy allkeys-lru"), "{err}");
}

#[test]
fn a_redis_prefix_written_for_another_database_is_never_used() {
    let env = Env::new();
    let kept = env.product(100, 500);
    let gone = env.product(50, 100);
    let mut srv = Server::start(&env);
    let mut c = srv.client();
    for pid in [kept, gone] {
        assert_eq!(c.get(&format!("/api/products/{pid}")).status, 200);
    }
    assert_eq!(c.order(gone, 1).status, 202);
    assert_eq!(srv.terminate().code(), Some(0));

    // The database is dropped and created again under the same name (a demo reset); Redis
    // keeps what the old one's server wrote under the same prefix.
    let mut admin = postgres::Client::connect(&pg_url("postgres"), postgres::NoTls).unwrap();
    for sql in ["DROP DATABASE {} WITH (FORCE)", "CREATE DATABASE {}"] {
        admin.batch_execute(&sql.replace("{}", &env.db)).unwrap();
    }
    assert!(env.command("migrate").output().unwrap().status.success());
    env.pg()
        .execute(
            "INSERT INTO products (id, name, price_cents, stock) VALUES ($1, 'Reset', 700, 30)",
            &[&kept],
        )
        .unwrap();

    let srv = Server::start(&env);
    let mut c = srv.client();
    let p = c.get(&format!("/api/products/{kept}")).json();
    assert_eq!(
        (
            p["price_cents"].as_i64(),
            p["stock"].as_i64(),
            p["name"].as_str()
        ),
        (Some(700), Some(30), Some("Reset")),
        "the product comes from this database: {p}"
    );
    let r = c.get(&format!("/api/products/{gone}"));
    assert_eq!((r.status, r.code()), (404, "product_not_found".to_string()));
    assert_eq!(c.order(gone, 1).status, 404);
    let r = c.order(kept, 2);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["amount_cents"], 1400);
    env.assert_conserved(kept, 30);
    assert_healthy(&srv);
}
