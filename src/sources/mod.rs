//! Sources: webhook ingest, generic over the store connectors' `webhook:`
//! rules, and courier status callbacks ([`callback`]), generic over the
//! courier connectors' `callback:` rules.
//!
//! Every webhook goes through the same steps (DESIGN §8), in this order:
//! unknown account → 404; body too large → 413; body not read whole → 503
//! when the bodies being read already fill `http.max_buffered_body_bytes`
//! (outcome `busy`), 408 when it did not arrive within
//! `http.body_read_timeout` (`timeout`), 400 when the client closed or broke
//! the connection first (`aborted`); bad signature → 401; unreadable body or
//! missing headers → 400 (`bad_request`), and a body that names a member
//! twice in one object, at any depth, → 400 (`duplicate_keys`, see [`json`]); delivery id seen → 200 (not re-enqueued); bus
//! cannot take it → 503; otherwise the event is durably on the bus, its
//! delivery id is recorded, and only then 200.
//! [`webhook`] verifies and reads as the store connector declares, within
//! the limits [`body`] keeps; [`Ingest`] dedupes and enqueues through
//! [`enqueue`]; [`delivery`] builds deliveries as a store would send them,
//! for `waybill simulate`, tests and benchmarks.

pub mod body;
pub mod callback;
pub mod delivery;
pub mod enqueue;
pub mod json;
pub mod webhook;

use crate::clock::now_rfc3339;
use crate::model::{Message, SCHEMA_VERSION, header};
use crate::telemetry::Metrics;
use crate::telemetry::events::{DuplicateSuppressed, WebhookReceived};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enqueue::{DeliveryId, Enqueue, Enqueued};
use std::sync::Arc;

/// A verified store event, ready to enqueue.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Source connector, e.g. `shopify`; the topic is `orders.<source>`.
    pub source: String,
    pub account: String,
    pub delivery_id: String,
    /// The store's event name, e.g. `orders/paid`.
    pub topic: String,
    pub order_id: String,
    pub body: Vec<u8>,
}

impl Incoming {
    /// The bus message: the body as received, keyed `<account>:<order id>`,
    /// with the `waybill-*` headers.
    fn message(&self, body: Vec<u8>) -> Message {
        Message {
            key: format!("{}:{}", self.account, self.order_id),
            headers: [
                (header::ID, uuid::Uuid::new_v4().to_string()),
                (header::SCHEMA, SCHEMA_VERSION.to_string()),
                (header::SOURCE, self.source.clone()),
                (header::ACCOUNT, self.account.clone()),
                (header::TOPIC, self.topic.clone()),
                (header::RECEIVED_AT, now_rfc3339()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            payload: body,
        }
    }
}

/// The shared dedupe → enqueue half of every webhook source.
#[derive(Clone)]
pub struct Ingest {
    pub enqueue: Arc<dyn Enqueue>,
    pub metrics: Arc<Metrics>,
}

impl Ingest {
    /// Dedupes and enqueues a verified event, answering as DESIGN §8 says.
    pub async fn accept(&self, mut incoming: Incoming) -> Response {
        let body = std::mem::take(&mut incoming.body);
        let message = incoming.message(body);
        let delivery = DeliveryId {
            source: &incoming.source,
            account: &incoming.account,
            id: &incoming.delivery_id,
        };
        let topic = format!("orders.{}", incoming.source);
        let answer = self.enqueue.enqueue(&topic, message, delivery).await;
        let (outcome, status, detail) = match &answer {
            Ok(Enqueued::Appended) => ("accepted", StatusCode::OK, String::new()),
            Ok(Enqueued::Duplicate) => {
                DuplicateSuppressed {
                    kind: "webhook",
                    source: &incoming.source,
                    key: &incoming.delivery_id,
                }
                .emit(&self.metrics);
                ("duplicate", StatusCode::OK, String::new())
            }
            Err(e) => (
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{e}\n"),
            ),
        };
        WebhookReceived {
            source: &incoming.source,
            account: &incoming.account,
            outcome,
            status: status.as_u16(),
            detail: &detail,
        }
        .emit(&self.metrics);
        let text = match answer {
            Ok(Enqueued::Appended) => "accepted\n".to_string(),
            Ok(Enqueued::Duplicate) => "duplicate delivery: already accepted\n".to_string(),
            Err(_) => detail,
        };
        (status, text).into_response()
    }
}
