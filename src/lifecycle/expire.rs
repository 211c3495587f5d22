//! Expiring the reservations of one pending-set member: the reaper's step. The orders a
//! payment or a failure settled first are skipped by `expire.lua`; those it cancels go to the
//! writer, through places taken before the script runs.

use crate::domain::{ExpireOutcome, ProductId};
use crate::lifecycle::load::ensure_loaded;
use crate::lifecycle::reply_failure;
use crate::local::Local;
use crate::local::queue::hand_over;
use crate::redis::reply::RedisError;
use crate::redis::scripts::expire::{ExpireReply, decode_expire, expire_call, member_orders};
use crate::writer::msg::WriterMsg;

/// How long to wait before trying again what could not run now.
const RETRY_MS: i64 = 1_000;

/// Expires the reservations of pending-set `member` of product `pid` that are still pending
/// and due by Redis's clock.
pub async fn expire(w: &Local, pid: ProductId, member: &str, now_ms: i64) -> ExpireOutcome {
    // A place in the queue for every order the member may expire, before Redis changes.
    let orders = member_orders(member);
    let mut permits = Vec::with_capacity(orders);
    for _ in 0..orders {
        match w.queue.permit() {
            Ok(p) => permits.push(p),
            Err(_) => return ExpireOutcome::NoRoom(now_ms + RETRY_MS),
        }
    }
    let call = expire_call(&w.keys, pid, member);
    let v = match w.redis.eval(&call).await {
        Ok(v) => v,
        Err(err) => {
            if !matches!(err, RedisError::Unavailable) {
                tracing::error!(error = %err, "expire failed");
            }
            return ExpireOutcome::RetryAt(now_ms + RETRY_MS);
        }
    };
    match decode_expire(v, pid) {
        Ok(ExpireReply::Done {
            expired,
            retry_at_ms,
        }) => {
            for (record, p) in expired.into_iter().zip(permits) {
                hand_over(
                    p,
                    WriterMsg::Order {
                        record,
                        webhook: None,
                        done: None,
                        journal: None,
                    },
                );
                w.metrics().expired();
            }
            retry_at_ms.map_or(ExpireOutcome::Done, ExpireOutcome::RetryAt)
        }
        // Redis lost the product (or it was invalidated after a restart): rebuild it now, as a
        // request would, so expiries do not wait for the product's next buyer. The load
        // re-arms its pending orders, these included.
        Ok(ExpireReply::NotLoaded) => {
            drop(permits);
            match ensure_loaded(w, pid).await {
                Ok(_) => ExpireOutcome::Done,
                Err(_) => ExpireOutcome::RetryAt(now_ms + RETRY_MS),
            }
        }
        Err(err) => {
            reply_failure(err);
            ExpireOutcome::Done
        }
    }
}
