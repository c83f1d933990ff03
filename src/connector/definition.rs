//! A checked connector, as the engine, the sources and the sinks use it:
//! its credential and settings schemas, operations, webhook and callback rules, rate limits and
//! (from `statuses.rs`) the status table. They are built from the file as
//! written (`raw.rs`) by `compile.rs`, which reports every problem at once.
//!
//! ```yaml
//! operations:
//!   book:
//!     request: { method: POST, path: /book, body: mappings/sandbox/book.yaml }
//!     success: "response.status == 200 and body.tracking_number"
//!     extract: { tracking_number: "$.tracking_number" }
//!     errors:
//!       - { when: "response.status == 409", class: needs_review }
//!     status_classes: { "500": retryable }
//!     timeout: 10s
//! webhook:
//!   source: shopify
//!   signature: { header: X-Shopify-Hmac-Sha256, algorithm: hmac-sha256, encoding: base64, secret: webhook_secret }
//! callback:
//!   path_secret: true
//!   tracking_number: "$.trackingNumber"
//!   status: "$.orderStatus"
//! ```

pub use super::statuses::{MatchedBy, StatusEntry, StatusMatch, StatusTable};

use crate::mapping::{Expr, Mapping, Template};
use crate::model::ErrorClass;
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    Store,
    Courier,
    /// Customer notifications go out through it (the `notify` step).
    Notifier,
}

/// The credential a notifier connector's accounts sign notifications with.
pub const SIGNING_SECRET: &str = "signing_secret";

/// The type of a credential or setting.
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
    /// What the connector talks to, for people reading `waybill validate`.
    pub description: Option<String>,
    pub credentials: BTreeMap<String, FieldSpec>,
    pub settings: BTreeMap<String, FieldSpec>,
    /// Default base URL; an account's `base_url` overrides it. `waybill:`
    /// stands for waybill's own HTTP server (the sandbox courier).
    pub base_url: Option<String>,
    /// Declared operations by name (`book`, `track`, `track_many`, `cancel`,
    /// `lookup`, `payment`, `label`, `cities`, `token`).
    pub operations: BTreeMap<String, Operation>,
    /// How a store signs and names its webhooks (stores only).
    pub webhook: Option<WebhookSpec>,
    /// How a courier's status callbacks are authenticated.
    pub callback: Option<CallbackSpec>,
    /// Raw courier status → canonical status.
    pub statuses: Option<StatusTable>,
    pub rate_limit: Option<RateLimit>,
    /// The columns of the courier's settlement sheets.
    pub settlement: Option<SettlementSpec>,
    /// Basic auth and token exchange, applied to every request.
    pub auth: Auth,
    /// Name → id lookups for body mappings, by name (`cities`, `services`, …).
    pub lookups: BTreeMap<String, Lookup>,
    /// What `waybill accounts test` calls.
    pub account_check: Option<AccountCheck>,
    /// A courier's public tracking page.
    pub tracking_page: Option<TrackingPage>,
    /// How a store takes tracking and statuses written back.
    pub write_back: Option<WriteBackSpec>,
    /// File the connector was read from.
    pub file: PathBuf,
}

/// `auth:`, compiled.
#[derive(Debug, Default)]
pub struct Auth {
    pub basic: Option<BasicAuth>,
    pub token: Option<TokenAuth>,
}

/// HTTP Basic from two templates over the request context.
#[derive(Debug)]
pub struct BasicAuth {
    pub username: Template,
    pub password: Template,
}

/// A token from the `token` operation, sent in a header.
#[derive(Debug)]
pub struct TokenAuth {
    pub header: String,
    /// Sees `token`.
    pub value: Template,
    /// When the answer gives no `expires_in`.
    pub lifetime: Duration,
    pub refresh_before: Duration,
}

/// Default lifetime of a token whose answer says none.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Default margin before expiry at which a token is fetched again.
pub const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// Default time a fetched lookup list is kept.
pub const DEFAULT_LOOKUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// A name → id lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Written in the connector; keys normalised (see [`lookup_key`]).
    Table(BTreeMap<String, Value>),
    /// Fetched with an operation per account and kept for `ttl`.
    Operation { operation: String, ttl: Duration },
}

