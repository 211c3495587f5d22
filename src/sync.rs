//! The loom shim: every primitive that crosses threads is imported from here.
//!
//! Under `--cfg loom` it re-exports loom's modelled primitives and a small bounded channel
//! built from them (loom cannot model crossbeam itself); otherwise std's primitives and
//! crossbeam's channel. The handoff and the batch collector use only what this module
//! exports, so `loom-tests/` checks the real code, not a copy of it.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::{Arc, Condvar, Mutex};
#[cfg(loom)]
pub use loom::thread;

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Arc, Condvar, Mutex};
#[cfg(not(loom))]
pub use std::thread;

/// A bounded multi-producer channel with crossbeam's API (the subset the handoff uses).
pub mod channel {
    #[cfg(not(loom))]
    pub use crossbeam_channel::{
        Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded,
    };

    #[cfg(loom)]
    pub use self::model::{
        Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded,
    };

    /// A bounded MPSC queue over loom's `Mutex` and `Condvar`, with crossbeam's semantics:
    /// `try_send` fails when full or when the receiver is gone, `recv` blocks until a message
    /// arrives or every sender is dropped and the queue is empty. Time does not exist in a
    /// loom model, so `recv_deadline` on an empty queue answers `Timeout` at once: "the
    /// linger expired" is then one of the interleavings the model explores.
    #[cfg(loom)]
    mod model {
        use super::super::{Arc, Condvar, Mutex};
        use std::collections::VecDeque;

        struct State<T> {
            queue: VecDeque<T>,
            senders: usize,
            receiver_alive: bool,
        }

        struct Inner<T> {
            state: Mutex<State<T>>,
            ready: Condvar,
            cap: usize,
        }

        pub struct Sender<T>(Arc<Inner<T>>);
        pub struct Receiver<T>(Arc<Inner<T>>);

        #[derive(Debug, PartialEq, Eq)]
        pub enum TrySendError<T> {
            Full(T),
            Disconnected(T),
        }
        #[derive(Debug, PartialEq, Eq)]
        pub enum TryRecvError {
            Empty,
            Disconnected,
        }
        #[derive(Debug, PartialEq, Eq)]
        pub enum RecvTimeoutError {
            Timeout,
            Disconnected,
        }
        #[derive(Debug, PartialEq, Eq)]
        pub struct RecvError;

        pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
            let inner = Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    senders: 1,
                    receiver_alive: true,
                }),
                ready: Condvar::new(),
                cap,
            });
            (Sender(inner.clone()), Receiver(inner))
        }

        impl<T> Sender<T> {
            pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
                let mut st = self.0.state.lock().unwrap();
                if !st.receiver_alive {
                    return Err(TrySendError::Disconnected(msg));
                }
                if st.queue.len() >= self.0.cap {
                    return Err(TrySendError::Full(msg));
                }
                st.queue.push_back(msg);
                drop(st);
                self.0.ready.notify_one();
                Ok(())
            }
            pub fn len(&self) -> usize {
                self.0.state.lock().unwrap().queue.len()
            }
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> Clone for Sender<T> {
            fn clone(&self) -> Self {
                self.0.state.lock().unwrap().senders += 1;
                Sender(self.0.clone())
            }
        }

        impl<T> Drop for Sender<T> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock().unwrap();
                st.senders -= 1;
                let last = st.senders == 0;
                drop(st);
                if last {
                    self.0.ready.notify_all();
                }
            }
        }

        impl<T> Receiver<T> {
            pub fn recv(&self) -> Result<T, RecvError> {
                let mut st = self.0.state.lock().unwrap();
                loop {
                    if let Some(m) = st.queue.pop_front() {
                        return Ok(m);
                    }
                    if st.senders == 0 {
                        return Err(RecvError);
                    }
                    st = self.0.ready.wait(st).unwrap();
                }
            }
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                let mut st = self.0.state.lock().unwrap();
                match st.queue.pop_front() {
                    Some(m) => Ok(m),
                    None if st.senders == 0 => Err(TryRecvError::Disconnected),
                    None => Err(TryRecvError::Empty),
                }
            }
            pub fn recv_deadline(
                &self,
                _deadline: std::time::Instant,
            ) -> Result<T, RecvTimeoutError> {
                match self.try_recv() {
                    Ok(m) => Ok(m),
                    Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            }
            pub fn len(&self) -> usize {
                self.0.state.lock().unwrap().queue.len()
            }
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> Drop for Receiver<T> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap().receiver_alive = false;
            }
        }
    }
}
