//! The `write_back` step's side effect: a shipment's tracking number and
//! status changes written back to the store the order came from, at most
//! once each (DESIGN §1, §8).
//!
//! The step takes `shipments.booked` (a booking) and `shipments.status` (a
//! status change: the payload names `status`). The store connector
//! declares everything it sends under `write_back:` and its operations:
//!
//! - on a booking, `open_fulfillments` (optional) reads what can be
//!   fulfilled, and its extracts feed `fulfill`, which records the tracking
//!   number, the courier's company and its tracking page (from the courier
//!   connector's `tracking_page:`) and extracts `fulfillment_id`;
//! - on a status change the connector's `write_back.statuses` table maps,
//!   `fulfillment_event` writes it to that fulfillment. One whose
//!   fulfillment is not recorded yet (the two topics are not ordered
//!   together) creates the fulfillment first, from the shipment row.
//!
//! Each write is a row of the store (`write_backs`), claimed `sent` before
//! its request goes out and `done` after. After an ambiguous outcome (a
//! timeout, a 5xx after sending) or a crash mid-request, the row is found
//! `sent`, and `find_fulfillment` looks the order's fulfillments up for this
//! tracking number before anything is sent again.
//!
//! What stays Rust, and why: choosing among `find_fulfillment`'s items the
//! one whose tracking numbers hold ours, and whether its event statuses
//! hold the one we mean to send, compares a value of the shipment with
//! lists of the answer; the connector's JSONPath extracts cannot take a
//! value from outside the answer, so the sink does that comparison, over
//! the names the connector extracts (`fulfillment_id`, `tracking_numbers`,
//! `event_statuses`). Nothing here names a store.
//!
//! An account without the connector's `write_back.credential` has its
//! write-backs skipped and counted (`outcome="skipped"`).
//!
//! ```yaml
//! name: shopify-tracking
//! input: { topic: shipments.booked, accounts: [shopify-main] }
//! steps:
//!   - write_back: {}
//! ```

use super::book::{InFlight, Slots};
use crate::config::{Account, Config};
use crate::connector::{Connector, Engine, OperationOutput, WriteBackSpec};
use crate::model::{BookingKey, ErrorClass, Failure, Status};
use crate::store::shipments::ShipmentRecord;
use crate::store::write_backs::{WriteBackClaim, WriteBackTicket};
use crate::store::{ShipmentStore, StoreError, WriteBackStore};
use crate::telemetry::Metrics;
use crate::telemetry::events::{CourierRequestCompleted, WriteBackDone};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The step every failure of a write-back is attributed to.
const STAGE: &str = "write_back";

/// The store row of a shipment's fulfillment.
const FULFILLMENT: &str = "fulfillment";

/// How long a claim outlives its requests' timeouts: while it lasts, another
/// instance meeting the row waits, since the owner's answer may still come.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// What one write-back message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Sent to the store now.
    Sent,
    /// Nothing to send: written before, found at the store, not mapped, or
    /// the account takes no write-back.
    Nothing(&'static str),
}

impl Written {
    pub fn outcome(self) -> &'static str {
        match self {
            Written::Sent => "written",
            Written::Nothing(why) => why,
        }
    }
}

/// Writes tracking and statuses back to stores, idempotently.
pub struct WriteBacker {
    pub config: Arc<Config>,
    pub shipments: Arc<dyn ShipmentStore>,
    pub store: Arc<dyn WriteBackStore>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    /// Owner of this instance's claims.
    pub owner: String,
    /// One write-back per shipment at a time in this instance: the booking
    /// and status pipelines may meet the same shipment together.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One message's write-back: whose, to where, about which shipment.
struct Job<'a> {
    account: &'a Account,
    connector: &'a Connector,
    shipment: ShipmentRecord,
    key_text: String,
    /// What every template sees besides the account.
    vars: Map<String, Value>,
}

/// A fulfillment `find_fulfillment` found for the shipment.
struct Found {
    id: String,
    event_statuses: Vec<String>,
}

fn store_failure(e: StoreError) -> Failure {
    Failure::new(STAGE, ErrorClass::Retryable, format!("store: {e}"))
}

/// A value extracted as text: a string, or a number written out.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An extracted value as a list of texts (one value is a list of one).
fn texts(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(|v| text(Some(v))).collect(),
        other => text(other).into_iter().collect(),
    }
}

impl WriteBacker {
    pub fn new(
        config: Arc<Config>,
        shipments: Arc<dyn ShipmentStore>,
        store: Arc<dyn WriteBackStore>,
        engine: Engine,
        metrics: Arc<Metrics>,
        owner: String,
    ) -> WriteBacker {
        WriteBacker {
            config,
            shipments,
            store,
            engine,
            metrics,
            owner,
            locks: Mutex::default(),
        }
    }

