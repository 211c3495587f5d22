//! The `pg-writer` thread and its loop: take a batch from the handoff, have it written and
//! acknowledged (`commit`), then run the periodic jobs that are due (a PostgreSQL ping here;
//! the journal replay in `replay`; attribute sync and unmatched webhooks in `housekeeping`).
//!
//! Shape: a blocking loop over `batch::collect` (crossbeam's blocking receive outside the
//! runtime) that enters a tokio current-thread runtime only to do the async work of each batch
//! (`block_on`). Nothing else runs on that runtime besides the PostgreSQL connection task, so
//! blocking between batches costs nothing.

use crate::handoff::HandoffRx;
use crate::metrics::PanicPlace;
use crate::panics;
use crate::redis::keys::Keys;
use crate::shared::Shared;
use crate::sync::Arc;
use crate::writer::batch::{BatchPolicy, Collected, collect};
use crate::writer::commit::Writer;
use crate::writer::every::{Every, Jobs};
use crate::writer::housekeeping::{
    DEFERRED_EVERY, EXPIRE_UNMATCHED_EVERY, SYNC_EVERY, SYNC_OVERLAP,
};
use crate::writer::msg::{DeferredWebhook, WriterMsg};
use crate::writer::redis::WriterRedis;
use crate::writer::replay::{REPLAY_EVERY, SCAN_STEP_EVERY, STUCK_AFTER_MS};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// PostgreSQL is pinged this often while idle, and at once after a failure.
const PING_EVERY: Duration = Duration::from_secs(1);

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
            every: Jobs {
                scan_step: Every::new(SCAN_STEP_EVERY, now),
                replay: Every::new(REPLAY_EVERY, now),
                unmatched_walk: Every::new(DEFERRED_EVERY, now),
                sync: Every::new(SYNC_EVERY, now),
                // The first periodic round deletes what expired while the server was down.
                expire_unmatched: Every::due_now(EXPIRE_UNMATCHED_EVERY, now),
            },
            // The first round copies every product's attributes: they may have changed with
            // SQL while no server ran.
            synced_up_to: SystemTime::UNIX_EPOCH + SYNC_OVERLAP,
            unmatched_possible: true,
            unmatched_cursor: 0,
            journaled: HashSet::new(),
            scan_cursor: None,
            replay_owed: true,
            abandoned: 0,
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
            if self.every.scan_step.due(now) {
                // An error only restarts the pass; the next step retries.
                let _ = self.scan_step().await;
            }
            // Not while the queue is deep: the replay would compete with live orders.
            if self.shared.handoff_depth() < self.shared.cfg.queue_capacity / 4
                && self.every.replay.due(now)
            {
                self.replay(Some(crate::time::now_ms() - STUCK_AFTER_MS))
                    .await;
            }
        }
        if self.every.unmatched_walk.due(now) {
            self.walk_unmatched().await;
        }
        if self.every.sync.due(now) {
            self.sync_attributes().await;
        }
        if self.every.expire_unmatched.due(now) {
            self.expire_unmatched().await;
        }
    }
}
