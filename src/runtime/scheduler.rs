//! The scheduler: asks couriers' `track` operations for shipments that are
//! not delivered, returned or cancelled, as they fall due, and publishes
//! what they say on `tracking.<connector>` (`via: poll`), where the tracker
//! applies it like a callback.
//!
//! Each tick leases the due shipments (earliest first; on PostgreSQL
//! `FOR UPDATE SKIP LOCKED`, so instances never poll one twice), polls them
//! under the account's rate limit and the `max_in_flight` bounds, and sets
//! each one's next poll: `interval` after a poll that found a new status,
//! doubling up to `max_interval` after one that found the same. A shipment
//! tracked longer than `max_age` becomes `exception` / `tracking_expired`
//! with a review dead letter.
//!
//! A connector's `track` names what it found with `extract`: `status`
//! (required: the raw status), and optionally `code`, `reason` and
//! `event_time` (RFC 3339; anything else is replaced by the poll's time).
//! A connector that declares `track_many` is asked about up to its
//! `max_batch` shipments of one account per request instead.
//!
//! Collected COD shipments' payments are asked about here too, every few
//! ticks, by [`super::payments`], one round at a time.
//!
//! ```yaml
//! sync: { interval: 15m, max_interval: 6h, max_age: 45d, max_in_flight: 32 }
//! ```

use crate::bus::Bus;
use crate::bus::dead_letter::{self, DeadLetterContext};
use crate::clock::{later, now_rfc3339, timestamp};
use crate::config::{Config, SyncSettings};
use crate::connector::{Account, Connector, Engine};
use crate::model::{
    ErrorClass, Failure, Message, Record, SCHEMA_VERSION, TrackingEvent, Via, header, tracking,
};
use crate::store::ShipmentStore;
use crate::store::shipments::{DueLease, ShipmentRecord};
use crate::telemetry::events::{CodMeasured, TrackingPolled};
use crate::telemetry::{CourierOnlyLabels, Metrics, ShipmentLabels};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How often due shipments are looked for.
pub const TICK: Duration = Duration::from_secs(1);

/// Ticks between refreshes of the `waybill_shipments` and sync-lag gauges:
/// each counts every stored shipment, too costly for every tick.
const GAUGES_EVERY: u64 = 30;

/// Ticks between rounds of COD payment checks: each leases in the store,
/// and payments settle in days, not seconds.
const PAYMENTS_EVERY: u64 = 5;

/// How long a leased shipment stays this instance's beyond its request's
/// timeout; after it, another instance may poll it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// What `/readyz` and `waybill sync status` say of this scheduler.
#[derive(Debug, Clone, Default)]
pub struct SchedulerState {
    /// When the last tick ran (RFC 3339).
    pub last_run: Option<String>,
    /// What the last tick could not do, if anything.
    pub last_error: Option<String>,
    /// Polls in flight now.
    pub in_flight: usize,
}

pub struct Scheduler {
    pub config: Arc<Config>,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn ShipmentStore>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// Tells this instance's leases apart from other instances'.
    pub owner: String,
    pub state: Arc<Mutex<SchedulerState>>,
    /// Bounds all polls at once (top-level `sync.max_in_flight`).
    all: Arc<Semaphore>,
    /// Bounds each account's polls (its own `sync.max_in_flight`).
    per_account: HashMap<String, Arc<Semaphore>>,
    /// `max_batch` of each polled account whose connector declares `track_many`.
    batch_sizes: HashMap<String, usize>,
    /// How long a lease lasts: the longest `track`/`track_many` timeout of
    /// a polled account's connector, plus a margin.
    lease: Duration,
    /// Payment checks of collected COD, when a connector declares `payment`.
    payments: Option<Arc<super::payments::PaymentChecks>>,
    /// Whether a round of payment checks is under way.
    paying: Arc<std::sync::atomic::AtomicBool>,
}

