//! Sources: webhook ingest, one file per store source.
//!
//! Every webhook goes through the same steps (DESIGN §8), in this order:
//! unknown account → 404; body too large → 413; bad signature → 401;
//! unreadable body or missing headers → 400; delivery id seen → 200 (not
//! re-enqueued); bus cannot take it → 503; otherwise the event is durably on
//! the bus, its delivery id is recorded, and only then 200.
//! [`webhook`] verifies and reads as the store connector declares; [`Ingest`]
//! dedupes and enqueues.

pub mod shopify;
pub mod webhook;

use crate::bus::Bus;
use crate::bus::embedded::EmbeddedBus;
use crate::clock::now_rfc3339;
use crate::model::{Message, SCHEMA_VERSION, header};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::telemetry::events::{DuplicateSuppressed, WebhookReceived};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// How long a webhook may wait for the bus before answering 503: well
/// inside the stores' 5 s delivery timeout, so they retry.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The shared dedupe → enqueue half of every webhook source.
#[derive(Clone)]
pub struct Ingest {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    /// Set when the bus shares its database with the store.
    pub embedded: Option<EmbeddedBus>,
    pub metrics: Arc<Metrics>,
}

impl Ingest {
    /// Dedupes and enqueues a verified event, answering as DESIGN §8 says.
    pub async fn accept(&self, incoming: Incoming) -> Response {
        let Incoming {
            source,
            account,
            delivery_id,
            topic,
            order_id,
            body,
        } = incoming;
        let source = source.as_str();
        let reject = |outcome: &str, status: StatusCode, detail: &str| {
            WebhookReceived {
                source,
                account: &account,
                outcome,
                status: status.as_u16(),
                detail,
            }
            .emit(&self.metrics);
            (status, detail.to_string()).into_response()
        };
        let duplicate = || {
            DuplicateSuppressed {
                kind: "webhook",
                source,
                key: &delivery_id,
            }
            .emit(&self.metrics);
            WebhookReceived {
                source,
                account: &account,
                outcome: "duplicate",
                status: 200,
                detail: "",
            }
            .emit(&self.metrics);
            (StatusCode::OK, "duplicate delivery: already accepted\n").into_response()
        };
        if self.embedded.is_none() {
            match self
                .store
                .delivery_seen(source, &account, &delivery_id)
                .await
            {
                Ok(true) => return duplicate(),
                Ok(false) => {}
                Err(e) => {
                    return reject(
                        "unavailable",
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("store unavailable: {e}\n"),
                    );
                }
            }
        }
        let received_at = now_rfc3339();
        let message = Message {
            key: format!("{account}:{order_id}"),
            headers: [
                (header::ID, uuid::Uuid::new_v4().to_string()),
                (header::SCHEMA, SCHEMA_VERSION.to_string()),
                (header::SOURCE, source.to_string()),
                (header::ACCOUNT, account.clone()),
                (header::TOPIC, topic),
                (header::RECEIVED_AT, received_at),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            payload: body,
        };
        let ingest_topic = format!("orders.{source}");
        // `Some(offset)` once durable; `None` for a delivery seen before.
        let enqueue = async {
            match &self.embedded {
                // Append and delivery id in one transaction: a concurrent
                // redelivery cannot be enqueued twice.
                Some(embedded) => {
                    embedded
                        .publish_once(&ingest_topic, message, source, &account, &delivery_id)
                        .await
                }
                None => self.bus.publish(&ingest_topic, message).await.map(Some),
            }
        };
        match tokio::time::timeout(ENQUEUE_TIMEOUT, enqueue).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return duplicate(),
            Ok(Err(e)) => {
                let detail = format!("bus unavailable: {e}\n");
                return reject("unavailable", StatusCode::SERVICE_UNAVAILABLE, &detail);
            }
            Err(_) => {
                let detail = "bus did not take the event in time\n";
                return reject("unavailable", StatusCode::SERVICE_UNAVAILABLE, detail);
            }
        }
        if self.embedded.is_none() {
            // The event is durable; a failure to remember the delivery id only
            // risks a duplicate event, which booking idempotency absorbs.
            if let Err(e) = self
                .store
                .remember_delivery(source, &account, &delivery_id)
                .await
            {
                tracing::warn!(source, account = %account, error = %e, "could not record webhook delivery id");
            }
        }
        WebhookReceived {
            source,
            account: &account,
            outcome: "accepted",
            status: 200,
            detail: "",
        }
        .emit(&self.metrics);
        (StatusCode::OK, "accepted\n").into_response()
    }
}
