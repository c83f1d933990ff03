//! Booking keys through their states: claimed and `sent` just before the
//! request goes out, then `booked`, sent to `review`, or given back; the
//! operator's resolutions; and the audit trail of each change (DESIGN §8).

use super::queries::{
    CLAIM_NEW, INSERT_AUDIT, MARK_BOOKED, MARK_REVIEW, RELEASE, RESOLVE_BOOKED, RESOLVE_RELEASE,
    SELECT_AUDIT, SELECT_BOOKING, SELECT_BOOKINGS, SELECT_STATUS,
};
use super::rows::{self, AuditRow, BookingRow, StoredBooking, stored_booking};
use super::writer::{change_in_one_go, text};
use super::{Backend, SqlStore, db};
use crate::clock::{later, now_timestamp, timestamp};
use crate::model::{BookingKey, BookingResult};
use crate::store::{AuditEntry, Booking, BookingStatus, Reservation, RowError, StoreError};
use rusqlite::types::Value;
use std::time::Duration;
use time::OffsetDateTime;

/// How often a claim retries when the row is given back between its
/// statements; each retry makes progress.
const CLAIM_ATTEMPTS: usize = 8;

/// Binds a booking key to `$1`–`$4`.
macro_rules! bind_key {
    ($query:expr, $key:expr, $sequence:expr) => {
        $query
            .bind(&$key.source)
            .bind(&$key.account)
            .bind(&$key.order_id)
            .bind($sequence)
    };
}

/// Appends an audit row inside transaction `$tx`.
macro_rules! audit {
    ($tx:expr, $key:expr, $action:expr, $message_id:expr, $detail:expr, $at:expr) => {
        sqlx::query(INSERT_AUDIT)
            .bind($key)
            .bind($action)
            .bind($message_id)
            .bind($detail)
            .bind($at)
            .execute(&mut *$tx)
            .await
            .map_err(db)?
    };
}

/// The booking row of a key inside transaction `$tx`.
macro_rules! stored_row {
    ($tx:expr, $key:expr, $sequence:expr) => {{
        let row: Option<BookingRow> = bind_key!(sqlx::query_as(SELECT_BOOKING), $key, $sequence)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db)?;
        row.map(stored_booking).transpose()?
    }};
}

