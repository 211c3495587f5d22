//! Clock helpers: Unix milliseconds, and RFC 3339 in UTC for the API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub fn from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `2026-11-26T09:32:55.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(to_system_time(ms)).to_string()
}

/// `2026-11-26T09:32:55.123456Z`, for PostgreSQL timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_685_575_123), "2026-11-26T09:32:55.123Z");
        assert_eq!(
            from_system_time(to_system_time(1_795_685_575_123)),
            1_795_685_575_123
        );
    }
}
