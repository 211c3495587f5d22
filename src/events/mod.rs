//! The event dispatcher: a thread of its own (never the writer, never a worker) that delivers
//! the outbox's events to the shop's endpoints. It claims due deliveries from PostgreSQL
//! (`FOR UPDATE SKIP LOCKED`, so several instances share the work, each claim leased past the
//! timeout), sends them over keep-alive connections with a timeout, many in flight, and
//! records every attempt. An order's event n+1 is not claimed for an endpoint while its event
//! n is pending there. A slow or dead receiver holds only its own deliveries: reservations,
//! payments and the writer never wait on it.
//!
//! Outcomes: any 2xx is delivered; 410 fails the delivery and disables the endpoint; anything
//! else (a timeout and a connection error too) is retried after the next delay of
//! `FLASHSALE_EVENT_RETRY_SECS`, and fails after the last.

pub mod sign;

use crate::metrics::PanicPlace;
use crate::panics;
use crate::shared::Shared;
use crate::sync::{Arc, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

/// Deliveries in flight at most (all endpoints together).
const IN_FLIGHT: usize = 256;
/// How often the dispatcher looks for due deliveries when it found none.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the backlog and the new events are counted for `/metrics`.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// How often events past their retention are deleted (in steps of `RETENTION_STEP`).
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const RETENTION_STEP: i64 = 1_000;

/// Events past retention: older than the retention and without a delivery pending or
/// attempted within it (a failed delivery's `next_attempt_at` is its last attempt).
const EXPIRE_EVENTS: &str = "
DELETE FROM order_events WHERE id IN (
    SELECT e.id FROM order_events e
    WHERE e.created_at < now() - make_interval(days => $1)
      AND NOT EXISTS (
          SELECT 1 FROM event_deliveries d
          WHERE d.event_row = e.id
            AND (d.status = 'pending'
                 OR greatest(d.delivered_at, d.next_attempt_at) > now() - make_interval(days => $1)))
    ORDER BY e.id LIMIT $2)";

/// New events since a row id, by type, and the highest row id seen.
const NEW_EVENTS: &str = "
SELECT type, count(*), max(id) FROM order_events WHERE id > $1 GROUP BY type";

const BACKLOG: &str = "SELECT count(*) FROM event_deliveries WHERE status = 'pending'";

/// Claims due deliveries: pending, due, of an enabled endpoint, and not behind an earlier
/// pending event of the same order for the same endpoint. Each is leased (its next attempt
/// moved past the timeout) and counted as an attempt.
const CLAIM: &str = "
WITH due AS (
    SELECT d.endpoint_id, d.event_row FROM event_deliveries d
    JOIN event_endpoints e ON e.id = d.endpoint_id AND e.enabled
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM event_deliveries p
          WHERE p.endpoint_id = d.endpoint_id AND p.order_reference = d.order_reference
            AND p.sequence < d.sequence AND p.status = 'pending')
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE event_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM due, order_events ev, event_endpoints e
WHERE d.endpoint_id = due.endpoint_id AND d.event_row = due.event_row
  AND ev.id = d.event_row AND e.id = d.endpoint_id
RETURNING d.endpoint_id, d.event_row, d.attempts, e.url, e.secret,
          CASE WHEN e.previous_until > now() THEN e.previous_secret END,
          ev.event_id, ev.type, ev.created_at, ev.data::text";

const DELIVERED: &str = "
UPDATE event_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = $3,
       last_error = NULL
WHERE endpoint_id = $1 AND event_row = $2";

/// A failed attempt: retried at `$5` seconds from now, or failed for good when `$5` is null.
const ATTEMPT_FAILED: &str = "
UPDATE event_deliveries
SET last_status_code = $3, last_error = $4,
    status = CASE WHEN $5::float8 IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at
                           ELSE now() + make_interval(secs => $5::float8) END
WHERE endpoint_id = $1 AND event_row = $2";

const DISABLE: &str = "UPDATE event_endpoints SET enabled = false WHERE id = $1";

/// One claimed delivery.
struct Claimed {
    endpoint_id: i64,
    event_row: i64,
    attempts: i32,
    url: String,
    secrets: Vec<String>,
    event_id: String,
    created_at: std::time::SystemTime,
    body: Vec<u8>,
}

/// How one attempt ended.
enum Sent {
    Delivered(u16),
    Gone,
    Failed(Option<u16>, String),
}

/// Starts the dispatcher thread; it stops with the process.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("event-dispatcher".into())
        .spawn(move || {
            let guard = shared.clone();
            panics::guard(&guard, PanicPlace::Dispatcher, || run(shared));
        })
}

