//! Connection caps: in all (`FLASHSALE_MAX_CONNECTIONS`) and per client address
//! (`FLASHSALE_MAX_CONNECTIONS_PER_IP`), across every worker of the process.
//!
//! Taken at accept and given back when the connection closes, never per request. The total
//! is one atomic counter; the per-address counts live in a map split into stripes by a hash
//! of the address, each behind its own mutex, so accepts on different cores rarely meet on a
//! lock, and an address with no connection left is removed: the map holds at most as many
//! entries as there are open connections.

use crate::limits::client::address_key;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Stripes of the per-address map: enough that two cores accepting at once rarely share one.
const STRIPES: usize = 64;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The process holds `FLASHSALE_MAX_CONNECTIONS` connections.
    Total,
    /// This address holds `FLASHSALE_MAX_CONNECTIONS_PER_IP` connections.
    PerAddress,
}

pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    /// IPv6 addresses count under their first this many bits (`limits::client::address_key`).
    v6_prefix: u8,
    total: AtomicUsize,
    per_address: Vec<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_address: usize, v6_prefix: u8) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_address,
            v6_prefix,
            total: AtomicUsize::new(0),
            per_address: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    /// Admits a connection from `addr`, or says which cap it is over. The slot gives the
    /// place back when dropped.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Over> {
        let addr = address_key(addr, self.v6_prefix);
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Over::Total);
        }
        let mut stripe = self.stripe(addr);
        let n = stripe.entry(addr).or_insert(0);
        if *n >= self.max_per_address {
            if *n == 0 {
                stripe.remove(&addr);
            }
            drop(stripe);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Over::PerAddress);
        }
        *n += 1;
        Ok(Slot {
            limits: self.clone(),
            addr,
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        self.per_address.iter().map(|s| lock(s).len()).sum()
    }

    fn stripe(&self, addr: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        let mut h = DefaultHasher::new();
        addr.hash(&mut h);
        lock(&self.per_address[h.finish() as usize % STRIPES])
    }
}

/// A poisoned stripe only means another thread panicked while counting; the counts are
/// still right (each change is one statement).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One admitted connection's place under both caps.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    addr: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut stripe = self.limits.stripe(self.addr);
        if let Some(n) = stripe.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                stripe.remove(&self.addr);
            }
        }
        drop(stripe);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let l = ConnectionLimits::new(3, 2, 64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Over::PerAddress));
        let b1 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Over::Total));
        assert_eq!((l.open(), l.addresses()), (3, 2));
        drop(a1);
        assert!(l.admit(b).is_ok(), "a freed place is usable by anyone");
        drop(b1);
        let _a3 = l.admit(a).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            l.admit(mapped).err(),
            Some(Over::PerAddress),
            "an IPv4-mapped address is the same client"
        );
    }

    #[test]
    fn addresses_without_connections_are_forgotten() {
        let l = ConnectionLimits::new(100_000, 10, 64);
        for i in 0..10_000u32 {
            let s = l.admit(IpAddr::from(i.to_be_bytes())).unwrap();
            drop(s);
        }
        assert_eq!((l.open(), l.addresses()), (0, 0));
    }
}