impl Scheduler {
    pub fn new(
        config: Arc<Config>,
        bus: Arc<dyn Bus>,
        store: Arc<dyn ShipmentStore>,
        engine: Engine,
        metrics: Arc<Metrics>,
        owner: String,
    ) -> Scheduler {
        let all = Arc::new(Semaphore::new(config.sync.max_in_flight.max(1)));
        let per_account = config
            .polled_accounts
            .iter()
            .map(|(name, sync)| {
                (
                    name.clone(),
                    Arc::new(Semaphore::new(sync.max_in_flight.max(1))),
                )
            })
            .collect();
        let connectors: Vec<(&String, &Connector)> = config
            .polled_accounts
            .keys()
            .filter_map(|name| {
                let account = config.accounts.get(name)?;
                Some((name, config.connectors.get(&account.connector)?.as_ref()))
            })
            .collect();
        let batch_sizes = connectors
            .iter()
            .filter_map(|(name, connector)| {
                let size = connector.operation("track_many")?.max_batch?;
                Some(((*name).clone(), size.max(1)))
            })
            .collect();
        let lease = connectors
            .iter()
            .flat_map(|(_, connector)| ["track", "track_many"].map(|op| connector.operation(op)))
            .flatten()
            .map(|op| op.timeout)
            .max()
            .unwrap_or_default()
            + LEASE_MARGIN;
        let payments = super::payments::PaymentChecks::has_work(&config).then(|| {
            Arc::new(super::payments::PaymentChecks {
                config: config.clone(),
                store: store.clone(),
                engine: engine.clone(),
                metrics: metrics.clone(),
            })
        });
        Scheduler {
            config,
            bus,
            store,
            engine,
            metrics,
            owner,
            state: Arc::new(Mutex::new(SchedulerState::default())),
            all,
            per_account,
            batch_sizes,
            lease,
            payments,
            paying: Arc::default(),
        }
    }

    /// Whether any account is polled at all, or asked about payments.
    pub fn has_work(&self) -> bool {
        !self.config.polled_accounts.is_empty() || self.payments.is_some()
    }

