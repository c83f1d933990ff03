//! Connector files exactly as written: the reference for every key of a
//! `connectors/<name>.yaml`.
//!
//! These structs are strict (an unknown key is an error) and hold what the
//! author wrote, before `compile` checks it and resolves mapping files,
//! templates, expressions and JSONPaths. Values that later checks point at
//! are [`Located`].
//!
//! ```yaml
//! name: postex
//! kind: courier
//! credentials:
//!   token: { type: string, secret: true, required: true, description: "Merchant API token" }
//! base_url: https://api.postex.pk/services/integration/api
//! operations:
//!   book:
//!     request: { method: POST, path: /order/v3/create-order, body: mappings/postex/book.yaml }
//!     success: "response.status == 200 and body.statusCode == '200'"
//!     extract: { tracking_number: "$.dist.trackingNumber" }
//! ```

use super::definition::{SignatureAlgorithm, SignatureEncoding};
use crate::model::{ErrorClass, Status};
use crate::yaml::Located;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A whole connector file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnector {
    /// Required. Lowercase letters, digits, `-` and `_`; accounts name the
    /// connector by it, and the file is `connectors/<name>.yaml`.
    pub name: Option<Located<String>>,
    /// Required. `store` (orders come from it), `courier` (shipments are
    /// booked with it) or `notifier` (a `notify` step posts customer
    /// notifications through its accounts; it declares a secret
    /// `signing_secret` credential, and the URL is the account's `base_url`
    /// or this file's).
    pub kind: Option<Located<RawKind>>,
    /// What the connector talks to, shown by `waybill validate`. Default none.
    pub description: Option<String>,
    /// The credential schema accounts are checked against, by field name. Default none.
    pub credentials: Option<BTreeMap<String, Located<RawField>>>,
    /// The settings schema accounts are checked against, by field name. Default none.
    pub settings: Option<BTreeMap<String, Located<RawField>>>,
    /// Default base URL of every request; an account's `base_url` overrides
    /// it. `waybill:/…` is waybill's own server. It may name the account's
    /// credentials or settings in templates, e.g. `"https://{{ credentials.shop_domain }}"`
    /// (rendered from the account alone, never from order data; the result
    /// must be a bare `http(s)://host[:port]`). Required once there are operations.
    pub base_url: Option<Located<String>>,
    /// The HTTP operations. Required for a courier (at least `book`).
    pub operations: Option<RawOperations>,
    /// How a store signs and names its webhook deliveries (stores only). Default none.
    pub webhook: Option<Located<RawWebhook>>,
    /// How a courier's status callbacks are authenticated and read (couriers
    /// only). Default none: the connector takes no callbacks.
    pub callback: Option<Located<RawCallback>>,
    /// The courier's raw status strings → canonical statuses. Default none.
    pub statuses: Option<Located<RawStatuses>>,
    /// `rate_limit: { per_account: { requests: 10, per: 1s } }`, where a
    /// courier documents one: bookings and tracking polls wait for a slot before they are sent.
    /// Default none (no limit).
    pub rate_limit: Option<RawRateLimit>,
    /// The courier's settlement sheet columns (couriers only), for
    /// `waybill cod import`. Default none: its sheets cannot be imported.
    pub settlement: Option<Located<RawSettlement>>,
    /// How requests authenticate beyond their own headers: HTTP Basic from
    /// credentials, and a token fetched by the `token` operation. Default none.
    pub auth: Option<Located<RawAuth>>,
    /// Name → id tables the body mappings read with `lookup_id(name)` (and
    /// `city_id` for `cities`), written here or fetched by an operation.
    /// Default none.
    pub lookups: Option<BTreeMap<String, Located<RawLookup>>>,
    /// The harmless authenticated call `waybill accounts test` makes.
    /// Default none: the command then says the connector declares none.
    pub account_check: Option<Located<RawAccountCheck>>,
    /// Couriers: the public tracking page a store shows its customer.
    /// Default none (a write-back then sends the number alone).
    pub tracking_page: Option<Located<RawTrackingPage>>,
    /// Stores: writing tracking and statuses back, by the operations
    /// `open_fulfillments`, `fulfill`, `find_fulfillment` and
    /// `fulfillment_event`. Default none: the store takes no write-back.
    pub write_back: Option<Located<RawWriteBack>>,
}

