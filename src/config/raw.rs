//! Configuration files exactly as written: the reference for every key.
//!
//! These structs are strict (an unknown key is an error) and hold what the
//! user wrote, before defaults, paths and cross-references are resolved by
//! `compile`. Parts that are checked on their own (each account, each step)
//! are kept as [`Node`]s and read separately, so one mistake does not hide
//! the others.
//!
//! ```yaml
//! data_dir: ./data
//! bus: { kind: embedded }
//! http: { listen: "127.0.0.1:8080" }
//! accounts:
//!   courier-main: { connector: sandbox }
//! pipelines: [ "pipelines/*.yaml" ]
//! ```

use crate::clock::parse_duration;
use crate::model::Status;
use crate::yaml::{Located, Node};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The main file, `waybill.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory of the embedded bus and store, relative to this file. Default `./data`.
    pub data_dir: Option<Located<String>>,
    /// The message bus. Default `{ kind: embedded }`.
    pub bus: Option<RawBus>,
    /// Where idempotency keys, delivery ids and shipments are kept.
    pub store: Option<RawStore>,
    /// The HTTP server: webhooks, callbacks, metrics.
    pub http: Option<RawHttp>,
    /// Store and courier accounts by name; each entry is a [`RawAccount`].
    #[serde(default)]
    pub accounts: BTreeMap<String, Node>,
    /// Glob patterns of pipeline files, relative to this file. Default `["pipelines/*.yaml"]`.
    pub pipelines: Option<Vec<Located<String>>>,
    /// How the scheduler polls couriers' `track` operations; each courier
    /// account may override any key under its own `sync:`.
    pub sync: Option<Node>,
    /// The COD ledger: how remittances are judged and how often couriers'
    /// `payment` operations are asked; a [`RawCod`].
    pub cod: Option<Node>,
}

/// `cod:`.
///
/// ```yaml
/// cod: { tolerance: "1.00", payment_interval: 6h }
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCod {
    /// How far below the expected amount less the courier's declared fees
    /// a remittance may be and still match, in the shipment's currency, as
    /// a decimal string; below that it is `short_paid`. At least 0.
    /// Default `"1.00"` (a courier's rounding of its fees).
    pub tolerance: Option<Located<String>>,
    /// How long after delivery a collected shipment's payment is first
    /// asked about (the courier's `payment` operation), and the wait
    /// between asks until it is remitted. More than 0. Default `6h`.
    pub payment_interval: Option<Located<RawDuration>>,
}

/// `sync:`, at the top level or in a courier account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// Wait after a booking, and after a poll that found a new status,
    /// before asking again. Default `15m`.
    pub interval: Option<Located<RawDuration>>,
    /// The wait doubles after each poll that found nothing new, up to this.
    /// At least `interval`. Default `6h`.
    pub max_interval: Option<Located<RawDuration>>,
    /// A shipment still not delivered, returned or cancelled this long after
    /// booking stops being polled: it becomes `exception` (sub-status
    /// `tracking_expired`) with a review dead letter. More than `interval`.
    /// Default `45d`.
    pub max_age: Option<Located<RawDuration>>,
    /// Polls in flight at once (for the whole scheduler at the top level,
    /// for the account in an account). At least 1. Default 32.
    pub max_in_flight: Option<Located<usize>>,
}

/// `bus:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// `embedded` (a durable log in SQLite under `data_dir`) or `kafka`.
    pub kind: Located<BusKind>,
    /// Kafka bootstrap servers, `host:9092[,host2:9092]`; required for `kafka`.
    pub brokers: Option<Located<String>>,
    /// Prepended to every topic name and consumer group on the brokers, for
    /// `kafka`, so deployments (or test runs) sharing a cluster never see
    /// each other's topics, e.g. `topic_prefix: "team-a."`. Default empty.
    pub topic_prefix: Option<Located<String>>,
    /// librdkafka properties passed through as they are, for `kafka`.
    pub properties: Option<Located<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    Embedded,
    Kafka,
}

/// `store:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `postgres://…`, or the default `sqlite://<data_dir>/waybill.db`: the
    /// embedded bus keeps the store in its own database, so no other SQLite
    /// file may be named, and Kafka needs PostgreSQL.
    pub url: Option<Located<String>>,
}

