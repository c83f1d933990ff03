//! Shipments and their status history (DESIGN §8, §9): one row per booked
//! parcel with its canonical status, and one history row per status event
//! that reached it, applied or not, with why.
//!
//! Applying an event is one transaction: the history row (unique per bus
//! message, so a redelivered event is recognised and never recorded twice)
//! and, when the event moves the shipment, the shipment row, guarded by its
//! version so that two instances never both move it from the same state.

use super::StoreError;
use super::cod::{CodFilter, CodGauges, PaymentLease, RemitOutcome};
use crate::model::cod::Remittance;
use crate::model::{BookingKey, CodState, Status, Via};
use async_trait::async_trait;

/// What an event did to its shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It moved the shipment (or refreshed it at the same status).
    Applied,
    /// Older than the latest applied event, or a move the state machine
    /// refuses (backwards, or out of a terminal status).
    Stale,
    /// The same status at the same time again, by either road.
    Duplicate,
    /// No status table entry matched the raw string.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Some(match text {
            "applied" => Outcome::Applied,
            "stale" => Outcome::Stale,
            "duplicate" => Outcome::Duplicate,
            "unknown" => Outcome::Unknown,
            _ => return None,
        })
    }
}

/// A shipment to create when its booking is seen.
#[derive(Debug, Clone, PartialEq)]
pub struct NewShipment {
    pub key: BookingKey,
    /// The bus key of the order's messages, `<account>:<order id>`.
    pub order_key: String,
    pub reference: Option<String>,
    pub courier: String,
    pub courier_account: String,
    pub tracking_number: String,
    pub booked_at: String,
    /// When the scheduler should first ask the courier; `None`: never.
    pub next_poll_at: Option<String>,
    pub cod_amount: Option<String>,
    pub cod_currency: Option<String>,
    /// The id of the message that announced the booking: its history row.
    pub event_id: String,
}

/// A stored shipment.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipmentRecord {
    pub key: BookingKey,
    pub order_key: String,
    pub reference: Option<String>,
    pub courier: String,
    pub courier_account: String,
    pub tracking_number: String,
    pub status: Status,
    pub sub_status: Option<String>,
    pub raw_status: Option<String>,
    pub reason: Option<String>,
    pub booked_at: String,
    pub last_event_at: Option<String>,
    pub updated_at: String,
    pub next_poll_at: Option<String>,
    /// The scheduler's current wait between polls, in milliseconds.
    pub poll_interval_ms: Option<i64>,
    pub cod_amount: Option<String>,
    pub cod_currency: Option<String>,
    /// The COD ledger (DESIGN §9): where the cash stands.
    pub cod_state: CodState,
    /// When the courier delivered the COD parcel (a store timestamp).
    pub cod_collected_at: Option<String>,
    /// What the courier paid the merchant, decimal text; `None` until paid
    /// or when the courier named no amount.
    pub cod_remitted: Option<String>,
    /// When it paid, as the courier wrote it.
    pub cod_remitted_at: Option<String>,
    pub cod_remittance_ref: Option<String>,
    /// The courier's fees on the shipment, decimal text, where it declares them.
    pub cod_fees: Option<String>,
    /// Why the COD is disputed, or what the last remittance said.
    pub cod_note: Option<String>,
}

/// A lease on due shipments, taken by one scheduler.
#[derive(Debug, Clone, Copy)]
pub struct DueLease<'a> {
    pub now: &'a str,
    pub owner: &'a str,
    /// Until when the leased shipments are the owner's.
    pub until: &'a str,
    pub limit: usize,
}

/// How one courier account's tracking stands, for `waybill sync status`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOverview {
    pub courier_account: String,
    /// Shipments still polled (not terminal).
    pub tracked: i64,
    pub due: i64,
    /// The earliest `next_poll_at` that has passed.
    pub oldest_due: Option<String>,
}

/// One status event, normalised, as it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEvent {
    /// The bus message's `waybill-id`: one history row per message.
    pub event_id: String,
    pub courier_account: String,
    pub tracking_number: String,
    pub raw: String,
    pub code: Option<String>,
    pub status: Status,
    pub sub_status: Option<String>,
    pub reason: Option<String>,
    /// A store timestamp (`clock::timestamp`); `None` when the courier gave
    /// no time.
    pub event_time: Option<String>,
    pub received_at: String,
    pub via: Via,
}

/// One history row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub id: i64,
    pub raw: Option<String>,
    pub code: Option<String>,
    pub status: Status,
    pub sub_status: Option<String>,
    pub reason: Option<String>,
    pub event_time: Option<String>,
    pub received_at: String,
    pub via: Via,
    pub outcome: Outcome,
    /// The shipment's status before an applied event.
    pub previous: Option<Status>,
    /// When the change went out on `shipments.status`.
    pub published_at: Option<String>,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// No shipment has this courier account and tracking number.
    NotFound,
    /// The event's history row, new or (for a redelivered message) found,
    /// and the shipment as it stands after it.
    Recorded {
        entry: HistoryEntry,
        shipment: Box<ShipmentRecord>,
        /// False when the message had been recorded before.
        new: bool,
    },
}

/// Which shipments to list.
#[derive(Debug, Clone, Default)]
pub struct ShipmentFilter {
    pub status: Option<Status>,
    pub courier: Option<String>,
    pub limit: usize,
}

