//! `GET /health`, `GET /ready`, `GET /metrics`.

use crate::http::response::{ContentType, Response};
use crate::local::Local;
use serde_json::json;

pub fn health() -> Response {
    Response::json(200, &json!({"status": "ok"}))
}

/// 200 when Redis answers a PING on this worker's connection and the writer's last contact
/// with PostgreSQL succeeded (it checks at least once a second); 503 naming what failed, or
/// the thread whose death is taking the process down (`panics`).
pub async fn ready(w: &Local) -> Response {
    let redis_ok = w.redis.ping().await.is_ok();
    let pg_ok = w.shared.postgres_up();
    let dying = w.shared.dying();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    if redis_ok && pg_ok && dying.is_none() {
        return Response::json(
            200,
            &json!({"status": "ready", "redis": "ok", "postgres": "ok"}),
        );
    }
    let failed: Vec<&str> = [("redis", redis_ok), ("postgres", pg_ok)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let message = match dying {
        Some(place) => format!(
            "Not ready: the {} thread died; the server is shutting down",
            place.label()
        ),
        None => format!("Not ready: {} unavailable", failed.join(" and ")),
    };
    let mut body = json!({
        "message": message,
        "code": "not_ready",
        "redis": word(redis_ok),
        "postgres": word(pg_ok),
    });
    if let Some(place) = dying {
        body["died"] = json!(place.label());
    }
    let mut r = Response::json(503, &body);
    r.retry_after = Some(1);
    r
}

pub fn metrics(w: &Local) -> Response {
    Response::text(200, w.shared.metrics.render(), ContentType::Prometheus)
}
