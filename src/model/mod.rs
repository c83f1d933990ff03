//! Canonical data that crosses module boundaries: bus messages, shipments,
//! booking keys and results, failure classes and the status vocabulary.

pub mod change;
pub mod cod;
mod failure;
mod shipment;
mod status;
pub mod tracking;
pub mod transition;

pub use cod::CodState;
pub use failure::{Exchange, Failure};
pub use shipment::{Item, Recipient, Shipment};
pub use status::Status;
pub use tracking::{TrackingEvent, Via};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Message headers (`waybill-*`), ordered for stable output.
pub type Headers = BTreeMap<String, String>;

/// Header names carried by every message (DESIGN §1, §10).
pub mod header {
    pub const ID: &str = "waybill-id";
    pub const SCHEMA: &str = "waybill-schema";
    pub const SOURCE: &str = "waybill-source";
    pub const ACCOUNT: &str = "waybill-account";
    pub const TOPIC: &str = "waybill-topic";
    pub const RECEIVED_AT: &str = "waybill-received-at";
    pub const ERROR_STAGE: &str = "waybill-error-stage";
    pub const ERROR_CLASS: &str = "waybill-error-class";
    pub const ERROR_MESSAGE: &str = "waybill-error-message";
    pub const PIPELINE: &str = "waybill-pipeline";
    pub const ATTEMPTS: &str = "waybill-attempts";
    pub const FIRST_FAILED_AT: &str = "waybill-first-failed-at";
    pub const LAST_FAILED_AT: &str = "waybill-last-failed-at";
    pub const ORIGIN_TOPIC: &str = "waybill-origin-topic";
    pub const ORIGIN_PARTITION: &str = "waybill-origin-partition";
    pub const ORIGIN_OFFSET: &str = "waybill-origin-offset";
    pub const ERROR_REQUEST: &str = "waybill-error-request";
    pub const ERROR_RESPONSE: &str = "waybill-error-response";
    /// On a message `waybill dlq replay` re-enqueued: the `waybill-id` of
    /// the dead-lettered message, so a change it reported is handled again.
    pub const REPLAY_OF: &str = "waybill-replay-of";
}

/// Version of the message format written in `waybill-schema`.
pub const SCHEMA_VERSION: &str = "1";

/// A message as published to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `<account>:<order id>`; one key's messages stay in order.
    pub key: String,
    pub headers: Headers,
    pub payload: Vec<u8>,
}

/// A message as read back from a topic, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub message: Message,
}

/// How a failure should be handled (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The courier certainly did not act: retry with backoff.
    Retryable,
    /// Sent, outcome unknown: never blindly re-sent.
    Ambiguous,
    /// Dead letter at once.
    Permanent,
    /// Dead letter, flagged for a person.
    NeedsReview,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Ambiguous => "ambiguous",
            ErrorClass::Permanent => "permanent",
            ErrorClass::NeedsReview => "needs_review",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of one booking: (source, store account, order id, shipment sequence).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BookingKey {
    pub source: String,
    pub account: String,
    pub order_id: String,
    pub sequence: u32,
}

impl fmt::Display for BookingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.source, self.account, self.order_id, self.sequence
        )
    }
}

impl std::str::FromStr for BookingKey {
    type Err = String;

    /// Parses `source:account:order_id:sequence` as printed by `Display`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected =
            || format!("booking key `{s}` is not of the form SOURCE:ACCOUNT:ORDER_ID:SEQUENCE");
        let mut parts = s.splitn(2, ':');
        let source = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(expected)?;
        let rest = parts.next().ok_or_else(expected)?;
        let (rest, sequence) = rest.rsplit_once(':').ok_or_else(expected)?;
        let (account, order_id) = rest.split_once(':').ok_or_else(expected)?;
        if account.is_empty() || order_id.is_empty() {
            return Err(expected());
        }
        let sequence = sequence.parse().map_err(|_| expected())?;
        Ok(BookingKey {
            source: source.to_string(),
            account: account.to_string(),
            order_id: order_id.to_string(),
            sequence,
        })
    }
}

/// What a courier answered to a successful booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingResult {
    pub tracking_number: String,
    /// Connector name, e.g. `postex` or `sandbox`.
    pub courier: String,
    /// Courier account name from the config.
    pub account: String,
    /// Values extracted by the connector's `extract` rules.
    #[serde(default)]
    pub extracted: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booking_key_round_trips_with_colons_in_order_id() {
        let key = BookingKey {
            source: "shopify".into(),
            account: "shopify-main".into(),
            order_id: "820982911946154508".into(),
            sequence: 0,
        };
        let parsed: BookingKey = key.to_string().parse().unwrap();
        assert_eq!(parsed, key);
        assert!("nonsense".parse::<BookingKey>().is_err());
        assert!("a:b:c:x".parse::<BookingKey>().is_err());
    }
}
