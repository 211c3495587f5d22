//! Redis Cluster (`FLASHSALE_REDIS_MODE=cluster`): a sale across three masters, a product's
//! slot migrated between masters under load, a master restarted empty under load, a master
//! killed and replaced by its replica under load. After each: every 202 is a row, no unit is
//! sold twice or beyond the stock, the conservation law holds and `reconcile` exits 0.
//!
//! The sale uses the cluster `scripts/test.sh` starts (`TEST_REDIS_CLUSTER_URL`), isolated by
//! key prefix, or a cluster of its own; the tests that break a cluster start their own
//! (`OwnCluster`: `redis-server` processes on free ports, no persistence, node timeout 1 s).

mod chaos;
mod sale;

use crate::common::*;
pub use crate::load::*;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// A Redis Cluster of the test's own.
pub struct OwnCluster {
    dir: std::path::PathBuf,
    nodes: Vec<(u16, Option<Child>)>,
    /// Started by this test (else a cluster someone else runs: never broken, never stopped).
    owned: bool,
}

impl OwnCluster {
    /// The cluster of `TEST_REDIS_CLUSTER_URL` (started by `scripts/test.sh`), else one of
    /// this test's own with three masters.
    pub fn shared_or_own() -> OwnCluster {
        match std::env::var("TEST_REDIS_CLUSTER_URL") {
            Ok(url) => OwnCluster {
                dir: std::env::temp_dir().join(unique("unused")),
                nodes: url
                    .split(',')
                    .map(|u| {
                        let port = u.trim().trim_end_matches('/').rsplit(':').next().unwrap();
                        (
                            port.parse().expect("a port in TEST_REDIS_CLUSTER_URL"),
                            None,
                        )
                    })
                    .collect(),
                owned: false,
            },
            Err(_) => OwnCluster::start(3, 0),
        }
    }

