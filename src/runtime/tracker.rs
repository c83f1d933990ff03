//! The tracker: bookings become shipments, and courier status events
//! (callbacks and polls, on `tracking.<connector>`) are normalised by the
//! courier connector's status table and applied to them. Every applied
//! change goes out on `shipments.status`, keyed by the order's key.
//!
//! It reads every topic a booking pipeline publishes to and the tracking
//! topic of every courier connector an account uses, each in consumer group
//! `waybill.tracking.<topic>`, one record at a time (status events are a few
//! store statements; order within a parcel is the topic's key order).
//! A history row is unique per bus message, so a redelivered message is
//! recognised; a change recorded but not yet published (a crash between the
//! two) is published when its message comes again.
//!
//! ```yaml
//! statuses:                      # in a courier connector
//!   table: { "Delivered": delivered, "Attempt Made:*": delivery_failed }
//! ```

use crate::bus::dead_letter::{self, DeadLetterContext};
use crate::bus::{Bus, BusError};
use crate::clock::{now_rfc3339, now_timestamp, timestamp};
use crate::config::{Config, Step};
use crate::model::{
    BookingKey, ErrorClass, Failure, Message, Record, SCHEMA_VERSION, Status, TrackingEvent, Via,
    header, tracking,
};
use crate::store::shipments::{Applied, HistoryEntry, NewShipment, ShipmentRecord, StatusEvent};
use crate::store::{ShipmentStore, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::events::{DeadLettered, ShipmentDelivered, StatusEventRecorded};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

/// Where applied changes go.
pub const STATUS_TOPIC: &str = "shipments.status";

/// Where events the tracker cannot place go (`waybill dlq list`).
pub const DEAD_LETTER_TOPIC: &str = "dlq.tracking";

/// The name the tracker's dead letters carry as their pipeline.
pub const NAME: &str = "tracking";

/// How long a store or bus outage is waited out between tries.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// A booking pipeline's output.
    Bookings,
    /// A courier connector's status events.
    Events,
}

pub struct Tracker {
    pub config: Arc<Config>,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn ShipmentStore>,
    pub metrics: Arc<Metrics>,
}

/// Why one record could not be handled now.
enum Trouble {
    /// Try again later: the store or bus is unavailable.
    Later(String),
    /// It will never work: dead-letter it with this failure.
    Never(Failure),
}

impl From<StoreError> for Trouble {
    fn from(e: StoreError) -> Trouble {
        if e.is_transient() {
            Trouble::Later(format!("store: {e}"))
        } else {
            Trouble::Never(Failure::permanent("track", format!("store: {e}")))
        }
    }
}

impl From<BusError> for Trouble {
    fn from(e: BusError) -> Trouble {
        Trouble::Later(format!("bus: {e}"))
    }
}

impl Tracker {
    /// The topics read: booking outputs, then courier tracking topics.
    fn feeds(&self) -> Vec<(String, Feed)> {
        let mut feeds: Vec<(String, Feed)> = Vec::new();
        for pipeline in &self.config.pipelines {
            let books = pipeline.steps.iter().any(|s| matches!(s, Step::Book));
            if let (true, Some(output)) = (books, &pipeline.output)
                && !feeds.iter().any(|(t, _)| t == output)
            {
                feeds.push((output.clone(), Feed::Bookings));
            }
        }
        // Without a booking pipeline there are no shipments to move: courier
        // events wait on their topics until one is configured.
        if feeds.is_empty() {
            return feeds;
        }
        for account in self.config.accounts.values() {
            let courier = self
                .config
                .connectors
                .get(&account.connector)
                .is_some_and(|c| c.statuses.is_some());
            let topic = tracking::tracking_topic(&account.connector);
            if courier && !feeds.iter().any(|(t, _)| *t == topic) {
                feeds.push((topic, Feed::Events));
            }
        }
        feeds
    }

