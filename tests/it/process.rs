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