    /// Writes back what `payload` (a booking, or a status change when it
    /// names `status`) tells store account `store_account`.
    pub async fn write_back(
        &self,
        store_account: &str,
        payload: &Value,
        slots: &Slots,
    ) -> Result<Written, Failure> {
        let (account, connector, spec) = self.store_of(store_account)?;
        let status = payload.get("status").and_then(Value::as_str);
        let operation = if status.is_some() {
            "event"
        } else {
            FULFILLMENT
        };
        let done = |outcome: &str, key: &str, event: Option<&str>| {
            WriteBackDone {
                store: &connector.name,
                account: &account.name,
                operation,
                outcome,
                key,
                status: event,
            }
            .emit(&self.metrics)
        };
        if !account.credentials.contains_key(&spec.credential) {
            done("skipped", "", None);
            return Ok(Written::Nothing("skipped"));
        }
        let event = match status {
            None => None,
            Some(name) => {
                let status: Status = serde_json::from_value(json!(name)).map_err(|_| {
                    Failure::permanent(STAGE, format!("`{name}` is not a canonical status"))
                })?;
                match spec.event_status(status) {
                    Some(event) => Some((status, event.to_string())),
                    None => {
                        done("not_mapped", "", None);
                        return Ok(Written::Nothing("not_mapped"));
                    }
                }
            }
        };
        let job = self.job(account, connector, payload).await?;
        let lock = self.lock(&job.key_text);
        let _held = lock.lock().await;
        let written = self.fulfillment(&job, slots).await;
        let written = match (written, &event) {
            (Err(failure), _) => Err(failure),
            (Ok((_, written)), None) => Ok(written),
            (Ok((id, _)), Some((status, event))) => {
                self.event(&job, &id, *status, event, payload, slots).await
            }
        };
        drop(_held);
        self.unlock(&job.key_text, lock);
        let event_status = event.as_ref().map(|(_, e)| e.as_str());
        match &written {
            Ok(w) => done(w.outcome(), &job.key_text, event_status),
            Err(failure) => done(failure.class.as_str(), &job.key_text, event_status),
        }
        written
    }

    /// The store account, its connector and what it takes written back.
    fn store_of(&self, name: &str) -> Result<(&Account, &Connector, &WriteBackSpec), Failure> {
        let account = self.config.accounts.get(name).ok_or_else(|| {
            Failure::permanent(STAGE, format!("store account `{name}` is not configured"))
        })?;
        let connector = self
            .config
            .connectors
            .get(&account.connector)
            .ok_or_else(|| {
                Failure::permanent(
                    STAGE,
                    format!("connector `{}` is not loaded", account.connector),
                )
            })?;
        let spec = connector.write_back.as_ref().ok_or_else(|| {
            Failure::permanent(
                STAGE,
                format!(
                    "connector `{}` of account `{name}` declares no `write_back`",
                    connector.name
                ),
            )
        })?;
        Ok((account, connector, spec))
    }

