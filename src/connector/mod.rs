//! The declarative HTTP connector engine (DESIGN §7).
//!
//! Stores and couriers are YAML files in `connectors/`, executed by one
//! engine: auth, request templates, success rule, JSONPath extraction and
//! failure classification.
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

pub mod sandbox;

use crate::config::{Account, Diagnostic};
use crate::model::{BookingResult, ErrorClass};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    Store,
    Courier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Bool,
    List,
}

/// One field of a credential or settings schema.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub field_type: FieldType,
    pub required: bool,
    pub secret: bool,
    pub description: String,
    pub default: Option<Value>,
}

/// A compiled connector definition.
#[derive(Debug)]
pub struct Connector {
    pub name: String,
    pub kind: ConnectorKind,
    pub credentials: BTreeMap<String, FieldSpec>,
    pub settings: BTreeMap<String, FieldSpec>,
    /// Default base URL; an account's `base_url` overrides it. `waybill:`
    /// stands for waybill's own HTTP server (the sandbox courier).
    pub base_url: Option<String>,
}

impl Connector {
    /// Reads and compiles a connector file, reporting every problem.
    pub fn load(path: &Path) -> Result<Connector, Vec<Diagnostic>> {
        let _ = path;
        todo!("Connector::load")
    }

    pub fn has_operation(&self, operation: &str) -> bool {
        let _ = operation;
        todo!("Connector::has_operation")
    }
}

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
        todo!("PreparedRequest::redacted")
    }
}

/// A classified failure of a connector operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct CourierError {
    pub class: ErrorClass,
    pub message: String,
    pub status: Option<u16>,
    /// From `Retry-After`, when the courier sent one.
    pub retry_after: Option<Duration>,
    /// The redacted request, for dead letters.
    pub request: Option<Value>,
    /// The response body, truncated, for dead letters.
    pub response: Option<String>,
}

/// Executes connector operations over HTTP.
#[derive(Debug, Clone)]
pub struct Engine {
    http: reqwest::Client,
    /// Base URL of waybill's own HTTP server, for `waybill:` base URLs.
    self_base: String,
}

impl Engine {
    pub fn new(http: reqwest::Client, self_base: String) -> Self {
        Engine { http, self_base }
    }

    /// Builds the `book` request for a shipment without sending it.
    pub fn prepare_book(&self, connector: &Connector, account: &Account, shipment: &Value) -> Result<PreparedRequest, CourierError> {
        let _ = (connector, account, shipment, &self.http, &self.self_base);
        todo!("Engine::prepare_book")
    }

    /// Sends a prepared `book` request and judges the answer.
    pub async fn book(&self, connector: &Connector, account: &Account, request: PreparedRequest) -> Result<BookingResult, CourierError> {
        let _ = (connector, account, request);
        todo!("Engine::book")
    }
}
