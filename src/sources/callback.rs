//! Courier status callbacks: `POST /callbacks/{connector}/{account}` (or
//! `…/{account}/{secret}` for a path secret), verified and read as the
//! courier connector's `callback:` section declares, each event of the body
//! put on `tracking.<connector>` as a [`TrackingEvent`].
//!
//! ```yaml
//! # connectors/postex.yaml
//! credentials:
//!   callback_secret: { type: string, secret: true, description: "Secret of the callback URL" }
//! callback:
//!   path_secret: true                    # /callbacks/postex/<account>/<callback_secret>
//!   tracking_number: "$.trackingNumber"
//!   status: "$.orderStatus"
//!   event_time: "$.statusUpdateDatetime"
//!   time_format: "[year]-[month]-[day] [hour]:[minute]:[second]"
//!   time_zone: "+05:00"
//! ```
//!
//! Answered in the order webhooks are (DESIGN §8): unknown connector or
//! account, or a connector without `callback:`, → 404, and so is an account
//! that has no `callback_secret` to check against (its callbacks are not
//! enabled: nothing could tell the courier from anyone else); body too large
//! → 413 (and the body-reading answers of [`super::body`]: 503, 408, 400);
//! bad secret or signature → 401; a body that is not UTF-8 JSON, repeats a
//! key, or has an event without a tracking number or status (or with a time
//! that does not match `time_format`) → 400; seen before → 200; bus cannot
//! take it → 503; otherwise 200 once every event is durably on the bus.
//!
//! Deduplication uses the webhook delivery ids, under source
//! `tracking.<connector>`: the id is the courier's delivery-id header where
//! the connector names one and the request has it, else the SHA-256 of the
//! body; the events of a list are remembered one by one (`<id>#<n>`), so a
//! redelivery after a partial failure adds only the events still missing.

use super::Ingest;
use super::enqueue::{DeliveryId, Enqueued};
use super::webhook::{Rejection, read_body, verify};
use crate::clock::{now_timestamp, timestamp};
use crate::config::Account;
use crate::connector::{CallbackSpec, CallbackVerify, Connector, EventTime, TimeFormat};
use crate::model::tracking::{tracking_key, tracking_topic};
use crate::model::{Message, SCHEMA_VERSION, TrackingEvent, Via, header};
use crate::telemetry::events::{CallbackReceived, DuplicateSuppressed};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use serde_json_path::JsonPath;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// Tracking numbers longer than this are refused: no courier's is near it,
/// and it becomes a bus key.
const MAX_TRACKING_NUMBER: usize = 256;

/// The courier account a callback path names, with its connector's rules.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub account: &'a Account,
    pub connector: &'a Connector,
    pub spec: &'a CallbackSpec,
    /// The account's value of the credential the rule checks.
    pub secret: &'a str,
}

/// Why a callback path leads nowhere (404).
#[derive(Debug, Clone, Copy)]
pub enum NotFound<'a> {
    /// No such account, not of this connector, or a connector without
    /// `callback:`: the path's values are outside input and never labels.
    Unknown,
    /// The account has no value for the credential its callbacks are
    /// checked against, so they are not enabled.
    NotEnabled {
        connector: &'a str,
        account: &'a str,
        credential: &'a str,
    },
}

/// The target of `/callbacks/<connector>/<account>`.
pub fn resolve<'a>(
    connector: &str,
    account: Option<&'a Account>,
    connectors: &'a BTreeMap<String, Arc<Connector>>,
) -> Result<Target<'a>, NotFound<'a>> {
    let account = account.filter(|a| a.connector == connector);
    let account = account.ok_or(NotFound::Unknown)?;
    let connector = connectors
        .get(&account.connector)
        .ok_or(NotFound::Unknown)?;
    let spec = connector.callback.as_ref().ok_or(NotFound::Unknown)?;
    let credential = spec.secret_credential();
    match account.credentials.get(credential) {
        Some(secret) if !secret.is_empty() => Ok(Target {
            account,
            connector,
            spec,
            secret,
        }),
        _ => Err(NotFound::NotEnabled {
            connector: &connector.name,
            account: &account.name,
            credential,
        }),
    }
}