/// `auth:`.
///
/// ```yaml
/// auth:
///   basic: { username: "{{ credentials.account_no }}", password: "{{ credentials.password }}" }
///   token: { header: Authorization, value: "Bearer {{ token }}", lifetime: 1h, refresh_before: 1m }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// HTTP Basic on every request: `Authorization: Basic base64(username:password)`.
    /// Default none.
    pub basic: Option<Located<RawBasicAuth>>,
    /// A token the `token` operation fetches, cached per account, sent on
    /// every other operation. Default none.
    pub token: Option<Located<RawTokenAuth>>,
}

/// `auth.basic:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// Required. Template of the user name, e.g. `"{{ credentials.account_no }}"`.
    pub username: Located<String>,
    /// Required. Template of the password, e.g. `"{{ credentials.password }}"`.
    pub password: Located<String>,
}

/// `auth.token:`. The `token` operation (declared under `operations:`,
/// sent without a token) must extract `token`, and may extract
/// `expires_in` (seconds). The token is kept per account in memory, shared
/// by concurrent requests (one exchange at a time), fetched again
/// `refresh_before` its expiry, and once after an HTTP 401, the request then
/// sent once more. It is a secret: redacted like `secret: true` credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenAuth {
    /// Header carrying the token. Default `Authorization`.
    pub header: Option<Located<String>>,
    /// Template of the header's value; sees `token`. Default `"Bearer {{ token }}"`.
    pub value: Option<Located<String>>,
    /// How long a token lasts when the answer says nothing (`expires_in`), e.g. `1h`.
    /// Default `1h`.
    pub lifetime: Option<Located<String>>,
    /// Fetch a new token this long before the old one expires. Default `1m`.
    pub refresh_before: Option<Located<String>>,
}

/// One entry of `lookups:`: exactly one of `table` and `operation`.
///
/// ```yaml
/// lookups:
///   services: { table: { standard: 1, same_day: 4 } }
///   cities: { operation: cities, ttl: 24h }
/// ```
///
/// Names match trimmed, whitespace-collapsed and case-insensitively; a name
/// not found is a permanent error naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookup {
    /// Name → id, written here. Default none.
    pub table: Option<BTreeMap<String, Value>>,
    /// An operation whose `each` items give `name` and `id` in `extract`,
    /// fetched per account and kept for `ttl`. Only `cities` for now. Default none.
    pub operation: Option<Located<String>>,
    /// How long a fetched list is kept, e.g. `24h`. Default `24h`.
    pub ttl: Option<Located<String>>,
}

/// `account_check:`: the operation `waybill accounts test` calls.
///
/// ```yaml
/// account_check:
///   operation: track
///   vars: { tracking_number: "000000000000" }
///   ok_when: "response.status == 404"    # the courier's "not found" still proves the credentials
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccountCheck {
    /// Required. A declared operation, e.g. `cities` or `track`.
    pub operation: Located<String>,
    /// Template variables the operation sees (`tracking_number`, …). Default none.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// An expression over the answer, like `success`, under which a failed
    /// answer still counts as a working account. Default none.
    pub ok_when: Option<Located<String>>,
}

/// `tracking_page:` of a courier.
///
/// ```yaml
/// tracking_page:
///   company: PostEx
///   url: "https://postex.pk/tracking?cn={{ tracking_number | urlencode }}"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrackingPage {
    /// Required. The carrier's name as the store shows it, e.g. `PostEx`.
    pub company: Located<String>,
    /// The page's URL, a template over `tracking_number`; `waybill:/…` is
    /// waybill's own server. Default none.
    pub url: Option<Located<String>>,
}

