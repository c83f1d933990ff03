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
pub mod classify;
mod compile;
pub mod definition;
pub mod engine;
pub mod pacing;
pub mod raw;
pub mod sandbox;
pub mod statuses;
pub mod target;

pub use account::Account;
pub use definition::{
    CallbackSpec, Connector, ConnectorKind, FieldSpec, FieldType, MatchedBy, Operation,
    OrderIdPath, RateLimit, SignatureAlgorithm, SignatureEncoding, SignatureSpec, StatusEntry,
    StatusMatch, StatusTable, WebhookSpec,
};
pub use engine::{Engine, OperationOutput};

use serde_json::Value;

/// A request ready to send, as `waybill try` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// Values to redact wherever this request is shown.
    pub secrets: Vec<String>,
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
        redact_value(&mut shown, &self.secrets);
        shown
    }
}

/// Replaces every secret, as written or percent-encoded, in `text`.
pub fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let form_encoded: String =
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for form in [secret.clone(), form_encoded, percent_encode_segment(secret)] {
            out = out.replace(&form, "***");
        }
    }
    out
}

fn redact_value(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => *text = redact_text(text, secrets),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_value(item, secrets)),
        Value::Object(fields) => {
            // Keys can carry data too (a body keyed by a secret is odd, but possible).
            let taken = std::mem::take(fields);
            for (key, mut item) in taken {
                redact_value(&mut item, secrets);
                fields.insert(redact_text(&key, secrets), item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
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
