//! The `pg-writer` thread: the one consumer of the handoff. It writes order changes to
//! PostgreSQL in batches, acknowledges them in the Redis journal after the commit, answers
//! barriers and lookups, and replays the journal at start-up and whenever entries get stuck.
//!
//! Shape: a blocking loop over `batch::collect` (crossbeam's blocking receive outside the
//! runtime) that enters a tokio current-thread runtime only to do the async work of each batch
//! (`block_on`). Nothing else runs on that runtime besides the PostgreSQL connection task, so
//! blocking between batches costs nothing.
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
use crate::handoff::HandoffRx;
use crate::metrics::PanicPlace;
use crate::panics;
use crate::redis::cmd::{command, oldest_members};
use crate::redis::journal::{
    JournalEntry, ack_commands, journal_member, parse_journal_member, restock_member,
};
use crate::redis::keys::Keys;
use crate::redis::record::{decode_record, record_cmd};
use crate::redis::reply::as_string;
use crate::redis::scan::{decode_scan, scan_cmd};
use crate::redis::scripts::admin::{SyncReply, decode_sync, sync_call};
use crate::redis::scripts::load::invalidate_call;
use crate::shared::Shared;
use crate::sync::{Arc, Ordering};
use crate::time::to_system_time;
use crate::writer::batch::{BatchPolicy, Collected, collect};
use crate::writer::msg::{self, DeferredWebhook, WriteError, WriterMsg};
use crate::writer::pg::{OrderWrite, Pg, SideWrite, Unmatched};
use crate::writer::redis::WriterRedis;
use redis_async::resp::RespValue;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// How old an unacknowledged journal entry must be before the periodic replay takes it:
/// far longer than the writer's normal lag, so live entries are not written twice.
const STUCK_AFTER_MS: i64 = 30_000;
const REPLAY_EVERY: Duration = Duration::from_secs(10);
/// The background SCAN for journals this writer has not seen (another instance's, left by a
/// crash) takes one step of `scan_cmd`'s COUNT keys this often. A whole SCAN at once blocked
/// the writer for seconds once Redis held millions of order records, and the queue filled.
const SCAN_STEP_EVERY: Duration = Duration::from_millis(100);
const DEFERRED_EVERY: Duration = Duration::from_secs(1);
/// Unmatched webhooks looked at per step of the walk (one step per `DEFERRED_EVERY`).
const UNMATCHED_WALK_STEP: i64 = 200;
const EXPIRE_UNMATCHED_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, and statements per run: a backlog is deleted over several
/// runs rather than in one long transaction.
const EXPIRE_UNMATCHED_STEP: i64 = 1_000;
const EXPIRE_UNMATCHED_ROUNDS: usize = 10;
const PING_EVERY: Duration = Duration::from_secs(1);
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How far back each attribute sync looks again, for changes committed after a later one.
const SYNC_OVERLAP: Duration = Duration::from_secs(5);
/// A deferred webhook handed to a worker is offered again after this long if still pending.
const DEFERRED_RETRY: Duration = Duration::from_secs(10);

/// Starts the writer thread. It returns `true` when everything it received was committed.
pub fn spawn(
    shared: Arc<Shared>,
    rx: HandoffRx<WriterMsg>,
    inboxes: Vec<crossbeam_channel::Sender<DeferredWebhook>>,
) -> std::io::Result<std::thread::JoinHandle<bool>> {
    std::thread::Builder::new()
        .name("pg-writer".into())
        .spawn(move || {
            // A writer that died takes the process down (see `panics`): 202s would go on
            // while nothing reaches PostgreSQL.
            let guard = shared.clone();
            panics::guard(&guard, PanicPlace::Writer, || run(shared, rx, inboxes)).unwrap_or(false)
        })
}

