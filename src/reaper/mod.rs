//! The reaper: each worker's loop that expires unpaid reservations.
//!
//! Every 100 ms it advances the worker's timer wheel (`wheel`, pure) and runs `expire.lua` for
//! each entry that came due: the reservations of one reserve call (or one restored order), of
//! which `expire.lua` skips those a payment or a failure settled first. It also hands over the webhooks the writer found applicable (`inbox`), and once a
//! second sweeps the pending sets of the products it knows for entries overdue by more than a
//! second, which only happens for reservations made by an instance that died. At start-up the
//! wheel is re-armed from the pending sets in Redis.

pub mod wheel;

use crate::domain::ProductId;
use crate::lifecycle::{self, ExpireOutcome, WebhookOutcome};
use crate::redis::cmd::command;
use crate::redis::scripts::{MEMBER_SEPARATOR, as_int, as_string, decode_scan, scan_cmd};
use crate::time::now_ms;
use crate::worker::Worker;
use redis_async::resp::RespValue;
use std::rc::Rc;
use std::time::Duration;

/// Reservations waiting for their expiry: one member of a product's pending set, which names
/// every reservation of one `reserve.lua` call (or one order a load restored), so a batch of
/// reservations takes one wheel entry and one `expire.lua` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub product: ProductId,
    /// References joined by [`MEMBER_SEPARATOR`], exactly as in the pending set.
    pub member: String,
}

impl Expiring {
    /// The number of reservations the entry names.
    pub fn orders(&self) -> usize {
        self.member.split(MEMBER_SEPARATOR).count()
    }
}

const TICK: Duration = Duration::from_millis(100);
/// How often the pending sets are swept for orphans.
const SWEEP_EVERY_MS: i64 = 1_000;
/// An entry overdue by more than this has no live wheel holding it.
const SWEEP_GRACE_MS: i64 = 1_000;
/// Expiries run concurrently in groups of this size: they share Redis round trips.
const CONCURRENCY: usize = 256;

pub async fn run(w: Rc<Worker>) {
    rearm(&w).await;
    let mut last_sweep = now_ms();
    let mut fired: Vec<Expiring> = Vec::new();
    loop {
        monoio::time::sleep(TICK).await;
        let now = now_ms();
        w.wheel.borrow_mut().advance(now, &mut fired);
        if !fired.is_empty() {
            expire_all(&w, std::mem::take(&mut fired), now, true).await;
        }
        while let Ok(d) = w.inbox.try_recv() {
            let w2 = w.clone();
            monoio::spawn(async move {
                match lifecycle::apply_webhook(&w2, &d.reference, d.success, d.payload).await {
                    Ok(WebhookOutcome::RecordedEarly) | Err(_) => {
                        // Still not applicable; the writer offers it again later.
                    }
                    Ok(outcome) => {
                        tracing::info!(reference = %d.reference, ?outcome, "applied a webhook recorded earlier")
                    }
                }
            });
        }
        if now - last_sweep >= SWEEP_EVERY_MS {
            last_sweep = now;
            sweep(&w, now).await;
        }
        let (sent, writes) = w.redis.pipeline_stats();
        w.metrics().set_redis_pipeline(sent, writes);
        w.metrics().set_wheel_len(w.wheel.borrow().len());
    }
}

/// Runs the expiries of `due`. Those that cannot run now (no room in the queue, Redis down,
/// not due by Redis's clock) go back into the wheel when `rearm`; the sweep passes `false`,
/// since it finds them again on its next round, and re-arming them there would add a copy to
/// the wheel every second for as long as the queue stays full.
async fn expire_all(w: &Rc<Worker>, due: Vec<Expiring>, now: i64, rearm: bool) {
    let mut no_room = 0;
    let mut it = due.into_iter().peekable();
    while it.peek().is_some() {
        let handles: Vec<_> = it
            .by_ref()
            .take(CONCURRENCY)
            .map(|e| {
                let w = w.clone();
                monoio::spawn(async move {
                    let outcome = lifecycle::expire(&w, &e, now).await;
                    (e, outcome)
                })
            })
            .collect();
        for h in handles {
            let (e, outcome) = h.await;
            match outcome {
                ExpireOutcome::RetryAt(t) if rearm => w.wheel.borrow_mut().insert(t, e),
                ExpireOutcome::NoRoom(t) if rearm => {
                    no_room += e.orders();
                    w.wheel.borrow_mut().insert(t, e);
                }
                _ => {}
            }
        }
    }
    if rearm {
        // Expiries held up by a full queue make new orders wait (see `order_permit`).
        w.expiry_backlog.set(no_room);
    }
}

/// Arms the wheel with the pending reservations of this worker's share of the products
/// (product id modulo the number of workers), retrying until Redis answers.
async fn rearm(w: &Worker) {
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

async fn scan_pending(w: &Worker) -> Result<usize, String> {
    let pattern = w.keys.scan_pattern("pending");
    let workers = w.cfg().workers as i64;
    let mut cursor = "0".to_string();
    let mut armed = 0;
    loop {
        let v = w
            .redis
            .request(scan_cmd(&cursor, &pattern))
            .await
            .map_err(|e| e.to_string())?;
        let (next, keys) = decode_scan(v).map_err(|e| e.to_string())?;
        for k in keys {
            let Some(pid) = w.keys.product_of_key(&k) else {
                continue;
            };
            w.known_products.borrow_mut().insert(pid);
            if pid.get().rem_euclid(workers) != w.id as i64 {
                continue;
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let entries = w
                .redis
                .request(command(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]))
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

/// Inserts `[member, score, member, score, ...]` into the wheel.
fn arm_entries(w: &Worker, pid: ProductId, entries: RespValue) -> usize {
    let RespValue::Array(items) = entries else {
        return 0;
    };
    let mut wheel = w.wheel.borrow_mut();
    let mut n = 0;
    let mut it = items.into_iter();
    while let (Some(member), Some(score)) = (it.next(), it.next()) {
        let (Ok(member), Ok(at)) = (as_string(member), as_int(&score)) else {
            continue;
        };
        wheel.insert(
            at,
            Expiring {
                product: pid,
                member,
            },
        );
        n += 1;
    }
    n
}

/// Expires reservations overdue by more than the grace: those no live wheel holds.
async fn sweep(w: &Rc<Worker>, now: i64) {
    let products: Vec<ProductId> = w.known_products.borrow().iter().copied().collect();
    for pid in products {
        let key = w.keys.product_keys(pid).pending;
        let max = (now - SWEEP_GRACE_MS).to_string();
        let Ok(v) = w
            .redis
            .request(command(&[
                "ZRANGEBYSCORE",
                &key,
                "-inf",
                &max,
                "WITHSCORES",
                "LIMIT",
                "0",
                "500",
            ]))
            .await
        else {
            return;
        };
        let RespValue::Array(items) = v else { continue };
        let mut due = Vec::new();
        let mut it = items.into_iter();
        while let (Some(member), Some(_score)) = (it.next(), it.next()) {
            if let Ok(member) = as_string(member) {
                due.push(Expiring {
                    product: pid,
                    member,
                });
            }
        }
        if !due.is_empty() {
            tracing::debug!(worker = w.id, product = %pid, overdue = due.len(), "sweep found overdue reservations");
            expire_all(w, due, now, false).await;
        }
    }
}
