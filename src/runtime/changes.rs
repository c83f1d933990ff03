//! Order changes after booking (DESIGN §8): a later event of an order that
//! is booked already is compared with what was booked, instead of being a
//! silent replay.
//!
//! - **Cancellation** (the mapped shipment says `cancelled: true`): before
//!   pickup, the courier's `cancel` operation is called and the shipment
//!   becomes `cancelled` (history `via: store`, announced on
//!   `shipments.status`). After pickup, at a courier without `cancel`, or
//!   when the courier refuses, a `needs_review` dead letter says what to do.
//!   An order cancelled before it was booked is not booked.
//! - **Edit** (the mapped shipment differs from the booked one): the
//!   pipeline's `on_change` decides: `review` (a dead letter with the
//!   field-by-field difference), `ignore`, or `rebook` (cancel, then book
//!   the next sequence). Never a second parcel otherwise.
//!
//! A change sent to review or ignored is noted against the booking, so the
//! order's later events (a store sends several per change) do not report it
//! again; the message that handled it still does when it is redelivered.
//!
//! ```yaml
//! on_change: review     # pipeline key: review (default), ignore or rebook
//! ```

use super::runner::Runner;
use super::tracker::{STATUS_TOPIC, status_message};
use crate::config::OnChange;
use crate::model::change::{self, Difference};
use crate::model::{BookingKey, BookingResult, ErrorClass, Failure, Record, Shipment, Status, Via};
use crate::sinks::book::Slots;
use crate::sinks::cancel::Cancellation;
use crate::stages::Event;
use crate::store::shipments::{Outcome, ShipmentRecord};
use crate::store::{BookedShipment, Booking, BookingStatus, StoreError};
use crate::telemetry::events::OrderChanged;
use serde_json::Value;

/// The stage change failures and dead letters are attributed to.
const STAGE: &str = "change";

fn store_failure(e: StoreError) -> Failure {
    Failure::new(STAGE, ErrorClass::Retryable, format!("store: {e}"))
}

/// Which kind of change, as the metric labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cancellation,
    Edit,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Cancellation => "cancellation",
            Kind::Edit => "edit",
        }
    }
}

/// One later event of a booked order.
struct Change<'a> {
    record: &'a Record,
    key: &'a BookingKey,
    booking: &'a BookingResult,
    reference: &'a str,
    /// The shipment as booked (`null` when it was not kept).
    booked: &'a Value,
    /// The shipment as the order maps to now, at the booking's sequence.
    now: &'a Value,
    /// What was noted against the booking before.
    stored: &'a BookedShipment,
}

impl Change<'_> {
    fn message_id(&self) -> &str {
        self.record
            .message
            .headers
            .get(crate::model::header::ID)
            .map_or("", String::as_str)
    }

    /// Whether another message handled this very change already. The
    /// message that handled it (redelivered) and a replay of its dead
    /// letter handle it again.
    fn handled_before(&self) -> bool {
        let noted = self
            .stored
            .change
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let headers = &self.record.message.headers;
        let handler = self.stored.change_message_id.as_deref();
        let ours = handler == Some(self.message_id())
            || handler.is_some()
                && headers
                    .get(crate::model::header::REPLAY_OF)
                    .map(String::as_str)
                    == handler;
        noted.as_ref() == Some(self.now) && !ours
    }

    fn describe_parcel(&self) -> String {
        format!(
            "order {} (booking {}, tracking number {} at {} account `{}`)",
            self.reference,
            self.key,
            self.booking.tracking_number,
            self.booking.courier,
            self.booking.account
        )
    }
}

