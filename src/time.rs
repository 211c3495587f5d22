//! Clock helpers: Unix milliseconds, and RFC 3339 in UTC for the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `SystemTime` of Unix milliseconds `ms` (any `i64` is representable on Linux).
pub fn to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Unix milliseconds of `t`, saturating at the ends of `i64` (a PostgreSQL `infinity`).
pub fn from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |v| -v),
    }
}

/// The earliest time the API writes: `0000-01-01T00:00:00Z`, in Unix milliseconds.
pub const MIN_MS: i64 = -62_167_219_200_000;
/// The latest: `9999-12-31T23:59:59.999Z` (RFC 3339 has four-digit years).
pub const MAX_MS: i64 = 253_402_300_799_999;

/// `2026-11-26T09:32:55.123Z`. Never panics: a time outside years 0000–9999 (which
/// PostgreSQL's constraints refuse at write time, migration 0006, and which no script writes)
/// is written as the nearest of [`MIN_MS`] and [`MAX_MS`], and logged.
pub fn rfc3339_ms(ms: i64) -> String {
    let (secs, frac) = split(ms, 1000);
    let (date, time) = civil(secs);
    format!("{date}T{time}.{frac:03}Z")
}

/// `2026-11-26T09:32:55.123456Z`, for PostgreSQL timestamps (microseconds). Never panics, as
/// [`rfc3339_ms`].
pub fn rfc3339(t: SystemTime) -> String {
    let us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |v| -v),
    };
    let (secs, frac) = split(us, 1_000_000);
    let (date, time) = civil(secs);
    format!("{date}T{time}.{frac:06}Z")
}

/// Whole seconds and the fraction of `v` in units of `1/per` second, the time clamped to years
/// 0000–9999.
fn split(v: i64, per: i64) -> (i64, i64) {
    let lo = MIN_MS.div_euclid(1000) * per;
    let hi = (MAX_MS.div_euclid(1000) + 1) * per - 1;
    if !(lo..=hi).contains(&v) {
        tracing::warn!(
            value = v,
            unit_per_second = per,
            "a time outside years 0000-9999 was written as the nearest representable one"
        );
    }
    let v = v.clamp(lo, hi);
    (v.div_euclid(per), v.rem_euclid(per))
}

/// The date and the time of day of `secs` since the epoch, proleptic Gregorian, UTC (the
/// days-to-civil algorithm of H. Hinnant's `chrono`-compatible date library). Exact for any
/// year 0000–9999, which `split` guarantees.
fn civil(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-315_619_200_000), "1960-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(MIN_MS), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_795_685_575_123), "2026-11-26T09:32:55.123Z");
        assert_eq!(
            from_system_time(to_system_time(1_795_685_575_123)),
            1_795_685_575_123
        );
    }

    #[test]
    fn no_time_panics_and_out_of_range_ones_stay_at_the_bounds() {
        for ms in [i64::MIN, MIN_MS - 1, MAX_MS + 1, i64::MAX] {
            let text = rfc3339_ms(ms);
            assert!(
                text == rfc3339_ms(MIN_MS) || text == rfc3339_ms(MAX_MS),
                "{text}"
            );
            assert_eq!(from_system_time(to_system_time(ms)), ms);
        }
        let far = UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 86_400);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999Z");
        let before = UNIX_EPOCH - Duration::from_secs(10 * 365 * 86_400);
        assert_eq!(rfc3339(before), "1960-01-04T00:00:00.000000Z");
    }

    proptest::proptest! {
        /// Agrees with humantime wherever humantime can format (1970 to 9999).
        #[test]
        fn agrees_with_humantime(ms in 0i64..=MAX_MS) {
            let t = to_system_time(ms);
            proptest::prop_assert_eq!(
                rfc3339_ms(ms),
                humantime::format_rfc3339_millis(t).to_string()
            );
            let t = t + Duration::from_micros(321);
            proptest::prop_assert_eq!(rfc3339(t), humantime::format_rfc3339_micros(t).to_string());
        }
    }
}
