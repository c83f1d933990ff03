//! Named events: one struct per occurrence, emitting a log line and the
//! matching metric together.

use super::{
    CallbackLabels, CourierAccountLabels, CourierLabels, CourierLatencyLabels, CourierOnlyLabels,
    DeadLetterLabels, DeliveryLabels, DuplicateLabels, Metrics, NotificationLabels,
    OrderChangeLabels, PipelineLabels, PollLabels, RefusalLabels, RetryLabels, StageLabels,
    StatusEventLabels, WebhookLabels, WriteBackLabels,
};
use crate::model::ErrorClass;
use std::time::Duration;

/// A store webhook was answered.
pub struct WebhookReceived<'a> {
    pub source: &'a str,
    /// Account name from the config, or `unknown` (never the raw path value).
    pub account: &'a str,
    /// accepted, duplicate, unknown_account, too_large, busy, timeout, aborted,
    /// unauthorized, bad_request, duplicate_keys, unavailable
    pub outcome: &'a str,
    pub status: u16,
    pub detail: &'a str,
}

impl WebhookReceived<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if self.status >= 400 {
            tracing::warn!(
                source = self.source,
                account = self.account,
                outcome = self.outcome,
                status = self.status,
                detail = self.detail,
                "webhook rejected"
            );
        } else {
            tracing::debug!(
                source = self.source,
                account = self.account,
                outcome = self.outcome,
                "webhook received"
            );
        }
        metrics
            .webhooks
            .get_or_create(&WebhookLabels {
                source: self.source.to_string(),
                account: self.account.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// A courier status callback was answered.
pub struct CallbackReceived<'a> {
    /// Courier connector, or `unknown` (never the raw path value).
    pub connector: &'a str,
    /// Account name from the config, or `unknown`.
    pub account: &'a str,
    /// accepted, duplicate, unknown_account, not_enabled (the account has no
    /// secret to check against), not_found (a path secret the connector does
    /// not take), too_large, busy, timeout, aborted, unauthorized,
    /// bad_request, unavailable
    pub outcome: &'a str,
    pub status: u16,
    /// Events the body held (0 when it was refused before being read).
    pub events: usize,
    pub detail: &'a str,
}

impl CallbackReceived<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if self.status >= 400 {
            tracing::warn!(
                connector = self.connector,
                account = self.account,
                outcome = self.outcome,
                status = self.status,
                detail = self.detail,
                "callback rejected"
            );
        } else {
            tracing::debug!(
                connector = self.connector,
                account = self.account,
                outcome = self.outcome,
                events = self.events,
                "callback received"
            );
        }
        metrics
            .callbacks
            .get_or_create(&CallbackLabels {
                connector: self.connector.to_string(),
                account: self.account.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// The HTTP server refused a connection, or closed it before serving it.
pub struct ConnectionRefused {
    /// `connection_limit`: over `http.max_connections` and the probes'
    /// reserve, answered 503 and closed at once; `evicted_idle`: closed
    /// before sending a byte, to make room for a newer connection when all
    /// were taken; `probes_only`: a request
    /// other than `/healthz`, `/readyz` or `/metrics` on a connection of the
    /// reserve, answered 503; `header_timeout`: no request head within
    /// `http.header_read_timeout`, closed.
    pub reason: &'static str,
}

impl ConnectionRefused {
    pub fn emit(self, metrics: &Metrics) {
        // Debug only: a flood would otherwise flood the log as well; the
        // counter shows it.
        tracing::debug!(reason = self.reason, "HTTP connection refused");
        metrics
            .connections_refused
            .get_or_create(&RefusalLabels {
                reason: self.reason.to_string(),
            })
            .inc();
    }
}

/// An HTTP connection is open for as long as this lives.
pub struct ConnectionOpen {
    metrics: std::sync::Arc<Metrics>,
}

impl ConnectionOpen {
    pub fn begin(metrics: &std::sync::Arc<Metrics>) -> ConnectionOpen {
        metrics.open_connections.inc();
        ConnectionOpen {
            metrics: metrics.clone(),
        }
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

/// A pipeline stage finished with an event.
pub struct StageProcessed<'a> {
    pub pipeline: &'a str,
    pub stage: &'a str,
    /// ok, skipped, filtered, failed
    pub outcome: &'a str,
}

impl StageProcessed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::trace!(
            pipeline = self.pipeline,
            stage = self.stage,
            outcome = self.outcome,
            "stage processed"
        );
        metrics
            .events
            .get_or_create(&StageLabels {
                pipeline: self.pipeline.to_string(),
                stage: self.stage.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// A request to a courier API completed (or failed).
pub struct CourierRequestCompleted<'a> {
    pub courier: &'a str,
    pub account: &'a str,
    pub operation: &'a str,
    /// success, or the error class
    pub outcome: &'a str,
    pub elapsed: Duration,
    pub detail: &'a str,
}

impl CourierRequestCompleted<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if self.outcome == "success" {
            tracing::debug!(
                courier = self.courier,
                account = self.account,
                operation = self.operation,
                elapsed_ms = self.elapsed.as_millis() as u64,
                "courier request succeeded"
            );
        } else {
            tracing::warn!(
                courier = self.courier,
                account = self.account,
                operation = self.operation,
                outcome = self.outcome,
                elapsed_ms = self.elapsed.as_millis() as u64,
                detail = self.detail,
                "courier request failed"
            );
        }
        metrics
            .courier_requests
            .get_or_create(&CourierLabels {
                courier: self.courier.to_string(),
                account: self.account.to_string(),
                operation: self.operation.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
        metrics
            .courier_latency
            .get_or_create(&CourierLatencyLabels {
                courier: self.courier.to_string(),
                operation: self.operation.to_string(),
            })
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A retryable failure will be tried again after a delay.
pub struct RetryScheduled<'a> {
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub class: ErrorClass,
    pub key: &'a str,
    pub attempt: u32,
    pub delay: Duration,
    pub message: &'a str,
}

impl RetryScheduled<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            pipeline = self.pipeline,
            stage = self.stage,
            error_class = self.class.as_str(),
            key = self.key,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            error = self.message,
            "retrying"
        );
        metrics
            .retries
            .get_or_create(&RetryLabels {
                pipeline: self.pipeline.to_string(),
                stage: self.stage.to_string(),
                error_class: self.class.as_str().to_string(),
            })
            .inc();
    }
}

/// A message was given up on and written to the dead-letter topic.
pub struct DeadLettered<'a> {
    pub pipeline: &'a str,
    pub stage: &'a str,
    pub class: ErrorClass,
    pub key: &'a str,
    pub topic: &'a str,
    pub message: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::error!(
            pipeline = self.pipeline,
            stage = self.stage,
            error_class = self.class.as_str(),
            key = self.key,
            topic = self.topic,
            error = self.message,
            "dead-lettered"
        );
        metrics
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                pipeline: self.pipeline.to_string(),
                stage: self.stage.to_string(),
                error_class: self.class.as_str().to_string(),
            })
            .inc();
    }
}