    /// Reads every feed until `stop` turns true.
    pub fn spawn(self: Arc<Self>, stop: &watch::Receiver<bool>) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for (topic, feed) in self.feeds() {
            let tracker = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = tracker.read(&topic, feed, stop).await {
                    tracing::error!(topic = %topic, error = %e, "tracker stopped reading");
                }
            });
        }
        tasks
    }

    async fn read(
        &self,
        topic: &str,
        feed: Feed,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), BusError> {
        let group = format!("waybill.{NAME}.{topic}");
        let mut consumer = self.bus.subscribe(topic, &group).await?;
        loop {
            let batch = tokio::select! {
                batch = consumer.poll(256, Duration::from_millis(500)) => batch,
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "tracker cannot read; retrying");
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            let mut done: Vec<(i32, i64)> = Vec::new();
            for record in &batch {
                if !self.settle(record, feed, &mut stop).await {
                    break;
                }
                match done.iter_mut().find(|(p, _)| *p == record.partition) {
                    Some(entry) => entry.1 = record.offset + 1,
                    None => done.push((record.partition, record.offset + 1)),
                }
            }
            for (partition, next) in done {
                if let Err(e) = consumer.commit(partition, next).await {
                    tracing::warn!(topic, error = %e, "tracker cannot commit; the records come again");
                }
            }
            if *stop.borrow() {
                return Ok(());
            }
        }
    }

    /// Handles one record until it is done or dead-lettered; false when
    /// stopping first.
    async fn settle(&self, record: &Record, feed: Feed, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            let handled = match feed {
                Feed::Bookings => self.booking(record).await,
                Feed::Events => self.event(record).await,
            };
            match handled {
                Ok(()) => return true,
                Err(Trouble::Never(failure)) => {
                    if self.dead_letter(record, &failure, stop).await {
                        return true;
                    }
                    return false;
                }
                Err(Trouble::Later(why)) => {
                    tracing::warn!(topic = %record.topic, key = %record.message.key, error = %why, "tracker retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_EVERY) => {}
                        _ = stop.wait_for(|stop| *stop) => return false,
                    }
                }
            }
        }
    }

    /// A booking message: its shipment, `booked`.
    async fn booking(&self, record: &Record) -> Result<(), Trouble> {
        let Some(new) = new_shipment(record, &self.config) else {
            // Not a booking (an `Emit` output, say): nothing to track.
            return Ok(());
        };
        if self.store.create_shipment(&new).await? {
            StatusEventRecorded {
                courier: &new.courier,
                account: &new.courier_account,
                tracking_number: &new.tracking_number,
                via: Via::Booking.as_str(),
                outcome: "applied",
                raw: "",
                status: Status::Booked.as_str(),
            }
            .emit(&self.metrics);
        }
        Ok(())
    }

    /// A courier status event: normalised, applied, published.
    async fn event(&self, record: &Record) -> Result<(), Trouble> {
        let raw: TrackingEvent = serde_json::from_slice(&record.message.payload).map_err(|e| {
            Trouble::Never(Failure::permanent(
                "decode",
                format!("not a tracking event: {e}"),
            ))
        })?;
        let event = self.normalise(record, &raw)?;
        let applied = self.store.apply_status(&event).await?;
        let (entry, shipment, new) = match applied {
            Applied::NotFound => {
                self.count(&raw, "not_found", &event);
                return Err(Trouble::Never(Failure::new(
                    "track",
                    ErrorClass::NeedsReview,
                    format!(
                        "no shipment of courier account `{}` has tracking number `{}`: check that \
                         it was booked through waybill, then replay this dead letter",
                        raw.account, raw.tracking_number
                    ),
                )));
            }
            Applied::Recorded {
                entry,
                shipment,
                new,
            } => (entry, shipment, new),
        };
        if new {
            self.count(&raw, entry.outcome.as_str(), &event);
            if entry.outcome == crate::store::shipments::Outcome::Unknown {
                self.store
                    .record_unknown(&raw.connector, &raw.raw_status, &now_timestamp())
                    .await?;
            }
        }
        if publishes(&entry) {
            self.publish(record, &shipment, &entry).await?;
            self.store.mark_published(entry.id).await?;
            if new && shipment.status == Status::Delivered {
                self.delivered(&shipment);
            }
        }
        Ok(())
    }

    /// The event as the store applies it: the raw string through the
    /// connector's table, the times as store timestamps.
    fn normalise(&self, record: &Record, raw: &TrackingEvent) -> Result<StatusEvent, Trouble> {
        let connector = self.config.connectors.get(&raw.connector).ok_or_else(|| {
            Trouble::Never(Failure::permanent(
                "track",
                format!("no courier connector `{}` in this config", raw.connector),
            ))
        })?;
        let found = connector.status_of(&raw.raw_status);
        // A table may give unmatched strings another status than `unknown`;
        // they still move nothing, and are counted so the table gets fixed.
        let status = if found.is_unmatched() {
            Status::Unknown
        } else {
            found.status
        };
        let event_time = raw
            .event_time
            .as_deref()
            .map(|at| store_time(at, "event_time"))
            .transpose()?;
        Ok(StatusEvent {
            event_id: event_id(record),
            courier_account: raw.account.clone(),
            tracking_number: raw.tracking_number.clone(),
            raw: raw.raw_status.clone(),
            code: raw.code.clone(),
            status,
            sub_status: found.sub_status,
            reason: raw.reason.clone().or(found.reason),
            event_time,
            received_at: store_time(&raw.received_at, "received_at")?,
            via: raw.via,
        })
    }

    fn count(&self, raw: &TrackingEvent, outcome: &str, event: &StatusEvent) {
        StatusEventRecorded {
            courier: &raw.connector,
            account: &raw.account,
            tracking_number: &raw.tracking_number,
            via: raw.via.as_str(),
            outcome,
            raw: &raw.raw_status,
            status: event.status.as_str(),
        }
        .emit(&self.metrics);
    }

    fn delivered(&self, shipment: &ShipmentRecord) {
        let took = shipment
            .last_event_at
            .as_deref()
            .and_then(|at| seconds_between(&shipment.booked_at, at));
        if let Some(took) = took {
            ShipmentDelivered {
                courier: &shipment.courier,
                source: &shipment.key.source,
                took,
            }
            .emit(&self.metrics);
        }
    }

    /// The change on `shipments.status`, keyed by the order.
    async fn publish(
        &self,
        record: &Record,
        shipment: &ShipmentRecord,
        entry: &HistoryEntry,
    ) -> Result<(), Trouble> {
        let payload = status_change(shipment, entry);
        let mut headers = crate::model::Headers::new();
        headers.insert(header::ID.into(), format!("status-{}", event_id(record)));
        headers.insert(header::SCHEMA.into(), SCHEMA_VERSION.into());
        headers.insert(header::SOURCE.into(), shipment.key.source.clone());
        headers.insert(header::ACCOUNT.into(), shipment.key.account.clone());
        headers.insert(header::RECEIVED_AT.into(), now_rfc3339());
        let message = Message {
            key: shipment.order_key.clone(),
            headers,
            payload: serde_json::to_vec(&payload).unwrap_or_default(),
        };
        self.bus.publish(STATUS_TOPIC, message).await?;
        Ok(())
    }

    /// Writes a dead letter until the bus takes it; false when stopping first.
    async fn dead_letter(
        &self,
        record: &Record,
        failure: &Failure,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let now = now_rfc3339();
        let context = DeadLetterContext {
            pipeline: NAME.to_string(),
            attempts: 1,
            first_failed_at: now.clone(),
            last_failed_at: now,
        };
        let message = dead_letter::envelope(record, failure, &context);
        loop {
            match self.bus.publish(DEAD_LETTER_TOPIC, message.clone()).await {
                Ok(_) => {
                    DeadLettered {
                        pipeline: NAME,
                        stage: failure.stage,
                        class: failure.class,
                        key: &record.message.key,
                        topic: DEAD_LETTER_TOPIC,
                        message: &failure.message,
                    }
                    .emit(&self.metrics);
                    return true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write a tracking dead letter; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_EVERY) => {}
                        _ = stop.wait_for(|stop| *stop) => return false,
                    }
                }
            }
        }
    }
}

