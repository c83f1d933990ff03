//! Metrics registry and named events.
//!
//! Every occurrence worth counting is one struct in [`events`] whose `emit`
//! writes a log line and bumps the matching metric together, so logs and
//! metrics never disagree. Labels are bounded: pipeline, stage, source,
//! courier (connector name), account (names from the config), operation,
//! outcome, error class — never an order id, phone or secret.

pub mod events;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub source: String,
    pub account: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub pipeline: String,
    pub stage: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CourierLabels {
    pub courier: String,
    pub account: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CourierAccountLabels {
    pub courier: String,
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CourierLatencyLabels {
    pub courier: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub pipeline: String,
    pub stage: String,
    pub error_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub pipeline: String,
    pub stage: String,
    pub error_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuplicateLabels {
    /// `webhook` (delivery id seen) or `booking` (booking key already booked).
    pub kind: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn order_to_booking_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// Every metric waybill exports.
pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub events: Family<StageLabels, Counter>,
    pub courier_requests: Family<CourierLabels, Counter>,
    pub courier_latency: Family<CourierLatencyLabels, Histogram, fn() -> Histogram>,
    pub rate_limit_waits: Family<CourierAccountLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub duplicates: Family<DuplicateLabels, Counter>,
    pub order_to_booking: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<PipelineLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("waybill");
        let webhooks = Family::default();
        registry.register(
            "webhooks_received",
            "Store webhooks received, by outcome",
            webhooks.clone(),
        );
        let events = Family::default();
        registry.register(
            "events",
            "Pipeline events by stage and outcome",
            events.clone(),
        );
        let courier_requests = Family::default();
        registry.register(
            "courier_requests",
            "Requests to courier APIs by courier (connector), account, operation and outcome",
            courier_requests.clone(),
        );
        let courier_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "courier_request_duration_seconds",
            "Latency of courier API requests",
            courier_latency.clone(),
        );
        let rate_limit_waits = Family::default();
        registry.register(
            "courier_rate_limit_waits",
            "Courier requests held back by the connector's rate_limit, by courier and account",
            rate_limit_waits.clone(),
        );
        let retries = Family::default();
        registry.register(
            "retries",
            "Retries scheduled after a retryable failure",
            retries.clone(),
        );
        let dead_letters = Family::default();
        registry.register(
            "dead_letters",
            "Messages sent to a dead-letter topic",
            dead_letters.clone(),
        );
        let duplicates = Family::default();
        registry.register(
            "duplicates_suppressed",
            "Duplicates suppressed: webhook deliveries seen before, bookings already made",
            duplicates.clone(),
        );
        let order_to_booking =
            Family::new_with_constructor(order_to_booking_histogram as fn() -> Histogram);
        registry.register(
            "order_to_booking_seconds",
            "Time from receiving an order webhook to its courier booking",
            order_to_booking.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "in_flight_messages",
            "Messages being worked on per pipeline",
            in_flight.clone(),
        );
        Metrics {
            registry,
            webhooks,
            events,
            courier_requests,
            courier_latency,
            rate_limit_waits,
            retries,
            dead_letters,
            duplicates,
            order_to_booking,
            in_flight,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