/// A courier request waits for its account's rate limit.
pub struct RateLimitWaited<'a> {
    pub courier: &'a str,
    pub account: &'a str,
    pub wait: Duration,
}

impl RateLimitWaited<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(
            courier = self.courier,
            account = self.account,
            wait_ms = self.wait.as_millis() as u64,
            "waiting for the courier's rate limit"
        );
        metrics
            .rate_limit_waits
            .get_or_create(&CourierAccountLabels {
                courier: self.courier.to_string(),
                account: self.account.to_string(),
            })
            .inc();
    }
}

/// A duplicate was recognised and not acted on again.
pub struct DuplicateSuppressed<'a> {
    /// `webhook` or `booking`
    pub kind: &'a str,
    pub source: &'a str,
    pub key: &'a str,
}

impl DuplicateSuppressed<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(
            kind = self.kind,
            source = self.source,
            key = self.key,
            "duplicate suppressed"
        );
        metrics
            .duplicates
            .get_or_create(&DuplicateLabels {
                kind: self.kind.to_string(),
                source: self.source.to_string(),
            })
            .inc();
    }
}

/// A shipment was booked at a courier.
pub struct ShipmentBooked<'a> {
    pub pipeline: &'a str,
    pub key: &'a str,
    pub courier: &'a str,
    pub tracking_number: &'a str,
    /// Since the order webhook was received, when known.
    pub since_received: Option<Duration>,
    /// Since the order was paid (or, for cash on delivery, confirmed), as
    /// the mapping's `paid_at` says; `None` when absent or unreadable.
    pub since_paid: Option<Duration>,
}

