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
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub source: String,
    pub account: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// Courier connector, or `unknown` (never the raw path value).
    pub connector: String,
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
pub struct RefusalLabels {
    /// `connection_limit`, `evicted_idle`, `probes_only` or `header_timeout`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub pipeline: String,
    /// `sent`, `duplicate`, `retryable` or `permanent`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusEventLabels {
    pub courier: String,
    /// `booking`, `callback`, `poll` or `store`.
    pub via: String,
    /// `applied`, `stale`, `duplicate`, `unknown` or `not_found`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub courier: String,
    pub account: String,
    /// `ok`, or the failure's class.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CourierOnlyLabels {
    pub courier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteBackLabels {
    /// The store connector, e.g. `shopify`.
    pub store: String,
    /// `fulfillment` or `event`.
    pub operation: String,
    /// `written`, `found` (after an ambiguous outcome, the store had it),
    /// `replayed` (written before), `skipped` (the account takes no
    /// write-back), `not_mapped` (a status the store's table leaves out),
    /// or the failure class.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShipmentLabels {
    pub courier: String,
    /// A canonical status (DESIGN §9).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodAmountLabels {
    pub courier: String,
    pub currency: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemittanceLabels {
    pub courier: String,
    /// `payment` (the courier's payment operation) or `import` (a settlement sheet).
    pub via: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub courier: String,
    /// The store source the order came from: delivery time by channel.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrderChangeLabels {
    pub pipeline: String,
    /// `cancellation` or `edit`.
    pub change: String,
    /// `cancelled`, `review`, `ignored`, `rebooked` or `too_late` (the
    /// parcel was delivered or returned already).
    pub outcome: String,
}

/// Registers `metric` under `name` and keeps a handle on it.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn order_to_booking_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// From a second to about three weeks: a prepaid order may wait for stock,
/// a COD order for a confirmation call.
fn paid_to_booking_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 21))
}

/// From a minute to about three months.
fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(60.0, 2.0, 18))
}

