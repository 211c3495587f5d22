//! The writer's housekeeping between batches: the attribute sync (product changes made in
//! PostgreSQL copied into Redis, where every worker reads them) and the unmatched webhooks
//! (a payment notice that came before its order: matched when the order is written, walked
//! in steps, offered to the workers, deleted after `FLASHSALE_UNMATCHED_WEBHOOK_DAYS`).

use crate::redis::scripts::admin::{SyncReply, decode_sync, sync_call};
use crate::redis::scripts::load::invalidate_call;
use crate::time::to_system_time;
use crate::writer::commit::{Pending, Writer};
use crate::writer::msg::DeferredWebhook;
use crate::writer::pg::Unmatched;
use std::time::{Duration, Instant};

pub const DEFERRED_EVERY: Duration = Duration::from_secs(1);
/// Unmatched webhooks looked at per step of the walk (one step per `DEFERRED_EVERY`).
const UNMATCHED_WALK_STEP: i64 = 200;
pub const EXPIRE_UNMATCHED_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, and statements per run: a backlog is deleted over several
/// runs rather than in one long transaction.
const EXPIRE_UNMATCHED_STEP: i64 = 1_000;
const EXPIRE_UNMATCHED_ROUNDS: usize = 10;
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How far back each attribute sync looks again, for changes committed after a later one.
pub const SYNC_OVERLAP: Duration = Duration::from_secs(5);
/// A deferred webhook handed to a worker is offered again after this long if still pending.
const DEFERRED_RETRY: Duration = Duration::from_secs(10);

impl Writer {
    /// Copies into Redis the sold attributes (price, name, limits, window) of products that
    /// changed in PostgreSQL, by the admin API or by SQL: every worker and instance reads them
    /// from Redis, so a change reaches all of them within a second. Changes committed out of
    /// timestamp order are caught by looking [`SYNC_OVERLAP`] back each time.
    pub(super) async fn sync_attributes(&mut self) {
        if let Some(pg) = self.pg.as_mut() {
            // Whether new orders record `order.reserved`: checked as often as attributes.
            let _ = pg.refresh_subscriptions().await;
        }
        let Some(pg) = self.pg.as_ref() else { return };
        let since = self.synced_up_to - SYNC_OVERLAP;
        let Ok(changed) = pg.changed_products(since).await else {
            return;
        };
        for a in changed {
            let done = match self
                .redis
                .eval(&sync_call(&self.keys, &a))
                .await
                .map(decode_sync)
            {
                Ok(Ok(SyncReply::Invalidate)) => self
                    .redis
                    .eval(&invalidate_call(&self.keys, a.id))
                    .await
                    .is_ok(),
                Ok(Ok(_)) => true,
                _ => false,
            };
            if !done {
                // Redis is away: the next round starts from here again.
                return;
            }
            self.synced_up_to = self.synced_up_to.max(to_system_time(a.changed_at_ms));
        }
    }

    /// Looks up the references just written among the unmatched webhooks.
    pub(super) async fn match_written(&mut self, orders: &[Pending]) {
        let Some(pg) = self.pg.as_ref() else { return };
        let refs: Vec<&str> = orders.iter().map(|p| p.record.reference.as_str()).collect();
        if let Ok(found) = pg.unmatched_for(&refs).await {
            self.offer(found);
        }
    }

    /// One step of the walk over the unmatched webhooks: those whose order appeared some other
    /// way (inserted by another tool) are offered.
    pub(super) async fn walk_unmatched(&mut self) {
        if !self.unmatched_possible {
            return;
        }
        let Some(pg) = self.pg.as_ref() else { return };
        let Ok((seen, found)) = pg
            .unmatched_after(self.unmatched_cursor, UNMATCHED_WALK_STEP)
            .await
        else {
            return;
        };
        if seen.is_empty() && self.unmatched_cursor == 0 {
            self.unmatched_possible = false;
        }
        self.unmatched_cursor = match seen.last() {
            Some(u) if seen.len() as i64 == UNMATCHED_WALK_STEP => u.id,
            _ => 0,
        };
        self.offer(found);
    }

    /// Deletes the unmatched webhooks older than `FLASHSALE_UNMATCHED_WEBHOOK_DAYS`.
    pub(super) async fn expire_unmatched(&mut self) {
        let Some(pg) = self.pg.as_ref() else { return };
        let days = i32::try_from(self.shared.cfg.unmatched_webhook_days).unwrap_or(i32::MAX);
        let mut deleted = 0;
        for _ in 0..EXPIRE_UNMATCHED_ROUNDS {
            match pg.expire_unmatched(days, EXPIRE_UNMATCHED_STEP).await {
                Ok(n) => {
                    deleted += n;
                    if n < EXPIRE_UNMATCHED_STEP as u64 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, days, "deleted webhooks whose order never appeared");
        }
    }

    /// Hands webhooks whose order now exists to the workers, which apply them.
    fn offer(&mut self, found: Vec<Unmatched>) {
        if self.inboxes.is_empty() || found.is_empty() {
            return;
        }
        let now = Instant::now();
        self.offered
            .retain(|_, t| now.duration_since(*t) < DEFERRED_RETRY);
        for Unmatched {
            reference,
            success,
            payload,
            ..
        } in found
        {
            if self.offered.contains_key(&reference) {
                continue;
            }
            let inbox = &self.inboxes[self.next_inbox % self.inboxes.len()];
            self.next_inbox += 1;
            if inbox
                .try_send(DeferredWebhook {
                    reference: reference.clone(),
                    success,
                    payload,
                })
                .is_ok()
            {
                self.offered.insert(reference, now);
            }
        }
    }
}
