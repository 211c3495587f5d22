//! Load for the chaos tests: client threads ordering one unit at a time until told to stop,
//! recording every 202 and retrying what a breaking server or Redis answers meanwhile (503s,
//! lost connections).

use crate::common::*;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What a load run saw.
#[derive(Default)]
pub struct Seen {
    /// (product, order reference) of every 202.
    pub accepted: Mutex<Vec<(i64, String)>>,
    pub ok: AtomicUsize,
    pub sold_out: AtomicUsize,
    pub unavailable: AtomicUsize,
}

impl Seen {
    /// The references of every 202.
    pub fn references(self) -> Vec<String> {
        let accepted = self.accepted.into_inner().unwrap();
        accepted.into_iter().map(|(_, r)| r).collect()
    }
}

/// Sets its flag when dropped: a step of a test that fails stops the load with it, instead of
/// leaving the load's threads running and the test hanging in its scope.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `clients` threads ordering one unit of the products in turn from the server at `addr`
/// (which a test may change when it restarts the server) until `stop`. A 503 must be
/// `unavailable` with `Retry-After` and a 409 `insufficient_stock`; anything else fails.
pub fn load(
    clients: usize,
    addr: &Mutex<SocketAddr>,
    products: &[i64],
    stop: &AtomicBool,
    seen: &Seen,
) {
    std::thread::scope(|s| {
        for t in 0..clients {
            s.spawn(move || {
                let mut current = *addr.lock().unwrap();
                let mut c = Client::connect(current);
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let a = *addr.lock().unwrap();
                    if a != current {
                        c = Client::connect(a);
                        current = a;
                    }
                    i += 1;
                    let pid = products[i % products.len()];
                    match c.try_order(pid, 1) {
                        Some(r) if r.status == 202 => {
                            let reference =
                                r.json()["order_reference"].as_str().unwrap().to_string();
                            seen.accepted.lock().unwrap().push((pid, reference));
                            seen.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(r) if r.status == 409 => {
                            assert_eq!(r.code(), "insufficient_stock");
                            seen.sold_out.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(r) if r.status == 503 => {
                            assert_eq!(r.code(), "unavailable");
                            assert!(r.header("retry-after").is_some());
                            seen.unavailable.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                        Some(r) => panic!(
                            "unexpected {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        None => {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            c = Client::connect(current);
                        }
                    }
                }
            });
        }
    });
}

/// Runs `during` while `clients` threads put load on the server (see [`load`]); the load
/// stops when `during` returns or fails.
pub fn under_load(
    clients: usize,
    addr: &Mutex<SocketAddr>,
    products: &[i64],
    seen: &Seen,
    during: impl FnOnce(),
) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| load(clients, addr, products, &stop, seen));
        during();
    });
}
