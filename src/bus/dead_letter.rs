//! Dead-letter envelopes: the original message (key, headers, payload bytes)
//! plus `waybill-error-*` headers saying where, why and how often it failed
//! (DESIGN §10), and the reverse reading for `waybill dlq list/show`.
//!
//! ```yaml
//! dead_letter: { topic: dlq.shopify-orders }
//! ```

use crate::model::{ErrorClass, Failure, Message, Record, header};

/// Longest header value written, in bytes; longer text is cut with `…`.
pub const MAX_HEADER_BYTES: usize = 4096;

/// What a dead letter says beside its [`Failure`]: which pipeline gave up,
/// after how many attempts, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterContext {
    pub pipeline: String,
    pub attempts: u32,
    pub first_failed_at: String,
    pub last_failed_at: String,
}

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A dead letter as read back from its topic. Fields are optional because a
/// dead-letter topic may hold messages written by hand or by older versions.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The dead-letter topic and offset: together, the id `waybill dlq` shows.
    pub topic: String,
    pub offset: i64,
    pub key: String,
    pub pipeline: Option<String>,
    pub stage: Option<String>,
    pub class: Option<ErrorClass>,
    pub message: Option<String>,
    pub attempts: Option<u32>,
    pub first_failed_at: Option<String>,
    pub last_failed_at: Option<String>,
    pub origin: Option<Origin>,
    /// The order's merchant-facing name (e.g. `#1001`), from the payload's
    /// `name` (an order) or `reference` (a status change).
    pub order_name: Option<String>,
    /// The request, as JSON when it was stored whole, else as the truncated text.
    pub request: Option<serde_json::Value>,
    pub response: Option<String>,
}

/// Makes `text` a single line of at most [`MAX_HEADER_BYTES`]: control
/// characters (newlines included) become spaces, and a longer text is cut
/// on a character boundary and ends with `…`.
pub fn header_value(text: &str) -> String {
    let single: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if single.len() <= MAX_HEADER_BYTES {
        return single;
    }
    let ellipsis = '…';
    let mut end = MAX_HEADER_BYTES - ellipsis.len_utf8();
    while !single.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = single[..end].to_string();
    cut.push(ellipsis);
    cut
}

/// Wraps `record` as a dead letter: the same key, payload and headers, plus
/// the failure headers. Headers of an earlier failure are replaced.
pub fn envelope(record: &Record, failure: &Failure, context: &DeadLetterContext) -> Message {
    let mut headers = record.message.headers.clone();
    headers.remove(header::ERROR_REQUEST);
    headers.remove(header::ERROR_RESPONSE);
    let mut set = |name: &str, value: &str| {
        headers.insert(name.to_string(), header_value(value));
    };
    set(header::PIPELINE, &context.pipeline);
    set(header::ERROR_STAGE, failure.stage);
    set(header::ERROR_CLASS, failure.class.as_str());
    set(header::ERROR_MESSAGE, &failure.message);
    set(header::ATTEMPTS, &context.attempts.to_string());
    set(header::FIRST_FAILED_AT, &context.first_failed_at);
    set(header::LAST_FAILED_AT, &context.last_failed_at);
    set(header::ORIGIN_TOPIC, &record.topic);
    set(header::ORIGIN_PARTITION, &record.partition.to_string());
    set(header::ORIGIN_OFFSET, &record.offset.to_string());
    let exchange = failure.exchange.as_ref();
    if let Some(request) = exchange.and_then(|e| e.request.as_ref()) {
        // Compact JSON is one line: newlines inside strings are escaped.
        set(header::ERROR_REQUEST, &request.to_string());
    }
    if let Some(response) = exchange.and_then(|e| e.response.as_ref()) {
        set(header::ERROR_RESPONSE, response);
    }
    Message {
        key: record.message.key.clone(),
        headers,
        payload: record.message.payload.clone(),
    }
}

fn parse_class(text: &str) -> Option<ErrorClass> {
    [
        ErrorClass::Retryable,
        ErrorClass::Ambiguous,
        ErrorClass::Permanent,
        ErrorClass::NeedsReview,
    ]
    .into_iter()
    .find(|class| class.as_str() == text)
}