/// `write_back:` of a store.
///
/// ```yaml
/// write_back:
///   credential: access_token
///   statuses: { in_transit: IN_TRANSIT, delivered: DELIVERED }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriteBack {
    /// Required. The credential that turns write-back on: an account
    /// without it has its write-backs skipped and counted, and `validate`
    /// notes it. It must be in `credentials:`.
    pub credential: Located<String>,
    /// Canonical status (e.g. `in_transit`) → the store's event status,
    /// sent as `event_status` to `fulfillment_event`. Statuses left out are
    /// not written. Default none.
    #[serde(default)]
    pub statuses: BTreeMap<String, Located<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKind {
    Store,
    Courier,
    Notifier,
}

/// One field of `credentials:` or `settings:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    /// Required. `string`, `number`, `bool` or `list`.
    #[serde(rename = "type")]
    pub field_type: RawFieldType,
    /// Accounts must give a value. Default `false`.
    #[serde(default)]
    pub required: bool,
    /// The value is never logged, never a metric label, redacted in
    /// `waybill try` and dead letters. Default `false`.
    #[serde(default)]
    pub secret: bool,
    /// Shown in messages about the field. Default empty.
    #[serde(default)]
    pub description: String,
    /// Value used when an account gives none; must fit `type`, and makes no
    /// sense beside `required`. Default none.
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawFieldType {
    String,
    Number,
    Bool,
    List,
}

/// `operations:`; each is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperations {
    /// Books a shipment; must extract `tracking_number`.
    pub book: Option<Located<RawOperation>>,
    /// Reads a shipment's current status: `extract` names `status` (the raw
    /// status), and optionally `code`, `reason` and `event_time` (RFC 3339).
    pub track: Option<Located<RawOperation>>,
    /// Reads many shipments' statuses in one request; the scheduler uses it
    /// instead of `track` when declared. Its templates see
    /// `tracking_numbers` (a list of at most `max_batch`); `each` selects
    /// the answer's one item per shipment, and `extract` is read from each
    /// item and must name `tracking_number` and `status`.
    pub track_many: Option<Located<RawOperation>>,
    /// Cancels a booking.
    pub cancel: Option<Located<RawOperation>>,
    /// Finds a booking by our reference, after an ambiguous outcome.
    pub lookup: Option<Located<RawOperation>>,
    /// Whether the courier paid the merchant a collected shipment's COD;
    /// the scheduler asks it for collected shipments every
    /// `cod.payment_interval`. Its templates see `tracking_number`,
    /// `reference` and `cod_amount`. `extract` must name `settled` (true,
    /// or `"true"`/`"yes"`/`"1"`, once paid) and may name `remitted` (the
    /// amount paid), `remitted_at`, `reference` (every match of its path is
    /// kept, e.g. two receipt numbers) and `fees` (every match is added up).
    pub payment: Option<Located<RawOperation>>,
    /// Fetches a shipment's label; sees `tracking_number`. Usually with
    /// `response: { format: binary }`.
    pub label: Option<Located<RawOperation>>,
    /// Lists the courier's cities: `each` selects one item per city, and
    /// `extract` must name `name` and `id`. A `lookups:` entry uses it.
    pub cities: Option<Located<RawOperation>>,
    /// Exchanges credentials for a token (see `auth.token`): `extract`
    /// must name `token`, and may name `expires_in` (seconds).
    pub token: Option<Located<RawOperation>>,
    /// Stores, write-back: reads what of the order can be fulfilled; its
    /// `extract` values are seen by `fulfill`'s templates. Optional.
    pub open_fulfillments: Option<Located<RawOperation>>,
    /// Stores, write-back: records the tracking number with the store; sees
    /// `order_id`, `tracking: {number, company, url}` and what
    /// `open_fulfillments` extracted; must extract `fulfillment_id`.
    pub fulfill: Option<Located<RawOperation>>,
    /// Stores, write-back: the order's fulfillments, read after an ambiguous
    /// outcome before anything is sent again; `each` selects one item per
    /// fulfillment, whose `extract` must name `fulfillment_id` and
    /// `tracking_numbers`, and may name `event_statuses`.
    pub find_fulfillment: Option<Located<RawOperation>>,
    /// Stores, write-back: records a status change on the fulfillment; sees
    /// `fulfillment_id`, `event_status` (from `write_back.statuses`),
    /// `status` (canonical), `event_time` and `tracking`.
    pub fulfillment_event: Option<Located<RawOperation>>,
}

