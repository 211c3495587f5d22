//! The reaper: each worker's loop that expires unpaid reservations.
//!
//! Every 100 ms it advances the worker's timer wheel (`local::expiries`); for each entry that came
//! due (a product and an expiry time: one per reserve call or restored order) it reads the
//! pending-set members of that time and runs `expire.lua` on each, which skips the orders a
//! payment or a failure settled first. It also hands over the webhooks the writer found
//! applicable (`Local::deferred`), and once a second sweeps the pending sets of the products it knows
//! for entries overdue by more than a second, which only happens for reservations made by an
//! instance that died. At start-up the wheel is re-armed from the pending sets in Redis.

use crate::domain::{ExpireOutcome, ProductId, WebhookOutcome};
use crate::lifecycle::expire::expire;
use crate::lifecycle::load::ensure_loaded;
use crate::lifecycle::webhook;
use crate::local::Local;
use crate::local::wheel::Expiring;
use crate::redis::cmd::{command, oldest_members};
use crate::redis::pipeline::Pipeline;
use crate::redis::reply::{as_int, as_string};
use crate::redis::scan::{decode_scan, scan_cmd};
use crate::redis::scripts::expire::member_orders;
use crate::time::now_ms;
use redis_async::resp::RespValue;
use std::rc::Rc;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(100);
/// How often the pending sets are swept for orphans.
const SWEEP_EVERY_MS: i64 = 1_000;
/// An entry overdue by more than this has no live wheel holding it.
const SWEEP_GRACE_MS: i64 = 1_000;
/// Most overdue members one sweep takes per product; the rest wait for the next sweep.
const SWEEP_BATCH: usize = 500;
/// Expiries run concurrently in groups of this size: they share Redis round trips.
const CONCURRENCY: usize = 256;

pub async fn run(w: Rc<Local>) {
    rearm(&w).await;
    let mut last_sweep = now_ms();
    let mut fired: Vec<Expiring> = Vec::new();
    loop {
        monoio::time::sleep(TICK).await;
        let now = now_ms();
        // Tests pause expiry (`FAILPOINTS=reaper_pause=return`) to stand in the window
        // between an order's expiry and the reaper's next tick, which every order script must
        // close by itself (an order past its time is expired by whichever call finds it).
        #[cfg(feature = "failpoints")]
        let paused = fail::eval("reaper_pause", |_| ()).is_some();
        #[cfg(not(feature = "failpoints"))]
        let paused = false;
        if !paused {
            w.expiries.advance(now, &mut fired);
        }
        if !fired.is_empty() {
            expire_all(&w, std::mem::take(&mut fired), now).await;
        }
        while let Ok(d) = w.deferred.try_recv() {
            let w2 = w.clone();
            monoio::spawn(async move {
                match webhook::apply(&w2, &d.reference, d.success, d.payload).await {
                    Ok(WebhookOutcome::RecordedEarly) | Err(_) => {
                        // Still not applicable; the writer offers it again later.
                    }
                    Ok(outcome) => {
                        tracing::info!(reference = %d.reference, ?outcome, "applied a webhook recorded earlier")
                    }
                }
            });
        }
        if !paused && now - last_sweep >= SWEEP_EVERY_MS {
            last_sweep = now;
            sweep(&w, now).await;
        }
        let (sent, writes) = w.redis.pipeline_stats();
        w.metrics().set_redis_pipeline(sent, writes);
        w.metrics().set_redis_redirects(w.redis.redirects());
        w.metrics().set_wheel_len(w.expiries.len());
        w.metrics().set_open_connections(w.connections.count());
        w.shared.rate_limits.housekeeping(Duration::from_secs(1));
    }
}

/// Runs the expiries of the entries that fired. Those that cannot run now (no room in the
/// queue, Redis down, not due by Redis's clock) go back into the wheel.
async fn expire_all(w: &Rc<Local>, mut due: Vec<Expiring>, now: i64) {
    // Several reserve calls can share an expiry millisecond: one look at it is enough.
    due.sort_by_key(|e| (e.product, e.due_ms));
    due.dedup();
    let results = in_groups(due, |e| {
        let w = w.clone();
        async move { (e, expire_entry(&w, e, now).await) }
    })
    .await;
    let mut no_room = 0;
    for (e, (again, waited)) in results {
        no_room += waited;
        if let Some(t) = again {
            w.expiries.rearm(t, e);
        }
    }
    // Expiries held up by a full queue make new orders wait (see `local::queue`, headroom).
    w.queue.set_expiry_backlog(no_room);
}

/// Runs `f` on every item, `CONCURRENCY` tasks at a time (their Redis calls share round
/// trips), and returns the results in order.
async fn in_groups<T, R, F>(items: Vec<T>, f: impl Fn(T) -> F) -> Vec<R>
where
    R: 'static,
    F: std::future::Future<Output = R> + 'static,
{
    let mut out = Vec::with_capacity(items.len());
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        let handles: Vec<_> = it
            .by_ref()
            .take(CONCURRENCY)
            .map(|x| monoio::spawn(f(x)))
            .collect();
        for h in handles {
            out.push(h.await);
        }
    }
    out
}

