//! A whole sale on a cluster: products on every master sell exactly their stock.

use super::*;
use std::sync::atomic::Ordering;

#[test]
fn a_sale_across_three_masters_sells_exactly_the_stock() {
    let cluster = OwnCluster::shared_or_own();
    let env = Env::with_cluster(cluster.url());
    let stock = 150;
    let products = cluster.products_on_every_master(&env, stock);
    let pids: Vec<i64> = products.iter().map(|(p, _)| *p).collect();
    let total = stock as usize * pids.len();
    let srv = Server::start(&env);
    let seen = Seen::default();
    under_load(8, &Mutex::new(srv.addr), &pids, &seen, || {
        wait_until("every unit sold", || {
            (seen.ok.load(Ordering::SeqCst) >= total).then_some(())
        });
        // Keep asking: a unit sold beyond the stock would show up now.
        let refused = seen.sold_out.load(Ordering::SeqCst);
        wait_until("sold-out answers on every product", || {
            (seen.sold_out.load(Ordering::SeqCst) >= refused + 20 * pids.len()).then_some(())
        });
    });
    assert_eq!(
        seen.ok.load(Ordering::SeqCst),
        total,
        "exactly the stock sold"
    );
    // Payments are routed to each product's master too.
    let paid: Vec<String> = {
        let accepted = seen.accepted.lock().unwrap();
        pids.iter()
            .filter_map(|pid| {
                accepted
                    .iter()
                    .find(|(p, _)| p == pid)
                    .map(|(_, r)| r.clone())
            })
            .collect()
    };
    let mut c = srv.client();
    for reference in &paid {
        let r = c.webhook(reference, "success");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    for &pid in &pids {
        wait_until("the payment reaches PostgreSQL", || {
            (env.paid_units(pid) == 1).then_some(())
        });
    }
    assert_sale(&env, seen, &pids, stock);
    for &pid in &pids {
        assert_eq!(env.redis_stock(pid), Some(0));
    }
}