/// What of a callback request the secrets are read from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The path's last segment, for `…/{account}/{secret}`.
    pub path_secret: Option<&'a str>,
    /// The raw query string.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The path of `account`'s callbacks, as the courier is told to post them
/// (with the secret itself for a path secret).
pub fn path(spec: &CallbackSpec, connector: &str, account: &str, secret: &str) -> String {
    match spec.verify {
        CallbackVerify::PathSecret => format!(
            "/callbacks/{connector}/{account}/{}",
            crate::connector::percent_encode_segment(secret)
        ),
        _ => format!("/callbacks/{connector}/{account}"),
    }
}

/// A callback as the courier sends it: its path (and query) relative to
/// waybill's base URL, and its headers, with the secret or signature where
/// `spec` wants it, and the delivery id where it names a header for one.
pub fn outgoing(
    spec: &CallbackSpec,
    connector: &str,
    account: &str,
    secret: &str,
    body: &[u8],
    delivery_id: &str,
) -> (String, Vec<(String, String)>) {
    let mut target = path(spec, connector, account, secret);
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    match &spec.verify {
        CallbackVerify::PathSecret => {}
        CallbackVerify::QuerySecret(name) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair(name, secret)
                .finish();
            target = format!("{target}?{query}");
        }
        CallbackVerify::HeaderSecret(name) => headers.push((name.clone(), secret.to_string())),
        CallbackVerify::Signature(signature) => headers.push((
            signature.header.clone(),
            super::webhook::sign(signature, secret.as_bytes(), body),
        )),
    }
    if let Some(name) = &spec.delivery_id_header {
        headers.push((name.clone(), delivery_id.to_string()));
    }
    (target, headers)
}

/// Answers one callback in the order the module documents.
pub async fn receive(
    ingest: &Ingest,
    target: Result<Target<'_>, NotFound<'_>>,
    request: Request<'_>,
    body: Body,
    max_body_bytes: usize,
) -> Response {
    let target = match target {
        Ok(target) => target,
        Err(not_found) => return refuse_unknown(ingest, not_found),
    };
    let connector = target.connector.name.as_str();
    let account = target.account.name.as_str();
    let read = read(target, request, body, max_body_bytes).await;
    let (events, delivery_id) = match read {
        Ok(read) => read,
        Err(rejection) => {
            CallbackReceived {
                connector,
                account,
                outcome: rejection.outcome,
                status: rejection.status.as_u16(),
                events: 0,
                detail: &rejection.detail,
            }
            .emit(&ingest.metrics);
            return (rejection.status, format!("{}\n", rejection.detail)).into_response();
        }
    };
    accept(ingest, target, events, &delivery_id).await
}

fn refuse_unknown(ingest: &Ingest, not_found: NotFound<'_>) -> Response {
    let (connector, account, outcome, text) = match not_found {
        NotFound::Unknown => (
            "unknown",
            "unknown",
            "unknown_account",
            "unknown courier account, or its connector takes no callbacks\n".to_string(),
        ),
        NotFound::NotEnabled {
            connector,
            account,
            credential,
        } => (
            connector,
            account,
            "not_enabled",
            format!("callbacks are not enabled for this account: it has no `{credential}`\n"),
        ),
    };
    CallbackReceived {
        connector,
        account,
        outcome,
        status: 404,
        events: 0,
        detail: text.trim_end(),
    }
    .emit(&ingest.metrics);
    (StatusCode::NOT_FOUND, text).into_response()
}

