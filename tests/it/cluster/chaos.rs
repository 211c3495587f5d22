//! Clusters that change under load: a slot migrated, a master restarted empty, a master
//! replaced by its replica.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Waits until `n` more orders than now were accepted for products among `of`.
fn more_accepted(seen: &Seen, of: &[i64], n: usize) {
    let count = || {
        seen.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| of.contains(p))
            .count()
    };
    let target = count() + n;
    wait_until("more orders accepted", || (count() >= target).then_some(()));
}

#[test]
fn a_product_slot_migrated_between_masters_under_load_loses_nothing() {
    let cluster = OwnCluster::start(3, 0);
    let env = Env::with_cluster(cluster.url());
    let stock = 1_000_000;
    let pid = env.product(stock, 100);
    let slot = cluster.slot_of(&format!("p:{pid}"));
    let (_, from) = cluster.master_of(slot);
    let to = *cluster.masters().iter().find(|p| **p != from).unwrap();
    let srv = Server::start(&env);
    let addr = Mutex::new(srv.addr);
    let stop = AtomicBool::new(false);
    let seen = Seen::default();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| load(6, &addr, &[pid], &stop, &seen));
        // Lookups of accepted orders: single-key reads, which a migrating master answers
        // with ASK once their key has moved.
        s.spawn(|| {
            let mut c = srv.client();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let reference = {
                    let a = seen.accepted.lock().unwrap();
                    if a.is_empty() {
                        None
                    } else {
                        i += 7;
                        Some(a[i % a.len()].1.clone())
                    }
                };
                match reference {
                    Some(r) => {
                        let resp = c.get(&format!("/api/orders/{r}"));
                        assert!(
                            matches!(resp.status, 200 | 503),
                            "lookup {}: {}",
                            resp.status,
                            String::from_utf8_lossy(&resp.body)
                        );
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        more_accepted(&seen, &[pid], 2_000);
        cluster.migrate(slot, from, to, || {
            wait_until("ASK seen while every key has moved", || {
                (metric(&srv, "flashsale_redis_redirects_total{kind=\"ask\"}") > 0).then_some(())
            });
        });
        wait_until("MOVED seen after the slot changed master", || {
            (metric(&srv, "flashsale_redis_redirects_total{kind=\"moved\"}") > 0).then_some(())
        });
        more_accepted(&seen, &[pid], 2_000);
    });
    assert_eq!(cluster.master_of(slot).1, to);
    let on_new_master = cluster.cli(to, &["exists", &env.key(pid, "stock")]);
    assert_eq!(
        on_new_master.trim(),
        "1",
        "the product lives on its new master"
    );
    assert_sale(&env, seen, &[pid], stock);
}

/// What a sale that lost a master left to check.
struct Lost {
    env: Env,
    srv: Server,
    seen: Seen,
    pids: Vec<i64>,
    /// The products of the master that was lost.
    on_victim: Vec<i64>,
    stock: i64,
    /// Kept up until the checks are done.
    _cluster: OwnCluster,
}

/// A sale of products on every master of a cluster of 3 masters with `replicas` each, under
/// load, during which `lose(cluster, master, slot)` breaks the master of the first product's
/// slot; the load goes on until that master's products sold 300 more units.
fn master_lost_under_load(replicas: usize, lose: impl FnOnce(&mut OwnCluster, u16, u16)) -> Lost {
    let mut cluster = OwnCluster::start(3, replicas);
    let env = Env::with_cluster(cluster.url());
    let stock = 3_000;
    let products = cluster.products_on_every_master(&env, stock);
    let pids: Vec<i64> = products.iter().map(|(p, _)| *p).collect();
    let victim = products[0].1;
    let slot = cluster.slot_of(&format!("p:{}", products[0].0));
    let on_victim: Vec<i64> = products
        .iter()
        .filter(|(_, m)| *m == victim)
        .map(|(p, _)| *p)
        .collect();
    let srv = Server::start(&env);
    let seen = Seen::default();
    under_load(8, &Mutex::new(srv.addr), &pids, &seen, || {
        more_accepted(&seen, &on_victim, 300);
        lose(&mut cluster, victim, slot);
        cluster.wait_ok();
        more_accepted(&seen, &on_victim, 300);
    });
    Lost {
        env,
        srv,
        seen,
        pids,
        on_victim,
        stock,
        _cluster: cluster,
    }
}

#[test]
fn a_master_restarted_empty_under_load_loses_nothing() {
    let lost = master_lost_under_load(0, |cluster, victim, _| {
        cluster.kill9(victim);
        cluster.restart_empty(victim);
    });
    // Its products came back, rebuilt from PostgreSQL.
    let logs = lost.srv.logs();
    for pid in &lost.on_victim {
        let loads = logs
            .lines()
            .filter(|l| {
                l.contains("product loaded into Redis") && l.contains(&format!(" product={pid} "))
            })
            .count();
        assert!(
            loads >= 2,
            "product {pid} was rebuilt from PostgreSQL after the restart"
        );
    }
    assert_sale(&lost.env, lost.seen, &lost.pids, lost.stock);
}

#[test]
fn a_master_replaced_by_its_replica_under_load_loses_nothing() {
    let lost = master_lost_under_load(1, |cluster, victim, slot| {
        cluster.kill9(victim);
        wait_until("a replica took the slot over", || {
            cluster
                .try_master_of(slot)
                .filter(|m| m.1 != victim)
                .map(drop)
        });
    });
    // The promoted replica may be behind what its master acknowledged: its products were
    // rebuilt from PostgreSQL before use.
    assert!(
        lost.srv.logs().contains("Redis restarted (new run_id)"),
        "the promoted replica was checked before use:\n{}",
        lost.srv.logs()
    );
    assert_sale(&lost.env, lost.seen, &lost.pids, lost.stock);
}
