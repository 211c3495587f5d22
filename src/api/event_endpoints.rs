//! `/admin/event-endpoints`: where order events are delivered. `POST` makes one (its
//! `whsec_` secret is shown in that answer only), `GET` lists them without secrets; on
//! `/admin/event-endpoints/{id}`, `PATCH` changes one and `DELETE` removes it with its
//! deliveries; `rotate-secret` gives it a new secret (the old one signs too for 24 hours);
//! `deliveries` lists its deliveries by status, and `deliveries/{event_id}/redeliver` sends
//! one again from the start of its schedule.

use crate::api::json;
use crate::domain::{
    DeliveryFilter, DeliveryView, EVENT_TYPES, EndpointPatch, EventEndpoint, NewEndpoint,
};
use crate::http::request::Request;
use crate::http::response::{ApiError, FieldErrors, Response};
use crate::lifecycle::admin;
use crate::local::Local;
use crate::time::rfc3339_ms;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The longest URL taken.
const MAX_URL: usize = 2048;

/// The types an endpoint gets when it names none: every one but `order.reserved` (as
/// frequent as reservations).
pub fn default_events() -> Vec<String> {
    EVENT_TYPES
        .iter()
        .filter(|t| **t != "order.reserved")
        .map(|t| (*t).to_string())
        .collect()
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    url: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Option<&'a RawValue>,
    #[serde(borrow)]
    description: Option<&'a RawValue>,
}

/// The URL shape `openapi.json` publishes (`^https?://[!-.0-?A-Z\\^-~]+(/[!-~]*)?$`):
/// printable ASCII, a non-empty host part without `/`, `@` (so no user info) or brackets (an
/// IPv6 address goes by a name: bracketed literals are where URL parsers disagree), then a
/// path. Whether the
/// host resolves is the receiver's business: a delivery that cannot connect is retried and
/// then failed, as for any dead receiver.
fn url_shape(u: &str) -> bool {
    let Some(rest) = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    !host.is_empty()
        && host
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && !matches!(b, b'@' | b'[' | b']'))
        && path.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// Validates a new endpoint: an `http` or `https` URL with a host and no user info, known
/// event types (at least one, each once), a description of at most 255 characters.
pub fn parse_new_endpoint(body: &[u8]) -> Result<NewEndpoint, ApiError> {
    let b: Body<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    let url = match b.url {
        None => {
            e.entry("url")
                .or_default()
                .push("The url field is required.".into());
            None
        }
        Some(v) => url(&mut e, v),
    };
    let events = match b.events.map(RawValue::get) {
        None | Some("null") => Some(default_events()),
        Some(raw) => events(&mut e, raw),
    };
    let description = b
        .description
        .and_then(|v| json::string(&mut e, "description", Some(v), 0, 255))
        .unwrap_or_default();
    match (url, events) {
        (Some(url), Some(events)) if e.is_empty() => Ok(NewEndpoint {
            url,
            events,
            description,
        }),
        _ => Err(ApiError::Validation(e)),
    }
}

/// `present` everywhere: a `null` is refused (none of these fields can be cleared), never
/// taken for "left out".
#[derive(Deserialize)]
struct PatchBody<'a> {
    #[serde(default, borrow, deserialize_with = "json::present")]
    url: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    events: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    description: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "json::present")]
    enabled: Option<&'a RawValue>,
}

/// Validates a change of an endpoint: any of its four fields, each as when made.
pub fn parse_patch(body: &[u8]) -> Result<EndpointPatch, ApiError> {
    let b: PatchBody<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    let patch = EndpointPatch {
        url: b.url.and_then(|v| url(&mut e, v)),
        events: b.events.and_then(|v| events(&mut e, v.get())),
        description: b.description.and_then(|v| {
            let d = json::string(&mut e, "description", Some(v), 0, 255);
            if d.is_none() && !e.contains_key("description") {
                e.entry("description")
                    .or_default()
                    .push("The description must be a string.".into());
            }
            d
        }),
        enabled: b.enabled.and_then(|v| match v.get() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                e.entry("enabled")
                    .or_default()
                    .push("The enabled field must be true or false.".into());
                None
            }
        }),
    };
    if e.is_empty() {
        Ok(patch)
    } else {
        Err(ApiError::Validation(e))
    }
}