/// Size, secret, then the events: what to enqueue and the delivery id, or
/// why the callback was refused.
async fn read(
    target: Target<'_>,
    request: Request<'_>,
    body: Body,
    max_body_bytes: usize,
) -> Result<(Vec<TrackingEvent>, String), Rejection> {
    let spec = target.spec;
    if request.path_secret.is_some() && !matches!(spec.verify, CallbackVerify::PathSecret) {
        // Checked before the body is read: there is no such URL.
        return Err(Rejection::new(
            "not_found",
            StatusCode::NOT_FOUND,
            "this connector takes no secret in the callback path",
        ));
    }
    let body = read_body(request.headers, body, max_body_bytes).await?;
    check_secret(target, request, &body)?;
    let received_at = now_timestamp();
    let events = events(&body, target, &received_at).map_err(Rejection::bad_request)?;
    let delivery_id = spec
        .delivery_id_header
        .as_ref()
        .and_then(|name| request.headers.get(name.as_str()))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map_or_else(|| body_digest(&body), str::to_string);
    Ok((events, delivery_id))
}

/// The secret or signature the connector declares, compared in constant time.
fn check_secret(target: Target<'_>, request: Request<'_>, body: &[u8]) -> Result<(), Rejection> {
    let given = match &target.spec.verify {
        CallbackVerify::PathSecret => request.path_secret.map(str::to_string),
        CallbackVerify::QuerySecret(name) => request.query.and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name.as_str())
                .map(|(_, value)| value.into_owned())
        }),
        CallbackVerify::HeaderSecret(name) => request
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string()),
        CallbackVerify::Signature(signature) => {
            let given = request
                .headers
                .get(signature.header.as_str())
                .and_then(|v| v.to_str().ok());
            return match given {
                Some(sig) if verify(signature, target.secret.as_bytes(), body, sig) => Ok(()),
                _ => Err(Rejection::unauthorized(format!(
                    "missing or invalid {} signature",
                    signature.header
                ))),
            };
        }
    };
    match given {
        Some(given) if same_secret(&given, target.secret) => Ok(()),
        Some(_) => Err(Rejection::unauthorized("wrong callback secret")),
        None => Err(Rejection::unauthorized("missing callback secret")),
    }
}

/// Compares digests, so neither the secret's bytes nor its length shows in
/// how long a wrong guess takes.
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.as_slice().ct_eq(expected.as_slice()).into()
}

/// Stands in for a delivery id when the courier sends none: the same body
/// is the same delivery.
fn body_digest(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body))
}

/// Puts every event on the bus, in the body's order, each at most once.
async fn accept(
    ingest: &Ingest,
    target: Target<'_>,
    events: Vec<TrackingEvent>,
    delivery_id: &str,
) -> Response {
    let connector = target.connector.name.as_str();
    let account = target.account.name.as_str();
    let topic = tracking_topic(connector);
    let listed = target.spec.events.is_some();
    let count = events.len();
    let mut appended = 0usize;
    for (n, event) in events.into_iter().enumerate() {
        let id = if listed {
            format!("{delivery_id}#{n}")
        } else {
            delivery_id.to_string()
        };
        let delivery = DeliveryId {
            source: &topic,
            account,
            id: &id,
        };
        match ingest
            .enqueue
            .enqueue(&topic, message(&event), delivery)
            .await
        {
            Ok(Enqueued::Appended) => appended += 1,
            Ok(Enqueued::Duplicate) => {}
            Err(e) => {
                let detail = format!("{e}");
                CallbackReceived {
                    connector,
                    account,
                    outcome: "unavailable",
                    status: 503,
                    events: count,
                    detail: &detail,
                }
                .emit(&ingest.metrics);
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{detail}\n")).into_response();
            }
        }
    }
    let (outcome, text) = if appended == 0 {
        DuplicateSuppressed {
            kind: "callback",
            source: connector,
            key: delivery_id,
        }
        .emit(&ingest.metrics);
        (
            "duplicate",
            "duplicate delivery: already accepted\n".to_string(),
        )
    } else {
        ("accepted", format!("accepted {appended} event(s)\n"))
    };
    CallbackReceived {
        connector,
        account,
        outcome,
        status: 200,
        events: count,
        detail: "",
    }
    .emit(&ingest.metrics);
    (StatusCode::OK, text).into_response()
}

