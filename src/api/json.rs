//! Reading request bodies: a JSON object whose fields are checked one by one, so a client
//! learns every problem of its request at once (422 with `errors` per field) and a wrong type
//! in one field does not hide the others.
//!
//! Fields are deserialized as raw JSON text first (no map is built), then each is read by the
//! rule of its type. Nesting, invalid UTF-8 and numbers of any size are handled by serde_json
//! (recursion limit 128) and end as 400 `malformed_json` or a field error, never a panic.

use crate::http::response::{ApiError, FieldErrors};
use serde_json::value::RawValue;

/// Parses `body` as a JSON object into `T` (a struct of `Option<&RawValue>` fields).
pub fn object<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    // serde would also accept an array for a struct; the contract wants an object.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::MalformedJson);
    }
    serde_json::from_slice(body).map_err(|_| ApiError::MalformedJson)
}

/// Human name of a field in messages: `product_id` → `product id`.
fn human(field: &str) -> String {
    field.replace('_', " ")
}

/// A positive integer field: a JSON integer, or a string of digits (`"2"`).
/// `None` with an error recorded when it is missing or invalid.
pub fn positive_int(
    errors: &mut FieldErrors,
    field: &'static str,
    v: Option<&RawValue>,
) -> Option<i64> {
    let name = human(field);
    let Some(raw) = v.map(RawValue::get).filter(|r| *r != "null") else {
        errors
            .entry(field)
            .or_default()
            .push(format!("The {name} field is required."));
        return None;
    };
    let text: std::borrow::Cow<'_, str> = if raw.starts_with('"') {
        match serde_json::from_str::<String>(raw) {
            Ok(s) => s.trim().to_string().into(),
            Err(_) => {
                errors
                    .entry(field)
                    .or_default()
                    .push(format!("The {name} must be an integer."));
                return None;
            }
        }
    } else {
        raw.into()
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors
            .entry(field)
            .or_default()
            .push(format!("The {name} must be an integer."));
        return None;
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 1 => Some(n),
        Ok(_) => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be at least 1."));
            None
        }
        Err(_) if text.starts_with('-') => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be at least 1."));
            None
        }
        Err(_) => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must not be greater than {}.", i64::MAX));
            None
        }
    }
}

/// A string field of `min..=max` characters without control characters (PostgreSQL text
/// cannot hold NUL, and an id with line breaks is a mistake). `None` when absent or null.
pub fn string(
    errors: &mut FieldErrors,
    field: &'static str,
    v: Option<&RawValue>,
    min: usize,
    max: usize,
) -> Option<String> {
    let raw = v.map(RawValue::get).filter(|r| *r != "null")?;
    let name = human(field);
    match serde_json::from_str::<String>(raw) {
        Ok(s) => {
            let n = s.chars().count();
            if n < min || n > max {
                errors.entry(field).or_default().push(format!(
                    "The {name} must be between {min} and {max} characters."
                ));
                None
            } else if s.chars().any(char::is_control) {
                errors
                    .entry(field)
                    .or_default()
                    .push(format!("The {name} must not contain control characters."));
                None
            } else {
                Some(s)
            }
        }
        Err(_) => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be a string."));
            None
        }
    }
}

/// An integer field within `min..=max` (a JSON integer or a string of digits). `None` with
/// an error recorded when missing, invalid or out of range.
pub fn int_in(
    errors: &mut FieldErrors,
    field: &'static str,
    v: Option<&RawValue>,
    min: i64,
    max: i64,
) -> Option<i64> {
    let name = human(field);
    let Some(raw) = v.map(RawValue::get).filter(|r| *r != "null") else {
        errors
            .entry(field)
            .or_default()
            .push(format!("The {name} field is required."));
        return None;
    };
    let text: std::borrow::Cow<'_, str> = if raw.starts_with('"') {
        match serde_json::from_str::<String>(raw) {
            Ok(s) => s.trim().to_string().into(),
            Err(_) => raw.into(),
        }
    } else {
        raw.into()
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let parsed = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        None
    } else {
        text.parse::<i64>().ok()
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(_) => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be between {min} and {max}."));
            None
        }
        None if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be between {min} and {max}."));
            None
        }
        None => {
            errors
                .entry(field)
                .or_default()
                .push(format!("The {name} must be an integer."));
            None
        }
    }
}

/// For `#[serde(default, borrow, deserialize_with = "json::present")]` on an
/// `Option<&RawValue>` field: a `null` value is then `Some("null")`, not `None` (plain serde
/// makes both absent and `null` a `None`), which [`nullable`] needs.
pub fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// A field that may be absent (leave as it is: `None`), `null` (clear: `Some(None)`) or a
/// value read by `read` (`Some(Some(v))`; an invalid one records an error and is `None`).
/// The field must be deserialized with [`present`].
pub fn nullable<T>(
    v: Option<&RawValue>,
    read: impl FnOnce(Option<&RawValue>) -> Option<T>,
) -> Option<Option<T>> {
    match v {
        None => None,
        Some(raw) if raw.get() == "null" => Some(None),
        Some(raw) => read(Some(raw)).map(Some),
    }
}