/// `http:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<SocketAddr>,
    /// Largest webhook body accepted; bigger ones get 413. Default 1048576 (1 MiB).
    pub max_body_bytes: Option<Located<usize>>,
    /// Connections served at once. When all are taken, the one that has
    /// waited longest without sending a byte is closed to make room for a
    /// new one; failing that, 16 more are kept for `/healthz`, `/readyz` and
    /// `/metrics` (anything else on those gets 503); past those a new
    /// connection is answered 503 and closed at once. At least 1. Default 1024.
    pub max_connections: Option<Located<usize>>,
    /// How long a connection may take to send a request's head: counted from
    /// the end of its previous answer, or for its first request from its first
    /// byte (one that sends nothing is closed after this long as well). A
    /// duration, e.g. `10s`; more than 0. Default `10s`.
    pub header_read_timeout: Option<Located<RawDuration>>,
    /// Largest request head (request line and headers); bigger ones get 431
    /// and the connection is closed. At least 1024. Default 16384 (16 KiB).
    pub max_header_bytes: Option<Located<usize>>,
    /// How long a request's whole body may take to arrive, from its head;
    /// a webhook whose body is late gets 408. More than 0. Default `10s`.
    pub body_read_timeout: Option<Located<RawDuration>>,
    /// Bytes of request bodies held in memory at once while they are read
    /// (a body with a `Content-Length` reserves it before it is read); a
    /// webhook past it gets 503 at once. At least `max_body_bytes`. Default
    /// 16 × `max_body_bytes` (16 MiB).
    pub max_buffered_body_bytes: Option<Located<usize>>,
}

/// One entry of `accounts:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// Connector name: a file `connectors/<name>.yaml`.
    pub connector: Located<String>,
    /// Values for the connector's credential schema (tokens, webhook secrets).
    pub credentials: Option<Node>,
    /// Values for the connector's settings schema.
    pub settings: Option<Node>,
    /// Overrides the connector's `base_url` (e.g. a courier's staging API).
    pub base_url: Option<Located<String>>,
    /// Overrides keys of the top-level `sync:` for this courier account
    /// (read as a [`RawSync`]).
    pub sync: Option<Node>,
    /// `false` keeps the account configured but never booked on: routing
    /// passes over it. Default `true`.
    pub active: Option<Located<bool>>,
    /// `{ requests: 5, per: 1s }`: this account's own limit, in place of its
    /// connector's `rate_limit.per_account`. Default the connector's.
    pub rate_limit: Option<Located<RawAccountRate>>,
}

/// An account's `rate_limit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccountRate {
    /// Required. Requests allowed at once, and per `per` at the steady rate; at least 1.
    pub requests: u32,
    /// Required. A duration such as `1s` or `1m`, at most a day.
    pub per: String,
}

/// A pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// Unique name; the consumer group is `waybill.<name>`.
    pub name: Located<String>,
    /// What the pipeline consumes.
    pub input: RawInput,
    /// Steps run in order; each is a single-key map, read as a [`RawStep`].
    pub steps: Vec<Node>,
    /// Where results are produced. Optional.
    pub output: Option<RawOutput>,
    /// Backoff for retryable failures.
    pub retry: Option<RawRetry>,
    /// Where messages that give up go. Default topic `dlq.<name>`.
    pub dead_letter: Option<RawDeadLetter>,
    /// Bound on courier requests in flight at once, across keys. Default 64.
    pub max_in_flight: Option<Located<usize>>,
    /// What an edit after booking (address, phone, COD amount, items, …)
    /// does: `review` (a dead letter with the difference), `ignore`, or
    /// `rebook` (cancel at the courier, then book the next sequence; every
    /// courier the routes reach must declare `cancel`). Default `review`.
    pub on_change: Option<Located<String>>,
}

/// `input:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// Topic to consume, e.g. `orders.shopify`.
    pub topic: Located<String>,
    /// Only messages from these store accounts. Default: all.
    pub accounts: Option<Vec<Located<String>>>,
}

/// `output:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Topic to produce to, e.g. `shipments.booked`.
    pub topic: Located<String>,
}

/// `retry:`; every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts before giving up, the first included. Default 8.
    pub max_attempts: Option<Located<u32>>,
    /// First backoff. Default `500ms`.
    pub initial: Option<Located<RawDuration>>,
    /// Largest backoff. Default `60s`.
    pub max_delay: Option<Located<RawDuration>>,
    /// Give up once this long has passed since the first failure. Default `30m`.
    pub max_elapsed: Option<Located<RawDuration>>,
}