/// The bus message of one event, keyed by its parcel.
fn message(event: &TrackingEvent) -> Message {
    Message {
        key: tracking_key(&event.account, &event.tracking_number),
        headers: [
            (header::ID, uuid::Uuid::new_v4().to_string()),
            (header::SCHEMA, SCHEMA_VERSION.to_string()),
            (header::SOURCE, event.connector.clone()),
            (header::ACCOUNT, event.account.clone()),
            (header::RECEIVED_AT, event.received_at.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        // Serialising plain strings and options cannot fail.
        payload: serde_json::to_vec(event).unwrap_or_default(),
    }
}

/// Every event of a body, or why the body is unusable.
pub fn events(
    body: &[u8],
    target: Target<'_>,
    received_at: &str,
) -> Result<Vec<TrackingEvent>, String> {
    let body = parse_strict(body)?;
    let spec = target.spec;
    let nodes: Vec<&Value> = match &spec.events {
        Some(path) => path.query(&body).all(),
        None => vec![&body],
    };
    if nodes.is_empty() {
        return Err("the body holds no events where the connector's `callback.events` says".into());
    }
    nodes
        .into_iter()
        .enumerate()
        .map(|(n, node)| {
            event(node, target, received_at).map_err(|e| match spec.events {
                Some(_) => format!("event {n}: {e}"),
                None => e,
            })
        })
        .collect()
}

fn event(node: &Value, target: Target<'_>, received_at: &str) -> Result<TrackingEvent, String> {
    let spec = target.spec;
    let tracking_number = text_at(node, &spec.tracking_number)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or("no tracking number")?;
    if tracking_number.chars().count() > MAX_TRACKING_NUMBER {
        return Err(format!(
            "tracking number longer than {MAX_TRACKING_NUMBER} characters"
        ));
    }
    // Kept exactly as it came; the normaliser trims and folds case.
    let raw_status = text_at(node, &spec.status)?
        .filter(|s| !s.trim().is_empty())
        .ok_or("no status")?;
    let optional = |path: &Option<JsonPath>| -> Result<Option<String>, String> {
        match path {
            Some(path) => Ok(text_at(node, path)?.filter(|t| !t.trim().is_empty())),
            None => Ok(None),
        }
    };
    let event_time = match &spec.event_time {
        Some(path) => match path.query(node).exactly_one() {
            Ok(value) => spec.time.read(value)?.map(timestamp),
            Err(_) => None,
        },
        None => None,
    };
    Ok(TrackingEvent {
        connector: target.connector.name.clone(),
        account: target.account.name.clone(),
        tracking_number,
        raw_status,
        code: optional(&spec.code)?,
        event_time,
        reason: optional(&spec.reason)?,
        via: Via::Callback,
        received_at: received_at.to_string(),
    })
}

/// The text of the one value at `path`: a string as it is, a number or
/// bool as written; `None` when absent or null; an error for a list or object.
fn text_at(node: &Value, path: &JsonPath) -> Result<Option<String>, String> {
    let Ok(value) = path.query(node).exactly_one() else {
        return Ok(None);
    };
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Array(_) | Value::Object(_) => {
            Err(format!("`{path}` is a list or object, not a value"))
        }
    }
}

impl EventTime {
    /// The instant a courier's time stands for; `None` for null or empty.
    /// An RFC 3339 time with its offset is taken whatever the format says.
    pub fn read(&self, value: &Value) -> Result<Option<OffsetDateTime>, String> {
        use time::format_description::well_known::Rfc3339;
        let text = match value {
            Value::Null => return Ok(None),
            Value::String(s) if s.trim().is_empty() => return Ok(None),
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err("the event time is a list or object".into()),
        };
        if let Ok(t) = OffsetDateTime::parse(&text, &Rfc3339) {
            return in_range(t, &text);
        }
        let parsed = match &self.format {
            TimeFormat::Rfc3339 => None,
            TimeFormat::Unix => text
                .parse::<i64>()
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            TimeFormat::UnixMillis => text.parse::<i64>().ok().and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            }),
            TimeFormat::Pattern(pattern) => {
                OffsetDateTime::parse(&text, pattern).ok().or_else(|| {
                    time::PrimitiveDateTime::parse(&text, pattern)
                        .ok()
                        .map(|t| t.assume_offset(self.zone))
                })
            }
        };
        match parsed {
            Some(t) => in_range(t, &text),
            None => Err(format!(
                "event time `{}` does not match the connector's `time_format`",
                shorten(&text)
            )),
        }
    }
}

