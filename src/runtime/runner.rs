//! The pipeline runner: consume → stages → book → produce → commit.
//!
//! Messages with the same key are processed in order; different keys proceed
//! concurrently up to the pipeline's `max_in_flight`. A key waiting to retry
//! gives its in-flight slot back. The committed offset is the lowest one not
//! yet finished, so a crash redelivers everything unfinished and nothing
//! finished is lost (DESIGN §8).

use super::feed;
use super::progress::Progress;
use crate::bus::dead_letter::{self, DeadLetterContext};
use crate::bus::{Bus, BusError};
use crate::clock::{now_rfc3339, now_timestamp, timestamp};
use crate::config::{Config, Pipeline};
use crate::model::{
    BookingKey, ErrorClass, Failure, Message, Record, SCHEMA_VERSION, Shipment, Status, Via, header,
};
use crate::sinks::book::{Booked, Booker, Slots};
use crate::sinks::notify::{Notified, Notifier};
use crate::sinks::write_back::WriteBacker;
use crate::sources::json::{self, JsonError};
use crate::stages::{self, Event, Plan};
use crate::store::shipments::NewShipment;
use crate::store::{ShipmentStore, StoreError};
use crate::telemetry::events::{
    DeadLettered, RetryScheduled, ShipmentBooked, StageProcessed, StatusEventRecorded,
};
use crate::telemetry::{Metrics, PipelineLabels};
use backon::BackoffBuilder;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

/// A bus that may take the write later (unavailable, or shutting down,
/// when the retry is abandoned and the message redelivered) is retried; one
/// that refused this message for good (too large, invalid) dead-letters it.
fn bus_failure(stage: &'static str, e: BusError) -> Failure {
    let class = if e.is_transient() || matches!(e, BusError::Closed) {
        ErrorClass::Retryable
    } else {
        ErrorClass::Permanent
    };
    Failure::new(stage, class, e.to_string())
}

/// How a message ended.
enum Handled {
    /// Finished (done, skipped or dead-lettered): its offset may be committed.
    Done,
    /// Left unfinished at shutdown: it is redelivered on the next start.
    Abandoned,
}

/// Runs one pipeline.
pub struct Runner {
    pub pipeline: Arc<Pipeline>,
    pub config: Arc<Config>,
    pub bus: Arc<dyn Bus>,
    pub booker: Arc<Booker>,
    /// Where every booking starts its shipment.
    pub shipments: Arc<dyn ShipmentStore>,
    pub notifier: Arc<Notifier>,
    pub writer: Arc<WriteBacker>,
    pub metrics: Arc<Metrics>,
}

struct Completion {
    key: String,
    partition: i32,
    offset: i64,
    handled: Handled,
}

impl Runner {
    /// Runs until `shutdown` turns true, then finishes in-flight work for up
    /// to `grace` and commits what finished.
    pub async fn run(
        self: Arc<Self>,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(), BusError> {
        let pipeline = self.pipeline.clone();
        let consumer = self
            .bus
            .subscribe(&pipeline.input, &pipeline.group())
            .await?;
        let (records_tx, records_rx) = mpsc::channel::<Record>(pipeline.max_in_flight.max(64));
        let (commit_tx, commit_rx) = mpsc::unbounded_channel::<(i32, i64)>();
        let feed = feed::spawn(consumer, records_tx, commit_rx, shutdown.clone());
        let slots = Arc::new(Slots {
            permits: Semaphore::new(pipeline.max_in_flight.max(1)),
            gauge: self.metrics.in_flight.get_or_create_owned(&PipelineLabels {
                pipeline: pipeline.name.clone(),
            }),
        });
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
        let dispatch = Dispatch {
            runner: self,
            slots,
            done: done_tx,
            shutdown: shutdown.clone(),
            queues: HashMap::new(),
            progress: Progress::default(),
            commits: commit_tx,
            pending: 0,
            stopping: false,
        };
        dispatch.drive(records_rx, done_rx, shutdown, grace).await;
        if let Err(e) = feed.await {
            tracing::error!(error = %e, "consumer task failed");
        }
        Ok(())
    }

    /// Processes one message with retries, ending in done or a dead letter.
    async fn handle(
        &self,
        record: &Record,
        slots: &Slots,
        mut shutdown: watch::Receiver<bool>,
    ) -> Handled {
        let retry = &self.pipeline.retry;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(retry.initial)
            .with_max_delay(retry.max_delay)
            .with_max_times(retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        let started = Instant::now();
        let mut first_failed_at = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match self.attempt(record, slots).await {
                Ok(()) => return Handled::Done,
                Err(failure) => failure,
            };
            let first_failed_at = first_failed_at.get_or_insert_with(now_rfc3339);
            let delay = (failure.class == ErrorClass::Retryable
                && started.elapsed() < retry.max_elapsed)
                .then(|| backoff.next())
                .flatten();
            let Some(delay) = delay else {
                let context = DeadLetterContext {
                    pipeline: self.pipeline.name.clone(),
                    attempts,
                    first_failed_at: first_failed_at.clone(),
                    last_failed_at: now_rfc3339(),
                };
                return self
                    .dead_letter(record, &failure, &context, &mut shutdown)
                    .await;
            };
            let delay = self.retry_delay(record, &failure, attempts, delay);
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = shutdown.wait_for(|stop| *stop) => return Handled::Abandoned,
            }
        }
    }

