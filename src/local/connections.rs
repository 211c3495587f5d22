//! One worker's connections: how many are open, and the shutdown signal they wait on (a
//! same-core flag that any number of tasks can wait on). The worker's drain reads both.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Connections {
    /// Open connections, for the shutdown drain.
    open: Cell<usize>,
    /// Set on shutdown: idle connections close, busy ones close after their response.
    drain: Drain,
}

impl Connections {
    /// Counts a connection open until the guard drops.
    pub fn open(&self) -> ConnectionGuard<'_> {
        self.open.set(self.open.get() + 1);
        ConnectionGuard(self)
    }

    pub fn count(&self) -> usize {
        self.open.get()
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }
}

/// One open connection; dropping it counts the connection closed.
pub struct ConnectionGuard<'a>(&'a Connections);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// A same-core shutdown signal that any number of tasks can wait on.
///
/// Every idle connection waits on it between requests, so a waiter must leave no trace when
/// its wait ends the other way (a request arrived): each wait owns one slot, reused on
/// re-polls and freed on drop.
#[derive(Default)]
pub struct Drain {
    on: Cell<bool>,
    /// Wakers by slot; `None` slots are free and listed in `free`.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    pub fn start(&self) {
        self.on.set(true);
        for w in self.slots.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Waiters currently registered (for tests: it must not grow with requests).
    pub fn waiting(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }

    /// Completes once `start` has been called.
    pub async fn wait(&self) {
        let mut slot = SlotGuard {
            drain: self,
            slot: None,
        };
        poll_fn(|cx| {
            if self.on.get() {
                return Poll::Ready(());
            }
            let mut slots = self.slots.borrow_mut();
            let i = *slot
                .slot
                .get_or_insert_with(|| match self.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                });
            slots[i] = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Frees a wait's slot when the wait ends, however it ends.
struct SlotGuard<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(s) = self.drain.slots.borrow_mut().get_mut(i) {
                *s = None;
            }
            self.drain.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Context;

    #[test]
    fn guards_count_open_connections() {
        let c = Connections::default();
        let a = c.open();
        let b = c.open();
        assert_eq!(c.count(), 2);
        drop(a);
        assert_eq!(c.count(), 1);
        drop(b);
        assert_eq!(c.count(), 0);
    }

    #[test]
    fn drain_waits_leave_nothing_behind() {
        let d = Drain::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut f = std::pin::pin!(d.wait());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert_eq!(d.waiting(), 1);
        }
        assert_eq!(d.waiting(), 0);
        assert_eq!(d.slots.borrow().len(), 1, "slots are reused");
        let mut a = Box::pin(d.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        d.start();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(std::pin::pin!(d.wait()).poll(&mut cx).is_ready());
    }
}