impl ShipmentBooked<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(
            pipeline = self.pipeline,
            key = self.key,
            courier = self.courier,
            tracking_number = self.tracking_number,
            "shipment booked"
        );
        if let Some(elapsed) = self.since_received {
            metrics
                .order_to_booking
                .get_or_create(&PipelineLabels {
                    pipeline: self.pipeline.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
        if let Some(elapsed) = self.since_paid {
            metrics
                .paid_to_booking
                .get_or_create(&PipelineLabels {
                    pipeline: self.pipeline.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }
}

/// A notify step posted a notification, found it posted before, or failed
/// to post it.
pub struct NotificationSent<'a> {
    pub pipeline: &'a str,
    /// `sent`, `duplicate`, or the failure's class (`retryable`, `permanent`).
    pub outcome: &'a str,
}

impl NotificationSent<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(
            pipeline = self.pipeline,
            outcome = self.outcome,
            "customer notification"
        );
        metrics
            .notifications
            .get_or_create(&NotificationLabels {
                pipeline: self.pipeline.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// A courier status event reached its shipment (or found none).
pub struct StatusEventRecorded<'a> {
    pub courier: &'a str,
    pub account: &'a str,
    pub tracking_number: &'a str,
    pub via: &'a str,
    /// applied, stale, duplicate, unknown or not_found
    pub outcome: &'a str,
    pub raw: &'a str,
    /// The canonical status the raw string maps to.
    pub status: &'a str,
}

impl StatusEventRecorded<'_> {
    pub fn emit(self, metrics: &Metrics) {
        match self.outcome {
            "unknown" | "not_found" => tracing::warn!(
                courier = self.courier,
                account = self.account,
                tracking_number = self.tracking_number,
                via = self.via,
                outcome = self.outcome,
                raw = self.raw,
                "status event moved nothing"
            ),
            _ => tracing::info!(
                courier = self.courier,
                account = self.account,
                tracking_number = self.tracking_number,
                via = self.via,
                outcome = self.outcome,
                raw = self.raw,
                status = self.status,
                "status event recorded"
            ),
        }
        metrics
            .status_events
            .get_or_create(&StatusEventLabels {
                courier: self.courier.to_string(),
                via: self.via.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
        if self.outcome == "unknown" {
            metrics
                .unknown_statuses
                .get_or_create(&CourierOnlyLabels {
                    courier: self.courier.to_string(),
                })
                .inc();
        }
    }
}

/// A shipment reached `delivered`.
pub struct ShipmentDelivered<'a> {
    pub courier: &'a str,
    pub source: &'a str,
    /// From booking to the delivery event.
    pub took: Duration,
}

impl ShipmentDelivered<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(
            courier = self.courier,
            source = self.source,
            seconds = self.took.as_secs(),
            "shipment delivered"
        );
        metrics
            .delivery_time
            .get_or_create(&DeliveryLabels {
                courier: self.courier.to_string(),
                source: self.source.to_string(),
            })
            .observe(self.took.as_secs_f64());
    }
}

/// The scheduler asked a courier's `track` operation about one shipment.
pub struct TrackingPolled<'a> {
    pub courier: &'a str,
    pub account: &'a str,
    /// `ok`, or the failure's class (retryable, ambiguous, permanent, needs_review).
    pub outcome: &'a str,
    /// What failed, when something did.
    pub detail: &'a str,
}

impl TrackingPolled<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if self.outcome == "ok" {
            tracing::debug!(
                courier = self.courier,
                account = self.account,
                "tracking polled"
            );
        } else {
            tracing::warn!(
                courier = self.courier,
                account = self.account,
                outcome = self.outcome,
                detail = self.detail,
                "tracking poll failed; polling again next interval"
            );
        }
        metrics
            .tracking_polls
            .get_or_create(&PollLabels {
                courier: self.courier.to_string(),
                account: self.account.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// An order booked before was cancelled or edited at the store, and this
/// is what waybill did about it.
pub struct OrderChanged<'a> {
    pub pipeline: &'a str,
    /// `cancellation` or `edit`.
    pub change: &'a str,
    /// `cancelled`, `review`, `ignored`, `rebooked` or `too_late`.
    pub outcome: &'a str,
    pub key: &'a str,
    /// What changed, or why it went to review; never a label.
    pub detail: &'a str,
}

impl OrderChanged<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(
            pipeline = self.pipeline,
            change = self.change,
            outcome = self.outcome,
            key = self.key,
            detail = self.detail,
            "order changed after booking"
        );
        metrics
            .order_changes
            .get_or_create(&OrderChangeLabels {
                pipeline: self.pipeline.to_string(),
                change: self.change.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// The COD gauges were worked out again from the store.
pub struct CodMeasured<'a> {
    pub gauges: &'a crate::store::cod::CodGauges,
}

impl CodMeasured<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(
            groups = self.gauges.amounts.len(),
            couriers = self.gauges.reconciled.len(),
            "COD gauges refreshed"
        );
        metrics.cod_amount.clear();
        for (courier, currency, state, sum) in &self.gauges.amounts {
            metrics
                .cod_amount
                .get_or_create(&super::CodAmountLabels {
                    courier: courier.clone(),
                    currency: currency.clone(),
                    state: state.as_str().to_string(),
                })
                .set(*sum);
        }
        metrics.cod_reconciled_ratio.clear();
        for (courier, collected, matched) in &self.gauges.reconciled {
            if *collected == 0 {
                continue;
            }
            metrics
                .cod_reconciled_ratio
                .get_or_create(&CourierOnlyLabels {
                    courier: courier.clone(),
                })
                .set(*matched as f64 / *collected as f64);
        }
    }
}

/// A courier's remittance for one shipment was recorded.
pub struct CodRemitted<'a> {
    pub courier: &'a str,
    pub key: &'a str,
    /// `payment` or `import`.
    pub via: &'a str,
    /// The COD state it left: `remitted` or `short_paid`.
    pub state: &'a str,
}

