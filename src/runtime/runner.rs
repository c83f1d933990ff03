//! The pipeline runner: consume → stages → book → produce → commit.
//!
//! Messages with the same key are processed in order; different keys proceed
//! concurrently up to the pipeline's `max_in_flight`. A key waiting to retry
//! gives its in-flight slot back. The committed offset is the lowest one not
//! yet finished, so a crash redelivers everything unfinished and nothing
//! finished is lost (DESIGN §8).

use crate::bus::dead_letter::{self, Failure};
use crate::bus::{Bus, BusError};
use crate::clock::now_rfc3339;
use crate::config::{Config, Pipeline};
use crate::model::{ErrorClass, Message, Record, SCHEMA_VERSION, header};
use crate::sinks::book::{Booker, Slots};
use crate::stages::{self, Event, Plan, StageError};
use crate::telemetry::events::{DeadLettered, RetryScheduled, ShipmentBooked, StageProcessed};
use crate::telemetry::{Metrics, PipelineLabels};
use backon::BackoffBuilder;
use serde_json::json;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

/// How long a poll waits for new records before checking for commits.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How long the runner may be unable to take records before the consumer
/// pauses its partitions instead of just not being polled. A pause drops
/// what was fetched ahead, so a brief saturation is left to the short
/// sleeps; a long one (the courier down and every slot retrying) must not
/// keep the consumer from polling (DESIGN §8).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// A failed attempt at one message.
#[derive(Debug, Clone)]
struct AttemptError {
    stage: &'static str,
    class: ErrorClass,
    message: String,
    retry_after: Option<Duration>,
    request: Option<serde_json::Value>,
    response: Option<String>,
}

impl From<StageError> for AttemptError {
    fn from(e: StageError) -> Self {
        AttemptError {
            stage: e.stage,
            class: e.class,
            message: e.message,
            retry_after: None,
            request: None,
            response: None,
        }
    }
}

impl From<crate::model::Failure> for AttemptError {
    fn from(e: crate::model::Failure) -> Self {
        let exchange = e.exchange.unwrap_or_default();
        AttemptError {
            stage: e.stage,
            class: e.class,
            message: e.message,
            retry_after: e.retry_after,
            request: exchange.request,
            response: exchange.response,
        }
    }
}

