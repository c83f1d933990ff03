//! Shipments and their history in SQL, the same statements on SQLite and
//! PostgreSQL. Applying an event reads the shipment and its version, decides
//! with [`crate::model::transition`], then writes the history row and the
//! guarded update in one transaction; a concurrent writer that got there
//! first makes the guard miss, and the whole decision is taken again.

use super::{Backend, SqlStore, db};
use crate::clock::now_timestamp;
use crate::model::cod::on_status;
use crate::model::tracking::same_raw_status;
use crate::model::transition::may_move;
use crate::model::{BookingKey, CodState, Status, Via};
use crate::store::shipments::{
    Applied, DueLease, HistoryEntry, NewShipment, Outcome, ShipmentFilter, ShipmentRecord,
    StatusEvent, SyncOverview, UnknownStatus,
};
use crate::store::{RowError, StoreError};

/// How often an apply is decided again after losing a race.
const APPLY_ATTEMPTS: usize = 8;

macro_rules! history_columns {
    () => {
        "id, raw, code, status, sub_status, reason, event_time, received_at, via, outcome, \
         previous, published_at"
    };
}

/// A new shipment has no courier event yet: the first one applies whatever
/// its time, since a courier's clock (or its zone-less local time) may put
/// a first scan a little before our booking.
const INSERT_SHIPMENT: &str = "INSERT INTO shipments (booking_key, source, account, order_id, sequence, order_key, reference, \
     courier, courier_account, tracking_number, status, booked_at, last_event_at, updated_at, next_poll_at, \
     cod_amount, cod_currency, cod_state) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'booked', $11, NULL, $11, $12, $13, $14, $15) \
     ON CONFLICT (booking_key) DO NOTHING";

const INSERT_HISTORY: &str = "INSERT INTO shipment_history (booking_key, event_id, raw, code, status, sub_status, reason, \
     event_time, received_at, via, outcome, previous) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (event_id) DO NOTHING";

const SELECT_BY_TRACKING: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE courier_account = $1 AND tracking_number = $2"
);

pub(super) const SELECT_BY_KEY: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE booking_key = $1"
);

const SELECT_MATCHING: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE booking_key = $1 OR tracking_number = $1 OR reference = $1 \
     ORDER BY booked_at"
);

const SELECT_LISTED: &str = concat!(
    "SELECT ",
    shipment_columns!(),
    " FROM shipments WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR courier = $2) \
     ORDER BY updated_at DESC LIMIT $3"
);

const SELECT_EVENT: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM shipment_history WHERE event_id = $1"
);

const SELECT_HISTORY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM shipment_history WHERE booking_key = $1 ORDER BY id"
);

/// An earlier event of the shipment with the same time, applied or stale:
/// a repeat of it is a duplicate.
const SELECT_SAME_TIME: &str = "SELECT raw FROM shipment_history WHERE booking_key = $1 AND event_time = $2 \
     AND outcome IN ('applied', 'stale')";

/// A terminal status is never polled again, nor is a shipment whose
/// tracking was given up (`$9`). The COD state (`$10`, collected at `$11`)
/// moves in the same statement, so no status write misses it.
const MOVE_SHIPMENT: &str = "UPDATE shipments SET status = $2, sub_status = $3, raw_status = $4, reason = $5, \
     last_event_at = $6, updated_at = $7, version = version + 1, cod_state = $10, cod_collected_at = $11, \
     next_poll_at = CASE WHEN $2 IN ('delivered', 'returned', 'cancelled') OR $9 THEN NULL ELSE next_poll_at END \
     WHERE booking_key = $1 AND version = $8";

/// Due shipments nobody holds, earliest first; `$5` is the backend's
/// row-locking clause.
macro_rules! lease_due {
    ($lock:literal) => {
        concat!(
            "UPDATE shipments SET lease_owner = $1, lease_until = $2 WHERE booking_key IN (\
             SELECT booking_key FROM shipments WHERE next_poll_at IS NOT NULL AND next_poll_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_poll_at LIMIT $4",
            $lock,
            ") RETURNING ",
            shipment_columns!()
        )
    };
}

