//! Booking keys through their states: claimed and `sent` just before the
//! request goes out, then `booked`, sent to `review`, or given back; the
//! operator's resolutions; and the audit trail of each change (DESIGN §8).

use super::queries::{
    CLAIM_NEW, INSERT_AUDIT, MARK_BOOKED, MARK_REVIEW, NOTE_CHANGE, RELEASE, RESOLVE_BOOKED,
    RESOLVE_RELEASE, SELECT_AUDIT, SELECT_BOOKING, SELECT_BOOKINGS, SELECT_ORDER_BOOKINGS,
    SELECT_SHIPMENT, SELECT_STATUS,
};
use super::rows::{self, AuditRow, BookingRow, StoredBooking, stored_booking};
use super::writer::{change_in_one_go, text};
use super::{Backend, SqlStore, db};
use crate::clock::{later, now_timestamp, timestamp};
use crate::model::{BookingKey, BookingResult};
use crate::store::{
    AuditEntry, BookedShipment, Booking, BookingStatus, Claim, Reservation, RowError, StoreError,
};
use rusqlite::types::Value;
use time::OffsetDateTime;

/// How often a claim retries when the row is given back between its
/// statements; each retry makes progress.
const CLAIM_ATTEMPTS: usize = 8;

/// Binds a booking key to `$1`–`$4`.
macro_rules! bind_key {
    ($query:expr, $key:expr) => {
        $query
            .bind(&$key.source)
            .bind(&$key.account)
            .bind(&$key.order_id)
            .bind(i64::from($key.sequence))
    };
}

/// Runs the statement of [`Change`] `$change` inside transaction `$tx`:
/// the number of rows it changed.
macro_rules! execute {
    ($tx:expr, $change:expr) => {{
        let mut query = bind_key!(sqlx::query($change.statement), $change.key);
        for param in $change.params {
            query = query.bind(*param);
        }
        query.execute(&mut *$tx).await.map_err(db)?.rows_affected()
    }};
}

/// Appends the audit row of [`Change`] `$change` inside transaction `$tx`.
macro_rules! audit {
    ($tx:expr, $change:expr) => {
        sqlx::query(INSERT_AUDIT)
            .bind($change.key.to_string())
            .bind($change.action)
            .bind($change.message_id)
            .bind($change.detail)
            .bind($change.at)
            .execute(&mut *$tx)
            .await
            .map_err(db)?
    };
}

/// The booking row of a key inside transaction `$tx`.
macro_rules! stored_row {
    ($tx:expr, $key:expr) => {{
        let row: Option<BookingRow> = bind_key!(sqlx::query_as(SELECT_BOOKING), $key)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db)?;
        row.map(stored_booking).transpose()?
    }};
}

/// The status of a booking key inside transaction `$tx`, to say why a
/// transition was refused.
macro_rules! current_status {
    ($tx:expr, $key:expr) => {
        bind_key!(sqlx::query_scalar::<_, String>(SELECT_STATUS), $key)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db)?
    };
}

/// A booking key as `$1`–`$4` of a statement the bus writer runs.
fn key_values(key: &BookingKey) -> Vec<Value> {
    vec![
        text(&key.source),
        text(&key.account),
        text(&key.order_id),
        Value::Integer(i64::from(key.sequence)),
    ]
}

/// The error for a transition that found the key absent or in another state.
fn wrong_state(key: &BookingKey, status: Option<String>, expected: &str) -> StoreError {
    match status {
        None => StoreError::NotFound(key.to_string()),
        Some(state) => StoreError::WrongState {
            key: key.to_string(),
            state,
            expected: expected.to_string(),
        },
    }
}

/// One change of a booking key's state and the audit row that records it.
struct Change<'a> {
    key: &'a BookingKey,
    /// The statement, with the key as `$1`–`$4` and `params` from `$5` on.
    statement: &'static str,
    params: &'a [&'a str],
    action: &'static str,
    message_id: Option<&'a str>,
    detail: &'a str,
    at: &'a str,
}

/// What became of a [`Change`] of the usual shape.
enum Applied {
    Changed,
    /// The statement changed no row: the key is absent (`None`) or in
    /// this state.
    Refused(Option<String>),
}

impl Change<'_> {
    /// The change and its audit row as one job of the bus writer, for the
    /// usual case of a frequent change; `false` when it changed nothing, or
    /// without a writer, for the caller to take its general path.
    async fn in_one_go(&self, store: &SqlStore) -> Result<bool, StoreError> {
        let Backend::Sqlite { jobs, .. } = &store.backend else {
            return Ok(false);
        };
        let mut values = key_values(self.key);
        values.extend(self.params.iter().map(|param| text(param)));
        let audit = vec![
            text(&self.key.to_string()),
            text(self.action),
            self.message_id.map_or(Value::Null, text),
            text(self.detail),
            text(self.at),
        ];
        change_in_one_go(jobs.as_ref(), self.statement, values, audit).await
    }

    /// The change and its audit row in one transaction; when it changes no
    /// row, the key's status as that transaction read it.
    async fn apply(&self, store: &SqlStore) -> Result<Applied, StoreError> {
        with_write_pool!(store, pool => {
            let mut tx = pool.begin().await.map_err(db)?;
            if execute!(tx, self) == 0 {
                return Ok(Applied::Refused(current_status!(tx, self.key)));
            }
            audit!(tx, self);
            tx.commit().await.map_err(db)?;
            Ok(Applied::Changed)
        })
    }
}

