//! The store: webhook delivery ids, booking idempotency keys and results,
//! shipments and the audit trail (DESIGN §2, §8).
//!
//! One code path through `sqlx` for SQLite (embedded default) and
//! PostgreSQL; backend-specific SQL stays behind [`Store`].

pub mod cod;
mod error;
pub mod notifications;
pub mod shipments;
pub mod sql;
pub(crate) mod sqlite;
#[cfg(test)]
mod test_support;
pub mod write_backs;

pub use error::{RowError, StoreError};
pub use notifications::NotificationStore;
pub use shipments::ShipmentStore;
pub use write_backs::WriteBackStore;

use crate::model::{BookingKey, BookingResult};
use async_trait::async_trait;
use std::time::Duration;

/// Where a booking key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    /// The request went out; outcome unknown until recorded.
    Sent,
    Booked,
    /// A person must decide (`waybill bookings resolve`).
    Review,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Sent => "sent",
            BookingStatus::Booked => "booked",
            BookingStatus::Review => "review",
        }
    }
}

/// A stored booking row.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub key: BookingKey,
    pub status: BookingStatus,
    pub result: Option<BookingResult>,
    pub reason: Option<String>,
    pub owner: Option<String>,
    /// `waybill-id` of the message that created the booking.
    pub message_id: Option<String>,
    pub reference: Option<String>,
    pub updated_at: String,
}

/// What a booking key was claimed with, and the last change handled
/// against it ([`Store::booked_shipment`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookedShipment {
    /// Canonical shipment JSON; `None` for keys claimed before it was kept.
    pub shipment: Option<String>,
    /// Canonical shipment JSON of the last change noted.
    pub change: Option<String>,
    /// The message that handled that change.
    pub change_message_id: Option<String>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The caller now owns the key and may send the request.
    Acquired,
    /// Already booked: return the stored result, do not call the courier.
    Booked(BookingResult),
    /// Sent before without a recorded outcome (crash or ambiguous answer),
    /// and nobody holds a lease on it any more.
    Sent,
    /// Waiting for a person.
    Review(String),
    /// Another live owner holds the lease (its request may be out).
    Busy { owner: String },
}

/// A claim on a booking key, made just before its request goes out
/// ([`Store::claim_booking`]).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub key: &'a BookingKey,
    /// The instance that sends the request.
    pub owner: &'a str,
    /// How long the key stays the owner's while its answer may still come.
    pub lease: Duration,
    /// `waybill-id` of the message that books.
    pub message_id: &'a str,
    /// The order's reference at the courier, to look the booking up by.
    pub reference: &'a str,
    /// The canonical shipment JSON sent, kept to compare later events of
    /// the order with ([`Store::booked_shipment`]).
    pub shipment: &'a str,
}

/// An audit entry: which message did what to which booking, when.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub key: String,
    pub action: String,
    pub message_id: Option<String>,
    pub detail: Option<String>,
    pub at: String,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether a webhook delivery id was recorded already.
    async fn delivery_seen(
        &self,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError>;

    /// Records a delivery id; `false` when it was already there.
    async fn remember_delivery(
        &self,
        source: &str,
        account: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError>;

    /// Claims a booking key just before its request goes out: reserves it
    /// for `owner` with a lease and marks it `sent`, in one transaction.
    /// Only [`Reservation::Acquired`] lets the caller send. A key another
    /// owner sent is [`Reservation::Busy`] while that owner's lease lasts
    /// (its answer may still come) and [`Reservation::Sent`] after.
    async fn claim_booking(&self, claim: Claim<'_>) -> Result<Reservation, StoreError>;

    /// Records a successful booking (and the shipment and audit rows).
    async fn mark_booked(
        &self,
        key: &BookingKey,
        result: &BookingResult,
        message_id: &str,
    ) -> Result<(), StoreError>;

    /// Sends a key to review with a reason.
    async fn mark_review(
        &self,
        key: &BookingKey,
        reason: &str,
        message_id: &str,
    ) -> Result<(), StoreError>;

    /// Gives back a key `owner` sent, so that any owner may take it: the
    /// courier certainly did not act on the request (a retryable or
    /// permanent failure).
    async fn release_reservation(&self, key: &BookingKey, owner: &str) -> Result<(), StoreError>;

    /// Operator: the review item was booked with this tracking number.
    async fn resolve_booked(
        &self,
        key: &BookingKey,
        result: &BookingResult,
    ) -> Result<(), StoreError>;

    /// Operator: the review item was not booked; allow booking again.
    async fn resolve_release(&self, key: &BookingKey) -> Result<(), StoreError>;

    async fn booking(&self, key: &BookingKey) -> Result<Option<Booking>, StoreError>;

    async fn bookings(
        &self,
        status: Option<BookingStatus>,
        limit: usize,
    ) -> Result<Vec<Booking>, StoreError>;

    async fn audit(&self, key: &BookingKey) -> Result<Vec<AuditEntry>, StoreError>;

    /// Every booking key of one order, lowest sequence first.
    async fn order_bookings(
        &self,
        source: &str,
        account: &str,
        order_id: &str,
    ) -> Result<Vec<Booking>, StoreError>;

    /// The canonical shipment `key` was claimed with, and the last change
    /// noted against it; `None` when the key is unknown.
    async fn booked_shipment(&self, key: &BookingKey)
    -> Result<Option<BookedShipment>, StoreError>;

    /// Notes that the order now maps to `change` (canonical shipment JSON)
    /// and that message `message_id` handled it without a new booking.
    async fn note_change(
        &self,
        key: &BookingKey,
        change: &str,
        message_id: &str,
    ) -> Result<(), StoreError>;

    /// Deletes delivery ids older than `ttl`.
    async fn expire_deliveries(&self, ttl: Duration) -> Result<u64, StoreError>;

    /// Whether the store is usable right now (`/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}