const LEASE_DUE_SQLITE: &str = lease_due!("");
const LEASE_DUE_POSTGRES: &str = lease_due!(" FOR UPDATE SKIP LOCKED");

const FINISH_POLL: &str = "UPDATE shipments SET next_poll_at = CASE WHEN status IN ('delivered', 'returned', 'cancelled') \
     THEN NULL ELSE $3 END, poll_interval_ms = $4, lease_owner = NULL, lease_until = NULL \
     WHERE booking_key = $1 AND lease_owner = $2";

const SYNC_OVERVIEW: &str = "SELECT courier_account, COUNT(*), \
     SUM(CASE WHEN next_poll_at <= $1 THEN 1 ELSE 0 END), \
     MIN(CASE WHEN next_poll_at <= $1 THEN next_poll_at END) \
     FROM shipments WHERE next_poll_at IS NOT NULL GROUP BY courier_account ORDER BY courier_account";

const NOTE_RUN: &str = "INSERT INTO scheduler_runs (owner, ran_at) VALUES ($1, $2) \
     ON CONFLICT (owner) DO UPDATE SET ran_at = excluded.ran_at";

const SELECT_RUNS: &str = "SELECT owner, ran_at FROM scheduler_runs ORDER BY ran_at DESC";

const MARK_PUBLISHED: &str = "UPDATE shipment_history SET published_at = $2 WHERE id = $1";

const UPSERT_UNKNOWN: &str = "INSERT INTO unknown_statuses (courier, raw, count, last_seen) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (courier, raw) DO UPDATE SET count = unknown_statuses.count + 1, last_seen = excluded.last_seen";

const SELECT_UNKNOWN: &str =
    "SELECT courier, raw, count, last_seen FROM unknown_statuses ORDER BY courier, raw";

const SELECT_COUNTS: &str = "SELECT courier, status, COUNT(*) FROM shipments GROUP BY courier, status ORDER BY courier, status";

#[derive(sqlx::FromRow)]
pub(super) struct ShipmentRow {
    source: String,
    account: String,
    order_id: String,
    sequence: i64,
    order_key: String,
    reference: Option<String>,
    courier: String,
    courier_account: String,
    tracking_number: String,
    status: String,
    sub_status: Option<String>,
    raw_status: Option<String>,
    reason: Option<String>,
    booked_at: String,
    last_event_at: Option<String>,
    updated_at: String,
    next_poll_at: Option<String>,
    poll_interval_ms: Option<i64>,
    cod_amount: Option<String>,
    cod_currency: Option<String>,
    cod_state: String,
    cod_collected_at: Option<String>,
    cod_remitted: Option<String>,
    cod_remitted_at: Option<String>,
    cod_remittance_ref: Option<String>,
    cod_fees: Option<String>,
    cod_note: Option<String>,
    version: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    id: i64,
    raw: Option<String>,
    code: Option<String>,
    status: String,
    sub_status: Option<String>,
    reason: Option<String>,
    event_time: Option<String>,
    received_at: String,
    via: String,
    outcome: String,
    previous: Option<String>,
    published_at: Option<String>,
}

fn status(text: &str) -> Result<Status, RowError> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| RowError::ShipmentStatus(text.to_string()))
}

fn via(text: &str) -> Result<Via, RowError> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| RowError::History(format!("via {text}")))
}

