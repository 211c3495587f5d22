//! `/admin/event-endpoints`: where order events are delivered. `POST` makes one (its
//! `whsec_` secret is shown in that answer only), `GET` lists them without secrets, `DELETE
//! /admin/event-endpoints/{id}` removes one with its deliveries.

use crate::api::json;
use crate::domain::{EVENT_TYPES, EventEndpoint, NewEndpoint};
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

/// The URL shape `openapi.json` publishes (`^https?://[!-.0-?A-~]+(/[!-~]*)?$`): printable
/// ASCII, a non-empty host part without `/` or `@` (so no user info), then a path. Whether the
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
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'@')
        && path.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// Validates a new endpoint: an `http` or `https` URL with a host and no user info, known
/// event types (at least one, each once), a description of at most 255 characters.
pub fn parse_new_endpoint(body: &[u8]) -> Result<NewEndpoint, ApiError> {
    let b: Body<'_> = json::object(body)?;
    let mut e = FieldErrors::new();
    let url = match json::string(&mut e, "url", b.url, 1, MAX_URL) {
        None if !e.contains_key("url") => {
            e.entry("url")
                .or_default()
                .push("The url field is required.".into());
            None
        }
        None => None,
        Some(u) if url_shape(&u) => Some(u),
        Some(_) => {
            e.entry("url").or_default().push(
                "The url must be an http or https URL in printable ASCII, with a host and no user info."
                    .into(),
            );
            None
        }
    };
    let events = match b.events.map(RawValue::get) {
        None | Some("null") => Some(default_events()),
        Some(raw) => match serde_json::from_str::<Vec<String>>(raw) {
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
        },
    };
    let description =
        json::string(&mut e, "description", b.description, 0, 255).unwrap_or_default();
    match (url, events) {
        (Some(url), Some(events)) if e.is_empty() => Ok(NewEndpoint {
            url,
            events,
            description,
        }),
        _ => Err(ApiError::Validation(e)),
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

pub async fn delete(w: &Local, id: &str) -> Result<Response, ApiError> {
    let id = match id.parse::<i64>() {
        Ok(n) if n > 0 && id.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(ApiError::NotFound),
    };
    if admin::delete_endpoint(w, id).await? {
        Ok(Response::no_content())
    } else {
        Err(ApiError::NotFound)
    }
}
