//! Loom models of the handoff (`flashsale::handoff`) and of the writer's batch collector
//! (`flashsale::writer::batch`), driven through the crate's `sync` shim: the code under test is
//! the real code, built with `--cfg loom` so that its atomics, `Arc`, mutexes and channel are
//! loom's. Run them with `scripts/loom.sh`; without `--cfg loom` this file is empty.
//!
//! - `a_`: exactly-once delivery with a close racing two producers;
//! - `b_`: back-pressure at capacity 1 (refused `Full`, nothing reserved, freed on receipt);
//! - `c_`: the writer barrier (everything sent before it is committed before it completes);
//! - `d_`: the shutdown order (the writer loop stops only when no message can arrive any more,
//!   whether the senders are dropped or the queue is closed with senders alive).
//!
//! Models stay small (two producers, one or two messages each, the main thread as the
//! consumer) so that the whole file runs in seconds with `LOOM_MAX_PREEMPTIONS=2`.
#![cfg(loom)]

use flashsale::handoff::{HandoffRx, HandoffTx, Recv, Refused, handoff};
use flashsale::sync::{Arc, AtomicUsize, Condvar, Mutex, Ordering, thread};
use flashsale::writer::batch::{BatchPolicy, Batched, Collected, collect};
use std::time::{Duration, Instant};

/// What one producer did: the messages handed over, and the ones refused.
#[derive(Debug, Default)]
struct Outcome {
    sent: Vec<u32>,
    refused: Vec<(u32, Refused)>,
}

/// Offers `msgs` in order, one permit each, and stops at the first `Closed` (a worker stops
/// taking work once shutdown has begun). The callers size the queue for every message, so a
/// refusal can only come from the close, and must then say `Closed`.
fn produce<M: From<u32>>(tx: &HandoffTx<M>, msgs: &[u32]) -> Outcome {
    let mut out = Outcome::default();
    for &m in msgs {
        match tx.try_reserve() {
            Ok(permit) => {
                assert!(permit.send(M::from(m)).is_ok(), "the receiver is alive");
                out.sent.push(m);
            }
            Err(r) => {
                assert_eq!(
                    r,
                    Refused::Closed,
                    "refused {m} although the queue has room for every message"
                );
                out.refused.push((m, r));
                // Closed is final: every later reservation is refused too.
                assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
                break;
            }
        }
    }
    out
}

