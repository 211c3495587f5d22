//! One HTTP/1.1 connection: read, frame, handle each complete request in order, write every
//! response produced by one read in one write (pipelining), repeat.
//!
//! Buffers are allocated once per connection and reused (monoio's IO takes the buffer and
//! gives it back). The read buffer never holds more than one request's limits and one read
//! ([`READ_CAP`]): the framer refuses a request before it could need more, and complete
//! requests are handled before more is read. It shrinks back when the connection idles.
//!
//! Timeouts: the first request's head must be complete within `header_timeout` of the
//! accept, whether or not a byte was sent; a later request within `header_timeout` of its
//! first byte (one byte a second does not extend it); an idle keep-alive connection closes
//! after `idle_timeout`, or at once when shutdown starts. A timed-out read is dropped with its
//! buffer, which is fine because the connection is closed right after.

use crate::api;
use crate::domain::Unavailable;
use crate::http::request::{Framer, Framing, MAX_REQUEST_BYTES, Refusal};
use crate::http::response::ApiError;
use crate::limits::connections::Slot;
use crate::local::Local;
use crate::metrics::Route;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

/// Initial size of a connection's read buffer: a typical request (~250 bytes from wrk or ab)
/// fits, and an idle connection costs ~4 KiB in all (measured with 10 000 of them in
/// `hostile::thousands_of_idle_connections…`). It grows for large bodies and shrinks back.
const READ_BUF: usize = 1024;
/// Responses queued for one write at most: a client pipelining requests without reading the
/// answers gets them written (or times out) before more of its requests are handled.
const MAX_PENDING_WRITE: usize = 64 * 1024;
/// The longest a refused connection is kept to write its 503.
const REFUSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
/// The most the read buffer ever holds: one request at its limits, and what one read may
/// bring after it.
pub const READ_CAP: usize = MAX_REQUEST_BYTES + 4 * READ_BUF;

/// Closes a connection over a connection cap at once, with a 503 that needs nothing read: a
/// client that waits for an answer learns why, and the descriptor is free again within
/// `REFUSE_WITHIN` whatever the client does.
pub async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::with_capacity(256);
    ApiError::Unavailable(Unavailable::TooManyConnections)
        .into_response()
        .write_to(&mut out, false, false);
    let _ = monoio::time::timeout(REFUSE_WITHIN, stream.write_all(out)).await;
}

/// Serves one connection from `peer` until it closes. `accepted` is when it was accepted:
/// its first request's head must be complete within the header timeout of that moment.
pub async fn serve(
    w: Rc<Local>,
    mut stream: TcpStream,
    _slot: Slot,
    peer: IpAddr,
    accepted: Instant,
) {
    let _open = w.connections.open();
    let header_timeout = w.cfg().header_timeout;
    let idle_timeout = w.cfg().idle_timeout;
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    // Allocated by the first response, so a connection that never sends costs only `rbuf`.
    let mut wbuf: Vec<u8> = Vec::new();
    // Since when the request now in `rbuf` has been awaited: the accept for the first one,
    // then the first byte of each.
    let mut started: Option<Instant> = Some(accepted);
    let mut framer = Framer::default();
    let mut continue_sent = false;

    loop {
        let mut consumed = 0;
        let mut close = false;
        // Complete requests may remain in `rbuf` after this round (the write cap was hit):
        // they are handled before reading more.
        let mut more = false;
        while consumed < rbuf.len() {
            if wbuf.len() >= MAX_PENDING_WRITE {
                more = true;
                break;
            }
            match framer.frame(&rbuf[consumed..]) {
                Framing::Complete(req, used) => {
                    framer.reset();
                    let keep_alive = req.keep_alive && !w.connections.drain().is_on();
                    // Boxed: the handler future is large (every endpoint nested), and an idle
                    // connection should not carry its space while it waits for a request.
                    let resp = Box::pin(api::handle(&w, &req, peer)).await;
                    resp.write_to(&mut wbuf, keep_alive, req.http10);
                    consumed += used;
                    continue_sent = false;
                    if !keep_alive || resp.close {
                        close = true;
                        break;
                    }
                }
                Framing::Partial { send_continue } => {
                    if send_continue && !continue_sent {
                        wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        continue_sent = true;
                    }
                    break;
                }
                Framing::Refused(r) => {
                    let e = match r {
                        Refusal::BadRequest(m) => ApiError::BadRequest(m),
                        Refusal::HeadTooLarge => ApiError::HeadTooLarge,
                        Refusal::PayloadTooLarge => ApiError::PayloadTooLarge,
                    };
                    let resp = e.into_response();
                    w.metrics().request(Route::Unknown, resp.status);
                    resp.write_to(&mut wbuf, false, false);
                    close = true;
                    break;
                }
            }
        }
        if consumed > 0 {
            rbuf.drain(..consumed);
            started = (!rbuf.is_empty()).then(Instant::now);
            if rbuf.capacity() > 4 * READ_BUF && rbuf.len() < READ_BUF {
                rbuf.shrink_to(READ_BUF);
            }
        }
        if !wbuf.is_empty() {
            // A client that stops reading must not pin the connection and its buffers: the
            // responses must be taken within the header timeout too.
            match monoio::time::timeout(header_timeout, stream.write_all(wbuf)).await {
                Ok((Ok(_), b)) => {
                    wbuf = b;
                    wbuf.clear();
                    if wbuf.capacity() > MAX_PENDING_WRITE {
                        wbuf.shrink_to(READ_BUF);
                    }
                }
                _ => return,
            }
        }
        if close {
            return;
        }
        if more {
            continue;
        }

        if rbuf.is_empty() && rbuf.capacity() > READ_BUF {
            // Idle between requests: give back what a large request took.
            rbuf = Vec::with_capacity(READ_BUF);
        }
        let len = rbuf.len();
        if rbuf.capacity() - len < READ_BUF / 4 {
            // Grow by doubling, exactly, and never past the cap: the framer refuses any request
            // before it would need more.
            let want = (2 * rbuf.capacity()).clamp(len + READ_BUF, READ_CAP);
            rbuf.reserve_exact(want.saturating_sub(len));
        }
        let end = rbuf.capacity().min(READ_CAP);
        if end <= len {
            // Unreachable by the framer's limits; refuse rather than read without bound.
            return;
        }
        let read = stream.read(rbuf.slice_mut(len..end));
        let result = if let Some(t0) = started {
            match monoio::time::timeout_at((t0 + header_timeout).into(), read).await {
                Ok(r) => r,
                Err(_) if len == 0 => return,
                Err(_) => {
                    let resp = ApiError::RequestTimeout.into_response();
                    w.metrics().request(Route::Unknown, resp.status);
                    let mut out = Vec::with_capacity(256);
                    resp.write_to(&mut out, false, false);
                    let _ = stream.write_all(out).await;
                    return;
                }
            }
        } else {
            monoio::select! {
                r = monoio::time::timeout(idle_timeout, read) => match r {
                    Ok(r) => r,
                    Err(_) => return,
                },
                _ = w.connections.drain().wait() => return,
            }
        };
        let (res, slice) = result;
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if started.is_none() {
                    started = Some(Instant::now());
                }
            }
        }
    }
}
