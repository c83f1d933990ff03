//! The declarative HTTP connector engine (DESIGN §7).
//!
//! Stores and couriers are YAML files in `connectors/`, executed by one
//! engine: auth, request templates, success rule, JSONPath extraction and
//! failure classification.
//!
//! - [`raw`]: connector files exactly as written.
//! - `compile`: raw → checked [`Connector`], every problem at once.
//! - [`definition`]: the checked operations, webhook and callback rules.
//! - [`statuses`]: the status table.
//! - [`account`]: an account of a connector, as configured.
//! - [`target`]: request URLs that order data can never steer elsewhere.
//! - [`engine`]: prepares and sends requests and judges the answers.
//! - `encoding`: form and query-string bodies.
//! - `calls`: HTTP Basic, the token exchange, lookup lists, labels and the
//!   account check; `session`: the tokens and lists kept per account.
//! - [`classify`]: default failure classes and `Retry-After`.
//! - [`sandbox`]: the courier waybill serves itself.
//!
//! ```yaml
//! name: postex
//! kind: courier
//! credentials:
//!   token: { type: string, secret: true, required: true, description: "Merchant API token" }
//! base_url: https://api.postex.pk/services/integration/api
//! operations:
//!   book:
//!     request: { method: POST, path: /order/v3/create-order, headers: { token: "{{ credentials.token }}" },
//!                body: mappings/postex/book.yaml }
//!     success: "response.status == 200 and body.statusCode == '200'"
//!     extract: { tracking_number: "$.dist.trackingNumber" }
//! ```

pub mod account;
mod calls;
pub mod classify;
mod compile;
pub mod definition;
mod encoding;
pub mod engine;
pub mod pacing;
pub mod raw;
pub mod sandbox;
mod session;
pub mod settlement;
pub mod statuses;
pub mod target;

#[cfg(test)]
mod feature_tests;

pub use account::Account;
pub use definition::{
    CALLBACK_SECRET, CallbackSpec, CallbackVerify, Connector, ConnectorKind, EventTime, FieldSpec,
    FieldType, MatchedBy, Operation, OrderIdPath, RateLimit, SIGNING_SECRET, SettlementSpec,
    SignatureAlgorithm, SignatureEncoding, SignatureSpec, StatusEntry, StatusMatch, StatusTable,
    TimeFormat, TrackingPage, WebhookSpec, WriteBackSpec,
};
pub use engine::{Engine, OperationOutput};

use crate::redact::Secrets;
use serde_json::Value;

/// A request ready to send, as `waybill try` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// Values to redact wherever this request is shown.
    pub secrets: Secrets,
}

impl PreparedRequest {
    /// `{"method", "url", "headers", "body"}` with secrets replaced by `***`.
    pub fn redacted(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        let mut shown = serde_json::json!({
            "method": self.method,
            "url": self.url,
            "headers": headers,
            "body": self.body.clone().unwrap_or(Value::Null),
        });
        self.secrets.redact_value(&mut shown);
        shown
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