impl RawOperations {
    /// The names of the operations written, right or wrong.
    pub fn declared(&self) -> Vec<&'static str> {
        [
            ("book", self.book.is_some()),
            ("track", self.track.is_some()),
            ("track_many", self.track_many.is_some()),
            ("cancel", self.cancel.is_some()),
            ("lookup", self.lookup.is_some()),
            ("payment", self.payment.is_some()),
            ("label", self.label.is_some()),
            ("cities", self.cities.is_some()),
            ("token", self.token.is_some()),
            ("open_fulfillments", self.open_fulfillments.is_some()),
            ("fulfill", self.fulfill.is_some()),
            ("find_fulfillment", self.find_fulfillment.is_some()),
            ("fulfillment_event", self.fulfillment_event.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, written)| written.then_some(name))
        .collect()
    }
}

/// `settlement:`: the columns of the courier's settlement sheets, for
/// `waybill cod import --courier <connector> FILE.csv`. Column names match
/// the sheet's header row trimmed and case-insensitive.
///
/// ```yaml
/// settlement:
///   tracking_number: "Tracking Number"
///   amount: "Amount Paid"
///   date: "Payment Date"
///   reference: "CPR Number"
///   fees: ["Delivery Charges", "GST"]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettlement {
    /// Required. The column of the shipment's tracking number.
    pub tracking_number: Located<String>,
    /// Required. The column of the amount paid for the shipment.
    pub amount: Located<String>,
    /// The column of when it was paid. Default none.
    pub date: Option<Located<String>>,
    /// The column of the payment's reference (receipt, cheque). Default none.
    pub reference: Option<Located<String>>,
    /// Columns of the courier's fees on the shipment, added up. Default none.
    #[serde(default)]
    pub fees: Vec<Located<String>>,
    /// The field separator, one character. Default `,`.
    pub delimiter: Option<Located<String>>,
}

/// One operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperation {
    /// Required. What to send.
    pub request: RawRequest,
    /// Required. An expression over `{response: {status, headers}, body,
    /// text}`; couriers answer 200 with an error inside, so judge the body too.
    pub success: Located<String>,
    /// Name → JSONPath into the response body: the first value found, or,
    /// for a path that can select several (`[*]`, `..`, a filter `[?…]`),
    /// the list of all of them. Default none.
    #[serde(default)]
    pub extract: BTreeMap<String, Located<String>>,
    /// `[{ when: EXPR, class: CLASS }]`, first match wins, before
    /// `status_classes` and the defaults. Default none.
    #[serde(default)]
    pub errors: Vec<RawErrorRule>,
    /// HTTP status → failure class, overriding the defaults (429 and 503
    /// `retryable`, 500/502/504 `ambiguous`, other 4xx `permanent`). Default none.
    #[serde(default)]
    pub status_classes: BTreeMap<String, Located<ErrorClass>>,
    /// An expression giving the courier's own error text, e.g.
    /// `body.statusMessage`. Default none.
    pub error_message: Option<Located<String>>,
    /// How long to wait for the answer, e.g. `10s`. Default `30s`.
    pub timeout: Option<Located<String>>,
    /// `track_many`, `cities` and `find_fulfillment` only, required: JSONPath
    /// to the answer's items, one per shipment (or city, or fulfillment), e.g.
    /// `$.dist[*]`.
    pub each: Option<Located<String>>,
    /// `track_many` only, required: most tracking numbers per request.
    pub max_batch: Option<Located<usize>>,
    /// How the answer is read. Default `{ format: json }`.
    pub response: Option<Located<RawResponse>>,
}

/// `response:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// `json` (parsed, for `body`) or `binary` (kept as bytes with its content
    /// type, e.g. a PDF label; `body` is then null unless the answer is JSON). Default `json`.
    pub format: Option<RawResponseFormat>,
    /// `binary` only: the content types a success must have, e.g.
    /// `[application/pdf]`; an answer of another type fails. Default any.
    #[serde(default)]
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawResponseFormat {
    Json,
    Binary,
}