pub(super) async fn claim(store: &SqlStore, request: Claim<'_>) -> Result<Reservation, StoreError> {
    let Claim {
        key,
        owner,
        lease,
        message_id,
        reference,
        shipment,
    } = request;
    let started = OffsetDateTime::now_utc();
    let now = timestamp(started);
    let lease_until = timestamp(later(started, lease));
    let detail = format!("owner {owner}");
    let claim = Change {
        key,
        statement: CLAIM_NEW,
        params: &[owner, &lease_until, message_id, reference, &now, shipment],
        action: "sent",
        message_id: Some(message_id),
        detail: &detail,
        at: &now,
    };
    // The usual case, a key never claimed, in one go.
    if claim.in_one_go(store).await? {
        return Ok(Reservation::Acquired);
    }
    with_write_pool!(store, pool => {
        for _ in 0..CLAIM_ATTEMPTS {
            let mut tx = pool.begin().await.map_err(db)?;
            // The insert comes first so that on SQLite the transaction
            // holds the write lock from its first statement on.
            if execute!(tx, claim) == 1 {
                audit!(tx, claim);
                tx.commit().await.map_err(db)?;
                return Ok(Reservation::Acquired);
            }
            // Given back between the two statements: try the insert again.
            if let Some(stored) = stored_row!(tx, key) {
                return answer(key, owner, &now, stored);
            }
        }
        Err(StoreError::Contended(key.to_string()))
    })
}

/// The answer to `owner`'s claim at `now` of a key someone claimed before.
fn answer(
    key: &BookingKey,
    owner: &str,
    now: &str,
    stored: StoredBooking,
) -> Result<Reservation, StoreError> {
    let booking = stored.booking;
    let previous_owner = booking.owner.unwrap_or_default();
    let lease_until = stored.lease_until.unwrap_or_default();
    let held_by_other = previous_owner != owner && lease_until.as_str() >= now;
    match booking.status {
        BookingStatus::Booked => match booking.result {
            Some(result) => Ok(Reservation::Booked(result)),
            None => Err(RowError::BookedWithoutResult(key.to_string()).into()),
        },
        BookingStatus::Review => Ok(Reservation::Review(booking.reason.unwrap_or_default())),
        // A live owner's request may still be answered: only a lapsed
        // lease (or our own earlier life) means nobody will.
        BookingStatus::Sent if held_by_other => Ok(Reservation::Busy {
            owner: previous_owner,
        }),
        BookingStatus::Sent => Ok(Reservation::Sent),
    }
}

/// A booking result as the row holds it: the statement's parameters from
/// `$5` on (tracking number, courier, account, extracted values, time) and
/// the words the audit trail uses for it.
struct ResultRow<'a> {
    params: [&'a str; 5],
    said: String,
}

impl<'a> ResultRow<'a> {
    fn new(result: &'a BookingResult, extracted: &'a str, now: &'a str) -> Self {
        ResultRow {
            params: [
                &result.tracking_number,
                &result.courier,
                &result.account,
                extracted,
                now,
            ],
            said: format!(
                "{} at {} ({})",
                result.tracking_number, result.courier, result.account
            ),
        }
    }
}

fn extracted(result: &BookingResult) -> Result<String, StoreError> {
    serde_json::to_string(&result.extracted).map_err(StoreError::Encode)
}

pub(super) async fn mark_booked(
    store: &SqlStore,
    key: &BookingKey,
    result: &BookingResult,
    message_id: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let extracted = extracted(result)?;
    let row = ResultRow::new(result, &extracted, &now);
    let detail = format!("tracking number {}", row.said);
    let booked = Change {
        key,
        statement: MARK_BOOKED,
        params: &row.params,
        action: "booked",
        message_id: Some(message_id),
        detail: &detail,
        at: &now,
    };
    // The usual case, a `sent` key, in one go; anything else (a repeated
    // record, a refused transition) takes the general path.
    if booked.in_one_go(store).await? {
        return Ok(());
    }
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        if execute!(tx, booked) == 0 {
            let stored = stored_row!(tx, key);
            return already_booked_as(key, stored, result);
        }
        audit!(tx, booked);
        tx.commit().await.map_err(db)
    })
}

/// Whether a key that was not `sent` had been booked with `result` already:
/// recording the same booking twice (a redelivered message) is fine.
fn already_booked_as(
    key: &BookingKey,
    stored: Option<StoredBooking>,
    result: &BookingResult,
) -> Result<(), StoreError> {
    if let Some(stored) = &stored
        && stored.booking.status == BookingStatus::Booked
        && stored.booking.result.as_ref().map(|r| &r.tracking_number)
            == Some(&result.tracking_number)
    {
        return Ok(());
    }
    let status = stored.map(|s| s.booking.status.as_str().to_string());
    Err(wrong_state(key, status, "sent"))
}