fn bus_error(stage: &'static str, e: BusError) -> AttemptError {
    AttemptError {
        stage,
        class: ErrorClass::Retryable,
        message: e.to_string(),
        retry_after: None,
        request: None,
        response: None,
    }
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
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(), BusError> {
        let pipeline = self.pipeline.clone();
        let mut consumer = self
            .bus
            .subscribe(&pipeline.input, &pipeline.group())
            .await?;
        let capacity = (pipeline.max_in_flight * 4).max(1024);
        let (records_tx, mut records_rx) = mpsc::channel::<Record>(pipeline.max_in_flight.max(64));
        let (commit_tx, mut commit_rx) = mpsc::unbounded_channel::<(i32, i64)>();

        // The consumer lives in its own task so that a poll is never cancelled
        // half-way; commits reach it through a channel.
        let mut consumer_shutdown = shutdown.clone();
        let consumer_task = tokio::spawn(async move {
            let apply = |commits: &mut mpsc::UnboundedReceiver<(i32, i64)>| {
                let mut latest: HashMap<i32, i64> = HashMap::new();
                while let Ok((partition, offset)) = commits.try_recv() {
                    latest.insert(partition, offset);
                }
                latest
            };
            // Records polled but not yet taken by the runner, in order.
            let mut held: VecDeque<Record> = VecDeque::new();
            let mut saturated_since: Option<tokio::time::Instant> = None;
            let mut paused = false;
            loop {
                for (partition, offset) in apply(&mut commit_rx) {
                    if let Err(e) = consumer.commit(partition, offset).await {
                        tracing::warn!(error = %e, "offset commit failed; retried with the next commit");
                    }
                }
                if *consumer_shutdown.borrow_and_update() {
                    break;
                }
                while let Some(record) = held.pop_front() {
                    match records_tx.try_send(record) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(record)) => {
                            held.push_front(record);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => held.clear(),
                    }
                }
                let saturated = !held.is_empty() || records_tx.capacity() == 0;
                if !saturated {
                    saturated_since = None;
                    if paused {
                        match consumer.resume() {
                            Ok(()) => paused = false,
                            // Polled while still paused, it returns nothing;
                            // resuming is tried again on the next turn.
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot resume the consumer; retrying")
                            }
                        }
                    }
                } else {
                    let since = *saturated_since.get_or_insert_with(tokio::time::Instant::now);
                    if !paused && since.elapsed() >= PAUSE_AFTER {
                        paused = consumer.pause().unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "cannot pause the consumer; it stops polling instead");
                            false
                        });
                        saturated_since = None;
                    }
                    if !paused {
                        // Not polling is what holds records back meanwhile.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
                // While paused, polling goes on to serve rebalances and keep
                // this member in its group (Kafka drops a member that does
                // not poll within `max.poll.interval.ms`); what it still
                // returns was fetched before the pause and is held.
                match consumer.poll(records_tx.capacity().max(1), POLL_WAIT).await {
                    Ok(batch) => held.extend(batch),
                    Err(e) => {
                        tracing::warn!(error = %e, "poll failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            // Final commits sent by the runner after it stopped.
            while let Some((partition, offset)) = commit_rx.recv().await {
                let mut latest = HashMap::from([(partition, offset)]);
                latest.extend(apply(&mut commit_rx));
                for (partition, offset) in latest {
                    if let Err(e) = consumer.commit(partition, offset).await {
                        tracing::warn!(error = %e, "final offset commit failed");
                    }
                }
            }
        });

        let slots = Arc::new(Slots {
            permits: Semaphore::new(pipeline.max_in_flight.max(1)),
            gauge: self.metrics.in_flight.get_or_create_owned(&PipelineLabels {
                pipeline: pipeline.name.clone(),
            }),
        });
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        let mut queues: HashMap<String, VecDeque<Record>> = HashMap::new();
        let mut outstanding: HashMap<i32, BTreeSet<i64>> = HashMap::new();
        let mut polled_up_to: HashMap<i32, i64> = HashMap::new();
        let mut committed: HashMap<i32, i64> = HashMap::new();
        let mut pending = 0usize;

        let spawn = |record: Record, shutdown: watch::Receiver<bool>| {
            let runner = self.clone();
            let slots = slots.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let handled = runner.handle(&record, &slots, shutdown).await;
                let _ = done.send(Completion {
                    key: record.message.key.clone(),
                    partition: record.partition,
                    offset: record.offset,
                    handled,
                });
            });
        };

        let mut stopping = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if stopping && pending == 0 {
                break;
            }
            tokio::select! {
                biased;
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        deadline = Some(tokio::time::Instant::now() + grace);
                        tracing::info!(pipeline = %pipeline.name, pending, "stopping: finishing in-flight work");
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    tracing::warn!(pipeline = %pipeline.name, pending, "grace period over: abandoning unfinished work; it is redelivered on the next start");
                    break;
                }
                Some(done) = done_rx.recv() => {
                    pending -= 1;
                    let finished = matches!(done.handled, Handled::Done);
                    if finished
                        && let Some(set) = outstanding.get_mut(&done.partition) {
                            set.remove(&done.offset);
                        }
                    if stopping || !finished {
                        // The key's queued records stay unprocessed and uncommitted.
                        if let Some(rest) = queues.remove(&done.key) {
                            pending -= rest.len();
                        }
                    } else if let Some(next) = queues.get_mut(&done.key).and_then(VecDeque::pop_front) {
                        spawn(next, shutdown.clone());
                    } else {
                        queues.remove(&done.key);
                    }
                    Self::commit_progress(&outstanding, &polled_up_to, &mut committed, &commit_tx);
                }
                Some(record) = records_rx.recv(), if !stopping && pending < capacity => {
                    pending += 1;
                    outstanding.entry(record.partition).or_default().insert(record.offset);
                    // The latest position, not the highest ever: after a rebalance a
                    // partition can come back at a lower offset, and nothing past
                    // what was received since may be committed.
                    polled_up_to.insert(record.partition, record.offset + 1);
                    match queues.get_mut(&record.message.key) {
                        Some(queue) => queue.push_back(record),
                        None => {
                            queues.insert(record.message.key.clone(), VecDeque::new());
                            spawn(record, shutdown.clone());
                        }
                    }
                }
            }
        }
        drop(records_rx);
        Self::commit_progress(&outstanding, &polled_up_to, &mut committed, &commit_tx);
        drop(commit_tx);
        if let Err(e) = consumer_task.await {
            tracing::error!(error = %e, "consumer task failed");
        }
        Ok(())
    }

    /// Commits, per partition, the lowest offset not yet finished: below the
    /// latest record received, everything not outstanding is done.
    fn commit_progress(
        outstanding: &HashMap<i32, BTreeSet<i64>>,
        polled_up_to: &HashMap<i32, i64>,
        committed: &mut HashMap<i32, i64>,
        commit_tx: &mpsc::UnboundedSender<(i32, i64)>,
    ) {
        for (&partition, &up_to) in polled_up_to {
            let next = outstanding
                .get(&partition)
                .and_then(|s| s.first().copied())
                .map_or(up_to, |first| first.min(up_to));
            // `!=`, not `>`: after a rebalance the position may be lower than
            // what this instance committed before; going back only redelivers.
            if committed.get(&partition) != Some(&next) {
                committed.insert(partition, next);
                let _ = commit_tx.send((partition, next));
            }
        }
    }

    /// Processes one message with retries, ending in done or a dead letter.
    async fn handle(
        &self,
        record: &Record,
        slots: &Slots,
        mut shutdown: watch::Receiver<bool>,
    ) -> Handled {
        let pipeline = &self.pipeline;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(pipeline.retry.initial)
            .with_max_delay(pipeline.retry.max_delay)
            .with_max_times(pipeline.retry.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        let started = Instant::now();
        let first_failed_at = std::sync::OnceLock::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(record, slots).await {
                Ok(()) => return Handled::Done,
                Err(error) => error,
            };
            let _ = first_failed_at.set(now_rfc3339());
            if error.class == ErrorClass::Retryable
                && started.elapsed() < pipeline.retry.max_elapsed
                && let Some(delay) = backoff.next()
            {
                let delay = match error.retry_after {
                    Some(asked) => asked.min(pipeline.retry.max_delay).max(delay),
                    None => delay,
                };
                RetryScheduled {
                    pipeline: &pipeline.name,
                    stage: error.stage,
                    class: error.class,
                    key: &record.message.key,
                    attempt: attempts,
                    delay,
                    message: &error.message,
                }
                .emit(&self.metrics);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return Handled::Abandoned,
                }
            }
            let failure = Failure {
                pipeline: pipeline.name.clone(),
                stage: error.stage.to_string(),
                class: error.class,
                message: error.message.clone(),
                attempts,
                first_failed_at: first_failed_at.get().cloned().unwrap_or_else(now_rfc3339),
                last_failed_at: now_rfc3339(),
                request: error.request.clone(),
                response: error.response.clone(),
            };
            return self.dead_letter(record, &failure, &mut shutdown).await;
        }
    }

    /// Writes a dead letter, retrying until the bus takes it: a message is
    /// only finished once its dead letter is durable.
    async fn dead_letter(
        &self,
        record: &Record,
        failure: &Failure,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Handled {
        let pipeline = &self.pipeline;
        let message = dead_letter::envelope(record, failure);
        loop {
            match self
                .bus
                .publish(&pipeline.dead_letter, message.clone())
                .await
            {
                Ok(_) => {
                    DeadLettered {
                        pipeline: &pipeline.name,
                        stage: &failure.stage,
                        class: failure.class,
                        key: &record.message.key,
                        topic: &pipeline.dead_letter,
                        message: &failure.message,
                    }
                    .emit(&self.metrics);
                    StageProcessed {
                        pipeline: &pipeline.name,
                        stage: &failure.stage,
                        outcome: "dead_lettered",
                    }
                    .emit(&self.metrics);
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

    /// One attempt at a message. An in-flight slot is held only while a
    /// courier request is out: that is what `max_in_flight` bounds.
    async fn attempt(&self, record: &Record, slots: &Slots) -> Result<(), AttemptError> {
        let pipeline = &self.pipeline;
        let event = Event::from_headers(&record.message.headers);
        let order: serde_json::Value =
            serde_json::from_slice(&record.message.payload).map_err(|e| {
                StageError::permanent("decode", format!("message body is not JSON: {e}"))
            })?;
        let plan = stages::plan(pipeline, &self.config.accounts, &event, order).outcome?;
        match plan {
            Plan::Skip { stage, reason } => {
                tracing::debug!(pipeline = %pipeline.name, key = %record.message.key, reason, "skipped");
                StageProcessed {
                    pipeline: &pipeline.name,
                    stage,
                    outcome: "skipped",
                }
                .emit(&self.metrics);
                Ok(())
            }
            Plan::Emit { shipment } => {
                if let Some(topic) = &pipeline.output {
                    let payload = json!({ "shipment": shipment });
                    self.publish_output(topic, record, &payload).await?;
                }
                StageProcessed {
                    pipeline: &pipeline.name,
                    stage: "output",
                    outcome: "ok",
                }
                .emit(&self.metrics);
                Ok(())
            }
            Plan::Book { shipment, route } => {
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
                        &shipment,
                        &route,
                        &message_id,
                        slots,
                    )
                    .await?;
                if !booked.replayed {
                    ShipmentBooked {
                        pipeline: &pipeline.name,
                        key: &record.message.key,
                        courier: &booked.result.courier,
                        tracking_number: &booked.result.tracking_number,
                        since_received: since_received(record),
                    }
                    .emit(&self.metrics);
                }
                if let Some(topic) = &pipeline.output {
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
                let outcome = if booked.replayed { "replayed" } else { "ok" };
                StageProcessed {
                    pipeline: &pipeline.name,
                    stage: "book",
                    outcome,
                }
                .emit(&self.metrics);
                Ok(())
            }
        }
    }

    async fn publish_output(
        &self,
        topic: &str,
        record: &Record,
        payload: &serde_json::Value,
    ) -> Result<(), AttemptError> {
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
            .map_err(|e| bus_error("output", e))
    }
}

fn since_received(record: &Record) -> Option<Duration> {
    let at = record.message.headers.get(header::RECEIVED_AT)?;
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    let elapsed = time::OffsetDateTime::now_utc() - at;
    elapsed.try_into().ok()
}
