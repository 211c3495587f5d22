//! What every new Redis connection of a worker checks before it carries a request: that the
//! server cannot evict our keys, that its data belongs to this PostgreSQL database, and that
//! it did not restart behind what was acknowledged.
//!
//! **Eviction.** A stock counter has no time to live; a `maxmemory-policy` of `allkeys-*`
//! could evict it, and the next request would rebuild it from PostgreSQL while orders of the
//! evicted state are in flight: an oversell. Such a Redis is refused.
//!
//! **Another database.** `<prefix>:database` holds the identity of the PostgreSQL database
//! whose data the prefix holds (migration 0004 gives each database a random one). When it
//! names another database (this one was dropped and created again, say), every key of the
//! prefix is deleted before serving: prices, stock and limits then come from this database,
//! and a product it does not have is 404. A prefix without the marker (written before the
//! marker existed) is adopted as it is.
//!
//! **A restart.** A Redis restarted from its AOF (`appendfsync everysec`) or an RDB snapshot can be behind
//! what was acknowledged: a stock decrement, an order record or a payment may be missing while
//! PostgreSQL, which the writer fed from the handoff, has them. Trusting such a counter could
//! oversell. So every new connection of a worker, before it carries any request, compares the
//! server's `run_id` with the one recorded in `<prefix>:redis_run_id` when the data was last
//! checked. If they differ (or nothing is recorded), `invalidate.lua` runs for every product
//! Redis holds: the counters go, and each product is rebuilt from PostgreSQL on its next use
//! (after a writer barrier, counting the pending orders of both stores; see `load.lua`).
//! Only then is the new `run_id` recorded. Within one process one connection checks and the
//! others wait for it; several instances may check at once: invalidating twice only costs
//! one more reload.
//!
//! **A cluster.** Each master is checked on its own, as if it were the single Redis: its
//! markers are keys of a slot it serves (`<prefix>:{m:<k>}:database` and `…:redis_run_id`,
//! `k` the smallest whose slot is the node's), the passes over the keyspace see its keys
//! only, and a replica promoted after a failover has another `run_id` than the master it
//! replaces (whose markers it inherited), so its products are rebuilt from PostgreSQL: it
//! may be behind what its master acknowledged. When a node's slots change, its markers may
//! name another slot: the check then finds none and invalidates, which costs reloads only.

use crate::redis::cluster::slot::marker_tag;
use crate::redis::cmd::command;
use crate::redis::conn::roundtrip;
use crate::redis::keys::Keys;
use crate::redis::reply::{array, as_string};
use crate::redis::scan::{decode_scan, scan_cmd};
use crate::redis::scripts::is_noscript;
use crate::redis::scripts::load::invalidate_call;
use monoio::net::TcpStream;
use redis_async::resp::RespValue;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// The markers whose check a connection of this process is running. Every worker connects
/// at start-up and after a Redis restart; without this each would make the pass over the
/// keyspace, and Redis runs them one after the other, so the first request would wait longer
/// the more cores the machine has (a pass costs ~0.7 µs per key: 1.4 s with 2 M keys). Taken
/// only around connecting, never on the request path.
static CHECKING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// This connection runs the check of a marker; dropping it (done, failed or cancelled) lets
/// a waiting connection look again, and take the check over if the marker is still stale.
struct Checking(String);