/// Whether a history row is a change still to announce: applied, with a
/// status other than the one before (a refresh at the same status is not a
/// change), not yet published.
fn publishes(entry: &HistoryEntry) -> bool {
    entry.outcome == crate::store::shipments::Outcome::Applied
        && entry.published_at.is_none()
        && entry
            .previous
            .is_some_and(|previous| previous != entry.status)
}

/// The message's id: its `waybill-id`, else its place in its topic (the
/// same on every redelivery).
fn event_id(record: &Record) -> String {
    record
        .message
        .headers
        .get(header::ID)
        .cloned()
        .unwrap_or_else(|| format!("{}:{}:{}", record.topic, record.partition, record.offset))
}

/// An RFC 3339 time as a fixed-width store timestamp, in UTC.
fn store_time(text: &str, field: &str) -> Result<String, Trouble> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| timestamp(t.to_offset(time::UtcOffset::UTC)))
        .map_err(|e| {
            Trouble::Never(Failure::permanent(
                "decode",
                format!("tracking event `{field}` is not an RFC 3339 time: {e}"),
            ))
        })
}

fn seconds_between(from: &str, to: &str) -> Option<Duration> {
    let from = OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let to = OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Duration::try_from(to - from).ok()
}

/// The canonical JSON of a status change.
pub fn status_change(shipment: &ShipmentRecord, entry: &HistoryEntry) -> Value {
    json!({
        "key": shipment.key.to_string(),
        "order_key": shipment.order_key,
        "reference": shipment.reference,
        "source": shipment.key.source,
        "account": shipment.key.account,
        "order_id": shipment.key.order_id,
        "courier": shipment.courier,
        "courier_account": shipment.courier_account,
        "tracking_number": shipment.tracking_number,
        "status": entry.status,
        "sub_status": entry.sub_status,
        "raw": entry.raw,
        "reason": entry.reason,
        "event_time": entry.event_time,
        "previous_status": entry.previous,
        "via": entry.via,
    })
}