    /// The shipment the payload is about, and the template variables.
    async fn job<'a>(
        &self,
        account: &'a Account,
        connector: &'a Connector,
        payload: &Value,
    ) -> Result<Job<'a>, Failure> {
        let field = |name: &str| payload.get(name).and_then(Value::as_str).unwrap_or("");
        let (courier_account, tracking_number) =
            (field("courier_account"), field("tracking_number"));
        if courier_account.is_empty() || tracking_number.is_empty() {
            return Err(Failure::permanent(
                STAGE,
                "the message names no `courier_account` and `tracking_number`",
            ));
        }
        let shipment = self
            .shipments
            .shipment_by_tracking(courier_account, tracking_number)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| {
                // The tracker records the shipment from the same booking
                // message, concurrently: wait for it.
                Failure::new(
                    STAGE,
                    ErrorClass::Retryable,
                    format!("no shipment {tracking_number} of courier account `{courier_account}` recorded yet"),
                )
            })?;
        let mut vars = Map::new();
        vars.insert("order_id".into(), json!(shipment.key.order_id));
        vars.insert("reference".into(), json!(shipment.reference));
        vars.insert("tracking".into(), self.tracking(&shipment));
        vars.insert(
            "shipment".into(),
            json!({
                "key": shipment.key.to_string(),
                "order_id": shipment.key.order_id,
                "reference": shipment.reference,
                "courier": shipment.courier,
                "courier_account": shipment.courier_account,
                "tracking_number": shipment.tracking_number,
                "status": shipment.status.as_str(),
            }),
        );
        Ok(Job {
            account,
            connector,
            key_text: shipment.key.to_string(),
            shipment,
            vars,
        })
    }

    /// `{number, company, url}` from the courier connector's `tracking_page`.
    fn tracking(&self, shipment: &ShipmentRecord) -> Value {
        let page = self
            .config
            .connectors
            .get(&shipment.courier)
            .and_then(|c| c.tracking_page.as_ref());
        let company = page.map_or(shipment.courier.as_str(), |p| p.company.as_str());
        let url = page.and_then(|p| p.url.as_ref()).and_then(|template| {
            let ctx = json!({ "tracking_number": shipment.tracking_number });
            match template.render(&ctx) {
                Ok(url) => Some(match url.strip_prefix(crate::connector::target::SELF_PREFIX) {
                    Some(path) => format!("{}{path}", self.engine.self_base().trim_end_matches('/')),
                    None => url,
                }),
                Err(e) => {
                    tracing::warn!(courier = %shipment.courier, error = %e, "tracking page URL does not render; sending the number alone");
                    None
                }
            }
        });
        json!({ "number": shipment.tracking_number, "company": company, "url": url })
    }

    /// The shipment's fulfillment id, creating the fulfillment when none is
    /// recorded.
    async fn fulfillment(
        &self,
        job: &Job<'_>,
        slots: &Slots,
    ) -> Result<(String, Written), Failure> {
        let key = &job.shipment.key;
        let lease = self.lease(
            job.connector,
            &["open_fulfillments", "fulfill", "find_fulfillment"],
        );
        let checked = match self.claim(key, FULFILLMENT, lease).await? {
            Claimed::Done(id) => return Ok((id, Written::Nothing("replayed"))),
            Claimed::Send { checked } => checked,
        };
        if !checked {
            match self.find(job, slots).await {
                Ok(Some(found)) => {
                    self.finish(key, FULFILLMENT, &found.id).await?;
                    return Ok((found.id, Written::Nothing("found")));
                }
                Ok(None) => {}
                Err(failure) => return Err(self.given_up(key, FULFILLMENT, failure, true).await),
            }
        }
        let mut vars = job.vars.clone();
        if job.connector.has_operation("open_fulfillments") {
            match self.call(job, "open_fulfillments", &vars, slots).await {
                Ok(output) => vars.extend(output.extracted),
                Err(failure) => return Err(self.given_up(key, FULFILLMENT, failure, false).await),
            }
        }
        let output = match self.call(job, "fulfill", &vars, slots).await {
            Ok(output) => output,
            Err(failure) => {
                let doubt = failure.class == ErrorClass::Ambiguous;
                return Err(self.given_up(key, FULFILLMENT, failure, doubt).await);
            }
        };
        let Some(id) = text(output.extracted.get("fulfillment_id")) else {
            let failure = Failure::new(
                STAGE,
                ErrorClass::Ambiguous,
                "fulfill: the store accepted it but no `fulfillment_id` was found in the answer",
            );
            return Err(self.given_up(key, FULFILLMENT, failure, true).await);
        };
        self.finish(key, FULFILLMENT, &id).await?;
        Ok((id, Written::Sent))
    }

    /// One status event on fulfillment `id`, at most once per status.
    async fn event(
        &self,
        job: &Job<'_>,
        id: &str,
        status: Status,
        event_status: &str,
        payload: &Value,
        slots: &Slots,
    ) -> Result<Written, Failure> {
        let key = &job.shipment.key;
        let row = format!("event:{}", status.as_str());
        let lease = self.lease(job.connector, &["fulfillment_event", "find_fulfillment"]);
        let checked = match self.claim(key, &row, lease).await? {
            Claimed::Done(_) => return Ok(Written::Nothing("replayed")),
            Claimed::Send { checked } => checked,
        };
        if !checked {
            match self.find(job, slots).await {
                Ok(Some(found)) if found.event_statuses.iter().any(|s| s == event_status) => {
                    self.finish(key, &row, &found.id).await?;
                    return Ok(Written::Nothing("found"));
                }
                Ok(_) => {}
                Err(failure) => return Err(self.given_up(key, &row, failure, true).await),
            }
        }
        let mut vars = job.vars.clone();
        vars.insert("fulfillment_id".into(), json!(id));
        vars.insert("event_status".into(), json!(event_status));
        vars.insert("status".into(), json!(status.as_str()));
        for name in ["sub_status", "reason", "event_time"] {
            vars.insert(
                name.into(),
                payload.get(name).cloned().unwrap_or(Value::Null),
            );
        }
        match self.call(job, "fulfillment_event", &vars, slots).await {
            Ok(_) => {
                self.finish(key, &row, id).await?;
                Ok(Written::Sent)
            }
            Err(failure) => {
                let doubt = failure.class == ErrorClass::Ambiguous;
                Err(self.given_up(key, &row, failure, doubt).await)
            }
        }
    }

    /// The shipment's fulfillment at the store, looked up by tracking number.
    async fn find(&self, job: &Job<'_>, slots: &Slots) -> Result<Option<Found>, Failure> {
        let output = self.call(job, "find_fulfillment", &job.vars, slots).await?;
        let number = &job.shipment.tracking_number;
        Ok(output.items.iter().find_map(|item| {
            texts(item.get("tracking_numbers"))
                .iter()
                .any(|n| n == number)
                .then(|| {
                    Some(Found {
                        id: text(item.get("fulfillment_id"))?,
                        event_statuses: texts(item.get("event_statuses")),
                    })
                })
                .flatten()
        }))
    }

    /// Prepares and sends one operation in an in-flight slot.
    async fn call(
        &self,
        job: &Job<'_>,
        operation: &str,
        vars: &Map<String, Value>,
        slots: &Slots,
    ) -> Result<OperationOutput, Failure> {
        let ctx = Engine::context(job.account, vars.clone());
        let request = self
            .engine
            .prepare(job.connector, operation, job.account, &ctx)
            .map_err(|f| f.at(STAGE))?;
        let wait = self.engine.pace(job.connector, job.account);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Some(_slot) = InFlight::enter(slots).await else {
            return Err(Failure::new(STAGE, ErrorClass::Retryable, "shutting down"));
        };
        let started = Instant::now();
        let result = self
            .engine
            .execute(job.connector, operation, job.account, request)
            .await;
        CourierRequestCompleted {
            courier: &job.connector.name,
            account: &job.account.name,
            operation,
            outcome: match &result {
                Ok(_) => "success",
                Err(failure) => failure.class.as_str(),
            },
            elapsed: started.elapsed(),
            detail: result.as_ref().err().map_or("", |f| f.message.as_str()),
        }
        .emit(&self.metrics);
        result.map_err(|f| f.at(STAGE))
    }

    /// Claims a row, turning "busy" into a retry.
    async fn claim(
        &self,
        key: &BookingKey,
        operation: &str,
        lease: Duration,
    ) -> Result<Claimed, Failure> {
        let ticket = WriteBackTicket {
            key,
            operation,
            owner: &self.owner,
            lease,
        };
        match self
            .store
            .claim_write_back(ticket)
            .await
            .map_err(store_failure)?
        {
            WriteBackClaim::Acquired { checked } => Ok(Claimed::Send { checked }),
            WriteBackClaim::Done(id) => Ok(Claimed::Done(id.unwrap_or_default())),
            WriteBackClaim::Busy => Err(Failure::new(
                STAGE,
                ErrorClass::Retryable,
                format!(
                    "another instance is writing `{operation}` of {key} back; waiting for its answer"
                ),
            )),
        }
    }

    async fn finish(&self, key: &BookingKey, operation: &str, id: &str) -> Result<(), Failure> {
        self.store
            .finish_write_back(key, operation, Some(id))
            .await
            .map_err(store_failure)
    }

    /// Settles a claim after `failure`. A row that may have reached the
    /// store (`doubt`: an ambiguous answer to a write, or a lookup that did
    /// not answer for a row sent before) stays `sent`, and the next attempt
    /// looks the store up before sending; otherwise the store certainly did
    /// not act, and the claim is given back. Ambiguity is retried, since
    /// reading again and looking up before writing again are safe.
    async fn given_up(
        &self,
        key: &BookingKey,
        operation: &str,
        failure: Failure,
        doubt: bool,
    ) -> Failure {
        let settled = if doubt {
            self.store
                .doubt_write_back(key, operation, &self.owner)
                .await
        } else {
            self.store
                .release_write_back(key, operation, &self.owner)
                .await
        };
        if let Err(e) = settled {
            tracing::warn!(key = %key, operation, error = %e, "could not settle a write-back claim; it frees itself when the lease ends");
        }
        match failure.class {
            ErrorClass::Ambiguous => Failure {
                class: ErrorClass::Retryable,
                message: format!(
                    "{} (outcome unknown: the store is looked up before anything is sent again)",
                    failure.message
                ),
                ..failure
            },
            _ => failure,
        }
    }

    /// A claim's lease: the operations' timeouts and a margin.
    fn lease(&self, connector: &Connector, operations: &[&str]) -> Duration {
        operations
            .iter()
            .filter_map(|name| connector.operation(name))
            .map(|op| op.timeout)
            .sum::<Duration>()
            + LEASE_MARGIN
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Forgets a key's lock once nobody else holds or waits for it.
    fn unlock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        drop(lock);
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }
}

/// What a claim let the caller do.
enum Claimed {
    /// Send; look the store up first unless `checked`.
    Send { checked: bool },
    /// Written before, with this id.
    Done(String),
}