impl ShipmentRow {
    pub(super) fn record(self) -> Result<(ShipmentRecord, i64), RowError> {
        let sequence =
            u32::try_from(self.sequence).map_err(|_| RowError::Sequence(self.sequence))?;
        let record = ShipmentRecord {
            key: BookingKey {
                source: self.source,
                account: self.account,
                order_id: self.order_id,
                sequence,
            },
            order_key: self.order_key,
            reference: self.reference,
            courier: self.courier,
            courier_account: self.courier_account,
            tracking_number: self.tracking_number,
            status: status(&self.status)?,
            sub_status: self.sub_status,
            raw_status: self.raw_status,
            reason: self.reason,
            booked_at: self.booked_at,
            last_event_at: self.last_event_at,
            updated_at: self.updated_at,
            next_poll_at: self.next_poll_at,
            poll_interval_ms: self.poll_interval_ms,
            cod_amount: self.cod_amount,
            cod_currency: self.cod_currency,
            cod_state: CodState::parse(&self.cod_state)
                .ok_or_else(|| RowError::CodState(self.cod_state.clone()))?,
            cod_collected_at: self.cod_collected_at,
            cod_remitted: self.cod_remitted,
            cod_remitted_at: self.cod_remitted_at,
            cod_remittance_ref: self.cod_remittance_ref,
            cod_fees: self.cod_fees,
            cod_note: self.cod_note,
        };
        Ok((record, self.version))
    }
}

impl HistoryRow {
    fn entry(self) -> Result<HistoryEntry, RowError> {
        Ok(HistoryEntry {
            id: self.id,
            raw: self.raw,
            code: self.code,
            status: status(&self.status)?,
            sub_status: self.sub_status,
            reason: self.reason,
            event_time: self.event_time,
            received_at: self.received_at,
            via: via(&self.via)?,
            outcome: Outcome::parse(&self.outcome)
                .ok_or_else(|| RowError::History(format!("outcome {}", self.outcome)))?,
            previous: self.previous.as_deref().map(status).transpose()?,
            published_at: self.published_at,
        })
    }
}

pub(super) fn records(rows: Vec<ShipmentRow>) -> Result<Vec<ShipmentRecord>, StoreError> {
    rows.into_iter()
        .map(|row| {
            row.record()
                .map(|(record, _)| record)
                .map_err(StoreError::from)
        })
        .collect()
}

/// What the event should do to a shipment that is `current`, given the
/// raw strings of its earlier events at the same time.
fn decide(current: &ShipmentRecord, event: &StatusEvent, same_time: &[String]) -> Outcome {
    if event.status == Status::Unknown {
        return Outcome::Unknown;
    }
    let same_raw = |raw: &str| same_raw_status(raw, &event.raw);
    let repeated = match &event.event_time {
        Some(_) => same_time.iter().any(|raw| same_raw(raw)),
        // Without a time, only the status it already stands at repeats.
        None => current.raw_status.as_deref().is_some_and(same_raw),
    };
    if repeated {
        return Outcome::Duplicate;
    }
    let at = event.event_time.as_deref().unwrap_or(&event.received_at);
    let older = current
        .last_event_at
        .as_deref()
        .is_some_and(|latest| at < latest);
    if older || !may_move(current.status, event.status) {
        return Outcome::Stale;
    }
    Outcome::Applied
}

/// Binds the columns of a history row, `$1`–`$12`.
macro_rules! bind_history {
    ($query:expr, $key:expr, $event:expr, $outcome:expr, $previous:expr) => {
        $query
            .bind($key)
            .bind(&$event.event_id)
            .bind(&$event.raw)
            .bind(&$event.code)
            .bind($event.status.as_str())
            .bind(&$event.sub_status)
            .bind(&$event.reason)
            .bind(&$event.event_time)
            .bind(&$event.received_at)
            .bind($event.via.as_str())
            .bind($outcome.as_str())
            .bind($previous)
    };
}

/// Binds [`MOVE_SHIPMENT`]'s `$1`–`$11`: the shipment moves to `$event`'s
/// status, its latest event at `$at`, changed `$now`, from `$version`, its
/// COD as `$cod` (a [`CodMove`]) says.
macro_rules! bind_move {
    ($query:expr, $key:expr, $event:expr, ($at:expr, $now:expr), $version:expr, $stop:expr, $cod:expr) => {
        $query
            .bind($key)
            .bind($event.status.as_str())
            .bind(&$event.sub_status)
            .bind(&$event.raw)
            .bind(&$event.reason)
            .bind($at)
            .bind($now)
            .bind($version)
            .bind($stop)
            .bind($cod.state.as_str())
            .bind(&$cod.collected_at)
    };
}