/// `t` in UTC, which stored times need with a four-digit year; moving an
/// extreme time to UTC may leave the range `time` can hold at all.
fn in_range(t: OffsetDateTime, text: &str) -> Result<Option<OffsetDateTime>, String> {
    match t.checked_to_offset(time::UtcOffset::UTC) {
        Some(utc) if (0..=9999).contains(&utc.year()) => Ok(Some(utc)),
        _ => Err(format!("event time `{}` is out of range", shorten(text))),
    }
}

/// Outside text in an answer, cut to a readable length.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The body as JSON, refusing anything a second reader might take
/// differently: bytes that are not UTF-8, and an object naming a key twice.
pub fn parse_strict(body: &[u8]) -> Result<Value, String> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(format!(
            "body is not UTF-8 JSON: invalid byte at {}",
            e.valid_up_to()
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde::Deserialize::deserialize(&mut de)
        .and_then(|StrictValue(value)| de.end().map(|()| value))
        .map_err(|e| format!("body is not JSON: {e}"))?;
    Ok(value)
}

/// A JSON value whose objects never repeat a key.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{}` appears twice in one object",
                    shorten(&key)
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_refuses_repeated_keys_at_any_depth() {
        assert!(parse_strict(br#"{"a":1,"b":[{"c":2}]}"#).is_ok());
        for body in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"a":{"b":1,"b":1}}"#,
            br#"[{"x":1,"\u0078":2}]"#,
            b"{\"a\":\"\xff\"}",
            br#"{"a":1} trailing"#,
            b"",
        ] {
            assert!(
                parse_strict(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            parse_strict(deep.as_bytes()).is_err(),
            "deep nesting is refused, not a crash"
        );
        assert_eq!(
            parse_strict(br#"{"n":12345678901234567890}"#).unwrap()["n"].to_string(),
            "12345678901234567890"
        );
    }

    fn pattern(text: &str) -> EventTime {
        EventTime {
            format: TimeFormat::Pattern(time::format_description::parse_owned::<2>(text).unwrap()),
            zone: time::UtcOffset::from_hms(5, 0, 0).unwrap(),
        }
    }

    fn utc(time: &EventTime, value: Value) -> Result<Option<String>, String> {
        time.read(&value).map(|t| t.map(timestamp))
    }

    #[test]
    fn event_times_are_read_in_the_connector_zone_and_kept_in_utc() {
        let postex = pattern("[year]-[month]-[day] [hour]:[minute]:[second]");
        assert_eq!(
            utc(&postex, "2026-05-12 14:03:11".into())
                .unwrap()
                .as_deref(),
            Some("2026-05-12T09:03:11.000000Z")
        );
        assert_eq!(
            utc(&postex, "2026-05-12T14:03:11+05:00".into())
                .unwrap()
                .as_deref(),
            Some("2026-05-12T09:03:11.000000Z"),
            "an RFC 3339 time keeps its own offset"
        );
        let shipped =
            pattern("[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]");
        assert_eq!(
            utc(&shipped, "2026-05-12 14:03:11.25".into())
                .unwrap()
                .as_deref(),
            Some("2026-05-12T09:03:11.250000Z")
        );
        assert_eq!(
            utc(&shipped, "2026-05-12 14:03:11".into())
                .unwrap()
                .as_deref(),
            Some("2026-05-12T09:03:11.000000Z")
        );
        assert_eq!(utc(&postex, Value::Null).unwrap(), None);
        assert_eq!(utc(&postex, "".into()).unwrap(), None);
        assert!(utc(&postex, "12/05/2026".into()).is_err());
        assert!(utc(&postex, serde_json::json!({"a": 1})).is_err());
        let unix = EventTime {
            format: TimeFormat::Unix,
            ..EventTime::default()
        };
        assert_eq!(
            utc(&unix, serde_json::json!(0)).unwrap().as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert!(utc(&unix, serde_json::json!(i64::MAX)).is_err());
        let millis = EventTime {
            format: TimeFormat::UnixMillis,
            ..EventTime::default()
        };
        assert_eq!(
            utc(&millis, "1500".into()).unwrap().as_deref(),
            Some("1970-01-01T00:00:01.500000Z")
        );
        assert!(utc(&millis, serde_json::json!(i64::MIN)).is_err());
        assert!(utc(&EventTime::default(), "2026-05-12 14:03:11".into()).is_err());
        assert!(utc(&EventTime::default(), "+99999-01-01T00:00:00Z".into()).is_err());
    }

    #[test]
    fn hostile_bodies_are_refused_or_read_never_panic() {
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let connector = Connector::load(&repo.join("connectors/sandbox.yaml")).unwrap();
        let spec = connector.callback.as_ref().unwrap();
        let account = Account {
            name: "courier-main".into(),
            connector: "sandbox".into(),
            credentials: BTreeMap::new(),
            settings: serde_json::Map::new(),
            base_url: None,
            secrets: crate::redact::Secrets::default(),
            active: true,
            rate_limit: None,
        };
        let target = Target {
            account: &account,
            connector: &connector,
            spec,
            secret: "s",
        };
        let long = "x".repeat(300);
        let bodies = [
            "null".to_string(),
            "1e999999".to_string(),
            r#"{"events": 7}"#.to_string(),
            r#"{"events": [1, "a", null, [], {}]}"#.to_string(),
            r#"{"events": [{"tracking_number": [1], "status": "x"}]}"#.to_string(),
            format!(r#"{{"events": [{{"tracking_number": "{long}", "status": "x"}}]}}"#),
            r#"{"events": [{"tracking_number": 1e300, "status": 1, "time": 1e300}]}"#.to_string(),
            r#"{"events": [{"tracking_number": "T", "status": "x", "time": "9999-12-31T23:59:59-23:59"}]}"#
                .to_string(),
            format!(r#"{{"events": [{{"tracking_number": "T", "status": "x", "time": "{long}"}}]}}"#),
        ];
        for body in &bodies {
            // Refused or read; what matters is that it answers.
            let _ = events(body.as_bytes(), target, "2026-01-01T00:00:00.000000Z");
        }
        let read = events(
            br#"{"events": [{"tracking_number": 42, "status": true, "code": 3}]}"#,
            target,
            "2026-01-01T00:00:00.000000Z",
        )
        .unwrap();
        assert_eq!(read[0].tracking_number, "42");
        assert_eq!(read[0].raw_status, "true");
        assert_eq!(read[0].code.as_deref(), Some("3"));
        let too_long = format!(r#"{{"events": [{{"tracking_number": "{long}", "status": "x"}}]}}"#);
        assert!(events(too_long.as_bytes(), target, "").is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("s3cret ", "s3cret"));
        assert!(!same_secret("", "s3cret"));
    }
}
