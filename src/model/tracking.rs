//! A courier's status event as it travels on `tracking.<connector>`: the
//! courier's raw words, not yet normalised, from a callback or a poll.
//!
//! Both roads publish the same JSON, keyed `<courier account>:<tracking
//! number>` so that one parcel's events stay in order, with the usual
//! `waybill-*` headers (`waybill-source` is the courier connector,
//! `waybill-account` the courier account). The tracker normalises each one
//! against the connector's status table and applies it to the shipment.
//!
//! ```json
//! {"connector": "postex", "account": "courier-main", "tracking_number": "CX-1",
//!  "raw_status": "Delivered", "code": null, "event_time": "2026-05-12T09:03:11Z",
//!  "reason": null, "via": "callback", "received_at": "2026-05-12T09:03:12.000000Z"}
//! ```

use serde::{Deserialize, Serialize};

/// Where the tracker publishes every applied status change.
pub const STATUS_TOPIC: &str = "shipments.status";

/// The topic a courier connector's events travel on.
pub fn tracking_topic(connector: &str) -> String {
    format!("tracking.{connector}")
}

/// The bus key of a parcel's events.
pub fn tracking_key(account: &str, tracking_number: &str) -> String {
    format!("{account}:{tracking_number}")
}

/// Whether two raw statuses are the same words, whatever their case and
/// spacing: a courier repeating itself.
pub fn same_raw_status(a: &str, b: &str) -> bool {
    a.split_whitespace()
        .map(str::to_lowercase)
        .eq(b.split_whitespace().map(str::to_lowercase))
}

/// How a status event reached waybill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The shipment's own booking (its first row of history).
    Booking,
    /// The courier posted it to `/callbacks/…`.
    Callback,
    /// The scheduler asked the courier's `track` operation.
    Poll,
    /// The store (a cancellation) or an operator's correction.
    Store,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Booking => "booking",
            Via::Callback => "callback",
            Via::Poll => "poll",
            Via::Store => "store",
        }
    }
}

/// One raw status event of one parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingEvent {
    /// Courier connector name.
    pub connector: String,
    /// Courier account name from the config.
    pub account: String,
    pub tracking_number: String,
    /// The courier's status string, exactly as it came.
    pub raw_status: String,
    /// The courier's status code, where it sends one beside the string.
    #[serde(default)]
    pub code: Option<String>,
    /// When the courier says it happened: RFC 3339, UTC. `None` when the
    /// courier gave no time; the receipt time then orders the event.
    #[serde(default)]
    pub event_time: Option<String>,
    /// Why, where the courier says (an attempt's reason, a hold's cause).
    #[serde(default)]
    pub reason: Option<String>,
    pub via: Via,
    /// When waybill received it: RFC 3339, UTC.
    pub received_at: String,
}