/// The writer thread's body; `true` when everything it received was committed.
fn run(
    shared: Arc<Shared>,
    rx: HandoffRx<WriterMsg>,
    inboxes: Vec<crossbeam_channel::Sender<DeferredWebhook>>,
) -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the writer's runtime");
            return false;
        }
    };
    let policy = BatchPolicy {
        max_rows: shared.cfg.batch_rows,
        linger: shared.cfg.batch_linger,
        idle: Duration::from_millis(250),
    };
    let mut w = Writer::new(shared, inboxes);
    rt.block_on(w.startup());
    let mut batch = Vec::with_capacity(policy.max_rows);
    loop {
        match collect(&rx, &policy, &mut batch, Instant::now) {
            Collected::Batch => rt.block_on(w.process(&mut batch)),
            Collected::Idle => {}
            Collected::Closed => break,
        }
        batch.clear();
        rt.block_on(w.periodic());
    }
    tracing::info!(
        unwritten = w.abandoned,
        "writer drained the queue and stops"
    );
    w.abandoned == 0
}

pub struct Writer {
    shared: Arc<Shared>,
    keys: Keys,
    pg: Option<Pg>,
    redis: WriterRedis,
    inboxes: Vec<crossbeam_channel::Sender<DeferredWebhook>>,
    next_inbox: usize,
    /// Deferred webhooks handed to a worker, and when.
    offered: HashMap<String, Instant>,
    /// When PostgreSQL was last seen working; `None` while it is down.
    pg_ok_at: Option<Instant>,
    /// Set while PostgreSQL is down, to log the outage once.
    pg_down_since: Option<Instant>,
    last_replay: Instant,
    last_deferred: Instant,
    last_expiry: Instant,
    last_sync: Instant,
    /// The newest attribute revision copied into Redis (`products.attrs_changed_at`).
    synced_up_to: SystemTime,
    /// Unmatched webhooks may exist (always at start; cleared when a walk finds none, set
    /// when one is recorded): while set, each batch's references are looked up among them.
    unmatched_possible: bool,
    /// Where the walk over unmatched webhooks stands (their id; 0 starts over).
    unmatched_cursor: i64,
    /// Products whose journal may hold entries: every product this writer was sent a change
    /// of, and those the scans found. The stuck-entry replay reads only these journals.
    journaled: HashSet<ProductId>,
    /// Where the background SCAN for other journals stands: the server (an index into
    /// `WriterRedis::servers`) and its cursor (`None`: start a new pass).
    scan_cursor: Option<(usize, String)>,
    last_scan_step: Instant,
    /// The start-up replay has not run yet (PostgreSQL was down).
    replay_owed: bool,
    /// Rows given up at shutdown because PostgreSQL stayed down (they stay in the journal).
    abandoned: usize,
}

/// A row of a batch besides order changes (a webhook for an unknown reference, a restock),
/// with whoever waits on it.
struct Side {
    write: SideWrite,
    done: Option<msg::Done>,
}

/// One order change taken out of the batch, with whoever waits on it.
struct Pending {
    record: OrderRecord,
    webhook: Option<msg::WebhookNote>,
    done: Option<msg::Done>,
    /// A new reservation straight from a worker (not a replay): PostgreSQL cannot have it.
    fresh: bool,
    /// The journal entry of the reservation's batch, removed with its last order.
    journal: Option<std::sync::Arc<msg::JournalBatch>>,
}