/// The COD state and collection time a status write leaves.
struct CodMove {
    state: CodState,
    collected_at: Option<String>,
}

impl CodMove {
    /// What moving `current` to `status` at `at` does to its COD.
    fn of(current: &ShipmentRecord, status: Status, at: &str) -> CodMove {
        match on_status(current.cod_state, status) {
            Some(CodState::Collected) => CodMove {
                state: CodState::Collected,
                collected_at: Some(at.to_string()),
            },
            Some(CodState::NotCollected) => CodMove {
                state: CodState::NotCollected,
                collected_at: None,
            },
            _ => CodMove {
                state: current.cod_state,
                collected_at: current.cod_collected_at.clone(),
            },
        }
    }

    fn apply(self, shipment: &mut ShipmentRecord) {
        shipment.cod_state = self.state;
        shipment.cod_collected_at = self.collected_at;
    }
}

pub(super) async fn create(store: &SqlStore, new: &NewShipment) -> Result<bool, StoreError> {
    let key = new.key.to_string();
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let created = sqlx::query(INSERT_SHIPMENT)
            .bind(&key)
            .bind(&new.key.source)
            .bind(&new.key.account)
            .bind(&new.key.order_id)
            .bind(i64::from(new.key.sequence))
            .bind(&new.order_key)
            .bind(&new.reference)
            .bind(&new.courier)
            .bind(&new.courier_account)
            .bind(&new.tracking_number)
            .bind(&new.booked_at)
            .bind(&new.next_poll_at)
            .bind(&new.cod_amount)
            .bind(&new.cod_currency)
            .bind(CodState::initial(new.cod_amount.as_deref()).as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected()
            == 1;
        if created {
            let booked = StatusEvent {
                event_id: new.event_id.clone(),
                courier_account: new.courier_account.clone(),
                tracking_number: new.tracking_number.clone(),
                raw: String::new(),
                code: None,
                status: Status::Booked,
                sub_status: None,
                reason: None,
                event_time: Some(new.booked_at.clone()),
                received_at: new.booked_at.clone(),
                via: Via::Booking,
            };
            bind_history!(sqlx::query(INSERT_HISTORY), &key, booked, Outcome::Applied, None::<String>)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(created)
    })
}

pub(super) async fn apply(store: &SqlStore, event: &StatusEvent) -> Result<Applied, StoreError> {
    for _ in 0..APPLY_ATTEMPTS {
        if let Some(applied) = apply_once(store, event).await? {
            return Ok(applied);
        }
    }
    Err(StoreError::Contended(format!(
        "{}:{}",
        event.courier_account, event.tracking_number
    )))
}

/// One decision and its writes; `None` when another writer changed the
/// shipment in between and the decision must be taken again.
async fn apply_once(store: &SqlStore, event: &StatusEvent) -> Result<Option<Applied>, StoreError> {
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let row: Option<ShipmentRow> = sqlx::query_as(SELECT_BY_TRACKING)
            .bind(&event.courier_account)
            .bind(&event.tracking_number)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(Some(Applied::NotFound));
        };
        let (current, version) = row.record()?;
        let key = current.key.to_string();
        let seen: Option<HistoryRow> = sqlx::query_as(SELECT_EVENT)
            .bind(&event.event_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(seen) = seen {
            return Ok(Some(Applied::Recorded { entry: seen.entry()?, shipment: Box::new(current), new: false }));
        }
        let same_time: Vec<String> = match &event.event_time {
            Some(at) => sqlx::query_scalar::<_, Option<String>>(SELECT_SAME_TIME)
                .bind(&key)
                .bind(at)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
                .into_iter()
                .flatten()
                .collect(),
            None => Vec::new(),
        };
        let outcome = decide(&current, event, &same_time);
        let previous = (outcome == Outcome::Applied).then(|| current.status.as_str().to_string());
        let inserted = bind_history!(sqlx::query(INSERT_HISTORY), &key, event, outcome, &previous)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if inserted == 0 {
            // Recorded by a concurrent writer since it was looked up.
            return Ok(None);
        }
        let mut shipment = current;
        if outcome == Outcome::Applied {
            let at = event.event_time.clone().unwrap_or_else(|| event.received_at.clone());
            let now = now_timestamp();
            let cod = CodMove::of(&shipment, event.status, &at);
            let moved = bind_move!(sqlx::query(MOVE_SHIPMENT), &key, event, (&at, &now), version, false, cod)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if moved == 0 {
                return Ok(None);
            }
            shipment.status = event.status;
            shipment.sub_status = event.sub_status.clone();
            shipment.raw_status = Some(event.raw.clone());
            shipment.reason = event.reason.clone();
            shipment.last_event_at = Some(at);
            shipment.updated_at = now;
            cod.apply(&mut shipment);
        }
        let entry: HistoryRow = sqlx::query_as(SELECT_EVENT)
            .bind(&event.event_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(Applied::Recorded { entry: entry.entry()?, shipment: Box::new(shipment), new: true }))
    })
}