/// How lookup names compare: trimmed, whitespace collapsed, lower case.
pub fn lookup_key(name: &str) -> String {
    crate::mapping::normalize_key(name)
}

/// `account_check:`, compiled.
#[derive(Debug)]
pub struct AccountCheck {
    pub operation: String,
    pub vars: serde_json::Map<String, Value>,
    /// A failed answer that matches still proves the account works.
    pub ok_when: Option<Expr>,
}

/// How an operation's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Json,
    Form,
    Query,
}

/// How an operation's answer is read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    #[default]
    Json,
    /// Kept as bytes; a success must have one of these content types (any when empty).
    Binary { content_types: Vec<String> },
}

impl Connector {
    pub fn has_operation(&self, operation: &str) -> bool {
        self.operations.contains_key(operation)
    }

    pub fn operation(&self, operation: &str) -> Option<&Operation> {
        self.operations.get(operation)
    }

    /// What the courier's raw status `raw` means; `unknown` when the
    /// connector declares no `statuses` or none of them recognises it.
    pub fn status_of(&self, raw: &str) -> StatusMatch {
        match &self.statuses {
            Some(table) => table.lookup(raw),
            None => StatusTable::new(crate::model::Status::Unknown).lookup(raw),
        }
    }
}

/// A courier's public tracking page, as a store shows it.
#[derive(Debug)]
pub struct TrackingPage {
    pub company: String,
    /// A template over `tracking_number`.
    pub url: Option<Template>,
}

/// How a store takes write-backs.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBackSpec {
    /// The credential without which an account's write-backs are skipped.
    pub credential: String,
    /// Canonical status → the store's event status; others are not written.
    pub statuses: BTreeMap<String, String>,
}

impl WriteBackSpec {
    /// The store's event status for `status`, when it is written at all.
    pub fn event_status(&self, status: crate::model::Status) -> Option<&str> {
        self.statuses.get(status.as_str()).map(String::as_str)
    }
}

/// Applied when an operation declares no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One compiled operation (`book`, `track`, …).
#[derive(Debug)]
pub struct Operation {
    pub name: String,
    pub method: reqwest::Method,
    /// Path template appended to the base URL, e.g. `/track/{{ tracking_number }}`.
    pub path: String,
    /// Header name → value template.
    pub headers: Vec<(String, String)>,
    /// Query parameter name → value template.
    pub query: Vec<(String, String)>,
    /// Field mapping producing the body.
    pub body: Option<Arc<Mapping>>,
    /// How the body is sent (JSON, form, query string).
    pub encoding: Encoding,
    /// How the answer is read (JSON, or bytes such as a PDF).
    pub response: ResponseFormat,
    /// The path's templated segments and the header and query values,
    /// compiled once at load and keyed by their source text.
    pub templates: BTreeMap<String, Template>,
    /// Judged against `{response: {status, headers}, body, text}`.
    pub success: Expr,
    /// Name → JSONPath into the response body.
    pub extract: BTreeMap<String, JsonPath>,
    /// The `extract` names whose path can select several values: they
    /// extract the list of all of them.
    pub extract_lists: std::collections::BTreeSet<String>,
    /// First match wins, before the per-status defaults.
    pub errors: Vec<ErrorRule>,
    /// Overrides of the default class per HTTP status.
    pub status_classes: BTreeMap<u16, ErrorClass>,
    /// Expression giving the courier's own error text, e.g. `body.statusMessage`.
    pub error_message: Option<Expr>,
    pub timeout: Duration,
    /// `track_many`, `cities`, `find_fulfillment`: the answer's items, each read with `extract`.
    pub each: Option<JsonPath>,
    /// `track_many`: most tracking numbers per request.
    pub max_batch: Option<usize>,
}

/// `errors: [{when, class}]`.
#[derive(Debug)]
pub struct ErrorRule {
    pub when: Expr,
    pub class: ErrorClass,
    /// Seconds to wait before retrying, read from the answer.
    pub retry_after: Option<Expr>,
}