    /// `masters` masters with `replicas` replicas each, the cluster state ok on every node.
    pub fn start(masters: usize, replicas: usize) -> OwnCluster {
        let dir = std::env::temp_dir().join(unique("cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = OwnCluster {
            dir,
            nodes: Vec::new(),
            owned: true,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_free_port();
            c.nodes.push((port, None));
            c.spawn(port);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &c.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli installed (scripts/services.sh installs it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok();
        if replicas > 0 {
            wait_until("every replica in sync", || {
                c.ports()
                    .iter()
                    .all(|p| {
                        let info = c.cli(*p, &["info", "replication"]);
                        !info.contains("role:slave") || info.contains("master_link_status:up")
                    })
                    .then_some(())
            });
        }
        c
    }

    fn spawn(&mut self, port: u16) {
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server installed (scripts/services.sh installs it)");
        let node = self.nodes.iter_mut().find(|n| n.0 == port);
        node.expect("a port of this cluster").1 = Some(child);
        wait_until("a cluster node answers", || {
            (self.cli(port, &["ping"]).trim() == "PONG").then_some(())
        });
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.0).collect()
    }

    /// The seed list for `REDIS_URL`.
    pub fn url(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli -p PORT ARGS...`, its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn live(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.1.is_some() || !self.owned)
            .map(|n| n.0)
            .expect("a live node")
    }

    /// Waits until every live node reports the cluster state ok and agrees on the masters.
    pub fn wait_ok(&self) {
        wait_until("cluster state ok on every node", || {
            let ok = self
                .nodes
                .iter()
                .filter(|n| n.1.is_some() || !self.owned)
                .all(|n| {
                    self.cli(n.0, &["cluster", "info"])
                        .contains("cluster_state:ok")
                });
            ok.then_some(())
        });
    }

    /// The id and port of the master serving `slot`, as a live node sees it.
    pub fn master_of(&self, slot: u16) -> (String, u16) {
        self.try_master_of(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The id and port of the master serving `slot`, or `None` while none does (a failover).
    pub fn try_master_of(&self, slot: u16) -> Option<(String, u16)> {
        self.live_masters()
            .into_iter()
            .find(|m| m.2.iter().any(|r| r.contains(&slot)))
            .map(|(id, port, _)| (id, port))
    }

    /// The masters' ports, for masters serving slots.
    pub fn masters(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .live_masters()
            .into_iter()
            .filter(|m| !m.2.is_empty())
            .map(|m| m.1)
            .collect();
        out.sort();
        out
    }

    /// (id, port, slot ranges) of every master not marked failed, as a live node sees them.
    fn live_masters(&self) -> Vec<(String, u16, Vec<std::ops::RangeInclusive<u16>>)> {
        let nodes = self.cli(self.live(), &["cluster", "nodes"]);
        let mut out = Vec::new();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            // `<ip>:<port>@<bus port>`
            let address = f[1].split('@').next().unwrap();
            let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('[')) // slots being imported or migrated
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
                    None => r.parse().unwrap()..=r.parse().unwrap(),
                })
                .collect();
            out.push((f[0].to_string(), port, ranges));
        }
        out
    }

    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["cluster", "myid"]).trim().to_string()
    }

    pub fn slot_of(&self, key: &str) -> u16 {
        self.cli(self.live(), &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// Moves `slot` from the master on port `from` to the one on `to` as `redis-cli --cluster
    /// reshard` does: IMPORTING and MIGRATING, the keys in batches of 20 (a pause between
    /// batches, so calls meet the slot half moved), then `between` (while every key has
    /// moved but the slot is still `from`'s), then the slot assigned to `to` on every master.
    pub fn migrate(&self, slot: u16, from: u16, to: u16, between: impl FnOnce()) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        let ok = |out: String| assert!(out.trim() == "OK", "{out}");
        ok(self.cli(to, &["cluster", "setslot", &s, "importing", &from_id]));
        ok(self.cli(from, &["cluster", "setslot", &s, "migrating", &to_id]));
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &s, "20"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(self.cli(from, &args));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        between();
        for m in self.masters() {
            ok(self.cli(m, &["cluster", "setslot", &s, "node", &to_id]));
        }
    }

    /// SIGKILL of one node.
    pub fn kill9(&mut self, port: u16) {
        assert!(self.owned, "never break a cluster the test did not start");
        for n in &mut self.nodes {
            if n.0 == port
                && let Some(mut c) = n.1.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts a killed node again on its port with its cluster configuration and no data.
    pub fn restart_empty(&mut self, port: u16) {
        self.spawn(port);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.1.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_free_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl OwnCluster {
    /// Products (stock `stock` each) until every master serves at least one; returns them
    /// with their master's port.
    pub fn products_on_every_master(&self, env: &Env, stock: i64) -> Vec<(i64, u16)> {
        let masters = self.masters();
        let mut out: Vec<(i64, u16)> = Vec::new();
        for _ in 0..200 {
            let pid = env.product(stock, 100);
            out.push((pid, self.master_of(self.slot_of(&format!("p:{pid}"))).1));
            if masters.iter().all(|m| out.iter().any(|(_, p)| p == m)) {
                return out;
            }
        }
        panic!("200 products and a master still has none");
    }
}

/// The checks after a run: every 202 a distinct row, no product sold beyond its stock, and
/// once quiet the conservation law and a clean reconcile for each product.
pub fn assert_sale(env: &Env, seen: Seen, products: &[i64], stock: i64) {
    let accepted = seen.accepted.into_inner().unwrap();
    let refs: Vec<String> = accepted.iter().map(|(_, r)| r.clone()).collect();
    env.wait_rows(&refs);
    for &pid in products {
        let sold = accepted.iter().filter(|(p, _)| *p == pid).count() as i64;
        assert!(sold <= stock, "product {pid}: {sold} accepted of {stock}");
        env.assert_conserved(pid, stock);
    }
}

/// The value of a counter of `/metrics` with the given labels text.
pub fn metric(srv: &Server, line_start: &str) -> u64 {
    let body = srv.client().get("/metrics").body;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or(0)
}
