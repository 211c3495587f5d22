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

/// The largest id or quantity a request may name (18 digits: `openapi.json` can say it as a
/// pattern for numeric strings, which it cannot for `i64::MAX`).
pub const MAX_ID: i64 = 999_999_999_999_999_999;

/// What a JSON value is as an integer, in JSON Schema's sense: `2`, `2.0`, `2e3` and `-0`
/// are integers (the published schema cannot tell them apart), `1.5` and `"2"` are not.
#[derive(Debug, PartialEq, Eq)]
enum JsonInt {
    Value(i64),
    /// An integer beyond `i64`: below or above.
    Below,
    Above,
    NotInteger,
}

/// Reads a JSON number exactly, from its text (never through `f64`, which would round
/// `9007199254740993.0`).
fn json_integer(raw: &str) -> JsonInt {
    let (negative, body) = match raw.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, raw),
    };
    if !body.starts_with(|c: char| c.is_ascii_digit()) {
        return JsonInt::NotInteger;
    }
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, "0"),
    };
    let (int_part, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let exp_digits = exp.trim_start_matches(['+', '-']);
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || exp_digits.is_empty()
        || !exp_digits.bytes().all(|b| b.is_ascii_digit())
    {
        return JsonInt::NotInteger;
    }
    // Beyond ±10^6 the exponent either zeroes every digit of a body of at most 1 MiB or
    // makes a number far outside i64: the same verdict as any bigger exponent.
    let exp: i64 = exp_digits.parse::<i64>().unwrap_or(i64::MAX).min(1_000_000)
        * if exp.starts_with('-') { -1 } else { 1 };
    let digits: Vec<u8> = int_part.bytes().chain(frac.bytes()).collect();
    // Where the decimal point falls in `digits` once the exponent is applied.
    let point = i64::try_from(int_part.len())
        .unwrap_or(i64::MAX)
        .saturating_add(exp);
    let split = usize::try_from(point.clamp(0, digits.len() as i64)).unwrap_or(0);
    if digits[split..].iter().any(|d| *d != b'0') {
        return JsonInt::NotInteger;
    }
    let whole = &digits[..split];
    let zeros = usize::try_from(point)
        .unwrap_or(0)
        .saturating_sub(digits.len());
    let significant = whole.iter().skip_while(|d| **d == b'0').count();
    if significant == 0 {
        return JsonInt::Value(0);
    }
    if significant + zeros > 19 {
        return if negative {
            JsonInt::Below
        } else {
            JsonInt::Above
        };
    }
    let mut n: i128 = 0;
    for d in whole.iter().skip_while(|d| **d == b'0') {
        n = n * 10 + i128::from(d - b'0');
    }
    for _ in 0..zeros {
        n *= 10;
    }
    if negative {
        n = -n;
    }
    match i64::try_from(n) {
        Ok(v) => JsonInt::Value(v),
        Err(_) if negative => JsonInt::Below,
        Err(_) => JsonInt::Above,
    }
}

/// A positive integer field up to [`MAX_ID`]: a JSON integer, or a string of digits (`"2"`,
/// nothing around them; the reference API took numeric strings).
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
    let read = if raw.starts_with('"') {
        match serde_json::from_str::<String>(raw) {
            Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => json_integer(&s),
            _ => JsonInt::NotInteger,
        }
    } else {
        json_integer(raw)
    };
    let problem = match read {
        JsonInt::Value(n) if (1..=MAX_ID).contains(&n) => return Some(n),
        JsonInt::Value(n) if n > MAX_ID => format!("The {name} must not be greater than {MAX_ID}."),
        JsonInt::Above => format!("The {name} must not be greater than {MAX_ID}."),
        JsonInt::Value(_) | JsonInt::Below => format!("The {name} must be at least 1."),
        JsonInt::NotInteger => format!("The {name} must be an integer."),
    };
    errors.entry(field).or_default().push(problem);
    None
}

/// An integer field within `min..=max`: a JSON integer (as the admin API's schema says; no
/// numeric strings). `None` with an error recorded when missing, invalid or out of range.
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
    let problem = match json_integer(raw) {
        JsonInt::Value(n) if (min..=max).contains(&n) => return Some(n),
        JsonInt::Value(_) | JsonInt::Below | JsonInt::Above => {
            format!("The {name} must be between {min} and {max}.")
        }
        JsonInt::NotInteger => format!("The {name} must be an integer."),
    };
    errors.entry(field).or_default().push(problem);
    None
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

