//! The process as a supervisor sees it: it starts again at once after it stopped, and it is
//! never half alive (a dead thread takes the process down; a panic in a request is contained).

use crate::common::*;

/// A deploy script or a supervisor starts the server again the moment the old one exited. On
/// io_uring the old process's listening sockets used to outlive it for a moment (pending
/// accepts hold them until the kernel tears the ring down), and the new one refused to start
/// ("another process already listens") while nothing listened.
#[test]
fn an_immediate_restart_after_sigterm_always_starts() {
    let env = Env::new();
    let product = env.product(1_000, 100);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    for round in 0..8 {
        let mut s = Server::start_with(&env, &[("FLASHSALE_LISTEN", &listen)]);
        let mut c = s.client();
        assert_eq!(c.get("/health").status, 200, "round {round}");
        assert_eq!(c.order(product, 1).status, 202, "round {round}");
        // An idle keep-alive connection at shutdown, as a load balancer keeps them.
        let _idle = s.client().get("/health");
        let status = s.terminate();
        assert!(status.success(), "round {round}: exit {status:?}");
        assert!(
            !s.logs().contains("already listens"),
            "round {round}: {}",
            s.logs()
        );
    }
    let s = Server::start_with(&env, &[("FLASHSALE_LISTEN", &listen)]);
    assert_eq!(s.client().get("/health").status, 200);
}

/// After a crash (SIGKILL here) nothing releases the listeners but the kernel's teardown of
/// the process's rings: the next start waits for the port instead of refusing it.
#[test]
fn an_immediate_restart_after_sigkill_starts() {
    let env = Env::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    for round in 0..4 {
        let mut s = Server::start_with(&env, &[("FLASHSALE_LISTEN", &listen)]);
        assert_eq!(s.client().get("/health").status, 200, "round {round}");
        s.kill9();
    }
    let s = Server::start_with(&env, &[("FLASHSALE_LISTEN", &listen)]);
    assert_eq!(s.client().get("/health").status, 200);
}

/// A second server on a port a live server holds is still refused, and says why.
#[test]
fn a_port_held_by_a_live_server_is_still_refused() {
    let env = Env::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let first = Server::start_with(&env, &[("FLASHSALE_LISTEN", &listen)]);
    let out = env
        .command("serve")
        .env("FLASHSALE_LISTEN", &listen)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process already listens"), "{err}");
    assert_eq!(first.client().get("/health").status, 200);
}

/// A panic while answering a request ends that connection only: the worker goes on serving
/// every other connection, the panic is counted, and the process stays ready.
#[cfg(feature = "failpoints")]
#[test]
fn a_panic_in_a_request_ends_only_its_connection() {
    let env = Env::new();
    let product = env.product(1_000, 100);
    let s = Server::start_with(&env, &[("FAILPOINTS", "product_get=panic")]);
    // Over many connections, so both workers meet the panic.
    for i in 0..16 {
        let mut c = s.client();
        let r = c.try_raw(b"GET /api/products/1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(
            r.is_none(),
            "connection {i}: the panicking request got {r:?}"
        );
    }
    for i in 0..32 {
        let mut c = s.client();
        assert_eq!(c.get("/health").status, 200, "connection {i}");
        assert_eq!(c.order(product, 1).status, 202, "connection {i}");
        assert_eq!(c.get("/ready").status, 200, "connection {i}");
    }
    let metrics = String::from_utf8(s.client().get("/metrics").body).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("flashsale_panics_total{place=\"request\"}"))
        .unwrap_or_else(|| panic!("no panic counted:\n{metrics}"));
    assert!(line.ends_with(" 16"), "{line}");
    assert!(
        s.logs().matches("panic").count() >= 16,
        "each panic is logged"
    );
}

/// A worker's own task (here a reservation's flush task, outside any connection) panics: the
/// whole process goes down with exit 70, nothing is left listening, and what was accepted
/// before is in PostgreSQL after the next start.
#[cfg(feature = "failpoints")]
#[test]
fn a_dead_worker_thread_takes_the_process_down() {
    let env = Env::new();
    let product = env.product(1_000, 100);
    let mut s = Server::start_with(&env, &[("FAILPOINTS", "reserve_call=panic")]);
    let addr = s.addr;
    let r = s.client().try_order(product, 1);
    assert!(r.is_none(), "{r:?}");
    let status = s.wait_exit();
    assert_eq!(status.code(), Some(70), "{}", s.logs());
    // Once the process is gone nothing listens. The kernel may still be tearing down the
    // exited process's io_uring (which held the listener) for a moment: wait for that, as
    // `serve` itself does before refusing a port (a clean-clone CI run saw it once).
    wait_until("nothing listens once the process is gone", || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    });
    let logs = s.logs();
    assert!(logs.contains("a thread died of a panic"), "{logs}");
    let s = Server::start(&env);
    assert_eq!(s.client().order(product, 1).status, 202);
    env.assert_conserved(product, 1_000);
}

/// The reader dies: `/ready` stops saying ready and the process exits 70 instead of living on
/// with lookups that never answer.
#[cfg(feature = "failpoints")]
#[test]
fn a_dead_reader_takes_the_process_down() {
    let env = Env::new();
    let mut s = Server::start_with(&env, &[("FAILPOINTS", "reader_message=panic")]);
    let r = s
        .client()
        .try_raw(b"GET /api/orders/nope HTTP/1.1\r\nHost: t\r\n\r\n");
    if let Some(r) = r {
        assert!(r.status >= 500, "{r:?}");
    }
    let status = s.wait_exit();
    assert_eq!(status.code(), Some(70), "{}", s.logs());
}

/// The writer dies: the process does not go on taking orders that never reach PostgreSQL
/// while `/ready` says ready; it exits 70, and the orders it accepted (in the Redis journal)
/// are written by the next start.
#[cfg(feature = "failpoints")]
#[test]
fn a_dead_writer_takes_the_process_down_and_nothing_accepted_is_lost() {
    let env = Env::new();
    let product = env.product(1_000, 100);
    let mut s = Server::start_with(&env, &[("FAILPOINTS", "writer_batch=panic")]);
    let mut accepted = Vec::new();
    let mut c = s.client();
    if let Some(r) = c.try_order(product, 1)
        && r.status == 202
    {
        accepted.push(r.json()["order_reference"].as_str().unwrap().to_string());
    }
    let status = s.wait_exit();
    assert_eq!(status.code(), Some(70), "{}", s.logs());
    assert!(s.logs().contains("thread=\"writer\""), "{}", s.logs());
    let s = Server::start(&env);
    env.wait_rows(&accepted);
    assert_eq!(s.client().order(product, 1).status, 202);
    env.assert_conserved(product, 1_000);
}