/// Checks that `got` is exactly the union of what the producers sent, each message once, in
/// each producer's order, and that no refused message slipped through.
fn check_exactly_once(got: &[u32], outcomes: &[&Outcome]) {
    let mut expected: Vec<u32> = outcomes.iter().flat_map(|o| o.sent.clone()).collect();
    expected.sort_unstable();
    let mut sorted = got.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        sorted, expected,
        "every message sent is received exactly once"
    );
    for o in outcomes {
        let order: Vec<u32> = got.iter().copied().filter(|m| o.sent.contains(m)).collect();
        assert_eq!(order, o.sent, "one producer's messages arrive in its order");
        for (m, _) in &o.refused {
            assert!(!got.contains(m), "refused message {m} was received");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a. Two producers, one consumer, a close racing with them.
// ---------------------------------------------------------------------------------------------

/// Producers drop their senders when done; the main thread closes at an arbitrary point and
/// then receives until every sender is gone (the blocking `recv`). Every message sent is
/// received exactly once and in each producer's order, and a message refused after the close
/// is never received. (How the writer decides to stop is the business of the `d_` models.)
#[test]
fn a_two_producers_close_exactly_once() {
    loom::model(|| {
        // Room for every message and every refused attempt: only the close refuses.
        let (tx, rx) = handoff::<u32>(8);
        let producers: Vec<_> = [[10, 11], [20, 21]]
            .into_iter()
            .map(|msgs| {
                let tx = tx.clone();
                thread::spawn(move || produce(&tx, &msgs))
            })
            .collect();
        tx.closer().close();
        assert_eq!(
            tx.try_reserve().err(),
            Some(Refused::Closed),
            "closed is closed"
        );
        drop(tx);
        let mut got = Vec::new();
        while let Some(m) = rx.recv() {
            got.push(m);
        }
        let outcomes: Vec<Outcome> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        check_exactly_once(&got, &outcomes.iter().collect::<Vec<_>>());
        assert_eq!(rx.try_recv(), Recv::Closed, "nothing is left behind");
        assert_eq!(rx.depth(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// b. Back-pressure: capacity 1.
// ---------------------------------------------------------------------------------------------

/// Two producers race for the one place while nobody consumes: exactly one gets it, the other
/// is refused `Full` and has reserved nothing. Once the consumer has received, a permit is
/// available again.
#[test]
fn b_capacity_one_refuses_full_and_frees_on_receive() {
    loom::model(|| {
        let (tx, rx) = handoff::<u32>(1);
        // Stands for the Redis change a producer makes only once it holds a permit.
        let reserved = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|m| {
                let tx = tx.clone();
                let reserved = reserved.clone();
                thread::spawn(move || match tx.try_reserve() {
                    Ok(permit) => {
                        reserved.fetch_add(1, Ordering::SeqCst);
                        permit.send(m).expect("a permit always finds room");
                        Ok(m)
                    }
                    Err(r) => Err(r),
                })
            })
            .collect();
        let results: Vec<_> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        let granted: Vec<u32> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(
            granted.len(),
            1,
            "capacity 1: exactly one permit: {results:?}"
        );
        assert!(
            results.contains(&Err(Refused::Full)),
            "the other is refused Full: {results:?}"
        );
        // The queued message still holds the place.
        assert_eq!(tx.try_reserve().err(), Some(Refused::Full));

        let mut received = vec![match rx.try_recv() {
            Recv::Msg(m) => m,
            other => panic!("expected the granted message, got {other:?}"),
        }];
        assert_eq!(received, granted);
        assert_eq!(reserved.load(Ordering::SeqCst), received.len());

        // After the receipt the place is free again.
        let permit = tx
            .try_reserve()
            .expect("a permit is available after the receipt");
        reserved.fetch_add(1, Ordering::SeqCst);
        permit.send(3).unwrap();
        match rx.try_recv() {
            Recv::Msg(m) => received.push(m),
            other => panic!("expected message 3, got {other:?}"),
        }
        assert_eq!(reserved.load(Ordering::SeqCst), received.len());
        assert_eq!(rx.depth(), 0);
    });
}

/// The same rule with the consumer running concurrently: each producer, while it holds its
/// permit, is refused a second one (`Full`), spins on `Full` until the consumer frees the
/// place, and its send never finds the channel full. At the end the reservations counted equal
/// the messages received.
#[test]
fn b_capacity_one_with_a_concurrent_consumer() {
    loom::model(|| {
        let (tx, rx) = handoff::<u32>(1);
        let reserved = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|m| {
                let tx = tx.clone();
                let reserved = reserved.clone();
                thread::spawn(move || {
                    loop {
                        match tx.try_reserve() {
                            Ok(permit) => {
                                assert_eq!(
                                    tx.try_reserve().err(),
                                    Some(Refused::Full),
                                    "a held permit fills a queue of one"
                                );
                                reserved.fetch_add(1, Ordering::SeqCst);
                                permit.send(m).expect("a permit always finds room");
                                return;
                            }
                            Err(Refused::Full) => thread::yield_now(),
                            Err(Refused::Closed) => panic!("nobody closes this queue"),
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut received = Vec::new();
        while let Some(m) = rx.recv() {
            received.push(m);
        }
        for p in producers {
            p.join().unwrap();
        }
        received.sort_unstable();
        assert_eq!(received, [1, 2]);
        assert_eq!(reserved.load(Ordering::SeqCst), received.len());
        assert_eq!(rx.depth(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// c. The writer barrier: everything sent before a barrier is committed before it completes.
// ---------------------------------------------------------------------------------------------

/// Completion of one barrier: the writer sets it after the commit, the producer waits on it.
#[derive(Default)]
struct Done {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn complete(&self) {
        *self.flag.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut done = self.flag.lock().unwrap();
        while !*done {
            done = self.cv.wait(done).unwrap();
        }
    }
}

enum Msg {
    Item(u32),
    Barrier(Arc<Done>),
}

impl Batched for Msg {
    fn rows(&self) -> usize {
        matches!(self, Msg::Item(_)) as usize
    }
    fn urgent(&self) -> bool {
        matches!(self, Msg::Barrier(_))
    }
}

/// A long linger and a frozen clock: only the barrier, a drained queue (the shim answers an
/// empty `recv_deadline` with `Timeout` at once) or `max_rows` end a batch.
const POLICY: BatchPolicy = BatchPolicy {
    max_rows: 2,
    linger: Duration::from_secs(3600),
    idle: Duration::ZERO,
};

/// The writer loop: collect a batch, commit its items to `log` (one lock = one transaction),
/// then complete the barriers it held. Returns when the handoff is closed and drained.
fn writer(rx: &HandoffRx<Msg>, log: &Mutex<Vec<u32>>) -> usize {
    let clock = Instant::now();
    let mut batches = 0;
    let mut out = Vec::new();
    loop {
        match collect(rx, &POLICY, &mut out, || clock) {
            Collected::Batch => {
                assert!(!out.is_empty());
                batches += 1;
                log.lock()
                    .unwrap()
                    .extend(out.iter().filter_map(|m| match m {
                        Msg::Item(i) => Some(*i),
                        Msg::Barrier(_) => None,
                    }));
                for m in out.drain(..) {
                    if let Msg::Barrier(done) = m {
                        done.complete();
                    }
                }
            }
            Collected::Idle => thread::yield_now(),
            Collected::Closed => return batches,
        }
    }
}

/// Two producers send items (two and one) and then a barrier, and wait for the barrier; the
/// main thread is the writer, with batches of at most two rows. When a producer sees its
/// barrier completed, every item it sent before it is in the committed log; at the end each
/// item was committed exactly once.
#[test]
fn c_barrier_completes_after_everything_before_it_is_committed() {
    loom::model(|| {
        let (tx, rx) = handoff::<Msg>(8);
        let log = Arc::new(Mutex::new(Vec::new()));
        let producers: Vec<_> = [&[1u32, 2][..], &[3]]
            .into_iter()
            .map(|items| {
                let tx = tx.clone();
                let log = log.clone();
                thread::spawn(move || {
                    let send = |m: Msg| {
                        let permit = tx.try_reserve().expect("room and not closed");
                        assert!(permit.send(m).is_ok(), "the writer is alive");
                    };
                    for &item in items {
                        send(Msg::Item(item));
                    }
                    let done = Arc::new(Done::default());
                    send(Msg::Barrier(done.clone()));
                    done.wait();
                    let log = log.lock().unwrap();
                    for item in items {
                        assert!(
                            log.contains(item),
                            "barrier completed before item {item} was committed"
                        );
                    }
                })
            })
            .collect();
        drop(tx);
        let batches = writer(&rx, &log);
        for p in producers {
            p.join().unwrap();
        }
        assert!(batches >= 1);
        let mut log = log.lock().unwrap().clone();
        log.sort_unstable();
        assert_eq!(log, [1, 2, 3], "each item committed exactly once");
    });
}

// ---------------------------------------------------------------------------------------------
// d. Shutdown order: the writer loop (`collect` until `Collected::Closed`) stops only when no
//    message can arrive any more.
// ---------------------------------------------------------------------------------------------

/// A one-row message of the shutdown models.
#[derive(Debug, PartialEq, Eq)]
struct Row(u32);

impl From<u32> for Row {
    fn from(id: u32) -> Self {
        Row(id)
    }
}

impl Batched for Row {
    fn rows(&self) -> usize {
        1
    }
    fn urgent(&self) -> bool {
        false
    }
}

/// The writer loop of the shutdown models: everything collected is "consumed".
fn consume_until_closed(rx: &HandoffRx<Row>) -> Vec<u32> {
    let clock = Instant::now();
    let policy = BatchPolicy {
        max_rows: 2,
        linger: Duration::ZERO,
        idle: Duration::ZERO,
    };
    let mut consumed = Vec::new();
    let mut out = Vec::new();
    loop {
        match collect(rx, &policy, &mut out, || clock) {
            Collected::Batch => consumed.extend(out.drain(..).map(|Row(id)| id)),
            Collected::Idle => thread::yield_now(),
            Collected::Closed => return consumed,
        }
    }
}

/// Close while every sender is still alive (monoio may never drop a parked worker's clone):
/// the writer must end through "closed and no permit outstanding", and only once every
/// permit-holding producer has sent and the queue is drained. The senders outlive the writer,
/// so a message sent after it stopped would be lost; the model checks that none is.
///
/// Loom models `SeqCst` accesses as `AcqRel` (its README, "Limitations"), so this model can
/// only pass if the close, the reservations and the writer's "closed and nothing outstanding"
/// check do not rely on a `SeqCst` order between two different atomics.
#[test]
fn d_close_with_senders_alive_drains_every_permit() {
    loom::model(|| {
        let (tx, rx) = handoff::<Row>(4);
        let closer = tx.closer();
        let producers: Vec<_> = [[10, 11], [20, 21]]
            .into_iter()
            .map(|msgs| {
                let tx = tx.clone();
                thread::spawn(move || {
                    let out = produce(&tx, &msgs);
                    (out, tx) // the sender is handed back alive
                })
            })
            .collect();
        closer.close();
        let consumed = consume_until_closed(&rx);
        let (outcomes, senders): (Vec<Outcome>, Vec<HandoffTx<Row>>) =
            producers.into_iter().map(|p| p.join().unwrap()).unzip();
        // Every producer is done and every sender still alive: had the writer stopped while a
        // permit was out, that message would now sit in the queue.
        assert_eq!(rx.try_recv(), Recv::Closed, "nothing was left in the queue");
        assert_eq!(rx.depth(), 0);
        check_exactly_once(&consumed, &outcomes.iter().collect::<Vec<_>>());
        assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
        drop(senders);
        drop(tx);
    });
}

/// No close: the writer ends because every sender is gone, after draining the queue.
#[test]
fn d_senders_dropped_ends_after_the_drain() {
    loom::model(|| {
        let (tx, rx) = handoff::<Row>(4);
        let producers: Vec<_> = [[10, 11], [20, 21]]
            .into_iter()
            .map(|msgs| {
                let tx = tx.clone();
                thread::spawn(move || produce(&tx, &msgs))
            })
            .collect();
        drop(tx);
        let consumed = consume_until_closed(&rx);
        let outcomes: Vec<Outcome> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        for o in &outcomes {
            assert!(o.refused.is_empty(), "nobody closed: {:?}", o.refused);
        }
        check_exactly_once(&consumed, &outcomes.iter().collect::<Vec<_>>());
        assert_eq!(consumed.len(), 4);
        assert_eq!(rx.try_recv(), Recv::Closed);
        assert_eq!(rx.depth(), 0);
    });
}

/// Both endings race: the producers drop their senders when done while shutdown closes the
/// queue, and a producer holds its permit across the close. Capacity 2 is exactly enough for
/// the two messages, so the late producer is refused only because of the close, and then with
/// `Closed` (`produce` asserts it).
#[test]
fn d_close_racing_with_the_last_senders() {
    loom::model(|| {
        let (tx, rx) = handoff::<Row>(2);
        let closer = tx.closer();
        // Taken before the close: must still be delivered.
        let early = {
            let tx = tx.clone();
            let closer = closer.clone();
            thread::spawn(move || {
                let permit = tx.try_reserve().expect("taken before the close");
                closer.close();
                assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
                assert!(
                    permit.send(Row(1)).is_ok(),
                    "the writer waits for this permit"
                );
            })
        };
        let late = {
            let tx = tx.clone();
            thread::spawn(move || produce::<Row>(&tx, &[2]))
        };
        drop(tx);
        let consumed = consume_until_closed(&rx);
        early.join().unwrap();
        let late = late.join().unwrap();
        let early = Outcome {
            sent: vec![1],
            refused: vec![],
        };
        check_exactly_once(&consumed, &[&early, &late]);
        assert_eq!(rx.try_recv(), Recv::Closed);
        assert_eq!(rx.depth(), 0);
    });
}

/// The close wins over a full queue: a producer that retries on `Full` and stops on `Closed`
/// (the rule of the workers) stops once the close has happened, even though the queue stays
/// full. Every attempt that starts after the producer has seen the close must say `Closed`.
#[test]
fn d_close_refuses_with_closed_even_when_full() {
    loom::model(|| {
        let (tx, rx) = handoff::<u32>(1);
        let held = tx.try_reserve().expect("an empty queue has room");
        let closer = {
            let closer = tx.closer();
            thread::spawn(move || closer.close())
        };
        let producer = {
            let tx = tx.clone();
            thread::spawn(move || {
                let closer = tx.closer();
                loop {
                    let after_close = closer.is_closed();
                    match tx.try_reserve() {
                        Ok(_) => panic!("a full queue granted a permit"),
                        Err(Refused::Closed) => return,
                        Err(Refused::Full) => {
                            assert!(!after_close, "refused Full, not Closed, after the close");
                            thread::yield_now();
                        }
                    }
                }
            })
        };
        producer.join().unwrap();
        closer.join().unwrap();
        assert!(
            held.send(1).is_ok(),
            "a permit taken before the close sends"
        );
        assert_eq!(tx.try_reserve().err(), Some(Refused::Closed));
        assert_eq!(rx.try_recv(), Recv::Msg(1));
        assert_eq!(rx.try_recv(), Recv::Closed);
    });
}
