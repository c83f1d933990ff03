//! The one failure type: why a step gave up on a message, carried from the
//! stage or connector that failed, through the runner's retry decision, into
//! the dead letter (DESIGN §7, §10).
//!
//! Stages fill `stage`, `class` and `message`; connector operations add the
//! courier's `Retry-After` and the redacted HTTP exchange.

use super::ErrorClass;
use std::fmt;
use std::time::Duration;

/// A classified failure of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The step that failed: `trigger`, `map`, `validate`, `route`, `book`, `publish`, …
    pub stage: &'static str,
    pub class: ErrorClass,
    pub message: String,
    /// From `Retry-After`, when the far end sent one.
    pub retry_after: Option<Duration>,
    /// The HTTP request and response, for connector failures. Boxed: a
    /// failure travels in every `Result` of a step, most of them without one.
    pub exchange: Option<Box<Exchange>>,
}

/// One HTTP exchange with a connector, as a dead letter keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exchange {
    /// The response status, when an answer came.
    pub status: Option<u16>,
    /// The redacted request.
    pub request: Option<serde_json::Value>,
    /// The response (status line and body), truncated.
    pub response: Option<String>,
}

impl Failure {
    pub fn new(stage: &'static str, class: ErrorClass, message: impl Into<String>) -> Self {
        Failure {
            stage,
            class,
            message: message.into(),
            retry_after: None,
            exchange: None,
        }
    }

    /// A failure that retrying cannot fix: dead letter at once.
    pub fn permanent(stage: &'static str, message: impl Into<String>) -> Self {
        Failure::new(stage, ErrorClass::Permanent, message)
    }

    /// The same failure, attributed to another step.
    pub fn at(mut self, stage: &'static str) -> Self {
        self.stage = stage;
        self
    }

    pub fn with_exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = Some(Box::new(exchange));
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The response status of the exchange, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.exchange.as_ref().and_then(|e| e.status)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.stage, self.class, self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_where_how_and_why() {
        let failure = Failure::permanent("map", "no such field `phone`");
        assert_eq!(failure.to_string(), "map: permanent: no such field `phone`");
        let moved = failure
            .at("book")
            .with_exchange(Exchange {
                status: Some(422),
                ..Exchange::default()
            })
            .with_retry_after(Some(Duration::from_secs(3)));
        assert_eq!(moved.stage, "book");
        assert_eq!(moved.status(), Some(422));
        assert_eq!(moved.retry_after, Some(Duration::from_secs(3)));
    }
}