/// The order's name from a JSON payload with a top-level `name` (a string,
/// or a number written as text), or the `reference` of a status change;
/// `None` for anything else.
fn order_name(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match value.get("name").or_else(|| value.get("reference"))? {
        serde_json::Value::String(name) => Some(name.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Reads a dead letter's headers back. Never fails: what is missing or
/// unreadable is `None`.
pub fn describe(record: &Record) -> DeadLetter {
    let headers = &record.message.headers;
    let text = |name: &str| headers.get(name).cloned();
    let origin = match (
        text(header::ORIGIN_TOPIC),
        text(header::ORIGIN_PARTITION),
        text(header::ORIGIN_OFFSET),
    ) {
        (Some(topic), Some(partition), Some(offset)) => match (partition.parse(), offset.parse()) {
            (Ok(partition), Ok(offset)) => Some(Origin {
                topic,
                partition,
                offset,
            }),
            _ => None,
        },
        _ => None,
    };
    DeadLetter {
        topic: record.topic.clone(),
        offset: record.offset,
        key: record.message.key.clone(),
        pipeline: text(header::PIPELINE),
        stage: text(header::ERROR_STAGE),
        class: headers
            .get(header::ERROR_CLASS)
            .and_then(|class| parse_class(class)),
        message: text(header::ERROR_MESSAGE),
        attempts: headers
            .get(header::ATTEMPTS)
            .and_then(|attempts| attempts.parse().ok()),
        first_failed_at: text(header::FIRST_FAILED_AT),
        last_failed_at: text(header::LAST_FAILED_AT),
        origin,
        order_name: order_name(&record.message.payload),
        request: text(header::ERROR_REQUEST).map(|request| {
            serde_json::from_str(&request).unwrap_or(serde_json::Value::String(request))
        }),
        response: text(header::ERROR_RESPONSE),
    }
}

/// Header of a replay marker: the `PARTITION:OFFSET` of the dead letter
/// that was replayed, in the same dead-letter topic. A marker has no
/// payload and is not a dead letter itself.
///
/// Markers live in the dead-letter topic rather than the store so that a
/// replay is recorded durably, for every instance, on both backends, and
/// travels with the letters it speaks of.
pub const REPLAYED: &str = "waybill-replayed";

/// The marker saying that `letter` was replayed.
pub fn replay_marker(letter: &Record) -> Message {
    let mut headers = crate::model::Headers::new();
    headers.insert(
        REPLAYED.to_string(),
        format!("{}:{}", letter.partition, letter.offset),
    );
    Message {
        key: letter.message.key.clone(),
        headers,
        payload: Vec::new(),
    }
}

/// The partition and offset of the letter a replay marker names; `None` for
/// a record that is not a marker (or names nothing readable).
pub fn replayed(record: &Record) -> Option<(i32, i64)> {
    let named = record.message.headers.get(REPLAYED)?;
    let (partition, offset) = named.split_once(':')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Exchange, Headers};
    use serde_json::json;

    fn record(payload: &[u8]) -> Record {
        let mut headers = Headers::new();
        headers.insert(header::ID.into(), "msg-1".into());
        headers.insert(header::SOURCE.into(), "shopify".into());
        Record {
            topic: "orders.shopify".into(),
            partition: 0,
            offset: 41,
            message: Message {
                key: "shopify-main:820982911946154508".into(),
                headers,
                payload: payload.to_vec(),
            },
        }
    }

    fn failure() -> Failure {
        Failure::permanent("book", "invalid city\nKarachii").with_exchange(Exchange {
            status: Some(400),
            request: Some(json!({"method": "POST", "body": {"address": "line 1\nline 2"}})),
            response: Some("HTTP 400\n{\"statusMessage\":\"invalid city\"}".into()),
        })
    }

    fn context() -> DeadLetterContext {
        DeadLetterContext {
            pipeline: "shopify-orders".into(),
            attempts: 3,
            first_failed_at: "2026-11-22T05:00:00.000000Z".into(),
            last_failed_at: "2026-11-22T05:01:00.000000Z".into(),
        }
    }

    #[test]
    fn envelope_keeps_the_original_and_describe_reads_it_back() {
        let original = record(br##"{"id": 820982911946154508, "name": "#1001"}"##);
        let message = envelope(&original, &failure(), &context());
        assert_eq!(message.key, original.message.key);
        assert_eq!(message.payload, original.message.payload);
        assert_eq!(message.headers[header::ID], "msg-1");
        assert_eq!(message.headers[header::ORIGIN_OFFSET], "41");
        assert!(message.headers.values().all(|value| !value.contains('\n')));

        let stored = Record {
            topic: "dlq.shopify-orders".into(),
            partition: 0,
            offset: 7,
            message,
        };
        let letter = describe(&stored);
        assert_eq!(letter.offset, 7);
        assert_eq!(letter.pipeline.as_deref(), Some("shopify-orders"));
        assert_eq!(letter.stage.as_deref(), Some("book"));
        assert_eq!(letter.class, Some(ErrorClass::Permanent));
        assert_eq!(letter.message.as_deref(), Some("invalid city Karachii"));
        assert_eq!(letter.attempts, Some(3));
        assert_eq!(
            letter.last_failed_at.as_deref(),
            Some("2026-11-22T05:01:00.000000Z")
        );
        assert_eq!(
            letter.origin,
            Some(Origin {
                topic: "orders.shopify".into(),
                partition: 0,
                offset: 41
            })
        );
        assert_eq!(letter.order_name.as_deref(), Some("#1001"));
        assert_eq!(letter.request, failure().exchange.unwrap().request);
        assert_eq!(
            letter.response.as_deref(),
            Some("HTTP 400 {\"statusMessage\":\"invalid city\"}")
        );
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let mut long = failure();
        long.message = "ق".repeat(MAX_HEADER_BYTES);
        long.exchange = Some(Box::new(Exchange {
            request: Some(json!({"body": "x".repeat(3 * MAX_HEADER_BYTES)})),
            ..Exchange::default()
        }));
        let message = envelope(&record(b"{}"), &long, &context());
        let cut = &message.headers[header::ERROR_MESSAGE];
        assert!(cut.len() <= MAX_HEADER_BYTES);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("ققق"));
        let letter = describe(&Record {
            topic: "dlq.p".into(),
            partition: 0,
            offset: 0,
            message,
        });
        // A cut request is no longer JSON: it is kept as text.
        assert!(
            matches!(letter.request, Some(serde_json::Value::String(ref text)) if text.ends_with('…'))
        );
    }

    #[test]
    fn describe_tolerates_foreign_messages() {
        let mut odd = record(b"\xff\xfe not json");
        odd.message
            .headers
            .insert(header::ERROR_CLASS.into(), "mystery".into());
        odd.message
            .headers
            .insert(header::ATTEMPTS.into(), "many".into());
        odd.message
            .headers
            .insert(header::ORIGIN_TOPIC.into(), "orders.shopify".into());
        let letter = describe(&odd);
        assert_eq!(letter.class, None);
        assert_eq!(letter.attempts, None);
        assert_eq!(letter.origin, None);
        assert_eq!(letter.order_name, None);
        assert_eq!(
            describe(&record(br#"{"name": 1002}"#))
                .order_name
                .as_deref(),
            Some("1002")
        );
        assert_eq!(describe(&record(br#"["name"]"#)).order_name, None);
    }

    #[test]
    fn a_replay_marker_names_its_letter_and_nothing_else_is_one() {
        let letter = Record {
            topic: "dlq.p".into(),
            partition: 4,
            offset: 17,
            ..record(b"{}")
        };
        let marker = Record {
            topic: "dlq.p".into(),
            partition: 4,
            offset: 18,
            message: replay_marker(&letter),
        };
        assert_eq!(replayed(&marker), Some((4, 17)));
        assert!(marker.message.payload.is_empty());
        assert_eq!(replayed(&letter), None);
        let mut odd = marker.clone();
        odd.message.headers.insert(REPLAYED.into(), "4".into());
        assert_eq!(replayed(&odd), None);
    }

    #[test]
    fn a_second_failure_replaces_the_first() {
        let first = Record {
            topic: "dlq.p".into(),
            partition: 0,
            offset: 3,
            message: envelope(&record(b"{}"), &failure(), &context()),
        };
        let mut again = failure();
        again.exchange = None;
        again.stage = "map";
        let message = envelope(&first, &again, &context());
        assert_eq!(message.headers[header::ERROR_STAGE], "map");
        assert_eq!(message.headers[header::ORIGIN_TOPIC], "dlq.p");
        assert!(!message.headers.contains_key(header::ERROR_REQUEST));
        assert!(!message.headers.contains_key(header::ERROR_RESPONSE));
    }
}
