//! The writer's state and its core job: write a batch to PostgreSQL, acknowledge it in the
//! Redis journal after the commit, answer barriers and lookups in arrival order.
//!
//! Failure model: a batch is retried until it commits. While PostgreSQL is unreachable the
//! writer holds that one batch (bounded by `FLASHSALE_BATCH_ROWS`), the queue behind it fills,
//! and new orders get 503: memory stays flat. Callers waiting on a commit (webhooks, lookups)
//! are answered 503 at once instead of hanging; their rows stay in the batch and are written
//! when PostgreSQL returns. Rows PostgreSQL refuses (a constraint) are isolated, logged, and
//! left in the Redis journal; they never block the others.

use crate::config::FINAL_RECORD_TTL_SECS;
use crate::db::PgError;
use crate::domain::{OrderRecord, OrderState, ProductId};
use crate::redis::journal::{ack_commands, journal_member, restock_member};
use crate::redis::keys::Keys;
use crate::shared::Shared;
use crate::sync::{Arc, Ordering};
use crate::writer::every::Jobs;
use crate::writer::msg::{self, DeferredWebhook, WriteError, WriterMsg};
use crate::writer::pg::{OrderWrite, Pg, SideWrite};
use crate::writer::redis::WriterRedis;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Keys,
    pub(super) pg: Option<Pg>,
    pub(super) redis: WriterRedis,
    pub(super) inboxes: Vec<crossbeam_channel::Sender<DeferredWebhook>>,
    pub(super) next_inbox: usize,
    /// Deferred webhooks handed to a worker, and when.
    pub(super) offered: HashMap<String, Instant>,
    /// When PostgreSQL was last seen working; `None` while it is down.
    pub(super) pg_ok_at: Option<Instant>,
    /// Set while PostgreSQL is down, to log the outage once.
    pub(super) pg_down_since: Option<Instant>,
    /// The periodic jobs (see `replay` and `housekeeping`), each run when due.
    pub(super) every: Jobs,
    /// The newest attribute revision copied into Redis (`products.attrs_changed_at`).
    pub(super) synced_up_to: SystemTime,
    /// Unmatched webhooks may exist (always at start; cleared when a walk finds none, set
    /// when one is recorded): while set, each batch's references are looked up among them.
    pub(super) unmatched_possible: bool,
    /// Where the walk over unmatched webhooks stands (their id; 0 starts over).
    pub(super) unmatched_cursor: i64,
    /// Products whose journal may hold entries: every product this writer was sent a change
    /// of, and those the scans found. The stuck-entry replay reads only these journals.
    pub(super) journaled: HashSet<ProductId>,
    /// Where the background SCAN for other journals stands: the server (an index into
    /// `WriterRedis::servers`) and its cursor (`None`: start a new pass).
    pub(super) scan_cursor: Option<(usize, String)>,
    /// The start-up replay has not run yet (PostgreSQL was down).
    pub(super) replay_owed: bool,
    /// Rows given up at shutdown because PostgreSQL stayed down (they stay in the journal).
    pub(super) abandoned: usize,
}
/// A row of a batch besides order changes (a webhook for an unknown reference, a restock),
/// with whoever waits on it.
pub(super) struct Side {
    pub(super) write: SideWrite,
    pub(super) done: Option<msg::Done>,
}

/// One order change taken out of the batch, with whoever waits on it.
pub(super) struct Pending {
    pub(super) record: OrderRecord,
    pub(super) webhook: Option<msg::WebhookNote>,
    pub(super) done: Option<msg::Done>,
    /// A new reservation straight from a worker (not a replay): PostgreSQL cannot have it.
    pub(super) fresh: bool,
    /// The journal entry of the reservation's batch, removed with its last order.
    pub(super) journal: Option<std::sync::Arc<msg::JournalBatch>>,
}

impl Writer {
    pub(super) fn set_pg_up(&mut self, up: bool, error: Option<&str>) {
        let m = &self.shared.metrics.writer;
        if up {
            self.pg_ok_at = Some(Instant::now());
            if let Some(since) = self.pg_down_since.take() {
                tracing::info!(
                    after_ms = since.elapsed().as_millis() as u64,
                    "PostgreSQL reachable again"
                );
            }
        } else {
            self.pg_ok_at = None;
            if self.pg_down_since.is_none() {
                self.pg_down_since = Some(Instant::now());
                tracing::warn!(
                    error = error.unwrap_or("?"),
                    queue_capacity = self.shared.cfg.queue_capacity,
                    "PostgreSQL unreachable; orders queue up to the capacity, then get 503"
                );
            }
        }
        m.postgres_up.set(up as i64);
        self.shared.postgres_up.store(up, Ordering::Relaxed);
    }