/// `dead_letter:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// Dead-letter topic. Default `dlq.<pipeline name>`.
    pub topic: Located<String>,
}

/// One pipeline step: a map with a single key naming its kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawStep {
    /// A minijinja expression over `event`, `order` and `account` (`change`
    /// instead of `order` in a notify pipeline); events for which it is
    /// false are acknowledged and counted, not processed.
    Trigger(Located<String>),
    /// A mapping file (relative to the main config file) producing the canonical shipment.
    Map(Located<String>),
    /// Checks on the shipment; a failure is a dead letter with class `needs_review`.
    Validate(RawValidate),
    /// Courier account rules, first match wins; a rule without `when` is the default.
    Route(Vec<RawRoute>),
    /// Books the shipment with the routed courier, idempotently. Written `book: {}`.
    Book(Option<RawBook>),
    /// Posts a customer notification for each status change in `statuses`,
    /// once per (shipment, status), signed; in a pipeline reading
    /// `shipments.status`. See [`RawNotify`].
    Notify(Box<RawNotify>),
    /// Writes the shipment's tracking number (from `shipments.booked`) or
    /// status change (from `shipments.status`) back to the store account the
    /// order came from, idempotently; the store connector's `write_back:`
    /// says how. Written `write_back: {}`.
    WriteBack(Option<RawWriteBackStep>),
}

/// `write_back: {}`: nothing to set yet; the store connector declares the rest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriteBackStep {}

/// `validate:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidate {
    /// Any of `phone`, `shipping_address`, `cod_amount`.
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawRule {
    Phone,
    ShippingAddress,
    CodAmount,
}

/// One rule of `route:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// A minijinja expression over `shipment`, `order`, `event`, `account`; absent on the default rule.
    pub when: Option<Located<String>>,
    /// A courier account name.
    pub to: Located<String>,
}

/// `book:`; takes no options yet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBook {}

/// `notify:`, in a pipeline whose input is `shipments.status`:
///
/// ```yaml
/// - notify:
///     to: notify-main                 # an account of a `kind: notifier` connector
///     body: mappings/notify/sms.yaml
///     statuses: [out_for_delivery, delivered, delivery_failed]
///     signature_header: X-Signature
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Required. The account to notify through: its connector is of `kind:
    /// notifier`, its `base_url` (or the connector's) is the URL posted to,
    /// and its `signing_secret` credential keys the signature.
    pub to: Located<String>,
    /// Required. A mapping file (relative to the main config file) producing
    /// the JSON body; it sees `change` (the status change), `shipment` (the
    /// canonical shipment as booked), `event` and `account` (the store account).
    pub body: Located<String>,
    /// Required, not empty. The canonical statuses notified; other changes are
    /// acknowledged and counted as skipped.
    pub statuses: Vec<Located<Status>>,
    /// Header carrying `sha256=<hex HMAC-SHA256 of the body>`. Default
    /// `X-Waybill-Signature`.
    pub signature_header: Option<Located<String>>,
    /// How long to wait for the receiver's answer, e.g. `5s`. Default `10s`.
    pub timeout: Option<Located<RawDuration>>,
}

/// A duration written as a number and a unit: `500ms`, `60s`, `30m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDuration(pub Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(RawDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{from_node, parse};

    #[test]
    fn steps_are_single_key_maps() {
        let step = |yaml: &str| from_node::<RawStep>(&parse(yaml).unwrap());
        assert!(
            matches!(step("trigger: \"true\"").unwrap(), RawStep::Trigger(t) if t.value == "true")
        );
        assert!(matches!(step("book: {}").unwrap(), RawStep::Book(Some(_))));
        assert!(matches!(step("book:").unwrap(), RawStep::Book(None)));
        let unknown = step("bok: {}").unwrap_err().to_string();
        assert!(unknown.contains("did you mean `book`"), "{unknown}");
        assert!(
            unknown.contains("trigger, map, validate, route, book, notify"),
            "{unknown}"
        );
        let two = step("map: a\nbook: {}").unwrap_err().to_string();
        assert!(two.contains("exactly one key"), "{two}");
        let rule = step("validate: { rules: [phone, adress] }").unwrap_err();
        assert_eq!((rule.line, rule.column), (1, 28));
    }
}