/// `request.encoding:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawEncoding {
    /// The body mapping's output as JSON.
    Json,
    /// The body mapping's output (a map of scalars) as
    /// `application/x-www-form-urlencoded`.
    Form,
    /// The body mapping's output (a map of scalars) as query parameters,
    /// after those of `query:`; no body is sent (e.g. a GET that books).
    Query,
}

/// `request:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// Required. `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: Located<String>,
    /// Required. Appended to the base URL; starts with `/`; whole segments
    /// may be templates, e.g. `/track/{{ tracking_number }}`.
    pub path: Located<String>,
    /// Header name → value template. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, Located<String>>,
    /// Query parameter → value template. Default none.
    #[serde(default)]
    pub query: BTreeMap<String, Located<String>>,
    /// A mapping file (relative to the config directory) producing the JSON
    /// body. Default none (no body).
    pub body: Option<Located<String>>,
    /// How the body mapping's output is sent: `json`, `form` or `query`.
    /// Values are encoded, never spliced. Default `json`.
    pub encoding: Option<Located<RawEncoding>>,
}

/// One rule of `errors:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRule {
    /// Required. An expression over the answer, like `success`.
    pub when: Located<String>,
    /// Required. `retryable`, `ambiguous`, `permanent` or `needs_review`.
    pub class: ErrorClass,
    /// `retryable` only: an expression over the answer giving the seconds
    /// to wait before the next attempt, for far ends that say it in the
    /// body rather than in `Retry-After`. Default none.
    pub retry_after: Option<Located<String>>,
}

/// `webhook:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Required. Source name in topics and booking keys: events go to `orders.<source>`.
    pub source: String,
    /// How the body is signed. Default none (unsigned).
    pub signature: Option<Located<RawSignature>>,
    /// Header carrying the store's event name, e.g. `X-Shopify-Topic`. Default none.
    pub topic_header: Option<String>,
    /// Header carrying the delivery id used for deduplication. Default none.
    pub delivery_id_header: Option<String>,
    /// JSONPath of the order id in the body. Default `$.id`.
    pub order_id: Option<Located<String>>,
    /// The event name `waybill simulate` sends when it is given no `--topic`,
    /// e.g. `orders/create`. Default none: `--topic` is then required.
    pub sample_topic: Option<String>,
}

/// A signature over the raw request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    /// Required. Header carrying the signature.
    pub header: String,
    /// Required. `hmac-sha256`.
    pub algorithm: SignatureAlgorithm,
    /// Required. `base64` or `hex`.
    pub encoding: SignatureEncoding,
    /// Required. The credential holding the shared secret; it must be `secret: true`.
    pub secret: String,
}