fn run(shared: Arc<Shared>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the event dispatcher's runtime");
            return;
        }
    };
    rt.block_on(dispatch(shared));
}

async fn dispatch(shared: Arc<Shared>) {
    let http = match reqwest::Client::builder()
        .timeout(shared.cfg.event_timeout)
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the event dispatcher's HTTP client");
            return;
        }
    };
    let mut pg: Option<Client> = None;
    let mut sending: JoinSet<(Claimed, Sent)> = JoinSet::new();
    let metrics = &shared.metrics.events;
    // Events are counted from the first look on: those before this process are not its.
    let mut counted_up_to: Option<i64> = None;
    let mut last_count = tokio::time::Instant::now();
    // The first retention run comes at once: what expired while no server ran goes first.
    let mut last_retention = tokio::time::Instant::now()
        .checked_sub(RETENTION_EVERY)
        .unwrap_or_else(tokio::time::Instant::now);
    while !shared.shutting_down.load(Ordering::Relaxed) {
        if let Some(client) = pg.as_ref() {
            if counted_up_to.is_none() || last_count.elapsed() >= COUNT_EVERY {
                last_count = tokio::time::Instant::now();
                count(client, metrics, &mut counted_up_to).await;
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = tokio::time::Instant::now();
                let days = i32::try_from(shared.cfg.event_retention_days).unwrap_or(i32::MAX);
                match client
                    .execute(EXPIRE_EVENTS, &[&days, &RETENTION_STEP])
                    .await
                {
                    Ok(n) if n > 0 => {
                        tracing::info!(deleted = n, days, "deleted events past their retention")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete events past their retention")
                    }
                }
            }
        }
        // Results first: they free places and let an order's next event be claimed.
        while let Some(done) = sending.try_join_next() {
            if let (Ok((c, sent)), Some(client)) = (done, pg.as_ref())
                && let Err(e) = record(client, &shared, &c, sent).await
            {
                tracing::warn!(error = %e, "cannot record an event delivery; it will be sent again");
                pg = None;
            }
        }
        if pg.as_ref().is_none_or(Client::is_closed) {
            pg = connect(&shared.cfg.database_url).await;
            if pg.is_none() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let Some(client) = pg.as_ref() else { continue };
        let room = IN_FLIGHT.saturating_sub(sending.len());
        let claimed = if room > 0 {
            claim(client, room, shared.cfg.event_timeout).await
        } else {
            Ok(Vec::new())
        };
        match claimed {
            Ok(batch) if !batch.is_empty() => {
                for c in batch {
                    let http = http.clone();
                    sending.spawn(async move {
                        let sent = send(&http, &c).await;
                        (c, sent)
                    });
                }
            }
            Ok(_) => {
                // Nothing due: wait for a send to end or for the next look.
                if sending.is_empty() {
                    tokio::time::sleep(IDLE_POLL).await;
                } else if let Ok(Some(done)) =
                    tokio::time::timeout(IDLE_POLL, sending.join_next()).await
                    && let (Ok((c, sent)), Some(client)) = (done, pg.as_ref())
                    && let Err(e) = record(client, &shared, &c, sent).await
                {
                    tracing::warn!(error = %e, "cannot record an event delivery; it will be sent again");
                    pg = None;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim event deliveries");
                pg = None;
            }
        }
    }
}

/// Counts the backlog and the events recorded since the last count.
async fn count(pg: &Client, m: &crate::metrics::EventMetrics, up_to: &mut Option<i64>) {
    if let Ok(row) = pg.query_one(BACKLOG, &[]).await {
        m.backlog.set(row.get(0));
    }
    let Some(after) = *up_to else {
        if let Ok(row) = pg
            .query_one("SELECT COALESCE(max(id), 0) FROM order_events", &[])
            .await
        {
            *up_to = Some(row.get(0));
        }
        return;
    };
    // A row id committed later under a smaller number is missed: a count, not a ledger.
    if let Ok(rows) = pg.query(NEW_EVENTS, &[&after]).await {
        for r in rows {
            let n: i64 = r.get(1);
            let max: i64 = r.get(2);
            m.created
                .get_or_create(&vec![("type", r.get::<_, String>(0))])
                .inc_by(u64::try_from(n).unwrap_or(0));
            *up_to = Some(up_to.map_or(max, |u| u.max(max)));
        }
    }
}

async fn connect(url: &str) -> Option<Client> {
    match tokio_postgres::connect(url, NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(client)
        }
        Err(e) => {
            tracing::debug!(error = %e, "the event dispatcher waits for PostgreSQL");
            None
        }
    }
}