/// A raw status no table knew, per courier.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownStatus {
    pub courier: String,
    pub raw: String,
    pub count: i64,
    pub last_seen: String,
}

#[async_trait]
pub trait ShipmentStore: Send + Sync + 'static {
    /// Creates the shipment of a booking with its `booked` history row;
    /// false when it existed already.
    async fn create_shipment(&self, new: &NewShipment) -> Result<bool, StoreError>;

    /// Records `event` against its shipment and applies it when the state
    /// machine allows (see [`crate::model::transition`]).
    async fn apply_status(&self, event: &StatusEvent) -> Result<Applied, StoreError>;

    /// Notes that the history row `id` went out on `shipments.status`.
    async fn mark_published(&self, id: i64) -> Result<(), StoreError>;

    /// An operator's correction: moves the shipment to `status` whatever
    /// it is, recorded `via: store` with `reason`.
    async fn correct_shipment(
        &self,
        key: &BookingKey,
        status: Status,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError>;

    async fn shipments(&self, filter: &ShipmentFilter) -> Result<Vec<ShipmentRecord>, StoreError>;

    /// Shipments whose booking key, tracking number or order reference is
    /// `needle`.
    async fn find_shipments(&self, needle: &str) -> Result<Vec<ShipmentRecord>, StoreError>;

    async fn shipment_by_tracking(
        &self,
        courier_account: &str,
        tracking_number: &str,
    ) -> Result<Option<ShipmentRecord>, StoreError>;

    /// Oldest first.
    async fn history(&self, key: &BookingKey) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Counts a raw status no table knew.
    async fn record_unknown(&self, courier: &str, raw: &str, at: &str) -> Result<(), StoreError>;

    async fn unknown_statuses(&self) -> Result<Vec<UnknownStatus>, StoreError>;

    /// Shipments per courier and status, for the `waybill_shipments` gauge.
    async fn shipment_counts(&self) -> Result<Vec<(String, Status, i64)>, StoreError>;

    /// Leases up to `lease.limit` shipments whose next poll is due and that
    /// nobody holds, earliest due first. The cost grows with the number
    /// due, not with the number stored; on PostgreSQL a row another
    /// instance is leasing is skipped (`FOR UPDATE SKIP LOCKED`).
    async fn lease_due(&self, lease: DueLease<'_>) -> Result<Vec<ShipmentRecord>, StoreError>;

    /// Ends `owner`'s lease on a polled shipment: next poll at
    /// `next_poll_at` (`None`: never again), after `interval_ms`.
    async fn finish_poll(
        &self,
        key: &BookingKey,
        owner: &str,
        next_poll_at: Option<&str>,
        interval_ms: i64,
    ) -> Result<(), StoreError>;

    /// The store cancelled the order and the courier took the
    /// cancellation: `cancelled`, recorded `via: store` with `reason`,
    /// never polled again. `None` when there is no such shipment.
    async fn cancel_shipment(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError>;

    /// A shipment tracked for longer than `max_age`: `exception`,
    /// sub-status `tracking_expired`, never polled again.
    async fn expire_shipment(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<HistoryEntry>, StoreError>;

    /// Per courier account: shipments tracked, due at `now`, oldest due.
    async fn sync_overview(&self, now: &str) -> Result<Vec<SyncOverview>, StoreError>;

    /// Notes that `owner`'s scheduler ran at `at`.
    async fn note_scheduler_run(&self, owner: &str, at: &str) -> Result<(), StoreError>;

    /// When each scheduler last ran, latest first.
    async fn scheduler_runs(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Takes up to `lease.limit` collected shipments whose payment is due
    /// to be asked about, setting their next check; on PostgreSQL a row
    /// another instance is taking is skipped.
    async fn lease_payment_checks(
        &self,
        lease: PaymentLease<'_>,
    ) -> Result<Vec<ShipmentRecord>, StoreError>;

    /// Records what couriers say they paid, judged against each shipment's
    /// expected amount with `tolerance`, in one transaction: when any
    /// remittance is refused (no such shipment, nothing to remit) nothing
    /// is recorded. `via` (`payment`, `import`) goes into the audit trail.
    async fn record_remittances(
        &self,
        remittances: &[(BookingKey, Remittance)],
        tolerance: rust_decimal::Decimal,
        via: &str,
    ) -> Result<Vec<RemitOutcome>, StoreError>;

    /// Marks a shipment's COD `disputed` with `reason`; its state before,
    /// or `None` when there is no such shipment. A shipment without COD
    /// (`not_applicable`) is left as it is.
    async fn dispute_cod(
        &self,
        key: &BookingKey,
        reason: &str,
    ) -> Result<Option<CodState>, StoreError>;

    /// Shipments with COD (any state but `not_applicable`), oldest booking first.
    async fn cod_shipments(&self, filter: &CodFilter) -> Result<Vec<ShipmentRecord>, StoreError>;

    /// Shipments of courier connector `courier` with `tracking_number`.
    async fn shipments_by_courier_tracking(
        &self,
        courier: &str,
        tracking_number: &str,
    ) -> Result<Vec<ShipmentRecord>, StoreError>;

    /// COD amounts per courier, currency and state, and how much collected
    /// COD each courier's remittances matched, for the COD gauges.
    async fn cod_gauges(&self) -> Result<CodGauges, StoreError>;
}