/// The status of a booking key inside transaction `$tx`, to say why a
/// transition was refused.
macro_rules! current_status {
    ($tx:expr, $key:expr, $sequence:expr) => {
        bind_key!(
            sqlx::query_scalar::<_, String>(SELECT_STATUS),
            $key,
            $sequence
        )
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

/// One claim of a key, with what every attempt at it binds.
struct Claim<'a> {
    key: &'a BookingKey,
    key_text: String,
    sequence: i64,
    owner: &'a str,
    message_id: &'a str,
    reference: &'a str,
    now: String,
    lease_until: String,
    detail: String,
}

impl<'a> Claim<'a> {
    fn new(
        key: &'a BookingKey,
        owner: &'a str,
        lease: Duration,
        message_id: &'a str,
        reference: &'a str,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        Claim {
            key,
            key_text: key.to_string(),
            sequence: i64::from(key.sequence),
            owner,
            message_id,
            reference,
            now: timestamp(now),
            lease_until: timestamp(later(now, lease)),
            detail: format!("owner {owner}"),
        }
    }

    /// The usual case, a key never claimed, in one job of the bus writer;
    /// `false` for every other case, or without a writer.
    async fn new_key_in_one_go(&self, store: &SqlStore) -> Result<bool, StoreError> {
        let Backend::Sqlite { jobs, .. } = &store.backend else {
            return Ok(false);
        };
        let mut values = key_values(self.key);
        values.extend([
            text(self.owner),
            text(&self.lease_until),
            text(self.message_id),
            text(self.reference),
            text(&self.now),
        ]);
        let audit = [
            &self.key_text,
            "sent",
            self.message_id,
            &self.detail,
            &self.now,
        ];
        change_in_one_go(jobs.as_ref(), CLAIM_NEW, values, audit.map(text).into()).await
    }

    /// The answer for a key someone claimed before.
    fn answer(&self, stored: StoredBooking) -> Result<Reservation, StoreError> {
        let booking = stored.booking;
        let previous_owner = booking.owner.unwrap_or_default();
        let lease_until = stored.lease_until.unwrap_or_default();
        let held_by_other = previous_owner != self.owner && lease_until >= self.now;
        match booking.status {
            BookingStatus::Booked => match booking.result {
                Some(result) => Ok(Reservation::Booked(result)),
                None => Err(RowError::BookedWithoutResult(self.key_text.clone()).into()),
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
}

pub(super) async fn claim(
    store: &SqlStore,
    key: &BookingKey,
    owner: &str,
    lease: Duration,
    message_id: &str,
    reference: &str,
) -> Result<Reservation, StoreError> {
    let claim = Claim::new(key, owner, lease, message_id, reference);
    if claim.new_key_in_one_go(store).await? {
        return Ok(Reservation::Acquired);
    }
    with_write_pool!(store, pool => {
        for _ in 0..CLAIM_ATTEMPTS {
            let mut tx = pool.begin().await.map_err(db)?;
            // The insert comes first so that on SQLite the transaction
            // holds the write lock from its first statement on.
            let inserted = bind_key!(sqlx::query(CLAIM_NEW), key, claim.sequence)
                .bind(owner)
                .bind(&claim.lease_until)
                .bind(message_id)
                .bind(reference)
                .bind(&claim.now)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
            if inserted == 1 {
                audit!(tx, &claim.key_text, "sent", message_id, Some(&claim.detail), &claim.now);
                tx.commit().await.map_err(db)?;
                return Ok(Reservation::Acquired);
            }
            // Given back between the two statements: try the insert again.
            if let Some(stored) = stored_row!(tx, key, claim.sequence) {
                return claim.answer(stored);
            }
        }
        Err(StoreError::Contended(claim.key_text))
    })
}

pub(super) async fn mark_booked(
    store: &SqlStore,
    key: &BookingKey,
    result: &BookingResult,
    message_id: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let key_text = key.to_string();
    let sequence = i64::from(key.sequence);
    let extracted = serde_json::to_string(&result.extracted).map_err(StoreError::Encode)?;
    let detail = format!(
        "tracking number {} at {} ({})",
        result.tracking_number, result.courier, result.account
    );
    if let Backend::Sqlite { jobs, .. } = &store.backend {
        // The usual case, a `sent` key, in one go; anything else (a
        // repeated record, a refused transition) takes the general path.
        let mut values = key_values(key);
        values.extend(
            [
                &result.tracking_number,
                &result.courier,
                &result.account,
                &extracted,
                &now,
            ]
            .map(|value| text(value)),
        );
        let audit = [key_text.as_str(), "booked", message_id, &detail, &now];
        if change_in_one_go(jobs.as_ref(), MARK_BOOKED, values, audit.map(text).into()).await? {
            return Ok(());
        }
    }
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let updated = bind_key!(sqlx::query(MARK_BOOKED), key, sequence)
            .bind(&result.tracking_number)
            .bind(&result.courier)
            .bind(&result.account)
            .bind(&extracted)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if updated == 0 {
            let stored = stored_row!(tx, key, sequence);
            return already_booked_as(key, stored, result);
        }
        audit!(tx, &key_text, "booked", message_id, Some(&detail), &now);
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
    let key_text = key.to_string();
    let sequence = i64::from(key.sequence);
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let updated = bind_key!(sqlx::query(MARK_REVIEW), key, sequence)
            .bind(reason)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if updated == 0 {
            let status: Option<String> = current_status!(tx, key, sequence);
            // Already waiting for a person: a redelivered message changes nothing.
            if status.as_deref() == Some("review") {
                return Ok(());
            }
            return Err(wrong_state(key, status, "sent"));
        }
        audit!(tx, &key_text, "review", message_id, Some(reason.to_string()), &now);
        tx.commit().await.map_err(db)
    })
}

pub(super) async fn release(
    store: &SqlStore,
    key: &BookingKey,
    owner: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let key_text = key.to_string();
    let sequence = i64::from(key.sequence);
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let deleted = bind_key!(sqlx::query(RELEASE), key, sequence)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if deleted == 0 {
            let status: Option<String> = current_status!(tx, key, sequence);
            let status = status.map(|s| if s == "sent" { "sent by another owner".to_string() } else { s });
            return Err(wrong_state(key, status, &format!("sent by {owner}")));
        }
        audit!(tx, &key_text, "released", None::<String>, Some(format!("owner {owner}")), &now);
        tx.commit().await.map_err(db)
    })
}

pub(super) async fn resolve_booked(
    store: &SqlStore,
    key: &BookingKey,
    tracking_number: &str,
    courier: &str,
    account: &str,
) -> Result<(), StoreError> {
    let now = now_timestamp();
    let key_text = key.to_string();
    let sequence = i64::from(key.sequence);
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let updated = bind_key!(sqlx::query(RESOLVE_BOOKED), key, sequence)
            .bind(tracking_number)
            .bind(courier)
            .bind(account)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if updated == 0 {
            let status: Option<String> = current_status!(tx, key, sequence);
            return Err(wrong_state(key, status, "review"));
        }
        let detail = format!("resolved by an operator: booked as {tracking_number} at {courier} ({account})");
        audit!(tx, &key_text, "resolved_booked", None::<String>, Some(detail), &now);
        tx.commit().await.map_err(db)
    })
}

pub(super) async fn resolve_release(store: &SqlStore, key: &BookingKey) -> Result<(), StoreError> {
    let now = now_timestamp();
    let key_text = key.to_string();
    let sequence = i64::from(key.sequence);
    with_write_pool!(store, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        let deleted = bind_key!(sqlx::query(RESOLVE_RELEASE), key, sequence)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if deleted == 0 {
            let status: Option<String> = current_status!(tx, key, sequence);
            return Err(wrong_state(key, status, "review"));
        }
        let detail = "resolved by an operator: not booked, released for booking again";
        audit!(tx, &key_text, "resolved_release", None::<String>, Some(detail), &now);
        tx.commit().await.map_err(db)
    })
}

pub(super) async fn booking(
    store: &SqlStore,
    key: &BookingKey,
) -> Result<Option<Booking>, StoreError> {
    let sequence = i64::from(key.sequence);
    let row: Option<BookingRow> = with_read_pool!(store, pool => {
        bind_key!(sqlx::query_as(SELECT_BOOKING), key, sequence)
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