impl Runner {
    /// The `book` step of a message: a first booking, a replay, or a change
    /// of an order booked before.
    pub(super) async fn book_or_change(
        &self,
        record: &Record,
        event: &Event,
        mut shipment: Shipment,
        route: &str,
        slots: &Slots,
    ) -> Result<(), Failure> {
        let Some(latest) = self.latest_booking(event, &shipment).await? else {
            if shipment.cancelled {
                tracing::debug!(pipeline = %self.pipeline.name, key = %record.message.key, "cancelled before it was booked: nothing to book");
                self.processed("book", "skipped");
                return Ok(());
            }
            return self.book(record, event, &shipment, route, slots).await;
        };
        shipment.sequence = latest.key.sequence;
        let booking = match (latest.status, &latest.result) {
            (BookingStatus::Booked, Some(result)) => result.clone(),
            _ if shipment.cancelled => return Err(unsettled(&latest)),
            // The claim answers for a key still sent or in review.
            _ => return self.book(record, event, &shipment, route, slots).await,
        };
        let stored = self
            .booker
            .store
            .booked_shipment(&latest.key)
            .await
            .map_err(store_failure)?
            .unwrap_or_default();
        let now = serde_json::to_value(&shipment)
            .map_err(|e| Failure::permanent(STAGE, format!("shipment: {e}")))?;
        let booked: Value = stored
            .shipment
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        let change = Change {
            record,
            key: &latest.key,
            booking: &booking,
            reference: &shipment.reference,
            booked: &booked,
            now: &now,
            stored: &stored,
        };
        if shipment.cancelled {
            return self.cancellation(&change).await;
        }
        // Booked before shipments were kept: nothing to compare with.
        let differences = if booked.is_null() {
            Vec::new()
        } else {
            change::differences(&booked, &now)
        };
        if differences.is_empty() {
            return self.book(record, event, &shipment, route, slots).await;
        }
        let edit = Edit {
            change: &change,
            differences: &differences,
            shipment: &shipment,
            route,
            event,
            slots,
        };
        self.edit(&edit).await
    }

    /// The order's latest booking key at or after the mapped sequence: the
    /// one a rebooking left current.
    async fn latest_booking(
        &self,
        event: &Event,
        shipment: &Shipment,
    ) -> Result<Option<Booking>, Failure> {
        let bookings = self
            .booker
            .store
            .order_bookings(&event.source, &event.account, &shipment.order_id)
            .await
            .map_err(store_failure)?;
        Ok(bookings
            .into_iter()
            .filter(|b| b.key.sequence >= shipment.sequence)
            .max_by_key(|b| b.key.sequence))
    }

    /// The shipment of a booking key; the tracker makes it from the
    /// booking's output, so it may lag the booking by a moment.
    async fn shipment_of(&self, key: &BookingKey) -> Result<Option<ShipmentRecord>, Failure> {
        let found = self
            .shipments
            .find_shipments(&key.to_string())
            .await
            .map_err(store_failure)?;
        Ok(found.into_iter().find(|s| &s.key == key))
    }

    /// A shipment that must exist before the change can be acted on.
    async fn shipment_now(&self, key: &BookingKey) -> Result<ShipmentRecord, Failure> {
        self.shipment_of(key).await?.ok_or_else(|| {
            Failure::new(
                STAGE,
                ErrorClass::Retryable,
                format!("booking {key} is not recorded as a shipment yet; waiting for it"),
            )
        })
    }

    /// The store cancelled a booked order.
    async fn cancellation(&self, change: &Change<'_>) -> Result<(), Failure> {
        let shipment = self.shipment_now(change.key).await?;
        let parcel = change.describe_parcel();
        match shipment.status {
            Status::Cancelled => return self.announce_cancelled(&shipment).await,
            Status::Draft | Status::Booked => {}
            Status::Delivered | Status::Returned => {
                let why = format!(
                    "{parcel} was cancelled at the store after the parcel was {}: there is nothing \
                     to cancel at the courier; settle the refund or return with the customer",
                    shipment.status.as_str()
                );
                return self
                    .review(change, Kind::Cancellation, "too_late", why)
                    .await;
            }
            status => {
                let why = format!(
                    "{parcel} was cancelled at the store after pickup (the parcel is `{}`): it \
                     cannot be cancelled any more; ask the courier to intercept it and return it, \
                     or have the recipient refuse it at the door",
                    status.as_str()
                );
                return self.review(change, Kind::Cancellation, "review", why).await;
            }
        }
        if let Err(why) = self.cancel_at_courier(change).await? {
            let why = format!("{parcel} was cancelled at the store, but {why}");
            return self.review(change, Kind::Cancellation, "review", why).await;
        }
        self.mark_cancelled(&shipment, "order cancelled at the store")
            .await?;
        self.changed(
            change,
            Kind::Cancellation,
            "cancelled",
            "cancelled at the courier",
        );
        Ok(())
    }