/// How a store signs and names its webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Source name used in topics and booking keys, e.g. `shopify`.
    pub source: String,
    pub signature: Option<SignatureSpec>,
    /// Header carrying the store's event name, e.g. `X-Shopify-Topic`.
    pub topic_header: Option<String>,
    /// Header carrying the delivery id used for deduplication.
    pub delivery_id_header: Option<String>,
    /// Where the body holds the order id; `$.id` unless declared.
    pub order_id: OrderIdPath,
    /// The event name `waybill simulate` sends by default.
    pub sample_topic: Option<String>,
}

/// Where a webhook body holds its order id, compiled when the connector
/// loads rather than for every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderIdPath {
    /// `$.name`: one top-level member, skimmed for without building the body.
    Member(String),
    /// Any other JSONPath, queried on the parsed body.
    Path(JsonPath),
}

impl OrderIdPath {
    pub fn parse(path: &str) -> Result<OrderIdPath, serde_json_path::ParseError> {
        let compiled = JsonPath::parse(path)?;
        let member = path.strip_prefix("$.").filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        Ok(match member {
            Some(name) => OrderIdPath::Member(name.to_string()),
            None => OrderIdPath::Path(compiled),
        })
    }
}

impl Default for OrderIdPath {
    fn default() -> OrderIdPath {
        OrderIdPath::Member("id".into())
    }
}

/// A signature over the raw request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSpec {
    pub header: String,
    pub algorithm: SignatureAlgorithm,
    pub encoding: SignatureEncoding,
    /// Credential field holding the shared secret.
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignatureAlgorithm {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Base64,
    Hex,
}

/// The credential the path, query and header secrets of callbacks are
/// compared with.
pub const CALLBACK_SECRET: &str = "callback_secret";

/// How a courier's status callbacks are verified and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSpec {
    pub verify: CallbackVerify,
    /// Header carrying the courier's delivery id, for deduplication.
    pub delivery_id_header: Option<String>,
    /// Where the body lists its events; `None`: the body is one event.
    pub events: Option<JsonPath>,
    pub tracking_number: JsonPath,
    pub status: JsonPath,
    pub code: Option<JsonPath>,
    pub event_time: Option<JsonPath>,
    pub reason: Option<JsonPath>,
    /// How the event time is written, and its zone when it names none.
    pub time: EventTime,
}

impl CallbackSpec {
    /// The credential a request is checked against.
    pub fn secret_credential(&self) -> &str {
        match &self.verify {
            CallbackVerify::Signature(signature) => &signature.secret,
            _ => CALLBACK_SECRET,
        }
    }
}

/// How a callback request proves it comes from the courier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackVerify {
    /// `/callbacks/<connector>/<account>/<callback_secret>`.
    PathSecret,
    /// `?<name>=<callback_secret>`.
    QuerySecret(String),
    /// Header `<name>: <callback_secret>`.
    HeaderSecret(String),
    /// An HMAC of the raw body.
    Signature(SignatureSpec),
}

/// How a courier writes its event times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    pub format: TimeFormat,
    /// The offset of times that name none.
    pub zone: time::UtcOffset,
}

impl Default for EventTime {
    fn default() -> EventTime {
        EventTime {
            format: TimeFormat::Rfc3339,
            zone: time::UtcOffset::UTC,
        }
    }
}

/// `time_format:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    /// Seconds since the epoch, as a number or text.
    Unix,
    /// Milliseconds since the epoch, as a number or text.
    UnixMillis,
    /// A `time` format description, parsed once at load.
    Pattern(time::format_description::OwnedFormatItem),
}

/// At most `requests` per `per`, for each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// The columns of a courier's settlement sheet (`settlement:`), as written
/// in its header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSpec {
    pub tracking_number: String,
    pub amount: String,
    pub date: Option<String>,
    pub reference: Option<String>,
    /// Added up.
    pub fees: Vec<String>,
    pub delimiter: u8,
}
