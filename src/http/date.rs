//! The `Date` header (RFC 9110 §6.6.1: an origin server with a clock sends it), formatted once
//! per second per worker rather than once per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Calls `f` with the current `Date` value, e.g. `Thu, 26 Nov 2026 09:32:55 GMT`.
pub fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            c.0 = secs;
            c.1 = httpdate::fmt_http_date(now);
        }
        f(&c.1)
    })
}