fn url(e: &mut FieldErrors, v: &RawValue) -> Option<String> {
    match json::string(e, "url", Some(v), 1, MAX_URL) {
        Some(u) if url_shape(&u) => Some(u),
        Some(_) => {
            e.entry("url").or_default().push(
                "The url must be an http or https URL in printable ASCII, with a host and no user info."
                    .into(),
            );
            None
        }
        None => {
            if !e.contains_key("url") {
                e.entry("url")
                    .or_default()
                    .push("The url must be a string.".into());
            }
            None
        }
    }
}

fn events(e: &mut FieldErrors, raw: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<Vec<String>>(raw) {
        Ok(list)
            if !list.is_empty()
                && list.iter().all(|t| EVENT_TYPES.contains(&t.as_str()))
                && list.iter().enumerate().all(|(i, t)| !list[..i].contains(t)) =>
        {
            Some(list)
        }
        _ => {
            e.entry("events").or_default().push(format!(
                "The events must be a non-empty list of distinct event types: {}.",
                EVENT_TYPES.join(", ")
            ));
            None
        }
    }
}

#[derive(Serialize)]
struct EndpointBody<'a> {
    id: i64,
    url: &'a str,
    events: &'a [String],
    description: &'a str,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    created_at: String,
}

fn body(e: &EventEndpoint) -> EndpointBody<'_> {
    EndpointBody {
        id: e.id,
        url: &e.url,
        events: &e.events,
        description: &e.description,
        enabled: e.enabled,
        secret: e.secret.as_deref(),
        created_at: rfc3339_ms(e.created_at_ms),
    }
}

pub async fn create(w: &Local, req: &Request<'_>) -> Result<Response, ApiError> {
    let e = parse_new_endpoint(&req.body)?;
    let made = admin::create_endpoint(w, e).await?;
    Ok(Response::json(201, &body(&made)))
}

#[derive(Serialize)]
struct List<'a> {
    endpoints: Vec<EndpointBody<'a>>,
}

pub async fn list(w: &Local) -> Result<Response, ApiError> {
    let all = admin::endpoints(w).await?;
    Ok(Response::json(
        200,
        &List {
            endpoints: all.iter().map(body).collect(),
        },
    ))
}

/// An endpoint id from the path; anything else is "no such endpoint".
fn endpoint_id(id: &str) -> Result<i64, ApiError> {
    match id.parse::<i64>() {
        Ok(n) if n > 0 && id.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(ApiError::NotFound),
    }
}

pub async fn delete(w: &Local, id: &str) -> Result<Response, ApiError> {
    if admin::delete_endpoint(w, endpoint_id(id)?).await? {
        Ok(Response::no_content())
    } else {
        Err(ApiError::NotFound)
    }
}

pub async fn patch(w: &Local, req: &Request<'_>, id: &str) -> Result<Response, ApiError> {
    let id = endpoint_id(id)?;
    let p = parse_patch(&req.body)?;
    match admin::patch_endpoint(w, id, p).await? {
        Some(e) => Ok(Response::json(200, &body(&e))),
        None => Err(ApiError::NotFound),
    }
}

pub async fn rotate(w: &Local, id: &str) -> Result<Response, ApiError> {
    match admin::rotate_secret(w, endpoint_id(id)?).await? {
        Some(e) => Ok(Response::json(200, &body(&e))),
        None => Err(ApiError::NotFound),
    }
}

pub async fn redeliver(w: &Local, id: &str, event_id: &str) -> Result<Response, ApiError> {
    if event_id.len() > 64 || !event_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::NotFound);
    }
    if admin::redeliver(w, endpoint_id(id)?, event_id).await? {
        Ok(Response::json(
            202,
            &serde_json::json!({"message": "The delivery will be sent again"}),
        ))
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Serialize)]
struct DeliveryBody<'a> {
    event_id: &'a str,
    event_type: &'a str,
    status: &'a str,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<&'a str>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
}