    /// Asks the courier to cancel: `Ok(Err(why))` when it did not and a
    /// person must (no `cancel` operation, or the courier refused); a
    /// failure to retry when the courier certainly did not act.
    async fn cancel_at_courier(&self, change: &Change<'_>) -> Result<Result<(), String>, Failure> {
        let account = &change.booking.account;
        if !self.booker.can_cancel(account) {
            return Ok(Err(format!(
                "courier account `{account}` cannot cancel through waybill (its connector declares \
                 no `cancel` operation): cancel tracking number {} in the courier's portal before \
                 pickup; once it is picked up, ask the courier to intercept it, or have the \
                 recipient refuse it at the door",
                change.booking.tracking_number
            )));
        }
        let cancellation = Cancellation {
            booking: change.booking,
            reference: change.reference,
            shipment: change.booked,
        };
        match self.booker.cancel(&cancellation).await {
            Ok(()) => Ok(Ok(())),
            Err(failure) if failure.class == ErrorClass::Retryable => Err(failure),
            Err(failure) => Ok(Err(format!(
                "the courier did not cancel it ({}: {}): check the booking in the courier's \
                 portal and cancel it there; if it was picked up already, ask the courier to \
                 intercept it, or have the recipient refuse it at the door",
                failure.class, failure.message
            ))),
        }
    }

    /// Records the shipment `cancelled` and announces it on `shipments.status`.
    async fn mark_cancelled(&self, shipment: &ShipmentRecord, reason: &str) -> Result<(), Failure> {
        let entry = self
            .shipments
            .cancel_shipment(&shipment.key, reason)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| {
                Failure::permanent(STAGE, format!("shipment {} disappeared", shipment.key))
            })?;
        let mut cancelled = shipment.clone();
        cancelled.status = Status::Cancelled;
        self.announce(&cancelled, &entry).await
    }

    /// A shipment cancelled by an earlier try of this message whose change
    /// never went out (a crash in between): it goes out now.
    async fn announce_cancelled(&self, shipment: &ShipmentRecord) -> Result<(), Failure> {
        let history = self
            .shipments
            .history(&shipment.key)
            .await
            .map_err(store_failure)?;
        let unpublished = history.into_iter().rev().find(|entry| {
            entry.status == Status::Cancelled
                && entry.via == Via::Store
                && entry.outcome == Outcome::Applied
                && entry.published_at.is_none()
        });
        if let Some(entry) = unpublished {
            self.announce(shipment, &entry).await?;
        }
        self.processed(STAGE, "replayed");
        Ok(())
    }

    async fn announce(
        &self,
        shipment: &ShipmentRecord,
        entry: &crate::store::shipments::HistoryEntry,
    ) -> Result<(), Failure> {
        let message = status_message(shipment, entry, format!("status-store-{}", entry.id));
        self.bus
            .publish(STATUS_TOPIC, message)
            .await
            .map_err(|e| Failure::new(STAGE, ErrorClass::Retryable, format!("bus: {e}")))?;
        self.shipments
            .mark_published(entry.id)
            .await
            .map_err(store_failure)
    }

    /// A change a person must look at: noted, counted, and dead-lettered
    /// as `needs_review` with `why` — unless another message of the order
    /// reported this very change already.
    async fn review(
        &self,
        change: &Change<'_>,
        kind: Kind,
        outcome: &str,
        why: String,
    ) -> Result<(), Failure> {
        if self.noted(change, kind, outcome, &why).await? {
            return Err(Failure::new(STAGE, ErrorClass::NeedsReview, why));
        }
        Ok(())
    }

    /// Notes a change handled without a booking; false when another message
    /// handled it before (nothing more to do).
    async fn noted(
        &self,
        change: &Change<'_>,
        kind: Kind,
        outcome: &str,
        detail: &str,
    ) -> Result<bool, Failure> {
        if change.handled_before() {
            self.processed(STAGE, "replayed");
            return Ok(false);
        }
        self.booker
            .store
            .note_change(change.key, &change.now.to_string(), change.message_id())
            .await
            .map_err(store_failure)?;
        self.changed(change, kind, outcome, detail);
        Ok(true)
    }

    fn changed(&self, change: &Change<'_>, kind: Kind, outcome: &str, detail: &str) {
        OrderChanged {
            pipeline: &self.pipeline.name,
            change: kind.as_str(),
            outcome,
            key: &change.key.to_string(),
            detail,
        }
        .emit(&self.metrics);
        self.processed(STAGE, outcome);
    }
}