async fn claim(
    pg: &Client,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, tokio_postgres::Error> {
    // The lease outlasts the timeout, so a send still running is never claimed again.
    let lease = lease.as_secs_f64() + 5.0;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = pg.query(CLAIM, &[&limit, &lease]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let secret: String = r.get(4);
            let previous: Option<String> = r.get(5);
            let event_id: String = r.get(6);
            let event_type: String = r.get(7);
            let created_at: std::time::SystemTime = r.get(8);
            let data: String = r.get(9);
            Claimed {
                endpoint_id: r.get(0),
                event_row: r.get(1),
                attempts: r.get(2),
                url: r.get(3),
                secrets: std::iter::once(secret).chain(previous).collect(),
                body: event_body(&event_id, &event_type, created_at, &data).into_bytes(),
                event_id,
                created_at,
            }
        })
        .collect())
}

/// The event as the feed shows it: `{"id", "type", "created_at", "data"}`.
fn event_body(id: &str, event_type: &str, created_at: std::time::SystemTime, data: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"id":{},"type":{},"created_at":{},"data":{}}}"#,
        quote(id),
        quote(event_type),
        quote(&crate::time::rfc3339_ms(crate::time::from_system_time(
            created_at
        ))),
        data
    )
}

async fn send(http: &reqwest::Client, c: &Claimed) -> Sent {
    let timestamp = crate::time::now_ms().div_euclid(1000);
    let secrets: Vec<&str> = c.secrets.iter().map(String::as_str).collect();
    let signature = sign::signature(&secrets, &c.event_id, timestamp, &c.body);
    let r = http
        .post(&c.url)
        .header("content-type", "application/json")
        .header("webhook-id", &c.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(c.body.clone())
        .send()
        .await;
    match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The body is not read beyond what arrived: a receiver's answer says nothing more.
            if resp.status().is_success() {
                Sent::Delivered(status)
            } else if status == 410 {
                Sent::Gone
            } else {
                Sent::Failed(Some(status), format!("HTTP {status}"))
            }
        }
        Err(e) if e.is_timeout() => Sent::Failed(None, "timed out".into()),
        Err(e) => Sent::Failed(None, format!("cannot connect or send: {e}")),
    }
}

async fn record(
    pg: &Client,
    shared: &Shared,
    c: &Claimed,
    sent: Sent,
) -> Result<(), tokio_postgres::Error> {
    let retry = &shared.cfg.event_retry;
    let m = &shared.metrics.events;
    let outcome = |o: &'static str| m.attempts.get_or_create(&vec![("outcome", o)]).inc();
    match sent {
        Sent::Delivered(status) => {
            pg.execute(
                DELIVERED,
                &[&c.endpoint_id, &c.event_row, &i32::from(status)],
            )
            .await?;
            outcome("delivered");
            if let Ok(d) = std::time::SystemTime::now().duration_since(c.created_at) {
                m.delivery_seconds.observe(d.as_secs_f64());
            }
        }
        Sent::Gone => {
            let none: Option<f64> = None;
            pg.execute(
                ATTEMPT_FAILED,
                &[
                    &c.endpoint_id,
                    &c.event_row,
                    &410i32,
                    &"HTTP 410: endpoint disabled",
                    &none,
                ],
            )
            .await?;
            pg.execute(DISABLE, &[&c.endpoint_id]).await?;
            outcome("gone");
            tracing::warn!(
                endpoint = c.endpoint_id,
                "an event endpoint answered 410 and is disabled"
            );
        }
        Sent::Failed(status, error) => {
            // Attempt n (1-based) is followed by delay n, if there is one.
            let next = usize::try_from(c.attempts)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| retry.get(i))
                .map(Duration::as_secs_f64);
            pg.execute(
                ATTEMPT_FAILED,
                &[
                    &c.endpoint_id,
                    &c.event_row,
                    &status.map(i32::from),
                    &error,
                    &next,
                ],
            )
            .await?;
            outcome(if next.is_some() { "retried" } else { "failed" });
        }
    }
    Ok(())
}