/// The shape of a time the API takes, exactly as `openapi.json`'s pattern says:
/// `YYYY-MM-DDTHH:MM:SS`, then 1 to 9 fractional digits after a `.` or none, then `Z` or
/// `+00:00`; nothing around it. humantime checks the ranges (year 1970 to 9999, the days of
/// each month) but also takes an empty fraction and any number of digits, which the
/// published schema does not.
fn rfc3339_utc_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let rest = match b.strip_suffix(b"Z").or_else(|| b.strip_suffix(b"+00:00")) {
        Some(r) if r.len() >= 19 => r,
        _ => return false,
    };
    let digits = |r: std::ops::Range<usize>| rest[r].iter().all(u8::is_ascii_digit);
    // Seconds stop at 59: JSON Schema's date-time takes :60 only for a leap second, and
    // which minute had one is not ours to know.
    let shape = digits(0..4)
        && rest[4] == b'-'
        && digits(5..7)
        && rest[7] == b'-'
        && digits(8..10)
        && rest[10] == b'T'
        && digits(11..13)
        && rest[13] == b':'
        && digits(14..16)
        && rest[16] == b':'
        && digits(17..19)
        && rest[17] <= b'5';
    shape
        && match &rest[19..] {
            [] => true,
            [b'.', frac @ ..] => {
                (1..=9).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit)
            }
            _ => false,
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
        .filter(|s| rfc3339_utc_shape(s))
        .and_then(|s| humantime::parse_rfc3339(&s).ok())
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
        // JSON Schema's integers: the value counts, not how it is written.
        assert_eq!(ints(r#"{"n": 2.0}"#).0, Some(2));
        assert_eq!(ints(r#"{"n": 1e3}"#).0, Some(1000));
        assert_eq!(ints(r#"{"n": 12.50e1}"#).0, Some(125));
        assert_eq!(
            ints(r#"{"n": 919195032130331.0}"#).0,
            Some(919_195_032_130_331)
        );
        assert_eq!(ints(r#"{"n": 5000e-3}"#).0, Some(5));
        assert!(ints(r#"{"n": 1e999999999999}"#).1["n"][0].contains("greater than"));
        assert!(ints(r#"{"n": -1e999999999999}"#).1["n"][0].contains("at least 1"));
        assert!(ints(r#"{"n": -0}"#).1["n"][0].contains("at least 1"));
        assert!(ints(r#"{"n": 0e-999999999999}"#).1["n"][0].contains("at least 1"));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": 1e-3}"#,
            r#"{"n": 1e-999999999999}"#,
            r#"{"n": 12.51e1}"#,
            r#"{"n": "2.0"}"#,
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
        assert!(ints(r#"{"n": 1000000000000000000}"#).1["n"][0].contains("greater than"));
        assert!(ints(r#"{"n": "1000000000000000000"}"#).1["n"][0].contains("greater than"));
        assert_eq!(ints(r#"{"n": 999999999999999999}"#).0, Some(MAX_ID));
        assert_eq!(ints(r#"{"n": "007"}"#).0, Some(7));
        // The schema's numeric strings are digits only: no spaces, no sign.
        for bad in [r#"{"n": " 2"}"#, r#"{"n": "2 "}"#, r#"{"n": "+2"}"#] {
            assert_eq!(ints(bad).0, None, "{bad}");
        }
        assert_eq!(ints(r#"{}"#).1["n"][0], "The n field is required.");
        assert_eq!(ints(r#"{"n": null}"#).1["n"][0], "The n field is required.");
    }

    #[test]
    fn times_only_in_the_published_shape() {
        let t = |v: &str| {
            let raw = serde_json::to_string(v).unwrap();
            let body = format!(r#"{{"s": {raw}}}"#);
            let b: Body<'_> = object(body.as_bytes()).unwrap();
            timestamp(&mut FieldErrors::new(), "s", b.s)
        };
        assert_eq!(t("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(t("1970-01-01T00:00:01.5+00:00"), Some(1500));
        assert_eq!(t("1970-01-01T00:00:00.123456789Z"), Some(123));
        assert!(t("2028-02-29T00:00:00Z").is_some());
        assert!(t("9999-12-31T23:59:59Z").is_some());
        for bad in [
            "",
            " 2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z ",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T23:59:60Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01t00:00:00Z",
            "2026-01-01T00:00:00z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+01:00",
            "2027-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
            "é026-01-01T00:00:00Z",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
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