#[derive(Serialize)]
struct DeliveriesPage<'a> {
    deliveries: Vec<DeliveryBody<'a>>,
    next: Option<String>,
}

/// `GET /admin/event-endpoints/{id}/deliveries?status=&after=&limit=`: by event, oldest
/// first; `next` is null on the last page.
pub async fn deliveries(w: &Local, req: &Request<'_>, id: &str) -> Result<Response, ApiError> {
    let endpoint_id = endpoint_id(id)?;
    let mut e = FieldErrors::new();
    let [status, after, limit] =
        crate::api::admin::filters(req.query, ["status", "after", "limit"], &mut e);
    let status = match status.as_deref() {
        None => None,
        Some("pending") => Some("pending"),
        Some("delivered") => Some("delivered"),
        Some("failed") => Some("failed"),
        Some(_) => {
            e.entry("status")
                .or_default()
                .push("The status must be pending, delivered or failed.".into());
            None
        }
    };
    let after = match after {
        None => 0,
        Some(a) if !a.is_empty() && a.len() <= 18 && a.bytes().all(|b| b.is_ascii_digit()) => {
            a.parse().unwrap_or(0)
        }
        Some(_) => {
            e.entry("after")
                .or_default()
                .push("The after cursor must be the next of a previous page.".into());
            0
        }
    };
    let limit = match limit {
        None => 100,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=1000).contains(&n) && l.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                e.entry("limit")
                    .or_default()
                    .push("The limit must be between 1 and 1000.".into());
                100
            }
        },
    };
    if !e.is_empty() {
        return Err(ApiError::Validation(e));
    }
    let page = admin::deliveries(
        w,
        DeliveryFilter {
            endpoint_id,
            status,
            after,
            limit,
        },
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    let full = i64::try_from(page.len()).unwrap_or(i64::MAX) == limit;
    Ok(Response::json(
        200,
        &DeliveriesPage {
            deliveries: page.iter().map(delivery_body).collect(),
            next: full
                .then(|| page.last().map(|d| d.position.to_string()))
                .flatten(),
        },
    ))
}

fn delivery_body(d: &DeliveryView) -> DeliveryBody<'_> {
    DeliveryBody {
        event_id: &d.event_id,
        event_type: &d.event_type,
        status: &d.status,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error.as_deref(),
        next_attempt_at: d.next_attempt_at_ms.map(rfc3339_ms),
        delivered_at: d.delivered_at_ms.map(rfc3339_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_the_published_shape_only() {
        for good in [
            "http://a",
            "https://shop.example:8443/hooks?x=1",
            "http://127.0.0.1:9/",
        ] {
            assert!(url_shape(good), "{good}");
        }
        for bad in [
            "ftp://a/",
            "http://",
            "http:///x",
            "http://u:p@a/",
            "http://[::1]/",
            "http://a b/",
            "http://é/",
            " http://a/",
        ] {
            assert!(!url_shape(bad), "{bad}");
        }
    }

    #[test]
    fn a_patch_refuses_nulls_and_takes_what_it_names() {
        for bad in [
            r#"{"url": null}"#,
            r#"{"events": null}"#,
            r#"{"description": null}"#,
            r#"{"enabled": null}"#,
            r#"{"enabled": 1}"#,
        ] {
            assert!(parse_patch(bad.as_bytes()).is_err(), "{bad}");
        }
        let p = parse_patch(br#"{"enabled": false, "events": ["order.paid"]}"#).unwrap();
        assert_eq!(p.enabled, Some(false));
        assert_eq!(p.events, Some(vec!["order.paid".to_string()]));
        assert_eq!(p.url, None);
        let n = parse_new_endpoint(br#"{"url": "http://a/", "events": null, "description": null}"#)
            .unwrap();
        assert_eq!(n.events, default_events());
    }
}
