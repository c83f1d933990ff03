//! Default failure classes (DESIGN §7) and `Retry-After`.
//!
//! A connector overrides these per status and per body rule:
//!
//! ```yaml
//! errors:
//!   - { when: "'invalid city' in (body.statusMessage | lower)", class: permanent }
//! status_classes: { "500": retryable }
//! ```

use crate::model::ErrorClass;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// The class of an answer that failed the success rule, by HTTP status.
pub fn default_class(status: u16) -> ErrorClass {
    match status {
        429 | 503 => ErrorClass::Retryable,
        // Sent and maybe acted on: never blindly re-sent.
        500..=599 => ErrorClass::Ambiguous,
        _ => ErrorClass::Permanent,
    }
}

/// The class of a request that got no answer.
pub fn send_error_class(err: &reqwest::Error) -> (ErrorClass, String) {
    if err.is_builder() {
        (
            ErrorClass::Permanent,
            format!("request could not be built: {err}"),
        )
    } else if err.is_connect() {
        (ErrorClass::Retryable, format!("request not sent: {err}"))
    } else if err.is_timeout() {
        (
            ErrorClass::Ambiguous,
            format!("timed out waiting for the answer: {err}"),
        )
    } else {
        (
            ErrorClass::Ambiguous,
            format!("request failed after sending: {}", error_chain(err)),
        )
    }
}

/// An error with its sources, which is where reqwest keeps the useful part.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

const HTTP_DATE: &[FormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// Parses `Retry-After` as delay-seconds or an HTTP date relative to `now`;
/// a date in the past means "now".
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = time::PrimitiveDateTime::parse(value, HTTP_DATE)
        .ok()?
        .assume_utc();
    let wait = at - now;
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn defaults_follow_the_design() {
        assert_eq!(default_class(429), ErrorClass::Retryable);
        assert_eq!(default_class(503), ErrorClass::Retryable);
        for status in [500, 502, 504] {
            assert_eq!(default_class(status), ErrorClass::Ambiguous);
        }
        for status in [400, 401, 404, 422, 200] {
            assert_eq!(default_class(status), ErrorClass::Permanent);
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = datetime!(2025-10-21 07:28:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 21 Oct 2025 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 21 Oct 2025 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