impl CodRemitted<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if self.state == "short_paid" {
            tracing::warn!(
                courier = self.courier,
                key = self.key,
                via = self.via,
                "COD short-paid"
            );
        } else {
            tracing::info!(
                courier = self.courier,
                key = self.key,
                via = self.via,
                state = self.state,
                "COD remitted"
            );
        }
        metrics
            .cod_remittances
            .get_or_create(&super::RemittanceLabels {
                courier: self.courier.to_string(),
                via: self.via.to_string(),
                state: self.state.to_string(),
            })
            .inc();
    }
}

/// The scheduler asked a courier's `payment` operation about one collected shipment.
pub struct PaymentChecked<'a> {
    pub courier: &'a str,
    pub account: &'a str,
    /// `settled`, `unsettled`, or the failure's class.
    pub outcome: &'a str,
    /// What failed, when something did.
    pub detail: &'a str,
}

impl PaymentChecked<'_> {
    pub fn emit(self, metrics: &Metrics) {
        if matches!(self.outcome, "settled" | "unsettled") {
            tracing::debug!(
                courier = self.courier,
                account = self.account,
                outcome = self.outcome,
                "payment checked"
            );
        } else {
            tracing::warn!(
                courier = self.courier,
                account = self.account,
                outcome = self.outcome,
                detail = self.detail,
                "payment check failed; asking again next interval"
            );
        }
        metrics
            .payment_checks
            .get_or_create(&PollLabels {
                courier: self.courier.to_string(),
                account: self.account.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}

/// A write-back to a store ended, one way or another.
pub struct WriteBackDone<'a> {
    /// The store connector.
    pub store: &'a str,
    pub account: &'a str,
    /// `fulfillment` or `event`.
    pub operation: &'a str,
    /// See [`WriteBackLabels::outcome`].
    pub outcome: &'a str,
    pub key: &'a str,
    /// The store's event status, for events.
    pub status: Option<&'a str>,
}

impl WriteBackDone<'_> {
    pub fn emit(self, metrics: &Metrics) {
        match self.outcome {
            "written" | "found" => tracing::info!(
                store = self.store,
                account = self.account,
                operation = self.operation,
                outcome = self.outcome,
                key = self.key,
                status = self.status,
                "written back to the store"
            ),
            "replayed" | "skipped" | "not_mapped" => tracing::debug!(
                store = self.store,
                account = self.account,
                operation = self.operation,
                outcome = self.outcome,
                key = self.key,
                "nothing to write back"
            ),
            // The runner logs the failure itself, with its message.
            _ => tracing::debug!(
                store = self.store,
                account = self.account,
                operation = self.operation,
                outcome = self.outcome,
                key = self.key,
                "write-back failed"
            ),
        }
        metrics
            .write_backs
            .get_or_create(&WriteBackLabels {
                store: self.store.to_string(),
                operation: self.operation.to_string(),
                outcome: self.outcome.to_string(),
            })
            .inc();
    }
}