/// `callback:`: status events a courier posts to
/// `/callbacks/<connector>/<account>`.
///
/// ```yaml
/// callback:
///   path_secret: true               # POST /callbacks/postex/<account>/<callback_secret>
///   events: "$.events[*]"           # optional: the body is one event when absent
///   tracking_number: "$.trackingNumber"
///   status: "$.orderStatus"
///   event_time: "$.statusUpdateDatetime"
///   time_format: "[year]-[month]-[day] [hour]:[minute]:[second]"
///   time_zone: "+05:00"
/// ```
///
/// Exactly one of `path_secret`, `query_secret`, `header_secret` and
/// `signature` says how a request is verified; the first three compare a
/// value of the request with the account's `callback_secret` credential,
/// which the credential schema must declare `secret: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    /// The secret is the URL's last path segment:
    /// `/callbacks/<connector>/<account>/<secret>`. Default `false`.
    #[serde(default)]
    pub path_secret: bool,
    /// The query parameter carrying the secret, e.g. `token` for
    /// `?token=<secret>`. Default none.
    pub query_secret: Option<Located<String>>,
    /// The header carrying the secret, e.g. `X-Callback-Token`. Default none.
    pub header_secret: Option<Located<String>>,
    /// An HMAC of the raw body, as webhook signatures are declared; its
    /// `secret` names the credential keyed with (`callback_secret` by
    /// convention). Default none.
    pub signature: Option<Located<RawSignature>>,
    /// Header carrying the courier's delivery id, for deduplication. Default
    /// none, and when a request lacks it: the SHA-256 of the body stands in.
    pub delivery_id_header: Option<Located<String>>,
    /// JSONPath of the list of events in the body, e.g. `$.events[*]`; the
    /// other paths are then read from each event. Default none: the whole
    /// body is one event.
    pub events: Option<Located<String>>,
    /// Required. JSONPath of the tracking number in an event.
    pub tracking_number: Located<String>,
    /// Required. JSONPath of the courier's raw status string in an event.
    pub status: Located<String>,
    /// JSONPath of the courier's status code, where it sends one. Default none.
    pub code: Option<Located<String>>,
    /// JSONPath of when the event happened. Default none: the receipt time
    /// then orders the event.
    pub event_time: Option<Located<String>>,
    /// JSONPath of the reason (an attempt's cause, a hold's). Default none.
    pub reason: Option<Located<String>>,
    /// How `event_time` is written: `rfc3339`, `unix` (seconds), `unix_ms`,
    /// or a `time` format description such as
    /// `"[year]-[month]-[day] [hour]:[minute]:[second]"`. An RFC 3339 time
    /// is accepted whatever the format says. Default `rfc3339`.
    pub time_format: Option<Located<String>>,
    /// The UTC offset of times written without one, e.g. `"+05:00"`
    /// (couriers of one country use one fixed zone). Default `"+00:00"`.
    pub time_zone: Option<Located<String>>,
}

/// `statuses:`. A raw status is tried against the exact keys of `table`,
/// then its `*` prefixes, then `rules`, and is otherwise `unknown`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatuses {
    /// Raw status → canonical status, or `{ status, sub_status }`. Keys
    /// match trimmed, whitespace-collapsed, case-insensitive, so two keys
    /// that differ only so are an error; a key ending in `*` matches by
    /// prefix (the longest first) and what follows is the `reason`.
    /// Default none.
    #[serde(default)]
    pub table: BTreeMap<String, Located<RawStatusEntry>>,
    /// Regex rules for couriers whose statuses are free text, tried in
    /// order after the table. Default none.
    #[serde(default)]
    pub rules: Vec<Located<RawStatusRule>>,
    /// Status of anything neither the table nor a rule recognises. Default `unknown`.
    pub unknown: Option<Status>,
}

/// One entry of `statuses.table`: a status, or a status with a sub-status.
#[derive(Debug)]
pub enum RawStatusEntry {
    Plain(Status),
    Detailed(RawStatusDetail),
}

/// Read by hand rather than `untagged`, which would answer a misspelt
/// status or key with "did not match any variant" instead of naming it.
impl<'de> Deserialize<'de> for RawStatusEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = RawStatusEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a canonical status, or `{ status, sub_status }`")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<RawStatusEntry, E> {
                Status::deserialize(name.into_deserializer()).map(RawStatusEntry::Plain)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawStatusEntry, A::Error> {
                RawStatusDetail::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawStatusEntry::Detailed)
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusDetail {
    /// Required. The canonical status.
    pub status: Status,
    /// Free-form detail kept beside it, e.g. `awaiting_pickup`. Default none.
    pub sub_status: Option<String>,
}

/// One rule of `statuses.rules`:
/// `{ regex: "^undelivered due to (?P<reason>.+)$", status: delivery_failed, sub_status: address_issue }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusRule {
    /// Required. A regex (Rust `regex` syntax) searched in the raw status,
    /// trimmed and whitespace-collapsed, ignoring case; anchor it with `^…$`
    /// to match the whole. A capture named `reason` becomes the reason.
    pub regex: Located<String>,
    /// Required. The canonical status.
    pub status: Status,
    /// Free-form detail kept beside it. Default none.
    pub sub_status: Option<String>,
}

/// `rate_limit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Required. The limit each account of the connector is held to.
    pub per_account: Located<RawRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Required. Requests allowed at once, and per `per` at the steady rate; at least 1.
    pub requests: u32,
    /// Required. A duration such as `1s` or `1m`, at most a day.
    pub per: String,
}