pub(super) async fn mark_review(
    store: &SqlStore,
    key: &BookingKey,
    reason: &str,
    message_id: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let review = Change {
        key,
        statement: MARK_REVIEW,
        params: &[reason, &now],
        action: "review",
        message_id: Some(message_id),
        detail: reason,
        at: &now,
    };
    match review.apply(store).await? {
        Applied::Changed => Ok(()),
        // Already waiting for a person: a redelivered message changes nothing.
        Applied::Refused(Some(status)) if status == "review" => Ok(()),
        Applied::Refused(status) => Err(wrong_state(key, status, "sent")),
    }
}

pub(super) async fn release(
    store: &SqlStore,
    key: &BookingKey,
    owner: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let detail = format!("owner {owner}");
    let release = Change {
        key,
        statement: RELEASE,
        params: &[owner],
        action: "released",
        message_id: None,
        detail: &detail,
        at: &now,
    };
    match release.apply(store).await? {
        Applied::Changed => Ok(()),
        Applied::Refused(status) => {
            let status = status.map(|s| {
                if s == "sent" {
                    "sent by another owner".to_string()
                } else {
                    s
                }
            });
            Err(wrong_state(key, status, &format!("sent by {owner}")))
        }
    }
}

pub(super) async fn resolve_booked(
    store: &SqlStore,
    key: &BookingKey,
    result: &BookingResult,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let extracted = extracted(result)?;
    let row = ResultRow::new(result, &extracted, &now);
    let detail = format!("resolved by an operator: booked as {}", row.said);
    let resolve = Change {
        key,
        statement: RESOLVE_BOOKED,
        params: &row.params,
        action: "resolved_booked",
        message_id: None,
        detail: &detail,
        at: &now,
    };
    match resolve.apply(store).await? {
        Applied::Changed => Ok(()),
        Applied::Refused(status) => Err(wrong_state(key, status, "review")),
    }
}

pub(super) async fn resolve_release(store: &SqlStore, key: &BookingKey) -> Result<(), StoreError> {
    let now = now_timestamp();
    let resolve = Change {
        key,
        statement: RESOLVE_RELEASE,
        params: &[],
        action: "resolved_release",
        message_id: None,
        detail: "resolved by an operator: not booked, released for booking again",
        at: &now,
    };
    match resolve.apply(store).await? {
        Applied::Changed => Ok(()),
        Applied::Refused(status) => Err(wrong_state(key, status, "review")),
    }
}

pub(super) async fn booking(
    store: &SqlStore,
    key: &BookingKey,
) -> Result<Option<Booking>, StoreError> {
    let row: Option<BookingRow> = with_read_pool!(store, pool => {
        bind_key!(sqlx::query_as(SELECT_BOOKING), key)
            .fetch_optional(pool)
            .await
            .map_err(db)?
    });
    Ok(row.map(rows::booking).transpose()?)
}

pub(super) async fn bookings(
    store: &SqlStore,
    status: Option<BookingStatus>,
    limit: usize,
) -> Result<Vec<Booking>, StoreError> {
    let status = status.map(BookingStatus::as_str);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<BookingRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_BOOKINGS)
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    Ok(rows
        .into_iter()
        .map(rows::booking)
        .collect::<Result<_, _>>()?)
}

pub(super) async fn audit(
    store: &SqlStore,
    key: &BookingKey,
) -> Result<Vec<AuditEntry>, StoreError> {
    let key_text = key.to_string();
    let rows: Vec<AuditRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_AUDIT)
            .bind(&key_text)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    Ok(rows.into_iter().map(rows::audit_entry).collect())
}

pub(super) async fn order_bookings(
    store: &SqlStore,
    source: &str,
    account: &str,
    order_id: &str,
) -> Result<Vec<Booking>, StoreError> {
    let rows: Vec<BookingRow> = with_read_pool!(store, pool => {
        sqlx::query_as(SELECT_ORDER_BOOKINGS)
            .bind(source)
            .bind(account)
            .bind(order_id)
            .fetch_all(pool)
            .await
            .map_err(db)?
    });
    Ok(rows
        .into_iter()
        .map(rows::booking)
        .collect::<Result<_, _>>()?)
}

pub(super) async fn booked_shipment(
    store: &SqlStore,
    key: &BookingKey,
) -> Result<Option<BookedShipment>, StoreError> {
    type Row = (Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = with_read_pool!(store, pool => {
        bind_key!(sqlx::query_as(SELECT_SHIPMENT), key)
            .fetch_optional(pool)
            .await
            .map_err(db)?
    });
    Ok(
        row.map(|(shipment, change, change_message_id)| BookedShipment {
            shipment,
            change,
            change_message_id,
        }),
    )
}

pub(super) async fn note_change(
    store: &SqlStore,
    key: &BookingKey,
    change: &str,
    message_id: &str,
) -> Result<(), StoreError> {
    with_write_pool!(store, pool => {
        let changed = bind_key!(sqlx::query(NOTE_CHANGE), key)
            .bind(change)
            .bind(message_id)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(key.to_string()));
        }
        Ok(())
    })
}
