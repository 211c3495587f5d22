//! Benchmarks of the pure hot code of the server: everything a request, a reply from Redis or
//! a queued order goes through between the socket and the next await, without the IO itself.
//!
//! The performance claims of the project live here, not in unit tests (those check behaviour
//! only). Each group isolates one step so that a regression can be traced to it:
//!
//! - `http_frame`: `http::request::frame` on a wrk-style `POST /api/orders`, a `GET /health`,
//!   a pipelined buffer of 16 requests (framed one after the other, as a connection does), and
//!   a chunked body (which is copied out of the buffer). Per request.
//! - `http_response`: `Response::json` (serde) + `write_to` (head, `Date`, body) into a reused
//!   output buffer, for the 202 of an accepted order and the 409 of `InsufficientStock`; the
//!   router itself (`api::dispatch`) needs a worker's `Local` and is not measured here.
//! - `api_orders_parse`: `api::orders::parse`, the decode + validation of an order body (valid,
//!   numbers as strings, and a 422 with every field wrong).
//! - `api_webhook`: `api::webhook::parse` and `api::webhook::verify` (HMAC-SHA256 of the raw
//!   body, hex decode, constant-time compare), for a good and a bad signature.
//! - `timer_wheel`: `local::wheel::TimerWheel` with the server's geometry (100 ms x 1024
//!   slots) and 10 000 reservations due over ten minutes: inserting them, and advancing in
//!   100 ms steps until all have fired. Per entry.
//! - `writer_batch`: `writer::batch::collect` on a real `handoff` holding 1 000 one-row
//!   messages, two batches of `max_rows = 500` with no linger; and the same with the 1 000
//!   permits + sends included (the workers' side of the queue, uncontended). Per message.
//! - `redis_decode`: `redis::scripts::reserve::decode_reserve` for 1 and 16 requests and
//!   `decode_transition` (a `pay.lua` reply), on replies shaped like the scripts' own. The
//!   reply is cloned outside the measurement. Per request.
//! - `redis_encode`: `redis::scripts::reserve_call` + `encode(false)` (EVALSHA) for 1 and 16
//!   requests, and for 1 request with the per-request `Keys::product_keys` included.
//!
//! Run with `cargo bench --bench hot_path` (one group: `-- timer_wheel`); the run itself takes
//! about 75 s after the build. Every figure is one thread with no contention, and is only
//! meaningful on an otherwise idle machine: the server runs one such thread per core.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashsale::api::{orders, webhook};
use flashsale::domain::{ProductId, new_reference};
use flashsale::handoff::{HandoffRx, HandoffTx, handoff};
use flashsale::http::request::{Framing, frame};
use flashsale::http::response::ApiError;
use flashsale::local::wheel::{Expiring, TimerWheel};
use flashsale::redis::keys::Keys;
use flashsale::redis::scripts::reserve::{
    ReserveReply, ReserveRequest, decode_reserve, reserve_call,
};
use flashsale::redis::scripts::transition::{TransitionReply, decode_transition};
use flashsale::writer::batch::{BatchPolicy, Batched, Collected, collect};
use hmac::{KeyInit, Mac};
use redis_async::resp::RespValue;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A fixed "now" in Unix milliseconds, so every run builds the same inputs.
const NOW_MS: i64 = 1_760_000_000_000;
/// The default hold (`FLASHSALE_HOLD_SECS` = 600).
/// The lifetime of idempotency entries the benchmarked calls carry.
const IDEM_TTL_SECS: u64 = 86_400;
const HOLD_MS: i64 = 600_000;
const ORDER_BODY: &str = r#"{"product_id":1,"qty":1,"user_id":"user-4821"}"#;
const IDEMPOTENCY_KEY: &str = "9b2f6c1e-4a7d-4e0b-8f3a-2d5c7e9a1b04";

fn pid() -> ProductId {
    ProductId::new(1).expect("1 is a valid product id")
}