/// A status set by waybill itself rather than a courier's event.
pub(super) struct Forced<'a> {
    pub status: Status,
    pub sub_status: Option<&'a str>,
    pub raw: String,
    pub reason: &'a str,
    pub via: Via,
    /// Never poll the shipment again.
    pub stop_polling: bool,
}

/// Moves the shipment of `key` as `forced` says, whatever its status, with
/// a history row; `None` when there is no such shipment.
pub(super) async fn force(
    store: &SqlStore,
    key: &BookingKey,
    forced: Forced<'_>,
) -> Result<Option<HistoryEntry>, StoreError> {
    let text = key.to_string();
    for _ in 0..APPLY_ATTEMPTS {
        let row: Option<ShipmentRow> = with_read_pool!(store, pool => {
            sqlx::query_as(SELECT_BY_KEY).bind(&text).fetch_optional(pool).await.map_err(db)?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let (current, version) = row.record()?;
        let now = now_timestamp();
        let event = StatusEvent {
            event_id: format!("{}-{}", forced.via.as_str(), uuid::Uuid::new_v4()),
            courier_account: current.courier_account.clone(),
            tracking_number: current.tracking_number.clone(),
            raw: forced.raw.clone(),
            code: None,
            status: forced.status,
            sub_status: forced.sub_status.map(str::to_string),
            reason: Some(forced.reason.to_string()),
            event_time: Some(now.clone()),
            received_at: now.clone(),
            via: forced.via,
        };
        // A later courier event still orders after this one.
        let at = current
            .last_event_at
            .clone()
            .filter(|at| at.as_str() > now.as_str())
            .unwrap_or_else(|| now.clone());
        let previous = Some(current.status.as_str().to_string());
        let cod = CodMove::of(&current, forced.status, &now);
        let done = with_write_pool!(store, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            let moved = bind_move!(sqlx::query(MOVE_SHIPMENT), &text, event, (&at, &now), version, forced.stop_polling, cod)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if moved == 1 {
                bind_history!(sqlx::query(INSERT_HISTORY), &text, event, Outcome::Applied, &previous)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
            }
            moved == 1
        });
        if done {
            let entry: HistoryRow = with_read_pool!(store, pool => {
                sqlx::query_as(SELECT_EVENT).bind(&event.event_id).fetch_one(pool).await.map_err(db)?
            });
            return Ok(Some(entry.entry()?));
        }
    }
    Err(StoreError::Contended(text))
}

pub(super) async fn lease_due(
    store: &SqlStore,
    lease: DueLease<'_>,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let limit = i64::try_from(lease.limit).unwrap_or(i64::MAX);
    let statement = match &store.backend {
        Backend::Sqlite { .. } => LEASE_DUE_SQLITE,
        Backend::Postgres(_) => LEASE_DUE_POSTGRES,
    };
    let rows: Vec<ShipmentRow> = with_write_pool!(store, pool => {
        sqlx::query_as(statement)
            .bind(lease.owner)
            .bind(lease.until)
            .bind(lease.now)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    records(rows)
}

pub(super) async fn finish_poll(
    store: &SqlStore,
    key: &BookingKey,
    owner: &str,
    next_poll_at: Option<&str>,
    interval_ms: i64,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(FINISH_POLL)
            .bind(key.to_string())
            .bind(owner)
            .bind(next_poll_at)
            .bind(interval_ms)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn sync_overview(
    store: &SqlStore,
    now: &str,
) -> Result<Vec<SyncOverview>, StoreError> {
    let rows: Vec<(String, i64, Option<i64>, Option<String>)> = with_read_pool!(store, pool => {
        sqlx::query_as(SYNC_OVERVIEW).bind(now).fetch_all(pool).await.map_err(db)?
    });
    Ok(rows
        .into_iter()
        .map(|(courier_account, tracked, due, oldest_due)| SyncOverview {
            courier_account,
            tracked,
            due: due.unwrap_or(0),
            oldest_due,
        })
        .collect())
}

pub(super) async fn note_run(store: &SqlStore, owner: &str, at: &str) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(NOTE_RUN).bind(owner).bind(at).execute(pool).await.map_err(db)?;
        Ok(())
    })
}

pub(super) async fn runs(store: &SqlStore) -> Result<Vec<(String, String)>, StoreError> {
    with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_RUNS).fetch_all(pool).await.map_err(db)
    })
}

