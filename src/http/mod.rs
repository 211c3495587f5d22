//! HTTP/1.1: request framing (`request`), the one place where outcomes become responses
//! (`response`), and the `Date` header cache.
//!
//! Why not monoio-http: its HTTP/1.1 decoder resolves `Content-Length` together with
//! `Transfer-Encoding` silently in favour of chunked and reads only the first of two
//! `Content-Length` headers (its source marks header validation as a TODO), so it lets request
//! smuggling shapes through; it has no connection management (`Connection: close`, HTTP/1.0,
//! which `ab` speaks), no timeouts and no `Date`, and it builds an `http::HeaderMap` per
//! request. Framing is the security boundary of the server, so it is written here on top of
//! `httparse` (the parser hyper uses) and tested shape by shape.

pub mod date;
pub mod request;
pub mod response;
