//! Time helpers shared by every part: the store's fixed-width timestamps,
//! saturating arithmetic on instants, RFC 3339 "now" and the duration
//! syntax of every YAML file (`500ms`, `60s`, `30m`, `1h`).
//!
//! A leaf: it imports nothing from the crate.

use std::time::Duration;
use time::OffsetDateTime;
use time::macros::{datetime, format_description};

/// Formats a UTC `t` as RFC 3339 with microseconds, always the same width,
/// so that stored timestamps sort as text.
pub fn timestamp(t: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    // Cannot fail: a date-time has every component the description names.
    t.format(&format).unwrap_or_default()
}

/// The current time as a [`timestamp`].
pub fn now_timestamp() -> String {
    timestamp(OffsetDateTime::now_utc())
}

/// `t + by`, saturating at the end of year 9999.
pub fn later(t: OffsetDateTime, by: Duration) -> OffsetDateTime {
    time::Duration::try_from(by)
        .ok()
        .and_then(|by| t.checked_add(by))
        .filter(|t| t.year() <= 9999)
        .unwrap_or(datetime!(9999-12-31 23:59:59 UTC))
}

/// `t - by`, saturating at the start of year 0.
pub fn earlier(t: OffsetDateTime, by: Duration) -> OffsetDateTime {
    time::Duration::try_from(by)
        .ok()
        .and_then(|by| t.checked_sub(by))
        .filter(|t| t.year() >= 0)
        .unwrap_or(datetime!(0000-01-01 0:00 UTC))
}

/// Current time as RFC 3339 UTC text.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parses `500ms`, `60s`, `30m`, `1h`, `45d`: a whole number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration `{text}`: expected a whole number and a unit (ms, s, m, h, d), e.g. `500ms`, `60s`, `30m`, `1h`, `45d`"
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_a_fixed_width_and_sort_as_text() {
        let early = timestamp(datetime!(2026-01-02 03:04:05 UTC));
        assert_eq!(early, "2026-01-02T03:04:05.000000Z");
        let late = timestamp(later(
            datetime!(2026-01-02 03:04:05 UTC),
            Duration::from_micros(1500),
        ));
        assert_eq!(late, "2026-01-02T03:04:05.001500Z");
        assert!(early < late);
        assert_eq!(
            timestamp(later(datetime!(2026-01-02 0:00 UTC), Duration::MAX)),
            "9999-12-31T23:59:59.000000Z"
        );
        assert_eq!(
            timestamp(earlier(datetime!(2026-01-02 0:00 UTC), Duration::MAX)),
            "0000-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "5",
            "ms",
            "1.5s",
            "10 min",
            "-1s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_in_connector_files() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("30").ok(), None);
        assert_eq!(parse_duration("s").ok(), None);
        assert_eq!(parse_duration("5 days").ok(), None);
    }
}