/// Expires the reservations due at `e.due_ms`: the members of that score in the product's
/// pending set. Returns when to look again (some were not due by Redis's clock, the queue had
/// no room, or Redis did not answer) and how many orders waited for room in the queue.
async fn expire_entry(w: &Rc<Local>, e: Expiring, now: i64) -> (Option<i64>, usize) {
    let keys = w.product_keys.product(e.product);
    let score = e.due_ms.to_string();
    let members = match w
        .redis
        .request(
            &keys.pending,
            command(&["ZRANGEBYSCORE", &keys.pending, &score, &score]),
        )
        .await
    {
        Ok(RespValue::Array(items)) => items,
        Ok(_) => Vec::new(),
        Err(_) => return (Some(now + 1_000), 0),
    };
    if members.is_empty() {
        // Settled already, or Redis lost the product (restarted without its data, or
        // invalidated after a restart): then only a reload from PostgreSQL finds these orders,
        // and it re-arms them.
        return match w
            .redis
            .request(&keys.stock, command(&["EXISTS", &keys.stock]))
            .await
        {
            Ok(RespValue::Integer(0)) => match ensure_loaded(w, e.product).await {
                Ok(_) => (None, 0),
                Err(_) => (Some(now + 1_000), 0),
            },
            Ok(_) => (None, 0),
            Err(_) => (Some(now + 1_000), 0),
        };
    }
    let mut again: Option<i64> = None;
    let mut waited = 0;
    for member in members {
        let Ok(member) = as_string(member) else {
            continue;
        };
        let t = match expire(w, e.product, &member, now).await {
            ExpireOutcome::Done => continue,
            ExpireOutcome::RetryAt(t) => t,
            ExpireOutcome::NoRoom(t) => {
                waited += member_orders(&member);
                t
            }
        };
        again = Some(again.map_or(t, |a| a.min(t)));
    }
    (again, waited)
}

/// Arms the wheel with the pending reservations of this worker's share of the products
/// (product id modulo the number of workers), retrying until Redis answers.
async fn rearm(w: &Local) {
    loop {
        match scan_pending(w).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(
                        worker = w.id,
                        reservations = n,
                        "timer wheel re-armed from Redis"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::debug!(worker = w.id, error = %e, "re-arm waits for Redis");
                monoio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Arms the wheel from the pending sets of every Redis server (each master of a cluster).
async fn scan_pending(w: &Local) -> Result<usize, String> {
    if !w.redis.is_connected() {
        return Err("Redis is not connected yet".into());
    }
    let mut armed = 0;
    for server in w.redis.servers() {
        armed += scan_server(w, &server).await?;
    }
    Ok(armed)
}

async fn scan_server(w: &Local, server: &Pipeline) -> Result<usize, String> {
    let pattern = w.keys.scan_pattern("pending");
    let workers = w.cfg().workers as i64;
    let mut cursor = "0".to_string();
    let mut armed = 0;
    loop {
        let v = server
            .request(scan_cmd(&cursor, &pattern))
            .await
            .map_err(|e| e.to_string())?;
        let (next, keys) = decode_scan(v).map_err(|e| e.to_string())?;
        for k in keys {
            let Some(pid) = w.keys.product_if(&k, "pending") else {
                continue;
            };
            w.expiries.remember(pid);
            if pid.get().rem_euclid(workers) != w.id as i64 {
                continue;
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let entries = w
                .redis
                .request(&key, command(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]))
                .await
                .map_err(|e| e.to_string())?;
            armed += arm_entries(w, pid, entries);
        }
        match next {
            Some(c) => cursor = c,
            None => return Ok(armed),
        }
    }
}

/// Inserts one wheel entry per distinct score of `[member, score, member, score, ...]`
/// (sorted by score, as ZRANGE gives them); returns the number of members.
fn arm_entries(w: &Local, pid: ProductId, entries: RespValue) -> usize {
    let RespValue::Array(items) = entries else {
        return 0;
    };
    let mut n = 0;
    let mut last = None;
    let mut it = items.into_iter();
    while let (Some(_member), Some(score)) = (it.next(), it.next()) {
        let Ok(at) = as_int(&score) else {
            continue;
        };
        if last != Some(at) {
            w.expiries.arm(pid, at);
            last = Some(at);
        }
        n += 1;
    }
    n
}

/// Expires reservations overdue by more than the grace: those no live wheel holds.
async fn sweep(w: &Rc<Local>, now: i64) {
    for pid in w.expiries.known_products() {
        let key = w.product_keys.product(pid).pending.clone();
        let max = (now - SWEEP_GRACE_MS).to_string();
        let Ok(v) = w
            .redis
            .request(&key, oldest_members(&key, &max, SWEEP_BATCH))
            .await
        else {
            return;
        };
        let RespValue::Array(items) = v else { continue };
        let due: Vec<String> = items
            .into_iter()
            .filter_map(|m| as_string(m).ok())
            .collect();
        if !due.is_empty() {
            tracing::debug!(worker = w.id, product = %pid, overdue = due.len(), "sweep found overdue reservations");
            expire_members(w, pid, due, now).await;
        }
    }
}

/// The sweep's expiries. Those that cannot run now are not re-armed: the sweep finds them
/// again on its next round, and re-arming them here would add a wheel entry every second for
/// as long as the queue stays full.
async fn expire_members(w: &Rc<Local>, pid: ProductId, members: Vec<String>, now: i64) {
    in_groups(members, |member| {
        let w = w.clone();
        async move { expire(&w, pid, &member, now).await }
    })
    .await;
}
