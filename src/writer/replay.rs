//! The writer's journal replay: what reached Redis's journal but not PostgreSQL (a crash, a
//! batch PostgreSQL refused for a while, another instance's leftovers) is written again from
//! the order records. At start-up every journal is found by a whole SCAN pass; afterwards a
//! background SCAN walks one step at a time and the stuck entries of known journals are
//! replayed every `REPLAY_EVERY`.

use crate::config::FINAL_RECORD_TTL_SECS;
use crate::domain::ProductId;
use crate::redis::cmd::{command, oldest_members};
use crate::redis::journal::{JournalEntry, ack_commands, parse_journal_member};
use crate::redis::record::{decode_record, record_cmd};
use crate::redis::reply::as_string;
use crate::redis::scan::{decode_scan, scan_cmd};
use crate::writer::commit::{Pending, Side, Writer};
use crate::writer::pg::SideWrite;
use redis_async::resp::RespValue;
use std::time::Duration;

/// How old an unacknowledged journal entry must be before the periodic replay takes it:
/// far longer than the writer's normal lag, so live entries are not written twice.
pub const STUCK_AFTER_MS: i64 = 30_000;
pub const REPLAY_EVERY: Duration = Duration::from_secs(10);
/// The background SCAN for journals this writer has not seen (another instance's, left by a
/// crash) takes one step of `scan_cmd`'s COUNT keys this often. A whole SCAN at once blocked
/// the writer for seconds once Redis held millions of order records, and the queue filled.
pub const SCAN_STEP_EVERY: Duration = Duration::from_millis(100);

impl Writer {
    /// The start-up replay: every journal in Redis, whoever wrote it (a crash leaves entries
    /// that only this replay finds), found by a whole SCAN pass: the background scan's steps
    /// run back to back.
    pub(super) async fn replay_all(&mut self) {
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
    pub(super) async fn scan_step(&mut self) -> Result<bool, String> {
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
    pub(super) async fn replay(&mut self, before: Option<i64>) {
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
}