/// Every metric waybill exports.
pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub callbacks: Family<CallbackLabels, Counter>,
    pub events: Family<StageLabels, Counter>,
    pub courier_requests: Family<CourierLabels, Counter>,
    pub courier_latency: Family<CourierLatencyLabels, Histogram, fn() -> Histogram>,
    pub rate_limit_waits: Family<CourierAccountLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub duplicates: Family<DuplicateLabels, Counter>,
    pub order_to_booking: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub paid_to_booking: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<PipelineLabels, Gauge>,
    pub connections_refused: Family<RefusalLabels, Counter>,
    pub open_connections: Gauge,
    pub status_events: Family<StatusEventLabels, Counter>,
    pub write_backs: Family<WriteBackLabels, Counter>,
    pub unknown_statuses: Family<CourierOnlyLabels, Counter>,
    pub shipments: Family<ShipmentLabels, Gauge>,
    pub delivery_time: Family<DeliveryLabels, Histogram, fn() -> Histogram>,
    pub tracking_polls: Family<PollLabels, Counter>,
    pub sync_lag: Family<CourierOnlyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub notifications: Family<NotificationLabels, Counter>,
    pub order_changes: Family<OrderChangeLabels, Counter>,
    pub cod_amount: Family<CodAmountLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cod_reconciled_ratio: Family<CourierOnlyLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub cod_remittances: Family<RemittanceLabels, Counter>,
    pub payment_checks: Family<PollLabels, Counter>,
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
        // Exposed in the order registered here.
        Metrics {
            webhooks: registered(
                &mut registry,
                "webhooks_received",
                "Store webhooks received, by outcome",
                Family::default(),
            ),
            callbacks: registered(
                &mut registry,
                "callbacks_received",
                "Courier status callbacks received, by connector, account and outcome",
                Family::default(),
            ),
            events: registered(
                &mut registry,
                "events",
                "Pipeline events by stage and outcome",
                Family::default(),
            ),
            courier_requests: registered(
                &mut registry,
                "courier_requests",
                "Requests to courier APIs by courier (connector), account, operation and outcome",
                Family::default(),
            ),
            courier_latency: registered(
                &mut registry,
                "courier_request_duration_seconds",
                "Latency of courier API requests",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            rate_limit_waits: registered(
                &mut registry,
                "courier_rate_limit_waits",
                "Courier requests held back by the connector's rate_limit, by courier and account",
                Family::default(),
            ),
            retries: registered(
                &mut registry,
                "retries",
                "Retries scheduled after a retryable failure",
                Family::default(),
            ),
            dead_letters: registered(
                &mut registry,
                "dead_letters",
                "Messages sent to a dead-letter topic",
                Family::default(),
            ),
            duplicates: registered(
                &mut registry,
                "duplicates_suppressed",
                "Duplicates suppressed: webhook deliveries seen before, bookings already made",
                Family::default(),
            ),
            order_to_booking: registered(
                &mut registry,
                "order_to_booking_seconds",
                "Time from receiving an order webhook to its courier booking",
                Family::new_with_constructor(order_to_booking_histogram as fn() -> Histogram),
            ),
            paid_to_booking: registered(
                &mut registry,
                "paid_to_booking_seconds",
                "Time from an order being paid (or, for cash on delivery, confirmed) to its \
                 courier booking, from the order's own time (the shipment's paid_at)",
                Family::new_with_constructor(paid_to_booking_histogram as fn() -> Histogram),
            ),
            in_flight: registered(
                &mut registry,
                "in_flight_messages",
                "Messages being worked on per pipeline",
                Family::default(),
            ),
            connections_refused: registered(
                &mut registry,
                "http_connections_refused",
                "HTTP connections the server refused or closed before serving them, by reason: \
                 over http.max_connections, closed while idle to make room for a new one, a \
                 request other than a probe on a connection kept for probes, or a request head \
                 not sent within http.header_read_timeout",
                Family::default(),
            ),
            open_connections: registered(
                &mut registry,
                "http_open_connections",
                "HTTP connections open now",
                Gauge::default(),
            ),
            status_events: registered(
                &mut registry,
                "status_events",
                "Courier status events by courier, how they came (booking, callback, poll, store) \
                 and what they did to their shipment",
                Family::default(),
            ),
            write_backs: registered(
                &mut registry,
                "write_backs",
                "Write-backs of tracking numbers and status events to stores, by store connector, \
                 operation (fulfillment, event) and outcome (written, found, replayed, skipped, \
                 not_mapped, or the failure class)",
                Family::default(),
            ),
            unknown_statuses: registered(
                &mut registry,
                "unknown_statuses",
                "Raw courier statuses no status table matched, by courier (see `waybill statuses unknown`)",
                Family::default(),
            ),
            shipments: registered(
                &mut registry,
                "shipments",
                "Shipments by courier and canonical status",
                Family::default(),
            ),
            delivery_time: registered(
                &mut registry,
                "delivery_seconds",
                "Time from booking to delivery, by courier and store source",
                Family::new_with_constructor(delivery_histogram as fn() -> Histogram),
            ),
            tracking_polls: registered(
                &mut registry,
                "tracking_polls",
                "Polls of couriers' track operations, by courier, account and outcome",
                Family::default(),
            ),
            sync_lag: registered(
                &mut registry,
                "tracking_sync_lag_seconds",
                "How long the most overdue shipment of each courier has waited for its poll",
                Family::default(),
            ),
            notifications: registered(
                &mut registry,
                "notifications",
                "Customer notifications by notify pipeline and outcome: sent, duplicate (posted \
                 before), or a failed attempt's class",
                Family::default(),
            ),
            order_changes: registered(
                &mut registry,
                "order_changes",
                "Cancellations and edits of orders after booking, by pipeline, change and outcome",
                Family::default(),
            ),
            cod_amount: registered(
                &mut registry,
                "cod_amount",
                "Expected COD of the stored shipments, by courier, currency and COD state \
                 (pending and collected are outstanding)",
                Family::default(),
            ),
            cod_reconciled_ratio: registered(
                &mut registry,
                "cod_reconciled_ratio",
                "Share of each courier's collected COD shipments whose remittance matched the \
                 expected amount less fees",
                Family::default(),
            ),
            cod_remittances: registered(
                &mut registry,
                "cod_remittances",
                "Remittances recorded, by courier, how they came (payment, import) and the COD \
                 state they left",
                Family::default(),
            ),
            payment_checks: registered(
                &mut registry,
                "cod_payment_checks",
                "Asks of couriers' payment operations about collected COD, by courier, account and \
                 outcome (settled, unsettled, or the failure's class)",
                Family::default(),
            ),
            registry,
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

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// Every registered family's full name. A family without samples is
    /// not rendered, so the names come from the registry's descriptors.
    fn families() -> Vec<String> {
        let registry = format!("{:?}", Metrics::new().registry);
        registry
            .split("name: \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(|name| format!("waybill_{name}"))
            .collect()
    }

    #[test]
    fn every_metric_is_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
        let docs = std::fs::read_to_string(path).expect("docs/metrics.md");
        let families = families();
        assert!(families.len() > 10, "{families:?}");
        let missing: Vec<&String> = families
            .iter()
            .filter(|name| !docs.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "metrics served but not described in docs/metrics.md: {missing:?}"
        );
    }
}