    /// A connection, (re)connecting if needed.
    pub(super) async fn pg(&mut self) -> Result<&mut Pg, PgError> {
        if self.pg.as_ref().is_some_and(Pg::is_closed) {
            self.pg = None;
        }
        if self.pg.is_none() {
            match Pg::connect(&self.shared.cfg.database_url).await {
                Ok(pg) => self.pg = Some(pg),
                Err(e) => {
                    self.set_pg_up(false, Some(&e.to_string()));
                    return Err(e);
                }
            }
        }
        Ok(self.pg.as_mut().expect("connected just above"))
    }

    pub(super) async fn startup(&mut self) {
        if self.pg().await.is_ok() {
            self.set_pg_up(true, None);
            self.replay_all().await;
        }
    }

    /// Writes one batch, then answers its barriers and lookups in arrival order.
    pub(super) async fn process(&mut self, batch: &mut Vec<WriterMsg>) {
        crate::failpoint!("writer_batch");
        let mut orders: Vec<Pending> = Vec::new();
        let mut side: Vec<Side> = Vec::new();
        let mut control: Vec<WriterMsg> = Vec::new();
        for m in batch.drain(..) {
            match m {
                WriterMsg::Order {
                    record,
                    webhook,
                    done,
                    journal,
                } => {
                    self.journaled.insert(record.product_id);
                    let fresh =
                        record.state == OrderState::Pending && webhook.is_none() && done.is_none();
                    orders.push(Pending {
                        record,
                        webhook,
                        done,
                        fresh,
                        journal,
                    })
                }
                WriterMsg::EarlyWebhook {
                    reference,
                    payload,
                    done,
                } => side.push(Side {
                    write: SideWrite::EarlyWebhook { reference, payload },
                    done: Some(done),
                }),
                WriterMsg::Restock {
                    product,
                    op_id,
                    delta,
                    done,
                } => {
                    self.journaled.insert(product);
                    side.push(Side {
                        write: SideWrite::Restock {
                            product,
                            op_id,
                            delta,
                        },
                        done: Some(done),
                    })
                }
                other => control.push(other),
            }
        }
        if !orders.is_empty() || !side.is_empty() {
            self.write(&mut orders, &mut side).await;
            self.unmatched_possible |= side
                .iter()
                .any(|s| matches!(s.write, SideWrite::EarlyWebhook { .. }));
            if self.unmatched_possible && !orders.is_empty() {
                self.match_written(&orders).await;
            }
        }
        for m in control {
            self.answer(m).await;
        }
    }