pub(super) async fn mark_published(store: &SqlStore, id: i64) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(MARK_PUBLISHED)
            .bind(id)
            .bind(now_timestamp())
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &ShipmentFilter,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
    let rows: Vec<ShipmentRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_LISTED)
            .bind(filter.status.map(Status::as_str))
            .bind(&filter.courier)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    records(rows)
}

pub(super) async fn find(
    store: &SqlStore,
    needle: &str,
) -> Result<Vec<ShipmentRecord>, StoreError> {
    let rows: Vec<ShipmentRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_MATCHING).bind(needle).fetch_all(pool).await.map_err(db)?
    });
    records(rows)
}

pub(super) async fn by_tracking(
    store: &SqlStore,
    courier_account: &str,
    tracking_number: &str,
) -> Result<Option<ShipmentRecord>, StoreError> {
    let row: Option<ShipmentRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_BY_TRACKING)
            .bind(courier_account)
            .bind(tracking_number)
            .fetch_optional(pool)
            .await
            .map_err(db)?
    });
    Ok(records(row.into_iter().collect())?.pop())
}

pub(super) async fn history(
    store: &SqlStore,
    key: &BookingKey,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let rows: Vec<HistoryRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_HISTORY).bind(key.to_string()).fetch_all(pool).await.map_err(db)?
    });
    rows.into_iter()
        .map(|row| row.entry().map_err(StoreError::from))
        .collect()
}

pub(super) async fn record_unknown(
    store: &SqlStore,
    courier: &str,
    raw: &str,
    at: &str,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        sqlx::query(UPSERT_UNKNOWN)
            .bind(courier)
            .bind(raw)
            .bind(at)
            .execute(pool)
            .await
            .map_err(db)?;
        Ok(())
    })
}

pub(super) async fn unknown(store: &SqlStore) -> Result<Vec<UnknownStatus>, StoreError> {
    let rows: Vec<(String, String, i64, String)> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_UNKNOWN).fetch_all(pool).await.map_err(db)?
    });
    Ok(rows
        .into_iter()
        .map(|(courier, raw, count, last_seen)| UnknownStatus {
            courier,
            raw,
            count,
            last_seen,
        })
        .collect())
}

pub(super) async fn counts(store: &SqlStore) -> Result<Vec<(String, Status, i64)>, StoreError> {
    let rows: Vec<(String, String, i64)> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_COUNTS).fetch_all(pool).await.map_err(db)?
    });
    rows.into_iter()
        .map(|(courier, text, count)| Ok((courier, status(&text)?, count)))
        .collect()
}