    /// Ticks until `stop` turns true, then waits for polls in flight.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut polls = tokio::task::JoinSet::new();
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            while polls.try_join_next().is_some() {}
            if ticks.is_multiple_of(GAUGES_EVERY) {
                self.refresh_gauges().await;
            }
            if ticks.is_multiple_of(PAYMENTS_EVERY) {
                self.start_payments(&mut polls, &stop);
            }
            ticks += 1;
            match self.tick(&mut polls, &stop).await {
                Ok(()) => self.note(None),
                Err(why) => {
                    tracing::warn!(error = %why, "scheduler tick failed; trying again next tick");
                    self.note(Some(why));
                }
            }
        }
        while polls.join_next().await.is_some() {}
    }

    /// Starts a round of payment checks unless one is under way.
    fn start_payments(&self, polls: &mut tokio::task::JoinSet<()>, stop: &watch::Receiver<bool>) {
        use std::sync::atomic::Ordering;
        let Some(payments) = self.payments.clone() else {
            return;
        };
        if self.paying.swap(true, Ordering::AcqRel) {
            return;
        }
        let paying = self.paying.clone();
        let stop = stop.clone();
        polls.spawn(async move {
            if let Err(why) = payments.round(&stop).await {
                tracing::warn!(error = %why, "payment checks failed; trying again next tick");
            }
            paying.store(false, Ordering::Release);
        });
    }

    /// Shipments per courier and status, COD per courier and state, and
    /// each courier's most overdue poll.
    async fn refresh_gauges(&self) {
        match self.store.cod_gauges().await {
            Ok(gauges) => CodMeasured { gauges: &gauges }.emit(&self.metrics),
            Err(e) => tracing::debug!(error = %e, "cannot sum COD"),
        }
        match self.store.shipment_counts().await {
            Ok(counts) => {
                self.metrics.shipments.clear();
                for (courier, status, count) in counts {
                    self.metrics
                        .shipments
                        .get_or_create(&ShipmentLabels {
                            courier,
                            status: status.as_str().to_string(),
                        })
                        .set(count);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot count shipments"),
        }
        let now_at = OffsetDateTime::now_utc();
        let Ok(overview) = self.store.sync_overview(&timestamp(now_at)).await else {
            return;
        };
        let mut lag: HashMap<String, f64> = HashMap::new();
        for account in overview {
            let Some((connector, _)) = self.connector_of(&account.courier_account) else {
                continue;
            };
            let waited = account
                .oldest_due
                .as_deref()
                .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
                .map_or(0.0, |due| (now_at - due).as_seconds_f64().max(0.0));
            let worst = lag.entry(connector.name.clone()).or_default();
            *worst = worst.max(waited);
        }
        for (courier, waited) in lag {
            self.metrics
                .sync_lag
                .get_or_create(&CourierOnlyLabels { courier })
                .set(waited);
        }
    }

    fn note(&self, error: Option<String>) {
        if let Ok(mut state) = self.state.lock() {
            state.last_run = Some(now_rfc3339());
            state.last_error = error;
            state.in_flight = self.config.sync.max_in_flight.max(1) - self.all.available_permits();
        }
    }

    /// Leases what is due, as many as there are free slots, and starts
    /// their polls; while leases come back full (more is due than slots),
    /// leases again as slots free up rather than waiting for the next tick.
    async fn tick(
        self: &Arc<Self>,
        polls: &mut tokio::task::JoinSet<()>,
        stop: &watch::Receiver<bool>,
    ) -> Result<(), String> {
        self.store
            .note_scheduler_run(&self.owner, &timestamp(OffsetDateTime::now_utc()))
            .await
            .map_err(|e| format!("store: {e}"))?;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let free = self.free_slots().await;
            let now_at = OffsetDateTime::now_utc();
            let now = timestamp(now_at);
            let until = timestamp(later(now_at, self.lease));
            let lease = DueLease {
                now: &now,
                owner: &self.owner,
                until: &until,
                limit: free,
            };
            let due = self
                .store
                .lease_due(lease)
                .await
                .map_err(|e| format!("store: {e}"))?;
            let full = due.len() == free;
            for batch in self.batches(due) {
                let Ok(permit) = self.all.clone().acquire_owned().await else {
                    return Ok(());
                };
                let scheduler = self.clone();
                polls.spawn(async move {
                    match batch {
                        Batch::One(shipment) => scheduler.poll_one(*shipment).await,
                        Batch::Many(shipments) => scheduler.poll_many(shipments).await,
                    }
                    drop(permit);
                });
            }
            while polls.try_join_next().is_some() {}
            if !full {
                return Ok(());
            }
        }
    }

    /// Waits until at least one poll slot is free, then a moment more so
    /// that slots freeing together are leased in one statement.
    async fn free_slots(&self) -> usize {
        if self.all.available_permits() == 0 {
            if let Ok(permit) = self.all.acquire().await {
                drop(permit);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.all.available_permits().max(1)
    }

    /// Due shipments as requests: one per shipment, or, for an account
    /// whose connector declares `track_many`, up to its `max_batch` per
    /// request.
    fn batches(&self, due: Vec<ShipmentRecord>) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut grouped: HashMap<String, Vec<ShipmentRecord>> = HashMap::new();
        for shipment in due {
            if self.batch_sizes.contains_key(&shipment.courier_account) {
                grouped
                    .entry(shipment.courier_account.clone())
                    .or_default()
                    .push(shipment);
            } else {
                batches.push(Batch::One(Box::new(shipment)));
            }
        }
        for (account, shipments) in grouped {
            let size = self.batch_sizes.get(&account).copied().unwrap_or(1);
            batches.extend(
                shipments
                    .chunks(size)
                    .map(|chunk| Batch::Many(chunk.to_vec())),
            );
        }
        batches
    }

    fn connector_of(&self, account: &str) -> Option<(&Arc<Connector>, &Arc<Account>)> {
        let account = self.config.accounts.get(account)?;
        let connector = self.config.connectors.get(&account.connector)?;
        Some((connector, account))
    }

    /// The account's settings, connector and account, or `None` when the
    /// account is no longer polled.
    fn polled(&self, name: &str) -> Option<(&SyncSettings, &Arc<Connector>, &Arc<Account>)> {
        let sync = self.config.polled_accounts.get(name)?;
        let (connector, account) = self.connector_of(name)?;
        Some((sync, connector, account))
    }

    /// Waits for a slot of the account's own and its rate limit.
    async fn slot(&self, connector: &Connector, account: &Account) -> Option<OwnedSemaphorePermit> {
        let slot = match self.per_account.get(&account.name) {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        let wait = self.engine.pace(connector, account);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        slot
    }

    /// Polls one leased shipment (or expires it) and sets its next poll.
    async fn poll_one(&self, shipment: ShipmentRecord) {
        let Some((sync, connector, account)) = self.polled(&shipment.courier_account) else {
            // No longer polled (the account went, or lost `track`): stop.
            self.finish(&shipment, None, 0).await;
            return;
        };
        if expired(&shipment, sync) {
            self.expire(&shipment, sync).await;
            return;
        }
        let _slot = self.slot(connector, account).await;
        let polled = self.track(connector, account, &shipment).await;
        self.settle(connector, sync, &shipment, polled).await;
    }

    /// Polls several shipments of one account in one `track_many` request.
    async fn poll_many(&self, shipments: Vec<ShipmentRecord>) {
        let Some(name) = shipments.first().map(|s| s.courier_account.clone()) else {
            return;
        };
        let Some((sync, connector, account)) = self.polled(&name) else {
            for shipment in &shipments {
                self.finish(shipment, None, 0).await;
            }
            return;
        };
        let mut live = Vec::with_capacity(shipments.len());
        for shipment in shipments {
            if expired(&shipment, sync) {
                self.expire(&shipment, sync).await;
            } else {
                live.push(shipment);
            }
        }
        if live.is_empty() {
            return;
        }
        let _slot = self.slot(connector, account).await;
        let answered = self.track_many(connector, account, &live).await;
        for shipment in &live {
            let polled = match &answered {
                Ok(items) => items
                    .get(&shipment.tracking_number)
                    .cloned()
                    .ok_or_else(|| {
                        Failure::new(
                            "track",
                            ErrorClass::Retryable,
                            format!(
                                "track_many: the answer has no item for {}",
                                shipment.tracking_number
                            ),
                        )
                    }),
                Err(failure) => Err(failure.clone()),
            };
            self.settle(connector, sync, shipment, polled).await;
        }
    }

    /// Counts a poll, publishes what it found and sets the next poll.
    async fn settle(
        &self,
        connector: &Connector,
        sync: &SyncSettings,
        shipment: &ShipmentRecord,
        polled: Result<TrackingEvent, Failure>,
    ) {
        let outcome = match &polled {
            Ok(_) => "ok",
            Err(failure) => failure.class.as_str(),
        };
        TrackingPolled {
            courier: &connector.name,
            account: &shipment.courier_account,
            outcome,
            detail: polled.as_ref().err().map_or("", |f| f.message.as_str()),
        }
        .emit(&self.metrics);
        let changed = match &polled {
            Ok(event) => {
                let same = shipment
                    .raw_status
                    .as_deref()
                    .is_some_and(|before| tracking::same_raw_status(before, &event.raw_status));
                if let Err(e) = self.publish(event).await {
                    tracing::warn!(error = %e, "cannot publish a polled status; polling again next interval");
                }
                !same
            }
            Err(_) => false,
        };
        let interval = next_interval(shipment, sync, changed);
        let next = timestamp(later(OffsetDateTime::now_utc(), interval));
        self.finish(shipment, Some(&next), interval.as_millis() as i64)
            .await;
    }

    /// Asks the courier about one shipment; the event its answer makes.
    async fn track(
        &self,
        connector: &Connector,
        account: &Account,
        shipment: &ShipmentRecord,
    ) -> Result<TrackingEvent, Failure> {
        let mut vars = Map::new();
        vars.insert(
            "tracking_number".into(),
            Value::String(shipment.tracking_number.clone()),
        );
        vars.insert(
            "reference".into(),
            shipment
                .reference
                .clone()
                .map_or(Value::Null, Value::String),
        );
        let ctx = Engine::context(account, vars);
        let request = self.engine.prepare(connector, "track", account, &ctx)?;
        let output = self
            .engine
            .execute(connector, "track", account, request)
            .await?;
        event_of(
            connector,
            account,
            &shipment.tracking_number,
            &output.extracted,
        )
    }

    /// Asks the courier about several shipments at once: the event of each
    /// tracking number its answer has an item for.
    async fn track_many(
        &self,
        connector: &Connector,
        account: &Account,
        shipments: &[ShipmentRecord],
    ) -> Result<HashMap<String, TrackingEvent>, Failure> {
        let numbers: Vec<Value> = shipments
            .iter()
            .map(|s| Value::String(s.tracking_number.clone()))
            .collect();
        let mut vars = Map::new();
        vars.insert("tracking_numbers".into(), Value::Array(numbers));
        let ctx = Engine::context(account, vars);
        let request = self
            .engine
            .prepare(connector, "track_many", account, &ctx)?;
        let output = self
            .engine
            .execute(connector, "track_many", account, request)
            .await?;
        let mut found = HashMap::new();
        for item in &output.items {
            let Some(number) = text_of(item, "tracking_number") else {
                continue;
            };
            if let Ok(event) = event_of(connector, account, &number, item) {
                found.insert(number, event);
            }
        }
        Ok(found)
    }

    async fn publish(&self, event: &TrackingEvent) -> Result<(), crate::bus::BusError> {
        let mut headers = crate::model::Headers::new();
        headers.insert(header::ID.into(), uuid::Uuid::new_v4().to_string());
        headers.insert(header::SCHEMA.into(), SCHEMA_VERSION.into());
        headers.insert(header::SOURCE.into(), event.connector.clone());
        headers.insert(header::ACCOUNT.into(), event.account.clone());
        headers.insert(header::RECEIVED_AT.into(), event.received_at.clone());
        let message = Message {
            key: tracking::tracking_key(&event.account, &event.tracking_number),
            headers,
            payload: serde_json::to_vec(event).unwrap_or_default(),
        };
        self.bus
            .publish(&tracking::tracking_topic(&event.connector), message)
            .await
            .map(|_| ())
    }

    async fn finish(&self, shipment: &ShipmentRecord, next: Option<&str>, interval_ms: i64) {
        if let Err(e) = self
            .store
            .finish_poll(&shipment.key, &self.owner, next, interval_ms)
            .await
        {
            // The lease lapses by itself; the shipment is polled again then.
            tracing::warn!(key = %shipment.key, error = %e, "cannot record a poll");
        }
    }

    /// Gives up tracking: `exception` / `tracking_expired`, and a review
    /// dead letter saying what to do.
    async fn expire(&self, shipment: &ShipmentRecord, sync: &SyncSettings) {
        let days = sync.max_age.as_secs() / 86_400;
        let reason = format!(
            "not delivered, returned or cancelled {days} days after booking; tracking stopped"
        );
        match self.store.expire_shipment(&shipment.key, &reason).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %shipment.key, error = %e, "cannot expire a shipment; trying again next tick");
                return;
            }
        }
        let failure = Failure::new(
            "track",
            ErrorClass::NeedsReview,
            format!(
                "shipment {} ({} {}) {reason}: ask the courier where it is, then `waybill shipments correct`",
                shipment.key, shipment.courier, shipment.tracking_number
            ),
        );
        let record = Record {
            topic: tracking::tracking_topic(&shipment.courier),
            partition: 0,
            offset: -1,
            message: Message {
                key: shipment.order_key.clone(),
                headers: crate::model::Headers::new(),
                payload: Vec::new(),
            },
        };
        let now = now_rfc3339();
        let context = DeadLetterContext {
            pipeline: super::tracker::NAME.to_string(),
            attempts: 1,
            first_failed_at: now.clone(),
            last_failed_at: now,
        };
        let letter = dead_letter::envelope(&record, &failure, &context);
        if let Err(e) = self
            .bus
            .publish(super::tracker::DEAD_LETTER_TOPIC, letter)
            .await
        {
            tracing::warn!(key = %shipment.key, error = %e, "cannot write the expiry's dead letter");
        }
    }
}