/// The `i`-th order reference of product 1, as the server makes them.
fn reference(i: u64) -> String {
    // A ULID-shaped value: 48-bit millisecond time, then 80 "random" bits.
    let ulid =
        (u128::from(NOW_MS as u64) << 80) | u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    new_reference(pid(), ulid)
}

/// A small deterministic generator (xorshift64*), so inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

// ---------------------------------------------------------------------------------------
// HTTP framing

fn post_order_request() -> Vec<u8> {
    format!(
        "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {IDEMPOTENCY_KEY}\r\nContent-Length: {}\r\n\r\n{ORDER_BODY}",
        ORDER_BODY.len()
    )
    .into_bytes()
}

fn chunked_order_request() -> Vec<u8> {
    let (a, b) = ORDER_BODY.split_at(ORDER_BODY.len() / 2);
    format!(
        "POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {IDEMPOTENCY_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .into_bytes()
}

/// Asserts that `buf` is exactly one complete request with this body.
fn check_one(buf: &[u8], body: &[u8]) {
    match frame(buf) {
        Framing::Complete(r, n) => {
            assert_eq!(n, buf.len());
            assert_eq!(&*r.body, body);
        }
        other => panic!("{other:?}"),
    }
}

/// Frames every request of `buf` in turn; returns how many there were.
fn frame_all(buf: &[u8]) -> usize {
    let mut rest = buf;
    let mut n = 0;
    while !rest.is_empty() {
        match frame(black_box(rest)) {
            Framing::Complete(req, used) => {
                black_box(&req);
                rest = &rest[used..];
                n += 1;
            }
            other => panic!("pipelined buffer did not frame: {other:?}"),
        }
    }
    n
}

fn http_frame(c: &mut Criterion) {
    let post = post_order_request();
    let get = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".to_vec();
    let pipelined = post.repeat(16);
    let chunked = chunked_order_request();
    check_one(&post, ORDER_BODY.as_bytes());
    check_one(&get, b"");
    check_one(&chunked, ORDER_BODY.as_bytes());
    assert_eq!(frame_all(&pipelined), 16);

    let mut g = c.benchmark_group("http_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("post_order", |b| {
        b.iter(|| black_box(frame(black_box(&post))))
    });
    g.bench_function("get_health", |b| {
        b.iter(|| black_box(frame(black_box(&get))))
    });
    g.bench_function("post_order_chunked", |b| {
        b.iter(|| black_box(frame(black_box(&chunked))))
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipelined_16_post_order", |b| {
        b.iter(|| frame_all(black_box(&pipelined)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Response encoding

fn http_response(c: &mut Criterion) {
    let reference = reference(1);
    let pid = flashsale::domain::ProductId::new(1).unwrap();
    // The connection's output buffer, reused from one response to the next.
    let mut out = Vec::with_capacity(1024);
    orders::accepted(&reference, pid, 1, 4_000, NOW_MS + HOLD_MS).write_to(&mut out, true, false);
    assert!(out.starts_with(b"HTTP/1.1 202 Accepted\r\n"));
    out.clear();
    ApiError::InsufficientStock
        .into_response()
        .write_to(&mut out, true, false);
    assert!(out.starts_with(b"HTTP/1.1 409 Conflict\r\n"));

    let mut g = c.benchmark_group("http_response");
    g.throughput(Throughput::Elements(1));
    g.bench_function("accepted_202", |b| {
        b.iter(|| {
            out.clear();
            orders::accepted(&reference, pid, 1, 4_000, black_box(NOW_MS + HOLD_MS))
                .write_to(&mut out, true, false);
            black_box(&out);
        })
    });
    g.bench_function("insufficient_stock_409", |b| {
        b.iter(|| {
            out.clear();
            black_box(ApiError::InsufficientStock)
                .into_response()
                .write_to(&mut out, true, false);
            black_box(&out);
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Request bodies

fn api_orders_parse(c: &mut Criterion) {
    let valid = ORDER_BODY.as_bytes();
    let strings = br#"{"product_id":"1","qty":"2","user_id":"user-4821"}"#;
    let invalid = br#"{"product_id":"abc","qty":0,"user_id":5}"#;
    let key = Some(IDEMPOTENCY_KEY.as_bytes());
    assert!(orders::parse(valid, key).is_ok());
    assert_eq!(orders::parse(strings, key).map(|o| o.qty), Ok(2));
    match orders::parse(invalid, key) {
        Err(e @ ApiError::Validation(_)) => assert_eq!(e.status(), 422),
        other => panic!("{other:?}"),
    }

    let mut g = c.benchmark_group("api_orders_parse");
    g.throughput(Throughput::Elements(1));
    for (name, body) in [
        ("valid", valid),
        ("numeric_strings", &strings[..]),
        ("invalid_422", &invalid[..]),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| black_box(orders::parse(black_box(body), black_box(key))))
        });
    }
    g.finish();
}

fn sign(key: &[u8], body: &[u8]) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key size");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

fn api_webhook(c: &mut Criterion) {
    let secret = b"whsec_4f0c2b7e9a1d5e3f8b6a0c2d4e6f8a1b";
    let body = format!(
        r#"{{"order_reference":"{}","status":"success"}}"#,
        reference(1)
    )
    .into_bytes();
    let mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("any key size");
    let good = sign(secret, &body).into_bytes();
    let bad = sign(b"another secret", &body).into_bytes();
    assert!(webhook::verify(&mac, Some(&good), &body));
    assert!(!webhook::verify(&mac, Some(&bad), &body));
    assert!(webhook::parse(&body).is_ok_and(|v| v.success));

    let mut g = c.benchmark_group("api_webhook");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(webhook::parse(black_box(&body))))
    });
    g.bench_function("verify_good_signature", |b| {
        b.iter(|| webhook::verify(&mac, black_box(Some(&good[..])), black_box(&body)))
    });
    g.bench_function("verify_bad_signature", |b| {
        b.iter(|| webhook::verify(&mac, black_box(Some(&bad[..])), black_box(&body)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Timer wheel

const WHEEL_ENTRIES: usize = 10_000;
/// Deadlines are spread uniformly over this span after `NOW_MS`.
const WHEEL_SPAN_MS: i64 = 600_000;
const WHEEL_STEP_MS: i64 = 100;

/// The server's wheel (`local::expiries`: 100 ms ticks, 1024 slots).
fn new_wheel() -> TimerWheel<Expiring> {
    TimerWheel::new(100, 1024, NOW_MS)
}

/// The entries to insert: deadline and the reaper's item, in arrival order.
fn wheel_entries() -> Vec<(i64, Expiring)> {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    (0..WHEEL_ENTRIES as u64)
        .map(|_| {
            let deadline = NOW_MS + (rng.next() % WHEEL_SPAN_MS as u64) as i64;
            (deadline, Expiring::new(pid(), deadline))
        })
        .collect()
}

fn fill(wheel: &mut TimerWheel<Expiring>, entries: Vec<(i64, Expiring)>) {
    for (deadline, item) in entries {
        wheel.insert(deadline, item);
    }
}

/// Advances in `WHEEL_STEP_MS` steps until the span has passed; returns what fired.
fn drain(wheel: &mut TimerWheel<Expiring>) -> Vec<Expiring> {
    let mut fired = Vec::with_capacity(WHEEL_ENTRIES);
    let mut now = NOW_MS;
    while now <= NOW_MS + WHEEL_SPAN_MS {
        wheel.advance(now, &mut fired);
        now += WHEEL_STEP_MS;
    }
    fired
}

fn timer_wheel(c: &mut Criterion) {
    {
        let mut w = new_wheel();
        fill(&mut w, wheel_entries());
        assert_eq!(w.len(), WHEEL_ENTRIES);
        assert_eq!(drain(&mut w).len(), WHEEL_ENTRIES);
        assert!(w.is_empty());
    }

    let mut g = c.benchmark_group("timer_wheel");
    // An iteration takes a millisecond or more: fewer samples keep the group within 2 s.
    g.sample_size(20);
    g.throughput(Throughput::Elements(WHEEL_ENTRIES as u64));
    // Inputs (10 000 references) are built outside the measurement; the wheel is fresh, so
    // its buckets grow as they would in the first rotation after start.
    g.bench_function("insert_10k", |b| {
        b.iter_batched(
            || (new_wheel(), wheel_entries()),
            |(mut w, entries)| {
                fill(&mut w, entries);
                w
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("advance_100ms_steps_fire_10k", |b| {
        b.iter_batched(
            || {
                let mut w = new_wheel();
                fill(&mut w, wheel_entries());
                w
            },
            |mut w| {
                let fired = drain(&mut w);
                (w, fired)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("insert_then_fire_10k", |b| {
        b.iter_batched(
            || (new_wheel(), wheel_entries()),
            |(mut w, entries)| {
                fill(&mut w, entries);
                let fired = drain(&mut w);
                (w, fired)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Writer batching

/// A one-row message, the shape of `WriterMsg::Order` for the collector.
struct Row(#[allow(dead_code)] u64);

impl Batched for Row {
    fn rows(&self) -> usize {
        1
    }
    fn urgent(&self) -> bool {
        false
    }
}

const QUEUED: usize = 1_000;

fn batch_policy() -> BatchPolicy {
    BatchPolicy {
        max_rows: 500,
        linger: Duration::ZERO,
        idle: Duration::from_millis(1),
    }
}

fn send_all(tx: &HandoffTx<Row>) {
    for i in 0..QUEUED as u64 {
        if tx.try_reserve().expect("room").send(Row(i)).is_err() {
            panic!("receiver gone");
        }
    }
}

/// Collects the queue as two full batches; `out` is the writer's reused batch buffer.
fn collect_two(rx: &HandoffRx<Row>, policy: &BatchPolicy, out: &mut Vec<Row>) {
    for _ in 0..2 {
        out.clear();
        let r = collect(rx, policy, out, Instant::now);
        debug_assert_eq!(r, Collected::Batch);
        debug_assert_eq!(out.len(), 500);
        black_box(&*out);
    }
}

fn writer_batch(c: &mut Criterion) {
    let policy = batch_policy();
    {
        let (tx, rx) = handoff(QUEUED);
        send_all(&tx);
        let mut out = Vec::new();
        for _ in 0..2 {
            out.clear();
            assert_eq!(
                collect(&rx, &policy, &mut out, Instant::now),
                Collected::Batch
            );
            assert_eq!(out.len(), 500);
        }
        assert_eq!(tx.depth(), 0);
    }

    let mut g = c.benchmark_group("writer_batch");
    g.throughput(Throughput::Elements(QUEUED as u64));
    g.bench_function("collect_1000_prefilled_max500", |b| {
        b.iter_batched(
            || {
                let (tx, rx) = handoff(QUEUED);
                send_all(&tx);
                (tx, rx, Vec::with_capacity(500))
            },
            |(tx, rx, mut out)| {
                collect_two(&rx, &policy, &mut out);
                (tx, rx, out)
            },
            BatchSize::SmallInput,
        )
    });
    let (tx, rx) = handoff(QUEUED);
    let mut out = Vec::with_capacity(500);
    g.bench_function("permit_send_and_collect_1000_max500", |b| {
        b.iter(|| {
            send_all(&tx);
            collect_two(&rx, &policy, &mut out);
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Script replies

fn bulk(s: &str) -> RespValue {
    RespValue::BulkString(s.as_bytes().to_vec())
}

/// A `reserve.lua` reply of `n` successful reservations: `{0, ref, amount, exp, now}` each.
fn reserve_reply(n: u64) -> RespValue {
    let refs: Vec<String> = (0..n).map(reference).collect();
    let mut items = vec![
        bulk(&(NOW_MS + HOLD_MS).to_string()),
        bulk(&NOW_MS.to_string()),
        bulk(&format!("{}|pending", refs.join(","))),
    ];
    items.extend((0..n).map(|_| bulk("0|4000")));
    RespValue::Array(items)
}

/// A `pay.lua` reply: paid by this call, with the record.
fn pay_reply() -> RespValue {
    RespValue::Array(vec![
        RespValue::Integer(0),
        RespValue::Integer(1),
        bulk("paid"),
        bulk("user-4821"),
        bulk("1"),
        bulk("4000"),
        bulk(&(NOW_MS + HOLD_MS).to_string()),
        bulk(&NOW_MS.to_string()),
    ])
}

fn redis_decode(c: &mut Criterion) {
    let pid = pid();
    let reference = reference(1);
    for n in [1, 16] {
        let r = decode_reserve(reserve_reply(n), pid, n as usize).expect("well-formed");
        let r = r.expect("loaded");
        assert_eq!(r.replies.len(), n as usize);
        assert!(matches!(r.replies[0], ReserveReply::Reserved { .. }));
    }
    assert!(matches!(
        decode_transition(pay_reply(), pid, &reference),
        Ok(TransitionReply::Done { changed: true, .. })
    ));

    let mut g = c.benchmark_group("redis_decode");
    for n in [1u64, 16] {
        let reply = reserve_reply(n);
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("decode_reserve", n), &reply, |b, reply| {
            b.iter_batched(
                || reply.clone(),
                |v| decode_reserve(v, pid, n as usize),
                BatchSize::SmallInput,
            )
        });
    }
    let reply = pay_reply();
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_transition_paid", |b| {
        b.iter_batched(
            || reply.clone(),
            |v| decode_transition(v, pid, &reference),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Script calls

fn redis_encode(c: &mut Criterion) {
    let keys = Keys::new("fs");
    let pid = pid();
    let pk = keys.product_keys(pid);
    let refs: Vec<String> = (0..16).map(reference).collect();
    let idem: Vec<String> = (0..16)
        .map(|i| keys.idem(pid, "user:user-4821", &format!("{IDEMPOTENCY_KEY}-{i}")))
        .collect();
    let reqs: Vec<ReserveRequest<'_>> = refs
        .iter()
        .zip(&idem)
        .map(|(r, k)| ReserveRequest {
            reference: r,
            qty: 1,
            user: "user-4821",
            idem_key: Some(k),
        })
        .collect();
    let one = reserve_call(&keys, &pk, pid, HOLD_MS, IDEM_TTL_SECS, &reqs[..1]).encode(false);
    // 3 + 5 product keys + 2 keys and 4 arguments per request + hold, lifetime and count.
    assert!(one.starts_with(b"*17\r\n$7\r\nEVALSHA\r\n"));

    let mut g = c.benchmark_group("redis_encode");
    for n in [1usize, 16] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("reserve_call_evalsha", n),
            &reqs[..n],
            |b, reqs| {
                b.iter(|| {
                    reserve_call(&keys, &pk, pid, HOLD_MS, IDEM_TTL_SECS, black_box(reqs))
                        .encode(false)
                })
            },
        );
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("reserve_call_evalsha_with_product_keys/1", |b| {
        b.iter(|| {
            let pk = keys.product_keys(black_box(pid));
            reserve_call(
                &keys,
                &pk,
                pid,
                HOLD_MS,
                IDEM_TTL_SECS,
                black_box(&reqs[..1]),
            )
            .encode(false)
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------

/// Short runs: the 24 benchmarks take about a minute together. Enough for the steps measured
/// here (nanoseconds to a few hundred microseconds each) to be stable to a few percent.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = http_frame, http_response, api_orders_parse, api_webhook, timer_wheel,
        writer_batch, redis_decode, redis_encode
}
criterion_main!(benches);