impl Writer {
    fn new(
        shared: Arc<Shared>,
        inboxes: Vec<crossbeam_channel::Sender<DeferredWebhook>>,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            keys: Keys::new(&shared.cfg.redis_prefix),
            redis: WriterRedis::new(&shared.cfg),
            shared,
            pg: None,
            inboxes,
            next_inbox: 0,
            offered: HashMap::new(),
            pg_ok_at: None,
            pg_down_since: None,
            last_replay: now,
            last_deferred: now,
            // The first periodic round deletes what expired while the server was down.
            last_expiry: now.checked_sub(EXPIRE_UNMATCHED_EVERY).unwrap_or(now),
            last_sync: now,
            // The first round copies every product's attributes: they may have changed with
            // SQL while no server ran.
            synced_up_to: SystemTime::UNIX_EPOCH + SYNC_OVERLAP,
            unmatched_possible: true,
            unmatched_cursor: 0,
            journaled: HashSet::new(),
            scan_cursor: None,
            last_scan_step: now,
            replay_owed: true,
            abandoned: 0,
        }
    }

    fn set_pg_up(&mut self, up: bool, error: Option<&str>) {
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
    async fn pg(&mut self) -> Result<&mut Pg, PgError> {
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

    async fn startup(&mut self) {
        if self.pg().await.is_ok() {
            self.set_pg_up(true, None);
            self.replay_all().await;
        }
    }

    /// Writes one batch, then answers its barriers and lookups in arrival order.
    async fn process(&mut self, batch: &mut Vec<WriterMsg>) {
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
    async fn write(&mut self, orders: &mut [Pending], side: &mut [Side]) -> bool {
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

    /// Health check, stuck-journal replay and deferred webhooks, each when due.
    async fn periodic(&mut self) {
        let now = Instant::now();
        if self
            .pg_ok_at
            .is_none_or(|t| now.duration_since(t) >= PING_EVERY)
        {
            let r = match self.pg().await {
                Ok(pg) => pg.ping().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => self.set_pg_up(true, None),
                Err(e) => {
                    self.pg = None;
                    self.set_pg_up(false, Some(&e.to_string()));
                }
            }
        }
        if self.pg_ok_at.is_none() {
            return;
        }
        if self.replay_owed {
            self.replay_all().await;
        } else {
            if now.duration_since(self.last_scan_step) >= SCAN_STEP_EVERY {
                self.last_scan_step = now;
                // An error only restarts the pass; the next step retries.
                let _ = self.scan_step().await;
            }
            if now.duration_since(self.last_replay) >= REPLAY_EVERY
                && self.shared.handoff_depth() < self.shared.cfg.queue_capacity / 4
            {
                self.last_replay = now;
                self.replay(Some(crate::time::now_ms() - STUCK_AFTER_MS))
                    .await;
            }
        }
        if now.duration_since(self.last_deferred) >= DEFERRED_EVERY {
            self.last_deferred = now;
            self.walk_unmatched().await;
        }
        if now.duration_since(self.last_sync) >= SYNC_EVERY {
            self.last_sync = now;
            self.sync_attributes().await;
        }
        if now.duration_since(self.last_expiry) >= EXPIRE_UNMATCHED_EVERY {
            self.last_expiry = now;
            self.expire_unmatched().await;
        }
    }

    /// The start-up replay: every journal in Redis, whoever wrote it (a crash leaves entries
    /// that only this replay finds), found by a whole SCAN pass: the background scan's steps
    /// run back to back.
    async fn replay_all(&mut self) {
        // Journals recorded for another database are never written into this one: the
        // workers' connection check deletes them first (see `redis::check`).
        let Ok(servers) = self.redis.servers().await else {
            return;
        };
        for server in &servers {
            let marker = match self.redis.database_marker(server, &self.keys).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(_) => return,
            };
            match self
                .redis
                .request_on(server, &command(&["GET", &marker]))
                .await
            {
                Ok(RespValue::BulkString(id)) if id != self.shared.database_id.as_bytes() => {
                    return;
                }
                Err(_) => return,
                _ => {}
            }
        }
        self.scan_cursor = None;
        loop {
            match self.scan_step().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "journal replay waits for Redis");
                    return;
                }
            }
        }
        self.replay_owed = false;
        self.replay(None).await;
    }

    /// One step of a SCAN for journals, server after server (each master of a cluster):
    /// those it finds join `journaled`. `Ok(true)` when the step ended a pass. After an error
    /// the next step starts a new pass (a restarted Redis has other cursors).
    async fn scan_step(&mut self) -> Result<bool, String> {
        let (server, cursor) = self
            .scan_cursor
            .take()
            .unwrap_or_else(|| (0, "0".to_string()));
        let servers = self.redis.servers().await.map_err(|e| e.to_string())?;
        let Some(node) = servers.get(server) else {
            // The cluster has fewer masters than when the pass began.
            return Ok(true);
        };
        let pattern = self.keys.scan_pattern("journal");
        let v = self
            .redis
            .request_on(node, &scan_cmd(&cursor, &pattern))
            .await
            .map_err(|e| e.to_string())?;
        let (next, keys) = decode_scan(v).map_err(|e| e.to_string())?;
        self.journaled.extend(
            keys.iter()
                .filter_map(|k| self.keys.product_if(k, "journal")),
        );
        self.scan_cursor = match next {
            Some(c) => Some((server, c)),
            None if server + 1 < servers.len() => Some((server + 1, "0".to_string())),
            None => None,
        };
        Ok(self.scan_cursor.is_none())
    }

    /// Writes the entries older than `before` (all of them when `None`) of the journals in
    /// `journaled` to PostgreSQL.
    async fn replay(&mut self, before: Option<i64>) {
        let pids: Vec<ProductId> = self.journaled.iter().copied().collect();
        let max = before.map_or("+inf".to_string(), |b| b.to_string());
        let mut replayed = 0usize;
        for pid in pids {
            let key = self.keys.product_keys(pid).journal;
            let Ok(RespValue::Array(refs)) = self
                .redis
                .request(
                    &key,
                    &oldest_members(&key, &max, self.shared.cfg.batch_rows),
                )
                .await
            else {
                continue;
            };
            let mut orders = Vec::new();
            let mut side = Vec::new();
            let mut members = Vec::new();
            let mut seen = std::collections::HashSet::new();
            'members: for member in refs {
                let Ok(member) = as_string(member) else {
                    continue;
                };
                let references = match parse_journal_member(&member) {
                    Some(JournalEntry::Orders { references, .. }) => references,
                    Some(JournalEntry::Restock { op_id, delta }) => {
                        // Applied once per op id, however often it is replayed.
                        side.push(Side {
                            write: SideWrite::Restock {
                                product: pid,
                                op_id: op_id.to_string(),
                                delta,
                            },
                            done: None,
                        });
                        continue;
                    }
                    None => {
                        // Not ours: drop it rather than trip over it at every replay.
                        let _ = self
                            .redis
                            .request(&key, &command(&["ZREM", &key, &member]))
                            .await;
                        continue;
                    }
                };
                for reference in references {
                    if !seen.insert(reference.to_string()) {
                        continue;
                    }
                    let order_key = self.keys.order(pid, reference);
                    let Ok(v) = self
                        .redis
                        .request(&order_key, &record_cmd(&order_key))
                        .await
                    else {
                        continue 'members;
                    };
                    match decode_record(v, pid, reference) {
                        Ok(Some(record)) => orders.push(Pending {
                            record,
                            webhook: None,
                            done: None,
                            fresh: false,
                            journal: None,
                        }),
                        // No record (it expired long after its commit): nothing to write.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, reference, "journal entry with an unreadable record");
                            continue 'members;
                        }
                    }
                }
                members.push(member);
            }
            replayed += orders.len() + side.len();
            // The entries go once what they name is committed (or when nothing was left to
            // write for them).
            if (orders.is_empty() && side.is_empty()) || self.write(&mut orders, &mut side).await {
                let cmds = ack_commands(&self.keys, pid, &members, &[], FINAL_RECORD_TTL_SECS);
                let _ = self.redis.pipeline(&key, &cmds).await;
            }
        }
        if replayed > 0 {
            self.shared
                .metrics
                .writer
                .journal_replayed
                .inc_by(replayed as u64);
            tracing::info!(
                orders = replayed,
                stuck_only = before.is_some(),
                "replayed the Redis journal into PostgreSQL"
            );
        }
    }

    /// Copies into Redis the sold attributes (price, name, limits, window) of products that
    /// changed in PostgreSQL, by the admin API or by SQL: every worker and instance reads them
    /// from Redis, so a change reaches all of them within a second. Changes committed out of
    /// timestamp order are caught by looking [`SYNC_OVERLAP`] back each time.
    async fn sync_attributes(&mut self) {
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
    async fn match_written(&mut self, orders: &[Pending]) {
        let Some(pg) = self.pg.as_ref() else { return };
        let refs: Vec<&str> = orders.iter().map(|p| p.record.reference.as_str()).collect();
        if let Ok(found) = pg.unmatched_for(&refs).await {
            self.offer(found);
        }
    }

    /// One step of the walk over the unmatched webhooks: those whose order appeared some other
    /// way (inserted by another tool) are offered.
    async fn walk_unmatched(&mut self) {
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
    async fn expire_unmatched(&mut self) {
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