/// One request's worth of due shipments.
enum Batch {
    One(Box<ShipmentRecord>),
    /// Of one account whose connector declares `track_many`.
    Many(Vec<ShipmentRecord>),
}

/// A text value `extract` found under `name`.
fn text_of(extracted: &BTreeMap<String, Value>, name: &str) -> Option<String> {
    extracted.get(name).and_then(|v| match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The event a `track` answer (or one `track_many` item) makes.
fn event_of(
    connector: &Connector,
    account: &Account,
    tracking_number: &str,
    extracted: &BTreeMap<String, Value>,
) -> Result<TrackingEvent, Failure> {
    let raw_status = text_of(extracted, "status").ok_or_else(|| {
        Failure::permanent(
            "track",
            format!(
                "track: the answer has no status where connector `{}` extracts `status`",
                connector.name
            ),
        )
    })?;
    Ok(TrackingEvent {
        connector: connector.name.clone(),
        account: account.name.clone(),
        tracking_number: tracking_number.to_string(),
        raw_status,
        code: text_of(extracted, "code"),
        event_time: text_of(extracted, "event_time")
            .filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok()),
        reason: text_of(extracted, "reason"),
        via: Via::Poll,
        received_at: now_rfc3339(),
    })
}

/// Whether the shipment was booked longer than `max_age` ago.
fn expired(shipment: &ShipmentRecord, sync: &SyncSettings) -> bool {
    OffsetDateTime::parse(&shipment.booked_at, &Rfc3339)
        .is_ok_and(|booked| later(booked, sync.max_age) < OffsetDateTime::now_utc())
}

/// `interval` after news; otherwise double the last wait, up to `max_interval`.
fn next_interval(shipment: &ShipmentRecord, sync: &SyncSettings, changed: bool) -> Duration {
    if changed {
        return sync.interval;
    }
    let last = shipment
        .poll_interval_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
        .unwrap_or(sync.interval);
    (last.max(sync.interval) * 2).min(sync.max_interval)
}
