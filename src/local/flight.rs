//! Single flight per key on one core: the first caller for a key does the work, the callers
//! that come while it runs wait for its result instead of repeating it. Same-core only
//! (`RefCell`, `local_sync`), so no lock.

use local_sync::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

/// The flights in progress, by key.
pub struct Flights<K, V> {
    /// Keys being worked on, each with the callers waiting for its result.
    running: RefCell<HashMap<K, Vec<oneshot::Sender<V>>>>,
}

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            running: RefCell::new(HashMap::new()),
        }
    }
}

/// What a caller joining a flight must do.
pub enum Joined<'a, K: Eq + Hash, V: Clone> {
    /// Do the work, then hand the result to [`Lead::finish`].
    Lead(Lead<'a, K, V>),
    /// Wait for the leader's result. An error means the leader was dropped before it
    /// finished (its caller went away): the work may or may not have been done.
    Follow(oneshot::Receiver<V>),
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    pub fn join(&self, key: K) -> Joined<'_, K, V> {
        let mut running = self.running.borrow_mut();
        match running.get_mut(&key) {
            Some(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Joined::Follow(rx)
            }
            None => {
                running.insert(key.clone(), Vec::new());
                Joined::Lead(Lead {
                    flights: self,
                    key: Some(key),
                })
            }
        }
    }

    /// Flights in progress (for tests).
    pub fn in_flight(&self) -> usize {
        self.running.borrow().len()
    }
}

/// The leader of a flight. However it ends, finished or dropped, the key is free again and
/// the next caller may start another flight.
pub struct Lead<'a, K: Eq + Hash, V> {
    flights: &'a Flights<K, V>,
    key: Option<K>,
}

impl<K: Eq + Hash, V: Clone> Lead<'_, K, V> {
    /// Hands `result` to every waiter.
    pub fn finish(mut self, result: V) {
        for tx in self.take_waiters() {
            let _ = tx.send(result.clone());
        }
    }

    fn take_waiters(&mut self) -> Vec<oneshot::Sender<V>> {
        self.key
            .take()
            .and_then(|k| self.flights.running.borrow_mut().remove(&k))
            .unwrap_or_default()
    }
}

impl<K: Eq + Hash, V> Drop for Lead<'_, K, V> {
    fn drop(&mut self) {
        // Dropping the senders tells the waiters the flight was abandoned.
        if let Some(k) = self.key.take() {
            self.flights.running.borrow_mut().remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn poll<T>(rx: &mut oneshot::Receiver<T>) -> Poll<Result<T, oneshot::error::RecvError>> {
        std::pin::Pin::new(rx).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn followers_get_the_leaders_result_and_the_key_is_free_again() {
        let f: Flights<u32, i32> = Flights::default();
        let Joined::Lead(lead) = f.join(1) else {
            panic!("first caller leads")
        };
        let Joined::Follow(mut a) = f.join(1) else {
            panic!("second caller follows")
        };
        assert!(
            matches!(f.join(2), Joined::Lead(_)),
            "other keys are separate"
        );
        lead.finish(7);
        assert!(matches!(poll(&mut a), Poll::Ready(Ok(7))));
        assert_eq!(f.in_flight(), 0);
        assert!(matches!(f.join(1), Joined::Lead(_)));
    }

    #[test]
    fn a_dropped_leader_releases_its_followers() {
        let f: Flights<u32, i32> = Flights::default();
        let lead = f.join(1);
        let Joined::Follow(mut a) = f.join(1) else {
            panic!()
        };
        drop(lead);
        assert!(matches!(poll(&mut a), Poll::Ready(Err(_))));
        assert_eq!(f.in_flight(), 0);
    }
}
