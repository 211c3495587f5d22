//! Chaos: the promises hold while things break under load. The server is SIGKILLed several
//! times in a row, a Redis with AOF (`appendfsync everysec`) is killed and restarted, a Redis
//! comes back from a snapshot older than what it acknowledged, PostgreSQL becomes unreachable
//! and comes back, and webhooks race each other. After each: every 202 is in PostgreSQL, no
//! unit is sold twice, the conservation law holds and `flashsale reconcile` exits 0. Bounded
//! in time, loopback only.

use crate::common::*;
use crate::load::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn repeated_sigkills_under_load_lose_nothing() {
    let env = Env::new();
    let initial = 1_000_000;
    let pid = env.product(initial, 100);
    let mut srv = Server::start(&env);
    let addr = Mutex::new(srv.addr);
    let stop = AtomicBool::new(false);
    let seen = Seen::default();
    std::thread::scope(|s| {
        s.spawn(|| load(8, &addr, &[pid], &stop, &seen));
        for round in 1..=3 {
            let target = round * 1_500;
            wait_until("orders accepted", || {
                (seen.ok.load(Ordering::SeqCst) >= target).then_some(())
            });
            srv.kill9();
            srv = Server::start(&env);
            *addr.lock().unwrap() = srv.addr;
        }
        let target = seen.ok.load(Ordering::SeqCst) + 500;
        wait_until("orders accepted after the last restart", || {
            (seen.ok.load(Ordering::SeqCst) >= target).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
    });
    let accepted = seen.references();
    env.wait_rows(&accepted);
    let rows: i64 = env
        .pg()
        .query_one("SELECT count(*) FROM orders", &[])
        .unwrap()
        .get(0);
    assert!(rows as usize >= accepted.len());
    env.assert_conserved(pid, initial);
}

#[test]
fn a_redis_with_aof_killed_and_restarted_under_load() {
    let mut redis = OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let env = Env::with_redis(redis.url());
    let initial = 1_000_000;
    let pid = env.product(initial, 100);
    let srv = Server::start(&env);
    let addr = Mutex::new(srv.addr);
    let stop = AtomicBool::new(false);
    let seen = Seen::default();
    std::thread::scope(|s| {
        s.spawn(|| load(8, &addr, &[pid], &stop, &seen));
        wait_until("orders accepted", || {
            (seen.ok.load(Ordering::SeqCst) >= 3_000).then_some(())
        });
        redis.kill9();
        let before = seen.unavailable.load(Ordering::SeqCst);
        wait_until("503 while Redis is down", || {
            (seen.unavailable.load(Ordering::SeqCst) > before + 10).then_some(())
        });
        let mut c = srv.client();
        let r = c.get("/ready");
        assert_eq!(
            (r.status, r.json()["redis"].as_str()),
            (503, Some("unavailable"))
        );
        redis.restart();
        let target = seen.ok.load(Ordering::SeqCst) + 3_000;
        wait_until("orders accepted after the restart", || {
            (seen.ok.load(Ordering::SeqCst) >= target).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
    });
    let accepted = seen.references();
    env.wait_rows(&accepted);
    assert_eq!(srv.client().get("/ready").status, 200);
    env.assert_conserved(pid, initial);
}

#[test]
fn postgresql_unreachable_under_load_queues_to_the_bound_then_drains() {
    let env = Env::new();
    let initial = 1_000_000;
    let pid = env.product(initial, 100);
    let proxy = Proxy::start(pg_addr());
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, env.db);
    let srv = Server::start_with(
        &env,
        &[
            ("DATABASE_URL", &via_proxy),
            ("FLASHSALE_QUEUE_CAPACITY", "2000"),
        ],
    );
    let mut c = srv.client();
    assert_eq!(c.get(&format!("/api/products/{pid}")).status, 200);
    let addr = Mutex::new(srv.addr);
    let stop = AtomicBool::new(false);
    let seen = Seen::default();
    std::thread::scope(|s| {
        s.spawn(|| load(8, &addr, &[pid], &stop, &seen));
        wait_until("orders accepted", || {
            (seen.ok.load(Ordering::SeqCst) >= 1_000).then_some(())
        });
        proxy.cut();
        // The server keeps answering: orders queue up to the bound, then 503.
        wait_until("503 once the queue is full", || {
            (seen.unavailable.load(Ordering::SeqCst) >= 50).then_some(())
        });
        let r = c.get("/ready");
        assert_eq!(
            (r.status, r.json()["postgres"].as_str()),
            (503, Some("unavailable"))
        );
        let m = String::from_utf8_lossy(&c.get("/metrics").body).into_owned();
        assert!(
            m.contains("flashsale_unavailable_responses_total{reason=\"queue_full\"}"),
            "{m}"
        );
        assert!(
            !m.contains("flashsale_writer_retries_total 0\n"),
            "retries are counted"
        );
        assert_eq!(c.get("/health").status, 200);
        stop.store(true, Ordering::SeqCst);
    });
    // Refused orders touched nothing: Redis lost exactly the accepted units.
    let accepted = seen.references();
    let live = c.get(&format!("/api/products/{pid}")).json()["stock"]
        .as_i64()
        .unwrap();
    assert_eq!(live, initial - accepted.len() as i64);
    proxy.restore();
    wait_until("ready again", || {
        (c.get("/ready").status == 200).then_some(())
    });
    env.wait_rows(&accepted);
    env.assert_conserved(pid, initial);
}

#[test]
fn success_and_failure_racing_for_the_same_order_count_once() {
    let env = Env::new();
    let pid = env.product(100, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let refs: Vec<String> = (0..20)
        .map(|_| {
            c.order(pid, 2).json()["order_reference"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut paid = 0;
    for reference in &refs {
        let (a, b) = std::thread::scope(|s| {
            let ha = s.spawn(|| Client::connect(srv.addr).webhook(reference, "success"));
            let hb = s.spawn(|| Client::connect(srv.addr).webhook(reference, "failure"));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!((a.status, b.status), (200, 200));
        let (ma, mb) = (
            a.json()["message"].as_str().unwrap().to_string(),
            b.json()["message"].as_str().unwrap().to_string(),
        );
        let success_won = ma == "Payment successful, order marked as paid";
        let failure_won = mb == "Payment failed, order cancelled and stock released";
        assert!(
            success_won ^ failure_won,
            "exactly one wins: {ma:?} / {mb:?}"
        );
        assert_eq!(
            if success_won { &mb } else { &ma },
            "Order already in final state"
        );
        let row = env.order_row(reference).unwrap();
        if success_won {
            paid += 2;
            assert_eq!(row.0, "paid");
        } else {
            assert_eq!(
                (row.0.as_str(), row.1.as_deref()),
                ("cancelled", Some("payment_failed"))
            );
            assert_eq!(
                a.json()["refund_required"],
                true,
                "the money of the losing success is refunded"
            );
        }
    }
    assert_eq!(env.paid_units(pid), paid);
    env.assert_conserved(pid, 100);
}

#[test]
fn expiries_keep_releasing_units_while_new_orders_are_refused() {
    let env = Env::new();
    let pid = env.product(1_000, 100);
    let proxy = Proxy::start(pg_addr());
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, env.db);
    let srv = Server::start_with(
        &env,
        &[
            ("DATABASE_URL", &via_proxy),
            ("FLASHSALE_QUEUE_CAPACITY", "64"),
            ("FLASHSALE_HOLD_SECS", "1"),
        ],
    );
    let mut c = srv.client();
    assert_eq!(c.get(&format!("/api/products/{pid}")).status, 200);
    proxy.cut();
    // Orders fill their share of the queue (7/8 of 64), then get 503.
    let mut held = 0;
    loop {
        let r = c.order(pid, 2);
        match r.status {
            202 => held += 2,
            503 => break,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(held > 0);
    assert_eq!(
        c.get(&format!("/api/products/{pid}")).json()["stock"],
        1_000 - held
    );
    // PostgreSQL is still unreachable and new orders are refused, yet the holds run out and
    // their units come back: expiries have places of their own in the queue.
    wait_until("some units released by expiry", || {
        let stock = c.get(&format!("/api/products/{pid}")).json()["stock"]
            .as_i64()
            .unwrap();
        (stock > 1_000 - held).then_some(())
    });
    assert_eq!(c.order(pid, 1).status, 503, "still refusing new orders");
    proxy.restore();
    wait_until("everything expired and written", || {
        (env.pending_units(pid) == 0
            && env.journal_len(pid) == 0
            && env.order_row_count() as i64 * 2 == held)
            .then_some(())
    });
    env.assert_conserved(pid, 1_000);
    assert_eq!(env.redis_stock(pid), Some(1_000));
}

/// An instance that shared this Redis crashed and nobody restarted it: its journal holds a
/// reservation PostgreSQL never got, for a product this server has not touched. The running
/// server finds that journal with its background scan and writes the order once the entry
/// is older than the stuck threshold (30 s; the entry here is dated a minute back).
#[test]
fn a_journal_left_by_another_instance_is_written_while_serving() {
    let env = Env::new();
    let seen = env.product(10, 250);
    let pid = env.product(10, 250);
    let srv = Server::start(&env);
    // Once a reservation is written, the start-up replay is over: what follows can only be
    // found by the scan that runs while serving.
    let mut c = srv.client();
    let r = c.order(seen, 1);
    assert_eq!(r.status, 202, "{:?}", r.json());
    let first = r.json()["order_reference"].as_str().unwrap().to_string();
    env.wait_rows(&[first]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let reference = format!("{pid}-{}", unique("orphan").to_uppercase());
    let record = format!("pending|2|500|{}|{}|0|", now_ms + 600_000, now_ms - 60_000);
    let mut r = env.redis();
    let _: () = redis::cmd("SET")
        .arg(env.key(pid, &format!("order:{reference}")))
        .arg(&record)
        .query(&mut r)
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(env.key(pid, "journal"))
        .arg(now_ms - 60_000)
        .arg(format!("{reference}|pending"))
        .query(&mut r)
        .unwrap();
    wait_until("the orphaned reservation is in PostgreSQL", || {
        env.order_row(&reference)
    });
    assert_eq!(
        env.order_row(&reference),
        Some(("pending".to_string(), None, 2))
    );
    wait_until("its journal entry is acknowledged", || {
        (env.journal_len(pid) == 0).then_some(())
    });
}

/// A Redis restarted from a snapshot older than what it acknowledged holds a stock counter
/// that forgot reservations PostgreSQL has (here: an explicit `SAVE` after 10 reservations,
/// 20 more, then kill -9 and a restart that loads the snapshot, whose counter says 90 left
/// where 70 are). The server must see the new `run_id` and rebuild the product from
/// PostgreSQL before selling it again: exactly the stock sells, not the snapshot's 90.
#[test]
fn a_redis_restarted_from_an_older_snapshot_never_oversells() {
    let mut redis = OwnRedis::start(&[]);
    let env = Env::with_redis(redis.url());
    let stock = 100;
    let pid = env.product(stock, 100);
    let srv = Server::start(&env);
    let mut c = srv.client();
    let mut sold: Vec<String> = Vec::new();
    let buy = |c: &mut Client, n: usize, sold: &mut Vec<String>| {
        for _ in 0..n {
            let r = c.order(pid, 1);
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            sold.push(r.json()["order_reference"].as_str().unwrap().to_string());
        }
    };
    buy(&mut c, 10, &mut sold);
    env.wait_rows(&sold);
    let saved: String = redis::cmd("SAVE").query(&mut env.redis()).unwrap();
    assert_eq!(saved, "OK");
    buy(&mut c, 20, &mut sold);
    env.wait_rows(&sold);
    redis.kill9();
    redis.restart();
    assert_eq!(
        env.redis_stock(pid),
        Some(90),
        "the snapshot's stale counter"
    );

    // Buy one unit at a time until sold out; 503s while the server reconnects are retried.
    wait_until("sold out after the restart", || {
        let r = c.order(pid, 1);
        match r.status {
            202 => {
                sold.push(r.json()["order_reference"].as_str().unwrap().to_string());
                None
            }
            503 => None,
            409 => Some(()),
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    });
    assert_eq!(sold.len() as i64, stock, "exactly the stock sold");
    env.wait_rows(&sold);
    env.assert_conserved(pid, stock);
}