    /// The wait before the next attempt: the backoff's, or longer when the
    /// far end asked (up to `max_delay`).
    fn retry_delay(
        &self,
        record: &Record,
        failure: &Failure,
        attempt: u32,
        backoff: Duration,
    ) -> Duration {
        let pipeline = &self.pipeline;
        let delay = match failure.retry_after {
            Some(asked) => asked.min(pipeline.retry.max_delay).max(backoff),
            None => backoff,
        };
        RetryScheduled {
            pipeline: &pipeline.name,
            stage: failure.stage,
            class: failure.class,
            key: &record.message.key,
            attempt,
            delay,
            message: &failure.message,
        }
        .emit(&self.metrics);
        delay
    }

    /// Writes a dead letter, retrying until the bus takes it: a message is
    /// only finished once its dead letter is durable.
    async fn dead_letter(
        &self,
        record: &Record,
        failure: &Failure,
        context: &DeadLetterContext,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Handled {
        let pipeline = &self.pipeline;
        let message = dead_letter::envelope(record, failure, context);
        loop {
            match self
                .bus
                .publish(&pipeline.dead_letter, message.clone())
                .await
            {
                Ok(_) => {
                    DeadLettered {
                        pipeline: &pipeline.name,
                        stage: failure.stage,
                        class: failure.class,
                        key: &record.message.key,
                        topic: &pipeline.dead_letter,
                        message: &failure.message,
                    }
                    .emit(&self.metrics);
                    self.processed(failure.stage, "dead_lettered");
                    return Handled::Done;
                }
                Err(e) => {
                    tracing::error!(pipeline = %pipeline.name, error = %e, "cannot write dead letter; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return Handled::Abandoned,
                    }
                }
            }
        }
    }

    pub(super) fn processed(&self, stage: &str, outcome: &str) {
        StageProcessed {
            pipeline: &self.pipeline.name,
            stage,
            outcome,
        }
        .emit(&self.metrics);
    }

    /// One attempt at a message. An in-flight slot is held only while a
    /// courier request is out: that is what `max_in_flight` bounds. What
    /// the headers settle is settled before the body is decoded: another
    /// account's message, unreadable or not, is no concern of this pipeline.
    async fn attempt(&self, record: &Record, slots: &Slots) -> Result<(), Failure> {
        let event = Event::from_headers(&record.message.headers);
        let mut body = None;
        let plan = match stages::screen(&self.pipeline, &self.config.accounts, &event)? {
            Some(skip) => skip,
            None => {
                let order = decode(&record.message.payload)?;
                let order = body.insert(order).clone();
                stages::plan(&self.pipeline, &self.config.accounts, &event, order).outcome?
            }
        };
        match plan {
            Plan::Skip { stage, reason } => {
                tracing::debug!(pipeline = %self.pipeline.name, key = %record.message.key, reason, "skipped");
                self.processed(stage, "skipped");
                Ok(())
            }
            Plan::Emit { shipment } => {
                if let Some(topic) = &self.pipeline.output {
                    let payload = json!({ "shipment": shipment });
                    self.publish_output(topic, record, &payload).await?;
                }
                self.processed("output", "ok");
                Ok(())
            }
            Plan::Book { shipment, route } => {
                self.book_or_change(record, &event, shipment, &route, slots)
                    .await
            }
            Plan::Notify { change } => {
                let step = self.pipeline.notify().ok_or_else(|| {
                    Failure::permanent("notify", "the pipeline has no `notify` step")
                })?;
                let notified = self
                    .notifier
                    .notify(&self.pipeline, step, &event, &change, slots)
                    .await?;
                let outcome = match notified {
                    Notified::Sent => "ok",
                    Notified::AlreadySent => "duplicate",
                };
                self.processed("notify", outcome);
                Ok(())
            }
            Plan::WriteBack => {
                let payload = body.unwrap_or_default();
                let written = self
                    .writer
                    .write_back(&event.account, &payload, slots)
                    .await?;
                self.processed("write_back", written.outcome());
                Ok(())
            }
        }
    }

    /// Books the shipment and publishes the booking once: a replay of a key
    /// booked by another message publishes nothing.
    pub(super) async fn book(
        &self,
        record: &Record,
        event: &Event,
        shipment: &Shipment,
        route: &str,
        slots: &Slots,
    ) -> Result<(), Failure> {
        let message_id = record
            .message
            .headers
            .get(header::ID)
            .cloned()
            .unwrap_or_default();
        let booked = self
            .booker
            .book(
                &event.source,
                &event.account,
                shipment,
                route,
                &message_id,
                slots,
            )
            .await?;
        if !booked.replayed {
            ShipmentBooked {
                pipeline: &self.pipeline.name,
                key: &record.message.key,
                courier: &booked.result.courier,
                tracking_number: &booked.result.tracking_number,
                since_received: since_received(record),
                since_paid: since_paid(shipment),
            }
            .emit(&self.metrics);
        }
        if !self
            .publishes(event, shipment, &booked, &message_id)
            .await?
        {
            self.processed("book", "replayed");
            return Ok(());
        }
        self.start_shipment(record, event, shipment, route, &booked)
            .await?;
        if let Some(topic) = &self.pipeline.output {
            let payload = json!({
                "source": event.source,
                "account": event.account,
                "order_id": shipment.order_id,
                "reference": shipment.reference,
                "courier_account": route,
                "courier": booked.result.courier,
                "tracking_number": booked.result.tracking_number,
                "booking": booked.result,
                "shipment": shipment,
            });
            self.publish_output(topic, record, &payload).await?;
        }
        self.processed("book", if booked.replayed { "replayed" } else { "ok" });
        Ok(())
    }

    /// Records the booking's shipment, `booked`, before the booking is
    /// announced: a courier may call back as soon as it has answered, and its
    /// first event must find the shipment. Idempotent, so a redelivery after a
    /// crash here records it once.
    async fn start_shipment(
        &self,
        record: &Record,
        event: &Event,
        shipment: &Shipment,
        route: &str,
        booked: &Booked,
    ) -> Result<(), Failure> {
        let key = BookingKey {
            source: event.source.clone(),
            account: event.account.clone(),
            order_id: shipment.order_id.clone(),
            sequence: shipment.sequence,
        };
        let next_poll_at = self.config.polled_accounts.get(route).map(|sync| {
            timestamp(crate::clock::later(
                time::OffsetDateTime::now_utc(),
                sync.interval,
            ))
        });
        let cod = (shipment.cod_amount > rust_decimal::Decimal::ZERO)
            .then(|| shipment.cod_amount.to_string());
        let new = NewShipment {
            event_id: format!("booking:{key}"),
            key,
            order_key: record.message.key.clone(),
            reference: Some(shipment.reference.clone()).filter(|r| !r.is_empty()),
            courier: booked.result.courier.clone(),
            courier_account: route.to_string(),
            tracking_number: booked.result.tracking_number.clone(),
            booked_at: now_timestamp(),
            next_poll_at,
            cod_currency: cod.as_ref().and(shipment.currency.clone()),
            cod_amount: cod,
        };
        let failure = |e: StoreError| {
            let class = if e.is_transient() {
                ErrorClass::Retryable
            } else {
                ErrorClass::Permanent
            };
            Failure::new("track", class, format!("recording the shipment: {e}"))
        };
        let created = self
            .shipments
            .create_shipment(&new)
            .await
            .map_err(failure)?;
        if created {
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

    /// Whether a booking is this message's to record and publish: a new one
    /// is; a replay is only when this message made the booking (a redelivery
    /// after a crash between booking and publishing), never for a later event
    /// of the order.
    async fn publishes(
        &self,
        event: &Event,
        shipment: &Shipment,
        booked: &Booked,
        message_id: &str,
    ) -> Result<bool, Failure> {
        if !booked.replayed {
            return Ok(true);
        }
        let key = BookingKey {
            source: event.source.clone(),
            account: event.account.clone(),
            order_id: shipment.order_id.clone(),
            sequence: shipment.sequence,
        };
        let booking =
            self.booker.store.booking(&key).await.map_err(|e| {
                Failure::new("output", ErrorClass::Retryable, format!("store: {e}"))
            })?;
        Ok(booking.is_some_and(|b| b.message_id.as_deref() == Some(message_id)))
    }

    async fn publish_output(
        &self,
        topic: &str,
        record: &Record,
        payload: &serde_json::Value,
    ) -> Result<(), Failure> {
        let mut headers = record.message.headers.clone();
        headers.insert(header::ID.into(), uuid::Uuid::new_v4().to_string());
        headers.insert(header::SCHEMA.into(), SCHEMA_VERSION.into());
        let message = Message {
            key: record.message.key.clone(),
            headers,
            payload: serde_json::to_vec(payload).unwrap_or_default(),
        };
        self.bus
            .publish(topic, message)
            .await
            .map(|_| ())
            .map_err(|e| bus_failure("output", e))
    }
}

/// Hands records to per-key queues, runs one message per key at a time, and
/// turns completions into commits.
struct Dispatch {
    runner: Arc<Runner>,
    slots: Arc<Slots>,
    done: mpsc::UnboundedSender<Completion>,
    shutdown: watch::Receiver<bool>,
    /// Keys with a message running, and what waits behind it.
    queues: HashMap<String, VecDeque<Record>>,
    progress: Progress,
    commits: mpsc::UnboundedSender<(i32, i64)>,
    /// Messages taken and not yet completed, running or queued.
    pending: usize,
    stopping: bool,
}

impl Dispatch {
    /// Takes records until `shutdown`, then waits up to `grace` for what
    /// is running, and commits what finished.
    async fn drive(
        mut self,
        mut records: mpsc::Receiver<Record>,
        mut done: mpsc::UnboundedReceiver<Completion>,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let name = self.runner.pipeline.name.clone();
        let capacity = (self.runner.pipeline.max_in_flight * 4).max(1024);
        let mut deadline: Option<tokio::time::Instant> = None;
        while !(self.stopping && self.pending == 0) {
            tokio::select! {
                biased;
                changed = shutdown.changed(), if !self.stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.stopping = true;
                        deadline = Some(tokio::time::Instant::now() + grace);
                        tracing::info!(pipeline = %name, pending = self.pending, "stopping: finishing in-flight work");
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    tracing::warn!(pipeline = %name, pending = self.pending, "grace period over: abandoning unfinished work; it is redelivered on the next start");
                    break;
                }
                Some(completion) = done.recv() => self.completed(completion),
                Some(record) = records.recv(), if !self.stopping && self.pending < capacity => {
                    self.received(record);
                }
            }
        }
        drop(records);
        self.commit();
    }

    fn received(&mut self, record: Record) {
        self.pending += 1;
        self.progress.received(record.partition, record.offset);
        match self.queues.get_mut(&record.message.key) {
            Some(queue) => queue.push_back(record),
            None => {
                self.queues
                    .insert(record.message.key.clone(), VecDeque::new());
                self.start(record);
            }
        }
    }

    fn completed(&mut self, done: Completion) {
        self.pending -= 1;
        let finished = matches!(done.handled, Handled::Done);
        if finished {
            self.progress.finished(done.partition, done.offset);
        }
        if self.stopping || !finished {
            // The key's queued records stay unprocessed and uncommitted.
            if let Some(rest) = self.queues.remove(&done.key) {
                self.pending -= rest.len();
            }
        } else if let Some(next) = self.queues.get_mut(&done.key).and_then(VecDeque::pop_front) {
            self.start(next);
        } else {
            self.queues.remove(&done.key);
        }
        self.commit();
    }

    fn start(&self, record: Record) {
        let runner = self.runner.clone();
        let slots = self.slots.clone();
        let done = self.done.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let handled = runner.handle(&record, &slots, shutdown).await;
            let _ = done.send(Completion {
                key: record.message.key.clone(),
                partition: record.partition,
                offset: record.offset,
                handled,
            });
        });
    }