/// An RFC 3339 time in UTC (`2026-11-26T09:32:55Z`, fractions allowed), as Unix ms. `None`
/// with an error recorded when it is not one; absent or `null` is not an error.
pub fn timestamp(
    errors: &mut FieldErrors,
    field: &'static str,
    v: Option<&RawValue>,
) -> Option<i64> {
    let raw = v.map(RawValue::get).filter(|r| *r != "null")?;
    let parsed = serde_json::from_str::<String>(raw)
        .ok()
        .and_then(|s| humantime::parse_rfc3339(s.trim()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    match parsed {
        Some(d) => Some(d.as_millis() as i64),
        None => {
            errors.entry(field).or_default().push(format!(
                "The {} must be an RFC 3339 time in UTC, e.g. 2026-11-26T09:32:55Z.",
                human(field)
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        n: Option<&'a RawValue>,
        #[serde(borrow)]
        s: Option<&'a RawValue>,
    }

    fn ints(json: &str) -> (Option<i64>, FieldErrors) {
        let b: Body<'_> = object(json.as_bytes()).unwrap();
        let mut e = FieldErrors::new();
        (positive_int(&mut e, "n", b.n), e)
    }

    #[test]
    fn integers_and_numeric_strings() {
        assert_eq!(ints(r#"{"n": 5}"#).0, Some(5));
        assert_eq!(ints(r#"{"n": "7"}"#).0, Some(7));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": 2.0}"#,
            r#"{"n": 1e3}"#,
            r#"{"n": "x"}"#,
            r#"{"n": true}"#,
            r#"{"n": [1]}"#,
            r#"{"n": {}}"#,
            r#"{"n": ""}"#,
        ] {
            let (v, e) = ints(bad);
            assert_eq!(v, None, "{bad}");
            assert_eq!(
                e["n"],
                vec!["The n must be an integer.".to_string()],
                "{bad}"
            );
        }
        assert_eq!(ints(r#"{"n": 0}"#).1["n"][0], "The n must be at least 1.");
        assert_eq!(ints(r#"{"n": -3}"#).1["n"][0], "The n must be at least 1.");
        assert_eq!(
            ints(r#"{"n": -99999999999999999999}"#).1["n"][0],
            "The n must be at least 1."
        );
        assert!(ints(r#"{"n": 99999999999999999999999}"#).1["n"][0].contains("greater than"));
        assert_eq!(ints(r#"{}"#).1["n"][0], "The n field is required.");
        assert_eq!(ints(r#"{"n": null}"#).1["n"][0], "The n field is required.");
    }

    #[test]
    fn strings() {
        let b: Body<'_> = object(br#"{"s": "abc"}"#).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(string(&mut e, "s", b.s, 1, 64).as_deref(), Some("abc"));
        let b: Body<'_> = object(br#"{"s": 12}"#).unwrap();
        assert_eq!(string(&mut e, "s", b.s, 1, 64), None);
        assert_eq!(e["s"][0], "The s must be a string.");
        let mut e = FieldErrors::new();
        let b: Body<'_> = object(br#"{"s": ""}"#).unwrap();
        assert_eq!(string(&mut e, "s", b.s, 1, 64), None);
        assert!(e.contains_key("s"));
        let long = format!(r#"{{"s": "{}"}}"#, "é".repeat(65));
        let b: Body<'_> = object(long.as_bytes()).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(string(&mut e, "s", b.s, 1, 64), None);
        let b: Body<'_> = object(br#"{"s": "a\u0000b"}"#).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(string(&mut e, "s", b.s, 1, 64), None);
        assert_eq!(e["s"][0], "The s must not contain control characters.");
        let ok = format!(r#"{{"s": "{}"}}"#, "é".repeat(64));
        let b: Body<'_> = object(ok.as_bytes()).unwrap();
        assert!(string(&mut FieldErrors::new(), "s", b.s, 1, 64).is_some());
    }

    #[test]
    fn ranges_nulls_and_times() {
        let b: Body<'_> = object(br#"{"n": -5, "s": "2026-11-26T09:32:55.5Z"}"#).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(int_in(&mut e, "n", b.n, -10, 10), Some(-5));
        assert_eq!(int_in(&mut e, "n", b.n, 0, 10), None);
        assert_eq!(e["n"][0], "The n must be between 0 and 10.");
        assert_eq!(timestamp(&mut e, "s", b.s), Some(1_795_685_575_500));
        #[derive(serde::Deserialize)]
        struct Patch<'a> {
            #[serde(default, borrow, deserialize_with = "present")]
            n: Option<&'a RawValue>,
            #[serde(borrow)]
            s: Option<&'a RawValue>,
        }
        let b: Patch<'_> = object(br#"{"n": null, "s": "yesterday"}"#).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(nullable(b.n, |v| int_in(&mut e, "n", v, 0, 9)), Some(None));
        assert_eq!(timestamp(&mut e, "s", b.s), None);
        assert!(e.contains_key("s"));
        let b: Patch<'_> = object(br#"{"n": 4}"#).unwrap();
        assert_eq!(
            nullable(b.n, |v| int_in(&mut e, "n", v, 0, 9)),
            Some(Some(4))
        );
        let b: Patch<'_> = object(br#"{}"#).unwrap();
        assert_eq!(nullable(b.n, |v| int_in(&mut e, "n", v, 0, 9)), None);
    }

    #[test]
    fn only_objects_are_bodies() {
        for bad in [
            "", "[]", "[1,2]", "\"x\"", "1", "null", "{", "{\"n\":}", "\u{0}",
        ] {
            assert!(
                matches!(
                    object::<Body<'_>>(bad.as_bytes()),
                    Err(ApiError::MalformedJson)
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            object::<Body<'_>>(b"{\"n\": \"\xff\"}"),
            Err(ApiError::MalformedJson)
        ));
        // Deep nesting is skipped as raw text without recursion: no stack overflow, and the
        // field is then simply not an integer.
        let deep = format!(
            "{{\"x\": {}{}, \"n\": {}1{}}}",
            "[".repeat(8_000),
            "]".repeat(8_000),
            "[".repeat(8_000),
            "]".repeat(8_000)
        );
        let b: Body<'_> = object(deep.as_bytes()).unwrap();
        let mut e = FieldErrors::new();
        assert_eq!(positive_int(&mut e, "n", b.n), None);
        assert_eq!(e["n"][0], "The n must be an integer.");
    }
}