impl Checking {
    fn take(marker: &str) -> Option<Checking> {
        let mut running = CHECKING.lock().unwrap_or_else(|e| e.into_inner());
        running
            .insert(marker.to_string())
            .then(|| Checking(marker.to_string()))
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        CHECKING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// The `run_id` line of `INFO server`.
pub fn parse_run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
}

/// The `maxmemory_policy` line of `INFO memory`.
pub fn parse_policy(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .map(str::trim)
}

/// Whether a `maxmemory-policy` may evict keys that have no time to live.
pub fn evicts_persistent_keys(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// The names of the database and restart markers of the server on `stream`: the prefix's
/// own for a single Redis; for a master of a cluster, keys of one of its slots (`None` when it
/// serves no slot: it holds no keys of ours).
pub async fn markers(
    stream: &mut TcpStream,
    keys: &Keys,
    cluster_node: bool,
) -> Result<Option<(String, String)>, String> {
    if !cluster_node {
        return Ok(Some((keys.database_marker(), keys.run_id_marker())));
    }
    let nodes = as_string(roundtrip(stream, command(&["CLUSTER", "NODES"])).await?)
        .map_err(|e| e.to_string())?;
    Ok(marker_tag(&nodes).map(|t| keys.node_markers(&t)))
}

/// Runs the three checks on a fresh connection; `database` is this PostgreSQL database's
/// identity. An `Err` keeps the connection from being used (requests get 503).
pub async fn verify(
    stream: &mut TcpStream,
    keys: &Keys,
    database: &str,
    who: &str,
    cluster_node: bool,
) -> Result<(), String> {
    let memory = as_string(roundtrip(stream, command(&["INFO", "memory"])).await?)
        .map_err(|e| e.to_string())?;
    if let Some(policy) = parse_policy(&memory).filter(|p| evicts_persistent_keys(p)) {
        return Err(format!(
            "Redis maxmemory-policy is {policy}: it may evict stock counters, which could \
             oversell; use noeviction (or a volatile-* policy)"
        ));
    }
    let info = as_string(roundtrip(stream, command(&["INFO", "server"])).await?)
        .map_err(|e| e.to_string())?;
    let run_id = parse_run_id(&info)
        .ok_or("INFO server has no run_id")?
        .to_string();
    let Some((db_marker, run_marker)) = markers(stream, keys, cluster_node).await? else {
        return Ok(());
    };
    // One connection of this process checks; the others wait for its result.
    let (recorded, _checking) = loop {
        let v = roundtrip(stream, command(&["MGET", &db_marker, &run_marker])).await?;
        let mut both = array(v, "MGET").map_err(|e| e.to_string())?.into_iter();
        let mut next = || match both.next() {
            Some(RespValue::Nil) | None => Ok(None),
            Some(v) => as_string(v).map(Some).map_err(|e| e.to_string()),
        };
        let (db, recorded) = (next()?, next()?);
        if db.as_deref() == Some(database) && recorded.as_deref() == Some(run_id.as_str()) {
            return Ok(());
        }
        if let Some(guard) = Checking::take(&run_marker) {
            match db {
                Some(other) if other != database => {
                    let deleted = forget_prefix(stream, keys, &run_marker).await?;
                    tracing::warn!(
                        worker = who,
                        deleted,
                        recorded_for = %other,
                        this_database = database,
                        "Redis held keys of another PostgreSQL database under this prefix; deleted them"
                    );
                    roundtrip(stream, command(&["SET", &db_marker, database])).await?;
                    break (None, guard);
                }
                Some(_) => {}
                None => {
                    roundtrip(stream, command(&["SET", &db_marker, database])).await?;
                }
            }
            break (recorded, guard);
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    };
    if recorded.as_deref() == Some(run_id.as_str()) {
        return Ok(());
    }
    invalidate_all(stream, keys, who, recorded.is_some()).await?;
    roundtrip(stream, command(&["SET", &run_marker, &run_id])).await?;
    Ok(())
}

/// Deletes every key of this prefix (products, orders, journals, markers), one SCAN pass:
/// the pattern also matches other prefixes that start with this one, so each key's prefix is
/// checked exactly.
async fn forget_prefix(
    stream: &mut TcpStream,
    keys: &Keys,
    run_marker: &str,
) -> Result<usize, String> {
    let pattern = keys.scan_pattern("*");
    let mut cursor = "0".to_string();
    let mut deleted = 0;
    loop {
        let v = roundtrip(stream, scan_cmd(&cursor, &pattern)).await?;
        let (next, found) = decode_scan(v).map_err(|e| e.to_string())?;
        let ours: Vec<&[u8]> = found
            .iter()
            .filter(|k| keys.split_product_key(k).is_some())
            .map(Vec::as_slice)
            .collect();
        if !ours.is_empty() {
            let mut unlink = vec![&b"UNLINK"[..]];
            unlink.extend(ours.iter().copied());
            roundtrip(stream, command(&unlink)).await?;
            deleted += ours.len();
        }
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    roundtrip(stream, command(&["DEL", run_marker])).await?;
    Ok(deleted)
}

/// After a restart: forgets what every product may hold stale (see the module header).
async fn invalidate_all(
    stream: &mut TcpStream,
    keys: &Keys,
    who: &str,
    restarted: bool,
) -> Result<(), String> {
    // The products with a stock counter or a pending set, in one pass over the keyspace: it
    // holds every order record too, millions after a big sale, and Redis visits each key of a
    // pass (~0.7 µs per key here: 1.4 s for 2 M keys, whatever the COUNT) while nothing is
    // served on this connection. Glob has no alternation: the character classes match `stock`
    // and `pending` and none of the other product keys (product, journal, users, order:…,
    // idem:…); the exact kind is checked here.
    let pattern = keys.scan_pattern("[sp][te][on][cd]*");
    let mut products = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let v = roundtrip(stream, scan_cmd(&cursor, &pattern)).await?;
        let (next, found) = decode_scan(v).map_err(|e| e.to_string())?;
        products.extend(found.iter().filter_map(|k| {
            keys.split_product_key(k)
                .filter(|(_, kind)| matches!(*kind, "stock" | "pending"))
                .map(|(pid, _)| pid)
        }));
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    let mut removed = 0i64;
    for pid in &products {
        let call = invalidate_call(keys, *pid);
        let v = match roundtrip(stream, call.encode(false)).await {
            Err(e) if is_noscript(&e) => roundtrip(stream, call.encode(true)).await?,
            other => other?,
        };
        if let RespValue::Integer(n) = v {
            removed += n;
        }
    }
    if restarted || !products.is_empty() {
        tracing::warn!(
            worker = who,
            products = products.len(),
            stale_records = removed,
            "Redis restarted (new run_id): its counters may be behind PostgreSQL, so products are reloaded from PostgreSQL on next use"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicting_policies_are_recognised() {
        let info = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(parse_policy(info), Some("allkeys-lru"));
        for p in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
            assert!(evicts_persistent_keys(p), "{p}");
        }
        for p in ["noeviction", "volatile-lru", "volatile-ttl"] {
            assert!(!evicts_persistent_keys(p), "{p}");
        }
    }

    #[test]
    fn finds_the_run_id() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f3c2b1a\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info), Some("4f3c2b1a"));
        assert_eq!(parse_run_id("# Server\r\n"), None);
    }
}
