//! Lookups of things that do not exist (orders, products) never wait for the writer: a flood
//! of them cannot delay the writes that payments and expiries need, and they are answered
//! even while the writer is stuck.

use super::*;

#[test]
fn lookups_are_answered_while_the_writer_is_stuck() {
    let (env, pid, srv) = setup(&[]);
    let mut c = srv.client();
    // Load the product, then hold a lock that stops every write to `orders` (reads go on).
    assert_eq!(c.order(pid, 1).status, 202);
    env.assert_conserved(pid, 100);
    let mut blocker = env.pg();
    let mut tx = blocker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE orders IN EXCLUSIVE MODE")
        .unwrap();
    // This reservation is accepted; its row waits behind the lock, and the writer with it.
    let r = c.order(pid, 1);
    assert_eq!(r.status, 202);
    let stuck = r.json()["order_reference"].as_str().unwrap().to_string();

    // Lookups of unknown orders and products, and orders for unknown products, are answered
    // from the read path meanwhile.
    let mut look = Client::connect(srv.addr);
    for i in 0..50 {
        let r = look.get(&format!("/api/orders/{pid}-01ARZ3NDEKTSV4RRFFQ69G{i:04}"));
        assert_eq!((r.status, r.code()), (404, "order_not_found".to_string()));
        let r = look.get(&format!("/api/orders/foreign-{i}"));
        assert_eq!(r.status, 404);
        let r = look.get(&format!("/api/products/{}", 1_000_000 + i));
        assert_eq!((r.status, r.code()), (404, "product_not_found".to_string()));
        let r = look.order(2_000_000 + i, 1);
        assert_eq!((r.status, r.code()), (404, "product_not_found".to_string()));
    }
    // The stuck order is answered from Redis.
    assert_eq!(look.get(&format!("/api/orders/{stuck}")).status, 200);

    tx.rollback().unwrap();
    env.wait_rows(&[stuck]);
    env.assert_conserved(pid, 100);
    assert_healthy(&srv);
}