/// The shipment a booking message announces, or `None` when the message
/// is not a booking.
fn new_shipment(record: &Record, config: &Config) -> Option<NewShipment> {
    let payload: Value = serde_json::from_slice(&record.message.payload).ok()?;
    let text = |value: &Value| value.as_str().map(str::to_string);
    let tracking_number = text(&payload["tracking_number"])?;
    let courier = text(&payload["courier"])?;
    let courier_account = text(&payload["courier_account"])?;
    let shipment = &payload["shipment"];
    let key = BookingKey {
        source: text(&payload["source"])?,
        account: text(&payload["account"])?,
        order_id: text(&payload["order_id"])?,
        sequence: shipment["sequence"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
    };
    let booked_at = now_timestamp();
    let next_poll_at = config.polled_accounts.get(&courier_account).map(|sync| {
        timestamp(crate::clock::later(
            OffsetDateTime::now_utc(),
            sync.interval,
        ))
    });
    // Kept as the shipment wrote it (decimal text), never through a float.
    let cod = match &shipment["cod_amount"] {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
    .filter(|amount| {
        crate::model::CodState::initial(Some(amount)) == crate::model::CodState::Pending
    });
    Some(NewShipment {
        order_key: record.message.key.clone(),
        reference: text(&payload["reference"]),
        courier,
        courier_account,
        tracking_number,
        booked_at,
        next_poll_at,
        cod_currency: cod.as_ref().and_then(|_| text(&shipment["currency"])),
        cod_amount: cod,
        event_id: event_id(record),
        key,
    })
}