    fn commit(&mut self) {
        for commit in self.progress.due() {
            let _ = self.commits.send(commit);
        }
    }
}

/// The message body as JSON, read as ingest reads it. A body naming a
/// member twice could be booked under another order id than its key's, so
/// it is refused for good, whichever way it reached the bus.
fn decode(payload: &[u8]) -> Result<serde_json::Value, Failure> {
    json::parse(payload).map_err(|e| {
        let why = match e {
            JsonError::DuplicateKey { .. } => format!("message body refused: {e}"),
            JsonError::Invalid(e) => format!("message body is not JSON: {e}"),
        };
        Failure::permanent("decode", why)
    })
}

fn since_received(record: &Record) -> Option<Duration> {
    since(record.message.headers.get(header::RECEIVED_AT)?)
}

/// Since the order was paid or confirmed, from the shipment's `paid_at`.
fn since_paid(shipment: &Shipment) -> Option<Duration> {
    since(shipment.paid_at.as_deref()?)
}

/// Time elapsed since an RFC 3339 time; `None` when it cannot be read or
/// lies in the future (a store's clock ahead of ours).
fn since(at: &str) -> Option<Duration> {
    let at = time::OffsetDateTime::parse(at.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let elapsed = time::OffsetDateTime::now_utc() - at;
    elapsed.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Cause;

    #[test]
    fn only_a_bus_that_refused_the_message_for_good_makes_it_permanent() {
        let unavailable = BusError::Unavailable(Cause::Text("broker down".into()));
        let refused = BusError::invalid("record too large");
        assert_eq!(
            bus_failure("output", unavailable).class,
            ErrorClass::Retryable
        );
        assert_eq!(
            bus_failure("output", BusError::Closed).class,
            ErrorClass::Retryable
        );
        assert_eq!(bus_failure("output", refused).class, ErrorClass::Permanent);
    }

    #[test]
    fn paid_time_is_observed_only_when_it_reads_as_a_past_time() {
        let an_hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let written = an_hour_ago
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let took = since(&written).unwrap();
        assert!(took >= Duration::from_secs(3599), "{took:?}");
        assert_eq!(since("2026-13-45 25:00"), None);
        assert_eq!(since(""), None);
        assert_eq!(since("9999-01-01T00:00:00Z"), None);
    }

    #[test]
    fn a_body_naming_a_member_twice_is_a_permanent_decode_failure_saying_why() {
        for body in [
            &br#"{"id":9100013,"name":"x","id":9100014}"#[..],
            br#"{"id":1,"shipping_address":{"city":"a","city":"b"}}"#,
        ] {
            let failure = decode(body).unwrap_err();
            assert_eq!(
                (failure.stage, failure.class),
                ("decode", ErrorClass::Permanent)
            );
            assert!(
                failure.message.contains("appears twice"),
                "{}",
                failure.message
            );
        }
        let failure = decode(b"{\"id\": 1, not json").unwrap_err();
        assert!(failure.message.contains("not JSON"), "{}", failure.message);
        assert_eq!(decode(br#"{"id":1}"#).unwrap()["id"], 1);
    }
}