/// An edit of a booked order, and what booking again needs.
struct Edit<'a> {
    change: &'a Change<'a>,
    differences: &'a [Difference],
    shipment: &'a Shipment,
    route: &'a str,
    event: &'a Event,
    slots: &'a Slots,
}

impl Edit<'_> {
    /// The changed fields' names: what logs and metrics may carry.
    fn fields(&self) -> String {
        let names: Vec<&str> = self.differences.iter().map(|d| d.field.as_str()).collect();
        format!("changed: {}", names.join(", "))
    }
}

impl Runner {
    async fn edit(&self, edit: &Edit<'_>) -> Result<(), Failure> {
        let change = edit.change;
        let status = self.shipment_of(change.key).await?.map(|s| s.status);
        // A cancelled parcel has nothing left to change; a delivered or
        // returned one cannot (a COD order marked paid after delivery, say).
        match status {
            Some(Status::Cancelled) if self.pipeline.on_change != OnChange::Rebook => {
                self.processed(STAGE, "skipped");
                return Ok(());
            }
            Some(Status::Delivered | Status::Returned) => {
                self.noted(change, Kind::Edit, "too_late", &edit.fields())
                    .await?;
                return Ok(());
            }
            _ => {}
        }
        match self.pipeline.on_change {
            OnChange::Ignore => {
                self.noted(change, Kind::Edit, "ignored", &edit.fields())
                    .await?;
                Ok(())
            }
            OnChange::Review => {
                let why = format!(
                    "{} changed at the store after booking; the parcel goes as booked. \
                     Differences (booked → now): {}. Update the booking in the courier's portal, \
                     or cancel it there; `on_change: rebook` cancels and books again by itself",
                    change.describe_parcel(),
                    change::describe(edit.differences)
                );
                self.review(change, Kind::Edit, "review", why).await
            }
            OnChange::Rebook => self.rebook(edit).await,
        }
    }

    /// Cancels the booking, then books the edited order as the next sequence.
    async fn rebook(&self, edit: &Edit<'_>) -> Result<(), Failure> {
        let change = edit.change;
        let shipment = self.shipment_now(change.key).await?;
        let parcel = change.describe_parcel();
        let differences = change::describe(edit.differences);
        match shipment.status {
            // Cancelled by an earlier try of this message: book the next.
            Status::Cancelled => {}
            Status::Draft | Status::Booked => {
                if let Err(why) = self.cancel_at_courier(change).await? {
                    let why = format!(
                        "{parcel} changed at the store after booking ({differences}) and is to be \
                         booked again, but {why}"
                    );
                    return self.review(change, Kind::Edit, "review", why).await;
                }
                let reason = format!(
                    "order edited at the store; booked again as sequence {}",
                    change.key.sequence + 1
                );
                self.mark_cancelled(&shipment, &reason).await?;
            }
            status => {
                let why = format!(
                    "{parcel} changed at the store after pickup (the parcel is `{}`), so it cannot \
                     be booked again. Differences (booked → now): {differences}. Ask the courier \
                     to update or intercept the parcel, or have the recipient refuse it at the door",
                    status.as_str()
                );
                return self.review(change, Kind::Edit, "review", why).await;
            }
        }
        let mut next = edit.shipment.clone();
        next.sequence = change.key.sequence + 1;
        self.book(change.record, edit.event, &next, edit.route, edit.slots)
            .await?;
        self.changed(change, Kind::Edit, "rebooked", &edit.fields());
        Ok(())
    }
}

/// A cancellation of an order whose booking is not settled yet.
fn unsettled(latest: &Booking) -> Failure {
    match latest.status {
        BookingStatus::Review => Failure::new(
            STAGE,
            ErrorClass::NeedsReview,
            format!(
                "the order was cancelled at the store while booking {} waits for review ({}): \
                 resolve it with `waybill bookings resolve`; if it was booked, cancel it in the \
                 courier's portal",
                latest.key,
                latest.reason.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        _ => Failure::new(
            STAGE,
            ErrorClass::Retryable,
            format!(
                "the order was cancelled at the store while booking {} is being sent; the \
                 cancellation waits for its outcome",
                latest.key
            ),
        ),
    }
}