    /// Commits `orders` and `side`, retrying while PostgreSQL is unreachable.
    /// Returns true when every row was committed.
    pub(super) async fn write(&mut self, orders: &mut [Pending], side: &mut [Side]) -> bool {
        let mut backoff = Duration::from_millis(50);
        // Fresh reservations only (not replays): the COPY fast path may be tried.
        let mut copy = orders.iter().all(|p| p.fresh);
        let mut retries_since_shutdown = None::<Instant>;
        loop {
            let started = Instant::now();
            let result = match self.pg().await {
                Ok(pg) => {
                    let side_writes: Vec<&SideWrite> = side.iter().map(|s| &s.write).collect();
                    pg.write(&order_writes(orders), &side_writes, copy).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.set_pg_up(true, None);
                    let m = &self.shared.metrics.writer;
                    m.commit_seconds.observe(started.elapsed().as_secs_f64());
                    m.batch_rows.observe((orders.len() + side.len()) as f64);
                    m.rows.inc_by((orders.len() + side.len()) as u64);
                    let late = orders
                        .iter()
                        .filter(|p| p.webhook.as_ref().is_some_and(|w| w.refund_required))
                        .count();
                    m.late_payments.inc_by(late as u64);
                    self.acknowledge(orders, side).await;
                    for p in orders.iter_mut() {
                        if let Some(d) = p.done.take() {
                            let _ = d.send(Ok(()));
                        }
                    }
                    for e in side.iter_mut() {
                        if let Some(d) = e.done.take() {
                            let _ = d.send(Ok(()));
                        }
                    }
                    return true;
                }
                Err(PgError::Duplicate) => {
                    copy = false;
                }
                Err(PgError::Rejected(why) | PgError::Data(why)) => {
                    if orders.len() + side.len() > 1 {
                        // Find the offending rows: write each on its own.
                        let mut all = true;
                        for i in 0..orders.len() {
                            all &= Box::pin(self.write(&mut orders[i..=i], &mut [])).await;
                        }
                        for i in 0..side.len() {
                            all &= Box::pin(self.write(&mut [], &mut side[i..=i])).await;
                        }
                        return all;
                    }
                    // The order's state matters more than the audit row of its webhook: if the
                    // payload is what PostgreSQL refuses, write the state without it.
                    if let Some(p) = orders.first_mut().filter(|p| p.webhook.is_some()) {
                        tracing::error!(reference = %p.record.reference, error = %why,
                            "PostgreSQL refused a webhook row; writing the order's state without it");
                        p.webhook = None;
                        continue;
                    }
                    let what = orders
                        .first()
                        .map(|p| p.record.reference.clone())
                        .or_else(|| side.first().map(|e| e.write.to_string()))
                        .unwrap_or_default();
                    tracing::error!(reference = %what, error = %why,
                        "PostgreSQL refused an order change; it stays in the Redis journal (see `flashsale reconcile`)");
                    fail_all(orders, side, WriteError::Rejected(why));
                    return false;
                }
                Err(PgError::Transient(why)) => {
                    self.pg = None;
                    self.set_pg_up(false, Some(&why));
                    self.shared.metrics.writer.retries.inc();
                    // Nobody should wait on an outage: callers get 503 now, rows stay here.
                    fail_all(orders, side, WriteError::Unavailable);
                    if self.shared.shutting_down() {
                        let since = *retries_since_shutdown.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.shared.cfg.shutdown_grace {
                            self.abandoned += orders.len() + side.len();
                            tracing::error!(
                                rows = orders.len() + side.len(),
                                "shutting down while PostgreSQL is unreachable: these changes stay in the Redis journal for the next start"
                            );
                            return false;
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Drops the journal entries of what was committed, product by product: a batch's
    /// reservation entry with its last order, a final state's own entry with it. A newer state
    /// of an order (paid while its reservation was being written) has an entry of its own,
    /// which stays until that state is committed too.
    async fn acknowledge(&mut self, orders: &[Pending], side: &[Side]) {
        let mut by_product: HashMap<ProductId, (Vec<String>, Vec<&str>)> = HashMap::new();
        for s in side {
            if let SideWrite::Restock {
                product,
                op_id,
                delta,
            } = &s.write
            {
                by_product
                    .entry(*product)
                    .or_default()
                    .0
                    .push(restock_member(op_id, *delta));
            }
        }
        for p in orders {
            let r = &p.record;
            if let Some(j) = &p.journal
                && j.committed_one()
            {
                by_product
                    .entry(j.product)
                    .or_default()
                    .0
                    .push(j.member.clone());
            }
            if r.state.is_final() {
                let e = by_product.entry(r.product_id).or_default();
                e.0.push(journal_member(&r.reference, r.state));
                e.1.push(&r.reference);
            }
        }
        for (pid, (members, finals)) in by_product {
            let cmds = ack_commands(&self.keys, pid, &members, &finals, FINAL_RECORD_TTL_SECS);
            let journal = self.keys.product_keys(pid).journal;
            if let Err(e) = self.redis.pipeline(&journal, &cmds).await {
                // Harmless: the entries stay journaled and a later replay acknowledges them.
                tracing::debug!(error = %e, "journal acknowledgement failed");
            }
        }
    }

    async fn answer(&mut self, m: WriterMsg) {
        match m {
            WriterMsg::Barrier(done) => {
                let _ = done.send(Ok(()));
            }
            WriterMsg::Admin { op, reply } => {
                let r = match self.pg().await {
                    Ok(pg) => pg.admin(op).await,
                    Err(e) => Err(e),
                };
                let r = match r {
                    Ok(v) => {
                        self.set_pg_up(true, None);
                        Ok(v)
                    }
                    Err(PgError::Transient(e)) => {
                        self.pg = None;
                        self.set_pg_up(false, Some(&e));
                        Err(WriteError::Unavailable)
                    }
                    Err(PgError::Data(e)) => Err(WriteError::BadInput(e)),
                    Err(e) => Err(WriteError::Rejected(e.to_string())),
                };
                let _ = reply.send(r);
            }
            WriterMsg::Order { .. }
            | WriterMsg::EarlyWebhook { .. }
            | WriterMsg::Restock { .. } => {
                unreachable!("rows are written, not answered")
            }
        }
    }
}

fn order_writes(orders: &[Pending]) -> Vec<OrderWrite<'_>> {
    orders
        .iter()
        .map(|p| OrderWrite {
            record: &p.record,
            webhook: p
                .webhook
                .as_ref()
                .map(|w| (w.payload.as_str(), w.refund_required)),
        })
        .collect()
}

fn fail_all(orders: &mut [Pending], side: &mut [Side], e: WriteError) {
    for p in orders.iter_mut() {
        if let Some(d) = p.done.take() {
            let _ = d.send(Err(e.clone()));
        }
    }
    for x in side.iter_mut() {
        if let Some(d) = x.done.take() {
            let _ = d.send(Err(e.clone()));
        }
    }
}
